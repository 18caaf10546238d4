"""Hand cases and promised invariances of the well-known balancers (issue 9): IMTL-G, DWA, RLW."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moo_opt import DWABalancer, IMTLGBalancer, RLWBalancer, balanced_step
from moo_opt.solvers import SolveStatus
from tests.helpers.models import toy_problem


def _linear_losses(*gradients: list[float]):
    """Losses ``gᵢ·θ`` at θ = 0: their gradients are exactly the given vectors."""
    theta = torch.zeros(len(gradients[0]), dtype=torch.float64, requires_grad=True)
    return theta, [torch.tensor(g, dtype=torch.float64) @ theta + 1.0 for g in gradients]


def test_imtl_g_two_orthogonal_gradients_by_hand() -> None:
    # g1 = (3, 0), g2 = (0, 1): d = (3α1, α2) projects 3α1 on u1 and α2 on u2; equal with α1+α2 = 1
    theta, losses = _linear_losses([3.0, 0.0], [0.0, 1.0])
    info = IMTLGBalancer(2).backward(losses, [theta])
    torch.testing.assert_close(
        info.weights, torch.tensor([0.25, 0.75], dtype=torch.float64), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(theta.grad, torch.tensor([0.75, 0.75], dtype=torch.float64))
    assert info.solve.status is SolveStatus.OPTIMAL


def test_imtl_g_three_gradients_by_hand() -> None:
    # g1 = (1,0,0), g2 = (0,2,0), g3 = (0,0,4): equal projections 1·α1 = 2α2 = 4α3 → α ∝ (4, 2, 1)
    theta, losses = _linear_losses([1.0, 0, 0], [0, 2.0, 0], [0, 0, 4.0])
    info = IMTLGBalancer(3).backward(losses, [theta])
    torch.testing.assert_close(
        info.weights, torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64) / 7, rtol=1e-12, atol=0
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 4))
def test_imtl_g_projections_on_unit_gradients_are_equal(seed: int, n: int) -> None:
    p = toy_problem(seed=seed, num_objectives=n, width=8)
    b = IMTLGBalancer(n)
    g = b.gradients(p.losses(), p.shared()).matrix()
    info = b.backward(p.losses(), p.shared())
    d = g @ info.weights
    proj = (g / g.norm(dim=0)).T @ d
    assert float(info.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    if info.solve.status is SolveStatus.OPTIMAL:
        torch.testing.assert_close(
            proj, proj.mean().expand(n), rtol=1e-8, atol=1e-12 * float(d.norm())
        )


def test_dwa_weights_follow_the_loss_ratios_of_the_last_two_periods() -> None:
    p = toy_problem(num_objectives=2, scales=[1.0, 1.0])
    b = DWABalancer(2, temperature=2.0, period=2)
    opt = torch.optim.SGD(p.all_parameters(), lr=0.05)
    seen, weights = [], []
    for _ in range(8):
        info = balanced_step(b, opt, p.losses, p.shared())
        seen.append(info.losses)
        weights.append(info.weights)
    for w in weights[:4]:  # the first two periods: ones
        assert torch.equal(w, torch.ones(2, dtype=torch.float64))
    means = [torch.stack(seen[i : i + 2]).mean(0) for i in (0, 2, 4)]
    for step, (before, last) in ((4, means[:2]), (6, means[1:])):
        expected = 2 * torch.softmax((last / before) / 2.0, dim=0)
        torch.testing.assert_close(weights[step], expected, rtol=1e-12, atol=0)
        torch.testing.assert_close(weights[step + 1], expected, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="temperature"):
        DWABalancer(2, temperature=0.0)
    with pytest.raises(ValueError, match="period"):
        DWABalancer(2, period=0)


def test_rlw_draws_softmax_normal_weights_from_its_own_seeded_generator() -> None:
    p = toy_problem(num_objectives=3)
    global_state = torch.get_rng_state()
    b = RLWBalancer(3, seed=7)
    draws = [b.backward(p.losses(), p.shared()).weights for _ in range(4)]
    gen = torch.Generator().manual_seed(7)
    for w in draws:
        torch.testing.assert_close(
            w, torch.softmax(torch.randn(3, generator=gen, dtype=torch.float64), 0), rtol=0, atol=0
        )
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-12) and bool((w > 0).all())
    assert not torch.equal(draws[0], draws[1])
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is never drawn from


def test_famo_matches_its_update_rule_written_with_autograd_and_torch_adam() -> None:
    """FAMO's rule as its paper states it: d = ∂softmax(w)/∂w ᵀ δ, then Adam(lr, weight_decay=γ)
    on w."""
    from moo_opt import FAMOBalancer

    p = toy_problem(num_objectives=3)
    b = FAMOBalancer(3)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-3)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    w_opt = torch.optim.Adam([w], lr=0.025, weight_decay=0.01)
    for _ in range(5):
        before = torch.stack([loss.detach() for loss in p.losses()])
        z = torch.softmax(w.detach(), 0)
        info = balanced_step(b, opt, p.losses, p.shared())
        coeff = z / (before + 1e-8)
        torch.testing.assert_close(info.weights, coeff / coeff.sum(), rtol=1e-10, atol=0)
        after = torch.stack([loss.detach() for loss in p.losses()])
        delta = torch.log(before + 1e-8) - torch.log(after + 1e-8)
        (w.grad,) = torch.autograd.grad(torch.softmax(w, 0), w, grad_outputs=delta)
        w_opt.step()
        torch.testing.assert_close(b.logits, w.detach(), rtol=1e-10, atol=1e-14)


def test_uncertainty_weighting_learns_like_torch_adam_on_its_objective() -> None:
    """Σ exp(−sᵢ) Lᵢ + sᵢ minimised over s by torch.optim.Adam (with autograd), step for step."""
    from moo_opt import UncertaintyWeighting

    p = toy_problem(num_objectives=2)
    b = UncertaintyWeighting(2, lr=0.05)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-3)
    s = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    s_opt = torch.optim.Adam([s], lr=0.05)
    for _ in range(6):
        values = torch.stack([loss.detach() for loss in p.losses()])
        info = balanced_step(b, opt, p.losses, p.shared())
        torch.testing.assert_close(info.weights, torch.exp(-s.detach()), rtol=1e-12, atol=0)
        s_opt.zero_grad()
        (torch.exp(-s) * values + s).sum().backward()
        s_opt.step()
        torch.testing.assert_close(b.log_variance, s.detach(), rtol=1e-10, atol=1e-14)
    # the larger loss (scale 100) gets the larger variance, i.e. the smaller weight
    assert float(b.log_variance[1]) > float(b.log_variance[0]) and float(info.weights[1]) < float(
        info.weights[0]
    )
    with pytest.raises(ValueError, match="lr"):
        UncertaintyWeighting(2, lr=0.0)


def test_pcgrad_two_conflicting_gradients_by_hand() -> None:
    # g1 = (1, 0), g2 = (-1, 1) conflict (g1·g2 = -1): g1' = g1 + g2/2 = (.5, .5),
    # g2' = g2 + g1 = (0, 1)
    from moo_opt import PCGradBalancer

    theta, losses = _linear_losses([1.0, 0.0], [-1.0, 1.0])
    info = PCGradBalancer(2).backward(losses, [theta])
    torch.testing.assert_close(info.weights, torch.tensor([2.0, 1.5], dtype=torch.float64))
    torch.testing.assert_close(theta.grad, torch.tensor([0.5, 1.5], dtype=torch.float64))
    assert float(info.extras["projections"]) == 2.0
    # no conflict: the plain sum
    theta, losses = _linear_losses([1.0, 0.0], [1.0, 1.0])
    assert torch.equal(
        PCGradBalancer(2).backward(losses, [theta]).weights, torch.ones(2, dtype=torch.float64)
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_pcgrad_removes_the_conflicting_component_for_two_objectives(seed: int) -> None:
    from moo_opt import PCGradBalancer

    p = toy_problem(seed=seed, num_objectives=2, width=6)
    b = PCGradBalancer(2, seed=seed)
    g = b.gradients(p.losses(), p.shared()).matrix()
    q = g.T @ g
    w, _ = b.surgery(q)
    projected = [
        g[:, 0] - min(0.0, float(q[0, 1])) / float(q[1, 1]) * g[:, 1],
        g[:, 1] - min(0.0, float(q[0, 1])) / float(q[0, 0]) * g[:, 0],
    ]
    torch.testing.assert_close(
        g @ w, projected[0] + projected[1], rtol=1e-10, atol=1e-12 * float(g.abs().max())
    )
    if float(q[0, 1]) < 0:  # each projected gradient is orthogonal to the other original one
        assert abs(float(projected[0] @ g[:, 1])) <= 1e-9 * float(g.norm()) ** 2
        assert abs(float(projected[1] @ g[:, 0])) <= 1e-9 * float(g.norm()) ** 2


def test_aligned_mtl_two_orthogonal_gradients_by_hand() -> None:
    # g1 = (2, 0), g2 = (0, 1): Q = diag(4, 1), σ = 1, B = diag(1/2, 1); the aligned gradients are
    # e1 and e2, and with u = (1/2, 1/2) the weights are B u = (1/4, 1/2), d = (1/2, 1/2)
    from moo_opt import AlignedMTLBalancer

    theta, losses = _linear_losses([2.0, 0.0], [0.0, 1.0])
    info = AlignedMTLBalancer(2).backward(losses, [theta])
    torch.testing.assert_close(
        info.weights, torch.tensor([0.25, 0.5], dtype=torch.float64), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        theta.grad, torch.tensor([0.5, 0.5], dtype=torch.float64), rtol=1e-12, atol=0
    )
    assert info.solve.status is SolveStatus.OPTIMAL
    theta, losses = _linear_losses([2.0, 0.0], [0.0, 1.0])
    median = AlignedMTLBalancer(2, scale="rmse", task_weights=[1.0, 1.0]).backward(losses, [theta])
    torch.testing.assert_close(
        median.weights, (2.5**0.5) * torch.tensor([0.5, 1.0], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="task_weights"):
        AlignedMTLBalancer(2, task_weights=[1.0])
    with pytest.raises(ValueError, match="scale"):
        AlignedMTLBalancer(2, scale="max")


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(2, 5),
    scale=st.sampled_from(["min", "median", "rmse"]),
)
def test_aligned_mtl_aligns_into_orthogonal_equal_norm_components(
    seed: int, n: int, scale: str
) -> None:
    """Ĝ = G B has ĜᵀĜ = σ²I (condition number 1); the weights are TorchJD's
    AlignedMTLWeighting's."""
    from torchjd.aggregation import AlignedMTLWeighting

    from moo_opt import AlignedMTLBalancer
    from moo_opt.solvers.alignment import balance_transform

    p = toy_problem(seed=seed, num_objectives=n, width=8, scales=[1.0 + i for i in range(n)])
    b = AlignedMTLBalancer(n, scale=scale)
    g = b.gradients(p.losses(), p.shared()).matrix()
    q = g.T @ g
    result = balance_transform(q, scale=scale)
    aligned = g @ result.weights
    gram = aligned.T @ aligned
    sigma2 = float(gram.diagonal().mean())
    torch.testing.assert_close(
        gram,
        sigma2 * torch.eye(n, dtype=torch.float64),
        rtol=0,
        atol=1e-12 * result.condition * sigma2,
    )
    assert result.kkt_residual <= 1e-12 * result.condition and result.status is SolveStatus.OPTIMAL
    lam = torch.linalg.eigvalsh(q)
    expected = {"min": lam.min(), "median": lam.median(), "rmse": lam.mean()}[scale]
    # torch's median of an even count is the lower middle, numpy's the mean
    if scale != "median" or n % 2 == 1:
        assert sigma2 == pytest.approx(float(expected), rel=1e-8)
    info = b.backward(p.losses(), p.shared())
    if scale != "median":
        torch.testing.assert_close(
            info.weights, AlignedMTLWeighting(scale_mode=scale)(q), rtol=1e-7, atol=1e-12
        )


