"""moo_opt.gradients: per-objective gradients, the Gramian, and ``.grad`` as autograd writes it."""

from __future__ import annotations

import pytest
import torch

from moo_opt.gradients import check_losses, check_parameters, objective_gradients, reachable_leaves
from tests.helpers.models import toy_problem


def test_gramian_equals_gtg_of_the_concatenated_matrix() -> None:
    p = toy_problem(num_objectives=3)
    grads = objective_gradients(p.losses(), p.shared())
    g = grads.matrix()
    assert g.shape == (sum(t.numel() for t in p.shared()), 3)
    torch.testing.assert_close(grads.gramian(), (g.T @ g).double(), rtol=1e-12, atol=0)


def test_float32_gramian_is_exactly_symmetric_and_psd() -> None:
    """Nearly parallel float32 gradients: the Gramian must still be symmetric and PSD (a float32
    matmul is neither to float64 precision, and the solvers reject what is not)."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(50_000))
    direction = torch.randn(50_000)
    losses = [(w * direction).sum() * 3.0, (w * (direction + 1e-4 * torch.randn(50_000))).sum()]
    q = objective_gradients(losses, [w]).gramian()
    assert q.dtype == torch.float64 and torch.equal(q, q.T)
    assert float(q[0, 0] * q[1, 1]) >= float(q[0, 1] ** 2)
    from moo_opt.solvers import solve_equality_qp

    assert solve_equality_qp(q).kkt_residual < 1e-9


def test_gradients_match_separate_autograd_calls() -> None:
    p = toy_problem()
    losses = p.losses()
    grads = objective_gradients(losses, p.shared())
    for i in range(2):
        expected = torch.autograd.grad(p.losses()[i], p.shared())
        for got, want in zip(grads.grads[i], expected):
            torch.testing.assert_close(got, want)


def test_graph_is_freed_after_the_last_objective() -> None:
    p = toy_problem()
    losses = p.losses()
    objective_gradients(losses, p.shared())
    with pytest.raises(RuntimeError, match="second time|freed"):
        losses[0].backward()


def test_accumulate_writes_what_autograd_of_the_weighted_sum_writes() -> None:
    p = toy_problem()
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    sum(wi * li for wi, li in zip(w, p.losses())).backward()
    expected = p.grads()
    for q in p.all_parameters():
        q.grad = None
    objective_gradients(p.losses(), p.shared()).accumulate(w)  # heads are outside the balanced set
    for got, want in zip(p.grads(), expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)


def test_accumulate_adds_onto_existing_gradients_and_leaves_unreached_ones_alone() -> None:
    p = toy_problem()
    unused = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    prior = [torch.full_like(q, 0.5) for q in p.all_parameters()]
    for q, g in zip(p.all_parameters(), prior):
        q.grad = g.clone()
    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    objective_gradients(p.losses(), p.shared() + [unused]).accumulate(w)
    assert unused.grad is None
    # head 0 is reached by loss 0 only: its gradient is w0·∂L0/∂head0 added to the prior
    head0 = list(p.heads[0].parameters())
    expected = torch.autograd.grad(p.losses()[0], head0)
    k0 = len(p.shared())
    for j, e in enumerate(expected):
        torch.testing.assert_close(p.all_parameters()[k0 + j].grad, prior[k0 + j] + w[0] * e)


def test_reachable_leaves_finds_every_parameter_once() -> None:
    p = toy_problem(num_objectives=3)
    leaves = reachable_leaves(p.losses())
    assert {id(t) for t in leaves} == {id(t) for t in p.all_parameters()}
    assert len(leaves) == len(p.all_parameters())


@pytest.mark.parametrize(
    "losses, message",
    [
        (lambda p: p.losses()[:1], "expected 2 losses"),
        (lambda p: [p.losses()[0], torch.ones(2, requires_grad=True) * 2], "not a scalar"),
        (lambda p: [p.losses()[0], torch.tensor(1.0)], "no autograd graph"),
        (lambda p: [p.losses()[0], 3.0], "not a tensor"),
    ],
)
def test_bad_losses_raise_a_named_error(losses, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_losses(losses(toy_problem()), 2)


def test_no_trainable_parameter_raises() -> None:
    with pytest.raises(ValueError, match="no parameter requires a gradient"):
        check_parameters([torch.ones(2)])
    with pytest.raises(ValueError, match="no parameter requires a gradient"):
        check_parameters([])
