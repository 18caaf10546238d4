"""Options declared once, by the constructor: recorded, saved, rebuilt; defaults changed by
``option_defaults``; runtime bindings kept across a reload; states of the earlier format load."""

from __future__ import annotations

import pytest
import torch

import moo_opt
from moo_opt import BalanceInfo, Balancer, CoarseToFineBalancer, FAMOBalancer, QPBalancer


class PrivateScale(Balancer):
    """Keeps its option under another name and shape: nothing to do for state_dict to work."""

    name = "test-private-scale"

    def __init__(
        self, num_objectives: int, *, scale: float = 2.0, nonfinite: str = "raise"
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        self._factor = torch.tensor(float(scale))

    def _backward(self, losses, values, params) -> BalanceInfo:  # noqa: ANN001
        weights = torch.full_like(values, float(self._factor))
        self._backward_weighted(losses, weights)
        return BalanceInfo(weights=weights, losses=values)


def test_an_option_kept_in_a_private_attribute_round_trips() -> None:
    b = PrivateScale(2, scale=3.0)
    saved = b.state_dict()
    assert saved["options"] == {"num_objectives": 2, "scale": 3.0, "nonfinite": "raise"}
    fresh = PrivateScale(2)
    fresh.load_state_dict(saved)
    assert float(fresh._factor) == 3.0 and fresh.state_dict() == saved
    assert repr(fresh) == "PrivateScale(num_objectives=2, scale=3.0, nonfinite='raise')"


def test_a_subclass_changes_defaults_without_repeating_the_constructor() -> None:
    assert "__init__" not in FAMOBalancer.__dict__
    famo, c2f = moo_opt.options("famo"), moo_opt.options("coarse-to-fine")
    assert famo == {**c2f, "offsets": 1e-8, "gamma": 0.01}
    b = moo_opt.create("famo", 2, beta=0.01)
    assert b.gamma == 0.01 and b.offsets == (1e-8, 1e-8) and b.beta == 0.01
    assert b.state_dict()["options"]["gamma"] == 0.01
    with pytest.raises(TypeError, match="option_defaults: nope not among its options"):
        type("Bad", (CoarseToFineBalancer,), {"name": "test-bad", "option_defaults": {"nope": 1}})


def test_options_are_copied_not_shared() -> None:
    offsets = [1.0, 2.0]
    b = QPBalancer(2, offsets=offsets)
    offsets[0] = 5.0
    assert b.state_dict()["options"]["offsets"] == [1.0, 2.0] and b.offsets == (1.0, 2.0)


def test_a_state_of_the_earlier_format_loads() -> None:
    """States written before options were recorded hold every attribute of the constructor's name,
    canonicalised (offsets as a tuple), and FAMO's had no ``warmup``: both load."""
    old_qp = {"balancer": "qp",
              "options": {"num_objectives": 2, "offsets": (1.0, 1.0), "renormalize": True,
                          "simplex": False, "backend": "analytic", "solve_every": 1,
                          "metric": "euclidean", "rcond": None, "ridge": 0.0, "trust_radius": 0.1,
                          "gradient_ema": 0.0, "shared_only": False, "nonfinite": "skip"},
              "state": {"calls": 3, "last_z": torch.tensor([0.4, 0.6], dtype=torch.float64)},
              "skips": 1}  # fmt: skip
    b = QPBalancer(2)
    b.load_state_dict(old_qp)
    assert (
        b.trust_radius == 0.1
        and b.nonfinite == "skip"
        and b.calls == 3
        and b.skips == 1
        # an option added since (gramian) takes its default
        and b.state_dict()["options"] == {**old_qp["options"], "gramian": "parameters"}
    )
    old_famo = {"balancer": "famo",
                "options": {"num_objectives": 2, "offsets": (1e-8, 1e-8), "beta": 0.025,
                            "gamma": 0.01, "renormalize": True, "mode": "same_batch",
                            "update_every": 1, "betas": (0.9, 0.999), "eps": 1e-8,
                            "nonfinite": "raise"},
                "state": {}, "skips": 0}  # fmt: skip
    f = FAMOBalancer(2)
    f.load_state_dict({**old_famo, "state": FAMOBalancer(2).state_dict()["state"]})
    assert f.gamma == 0.01 and f.warmup == 0


def test_the_optimizer_binding_survives_a_reload() -> None:
    b = QPBalancer(2, metric="adam")
    opt = torch.optim.Adam([torch.zeros(2, requires_grad=True)])
    b.bind_optimizer(opt)
    b.load_state_dict(QPBalancer(2, metric="adam").state_dict())
    assert b._optimizer is opt


def test_finite_number_names_the_option_and_its_range() -> None:
    import math

    from moo_opt.balancers.base import finite_number

    assert finite_number("beta", 1) == 1.0 and isinstance(finite_number("beta", 1), float)
    assert finite_number("beta", 0.0) == 0.0  # closed at the low end by default
    cases = [
        ({"value": -1e-9}, "beta must be a finite number >= 0, got -1e-09"),
        ({"value": 0.0, "above": True}, "beta must be a finite number > 0, got 0.0"),
        ({"value": 1.0, "high": 1.0, "below": True}, r"in \[0, 1\), got 1.0"),
        ({"value": 0.0, "high": 1.0, "above": True}, r"in \(0, 1\], got 0.0"),
        ({"value": math.nan}, "finite number >= 0, got nan"),
        ({"value": math.inf}, "finite number >= 0, got inf"),
        ({"value": True}, "got True"),
        ({"value": "0.5"}, "got '0.5'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            finite_number("beta", **kwargs)
