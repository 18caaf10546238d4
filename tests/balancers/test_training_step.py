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
