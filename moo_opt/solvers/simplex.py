"""MGDA's problem: ``minimise 1/2 wᵀQw`` over the probability simplex ``w ≥ 0, Σw = 1``."""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import Tensor

from moo_opt.solvers._closed_form import solve_small
from moo_opt.solvers._core import equality_core, jacobi_scales
from moo_opt.solvers._input import Gramian, prepare, to_weights
from moo_opt.solvers._tolerances import TOUCHING
from moo_opt.solvers.result import SolveResult, SolveStatus, relative_multipliers

SimplexMethod = Literal[
    "auto", "closed-form", "wolfe"
]  # "auto": closed form, active set, then Wolfe


def solve_simplex_qp(
    q: Tensor | np.ndarray,
    *,
    rcond: float | None = None,
    tol: float = 1e-12,
    max_iter: int | None = None,
    method: SimplexMethod = "auto",
    validate: bool | None = None,
) -> SolveResult:
    r"""Minimise :math:`\tfrac12 w^\top Q w` over the simplex: MGDA's min-norm point.

    :math:`d = Gw^*` is the point of minimum norm in the convex hull of the gradients
    (Désidéri 2012; Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", 2018).
    KKT: with :math:`\mu = w^\top Q w`, :math:`\nu = Qw - \mu\mathbf 1 \ge 0`, :math:`w \ge 0`,
    :math:`w_i\nu_i = 0`; their derivation and the closed form for N = 2: :ref:`simplex-solver`.

    N = 2: the closed form ``w1 = clip((q22 − q12) / |g1 − g2|², 0, 1)``. N > 2: a few
    primal-dual active-set iterations from the equality optimum (method ``"active-set"``), kept
    when they reach a certified KKT point; otherwise Wolfe's exact algorithm (Wolfe, "Finding the
    nearest point in a polytope", Math. Programming 1976). It stops when the relative dual
    infeasibility ``max(−νᵢ)/scaleᵢ`` (see :class:`KKTReport`) is at most ``tol``, or at
    ``max_iter`` (default ``50·N``) with status ``MAX_ITER``, never silently (``INACCURATE`` when
    rounding stops its progress short of ``tol``).

    [decision] When the optimal weights are not unique (affinely dependent gradients on the optimal
    face, e.g. duplicated gradients) the status is ``DEGENERATE``, and the weights are the
    minimum-norm optimal ones if they are non-negative, else Wolfe's optimum of minimal support;
    for N = 2 with g1 ≈ g2 they are (½, ½). See :ref:`degenerate-cases`.

    Args and cost as for :func:`solve_equality_qp` (N = 2 never synchronises on CUDA).
    """
    g, rc, cap = _options(q, rcond, tol, max_iter, method, validate)
    small = solve_small(g, rc, "simplex", base=SolveStatus.OPTIMAL, closed_form=method != "wolfe")
    if small is not None:
        return small
    host = g.host
    assert host is not None
    if method == "auto":
        guess = active_set_guess(host, rc, tol, min(cap, _GUESSES))
        if guess is not None:
            w, iterations = guess
            return SolveResult.solved(
                to_weights(w, g.device),
                "simplex",
                method="active-set",
                iterations=iterations,
                gram=host,
                status=SolveStatus.OPTIMAL,
            )
    w, iterations, status = wolfe(host, rc, tol, cap)
    if status in (SolveStatus.OPTIMAL, SolveStatus.DEGENERATE):
        w, status = _tie_break(host, w, rc, status)
    return SolveResult.solved(
        to_weights(w, g.device),
        "simplex",
        method="wolfe",
        iterations=iterations,
        gram=host,
        status=status,
    )


def _options(
    q: Tensor | np.ndarray,
    rcond: float | None,
    tol: float,
    max_iter: int | None,
    method: SimplexMethod,
    validate: bool | None,
) -> tuple[Gramian, float, int]:
    """Check the options of :func:`solve_simplex_qp` and prepare ``q``: ``(Gramian, rcond,
    iteration cap)``."""
    if method not in ("auto", "closed-form", "wolfe"):
        raise ValueError(f"method must be 'auto', 'closed-form' or 'wolfe', got {method!r}")
    if tol <= 0.0:
        raise ValueError(f"tol must be > 0, got {tol}")
    g = prepare(q, validate)
    rc = g.default_rcond() if rcond is None else float(rcond)
    if method == "closed-form" and g.n > 2:
        raise ValueError(f"method='closed-form' needs N <= 2, got N = {g.n}; use 'auto'")
    cap = 50 * g.n if max_iter is None else int(max_iter)
    if cap < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    return g, rc, cap


# Iterations allowed to the primal-dual active-set guess before Wolfe's method takes over.
_GUESSES = 8


