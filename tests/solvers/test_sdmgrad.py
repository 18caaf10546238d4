"""SDMGrad's inner problem: hand cases, its KKT conditions checked independently, hypothesis
properties against a cvxpy reference (singular and duplicated Gramians included), MGDA at λ = 0
and TorchJD's ``SDMGradWeighting``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from moo_opt.solvers import SolveResult, SolveStatus, solve_sdmgrad, solve_simplex_qp
from moo_opt.solvers.sdmgrad import sdmgrad_kkt, shifted_gramian
from tests.helpers.assertions import DEGENERATE_KKT_TOL, KKT_TOL
from tests.helpers.gramians import GramCase, jacobians, well_posed

lams = st.one_of(st.sampled_from([0.0, 0.3, 1.0, 10.0]), st.floats(1e-3, 100.0))


def _np(result: SolveResult) -> np.ndarray:
    return result.weights.detach().cpu().numpy()


def assert_certified(result: SolveResult) -> None:
    w = _np(result)
    assert np.isfinite(w).all()
    assert (w >= 0.0).all() and abs(w.sum() - 1.0) <= 1e-12, w
    assert result.problem == "sdmgrad"
    assert result.status in (SolveStatus.OPTIMAL, SolveStatus.DEGENERATE), result.status
    tol = KKT_TOL if result.status is SolveStatus.OPTIMAL else DEGENERATE_KKT_TOL
    assert result.kkt_residual <= tol, (result.status, result.kkt)


def objective(q: np.ndarray, lam: float, p: np.ndarray, w: np.ndarray) -> float:
    """``½|Gw + λGp|² = ½(w + λp)ᵀQ(w + λp)``."""
    v = w + lam * p
    return 0.5 * float(v @ q @ v)


def reference_cvxpy(q: np.ndarray, lam: float, p: np.ndarray) -> np.ndarray | None:
    """``min ½|Bw|² + λ(Qp)ᵀw`` over the simplex, ``BᵀB = Q/max Qᵢᵢ`` (eigh), by Clarabel."""
    import cvxpy as cp

    top = float(np.abs(np.diag(q)).max())
    qs = q / top if top > 0.0 else q
    lam_, vec = np.linalg.eigh(qs)
    factor = (vec * np.sqrt(np.maximum(lam_, 0.0))).T
    w = cp.Variable(q.shape[0])
    problem = cp.Problem(
        cp.Minimize(0.5 * cp.sum_squares(factor @ w) + lam * (qs @ p) @ w),
        [w >= 0, cp.sum(w) == 1],
    )
    try:
        problem.solve(solver=cp.CLARABEL)
    except cp.error.SolverError:
        return None
    if w.value is None:
        return None
    ref = np.maximum(np.asarray(w.value, dtype=np.float64), 0.0)
    return ref / ref.sum()


def polished(q: np.ndarray, lam: float, p: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Clarabel's answer polished on its support S: the KKT system of the problem restricted to
    S, ``Q_SS w_S + λ(Qp)_S = μ1``, ``1ᵀw_S = 1`` (its raw weights carry the interior-point
    method's 1e-7..1e-3 errors on badly scaled Gramians)."""
    support = np.flatnonzero(ref > 1e-6 * ref.max())
    k = support.size
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = q[np.ix_(support, support)]
    kkt[:k, k] = kkt[k, :k] = -1.0
    rhs = np.concatenate((-lam * (q @ p)[support], [-1.0]))
    sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    w = np.zeros_like(ref)
    w[support] = sol[:k]
    return w


def simplex_projection(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the probability simplex (sort and threshold)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.nonzero(u * np.arange(1, v.size + 1) > css)[0][-1]
    return np.maximum(v - css[k] / (k + 1.0), 0.0)


# ---------------------------------------------------------------- hand cases


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 2.0 / 3.0, 1.0, 5.0])
def test_two_gradients_by_hand(lam: float) -> None:
    """g1 = (1, 0), g2 = (0, 2), p = (½, ½): g0 = (½, 1). The shifted gradients xᵢ = gᵢ + λg0
    have x1 − x2 = g1 − g2 (|·|² = 5) and x2·(x2 − x1) = 4 + 1.5λ, so
    w1 = min((4 + 1.5λ)/5, 1): interior for λ < 2/3, the vertex e1 from there on."""
    q = np.diag([1.0, 4.0])
    result = solve_sdmgrad(q, lam)
    assert result.status is SolveStatus.OPTIMAL and result.method == "closed-form"
    w1 = min((4.0 + 1.5 * lam) / 5.0, 1.0)
    np.testing.assert_allclose(_np(result), [w1, 1.0 - w1], rtol=1e-15, atol=1e-15)
    assert result.kkt_residual <= 1e-15
    assert result.objective == pytest.approx(objective(q, lam, np.full(2, 0.5), _np(result)))


def test_single_gradient() -> None:
    result = solve_sdmgrad(np.array([[4.0]]), 0.3)
    assert result.status is SolveStatus.OPTIMAL
    np.testing.assert_array_equal(_np(result), [1.0])
    assert result.kkt_residual == 0.0


