"""ExcessMTL (He et al., ICML 2024): the weights move towards the objectives furthest from
convergence, by their estimated excess risks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from moo_opt.balancers.base import NonFinite, finite_number, positive_int
from moo_opt.balancers.coordinatewise import CoordinateBalancer, CoordinateBuffers
from moo_opt.registry import register


def mirror_ascent(log_weights: Tensor, scores: Tensor) -> Tensor:
    r"""The log-weights of the exponentiated-gradient step: the maximiser over the simplex of

    .. math:: \langle w, s \rangle - \mathrm{KL}(w \,\|\, p), \qquad p = e^{\ell}
        \text{ (on the simplex)}, \; s = \text{scores}.

    Derivation: the objective is strictly concave on the simplex and its gradient
    :math:`s_i - \log(w_i / p_i) - 1` tends to :math:`+\infty` as :math:`w_i \to 0`, so the
    maximiser is interior and the only constraint active is :math:`\sum_i w_i = 1`; with its
    multiplier :math:`\mu`, stationarity :math:`s_i - \log(w_i / p_i) - 1 = \mu` gives
    :math:`w_i = p_i e^{s_i} / Z`, :math:`Z = \sum_j p_j e^{s_j}`, the unique maximiser, and
    the optimal value is :math:`\log Z`. Computed in log space,
    :math:`\ell + s - \operatorname{logsumexp}(\ell + s)`: no overflow whatever the scores, and
    a weight whose exponential underflows keeps a finite log-weight, so a later step can bring it
    back, as the exact iterate would (a weight stored as 0 could never move again).
    ``log_weights`` and ``scores``: finite (N,) tensors; the result is normalised
    (:math:`\sum_i e^{\ell_i} = 1` to rounding)."""
    shifted = log_weights + scores
    return shifted - torch.logsumexp(shifted, dim=0)


def excess_risks(matrices: list[Tensor], sums: list[Tensor], eps: float, n: int) -> Tensor:
    r"""Add each (n, numel) matrix's squares to its running ``sums`` (in place) and return the
    (n,) float64 excess-risk estimates :math:`\hat E_i = \sum_k g_{ik}^2 / \sqrt{S_{ik} + \epsilon}`
    over all the matrices' coordinates (zeros when there are none), on the first one's device."""
    device = matrices[0].device if matrices else None
    risk = torch.zeros(n, dtype=torch.float64, device=device)
    for m, s in zip(matrices, sums):
        squares = m * m
        s.add_(squares)
        risk += (squares / torch.sqrt(s + eps)).sum(dim=1, dtype=torch.float64).to(device)
    return risk


@register
class ExcessMTLBalancer(CoordinateBalancer):
    r"""Weights moved by the objectives' estimated excess risks, on the simplex.

    He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi & Zhao, "Robust Multi-Task Learning with Excess
    Risks", ICML 2024 (the official code, LibMTL's ``ExcessMTL`` and TorchJD's
    ``ExcessMTLWeighting``). The excess risk :math:`L_i(\theta) - L_i^*` of objective i is
    estimated by a second-order Taylor expansion, :math:`\hat E_i = g_i^\top H_i^{-1} g_i`, with
    the Hessian replaced by AdaGrad's diagonal (Equations 6-7): over the balanced coordinates k,

    .. math:: \hat E_i(t) = \sum_k \frac{g_{ik}(t)^2}{\sqrt{S_{ik}(t) + \epsilon}}, \qquad
        S_{ik}(t) = \sum_{s \le t} g_{ik}(s)^2.

    Scale processing (Section 3.2; Appendix C.1 for the warm-up): with :math:`K` =
    ``max(n_warmup_steps, 1)``, the baseline is the mean :math:`b_i` of :math:`\hat E_i` over the
    first :math:`K` steps, during which the weights stay at :math:`w(0) = 1/N`; from step
    :math:`K + 1` on, with :math:`r_i(t) = \hat E_i(t) / (b_i + \epsilon)` and
    :math:`\eta` = ``robust_step_size``, the exponentiated-gradient step (Equation 9)

    .. math:: w(t) = \frac{w(t-1) \odot e^{\eta r(t)}}{\sum_j w_j(t-1) e^{\eta r_j(t)}}
        = \arg\max_{w \in \Delta} \, \langle w, \eta r(t) \rangle
        - \mathrm{KL}(w \,\|\, w(t-1))

    (mirror ascent; :func:`mirror_ascent`), and the direction is :math:`d = G w(t)`, the current
    gradients weighted by the current weights. An objective that stays further from convergence
    (larger relative excess risk) gains weight, multiplicatively; the constant factor of the
    Taylor term (½ or 1) and each gradient's scale cancel in :math:`r_i`. Computed in log space:
    a very large :math:`r_i` (an objective whose baseline was zero) saturates the weights rather
    than overflowing, and the state keeps the log-weights, so no weight is stuck at an underflowed
    zero.

    Choices, where the sources differ. The first step: with ``n_warmup_steps=0`` the first step
    only sets the baseline and the weights move from the second (the official code and LibMTL),
    so 0 and 1 are the same rule; TorchJD's ``n_warmup_steps=0`` moves the weights on the first
    step by the raw, unscaled :math:`\hat E_i(1) \approx \lVert g_i \rVert_1`, which depends on
    the gradients' scale (on a large model the weights are one-hot after one step), and its
    ``n_warmup_steps=k ≥ 1`` is exactly this rule (tests). The weights start at 1/N and stay on
    the simplex (the paper, TorchJD); the official code and LibMTL start at 1 and keep
    :math:`\sum_i w_i = N`: their steps are N times ours (a learning rate N times larger gives
    theirs). :math:`\epsilon` guards both the square root and the baseline (TorchJD's and the
    official :math:`10^{-7}`; the official code divides by :math:`b_i` alone).

    ``info.weights`` are :math:`w(t)`, with ``.grad`` exactly :math:`G w(t)` on the balanced
    parameters (an objective that does not reach one counts as zeros there); leaves outside the
    balanced set (e.g. the task heads) get :math:`\sum_i w_i(t) \nabla L_i`, the same weights.
    Extras: ``excess_risk`` (:math:`\hat E(t)`), and ``relative_risk`` (:math:`r(t)`) once the
    weights move, ``warmup`` (1) before. Under ``torch.distributed`` each objective's gradient is
    averaged over the ranks first, so every rank keeps the same sums and weights. Memory: the sums
    :math:`S` are N values per balanced coordinate, in the gradients' dtype and on their device
    (N times the balanced parameters, kept for the whole run, in the state dict), besides the N
    per-objective gradients of the step. The balanced coordinates must be the same at every step
    (a clear error otherwise). There is no Gramian: ``gramian="representation"`` is not offered
    and representations are refused.

    Args:
        num_objectives: N.
        robust_step_size: :math:`\eta > 0` (1, the paper's and the official default).
        n_warmup_steps: steps whose mean excess risk is the baseline, weights uniform meanwhile
            (0: the first step's; Appendix C.1 suggests 3 epochs' worth).
        eps: :math:`\epsilon > 0` of the square root and of the baseline's division.
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "excessmtl"

    def __init__(
        self,
        num_objectives: int,
        *,
        robust_step_size: float = 1.0,
        n_warmup_steps: int = 0,
        eps: float = 1e-7,
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        self.robust_step_size = finite_number("robust_step_size", robust_step_size, above=True)
        self.n_warmup_steps = positive_int("n_warmup_steps", n_warmup_steps, minimum=0)
        self.eps = finite_number("eps", eps, above=True)
        #: the running sums of squared gradients S, per balanced parameter (N, numel)
        self.sums = CoordinateBuffers("excessmtl's sums of squared gradients")
        #: log w (float64, normalised): w = exp(log_weights)
        self.log_weights = torch.full(
            (num_objectives,), -math.log(num_objectives), dtype=torch.float64
        )
        #: the sum of Ê over the first max(n_warmup_steps, 1) steps (the baseline times their count)
        self.risk_sum = torch.zeros(num_objectives, dtype=torch.float64)
        #: balanced (not skipped) steps so far
        self.steps = 0
        self._current: Tensor | None = None  # this step's weights, for the leaves outside

    @property
    def weights(self) -> Tensor:
        """The current weights w (float64, on the simplex)."""
        return self.log_weights.exp()

    def _combine(
        self, matrices: list[Tensor], values: Tensor
    ) -> tuple[list[Tensor], Tensor, dict[str, Tensor]]:
        device = values.device
        sums = self.sums.like(matrices)
        risk = excess_risks(matrices, sums, self.eps, self.num_objectives).to(device)
        warmup = max(self.n_warmup_steps, 1)
        self.steps += 1
        self.log_weights = self.log_weights.to(device)
        self.risk_sum = self.risk_sum.to(device)
        extras = {"excess_risk": risk}
        if self.steps <= warmup:
            self.risk_sum = self.risk_sum + risk
            extras["warmup"] = torch.ones((), dtype=torch.float64, device=device)
        else:
            relative = risk / (self.risk_sum / warmup + self.eps)
            self.log_weights = mirror_ascent(self.log_weights, self.robust_step_size * relative)
            extras["relative_risk"] = relative
        w = self.log_weights.exp()
        self._current = w
        directions = [w.to(m.device, m.dtype) @ m for m in matrices]
        return directions, w, extras

    def _plain(self, values: Tensor) -> Tensor:
        assert self._current is not None  # _combine ran first in this step
        return self._current.to(values.device)

    def _state(self) -> dict[str, Any]:
        return {
            "sums": self.sums.state(),
            "log_weights": self.log_weights,
            "risk_sum": self.risk_sum,
            "steps": self.steps,
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.sums.load(state["sums"])
        self._load_vectors(state, ("log_weights", "risk_sum"))
        self.steps = positive_int("state_dict entry 'steps'", state["steps"], minimum=0)
