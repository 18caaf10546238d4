"""FairGrad's α-fair weights: the positive solution of ``Qw = w^(−1/α)``, by damped Newton."""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import lapack
from torch import Tensor

from moo_opt.solvers._core import equilibrate
from moo_opt.solvers._input import host_gramian, iteration_options, to_weights
from moo_opt.solvers.nash import nash_blocked
from moo_opt.solvers.result import KKTReport, SolveResult, SolveStatus

# Armijo's sufficient-decrease fraction and the backtracking cap of the Newton line search.
_ARMIJO = 0.25
_HALVINGS = 60
# The largest change of a log-weight along one line-search step (e^±50).
_LOG_STEP = 50.0
# Steps in a row that fail to lower the residual before the floating-point floor is declared.
_STALLS = 3


def solve_fairgrad(
    q: Tensor | np.ndarray,
    alpha: float,
    *,
    rcond: float | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
    validate: bool | None = None,
) -> SolveResult:
    r"""FairGrad's weights: :math:`w > 0` with :math:`(Qw)_i = w_i^{-1/\alpha}` for every i.

    Ban & Ji, "Fair Resource Allocation in Multi-Task Learning" (ICML 2024), Equation 4: the
    direction :math:`d = Gw` maximises the α-fair utility :math:`\sum_i
    (g_i\cdot d)^{1-\alpha}/(1-\alpha)` (:math:`\sum_i\log g_i\cdot d` at α = 1, Nash-MTL's
    condition) in a ball. :math:`w` is the minimiser of the strictly convex
    :math:`f(w) = \tfrac12 w^\top Qw - \sum_i \phi(w_i)`, :math:`\phi'(w) = w^{-1/\alpha}`
    (Hessian :math:`Q + \mathrm{diag}(w^{-1/\alpha-1}/\alpha) \succ 0`), found by Newton along
    :math:`w\,e^{t\,\Delta w/w}` (Armijo; ``_line_search``) in Jacobi-equilibrated coordinates
    :math:`\beta = Sw`. It exists iff no :math:`y \ge 0, y \ne 0` has :math:`Gy = 0` (no
    objective *blocked*); as for :func:`~moo_opt.solvers.solve_nash` ([decision]) the blocked
    ones (:func:`~moo_opt.solvers.nash.nash_blocked`) get weight 0, the others their α-fair
    weights, with status ``INFEASIBLE``.

    Certificate: :func:`fairgrad_kkt`. Statuses: ``OPTIMAL`` (certified to ``tol``),
    ``INFEASIBLE`` (blocked objectives, the others certified), ``MAX_ITER``, ``INACCURATE`` (no
    progress in floating point above ``tol``).

    Args:
        q: the N×N Gram matrix ``GᵀG`` (tensor or array), validated as for
            :func:`~moo_opt.solvers.solve_nash`.
        alpha: the fairness α > 0 (1: Nash-MTL's weights; large: towards max-min fairness).
        rcond, tol, max_iter, validate: as for :func:`~moo_opt.solvers.solve_nash`.

    Returns:
        A :class:`SolveResult` with ``problem="fairgrad"``, ``method="newton"``, weights w
        (float64, on ``q``'s device; ``d = Gw``).
    """
    if not (math.isfinite(alpha) and alpha > 0.0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    g, host = host_gramian(q, validate)
    rc = iteration_options(g, rcond, tol, max_iter)
    blocked = nash_blocked(host, rc)
    w = np.zeros(g.n)
    iterations, status = 0, SolveStatus.INFEASIBLE
    live = ~blocked
    if live.any():
        s, c = equilibrate(host[np.ix_(live, live)])
        beta, iterations, status = _newton(c, s, float(alpha), tol, int(max_iter))
        w[live] = beta / s
        if status is SolveStatus.OPTIMAL and blocked.any():
            status = SolveStatus.INFEASIBLE
    return SolveResult.solved(
        to_weights(w, g.device),
        "fairgrad",
        method="newton",
        iterations=iterations,
        gram=host,
        status=status,
        certificate=lambda: fairgrad_kkt(host, w, float(alpha)),
    )


def fairgrad_kkt(gram: np.ndarray, w: np.ndarray, alpha: float) -> KKTReport:
    r"""The certificate of :func:`solve_fairgrad`: ``stationarity`` is
    :math:`\max_i |w_i(Qw)_i - w_i^{1-1/\alpha}| / \max(w_i^{1-1/\alpha}, w_i(|Q|w)_i)` over the
    objectives with a nonzero weight (zero weights are blocked ones)."""
    live = w != 0.0
    if not live.any():
        return KKTReport(0.0, 0.0, 0.0, 0.0)
    a, sub = w[live], gram[np.ix_(live, live)]
    target = np.abs(a) ** (1.0 - 1.0 / alpha)
    scale = np.maximum(target, np.abs(a) * (np.abs(sub) @ np.abs(a)))
    stationarity = float((np.abs(a * (sub @ a) - target) / scale).max())
    return KKTReport(stationarity, float(np.maximum(-a, 0.0).max()), 0.0, 0.0)


def _newton(
    c: np.ndarray, s: np.ndarray, alpha: float, tol: float, max_iter: int
) -> tuple[np.ndarray, int, SolveStatus]:
    """Minimise ``F(β) = ½βᵀCβ − Σ kᵢψ(βᵢ)``, ``ψ'(β) = β^(−1/α)``, ``kᵢ = sᵢ^(1/α − 1)``:
    ``(β, steps, status)``, ``β > 0``."""
    p = 1.0 / alpha
    k = s ** (p - 1.0)
    abs_c = np.abs(c)
    beta = _start(c, k, p)
    best, best_res, last_res, stalls, floor = beta, math.inf, math.inf, 0, False
    for it in range(max_iter + 1):
        cb = c @ beta
        res = _residual(c, abs_c, k, p, beta)
        if res < best_res:
            best, best_res = beta, res
        # at F's rounding floor, progress is the residual's: stalled when it stops falling
        stalls = stalls + 1 if floor and res >= last_res else 0
        last_res = res
        if res <= tol:
            return beta, it, SolveStatus.OPTIMAL
        if stalls >= _STALLS or it == max_iter:
            break
        grad = cb - k * beta ** (-p)
        h = c + np.diag(p * k * beta ** (-p - 1.0))
        _, step, info = lapack.dposv(h, -grad)  # Cholesky solve; H is PD for β > 0
        if info != 0:
            break
        beta, floor = _line_search(c, k, alpha, beta, step, -float(grad @ step), res)
    status = SolveStatus.MAX_ITER if it == max_iter else SolveStatus.INACCURATE
    return best, it, status


def _start(c: np.ndarray, k: np.ndarray, p: float) -> np.ndarray:
    """The solution of the diagonal problem, ``bᵢ = kᵢ^(1/(1+p))`` (``Cᵢᵢ = 1``), scaled by the
    stationary ``t`` along ``β = t·b``: ``t^(1+p)·bᵀCb = Σ kᵢbᵢ^(1−p)``."""
    b = k ** (1.0 / (1.0 + p))
    curve = float(b @ (c @ b))
    t = (float(k @ b ** (1.0 - p)) / curve) ** (1.0 / (1.0 + p)) if curve > 0.0 else 1.0
    return b * (t if math.isfinite(t) and t > 0.0 else 1.0)


def _residual(c: np.ndarray, abs_c: np.ndarray, k: np.ndarray, p: float, beta: np.ndarray) -> float:
    """The relative stationarity ``max |βᵢ(Cβ)ᵢ − kᵢβᵢ^(1−p)| / max(kᵢβᵢ^(1−p), βᵢ(|C|β)ᵢ)``
    (:func:`fairgrad_kkt`'s, in the equilibrated coordinates)."""
    target = k * beta ** (1.0 - p)
    scale = np.maximum(target, beta * (abs_c @ beta))
    return float((np.abs(beta * (c @ beta) - target) / scale).max())


def _line_search(
    c: np.ndarray,
    k: np.ndarray,
    alpha: float,
    beta: np.ndarray,
    step: np.ndarray,
    dec: float,
    res: float,
) -> tuple[np.ndarray, bool]:
    """The first of t = 1, ½, ¼, … whose point decreases F by Armijo's rule, along the
    multiplicative path ``β·exp(t·step/β)`` (exponents clipped to ±:data:`_LOG_STEP`, each βᵢ
    kept above :func:`_smallest`): to first order in t it is ``β + t·step``, so the decrease
    predicted is the Newton step's, but it never leaves β > 0, and a weight the step would take
    below 0 (large α: an objective the root all but leaves out) shrinks by up to e^50 in one step
    instead of holding everyone's step back. Where the predicted decrease ``dec`` is below F's
    rounding (the comparison would be noise there; weights too small to move F), the first t
    whose point lowers the relative stationarity below ``res`` instead, and then True: at the
    floor."""
    f0, t = _f(c, k, alpha, beta), 1.0
    at_floor = dec <= 64.0 * np.finfo(np.float64).eps * (1.0 + abs(f0))
    relative, smallest, abs_c, p = step / beta, _smallest(alpha), np.abs(c), 1.0 / alpha
    for _ in range(_HALVINGS):
        trial = np.maximum(beta * np.exp(np.clip(t * relative, -_LOG_STEP, _LOG_STEP)), smallest)
        if at_floor:
            if _residual(c, abs_c, k, p, trial) < res:
                return trial, True
        elif _f(c, k, alpha, trial) <= f0 - _ARMIJO * t * dec:
            return trial, False
        t *= 0.5
    return beta, at_floor


def _smallest(alpha: float) -> float:
    """The least β kept: the Hessian's ``β^(−1/α−1)`` stays finite above it."""
    return float(np.finfo(np.float64).tiny ** (1.0 / (1.0 + 1.0 / alpha)))


def _f(c: np.ndarray, k: np.ndarray, alpha: float, beta: np.ndarray) -> float:
    """``F(β)``, with ``ψ = log`` at α = 1 and ``ψ(β) = β^(1−1/α)/(1−1/α)`` otherwise."""
    if alpha == 1.0:
        barrier = float(k @ np.log(beta))
    else:
        e = 1.0 - 1.0 / alpha
        barrier = float(k @ beta**e) / e
    return 0.5 * float(beta @ (c @ beta)) - barrier
