"""The plumbing of the coordinate-wise balancers (trimmed mean, GradDrop, DB-MTL, MoCo,
ExcessMTL): their rule combines the N gradients' values coordinate by coordinate, or keeps running
statistics per coordinate, which no weighting of the current whole gradients gives, so they work
on the per-objective gradients themselves rather than on a Gramian."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor

from moo_opt.balancers.base import BalanceInfo, Balancer
from moo_opt.gradients import ObjectiveGradients, accumulate_grad, objective_gradients


def stacked(grads: ObjectiveGradients) -> tuple[list[Tensor], list[Tensor]]:
    """``(params, matrices)``: for each balanced parameter that some objective reaches, the
    (N, numel) matrix of the objectives' gradients, zeros for an objective that does not reach it
    (as in :meth:`ObjectiveGradients.matrix`); a parameter no objective reaches is left out."""
    params: list[Tensor] = []
    matrices: list[Tensor] = []
    for k, p in enumerate(grads.params):
        rows = [g[k] for g in grads.grads]
        if all(r is None for r in rows):
            continue
        zero = torch.zeros_like(next(r for r in rows if r is not None))
        params.append(p)
        matrices.append(torch.stack([(r if r is not None else zero).reshape(-1) for r in rows]))
    return params, matrices


class CoordinateBuffers:
    """Per-coordinate running statistics of the N objectives (an average of their gradients, a sum
    of their squares...): one (N, numel) tensor per balanced parameter, in the gradients' dtype
    and on their device, zeros until the first step writes them. The balanced coordinates must
    stay the same from step to step (a clear error otherwise); :meth:`state` and :meth:`load`
    give the balancer's state dict an exact copy."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.tensors: list[Tensor] | None = None

    def like(self, matrices: list[Tensor]) -> list[Tensor]:
        """The buffers matching the (N, numel) ``matrices`` (zeros the first time), updated in
        place by the caller."""
        if self.tensors is None:
            self.tensors = [torch.zeros_like(m) for m in matrices]
        held = [tuple(t.shape) for t in self.tensors]
        if held != [tuple(m.shape) for m in matrices]:
            raise ValueError(
                f"the balanced coordinates changed since {self.what} began ({len(held)} "
                f"parameters held, {len(matrices)} given, or other shapes): balance the same "
                "parameters, reached by the same objectives, every step, or create the balancer "
                "afresh"
            )
        self.tensors = [t.to(m.device) for t, m in zip(self.tensors, matrices)]
        return self.tensors

    def state(self) -> list[Tensor]:
        """A copy for the state dict (empty before the first step)."""
        return [t.clone() for t in self.tensors] if self.tensors is not None else []

    def load(self, value: Any) -> None:
        """Restore a copy made by :meth:`state`."""
        if not isinstance(value, list) or not all(isinstance(t, Tensor) for t in value):
            raise ValueError(f"state_dict entry for {self.what} must be a list of tensors")
        self.tensors = [t.clone() for t in value] if value else None


class CoordinateBalancer(Balancer):
    r"""A balancer whose rule acts coordinate by coordinate on the N gradients' values.

    :meth:`_combine` gets, per balanced parameter, the (N, numel) matrix of the objectives'
    gradients (averaged over the ranks first under ``torch.distributed``, so that every rank
    combines the gradients of the whole batch, as :class:`~moo_opt.GramianBalancer` does) and
    returns the combined ``.grad`` of each parameter. ``info.weights`` cannot be coefficients
    with ``.grad = G w`` in general: each class documents the per-objective summary it reports.
    Leaves the losses reach outside the balanced set receive the plain combination
    ``Σᵢ cᵢ ∇Lᵢ`` with the coefficients :meth:`_plain` (the rule's own when nothing is trimmed or
    dropped). There is no Gramian, so no ``gramian="representation"``: representations passed to
    :meth:`backward` are refused.
    """

    def _backward(self, losses: list[Tensor], values: Tensor, params: list[Tensor]) -> BalanceInfo:
        # each objective's gradient of the whole batch
        grads = objective_gradients(losses, params).mean_over_ranks_()
        reached, matrices = stacked(grads)
        # each objective's sum of its values, in float64: NaN or Inf wherever a gradient has one
        sums = torch.stack(
            [
                sum((m[i].sum(dtype=torch.float64) for m in matrices), values.new_zeros(()))
                for i in range(self.num_objectives)
            ]
        )
        if not self._finite_or_skip(values, sums, what="a gradient"):
            return self._skipped(values)
        directions, weights, extras = self._combine(matrices, values)
        for p, d in zip(reached, directions):
            accumulate_grad(p, d.view_as(p))
        others = ObjectiveGradients([], [[] for _ in losses], grads.others, grads.other_grads)
        others.accumulate(self._plain(values))
        return BalanceInfo(weights=weights, losses=values, extras=extras, skips=self.skips)

    def combine(self, matrix: Tensor, values: Tensor | None = None) -> Tensor:
        """The rule on an (N, P) matrix of the N gradients' values: the (P,) combined direction,
        as :meth:`backward` gives it over the concatenated balanced parameters (a stochastic rule
        draws from the balancer's generator, a rule with running averages updates them: for
        inspection and tests). ``values``: the N losses' values, for a rule that reads them
        (DB-MTL); zeros when not given."""
        if values is None:
            values = matrix.new_zeros(self.num_objectives, dtype=torch.float64)
        directions, _, _ = self._combine([matrix], values.to(torch.float64))
        return directions[0]

    @abstractmethod
    def _combine(
        self, matrices: list[Tensor], values: Tensor
    ) -> tuple[list[Tensor], Tensor, dict[str, Tensor]]:
        """``(combined gradient of each parameter, flat; the reported (N,) weights on the losses'
        device; extras)`` from the (N, numel) matrix of each balanced parameter."""

    @abstractmethod
    def _plain(self, values: Tensor) -> Tensor:
        """The coefficients of the leaves outside the balanced set (float64, (N,))."""
