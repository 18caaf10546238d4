"""What every registered balancer must do (issue 9's conformance suite): a balancer is tested by
registering it. Here: degenerate inputs give finite weights and a finite ``.grad``, and bad input
is a ``ValueError`` that names the problem. (The direction ``Gw``, the exact state round trip and
skipping are the hypothesis properties of ``test_properties.py``, over the same registry.)"""

from __future__ import annotations

import pytest
import torch

from moo_opt import available, balanced_step, create
from tests.helpers.models import toy_problem

NAMES = available()


def _degenerate(kind: str):
    p = toy_problem(num_objectives=3, scales=[1.0, 1.0, 1.0])

    def losses():
        ls = p.losses()
        if kind == "duplicate":  # two identical objectives: a singular Gramian
            ls[1] = ls[0] * 1.0
        elif kind == "zero-gradient":  # an objective that does not depend on the parameters
            ls[2] = ls[2].detach() + 0.0 * sum(q.sum() for q in p.shared())
        elif kind == "parallel":  # gradients that are positive multiples of each other
            ls[1] = 1e3 * ls[0]
        return ls

    return p, losses


@pytest.mark.parametrize("kind", ["duplicate", "zero-gradient", "parallel"])
@pytest.mark.parametrize("name", NAMES)
def test_degenerate_gramians_give_finite_weights_and_gradients(name: str, kind: str) -> None:
    p, losses = _degenerate(kind)
    b = create(name, 3)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-3)
    for _ in range(3):  # amortised balancers learn from the second step on
        info = balanced_step(b, opt, losses, p.shared())
        assert torch.isfinite(info.weights).all(), (name, kind, info.weights)
        assert all(q.grad is None or torch.isfinite(q.grad).all() for q in p.all_parameters())
    if info.solve is not None:
        assert info.solve.kkt_residual < 1e-6, info.solve


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_a_value_error_naming_it(name: str) -> None:
    p = toy_problem()
    b = create(name, 2)
    with pytest.raises(ValueError, match="expected 2 losses"):
        b.backward(p.losses()[:1], p.shared())
    with pytest.raises(ValueError, match="not a scalar"):
        b.backward([p.losses()[0].reshape(1).expand(2), p.losses()[1]], p.shared())
    with pytest.raises(ValueError, match="no parameter requires a gradient"):
        b.backward(p.losses(), [])
    with pytest.raises(ValueError, match="num_objectives"):
        create(name, 0)
