"""MoCo (Fernando et al., ICLR 2023): tracked gradients and one projected gradient step of MGDA's
problem on them per training step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from moo_opt.balancers.base import NonFinite, finite_number
from moo_opt.balancers.coordinatewise import CoordinateBalancer, CoordinateBuffers
from moo_opt.registry import register
from moo_opt.solvers import project_to_simplex

Variant = Literal["paper", "libmtl"]
_VARIANTS = ("paper", "libmtl")
#: LibMTL's guard in the normalisation of each gradient, ``g / (|g| + 1e-8)``
_LIBMTL_EPS = 1e-8


def _radii(radius: float | Sequence[float] | None, n: int) -> tuple[float, ...] | None:
    """The validated ball radii L_i (None: no projection of the tracked gradients)."""
    if radius is None:
        return None
    values = [radius] * n if isinstance(radius, (int, float)) else list(radius)
    if len(values) != n:
        raise ValueError(f"radius needs 1 or {n} values (one per objective), got {len(values)}")
    return tuple(finite_number("radius", r, above=True) for r in values)


@register
class MoCoBalancer(CoordinateBalancer):
    r"""Stochastic multi-objective gradient correction: each objective's gradient is tracked by a
    running average :math:`y_i`, and the weights take one projected gradient step of MGDA's
    problem on the tracked gradients per training step.

    Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in
    Multi-objective Learning: A Provably Convergent Approach", ICLR 2023 (Algorithm 1). At step
    :math:`k = 1, 2, \dots`, with :math:`h_i` objective i's gradient on the balanced parameters,
    :math:`\beta_k = \beta / k^{\sigma_\beta}` and :math:`\gamma_k = \gamma / k^{\sigma_\gamma}`,

    .. math::
        y_i \leftarrow \Pi_{L_i}\bigl(y_i - \beta_k (y_i - h_i)\bigr), \qquad
        \lambda \leftarrow \Pi_\Delta\bigl(\lambda - \gamma_k (Y^\top Y + \rho I)\lambda\bigr),
        \qquad d = Y\lambda,

    :math:`Y = [y_1, \dots, y_N]`, :math:`\Pi_{L_i}` the projection on the ball of radius
    :math:`L_i` (optional in the paper: ``radius``, off by default), :math:`\Pi_\Delta` the
    Euclidean projection onto the simplex (:func:`~moo_opt.solvers.project_to_simplex`, exact).
    :math:`y_i` starts at 0 and :math:`\lambda` at :math:`\mathbf 1/N`, as in the authors' and
    LibMTL's code. The tracked gradients remove the bias that MGDA's weights computed on one
    batch's gradients have; with fixed gradients and :math:`\beta = 1`, the :math:`\lambda` step
    is projected gradient descent on MGDA's problem :math:`\tfrac12 \lambda^\top Q \lambda` (plus
    :math:`\tfrac\rho2|\lambda|^2`) and converges to its min-norm weights for a small enough
    :math:`\gamma`. The Gramian :math:`Y^\top Y` is computed in float64 over all balanced
    parameters. The update is deterministic given the gradients: no generator. Under
    ``torch.distributed`` each objective's gradient is averaged over the ranks first, so every
    rank tracks the same :math:`y` and takes the same step.

    [decision] ``variant``: ``"paper"`` (the default) is the rule above. ``"libmtl"`` is the rule
    of LibMTL's ``MoCo`` (the authors' multi-task experiments): each gradient is replaced by
    :math:`h_i = L_i(\theta)\, g_i / (|g_i| + 10^{-8})` (normalised over the balanced parameters,
    scaled by its loss), the simplex projection by a softmax,
    :math:`\lambda \leftarrow \operatorname{softmax}(\lambda - \gamma_k (Y^\top Y + \rho I)
    \lambda)`, and the leaves outside the balanced set get :math:`\sum_i \nabla L_i`, as LibMTL's
    per-task backward passes leave them. The defaults :math:`\beta = 0.5`,
    :math:`\sigma_\beta = 0.5`, :math:`\gamma = 0.1`, :math:`\sigma_\gamma = 0.5`,
    :math:`\rho = 0` are LibMTL's.

    ``info.weights`` is :math:`\lambda` after the step. ``.grad`` of the balanced parameters is
    :math:`Y\lambda`, not :math:`G\lambda` (the tracked, not the current, gradients); with
    :math:`\beta = 1` and :math:`\sigma_\beta = 0`, :math:`Y = G` and ``.grad`` is exactly
    :math:`G\lambda`. Leaves outside the balanced set (e.g. the task heads) get the plain
    combination :math:`\sum_i \lambda_i \nabla L_i` of the current gradients (variant
    ``"paper"``). Extras: ``y_norm`` (each :math:`|y_i|`), ``beta`` and ``gamma`` (this step's
    :math:`\beta_k`, :math:`\gamma_k`). State: :math:`y` (N × the balanced parameters' size, in
    the gradients' dtype: the memory of N more copies of the balanced gradients), :math:`\lambda`
    (float64) and :math:`k`; the balanced parameters, and the objectives reaching each, must stay
    the same from step to step (a clear error otherwise). There is no Gramian of the current
    gradients: ``gramian="representation"`` is not offered and representations are refused.

    Args:
        num_objectives: N.
        beta: β, the tracking step, in (0, 1].
        beta_sigma: σ_β ≥ 0, the decay of the tracking step.
        gamma: γ > 0, the step on the weights.
        gamma_sigma: σ_γ ≥ 0, the decay of the step on the weights.
        rho: ρ ≥ 0, the ℓ2 regularisation of the weights' problem.
        radius: None (no projection), or the radii :math:`L_i > 0` (one, or one per objective)
            of the balls the tracked gradients are projected on.
        variant: ``"paper"`` or ``"libmtl"`` (see above).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "moco"

    def __init__(
        self,
        num_objectives: int,
        *,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
        radius: float | Sequence[float] | None = None,
        variant: Variant = "paper",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        self.beta = finite_number("beta", beta, 0.0, 1.0, above=True)
        self.beta_sigma = finite_number("beta_sigma", beta_sigma)
        self.gamma = finite_number("gamma", gamma, above=True)
        self.gamma_sigma = finite_number("gamma_sigma", gamma_sigma)
        self.rho = finite_number("rho", rho)
        self.radius = _radii(radius, num_objectives)
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
        self.variant: Variant = variant
        self.y = CoordinateBuffers("MoCo's tracked gradients")
        self.lam = torch.full((num_objectives,), 1.0 / num_objectives, dtype=torch.float64)
        self.step = 0

    def _combine(
        self, matrices: list[Tensor], values: Tensor
    ) -> tuple[list[Tensor], Tensor, dict[str, Tensor]]:
        self.step += 1
        beta = self.beta / self.step**self.beta_sigma
        gamma = self.gamma / self.step**self.gamma_sigma
        device = matrices[0].device if matrices else values.device
        targets = self._normalised(matrices, values) if self.variant == "libmtl" else matrices
        tracked = self.y.like(matrices)
        for y, h in zip(tracked, targets):
            y.lerp_(h, beta)  # y − β(y − h), exact at β = 1
        if self.radius is not None:
            self._project_to_balls(tracked)
        gram = self._gram(tracked, device)
        lam = self.lam.to(device)
        step = lam - gamma * (gram @ lam + self.rho * lam)
        if self.variant == "libmtl":
            self.lam = torch.softmax(step, dim=0)
        else:
            self.lam = project_to_simplex(step, validate=False)
        directions = [self.lam.to(y) @ y for y in tracked]
        extras = {
            "y_norm": gram.diagonal().clamp(min=0.0).sqrt().to(values.device),
            "beta": torch.full((), beta, dtype=torch.float64, device=values.device),
            "gamma": torch.full((), gamma, dtype=torch.float64, device=values.device),
        }
        return directions, self.lam.to(values.device), extras

    def _gram(self, tracked: list[Tensor], device: torch.device) -> Tensor:
        """:math:`Y^\\top Y` (N×N, float64) over all the balanced parameters."""
        n = self.num_objectives
        gram = torch.zeros(n, n, dtype=torch.float64, device=device)
        for y in tracked:
            wide = y.to(torch.float64)
            gram += (wide @ wide.T).to(device)
        return gram

    def _norms(self, matrices: list[Tensor], device: torch.device) -> Tensor:
        """Each objective's norm over all the balanced parameters (float64, (N,))."""
        squares = torch.zeros(self.num_objectives, dtype=torch.float64, device=device)
        for m in matrices:
            squares += m.to(torch.float64).square().sum(dim=1).to(device)
        return squares.sqrt()

    def _normalised(self, matrices: list[Tensor], values: Tensor) -> list[Tensor]:
        """LibMTL's gradients: :math:`L_i g_i / (|g_i| + 10^{-8})`."""
        if not matrices:
            return []
        norms = self._norms(matrices, matrices[0].device)
        scales = values.to(norms.device) / (norms + _LIBMTL_EPS)
        return [m * scales.to(m.dtype)[:, None] for m in matrices]

    def _project_to_balls(self, tracked: list[Tensor]) -> None:
        """Each :math:`y_i` onto the ball of radius :math:`L_i`, in place."""
        if not tracked:
            return
        norms = self._norms(tracked, tracked[0].device)
        radii = torch.tensor(self.radius, dtype=torch.float64, device=norms.device)
        scales = torch.where(norms > radii, radii / norms, 1.0)
        for y in tracked:
            y.mul_(scales.to(y.dtype)[:, None])

    def _plain(self, values: Tensor) -> Tensor:
        if self.variant == "libmtl":
            return torch.ones_like(values)
        return self.lam.to(values.device)

    def _state(self) -> dict[str, Any]:
        return {"y": self.y.state(), "lam": self.lam.clone(), "step": self.step}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.y.load(state["y"])
        self._load_vectors(state, ["lam"])
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"state_dict entry 'step' must be an integer >= 0, got {step!r}")
        self.step = step
