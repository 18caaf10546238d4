"""Reusable assertions on solver results, shared by every solver test (TorchJD-style).

Tolerances (float64, relative, see :class:`moo_opt.solvers.KKTReport` for the residual scale):

* ``KKT_TOL = 1e-9``: the largest KKT residual of a non-degenerate solve;
* ``DEGENERATE_KKT_TOL = 1e-6``: after truncation of an unresolvable direction;
* objectives, where our status is ``OPTIMAL``: ``f ≤ f_ref + 1e-8·S`` always, and
  ``|f − f_ref| ≤ 1e-8·|f_ref| + 1e-10·S`` where ``S = max(Qᵢᵢ)·max(1, ‖w‖₁²)`` (the rounding of
  ``wᵀQw`` grows with the weights), and the problem is well conditioned (condition
  ≤ 1e6) and the reference certifies itself (its KKT residual ≤ 1e-7). ``DEGENERATE`` answers are
  optimal only up to the truncated directions: they are checked by their KKT residual alone;
* weights, where the optimum is unique: within ``1e-10·condition`` of the reference's answer
  polished on its support (:func:`polished`; cvxpy's raw weights carry the interior-point
  method's 1e-7..1e-4 errors).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import Tensor

from moo_opt.solvers import SolveResult, SolveStatus
from moo_opt.solvers.reference import SolverError
from moo_opt.solvers.result import relative_multipliers

KKT_TOL = 1e-9
DEGENERATE_KKT_TOL = 1e-6
OBJ_RTOL = 1e-8
OBJ_ATOL = 1e-10
WELL_CONDITIONED = 1e6


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return (
        x.detach().cpu().double().numpy()
        if isinstance(x, Tensor)
        else np.asarray(x, dtype=np.float64)
    )


def scale_of(q: np.ndarray) -> float:
    return float(np.abs(np.diag(q)).max())


def objective_slack(q: np.ndarray, *results: SolveResult, rtol: float = OBJ_RTOL) -> float:
    """``rtol·max(Qᵢᵢ)·max(1, ‖w‖₁²)``: evaluating ``wᵀQw`` loses ``eps·‖w‖₁²·max(Qᵢᵢ)`` to
    cancellation when the weights are large (strongly aligned gradients extrapolate)."""
    big = max([1.0] + [float(np.abs(_np(r.weights)).sum()) ** 2 for r in results])
    return rtol * scale_of(q) * big


def assert_finite(result: SolveResult) -> None:
    w = _np(result.weights)
    assert np.isfinite(w).all(), f"non-finite weights {w}"
    assert np.isfinite(result.objective)


def assert_feasible(result: SolveResult, tol: float = 1e-12) -> None:
    w = _np(result.weights)
    assert abs(w.sum() - 1.0) <= tol * max(1.0, np.abs(w).sum()), f"Σw = {w.sum()!r}"
    if result.problem == "simplex":
        assert (w >= 0.0).all(), f"negative simplex weights {w}"


def assert_certified(result: SolveResult) -> None:
    """Feasible, finite, and KKT residual under the tolerance its status allows."""
    assert_finite(result)
    assert_feasible(result)
    tol = KKT_TOL if result.status is SolveStatus.OPTIMAL else DEGENERATE_KKT_TOL
    assert result.kkt_residual <= tol, f"{result.status}: KKT {result.kkt}"


def reference_solution(
    solve_reference: Callable[..., SolveResult], q: np.ndarray
) -> SolveResult | None:
    """The cvxpy answer, or None when the conic solver cannot solve the instance (it fails on some
    near-singular inputs at the tight default tolerances; retried once at Clarabel's defaults)."""
    for options in (None, {}):
        try:
            return solve_reference(
                q, solver="CLARABEL" if options is not None else None, options=options
            )
        except SolverError:
            continue
    return None


def reference_is_trustworthy(reference: SolveResult | None) -> bool:
    return (
        reference is not None
        and reference.status is SolveStatus.OPTIMAL
        and reference.kkt_residual <= 1e-7
    )


def assert_objective_matches(
    result: SolveResult, reference: SolveResult, q: np.ndarray, *, two_sided: bool
) -> None:
    """Ours is never worse than the reference (beyond 1e-8 of the Gramian's scale); where the
    problem is well conditioned and the reference certifies itself, the two agree to 1e-8
    relative."""
    f, f_ref = result.objective, reference.objective
    slack = objective_slack(q, result, reference)
    assert f <= f_ref + slack, f"worse than the reference: {f!r} > {f_ref!r} (slack {slack:.3g})"
    if two_sided and reference_is_trustworthy(reference):
        atol = objective_slack(q, result, reference, rtol=OBJ_ATOL)
        assert abs(f - f_ref) <= OBJ_RTOL * abs(f_ref) + atol, (
            f"objective {f!r} != reference {f_ref!r}"
        )


def polished(q: np.ndarray, reference: SolveResult, support_tol: float = 1e-6) -> np.ndarray | None:
    """The reference's answer polished to full precision, independently of moo-opt's code paths.

    An interior-point method leaves errors of ~1e-7..1e-4 in the weights of flat problems; the
    standard remedy (OSQP's "polish") is to take its support T (weights above ``support_tol``,
    all of them for the equality problem) and solve the equality-constrained KKT system on T
    directly, here with ``numpy.linalg.lstsq`` on the Jacobi-scaled bordered matrix. Returns None
    when the polished point is not a KKT point of the simplex problem (ambiguous support).
    """
    w_ref = _np(reference.weights)
    n = q.shape[0]
    support = (
        np.ones(n, dtype=bool)
        if reference.problem == "equality"
        else w_ref > support_tol * np.abs(w_ref).max()
    )
    idx = np.flatnonzero(support)
    s = np.sqrt(np.maximum(np.diag(q)[idx], 1e-300))
    k = len(idx)
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = q[np.ix_(idx, idx)] / np.outer(s, s)
    kkt[:k, k] = kkt[k, :k] = 1.0 / s
    sol = np.linalg.lstsq(kkt, np.r_[np.zeros(k), 1.0], rcond=None)[0]
    w = np.zeros(n)
    w[idx] = sol[:k] / s
    if reference.problem == "simplex":
        if (w < 0.0).any() or (relative_multipliers(q, w) < -1e-9).any():
            return None
    return w


def assert_weights_close(a: Tensor | np.ndarray, b: Tensor | np.ndarray, tol: float) -> None:
    wa, wb = _np(a), _np(b)
    gap = float(np.abs(wa - wb).max())
    assert gap <= tol * max(1.0, float(np.abs(wb).max())), (
        f"weights differ by {gap:.3g}: {wa} vs {wb}"
    )


def assert_balanced(result: SolveResult, g: np.ndarray, tol: float = 1e-8) -> None:
    """The balance condition of the equality QP: gᵢ·d = |d|² for every i, with d = Gw."""
    d = g @ _np(result.weights)
    gd = g.T @ d
    dd = float(d @ d)
    norms = np.linalg.norm(g, axis=0) * np.linalg.norm(d)
    assert (np.abs(gd - dd) <= tol * (norms + dd) + 1e-300).all(), f"g·d = {gd}, |d|² = {dd}"


def is_strictly_complementary(result: SolveResult, margin: float = 1e-6) -> bool:
    """True when every zero weight has a multiplier clearly above zero (the optimum is then unique
    for a non-degenerate support); a predicate, for deciding whether weights can be compared."""
    w = _np(result.weights)
    nu = relative_multipliers(_np(result.gram), w)
    return bool((nu[w <= 0] > margin).all())
