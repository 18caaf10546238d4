"""UPGrad's box QP (projections onto the dual cone): hand cases, properties, cvxpy reference, bad
input."""

from __future__ import annotations

import math
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import moo_opt.solvers._box_active_set as box_active_set
from moo_opt.solvers import SolveStatus
from moo_opt.solvers.box import project_to_dual_cone, solve_box_qp
from moo_opt.weightings import upgrad_weights
from tests.helpers.gramians import GramCase, jacobians, well_posed

KKT_TOL = 1e-9
CERTIFIED = (SolveStatus.OPTIMAL, SolveStatus.DEGENERATE)


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return (
        x.detach().cpu().double().numpy()
        if isinstance(x, torch.Tensor)
        else np.asarray(x, dtype=np.float64)
    )


def _size(g: np.ndarray, *vectors: np.ndarray) -> float:
    """The scale of ``G·v`` for comparisons: ``T = Σⱼ ‖gⱼ‖·maxₖ |vₖⱼ|`` (bounds ``‖Gvₖ‖``), floored
    at ``1e-9·maxⱼ‖gⱼ‖·Σⱼ maxₖ |vₖⱼ|``: when the bounds sit on zero gradients, ``Gv* = 0`` and T
    vanishes, but the answers still carry the rounding of their own magnitude."""
    m = np.max(np.abs(np.stack(vectors)), axis=0)
    norms = np.linalg.norm(g, axis=0)
    return float(norms @ m) + 1e-9 * float(norms.max(initial=0.0)) * float(m.sum())


def assert_dual_cone(q: np.ndarray, v: np.ndarray, u: np.ndarray, tol: float = 1e-10) -> None:
    """``(Qv)ⱼ = gⱼ·Gv ≥ 0`` for every gradient, up to ``tol·sⱼ·T`` (``sⱼ = ‖gⱼ‖``,
    ``T = Σⱼ sⱼ·max(|vⱼ|, |uⱼ|)``: λ = Q(u + x) is known to rounding relative to u as well)."""
    s = np.sqrt(np.maximum(np.diag(q), 0.0))
    t = float(s @ np.maximum(np.abs(v), np.abs(u)))
    qv = q @ v
    assert (qv >= -tol * s * t).all(), f"Qv = {qv} has a negative entry (T = {t:.3g})"


