"""MGDA (Désidéri 2012; Sener & Koltun 2018): the min-norm point of the gradients' convex hull."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from moo_opt.balancers.base import GramianBalancer, NonFinite
from moo_opt.registry import register
from moo_opt.solvers import SolveResult, solve_simplex_qp

Normalization = Literal["none", "l2", "loss", "loss+"]
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
    task-specific parameters (see :class:`~moo_opt.GramianBalancer`).
    """

    name = "mgda"

    def __init__(
        self, num_objectives: int, *, normalization: Normalization = "none", rcond: float | None = None, shared_only: bool = False, nonfinite: NonFinite = "raise"
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        self.shared_only = bool(shared_only)
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
        self.normalization: Normalization = normalization
        self.rcond = rcond

    def normalizers(self, values: Tensor, gram: Tensor) -> Tensor:
        norms = gram.diagonal().clamp(min=0.0).sqrt()
        n = {
            "none": torch.ones_like(values),
            "l2": norms,
            "loss": values,
            "loss+": values * norms,
        }[self.normalization]
        return torch.where(n > 0.0, n, torch.ones_like(n))

    def _weights(self, values: Tensor, gram: Tensor) -> tuple[Tensor, SolveResult, dict[str, Tensor]]:
        n = self.normalizers(values, gram)
        result = solve_simplex_qp(gram / (n[:, None] * n[None, :]), rcond=self.rcond)
        alpha = result.weights.to(values.device)
        return alpha / n, result, {"alpha": alpha}

