"""The Euclidean projection onto the probability simplex: ``argmin |w − v|`` over ``w ≥ 0,
Σw = 1`` (MoCo's step on the weights)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def project_to_simplex(v: Tensor | np.ndarray, *, validate: bool | None = None) -> Tensor:
    r"""The point of the probability simplex nearest to ``v``, exactly (no iterations).

    :math:`w^* = \max(v - \tau, 0)` with the threshold :math:`\tau` that makes
    :math:`\sum_i w^*_i = 1` (the KKT conditions of :math:`\min \tfrac12|w - v|^2` subject to
    :math:`w \ge 0`, :math:`\mathbf 1^\top w = 1`: :math:`w_i - v_i + \tau - \nu_i = 0`,
    :math:`\nu \ge 0`, :math:`\nu_i w_i = 0`). With :math:`u` the entries of :math:`v` sorted in
    decreasing order and :math:`t_j = (\sum_{i \le j} u_i - 1)/j`,
    :math:`\tau = \max_j t_j` (Held, Wolfe & Crowder 1974; Condat, "Fast projection onto the
    simplex and the l1 ball", Math. Programming 2016): every :math:`t_j` is at most the
    threshold, since :math:`\sum_i \max(v_i - t_j, 0) \ge \sum_{i \le j} (u_i - t_j) = 1`, and
    :math:`t_\rho` is the threshold for the support size :math:`\rho`. One sort, one cumulative
    sum and one maximum, in float64 on ``v``'s device, without a host synchronisation; the
    result is exact up to rounding (:math:`|\sum_i w_i - 1|` of order :math:`N` ulps of
    :math:`\max(1, |v|_\infty)`), so there is no status to report.

    Args:
        v: the (N,) point to project (tensor or array; N ≥ 1, real, finite).
        validate: ``None`` checks the values on the CPU and skips the check on an accelerator
            (it would synchronise); ``True`` always checks, ``False`` never (NaN in, NaN out).

    Returns:
        The (N,) projection, float64 on ``v``'s device (the CPU for an array).
    """
    x = torch.as_tensor(v)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"v must be a non-empty vector (N,), got shape {tuple(x.shape)}")
    if x.is_complex() or not (x.is_floating_point() or x.dtype in _INTEGERS):
        raise ValueError(f"v must be real, got dtype {x.dtype}")
    x = x.detach().to(torch.float64)
    check = validate if validate is not None else x.device.type == "cpu"
    if check and not bool(torch.isfinite(x).all()):
        raise ValueError(f"v has NaN or Inf entries ({x.tolist()}): pass a finite point")
    u = torch.sort(x, descending=True).values
    sizes = torch.arange(1, x.numel() + 1, dtype=torch.float64, device=x.device)
    tau = ((torch.cumsum(u, 0) - 1.0) / sizes).max()
    return torch.clamp(x - tau, min=0.0)


_INTEGERS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
