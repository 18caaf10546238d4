"""Hand cases and promised properties of the robust and coordinate-wise balancers (issue 20):
the trimmed mean, Krum, GradDrop; agreement with TorchJD's aggregators on shared matrices."""

from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import GradDrop, Krum, TrimmedMean

from moo_opt import GradDropBalancer, KrumBalancer, TrimmedMeanBalancer, create
from moo_opt.balancers.krum import krum_weights
from moo_opt.gradients import objective_gradients
from tests.helpers.models import toy_problem


def _linear_losses(*gradients: list[float]):
    """Losses ``gᵢ·θ`` at θ = 0: their gradients are exactly the given vectors."""
    theta = torch.zeros(len(gradients[0]), dtype=torch.float64, requires_grad=True)
    return theta, [torch.tensor(g, dtype=torch.float64) @ theta + 1.0 for g in gradients]


def _matrix(seed: int, n: int, p: int) -> torch.Tensor:
    return torch.randn(n, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------- trimmed mean
@pytest.mark.parametrize(("n", "trim"), [(1, 0), (3, 1), (4, 1), (5, 2), (6, 2), (7, 1)])
def test_trimmed_mean_agrees_with_torchjd_on_matrices(n: int, trim: int) -> None:
    for seed in range(5):
        m = _matrix(seed, n, 13)
        m[:, 0] = 1.5  # a column of ties
        ours = TrimmedMeanBalancer(n, trim=trim).combine(m)
        torch.testing.assert_close(ours, TrimmedMean(trim)(m), rtol=1e-13, atol=1e-15)


def test_trimmed_mean_backward_is_torchjds_on_the_gradients() -> None:
    p = toy_problem(seed=3, num_objectives=5, scales=[1.0, 2.0, 0.5, 3.0, 1.0])
    g = objective_gradients(p.losses(), p.shared()).matrix()
    info = TrimmedMeanBalancer(5, trim=2).backward(p.losses(), p.shared())
    applied = torch.cat([q.grad.reshape(-1) for q in p.shared()])
    torch.testing.assert_close(applied, TrimmedMean(2)(g.T), rtol=1e-12, atol=1e-15)
    assert abs(float(info.weights.sum()) - 1.0) < 1e-12 and (info.weights >= 0).all()


def test_trimmed_mean_weights_are_the_kept_fractions_by_hand() -> None:
    # per coordinate the median of three, over N − 2t = 1: g1 is the median of both coordinates
    theta, losses = _linear_losses([1.0, 5.0], [0.0, 6.0], [2.0, 4.0])
    info = TrimmedMeanBalancer(3, trim=1).backward(losses, [theta])
    torch.testing.assert_close(theta.grad, torch.tensor([1.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(info.weights, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    # g1 the median of coordinate 0 (values 1, 0, 2), g2 of coordinate 1 (4, 5, 6): half each
    theta, losses = _linear_losses([1.0, 4.0], [0.0, 5.0], [2.0, 6.0])
    info = TrimmedMeanBalancer(3, trim=1).backward(losses, [theta])
    torch.testing.assert_close(theta.grad, torch.tensor([1.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(info.weights, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))


def test_trimmed_mean_without_trimming_is_the_mean_as_weights() -> None:
    p = toy_problem(seed=1, num_objectives=3, scales=[1.0, 10.0, 0.1])
    g = objective_gradients(p.losses(), p.shared()).matrix()
    info = create("trimmed-mean", 3).backward(p.losses(), p.shared())
    torch.testing.assert_close(info.weights, torch.full((3,), 1 / 3, dtype=torch.float64))
    applied = torch.cat([q.grad.reshape(-1) for q in p.shared()])
    torch.testing.assert_close(applied, g.mean(dim=1), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("trim", [1, 2])
def test_trimmed_mean_bounds_the_influence_of_one_outlying_gradient(trim: int) -> None:
    """Moved arbitrarily far, one gradient leaves every coordinate within the others' range."""
    base = _matrix(7, 6, 40)
    others = base[1:]
    low, high = others.min(dim=0).values, others.max(dim=0).values
    balancer = TrimmedMeanBalancer(6, trim=trim)
    direction = torch.randn(40, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    for scale in (1.0, 1e3, 1e8, 1e15, -1e15):
        m = base.clone()
        m[0] = scale * direction
        d = balancer.combine(m)
        assert torch.isfinite(d).all()
        assert (d >= low - 1e-12).all() and (d <= high + 1e-12).all(), scale


def test_trimmed_mean_objectives_not_reaching_a_parameter_count_as_zeros() -> None:
    """The heads, each reached by one objective, in the balanced set: zeros elsewhere (the matrix
    G); the leaves outside the balanced set get the plain mean."""
    p = toy_problem(seed=2, num_objectives=3, scales=[1.0, 1.0, 1.0])
    grads = objective_gradients(p.losses(), p.all_parameters())
    g = grads.matrix()
    TrimmedMeanBalancer(3, trim=1).backward(p.losses(), p.all_parameters())
    applied = torch.cat([q.grad.reshape(-1) for q in p.all_parameters()])
    torch.testing.assert_close(applied, TrimmedMean(1)(g.T), rtol=1e-12, atol=1e-15)

    q = toy_problem(seed=2, num_objectives=3, scales=[1.0, 1.0, 1.0])
    losses = q.losses()
    own = [torch.autograd.grad(loss, list(h.parameters()), retain_graph=True)
           for loss, h in zip(losses, q.heads)]  # fmt: skip
    TrimmedMeanBalancer(3, trim=1).backward(losses, q.shared())
    for head, gradients in zip(q.heads, own):
        for w, gw in zip(head.parameters(), gradients):
            torch.testing.assert_close(w.grad, gw / 3, rtol=1e-12, atol=0)


def test_trimmed_mean_options_are_checked_and_representations_refused() -> None:
    with pytest.raises(ValueError, match=r"trim=2 needs at least 5 objectives"):
        create("trimmed-mean", 4, trim=2)
    with pytest.raises(ValueError, match="trim must be an integer >= 0"):
        create("trimmed-mean", 3, trim=-1)
    with pytest.raises(ValueError, match="trim must be an integer >= 0"):
        create("trimmed-mean", 3, trim=True)
    with pytest.raises(ValueError, match="unknown option.*gramian"):
        create("trimmed-mean", 3, gramian="representation")
    p = toy_problem(num_objectives=3)
    y = p.trunk(p.x)
    with pytest.raises(ValueError, match="does not balance a Gramian"):
        create("trimmed-mean", 3).backward(p.losses(), p.shared(), representations=[y])


# ---------------------------------------------------------------------- Krum
def _krum(matrix: torch.Tensor, f: int, m: int) -> torch.Tensor:
    """Our Krum direction on the rows of ``matrix`` (the weights from its Gramian)."""
    weights, _ = krum_weights(matrix @ matrix.T, f, m)
    return weights @ matrix


def test_krum_scores_are_the_sums_of_squared_distances_to_the_nearest() -> None:
    for seed in range(10):
        m = _matrix(seed, 6, 4)
        weights, scores = krum_weights(m @ m.T, 1, 2)
        squared = torch.cdist(m, m) ** 2
        squared.fill_diagonal_(float("inf"))
        expected = squared.sort(dim=1).values[:, :3].sum(dim=1)  # N − f − 2 = 3 neighbours
        torch.testing.assert_close(scores, expected, rtol=1e-10, atol=1e-10)
        chosen = expected.argsort()[:2]
        assert set(weights.nonzero().reshape(-1).tolist()) == set(chosen.tolist())
        assert torch.equal(weights[chosen], torch.full((2,), 0.5, dtype=torch.float64))


@pytest.mark.parametrize("m", [1, 2])
def test_krum_agrees_with_torchjd_with_one_neighbour(m: int) -> None:
    """N − f − 2 = 1: one distance per score, squared or not, the same ranking."""
    for seed in range(20):
        matrix = _matrix(seed, 3, 5)
        torch.testing.assert_close(_krum(matrix, 0, m), Krum(0, m)(matrix), rtol=1e-12, atol=0)


@pytest.mark.parametrize(("n", "f"), [(5, 1), (7, 2), (9, 3), (6, 0)])
def test_krum_agrees_with_torchjd_on_outliers_and_a_cluster(n: int, f: int) -> None:
    """f far outlying rows and N − f clustered ones: both select the whole cluster with
    m = N − f, and any m of it with a smaller m (the same rows for m = 1 or tightly spread)."""
    for seed in range(5):
        matrix = _matrix(seed, n, 6)
        matrix[f:] = 1.0 + 1e-2 * matrix[f:]
        matrix[:f] *= 1e4
        torch.testing.assert_close(
            _krum(matrix, f, n - f), Krum(f, n - f)(matrix), rtol=1e-12, atol=0
        )
        torch.testing.assert_close(
            _krum(matrix, f, n - f), matrix[f:].mean(dim=0), rtol=1e-12, atol=0
        )


@pytest.mark.parametrize(("n", "f"), [(3, 0), (5, 1), (6, 1), (7, 2), (9, 3)])
def test_krum_never_selects_one_arbitrarily_large_outlier(n: int, f: int) -> None:
    """N ≥ 2f + 3: the outlier's score is the largest, whatever its size or direction; nor are
    f identical (colluding) outliers selected."""
    base = _matrix(n, n, 8)
    direction = torch.randn(8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for m in range(1, n - max(f, 1) + 1):
        for scale in (10.0, 1e4, 1e9, -1e9):
            matrix = base.clone()
            matrix[2] = scale * direction
            weights, _ = krum_weights(matrix @ matrix.T, f, m)
            assert weights[2] == 0, (m, scale, weights)
            colluding = base.clone()
            colluding[:f] = scale * direction
            weights, _ = krum_weights(colluding @ colluding.T, f, m)
            assert (weights[:f] == 0).all(), (m, scale, weights)


def test_krum_balances_a_model_with_weights_one_over_m() -> None:
    p = toy_problem(seed=4, num_objectives=5, scales=[1.0, 1.1, 0.9, 50.0, 1.0])
    grads = objective_gradients(p.losses(), p.shared())
    g, gram = grads.matrix(), grads.gramian()
    info = KrumBalancer(5, n_byzantine=1, n_selected=2).backward(p.losses(), p.shared())
    assert sorted(info.weights.tolist()) == [0.0, 0.0, 0.0, 0.5, 0.5]
    assert info.weights[3] == 0  # the objective of 50x the scale is the outlier
    applied = torch.cat([q.grad.reshape(-1) for q in p.shared()])
    torch.testing.assert_close(applied, g @ info.weights, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(applied, Krum(1, 2)(g.T), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(info.extras["score"], krum_weights(gram, 1, 2)[1])


def test_krum_with_fewer_than_three_objectives_takes_the_first() -> None:
    theta, losses = _linear_losses([1.0, 0.0], [0.0, 3.0])
    info = create("krum", 2).backward(losses, [theta])
    assert info.weights.tolist() == [1.0, 0.0] and info.extras["score"].tolist() == [0.0, 0.0]
    theta, losses = _linear_losses([1.0, 0.0], [0.0, 3.0])
    info = create("krum", 2, n_selected=2).backward(losses, [theta])
    assert info.weights.tolist() == [0.5, 0.5] and theta.grad.tolist() == [0.5, 1.5]


def test_krum_options_are_checked_against_the_number_of_objectives() -> None:
    with pytest.raises(ValueError, match=r"n_byzantine=1 needs at least 5 objectives"):
        create("krum", 4, n_byzantine=1)
    with pytest.raises(ValueError, match=r"n_selected must be at most num_objectives - n_byz"):
        create("krum", 5, n_byzantine=1, n_selected=5)
    with pytest.raises(ValueError, match="n_selected must be a positive integer"):
        create("krum", 3, n_selected=0)
    with pytest.raises(ValueError, match="n_byzantine must be an integer >= 0"):
        create("krum", 3, n_byzantine=-1)
    assert create("krum", 7, n_byzantine=2, n_selected=5).n_selected == 5


# ---------------------------------------------------------------------- GradDrop
def _uniforms(seed: int, size: int) -> torch.Tensor:
    """The draws of a fresh ``GradDropBalancer(seed=seed)`` (CPU, float64, one per coordinate)."""
    return torch.rand(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_graddrop_agrees_with_torchjd_given_the_same_draws(n: int) -> None:
    for seed in range(5):
        m = _matrix(seed, n, 17)
        m[:, 0] = 0.0  # no value at all
        m[:, 1] = m[:, 1].abs()  # one sign
        torch.manual_seed(seed)  # TorchJD draws from the global generator, ours from its own
        expected = GradDrop()(m)
        torch.testing.assert_close(
            GradDropBalancer(n, seed=seed).combine(m), expected, rtol=0, atol=0
        )


def test_graddrop_keeps_the_drawn_sign_in_every_coordinate() -> None:
    m = _matrix(11, 4, 200)
    u = _uniforms(3, 200)
    d = GradDropBalancer(4, seed=3).combine(m)
    purity = 0.5 * (1 + m.sum(dim=0) / m.abs().sum(dim=0))
    positive = purity > u
    torch.testing.assert_close(d[positive], m.clamp(min=0).sum(dim=0)[positive], rtol=0, atol=0)
    torch.testing.assert_close(d[~positive], m.clamp(max=0).sum(dim=0)[~positive], rtol=0, atol=0)
    assert (d[positive] >= 0).all() and (d[~positive] <= 0).all()
    assert 0 < int(positive.sum()) < 200


def test_graddrop_with_gradients_of_one_sign_is_their_sum() -> None:
    theta, losses = _linear_losses([1.0, -2.0, 0.0], [3.0, -0.5, 1.0], [0.25, 0.0, 2.0])
    info = GradDropBalancer(3, seed=5).backward(losses, [theta])
    torch.testing.assert_close(theta.grad, torch.tensor([4.25, -2.5, 3.0], dtype=torch.float64))
    assert info.weights.tolist() == [1.0, 1.0, 1.0] and float(info.extras["conflict"]) == 0.0


def test_graddrop_weights_are_the_kept_fractions_by_hand() -> None:
    # coordinate 0: values 1 and -3, purity 1/4; coordinate 1: values 2 and 1, always kept
    theta, losses = _linear_losses([1.0, 2.0], [-3.0, 1.0])
    info = GradDropBalancer(2, seed=9).backward(losses, [theta])
    positive = bool(0.25 > _uniforms(9, 2)[0])
    expected = [1.0, 0.5] if positive else [0.5, 1.0]
    assert info.weights.tolist() == expected and float(info.extras["conflict"]) == 0.5
    assert theta.grad.tolist() == [1.0 if positive else -3.0, 3.0]


def test_graddrop_is_reproducible_from_its_seed_and_its_state() -> None:
    def run(balancer: GradDropBalancer, steps: int) -> list[torch.Tensor]:
        p = toy_problem(seed=6, num_objectives=3, scales=[1.0, 1.0, 1.0])
        out = []
        for _ in range(steps):
            for q in p.all_parameters():
                q.grad = None
            balancer.backward(p.losses(), p.shared())
            out.append(torch.cat([q.grad.reshape(-1) for q in p.shared()]))
        return out

    a, b = run(GradDropBalancer(3, seed=1), 3), run(GradDropBalancer(3, seed=1), 3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(run(GradDropBalancer(3, seed=2), 1)[0], a[0])
    first = GradDropBalancer(3, seed=1)
    run(first, 1)
    resumed = GradDropBalancer(3)
    resumed.load_state_dict(first.state_dict())  # applied to the generator made on first use
    assert all(torch.equal(x, y) for x, y in zip(run(resumed, 2), a[1:]))
    # an objective alone on a coordinate is always kept (its purity is 0 or 1)
    p = toy_problem(seed=6, num_objectives=3, scales=[1.0, 1.0, 1.0])
    heads = [list(h.parameters()) for h in p.heads]
    own = [torch.autograd.grad(loss, h, retain_graph=True) for loss, h in zip(p.losses(), heads)]
    GradDropBalancer(3).backward(p.losses(), p.all_parameters())
    for h, gradients in zip(heads, own):
        for w, gw in zip(h, gradients):
            torch.testing.assert_close(w.grad, gw, rtol=0, atol=0)


def test_graddrop_refuses_representations_and_a_generator_on_another_device() -> None:
    with pytest.raises(ValueError, match="unknown option.*gramian"):
        create("graddrop", 2, gramian="representation")
    p = toy_problem()
    with pytest.raises(ValueError, match="does not balance a Gramian"):
        create("graddrop", 2).backward(p.losses(), p.shared(), representations=[p.trunk(p.x)])
    b = GradDropBalancer(2)
    saved = b.state_dict()
    saved["state"] = {"device": "cuda", "generator": torch.zeros(16, dtype=torch.uint8)}
    b.load_state_dict(saved)
    assert b.state_dict()["state"]["device"] == "cuda"  # kept until used
    with pytest.raises(ValueError, match="generator is on cuda, the parameters on cpu"):
        b.backward(p.losses(), p.shared())


# ---------------------------------------------------------------------- per-coordinate state
def test_coordinate_buffers_start_at_zero_round_trip_and_refuse_other_coordinates() -> None:
    from moo_opt.balancers.coordinatewise import CoordinateBuffers

    buffers = CoordinateBuffers("the gradients' average")
    assert buffers.state() == []
    matrices = [torch.ones(2, 3), torch.ones(2, 1, dtype=torch.float64)]
    held = buffers.like(matrices)
    assert [t.dtype for t in held] == [torch.float32, torch.float64]
    assert all(torch.equal(t, torch.zeros_like(m)) for t, m in zip(held, matrices))
    held[0] += 2.0  # the caller updates them in place
    saved = buffers.state()
    held[0] += 1.0  # a copy: later updates do not reach the saved state
    again = CoordinateBuffers("the gradients' average")
    again.load(saved)
    assert torch.equal(again.like(matrices)[0], torch.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="balanced coordinates changed"):
        again.like(matrices[:1])
    with pytest.raises(ValueError, match="list of tensors"):
        again.load({"x": 1})
    again.load([])
    assert again.tensors is None


@pytest.mark.parametrize("name", ["trimmed-mean", "graddrop"])
def test_a_coordinate_wise_balancer_names_a_nonfinite_gradient_not_a_gramian(name: str) -> None:
    from moo_opt import NonFiniteLossError

    p = toy_problem(num_objectives=3)
    losses = p.losses()
    # finite values, infinite gradient: sqrt at 0 has an infinite derivative
    losses[0] = losses[0] + torch.sqrt(p.shared()[0].reshape(-1)[0] * 0.0)
    with pytest.raises(NonFiniteLossError, match="a gradient is NaN or Inf"):
        create(name, 3).backward(losses, p.shared())
