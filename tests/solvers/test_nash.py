"""Nash-MTL's bargaining weights: hand cases, properties against a cvxpy reference, blocked
objectives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moo_opt.solvers import SolveStatus
from moo_opt.solvers._core import equilibrate
from moo_opt.solvers.nash import _newton, nash_blocked, solve_nash
from tests.helpers.gramians import GramCase, jacobians, well_posed

KKT_TOL = 1e-9
SOLVED = (SolveStatus.OPTIMAL, SolveStatus.INFEASIBLE)


def gram(*columns: list[float]) -> np.ndarray:
    g = np.array(columns, dtype=np.float64).T
    return g.T @ g


def weights(result) -> np.ndarray:
    return result.weights.numpy()


def residual(q: np.ndarray, alpha: np.ndarray) -> float:
    """``max |αᵢ(Qα)ᵢ − 1|`` over the unblocked (non-zero) weights: the plain Nash condition."""
    live = alpha != 0.0
    a = alpha[live]
    return float(np.abs(a * (q[np.ix_(live, live)] @ a) - 1.0).max()) if live.any() else 0.0


def assert_nash(result, q: np.ndarray, tol: float = KKT_TOL) -> None:
    w = weights(result)
    assert result.problem == "nash"
    assert result.weights.dtype == torch.float64
    assert np.isfinite(w).all() and (w >= 0.0).all(), w
    assert result.kkt.max <= tol, (result.status, result.kkt)
    assert result.kkt.primal_feasibility == 0.0


# ---------------------------------------------------------------- hand cases
@pytest.mark.parametrize("a, b", [(1.0, 1.0), (3.0, 0.5), (1e-4, 1e5)])
def test_orthogonal_gradients(a: float, b: float) -> None:
    # Qα = (a²α₁, b²α₂) = (1/α₁, 1/α₂)  ⇒  α = (1/a, 1/b)
    r = solve_nash(gram([a, 0.0], [0.0, b]))
    np.testing.assert_allclose(weights(r), [1.0 / a, 1.0 / b], rtol=1e-15)
    assert r.status is SolveStatus.OPTIMAL


def test_orthogonal_gradients_newton() -> None:
    # Q diagonal: αᵢ = 1/√Qᵢᵢ; the start t·1 with t = √(N / 1ᵀC1) = 1 is already the solution
    norms = np.array([2.0, 0.1, 7.0, 1e3])
    r = solve_nash(np.diag(norms**2))
    np.testing.assert_allclose(weights(r), 1.0 / norms, rtol=1e-14)
    assert r.status is SolveStatus.OPTIMAL and r.method == "newton" and r.iterations == 0


@pytest.mark.parametrize("copies", [2, 3, 5])
def test_duplicate_gradients(copies: int) -> None:
    # g₁ = … = g_k = g: by symmetry α = a·1 and a·(k·a·|g|²) = 1  ⇒  a = 1/(√k |g|). Q has rank 1,
    # but no y ≥ 0 has Qy = 0: nothing is blocked (N > 2 takes Newton on a singular matrix).
    g = [3.0, -4.0]  # |g| = 5
    r = solve_nash(gram(*[g] * copies))
    np.testing.assert_allclose(
        weights(r), np.full(copies, 1.0 / (math.sqrt(copies) * 5.0)), rtol=1e-12
    )
    assert r.status is SolveStatus.OPTIMAL
    assert_nash(r, gram(*[g] * copies))


def test_single_objective() -> None:
    r = solve_nash(np.array([[4.0]]))
    np.testing.assert_allclose(weights(r), [0.5], rtol=0)  # α = 1/√Q₀₀
    assert r.status is SolveStatus.OPTIMAL
    r = solve_nash(np.array([[0.0]]))
    np.testing.assert_array_equal(weights(r), [0.0])
    assert r.status is SolveStatus.INFEASIBLE


@pytest.mark.parametrize("theta_deg", [0.0, 60.0, 90.0, 135.0, 179.0])
def test_two_gradients_at_an_angle(theta_deg: float) -> None:
    # g₁ = (1, 0), g₂ = 2(cos θ, sin θ): Q = [[1, 2c], [2c, 4]] with c = cos θ. The conditions
    #   α₁(α₁ + 2cα₂) = 1,   α₂(2cα₁ + 4α₂) = 1
    # read, with β = (α₁, 2α₂):  β₁² + cβ₁β₂ = 1 = β₂² + cβ₁β₂, so β₁² = β₂² and (β > 0) β₁ = β₂;
    # then β₁²(1 + c) = 1:  α₁ = 1/√(1 + c),  α₂ = 1/(2√(1 + c)).   θ = 60°: α = (√(2/3), √(2/3)/2).
    t = math.radians(theta_deg)
    c = math.cos(t)
    q = gram([1.0, 0.0], [2.0 * c, 2.0 * math.sin(t)])
    r = solve_nash(q)
    expected = np.array([1.0, 0.5]) / math.sqrt(1.0 + c)
    np.testing.assert_allclose(weights(r), expected, rtol=1e-11)
    if theta_deg == 60.0:
        np.testing.assert_allclose(weights(r), [math.sqrt(2 / 3), math.sqrt(2 / 3) / 2], rtol=1e-14)
    assert r.status is SolveStatus.OPTIMAL
    assert_nash(r, q)
    # the same answer from Newton on the equilibrated problem (the N > 2 path)
    s, cc = equilibrate(q)
    beta, _, status = _newton(cc, 1e-13, 100)
    assert status is SolveStatus.OPTIMAL
    np.testing.assert_allclose(beta / s, expected, rtol=1e-11)


def test_three_symmetric_gradients() -> None:
    # Unit gradients with pairwise cosine c: C = (1 − c)I + c11ᵀ, α = a1 with a²(1 + 2c) = 1.
    # c = −1/4: α = √2 each. (c = −1/2 is the "Mercedes star", summing to 0: see the blocked
    # tests.) By symmetry the solution lies on the ray t·1 where Newton starts: no step is needed.
    # With norms (1, 10, 0.01) the weights are divided by them, and the equilibrated problem is the
    # same.
    c = -0.25
    q = np.full((3, 3), c) + (1.0 - c) * np.eye(3)
    r = solve_nash(q)
    np.testing.assert_allclose(weights(r), np.full(3, math.sqrt(2.0)), rtol=1e-13)
    assert r.status is SolveStatus.OPTIMAL and r.method == "newton" and r.iterations == 0
    norms = np.array([1.0, 10.0, 0.01])
    r = solve_nash(q * np.outer(norms, norms))
    np.testing.assert_allclose(weights(r), math.sqrt(2.0) / norms, rtol=1e-13)


def test_direction_improves_every_objective() -> None:
    # d = Gα has gᵢᵀd = (Qα)ᵢ = 1/αᵢ > 0: a step along −d decreases every objective.
    rng = np.random.default_rng(3)
    g = rng.standard_normal((20, 6))
    r = solve_nash(g.T @ g)
    d = g @ weights(r)
    np.testing.assert_allclose(g.T @ d, 1.0 / weights(r), rtol=1e-10)


@pytest.mark.parametrize("c", [1e-6, 0.25, 7.0, 1e8])
def test_scaling_q_scales_weights_by_inverse_sqrt(c: float) -> None:
    rng = np.random.default_rng(0)
    for n in (2, 5):
        g = rng.standard_normal((10, n))
        q = g.T @ g
        np.testing.assert_allclose(
            weights(solve_nash(c * q)), weights(solve_nash(q)) / math.sqrt(c), rtol=1e-11
        )


def test_max_iter_is_reported() -> None:
    rng = np.random.default_rng(1)
    g = rng.standard_normal((20, 6)) * np.logspace(-3, 3, 6)
    # nearly opposite: large weights
    g[:, 1] = -g[:, 0] / np.linalg.norm(g[:, 0]) + 1e-3 * rng.standard_normal(20)
    q = g.T @ g
    full = solve_nash(q)
    assert full.status is SolveStatus.OPTIMAL and full.iterations > 2
    capped = solve_nash(q, max_iter=2)
    assert capped.status is SolveStatus.MAX_ITER and capped.iterations == 2
    assert capped.kkt.stationarity > 1e-6  # the certificate says how far it is


def test_result_fields_and_devices() -> None:
    g = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 2.0]], dtype=torch.float32)
    r = solve_nash(g.T @ g)
    assert r.weights.dtype == torch.float64 and r.weights.device.type == "cpu"
    assert r.method == "newton" and r.problem == "nash"
    d = r.as_dict()
    assert d["status"] == "optimal" and d["kkt_residual"] <= KKT_TOL
    assert r.gram.dtype == np.float64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("n", [1, 2, 5])
def test_cuda_weights_stay_on_the_device(n: int) -> None:
    g = torch.randn(100, n, device="cuda", dtype=torch.float32)
    r = solve_nash(g.T @ g)
    assert r.weights.device.type == "cuda" and r.weights.dtype == torch.float64
    ref = solve_nash((g.T @ g).cpu())
    torch.testing.assert_close(r.weights.cpu(), ref.weights, rtol=1e-12, atol=0)
    assert r.status is SolveStatus.OPTIMAL


# ------------------------------------------------------------ blocked objectives (no Nash solution)
def test_zero_gradient_is_blocked() -> None:
    rng = np.random.default_rng(5)
    g = rng.standard_normal((12, 4))
    g[:, 2] = 0.0
    q = g.T @ g
    r = solve_nash(q)
    assert r.status is SolveStatus.INFEASIBLE
    w = weights(r)
    assert w[2] == 0.0 and (np.delete(w, 2) > 0.0).all()
    rest = np.delete(np.delete(q, 2, 0), 2, 1)
    np.testing.assert_allclose(np.delete(w, 2), weights(solve_nash(rest)), rtol=1e-12)
    assert_nash(r, q)
    np.testing.assert_array_equal(nash_blocked(q, 1e-14), w == 0.0)


def test_zero_gradient_two_objectives() -> None:
    r = solve_nash(gram([0.0, 0.0], [3.0, 4.0]))
    np.testing.assert_array_equal(weights(r), [0.0, 0.2])
    assert r.status is SolveStatus.INFEASIBLE


@pytest.mark.parametrize("n_extra", [0, 1, 3])
def test_opposite_gradients_are_blocked(n_extra: int) -> None:
    rng = np.random.default_rng(n_extra)
    g1 = rng.standard_normal(8)
    g = np.column_stack([g1, -2.5 * g1, *rng.standard_normal((n_extra, 8))])
    q = g.T @ g
    r = solve_nash(q)
    w = weights(r)
    assert r.status is SolveStatus.INFEASIBLE
    assert w[0] == 0.0 and w[1] == 0.0 and (w[2:] > 0.0).all()
    if n_extra:
        np.testing.assert_allclose(w[2:], weights(solve_nash(q[2:, 2:])), rtol=1e-11)
    assert_nash(r, q)


def test_everything_blocked() -> None:
    # Three unit gradients at 120°: g₁ + g₂ + g₃ = 0, no direction improves all three (Pareto
    # stationary).
    angles = np.radians([90.0, 210.0, 330.0])
    q = gram(*np.column_stack([np.cos(angles), np.sin(angles)]).tolist())
    r = solve_nash(q)
    np.testing.assert_array_equal(weights(r), np.zeros(3))
    assert r.status is SolveStatus.INFEASIBLE and r.kkt.max == 0.0
    r = solve_nash(np.zeros((4, 4)))
    np.testing.assert_array_equal(weights(r), np.zeros(4))
    assert r.status is SolveStatus.INFEASIBLE


def test_zero_in_the_hull_of_a_subset() -> None:
    # g₃ = −(g₁ + 2g₂) blocks {1, 2, 3}; g₄ is free of them and g₅ = 0 is blocked on its own.
    rng = np.random.default_rng(7)
    g = rng.standard_normal((10, 5))
    g[:, 2] = -(g[:, 0] + 2.0 * g[:, 1])
    g[:, 4] = 0.0
    q = g.T @ g
    r = solve_nash(q)
    w = weights(r)
    np.testing.assert_array_equal(w == 0.0, [True, True, True, False, True])
    assert w[3] == pytest.approx(1.0 / np.linalg.norm(g[:, 3]), rel=1e-12)
    assert r.status is SolveStatus.INFEASIBLE


def test_blocked_set_in_float32() -> None:
    # Rounding of a float32 Gramian must not hide an exact block.
    rng = np.random.default_rng(11)
    g = rng.standard_normal((50, 5)).astype(np.float32)
    g[:, 0] = -(g[:, 1] + 2.0 * g[:, 2])
    r = solve_nash(torch.from_numpy(g.T @ g))
    w = weights(r)
    np.testing.assert_array_equal(w == 0.0, [True, True, True, False, False])
    assert r.status is SolveStatus.INFEASIBLE
    assert_nash(r, r.gram)


def test_coplanar_gradients_with_a_common_direction() -> None:
    # Three gradients in a plane, all within 90° of (1, 1): Q is singular but no y ≥ 0 has Qy = 0,
    # so the Nash solution exists and is unique.
    g = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.8, 0.6, 0.0]]).T * [1.0, 2.0, 0.5]
    q = g.T @ g
    assert np.linalg.matrix_rank(q) == 2
    r = solve_nash(q)
    assert r.status is SolveStatus.OPTIMAL
    assert (weights(r) > 0.0).all()
    assert residual(q, weights(r)) <= KKT_TOL
    assert_nash(r, q)


def test_nearly_opposite_gradients_are_resolved() -> None:
    # 1 + cos θ ≈ 1e-6 ≫ rcond: a solution exists, with weights ≈ 1/√(1e-6)
    rng = np.random.default_rng(2)
    g1 = rng.standard_normal(10)
    g1 /= np.linalg.norm(g1)
    g2 = -g1 + 1e-3 * rng.standard_normal(10)
    g = np.column_stack([g1, g2, rng.standard_normal(10)])
    r = solve_nash(g.T @ g)
    assert r.status is SolveStatus.OPTIMAL
    assert weights(r)[0] > 100.0
    assert_nash(r, g.T @ g)


@pytest.mark.parametrize("gap", [1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9])
@pytest.mark.parametrize("n", [2, 3, 6])
def test_nearly_blocked_never_fails_silently(gap: float, n: int) -> None:
    # g₂ = −g₁ + gap·noise: a solution with weights ≈ 1/gap exists until 1 + cos θ ≈ gap² reaches
    # rcond, where the pair counts as blocked; near that threshold Newton may stop at the
    # floating-point floor.
    rng = np.random.default_rng(n)
    g = rng.standard_normal((12, n))
    g[:, 1] = -g[:, 0] + gap * np.linalg.norm(g[:, 0]) * rng.standard_normal(12)
    q = g.T @ g
    r = solve_nash(q)
    assert r.status in (SolveStatus.OPTIMAL, SolveStatus.INFEASIBLE, SolveStatus.INACCURATE)
    assert_nash(r, q)
    if r.status is not SolveStatus.INACCURATE:
        assert r.kkt.stationarity <= 1e-12
    if r.status is SolveStatus.INFEASIBLE:
        assert weights(r)[0] == weights(r)[1] == 0.0


def test_validate_false_gives_the_same_weights() -> None:
    rng = np.random.default_rng(4)
    for n in (1, 2, 5):
        g = rng.standard_normal((8, n))
        q = g.T @ g
        np.testing.assert_array_equal(
            weights(solve_nash(q, validate=False)), weights(solve_nash(q))
        )


def test_nash_blocked_for_two_objectives() -> None:
    np.testing.assert_array_equal(nash_blocked(gram([1.0, 2.0], [-2.0, -4.0]), 1e-14), [True, True])
    np.testing.assert_array_equal(nash_blocked(gram([1.0, 2.0], [0.0, 0.0]), 1e-14), [False, True])
    np.testing.assert_array_equal(
        nash_blocked(gram([1.0, 2.0], [-2.0, 4.0]), 1e-14), [False, False]
    )


# ---------------------------------------------------------------- invalid input
@pytest.mark.parametrize(
    "q, message",
    [
        (np.ones((2, 3)), "square"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
        (np.array([[1.0, 0.0, 0.0], [0.0, np.inf, 0.0], [0.0, 0.0, 1.0]]), "NaN or Inf"),
        (np.array([[-1.0, 0.0], [0.0, 1.0]]), "positive semi-definite"),
        (np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]), "positive semi-definite"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive semi-definite"),
        (np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]]), "positive semi-definite"),
        (np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
        (np.zeros((0, 0)), "empty"),
    ],
)
def test_invalid_input(q: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        solve_nash(q)


@pytest.mark.parametrize("kwargs", [{"tol": 0.0}, {"max_iter": 0}, {"rcond": -1.0}])
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        solve_nash(np.eye(3), **kwargs)


# ---------------------------------------------------------------- properties
@given(case=well_posed(max_n=16))
def test_well_posed_is_solved_exactly(case: GramCase) -> None:
    q = case.q
    r = solve_nash(q)
    w = weights(r)
    assert r.status is SolveStatus.OPTIMAL
    assert (w > 0.0).all()
    assert residual(q, w) <= KKT_TOL
    assert_nash(r, q, tol=1e-12)
    assert r.iterations < 20


def nash_cvxpy(q: np.ndarray) -> np.ndarray | None:
    """Reference: minimise ``½αᵀQα − Σ log αᵢ`` with Clarabel on ``Q / max Qᵢᵢ``, then rescale."""
    cp = pytest.importorskip("cvxpy")
    scale = float(np.diag(q).max())
    a = cp.Variable(q.shape[0])
    prob = cp.Problem(
        cp.Minimize(0.5 * cp.quad_form(a, cp.psd_wrap(q / scale)) - cp.sum(cp.log(a)))
    )
    try:
        prob.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    except cp.error.SolverError:
        return None
    if prob.status != cp.OPTIMAL or a.value is None:
        return None
    return np.asarray(a.value) / math.sqrt(scale)  # Q = scale·Q'  ⇒  α = α'/√scale


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
@settings(max_examples=40)
@given(case=well_posed(min_n=2, max_n=8))
def test_matches_cvxpy(case: GramCase) -> None:
    q = case.q
    ref = nash_cvxpy(q)
    if ref is None:
        return
    r = solve_nash(q)
    assert r.status is SolveStatus.OPTIMAL
    np.testing.assert_allclose(weights(r), ref, rtol=1e-6)


@given(case=jacobians(max_n=12), seed=st.integers(0, 2**16))
def test_any_gramian_is_certified_and_permutation_invariant(case: GramCase, seed: int) -> None:
    q = case.q
    r = solve_nash(q)
    w = weights(r)
    assert r.status in SOLVED, case.description
    assert_nash(r, q)
    assert (r.status is SolveStatus.INFEASIBLE) == bool((w == 0.0).any())
    assert (w[np.diag(q) == 0.0] == 0.0).all()  # zero gradients are always blocked
    np.testing.assert_array_equal(nash_blocked(q, 100.0 * np.finfo(np.float64).eps), w == 0.0)
    perm = np.random.default_rng(seed).permutation(case.n)
    rp = solve_nash(q[np.ix_(perm, perm)])
    assert rp.status is r.status
    np.testing.assert_array_equal(weights(rp) == 0.0, w[perm] == 0.0)
    np.testing.assert_allclose(weights(rp), w[perm], rtol=1e-7)


@given(case=well_posed(max_n=10), index=st.integers(0, 100), log10_c=st.floats(-6.0, 6.0))
def test_rescaling_one_gradient(case: GramCase, index: int, log10_c: float) -> None:
    # gᵢ → c·gᵢ: Q → DQD with D = diag(1, …, c, …, 1), and α → D⁻¹α (β = Sα is unchanged)
    q = case.q
    i = index % case.n
    d = np.ones(case.n)
    d[i] = 10.0**log10_c
    w = weights(solve_nash(q))
    np.testing.assert_allclose(weights(solve_nash(q * d[:, None] * d[None, :])), w / d, rtol=1e-10)


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
@settings(max_examples=60)
@given(case=jacobians(min_n=2, max_n=8, max_log10_scale=3.0))
def test_blocked_set_is_exactly_the_gordan_alternative(case: GramCase) -> None:
    # Independent check with cvxpy, on unit-norm gradients uᵢ: over y ≥ 0 with Σ_{i∈U} yᵢ = 1
    # (U: the unblocked objectives), min ‖Σ yᵢuᵢ‖ > 0 (B is maximal); over y ≥ 0 on B with Σy = 1,
    # it is 0.
    cp = pytest.importorskip("cvxpy")
    g = case.g
    norms = np.linalg.norm(g, axis=0)
    u = g / np.where(norms > 0.0, norms, 1.0)
    w = weights(solve_nash(case.q))
    blocked = w == 0.0

    def min_norm(on: np.ndarray, normalise: np.ndarray) -> float | None:
        y = cp.Variable(int(on.sum()), nonneg=True)
        prob = cp.Problem(cp.Minimize(cp.norm(u[:, on] @ y)), [cp.sum(y[normalise[on]]) == 1])
        try:
            prob.solve(solver="CLARABEL")
        except cp.error.SolverError:
            return None
        return float(prob.value) if prob.status == cp.OPTIMAL else None

    if blocked.any():
        gap = min_norm(blocked, blocked)
        assert gap is None or gap <= 1e-6, (case.description, gap)
    if (~blocked).any():
        gap = min_norm(np.ones(case.n, dtype=bool), ~blocked)
        assert gap is None or gap > 1e-6, (case.description, gap)
