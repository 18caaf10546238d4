"""Solution 2 of Zhang et al. (CVPR 2025): the equality-constrained QP balancer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from moo_opt.balancers.base import GramianBalancer, NonFinite, Offsets
from moo_opt.solvers import SolveResult, solve_equality_qp, solve_simplex_qp

Backend = Literal["analytic", "cvxpy"]


def renormalized(coeff: Tensor) -> tuple[Tensor, Tensor]:
    """``coeff / Σcoeff`` (weights summing to one, the direction unchanged).

    [decision] When ``Σcoeff ≤ 0`` (possible only with negative QP weights) dividing by it would
    reverse the direction; the coefficients are then divided by ``Σ|coeff|`` instead and the
    returned flag is 1. Computed on the device, without a host synchronisation.
    """
    total = coeff.sum()
    flip = total <= 0.0
    denom = torch.where(flip, coeff.abs().sum(), total)
    return coeff / denom, flip.to(coeff.dtype)


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

    Args:
        num_objectives: N.
        offsets: :math:`c_i` (default 1: log(L + 1)).
        renormalize: renormalise the coefficients (True).
        simplex: solve over the simplex instead (:math:`z \ge 0`; MGDA's problem on log-losses).
        backend: ``"analytic"`` (moo-opt's solvers) or ``"cvxpy"`` (the reference, slow; only when
            asked, never as a fallback).
        rcond, ridge: passed to :func:`~moo_opt.solvers.solve_equality_qp` (degenerate Gramians get
            the minimum-norm weights and a ``DEGENERATE`` status by default).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "qp"

    def __init__(
        self,
        num_objectives: int,
        *,
        offsets: float | Sequence[float] = 1.0,
        renormalize: bool = True,
        simplex: bool = False,
        backend: Backend = "analytic",
        rcond: float | None = None,
        ridge: float = 0.0,
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        self._offsets = Offsets(offsets, num_objectives)
        if backend not in ("analytic", "cvxpy"):
            raise ValueError(f"backend must be 'analytic' or 'cvxpy', got {backend!r}")
        if rcond is not None and not (math.isfinite(rcond) and rcond >= 0.0):
            raise ValueError(f"rcond must be >= 0 or None, got {rcond!r}")
        if not (math.isfinite(ridge) and ridge >= 0.0):
            raise ValueError(f"ridge must be >= 0, got {ridge!r}")
        if backend == "cvxpy":
            from moo_opt.solvers import reference  # noqa: F401  (fails now, with the install hint)

            reference._cvxpy()
        self.renormalize, self.simplex, self.backend = bool(renormalize), bool(simplex), backend
        self.rcond, self.ridge = rcond, float(ridge)

    @property
    def offsets(self) -> tuple[float, ...]:
        return self._offsets.values

    def _solve(self, gram: Tensor) -> SolveResult:
        if self.backend == "cvxpy":
            from moo_opt.solvers import reference

            solve = reference.solve_simplex_qp_cvxpy if self.simplex else reference.solve_equality_qp_cvxpy
            return solve(gram)
        if self.simplex:
            return solve_simplex_qp(gram, rcond=self.rcond)
        return solve_equality_qp(gram, rcond=self.rcond, ridge=self.ridge)

    def _weights(self, values: Tensor, gram: Tensor) -> tuple[Tensor, SolveResult, dict[str, Tensor]]:
        scale = values + self._offsets.on(values.device)
        result = self._solve(gram / (scale[:, None] * scale[None, :]))
        z = result.weights.to(values.device)
        coeff = z / scale
        extras = {"z": z}
        if self.renormalize:
            coeff, flipped = renormalized(coeff)
            extras["renormalized_by_abs"] = flipped
        return coeff, result, extras

