"""CAGrad's inner problem: ``minimise bᵀw + r·|Gw|`` over the simplex, solved exactly through MGDA's problem."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from torch import Tensor

from moo_opt.solvers._core import _householder_basis, jacobi_scales
from moo_opt.solvers._input import host_gramian, iteration_options, to_weights
from moo_opt.solvers._tolerances import BRACKET_RTOL, CERTIFIED, KAPPA_FLOOR, TOUCHING, ZERO_CERTIFIED
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
    r"""CAGrad's inner problem, :math:`\min_{w \in \Delta} F(w) = b^\top w + r\,\|Gw\|`, solved exactly.

    Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task Learning"
    (NeurIPS 2021). With the gradients :math:`G = [g_1 \dots g_N]`, :math:`Q = G^\top G`, the
    average gradient :math:`g_0 = Gm` (:math:`m = \mathbf 1/N`), :math:`b = Qm` (so
    :math:`b^\top w = g_w^\top g_0` for :math:`g_w = Gw`) and the radius :math:`r = c\,\|g_0\|`,
    CAGrad's update is :math:`d = g_0 + (r/\|g_{w^*}\|)\, g_{w^*}`: the maximiser of
    :math:`\min_i g_i^\top d` over the ball :math:`\|d - g_0\| \le r`. Its weights on the raw
    gradients are :func:`cagrad_direction_weights` ``= m + (r/‖Gw*‖) w*`` (the paper's code then
    divides by ``1 + c²``; that rescaling is the balancer's business, not the solver's).

    Method. KKT at :math:`w` with :math:`t = \|Gw\| > 0`: :math:`\nu = b + (r/t)Qw - \mu\mathbf 1 \ge 0`,
    :math:`\mu = w^\top(b + (r/t)Qw)`, :math:`w \ge 0`, :math:`\mathbf 1^\top w = 1`,
    :math:`w_i\nu_i = 0`. Multiplied by :math:`\kappa = t/r` these are the KKT conditions of MGDA's
    problem on the shifted gradients :math:`g_i + \kappa g_0`, :math:`\min_\Delta \tfrac12\|G(w + \kappa m)\|^2`
    (Gramian :math:`Q_\kappa = Q + \kappa(b\mathbf 1^\top + \mathbf 1 b^\top) + \kappa^2\|g_0\|^2\mathbf 1\mathbf 1^\top`),
    so :math:`w^*` is its solution :math:`w(\kappa)` at the :math:`\kappa` where
    :math:`\psi(\kappa) = \|Gw(\kappa)\|/\kappa = r`. Geometrically :math:`Gw(\kappa)` is the
    projection of :math:`-\kappa g_0` onto the convex hull H of the gradients; on a face of H with
    affine hull :math:`p_0 + V` (:math:`p_0 \perp V`) it is :math:`p_0 - \kappa\Pi_V g_0`, so
    :math:`\psi^2 = \|p_0\|^2/\kappa^2 + \|\Pi_V g_0\|^2` there: ψ is continuous and non-increasing
    (+∞ at 0+ unless 0 ∈ H, ≤ ``max‖gᵢ‖/κ``), and the root is exact once its face (the support S)
    is known. On a support S: :math:`w(\kappa) = \alpha + \kappa\beta` with α the affine min-norm
    point (:math:`G\alpha = p_0`) and :math:`G\beta = -\Pi_V g_0`, hence
    :math:`\kappa^* = \sqrt{\|G\alpha\|^2 / (r^2 - \|G\beta\|^2)}` (no root when
    :math:`\|G\beta\| \ge r`). α and β come from one eigen-decomposition of the Jacobi-equilibrated
    reduced Hessian of S (pseudo-inverse past ``rcond``: exact for dependent gradients too, whose
    null directions have :math:`G z = 0` and :math:`b^\top z = 0`).

    Search for the support: a simplex solve at κ = 1 (κ is dimensionless: invariant to ``Q → cQ``;
    capped below the a-priori ceiling ``max‖gᵢ‖/r``, above which ψ ≤ r), whose support S is tried
    first; then at most 8 primal-dual active-set steps on the closed form from S (drop negative
    weights, add negative multipliers; with no root on S, drop the index that blocks the ray
    α + κβ). Usually S itself or one or two steps give the answer. Otherwise the bisection on
    ψ(κ) = r goes on with exact simplex solves (:func:`solve_simplex_qp` on :math:`Q_\kappa`), each
    support tried the same way. The bracket [lo, hi] starts as [0, ceiling]; the next κ is the
    closed-form root of the last support when it falls inside the bracket and the bracket keeps
    halving (in log scale), otherwise hi/2 while lo = 0 and the geometric mean after. A candidate is accepted when ``w ≥ −tol`` on S (then
    clipped), every relative multiplier off S is ``≥ −tol``, and the certificate below is at most
    1e-9. If none is, the bisection stops at a bracket of relative width 1e-15 (or ``max_iter``
    simplex solves, or κ below 2⁻⁶⁴ of its ceiling) and the best candidate found (the weights of the
    simplex solves included) is returned with the status its certificate allows — never silently.

    [decision] Special cases.
        * N = 1: ``w = (1)``.
        * r = 0 (c = 0, or :math:`\|g_0\|^2 \le N\cdot\mathrm{rcond}\cdot m^\top|Q|m`, i.e. zero to
          rounding): the norm term vanishes and :math:`d = g_0` (direction weights m). The inner
          problem is then linear, :math:`\min b^\top w`: the weights are uniform over
          :math:`\arg\min_i b_i` (ties: relative gap ≤ tol), ``OPTIMAL`` when the minimiser is
          unique and ``DEGENERATE`` otherwise (g0 = 0 ⇒ F ≡ 0, every w is optimal: w = m).
        * :math:`Gw^* = 0` (0 ∈ H and ψ ≤ r near κ = 0, i.e. the ball reaches the dual cone of the
          gradients): then :math:`F^* = 0`, λ = r/‖Gw‖ has no meaning, and
          :func:`cagrad_direction_weights` returns the projection of :math:`g_0` onto the dual cone
          (the maximiser of the worst improvement nearest to :math:`g_0`; :math:`g_0` itself when it
          conflicts with no gradient). The weights are the affine min-norm point α of the support
          reached as κ → 0+, where :math:`\|G\beta\| \le r` certifies optimality; status
          ``DEGENERATE``. [decision] A support whose :math:`\|G\alpha\|^2 \le N\cdot\mathrm{rcond}\cdot T^2`
          (:math:`T = \sum s_j|\alpha_j|`, :math:`s_j = \sqrt{Q_{jj}}`) counts as ``Gα = 0``: Q determines
          :math:`\|Gw\|^2` only to rounding, so :math:`\|Gw\|` is resolved to :math:`\sqrt{\mathrm{rcond}}\,T` at best.
        * Dependent gradients (duplicated, zero, rank-deficient G): the support of each simplex solve
          is first reduced to affinely independent gradients (Carathéodory: along null directions
          of the support, which change neither :math:`Gw` nor :math:`b^\top w`): the tie-break is a
          minimal support, and the status is ``DEGENERATE`` whenever the gradients of the optimal
          face (the support plus the indices with relative multiplier ≤ 1e-9) are affinely dependent.

    Statuses: ``OPTIMAL`` (certified to 1e-9, the support's sub-problem non-singular: the weights are
    unique); ``DEGENERATE`` (optimal, certified — to 1e-6 for :math:`Gw^* = 0` — but the weights are
    not unique: dependent gradients on the optimal face, ties at r = 0, or :math:`Gw^* = 0`);
    ``INACCURATE`` (no candidate certified before the bracket closed: the certificate says how far;
    typically :math:`\|Gw^*\|` barely above the rounding level); ``MAX_ITER`` (``max_iter`` simplex
    solves, same).

    Certificate (``result.kkt``, relative and scale-free). It is checked as a pair :math:`(w, z)`,
    :math:`v = Gz` standing for the subgradient of :math:`r\|\cdot\|` at :math:`Gw`
    (:math:`z = (r/t)w` when :math:`t = \|Gw\| > 0`, :math:`z = \beta` when :math:`Gw^* = 0`):
    :math:`\nu = b + Qz - \mu\mathbf 1`, :math:`\mu = w^\top(b + Qz)`, each :math:`\nu_i` divided by
    :math:`\mathrm{scale}_i = (s_i + T)(\|g_0\| + r)`, :math:`T = \sum_j s_j|w_j|` (a bound on each
    term of :math:`\nu_i`). ``primal_feasibility = max(|Σw − 1|, max(−wᵢ, 0))``,
    ``dual_feasibility = max(−νᵢ, 0)/scaleᵢ``, ``complementarity = max |wᵢ|·|νᵢ|/scaleᵢ``,
    ``stationarity = max((r‖Gw‖ − zᵀQw) / (T(‖g0‖ + r)), ‖Gz‖/r − 1, 0)`` (0 up to rounding when
    t > 0; it is what makes v a valid subgradient). Together they bound the optimality gap:
    :math:`F(w) - F^* \le \sum_i w_i\nu_i + r\|Gw\| - z^\top Q w` when :math:`\|Gz\| \le r`.

    Args:
        q: the N×N Gram matrix ``GᵀG`` (tensor on any device or numpy array, any float dtype),
            validated as for :func:`~moo_opt.solvers.solve_simplex_qp` (always: the solve is on
            the host; ``validate=False`` skips the checks).
        c: the paper's c ≥ 0 (finite): the radius of the ball is ``c·‖g0‖``.
        rcond: relative eigenvalue cut-off of the equilibrated sub-problems (and of ``Gw = 0``);
            default ``100·eps`` of ``q``'s precision.
        tol: relative dual-feasibility tolerance of a support (> 0); also the tie tolerance at r = 0.
        max_iter: cap on the simplex solves of the bisection (≥ 1).
        validate: as for the other solvers.

    Returns:
        :class:`SolveResult` with ``problem="cagrad"``, ``weights`` the inner :math:`w^*` (float64 on
        ``q``'s device, on the simplex), ``method`` ``"closed-form-support"`` (the closed form on the
        support of a simplex solve), ``"active-set"`` (on a support found by active-set steps from
        there), ``"bisection"`` (the bracket closed before a candidate was accepted) or
        ``"closed-form"`` (N = 1, r = 0); ``iterations`` the simplex solves plus the active-set
        steps (supports other than a simplex solve's own): 1 when the first support is the answer.

    Raises:
        ValueError: ``c`` is negative or not finite; ``q`` is invalid (see ``prepare``); bad
            ``tol``/``max_iter``/``rcond``.

    Cost: on the host in float64 (one synchronisation on CUDA): per support one eigen-decomposition of
    its reduced Hessian (a scalar for two indices), per simplex solve one :func:`solve_simplex_qp`.
    """
    cval = _check_c(c)
    g, host = host_gramian(q, validate)
    rc = iteration_options(g, rcond, tol, max_iter)
    p = _problem(host, cval, rc, tol)
    sol = _solve_host(p, int(max_iter))

    def certificate() -> KKTReport:
        return _report(p, sol.w, sol.z)

    return SolveResult.solved(
        to_weights(sol.w, g.device), "cagrad", method=sol.method, iterations=sol.iterations, gram=host, status=sol.status, certificate=certificate
    )


def cagrad_direction_weights(q_host: np.ndarray, w: np.ndarray, c: float, *, rcond: float | None = None) -> np.ndarray:
    r"""CAGrad's weights on the raw gradients (``d = G·(these)``) for the inner weights ``w`` of :func:`solve_cagrad`.

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
        raise ValueError(f"c must be a finite real number >= 0 (CAGrad's radius factor), got {c!r}") from exc
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"c must be finite and >= 0 (CAGrad's radius is c·|g0|; c = 0 gives the mean gradient), got {c!r}")
    return value


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
    """``(b, ‖g0‖, r)``; ``‖g0‖`` is 0 when ``‖g0‖² = mᵀQm`` is at the rounding level of its terms."""
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
    """``w(κ) = α + κβ`` on the support ``idx`` (full-length vectors), ``a0 = ‖Gα‖²``, ``b2 = ‖Gβ‖²``."""

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

    def solution(self, method: str, iterations: int, status: SolveStatus | None = None) -> _Solution:
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


