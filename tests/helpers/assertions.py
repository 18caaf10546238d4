"""Reusable assertions on solver results, shared by every solver test (TorchJD-style).

Tolerances (float64, relative, see :class:`moo_opt.solvers.KKTReport` for the residual scale):

* ``KKT_TOL = 1e-9``: the largest KKT residual of a non-degenerate solve;
* ``DEGENERATE_KKT_TOL = 1e-6``: after truncation of an unresolvable direction;
* objectives, where our status is ``OPTIMAL``: ``f ≤ f_ref + 1e-8·S`` always, and
  ``|f − f_ref| ≤ 1e-8·|f_ref| + 1e-10·S`` where ``S = max(Qᵢᵢ)·max(1, ‖w‖₁²)`` (the rounding of
  ``wᵀQw`` grows with the weights), and the problem is well conditioned (condition
  ≤ 1e6) and the reference certifies itself (its KKT residual ≤ 1e-7). ``DEGENERATE`` answers are
  optimal only up to the truncated directions: they are checked by their KKT residual alone;
* weights, where the optimum is unique: ``1e-6 + 1e3·condition·KKT(reference)``, what the
  reference's own accuracy allows (cvxpy is the less accurate of the two; an interior-point
  method leaves ~1e-7 on weights that are zero at the optimum).
"""

from __future__ import annotations

from typing import Callable

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
    return x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)


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


def reference_solution(solve_reference: Callable[..., SolveResult], q: np.ndarray) -> SolveResult | None:
    """The cvxpy answer, or None when the conic solver cannot solve the instance (it fails on some
    near-singular inputs at the tight default tolerances; retried once at Clarabel's defaults)."""
    for options in (None, {}):
        try:
            return solve_reference(q, solver="CLARABEL" if options is not None else None, options=options)
        except SolverError:
            continue
    return None


def reference_is_trustworthy(reference: SolveResult | None) -> bool:
    return reference is not None and reference.status is SolveStatus.OPTIMAL and reference.kkt_residual <= 1e-7


def assert_objective_matches(result: SolveResult, reference: SolveResult, q: np.ndarray, *, two_sided: bool) -> None:
    """Ours is never worse than the reference (beyond 1e-8 of the Gramian's scale); where the problem
    is well conditioned and the reference certifies itself, the two agree to 1e-8 relative."""
    f, f_ref = result.objective, reference.objective
    slack = objective_slack(q, result, reference)
    assert f <= f_ref + slack, f"worse than the reference: {f!r} > {f_ref!r} (slack {slack:.3g})"
    if two_sided and reference_is_trustworthy(reference):
        atol = objective_slack(q, result, reference, rtol=OBJ_ATOL)
        assert abs(f - f_ref) <= OBJ_RTOL * abs(f_ref) + atol, f"objective {f!r} != reference {f_ref!r}"


def weight_tolerance(result: SolveResult, reference: SolveResult) -> float:
    """What the reference's own accuracy allows: its KKT residual amplified by the condition."""
    return 1e-6 + 1e3 * result.condition * max(reference.kkt_residual, 1e-12)


def assert_weights_close(a: Tensor | np.ndarray, b: Tensor | np.ndarray, tol: float) -> None:
    wa, wb = _np(a), _np(b)
    gap = float(np.abs(wa - wb).max())
    assert gap <= tol * max(1.0, float(np.abs(wb).max())), f"weights differ by {gap:.3g}: {wa} vs {wb}"


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
