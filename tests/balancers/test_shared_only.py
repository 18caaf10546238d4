"""``shared_only``: the Gramian over the parameters that several objectives reach; every parameter
that one objective alone reaches gets that objective's own gradient, whatever the weights."""

from __future__ import annotations

import pytest
import torch

from moo_opt import MGDABalancer, QPBalancer
from moo_opt.gradients import objective_gradients
from moo_opt.solvers import solve_equality_qp
from tests.helpers.models import toy_problem


def test_reach_and_the_shared_gramian() -> None:
    prob = toy_problem(seed=1)
    params = prob.all_parameters()
    grads = objective_gradients(prob.losses(), params)
    n_trunk = len(prob.shared())
    assert grads.shared() == [True] * n_trunk + [False] * (len(params) - n_trunk)
    assert grads.reach()[n_trunk:] == [[0], [0], [1], [1]]  # each head's weight and bias
    trunk = [torch.cat([g.reshape(-1) for g in grads.grads[i][:n_trunk]]) for i in range(2)]
    expected = torch.stack([torch.stack([a @ b for b in trunk]) for a in trunk])
    torch.testing.assert_close(grads.gramian(shared_only=True), expected, rtol=1e-12, atol=0)
    full = grads.gramian()
    head = [sum((g * g).sum() for g in grads.grads[i][n_trunk:] if g is not None) for i in range(2)]
    # the heads add only to the diagonal
    torch.testing.assert_close(full, expected + torch.diag(torch.stack(head)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", range(4))
def test_qp_balances_the_trunk_and_gives_each_head_its_own_gradient(seed: int) -> None:
    prob = toy_problem(seed=seed, scales=[1.0, 50.0])
    trunk_n = len(prob.shared())
    losses = prob.losses()
    reference = objective_gradients(prob.losses(), prob.all_parameters())
    info = QPBalancer(2, shared_only=True).backward(losses, prob.all_parameters())
    values = torch.stack([loss.detach() for loss in losses])
    scale = values + 1.0
    result = solve_equality_qp(
        reference.gramian(shared_only=True) / (scale[:, None] * scale[None, :])
    )
    coeff = result.weights / scale
    torch.testing.assert_close(info.weights, coeff / coeff.sum(), rtol=1e-10, atol=0)
    grads = prob.grads()
    for k in range(trunk_n):  # the trunk: the balanced combination
        expected = sum(info.weights[i] * reference.grads[i][k] for i in range(2))
        torch.testing.assert_close(grads[k], expected, rtol=1e-10, atol=1e-14)
    for k in range(trunk_n, len(grads)):  # the heads: their own objective's plain gradient
        (i,) = reference.reach()[k]
        torch.testing.assert_close(grads[k], reference.grads[i][k], rtol=0, atol=0)
    # the balance condition holds on the trunk: equal first-order decrease of both log-losses
    d = torch.cat([grads[k].reshape(-1) for k in range(trunk_n)])
    speed = [
        torch.cat([g.reshape(-1) for g in reference.grads[i][:trunk_n]]) @ d / scale[i]
        for i in range(2)
    ]
    torch.testing.assert_close(speed[0], speed[1], rtol=1e-8, atol=1e-14)


def test_a_negative_weight_never_reverses_a_head() -> None:
    """Nearly parallel log-gradients on the trunk give the QP a weight outside [0, 1]; the head of
    that objective still descends its own loss."""
    torch.manual_seed(0)
    trunk = torch.nn.Linear(3, 3, bias=False).double()
    heads = [torch.nn.Linear(3, 1, bias=False).double() for _ in range(2)]
    with torch.no_grad():
        heads[1].weight.copy_(heads[0].weight * 1.3 + 0.01)
    x = torch.randn(32, 3, dtype=torch.float64)
    h = trunk(x)
    losses = [(heads[0](h) - 1.0).pow(2).mean(), 2.0 * (heads[1](h) - 1.0).pow(2).mean()]
    params = list(trunk.parameters()) + [hd.weight for hd in heads]
    own = [torch.autograd.grad(losses[i], heads[i].weight, retain_graph=True)[0] for i in range(2)]
    info = QPBalancer(2, shared_only=True, renormalize=False).backward(losses, params)
    assert float(info.extras["z"].min()) < 0.0  # the case the option exists for
    for i in range(2):
        torch.testing.assert_close(heads[i].weight.grad, own[i], rtol=0, atol=0)
        assert float((heads[i].weight.grad * own[i]).sum()) > 0


def test_mgda_shared_only_and_the_state_round_trip() -> None:
    prob = toy_problem(seed=2)
    bal = MGDABalancer(2, shared_only=True)
    info = bal.backward(prob.losses(), prob.all_parameters())
    assert float(info.weights.sum()) == pytest.approx(1.0) and float(info.weights.min()) >= 0.0
    reference = objective_gradients(prob.losses(), prob.all_parameters())
    n_trunk = len(prob.shared())
    for k in range(n_trunk, len(prob.all_parameters())):
        (i,) = reference.reach()[k]
        torch.testing.assert_close(prob.grads()[k], reference.grads[i][k], rtol=0, atol=0)
    for b in (bal, QPBalancer(2, shared_only=True, metric="adam")):
        clone = type(b)(2)
        clone.load_state_dict(b.state_dict())
        assert clone.shared_only is True


def test_without_the_option_nothing_changes() -> None:
    """The default (the paper's Gramian over every balanced parameter) is bit for bit what it
    was."""
    a, b = toy_problem(seed=3), toy_problem(seed=3)
    ia = QPBalancer(2).backward(a.losses(), a.all_parameters())
    ib = QPBalancer(2, shared_only=False).backward(b.losses(), b.all_parameters())
    assert torch.equal(ia.weights, ib.weights)
    for ga, gb in zip(a.grads(), b.grads()):
        assert torch.equal(ga, gb)
