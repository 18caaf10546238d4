"""Validation of Gram matrices: shape, finiteness, symmetry, positive semi-definiteness."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Relative asymmetry tolerated per input precision: Gram matrices computed in low precision are
# symmetric only up to rounding. The symmetric part is what gets solved.
_SYMMETRY_TOL = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-4}
_SYMMETRY_TOL_LOW = 1e-2  # float16, bfloat16


@dataclass(frozen=True)
class Gramian:
    """A validated, symmetrised float64 Gram matrix, on the host and/or its device."""

    n: int
    device: torch.device
    #: machine epsilon of the input's precision (sets the default ``rcond``)
    eps: float
    host: np.ndarray | None
    dev: Tensor | None

    def default_rcond(self) -> float:
        return 100.0 * self.eps


def _eps_of(dtype: torch.dtype | np.dtype) -> float:
    if isinstance(dtype, torch.dtype):
        return float(torch.finfo(dtype).eps) if dtype.is_floating_point else float(np.finfo(np.float64).eps)
    return float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else float(np.finfo(np.float64).eps)


def _symmetry_tol(eps: float) -> float:
    if eps <= np.finfo(np.float64).eps:
        return _SYMMETRY_TOL[np.dtype(np.float64)]
    if eps <= np.finfo(np.float32).eps:
        return _SYMMETRY_TOL[np.dtype(np.float32)]
    return _SYMMETRY_TOL_LOW


def _check_shape(shape: tuple[int, ...]) -> int:
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"Q must be a square N×N Gram matrix, got shape {tuple(shape)}")
    if shape[0] == 0:
        raise ValueError("Q is empty (0×0): pass the Gram matrix of at least one gradient")
    return int(shape[0])


def validate_host(a: np.ndarray, eps: float) -> np.ndarray:
    """Check a float64 host matrix and return its symmetric part (raises ``ValueError``)."""
    if not np.isfinite(a.sum()) and not np.isfinite(a).all():
        raise ValueError("Q has NaN or Inf entries: check the losses and gradients it was built from")
    if not np.array_equal(a, a.T):
        s = np.sqrt(np.abs(np.diag(a)))
        gap = np.abs(a - a.T) - _symmetry_tol(eps) * np.outer(s, s)
        if (gap > 0.0).any():
            i, j = np.unravel_index(int(np.argmax(gap)), gap.shape)
            raise ValueError(
                f"Q is not symmetric: Q[{i},{j}]={a[i, j]!r} but Q[{j},{i}]={a[j, i]!r}; "
                "pass a Gram matrix GᵀG"
            )
        a = 0.5 * (a + a.T)
    d = np.diag(a)
    if (d < 0.0).any():
        i = int(np.argmin(d))
        if d[i] < -_symmetry_tol(eps) * max(float(d.max()), 0.0) or d.max() <= 0.0:
            raise ValueError(
                f"Q is not positive semi-definite: diagonal entry Q[{i},{i}]={d[i]!r} < 0; "
                "pass a Gram matrix GᵀG"
            )
        a = a.copy()
        np.fill_diagonal(a, np.maximum(d, 0.0))
    return a


def not_psd_error(detail: str) -> ValueError:
    return ValueError(f"Q is not positive semi-definite ({detail}); pass a Gram matrix GᵀG")


def prepare(q: Tensor | np.ndarray, validate: bool | None) -> Gramian:
    """Turn the user's ``Q`` into a :class:`Gramian`.

    ``validate=None`` checks values everywhere except for N ≤ 2 on a non-CPU device, where the
    checks would synchronise with the host: there they are deferred into the result's status
    (``INVALID_INPUT``, uniform weights). ``validate=True`` forces the checks (and the sync);
    ``validate=False`` skips them.
    """
    if isinstance(q, Tensor):
        if q.is_complex():
            raise ValueError("Q must be real, got a complex tensor")
        n = _check_shape(tuple(q.shape))
        eps = _eps_of(q.dtype)
        q = q.detach()
        if q.device.type != "cpu" and n <= 2 and validate is not True:
            dev = q.to(torch.float64)
            return Gramian(n, q.device, eps, None, 0.5 * (dev + dev.mT))
        # a copy: the result keeps it for its certificate, whatever the caller does to Q later
        host = q.to("cpu", torch.float64).numpy().copy()
        device = q.device
    else:
        arr = np.asarray(q)
        if np.iscomplexobj(arr):
            raise ValueError("Q must be real, got a complex array")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ValueError(f"Q must be a numeric matrix, got dtype {arr.dtype}")
        n = _check_shape(arr.shape)
        eps = _eps_of(arr.dtype)
        host = np.array(arr, dtype=np.float64)
        device = torch.device("cpu")
    if validate is False:
        host = 0.5 * (host + host.T)
    else:
        host = validate_host(host, eps)
    return Gramian(n, device, eps, host, None)


def to_weights(w: np.ndarray, device: torch.device) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64))
    return t if device.type == "cpu" else t.to(device, non_blocking=True)
