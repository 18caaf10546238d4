"""Small random models with two or more losses, shared by the balancer tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


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
