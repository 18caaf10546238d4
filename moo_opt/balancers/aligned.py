"""Aligned-MTL (Senushkin et al., CVPR 2023): follow the gradients after aligning them into an
orthogonal system of equal norms."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from moo_opt.balancers.base import Gramian, GramianBalancer, NonFinite, preferences
from moo_opt.registry import register
from moo_opt.solvers import SolveResult
from moo_opt.solvers.alignment import ALIGNMENT_SCALES, AlignmentScale
from moo_opt.weightings import aligned_mtl_weights


@register
class AlignedMTLBalancer(GramianBalancer):
    r"""The direction :math:`d = \hat G u` of the aligned gradients :math:`\hat G = G B`, whose
    components are orthogonal and of equal norm σ (the smallest singular value of G by default).

    Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment for Multi-Task
    Learning", CVPR 2023, Algorithm 1: :math:`Q = G^\top G = V\Lambda V^\top`,
    :math:`B = \sigma V \Lambda^{-1/2} V^\top`, weights :math:`w = B u` on the raw losses, with
    task preferences u (default :math:`1/N` each, as TorchJD; LibMTL uses ones, i.e. N times
    larger steps). The transform is exact (one eigen-decomposition,
    :func:`~moo_opt.solvers.balance_transform`, with its status: ``DEGENERATE`` when the
    gradients are linearly dependent, whose null directions are then left out). Aligned-MTL's
    condition number of :math:`\hat G` is 1 by construction, which the tests check.

    Args:
        num_objectives: N.
        task_weights: the preferences u (N non-negative finite numbers), default 1/N each.
        scale: σ from the ``"min"`` (paper), ``"median"`` or ``"rmse"`` singular value.
        rcond: relative eigenvalue cut-off of the rank (default ``N·100·eps``).
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "aligned-mtl"
    reads_host = True

    def __init__(
        self,
        num_objectives: int,
        *,
        task_weights: Sequence[float] | None = None,
        scale: AlignmentScale = "min",
        rcond: float | None = None,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        if scale not in ALIGNMENT_SCALES:
            raise ValueError(f"scale must be one of {ALIGNMENT_SCALES}, got {scale!r}")
        self.task_weights = preferences(task_weights, num_objectives)
        self.scale: AlignmentScale = scale
        self.rcond = rcond

    def _weights(
        self, values: Tensor, gram: Tensor
    ) -> tuple[Tensor, SolveResult, dict[str, Tensor]]:
        w, result = aligned_mtl_weights(
            gram, task_weights=self.task_weights, scale=self.scale, rcond=self.rcond
        )
        return w.to(values.device), result, {}
