"""Random Loss Weighting (Lin et al., TMLR 2022): fresh random weights every step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from moo_opt.balancers.base import BalanceInfo, Balancer, NonFinite
from moo_opt.registry import register


@register
class RLWBalancer(Balancer):
    r"""Weights :math:`w = \mathrm{softmax}(\epsilon)`, :math:`\epsilon \sim \mathcal N(0, I_N)`,
    drawn anew every step.

    Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random Weighting: A Litmus Test for
    Multi-Task Learning", TMLR 2022 (their default distribution). The draws come from the
    balancer's own generator (``seed``), saved in the state dict, so a resumed run draws the same
    weights as an uninterrupted one and the global RNG is never touched. One backward pass.

    Args:
        num_objectives: N.
        seed: seed of the balancer's generator.
        nonfinite: ``"raise"``, ``"skip"`` (a skipped step draws nothing) or ``"unchecked"``.
    """

    name = "rlw"

    def __init__(
        self, num_objectives: int, *, seed: int = 0, nonfinite: NonFinite = "raise"
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def _backward(self, losses: list[Tensor], values: Tensor, params: list[Tensor]) -> BalanceInfo:
        if not self._finite_or_skip(values):
            return self._skipped(values)
        eps = torch.randn(self.num_objectives, generator=self.generator, dtype=torch.float64)
        w = torch.softmax(eps, dim=0).to(values.device)
        self._backward_weighted(losses, w)
        return BalanceInfo(weights=w, losses=values, skips=self.skips)

    def _state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
