"""Hand cases, promised properties and agreement with TorchJD of the balancer zoo, part 2
(issue 20): DualProj, ConFIG, FairGrad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moo_opt import ConFIGBalancer, DualProjBalancer, FairGradBalancer
from moo_opt.solvers import SolveStatus, solve_config, solve_fairgrad, solve_nash
from moo_opt.weightings import config_weights, dualproj_weights, fairgrad_weights, mgda_weights
from tests.helpers.models import toy_problem


def _linear_losses(*gradients: list[float]):
    """Losses ``gᵢ·θ`` at θ = 0: their gradients are exactly the given vectors."""
    theta = torch.zeros(len(gradients[0]), dtype=torch.float64, requires_grad=True)
    return theta, [torch.tensor(g, dtype=torch.float64) @ theta + 1.0 for g in gradients]


def _random_gram(rng: np.random.Generator, n: int, dim: int = 64) -> torch.Tensor:
    g = rng.standard_normal((dim, n)) * 10.0 ** rng.uniform(-1, 1, size=n)
    return torch.tensor(g.T @ g)


# --------------------------------------------------------------------------- DualProj


def test_dualproj_by_hand() -> None:
    # g1 = (1, 0), g2 = (-1, 1): the mean (0, 1/2) has g1·mean = 0, so it is already in the cone
    theta, losses = _linear_losses([1.0, 0.0], [-1.0, 1.0])
    info = DualProjBalancer(2).backward(losses, [theta])
    torch.testing.assert_close(info.weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    # g1 = (1, 0), g2 = (-2, 1): the mean (-1/2, 1/2) conflicts with g1; its projection onto the
    # cone {x: x1 ≥ 0, -2x1 + x2 ≥ 0} is (0, 1/2) = v1 g1 + v2 g2 with v = (1, 1/2)
    theta, losses = _linear_losses([1.0, 0.0], [-2.0, 1.0])
    info = DualProjBalancer(2).backward(losses, [theta])
    torch.testing.assert_close(info.weights, torch.tensor([1.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(theta.grad, torch.tensor([0.0, 0.5], dtype=torch.float64))
    assert info.solve.status is SolveStatus.OPTIMAL


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 5))
def test_dualproj_conflicts_with_no_gradient_and_keeps_an_unconflicting_mean(
    seed: int, n: int
) -> None:
    p = toy_problem(seed=seed, num_objectives=n, width=8, scales=[1.0] * n)
    b = DualProjBalancer(n)
    g = b.gradients(p.losses(), p.shared()).matrix()
    info = b.backward(p.losses(), p.shared())
    d = g @ info.weights
    assert info.solve.status in (SolveStatus.OPTIMAL, SolveStatus.DEGENERATE)
    assert float((g.T @ d).min()) >= -1e-10 * float(g.norm(dim=0).max() * d.norm())
    assert bool((info.weights >= 1.0 / n).all())  # v ≥ u
    mean = g.mean(dim=1)
    if bool((g.T @ mean >= 0.0).all()):
        torch.testing.assert_close(d, mean, rtol=1e-10, atol=1e-14)


def test_dualproj_preferences_and_bad_options() -> None:
    q = torch.eye(3, dtype=torch.float64)  # orthogonal gradients: nothing conflicts
    w, result = dualproj_weights(q, task_weights=[0.5, 0.25, 0.25])
    torch.testing.assert_close(w, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    assert result.status is SolveStatus.OPTIMAL
    with pytest.raises(ValueError, match="task_weights"):
        DualProjBalancer(2, task_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="task_weights"):
        DualProjBalancer(2, task_weights=[1.0])


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_dualproj_matches_torchjd(n: int) -> None:
    """TorchJD's ``DualProjWeighting`` with its quadprog projector at ``reg_eps=0`` (quadprog on
    the exact, trace-normalised Gramian) gives the same weights, to quadprog's accuracy."""
    pytest.importorskip("qpsolvers")
    pytest.importorskip("quadprog")
    aggregation = pytest.importorskip("torchjd.aggregation")
    linalg = pytest.importorskip("torchjd.linalg")
    theirs = aggregation.DualProjWeighting(projector=linalg.QuadprogProjector(reg_eps=0.0))
    rng = np.random.default_rng(n)
    for _ in range(5):
        q = _random_gram(rng, n)
        ours, result = dualproj_weights(q)
        assert result.status is SolveStatus.OPTIMAL
        torch.testing.assert_close(ours, theirs(q), rtol=0, atol=1e-10 * float(ours.abs().max()))


