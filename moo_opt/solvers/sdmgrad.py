"""SDMGrad's inner problem: ``minimise ½|Gw + λg₀|²`` over the simplex, ``g₀ = Gp``, solved
exactly as MGDA's problem on the shifted gradients ``gᵢ + λg₀``."""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from moo_opt.solvers._core import jacobi_scales
from moo_opt.solvers._input import host_gramian, iteration_options, preference_vector, to_weights
from moo_opt.solvers.result import KKTReport, SolveResult
from moo_opt.solvers.simplex import solve_simplex_qp


def solve_sdmgrad(
    q: Tensor | np.ndarray,
    lam: float,
    preferences: Tensor | np.ndarray | None = None,
    *,
    rcond: float | None = None,
    tol: float = 1e-12,
    max_iter: int | None = None,
    validate: bool | None = None,
) -> SolveResult:
    r"""SDMGrad's weights: :math:`\min_{w\in\Delta}\tfrac12 |Gw + \lambda g_0|^2`,
    :math:`g_0 = Gp`, i.e. :math:`\tfrac12 w^\top Qw + \lambda\, w^\top Qp` (plus a constant).

    Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
    Algorithms" (NeurIPS 2023), the inner problem of SDMGrad: the update is
    :math:`d = (Gw^* + \lambda g_0)/(1 + \lambda)`. λ = 0 is MGDA's problem
    (:func:`~moo_opt.solvers.solve_simplex_qp`); as λ → ∞, :math:`d \to g_0`.

    Solved exactly: as :math:`\mathbf 1^\top w = 1`, :math:`Gw + \lambda g_0 = \sum_i w_i
    (g_i + \lambda g_0)`, so this is MGDA's problem on the shifted gradients, whose Gramian
    :math:`Q' = T^\top QT`, :math:`T = I + \lambda p\mathbf 1^\top` (``shifted_gramian``),
    goes to :func:`~moo_opt.solvers.solve_simplex_qp` (its methods and statuses; ``DEGENERATE``
    when the shifted gradients are affinely dependent, e.g. duplicated). Forming :math:`Q'` costs
    a relative accuracy :math:`\epsilon(1+\lambda)^2|g_0|^2/|g|^2`: nothing at the paper's
    λ = 0.3. The optimum is invariant to :math:`Q \to cQ` (no scale normalisation needed).
    Certificate (:func:`sdmgrad_kkt`), on the original Q: with :math:`v = w + \lambda p`,
    :math:`\nu = Qv - (w^\top Qv)\mathbf 1` must be ≥ 0 with :math:`w_i\nu_i = 0`, each term
    relative to :math:`T(s_i + T)`, :math:`s_i = \sqrt{Q_{ii}}`, :math:`T = \sum_j s_j|v_j|`.

    Args:
        q: the N×N Gram matrix ``GᵀG`` (tensor or array), validated.
        lam: λ, a finite number ≥ 0.
        preferences: p, N finite numbers (default 1/N each: :math:`g_0` the mean gradient).
        rcond, tol, max_iter: as for :func:`~moo_opt.solvers.solve_simplex_qp`.
        validate: ``None``/``True`` check ``q``; ``False`` skips the checks.

    Returns:
        :class:`SolveResult`, ``problem="sdmgrad"``, the simplex solver's ``method``, weights
        :math:`w^*` (float64, on ``q``'s device), ``gram`` :math:`Q'` (``objective``: the above).
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    if not (math.isfinite(lam) and lam >= 0.0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    g, host = host_gramian(q, validate)
    rc = iteration_options(g, rcond, tol, 1 if max_iter is None else max_iter)
    p = preference_vector(preferences, g.n, 1.0 / g.n)
    shifted = shifted_gramian(host, float(lam), p)
    inner = solve_simplex_qp(shifted, rcond=rc, tol=tol, max_iter=max_iter, validate=False)
    w = inner.weights.numpy()
    return SolveResult.solved(
        to_weights(w, g.device),
        "sdmgrad",
        method=inner.method,
        iterations=inner.iterations,
        gram=shifted,
        status=inner.status,
        certificate=lambda: sdmgrad_kkt(host, w, float(lam), p),
    )


def shifted_gramian(q: np.ndarray, lam: float, p: np.ndarray) -> np.ndarray:
    """``Q' = TᵀQT``, ``T = I + λp1ᵀ``: the Gramian of the shifted gradients ``gᵢ + λGp``."""
    qp = q @ p
    shifted = q + lam * (qp[:, None] + qp[None, :]) + lam * lam * float(p @ qp)
    return 0.5 * (shifted + shifted.T)


def sdmgrad_kkt(q: np.ndarray, w: np.ndarray, lam: float, p: np.ndarray) -> KKTReport:
    r"""The certificate of :func:`solve_sdmgrad` on the original Gramian ``q``: with
    :math:`v = w + \lambda p` and :math:`\nu = Qv - (w^\top Qv)\mathbf 1`, ``dual_feasibility``
    is :math:`\max(-\nu_i, 0)/\text{scale}_i`, ``complementarity``
    :math:`\max |w_i|\,|\nu_i|/\text{scale}_i`, ``primal_feasibility``
    :math:`\max(|\mathbf 1^\top w - 1|, -w_i)`, with
    :math:`\text{scale}_i = T(s_i + T)`, :math:`T = \sum_j s_j|v_j|` (a bound on the terms)."""
    v = w + lam * p
    qv = q @ v
    s = jacobi_scales(q)
    t = float(s @ np.abs(v))
    scale = t * (s + t)
    nu = (qv - float(w @ qv)) / np.where(scale > 0.0, scale, 1.0)
    primal = max(abs(float(w.sum()) - 1.0), float(np.maximum(-w, 0.0).max()))
    return KKTReport(
        stationarity=0.0,
        primal_feasibility=primal,
        dual_feasibility=float(np.maximum(-nu, 0.0).max()),
        complementarity=float((np.abs(w) * np.abs(nu)).max()),
    )