def assert_box_solution(result, q: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Certified, ``v ≥ u`` exactly, and non-conflicting with every gradient; returns v."""
    v = _np(result.weights)
    assert result.problem == "box"
    assert np.isfinite(v).all()
    assert result.status in CERTIFIED, f"{result.status}: {result.kkt}"
    assert result.kkt_residual <= KKT_TOL, f"{result.status}: {result.kkt}"
    assert (v >= u).all(), f"v = {v} below u = {u}"
    assert_dual_cone(q, v, u)
    return v


TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}


def box_reference(q: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """``argmin 1/2 vᵀQv s.t. v ≥ u`` with cvxpy/Clarabel at tight tolerances (None if it fails).

    Solved in the diagonally scaled variable ``y = Dv/m`` (``D = diag(√Qᵢᵢ)``, unit for zero
    gradients, ``m = max|Du|``), ``min 1/2 yᵀ(D⁻¹QD⁻¹)y s.t. y ≥ Du/m``, so that gradients of very
    different norms and tiny bounds do not defeat the conic solver's absolute tolerances.

    Returns v and whether it was polished: the interior-point answer is only good to ~1e-6, so its
    active set (``yᵢ − (Du)ᵢ ≤ 1e-6`` relative) is kept and the free coordinates corrected by the
    minimum-norm solution of the equality-constrained problem on the free set
    (``numpy.linalg.lstsq``); the polished point is used when it satisfies the KKT conditions, the
    raw one otherwise (None when Clarabel reports anything but an optimum, or an inaccurate
    optimum whose polish fails).
    """
    d = np.sqrt(np.diag(q))
    d = np.where(d > 1e-150 * max(float(d.max()), 1e-300), d, 1.0)
    c = q / np.outer(d, d)
    c = 0.5 * (c + c.T)
    a = d * u
    unit = float(np.abs(a).max())
    if unit == 0.0:  # u = 0: v = 0 is optimal
        return np.zeros_like(u), True
    a = a / unit  # v* is homogeneous in u: a bound of unit size suits the absolute tolerances
    y = cp.Variable(q.shape[0])
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(y, cp.psd_wrap(c))), [y >= a])
    for options in (TIGHT, {}):  # Clarabel's defaults when the tight tolerances defeat it
        try:
            with warnings.catch_warnings():  # "may be inaccurate": handled below
                warnings.simplefilter("ignore", UserWarning)
                prob.solve(solver="CLARABEL", **options)
        except cp.error.SolverError:
            continue
        if prob.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and y.value is not None:
            break
    else:
        return None
    accurate = prob.status == cp.OPTIMAL  # an inaccurate answer is used only if its polish is exact
    raw = np.maximum(np.asarray(y.value, dtype=np.float64), a)  # the bound, to rounding
    top = max(float(np.abs(raw).max()), float(np.abs(a).max()))
    free = raw - a > 1e-6 * top
    polished = np.where(free, raw, a)
    if free.any():  # the smallest correction that zeroes the multipliers of the free indices
        step = np.linalg.lstsq(c[np.ix_(free, free)], -(c @ polished)[free], rcond=None)[0]
        polished[free] += step
    t = float(np.maximum(np.abs(polished), np.abs(a)).sum())
    if (polished[free] >= a[free]).all() and (c @ polished >= -1e-10 * t).all():
        return polished * unit / d, True
    return (raw * unit / d, False) if accurate else None


@st.composite
def lower_bounds(draw: st.DrawFn, n: int) -> np.ndarray:
    """UPGrad's bounds ``eᵢ/N`` and ``1/N``, and general ones (signed, sparse, zero)."""
    kind = draw(st.sampled_from(["unit", "uniform", "random", "sparse", "zero"]))
    if kind == "unit":
        return np.eye(n)[draw(st.integers(0, n - 1))] / n
    if kind == "uniform":
        return np.full(n, 1.0 / n)
    if kind == "zero":
        return np.zeros(n)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    u = rng.standard_normal(n)
    if kind == "sparse":
        u = np.where(rng.random(n) < 0.5, 0.0, np.abs(u))
    return u


# --------------------------------------------------------------------------- hand cases


def test_non_conflicting_gradients_need_no_projection() -> None:
    g = np.array([[1.0, 2.0, 0.5], [0.5, 0.0, 3.0]])  # every gᵢ·gⱼ ≥ 0
    q = g.T @ g
    u = np.array([0.2, 0.0, 0.7])
    result = solve_box_qp(q, u)
    assert result.status is SolveStatus.OPTIMAL
    assert result.iterations == 0
    assert torch.equal(result.weights, torch.tensor(u, dtype=torch.float64))
    assert result.kkt_residual == 0.0


def test_two_gradients_by_hand() -> None:
    """Projecting g1/2 = (1/2, 0) onto {x : x·g1 ≥ 0, x·g2 ≥ 0} gives (1/4, 1/4) = G·(1/2, 1/4)."""
    g = np.array([[1.0, -1.0], [0.0, 1.0]])  # g1 = (1, 0), g2 = (−1, 1)
    q = g.T @ g
    u = np.array([0.5, 0.0])
    result = solve_box_qp(q, u)
    v = assert_box_solution(result, q, u)
    assert result.status is SolveStatus.OPTIMAL
    assert result.method == "active-set"
    assert result.iterations == 1
    np.testing.assert_allclose(v, [0.5, 0.25], rtol=0, atol=1e-15)
    np.testing.assert_allclose(g @ v, [0.25, 0.25], rtol=0, atol=1e-15)
    np.testing.assert_allclose(q @ v, [0.25, 0.0], rtol=0, atol=1e-15)  # g2 is now orthogonal
    assert result.objective == pytest.approx(0.0625, rel=1e-15)


@pytest.mark.parametrize(
    ("q11", "u", "expected"),
    [(4.0, 0.3, 0.3), (4.0, -0.3, 0.0), (4.0, 0.0, 0.0), (1e-300, -2.0, 0.0)],
)
def test_one_objective(q11: float, u: float, expected: float) -> None:
    result = solve_box_qp(np.array([[q11]]), np.array([u]))
    assert result.status is SolveStatus.OPTIMAL
    assert float(result.weights[0]) == expected
    assert result.kkt_residual == 0.0


def test_one_zero_gradient_is_degenerate() -> None:
    """Q = 0: every v ≥ u is optimal; the answer is u itself."""
    result = solve_box_qp(np.zeros((1, 1)), np.array([0.5]))
    assert result.status is SolveStatus.DEGENERATE
    assert float(result.weights[0]) == 0.5


def test_zero_gradient_among_others() -> None:
    g = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, 0.0]])
    q = g.T @ g
    u = np.array([0.5, 0.0, 0.25])
    result = solve_box_qp(q, u)
    v = assert_box_solution(result, q, u)
    assert result.status is SolveStatus.DEGENERATE  # v₃ is free: g₃ = 0
    np.testing.assert_allclose(v, [0.5, 0.25, 0.25], rtol=0, atol=1e-15)


