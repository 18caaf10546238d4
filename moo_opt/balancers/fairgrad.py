"""FairGrad (Ban & Ji, ICML 2024): α-fair resource allocation among the objectives."""

from __future__ import annotations

from torch import Tensor

from moo_opt.balancers.base import Gramian, GramianBalancer, NonFinite, finite_number, positive_int
from moo_opt.registry import register
from moo_opt.solvers import SolveResult
from moo_opt.weightings import fairgrad_weights


@register
class FairGradBalancer(GramianBalancer):
    r"""The direction :math:`d = Gw` whose improvements :math:`g_i \cdot d` maximise the α-fair
    utility :math:`\sum_i (g_i\cdot d)^{1-\alpha}/(1-\alpha)` in a ball: the weights solve
    :math:`(Qw)_i = w_i^{-1/\alpha}`, :math:`w > 0`.

    Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024 (Equation 4; TorchJD's
    ``FairGrad``). α = 1 is Nash-MTL's condition :math:`w_i (Qw)_i = 1` (proportional fairness);
    as α grows :math:`(Qw)_i/(Qw)_j = (w_j/w_i)^{1/\alpha} \to 1`: every objective gets the same
    improvement, the max-min fair (MGDA-like) direction; α → 0 tends to the plain sum. Solved
    exactly by :func:`~moo_opt.solvers.solve_fairgrad` (damped Newton on a strictly convex
    function, status and certificate), where the paper's code (and TorchJD) run
    ``scipy.optimize.least_squares`` from 1/N and apply whatever it returns. When no direction
    improves every objective, the blocked objectives get weight 0 and the status says
    ``INFEASIBLE`` (as :class:`~moo_opt.NashMTLBalancer`). The default α = 2 is the one of the
    paper's released training scripts.

    Args:
        num_objectives: N.
        alpha: the fairness α, a finite number > 0.
        rcond, tol, max_iter: passed to the solver.
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.

    Extras: ``improvement``, :math:`Qw` (each :math:`g_i \cdot d`).
    """

    name = "fairgrad"
    reads_host = True

    def __init__(
        self,
        num_objectives: int,
        *,
        alpha: float = 2.0,
        rcond: float | None = None,
        tol: float = 1e-12,
        max_iter: int = 100,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        if not (isinstance(tol, (int, float)) and tol > 0.0):
            raise ValueError(f"tol must be > 0, got {tol!r}")
        self.alpha = finite_number("alpha", alpha, above=True)
        self.rcond = rcond
        self.tol = float(tol)
        self.max_iter = positive_int("max_iter", max_iter)

    def _weights(
        self, values: Tensor, gram: Tensor
    ) -> tuple[Tensor, SolveResult, dict[str, Tensor]]:
        extras: dict[str, Tensor] = {}
        w, result = fairgrad_weights(
            gram,
            alpha=self.alpha,
            rcond=self.rcond,
            tol=self.tol,
            max_iter=self.max_iter,
            extras=extras,
        )
        return w.to(values.device), result, {k: x.to(values.device) for k, x in extras.items()}
