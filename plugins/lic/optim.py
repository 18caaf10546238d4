"""The trainer's optimisers and the exponential moving average of the weights.

* ``adam``: ``torch.optim.Adam`` (CompressAI's choice; the default);
* ``sgd``: ``torch.optim.SGD``, with ``--momentum`` (0: plain SGD, the step along which Solution 2's
  balance condition holds exactly);
* ``cautious-adam``: :class:`CautiousAdam`, the optimiser of the authors' Solution 1 training
  script;
* ``--ema DECAY``: :class:`WeightEMA`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

OPTIMIZERS = ("adam", "sgd", "cautious-adam")


class CautiousAdam(torch.optim.Adam):
    """Adam whose update is kept only where the first moment and the current gradient agree in
    sign, rescaled by the inverse of the kept fraction (Liang et al., "Cautious optimizers", 2024;
    the optimiser of the authors' Solution 1 training script)::

        m ← β₁m + (1−β₁)g,   v ← β₂v + (1−β₂)g²
        φ = 1[m ⊙ g > 0],    s = min(1 / max(mean(φ), 10⁻³), max_scale)
        θ ← θ − lr/(1−β₁ᵗ) · s·φ ⊙ m / (√(v/(1−β₂ᵗ)) + ε)

    ``mean(φ)`` is taken over each parameter tensor. With every sign agreeing (``φ = 1``) the step
    is Adam's. A subclass of ``torch.optim.Adam`` with the same state (``exp_avg``, ``exp_avg_sq``,
    ``step``), so that Adam's state loads into it and ``QPBalancer(metric="adam")`` reads its
    preconditioner; ``amsgrad``, ``weight_decay`` and ``maximize`` are not supported.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        max_scale: float = 10.0,
    ) -> None:
        if not max_scale >= 1.0:
            raise ValueError(f"max_scale must be >= 1, got {max_scale}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, foreach=False)
        self.max_scale = max_scale

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
                mask = (m * grad > 0).to(grad.dtype)
                scale = (1.0 / mask.mean().clamp(min=1e-3)).clamp(max=self.max_scale)
                p.addcdiv_(m * mask * scale, denom, value=-group["lr"] / (1 - beta1**t))
        return loss


def build(
    name: str, params: Sequence[Tensor], lr: float, momentum: float = 0.0
) -> torch.optim.Optimizer:
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`) on ``params``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "cautious-adam":
        return CautiousAdam(params, lr=lr)
    raise ValueError(f"unknown optimiser {name!r}; one of {', '.join(OPTIMIZERS)}")


class WeightEMA:
    r"""An exponential moving average of a model's parameters, ``ē ← d_t·ē + (1−d_t)·θ`` after
    every optimiser step (the authors' script keeps one with d = 0.999, through ``torch_ema``).

    ``warmup=True`` (the default, as ``torch_ema``'s ``use_num_updates``) uses
    :math:`d_t = \min(d, (1 + t)/(10 + t))` on the t-th update, so that the average forgets the
    initial weights within the first steps instead of keeping :math:`d^t` of them (with d = 0.999
    a fixed decay keeps 5 % of the random initialisation after 3000 steps); ``warmup=False`` is the
    fixed decay. :meth:`applied` swaps the averages into the model for testing, evaluation and
    saving, and the raw weights back after; :meth:`state_dict` round-trips exactly (a state without
    ``warmup``, written before it existed, resumes with the fixed decay it was trained with)."""

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next :meth:`update` applies."""
        t = self.updates + 1
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), weight)
        self.updates += 1

    def applied(self) -> _Swap:
        """``with ema.applied(): …`` runs with the averaged weights in the model."""
        return _Swap(self)

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "updates": self.updates,
            "shadow": [s.clone() for s in self.shadow],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow) or any(
            a.shape != b.shape for a, b in zip(shadow, self.shadow)
        ):
            raise ValueError("the EMA state does not fit this model's parameters")
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        self.warmup = bool(state.get("warmup", False))
        for s, saved in zip(self.shadow, shadow):
            s.copy_(saved)


class _Swap:
    def __init__(self, ema: WeightEMA) -> None:
        self.ema = ema
        self.raw: list[Tensor] = []

    @torch.no_grad()
    def __enter__(self) -> WeightEMA:
        self.raw = [p.detach().clone() for p in self.ema.params]
        for p, s in zip(self.ema.params, self.ema.shadow):
            p.copy_(s)
        return self.ema

    @torch.no_grad()
    def __exit__(self, *exc: object) -> None:
        for p, r in zip(self.ema.params, self.raw):
            p.copy_(r)
