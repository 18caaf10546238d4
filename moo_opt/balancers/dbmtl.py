"""DB-MTL (Lin et al., 2023): log-losses for loss-scale balancing, and running averages of their
gradients rescaled to the largest one's norm for gradient-magnitude balancing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from moo_opt.balancers.base import NonFinite, finite_number
from moo_opt.balancers.coordinatewise import CoordinateBalancer, CoordinateBuffers
from moo_opt.registry import register


def max_norm_direction(
    averages: list[Tensor], epsilon: float
) -> tuple[list[Tensor], Tensor, Tensor]:
    r"""``(directions, α, u)``: with :math:`u_i` the norm of row i of the (N, numel) ``averages``
    taken over all of them together (float64), :math:`\alpha_i = \max_j u_j / (u_i + ε)` and
    each parameter's direction :math:`\sum_i \alpha_i \hat g_i`."""
    device = averages[0].device
    squares = torch.zeros(averages[0].shape[0], dtype=torch.float64, device=device)
    for a in averages:
        squares += torch.linalg.vector_norm(a, dim=1, dtype=torch.float64).square().to(device)
    norms = squares.sqrt()
    alpha = norms.max() / (norms + epsilon)
    return [alpha.to(a.device, a.dtype) @ a for a in averages], alpha, norms


@register
class DBMTLBalancer(CoordinateBalancer):
    r"""Dual-Balancing Multi-Task Learning: the log-losses' gradients, averaged over the steps and
    each rescaled to the largest average's norm.

    Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang & Kwok, "Dual-Balancing for Multi-Task
    Learning", arXiv 2308.12029 (2023), and LibMTL's ``DB_MTL`` (whose rule, step counting and
    defaults this follows). *Loss-scale balancing*: objective i is :math:`\log(L_i + \epsilon)`,
    whose gradient is :math:`g_i = \nabla L_i / (L_i + \epsilon)` (a scale-free gradient: the
    same for :math:`L_i` and :math:`c L_i`). *Gradient-magnitude balancing*: at step
    :math:`t = 1, 2, \dots` (counted by this balancer, skipped steps left out) each objective's
    running average, zero before the first step, becomes

    .. math:: \hat g_i \leftarrow \beta_t \hat g_i + (1 - \beta_t)\, g_i, \qquad
        \beta_t = \beta / t^{\sigma},

    and with :math:`u_i = \lVert \hat g_i \rVert` (over all the balanced coordinates together)
    the direction is

    .. math:: d = \sum_i \alpha_i \hat g_i, \qquad \alpha_i = \frac{\max_j u_j}{u_i + \epsilon}:

    every average is scaled to the largest one's norm (up to ε), so no objective's gradient is
    small beside another's. As in LibMTL there is no bias correction: the first direction is
    :math:`1 - \beta` times that of the current gradients. An objective that does not reach a
    balanced parameter has a zero gradient there.

    The averages make :math:`d` no weighting of the current gradients, so the rule is applied
    coordinate-wise, on the gradients' values, and ``info.weights`` is a summary:
    :math:`w_i = \alpha_i / (L_i + \epsilon)`, the coefficients for which ``.grad`` would be
    :math:`G w` were the averages the current gradients; with ``beta=0`` they are, and ``.grad``
    is exactly :math:`G w`. Extras: ``alpha`` (:math:`\alpha_i`), ``norm`` (:math:`u_i`) and
    ``beta_t``. Leaves outside the balanced set (e.g. the task heads) get the current log-loss
    gradients :math:`\sum_i \nabla L_i / (L_i + \epsilon)`, unaveraged and unscaled, as in LibMTL,
    where only the shared parameters' gradients are balanced.

    The losses must be positive (:math:`\log L_i`): a loss ≤ 0 is a ``ValueError`` (checked
    with the non-finite values, in the same host read; ``nonfinite="unchecked"`` checks neither);
    shift a loss that can reach 0 or below by a constant lower bound. ε (1e-8, LibMTL's) enters
    the logarithm and the ratios :math:`\alpha_i` (a zero average gets a zero scale, not a
    division by zero). Under ``torch.distributed`` the gradients (and losses) are averaged over
    the ranks first, so the averages are identical on every rank. Memory: the averages, N values
    per balanced coordinate in the gradients' dtype (N times the balanced parameters), in the
    state dict with the step count; the balanced parameters and the objectives reaching them
    must stay the same from step to step (a ``ValueError`` otherwise). There is no Gramian:
    ``gramian="representation"`` is not offered and representations are refused.

    Args:
        num_objectives: N.
        beta: β in [0, 1), the averages' decay (LibMTL's default 0.9); 0: no averaging.
        sigma: σ ≥ 0, the decay's schedule :math:`\beta_t = \beta / t^\sigma` (LibMTL's default
            0: a constant β).
        epsilon: ε > 0, in :math:`\log(L_i + \epsilon)` and in the ratios :math:`\alpha_i`.
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "db-mtl"

    def __init__(
        self,
        num_objectives: int,
        *,
        beta: float = 0.9,
        sigma: float = 0.0,
        epsilon: float = 1e-8,
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        self.beta = finite_number("beta", beta, 0.0, 1.0, below=True)
        self.sigma = finite_number("sigma", sigma)
        self.epsilon = finite_number("epsilon", epsilon, above=True)
        self.step = 0  # the steps taken, this one included once it is taken
        self.averages = CoordinateBuffers("db-mtl's gradient averages")

    def _combine(
        self, matrices: list[Tensor], values: Tensor
    ) -> tuple[list[Tensor], Tensor, dict[str, Tensor]]:
        if self.nonfinite != "unchecked" and bool((values <= 0).any()):
            raise ValueError(
                f"db-mtl balances log-losses and needs every loss > 0, got {values.tolist()}: "
                "add a constant to a loss that can reach 0 or below, or use another balancer"
            )
        self.step += 1
        beta_t = self.beta / self.step**self.sigma
        scales = 1.0 / (values + self.epsilon)  # ∇ log(L + ε) = ∇L / (L + ε)
        if not matrices:
            zeros = torch.zeros_like(values)
            return [], zeros, {"alpha": zeros, "norm": zeros, "beta_t": values.new_tensor(beta_t)}
        averages = self.averages.like(matrices)
        for a, m in zip(averages, matrices):
            weight = ((1.0 - beta_t) * scales).to(m.device, m.dtype).unsqueeze(1)
            a.mul_(beta_t).addcmul_(m, weight)  # β_t ĝ + (1 − β_t) ∇L / (L + ε)
        directions, alpha, norms = max_norm_direction(averages, self.epsilon)
        alpha = alpha.to(values.device)
        extras = {"alpha": alpha, "norm": norms.to(values.device)}
        return directions, alpha * scales, {**extras, "beta_t": values.new_tensor(beta_t)}

    def _plain(self, values: Tensor) -> Tensor:
        return 1.0 / (values + self.epsilon)

    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "averages": self.averages.state()}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.averages.load(state["averages"])