def test_duplicated_gradients_are_degenerate_and_certified() -> None:
    """g1 = g2: every split of their weight is optimal; the minimum-norm one splits it evenly."""
    g = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    result = solve_sdmgrad(g.T @ g, 0.3)
    assert result.status is SolveStatus.DEGENERATE
    assert_certified(result)
    w = _np(result)
    assert w[0] == pytest.approx(w[1], abs=1e-12)


def test_zero_gradient_is_certified() -> None:
    """A zero gradient g3: the shifted vertex λg0 competes with the others; any answer is
    certified and optimal against cvxpy."""
    g = np.array([[1.0, -0.5, 0.0], [0.2, 1.0, 0.0]])
    q = g.T @ g
    p = np.full(3, 1.0 / 3.0)
    result = solve_sdmgrad(q, 0.3)
    assert_certified(result)
    ref = reference_cvxpy(q, 0.3, p)
    assert ref is not None
    assert objective(q, 0.3, p, _np(result)) <= objective(q, 0.3, p, ref) + 1e-9


def test_preferences_move_the_target() -> None:
    """p = e2 with a large λ: the problem is nearly min (Qe2)ᵀw, the vertex of the gradient most
    aligned against g2; the applied weights (w + λp)/(1 + λ) tend to p."""
    q = np.array([[1.0, -0.2, 0.3], [-0.2, 1.0, 0.1], [0.3, 0.1, 1.0]])
    p = np.array([0.0, 1.0, 0.0])
    result = solve_sdmgrad(q, 1e4, p)
    assert_certified(result)
    np.testing.assert_array_equal(_np(result), [1.0, 0.0, 0.0])
    applied = (_np(result) + 1e4 * p) / (1.0 + 1e4)
    np.testing.assert_allclose(applied, p, atol=1e-4)


