"""PCGrad (Yu et al., NeurIPS 2020): project away the conflicting components, computed on the
Gramian."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from moo_opt.balancers.base import Gramian, GramianBalancer, NonFinite
from moo_opt.registry import register
from moo_opt.weightings import pcgrad_weights


@register
class PCGradBalancer(GramianBalancer):
    r"""Gradient surgery: each gradient loses its component along every other gradient it
    conflicts with, in a random order, and the results are summed.

    Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task Learning",
    NeurIPS 2020: for each i, :math:`g_i^{PC} = g_i`, then for each :math:`j \ne i` in a random
    order, if :math:`g_i^{PC} \cdot g_j < 0`,
    :math:`g_i^{PC} \leftarrow g_i^{PC} - \frac{g_i^{PC} \cdot g_j}{|g_j|^2} g_j`; the direction is
    :math:`\sum_i g_i^{PC}`. Every projection stays in the span of the gradients, so
    :math:`g_i^{PC} = G c_i` and all the dot products are :math:`a^\top Q b` on the Gramian: the
    surgery runs on the N×N matrix (exactly, in float64, on the host: one read of Q per step) and
    the direction is applied as weights :math:`w = \sum_i c_i` on the raw losses, so ``.grad`` is
    :math:`G w` like every other balancer's. A zero gradient is never projected on. The random
    order comes from the balancer's own generator (``seed``), saved in the state dict.

    Args:
        num_objectives: N.
        seed: seed of the order generator.
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "pcgrad"
    reads_host = True

    def __init__(
        self,
        num_objectives: int,
        *,
        seed: int = 0,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def surgery(self, gram: Tensor) -> tuple[Tensor, int]:
        """``(w, number of projections)`` for the Gramian ``gram`` (drawing the orders from the
        balancer's generator)."""
        extras: dict[str, Tensor] = {}
        w, _ = pcgrad_weights(gram, generator=self.generator, extras=extras)
        return w, int(extras["projections"])

    def _weights(self, values: Tensor, gram: Tensor) -> tuple[Tensor, None, dict[str, Tensor]]:
        extras: dict[str, Tensor] = {}
        w, _ = pcgrad_weights(gram, generator=self.generator, extras=extras)
        return w.to(values.device), None, {k: v.to(values.device) for k, v in extras.items()}

    def _state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
