"""Solution 2's problem: ``minimise 1/2 wᵀQw subject to Σw = 1`` (no sign constraint)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import Tensor

from moo_opt.solvers._closed_form import solve_small
from moo_opt.solvers._core import equality_condition, equality_core
from moo_opt.solvers._input import Gramian, prepare, to_weights
from moo_opt.solvers.result import SolveResult, SolveStatus

EqualityMethod = Literal["auto", "closed-form", "null-space"]


def solve_equality_qp(
    q: Tensor | np.ndarray,
    *,
    rcond: float | None = None,
    ridge: float = 0.0,
    method: EqualityMethod = "auto",
    validate: bool | None = None,
) -> SolveResult:
    r"""Minimise :math:`\tfrac12 w^\top Q w` subject to :math:`\mathbf 1^\top w = 1`.

    :math:`d = Gw^*` satisfies :math:`g_i\cdot d = |d|^2` for every :math:`i`: every objective
    decreases at the same first-order rate, the balance condition of Solution 2 in Zhang et al.,
    "Balanced Rate-Distortion Optimization in Learned Image Compression", CVPR 2025. The KKT
    conditions, the closed form and the balance property: :ref:`equality-solver`.

    Args:
        q: symmetric positive semi-definite N×N Gram matrix (torch tensor on any device, float32 or
            float64, or a numpy array). Computation is in float64.
        rcond: relative cut-off on the eigenvalues of the Jacobi-equilibrated reduced Hessian below
            which the problem is treated as degenerate. Default ``100·eps`` of ``q``'s precision.
        ridge: [decision] 0 (default) solves the problem as posed and, when the optimum is not
            unique, returns the minimum-norm optimal weights (status ``DEGENERATE``). ``ridge > 0``
            solves with ``Q + ridge·tr(Q)/N·I`` instead (status ``REGULARIZED``).
        method: ``"auto"`` (closed form for N = 2; Cholesky of the equilibrated matrix when well
            conditioned, else the null-space method), ``"closed-form"`` (N ≤ 2) or ``"null-space"``.
        validate: check values (finite, symmetric, PSD) and raise ``ValueError``. ``None``: always,
            except N ≤ 2 on a non-CPU device (deferred into the status).

    Cost: N = 2, a few scalar operations that never synchronise on CUDA (status and certificate are
    computed when read); N > 2, one host copy and O(N³) float64 LAPACK (microseconds for N ≤ 32).

    Returns: :class:`SolveResult` with float64 weights on ``q``'s device.

    Raises:
        ValueError: ``q`` is not square, empty, not finite, not symmetric or not PSD.
    """
    g, rc = _options(q, rcond, ridge, method, validate)
    base = SolveStatus.REGULARIZED if ridge > 0.0 else SolveStatus.OPTIMAL
    small = solve_small(
        g, rc, "equality", base=base, ridge=ridge, closed_form=method != "null-space"
    )
    if small is not None:
        return small
    host = g.host
    assert host is not None
    solve_on = host + ridge * float(np.trace(host)) / g.n * np.eye(g.n) if ridge > 0.0 else host
    sol = equality_core(solve_on, rc, "null-space" if method == "null-space" else "auto")
    status = SolveStatus.DEGENERATE if sol.degenerate else base
    cond = sol.condition
    if cond is None and ridge > 0.0:  # the lazy figure would describe the un-regularised Q
        cond = equality_condition(solve_on)
    weights = to_weights(sol.weights, g.device)
    return SolveResult.solved(
        weights, "equality", method=sol.method, gram=host, status=status, condition=cond
    )


def _options(
    q: Tensor | np.ndarray,
    rcond: float | None,
    ridge: float,
    method: EqualityMethod,
    validate: bool | None,
) -> tuple[Gramian, float]:
    """Check the options of :func:`solve_equality_qp` and prepare ``q``: ``(Gramian, rcond)``."""
    if ridge < 0.0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if method not in ("auto", "closed-form", "null-space"):
        raise ValueError(f"method must be 'auto', 'closed-form' or 'null-space', got {method!r}")
    g = prepare(q, validate)
    rc = g.default_rcond() if rcond is None else float(rcond)
    if method == "closed-form" and g.n > 2:
        raise ValueError(f"method='closed-form' needs N <= 2, got N = {g.n}; use 'auto'")
    return g, rc
