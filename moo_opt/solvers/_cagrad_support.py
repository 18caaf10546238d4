"""CAGrad's support geometry: the problem's data, the line ``w(κ) = α + κβ`` of MGDA's problem on
the shifted gradients restricted to a support, Carathéodory's reduction to a minimal support, the
candidates a support gives (with their certificate), and the certificate itself. The search over
supports is in :mod:`moo_opt.solvers.cagrad`; the derivation in the docs (:ref:`cagrad-solver`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from moo_opt.solvers._core import _householder_basis, jacobi_scales
from moo_opt.solvers._tolerances import CERTIFIED, TOUCHING, ZERO_CERTIFIED
from moo_opt.solvers.result import KKTReport, SolveStatus


@dataclass(frozen=True)
class _Problem:
    q: np.ndarray
    s: np.ndarray  # Jacobi scales √Qᵢᵢ (floored)
    b: np.ndarray  # Qm = Gᵀg0
    g0: float  # ‖g0‖ (0 when zero to rounding)
    r: float  # c·‖g0‖
    rcond: float
    tol: float


def _radius(q: np.ndarray, c: float, rcond: float) -> tuple[np.ndarray, float, float]:
    """``(b, ‖g0‖, r)``; ``‖g0‖`` is 0 when ``‖g0‖² = mᵀQm`` is at the rounding level of its
    terms."""
    n = q.shape[0]
    m = np.full(n, 1.0 / n)
    b = q @ m
    g0sq = float(m @ b)
    noise = n * rcond * float(m @ np.abs(q) @ m)
    if not g0sq > noise:
        return b, 0.0, 0.0
    g0 = math.sqrt(g0sq)
    return b, g0, c * g0


def _problem(q: np.ndarray, c: float, rcond: float, tol: float) -> _Problem:
    b, g0, r = _radius(q, c, rcond)
    return _Problem(q, jacobi_scales(q), b, g0, r, rcond, tol)


@dataclass(frozen=True)
class _Solution:
    w: np.ndarray
    z: np.ndarray
    status: SolveStatus
    method: str
    iterations: int


@dataclass(frozen=True)
class _Line:
    """``w(κ) = α + κβ`` on the support ``idx`` (full-length vectors), ``a0 = ‖Gα‖²``,
    ``b2 = ‖Gβ‖²``."""

    idx: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    a0: float
    b2: float
    #: ``Gα = 0`` to rounding: 0 lies in the affine hull of the support's gradients
    zero: bool
    #: the support's reduced Hessian was truncated (dependent gradients): the weights are not unique
    degenerate: bool
    #: when degenerate, directions (columns, full length) with ``Gd = 0`` and ``Σd = 0``
    null: np.ndarray | None = None


def _line(p: _Problem, idx: np.ndarray) -> _Line:
    """MGDA's problem on the shifted gradients restricted to the affine hull of the support ``idx``.

    In the equilibrated variable ``u = S w`` (``C = S⁻¹QS⁻¹``, constraint ``aᵀu = 1`` with
    ``a = S⁻¹1``, linear term ``κ eᵀu`` with ``e = S⁻¹b``): ``u = u₀ + Zy`` with ``u₀ = a/|a|²``,
    ``Z`` an orthonormal basis of ``a⊥``, ``H = ZᵀCZ`` and ``y = −H⁺Zᵀ(Cu₀ + κe)``, eigenvalues of
    ``H`` at most ``rcond·max(1, λmax)`` truncated.
    """
    n = p.q.shape[0]
    k = idx.size
    s = p.s[idx]
    c = p.q[idx][:, idx] / s[:, None] / s[None, :]
    a = 1.0 / s
    u0 = a / float(a @ a)
    degenerate = False
    null_u: np.ndarray | None = None
    if k == 1:
        ua, ub = u0, np.zeros(1)
    else:
        e = p.b[idx] / s
        if k == 2:  # Z is one column and H a scalar
            z = np.array((a[1], -a[0])) / math.hypot(a[0], a[1])
            cz = c @ z
            h = float(z @ cz)
            degenerate = not h > p.rcond * max(1.0, h)
            ua = u0 if degenerate else u0 - (float(cz @ u0) / h) * z
            ub = np.zeros(2) if degenerate else -(float(z @ e) / h) * z
            null_u = z[:, None] if degenerate else None
        else:
            z = _householder_basis(a)
            lam, vec = np.linalg.eigh(z.T @ c @ z)
            keep = lam > p.rcond * max(1.0, float(lam[-1]))
            degenerate = not bool(keep.all())
            vk, lk = vec[:, keep], lam[keep]
            ua = u0 - z @ (vk @ ((vk.T @ (z.T @ (c @ u0))) / lk))
            ub = -(z @ (vk @ ((vk.T @ (z.T @ e)) / lk)))
            null_u = z @ vec[:, ~keep] if degenerate else None
    a0 = max(float(ua @ c @ ua), 0.0)
    b2 = max(float(ub @ c @ ub), 0.0)
    big = float(np.abs(ua).sum())
    alpha, beta = np.zeros(n), np.zeros(n)
    alpha[idx], beta[idx] = ua / s, ub / s
    null = None
    if null_u is not None:
        null = np.zeros((n, null_u.shape[1]))
        null[idx] = null_u / s[:, None]
    return _Line(idx, alpha, beta, a0, b2, a0 <= n * p.rcond * big * big, degenerate, null)


def _minimal_support(p: _Problem, w: np.ndarray) -> tuple[np.ndarray, _Line]:
    """Carathéodory's reduction: while the support's gradients are affinely dependent, move ``w``
    along a null direction ``d`` (``Gd = 0``, ``Σd = 0``: ``Gw`` and ``bᵀw`` unchanged) until a
    weight reaches 0. Returns the reduced weights and the line of their (independent) support."""
    while True:
        idx = np.flatnonzero(w > 0.0)
        line = _line(p, idx)
        if line.null is None:
            return w, line
        d = line.null[:, 0]
        if not bool((d[idx] < 0.0).any()):
            d = -d
        falling = idx[d[idx] < 0.0]
        ratios = w[falling] / -d[falling]
        j = int(np.argmin(ratios))
        w = np.maximum(w + float(ratios[j]) * d, 0.0)
        w[falling[j]] = 0.0
        w = w / w.sum()


@dataclass(frozen=True, eq=False)
class _Candidate:
    """Weights ``w`` (clipped to the simplex) with their subgradient coefficients ``z`` (see the
    certificate)."""

    p: _Problem
    raw: np.ndarray
    z: np.ndarray
    #: ``Gw* = 0``: ``w = α``, ``z = β``
    zero: bool
    degenerate: bool

    @cached_property
    def w(self) -> np.ndarray:
        w = np.maximum(self.raw, 0.0)
        return w / w.sum()

    @cached_property
    def nu(self) -> np.ndarray:
        return _relative_nu(self.p, self.w, self.z)

    @cached_property
    def residual(self) -> float:
        return _report(self.p, self.w, self.z, self.nu).max

    @property
    def certified(self) -> bool:
        return self.residual <= (ZERO_CERTIFIED if self.zero else CERTIFIED)

    def accepted(self, idx: np.ndarray) -> bool:
        """``w ≥ −tol`` on the support (clipped afterwards), relative multipliers ``≥ −tol`` off it,
        and certified (on the clipped weights)."""
        if not bool((self.raw[idx] >= -self.p.tol).all()):
            return False
        off = np.ones(self.w.size, dtype=bool)
        off[idx] = False
        return not bool((self.nu[off] < -self.p.tol).any()) and self.certified

    def unique(self) -> bool:
        """Whether the weights are unique: any other optimum has the same ``Gw`` (hence the same ν)
        and its support among the touching indices (``νᵢ ≤ 1e-9`` relative), so they are unique
        when the gradients of that face are affinely independent (flagged also in the rare case
        where only the signs of the weights make them unique)."""
        if self.zero or self.degenerate:
            return False
        face = (self.w > 0.0) | (self.nu <= TOUCHING)
        if int(face.sum()) == int((self.w > 0.0).sum()):
            return True
        return not _line(self.p, np.flatnonzero(face)).degenerate

    def solution(
        self, method: str, iterations: int, status: SolveStatus | None = None
    ) -> _Solution:
        if status is None:
            status = SolveStatus.OPTIMAL if self.unique() else SolveStatus.DEGENERATE
        return _Solution(self.w, self.z, status, method, iterations)


def _root(p: _Problem, line: _Line) -> float | None:
    """The κ with ``‖G(α + κβ)‖ = κr`` on the line: ``√(a0 / (r² − b2))``; None when there is none
    (``‖Gβ‖ ≥ r``) or ψ is constant on the line (``Gα = 0``)."""
    gap = p.r * p.r - line.b2
    if line.zero or not gap > 0.0:
        return None
    return math.sqrt(line.a0 / gap)


def _regular(p: _Problem, line: _Line) -> _Candidate | None:
    kappa = _root(p, line)
    if kappa is None:
        return None
    raw = line.alpha + kappa * line.beta
    w = np.maximum(raw, 0.0)
    w = w / w.sum()
    t2 = float(w @ p.q @ w)
    if not t2 > 0.0:
        return None
    return _Candidate(p, raw, (p.r / math.sqrt(t2)) * w, False, line.degenerate)


def _zero(p: _Problem, line: _Line) -> _Candidate | None:
    if not line.zero or line.b2 > p.r * p.r * (1.0 + p.tol):
        return None
    return _Candidate(p, line.alpha, line.beta, True, True)


def _relative_nu(p: _Problem, w: np.ndarray, z: np.ndarray) -> np.ndarray:
    if p.g0 == 0.0:  # F ≡ 0 to rounding (b is rounding noise): every w is optimal
        return np.zeros_like(w)
    h = p.b + p.q @ z
    mu = float(w @ h)
    t = float(p.s @ np.abs(w))
    scale = (p.s + t) * (p.g0 + p.r)
    return (h - mu) / np.where(scale > 0.0, scale, 1.0)


def _report(p: _Problem, w: np.ndarray, z: np.ndarray, nu: np.ndarray | None = None) -> KKTReport:
    """The certificate of :func:`solve_cagrad` for the pair ``(w, z)`` (see its docstring)."""
    if nu is None:
        nu = _relative_nu(p, w, z)
    primal = max(abs(float(w.sum()) - 1.0), float(np.maximum(-w, 0.0).max()))
    qw = p.q @ w
    tw = math.sqrt(max(float(w @ qw), 0.0))
    tz = math.sqrt(max(float(z @ p.q @ z), 0.0))
    big = float(p.s @ np.abs(w)) * (p.g0 + p.r)
    slack = p.r * tw - float(z @ qw)
    stationarity = max(slack / big if big > 0.0 else 0.0, tz / p.r - 1.0 if p.r > 0.0 else 0.0, 0.0)
    return KKTReport(
        stationarity=stationarity,
        primal_feasibility=primal,
        dual_feasibility=float(np.maximum(-nu, 0.0).max()),
        complementarity=float((np.abs(w) * np.abs(nu)).max()),
    )
