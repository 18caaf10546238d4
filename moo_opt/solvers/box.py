"""UPGrad's projections onto the dual cone of the gradients: ``minimise 1/2 vᵀQv`` subject to
``v ≥ u``."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from moo_opt.solvers._box_active_set import active_set, compiled_rows, factor
from moo_opt.solvers._core import jacobi_scales
from moo_opt.solvers._input import Gramian, host_gramian, iteration_options, to_weights
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
    returned :math:`v \ge u` exactly; ``result.kkt`` is the scale-free certificate. Algorithm
    (SciPy's ``nnls`` first if definite), tie-break, certificate and cost: :ref:`box-solver`.

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
        solves (SciPy's: the indices moved off their bound).

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
    :func:`solve_box_qp` (each with its own ``max_iter`` cap), exactly as it would alone.

    [decision] ``status`` is the worst of the rows, in the order ``MAX_ITER`` (worst: the row may
    be far from optimal), ``INACCURATE``, ``DEGENERATE``, ``OPTIMAL``; ``iterations`` is the total
    over the rows; the certificate is the maximum of each residual over the rows; ``objective`` is
    the sum of the rows' objectives :math:`\tfrac12 v_k^\top Q v_k`.

    Args: as :func:`solve_box_qp`, with ``lowers`` a finite (K, N) matrix (K ≥ 0).

    Cost: one ``eigh`` of the N×N matrix, then per row one call of :func:`scipy.optimize.nnls`
    (definite Gramian; ours otherwise: one ``lstsq`` per index moved off its bound), about N²/2
    sub-problems in all for UPGrad's ``I/N`` on random conflicting gradients. Measured against
    TorchJD's: ``benchmarks/RESULTS.md``, "UPGrad's projections against TorchJD's".

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
    t = np.maximum(np.abs(v), np.abs(lowers)) @ s
    keep = t > 0.0  # rows with T = 0 (v = u = 0 up to zero gradients) have nothing to certify
    primal = dual = compl = 0.0
    if keep.any():
        u, v, t = lowers[keep], v[keep], t[keep, None]
        lam = v @ gram  # row k: (Q v_k)ᵀ, Q symmetric
        primal = float((np.maximum(u - v, 0.0) * s / t).max())
        dual = float((np.maximum(-lam, 0.0) / s / t).max())
        compl = float((np.abs(v - u) * np.abs(lam) / (t * t)).max())
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


def _project(
    host: np.ndarray,
    lowers: np.ndarray,
    g: Gramian,
    rcond: float | None,
    tol: float,
    max_iter: int | None,
    validate: bool | None,
) -> tuple[np.ndarray, int, SolveStatus]:
    """Every row's projection: ``(v (K, N), total iterations, worst status)``.

    A definite C goes to SciPy's compiled Lawson–Hanson first (certified rows are ``OPTIMAL``:
    every face is non-singular; their iterations are the indices moved off their bound, as SciPy
    does not report its count); the rows it leaves, and every row of a singular C, to ours.
    """
    cap = 10 * g.n + 10 if max_iter is None else int(max_iter)
    rc = iteration_options(g, rcond, tol, cap)
    f = factor(host, rc, validate is not False)
    a = f.s * lowers
    if f.definite:
        z, done = compiled_rows(f, a, tol, cap)
    else:
        z, done = np.zeros_like(a), np.zeros(a.shape[0], dtype=bool)
    iterations = np.count_nonzero(z > 0.0, axis=1)
    worst = SolveStatus.OPTIMAL
    for k in np.flatnonzero(~done):
        z[k], iterations[k], status = active_set(f, a[k], tol, cap)
        if _BADNESS.index(status) < _BADNESS.index(worst):
            worst = status
    # exactly u where z = 0, and never below u
    return lowers + z / f.s, int(iterations.sum()), worst
