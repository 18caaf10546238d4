"""Comparing balancer states bit for bit."""

from __future__ import annotations

import torch


def same_entry(a: object, b: object) -> bool:
    """Equal state entries: tensors bit for bit, lists of them (the per-coordinate buffers of
    :class:`~moo_opt.balancers.coordinatewise.CoordinateBuffers`) element by element, other
    values by ``==``."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_entry, a, b))
    return a == b