# --------------------------------------------------------------------------- ConFIG


def test_config_by_hand() -> None:
    # g1 = (2, 0), g2 = (0, 1): unit gradients e1, e2; d̂ = (1, 1)/√2, length = (2 + 1)/√2,
    # d = (3/2, 3/2): weights (3/4, 3/2) on the raw losses
    theta, losses = _linear_losses([2.0, 0.0], [0.0, 1.0])
    info = ConFIGBalancer(2).backward(losses, [theta])
    torch.testing.assert_close(info.weights, torch.tensor([0.75, 1.5], dtype=torch.float64))
    torch.testing.assert_close(theta.grad, torch.tensor([1.5, 1.5], dtype=torch.float64))
    assert info.solve.status is SolveStatus.OPTIMAL
    torch.testing.assert_close(info.extras["cosine"], torch.full((2,), 0.5**0.5).double())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 5))
def test_config_has_equal_positive_cosines_with_independent_gradients(seed: int, n: int) -> None:
    p = toy_problem(seed=seed, num_objectives=n, width=8)
    b = ConFIGBalancer(n)
    g = b.gradients(p.losses(), p.shared()).matrix()
    info = b.backward(p.losses(), p.shared())
    assert info.solve.status is SolveStatus.OPTIMAL  # random gradients in 100+ dims: independent
    assert info.solve.kkt_residual < 1e-12
    d = g @ info.weights
    cos = (g.T @ d) / (g.norm(dim=0) * d.norm())
    assert float(cos.min()) > 0.0
    torch.testing.assert_close(cos, cos.mean().expand(n), rtol=1e-9, atol=0)
    torch.testing.assert_close(info.extras["cosine"], cos, rtol=1e-9, atol=0)
    # the length: the sum of the gradients' projections on the unit direction
    torch.testing.assert_close(d.norm(), (g.T @ d).sum() / d.norm(), rtol=1e-10, atol=0)


def test_config_preferences_set_the_cosines_ratios() -> None:
    rng = np.random.default_rng(1)
    g = torch.tensor(rng.standard_normal((32, 3)))
    w, result = config_weights(g.T @ g, task_weights=[1.0, 2.0, 3.0])
    d = g @ w
    cos = (g.T @ d) / (g.norm(dim=0) * d.norm())
    torch.testing.assert_close(cos / cos[0], torch.tensor([1.0, 2.0, 3.0]).double())
    assert result.status is SolveStatus.OPTIMAL


