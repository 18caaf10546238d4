"""Linear scalarisation with fixed weights: the standard rate-distortion loss."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from moo_opt.balancers.base import BalanceInfo, Balancer, NonFinite, positive_int
from moo_opt.registry import register


@register
class FixedWeights(Balancer):
    r"""Minimise :math:`\sum_i w_i L_i` with constant weights.

    With ``weights=(1, 1)`` on (distortion, rate) this is the standard R-D loss
    :math:`L_R + \lambda\,255^2\,\mathrm{MSE}` of learned image compression (λ lives inside the
    distortion), the baseline every balanced result is compared against. One backward pass.

    Args:
        weights: one finite weight per objective (default: all ones).
        num_objectives: N, when ``weights`` is not given (the registry passes it).
        nonfinite: ``"raise"`` (default), ``"skip"`` or ``"unchecked"`` (no host synchronisation).
    """

    name = "fixed"

    def __init__(
        self,
        weights: Sequence[float] | None = None,
        *,
        num_objectives: int | None = None,
        nonfinite: NonFinite = "raise",
    ) -> None:
        if num_objectives is not None:
            positive_int("num_objectives", num_objectives)
        if weights is None:
            if num_objectives is None:
                raise ValueError("FixedWeights needs weights or num_objectives")
            weights = (1.0,) * num_objectives
        try:
            values = tuple(float(w) for w in weights)
        except (TypeError, ValueError):
            raise ValueError(
                f"weights must be a sequence of finite numbers, got {weights!r}; "
                "for N unit weights pass num_objectives=N"
            ) from None
        if num_objectives is not None and len(values) != num_objectives:
            raise ValueError(
                f"weights has {len(values)} entries but num_objectives is {num_objectives}"
            )
        if not values or not all(math.isfinite(w) for w in values):
            raise ValueError(
                f"weights must be a non-empty sequence of finite numbers, got {weights!r}"
            )
        super().__init__(len(values), nonfinite=nonfinite)
        self.weights = values
        self._on_device: dict[torch.device, Tensor] = {}

    def _backward(self, losses: list[Tensor], values: Tensor, params: list[Tensor]) -> BalanceInfo:
        if not self._finite_or_skip(values):
            return self._skipped(values)
        w = self._on_device.get(values.device)
        if w is None:  # copied to the device once, not every step
            w = self._on_device[values.device] = torch.tensor(
                self.weights, dtype=torch.float64, device=values.device
            )
        self._backward_weighted(losses, w)
        return BalanceInfo(weights=w, losses=values, skips=self.skips)
