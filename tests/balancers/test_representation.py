"""``gramian="representation"``: the Gramian at the shared trunk's output (issue 19).

Pinned down here: it is the exact Gramian when the trunk's map to the representation is the
identity; ``.grad`` is the gradient of ``Σᵢ wᵢ Lᵢ`` (the heads' own under ``shared_only``); the
trunk is backpropagated once per step instead of once per objective; bad input is refused with a
named error. Two-process equality is in ``test_distributed.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import moo_opt
from moo_opt.gradients import objective_gradients
from moo_opt.representations import cut_gramian, representation_gradients
from tests.helpers.models import toy_problem

GRAMIAN = [
    n for n in moo_opt.available() if isinstance(moo_opt.create(n, 2), moo_opt.GramianBalancer)
]
SHARED_ONLY = [n for n in GRAMIAN if "shared_only" in moo_opt.options(n)]


class Identity(nn.Module):
    """A trunk whose output is its parameter, through an op with Jacobian I."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.randn(width, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return self.theta * 1.0


def identity_problem(seed: int) -> tuple[Identity, nn.ModuleList, Tensor, list[Tensor]]:
    torch.manual_seed(seed)
    trunk = Identity(6)
    heads = nn.ModuleList(nn.Linear(6, 1).double() for _ in range(2))
    x = torch.randn(8, 6, dtype=torch.float64)
    targets = [torch.randn(8, 1, dtype=torch.float64) for _ in range(2)]
    return trunk, heads, x, targets


def identity_losses(
    problem: tuple[Identity, nn.ModuleList, Tensor, list[Tensor]],
) -> tuple[list[Tensor], Tensor]:
    """The losses and the trunk's output ``y``."""
    trunk, heads, x, targets = problem
    y = trunk(x)
    h = x * y
    losses = [s * ((head(h) - t) ** 2).mean() for head, t, s in zip(heads, targets, (1.0, 30.0))]
    return losses, y


def grads_of(modules: list[nn.Module]) -> list[Tensor]:
    return [p.grad.clone() for m in modules for p in m.parameters()]


