"""A training step with any balancer, in one call: the one implementation of a balanced step, used
by library users and by the LIC trainer alike."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from moo_opt.balancers import BalanceInfo, Balancer, NonFiniteLossError


def balanced_step(
    balancer: Balancer,
    optimizer: torch.optim.Optimizer,
    compute_losses: Callable[[], Sequence[Tensor]],
    parameters: Iterable[Tensor],
    *,
    max_norm: float | None = None,
    after_step: Callable[[], None] | None = None,
    representation: torch.nn.Module | None = None,
    update_losses: Callable[[], tuple[Sequence[Tensor], Sequence[Tensor]]] | None = None,
) -> BalanceInfo:
    """Zero the gradients, balance, clip, step, and let an amortised balancer learn.

    ``compute_losses`` is called once with gradients, and — for balancers that need it
    (:attr:`Balancer.needs_update`, Solution 1 in ``same_batch`` mode) — once more without
    gradients after the optimiser step, on the same batch::

        balancer = CoarseToFineBalancer(2)
        for x in loader:
            info = balanced_step(
                balancer, optimizer, lambda: losses_of(model, x), model.parameters(), max_norm=1.0
            )

    ``max_norm`` clips the gradient norm of all the optimiser's parameters before its step.
    ``after_step`` runs right after the optimiser's step, before the amortised update (e.g. an
    auxiliary optimiser's step, a weight average's update). ``representation`` (for
    ``gramian="representation"``): the module whose outputs in ``compute_losses``'s forward are the
    shared representation (e.g. ``model.g_a``), passed to :meth:`~moo_opt.Balancer.backward`.

    ``update_losses``, if given, replaces that second call (at the same point, under ``no_grad``):
    it returns ``(before, after)``, the losses of samples of the caller's choosing before and after
    the optimiser step (``update(after, before=before)``): for Solution 1's sub-batch, ``after``
    from a forward on those samples alone and ``before`` from ``compute_losses``'s forward.

    Non-finite values never reach the parameters. A balancer with ``nonfinite="skip"`` skips a step
    whose losses are NaN or Inf by itself, and this function also skips one whose gradient norm is
    (finite losses can still give a non-finite gradient): the parameters, the optimiser and the
    balancer's state stay as they were, and the returned info says ``skipped``. With
    ``nonfinite="raise"`` such a gradient raises :class:`~moo_opt.NonFiniteLossError`; with
    ``"unchecked"`` nothing is read back (no host synchronisation) and nothing is checked.
    """
    params = list(parameters)
    balancer.bind_optimizer(optimizer)  # for balancers that read the optimiser's metric
    optimizer.zero_grad(set_to_none=True)
    checked = balancer.nonfinite != "unchecked"
    snapshot = balancer.state_dict() if balancer.nonfinite == "skip" else None  # small tensors
    losses, reps = with_outputs_of(representation, compute_losses)
    info = balancer.backward(losses, params, representations=reps)
    if not info.skipped and (checked or max_norm is not None):
        info = _clip_and_check(balancer, optimizer, info, snapshot, checked, max_norm)
    if info.skipped:
        optimizer.zero_grad(set_to_none=True)
        return info
    optimizer.step()
    if after_step is not None:
        after_step()
    if balancer.needs_update:
        with torch.no_grad():
            _update(balancer, compute_losses, update_losses)
    return info


def with_outputs_of(
    module: torch.nn.Module | None, compute_losses: Callable[[], Sequence[Tensor]]
) -> tuple[Sequence[Tensor], list[Tensor] | None]:
    """The losses ``compute_losses()`` returns, and the outputs of ``module`` (tensors with a
    graph) in the forward that computed them, e.g. the representations that
    ``backward(..., representations=...)`` takes (None without a module); a ``ValueError`` when
    the module gave none."""
    if module is None:
        return compute_losses(), None
    outputs: list[Tensor] = []

    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        items = output if isinstance(output, (tuple, list)) else (output,)
        outputs.extend(t for t in items if isinstance(t, Tensor) and t.requires_grad)

    handle = module.register_forward_hook(hook)
    try:
        losses = compute_losses()
    finally:
        handle.remove()
    if not outputs:
        raise ValueError(
            f"the representation module ({type(module).__name__}) gave no output with a graph "
            "while the losses were computed: pass the module whose output is the shared "
            "representation (e.g. model.g_a), and compute the losses outside torch.no_grad()"
        )
    return losses, outputs


def _update(
    balancer: Balancer,
    compute_losses: Callable[[], Sequence[Tensor]],
    update_losses: Callable[[], tuple[Sequence[Tensor], Sequence[Tensor]]] | None,
) -> None:
    """The amortised update: from the whole batch's losses recomputed, or from the ``(before,
    after)`` losses that ``update_losses`` gives."""
    if update_losses is None:
        balancer.update(compute_losses())
        return
    before, after = update_losses()
    balancer.update(after, before=before)


def _clip_and_check(
    balancer: Balancer,
    optimizer: torch.optim.Optimizer,
    info: BalanceInfo,
    snapshot: dict[str, Any] | None,
    checked: bool,
    max_norm: float | None,
) -> BalanceInfo:
    """Clip the gradient norm of every parameter the optimiser updates, balanced or not, to
    ``max_norm`` (if given), and check that norm when ``checked``: a non-finite one raises
    :class:`~moo_opt.NonFiniteLossError` without a ``snapshot`` of the balancer's state, and
    otherwise restores it and returns ``info`` marked ``skipped``."""
    every = [p for group in optimizer.param_groups for p in group["params"]]
    norm = torch.nn.utils.clip_grad_norm_(every, math.inf if max_norm is None else max_norm)
    if checked and not bool(torch.isfinite(norm)):
        if snapshot is None:
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"the gradient norm is {float(norm)} although the losses are finite "
                f"({info.losses.tolist()}); "
                "lower the learning rate, or pass nonfinite='skip' to skip such steps"
            )
        balancer.load_state_dict(snapshot)
        info = dataclasses.replace(info, skipped=True)
    return info
