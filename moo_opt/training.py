"""A training step with any balancer, in one call."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from moo_opt.balancers import BalanceInfo, Balancer


def balanced_step(
    balancer: Balancer,
    optimizer: torch.optim.Optimizer,
    compute_losses: Callable[[], Sequence[Tensor]],
    parameters: Iterable[Tensor],
    *,
    max_norm: float | None = None,
) -> BalanceInfo:
    """Zero the gradients, balance, clip, step, and let an amortised balancer learn.

    ``compute_losses`` is called once with gradients, and — for balancers that need it
    (:attr:`Balancer.needs_update`, Solution 1 in ``same_batch`` mode) — once more without
    gradients after the optimiser step, on the same batch::

        balancer = CoarseToFineBalancer(2)
        for x in loader:
            info = balanced_step(balancer, optimizer, lambda: losses_of(model, x), model.parameters(), max_norm=1.0)

    ``max_norm`` clips the gradient norm of all the optimiser's parameters before its step. A
    skipped step (``nonfinite="skip"``) leaves parameters and optimiser untouched.
    """
    params = list(parameters)
    balancer.bind_optimizer(optimizer)  # for balancers that measure balance in the optimiser's metric
    optimizer.zero_grad(set_to_none=True)
    info = balancer.backward(compute_losses(), params)
    if info.skipped:
        optimizer.zero_grad(set_to_none=True)
        return info
    if max_norm is not None:  # every parameter the optimiser updates, balanced or not
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], max_norm)
    optimizer.step()
    if balancer.needs_update:
        with torch.no_grad():
            balancer.update(compute_losses())
    return info
