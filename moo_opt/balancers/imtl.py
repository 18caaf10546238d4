"""IMTL-G (Liu et al., ICLR 2021): the direction with equal projections on every unit gradient."""

from __future__ import annotations

from torch import Tensor

from moo_opt.balancers.base import Gramian, GramianBalancer, NonFinite
from moo_opt.registry import register
from moo_opt.solvers import SolveResult
from moo_opt.weightings import imtl_g_weights


@register
class IMTLGBalancer(GramianBalancer):
    r"""Impartial MTL, gradient part: :math:`d = \sum_i \alpha_i g_i` with
    :math:`\sum_i \alpha_i = 1` and the same projection on every unit gradient,
    :math:`d \cdot u_i = d \cdot u_j` with :math:`u_i = g_i / |g_i|`.

    Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning",
    ICLR 2021. The paper's closed form :math:`\alpha_{2:N} = g_1 U^\top (D U^\top)^{-1}` (with
    :math:`D_i = g_1 - g_i`, :math:`U_i = u_1 - u_i`) is, written with
    :math:`\gamma_i = \alpha_i |g_i|`, the system :math:`\tilde Q \gamma \propto \mathbf 1` on the
    Gramian of the unit gradients :math:`\tilde Q = N^{-1} Q N^{-1}`,
    :math:`N = \mathrm{diag}(|g_i|)`: the equality-constrained QP of
    :func:`~moo_opt.solvers.solve_equality_qp`, solved exactly with its status. The weights on the
    raw losses are :math:`z_i / |g_i|` renormalised to sum to one
    (:func:`~moo_opt.weightings.renormalized`). A zero gradient has no direction: its norm is taken
    as 1; its projection is 0 for every d, so equal projections force :math:`d = 0` (the QP puts its
    weight on it and no step is taken; the solver's status says whether the weights are unique). The
    paper's loss part (IMTL-L, learned loss scales) is not included.

    Args:
        rcond: passed to :func:`~moo_opt.solvers.solve_equality_qp`.
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "imtl-g"

    def __init__(
        self,
        num_objectives: int,
        *,
        rcond: float | None = None,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        self.rcond = rcond

    def _weights(
        self, values: Tensor, gram: Tensor
    ) -> tuple[Tensor, SolveResult, dict[str, Tensor]]:
        extras: dict[str, Tensor] = {}
        alpha, result = imtl_g_weights(gram, rcond=self.rcond, extras=extras)
        return alpha.to(values.device), result, {k: v.to(values.device) for k, v in extras.items()}
