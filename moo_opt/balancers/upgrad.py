"""UPGrad (Quinton & Rey, 2024): the mean of the gradients' projections onto their dual cone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from torch import Tensor

from moo_opt.balancers.base import Gramian, GramianBalancer, NonFinite, preferences
from moo_opt.registry import register
from moo_opt.solvers import SolveResult
from moo_opt.weightings import upgrad_weights


class DualConeBalancer(GramianBalancer):
    """The balancers that project onto the gradients' dual cone with the box solver (UPGrad,
    DualProj): the same options (preferences u, ``rcond``, ``tol``), and weights from the class's
    :attr:`rule`, a weighting of :mod:`moo_opt.weightings`."""

    reads_host = True
    #: ``rule(gram, task_weights=, rcond=, tol=) -> (w, SolveResult)``
    rule: ClassVar[Callable[..., tuple[Tensor, SolveResult]]]

    def __init__(
        self,
        num_objectives: int,
        *,
        task_weights: Sequence[float] | None = None,
        rcond: float | None = None,
        tol: float = 1e-12,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        self.task_weights = preferences(task_weights, num_objectives)
        self.rcond = rcond
        self.tol = float(tol)

    def _weights(
        self, values: Tensor, gram: Tensor
    ) -> tuple[Tensor, SolveResult, dict[str, Tensor]]:
        w, result = self.rule(gram, task_weights=self.task_weights, rcond=self.rcond, tol=self.tol)
        return w.to(values.device), result, {}


@register
class UPGradBalancer(DualConeBalancer):
    r"""Unconflicting projection of gradients: every gradient (scaled by its preference
    :math:`u_i`) is projected onto the dual cone :math:`\{x : G^\top x \ge 0\}` of the gradients,
    and the projections are summed.

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (the aggregator of
    TorchJD). In weight space the projection of :math:`u_i g_i` is :math:`G v_i` with
    :math:`v_i = \arg\min_{v \ge u_i e_i} \tfrac12 v^\top Q v` (:math:`Q = G^\top G`); the weights
    on the raw losses are :math:`w = \sum_i v_i`. Each :math:`v_i` is computed exactly by our
    active-set solver (:func:`~moo_opt.solvers.project_to_dual_cone`, with its status and KKT
    certificate; no regularisation of Q is needed, unlike a generic QP solver). Promise, checked
    by the tests: :math:`g_j \cdot d \ge 0` for every j (no objective increases to first order), and
    :math:`d = \sum_i u_i g_i` when no two gradients conflict.

    Args:
        num_objectives: N.
        task_weights: the preferences u (N finite numbers ≥ 0), default 1/N each (TorchJD's mean).
        rcond, tol: passed to the solver.
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "upgrad"
    rule = staticmethod(upgrad_weights)
