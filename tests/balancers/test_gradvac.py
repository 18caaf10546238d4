"""GradVac (issue 20): agreement with TorchJD's ``GradVacWeighting`` over several steps, the
promised cosine after every vaccination (against a reference on the gradient vectors), PCGrad's
projection at target 0, zero and extreme cases, state round trip, seeds and bad options."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moo_opt import GradVacBalancer, create
from moo_opt.balancers.gradvac import gradvac
from moo_opt.weightings import pcgrad_weights


def _linear_losses(g: np.ndarray) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Losses ``gᵢ·θ`` at θ = 0 for the columns of ``g`` (dim × N): their gradients are exactly
    those columns."""
    theta = torch.zeros(g.shape[0], dtype=torch.float64, requires_grad=True)
    return theta, [torch.tensor(col) @ theta + 1.0 for col in g.T]


def _step(balancer: GradVacBalancer, g: np.ndarray):  # noqa: ANN202
    theta, losses = _linear_losses(g)
    return balancer.backward(losses, [theta])


def _random_g(rng: np.random.Generator, n: int, dim: int = 64) -> np.ndarray:
    """dim × N gradients with norms over two decades (correlated, so that some pairs conflict
    and some agree)."""
    base = rng.standard_normal(dim)
    g = rng.standard_normal((dim, n)) + rng.uniform(-1, 1, size=n) * base[:, None]
    return g * 10.0 ** rng.uniform(-1, 1, size=n)


def _orders(generator: torch.Generator, n: int) -> list[list[int]]:
    """The orders :func:`gradvac` draws from ``generator`` (from a copy of its state)."""
    copy = torch.Generator().manual_seed(0)
    copy.set_state(generator.get_state())
    orders = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        orders.append([others[k] for k in torch.randperm(n - 1, generator=copy).tolist()])
    return orders


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _reference(
    g: np.ndarray, targets: np.ndarray, beta: float, orders: list[list[int]]
) -> tuple[np.ndarray, np.ndarray, int]:
    """The paper's rule on the gradient vectors themselves (columns of ``g``), checking after
    every vaccination that ``cos(g_i^GV, g_j)`` is the target used. Returns the direction, the
    updated targets and the number of vaccinations."""
    targets = targets.copy()
    direction = np.zeros(g.shape[0])
    count = 0
    for i, order in enumerate(orders):
        gv = g[:, i].copy()
        for j in order:
            phi, target = _cos(gv, g[:, j]), targets[i, j]
            if phi < target:
                gv = gv + (
                    np.linalg.norm(gv)
                    * (target * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - target**2))
                    / (np.linalg.norm(g[:, j]) * math.sqrt(1 - target**2))
                    * g[:, j]
                )
                assert abs(_cos(gv, g[:, j]) - target) <= 1e-10, (i, j, target)
                count += 1
            targets[i, j] = (1 - beta) * target + beta * phi
        direction += gv
    return direction, targets, count


# --------------------------------------------------------------------------- TorchJD


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_matches_torchjd_over_steps(n: int) -> None:
    """TorchJD 0.18's ``GradVacWeighting`` draws each order with ``torch.randperm(N - 1)`` from
    the global RNG, as ours does from its own generator: seeding both with the same seed gives the
    same orders at every step. With ``eps=0`` TorchJD computes exactly what we do (same weights
    and targets, to rounding); with its default ``eps=1e-8`` added to two denominators, its
    weights differ from ours by about 1e-8 relative (gradients of norm 1 to 100 here)."""
    torchjd = pytest.importorskip("torchjd.aggregation")
    rng = np.random.default_rng(n)
    gs = [_random_g(rng, n) for _ in range(8)]
    for eps, tol in ((0.0, 1e-12), (1e-8, 1e-6)):
        torch.manual_seed(11)
        theirs = torchjd.GradVacWeighting(beta=0.5, eps=eps)
        ours = GradVacBalancer(n, beta=0.5, seed=11)
        vaccinations = 0.0
        for g in gs:
            q = torch.tensor(g.T @ g)
            w_jd = theirs(q)
            theta, losses = _linear_losses(g)
            info = ours.backward(losses, [theta])
            vaccinations += float(info.extras["vaccinations"])
            scale = float(info.weights.abs().max())
            assert float((info.weights - w_jd).abs().max()) <= tol * scale, (eps, info.weights)
            assert float((ours.targets - theirs._phi_t).abs().max()) <= tol
            torch.testing.assert_close(theta.grad, torch.tensor(g) @ info.weights)
        assert vaccinations > 0  # the targets moved and the surgery acted


