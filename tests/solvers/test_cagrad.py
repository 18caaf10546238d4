"""CAGrad's inner problem: hand cases, hypothesis properties, a cvxpy reference and TorchJD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import moo_opt.solvers._cagrad_support as _cagrad_support
import moo_opt.solvers.cagrad as cagrad
from moo_opt.solvers import SolveResult, SolveStatus
from moo_opt.solvers.cagrad import cagrad_direction_weights, solve_cagrad
from tests.helpers.gramians import GramCase, jacobians, well_posed

KKT_TOL = 1e-9  # OPTIMAL answers
DEGENERATE_KKT_TOL = 1e-6  # DEGENERATE ones (Gw* = 0 is resolved to √rcond only, see solve_cagrad)

radii = st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(1e-3, 10.0))


def _np(result: SolveResult) -> np.ndarray:
    return result.weights.detach().cpu().numpy()


def objective(q: np.ndarray, c: float, w: np.ndarray) -> float:
    """``F(w) = bᵀw + r·‖Gw‖`` with ``b = Qm``, ``r = c‖g0‖``."""
    n = q.shape[0]
    m = np.full(n, 1.0 / n)
    b = q @ m
    r = c * math.sqrt(max(float(m @ b), 0.0))
    return float(b @ w) + r * math.sqrt(max(float(w @ q @ w), 0.0))


def slack(q: np.ndarray, c: float, rtol: float = 1e-7) -> float:
    """Absolute tolerance on F: ``rtol·(1 + c)·max Qᵢᵢ`` (both terms of F are at most that size)."""
    return rtol * (1.0 + c) * float(np.abs(np.diag(q)).max()) + 1e-300


def reference_cvxpy(q: np.ndarray, c: float) -> np.ndarray | None:
    """``min bᵀw + r‖Bw‖`` over the simplex with ``BᵀB = Q`` (eigh), by Clarabel; None if it
    fails."""
    import cvxpy as cp

    n = q.shape[0]
    top = float(np.abs(np.diag(q)).max())
    qs = q / top if top > 0.0 else q
    lam, vec = np.linalg.eigh(qs)
    factor = (vec * np.sqrt(np.maximum(lam, 0.0))).T
    m = np.full(n, 1.0 / n)
    b = qs @ m
    r = c * math.sqrt(max(float(m @ b), 0.0))
    w = cp.Variable(n)
    problem = cp.Problem(cp.Minimize(b @ w + r * cp.norm(factor @ w)), [w >= 0, cp.sum(w) == 1])
    try:
        problem.solve(solver=cp.CLARABEL)
    except cp.error.SolverError:
        return None
    if w.value is None:
        return None
    ref = np.maximum(np.asarray(w.value, dtype=np.float64), 0.0)
    return ref / ref.sum()


def assert_certified(result: SolveResult) -> None:
    w = _np(result)
    assert np.isfinite(w).all()
    assert (w >= 0.0).all() and abs(w.sum() - 1.0) <= 1e-12, w
    assert result.status in (SolveStatus.OPTIMAL, SolveStatus.DEGENERATE), result.status
    tol = KKT_TOL if result.status is SolveStatus.OPTIMAL else DEGENERATE_KKT_TOL
    assert result.kkt_residual <= tol, (result.status, result.kkt)


# ---------------------------------------------------------------- hand cases


@pytest.mark.parametrize("c", [0.2, 0.5, 1.0, 4.0])
def test_orthogonal_equal_gradients(c: float) -> None:
    """Q = I: bᵀw = 1/2 on the whole simplex, so F = 1/2 + r‖w‖ is least at w = (1/2, 1/2) (also by
    symmetry); ‖Gw‖ = 1/√2 = ‖g0‖, so the direction weights are m + c·w = (1 + c)/2 each."""
    result = solve_cagrad(np.eye(2), c)
    assert result.status is SolveStatus.OPTIMAL
    assert result.problem == "cagrad"
    np.testing.assert_allclose(_np(result), [0.5, 0.5], atol=1e-15)
    assert result.kkt_residual <= 1e-15
    np.testing.assert_allclose(
        cagrad_direction_weights(np.eye(2), _np(result), c), [(1 + c) / 2] * 2, rtol=1e-15
    )


def test_two_gradients_by_hand() -> None:
    """g1 = (1, 0), g2 = (0, 2): Q = diag(1, 4), g0 = (1/2, 1), ‖g0‖² = 5/4, b = (1/2, 2).

    With w = (λ, 1 − λ): F(λ) = λ/2 + 2(1 − λ) + r·√(λ² + 4(1 − λ)²).

    * c = 2 (r = √5): F'(λ) = 0 ⇔ (5λ − 4)/√(5λ² − 8λ + 4) = 3/(2√5); squaring,
      455λ² − 728λ + 284 = 0, and the root with 5λ − 4 > 0 is λ = (364 + 2√819)/455 ≈ 0.92579.
    * c = 1/2 (r = √5/4 ≈ 0.559): at w = e1 (t = 1, μ = b1 + r),
      ν2 = b2 + r(Qe1)₂ − μ = 3/2 − r > 0, so the vertex e1 is optimal (every r ≤ 3/2, i.e.
      c ≤ 1.342, gives e1).
    """
    q = np.diag([1.0, 4.0])
    result = solve_cagrad(q, 2.0)
    lam = (364.0 + 2.0 * math.sqrt(819.0)) / 455.0
    assert result.status is SolveStatus.OPTIMAL
    np.testing.assert_allclose(_np(result), [lam, 1.0 - lam], rtol=1e-14)
    vertex = solve_cagrad(q, 0.5)
    assert vertex.status is SolveStatus.OPTIMAL
    np.testing.assert_array_equal(_np(vertex), [1.0, 0.0])
    r = 0.5 * math.sqrt(1.25)  # d = g0 + r·g1/‖g1‖: weights m + r·e1
    np.testing.assert_allclose(
        cagrad_direction_weights(q, _np(vertex), 0.5), [0.5 + r, 0.5], rtol=1e-15
    )


def test_c_zero_is_the_mean_gradient() -> None:
    """c = 0: F = bᵀw is linear; its minimiser is the vertex of the smallest bᵢ = gᵢᵀg0, ties are
    split evenly (DEGENERATE), and the update is g0 (direction weights m)."""
    q = np.diag([1.0, 4.0])
    result = solve_cagrad(q, 0.0)
    assert result.status is SolveStatus.OPTIMAL and result.method == "closed-form"
    np.testing.assert_array_equal(_np(result), [1.0, 0.0])
    np.testing.assert_array_equal(cagrad_direction_weights(q, _np(result), 0.0), [0.5, 0.5])
    tie = solve_cagrad(np.eye(3), 0.0)
    assert tie.status is SolveStatus.DEGENERATE
    np.testing.assert_allclose(_np(tie), [1 / 3] * 3)


@pytest.mark.parametrize("c", [0.0, 0.5, 2.0])
def test_single_gradient(c: float) -> None:
    """N = 1: w = (1) and d = g + c‖g‖·g/‖g‖ = (1 + c)·g."""
    result = solve_cagrad(np.array([[9.0]]), c)
    assert result.status is SolveStatus.OPTIMAL
    np.testing.assert_array_equal(_np(result), [1.0])
    assert result.kkt_residual == 0.0
    np.testing.assert_allclose(
        cagrad_direction_weights(np.array([[9.0]]), _np(result), c), [1.0 + c]
    )


@pytest.mark.parametrize("c", [0.3, 2.0])
def test_equal_gradients(c: float) -> None:
    """g1 = g2 = g: Gw = g for every w, F is constant: every w is optimal (DEGENERATE, minimal
    support), and d = g0 + r·g/‖g‖ = (1 + c)·g whatever w."""
    g = np.array([[3.0, 3.0], [4.0, 4.0]])
    q = g.T @ g
    result = solve_cagrad(q, c)
    assert result.status is SolveStatus.DEGENERATE
    assert_certified(result)
    d = g @ cagrad_direction_weights(q, _np(result), c)
    np.testing.assert_allclose(d, (1.0 + c) * g[:, 0], rtol=1e-14)


def test_opposite_gradients_have_zero_mean() -> None:
    """g2 = −g1: g0 = 0, so r = 0 and F ≡ 0: w = m, DEGENERATE, d = g0 = 0."""
    q = np.array([[1.0, -1.0], [-1.0, 1.0]])
    result = solve_cagrad(q, 1.0)
    assert result.status is SolveStatus.DEGENERATE
    np.testing.assert_array_equal(_np(result), [0.5, 0.5])
    np.testing.assert_array_equal(cagrad_direction_weights(q, _np(result), 1.0), [0.5, 0.5])


@pytest.mark.parametrize("c", [0.8, 3.0])
def test_zero_in_hull(c: float) -> None:
    """g1 = (1, 0), g2 = (−1, 0), g3 = (−1, 1): 0 = (g1 + g2)/2 is in the hull, g0 = (−1/3, 1/3).

    The tangent cone of the hull at 0 is the upper half-plane; the projection of −g0 onto it is
    (1/3, 0), of norm 1/3 ≤ r = c·√2/3 for c ≥ 1/√2: then Gw* = 0, F* = 0, w* = (1/2, 1/2, 0), and
    the maximiser of minᵢ gᵢᵀd in the ball nearest to g0 is the projection of g0 onto the dual cone,
    d = (0, 1/3) (minᵢ gᵢᵀd = 0), not g0 itself (g1ᵀg0 = −1/3).
    """
    g = np.array([[1.0, -1.0, -1.0], [0.0, 0.0, 1.0]])
    q = g.T @ g
    result = solve_cagrad(q, c)
    assert result.status is SolveStatus.DEGENERATE
    assert_certified(result)
    np.testing.assert_allclose(_np(result), [0.5, 0.5, 0.0], atol=1e-15)
    d = g @ cagrad_direction_weights(q, _np(result), c)
    np.testing.assert_allclose(d, [0.0, 1.0 / 3.0], atol=1e-15)


def test_zero_gradient() -> None:
    """A zero gradient and one other, g0 = g1/2 conflicts with neither: w* = e2 (Gw* = 0),
    d = g0."""
    q = np.array([[1.0, 0.0], [0.0, 0.0]])
    result = solve_cagrad(q, 0.5)
    assert result.status is SolveStatus.DEGENERATE
    np.testing.assert_array_equal(_np(result), [0.0, 1.0])
    np.testing.assert_allclose(cagrad_direction_weights(q, _np(result), 0.5), [0.5, 0.5])


def test_tensor_input_keeps_device_and_dtype() -> None:
    q = torch.tensor([[2.0, -0.5, 0.1], [-0.5, 1.0, 0.2], [0.1, 0.2, 3.0]], dtype=torch.float32)
    result = solve_cagrad(q, 0.5)
    assert result.weights.dtype == torch.float64 and result.weights.device == q.device
    assert_certified(result)
    np.testing.assert_allclose(_np(result), _np(solve_cagrad(q.double().numpy(), 0.5)), atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_input() -> None:
    for n in (2, 5):
        g = torch.randn(40, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
        q = (g.T @ g).cuda()
        result = solve_cagrad(q, 0.5)
        assert result.weights.device == q.device
        assert_certified(result)
        np.testing.assert_allclose(_np(result), _np(solve_cagrad(q.cpu(), 0.5)), atol=1e-14)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("c", [-0.1, float("nan"), float("inf"), "big"])
def test_rejects_bad_c(c: object) -> None:
    with pytest.raises(ValueError, match="c must be"):
        solve_cagrad(np.eye(2), c)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="c must be"):
        cagrad_direction_weights(np.eye(2), np.array([0.5, 0.5]), c)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("q", "message"),
    [
        (np.ones((2, 3)), "square"),
        (np.zeros((0, 0)), "empty"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
        (np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "symmetric"),
        (np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]), "positive semi-definite"),
    ],
)
def test_rejects_bad_gramian(q: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        solve_cagrad(q, 0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"tol": 0.0}, "tol"), ({"max_iter": 0}, "max_iter"), ({"rcond": -1.0}, "rcond")],
)
def test_rejects_bad_options(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        solve_cagrad(np.eye(2), 0.5, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- properties


@given(case=well_posed(min_n=2), c=radii)
def test_well_posed_is_optimal_and_matches_cvxpy(case: GramCase, c: float) -> None:
    q = case.q
    result = solve_cagrad(q, c)
    w = _np(result)
    assert result.status is SolveStatus.OPTIMAL or (
        c == 0.0 and result.status is SolveStatus.DEGENERATE
    )
    assert_certified(result)
    ours = objective(q, c, w)
    ref = reference_cvxpy(q, c)
    assert ref is not None
    assert ours <= objective(q, c, ref) + slack(q, c, 1e-9)
    assert abs(ours - objective(q, c, ref)) <= slack(q, c, 1e-6)


@given(case=jacobians(max_n=16), c=radii, seed=st.integers(0, 2**32 - 1))
def test_certified_and_minimal_on_any_input(case: GramCase, c: float, seed: int) -> None:
    q = case.q
    result = solve_cagrad(q, c)
    assert_certified(result)
    assert result.iterations >= 0
    ours = objective(q, c, _np(result))
    ref = reference_cvxpy(q, c)
    if ref is not None:
        assert ours <= objective(q, c, ref) + slack(q, c)
    rng = np.random.default_rng(seed)
    others = np.vstack((rng.dirichlet(np.full(case.n, 0.5), size=50), np.eye(case.n)))
    assert ours <= min(objective(q, c, x) for x in others) + slack(q, c)


@given(case=well_posed(min_n=2, max_n=12), c=radii, log_scale=st.floats(-8, 8))
def test_scale_invariance(case: GramCase, c: float, log_scale: float) -> None:
    q = case.q
    k = 10.0**log_scale
    base, scaled = solve_cagrad(q, c), solve_cagrad(k * q, c)
    if base.status is SolveStatus.OPTIMAL and scaled.status is SolveStatus.OPTIMAL:
        np.testing.assert_allclose(_np(scaled), _np(base), atol=1e-7)
    assert abs(objective(k * q, c, _np(scaled)) - k * objective(q, c, _np(base))) <= k * slack(
        q, c, 1e-9
    )


@given(case=jacobians(max_n=12), c=radii, log_scale=st.floats(-8, 8))
def test_scale_invariance_of_the_optimum_on_any_input(
    case: GramCase, c: float, log_scale: float
) -> None:
    q = case.q
    k = 10.0**log_scale
    base, scaled = solve_cagrad(q, c), solve_cagrad(k * q, c)
    assert abs(objective(k * q, c, _np(scaled)) - k * objective(q, c, _np(base))) <= k * slack(q, c)


@given(case=jacobians(max_n=12), c=radii, data=st.data())
def test_permutation_equivariance(case: GramCase, c: float, data: st.DataObject) -> None:
    q = case.q
    perm = np.asarray(data.draw(st.permutations(range(case.n))))
    base, permuted = solve_cagrad(q, c), solve_cagrad(q[np.ix_(perm, perm)], c)
    assert abs(
        objective(q, c, _np(base)) - objective(q[np.ix_(perm, perm)], c, _np(permuted))
    ) <= slack(q, c)
    if (
        base.status is SolveStatus.OPTIMAL
        and permuted.status is SolveStatus.OPTIMAL
        and base.condition <= 1e6
    ):
        np.testing.assert_allclose(_np(permuted), _np(base)[perm], atol=1e-7)


def _ball_property(case: GramCase, c: float, seed: int, rtol: float) -> None:
    """d = G·(direction weights) lies in the ball ‖d − g0‖ ≤ r, on its boundary when Gw* ≠ 0, and
    maximises the worst improvement minᵢ gᵢᵀd over the ball, whose value is F* (strong duality)."""
    g, q = case.g, case.q
    result = solve_cagrad(q, c)
    w = _np(result)
    d = g @ cagrad_direction_weights(q, w, c)
    g0 = g.mean(axis=1)
    r = c * float(np.linalg.norm(g0))
    top = float(np.linalg.norm(g, axis=0).max())
    size = top * (float(np.linalg.norm(g0)) + r)  # bounds every gᵢᵀd
    gap = float(np.linalg.norm(d - g0))
    assert gap <= r * (1.0 + rtol) + 1e-12 * top
    if result.status is SolveStatus.OPTIMAL and c > 0.0:
        assert gap >= r * (1.0 - rtol) - 1e-12 * top
    worst = float((g.T @ d).min())
    assert abs(worst - objective(q, c, w)) <= rtol * size + 1e-300
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((g.shape[0], 200))
    u /= np.linalg.norm(u, axis=0)
    others = g0[:, None] + r * u * np.concatenate((np.ones(100), rng.uniform(0.0, 1.0, 100)))
    assert worst >= float((g.T @ others).min(axis=0).max()) - rtol * size


@given(case=well_posed(), c=radii, seed=st.integers(0, 2**32 - 1))
def test_direction_maximises_the_worst_improvement(case: GramCase, c: float, seed: int) -> None:
    _ball_property(case, c, seed, 1e-9)


@given(case=jacobians(max_n=12), c=radii, seed=st.integers(0, 2**32 - 1))
def test_direction_maximises_the_worst_improvement_on_any_input(
    case: GramCase, c: float, seed: int
) -> None:
    _ball_property(case, c, seed, 1e-6)


# ---------------------------------------------------------------- fall-back paths


def _cases(count: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [(lambda g: g.T @ g)(rng.standard_normal((12, n))) for n in (2, 3, 5, 8, 8, 12)][:count]


def test_bisection_alone_finds_the_same_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every candidate refused, the bisection closes its bracket and returns the best one."""
    expected = [_np(solve_cagrad(q, 0.7)) for q in _cases()]
    monkeypatch.setattr(cagrad._Candidate, "accepted", lambda self, idx: False)
    for q, w in zip(_cases(), expected):
        result = solve_cagrad(q, 0.7)
        assert result.method == "bisection"
        assert_certified(result)
        np.testing.assert_allclose(_np(result), w, atol=1e-9)