def test_tensor_input_keeps_device_and_dtype() -> None:
    q = torch.tensor([[2.0, -0.5, 0.1], [-0.5, 1.0, 0.2], [0.1, 0.2, 3.0]], dtype=torch.float32)
    result = solve_sdmgrad(q, 0.3, torch.tensor([0.2, 0.3, 0.5]))
    assert result.weights.dtype == torch.float64 and result.weights.device == q.device
    assert_certified(result)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_input() -> None:
    for n in (2, 5):
        g = torch.randn(40, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
        q = (g.T @ g).cuda()
        result = solve_sdmgrad(q, 0.3)
        assert result.weights.device == q.device
        assert_certified(result)
        np.testing.assert_allclose(_np(result), _np(solve_sdmgrad(q.cpu(), 0.3)), atol=1e-14)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("lam", [-0.1, float("nan"), float("inf"), True, "big"])
def test_rejects_bad_lam(lam: object) -> None:
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        solve_sdmgrad(np.eye(2), lam)  # type: ignore[arg-type]


@pytest.mark.parametrize("p", [np.ones(3), np.array([0.5, np.nan]), np.ones((2, 1))])
def test_rejects_bad_preferences(p: np.ndarray) -> None:
    with pytest.raises(ValueError, match="preferences must be 2 finite numbers"):
        solve_sdmgrad(np.eye(2), 0.3, p)


@pytest.mark.parametrize(
    ("q", "message"),
    [
        (np.ones((2, 3)), "square"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
        (np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]), "positive semi-definite"),
    ],
)
def test_rejects_bad_gramian(q: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        solve_sdmgrad(q, 0.3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"tol": 0.0}, "tol"), ({"max_iter": 0}, "max_iter"), ({"rcond": -1.0}, "rcond")],
)
def test_rejects_bad_options(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        solve_sdmgrad(np.eye(3), 0.3, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- properties


@given(case=jacobians(max_n=12))
def test_lambda_zero_is_mgda(case: GramCase) -> None:
    """λ = 0 hands the simplex solver Q itself: MGDA's weights, bit for bit."""
    ours, mgda = solve_sdmgrad(case.q, 0.0), solve_simplex_qp(case.q)
    np.testing.assert_array_equal(_np(ours), mgda.weights.numpy())
    assert ours.status is mgda.status


@given(case=jacobians(max_n=12), lam=lams)
def test_certified_and_kkt_on_any_input(case: GramCase, lam: float) -> None:
    """Certified on singular, duplicated, zero and badly scaled gradients; the certificate is
    the KKT system of the original problem, and the answer is a fixed point of the projected
    gradient step (another form of the same conditions, computed here independently)."""
    q = case.q
    p = np.full(case.n, 1.0 / case.n)
    result = solve_sdmgrad(q, lam)
    assert_certified(result)
    w = _np(result)
    report = sdmgrad_kkt(q, w, lam, p)
    assert report == result.kkt
    grad = q @ (w + lam * p)
    top = float(np.abs(np.diag(q)).max())
    if top == 0.0:
        return
    step = 1.0 / (top * case.n)
    moved = simplex_projection(w - step * grad)
    scale = (1.0 + lam) * max(1.0, float(np.abs(w).sum()))
    tol = (1e-8 if result.status is SolveStatus.OPTIMAL else 1e-5) * scale
    assert np.abs(moved - w).max() <= tol, (moved, w)


@given(case=jacobians(max_n=10), lam=lams)
def test_matches_cvxpy(case: GramCase, lam: float) -> None:
    q = case.q
    p = np.full(case.n, 1.0 / case.n)
    result = solve_sdmgrad(q, lam)
    ref = reference_cvxpy(q, lam, p)
    if ref is None:
        return
    ours, theirs = objective(q, lam, p, _np(result)), objective(q, lam, p, ref)
    slack = 1e-7 * (1.0 + lam) ** 2 * float(np.abs(np.diag(q)).max()) + 1e-300
    assert ours <= theirs + slack, (ours, theirs)


@given(case=well_posed(min_n=2, max_n=10), lam=lams)
def test_well_posed_weights_match_cvxpy(case: GramCase, lam: float) -> None:
    """Independent gradients: the shifted gradients are independent too (T = I + λp1ᵀ is
    invertible), the optimum is unique, and the weights agree with Clarabel's, polished on its
    support (its raw weights on the small gradients of a badly scaled G are off by up to 0.15:
    the objective hardly depends on them)."""
    q = case.q
    p = np.full(case.n, 1.0 / case.n)
    result = solve_sdmgrad(q, lam)
    assert result.status is SolveStatus.OPTIMAL
    ref = reference_cvxpy(q, lam, p)
    assert ref is not None
    ours, theirs = objective(q, lam, p, _np(result)), objective(q, lam, p, ref)
    assert ours <= theirs + 1e-9 * (1.0 + lam) ** 2 * float(np.abs(np.diag(q)).max())
    exact = polished(q, lam, p, ref)
    if (exact >= 0.0).all():  # else Clarabel's support had a spurious index: nothing to polish
        np.testing.assert_allclose(_np(result), exact, atol=1e-10 * result.condition)


@given(case=jacobians(max_n=10), lam=lams, log_c=st.floats(-6, 6))
def test_scale_invariance(case: GramCase, lam: float, log_c: float) -> None:
    """The optimum does not depend on Q's scale (the paper's code normalises Q for its SGD)."""
    base, scaled = solve_sdmgrad(case.q, lam), solve_sdmgrad(10.0**log_c * case.q, lam)
    if base.status is SolveStatus.OPTIMAL and base.condition <= 1e6:
        np.testing.assert_allclose(_np(scaled), _np(base), atol=1e-7 * base.condition)
    assert scaled.status in (SolveStatus.OPTIMAL, SolveStatus.DEGENERATE)


def test_shifted_gramian_is_the_gram_of_the_shifted_gradients() -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((7, 4))
    p = np.array([0.1, 0.2, 0.3, 0.4])
    x = g + 0.7 * (g @ p)[:, None]
    np.testing.assert_allclose(shifted_gramian(g.T @ g, 0.7, p), x.T @ x, rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------- TorchJD


def _gramians(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        n = 2 + i % 9
        g = rng.standard_normal((30, n)) * 10.0 ** rng.uniform(-1, 1, n)
        out.append(g.T @ g)
    return out


def test_matches_torchjd_run_to_convergence() -> None:
    """TorchJD's ``SDMGradWeighting`` on ``A = Q`` (symmetric) with enough inner iterations (and
    a step that converges: its default step 10 oscillates on some of these Gramians) gives our
    exact answer: its output is ``(w + λp)/(1 + λ)``."""
    from torchjd.aggregation import SDMGradWeighting

    for q in _gramians(12):
        n = q.shape[0]
        ours = (_np(solve_sdmgrad(q, 0.3)) + 0.3 / n) / 1.3
        theirs = SDMGradWeighting(lr=1.0, n_iter=20_000, lambda_=0.3)(torch.tensor(q)).numpy()
        np.testing.assert_allclose(theirs, ours, atol=1e-9)


def test_torchjd_default_is_approximate() -> None:
    """At TorchJD's defaults (20 projected SGD steps at step 10 from 1/N, one call) the applied
    weights are off by up to about 0.5 on these Gramians, and its inner weights are never better
    certified than ours (checked with our certificate, on the original problem)."""
    from torchjd.aggregation import SDMGradWeighting

    diffs = []
    for q in _gramians(27):
        n = q.shape[0]
        p = np.full(n, 1.0 / n)
        result = solve_sdmgrad(q, 0.3)
        ours = (_np(result) + 0.3 * p) / 1.3
        theirs = SDMGradWeighting(lambda_=0.3)(torch.tensor(q)).numpy()
        inner = theirs * 1.3 - 0.3 * p
        assert result.kkt_residual <= sdmgrad_kkt(q, inner, 0.3, p).max + 1e-15
        diffs.append(float(np.abs(theirs - ours).max()))
    assert 0.05 < max(diffs) < 1.0, diffs