def test_gradnorm_matches_its_update_rule_written_with_autograd_and_torch_adam() -> None:
    """GradNorm as the paper states it: L_grad = Σ|wᵢ‖∇Lᵢ‖ − Ḡ rᵢ^α| with a constant target,
    differentiated by autograd through wᵢ‖∇(wᵢLᵢ)‖, one torch Adam step, renormalise to Σw = N."""
    from moo_opt import GradNormBalancer

    p = toy_problem(num_objectives=3, scales=[1.0, 10.0, 0.1])
    b = GradNormBalancer(3, alpha=1.5, lr=0.025)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-2)
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    w_opt = torch.optim.Adam([w], lr=0.025)
    initial = None
    for _ in range(6):
        losses = p.losses()
        values = torch.stack([loss.detach() for loss in losses])
        initial = values if initial is None else initial
        norms = torch.stack(
            [
                torch.cat(
                    [
                        gr.reshape(-1)
                        for gr in torch.autograd.grad(
                            w[i] * losses[i], p.shared(), create_graph=True
                        )
                    ]
                ).norm()
                for i in range(3)
            ]
        )
        ratio = values / initial
        target = (norms.mean() * (ratio / ratio.mean()) ** 1.5).detach()
        expected_weights = w.detach().clone()
        w_opt.zero_grad()
        (norms - target).abs().sum().backward(inputs=[w])
        w_opt.step()
        with torch.no_grad():
            w.mul_(3 / w.sum())
        info = balanced_step(b, opt, p.losses, p.shared())
        torch.testing.assert_close(info.weights, expected_weights, rtol=1e-10, atol=0)
        torch.testing.assert_close(b.loss_weights, w.detach(), rtol=1e-10, atol=1e-14)
    assert float(b.loss_weights.sum()) == pytest.approx(3.0, abs=1e-12)
    # the objective of scale 10 (largest gradient) loses weight
    assert float(b.loss_weights[1]) < 1.0
    for bad in ({"alpha": -1.0}, {"lr": 0.0}, {"min_weight": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GradNormBalancer(2, **bad)


def test_nash_mtl_two_orthogonal_gradients_by_hand() -> None:
    # g1 = (3, 0), g2 = (0, 1): Qα = 1/α gives 9α1 = 1/α1, α2 = 1/α2 → α = (1/3, 1), d = (1, 1)
    from moo_opt import NashMTLBalancer

    theta, losses = _linear_losses([3.0, 0.0], [0.0, 1.0])
    info = NashMTLBalancer(2).backward(losses, [theta])
    torch.testing.assert_close(
        info.weights, torch.tensor([1 / 3, 1.0], dtype=torch.float64), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        theta.grad, torch.tensor([1.0, 1.0], dtype=torch.float64), rtol=1e-12, atol=0
    )
    assert info.solve.status is SolveStatus.OPTIMAL
    # the paper's code solves on Q/‖Q‖_F: the same direction, scaled by ‖Q‖_F^½ = (81 + 1)^¼
    theta, losses = _linear_losses([3.0, 0.0], [0.0, 1.0])
    scaled = NashMTLBalancer(2, normalization="frobenius").backward(losses, [theta])
    torch.testing.assert_close(scaled.weights, 82**0.25 * info.weights, rtol=1e-12, atol=0)
    # a zero gradient can not be improved: no bargaining solution, weight 0 and the status says so
    theta, losses = _linear_losses([3.0, 0.0], [0.0, 0.0])
    blocked = NashMTLBalancer(2).backward(losses, [theta])
    torch.testing.assert_close(
        blocked.weights, torch.tensor([1 / 3, 0.0], dtype=torch.float64), rtol=1e-12, atol=0
    )
    assert blocked.solve.status is SolveStatus.INFEASIBLE
    with pytest.raises(ValueError, match="normalization"):
        NashMTLBalancer(2, normalization="l2")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 5))
