"""What a solver returns: the weights, an honest status and a KKT certificate.

Everything except ``weights`` is computed on the host and lazily, so that a solve on a CUDA tensor
does not synchronise with the host until one of those figures is read.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import torch
from torch import Tensor

#: "equality" (Solution 2), "simplex" (MGDA), "box" (UPGrad's projections), "nash" (Nash-MTL),
#: "cagrad" (CAGrad's inner problem), "alignment" (Aligned-MTL's balance transform), "config"
#: (ConFIG's least-squares direction), "fairgrad" (FairGrad's α-fair weights), "sdmgrad"
#: (SDMGrad's inner problem: MGDA's on the shifted gradients, ``gram`` their Gramian)
Problem = Literal[
    "equality", "simplex", "box", "nash", "cagrad", "alignment", "config", "fairgrad", "sdmgrad"
]


class SolveStatus(enum.Enum):
    """How a solve ended. Only ``OPTIMAL`` means "the unique optimum, to tolerance"."""

    #: The optimum, certified by the KKT conditions; the weights are unique (equality problem) or
    #: the problem is well posed (simplex problem).
    OPTIMAL = "optimal"
    #: The optimal weights are not unique, or not resolvable in floating point (the reduced Hessian
    #: is singular to ``rcond``): the documented tie-break was applied (minimum-norm weights for the
    #: equality problem, a minimal support for the simplex problem). The objective is still optimal.
    DEGENERATE = "degenerate"
    #: A ridge was added on request; the weights solve the regularised problem, not the original.
    REGULARIZED = "regularized"
    #: An iterative solver stopped at its iteration cap before its KKT tolerance was reached.
    MAX_ITER = "max_iter"
    #: The solution is short of the KKT tolerance: an external (reference) solver said so, or
    #: Wolfe's method stopped making progress in floating point (the certificate tells how far).
    INACCURATE = "inaccurate"
    #: Non-finite or non-PSD input found by a deferred (on-device) check; weights are uniform.
    INVALID_INPUT = "invalid_input"
    #: The problem as posed has no solution (Nash-MTL when no direction improves every objective);
    #: the solver's docstring says which documented answer the weights are instead.
    INFEASIBLE = "infeasible"


# Integer codes for statuses computed on a device without a host synchronisation.
STATUS_CODES: tuple[SolveStatus, ...] = tuple(SolveStatus)


def status_code(status: SolveStatus) -> int:
    return STATUS_CODES.index(status)


@dataclass(frozen=True)
class KKTReport:
    """KKT residuals of ``1/2 wᵀQw`` s.t. ``Σw = 1`` (and ``w ≥ 0`` on the simplex); the other
    problems fill the same four relative terms from their own optimality conditions (see each
    solver's docstring).

    With ``μ = wᵀQw`` and ``ν = Qw − μ1`` (the multiplier of ``w ≥ 0``), each stationarity and
    complementarity term of row ``i`` is relative: divided by ``T·(sᵢ + T)`` with ``sᵢ = √Qᵢᵢ``
    and ``T = Σⱼ sⱼ|wⱼ|``, a bound on the size of the terms (see :func:`relative_multipliers`).
    """

    #: equality problem: ``max |νᵢ| / scaleᵢ``; simplex: 0 (ν is then the multiplier itself)
    stationarity: float
    #: ``|Σw − 1|``, and on the simplex ``max(−wᵢ, 0)``
    primal_feasibility: float
    #: simplex only: ``max(−νᵢ, 0) / scaleᵢ``
    dual_feasibility: float
    #: simplex only: ``max |wᵢ|·|νᵢ| / scaleᵢ``
    complementarity: float

    @property
    def max(self) -> float:
        return max(
            self.stationarity, self.primal_feasibility, self.dual_feasibility, self.complementarity
        )


def relative_multipliers(
    gram: np.ndarray, w: np.ndarray, scales: np.ndarray | None = None
) -> np.ndarray:
    """``νᵢ / scaleᵢ`` with ``ν = Qw − (wᵀQw)1`` and ``scaleᵢ = T·(sᵢ + T)``, ``T = Σⱼ sⱼ|wⱼ|``.

    ``sᵢT`` bounds ``|(Qw)ᵢ|`` and ``T²`` bounds ``wᵀQw``, so the ratio is the residual relative to
    the size of the terms it is made of: invariant to Q → cQ and to rescaling single gradients.
    ``sᵢ = √Qᵢᵢ`` is floored at ``10⁻¹⁶·maxⱼ sⱼ`` (the solvers' equilibration floor), which gives
    zero gradients a scale. ``scales`` passes precomputed ``jacobi_scales(gram)`` (loops).
    """
    from moo_opt.solvers._core import jacobi_scales

    qw = gram @ w
    mu = float(w @ qw)
    s = jacobi_scales(gram) if scales is None else scales
    t = float(s @ np.abs(w))
    scale = t * (s + t)
    return (qw - mu) / np.where(scale > 0.0, scale, 1.0)


def kkt_report(gram: np.ndarray, weights: np.ndarray, problem: Problem) -> KKTReport:
    """Certificate of ``weights`` for the problem on the symmetric float64 matrix ``gram``."""
    w = np.asarray(weights, dtype=np.float64)
    nu = relative_multipliers(gram, w)
    primal = abs(float(w.sum()) - 1.0)
    if problem == "equality":
        return KKTReport(float(np.abs(nu).max()), primal, 0.0, 0.0)
    primal = max(primal, float(np.maximum(-w, 0.0).max()))
    return KKTReport(
        stationarity=0.0,
        primal_feasibility=primal,
        dual_feasibility=float(np.maximum(-nu, 0.0).max()),
        complementarity=float((np.abs(w) * np.abs(nu)).max()),
    )


HostOrDevice = np.ndarray | Tensor


def _host(x: HostOrDevice) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return x


@dataclass(frozen=True, eq=False)
class SolveResult:
    """The answer of a QP solver on a Gram matrix ``Q``.

    ``weights`` is a float64 tensor on ``Q``'s device, in ``Q``'s order. The other figures are
    host-side Python values computed when first read (on CUDA, reading one synchronises).
    """

    #: (N,) weights, or (K, N) with one row per sub-problem ("box" with several lower bounds,
    #: "alignment": the balance transform B)
    weights: Tensor
    problem: Problem
    #: which algorithm produced the weights ("closed-form", "cholesky", "null-space", "wolfe",
    #: "cvxpy:…")
    method: str
    #: iterations of an iterative method (0 for direct methods)
    iterations: int
    #: the validated, symmetrised Gram matrix the certificate is computed on (float64)
    gram: HostOrDevice = field(repr=False)
    _status: SolveStatus | Tensor = field(repr=False)
    _condition: float | None = field(default=None, repr=False)
    #: the problem's own certificate (problems other than "equality" and "simplex")
    _certificate: Callable[[], KKTReport] | None = field(default=None, repr=False)

    @classmethod
    def solved(
        cls,
        weights: Tensor,
        problem: Problem,
        *,
        method: str,
        gram: HostOrDevice,
        status: SolveStatus | Tensor,
        iterations: int = 0,
        condition: float | None = None,
        certificate: Callable[[], KKTReport] | None = None,
    ) -> SolveResult:
        """The answer of ``method`` on ``problem``: ``status`` (or a device tensor of its code, read
        lazily), the ``gram`` the certificate is computed on, and ``certificate`` for problems that
        are not "equality" or "simplex"."""
        return cls(weights, problem, method, iterations, gram, status, condition, certificate)

    @classmethod
    def closed_form(
        cls,
        weights: Tensor,
        problem: Problem,
        *,
        gram: HostOrDevice,
        status: SolveStatus | Tensor,
        condition: float | None = None,
    ) -> SolveResult:
        """The answer of a closed form (N ≤ 2, or a single objective): no iterations."""
        return cls(weights, problem, "closed-form", 0, gram, status, condition)

    @cached_property
    def status(self) -> SolveStatus:
        if isinstance(self._status, SolveStatus):
            return self._status
        return STATUS_CODES[int(self._status)]

    @cached_property
    def _w(self) -> np.ndarray:
        return _host(self.weights)

    @cached_property
    def objective(self) -> float:
        """``1/2 wᵀQw`` on the original (un-regularised) Q; for a matrix of weights (one row per
        sub-problem: UPGrad's projections, Aligned-MTL's transform) the sum over its rows."""
        w = np.atleast_2d(self._w)
        return 0.5 * float(np.einsum("ki,ij,kj->", w, _host(self.gram), w))

    @cached_property
    def kkt(self) -> KKTReport:
        if self._certificate is not None:
            return self._certificate()
        return kkt_report(_host(self.gram), self._w, self.problem)

    @property
    def kkt_residual(self) -> float:
        """The largest relative KKT residual (see :class:`KKTReport`)."""
        return self.kkt.max

    @cached_property
    def condition(self) -> float:
        """Condition number of the Jacobi-equilibrated reduced Hessian ``H = Zᵀ C Z``.

        ``C = S⁻¹QS⁻¹`` has a unit diagonal and ``Z`` spans the feasible directions (of the
        support, on the simplex and SDMGrad's shifted Gramian). Reported as
        ``max(1, λmax(H)) / λmin(H)``: scale-free, ``inf`` when the problem is degenerate.
        """
        if self._condition is not None:
            return self._condition
        from moo_opt.solvers._core import equality_condition, gram_condition

        gram = _host(self.gram)
        if self.problem not in ("equality", "simplex", "sdmgrad"):
            return gram_condition(gram)
        if self.problem in ("simplex", "sdmgrad"):
            support = self._w > 0.0
            gram = gram[np.ix_(support, support)]
        return equality_condition(gram)

    def as_dict(self) -> dict[str, object]:
        """Plain Python values for loggers (reads every lazy figure: synchronises on CUDA)."""
        return {
            "weights": self._w.tolist(),
            "status": self.status.value,
            "objective": self.objective,
            "kkt_residual": self.kkt_residual,
            "condition": self.condition,
            "iterations": self.iterations,
            "method": self.method,
        }
