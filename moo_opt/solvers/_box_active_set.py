"""The two Lawson–Hanson implementations behind :mod:`moo_opt.solvers.box`: SciPy's compiled one
for a definite equilibrated Gramian, and ours in numpy (rank truncation, statuses) for the rest."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from moo_opt.solvers._core import equilibrate
from moo_opt.solvers._input import not_psd_error
from moo_opt.solvers._tolerances import TOUCHING
from moo_opt.solvers.result import SolveStatus


@dataclass(frozen=True)
class Factor:
    """Jacobi equilibration ``Q = SCS`` and a factor ``BᵀB = C`` (rows: the positive
    eigenvalues)."""

    s: np.ndarray
    c: np.ndarray
    b: np.ndarray
    #: relative cut-off on the singular values of ``B_P`` (``√rcond``: eigenvalues of C below rcond)
    lsq_rcond: float
    #: every eigenvalue of C above ``rcond·max(1, λmax)``: B is square, every face non-singular
    definite: bool


def factor(host: np.ndarray, rcond: float, check_psd: bool) -> Factor:
    s, c = equilibrate(host)
    c = 0.5 * (c + c.T)
    lam, vec = np.linalg.eigh(c)
    top = max(1.0, float(lam[-1]))
    if check_psd and lam[0] < -math.sqrt(rcond) * top:
        raise not_psd_error(f"the equilibrated Gramian has eigenvalue {lam[0]:.3g}")
    keep = lam > 0.0
    b = np.sqrt(lam[keep])[:, None] * vec[:, keep].T
    return Factor(s, c, b, math.sqrt(rcond), bool(lam[0] > rcond * top))


def compiled_rows(f: Factor, a: np.ndarray, tol: float, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Lawson–Hanson compiled (:func:`scipy.optimize.nnls`, ``min ‖B(a + z)‖`` s.t. ``z ≥ 0``) on
    every row of ``a`` (K, N), for a definite C: ``(z, certified rows)``.

    A row is certified when its relative dual infeasibility is at most ``tol``, the stopping rule
    of :func:`active_set`; the others (SciPy's own iteration cap reached, or rounding short of
    ``tol``) are left to :func:`active_set`.
    """
    z = np.zeros_like(a)
    ran = np.zeros(a.shape[0], dtype=bool)
    for k, a_k in enumerate(a):
        try:
            # ≥ 0 as returned; the clip keeps v ≥ u exact whatever the SciPy version does
            z[k] = np.maximum(nnls(f.b, -(f.b @ a_k), maxiter=cap + 1)[0], 0.0)
        except RuntimeError:  # SciPy's iteration cap
            continue
        ran[k] = True
    y = a + z
    t = np.maximum(np.abs(y), np.abs(a)).sum(1, keepdims=True)
    lam = (y[:, None, :] * f.c).sum(-1)  # Cy row by row: the same rounding for one row or K
    return z, ran & (lam >= -tol * t).all(1)


def _relative(c: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``λᵢ/scaleᵢ = (Cy)ᵢ/T`` in equilibrated coordinates ``y = Sv``, ``a = Su``,
    ``T = Σⱼ max(|yⱼ|, |aⱼ|)`` (0 when T = 0)."""
    t = float(np.maximum(np.abs(y), np.abs(a)).sum())
    return c @ y / t if t > 0.0 else np.zeros_like(y)


def active_set(
    f: Factor, a: np.ndarray, tol: float, cap: int
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


def _face_is_singular(f: Factor, face: np.ndarray) -> bool:
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