@pytest.mark.parametrize(
    ("name", "shared_only"), [(n, False) for n in GRAMIAN] + [(n, True) for n in SHARED_ONLY]
)
def test_equals_the_exact_gramian_when_the_trunk_is_the_identity(
    name: str, shared_only: bool
) -> None:
    extra = {"shared_only": True} if shared_only else {}
    results = []
    for gramian in ("parameters", "representation"):
        problem = identity_problem(seed=3)
        trunk, heads = problem[0], problem[1]
        params = [*trunk.parameters(), *heads.parameters()]
        balancer = moo_opt.create(name, 2, gramian=gramian, **extra)
        losses, y = identity_losses(problem)
        reps = [y] if gramian == "representation" else None
        info = balancer.backward(losses, params, representations=reps)
        results.append((info.weights, grads_of([trunk, heads])))
    (w_exact, g_exact), (w_rep, g_rep) = results
    torch.testing.assert_close(w_rep, w_exact, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_rep, g_exact, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", GRAMIAN)
def test_grad_is_autograd_of_the_weighted_sum(name: str) -> None:
    p = toy_problem(seed=2)
    balancer = moo_opt.create(name, 2, gramian="representation")
    y = p.trunk(p.x)
    losses = [s * ((head(y) - t) ** 2).mean() for head, t, s in zip(p.heads, p.targets, p.scales)]
    info = balancer.backward(losses, p.all_parameters(), representations=y)
    got = p.grads()
    for q in p.all_parameters():
        q.grad = None
    total = sum(w * loss for w, loss in zip(info.weights.tolist(), p.losses()))
    total.backward()  # type: ignore[union-attr]
    for a, b in zip(got, p.grads(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", SHARED_ONLY)
def test_shared_only_gives_each_head_its_own_gradient(name: str) -> None:
    p = toy_problem(seed=4)
    balancer = moo_opt.create(name, 2, gramian="representation", shared_only=True)
    opt = torch.optim.SGD(p.all_parameters(), lr=0.0)
    info = moo_opt.balanced_step(
        balancer, opt, p.losses, p.all_parameters(), representation=p.trunk
    )
    head_grads = [[q.grad.clone() for q in head.parameters()] for head in p.heads]
    trunk_grads = [q.grad.clone() for q in p.trunk.parameters()]
    for i, loss in enumerate(p.losses()):
        own = torch.autograd.grad(loss, list(p.heads[i].parameters()))
        for a, b in zip(head_grads[i], own, strict=True):
            torch.testing.assert_close(a, b)
    weighted = sum(w * loss for w, loss in zip(info.weights.tolist(), p.losses()))
    for a, b in zip(trunk_grads, torch.autograd.grad(weighted, list(p.trunk.parameters()))):
        torch.testing.assert_close(a, b)


def test_the_gramian_is_the_one_of_the_gradients_at_the_representation() -> None:
    p = toy_problem(seed=5)
    y = p.trunk(p.x)
    losses = [s * ((head(y) - t) ** 2).mean() for head, t, s in zip(p.heads, p.targets, p.scales)]
    grads = representation_gradients(losses, [y], p.all_parameters())
    g_y = [torch.autograd.grad(loss, y, retain_graph=True)[0].reshape(-1) for loss in losses]
    manual = torch.stack(g_y) @ torch.stack(g_y).T
    torch.testing.assert_close(cut_gramian(grads.at_cut), manual, rtol=1e-12, atol=0.0)
    # the heads are past the cut, the trunk before it
    assert {id(q) for q in grads.heads.params} == {id(q) for q in p.heads.parameters()}
    assert {id(q) for q in grads.trunk} == {id(q) for q in p.trunk.parameters()}
    # and it differs from the exact one by the trunk's metric J Jᵀ
    exact = objective_gradients(p.losses(), p.all_parameters()).gramian()
    approx = cut_gramian(grads.at_cut) + grads.heads.gramian()
    assert not torch.allclose(exact, approx, rtol=1e-3)


class Counted(torch.autograd.Function):
    """The identity, counting its backward passes."""

    calls = 0

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        Counted.calls += 1
        return grad


@pytest.mark.parametrize(("gramian", "passes"), [("parameters", 3), ("representation", 1)])
def test_the_trunk_is_backpropagated_once(gramian: str, passes: int) -> None:
    p = toy_problem(seed=6, num_objectives=3)
    first = p.trunk[0]

    def losses() -> list[Tensor]:
        y = p.trunk[2](p.trunk[1](Counted.apply(first(p.x))))
        return [s * ((h(y) - t) ** 2).mean() for h, t, s in zip(p.heads, p.targets, p.scales)]

    Counted.calls = 0
    balancer = moo_opt.create("mgda", 3, gramian=gramian)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-3)
    rep = p.trunk[2] if gramian == "representation" else None
    moo_opt.balanced_step(balancer, opt, losses, p.all_parameters(), representation=rep)
    assert Counted.calls == passes


def test_state_round_trips_with_the_option() -> None:
    balancer = moo_opt.create("qp", 2, gramian="representation")
    again = moo_opt.create("qp", 2)
    again.load_state_dict(balancer.state_dict())
    assert again.gramian == "representation"
    assert moo_opt.options("upgrad")["gramian"] == "parameters"


@pytest.mark.parametrize(
    "case", ["not a cut", "other forward", "missing", "unexpected", "not gramian", "no graph"]
)
def test_bad_input_is_a_named_error(case: str) -> None:
    p = toy_problem(seed=7)
    y = p.trunk(p.x)
    losses = [s * ((head(y) - t) ** 2).mean() for head, t, s in zip(p.heads, p.targets, p.scales)]
    rep = moo_opt.create("qp", 2, gramian="representation")
    message, call = {
        "not a cut": (
            "must be a cut",
            lambda: rep.backward(
                [losses[0] + p.trunk[0].weight.sum(), losses[1]],
                p.all_parameters(),
                representations=[y],
            ),
        ),
        "other forward": (
            "must be a cut",
            lambda: rep.backward(losses, p.all_parameters(), representations=[p.trunk(p.x)]),
        ),
        "missing": (
            "pass the shared trunk's output",
            lambda: rep.backward(losses, p.all_parameters()),
        ),
        "unexpected": (
            "build it with gramian='representation'",
            lambda: moo_opt.create("mgda", 2).backward(
                losses, p.all_parameters(), representations=[y]
            ),
        ),
        "not gramian": (
            "does not balance a Gramian",
            lambda: moo_opt.create("fixed", 2).backward(
                losses, p.all_parameters(), representations=[y]
            ),
        ),
        "no graph": (
            "does not require a gradient",
            lambda: rep.backward(losses, p.all_parameters(), representations=[y.detach()]),
        ),
    }[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_options_that_need_the_parameters_are_refused() -> None:
    for opts in ({"metric": "adam"}, {"gradient_ema": 0.9}):
        with pytest.raises(ValueError, match="gramian='parameters'"):
            moo_opt.create("qp", 2, gramian="representation", **opts)
    with pytest.raises(ValueError, match="gramian must be one of"):
        moo_opt.create("mgda", 2, gramian="trunk")


def test_balanced_step_names_a_module_that_was_not_called() -> None:
    p = toy_problem(seed=8)
    balancer = moo_opt.create("qp", 2, gramian="representation")
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="gave no output with a graph"):
        moo_opt.balanced_step(
            balancer, opt, p.losses, p.all_parameters(), representation=nn.Linear(2, 2)
        )
