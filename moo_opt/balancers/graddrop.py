"""GradDrop (Chen et al., NeurIPS 2020): per coordinate, keep the gradients of one sign, drawn
with the probability of the sign's purity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from moo_opt.balancers.base import NonFinite
from moo_opt.balancers.coordinatewise import CoordinateBalancer
from moo_opt.registry import register


def graddrop(matrix: Tensor, uniform: Tensor) -> tuple[Tensor, Tensor]:
    """``(direction, mask)`` of GradDrop on the (N, n) matrix with one uniform draw per column:
    the purity ``P = ½(1 + Σᵢ gᵢ / Σᵢ |gᵢ|)`` (float64; ½ where every value is zero), the
    positive values kept where ``P > U``, the negative ones where ``P < U``, and the kept values
    summed; ``mask`` (N, n) is True where a value was kept."""
    wide = matrix.to(torch.float64)
    total = wide.abs().sum(dim=0)
    purity = 0.5 * (1.0 + wide.sum(dim=0) / torch.where(total > 0, total, 1.0))
    mask = ((purity > uniform) & (matrix > 0)) | ((purity < uniform) & (matrix < 0))
    return (matrix * mask).sum(dim=0), mask


@register
class GradDropBalancer(CoordinateBalancer):
    r"""Gradient sign dropout: per coordinate, the gradients of one sign are kept and summed.

    Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign: Optimizing Deep
    Multitask Models with Gradient Sign Dropout", NeurIPS 2020 (Algorithm 1, lines 10-15; TorchJD's
    ``GradDrop``). For every coordinate :math:`k` of the balanced parameters, the positive sign
    purity is :math:`P_k = \frac12 \bigl(1 + \sum_i g_{ik} / \sum_i |g_{ik}|\bigr)`; with one
    uniform draw :math:`U_k \sim \mathcal{U}[0, 1)` per coordinate, shared by the objectives,

    .. math:: d_k = \sum_i M_{ik} g_{ik}, \qquad
        M_{ik} = [P_k > U_k][g_{ik} > 0] + [P_k < U_k][g_{ik} < 0]:

    the positive values are kept with probability :math:`P_k`, else the negative ones, so
    :math:`d_k` has the sign drawn, and where every value has one sign :math:`d_k` is their sum.
    An objective that does not reach a balanced parameter has no value there (a zero, never kept).
    The draws come from the balancer's own generator (``seed``) on the parameters' device, in
    float64, one per balanced coordinate in the order of the parameters, and its state is in the
    state dict: a resumed run draws what the uninterrupted one would. Under ``torch.distributed``
    each objective's gradient is averaged over the ranks first and every rank draws the same.

    ``info.weights`` is a summary: for objective i, the fraction of its non-zero balanced values
    that were kept (0 for a zero gradient); 1 for every objective where no coordinate conflicts,
    and then ``.grad`` is exactly :math:`G w`, the sum. The extras: ``conflict``, the fraction of
    balanced coordinates with values of both signs. Leaves outside the balanced set (e.g. the
    task heads) get the plain sum :math:`\sum_i \nabla L_i`, as in the paper, where GradDrop acts
    on the shared part. There is no Gramian: ``gramian="representation"`` is not offered and
    representations are refused.

    Args:
        num_objectives: N.
        seed: seed of the draws' generator.
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "graddrop"

    def __init__(
        self, num_objectives: int, *, seed: int = 0, nonfinite: NonFinite = "raise"
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        self.seed = int(seed)
        self.generator: torch.Generator | None = None  # created on the parameters' device
        self._saved: tuple[str, Tensor] | None = None  # a loaded state, for that generator

    def _generator(self, device: torch.device) -> torch.Generator:
        """The draws' generator on ``device``: seeded, or continuing a loaded state."""
        if self.generator is not None and self.generator.device == device:
            return self.generator
        if self.generator is not None or (self._saved and self._saved[0] != device.type):
            held = self.generator.device if self.generator is not None else self._saved[0]
            raise ValueError(
                f"graddrop's generator is on {held}, the parameters on {device}: the draws cannot "
                "continue there; create the balancer afresh (or resume on the same device)"
            )
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        if self._saved is not None:
            self.generator.set_state(self._saved[1])
            self._saved = None
        return self.generator

    def _combine(
        self, matrices: list[Tensor], values: Tensor
    ) -> tuple[list[Tensor], Tensor, dict[str, Tensor]]:
        if not matrices:
            return [], torch.zeros_like(values), {"conflict": values.new_zeros(())}
        device = matrices[0].device
        sizes = [m.shape[1] for m in matrices]
        draws = torch.rand(
            sum(sizes), generator=self._generator(device), dtype=torch.float64, device=device
        ).split(sizes)
        kept = torch.zeros(self.num_objectives, dtype=torch.float64, device=device)
        nonzero = torch.zeros_like(kept)
        conflicts = torch.zeros((), dtype=torch.float64, device=device)
        directions = []
        for m, u in zip(matrices, draws):
            d, mask = graddrop(m, u.to(m.device))
            directions.append(d)
            kept += mask.sum(dim=1).to(device)
            nonzero += (m != 0).sum(dim=1).to(device)
            conflicts += ((m > 0).any(dim=0) & (m < 0).any(dim=0)).sum().to(device)
        weights = (kept / nonzero.clamp(min=1.0)).to(values.device)
        return directions, weights, {"conflict": (conflicts / sum(sizes)).to(values.device)}

    def _plain(self, values: Tensor) -> Tensor:
        return torch.ones_like(values)

    def _state(self) -> dict[str, Any]:
        if self.generator is not None:
            return {"device": self.generator.device.type, "generator": self.generator.get_state()}
        if self._saved is not None:
            return {"device": self._saved[0], "generator": self._saved[1]}
        return {}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.generator = None
        self._saved = (str(state["device"]), state["generator"]) if "generator" in state else None