# --------------------------------------------------------------------------- the promise


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 6), beta=st.sampled_from([0.01, 0.5, 1.0]))
def test_every_vaccination_reaches_its_target(seed: int, n: int, beta: float) -> None:
    """Against the rule on the vectors (which checks ``cos(g_i^GV, g_j) = φ̂_ij`` to 1e-10 after
    each vaccination): the same direction, targets and count, from random targets in (-1, 1)."""
    rng = np.random.default_rng(seed)
    g = _random_g(rng, n, dim=16)
    targets = rng.uniform(-0.99, 0.99, size=(n, n))
    np.fill_diagonal(targets, 0.0)
    generator = torch.Generator().manual_seed(seed)
    orders = _orders(generator, n)
    step = gradvac(torch.tensor(g.T @ g), torch.tensor(targets), beta, generator)
    direction, new_targets, count = _reference(g, targets, beta, orders)
    scale = np.abs(g).max() * float(step.coefficients.abs().max())
    np.testing.assert_allclose(g @ step.weights.numpy(), direction, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(step.targets.numpy(), new_targets, rtol=0, atol=1e-12)
    assert step.vaccinations == count and step.unreachable == 0


def test_two_objectives_by_hand() -> None:
    """g1 = (1, 0), g2 = (-1, 1) with targets 1/2: cos = -1/√2 < 1/2 both ways; after the
    vaccination each modified gradient makes 60° with the other one."""
    g = np.array([[1.0, -1.0], [0.0, 1.0]])
    b = GradVacBalancer(2)
    b.targets = torch.tensor([[0.0, 0.5], [0.5, 0.0]], dtype=torch.float64)
    step = gradvac(torch.tensor(g.T @ g), b.targets, b.beta, b.generator)
    for i, j in ((0, 1), (1, 0)):
        assert _cos(g @ step.coefficients[i].numpy(), g[:, j]) == pytest.approx(0.5, abs=1e-14)
    phi = -1 / math.sqrt(2)
    expected = torch.tensor([[0.0, 0.25 + 0.5 * phi], [0.25 + 0.5 * phi, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(step.targets, expected, rtol=0, atol=1e-15)
    assert step.vaccinations == 2


# --------------------------------------------------------------------------- PCGrad at target 0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 6))
def test_target_zero_is_pcgrads_projection(seed: int, n: int) -> None:
    """With the targets at 0 (the first step), a vaccination adds
    ``-|g_i^GV| φ / |g_j| g_j = -(g_i^GV·g_j)/|g_j|² g_j`` when ``φ < 0``: PCGrad's projection, on
    the same condition. For N = 2 (one order) it is :func:`pcgrad_weights` itself; for any N, the
    PCGrad rule on the vectors with the same orders."""
    rng = np.random.default_rng(seed)
    g = _random_g(rng, n, dim=16)
    q = torch.tensor(g.T @ g)
    generator = torch.Generator().manual_seed(seed)
    orders = _orders(generator, n)
    w = GradVacBalancer(n, seed=seed)._weights(torch.zeros(n, dtype=torch.float64), q)[0]
    direction = np.zeros(g.shape[0])
    for i, order in enumerate(orders):
        gv = g[:, i].copy()
        for j in order:
            dot = gv @ g[:, j]
            if dot < 0:
                gv = gv - dot / (g[:, j] @ g[:, j]) * g[:, j]
        direction += gv
    scale = np.abs(direction).max() + np.abs(g).max()
    np.testing.assert_allclose(g @ w.numpy(), direction, rtol=0, atol=1e-11 * scale)
    if n == 2:
        torch.testing.assert_close(w, pcgrad_weights(q)[0], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- edge cases


def test_zero_gradient_is_skipped_and_its_targets_kept() -> None:
    g = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, 0.0]])  # g3 = 0
    b = GradVacBalancer(3, seed=1)
    theta, losses = _linear_losses(g)
    info = b.backward(losses, [theta])
    assert torch.isfinite(info.weights).all()
    assert float(b.targets[:, 2].abs().max()) == 0.0 and float(b.targets[2].abs().max()) == 0.0
    assert float(b.targets[0, 1]) == pytest.approx(0.5 * -1 / math.sqrt(2))
    # what is left is PCGrad on g1, g2, and g3's coefficient stays 1 (its gradient is zero)
    torch.testing.assert_close(info.weights, torch.tensor([2.0, 1.5, 1.0], dtype=torch.float64))


def test_opposite_gradients_cancel_and_the_cancelled_gradient_has_no_cosine() -> None:
    """g2 = -2 g1: the vaccination of g1 (φ = -1, target 0) leaves exactly zero (PCGrad's
    projection), and a zero g_1^GV is not vaccinated further by g3."""
    g = np.array([[1.0, -2.0, 0.0], [0.0, 0.0, 1.0]])
    b = GradVacBalancer(3, seed=0)
    b.targets = torch.tensor(
        [[0.0, 0.0, 0.9], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64
    )
    step = gradvac(torch.tensor(g.T @ g), b.targets, b.beta, torch.Generator().manual_seed(3))
    assert _orders(torch.Generator().manual_seed(3), 3)[0] == [1, 2]  # g2 first, then g3
    np.testing.assert_allclose(g @ step.coefficients[0].numpy(), 0.0, atol=1e-15)
    assert float(step.targets[0, 2]) == 0.9  # no cosine with a zero vector: target kept
    assert torch.isfinite(step.weights).all()


def test_targets_of_plus_or_minus_one_give_finite_weights() -> None:
    """A target of 1 cannot be reached by a finite vaccination: the pair is left as it is and
    counted; a target of -1 is never above a cosine."""
    rng = np.random.default_rng(0)
    g = _random_g(rng, 3)
    q = torch.tensor(g.T @ g)
    for value, unreachable in ((1.0, 6), (-1.0, 0)):
        targets = torch.full((3, 3), value, dtype=torch.float64)
        step = gradvac(q, targets, 0.5, torch.Generator().manual_seed(0))
        assert torch.equal(step.weights, torch.ones(3, dtype=torch.float64))
        assert step.unreachable == unreachable and step.vaccinations == 0
    # just below 1: reached, with large but finite coefficients
    targets = torch.full((3, 3), 1.0 - 1e-12, dtype=torch.float64)
    step = gradvac(q, targets, 0.5, torch.Generator().manual_seed(0))
    assert torch.isfinite(step.weights).all() and step.vaccinations > 0


def test_parallel_gradients_stay_finite_as_their_targets_approach_one() -> None:
    g = np.array([[1.0, 3.0], [2.0, 6.0]])  # g2 = 3 g1: φ = 1 up to rounding
    b = GradVacBalancer(2, beta=1.0)
    for _ in range(5):
        theta, losses = _linear_losses(g)
        info = b.backward(losses, [theta])
        assert torch.isfinite(info.weights).all() and torch.isfinite(theta.grad).all()
        torch.testing.assert_close(info.weights, torch.ones(2, dtype=torch.float64))


# --------------------------------------------------------------------------- state, seeds, info


def test_state_round_trip_mid_run_is_bit_identical() -> None:
    rng = np.random.default_rng(1)
    gs = [_random_g(rng, 4) for _ in range(6)]
    a = GradVacBalancer(4, beta=0.3, seed=5)
    for g in gs[:3]:
        _step(a, g)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = create("gradvac", 4)
    b.load_state_dict(torch.load(buffer, weights_only=False))
    assert b.beta == 0.3 and torch.equal(b.targets, a.targets)
    for g in gs[3:]:
        wa = _step(a, g).weights
        wb = _step(b, g).weights
        assert torch.equal(wa, wb)
    assert torch.equal(a.targets, b.targets)
    bad = a.state_dict()
    bad["state"]["targets"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="'targets' must be a tensor of shape \\(4, 4\\)"):
        b.load_state_dict(bad)


def test_the_seed_fixes_the_orders() -> None:
    rng = np.random.default_rng(2)
    gs = [_random_g(rng, 5) for _ in range(6)]

    def run(seed: int) -> list[torch.Tensor]:
        b = GradVacBalancer(5, seed=seed)
        return [_step(b, g).weights for g in gs]

    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert any(not torch.allclose(x, y) for x, y in zip(first, other))


def test_info_extras() -> None:
    g = np.array([[1.0, -1.0], [0.0, 1.0]])
    b = GradVacBalancer(2)
    theta, losses = _linear_losses(g)
    info = b.backward(losses, [theta])
    flat = info.as_dict(["a", "b"])
    assert flat["vaccinations"] == 2.0 and flat["unreachable"] == 0.0
    assert flat["target_mean"] == pytest.approx(0.5 * -1 / math.sqrt(2))
    one = _step(GradVacBalancer(1), np.ones((3, 1)))
    assert float(one.extras["target_mean"]) == 0.0 and torch.equal(
        one.weights, torch.ones(1).double()
    )


@pytest.mark.parametrize("beta", [0.0, -0.1, 1.5, float("nan"), float("inf"), True, "0.5", None])
def test_bad_beta_is_a_value_error(beta: object) -> None:
    with pytest.raises(ValueError, match=r"beta must be a finite number in \(0, 1\]"):
        GradVacBalancer(2, beta=beta)  # type: ignore[arg-type]
