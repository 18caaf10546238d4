"""Balancing policies, one module each, behind the API of :class:`~moo_opt.balancers.base.Balancer`."""

from moo_opt.balancers.base import BalanceInfo, Balancer, GramianBalancer, NonFiniteLossError
from moo_opt.balancers.coarse_to_fine import CoarseToFineBalancer
from moo_opt.balancers.fixed import FixedWeights
from moo_opt.balancers.mgda import MGDABalancer
from moo_opt.balancers.qp import QPBalancer

__all__ = [
    "BalanceInfo",
    "Balancer",
    "CoarseToFineBalancer",
    "FixedWeights",
    "GramianBalancer",
    "MGDABalancer",
    "NonFiniteLossError",
    "QPBalancer",
]
