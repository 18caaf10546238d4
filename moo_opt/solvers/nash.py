"""Nash-MTL's bargaining weights: the positive solution of ``α ⊙ (Qα) = 1``, by damped Newton."""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import lapack
from torch import Tensor

from moo_opt.solvers._core import equilibrate
from moo_opt.solvers._input import host_gramian, iteration_options, not_psd_error, to_weights
from moo_opt.solvers.result import KKTReport, SolveResult, SolveStatus

# Newton steps are damped by 1/(1+λ) while the decrement λ is at least this (Nesterov & Nemirovski).
_DAMPED = 0.25
# Sufficient decrease (as a fraction of λ² = −rᵀΔ) for a full step to be taken in the damped phase.
_ARMIJO = 0.25
# Full Newton steps in a row that fail to lower the residual before the floating-point floor is
# declared.
_STALLS = 3


def solve_nash(
    q: Tensor | np.ndarray,
    *,
    rcond: float | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
    validate: bool | None = None,
) -> SolveResult:
    r"""Nash-MTL's bargaining weights: :math:`\alpha > 0` with :math:`\alpha_i (Q\alpha)_i = 1` for
    every i.

    Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, "Multi-Task Learning as a
    Bargaining Game" (ICML 2022): the Nash bargaining direction is :math:`d = G\alpha`, with α the
    stationary point of :math:`f(\alpha) = \tfrac12\alpha^\top Q\alpha - \sum_i\log\alpha_i`,
    found exactly by damped Newton (N = 2: closed form). [decision] Where no direction improves
    every objective (a zero gradient, opposite gradients, zero in the convex hull of some
    gradients), the *blocked* objectives get weight exactly 0 and Nash is solved on the rest (status
    ``INFEASIBLE``): **an objective is blocked iff its weight is exactly 0** (:func:`nash_blocked`
    returns them without solving). The method, the certificate, the blocked set and the cost:
    :ref:`nash-solver`.

    Statuses: ``OPTIMAL`` (a solution exists and is certified to ``tol``); ``INFEASIBLE`` (some
    objectives blocked, the others certified to ``tol``); ``MAX_ITER`` (``max_iter`` Newton steps
    without reaching ``tol``); ``INACCURATE`` (Newton stopped improving in floating point above
    ``tol``: extremely large weights, i.e. a nearly blocked problem; the certificate tells how far).
    The last two take precedence over ``INFEASIBLE``; zero weights still mark blocked objectives.

    Args:
        q: the N×N Gram matrix ``GᵀG`` (tensor or array, any float dtype), validated as for
            :func:`~moo_opt.solvers.solve_equality_qp`, plus a PSD check whenever the equilibrated
            Gramian ``C`` is not comfortably positive definite: eigenvalues below
            ``−√rcond·max(1, λmax)`` raise ``ValueError`` (smaller negative ones are rounding).
        rcond: relative eigenvalue threshold of singularity; default ``100·eps`` of ``q``'s dtype.
        tol: stationarity tolerance (> 0).
        max_iter: cap on the Newton steps (≥ 1).
        validate: ``None`` and ``True`` check the values (the solve synchronises with the host
            anyway, so nothing is deferred, even for N ≤ 2 on CUDA); ``False`` skips the checks
            of the other solvers, not the PSD one.

    Returns:
        A :class:`SolveResult` with ``problem="nash"``, ``method`` ``"newton"`` or
        ``"closed-form"`` (N ≤ 2), ``iterations`` the Newton steps, weights α (float64, on ``q``'s
        device, not normalised: ``d = Gα``).
    """
    g, host = host_gramian(q, validate)
    rc = iteration_options(g, rcond, tol, max_iter)
    alpha, iterations, status, method = _solve_host(host, rc, tol, int(max_iter))

    def certificate() -> KKTReport:
        return nash_kkt(host, alpha)

    return SolveResult.solved(
        to_weights(alpha, g.device),
        "nash",
        method=method,
        iterations=iterations,
        gram=host,
        status=status,
        certificate=certificate,
    )