def test_duplicated_gradients() -> None:
    """g2 = g3 conflicts with g1: Gv* is unique (a projection) whatever v* the solver picks."""
    g = np.array([[1.0, -1.0, -1.0], [0.0, 1.0, 1.0]])
    q = g.T @ g
    u = np.array([0.5, 0.0, 0.0])
    result = solve_box_qp(q, u)
    v = assert_box_solution(result, q, u)
    np.testing.assert_allclose(g @ v, [0.25, 0.25], rtol=0, atol=1e-15)
    assert v[1] + v[2] == pytest.approx(0.25, abs=1e-15)


def test_opposite_gradients_are_degenerate() -> None:
    """g2 = −g1: the projection of g1/2 is 0, reached by every v = (t, t), t ≥ 1/2."""
    q = np.array([[1.0, -1.0], [-1.0, 1.0]])
    result = solve_box_qp(q, np.array([0.5, 0.0]))
    assert result.status is SolveStatus.DEGENERATE
    v = assert_box_solution(result, q, np.array([0.5, 0.0]))
    np.testing.assert_allclose(v, [0.5, 0.5], rtol=0, atol=1e-15)


def test_upgrad_by_hand() -> None:
    """UPGrad on g1 = (1, 0), g2 = (−1, 1): the mean of the projections of g1/2 and g2/2."""
    g = np.array([[1.0, -1.0], [0.0, 1.0]])
    q = g.T @ g
    result = project_to_dual_cone(q, np.eye(2) / 2)
    rows = _np(result.weights)
    # g2/2 = (−1/2, 1/2) onto {x₁ ≥ 0, x₂ ≥ x₁}: (0, 1/2) = G·(1/2, 1/2)
    np.testing.assert_allclose(rows, [[0.5, 0.25], [0.5, 0.5]], rtol=0, atol=1e-15)
    assert result.status is SolveStatus.OPTIMAL
    assert result.iterations == 2
    assert_dual_cone(q, rows.sum(0), np.full(2, 0.5), tol=0.0)
    # ½(|(¼,¼)|² + |(0,½)|²)
    assert result.objective == pytest.approx(0.5 * (0.125 + 0.25), rel=1e-15)
    assert result.as_dict()["iterations"] == 2


