"""Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution among the objectives."""

from __future__ import annotations

from torch import Tensor

from moo_opt.balancers.base import Gramian, GramianBalancer, NonFinite
from moo_opt.registry import register
from moo_opt.solvers import SolveResult
from moo_opt.weightings import NashNormalization, nash_mtl_weights

_NORMALIZATIONS = ("none", "frobenius")


@register
class NashMTLBalancer(GramianBalancer):
    r"""The direction :math:`d = G\alpha` whose utilities :math:`g_i \cdot d` maximise
    :math:`\sum_i \log(g_i \cdot d)` in a ball: the weights solve :math:`G^\top G\alpha = 1/\alpha`.

    Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, "Multi-Task Learning as a
    Bargaining Game", ICML 2022. Every objective gets the same share of the step:
    :math:`\alpha_i (g_i\cdot d) = 1`, and :math:`|d|^2 = \alpha^\top Q\alpha = N`. Solved exactly
    (damped Newton on the strictly convex :math:`\tfrac12\alpha^\top Q\alpha - \sum_i\log\alpha_i`,
    to machine precision, with its status and certificate :math:`\max_i|\alpha_i(Q\alpha)_i - 1|`:
    :func:`~moo_opt.solvers.solve_nash`), where the paper's code runs a few iterations of a
    convex-concave procedure with cvxpy and keeps the previous weights when it fails. [decision]
    When no direction improves every objective (a zero gradient, exactly opposed gradients), the
    bargaining problem has no solution: the blocked objectives get weight 0, the others their Nash
    solution, and the status says ``INFEASIBLE``.

    ``normalization="frobenius"`` reproduces the scale of the paper's code, which solves on
    :math:`Q/\|Q\|_F` and so applies :math:`\|Q\|_F^{1/2}\alpha`; the default ``"none"`` applies α
    itself (the direction is the same). The paper's code also clips the gradient norm (max_norm
    = 1) and can solve every k steps: use the trainer's gradient clipping for the former.

    Args:
        num_objectives: N.
        normalization: ``"none"`` or ``"frobenius"``.
        rcond, tol, max_iter: passed to the solver.
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "nash-mtl"
    reads_host = True

    def __init__(
        self,
        num_objectives: int,
        *,
        normalization: NashNormalization = "none",
        rcond: float | None = None,
        tol: float = 1e-12,
        max_iter: int = 100,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}"
            )
        self.normalization: NashNormalization = normalization
        self.rcond = rcond
        self.tol = float(tol)
        self.max_iter = int(max_iter)

    def _weights(
        self, values: Tensor, gram: Tensor
    ) -> tuple[Tensor, SolveResult, dict[str, Tensor]]:
        alpha, result = nash_mtl_weights(
            gram,
            normalization=self.normalization,
            rcond=self.rcond,
            tol=self.tol,
            max_iter=self.max_iter,
        )
        return alpha.to(values.device), result, {}
