"""Host-side float64 numerics shared by the solvers (numpy and LAPACK on small N×N matrices).

The equality-constrained problem ``min 1/2 wᵀQw  s.t. 1ᵀw = 1`` is solved after Jacobi
equilibration ``Q = S C S`` (``S = diag(√Qᵢᵢ)``, ``C`` with a unit diagonal), in the variable
``u = S w`` with the constraint ``aᵀu = 1``, ``a = S⁻¹1``:

* fast path: when ``C`` is numerically positive definite (LAPACK ``posv`` and a ``pocon`` condition
  estimate), ``w ∝ S⁻¹ C⁻¹ a = Q⁻¹1``;
* otherwise the null-space method: ``u = u₀ + Z y`` with ``Z`` an orthonormal basis of ``a⊥``
  (one Householder reflector), ``H = ZᵀCZ`` diagonalised, eigenvalues ``≤ rcond·max(1, λmax)``
  truncated. When any is truncated the optimal weights are not unique (or not resolvable): the
  minimum-Euclidean-norm optimal ``w`` is returned and the problem flagged degenerate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from moo_opt.solvers._input import not_psd_error
from moo_opt.solvers._tolerances import DIAG_FLOOR


@dataclass(frozen=True)
class CoreSolution:
    weights: np.ndarray
    degenerate: bool
    #: known condition of the reduced Hessian, or None when only the fast path ran
    condition: float | None
    method: str


def jacobi_scales(gram: np.ndarray) -> np.ndarray:
    """``sᵢ = √Qᵢᵢ``, floored at ``√(1e-32·maxᵢ Qᵢᵢ)`` (all ones for Q = 0)."""
    d = np.diag(gram)
    top = float(d.max())
    return np.sqrt(np.maximum(d, top * DIAG_FLOOR)) if top > 0.0 else np.ones_like(d)


def equilibrate(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``s`` (the Jacobi scales) and ``C = S⁻¹QS⁻¹``."""
    s = jacobi_scales(gram)
    c = gram / s[:, None] / s[None, :]
    return s, c


def _cholesky_solve(c: np.ndarray, a: np.ndarray, rcond: float) -> np.ndarray | None:
    """``C⁻¹a`` when C is comfortably positive definite, else None (the caller takes the exact
    path)."""
    factor, x, info = lapack.dposv(c, a)
    if info != 0:
        return None
    # ‖C‖₁ ≤ n for a PSD matrix with diagonal ≤ 1; overestimating it only makes the test stricter.
    n = c.shape[0]
    rc, info = lapack.dpocon(factor, float(n))
    # pocon estimates the 1-norm reciprocal condition, within a factor n of the 2-norm one; the
    # margin keeps every accepted C well inside the non-degenerate region of the exact path.
    if info != 0 or rc <= 100.0 * n * rcond:
        return None
    return x


def _householder_basis(a: np.ndarray) -> np.ndarray:
    """Orthonormal basis (n × n−1) of the hyperplane orthogonal to ``a``."""
    n = a.shape[0]
    v = a.copy()
    v[0] += math.copysign(float(np.linalg.norm(a)), float(a[0]))
    z = (-2.0 / float(v @ v)) * np.outer(v, v[1:])
    z[1:, :] += np.eye(n - 1)
    return z


def _reduced_hessian(c: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = _householder_basis(a)
    h = z.T @ c @ z
    return z, 0.5 * (h + h.T)


def _check_psd(lam: np.ndarray, top: float, rcond: float) -> None:
    if lam.size and lam[0] < -math.sqrt(rcond) * top:
        raise not_psd_error(f"the equilibrated reduced Hessian has eigenvalue {lam[0]:.3g}")


def null_space_solve(gram: np.ndarray, rcond: float) -> CoreSolution:
    n = gram.shape[0]
    s, c = equilibrate(gram)
    a = 1.0 / s
    u0 = a / float(a @ a)
    if n == 1:
        return CoreSolution(u0 / s, False, 1.0, "null-space")
    z, h = _reduced_hessian(c, a)
    b = z.T @ (c @ u0)
    lam, vec = np.linalg.eigh(h)
    top = max(1.0, float(lam[-1]))
    _check_psd(lam, top, rcond)
    keep = lam > rcond * top
    vk = vec[:, keep]
    y = -(vk @ ((vk.T @ b) / lam[keep]))
    w = (u0 + z @ y) / s
    degenerate = not bool(keep.all())
    if degenerate:
        # All optimal w differ by S⁻¹Z·null(H): project onto the complement for the minimum norm.
        basis = (z @ vec[:, ~keep]) / s[:, None]
        coef, *_ = np.linalg.lstsq(basis, w, rcond=None)
        w = w - basis @ coef
    w = w / w.sum()
    return CoreSolution(
        w, degenerate, math.inf if degenerate else top / float(lam[0]), "null-space"
    )


def equality_core(gram: np.ndarray, rcond: float, method: str = "auto") -> CoreSolution:
    """Solve the equality-constrained QP on a validated symmetric float64 matrix."""
    if method == "auto":
        r = 1.0 / jacobi_scales(gram)
        x = _cholesky_solve(gram * r[:, None] * r, r, rcond)  # C = S⁻¹QS⁻¹, rhs a = S⁻¹1
        if x is not None:
            w = x * r
            return CoreSolution(w / w.sum(), False, None, "cholesky")
    return null_space_solve(gram, rcond)


def equality_condition(gram: np.ndarray) -> float:
    """``max(1, λmax(H)) / λmin(H)`` of the equilibrated reduced Hessian (1 when N = 1)."""
    n = gram.shape[0]
    if n <= 1:
        return 1.0
    s, c = equilibrate(gram)
    _, h = _reduced_hessian(c, 1.0 / s)
    lam = np.linalg.eigvalsh(h)
    if lam[0] <= 0.0:
        return math.inf
    return max(1.0, float(lam[-1])) / float(lam[0])


def gram_condition(gram: np.ndarray) -> float:
    """``λmax(C) / λmin(C)`` of the Jacobi-equilibrated Gramian (``inf`` when it is singular)."""
    _, c = equilibrate(gram)
    lam = np.linalg.eigvalsh(0.5 * (c + c.T))
    if lam[0] <= 0.0:
        return math.inf
    return float(lam[-1]) / float(lam[0])
