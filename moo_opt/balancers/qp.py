"""Solution 2 of Zhang et al. (CVPR 2025): the equality-constrained QP balancer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from moo_opt.balancers.base import (
    BalanceInfo,
    Gramian,
    GramianBalancer,
    NonFinite,
    Offsets,
    positive_int,
)
from moo_opt.gradients import ObjectiveGradients
from moo_opt.metrics import adam_metric, require_adam
from moo_opt.registry import register
from moo_opt.solvers import SolveResult
from moo_opt.weightings import QPBackend as Backend
from moo_opt.weightings import qp_coefficients, qp_weights

Metric = Literal["euclidean", "adam"]


@register
class QPBalancer(GramianBalancer):
    r"""Exact per-step balance of the log-losses' improvement speed (Solution 2).

    Zhang, Duan, Huang & Zhu, "Balanced Rate-Distortion Optimization in Learned Image
    Compression", CVPR 2025. With :math:`g_i = \nabla L_i / (L_i + c_i)` (the gradients of the
    log-losses over the balanced parameters) and :math:`Q = G^\top G`, solve

    .. math::  \min_z \tfrac12 z^\top Q z \quad\text{s.t.}\quad \textstyle\sum_i z_i = 1

    (:func:`~moo_opt.solvers.solve_equality_qp`); then :math:`d = Gz` satisfies
    :math:`g_i\cdot d = |d|^2` for every i: every log-loss decreases at the same first-order rate.
    The coefficients on the raw gradients, :math:`z_i / (L_i + c_i)`, are renormalised to sum to
    one (see :func:`renormalized`). Costs N gradient passes over one graph and no extra forward.
    For two objectives on CUDA nothing synchronises with the host except the optional finiteness
    check (``nonfinite="unchecked"`` removes it).

    ``solve_every=k`` amortises that cost: the QP is solved on one step in k (the first, then every
    k-th); the other steps apply the last solution :math:`z` to the current losses,
    :math:`z_i / (L_i + c_i)` renormalised, with a single backward pass of the weighted sum (the
    standard step's cost). Those steps are reported, never hidden: their info carries
    ``solve_age`` (steps since the solve, ≥ 1) and the last solve's result.

    Args:
        num_objectives: N.
        offsets: :math:`c_i` (default 1: log(L + 1)).
        renormalize: renormalise the coefficients (True).
        simplex: solve over the simplex instead (:math:`z \ge 0`; MGDA's problem on log-losses).
        backend: ``"analytic"`` (moo-opt's solvers) or ``"cvxpy"`` (the reference, slow; only when
            asked, never as a fallback).
        solve_every: solve the QP on one step in k (1: every step, the paper's method).
        metric: ``"euclidean"`` (the paper's :math:`G^\top G`) or ``"adam"``:
            :math:`G^\top P G` with Adam's preconditioner :math:`P = 1/(\sqrt{\hat v}+\epsilon)`
            (:func:`~moo_opt.metrics.adam_metric`), so that the balance holds for the step Adam
            takes; needs :meth:`bind_optimizer` (:func:`~moo_opt.balanced_step` binds it). Before
            Adam's first step there is no preconditioner: that step is Euclidean and its info
            says so (``adam_metric=0``).
        rcond, ridge: passed to :func:`~moo_opt.solvers.solve_equality_qp` (degenerate Gramians get
            the minimum-norm weights and a ``DEGENERATE`` status by default).
        trust_radius: keep the coefficients on the raw losses within this distance (max-norm) of
            the standard loss's, :math:`c^{std}_i = 1/N` (the plain sum of the losses): when the
            QP's coefficients :math:`c` lie further, they are moved back along the segment,
            :math:`c^{std} + t\,(c - c^{std})` with :math:`t = \rho / \max_i|c_i - c^{std}_i|`, and
            the info carries ``trust_scale`` t (1: inside). The sum stays one; below
            :math:`\rho < 1/N` no coefficient can change sign. ``None`` (default): the QP's
            coefficients as they are. Needs ``renormalize=True``.
        gradient_ema: :math:`\beta \in [0, 1)`. 0 (default): the Gramian of this step's gradients,
            the paper's method. :math:`\beta > 0`: the Gramian of exponential moving averages of
            each objective's gradient,
            :math:`\bar g_i \leftarrow \beta \bar g_i + (1-\beta)\nabla L_i`, and of its loss (both
            bias-corrected as in Adam; the scale :math:`L_i + c_i` is taken from the averaged loss),
            updated on every step that solves. A minibatch gradient is mostly noise near a trained
            model, and the min-norm QP gives the objective with the noisier (longer) gradient the
            smaller weight; averaging removes most of that noise, as MoCo (Fernando et al.,
            ICLR 2023) tracks gradients to correct stochastic MGDA. The step itself uses this step's
            gradients with the weights so found. Costs N copies of the balanced parameters'
            gradients in memory (kept in the state dict).
        shared_only: balance only the parameters that two objectives or more reach (for a LIC
            model, the analysis transform); each parameter that one objective alone reaches gets
            that objective's own gradient, never a reversed one (see
            :class:`~moo_opt.GramianBalancer`). ``False``: the paper's Gramian over every balanced
            parameter.
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "qp"
    _runtime_attributes = ("_optimizer",)  # bind_optimizer's binding survives load_state_dict

    def __init__(
        self,
        num_objectives: int,
        *,
        offsets: float | Sequence[float] = 1.0,
        renormalize: bool = True,
        simplex: bool = False,
        backend: Backend = "analytic",
        solve_every: int = 1,
        metric: Metric = "euclidean",
        rcond: float | None = None,
        ridge: float = 0.0,
        trust_radius: float | None = None,
        gradient_ema: float = 0.0,
        shared_only: bool = False,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        self._offsets = Offsets(offsets, num_objectives)
        self.shared_only = bool(shared_only)
        self.trust_radius = _checked_options(
            backend=backend,
            rcond=rcond,
            ridge=ridge,
            trust_radius=trust_radius,
            renormalize=renormalize,
            gradient_ema=gradient_ema,
            metric=metric,
        )
        if gramian == "representation" and (metric != "euclidean" or gradient_ema > 0.0):
            raise ValueError(
                "QPBalancer(gramian='representation') takes the Gramian of one batch's "
                "representation, which has no optimiser metric and no running average: use "
                "metric='euclidean' and gradient_ema=0 with it, or gramian='parameters'"
            )
        self.gradient_ema = float(gradient_ema)
        #: the averaged gradients (per objective, per balanced parameter; None where unreached) and
        #: losses, and the number of averaged steps (for the bias correction)
        self.tracked: list[list[Tensor | None]] | None = None
        self.tracked_losses: Tensor | None = None
        self.tracked_steps = 0
        self._pending: tuple[list[list[Tensor | None]], int] | None = None
        self.renormalize, self.simplex, self.backend = bool(renormalize), bool(simplex), backend
        self.rcond, self.ridge = rcond, float(ridge)
        self.solve_every = positive_int("solve_every", solve_every)
        self.metric: Metric = metric
        self._optimizer: torch.optim.Optimizer | None = None
        self._metric_used: Tensor | None = None
        #: steps balanced so far (not skipped): decides which steps solve under solve_every
        self.calls = 0
        #: the last QP solution z and its result, reused by the steps in between
        self.last_z: Tensor | None = None
        self._last_solve: SolveResult | None = None

    @property
    def offsets(self) -> tuple[float, ...]:
        return self._offsets.values

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimiser whose preconditioner ``metric="adam"`` reads (a runtime binding: not in
        the state dict, kept across :meth:`load_state_dict`)."""
        if self.metric == "adam":
            require_adam(optimizer)
        self._optimizer = optimizer

    def _averaged(self, grads: ObjectiveGradients) -> ObjectiveGradients:
        """The gradients with this step's folded into the moving averages (``gradient_ema``); kept
        aside and committed by :meth:`_weights`, so that a skipped (non-finite) step leaves them."""
        beta = self.gradient_ema
        old = self.tracked
        if old is not None and (len(old) != len(grads.grads) or len(old[0]) != len(grads.params)):
            raise ValueError(
                "QPBalancer(gradient_ema): the averaged gradients are of "
                f"{len(old[0])} parameters, this step has {len(grads.params)}; "
                "balance the same parameters, or start from a fresh balancer"
            )
        new: list[list[Tensor | None]] = []
        for i, row in enumerate(grads.grads):
            out: list[Tensor | None] = []
            for k, g in enumerate(row):
                prev = None if old is None else old[i][k]
                if g is None:
                    out.append(prev)
                elif prev is None:
                    # the first step that reaches it
                    # (the bias correction assumes all start together)
                    out.append((1.0 - beta) * g.detach())
                else:
                    # β·prev + (1-β)·g
                    out.append(torch.lerp(g.detach(), prev.to(g.device, g.dtype), beta))
            new.append(out)
        steps = self.tracked_steps + 1
        self._pending = (new, steps)
        # Adam's bias correction; a common factor of Q, kept for the values' sake
        correction = 1.0 - beta**steps
        scaled = [[None if t is None else t / correction for t in row] for row in new]
        return ObjectiveGradients(grads.params, scaled, [], [])

    def _gramian(self, grads: ObjectiveGradients) -> Tensor:
        if self.gradient_ema > 0.0:
            grads = self._averaged(grads)
        if self.metric == "euclidean":
            return grads.gramian(shared_only=self.shared_only)
        if self._optimizer is None:
            raise RuntimeError(
                "QPBalancer(metric='adam') needs balancer.bind_optimizer(optimizer) "
                "before backward() (balanced_step does it)"
            )
        precond = adam_metric(self._optimizer, grads.params)
        device = grads.params[0].device
        self._metric_used = torch.full(
            (), float(precond is not None), dtype=torch.float64, device=device
        )
        return grads.gramian(precond, shared_only=self.shared_only)

    def _weights(
        self, values: Tensor, gram: Tensor
    ) -> tuple[Tensor, SolveResult, dict[str, Tensor]]:
        offsets, scale = self._offsets.on(values.device), None
        if self.gradient_ema > 0.0 and self._pending is not None:
            self.tracked, self.tracked_steps = self._pending
            self._pending = None
            prev = (
                torch.zeros_like(values)
                if self.tracked_losses is None
                else self.tracked_losses.to(values.device, values.dtype)
            )
            self.tracked_losses = torch.lerp(values, prev, self.gradient_ema)
            scale = self.tracked_losses / (1.0 - self.gradient_ema**self.tracked_steps) + offsets
        extras: dict[str, Tensor] = {}
        coeff, result = qp_weights(
            gram, values, offsets, renormalize=self.renormalize, simplex=self.simplex,
            trust_radius=self.trust_radius, rcond=self.rcond, ridge=self.ridge,
            backend=self.backend, scale=scale, extras=extras,
        )  # fmt: skip
        if self.metric == "adam" and self._metric_used is not None:
            extras["adam_metric"] = self._metric_used
        if self.solve_every > 1:
            extras["solve_age"] = torch.zeros((), dtype=torch.float64, device=values.device)
        return coeff, result, extras

    def _coefficients(self, values: Tensor, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The coefficients on the raw losses for the log-loss weights ``z``
        (:func:`~moo_opt.weightings.qp_coefficients`)."""
        extras: dict[str, Tensor] = {}
        coeff = qp_coefficients(
            z,
            values,
            self._offsets.on(values.device),
            renormalize=self.renormalize,
            trust_radius=self.trust_radius,
            extras=extras,
        )
        return coeff, extras

    def _backward(
        self,
        losses: list[Tensor],
        values: Tensor,
        params: list[Tensor],
        reps: list[Tensor] | None = None,
    ) -> BalanceInfo:
        age = self.calls % self.solve_every
        if age == 0 or self.last_z is None:
            info = super()._backward(losses, values, params, reps)
            if not info.skipped:
                self.calls = 1  # counted from this solve
                self.last_z, self._last_solve = info.extras["z"], info.solve
            return info
        if not self._finite_or_skip(values):
            return self._skipped(values)
        z = self.last_z.to(values.device)
        coeff, extras = self._coefficients(values, z)
        self._backward_weighted(losses, coeff)
        self.calls += 1
        extras["solve_age"] = torch.full((), float(age), dtype=torch.float64, device=values.device)
        return BalanceInfo(
            weights=coeff, losses=values, solve=self._last_solve, extras=extras, skips=self.skips
        )

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"calls": self.calls, "last_z": self.last_z}
        if self.gradient_ema > 0.0:
            tracked = (
                None
                if self.tracked is None
                else [[None if t is None else t.clone() for t in row] for row in self.tracked]
            )
            state.update(
                tracked=tracked,
                tracked_losses=self.tracked_losses,
                tracked_steps=self.tracked_steps,
            )
        return state

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.calls = int(state.get("calls", 0))
        last = state.get("last_z")
        self.last_z = None if last is None else last.to(torch.float64)
        self._last_solve = None
        tracked = state.get("tracked")
        self.tracked = (
            None
            if tracked is None
            else [[None if t is None else t.clone() for t in row] for row in tracked]
        )
        self.tracked_losses = state.get("tracked_losses")
        self.tracked_steps = int(state.get("tracked_steps", 0))
        self._pending = None


def _checked_options(
    *,
    backend: Backend,
    rcond: float | None,
    ridge: float,
    trust_radius: float | None,
    renormalize: bool,
    gradient_ema: float,
    metric: Metric,
) -> float | None:
    """Check :class:`QPBalancer`'s options, and that cvxpy can be imported for
    ``backend="cvxpy"``; returns ``trust_radius`` as a float (None stays None)."""
    if backend not in ("analytic", "cvxpy"):
        raise ValueError(f"backend must be 'analytic' or 'cvxpy', got {backend!r}")
    if rcond is not None and not (math.isfinite(rcond) and rcond >= 0.0):
        raise ValueError(f"rcond must be >= 0 or None, got {rcond!r}")
    if not (math.isfinite(ridge) and ridge >= 0.0):
        raise ValueError(f"ridge must be >= 0, got {ridge!r}")
    if trust_radius is not None:
        if not (
            isinstance(trust_radius, (int, float))
            and math.isfinite(trust_radius)
            and trust_radius >= 0.0
        ):
            raise ValueError(f"trust_radius must be a number >= 0 or None, got {trust_radius!r}")
        if not renormalize:
            raise ValueError(
                "trust_radius bounds the renormalised coefficients; use it with renormalize=True"
            )
        trust_radius = float(trust_radius)
    if not (isinstance(gradient_ema, (int, float)) and 0.0 <= gradient_ema < 1.0):
        raise ValueError(f"gradient_ema must be a number in [0, 1), got {gradient_ema!r}")
    if metric not in ("euclidean", "adam"):
        raise ValueError(f"metric must be 'euclidean' or 'adam', got {metric!r}")
    if backend == "cvxpy":
        from moo_opt.solvers import reference  # noqa: F401  (fails now, with the install hint)

        reference._cvxpy()
    return trust_radius