def _active_set(p: _Problem, first: _Line, tried: list[_Candidate]) -> tuple[_Candidate | None, int]:
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
    """Simplex solves at κ (bisection on ψ(κ) = r); the active-set steps from each solve's support."""
    ceiling = float(p.s.max()) / p.r  # ψ(κ) ≤ max‖gᵢ‖/κ ≤ r from here on
    lo, hi = 0.0, ceiling
    kappa = min(1.0, 0.5 * ceiling)
    last_width = math.inf
    tried: list[_Candidate] = []
    solves = extra = 0
    while solves < max_iter:
        solves += 1
        w = solve_simplex_qp(_shifted(p, kappa), rcond=p.rcond, tol=p.tol, validate=False).weights.numpy()
        w, line = _minimal_support(p, w)
        found, steps = _active_set(p, line, tried)
        extra += steps - 1
        if found is not None:
            return found.solution("closed-form-support" if steps == 1 else "active-set", solves + extra)
        t2 = max(float(w @ p.q @ w), 0.0)
        if t2 > 0.0:
            tried.append(_Candidate(p, w, (p.r / math.sqrt(t2)) * w, False, True))
        if math.sqrt(t2) > kappa * p.r:
            lo = kappa
        else:
            hi = kappa
        if (lo > 0.0 and hi / lo - 1.0 <= BRACKET_RTOL) or hi <= KAPPA_FLOOR * ceiling:
            break
        # Next κ: the closed-form root of this support when inside the bracket, as long as the bracket
        # keeps halving (in log scale); else halve (no lower end yet) or take the geometric mean.
        width = math.log(hi / lo) if lo > 0.0 else math.inf
        est = _root(p, line)
        if est is not None and lo < est < hi and (width <= 0.5 * last_width or not math.isfinite(last_width)):
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
    return best.solution("bisection", solves + extra, SolveStatus.MAX_ITER if solves >= max_iter else SolveStatus.INACCURATE)


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
