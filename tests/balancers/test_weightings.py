"""The weights-from-a-Gramian functions (``moo_opt.weightings``): usable on a Gramian alone, each
method's promise on it, and exactly what the balancer applies."""

from __future__ import annotations

import pytest
import torch

from moo_opt import create, weightings
from tests.helpers.models import toy_problem

#: balancer name → its weighting function called as the balancer calls it by default
FUNCTIONS = {
    "qp": lambda q, losses: weightings.qp_weights(q, losses),
    "mgda": lambda q, losses: weightings.mgda_weights(q, losses),
    "imtl-g": lambda q, losses: weightings.imtl_g_weights(q),
    "upgrad": lambda q, losses: weightings.upgrad_weights(q),
    "dualproj": lambda q, losses: weightings.dualproj_weights(q),
    "config": lambda q, losses: weightings.config_weights(q),
    "fairgrad": lambda q, losses: weightings.fairgrad_weights(q),
    "nash-mtl": lambda q, losses: weightings.nash_mtl_weights(q),
    "cagrad": lambda q, losses: weightings.cagrad_weights(q),
    "aligned-mtl": lambda q, losses: weightings.aligned_mtl_weights(q),
    "pcgrad": lambda q, losses: weightings.pcgrad_weights(
        q, generator=torch.Generator().manual_seed(0)
    ),
}


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_the_balancer_applies_its_weighting_function(name: str, n: int) -> None:
    p = toy_problem(seed=n, num_objectives=n, scales=[10.0 ** (-k) for k in range(n)])
    balancer = create(name, n)
    losses = p.losses()
    values = torch.stack([x.detach() for x in losses]).to(torch.float64)
    gram = balancer.gradients(losses, p.shared()).gramian()
    info = balancer.backward(p.losses(), p.shared())  # the same losses, a fresh graph
    w, result = FUNCTIONS[name](gram, values)
    torch.testing.assert_close(info.weights, w, rtol=0, atol=0)
    assert (result is None) == (info.solve is None)
    if result is not None:
        assert result.status == info.solve.status


def _gramian(*columns: list[float]) -> torch.Tensor:
    g = torch.tensor(columns, dtype=torch.float64).T
    return g.T @ g


def test_each_method_keeps_its_promise_on_a_gramian_alone() -> None:
    q = _gramian([1.0, 0.0], [-0.5, 2.0], [0.2, 0.3])
    # the min-norm point of the hull: on the simplex, no direction shorter
    w, r = weightings.mgda_weights(q)
    assert (
        abs(float(w.sum()) - 1.0) < 1e-12
        and bool((w >= 0).all())
        and r.status.name in ("OPTIMAL", "DEGENERATE")
    )
    w, _ = weightings.imtl_g_weights(q)  # equal projections on the unit gradients
    proj = (q @ w) / q.diagonal().sqrt()
    torch.testing.assert_close(proj, proj.mean().expand(3), rtol=1e-10, atol=1e-12)
    w, _ = weightings.upgrad_weights(q)  # no objective is made worse: g_j · d >= 0
    assert bool((q @ w >= -1e-12).all())
    w, r = weightings.nash_mtl_weights(q[:2, :2])  # α_i (Qα)_i = 1
    torch.testing.assert_close(
        w * (q[:2, :2] @ w), torch.ones(2, dtype=torch.float64), rtol=1e-8, atol=1e-8
    )
    w, _ = weightings.pcgrad_weights(_gramian([1.0, 0.0], [0.5, 1.0]))  # no conflict: the plain sum
    assert w.tolist() == [1.0, 1.0]
    extras: dict[str, torch.Tensor] = {}
    w, r = weightings.qp_weights(
        q, torch.tensor([3.0, 0.5, 1.0], dtype=torch.float64), trust_radius=0.1, extras=extras
    )
    assert (
        abs(float(w.sum()) - 1.0) < 1e-12
        and float((w - 1 / 3).abs().max()) <= 0.1 + 1e-12
        and set(extras) == {"z", "renormalized_by_abs", "trust_scale"}
    )
    torch.testing.assert_close(extras["z"].sum(), torch.tensor(1.0, dtype=torch.float64))


def test_mgda_loss_normalisation_needs_the_losses() -> None:
    with pytest.raises(ValueError, match="pass losses"):
        weightings.mgda_weights(_gramian([1.0, 0.0], [0.0, 1.0]), normalization="loss")
