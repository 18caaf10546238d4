"""Pure math on Gram matrices: the equality-constrained QP (Solution 2), the simplex QP (MGDA),
Nash-MTL's bargaining weights, UPGrad's projections, CAGrad's inner problem, Aligned-MTL's
transform, ConFIG's direction, FairGrad's α-fair weights, SDMGrad's inner problem; and the
Euclidean projection onto the simplex (MoCo's step on its weights).

No autograd here: a solver takes ``Q = GᵀG`` (N×N) and returns a :class:`SolveResult` whose
weights, status and KKT certificate say exactly what was solved (the projection, exact and
closed-form, returns the point itself).
"""

from moo_opt.solvers.alignment import balance_transform
from moo_opt.solvers.box import project_to_dual_cone, solve_box_qp
from moo_opt.solvers.cagrad import cagrad_direction_weights, solve_cagrad
from moo_opt.solvers.config import solve_config
from moo_opt.solvers.equality import solve_equality_qp
from moo_opt.solvers.fairgrad import solve_fairgrad
from moo_opt.solvers.nash import solve_nash
from moo_opt.solvers.projection import project_to_simplex
from moo_opt.solvers.result import KKTReport, SolveResult, SolveStatus
from moo_opt.solvers.sdmgrad import solve_sdmgrad
from moo_opt.solvers.simplex import solve_simplex_qp

__all__ = [
    "KKTReport",
    "SolveResult",
    "SolveStatus",
    "solve_equality_qp",
    "solve_nash",
    "solve_simplex_qp",
    "balance_transform",
    "cagrad_direction_weights",
    "solve_cagrad",
    "project_to_dual_cone",
    "project_to_simplex",
    "solve_box_qp",
    "solve_config",
    "solve_fairgrad",
    "solve_sdmgrad",
]
