"""Exact balancing across processes (``torch.distributed``, e.g. under ``torchrun``).

Averaging each rank's Gramian or weights is not the problem one process would solve on the
whole batch. What is: average each objective's *gradient* over the ranks before the Gramian is
formed, and the loss values before they enter any weight. With equal per-rank batches and
mean-reduced losses, the averages are exactly the gradients and losses of the concatenated
batch, so every rank computes the same weights and the same update as a single process would.

Cost per step: one all-reduce of N floats (the losses) plus, for the Gramian balancers (Solution 2,
MGDA), N gradient all-reduces against the single one of the standard loss; the loss-weighted
balancers (fixed, Solution 1) all-reduce the combined gradient once, as DDP would. Each all-reduce
is one flattened buffer (a single bucket holding every parameter's gradient), not one call per
parameter; it cannot overlap with the backward pass as DDP's buckets do, because the weights depend
on all of them. A flag vector of which parameters each objective reaches is reduced too (a host read
per objective). The balancers do this themselves when a process group with more than one rank is
initialised: do not wrap the model in DistributedDataParallel as well (or use its ``no_sync()``), or
the gradients would be reduced twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """The number of processes balancing together (1 without an initialised process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def mean_(tensor: Tensor) -> Tensor:
    """All-reduce ``tensor`` in place to its mean over the ranks (no-op for one process)."""
    n = world_size()
    if n > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(n)
    return tensor


def mean_tensors_(tensors: Sequence[Tensor | None], like: Sequence[Tensor]) -> list[Tensor | None]:
    """Average a list of gradients over the ranks with one all-reduce of a flattened buffer.

    ``None`` entries (a parameter this rank's objective did not reach) count as zeros, since
    another rank may have reached it; the result has a tensor wherever any rank had one.
    """
    n = world_size()
    if n <= 1 or not like:
        return list(tensors)
    present = torch.tensor(
        [t is not None for t in tensors], dtype=torch.uint8, device=like[0].device
    )
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    flat = torch.cat(
        [(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(tensors, like)]
    )
    mean_(flat)
    out: list[Tensor | None] = []
    offset = 0
    for keep, p in zip(present.tolist(), like):
        chunk = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        out.append(chunk.clone() if keep else None)
    return out
