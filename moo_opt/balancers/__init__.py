"""Balancing policies, one module each, behind the API of
:class:`~moo_opt.balancers.base.Balancer`."""

from moo_opt.balancers.aligned import AlignedMTLBalancer
from moo_opt.balancers.base import BalanceInfo, Balancer, GramianBalancer, NonFiniteLossError
from moo_opt.balancers.cagrad import CAGradBalancer
from moo_opt.balancers.coarse_to_fine import CoarseToFineBalancer
from moo_opt.balancers.config import ConFIGBalancer
from moo_opt.balancers.dbmtl import DBMTLBalancer
from moo_opt.balancers.dualproj import DualProjBalancer
from moo_opt.balancers.dwa import DWABalancer
from moo_opt.balancers.excessmtl import ExcessMTLBalancer
from moo_opt.balancers.fairgrad import FairGradBalancer
from moo_opt.balancers.famo import FAMOBalancer
from moo_opt.balancers.fixed import FixedWeights
from moo_opt.balancers.graddrop import GradDropBalancer
from moo_opt.balancers.gradnorm import GradNormBalancer
from moo_opt.balancers.gradvac import GradVacBalancer
from moo_opt.balancers.imtl import IMTLGBalancer
from moo_opt.balancers.krum import KrumBalancer
from moo_opt.balancers.mgda import MGDABalancer
from moo_opt.balancers.moco import MoCoBalancer
from moo_opt.balancers.nash import NashMTLBalancer
from moo_opt.balancers.pcgrad import PCGradBalancer
from moo_opt.balancers.qp import QPBalancer
from moo_opt.balancers.rlw import RLWBalancer
from moo_opt.balancers.sdmgrad import SDMGradBalancer
from moo_opt.balancers.trimmed_mean import TrimmedMeanBalancer
from moo_opt.balancers.uncertainty import UncertaintyWeighting
from moo_opt.balancers.upgrad import UPGradBalancer

__all__ = [
    "AlignedMTLBalancer",
    "BalanceInfo",
    "Balancer",
    "CAGradBalancer",
    "CoarseToFineBalancer",
    "ConFIGBalancer",
    "DBMTLBalancer",
    "DualProjBalancer",
    "DWABalancer",
    "ExcessMTLBalancer",
    "FairGradBalancer",
    "FAMOBalancer",
    "FixedWeights",
    "GradDropBalancer",
    "GradNormBalancer",
    "GradVacBalancer",
    "GramianBalancer",
    "IMTLGBalancer",
    "KrumBalancer",
    "MGDABalancer",
    "MoCoBalancer",
    "NashMTLBalancer",
    "NonFiniteLossError",
    "PCGradBalancer",
    "QPBalancer",
    "RLWBalancer",
    "SDMGradBalancer",
    "TrimmedMeanBalancer",
    "UncertaintyWeighting",
    "UPGradBalancer",
]
