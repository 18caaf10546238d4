"""CAGrad's inner problem: ``minimise bᵀw + r·|Gw|`` over the simplex, solved exactly through
MGDA's problem."""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from moo_opt.solvers._cagrad_support import (
    _Candidate,
    _Line,
    _line,
    _minimal_support,
    _Problem,
    _problem,
    _radius,
    _regular,
    _report,
    _root,
    _Solution,
    _zero,
)
from moo_opt.solvers._core import jacobi_scales
from moo_opt.solvers._input import host_gramian, iteration_options, to_weights
from moo_opt.solvers._tolerances import BRACKET_RTOL, KAPPA_FLOOR
from moo_opt.solvers.box import solve_box_qp
from moo_opt.solvers.result import KKTReport, SolveResult, SolveStatus
from moo_opt.solvers.simplex import solve_simplex_qp

# Primal-dual active-set steps tried before the bisection on κ.
_ACTIVE_SET_STEPS = 8


def solve_cagrad(
    q: Tensor | np.ndarray,
    c: float,
    *,
    rcond: float | None = None,
    tol: float = 1e-12,
    max_iter: int = 200,
    validate: bool | None = None,
) -> SolveResult:
    r"""CAGrad's inner problem :math:`\min_{w \in \Delta} b^\top w + r\,\|Gw\|`, solved exactly.

    Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task Learning"
    (NeurIPS 2021). With :math:`G = [g_1 \dots g_N]`, :math:`Q = G^\top G`, the average gradient
    :math:`g_0 = Gm` (:math:`m = \mathbf 1/N`), :math:`b = Qm` and the radius
    :math:`r = c\,\|g_0\|`, CAGrad's update :math:`d = g_0 + (r/\|Gw^*\|)\, Gw^*` maximises
    :math:`\min_i g_i^\top d` over the ball :math:`\|d - g_0\| \le r`; its weights on the raw
    gradients are :func:`cagrad_direction_weights` ``= m + (r/‖Gw*‖) w*`` (the paper's code then
    divides by ``1 + c²``; that rescaling is the balancer's business, not the solver's).

    The method (a bisection on the shifted gradients' MGDA problems with active-set steps on the
    closed form of each support), the special cases, the statuses and the certificate:
    :ref:`cagrad-solver`.

    Args:
        q: the N×N Gram matrix ``GᵀG`` (tensor on any device or numpy array, any float dtype),
            validated as for :func:`~moo_opt.solvers.solve_simplex_qp` (always: the solve is on
            the host; ``validate=False`` skips the checks).
        c: the paper's c ≥ 0 (finite): the radius of the ball is ``c·‖g0‖``.
        rcond: relative eigenvalue cut-off of the equilibrated sub-problems (and of ``Gw = 0``);
            default ``100·eps`` of ``q``'s precision.
        tol: relative dual-feasibility tolerance of a support (> 0); also the tie tolerance at
            r = 0.
        max_iter: cap on the simplex solves of the bisection (≥ 1).
        validate: as for the other solvers.

    Returns:
        :class:`SolveResult` (``problem="cagrad"``): the inner :math:`w^*` on the simplex, its
        status and certificate; ``method`` says which step found it (see :ref:`cagrad-solver`).

    Raises:
        ValueError: ``c`` negative or not finite; ``q`` invalid; bad ``tol``/``max_iter``/``rcond``.
    """
    cval = _check_c(c)
    g, host = host_gramian(q, validate)
    rc = iteration_options(g, rcond, tol, max_iter)
    p = _problem(host, cval, rc, tol)
    sol = _solve_host(p, int(max_iter))

    def certificate() -> KKTReport:
        return _report(p, sol.w, sol.z)

    return SolveResult.solved(
        to_weights(sol.w, g.device),
        "cagrad",
        method=sol.method,
        iterations=sol.iterations,
        gram=host,
        status=sol.status,
        certificate=certificate,
    )


