"""SDMGrad (Xiao, Ban & Ji, NeurIPS 2023): the common descent direction kept near a preferred
direction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from moo_opt.balancers.base import (
    BalanceInfo,
    Gramian,
    GramianBalancer,
    NonFinite,
    finite_number,
    positive_int,
    preferences,
)
from moo_opt.registry import register
from moo_opt.solvers import SolveResult
from moo_opt.weightings import sdmgrad_weights


@register
class SDMGradBalancer(GramianBalancer):
    r"""Direction-oriented MGDA: the min-norm direction regularised towards the preference
    direction :math:`g_0 = Gp`.

    Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
    Algorithms", NeurIPS 2023 (arXiv 2305.18409). The inner problem and the update are

    .. math:: w^* = \arg\min_{w\in\Delta} \tfrac12 |Gw + \lambda g_0|^2, \qquad
              d = \frac{Gw^* + \lambda g_0}{1 + \lambda},

    i.e. the weights :math:`(w^* + \lambda p)/(1 + \lambda)` on the raw losses. λ = 0 is MGDA
    (:class:`~moo_opt.MGDABalancer` with ``normalization="none"``); as λ → ∞ the weights tend to
    p (the plain mean for the default p = 1/N). The default λ = 0.3 is the one of the paper's
    experiments (TorchJD's and LibMTL's default).

    Ours solves the inner problem exactly (:func:`~moo_opt.solvers.solve_sdmgrad`: it is MGDA's
    problem on the shifted gradients :math:`g_i + \lambda g_0`, with a status and a KKT
    certificate), where the paper's code, LibMTL and TorchJD's ``SDMGradWeighting`` take 20 steps
    of projected SGD with momentum (step 10 or 5, momentum 0.5) on Q divided by its mean root
    diagonal, warm-started from the previous step's w: approximate, and dependent on the history.
    The paper estimates Q without bias from two independent mini-batches (double sampling,
    :math:`A = J_1 J_2^\top`, not symmetric) and the direction from a third. A balancer gets the
    losses of one batch, so [decision] ours uses that batch's Gramian :math:`Q = G^\top G`: the
    deterministic limit of the method (exact when the gradients are exact), a biased estimate of
    :math:`Q` under mini-batch noise (:math:`E[G^\top G] = \bar G^\top \bar G + \mathrm{Cov}`),
    the bias every Gramian balancer here has; a second and third batch would cost two extra
    forward passes per step.

    Objective sampling (SDMGrad-OS, ``sampled=K``): every step K of the N objectives are drawn
    uniformly without replacement, only their gradients are computed (an unsampled objective's
    own parameters, e.g. its head, get no gradient that step), the others count as zero
    gradients (in the inner simplex, a zero vertex), and the sampled ones get the weights
    :math:`\tfrac NK (w^*_i + \lambda p_i)/(1 + \lambda)` (the paper's :math:`N/K` factor, which
    makes the preference part an unbiased estimate of :math:`\lambda g_0`); the unsampled get 0.
    As in the authors' code, the zero vertex lets the inner problem shrink :math:`Gw`: when no
    sampled gradient conflicts with the sampled :math:`g_0`, :math:`w^*` is that vertex and the
    step is the rescaled preference part alone, :math:`\tfrac NK\,\lambda g_0/(1 + \lambda)`.
    [decision] Exactly K: the authors' Meta-World code draws each objective independently with
    probability K/N and redraws an empty draw, which changes the gradient count from step to step
    and biases that estimate (by 4/3 at N = 2, K = 1). The draws come from the balancer's own
    generator (``seed``), saved in the state dict, never the global RNG; a skipped step draws
    nothing. ``sampled=None`` or N: every objective, no draw.

    Args:
        num_objectives: N.
        lam: λ, a finite number ≥ 0.
        task_weights: the preferences p (N finite numbers ≥ 0), default 1/N each.
        sampled: None (all objectives) or K in 1..N (SDMGrad-OS).
        seed: seed of the sampling generator.
        rcond, tol: passed to the solver.
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.

    Extras: ``inner`` (:math:`w^*`, 0 for unsampled objectives) and, with ``sampled``,
    ``sampled`` (1 for the objectives drawn this step, else 0).
    """

    name = "sdmgrad"
    reads_host = True

    def __init__(
        self,
        num_objectives: int,
        *,
        lam: float = 0.3,
        task_weights: Sequence[float] | None = None,
        sampled: int | None = None,
        seed: int = 0,
        rcond: float | None = None,
        tol: float = 1e-12,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        if sampled is not None:
            positive_int("sampled", sampled)
            if sampled > num_objectives:
                raise ValueError(
                    f"sampled must be None or in 1..{num_objectives} (the objectives drawn per "
                    f"step), got {sampled}"
                )
        if not (isinstance(tol, (int, float)) and tol > 0.0):
            raise ValueError(f"tol must be > 0, got {tol!r}")
        self.lam = finite_number("lam", lam)
        self.task_weights = preferences(task_weights, num_objectives)
        self.sampled = None if sampled in (None, num_objectives) else sampled
        self.seed = int(seed)
        self.rcond = rcond
        self.tol = float(tol)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._subset: list[int] | None = None

    def _backward(
        self,
        losses: list[Tensor],
        values: Tensor,
        params: list[Tensor],
        reps: list[Tensor] | None = None,
    ) -> BalanceInfo:
        if self.sampled is None:
            return super()._backward(losses, values, params, reps)
        if not self._finite_or_skip(values):
            return self._skipped(values)
        before = self.generator.get_state()
        draw = torch.randperm(self.num_objectives, generator=self.generator)[: self.sampled]
        self._subset = sorted(draw.tolist())
        try:
            info = super()._backward(
                [losses[i] for i in self._subset], values[self._subset], params, reps
            )
        finally:
            subset, self._subset = self._subset, None
        if info.skipped:  # a non-finite Gramian: nothing drawn, nothing written
            self.generator.set_state(before)
            return self._skipped(values)
        weights = torch.zeros_like(values)
        weights[subset] = info.weights.to(values.dtype)
        return BalanceInfo(
            weights=weights, losses=values, solve=info.solve, extras=info.extras, skips=self.skips
        )

    def _weights(
        self, values: Tensor, gram: Tensor
    ) -> tuple[Tensor, SolveResult, dict[str, Tensor]]:
        extras: dict[str, Tensor] = {}
        subset = self._subset
        if subset is None:
            w, result = sdmgrad_weights(
                gram,
                lam=self.lam,
                task_weights=self.task_weights,
                rcond=self.rcond,
                tol=self.tol,
                extras=extras,
            )
            return w.to(values.device), result, {k: x.to(values.device) for k, x in extras.items()}
        # SDMGrad-OS: ``gram`` is the sampled objectives' block, placed in an N×N matrix
        n = self.num_objectives
        idx = torch.tensor(subset, device=gram.device)
        full = torch.zeros(n, n, dtype=gram.dtype, device=gram.device)
        full[idx[:, None], idx] = gram
        w, result = sdmgrad_weights(
            full,
            lam=self.lam,
            task_weights=self.task_weights,
            sampled=subset,
            rcond=self.rcond,
            tol=self.tol,
            extras=extras,
        )
        mask = torch.zeros(n, dtype=torch.float64)
        mask[subset] = 1.0
        extras["sampled"] = mask
        moved = {k: x.to(values.device) for k, x in extras.items()}
        return w.to(values.device)[idx.to(values.device)], result, moved

    def _state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
