"""Solution 1 of Zhang et al. (CVPR 2025): coarse-to-fine gradient descent, FAMO-style."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from moo_opt import distributed
from moo_opt.balancers.base import (
    BalanceInfo,
    Balancer,
    NonFinite,
    Offsets,
    adam_step_,
    positive_int,
)
from moo_opt.registry import register

Mode = Literal["same_batch", "next_batch"]


@register
class CoarseToFineBalancer(Balancer):
    r"""Amortised weights that equalise the objectives' improvement speed (Solution 1).

    Zhang, Duan, Huang & Zhu, "Balanced Rate-Distortion Optimization in Learned Image
    Compression", CVPR 2025, after FAMO (Liu et al., NeurIPS 2023). Logits :math:`\xi` start at 0;
    with :math:`z = \mathrm{softmax}(\xi)` each step applies

    .. math::  w_i = \frac{z_i / (L_i + c_i)}{\sum_j z_j / (L_j + c_j)}

    to the raw losses (the direction :math:`\sum_i z_i \nabla\log(L_i + c_i)`, renormalised so the
    weights sum to one; ``renormalize=False`` keeps :math:`z_i/(L_i+c_i)`). After the optimiser
    step, with the losses :math:`L'` recomputed on the same batch, the improvement
    :math:`\delta_i = \log(L_i + c_i) - \log(L'_i + c_i)` gives the logit gradient
    :math:`z \odot (\delta - \langle z, \delta\rangle) + \gamma\,\xi` and one Adam step of rate
    :math:`\beta` (objectives that improved faster than average lose weight; γ decays the logits
    towards 0). Costs one extra forward pass per step, no per-objective gradients.

    ``mode="next_batch"`` is an **approximation** that saves the extra forward: :math:`L'` is the
    next batch's pre-step losses (passed to the next :meth:`backward`), so δ mixes the parameter
    update with the change of batch. Its info carries ``approximate=1``.

    ``update_every=k`` amortises the learning itself: the logits take their Adam step on one
    step in k (the first, then every k-th) and the weights of the other steps come from the
    current logits. In ``same_batch`` mode only those steps pay the extra forward
    (:attr:`needs_update` says when), so the overhead is divided by k.

    A **sub-batch** makes the extra forward itself cheaper, also an **approximation**: the caller
    recomputes the losses after the step on k of the batch's B samples only, :math:`L'_S`, and
    passes the same k samples' losses *before* the step, :math:`L_S` (from the step's own forward
    pass, at no cost), as ``update(L'_S, before=L_S)``; then
    :math:`\delta_i = \log(L_{S,i} + c_i) - \log(L'_{S,i} + c_i)`, the sub-batch's estimate of
    the whole batch's δ (noisier as k falls; the same when S is the whole batch). Both sides are
    losses of the same samples, so the change of samples never enters δ (as it does in
    ``next_batch`` mode). The extra forward costs about k/B of the whole batch's.
    :func:`moo_opt.balanced_step` takes them from its ``update_losses`` argument; the balancer
    cannot tell a sub-batch from a batch, so the caller labels such steps (the LIC trainer's
    ``--update-subbatch K`` puts ``approximate=1`` in their info).

    ``warmup=k`` follows the standard R-D trajectory first (the abstract's "coarse-to-fine
    gradient descent along standard R-D optimization trajectories" read literally): the first k
    steps that are not skipped apply the standard loss's weights :math:`w_i = 1/N` (1 without
    renormalisation, the plain sum) and leave the logits at 0, with no extra forward; balancing
    starts on step k + 1. Their info carries ``warmup=1``.

    Args:
        num_objectives: N.
        offsets: :math:`c_i` (scalar or one per objective, ≥ 0); default 1, i.e. log(L + 1).
        beta: Adam learning rate of the logits (0.025).
        gamma: logit decay (0.001; the paper found 0 does not converge).
        renormalize: divide the coefficients by their sum (True; the paper's ablation).
        mode: ``"same_batch"`` (exact, call :meth:`update`) or ``"next_batch"``.
        update_every: learn the logits on one step in k (1: every step, the paper's method).
        warmup: steps of the standard loss before balancing starts (0: none, the paper's method).
        betas, eps: Adam's moment decays and epsilon (torch.optim.Adam's defaults).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"`` (no host synchronisation at all).
    """

    name = "coarse-to-fine"

    def __init__(
        self,
        num_objectives: int,
        *,
        offsets: float | Sequence[float] = 1.0,
        beta: float = 0.025,
        gamma: float = 0.001,
        renormalize: bool = True,
        mode: Mode = "same_batch",
        update_every: int = 1,
        warmup: int = 0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        self._offsets = Offsets(offsets, num_objectives)
        if not (math.isfinite(beta) and beta > 0.0):
            raise ValueError(f"beta must be > 0, got {beta!r}")
        if not (math.isfinite(gamma) and gamma >= 0.0):
            raise ValueError(f"gamma must be >= 0, got {gamma!r}")
        if mode not in ("same_batch", "next_batch"):
            raise ValueError(f"mode must be 'same_batch' or 'next_batch', got {mode!r}")
        b1, b2 = (float(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        if not (math.isfinite(eps) and eps > 0.0):
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.beta, self.gamma, self.renormalize, self.mode = (
            float(beta),
            float(gamma),
            bool(renormalize),
            mode,
        )
        self.update_every = positive_int("update_every", update_every)
        self.warmup = positive_int("warmup", warmup, minimum=0)
        self.betas, self.eps = (b1, b2), float(eps)
        self.logits = torch.zeros(num_objectives, dtype=torch.float64)
        self.exp_avg = torch.zeros(num_objectives, dtype=torch.float64)
        self.exp_avg_sq = torch.zeros(num_objectives, dtype=torch.float64)
        self.step = 0
        #: backward calls that were not skipped (decides which steps learn under update_every)
        self.calls = 0
        #: losses of the last backward, waiting for update() (same_batch) or the next batch
        self.pending: Tensor | None = None
        self._warned = False

    @property
    def needs_update(self) -> bool:
        """True when the last :meth:`backward` waits for :meth:`update` (``same_batch`` mode, on the
        steps that learn): read it after ``backward``, to decide whether to recompute the losses."""
        return self.mode == "same_batch" and self.pending is not None

    # ------------------------------------------------------------------ balancing
    def _to(self, device: torch.device) -> None:
        if self.logits.device != device:
            self.logits, self.exp_avg, self.exp_avg_sq = (
                t.to(device) for t in (self.logits, self.exp_avg, self.exp_avg_sq)
            )
        if self.pending is not None and self.pending.device != device:
            self.pending = self.pending.to(device)

    @property
    def offsets(self) -> tuple[float, ...]:
        return self._offsets.values

    def weights_for(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """``(w, z)`` for loss values: the renormalised coefficients and ``softmax(ξ)``."""
        z = torch.softmax(self.logits, dim=0)
        coeff = z / (values + self._offsets.on(values.device))
        w = coeff / coeff.sum() if self.renormalize else coeff
        return w, z

    def _backward(self, losses: list[Tensor], values: Tensor, params: list[Tensor]) -> BalanceInfo:
        self._to(values.device)
        if not self._finite_or_skip(values):
            return self._skipped(values)
        if self.mode == "next_batch" and self.pending is not None:
            self._learn(self.pending, values)
        elif self.pending is not None and not self._warned:
            self._warned = True
            warnings.warn(
                "CoarseToFineBalancer.backward() called again without update(): the logits "
                "learn only from update(losses recomputed after the optimiser step) "
                "— see moo_opt.balanced_step",
                stacklevel=3,
            )
        logits = self.logits.clone()
        warming = self.calls < self.warmup
        if warming:  # the standard loss: no logits, no extra forward
            z = torch.full_like(values, 1.0 / self.num_objectives)
            w = z if self.renormalize else torch.ones_like(values)
        else:
            w, z = self.weights_for(values)
        self._backward_weighted(losses, w)
        self.pending = (
            values if not warming and (self.calls - self.warmup) % self.update_every == 0 else None
        )
        self.calls += 1
        extras = {"logits": logits, "z": z}
        if warming:
            extras["warmup"] = torch.ones((), dtype=torch.float64, device=values.device)
        if self.mode == "next_batch":
            extras["approximate"] = torch.ones((), dtype=torch.float64, device=values.device)
        return BalanceInfo(weights=w, losses=values, extras=extras, skips=self.skips)

    @property
    def takes_update(self) -> bool:
        """True in ``same_batch`` mode: :meth:`update` learns (on the steps that learn)."""
        return self.mode == "same_batch"

    def update(
        self,
        new_losses: Sequence[Tensor] | Tensor,
        *,
        before: Sequence[Tensor] | Tensor | None = None,
    ) -> bool:
        """One Adam step on the logits from the losses recomputed after the optimiser step,
        when :attr:`needs_update` says one is due; otherwise (a skipped :meth:`backward`, a
        warm-up step, a step that does not learn under ``update_every``) a no-op returning False.
        Raises in ``next_batch`` mode (the next backward learns) and before any backward.

        ``new_losses``: :math:`L'`, by default on the whole batch of the last :meth:`backward`,
        whose losses are :math:`L`. ``before``: when ``new_losses`` were computed on a sub-batch
        only, that sub-batch's losses *before* the step (e.g. from the step's own forward pass),
        which then stand for :math:`L` in δ: an estimate of the whole batch's δ (see the class
        docstring). Under several processes both are averaged over the ranks.
        """
        if self.mode != "same_batch":
            raise RuntimeError(
                "update() is for mode='same_batch'; in 'next_batch' mode the next backward() learns"
            )
        if not self.needs_update:
            if self.calls == 0 and not self.skips:
                raise RuntimeError("update() needs a preceding backward() on the same batch")
            return False
        assert self.pending is not None
        device = self.pending.device
        new = self._loss_vector(new_losses, "new losses").to(device)
        if before is None:
            old = self.pending
            new = distributed.mean_(new.clone())
            checked = new
        else:  # one all-reduce for both (the backward's losses are averaged already)
            old, new = distributed.mean_(
                torch.stack([self._loss_vector(before, "losses before").to(device), new])
            ).unbind()
            checked = torch.cat([old, new])
        if not self._finite_or_skip(checked):
            self.pending = None
            return False
        self._learn(old, new)
        self.pending = None
        return True

    def _loss_vector(self, losses: Sequence[Tensor] | Tensor, what: str) -> Tensor:
        """The N loss values as a detached float64 vector (a 1-D tensor or N scalars)."""
        if isinstance(losses, Tensor) and losses.dim() == 1:
            values = losses.detach().to(torch.float64)
        else:
            items = list(losses)
            if len(items) != self.num_objectives:
                raise ValueError(f"expected {self.num_objectives} {what}, got {len(items)}")
            values = torch.stack([torch.as_tensor(x).detach().reshape(()) for x in items]).to(
                torch.float64
            )
        if values.numel() != self.num_objectives:
            raise ValueError(f"expected {self.num_objectives} {what}, got {values.numel()}")
        return values

    def logit_gradient(self, before: Tensor, after: Tensor) -> Tensor:
        """``z ⊙ (δ − ⟨z, δ⟩) + γ ξ`` with ``δ = log(L + c) − log(L' + c)``."""
        c = self._offsets.on(before.device)
        delta = torch.log(before + c) - torch.log(after + c)
        z = torch.softmax(self.logits, dim=0)
        return z * (delta - (z * delta).sum()) + self.gamma * self.logits

    def _learn(self, before: Tensor, after: Tensor) -> None:
        """One Adam step (torch.optim.Adam's arithmetic, in float64) on the logits."""
        self.step += 1
        adam_step_(
            self.logits,
            self.logit_gradient(before, after),
            self.exp_avg,
            self.exp_avg_sq,
            self.step,
            self.beta,
            self.betas,
            self.eps,
        )

    # ------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        return {
            "logits": self.logits,
            "exp_avg": self.exp_avg,
            "exp_avg_sq": self.exp_avg_sq,
            "step": self.step,
            "calls": self.calls,
            "pending": self.pending,
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self._load_vectors(state, ("logits", "exp_avg", "exp_avg_sq"))
        self.step = int(state["step"])
        self.calls = int(state.get("calls", 0))
        pending = state.get("pending")
        self.pending = None if pending is None else pending.to(torch.float64)