def test_bounds_from_tensors_and_float32() -> None:
    g = torch.tensor([[1.0, -1.0], [0.0, 1.0]], dtype=torch.float32)
    result = solve_box_qp(g.T @ g, torch.tensor([0.5, 0.0]))
    assert result.weights.dtype == torch.float64 and result.weights.device == g.device
    np.testing.assert_allclose(_np(result.weights), [0.5, 0.25], rtol=1e-7)


def test_no_projections() -> None:
    result = project_to_dual_cone(np.eye(3), np.zeros((0, 3)))
    assert result.weights.shape == (0, 3)
    assert (
        result.status is SolveStatus.OPTIMAL
        and result.iterations == 0
        and result.kkt_residual == 0.0
    )


def test_iteration_cap_is_reported() -> None:
    rng = np.random.default_rng(3)
    g = rng.standard_normal((30, 12))
    q = g.T @ g
    u = np.eye(12)[0] / 12
    full = solve_box_qp(q, u)
    assert full.iterations >= 2
    capped = solve_box_qp(q, u, max_iter=1)
    assert capped.status is SolveStatus.MAX_ITER
    assert capped.iterations == 1
    assert (_np(capped.weights) >= u).all()
    assert capped.kkt_residual > 1e-12


# --------------------------------------------------------------------------- properties


@given(case=jacobians(max_n=16), data=st.data())
def test_certified_on_any_input(case: GramCase, data: st.DataObject) -> None:
    q = case.q
    u = data.draw(lower_bounds(case.n))
    result = solve_box_qp(q, u)
    assert result.iterations <= 10 * case.n + 10
    assert_box_solution(result, q, u)


@pytest.mark.parametrize(
    "strategy", [well_posed(max_n=12), jacobians(max_n=12)], ids=["well-posed", "any"]
)
def test_matches_cvxpy(strategy: st.SearchStrategy[GramCase]) -> None:
    @given(case=strategy, data=st.data())
    def check(case: GramCase, data: st.DataObject) -> None:
        q, g = case.q, case.g
        u = data.draw(lower_bounds(case.n))
        result = solve_box_qp(q, u)
        v = assert_box_solution(result, q, u)
        reference = box_reference(q, u)
        if reference is None:
            return
        v_ref, exact = reference
        size = _size(g, v, u, v_ref)
        gap = float(np.linalg.norm(g @ (v - v_ref)))
        rtol = 1e-7 if exact else 1e-5
        assert gap <= rtol * size, f"|G(v − v_ref)| = {gap:.3g} (T = {size:.3g}): {v} vs {v_ref}"
        f_ref = 0.5 * float(v_ref @ q @ v_ref)
        assert result.objective <= f_ref + 1e-12 * size**2

    check()


@given(case=well_posed(max_n=16))
def test_upgrad_rows_match_cvxpy(case: GramCase) -> None:
    """All N of UPGrad's projections at once (the compiled path, C definite) against cvxpy."""
    q, g, n = case.q, case.g, case.n
    lowers = np.eye(n) / n
    result = project_to_dual_cone(q, lowers)
    assert result.status is SolveStatus.OPTIMAL and result.kkt_residual <= KKT_TOL
    for v, u in zip(_np(result.weights), lowers):
        reference = box_reference(q, u)
        if reference is None:
            continue
        gap = float(np.linalg.norm(g @ (v - reference[0])))
        assert gap <= (1e-7 if reference[1] else 1e-5) * _size(g, v, u, reference[0])


def _numpy_only(f, a, tol, cap):  # compiled_rows certifying no row: everything to active_set
    return np.zeros_like(a), np.zeros(a.shape[0], dtype=bool)


