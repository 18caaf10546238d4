"""moo-opt: gradient balancers for multi-objective training.

``from moo_opt import QPBalancer`` — see :mod:`moo_opt.balancers` for the policies,
:mod:`moo_opt.solvers` for the QP solvers and :mod:`moo_opt.gradients` for the autograd plumbing.
"""

from moo_opt.balancers import (
    AlignedMTLBalancer,
    BalanceInfo,
    Balancer,
    CAGradBalancer,
    CoarseToFineBalancer,
    ConFIGBalancer,
    DualProjBalancer,
    DWABalancer,
    FairGradBalancer,
    FAMOBalancer,
    FixedWeights,
    GradDropBalancer,
    GradNormBalancer,
    GramianBalancer,
    IMTLGBalancer,
    KrumBalancer,
    MGDABalancer,
    NashMTLBalancer,
    NonFiniteLossError,
    PCGradBalancer,
    QPBalancer,
    RLWBalancer,
    SDMGradBalancer,
    TrimmedMeanBalancer,
    UncertaintyWeighting,
    UPGradBalancer,
)
from moo_opt.registry import available, create, options, register
from moo_opt.training import balanced_step

__version__ = "0.1.0"

__all__ = [
    "AlignedMTLBalancer",
    "BalanceInfo",
    "Balancer",
    "CAGradBalancer",
    "CoarseToFineBalancer",
    "ConFIGBalancer",
    "DualProjBalancer",
    "DWABalancer",
    "FairGradBalancer",
    "FAMOBalancer",
    "FixedWeights",
    "GradDropBalancer",
    "GradNormBalancer",
    "GramianBalancer",
    "IMTLGBalancer",
    "KrumBalancer",
    "MGDABalancer",
    "NashMTLBalancer",
    "NonFiniteLossError",
    "PCGradBalancer",
    "QPBalancer",
    "RLWBalancer",
    "SDMGradBalancer",
    "TrimmedMeanBalancer",
    "UncertaintyWeighting",
    "UPGradBalancer",
    "available",
    "balanced_step",
    "create",
    "options",
    "register",
]
