"""UPGrad's projections onto the dual cone of the gradients: ``minimise 1/2 vᵀQv`` subject to
``v ≥ u``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from moo_opt.solvers._core import equilibrate, jacobi_scales
from moo_opt.solvers._input import (
    Gramian,
    host_gramian,
    iteration_options,
    not_psd_error,
    to_weights,
)
from moo_opt.solvers._tolerances import TOUCHING
from moo_opt.solvers.result import KKTReport, SolveResult, SolveStatus

# Worst first: the status of several projections solved at once is the worst of theirs.
_BADNESS = (
    SolveStatus.MAX_ITER,
    SolveStatus.INACCURATE,
    SolveStatus.DEGENERATE,
    SolveStatus.OPTIMAL,
)


def solve_box_qp(
    q: Tensor | np.ndarray,
    lower: Tensor | np.ndarray,
    *,
    rcond: float | None = None,
    tol: float = 1e-12,
    max_iter: int | None = None,
    validate: bool | None = None,
) -> SolveResult:
    r"""Minimise :math:`\tfrac12 v^\top Q v` subject to :math:`v \ge u`: one of UPGrad's
    projections.

    With :math:`Q = G^\top G`, :math:`Gv^*` is the Euclidean projection of :math:`Gu` onto the dual
    cone of the gradients :math:`\{x : G^\top x \ge 0\}` (Quinton & Rey, "Jacobian Descent for
    Multi-Objective Optimization", 2024, the UPGrad aggregator of TorchJD). KKT, with the
    multiplier :math:`\lambda = Qv` of the bound: :math:`v \ge u`, :math:`\lambda \ge 0`,
    :math:`(v_i - u_i)\lambda_i = 0`. So :math:`(Qv^*)_j = g_j\cdot Gv^* \ge 0` for every :math:`j`:
    the projection conflicts with no gradient.

    An exact active-set method (Lawson & Hanson 1974) in Jacobi-equilibrated coordinates, so the
    answer is invariant to ``Q → cQ`` and to rescaling single gradients; it stops when the relative
    dual infeasibility is at most ``tol`` or at ``max_iter`` sub-problem solves. Statuses:
    ``OPTIMAL`` (converged, unique optimum); ``DEGENERATE`` (converged, or stopped after a
    sub-problem singular to ``rcond``, with :math:`v^*` possibly not unique: :math:`Gv^*` still
    optimal); ``INACCURATE`` (no progress in floating point short of ``tol``); ``MAX_ITER``. The
    returned :math:`v \ge u` exactly; ``result.kkt`` is the scale-free certificate. The algorithm,
    tie-break, certificate and cost: :ref:`box-solver`.

    Args:
        q: symmetric positive semi-definite N×N Gram matrix (torch tensor on any device or numpy
            array); computation is in float64 on the host.
        lower: the bound :math:`u`, shape (N,), finite (tensor or array).
        rcond: relative cut-off on the eigenvalues of the equilibrated Gramian (``√rcond`` on the
            singular values of its factor). Default ``100·eps`` of ``q``'s precision.
        tol: relative dual-infeasibility tolerance (> 0).
        max_iter: cap on the sub-problem solves, default ``10·N + 10``.
        validate: check ``q`` (finite, symmetric, PSD) and raise ``ValueError``; ``None`` or
            ``True``: always (the solve runs on the host anyway); ``False``: skip.

    Returns:
        :class:`SolveResult` with ``problem="box"``, ``method="active-set"``,
        ``weights`` = :math:`v^*` (float64, on ``q``'s device), ``iterations`` = sub-problem
        solves.

    Raises:
        ValueError: ``q`` is not square, empty, not finite, not symmetric or not PSD; ``lower`` is
            not a finite vector of length N; ``tol`` ≤ 0, ``rcond`` < 0 or ``max_iter`` < 1.
    """
    g, host = host_gramian(q, validate)
    u = _bounds(lower, (g.n,), "lower")
    v, iterations, status = _project(host, u[None, :], g, rcond, tol, max_iter, validate)
    return SolveResult.solved(
        to_weights(v[0], g.device),
        "box",
        method="active-set",
        iterations=iterations,
        gram=host,
        status=status,
        certificate=lambda: box_kkt(host, u[None, :], v),
    )


def project_to_dual_cone(
    q: Tensor | np.ndarray,
    lowers: Tensor | np.ndarray,
    *,
    rcond: float | None = None,
    tol: float = 1e-12,
    max_iter: int | None = None,
    validate: bool | None = None,
) -> SolveResult:
    r"""K projections onto the dual cone at once: :func:`solve_box_qp` for each row of ``lowers``.

    Row k of the weights is :math:`v_k^* = \arg\min \tfrac12 v^\top Q v` s.t. :math:`v \ge u_k`.
    UPGrad (Quinton & Rey 2024) takes ``lowers = I/N`` (the projection of each gradient
    :math:`g_i/N`) and the weights :math:`w = \sum_k v_k^*` — ``result.weights.sum(0)`` — whose
    direction :math:`Gw` is the mean of the projected gradients and satisfies
    :math:`(Qw)_j \ge 0` for every :math:`j` (it conflicts with no gradient).

    ``Q`` is validated and factorised once; each row runs the active-set method of
    :func:`solve_box_qp` (each with its own ``max_iter`` cap).

    [decision] ``status`` is the worst of the rows, in the order ``MAX_ITER`` (worst: the row may
    be far from optimal), ``INACCURATE``, ``DEGENERATE``, ``OPTIMAL``; ``iterations`` is the total
    over the rows; the certificate is the maximum of each residual over the rows; ``objective`` is
    the sum of the rows' objectives :math:`\tfrac12 v_k^\top Q v_k`.

    Args: as :func:`solve_box_qp`, with ``lowers`` a finite (K, N) matrix (K ≥ 0).

    Cost: one ``eigh`` of the N×N matrix, then per row one ``lstsq`` per index moved off its bound
    (none for a row whose gradient conflicts with no other). Measured on one CPU core for UPGrad's
    ``I/N``: ~50 µs for N = 2, ~0.5 ms for N = 8, ~1.5 ms for N = 16 (about N²/5 iterations in all
    on random conflicting gradients).

    Returns:
        :class:`SolveResult` whose ``weights`` is the (K, N) float64 matrix of the :math:`v_k^*`
        (on ``q``'s device), ``problem="box"``, ``method="active-set"``.
    """
    g, host = host_gramian(q, validate)
    us = _bounds(lowers, (-1, g.n), "lowers")
    v, iterations, status = _project(host, us, g, rcond, tol, max_iter, validate)
    return SolveResult.solved(
        to_weights(v, g.device),
        "box",
        method="active-set",
        iterations=iterations,
        gram=host,
        status=status,
        certificate=lambda: box_kkt(host, us, v),
    )


def box_kkt(gram: np.ndarray, lowers: np.ndarray, v: np.ndarray) -> KKTReport:
    """The relative certificate of :func:`solve_box_qp` for the rows of ``v`` (K, N) against the
    rows of ``lowers``: each residual is the maximum over the rows (0 for K = 0)."""
    s = jacobi_scales(gram)
    primal = dual = compl = 0.0
    for u_k, v_k in zip(lowers, v):
        t = float(s @ np.maximum(np.abs(v_k), np.abs(u_k)))
        if t == 0.0:
            continue
        lam = gram @ v_k
        primal = max(primal, float((np.maximum(u_k - v_k, 0.0) * s).max()) / t)
        dual = max(dual, float((np.maximum(-lam, 0.0) / s).max()) / t)
        compl = max(compl, float((np.abs(v_k - u_k) * np.abs(lam)).max()) / (t * t))
    return KKTReport(
        stationarity=0.0, primal_feasibility=primal, dual_feasibility=dual, complementarity=compl
    )


def _bounds(x: Tensor | np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A float64 host copy of the bound(s); ``-1`` in ``shape`` matches any size."""
    if isinstance(x, Tensor):
        if x.is_complex():
            raise ValueError(f"{name} must be real, got a complex tensor")
        arr = x.detach().to("cpu", torch.float64).numpy().copy()
    else:
        raw = np.asarray(x)
        if np.iscomplexobj(raw):
            raise ValueError(f"{name} must be real, got a complex array")
        try:
            arr = np.array(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a real numeric array, got dtype {raw.dtype}") from exc
    if arr.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, arr.shape)):
        want = (
            "("
            + ", ".join("K" if d == -1 else str(d) for d in shape)
            + ("," if len(shape) == 1 else "")
            + ")"
        )
        raise ValueError(f"{name} must have shape {want} to match Q, got {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has NaN or Inf entries")
    return arr


@dataclass(frozen=True)
class _Factor:
    """Jacobi equilibration ``Q = SCS`` and a factor ``BᵀB = C`` (rows: the positive
    eigenvalues)."""

    s: np.ndarray
    c: np.ndarray
    b: np.ndarray
    #: relative cut-off on the singular values of ``B_P`` (``√rcond``: eigenvalues of C below rcond)
    lsq_rcond: float


def _factor(host: np.ndarray, rcond: float, check_psd: bool) -> _Factor:
    s, c = equilibrate(host)
    c = 0.5 * (c + c.T)
    lam, vec = np.linalg.eigh(c)
    top = max(1.0, float(lam[-1]))
    if check_psd and lam[0] < -math.sqrt(rcond) * top:
        raise not_psd_error(f"the equilibrated Gramian has eigenvalue {lam[0]:.3g}")
    keep = lam > 0.0
    b = np.sqrt(lam[keep])[:, None] * vec[:, keep].T
    return _Factor(s, c, b, math.sqrt(rcond))


def _project(
    host: np.ndarray,
    lowers: np.ndarray,
    g: Gramian,
    rcond: float | None,
    tol: float,
    max_iter: int | None,
    validate: bool | None,
) -> tuple[np.ndarray, int, SolveStatus]:
    """Every row's projection: ``(v (K, N), total iterations, worst status)``."""
    cap = 10 * g.n + 10 if max_iter is None else int(max_iter)
    rc = iteration_options(g, rcond, tol, cap)
    f = _factor(host, rc, validate is not False)
    v = np.empty_like(lowers)
    total = 0
    worst = SolveStatus.OPTIMAL
    for k, u in enumerate(lowers):
        z, iterations, status = _active_set(f, f.s * u, tol, cap)
        v[k] = u + z / f.s  # exactly u where z = 0, and never below u
        total += iterations
        if _BADNESS.index(status) < _BADNESS.index(worst):
            worst = status
    return v, total, worst


def _relative(c: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``λᵢ/scaleᵢ = (Cy)ᵢ/T`` in equilibrated coordinates ``y = Sv``, ``a = Su``,
    ``T = Σⱼ max(|yⱼ|, |aⱼ|)`` (0 when T = 0)."""
    t = float(np.maximum(np.abs(y), np.abs(a)).sum())
    return c @ y / t if t > 0.0 else np.zeros_like(y)


def _active_set(
    f: _Factor, a: np.ndarray, tol: float, cap: int
) -> tuple[np.ndarray, int, SolveStatus]:
    """Lawson–Hanson on ``min 1/2 (a + z)ᵀC(a + z)`` s.t. ``z ≥ 0``: ``(z, iterations, status)``."""
    n = a.size
    rhs = -(f.b @ a)  # the sub-problem on P: min ‖B_P z_P − rhs‖ (z = 0 off P)
    z = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    seen: set[bytes] = set()
    iterations = 0
    # Whether the last sub-problem was singular to rcond: a stall is then the truncation's doing.
    truncated = False
    while True:
        mu = _relative(f.c, a, a + z)
        j = int(np.argmin(mu))
        if mu[j] >= -tol:
            break
        if passive[j] or passive.tobytes() in seen:  # rounding stops progress short of tol
            return z, iterations, _stalled(truncated)
        if iterations >= cap:
            return z, iterations, SolveStatus.MAX_ITER
        seen.add(passive.tobytes())
        passive[j] = True
        while True:  # solve on P, stepping back to the orthant until the solution is interior
            iterations += 1
            idx = np.flatnonzero(passive)
            sol, _, rank, _ = np.linalg.lstsq(f.b[:, idx], rhs, rcond=f.lsq_rcond)
            truncated = int(rank) < idx.size
            if bool((sol > 0.0).all()):
                z[:] = 0.0
                z[idx] = sol
                break
            cur = z[idx]
            neg = np.flatnonzero(sol <= 0.0)
            gap = cur[neg] - sol[neg]
            ratios = np.where(gap > 0.0, cur[neg] / np.where(gap > 0.0, gap, 1.0), 0.0)
            first = int(np.argmin(ratios))
            theta = float(ratios[first])
            new = cur + theta * (sol - cur)
            drop = new <= 0.0
            drop[neg[first]] = True
            z[idx] = np.where(drop, 0.0, new)
            passive[idx[drop]] = False
            if theta == 0.0 and int(drop.sum()) == 1 and int(idx[drop][0]) == j:
                # the index just added leaves again without a step: no progress in floating point
                return z, iterations, _stalled(truncated)
            if not passive.any():
                break
            if iterations >= cap:
                return z, iterations, SolveStatus.MAX_ITER
    face = (z > 0.0) | (mu <= TOUCHING)
    return (
        z,
        iterations,
        SolveStatus.DEGENERATE if _face_is_singular(f, face) else SolveStatus.OPTIMAL,
    )


def _stalled(truncated: bool) -> SolveStatus:
    """A stall after a sub-problem singular to rcond is the documented truncation (its directions
    are not resolvable in floating point): ``DEGENERATE``; otherwise rounding beat us:
    ``INACCURATE``."""
    return SolveStatus.DEGENERATE if truncated else SolveStatus.INACCURATE


def _face_is_singular(f: _Factor, face: np.ndarray) -> bool:
    """Whether ``B_F`` (F: the optimal face) has a singular value below ``√rcond·max(1, σmax)``.

    Every optimal v is ``v* + S⁻¹d`` with ``C d = 0`` and d supported on F (with ``dᵢ ≥ 0`` where
    ``vᵢ = uᵢ``): a full-rank ``B_F`` makes the optimum unique.
    """
    if not face.any():
        return False
    sv = np.linalg.svd(f.b[:, face], compute_uv=False)
    if sv.size < int(face.sum()):  # fewer rows than columns: rank-deficient
        return True
    return bool(sv[-1] <= f.lsq_rcond * max(1.0, float(sv[0])))