def cagrad_direction_weights(
    q_host: np.ndarray, w: np.ndarray, c: float, *, rcond: float | None = None
) -> np.ndarray:
    r"""CAGrad's weights on the raw gradients (``d = G·(these)``) for the inner weights ``w`` of
    :func:`solve_cagrad`.

    ``q_host`` is the (validated, symmetric) float64 Gram matrix, ``c`` the paper's c. Returns

    * ``m + (r/‖Gw‖)·w`` in general: the paper's :math:`d = g_0 + (r/\|g_w\|)\,g_w`;
    * ``m = 1/N`` when ``r = c‖g0‖`` is 0 (c = 0, or g0 zero to rounding): :math:`d = g_0`;
    * [decision] when ``Gw = 0`` (``‖Gw‖² ≤ N·rcond·T²``, the zero test of :func:`solve_cagrad`;
      ``rcond`` defaults to ``100·eps`` of float64): the weights ``v*`` of the projection of
      :math:`g_0` onto the dual cone :math:`\{x : G^\top x \ge 0\}`,
      ``solve_box_qp(Q, m).weights`` (``v ≥ m``, :math:`Gv^* = P(g_0)`). Then every direction of the
      ball :math:`\|d - g_0\| \le r` has a worst improvement :math:`\min_i g_i^\top d \le 0`
      (0 is in the convex hull of the gradients) and the maximisers of CAGrad's problem are the
      ball's points in the dual cone; :math:`P(g_0)` is the one nearest to :math:`g_0` (it is in
      the ball: that is what the zero certificate checks, :math:`P(g_0) = g_0 + G\beta`). It is
      :math:`g_0` itself when :math:`g_0` conflicts with no gradient. (The reference code divides
      by ``‖g_w‖ + 1e-8`` here; TorchJD returns zero weights.)

    Not rescaled by ``1/(1 + c²)``: that is the balancer's choice.
    """
    cval = _check_c(c)
    q = np.asarray(q_host, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n = q.shape[0]
    rc = 100.0 * float(np.finfo(np.float64).eps) if rcond is None else float(rcond)
    _, _, r = _radius(q, cval, rc)
    m = np.full(n, 1.0 / n)
    if r == 0.0:
        return m
    t2 = float(w @ q @ w)
    big = float(jacobi_scales(q) @ np.abs(w))
    if t2 <= n * rc * big * big:
        return solve_box_qp(q, m, rcond=rc, validate=False).weights.numpy()
    return m + (r / math.sqrt(t2)) * w


def _check_c(c: float) -> float:
    try:
        value = float(c)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"c must be a finite real number >= 0 (CAGrad's radius factor), got {c!r}"
        ) from exc
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(
            "c must be finite and >= 0 "
            f"(CAGrad's radius is c·|g0|; c = 0 gives the mean gradient), got {c!r}"
        )
    return value


def _solve_host(p: _Problem, max_iter: int) -> _Solution:
    n = p.q.shape[0]
    if n == 1:
        w = np.ones(1)
        t2 = float(p.q[0, 0])
        z = (p.r / math.sqrt(t2)) * w if p.r > 0.0 and t2 > 0.0 else np.zeros(1)
        return _Solution(w, z, SolveStatus.OPTIMAL, "closed-form", 0)
    if p.r == 0.0:
        return _linear(p)
    return _search(p, max_iter)


def _linear(p: _Problem) -> _Solution:
    """r = 0: ``min bᵀw`` on the simplex, uniform weights over the (tied) minimisers."""
    n = p.q.shape[0]
    if p.g0 == 0.0:  # F ≡ 0 to rounding: every w is optimal
        return _Solution(np.full(n, 1.0 / n), np.zeros(n), SolveStatus.DEGENERATE, "closed-form", 0)
    j = int(np.argmin(p.b))
    gap = (p.b - p.b[j]) / ((p.s + p.s[j]) * p.g0)
    ties = gap <= p.tol
    w = np.where(ties, 1.0, 0.0)
    w /= w.sum()
    status = SolveStatus.OPTIMAL if int(ties.sum()) == 1 else SolveStatus.DEGENERATE
    return _Solution(w, np.zeros(n), status, "closed-form", 0)


