"""FAMO (Liu et al., NeurIPS 2023) in its general form: Solution 1's update with FAMO's defaults."""

from __future__ import annotations

from moo_opt.balancers.coarse_to_fine import CoarseToFineBalancer
from moo_opt.registry import register


@register
class FAMOBalancer(CoarseToFineBalancer):
    r"""Fast Adaptive Multitask Optimization: amortised weights that make every log-loss fall at
    the same rate, with O(1) cost per step (no per-objective gradients).

    Liu, Liu, Jin, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023. The
    update rule is :class:`~moo_opt.CoarseToFineBalancer`'s (Solution 1 of the CVPR 2025 paper is
    FAMO applied to rate-distortion): the direction :math:`\sum_i z_i \nabla \log(L_i + \epsilon)`
    renormalised, :math:`z = \mathrm{softmax}(\xi)`; after the step, the logit gradient
    :math:`z \odot (\delta - \langle z, \delta\rangle)` with
    :math:`\delta_i = \log(L_i+\epsilon) - \log(L'_i+\epsilon)` and an Adam step of rate β with
    weight decay γ. FAMO's defaults differ from Solution 1's: the losses are taken as they are
    (offset ε = 1e-8 instead of 1; FAMO's lower bounds of the losses are 0 here, so pass ``offsets``
    to shift losses that can go negative), and γ = 0.01.

    Args: those of :class:`~moo_opt.CoarseToFineBalancer`, with ``offsets=1e-8`` and ``gamma=0.01``.
    """

    name = "famo"
    option_defaults = {"offsets": 1e-8, "gamma": 0.01}
