"""Hypothesis properties of every balancer over small random models: the applied direction is Gw
(for a coordinate-wise balancer, its rule on G: no weighting gives it),
state round-trips bit-exactly through torch.save, skipping changes nothing."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moo_opt import available, balanced_step, create
from moo_opt.balancers.coordinatewise import CoordinateBalancer
from moo_opt.gradients import objective_gradients
from tests.helpers.models import toy_problem
from tests.helpers.state import same_entry

NAMES = available()  # every registered balancer: registering one is enough to have it tested
problems = st.builds(
    dict,
    seed=st.integers(0, 2**16),
    num_objectives=st.integers(1, 4),
    width=st.integers(2, 8),
    scales=st.lists(st.floats(1e-3, 1e3), min_size=4, max_size=4),
)


def make(spec: dict):
    n = spec["num_objectives"]
    return toy_problem(
        seed=spec["seed"], num_objectives=n, width=spec["width"], scales=spec["scales"][:n]
    )


@settings(max_examples=50)
@pytest.mark.parametrize("name", NAMES)
@given(spec=problems)
def test_applied_direction_is_g_times_returned_weights(name: str, spec: dict) -> None:
    p = make(spec)
    n = spec["num_objectives"]
    g = objective_gradients(p.losses(), p.shared()).matrix()
    info = create(name, n).backward(p.losses(), p.shared())
    applied = torch.cat([q.grad.reshape(-1) for q in p.shared()])
    expected = g @ info.weights.to(g.dtype)
    if isinstance(create(name, n), CoordinateBalancer):  # no weighting gives their rule: its own
        expected = create(name, n).combine(g.T.contiguous())
    torch.testing.assert_close(
        applied, expected, rtol=1e-9, atol=1e-12 * float(g.abs().max()) + 1e-300
    )


def _save_load(obj: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@settings(max_examples=25)
@pytest.mark.parametrize("name", NAMES)
@given(spec=problems, k=st.integers(1, 6), m=st.integers(1, 6))
def test_state_round_trip_gives_bit_identical_weights(
    name: str, spec: dict, k: int, m: int
) -> None:
    n = spec["num_objectives"]
    options = {"beta": 0.05, "gamma": 0.002} if name == "coarse-to-fine" else {}
    p = make(spec)
    b = create(name, n, **options)
    opt = torch.optim.Adam(p.all_parameters(), lr=1e-2)
    for _ in range(k):
        balanced_step(b, opt, p.losses, p.shared(), max_norm=1.0)
    saved = _save_load(
        {
            "model": [t.clone() for t in p.snapshot()],
            "opt": opt.state_dict(),
            "balancer": b.state_dict(),
        }
    )
    uninterrupted = [
        balanced_step(b, opt, p.losses, p.shared(), max_norm=1.0).weights for _ in range(m)
    ]

    q = make(spec)
    with torch.no_grad():
        for param, value in zip(q.all_parameters(), saved["model"]):
            param.copy_(value)
    opt2 = torch.optim.Adam(q.all_parameters(), lr=1e-2)
    opt2.load_state_dict(saved["opt"])
    b2 = create(name, n)  # default options: the state dict restores the saved ones
    b2.load_state_dict(saved["balancer"])
    assert b2.state_dict()["options"] == b.state_dict()["options"]
    resumed = [
        balanced_step(b2, opt2, q.losses, q.shared(), max_norm=1.0).weights for _ in range(m)
    ]
    for a, c in zip(uninterrupted, resumed):
        assert torch.equal(a, c), (a, c)


@settings(max_examples=25)
@pytest.mark.parametrize("name", NAMES)
@given(spec=problems, where=st.integers(0, 3))
def test_skipping_changes_nothing(name: str, spec: dict, where: int) -> None:
    n = spec["num_objectives"]
    p = make(spec)
    b = create(name, n, nonfinite="skip")
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-3)
    balanced_step(b, opt, p.losses, p.shared())
    before = b.state_dict()
    params = p.snapshot()

    def bad():
        losses = p.losses()
        losses[where % n] = losses[where % n] * float("nan")
        return losses

    info = balanced_step(b, opt, bad, p.shared())
    assert info.skipped
    assert all(torch.equal(a, c) for a, c in zip(params, p.snapshot()))
    after = b.state_dict()
    assert after["skips"] == before["skips"] + 1
    for key, value in before["state"].items():
        assert same_entry(value, after["state"][key]), key


def test_load_rejects_another_balancers_state() -> None:
    with pytest.raises(ValueError, match="create a 'qp' balancer"):
        create("mgda", 2).load_state_dict(create("qp", 2).state_dict())
    with pytest.raises(ValueError, match="3 objectives"):
        create("qp", 2).load_state_dict(create("qp", 3).state_dict())