@given(case=jacobians(max_n=16), data=st.data())
def test_compiled_and_numpy_paths_agree(case: GramCase, data: st.DataObject) -> None:
    """SciPy's compiled Lawson–Hanson (definite C) and ours give the same projections: ``Gv``
    always, and where the optimum is unique the weights to ``1e-14·max(100, condition)`` of T (1e-12
    when well conditioned; measured: at most 4e-16·condition)."""
    q, g = case.q, case.g
    lowers = np.stack([data.draw(lower_bounds(case.n)), np.eye(case.n)[0] / case.n])
    both = project_to_dual_cone(q, lowers)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("moo_opt.solvers.box.compiled_rows", _numpy_only)
        ours = project_to_dual_cone(q, lowers)
    assert ours.status in CERTIFIED and both.status in CERTIFIED
    for v, w, u in zip(_np(both.weights), _np(ours.weights), lowers):
        size = _size(g, v, w, u)
        assert float(np.linalg.norm(g @ (v - w))) <= 1e-9 * size
        if both.status is SolveStatus.OPTIMAL:
            gap = float((np.linalg.norm(g, axis=0) * np.abs(v - w)).max())
            assert gap <= 1e-14 * max(100.0, both.condition) * size


@pytest.mark.parametrize("failure", ["cap", "uncertified"])
def test_rows_the_compiled_path_leaves_are_solved_by_ours(failure: str) -> None:
    """A row SciPy does not finish (its iteration cap) or finishes short of ``tol`` is solved again
    by the numpy Lawson–Hanson: same answer, status and certificate, never a silent fallback."""

    def broken(a: np.ndarray, b: np.ndarray, *, maxiter: int) -> tuple[np.ndarray, float]:
        if failure == "cap":
            raise RuntimeError("Maximum number of iterations reached.")
        return np.zeros(a.shape[1]), 0.0  # z = 0: uncertified wherever a gradient conflicts

    rng = np.random.default_rng(7)
    g = rng.standard_normal((30, 6))
    q = g.T @ g
    lowers = np.eye(6) / 6
    expected = project_to_dual_cone(q, lowers)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(box_active_set, "nnls", broken)
        fallback = project_to_dual_cone(q, lowers)
    assert fallback.status is SolveStatus.OPTIMAL and fallback.kkt_residual <= KKT_TOL
    np.testing.assert_allclose(_np(fallback.weights), _np(expected.weights), rtol=1e-12)


def assert_same_projection(base, other: np.ndarray, g: np.ndarray, u: np.ndarray) -> None:
    """``G·other = G·v*`` (the projection is unique) to 1e-8 of T; where v* is unique and well
    conditioned (``OPTIMAL``, condition ≤ 1e6), the weights too: ``|sᵢ(vᵢ − otherᵢ)| ≤ 1e-8·T``."""
    v = _np(base.weights)
    size = _size(g, v, u)
    gap = float(np.linalg.norm(g @ (other - v)))
    assert gap <= 1e-8 * size, f"|G(v − v')| = {gap:.3g} (T = {size:.3g}): {v} vs {other}"
    if base.status is SolveStatus.OPTIMAL and base.condition <= 1e6:
        scaled_gap = float((np.linalg.norm(g, axis=0) * np.abs(other - v)).max())
        assert scaled_gap <= 1e-8 * size, (
            f"weights differ by {scaled_gap:.3g} (T = {size:.3g}): {v} vs {other}"
        )


@given(case=jacobians(max_n=12), data=st.data(), log_c=st.floats(-8, 8))
def test_scale_invariance(case: GramCase, data: st.DataObject, log_c: float) -> None:
    """Q → cQ leaves v* unchanged; rescaling gradient j by dⱼ (with uⱼ → uⱼ/dⱼ) maps v*ⱼ to
    v*ⱼ/dⱼ."""
    q, g = case.q, case.g
    u = data.draw(lower_bounds(case.n))
    base = solve_box_qp(q, u)
    scaled = _np(solve_box_qp(10.0**log_c * q, u).weights)
    d = 10.0 ** np.asarray(data.draw(st.lists(st.floats(-3, 3), min_size=case.n, max_size=case.n)))
    rescaled = solve_box_qp(q * np.outer(d, d), u / d)
    assert_box_solution(rescaled, q * np.outer(d, d), u / d)
    for other in (scaled, _np(rescaled.weights) * d):
        assert_same_projection(base, other, g, u)


