"""Small random models with two or more losses, shared by the balancer tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from moo_opt import BalanceInfo, Balancer, balanced_step


@dataclass
class ToyProblem:
    """A shared trunk with one head per objective; losses of very different scales."""

    trunk: nn.Module
    heads: nn.ModuleList
    x: Tensor
    targets: list[Tensor]
    scales: list[float]

    def losses(self) -> list[Tensor]:
        h = self.trunk(self.x)
        return [
            s * ((head(h) - t) ** 2).mean()
            for head, t, s in zip(self.heads, self.targets, self.scales)
        ]

    def outputs(self, index: Tensor | None = None) -> list[Tensor]:
        """Each head's output on the batch, or on its samples ``index`` alone."""
        h = self.trunk(self.x if index is None else self.x[index])
        return [head(h) for head in self.heads]

    def losses_of(self, outputs: list[Tensor], index: Tensor | None = None) -> list[Tensor]:
        """The losses of :meth:`outputs` (of the samples ``index``): :meth:`losses`' formula."""
        targets = self.targets if index is None else [t[index] for t in self.targets]
        return [s * ((o - t) ** 2).mean() for o, t, s in zip(outputs, targets, self.scales)]

    def shared(self) -> list[Tensor]:
        return list(self.trunk.parameters())

    def all_parameters(self) -> list[Tensor]:
        return list(self.trunk.parameters()) + list(self.heads.parameters())

    def snapshot(self) -> list[Tensor]:
        return [p.detach().clone() for p in self.all_parameters()]

    def grads(self) -> list[Tensor | None]:
        return [None if p.grad is None else p.grad.detach().clone() for p in self.all_parameters()]


def toy_problem(
    seed: int = 0,
    num_objectives: int = 2,
    width: int = 8,
    batch: int = 16,
    scales: list[float] | None = None,
    dtype: torch.dtype = torch.float64,
) -> ToyProblem:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, width)).to(dtype)
    heads = nn.ModuleList([nn.Linear(width, 1).to(dtype) for _ in range(num_objectives)])
    x = torch.randn(batch, 4, generator=gen, dtype=dtype)
    targets = [torch.randn(batch, 1, generator=gen, dtype=dtype) for _ in range(num_objectives)]
    scales = scales or [10.0 ** (2 * i) for i in range(num_objectives)]
    return ToyProblem(trunk, heads, x, targets, scales)


def subbatch_step(
    problem: ToyProblem, balancer: Balancer, optimizer: torch.optim.Optimizer, index: Tensor
) -> BalanceInfo:
    """:func:`~moo_opt.balanced_step` whose amortised update recomputes the losses on the samples
    ``index`` alone, against their losses before the step taken from the step's own forward."""
    kept: list[list[Tensor]] = []

    def losses() -> list[Tensor]:
        outputs = problem.outputs()
        kept.append([o.detach() for o in outputs])
        return problem.losses_of(outputs)

    def update_losses() -> tuple[list[Tensor], list[Tensor]]:
        before = problem.losses_of([o[index] for o in kept[0]], index)
        return before, problem.losses_of(problem.outputs(index), index)

    return balanced_step(balancer, optimizer, losses, problem.shared(), update_losses=update_losses)
