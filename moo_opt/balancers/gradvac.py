"""GradVac (Wang, Tsvetkov, Firat & Cao, ICLR 2021): PCGrad's surgery with adaptive cosine
targets, computed on the Gramian."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from moo_opt.balancers.base import Gramian, GramianBalancer, NonFinite, finite_number
from moo_opt.registry import register

_EPS = float(np.finfo(np.float64).eps)


class GradVacStep(NamedTuple):
    """One step of :func:`gradvac`."""

    #: (N,) the weights on the raw gradients: the summed direction is :math:`G w`
    weights: Tensor
    #: (N, N) row i: the coefficients of :math:`g_i^{GV} = G c_i`
    coefficients: Tensor
    #: (N, N) the targets :math:`\hat\phi` after the step's EMA updates
    targets: Tensor
    #: pairs vaccinated (their cosine was below its target)
    vaccinations: int
    #: pairs below a target of exactly 1, which no finite vaccination reaches (not vaccinated)
    unreachable: int


def _vaccinate_row(
    q: np.ndarray, targets: np.ndarray, i: int, order: list[int], beta: float
) -> tuple[np.ndarray, int, int]:
    """``(c_i, vaccinations, unreachable)`` for objective i, visiting ``order``; updates row i of
    ``targets`` in place."""
    c = np.zeros(q.shape[0])
    c[i] = 1.0
    cq = q[i].copy()  # the dot products of g_i^GV with every g_j
    root = np.sqrt(np.clip(np.diag(q), 0.0, None))
    vaccinations = unreachable = 0
    for j in order:
        norm2 = float(c @ cq)
        # |Gc|² within its rounding error (8 n ε (Σ|c_k||g_k|)²): g_i^GV is zero, no cosine
        if q[j, j] <= 0.0 or norm2 <= 8 * q.shape[0] * _EPS * float(np.abs(c) @ root) ** 2:
            continue  # a zero gradient has no direction: nothing done, its target kept
        n_i, n_j = math.sqrt(norm2), float(root[j])
        phi = min(1.0, max(-1.0, float(cq[j]) / (n_i * n_j)))
        target = float(targets[i, j])
        if phi < target:
            if target >= 1.0:
                unreachable += 1
            else:
                s_t, s_p = math.sqrt(1.0 - target * target), math.sqrt(1.0 - phi * phi)
                a = n_i * (target * s_p - phi * s_t) / (n_j * s_t)
                c[j] += a
                cq += a * q[j]
                vaccinations += 1
        targets[i, j] = min(1.0, max(-1.0, (1.0 - beta) * target + beta * phi))
    return c, vaccinations, unreachable


def gradvac(
    gram: Tensor, targets: Tensor, beta: float, generator: torch.Generator | None = None
) -> GradVacStep:
    r"""GradVac's surgery on the Gramian ``gram`` (N×N) with the targets :math:`\hat\phi`
    (N×N, not modified: the updated ones are returned), in float64 on the host. For each i the
    other objectives are visited in the order ``torch.randperm(N - 1, generator=generator)`` of
    the list :math:`[j \ne i]` (TorchJD's draws). See :class:`GradVacBalancer` for the rule."""
    q = gram.detach().to("cpu", torch.float64).numpy()
    new = targets.detach().to("cpu", torch.float64).numpy().copy()
    n = q.shape[0]
    coeffs = np.zeros((n, n))
    vaccinations = unreachable = 0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        order = [others[k] for k in torch.randperm(n - 1, generator=generator).tolist()]
        coeffs[i], done, missed = _vaccinate_row(q, new, i, order, beta)
        vaccinations, unreachable = vaccinations + done, unreachable + missed
    c = torch.from_numpy(coeffs)
    return GradVacStep(c.sum(dim=0), c, torch.from_numpy(new), vaccinations, unreachable)


@register
class GradVacBalancer(GramianBalancer):
    r"""Gradient Vaccine: PCGrad's surgery, but each pair's cosine is raised to an adaptive
    target, an EMA of the cosines seen, instead of to 0.

    Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models", ICLR 2021 (Algorithm 2). For each i,
    :math:`g_i^{GV} = g_i`, then for each :math:`j \ne i` in a random order, with
    :math:`\phi_{ij} = \cos(g_i^{GV}, g_j)` and the target :math:`\hat\phi_{ij}`: if
    :math:`\phi_{ij} < \hat\phi_{ij}`,

    .. math:: g_i^{GV} \leftarrow g_i^{GV} + \frac{|g_i^{GV}| \bigl(\hat\phi_{ij}
        \sqrt{1-\phi_{ij}^2} - \phi_{ij} \sqrt{1-\hat\phi_{ij}^2}\bigr)}
        {|g_j| \sqrt{1-\hat\phi_{ij}^2}}\, g_j,

    after which :math:`\cos(g_i^{GV}, g_j) = \hat\phi_{ij}` exactly; then, for every pair visited
    (vaccinated or not), :math:`\hat\phi_{ij} \leftarrow (1-\beta)\hat\phi_{ij} + \beta\phi_{ij}`
    with the cosine before the vaccination. The targets start at 0, where the vaccination is
    PCGrad's projection (:math:`\phi < 0` raised to 0). The direction is
    :math:`\sum_i g_i^{GV}`. As in :class:`~moo_opt.PCGradBalancer`, every
    :math:`g_i^{GV} = G c_i` stays in the span of the gradients, so the surgery runs exactly on
    the N×N Gramian (float64, on the host: one read per step; :func:`gradvac`) and the direction
    is applied as weights :math:`w = \sum_i c_i` on the raw losses, so ``.grad`` is :math:`G w`.

    The paper applies the rule per layer (or other parameter group), with one target per group;
    here it is applied once, to the gradients of all the balanced parameters (its "whole model"
    granularity), or to the Gramian at the representation (``gramian``). The orders are drawn
    from the balancer's own generator (``seed``) as TorchJD's ``GradVac`` draws them, and the
    generator and the targets :math:`\hat\phi` (N×N, float64) are in the state dict. No
    denominator is padded (TorchJD and LibMTL add 1e-8 to two): a pair with a zero
    :math:`g_j`, or a :math:`g_i^{GV}` that cancelled to zero within rounding, has no cosine and
    is skipped, its target unchanged; a target of exactly 1, which no finite vaccination reaches,
    leaves the pair as it is (counted in ``unreachable``). The weights are always finite.

    Args:
        num_objectives: N.
        beta: the EMA's weight on the new cosine, in (0, 1] (default 0.5, TorchJD's and LibMTL's;
            1: the target is the last step's cosine).
        seed: seed of the order generator.
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.

    Extras: ``vaccinations`` (pairs vaccinated this step), ``unreachable`` (pairs below a target
    of 1) and ``target_mean`` (the mean of the off-diagonal targets after the step; 0 for N = 1).
    """

    name = "gradvac"
    reads_host = True

    def __init__(
        self,
        num_objectives: int,
        *,
        beta: float = 0.5,
        seed: int = 0,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        self.beta = finite_number("beta", beta, 0.0, 1.0, above=True)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.targets = torch.zeros(num_objectives, num_objectives, dtype=torch.float64)

    def _weights(self, values: Tensor, gram: Tensor) -> tuple[Tensor, None, dict[str, Tensor]]:
        step = gradvac(gram, self.targets, self.beta, self.generator)
        self.targets = step.targets
        n = self.num_objectives
        off = step.targets[~torch.eye(n, dtype=torch.bool)]
        extras = {
            "vaccinations": torch.tensor(float(step.vaccinations), dtype=torch.float64),
            "unreachable": torch.tensor(float(step.unreachable), dtype=torch.float64),
            "target_mean": off.mean() if n > 1 else torch.zeros((), dtype=torch.float64),
        }
        return (
            step.weights.to(values.device),
            None,
            {k: v.to(values.device) for k, v in extras.items()},
        )

    def _state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "targets": self.targets}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        targets = state["targets"]
        n = self.num_objectives
        if not isinstance(targets, Tensor) or targets.shape != (n, n):
            raise ValueError(f"state_dict entry 'targets' must be a tensor of shape ({n}, {n})")
        self.generator.set_state(state["generator"])
        self.targets = targets.to(torch.float64)