@given(case=jacobians(max_n=12), data=st.data())
def test_permutation_equivariance(case: GramCase, data: st.DataObject) -> None:
    q, g = case.q, case.g
    u = data.draw(lower_bounds(case.n))
    perm = np.asarray(data.draw(st.permutations(range(case.n))))
    base = solve_box_qp(q, u)
    permuted = _np(solve_box_qp(q[np.ix_(perm, perm)], u[perm]).weights)
    inverse = np.argsort(perm)
    assert_same_projection(base, permuted[inverse], g, u)


@given(case=jacobians(max_n=12))
def test_upgrad_weights_conflict_with_no_gradient(case: GramCase) -> None:
    """UPGrad: w = Σₖ v*ₖ with uₖ = eₖ/N; every row is the single projection, and (Qw)ⱼ ≥ 0."""
    q, n = case.q, case.n
    lowers = np.eye(n) / n
    result = project_to_dual_cone(q, lowers)
    rows = _np(result.weights)
    assert rows.shape == (n, n)
    assert result.kkt_residual <= KKT_TOL
    singles = [solve_box_qp(q, lowers[k]) for k in range(n)]
    for k, single in enumerate(singles):
        assert np.array_equal(rows[k], _np(single.weights))
        assert_box_solution(single, q, lowers[k])
    assert result.iterations == sum(s.iterations for s in singles)
    order = [
        SolveStatus.OPTIMAL,
        SolveStatus.DEGENERATE,
        SolveStatus.INACCURATE,
        SolveStatus.MAX_ITER,
    ]
    assert result.status is max((s.status for s in singles), key=order.index)
    rounding = 1e-14 * sum(_size(case.g, r, lo) ** 2 for r, lo in zip(rows, lowers))
    assert result.objective == pytest.approx(
        sum(s.objective for s in singles), rel=1e-12, abs=rounding + 1e-300
    )
    assert_dual_cone(q, rows.sum(0), lowers.sum(0))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("kind", ["near-duplicate", "near-opposite"])
def test_nearly_dependent_gradients(kind: str, seed: int) -> None:
    """Gradients equal (or opposite) up to 1e-14..1e-4: sub-problems singular to rcond are
    truncated, the answer is DEGENERATE with a KKT residual of the order of √rcond at worst, never
    wrong."""
    rng = np.random.default_rng(seed)
    n, p = 12, 20
    g = rng.standard_normal((p, n))
    for _ in range(n // 2):
        i, j = rng.integers(n, size=2)
        sign = 1.0 if kind == "near-duplicate" else -rng.uniform(0.5, 2.0)
        g[:, j] = sign * g[:, i] + 10.0 ** rng.uniform(-14, -4) * rng.standard_normal(p)
    q = g.T @ g
    for lowers in (np.eye(n) / n, rng.standard_normal((2, n))):
        result = project_to_dual_cone(q, lowers)
        assert result.status in CERTIFIED
        assert result.kkt_residual <= (KKT_TOL if result.status is SolveStatus.OPTIMAL else 1e-6), (
            result.kkt
        )
        rows = _np(result.weights)
        assert (rows >= lowers).all()
        for row, u in zip(rows, lowers):
            assert_dual_cone(q, row, u, tol=1e-10 if result.status is SolveStatus.OPTIMAL else 1e-6)
            reference = box_reference(q, u)
            if reference is not None and reference[1]:
                gap = float(np.linalg.norm(g @ (row - reference[0])))
                assert gap <= 1e-6 * _size(g, row, u, reference[0])


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "lower",
    [
        np.zeros(2),
        np.zeros((1, 3)),
        np.array([0.1, math.nan, 0.0]),
        np.array([0.0, math.inf, 0.0]),
        "abc",
        np.array([1j, 0.0, 0.0]),
        torch.tensor([0.0, float("nan"), 0.0]),
    ],
)
def test_bad_lower_raises(lower: object) -> None:
    with pytest.raises(ValueError, match="lower"):
        solve_box_qp(np.eye(3), lower)  # type: ignore[arg-type]


