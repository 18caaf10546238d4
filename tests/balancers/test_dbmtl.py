"""DB-MTL (issue 20): agreement with an independent reference of LibMTL's ``DB_MTL`` rule over
sequences of steps, its promised property (every scaled average has the largest one's norm), the
reduction to a weighting without averaging, the exact state round trip mid-run, and its errors."""

from __future__ import annotations

import io

import pytest
import torch

from moo_opt import DBMTLBalancer, create
from moo_opt.gradients import objective_gradients
from tests.helpers.models import toy_problem

SHAPES = [(3,), (2, 4), (5,)]  # three balanced parameters: norms are taken over all of them


def _parameters() -> list[torch.Tensor]:
    return [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]


def _sequence(seed: int, n: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` pairs (the (N, P) gradients, the N positive losses' values), of scales spread
    over orders of magnitude."""
    gen = torch.Generator().manual_seed(seed)
    p = sum(torch.Size(s).numel() for s in SHAPES)
    scales = 10.0 ** torch.linspace(-3, 3, n, dtype=torch.float64)
    return [
        (
            torch.randn(n, p, generator=gen, dtype=torch.float64) * scales[:, None],
            torch.rand(n, generator=gen, dtype=torch.float64) * scales + 1e-3,
        )
        for _ in range(steps)
    ]


def _losses(params, g: torch.Tensor, values: torch.Tensor, head=None, v=None):
    """Losses ``gᵢ·θ + cᵢ`` at θ = 0: their gradients are the rows of ``g``, their values ``c``;
    ``head`` (reached by objective 0 alone) adds ``v·head`` to the first."""
    theta = torch.cat([q.reshape(-1) for q in params])
    losses = [g[i] @ theta + values[i] for i in range(g.shape[0])]
    if head is not None:
        losses[0] = losses[0] + v @ head
    return losses


def _applied(params) -> torch.Tensor:
    return torch.cat([q.grad.reshape(-1) for q in params])


def _step(balancer, params, g, values, head=None, v=None):
    for q in [*params, *([head] if head is not None else [])]:
        q.grad = None
    info = balancer.backward(_losses(params, g, values, head, v), params)
    return _applied(params), info


class LibMTLReference:
    """LibMTL's ``DB_MTL.backward``, written from reading it (LibMTL/weighting/DB_MTL.py): the
    per-task gradients of ``log(L + 1e-8)`` by autograd, the buffer ``g + β/t^σ (buffer − g)``
    (zeros at first, the step counted from 1), ``α = max‖buffer‖ / (‖buffer‖ + 1e-8)`` over the
    flattened shared parameters and the new gradient ``Σ αᵢ bufferᵢ``; the task-specific
    parameters keep the log-losses' gradients."""

    def __init__(self, beta: float, sigma: float) -> None:
        self.beta, self.sigma, self.step, self.buffer = beta, sigma, 0, None

    def __call__(self, g: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, list]:
        self.step += 1
        theta = torch.zeros(g.shape[1], dtype=torch.float64, requires_grad=True)
        logs = [torch.log(g[i] @ theta + values[i] + 1e-8) for i in range(g.shape[0])]
        grads = torch.stack([torch.autograd.grad(x, theta)[0] for x in logs])
        if self.buffer is None:
            self.buffer = torch.zeros_like(grads)
        self.buffer = grads + (self.beta / self.step**self.sigma) * (self.buffer - grads)
        norms = self.buffer.norm(dim=-1)
        alpha = norms.max() / (norms + 1e-8)
        heads = [1.0 / (float(c) + 1e-8) for c in values]
        return sum(alpha[i] * self.buffer[i] for i in range(g.shape[0])), heads


@pytest.mark.parametrize(("beta", "sigma"), [(0.9, 0.0), (0.9, 0.5), (0.5, 1.0), (0.0, 0.0)])
@pytest.mark.parametrize("n", [1, 2, 4])
def test_agrees_with_libmtls_rule_over_steps(beta: float, sigma: float, n: int) -> None:
    worst = 0.0
    for seed in range(3):
        params, reference = _parameters(), LibMTLReference(beta, sigma)
        head = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        v = torch.tensor([0.3, -2.0], dtype=torch.float64)
        balancer = DBMTLBalancer(n, beta=beta, sigma=sigma)
        for t, (g, values) in enumerate(_sequence(seed, n, 8), start=1):
            ours, info = _step(balancer, params, g, values, head, v)
            want, heads = reference(g, values)
            scale = float(want.abs().max())
            torch.testing.assert_close(ours, want, rtol=1e-12, atol=1e-13 * scale)
            worst = max(worst, float((ours - want).abs().max()) / scale)
            torch.testing.assert_close(head.grad, heads[0] * v, rtol=1e-14, atol=0.0)
            assert float(info.extras["beta_t"]) == pytest.approx(beta / t**sigma, rel=1e-15)
    assert worst < 1e-13, worst


def test_every_scaled_average_has_the_largest_ones_norm() -> None:
    n = 4
    params, balancer = _parameters(), DBMTLBalancer(n, beta=0.8, sigma=0.3)
    for g, values in _sequence(7, n, 6):
        _, info = _step(balancer, params, g, values)
        averages = torch.cat(balancer.averages.tensors, dim=1)
        norms = averages.norm(dim=1)
        scaled = (info.extras["alpha"][:, None] * averages).norm(dim=1)
        # ‖αᵢ ĝᵢ‖ = max ‖ĝ‖ · ‖ĝᵢ‖ / (‖ĝᵢ‖ + ε): the largest norm, up to ε
        torch.testing.assert_close(scaled, norms.max().expand(n), rtol=1e-7, atol=0.0)
        torch.testing.assert_close(info.extras["norm"], norms, rtol=1e-13, atol=0.0)
        assert float(info.extras["alpha"].min()) == pytest.approx(1.0, abs=1e-7)  # the largest


def test_without_averaging_the_direction_is_g_times_the_weights() -> None:
    p = toy_problem(seed=2, num_objectives=3, scales=[1e-2, 1.0, 1e3])
    b = create("db-mtl", 3, beta=0.0)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-3)
    for _ in range(4):  # the state (step count) does not matter without averaging
        opt.zero_grad(set_to_none=True)
        g = objective_gradients(p.losses(), p.shared()).matrix()
        info = b.backward(p.losses(), p.shared())
        applied = torch.cat([q.grad.reshape(-1) for q in p.shared()])
        torch.testing.assert_close(applied, g @ info.weights, rtol=1e-12, atol=1e-15)
        # the weights scale every log-loss gradient to the largest one's norm
        norms = (g * info.weights).norm(dim=0)
        torch.testing.assert_close(norms, norms.max().expand(3), rtol=1e-7, atol=0.0)
        opt.step()


def test_the_direction_does_not_depend_on_the_losses_scales() -> None:
    """Loss-scale balancing: ``log(c L) = log c + log L``, so scaling a loss changes nothing (up
    to ε)."""
    directions = []
    for factor in (1.0, 1e3):
        p = toy_problem(seed=5, num_objectives=2, scales=[1.0, 1.0])
        b = create("db-mtl", 2)
        for _ in range(3):
            for q in p.all_parameters():
                q.grad = None
            losses = p.losses()
            b.backward([losses[0], factor * losses[1]], p.all_parameters())
        directions.append(torch.cat([q.grad.reshape(-1) for q in p.all_parameters()]))
    torch.testing.assert_close(directions[0], directions[1], rtol=1e-6, atol=0.0)


def _save_load(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("k", [1, 3])
def test_state_round_trip_mid_run_gives_bit_identical_directions(k: int) -> None:
    n, params = 3, _parameters()
    sequence = _sequence(11, n, k + 4)
    b = DBMTLBalancer(n, beta=0.7, sigma=0.5)
    for g, values in sequence[:k]:
        _step(b, params, g, values)
    restored = DBMTLBalancer(n)  # other options: the state dict brings them back
    restored.load_state_dict(_save_load(b.state_dict()))
    assert (restored.beta, restored.sigma, restored.step) == (0.7, 0.5, k)
    for g, values in sequence[k:]:
        want, info = _step(b, params, g, values)
        got, info2 = _step(restored, params, g, values)
        assert torch.equal(got, want) and torch.equal(info.weights, info2.weights)
    assert all(torch.equal(a, c) for a, c in zip(b.averages.tensors, restored.averages.tensors))


def test_memory_is_n_values_per_balanced_coordinate() -> None:
    n, params = 3, _parameters()
    b = DBMTLBalancer(n)
    assert b.state_dict()["state"] == {"step": 0, "averages": []}  # nothing before the first step
    g, values = _sequence(0, n, 1)[0]
    _step(b, params, g, values)
    held = sum(t.numel() for t in b.state_dict()["state"]["averages"])
    assert held == n * sum(q.numel() for q in params)


@pytest.mark.parametrize("bad", [0.0, -0.5])
def test_a_non_positive_loss_is_a_clear_error_and_changes_nothing(bad: float) -> None:
    params = _parameters()
    g, values = _sequence(3, 2, 1)[0]
    for nonfinite in ("raise", "skip"):
        b = DBMTLBalancer(2, nonfinite=nonfinite)
        with pytest.raises(ValueError, match=r"needs every loss > 0, got \[.*\]: add a constant"):
            _step(b, params, g, torch.tensor([1.0, bad], dtype=torch.float64))
        assert all(q.grad is None for q in params)
        assert b.step == 0 and b.averages.tensors is None


def test_changed_balanced_coordinates_are_a_clear_error() -> None:
    params = _parameters()
    g, values = _sequence(4, 2, 1)[0]
    b = DBMTLBalancer(2)
    _step(b, params, g, values)
    with pytest.raises(ValueError, match="balanced coordinates changed since db-mtl's gradient"):
        b.backward(_losses(params, g, values), params[:2])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beta": 1.0}, r"beta must be a finite number in \[0, 1\)"),
        ({"beta": -0.1}, r"beta must be a finite number in \[0, 1\)"),
        ({"beta": "0.5"}, r"beta must be a finite number in \[0, 1\)"),
        ({"sigma": -1.0}, "sigma must be a finite number >= 0"),
        ({"sigma": float("inf")}, "sigma must be a finite number >= 0"),
        ({"epsilon": 0.0}, "epsilon must be a finite number > 0"),
        ({"epsilon": float("nan")}, "epsilon must be a finite number > 0"),
        ({"gramian": "representation"}, r"unknown option\(s\) gramian"),
    ],
)
def test_options_are_validated(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create("db-mtl", 2, **options)


def test_representations_are_refused() -> None:
    p = toy_problem()
    y = p.trunk(p.x)
    losses = [((head(y) - t) ** 2).mean() for head, t in zip(p.heads, p.targets)]
    with pytest.raises(ValueError, match="does not balance a Gramian"):
        create("db-mtl", 2).backward(losses, p.shared(), representations=[y])
