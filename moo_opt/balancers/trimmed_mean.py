"""Coordinate-wise trimmed mean (Yin et al., ICML 2018): a Byzantine-robust mean of the
objectives' gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from moo_opt.balancers.base import NonFinite, positive_int
from moo_opt.balancers.coordinatewise import CoordinateBalancer
from moo_opt.registry import register


def trimmed_mean(matrix: Tensor, trim: int) -> tuple[Tensor, Tensor]:
    """``(the trimmed mean of each column of the (N, n) matrix, the number of columns in which
    each row's value was kept (N,))``: per column, the ``trim`` largest and ``trim`` smallest
    values are dropped and the other N − 2·trim averaged (ties broken by row order)."""
    n = matrix.shape[0]
    kept = torch.zeros(n, dtype=torch.float64, device=matrix.device)
    if trim == 0:
        return matrix.mean(dim=0), kept.fill_(matrix.shape[1])
    ordered, rows = torch.sort(matrix, dim=0, stable=True)
    middle = rows[trim : n - trim].reshape(-1)
    kept.scatter_add_(0, middle, torch.ones_like(middle, dtype=torch.float64))
    return ordered[trim : n - trim].mean(dim=0), kept


@register
class TrimmedMeanBalancer(CoordinateBalancer):
    r"""The coordinate-wise trimmed mean of the objectives' gradients.

    Yin, Chen, Ramchandran & Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", ICML 2018 (TorchJD's ``TrimmedMean``). For every coordinate :math:`k` of
    the balanced parameters, with :math:`g_{(1)k} \le \dots \le g_{(N)k}` the N gradients' values
    sorted and :math:`t` = ``trim``,

    .. math:: d_k = \frac{1}{N - 2t} \sum_{r = t + 1}^{N - t} g_{(r)k}:

    the :math:`t` largest and :math:`t` smallest values are dropped, the rest averaged. Moving one
    gradient arbitrarily far moves each :math:`d_k` by at most the spread of the others' values
    there (when :math:`t \ge 1`): one outlying objective has bounded influence. ``trim=0`` is the
    mean of the gradients. An objective that does not reach a balanced parameter counts as a zero
    gradient there (the matrix :math:`G` with zeros). Under ``torch.distributed`` each objective's
    gradient is averaged over the ranks first, so the trimmed mean is that of the whole batch's
    gradients.

    The rule is not a weighting of whole gradients, so ``info.weights`` is a summary: objective
    i's kept fraction over the balanced coordinates divided by :math:`N - 2t`, the average
    coefficient its values received (the weights sum to one; with ``trim=0`` they are 1/N and
    ``.grad`` is exactly :math:`G w`). Leaves outside the balanced set get the plain mean
    :math:`\frac{1}{N} \sum_i \nabla L_i`. There is no Gramian: ``gramian="representation"`` is
    not offered and representations are refused.

    Args:
        num_objectives: N.
        trim: t, the number of values dropped at each end of every coordinate; N ≥ 2t + 1.
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "trimmed-mean"

    def __init__(
        self, num_objectives: int, *, trim: int = 0, nonfinite: NonFinite = "raise"
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        self.trim = positive_int("trim", trim, minimum=0)
        if num_objectives < 2 * trim + 1:
            raise ValueError(
                f"trim={trim} needs at least {2 * trim + 1} objectives (2 * trim + 1), "
                f"got {num_objectives}"
            )

    def _combine(
        self, matrices: list[Tensor], values: Tensor
    ) -> tuple[list[Tensor], Tensor, dict[str, Tensor]]:
        kept = torch.zeros_like(values)
        directions = []
        for m in matrices:
            d, k = trimmed_mean(m, self.trim)
            directions.append(d)
            kept += k.to(values.device)
        coordinates = sum(m.shape[1] for m in matrices)
        weights = kept / (max(coordinates, 1) * (self.num_objectives - 2 * self.trim))
        return directions, weights, {}

    def _plain(self, values: Tensor) -> Tensor:
        return torch.full_like(values, 1.0 / self.num_objectives)
