"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019): weights from the losses' rate of
descent."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from moo_opt.balancers.base import BalanceInfo, Balancer, NonFinite, positive_int
from moo_opt.registry import register


@register
class DWABalancer(Balancer):
    r"""Weights from how fast each loss fell over the last two periods.

    Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019:

    .. math::  w_i(t) = N \frac{\exp(r_i(t-1)/T)}{\sum_j \exp(r_j(t-1)/T)}, \qquad
               r_i(t-1) = \frac{\bar L_i(t-1)}{\bar L_i(t-2)}

    where :math:`\bar L_i(t)` is the mean loss over period t (the paper: an epoch) and
    :math:`w_i = 1` for the first two periods. A loss that fell slowly (ratio near 1) gets more
    weight. One backward pass; no gradients needed.

    Args:
        num_objectives: N.
        temperature: T (2, the paper's).
        period: steps per period (1: every step; the paper averages over an epoch, so pass the
            number of steps per epoch).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "dwa"

    def __init__(
        self,
        num_objectives: int,
        *,
        temperature: float = 2.0,
        period: int = 1,
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        if not (math.isfinite(temperature) and temperature > 0.0):
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.period = positive_int("period", period)
        #: sum and count of the losses of the current period
        self.running = torch.zeros(num_objectives, dtype=torch.float64)
        self.count = 0
        #: (k, N) mean losses of the last k ≤ 2 completed periods, oldest first
        self.history = torch.zeros(0, num_objectives, dtype=torch.float64)

    def weights_now(self, device: torch.device) -> Tensor:
        """The weights of the current period (ones until two periods are complete)."""
        if self.history.shape[0] < 2:
            return torch.ones(self.num_objectives, dtype=torch.float64, device=device)
        before, last = self.history.to(device).unbind()
        ratio = last / torch.where(before != 0.0, before, torch.ones_like(before))
        return self.num_objectives * torch.softmax(ratio / self.temperature, dim=0)

    def _backward(self, losses: list[Tensor], values: Tensor, params: list[Tensor]) -> BalanceInfo:
        if not self._finite_or_skip(values):
            return self._skipped(values)
        w = self.weights_now(values.device)
        self._backward_weighted(losses, w)
        self.running = self.running.to(values.device) + values
        self.count += 1
        if self.count == self.period:
            self.history = torch.cat(
                [self.history.to(values.device), (self.running / self.count)[None]]
            )[-2:]
            self.running = torch.zeros_like(self.running)
            self.count = 0
        return BalanceInfo(weights=w, losses=values, skips=self.skips)

    def _state(self) -> dict[str, Any]:
        return {"running": self.running, "count": self.count, "history": self.history}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.running = state["running"].to(torch.float64)
        self.count = int(state["count"])
        history = state["history"]
        if (
            not isinstance(history, Tensor)
            or history.dim() != 2
            or history.shape[1] != self.num_objectives
            or history.shape[0] > 2
        ):
            raise ValueError(
                "state_dict entry 'history' must be a tensor of shape "
                f"(k <= 2, {self.num_objectives})"
            )
        self.history = history.to(torch.float64)
