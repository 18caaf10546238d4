"""Diagonal metrics of optimisers: measure a Gramian in the step the optimiser will take.

A balancer that equalises the first-order decrease ``gᵢ·d`` of every objective along the
direction ``d`` promises it for a plain gradient step. An adaptive optimiser steps along
``P d`` instead, with ``P`` its diagonal preconditioner; the promise then holds for the
Gramian ``Q = Gᵀ P G`` (:meth:`moo_opt.gradients.ObjectiveGradients.gramian` with ``metric``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def require_adam(optimizer: torch.optim.Optimizer) -> None:
    """``ValueError`` unless ``optimizer`` is ``torch.optim.Adam`` or ``AdamW``."""
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        raise ValueError(
            "metric='adam' needs a torch.optim.Adam or AdamW optimiser, "
            f"got {type(optimizer).__name__}"
        )


def adam_metric(optimizer: torch.optim.Optimizer, params: Sequence[Tensor]) -> list[Tensor] | None:
    """``1 / (√v̂ + ε)`` for each parameter, from the state of ``torch.optim.Adam`` or ``AdamW``
    (``v̂`` the bias-corrected second moment, ``max_exp_avg_sq`` with ``amsgrad``).

    ``None`` before the optimiser's first step (no second moment yet); ``ValueError`` for another
    optimiser or a parameter it does not update. Computed on the parameters' device, no host
    synchronisation (a tensor ``step`` stays a tensor).
    """
    require_adam(optimizer)
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out: list[Tensor] = []
    for i, p in enumerate(params):
        group = groups.get(id(p))
        if group is None:
            raise ValueError(
                f"balanced parameter {i} (shape {tuple(p.shape)}) is not updated by the optimiser: "
                "pass it to the optimiser"
            )
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            return None
        v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
        step = state["step"]
        beta2 = float(group["betas"][1])
        # capturable Adam: stay on the device
        if isinstance(step, Tensor) and step.device.type != "cpu":
            bias: Tensor | float = 1.0 - torch.pow(beta2, step.to(torch.float64)).to(v.dtype)
        else:  # a host value already (a CPU tensor or a number)
            bias = 1.0 - beta2 ** float(step)
        out.append(1.0 / ((v / bias).sqrt() + group["eps"]))
    return out
