"""MGDA (Désidéri 2012; Sener & Koltun 2018): the min-norm point of the gradients' convex hull."""

from __future__ import annotations

from torch import Tensor

from moo_opt.balancers.base import Gramian, GramianBalancer, NonFinite
from moo_opt.registry import register
from moo_opt.solvers import SolveResult
from moo_opt.weightings import MGDANormalization as Normalization
from moo_opt.weightings import mgda_weights

_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@register
class MGDABalancer(GramianBalancer):
    r"""Multiple-gradient descent: the common descent direction of minimum norm.

    With the gradients normalised as :math:`\tilde g_i = g_i / n_i`, solve
    :math:`\min_{\alpha \in \Delta} |\tilde G \alpha|^2` over the simplex
    (:func:`~moo_opt.solvers.solve_simplex_qp`, exact) and apply
    :math:`d = \sum_i \alpha_i \tilde g_i`, i.e. the weights :math:`w_i = \alpha_i / n_i` on the raw
    losses (the direction is the min-norm point of the *normalised* gradients, as in LibMTL; Sener
    & Koltun's code applies α to the raw losses instead, which is a different direction unless
    ``normalization="none"``). Normalisations :math:`n_i`: ``"none"`` (1), ``"l2"``
    (:math:`|g_i|`), ``"loss"`` (:math:`L_i`), ``"loss+"`` (:math:`L_i |g_i|`); a zero norm is
    replaced by 1. Désidéri, "Multiple-gradient descent algorithm (MGDA) for multiobjective
    optimization", C. R. Math. 2012; Sener & Koltun, "Multi-Task Learning as Multi-Objective
    Optimization", NeurIPS 2018. ``shared_only=True`` solves over the parameters two objectives or
    more reach and gives the others their objective's own gradient, as Sener & Koltun treat
    task-specific parameters (see :class:`~moo_opt.GramianBalancer`). ``gramian="representation"``
    balances the gradients at the shared trunk's output instead (MGDA-UB, Sener & Koltun's
    upper-bound approximation; see :class:`~moo_opt.GramianBalancer`).
    """

    name = "mgda"

    def __init__(
        self,
        num_objectives: int,
        *,
        normalization: Normalization = "none",
        rcond: float | None = None,
        shared_only: bool = False,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        self.shared_only = bool(shared_only)
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}"
            )
        self.normalization: Normalization = normalization
        self.rcond = rcond

    def _weights(
        self, values: Tensor, gram: Tensor
    ) -> tuple[Tensor, SolveResult, dict[str, Tensor]]:
        extras: dict[str, Tensor] = {}
        w, result = mgda_weights(
            gram, values, normalization=self.normalization, rcond=self.rcond, extras=extras
        )
        return w, result, extras