@pytest.mark.parametrize(
    ("rows", "status"),
    [
        ([[1.0, 0, 0], [1, 0, 0], [0, 1, 0]], SolveStatus.DEGENERATE),  # duplicate: still equal
        ([[2.0, 1, 0], [4, 2, 0], [0, 1, 0]], SolveStatus.DEGENERATE),  # parallel
        ([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0]], SolveStatus.INFEASIBLE),  # opposed
        ([[1.0, 0, 0], [0, 0, 0], [0, 1, 0]], SolveStatus.INFEASIBLE),  # a zero gradient
        ([[1.0, 0], [-1, 0]], SolveStatus.INFEASIBLE),  # d = 0
    ],
)
def test_config_singular_gramians_are_reported_and_match_torchjd(
    rows: list[list[float]], status: SolveStatus
) -> None:
    aggregation = pytest.importorskip("torchjd.aggregation")
    g = torch.tensor(rows, dtype=torch.float64)  # rows are the gradients (TorchJD's matrix)
    w, result = config_weights(g @ g.T)
    assert result.status is status
    assert result.kkt_residual < 1e-14
    torch.testing.assert_close(g.T @ w, aggregation.ConFIG()(g), rtol=0, atol=1e-14)
    if status is SolveStatus.DEGENERATE:  # equal cosines with every gradient still hold
        d = g.T @ w
        cos = (g @ d) / (g.norm(dim=1) * d.norm())
        torch.testing.assert_close(cos, cos.mean().expand(len(rows)))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_config_matches_torchjd(n: int) -> None:
    """TorchJD's ``ConFIG`` (``pinv`` of the unit rows) gives the same direction, to rounding."""
    aggregation = pytest.importorskip("torchjd.aggregation")
    rng = np.random.default_rng(n)
    for _ in range(5):
        g = torch.tensor(rng.standard_normal((n, 64)) * 10.0 ** rng.uniform(-1, 1, size=(n, 1)))
        w, result = config_weights(g @ g.T)
        assert result.status is SolveStatus.OPTIMAL
        theirs = aggregation.ConFIG()(g)
        torch.testing.assert_close(g.T @ w, theirs, rtol=0, atol=1e-13 * float(theirs.abs().max()))


def test_config_bad_options() -> None:
    with pytest.raises(ValueError, match="task_weights"):
        ConFIGBalancer(2, task_weights=[1.0, float("nan")])
    with pytest.raises(ValueError, match="preferences"):
        solve_config(np.eye(2), np.ones(3))
    with pytest.raises(ValueError, match="rcond"):
        solve_config(np.eye(2), rcond=-1.0)


# --------------------------------------------------------------------------- FairGrad


def test_fairgrad_orthogonal_gradients_by_hand() -> None:
    # Q = diag(qᵢ): qᵢwᵢ = wᵢ^(−1/α) gives wᵢ = qᵢ^(−α/(α+1)); α = 2, q = (9, 1, 1/4)
    theta, losses = _linear_losses([3.0, 0, 0], [0, 1.0, 0], [0, 0, 0.5])
    info = FairGradBalancer(3).backward(losses, [theta])
    q = torch.tensor([9.0, 1.0, 0.25], dtype=torch.float64)
    torch.testing.assert_close(info.weights, q ** (-2.0 / 3.0), rtol=1e-12, atol=0)
    torch.testing.assert_close(info.extras["improvement"], q * q ** (-2.0 / 3.0))
    assert info.solve.status is SolveStatus.OPTIMAL


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(2, 5),
    alpha=st.sampled_from([0.5, 1.0, 2.0, 5.0]),
)
def test_fairgrad_fixed_point_holds(seed: int, n: int, alpha: float) -> None:
    p = toy_problem(seed=seed, num_objectives=n, width=8, scales=[10.0**k for k in range(n)])
    b = FairGradBalancer(n, alpha=alpha)
    gram = b.gradients(p.losses(), p.shared()).gramian()
    info = b.backward(p.losses(), p.shared())
    assert info.solve.status is SolveStatus.OPTIMAL
    assert info.solve.kkt_residual <= 1e-12
    w = info.weights
    assert bool((w > 0).all())
    torch.testing.assert_close(gram @ w, w ** (-1.0 / alpha), rtol=1e-9, atol=0)