def test_nash_mtl_weights_satisfy_gtg_w_equals_one_over_w(seed: int, n: int) -> None:
    """The paper's optimality condition GᵀGα = 1/α, hence equal utilities αᵢ gᵢ·d = 1 and
    |d|² = N."""
    from moo_opt import NashMTLBalancer

    p = toy_problem(seed=seed, num_objectives=n, width=8, scales=[1.0 + i for i in range(n)])
    b = NashMTLBalancer(n)
    g = b.gradients(p.losses(), p.shared()).matrix()
    info = b.backward(p.losses(), p.shared())
    alpha = info.weights
    assert info.solve.status is SolveStatus.OPTIMAL and bool((alpha > 0).all())
    torch.testing.assert_close(g.T @ g @ alpha, 1.0 / alpha, rtol=1e-9, atol=0)
    d = g @ alpha
    assert float(d @ d) == pytest.approx(n, rel=1e-9)


def test_upgrad_two_conflicting_gradients_by_hand() -> None:
    # g1 = (1, 0), g2 = (-1, 1), Q = [[1, -1], [-1, 2]]. Projection of g1/2: v ≥ (1/2, 0) with
    # (Qv)_2 = -1/2 + 2t = 0 → v1 = (1/2, 1/4); of g2/2: v ≥ (0, 1/2), (Qv)_1 = s - 1/2 = 0 →
    # v2 = (1/2, 1/2). w = v1 + v2 = (1, 3/4), d = (1/4, 3/4): g1·d = 1/4 ≥ 0, g2·d = 1/2 ≥ 0
    from moo_opt import UPGradBalancer

    theta, losses = _linear_losses([1.0, 0.0], [-1.0, 1.0])
    info = UPGradBalancer(2).backward(losses, [theta])
    torch.testing.assert_close(
        info.weights, torch.tensor([1.0, 0.75], dtype=torch.float64), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        theta.grad, torch.tensor([0.25, 0.75], dtype=torch.float64), rtol=1e-12, atol=1e-15
    )
    torch.testing.assert_close(
        info.solve.weights, torch.tensor([[0.5, 0.25], [0.5, 0.5]], dtype=torch.float64)
    )
    assert info.solve.status is SolveStatus.OPTIMAL
    # no conflict: nothing to project, the preferences themselves
    theta, losses = _linear_losses([1.0, 0.0], [1.0, 1.0])
    plain = UPGradBalancer(2, task_weights=[1.0, 2.0]).backward(losses, [theta])
    torch.testing.assert_close(
        plain.weights, torch.tensor([1.0, 2.0], dtype=torch.float64), rtol=1e-12, atol=0
    )
    for bad in ([1.0, -1.0], 1.0, ["a", "b"]):
        with pytest.raises(ValueError, match="task_weights"):
            UPGradBalancer(2, task_weights=bad)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 5))