def nash_kkt(gram: np.ndarray, alpha: np.ndarray) -> KKTReport:
    """The certificate of :func:`solve_nash` for weights ``alpha`` (zero weights are excluded as
    blocked)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    live = alpha != 0.0
    if not live.any():
        return KKTReport(0.0, 0.0, 0.0, 0.0)
    a = alpha[live]
    sub = gram[np.ix_(live, live)]
    stationarity = np.abs(a * (sub @ a) - 1.0) / np.maximum(
        1.0, np.abs(a) * (np.abs(sub) @ np.abs(a))
    )
    s = np.sqrt(np.maximum(np.diag(sub), 0.0))
    primal = float(np.maximum(-s * a, 0.0).max())
    return KKTReport(float(stationarity.max()), primal, 0.0, 0.0)


def nash_blocked(gram: np.ndarray, rcond: float) -> np.ndarray:
    """The blocked mask of :func:`solve_nash` for a validated symmetric float64 ``gram`` (all False
    when a Nash solution exists). Raises ``ValueError`` when ``gram`` is not PSD to ``√rcond``."""
    if gram.shape[0] <= 2:
        return _closed_form(gram, rcond)[0] == 0.0
    _, c = equilibrate(gram)
    if _comfortably_pd(c, rcond):
        return np.zeros(gram.shape[0], dtype=bool)
    return _blocked_set(c, rcond)


def _solve_host(
    gram: np.ndarray, rcond: float, tol: float, max_iter: int
) -> tuple[np.ndarray, int, SolveStatus, str]:
    n = gram.shape[0]
    if n <= 2:
        return _closed_form(gram, rcond)
    s, c = equilibrate(gram)
    blocked = np.zeros(n, dtype=bool)
    if not _comfortably_pd(c, rcond):
        blocked = _blocked_set(c, rcond)
    alpha = np.zeros(n)
    if blocked.all():
        return alpha, 0, SolveStatus.INFEASIBLE, "newton"
    live = ~blocked
    sub = c[np.ix_(live, live)] if blocked.any() else c
    beta, iterations, status = _newton(sub, tol, max_iter)
    alpha[live] = beta / s[live]
    if status is SolveStatus.OPTIMAL and blocked.any():
        status = SolveStatus.INFEASIBLE
    return alpha, iterations, status, "newton"


def _closed_form(gram: np.ndarray, rcond: float) -> tuple[np.ndarray, int, SolveStatus, str]:
    """N ≤ 2. For N = 2 with ``c = cos θ``, subtracting ``β₁(β₁ + cβ₂) = 1`` and
    ``β₂(cβ₁ + β₂) = 1`` gives ``(β₁ − β₂)(β₁ + β₂) = 0``, so ``β₁ = β₂ = 1/√(1 + c)``. ``C`` has
    the eigenvalues ``1 ± c``; the null vector of ``1 + c`` is ``(1, 1) ≥ 0``, so both are blocked
    when ``1 + c ≤ rcond·(1 + |c|)`` (opposite gradients), and a zero gradient alone is blocked."""
    n = gram.shape[0]
    d = np.diag(gram)
    live = d > 0.0
    if n == 1 or not live.all():
        # a gradient alone: αᵢ = 1/|gᵢ|
        alpha = np.where(live, 1.0 / np.sqrt(np.where(live, d, 1.0)), 0.0)
        return (
            alpha,
            0,
            SolveStatus.OPTIMAL if live.all() else SolveStatus.INFEASIBLE,
            "closed-form",
        )
    s = np.sqrt(d)  # unfloored: exact scale covariance however small a gradient is
    cos = float(gram[0, 1]) / float(s[0]) / float(s[1])
    top = max(1.0, 1.0 + abs(cos))
    if 1.0 - abs(cos) < -math.sqrt(rcond) * top:
        raise not_psd_error(f"the equilibrated Gram matrix has eigenvalue {1.0 - abs(cos):.3g}")
    cos = min(max(cos, -1.0), 1.0)
    if 1.0 + cos <= rcond * top:
        return np.zeros(2), 0, SolveStatus.INFEASIBLE, "closed-form"
    return 1.0 / (s * math.sqrt(1.0 + cos)), 0, SolveStatus.OPTIMAL, "closed-form"


def _comfortably_pd(c: np.ndarray, rcond: float) -> bool:
    """Whether ``C`` is positive definite with a condition estimate well inside ``1/rcond`` (LAPACK
    ``potrf`` and ``pocon``): then no ``y ≥ 0`` has ``Cy = 0`` and no eigen-decomposition is
    needed."""
    n = c.shape[0]
    factor, info = lapack.dpotrf(c, lower=False, clean=False)
    if info != 0:
        return False
    rc, info = lapack.dpocon(factor, float(n))  # ‖C‖₁ ≤ n for a PSD matrix with unit diagonal
    return info == 0 and rc > 100.0 * n * rcond


def _blocked_set(c: np.ndarray, rcond: float) -> np.ndarray:
    """The blocked mask ``B`` of a singular ``C`` (raises ``ValueError`` when ``C`` is not PSD to
    ``√rcond``)."""
    from scipy.optimize import linprog

    n = c.shape[0]
    lam, vec = np.linalg.eigh(0.5 * (c + c.T))
    top = max(1.0, float(lam[-1]))
    if lam[0] < -math.sqrt(rcond) * top:
        raise not_psd_error(f"the equilibrated Gram matrix has eigenvalue {lam[0]:.3g}")
    null = lam <= rcond * top
    if not null.any():
        return np.zeros(n, dtype=bool)
    z = vec[:, null]
    k = z.shape[1]
    # Maximal support of the cone {y ≥ 0 : Cy = 0}, in one LP over y = Zx (x free) and t ∈ [0, 1]ᴺ:
    #   max 1ᵀt  s.t.  y ≥ −rcond·1,  1ᵀy ≤ 1,  √rcond·tᵢ ≤ yᵢ + rcond.
    # Entries down to −rcond are the rounding of Z and count as 0 (the bound 1ᵀy ≤ 1 fixes the
    # scale); tᵢ reaches 1 iff some y of the cone has yᵢ ≳ √rcond, and the optimum takes all of them
    # at once (the cone is convex). √rcond is the singularity threshold's own scale,
    # ‖Gy‖ ≤ √(rcond·λmax)‖y‖ on the null space; a spurious block needs a null direction whose
    # positive and negative parts differ by a factor 1/√rcond, i.e. a nearly blocked set.
    col = z.sum(axis=0)  # 1ᵀZ
    a_ub = np.block(
        [
            [-z, np.zeros((n, n))],
            [col[None, :], np.zeros((1, n))],
            [-z, math.sqrt(rcond) * np.eye(n)],
        ]
    )
    b_ub = np.concatenate((np.full(n, rcond), [1.0], np.full(n, rcond)))
    objective = np.concatenate((np.zeros(k), -np.ones(n)))
    bounds = [(None, None)] * k + [(0.0, 1.0)] * n
    for options in ({"primal_feasibility_tolerance": 1e-9}, {}, {"presolve": False}):
        res = linprog(
            objective, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs", options=options
        )
        if res.status == 0 and res.x is not None:
            return res.x[k:] > 0.5
    # The LP is feasible (x = 0) and bounded; should HiGHS still fail, block what certainly is: zero
    # gradients.
    return np.diag(c) == 0.0  # pragma: no cover


def _newton(c: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, int, SolveStatus]:
    """Damped Newton for ``β ⊙ (Cβ) = 1``: ``(β, steps, status)``, ``β > 0``."""
    n = c.shape[0]
    abs_c = np.abs(c)
    ray = float(c.sum())  # 1ᵀC1
    beta = np.full(n, math.sqrt(n / ray)) if ray > 0.0 and math.isfinite(ray) else np.ones(n)
    best, best_res = beta, math.inf
    stalls = 0
    full = False
    for it in range(max_iter + 1):
        cb = c @ beta
        res = float((np.abs(beta * cb - 1.0) / np.maximum(1.0, beta * (abs_c @ beta))).max())
        if res < best_res:
            best, best_res = beta, res
            stalls = 0
        elif full:
            stalls += 1
        if res <= tol:
            return beta, it, SolveStatus.OPTIMAL
        if stalls >= _STALLS:  # full steps no longer lower the residual: the floating-point floor
            return best, it, SolveStatus.INACCURATE
        if it == max_iter:
            break
        grad = cb - 1.0 / beta
        h = c + np.diag(1.0 / (beta * beta))
        _, step, info = lapack.dposv(h, -grad)  # Cholesky solve
        if info != 0:  # H is PD in exact arithmetic; this happens only when β has diverged
            return best, it, SolveStatus.INACCURATE
        lam = math.sqrt(max(-float(grad @ step), 0.0))
        full = lam < _DAMPED
        if full:
            beta = beta + step
            continue
        # the full step when it is feasible and decreases f enough (Armijo), else damped
        trial = beta + step
        if bool((trial > 0.0).all()) and _f(c, trial) <= _f(c, beta) - _ARMIJO * lam * lam:
            beta = trial
        else:
            beta = beta + step / (1.0 + lam)
    return best, max_iter, SolveStatus.MAX_ITER


def _f(c: np.ndarray, beta: np.ndarray) -> float:
    return 0.5 * float(beta @ (c @ beta)) - float(np.log(beta).sum())
