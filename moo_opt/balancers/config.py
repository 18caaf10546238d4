"""ConFIG (Liu, Zhao, Thuerey et al., ICLR 2025): the direction with equal cosines to every
gradient."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from moo_opt.balancers.base import Gramian, GramianBalancer, NonFinite, preferences
from moo_opt.registry import register
from moo_opt.solvers import SolveResult
from moo_opt.weightings import config_weights


@register
class ConFIGBalancer(GramianBalancer):
    r"""Conflict-free update: the direction whose cosine with every gradient is the same (or
    proportional to the preferences p), scaled by the sum of the gradients' projections on it.

    Liu, Zhao, Thuerey et al., "ConFIG: Towards Conflict-free Training of Physics Informed Neural
    Networks", ICLR 2025 (arXiv 2408.11104), Equation 2, as in the paper's code and TorchJD's
    ``ConFIG``: with the unit gradients :math:`u_i = g_i/|g_i|` (rows of U),

    .. math:: \hat d = \frac{U^+ p}{|U^+ p|}, \qquad d = \Big(\sum_i g_i \cdot \hat d\Big)\,\hat d.

    In Gramian form :math:`U^+ p = \sum_i v_i u_i` with :math:`v = \hat Q^+ p`,
    :math:`\hat Q_{ij} = Q_{ij}/(|g_i||g_j|)`, computed by
    :func:`~moo_opt.solvers.solve_config` (eigen-decomposition, minimum-norm least squares, with
    a status: ``OPTIMAL`` for linearly independent gradients, ``DEGENERATE`` for dependent ones
    whose equal cosines still hold, ``INFEASIBLE`` when no direction has them, e.g. a zero or an
    exactly opposed gradient: then the pseudo-inverse's least-squares direction, possibly 0, is
    applied and the status says so). The weights on the raw losses are
    :math:`w_i = c\,v_i/|g_i|` with :math:`c = \mathbf 1^\top Q a / a^\top Q a`,
    :math:`a_i = v_i/|g_i|`. Promise, checked by the tests: for linearly independent gradients,
    :math:`\cos(g_i, d) = p_i/|U^+p|`, equal and positive for the default p = 1, so no objective
    increases to first order. The paper's momentum variant (M-ConFIG) is not included.

    Args:
        num_objectives: N.
        task_weights: the preferences p (N finite numbers ≥ 0), default ones (the paper's).
        rcond: passed to the solver.
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.

    Extras: ``v`` (the weights on the unit gradients), ``cosine`` (:math:`u_i\cdot\hat d`) and
    ``length`` (:math:`\sum_i g_i\cdot\hat d`).
    """

    name = "config"
    reads_host = True

    def __init__(
        self,
        num_objectives: int,
        *,
        task_weights: Sequence[float] | None = None,
        rcond: float | None = None,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        self.task_weights = preferences(task_weights, num_objectives)
        self.rcond = rcond

    def _weights(
        self, values: Tensor, gram: Tensor
    ) -> tuple[Tensor, SolveResult, dict[str, Tensor]]:
        extras: dict[str, Tensor] = {}
        w, result = config_weights(
            gram, task_weights=self.task_weights, rcond=self.rcond, extras=extras
        )
        return w.to(values.device), result, {k: x.to(values.device) for k, x in extras.items()}
