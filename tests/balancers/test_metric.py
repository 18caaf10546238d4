"""Solution 2 in the optimiser's metric: ``Q = Gᵀ P G`` with Adam's preconditioner."""

from __future__ import annotations

import pytest
import torch

from moo_opt import QPBalancer, balanced_step
from moo_opt.metrics import adam_metric
from tests.helpers.models import toy_problem


def test_gramian_with_a_metric_is_gt_p_g() -> None:
    p = toy_problem(num_objectives=3)
    grads = QPBalancer(3).gradients(p.losses(), p.shared())
    metric = [torch.rand_like(q) for q in grads.params]
    g = grads.matrix()
    flat = torch.cat([m.reshape(-1) for m in metric])
    torch.testing.assert_close(
        grads.gramian(metric), g.T @ (flat[:, None] * g), rtol=1e-12, atol=1e-12
    )
    with pytest.raises(ValueError, match="one tensor per parameter"):
        grads.gramian(metric[:1])


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_metric_is_adams_preconditioner(amsgrad: bool) -> None:
    p = toy_problem()
    opt = torch.optim.Adam(
        p.all_parameters(), lr=1e-3, betas=(0.8, 0.95), eps=1e-6, amsgrad=amsgrad
    )
    assert adam_metric(opt, p.shared()) is None  # no second moment before the first step
    for _ in range(3):
        opt.zero_grad()
        sum(p.losses()).backward()
        opt.step()
    for param, m in zip(p.shared(), adam_metric(opt, p.shared())):
        st = opt.state[param]
        v = st["max_exp_avg_sq"] if amsgrad else st["exp_avg_sq"]
        torch.testing.assert_close(m, 1 / ((v / (1 - 0.95**3)).sqrt() + 1e-6))
    with pytest.raises(ValueError, match="Adam or AdamW"):
        adam_metric(torch.optim.SGD(p.all_parameters(), lr=0.1), p.shared())
    with pytest.raises(ValueError, match="not updated by the optimiser"):
        adam_metric(torch.optim.Adam(p.heads.parameters()), p.shared())


def test_qp_in_adam_metric_balances_the_preconditioned_step() -> None:
    p = toy_problem()
    b = QPBalancer(2, metric="adam")
    opt = torch.optim.Adam(p.all_parameters(), lr=1e-3)
    with pytest.raises(RuntimeError, match="bind_optimizer"):
        b.backward(p.losses(), p.shared())
    first = balanced_step(b, opt, p.losses, p.shared())  # binds; no preconditioner yet
    assert float(first.extras["adam_metric"]) == 0.0
    for _ in range(3):
        info = balanced_step(b, opt, p.losses, p.shared())
    assert float(info.extras["adam_metric"]) == 1.0
    # the balance condition in Adam's metric, on the log-losses: gᵢᵀ P d equal for both objectives
    losses = p.losses()
    values = torch.stack([loss.detach() for loss in losses])
    grads = b.gradients(losses, p.shared())
    metric = adam_metric(opt, p.shared())
    info = b.backward(p.losses(), p.shared())
    g = grads.matrix() / (values + 1.0)
    flat = torch.cat([m.reshape(-1) for m in metric])
    d = g @ info.extras["z"]
    decrease = g.T @ (flat * d)
    assert float(decrease[0]) == pytest.approx(float(decrease[1]), rel=1e-8)
    # the binding survives a state round trip (the trainer restores snapshots)
    b.load_state_dict(b.state_dict())
    assert b.backward(p.losses(), p.shared()).extras["adam_metric"] == 1.0
    with pytest.raises(ValueError, match="metric"):
        QPBalancer(2, metric="newton")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Adam or AdamW"):
        QPBalancer(2, metric="adam").bind_optimizer(torch.optim.SGD(p.all_parameters(), lr=0.1))
