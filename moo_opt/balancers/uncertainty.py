"""Uncertainty Weighting (Kendall, Gal & Cipolla, CVPR 2018): learned homoscedastic
uncertainties."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from moo_opt.balancers.base import BalanceInfo, Balancer, NonFinite, adam_step_
from moo_opt.registry import register


@register
class UncertaintyWeighting(Balancer):
    r"""Weights :math:`w_i = e^{-s_i}` from learned log-variances :math:`s_i`, trained on
    :math:`\sum_i e^{-s_i} L_i + s_i`.

    Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
    Geometry and Semantics", CVPR 2018 (the form without the regression factor ½, as most
    implementations use it; it rescales the learning rate only). The balancer owns :math:`s`
    (starting at 0) and its Adam state: every step applies the current :math:`e^{-s}` to the
    losses, then takes one Adam step on :math:`s` with the gradient
    :math:`\partial/\partial s_i = 1 - e^{-s_i} L_i` (so :math:`e^{-s_i} \to 1/L_i`). Everything is
    in the state dict. One backward pass.

    Args:
        num_objectives: N.
        lr: Adam learning rate of :math:`s` (1e-3).
        betas, eps: Adam's moment decays and epsilon.
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "uncertainty"

    def __init__(
        self,
        num_objectives: int,
        *,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        if not (math.isfinite(lr) and lr > 0.0):
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.log_variance = torch.zeros(num_objectives, dtype=torch.float64)
        self.exp_avg = torch.zeros(num_objectives, dtype=torch.float64)
        self.exp_avg_sq = torch.zeros(num_objectives, dtype=torch.float64)
        self.step = 0

    def _backward(self, losses: list[Tensor], values: Tensor, params: list[Tensor]) -> BalanceInfo:
        if not self._finite_or_skip(values):
            return self._skipped(values)
        if self.log_variance.device != values.device:
            self.log_variance, self.exp_avg, self.exp_avg_sq = (
                t.to(values.device) for t in (self.log_variance, self.exp_avg, self.exp_avg_sq)
            )
        s = self.log_variance.clone()
        w = torch.exp(-s)
        self._backward_weighted(losses, w)
        self.step += 1
        adam_step_(
            self.log_variance,
            1.0 - w * values,
            self.exp_avg,
            self.exp_avg_sq,
            self.step,
            self.lr,
            self.betas,
            self.eps,
        )
        return BalanceInfo(weights=w, losses=values, extras={"log_variance": s}, skips=self.skips)

    def _state(self) -> dict[str, Any]:
        return {
            "log_variance": self.log_variance,
            "exp_avg": self.exp_avg,
            "exp_avg_sq": self.exp_avg_sq,
            "step": self.step,
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self._load_vectors(state, ("log_variance", "exp_avg", "exp_avg_sq"))
        self.step = int(state["step"])