def _active_set(
    p: _Problem, first: _Line, tried: list[_Candidate]
) -> tuple[_Candidate | None, int]:
    """Primal-dual active-set steps on the closed form from the support of ``first``:
    ``(accepted candidate or None, supports tried)``. Every candidate is appended to ``tried``."""
    n = p.q.shape[0]
    free = np.zeros(n, dtype=bool)
    free[first.idx] = True
    seen: set[bytes] = set()
    line = first
    for step in range(1, _ACTIVE_SET_STEPS + 1):
        seen.add(free.tobytes())
        idx = np.flatnonzero(free)
        if step > 1:
            line = _line(p, idx)
        new_free = free.copy()
        cand = _regular(p, line)
        if cand is None:
            zero = _zero(p, line)
            if zero is not None:
                tried.append(zero)
                if zero.accepted(idx):
                    return zero, step
            # No root on S: F decreases along the ray α + κβ (κ → ∞); drop the index that blocks it.
            a, bt = line.alpha[idx], line.beta[idx]
            falling = bt < 0.0
            if not falling.any():
                return None, step
            ratio = np.where(falling, a / np.where(falling, -bt, 1.0), np.inf)
            new_free[idx[int(np.argmin(ratio))]] = False
        else:
            tried.append(cand)
            if cand.accepted(idx):
                return cand, step
            new_free[idx[cand.raw[idx] < 0.0]] = False
            new_free |= ~free & (cand.nu < -p.tol)
        if not new_free.any() or new_free.tobytes() in seen:
            return None, step
        free = new_free
    return None, _ACTIVE_SET_STEPS


def _shifted(p: _Problem, kappa: float) -> np.ndarray:
    """``Q_κ``: the Gramian of the shifted gradients ``gᵢ + κ g0`` (symmetric by construction)."""
    return p.q + kappa * (p.b[:, None] + p.b[None, :]) + (kappa * kappa * p.g0 * p.g0)


def _search(p: _Problem, max_iter: int) -> _Solution:
    """Simplex solves at κ (bisection on ψ(κ) = r); the active-set steps from each solve's
    support."""
    ceiling = float(p.s.max()) / p.r  # ψ(κ) ≤ max‖gᵢ‖/κ ≤ r from here on
    lo, hi = 0.0, ceiling
    kappa = min(1.0, 0.5 * ceiling)
    last_width = math.inf
    tried: list[_Candidate] = []
    solves = extra = 0
    while solves < max_iter:
        solves += 1
        w = solve_simplex_qp(
            _shifted(p, kappa), rcond=p.rcond, tol=p.tol, validate=False
        ).weights.numpy()
        w, line = _minimal_support(p, w)
        found, steps = _active_set(p, line, tried)
        extra += steps - 1
        if found is not None:
            return found.solution(
                "closed-form-support" if steps == 1 else "active-set", solves + extra
            )
        t2 = max(float(w @ p.q @ w), 0.0)
        if t2 > 0.0:
            tried.append(_Candidate(p, w, (p.r / math.sqrt(t2)) * w, False, True))
        if math.sqrt(t2) > kappa * p.r:
            lo = kappa
        else:
            hi = kappa
        if (lo > 0.0 and hi / lo - 1.0 <= BRACKET_RTOL) or hi <= KAPPA_FLOOR * ceiling:
            break
        # Next κ: the closed-form root of this support when inside the bracket, as long as the
        # bracket keeps halving (in log scale); else halve (no lower end yet) or take the
        # geometric mean.
        width = math.log(hi / lo) if lo > 0.0 else math.inf
        est = _root(p, line)
        if (
            est is not None
            and lo < est < hi
            and (width <= 0.5 * last_width or not math.isfinite(last_width))
        ):
            kappa = est
        elif lo == 0.0:
            kappa = 0.5 * hi
        else:
            kappa = math.sqrt(lo * hi)
        if math.isfinite(width):
            last_width = width
    best = min(tried, key=lambda cand: cand.residual)
    if best.certified:
        return best.solution("bisection", solves + extra)
    return best.solution(
        "bisection",
        solves + extra,
        SolveStatus.MAX_ITER if solves >= max_iter else SolveStatus.INACCURATE,
    )
