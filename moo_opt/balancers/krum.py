"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017): average the gradients closest to their
neighbours, computed on the Gramian."""

from __future__ import annotations

import torch
from torch import Tensor

from moo_opt.balancers.base import Gramian, GramianBalancer, NonFinite, positive_int
from moo_opt.registry import register


def krum_scores(gram: Tensor, n_byzantine: int) -> Tensor:
    """Each gradient's Krum score from the Gramian: the sum of its squared distances
    ``Qᵢᵢ + Qⱼⱼ − 2Qᵢⱼ`` to its ``N − f − 2`` nearest other gradients (all zero when that count
    is not positive)."""
    n = gram.shape[0]
    closest = n - n_byzantine - 2
    if closest <= 0:
        return torch.zeros(n, dtype=gram.dtype, device=gram.device)
    diag = torch.diagonal(gram)
    squared = (diag[:, None] + diag[None, :] - 2.0 * gram).clamp(min=0.0)
    squared = squared.fill_diagonal_(float("inf"))  # a gradient is not its own neighbour
    nearest, _ = torch.sort(squared, dim=1)
    return nearest[:, :closest].sum(dim=1)


def krum_weights(gram: Tensor, n_byzantine: int, n_selected: int) -> tuple[Tensor, Tensor]:
    """``(weights, scores)``: ``1/m`` on the ``m`` gradients of lowest score (ties to the lower
    index), 0 on the others."""
    scores = krum_scores(gram, n_byzantine)
    chosen = torch.argsort(scores, stable=True)[:n_selected]
    return torch.zeros_like(scores).scatter_(0, chosen, 1.0 / n_selected), scores


@register
class KrumBalancer(GramianBalancer):
    r"""Krum and Multi-Krum: the mean of the m gradients with the closest neighbours.

    Blanchard, El Mhamdi, Guerraoui & Stainer, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent", NeurIPS 2017 (TorchJD's ``Krum``). With f = ``n_byzantine`` and
    m = ``n_selected``, each gradient's score is the sum of its squared distances to its
    :math:`N - f - 2` nearest other gradients,
    :math:`s_i = \sum_{j \in \mathcal{N}_i} |g_i - g_j|^2`, with
    :math:`|g_i - g_j|^2 = Q_{ii} + Q_{jj} - 2 Q_{ij}` on the Gramian; the m gradients of lowest
    score are averaged: :math:`w_i = 1/m` on them (ties to the lower index), 0 on the others,
    and ``.grad`` is :math:`G w` (Krum is m = 1). With :math:`N \ge 2f + 3` one arbitrarily large
    outlying gradient is never selected (its score is the largest), so f outliers have bounded
    influence; with fewer than three objectives and f = 0 there are no neighbours to score
    against, every score is 0 and the first m are taken. TorchJD sums the distances rather than
    their squares (the paper's rule is the squares): the two select the same gradients when
    :math:`N - f - 2 = 1` and may differ otherwise. The extras are the ``score`` of each objective.
    Distances are Gramian entries, so ``gramian="representation"`` measures them at the shared
    trunk's output.

    Args:
        num_objectives: N.
        n_byzantine: f ≥ 0, the outlying gradients tolerated; f ≥ 1 needs N ≥ 2f + 3.
        n_selected: m, 1 ≤ m ≤ N − f: the number of gradients averaged (Multi-Krum).
        gramian: ``"parameters"`` (exact) or ``"representation"`` (the shared trunk's
            output; see :class:`~moo_opt.balancers.base.GramianBalancer`).
        nonfinite: ``"raise"``, ``"skip"`` or ``"unchecked"``.
    """

    name = "krum"

    def __init__(
        self,
        num_objectives: int,
        *,
        n_byzantine: int = 0,
        n_selected: int = 1,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, gramian=gramian, nonfinite=nonfinite)
        self.n_byzantine = positive_int("n_byzantine", n_byzantine, minimum=0)
        self.n_selected = positive_int("n_selected", n_selected)
        if n_byzantine >= 1 and num_objectives < 2 * n_byzantine + 3:
            raise ValueError(
                f"n_byzantine={n_byzantine} needs at least {2 * n_byzantine + 3} objectives "
                f"(2 * n_byzantine + 3), got {num_objectives}"
            )
        if n_selected > num_objectives - n_byzantine:
            raise ValueError(
                f"n_selected must be at most num_objectives - n_byzantine = "
                f"{num_objectives - n_byzantine}, got {n_selected}"
            )

    def _weights(self, values: Tensor, gram: Tensor) -> tuple[Tensor, None, dict[str, Tensor]]:
        weights, scores = krum_weights(gram, self.n_byzantine, self.n_selected)
        return weights.to(values.device), None, {"score": scores.to(values.device)}
