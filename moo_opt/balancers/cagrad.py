"""CAGrad (Liu et al., NeurIPS 2021): the best worst-case improvement near the average gradient."""

from __future__ import annotations

import math

from torch import Tensor

from moo_opt.balancers.base import Gramian, GramianBalancer, NonFinite
from moo_opt.registry import register
from moo_opt.solvers import SolveResult
from moo_opt.weightings import CAGradRescale, cagrad_weights

_RESCALES = ("none", "1+c^2", "1+c")


@register
class CAGradBalancer(GramianBalancer):
    r"""Conflict-averse gradient descent:
    :math:`d = \arg\max_{\|d - g_0\| \le c\|g_0\|} \min_i g_i\cdot d` around the average gradient
    :math:`g_0`.

    Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task Learning",
    NeurIPS 2021. Its dual: :math:`w^* = \arg\min_{w\in\Delta} g_w\cdot g_0 + c\|g_0\|\,\|g_w\|`
    with :math:`g_w = Gw`, then :math:`d = g_0 + \frac{c\|g_0\|}{\|g_w\|} g_w`, i.e. the weights
    :math:`\frac1N + \frac{c\|g_0\|}{\|g_w\|} w^*_i` on the raw losses, divided by
    :math:`1+c^2` (the paper code's default ``rescale``). The inner problem is solved exactly
    (:func:`~moo_opt.solvers.solve_cagrad`: a sequence of MGDA problems on shifted gradients
    and a closed form on the optimal support, certified by its KKT conditions), where the paper's
    code runs SciPy's SLSQP to its default tolerance. c = 0 gives the average gradient.

    Args:
        num_objectives: N.
        c: the radius factor c ≥ 0 (0.5, the paper code's default; 0.4 on NYUv2).
        rescale: divide by ``"1+c^2"`` (default), ``"1+c"`` or not at all (``"none"``).
        rcond, tol: passed to the solver.
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "cagrad"
    reads_host = True

    def __init__(
        self,
        num_objectives: int,
        *,
        c: float = 0.5,
        rescale: CAGradRescale = "1+c^2",
        rcond: float | None = None,
        tol: float = 1e-12,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        if not (math.isfinite(c) and c >= 0.0):
            raise ValueError(f"c must be finite and >= 0, got {c!r}")
        if rescale not in _RESCALES:
            raise ValueError(f"rescale must be one of {_RESCALES}, got {rescale!r}")
        self.c = float(c)
        self.rescale: CAGradRescale = rescale
        self.rcond = rcond
        self.tol = float(tol)

    def _weights(
        self, values: Tensor, gram: Tensor
    ) -> tuple[Tensor, SolveResult, dict[str, Tensor]]:
        extras: dict[str, Tensor] = {}
        w, result = cagrad_weights(
            gram, c=self.c, rescale=self.rescale, rcond=self.rcond, tol=self.tol, extras=extras
        )
        return w.to(values.device), result, {k: v.to(values.device) for k, v in extras.items()}