def test_upgrad_direction_has_a_non_negative_inner_product_with_every_gradient(
    seed: int, n: int
) -> None:
    from moo_opt import UPGradBalancer

    p = toy_problem(seed=seed, num_objectives=n, width=8)
    b = UPGradBalancer(n)
    g = b.gradients(p.losses(), p.shared()).matrix()
    info = b.backward(p.losses(), p.shared())
    d = g @ info.weights
    inner = g.T @ d
    assert bool((inner >= -1e-10 * g.norm(dim=0) * d.norm()).all()), inner
    assert info.solve.kkt_residual <= 1e-9
    # every projection keeps at least its own share
    assert bool((info.weights >= 1.0 / n - 1e-12).all())


def test_cagrad_two_orthogonal_gradients_by_hand() -> None:
    # g1 = (1, 0), g2 = (0, 1), c = 1/2: g0 = (1/2, 1/2), r = c|g0|; by symmetry w* = (1/2, 1/2),
    # g_w = g0, so d = g0 + c g0 = (3/4, 3/4): weights 3/4 each, divided by 1 + c² = 5/4 → 3/5
    from moo_opt import CAGradBalancer

    theta, losses = _linear_losses([1.0, 0.0], [0.0, 1.0])
    info = CAGradBalancer(2, c=0.5).backward(losses, [theta])
    torch.testing.assert_close(
        info.weights, torch.tensor([0.6, 0.6], dtype=torch.float64), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        info.extras["inner"], torch.tensor([0.5, 0.5], dtype=torch.float64), rtol=1e-12, atol=0
    )
    assert info.solve.status is SolveStatus.OPTIMAL
    theta, losses = _linear_losses([1.0, 0.0], [0.0, 1.0])
    # c = 0: the average gradient
    mean = CAGradBalancer(2, c=0.0, rescale="none").backward(losses, [theta])
    torch.testing.assert_close(
        mean.weights, torch.tensor([0.5, 0.5], dtype=torch.float64), rtol=1e-12, atol=0
    )
    for bad in ({"c": -1.0}, {"rescale": "2"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CAGradBalancer(2, **bad)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 5), c=st.floats(0.1, 0.9))
def test_cagrad_direction_maximises_the_worst_improvement_in_its_ball(
    seed: int, n: int, c: float
) -> None:
    """(1+c²)·d lies on the sphere |x − g0| = c|g0| and its worst improvement min gᵢ·x is no lower
    than that of any other point of the ball (checked against random points of it)."""
    from moo_opt import CAGradBalancer

    p = toy_problem(seed=seed, num_objectives=n, width=8, scales=[1.0 + i for i in range(n)])
    b = CAGradBalancer(n, c=c)
    g = b.gradients(p.losses(), p.shared()).matrix()
    info = b.backward(p.losses(), p.shared())
    g0 = g.mean(dim=1)
    x = (1.0 + c**2) * (g @ info.weights)
    radius = c * float(g0.norm())
    assert float((x - g0).norm()) <= radius * (1 + 1e-9)
    worst = float((g.T @ x).min())
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(g.shape[0], 200, generator=gen, dtype=torch.float64)
    others = g0[:, None] + radius * u / u.norm(dim=0) * torch.rand(
        200, generator=gen, dtype=torch.float64
    )
    assert float((g.T @ others).min(dim=0).values.max()) <= worst + 1e-9 * float(g.norm()) ** 2
    assert info.solve.kkt_residual <= 1e-9