def test_uncertified_answers_are_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cagrad_support, "CERTIFIED", -1.0)
    monkeypatch.setattr(_cagrad_support, "ZERO_CERTIFIED", -1.0)
    q = _cases(3)[2]
    assert solve_cagrad(q, 0.7, max_iter=2).status is SolveStatus.MAX_ITER
    assert solve_cagrad(q, 0.7).status is SolveStatus.INACCURATE


def test_few_iterations() -> None:
    for q in _cases():
        result = solve_cagrad(q, 0.5)
        assert result.status is SolveStatus.OPTIMAL
        assert 1 <= result.iterations <= 6, result.iterations


# ---------------------------------------------------------------- TorchJD


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("c", [0.2, 0.5, 1.0])
def test_matches_torchjd(n: int, c: float) -> None:
    """TorchJD's ``CAGradWeighting(c)`` returns ``m + (r/‖Gw‖)·w`` on the raw gradients (it
    normalises Q by its trace first, which leaves these weights unchanged, and does not divide by
    1 + c²), with w from Clarabel at its default tolerances (gap 1e-8): its F is above ours by up to
    ~5e-9·max Qᵢᵢ, and r/‖Gw‖ amplifies that into weights that differ from ours by up to ~1.2e-4
    (relative, measured on these cases): agreement to 3e-4, and our F is never higher."""
    aggregation = pytest.importorskip("torchjd.aggregation")
    rng = np.random.default_rng(100 * n + int(10 * c))
    for _ in range(5):
        g = rng.standard_normal((20, n))
        q = g.T @ g
        theirs = aggregation.CAGradWeighting(c=c)(torch.tensor(q)).numpy()
        result = solve_cagrad(q, c)
        assert result.status is SolveStatus.OPTIMAL
        ours = cagrad_direction_weights(q, _np(result), c)
        np.testing.assert_allclose(ours, theirs, atol=3e-4 * float(np.abs(ours).max()))
        their_w = (theirs - 1.0 / n) / (theirs.sum() - 1.0)  # theirs = m + λw with Σw = 1
        assert (
            objective(q, c, _np(result))
            <= objective(q, c, np.maximum(their_w, 0.0) / np.maximum(their_w, 0.0).sum()) + 1e-12
        )
