"""DualProj (Quinton & Rey, 2024): the mean gradient projected onto the gradients' dual cone."""

from __future__ import annotations

from moo_opt.balancers.upgrad import DualConeBalancer
from moo_opt.registry import register
from moo_opt.weightings import dualproj_weights


@register
class DualProjBalancer(DualConeBalancer):
    r"""The preference-weighted mean of the gradients, :math:`Gu`, projected onto the dual cone
    :math:`\{x : G^\top x \ge 0\}` of the gradients.

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (the ``DualProj``
    aggregator of TorchJD; the projection is Equation 11 of Lopez-Paz & Ranzato, "Gradient
    Episodic Memory for Continual Learning", NeurIPS 2017, applied to the mean). In weight space
    the projection of :math:`Gu` is :math:`Gv` with

    .. math:: v = \arg\min_{v \ge u} \tfrac12 v^\top Q v, \qquad Q = G^\top G,

    the box QP of one of UPGrad's rows, computed exactly by our active-set solver
    (:func:`~moo_opt.solvers.solve_box_qp`, with its status and KKT certificate; no ridge on Q,
    where TorchJD's quadprog projector adds ``1e-4·I`` to the normalised Gramian). The weights on
    the raw losses are :math:`w = v`. Promise, checked by the tests: :math:`g_j \cdot d \ge 0` for
    every j (the KKT multiplier of the bound is :math:`Qv \ge 0`), and :math:`d = Gu` when the
    mean conflicts with no gradient (:math:`Qu \ge 0`). UPGrad projects each gradient and sums;
    DualProj projects their mean once (one QP instead of N).

    Args:
        num_objectives: N.
        task_weights: the preferences u (N finite numbers ≥ 0), default 1/N each (TorchJD's mean).
        rcond, tol: passed to the solver.
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "dualproj"
    rule = staticmethod(dualproj_weights)
