"""Validation of Gram matrices: shape, finiteness, symmetry, positive semi-definiteness."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from moo_opt.solvers._tolerances import SYMMETRY_TOL, SYMMETRY_TOL_LOW


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
        return (
            float(torch.finfo(dtype).eps)
            if dtype.is_floating_point
            else float(np.finfo(np.float64).eps)
        )
    return (
        float(np.finfo(dtype).eps)
        if np.issubdtype(dtype, np.floating)
        else float(np.finfo(np.float64).eps)
    )


def _symmetry_tol(eps: float) -> float:
    if eps <= np.finfo(np.float64).eps:
        return SYMMETRY_TOL[np.dtype(np.float64)]
    if eps <= np.finfo(np.float32).eps:
        return SYMMETRY_TOL[np.dtype(np.float32)]
    return SYMMETRY_TOL_LOW


def _check_shape(shape: tuple[int, ...]) -> int:
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"Q must be a square N×N Gram matrix, got shape {tuple(shape)}")
    if shape[0] == 0:
        raise ValueError("Q is empty (0×0): pass the Gram matrix of at least one gradient")
    return int(shape[0])


def validate_host(a: np.ndarray, eps: float) -> np.ndarray:
    """Check a float64 host matrix and return its symmetric part (raises ``ValueError``).

    The fast checks come first (a finite sum, exact symmetry, a non-negative diagonal); the
    exact locating ones run only when a fast one fails.
    """
    if not math.isfinite(float(a.sum())) and not np.isfinite(a).all():
        raise ValueError(
            "Q has NaN or Inf entries: check the losses and gradients it was built from"
        )
    if not (a == a.T).all():
        s = np.sqrt(np.abs(np.diag(a)))
        gap = np.abs(a - a.T) - _symmetry_tol(eps) * np.outer(s, s)
        if (gap > 0.0).any():
            i, j = np.unravel_index(int(np.argmax(gap)), gap.shape)
            raise ValueError(
                f"Q is not symmetric: Q[{i},{j}]={a[i, j]!r} but Q[{j},{i}]={a[j, i]!r}; "
                "pass a Gram matrix GᵀG"
            )
        a = 0.5 * (a + a.T)
    d = a.diagonal()
    if float(d.min()) < 0.0:
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


_TORCH_EPS = {
    dt: float(torch.finfo(dt).eps)
    for dt in (torch.float64, torch.float32, torch.float16, torch.bfloat16)
}


def _validate_2x2(a: np.ndarray, eps: float) -> np.ndarray:
    """:func:`validate_host` for N ≤ 2 on Python floats (a few hundred nanoseconds)."""
    flat = a.ravel().tolist()
    if not all(map(math.isfinite, flat)):
        raise ValueError(
            "Q has NaN or Inf entries: check the losses and gradients it was built from"
        )
    if len(flat) == 1:
        if flat[0] < 0.0:
            raise ValueError(
                f"Q is not positive semi-definite: Q[0,0]={flat[0]!r} < 0; pass a Gram matrix GᵀG"
            )
        return np.array(a)
    q11, q12, q21, q22 = flat
    if q12 != q21 and abs(q12 - q21) > _symmetry_tol(eps) * math.sqrt(abs(q11 * q22)):
        raise ValueError(
            f"Q is not symmetric: Q[0,1]={q12!r} but Q[1,0]={q21!r}; pass a Gram matrix GᵀG"
        )
    if min(q11, q22) < 0.0:
        return validate_host(np.array(a), eps)  # the general message and tolerance
    m = 0.5 * (q12 + q21)
    return np.array(((q11, m), (m, q22)))


def prepare(q: Tensor | np.ndarray, validate: bool | None) -> Gramian:
    """Turn the user's ``Q`` into a :class:`Gramian` (always a copy: the result keeps it for its
    certificate, whatever the caller does to ``Q`` later).

    ``validate=None`` checks values everywhere except for N ≤ 2 on a non-CPU device, where the
    checks would synchronise with the host: there they are deferred into the result's status
    (``INVALID_INPUT``, uniform weights). ``validate=True`` forces the checks (and the sync);
    ``validate=False`` skips them.
    """
    if isinstance(q, Tensor):
        if q.is_complex():
            raise ValueError("Q must be real, got a complex tensor")
        n = _check_shape(tuple(q.shape))
        eps = _TORCH_EPS.get(q.dtype, _TORCH_EPS[torch.float64])
        q = q.detach()
        if q.device.type != "cpu" and n <= 2 and validate is not True:
            dev = q.to(torch.float64)
            return Gramian(n, q.device, eps, None, 0.5 * (dev + dev.mT))
        arr = q.to("cpu", torch.float64).numpy()
        device = q.device
    else:
        arr = np.asarray(q)
        if np.iscomplexobj(arr):
            raise ValueError("Q must be real, got a complex array")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ValueError(f"Q must be a numeric matrix, got dtype {arr.dtype}")
        n = _check_shape(arr.shape)
        eps = _eps_of(arr.dtype)
        arr = arr.astype(np.float64, copy=False)
        device = _CPU
    if validate is False:
        host = 0.5 * (arr + arr.T)
    elif n <= 2:
        host = _validate_2x2(arr, eps)
    else:
        host = validate_host(arr, eps)
        if host is arr:
            host = arr.copy()
    return Gramian(n, device, eps, host, None)


_CPU = torch.device("cpu")


def to_weights(w: np.ndarray, device: torch.device) -> Tensor:
    """A float64 tensor on ``device`` (sharing ``w``'s memory on the CPU)."""
    t = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64))
    return t if device.type == "cpu" else t.to(device)


def host_gramian(q: Tensor | np.ndarray, validate: bool | None) -> tuple[Gramian, np.ndarray]:
    """For the solvers that run on the host: the Gramian, validated unless ``validate=False`` (the
    solve synchronises anyway, so checking costs nothing extra), and its float64 host copy."""
    g = prepare(q, True if validate is None else validate)
    if g.host is not None:
        return g, g.host
    assert g.dev is not None  # N ≤ 2 on an accelerator with validate=False: prepare kept it there
    return g, g.dev.to("cpu").numpy()


def iteration_options(g: Gramian, rcond: float | None, tol: float, max_iter: int) -> float:
    """Check an iterative host solver's ``tol`` (> 0), ``max_iter`` (≥ 1) and ``rcond`` (≥ 0,
    default ``100·eps`` of the input's precision); returns the ``rcond`` to use."""
    if not tol > 0.0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    rc = g.default_rcond() if rcond is None else float(rcond)
    if not rc >= 0.0:
        raise ValueError(f"rcond must be >= 0, got {rcond}")
    return rc


def preference_vector(p: Tensor | np.ndarray | None, n: int, default: float) -> np.ndarray:
    """The (n,) float64 preferences ``p`` on the host, checked: n finite numbers (``default``
    each when None)."""
    if p is None:
        return np.full(n, default)
    arr = (
        p.detach().to("cpu", torch.float64).numpy()
        if isinstance(p, Tensor)
        else np.asarray(p, dtype=np.float64)
    )
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise ValueError(f"preferences must be {n} finite numbers, got shape {arr.shape}")
    return arr