def active_set_guess(
    gram: np.ndarray, rcond: float, tol: float, max_iter: int
) -> tuple[np.ndarray, int] | None:
    """Primal-dual active-set iterations (Hintermüller, Ito & Kunisch 2002) from the equality
    optimum.

    Each iteration solves the equality problem on the free set F, then frees every fixed index
    whose multiplier is negative and fixes every free index whose weight is negative. It usually
    ends in one to three solves; when it reaches a point that satisfies every KKT condition
    (non-degenerate free set, ``w ≥ 0``, relative multipliers ``≥ −tol``) that point is the
    optimum. Otherwise (a cycle, a degenerate free set, ``max_iter``) it returns None and the
    caller runs Wolfe's method, which always terminates.
    """
    n = gram.shape[0]
    scales = jacobi_scales(gram)
    free = np.ones(n, dtype=bool)
    for it in range(1, max_iter + 1):
        idx = np.flatnonzero(free)
        sub = (
            equality_core(gram[np.ix_(idx, idx)], rcond)
            if idx.size < n
            else equality_core(gram, rcond)
        )
        if sub.degenerate:
            return None
        w = np.zeros(n)
        w[idx] = sub.weights
        negative = sub.weights < 0.0
        nu = relative_multipliers(gram, w, scales)
        violated = ~free & (nu < -tol)
        if not negative.any() and not violated.any():
            return w, it
        new_free = free.copy()
        new_free[idx[negative]] = False
        new_free |= violated
        if not new_free.any() or (new_free == free).all():
            return None
        free = new_free
    return None


def _tie_break(
    gram: np.ndarray, w: np.ndarray, rcond: float, status: SolveStatus
) -> tuple[np.ndarray, SolveStatus]:
    """Minimum-norm optimal weights when the optimum is not unique.

    Every gradient ``gᵢ`` with ``νᵢ ≈ 0`` lies on the hyperplane ``{x : x·d = |d|²}`` whose
    nearest point to 0 is the optimal ``d``; so the minimum-norm solution of the equality problem
    on that set T has ``G_T w = d`` too, and when it is non-negative it is the minimum-norm optimal
    simplex solution. Otherwise Wolfe's minimal-support answer stays.
    """
    touching = relative_multipliers(gram, w) <= TOUCHING
    if int(touching.sum()) <= int((w > 0.0).sum()) and status is SolveStatus.OPTIMAL:
        return w, status
    idx = np.flatnonzero(touching | (w > 0.0))
    sub = equality_core(gram[np.ix_(idx, idx)], rcond, "null-space")
    if not sub.degenerate:
        return w, status
    if bool((sub.weights >= 0.0).all()):
        w = np.zeros_like(w)
        w[idx] = sub.weights
    return w, SolveStatus.DEGENERATE


def wolfe(
    gram: np.ndarray, rcond: float, tol: float, max_iter: int
) -> tuple[np.ndarray, int, SolveStatus]:
    """Wolfe's nearest-point algorithm on a Gram matrix: ``(weights, iterations, status)``.

    Major cycle: add the most violating vertex to the corral S. Minor cycle: move to the affine
    minimiser of S, or as far towards it as the simplex allows, dropping vertices whose weight
    reaches zero, until the affine minimiser lies in the relative interior of S.
    """
    n = gram.shape[0]
    scales = jacobi_scales(gram)
    w = np.zeros(n)
    start = int(np.argmin(np.diag(gram)))
    w[start] = 1.0
    corral = [start]
    iterations = 0
    degenerate = stalled = False
    while True:
        viol = relative_multipliers(gram, w, scales)
        j = int(np.argmin(viol))
        if viol[j] >= -tol:
            break
        if j in corral:  # the best vertex is already in use: rounding stops progress short of tol
            stalled = True
            break
        if iterations >= max_iter:
            return w, iterations, SolveStatus.MAX_ITER
        corral.append(j)
        while True:  # minor cycles
            iterations += 1
            idx = np.asarray(corral)
            sub = equality_core(gram[np.ix_(idx, idx)], rcond)
            degenerate = sub.degenerate
            alpha = sub.weights
            if bool((alpha > 0.0).all()):
                w[:] = 0.0
                w[idx] = alpha
                break
            new, drop, theta = _step_back(w[idx], alpha)
            w[idx] = new
            corral = [int(i) for i, d in zip(idx, drop) if not d]
            if len(corral) == 0:  # cannot happen in exact arithmetic; keep the best vertex
                corral = [int(np.argmax(w))]
            if theta == 0.0 and int(drop.sum()) == 1 and int(idx[drop][0]) == j:
                # only the vertex just added was dropped, without moving: no progress in floating
                # point
                w = w / w.sum()
                return w, iterations, SolveStatus.INACCURATE
            w = np.maximum(w, 0.0)
            w /= w.sum()
            if iterations >= max_iter:
                return w, iterations, SolveStatus.MAX_ITER
    w = np.maximum(w, 0.0)
    w /= w.sum()
    if stalled:
        return w, iterations, SolveStatus.INACCURATE
    return w, iterations, SolveStatus.DEGENERATE if degenerate else SolveStatus.OPTIMAL


def _step_back(cur: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Wolfe's minor step when the affine minimiser ``alpha`` of the corral leaves the simplex:
    from the corral's weights ``cur`` as far towards ``alpha`` as the simplex allows.

    Returns ``(new weights on the corral, dropped, θ)``: the step θ, and the mask of the vertices
    that leave the corral (those whose weight reaches zero, and always the one that blocks the
    step), whose new weights are exactly 0."""
    neg = alpha <= 0.0
    theta = float(np.min(cur[neg] / (cur[neg] - alpha[neg])))
    new = cur + theta * (alpha - cur)
    drop = new <= 0.0
    drop[np.argmin(np.where(neg, cur / np.where(neg, cur - alpha, 1.0), np.inf))] = True
    return np.where(drop, 0.0, new), drop, theta
