"""Reference solvers written in cvxpy (the ``cvxpy`` extra): slow, independent, exact to the
conic solver's tolerance. Used by the tests and selectable explicitly as a backend; moo-opt never
falls back to them silently.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from moo_opt.solvers._input import prepare, to_weights
from moo_opt.solvers.result import Problem, SolveResult, SolveStatus

#: Clarabel (interior point) with tolerances tighter than its defaults: a reference must be
#: accurate.
DEFAULT_SOLVER = "CLARABEL"
DEFAULT_OPTIONS: dict[str, Any] = {
    "tol_gap_abs": 1e-12,
    "tol_gap_rel": 1e-12,
    "tol_feas": 1e-12,
    "tol_ktratio": 1e-10,
}


class SolverError(RuntimeError):
    """The reference solver failed; raised rather than returning made-up weights."""


def _cvxpy() -> Any:
    try:
        import cvxpy
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the cvxpy reference solvers need cvxpy: pip install 'moo-opt[cvxpy]'"
        ) from exc
    return cvxpy


def _solve(
    q: Tensor | np.ndarray, problem: Problem, solver: str | None, options: dict[str, Any] | None
) -> SolveResult:
    cp = _cvxpy()
    g = prepare(q, validate=True)
    host = g.host
    assert host is not None
    # The optimal w is invariant to Q → cQ: hand the conic solver a matrix of unit scale.
    top = float(np.abs(np.diag(host)).max())
    scaled = host / top if top > 0.0 else host
    w = cp.Variable(g.n)
    constraints = [cp.sum(w) == 1]
    if problem == "simplex":
        constraints.append(w >= 0)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(w, cp.psd_wrap(scaled))), constraints)
    name = solver or DEFAULT_SOLVER
    opts = dict(DEFAULT_OPTIONS) if solver is None and options is None else dict(options or {})
    try:
        prob.solve(solver=name, **opts)
    except cp.error.SolverError as exc:
        raise SolverError(f"cvxpy/{name} failed on the {problem} QP: {exc}") from exc
    if prob.status == cp.OPTIMAL:
        status = SolveStatus.OPTIMAL
    elif prob.status == cp.OPTIMAL_INACCURATE:
        status = SolveStatus.INACCURATE
    else:
        raise SolverError(f"cvxpy/{name} returned status {prob.status!r} on the {problem} QP")
    weights = np.asarray(w.value, dtype=np.float64)
    iterations = int(getattr(prob.solver_stats, "num_iters", 0) or 0)
    return SolveResult.solved(
        to_weights(weights, g.device),
        problem,
        method=f"cvxpy:{name}",
        iterations=iterations,
        gram=host,
        status=status,
    )


def solve_equality_qp_cvxpy(
    q: Tensor | np.ndarray, *, solver: str | None = None, options: dict[str, Any] | None = None
) -> SolveResult:
    """:func:`~moo_opt.solvers.solve_equality_qp`'s problem in cvxpy (default: Clarabel, tight
    tolerances)."""
    return _solve(q, "equality", solver, options)


def solve_simplex_qp_cvxpy(
    q: Tensor | np.ndarray, *, solver: str | None = None, options: dict[str, Any] | None = None
) -> SolveResult:
    """:func:`~moo_opt.solvers.solve_simplex_qp`'s problem in cvxpy (default: Clarabel, tight
    tolerances)."""
    return _solve(q, "simplex", solver, options)


def project_to_simplex_cvxpy(
    v: Tensor | np.ndarray, *, solver: str | None = None, options: dict[str, Any] | None = None
) -> np.ndarray:
    """:func:`~moo_opt.solvers.project_to_simplex`'s problem, ``minimise |w − v|²`` over the
    simplex, in cvxpy (default: Clarabel, tight tolerances); the (N,) float64 answer, or a
    :class:`SolverError` unless the solver reports it optimal."""
    cp = _cvxpy()
    point = np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v, dtype=np.float64)
    w = cp.Variable(point.shape[0])
    prob = cp.Problem(cp.Minimize(cp.sum_squares(w - point)), [w >= 0, cp.sum(w) == 1])
    name = solver or DEFAULT_SOLVER
    opts = dict(DEFAULT_OPTIONS) if solver is None and options is None else dict(options or {})
    try:
        prob.solve(solver=name, **opts)
    except cp.error.SolverError as exc:
        raise SolverError(f"cvxpy/{name} failed on the simplex projection: {exc}") from exc
    if prob.status != cp.OPTIMAL:
        raise SolverError(f"cvxpy/{name} returned status {prob.status!r} on the projection")
    return np.asarray(w.value, dtype=np.float64)
