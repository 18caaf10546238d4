"""Hypothesis properties of both solvers, checked against the cvxpy reference."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from moo_opt.solvers import SolveStatus, solve_equality_qp, solve_simplex_qp
from moo_opt.solvers.reference import solve_equality_qp_cvxpy, solve_simplex_qp_cvxpy
from tests.helpers.assertions import (
    WELL_CONDITIONED,
    assert_balanced,
    assert_certified,
    assert_objective_matches,
    assert_weights_close,
    is_strictly_complementary,
    objective_slack,
    polished,
    reference_is_trustworthy,
    reference_solution,
)
from tests.helpers.gramians import GramCase, jacobians, well_posed

SOLVERS = {
    "equality": (solve_equality_qp, solve_equality_qp_cvxpy),
    "simplex": (solve_simplex_qp, solve_simplex_qp_cvxpy),
    # Wolfe's method alone: the exact path "auto" falls back to after the active-set guess
    "simplex-wolfe": (partial(solve_simplex_qp, method="wolfe"), solve_simplex_qp_cvxpy),
}
problems = pytest.mark.parametrize("problem", list(SOLVERS))


def assert_weights_match_polished(result, reference, q: np.ndarray) -> None:
    exact = polished(q, reference)
    if exact is not None:
        assert_weights_close(result.weights, exact, 1e-10 * result.condition)


def _unique(result, problem: str) -> bool:
    """Whether the optimal weights are unique (and well resolved), so that weights can be
    compared."""
    if result.status is not SolveStatus.OPTIMAL or result.condition > WELL_CONDITIONED:
        return False
    return problem == "equality" or is_strictly_complementary(result)


@problems
@given(case=jacobians(max_n=16))
def test_matches_cvxpy(problem: str, case: GramCase) -> None:
    ours, ref = SOLVERS[problem]
    q = case.q
    result, reference = ours(q), reference_solution(ref, q)
    assert_certified(result)
    if reference is None or result.status is not SolveStatus.OPTIMAL:
        return
    assert_objective_matches(result, reference, q, two_sided=result.condition <= WELL_CONDITIONED)
    if _unique(result, problem) and reference_is_trustworthy(reference):
        assert_weights_match_polished(result, reference, q)


@problems
@given(case=well_posed())
def test_well_posed_matches_cvxpy_exactly(problem: str, case: GramCase) -> None:
    ours, ref = SOLVERS[problem]
    q = case.q
    result, reference = ours(q), reference_solution(ref, q)
    assert result.status is SolveStatus.OPTIMAL
    assert reference is not None
    assert_certified(result)
    assert_objective_matches(result, reference, q, two_sided=True)
    if _unique(result, problem):
        assert_weights_match_polished(result, reference, q)


@problems
@given(case=jacobians())
def test_certified_and_finite_on_any_input(problem: str, case: GramCase) -> None:
    result = SOLVERS[problem][0](case.q)
    assert_certified(result)
    assert result.iterations >= 0
    if result.status is SolveStatus.OPTIMAL:
        assert np.isfinite(result.condition)


@problems
@given(case=jacobians(max_n=12), data=st.data())
def test_permutation_equivariance(problem: str, case: GramCase, data: st.DataObject) -> None:
    solve = SOLVERS[problem][0]
    q = case.q
    perm = np.asarray(data.draw(st.permutations(range(case.n))))
    base, permuted = solve(q), solve(q[np.ix_(perm, perm)])
    assert (
        abs(base.objective - permuted.objective)
        <= objective_slack(q, base, permuted, rtol=1e-9) + 1e-300
    )
    if _unique(base, problem) and permuted.status is SolveStatus.OPTIMAL:
        assert_weights_close(permuted.weights, base.weights[perm], 1e-7)


@problems
@given(case=jacobians(max_n=12), log_c=st.floats(-8, 8))
def test_scale_invariance(problem: str, case: GramCase, log_c: float) -> None:
    solve = SOLVERS[problem][0]
    q = case.q
    c = 10.0**log_c
    base, scaled = solve(q), solve(c * q)
    if _unique(base, problem) and scaled.status is SolveStatus.OPTIMAL:
        assert_weights_close(scaled.weights, base.weights, 1e-7)
    assert (
        abs(scaled.objective - c * base.objective)
        <= c * objective_slack(q, base, scaled, rtol=1e-9) + 1e-300
    )


@pytest.mark.parametrize("problem", ["equality", "simplex"])
@given(case=jacobians(min_n=2, max_n=2))
def test_two_objective_closed_form_equals_general_path(problem: str, case: GramCase) -> None:
    q = case.q
    if problem == "equality":
        closed, general = (
            solve_equality_qp(q, method="closed-form"),
            solve_equality_qp(q, method="null-space"),
        )
    else:
        closed, general = (
            solve_simplex_qp(q, method="closed-form"),
            solve_simplex_qp(q, method="wolfe"),
        )
    assert closed.method == "closed-form"
    assert_certified(closed)
    assert (
        abs(closed.objective - general.objective)
        <= objective_slack(q, closed, general, rtol=1e-9) + 1e-300
    )
    assert (closed.status is SolveStatus.DEGENERATE) == (
        general.status is SolveStatus.DEGENERATE
    ) or problem == "simplex"
    if _unique(closed, problem):
        assert_weights_close(closed.weights, general.weights, 1e-8)


@given(case=well_posed(min_n=1, max_n=16))
def test_equality_balance_condition(case: GramCase) -> None:
    """For full-rank G, d = Gw* makes every gradient's inner product with d equal to |d|²."""
    result = solve_equality_qp(case.q)
    assert_balanced(result, case.g)


@given(case=well_posed(min_n=2, max_n=2), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_device_closed_form_matches_host(case: GramCase, dtype: torch.dtype) -> None:
    """The on-device N = 2 path (used on CUDA) agrees with the host path; run here on CPU
    tensors."""
    from moo_opt.solvers._closed_form import closed_form_device
    from moo_opt.solvers.result import STATUS_CODES

    q = torch.tensor(case.q, dtype=dtype).double()
    for simplex, solve in ((False, solve_equality_qp), (True, solve_simplex_qp)):
        host = solve(q)
        w, code = closed_form_device(0.5 * (q + q.T), host_rcond(q), simplex, SolveStatus.OPTIMAL)
        assert STATUS_CODES[int(code)] is host.status
        assert_weights_close(w, host.weights, 1e-12)


def host_rcond(q: torch.Tensor) -> float:
    return 100.0 * float(torch.finfo(q.dtype).eps)