@pytest.mark.parametrize("lowers", [np.eye(3)[0], np.zeros((2, 2)), np.full((3, 3), math.nan)])
def test_bad_lowers_raises(lowers: np.ndarray) -> None:
    with pytest.raises(ValueError, match="lowers"):
        project_to_dual_cone(np.eye(3), lowers)


@pytest.mark.parametrize(
    ("q", "match"),
    [
        (np.ones((2, 3)), "square"),
        (np.zeros((0, 0)), "empty"),
        (np.array([[1.0, math.nan], [math.nan, 1.0]]), "NaN"),
        (np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "symmetric"),
        (np.diag([1.0, -1.0, 1.0]), "positive semi-definite"),
        (np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "positive semi-definite"),
    ],
)
def test_bad_q_raises(q: np.ndarray, match: str) -> None:
    n = q.shape[0]
    for solve in (lambda: solve_box_qp(q, np.zeros(n)), lambda: project_to_dual_cone(q, np.eye(n))):
        with pytest.raises(ValueError, match=match):
            solve()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("n", [2, 5])
def test_cuda_tensors(n: int) -> None:
    rng = np.random.default_rng(n)
    g = rng.standard_normal((7, n))
    q = torch.tensor(g.T @ g, device="cuda")
    lowers = torch.eye(n, device="cuda") / n
    rows = project_to_dual_cone(q, lowers)
    assert rows.weights.device == q.device and rows.weights.dtype == torch.float64
    single = solve_box_qp(q, lowers[0])
    assert single.weights.device == q.device
    host = solve_box_qp(q.cpu(), lowers[0].cpu())
    assert torch.equal(single.weights.cpu(), host.weights)
    assert rows.kkt_residual <= KKT_TOL


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="tol"):
        solve_box_qp(np.eye(2), np.zeros(2), tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        project_to_dual_cone(np.eye(2), np.eye(2), max_iter=0)
    with pytest.raises(ValueError, match="rcond"):
        solve_box_qp(np.eye(2), np.zeros(2), rcond=-1.0)


# --------------------------------------------------------------------------- TorchJD


@pytest.mark.parametrize("n", [2, 3, 5, 8, 16])
def test_upgrad_matches_torchjd(n: int) -> None:
    """TorchJD's ``UPGradWeighting`` (quadprog through qpsolvers) returns weights on the raw
    gradients, as :func:`upgrad_weights` does. Its default projector solves on ``Q/tr(Q) + 1e-4·I``:
    ours on that ridged Gramian agree with it, and ours on Q with its projector at ``reg_eps=0``
    (quadprog on the exact Gramian), to quadprog's accuracy (~1e-14 relative measured here)."""
    pytest.importorskip("qpsolvers")
    pytest.importorskip("quadprog")
    aggregation = pytest.importorskip("torchjd.aggregation")
    linalg = pytest.importorskip("torchjd.linalg")
    exact = aggregation.UPGradWeighting(projector=linalg.QuadprogProjector(reg_eps=0.0))
    default = aggregation.UPGradWeighting()
    rng = np.random.default_rng(n)
    for _ in range(5):
        g = rng.standard_normal((64, n)) * 10.0 ** rng.uniform(-1, 1, size=n)
        q = torch.tensor(g.T @ g)
        ridged = q / torch.trace(q) + 1e-4 * torch.eye(n, dtype=torch.float64)
        for theirs, gram in ((exact(q), q), (default(q), ridged)):
            ours, result = upgrad_weights(gram)
            assert result.status is SolveStatus.OPTIMAL
            np.testing.assert_allclose(
                ours.numpy(), theirs.numpy(), rtol=0, atol=1e-10 * float(ours.abs().max())
            )
