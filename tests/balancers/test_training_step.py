"""``balanced_step``: a finite loss with a non-finite gradient never reaches the parameters."""

from __future__ import annotations

import pytest
import torch

from moo_opt import NonFiniteLossError, balanced_step, create


def problem(poisoned: bool) -> tuple[torch.nn.Linear, list[torch.Tensor], callable]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    if poisoned:  # finite losses, a NaN gradient (as an overflow in a backward pass gives)
        layer.weight.register_hook(lambda g: torch.full_like(g, float("nan")))

    def losses() -> list[torch.Tensor]:
        out = layer(x)
        return [(out[:, 0] ** 2).mean(), (out[:, 1] ** 2).mean()]

    return layer, list(layer.parameters()), losses


@pytest.mark.parametrize("name", ["fixed", "coarse-to-fine", "dwa"])
def test_a_non_finite_gradient_skips_the_step_and_restores_the_state(name: str) -> None:
    layer, params, losses = problem(poisoned=True)
    balancer = create(name, 2, nonfinite="skip")
    opt = torch.optim.Adam(params, lr=0.1)
    before = [p.detach().clone() for p in params]
    state = balancer.state_dict()
    hooked = []
    info = balanced_step(
        balancer, opt, losses, params, max_norm=1.0, after_step=lambda: hooked.append(1)
    )
    assert info.skipped and not hooked and opt.state == {} and all(p.grad is None for p in params)
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    assert repr(balancer.state_dict()) == repr(state)


def test_a_non_finite_gradient_raises_under_raise_and_passes_unchecked() -> None:
    _, params, losses = problem(poisoned=True)
    with pytest.raises(
        NonFiniteLossError, match="gradient norm is nan although the losses are finite"
    ):
        balanced_step(create("fixed", 2), torch.optim.SGD(params, lr=0.1), losses, params)
    _, params, losses = problem(poisoned=True)
    balanced_step(
        create("fixed", 2, nonfinite="unchecked"), torch.optim.SGD(params, lr=0.1), losses, params
    )
    assert torch.isnan(params[0]).all()  # "unchecked" reads nothing back: the caller's choice


def test_after_step_runs_between_the_step_and_the_amortised_update() -> None:
    layer, params, losses = problem(poisoned=False)
    balancer = create("coarse-to-fine", 2)
    order: list[str] = []
    original = balancer.update

    def update(new_losses):  # noqa: ANN001, ANN202
        order.append("update")
        return original(new_losses)

    balancer.update = update  # type: ignore[method-assign]
    balanced_step(
        balancer,
        torch.optim.SGD(params, lr=0.1),
        losses,
        params,
        after_step=lambda: order.append("after_step"),
    )
    assert order == ["after_step", "update"]


def test_update_losses_replaces_the_recomputation_on_the_steps_that_learn() -> None:
    """``update_losses`` is called, without gradients, exactly when an update is due, instead of
    a second ``compute_losses``; the balancer learns from the ``(before, after)`` it returns."""
    _, params, losses = problem(poisoned=False)
    forwards: list[int] = []
    pairs: list[bool] = []

    def counted() -> list[torch.Tensor]:
        forwards.append(1)
        return losses()

    before = [torch.tensor(3.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)]
    after = [torch.tensor(2.0, dtype=torch.float64), torch.tensor(0.45, dtype=torch.float64)]

    def update_losses() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pairs.append(torch.is_grad_enabled())
        return before, after

    balancer = create("coarse-to-fine", 2, update_every=2, gamma=0.0)
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(4):
        balanced_step(balancer, opt, counted, params, update_losses=update_losses)
    assert len(forwards) == 4 and pairs == [False, False] and balancer.step == 2
    reference = create("coarse-to-fine", 2, gamma=0.0)
    reference.backward(losses(), params)
    reference.update(after, before=before)
    grad = reference.exp_avg / 0.1  # the first step's gradient, from those values alone
    delta = torch.log(torch.stack(before) + 1) - torch.log(torch.stack(after) + 1)
    torch.testing.assert_close(grad, 0.5 * (delta - 0.5 * delta.sum()), rtol=1e-12, atol=0)
    fixed_calls: list[int] = []
    balanced_step(
        create("fixed", 2), opt, losses, params, update_losses=lambda: fixed_calls.append(1)
    )
    assert not fixed_calls  # a balancer without an update never asks