@pytest.mark.parametrize("n", [2, 3, 5, 8])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
def test_solve_fairgrad_matches_scipy_least_squares(n: int, alpha: float) -> None:
    """scipy's ``least_squares`` on ``Qw − w^(−1/α)`` (FairGrad's code, at tight tolerances)
    lands on the same root."""
    from scipy.optimize import least_squares

    rng = np.random.default_rng(n)
    for _ in range(3):
        q = _random_gram(rng, n).numpy()
        result = solve_fairgrad(q, alpha)
        assert result.status is SolveStatus.OPTIMAL and result.kkt_residual <= 1e-12
        ref = least_squares(
            lambda x, q=q: q @ x - x ** (-1.0 / alpha),
            np.full(n, 1.0 / n),
            bounds=(0, np.inf),
            xtol=1e-15,
            ftol=1e-15,
            gtol=1e-15,
        ).x
        w = result.weights.numpy()
        np.testing.assert_allclose(w, ref, rtol=1e-8)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_fairgrad_matches_torchjd_and_nash_at_alpha_1(n: int) -> None:
    aggregation = pytest.importorskip("torchjd.aggregation")
    rng = np.random.default_rng(10 + n)
    for alpha in (1.0, 2.0):
        q = _random_gram(rng, n)
        ours, result = fairgrad_weights(q, alpha=alpha)
        theirs = aggregation.FairGradWeighting(alpha=alpha)(q)  # least_squares, its tolerances
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    torch.testing.assert_close(solve_fairgrad(q, 1.0).weights, solve_nash(q).weights)


def test_fairgrad_tends_to_the_max_min_direction_as_alpha_grows() -> None:
    """The worst normalised improvement ``minᵢ gᵢ·d/|d|`` grows with α towards its largest value,
    that of MGDA's min-norm direction (the max-min fair one), and d turns towards it; at α = 1
    FairGrad is Nash-MTL, far from it."""
    rng = np.random.default_rng(3)
    g = torch.tensor((rng.standard_normal((32, 4)) + 1.0) * 10.0 ** rng.uniform(-0.5, 0.5, 4))
    q = g.T @ g
    wm, _ = mgda_weights(q)
    dm = g @ wm
    best = float(dm.norm())  # minᵢ gᵢ·d*/|d*| = |d*| at the min-norm point d* of the hull
    worst, cosines = [], []
    for alpha in (0.5, 1.0, 2.0, 5.0, 20.0, 100.0):
        w, result = fairgrad_weights(q, alpha=alpha)
        assert result.status is SolveStatus.OPTIMAL
        d = g @ w
        worst.append(float((g.T @ d).min() / d.norm()))
        cosines.append(float(d @ dm / (d.norm() * dm.norm())))
    assert all(a < b for a, b in zip(worst, worst[1:]))
    assert all(a < b for a, b in zip(cosines, cosines[1:]))
    assert worst[-1] <= best * (1 + 1e-12)
    assert worst[1] < 0.95 * best and worst[-1] > (1 - 1e-4) * best and cosines[-1] > 0.9999


def test_fairgrad_equalises_improvements_when_mgda_uses_every_gradient() -> None:
    # nearly orthogonal gradients: the max-min direction improves every objective equally
    rng = np.random.default_rng(0)
    g = torch.tensor(np.eye(6, 3) * [1.0, 3.0, 10.0] + 0.05 * rng.standard_normal((6, 3)))
    ratios = []
    for alpha in (1.0, 5.0, 50.0):
        extras: dict[str, torch.Tensor] = {}
        fairgrad_weights(g.T @ g, alpha=alpha, extras=extras)
        ratios.append(float(extras["improvement"].max() / extras["improvement"].min()))
    assert ratios[0] > 2.0 and ratios[1] < ratios[0] and ratios[2] < 1.2


def test_fairgrad_blocked_objectives_and_bad_options() -> None:
    q = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 4.0]], dtype=torch.float64)
    result = solve_fairgrad(q, 2.0)  # g1 = −g2: blocked; g3 alone: 4w = w^(−1/2)
    assert result.status is SolveStatus.INFEASIBLE
    torch.testing.assert_close(
        result.weights, torch.tensor([0.0, 0.0, 4.0 ** (-2.0 / 3.0)], dtype=torch.float64)
    )
    for bad in (0.0, -1.0, float("inf"), float("nan"), True, "2"):
        with pytest.raises(ValueError, match="alpha"):
            FairGradBalancer(2, alpha=bad)
    with pytest.raises(ValueError, match="alpha"):
        solve_fairgrad(np.eye(2), 0.0)
    with pytest.raises(ValueError, match="max_iter"):
        FairGradBalancer(2, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        FairGradBalancer(2, tol=0.0)
