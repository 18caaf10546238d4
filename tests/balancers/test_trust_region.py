"""``QPBalancer(trust_radius=ρ)``: the QP's coefficients on the raw losses kept within ρ (max-norm)
of the standard loss's 1/N, moved back along the segment between the two."""

from __future__ import annotations

import pytest
import torch

from moo_opt import FixedWeights, QPBalancer, create
from moo_opt.weightings import within_trust_region
from tests.helpers.models import toy_problem


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("radius", [0.0, 0.05, 0.2, 10.0])
def test_the_coefficients_stay_in_the_region_on_the_segment(seed: int, radius: float) -> None:
    ref = toy_problem(seed=seed, scales=[1.0, 30.0])
    free = QPBalancer(2).backward(ref.losses(), ref.all_parameters())
    prob = toy_problem(seed=seed, scales=[1.0, 30.0])
    info = QPBalancer(2, trust_radius=radius).backward(prob.losses(), prob.all_parameters())
    c, c_free, std = info.weights, free.weights, torch.full((2,), 0.5, dtype=torch.float64)
    assert float(c.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float((c - std).abs().max()) <= radius + 1e-12
    t = float(info.extras["trust_scale"])
    assert 0.0 <= t <= 1.0
    # on the segment
    torch.testing.assert_close(c, std + t * (c_free.to(c.dtype) - std), rtol=1e-12, atol=1e-12)
    if float((c_free - std).abs().max()) <= radius:
        assert t == 1.0  # inside: the QP's own coefficients
        torch.testing.assert_close(c, c_free.to(c.dtype), rtol=0, atol=0)


def test_radius_zero_is_the_standard_step() -> None:
    prob, ref = toy_problem(seed=3, scales=[1.0, 40.0]), toy_problem(seed=3, scales=[1.0, 40.0])
    QPBalancer(2, trust_radius=0.0).backward(prob.losses(), prob.all_parameters())
    FixedWeights([0.5, 0.5]).backward(ref.losses(), ref.all_parameters())
    for a, b in zip(prob.grads(), ref.grads(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_below_one_over_n_no_coefficient_changes_sign() -> None:
    coeff = torch.tensor([1.7, -0.2, -0.5], dtype=torch.float64)  # sums to one
    out, t = within_trust_region(coeff, 0.3)
    assert bool((out > 0).all()) and float(out.sum()) == pytest.approx(1.0)
    assert float(t) == pytest.approx(0.3 / (1.7 - 1 / 3))


def test_state_round_trip_and_bad_options() -> None:
    bal = create("qp", 2, trust_radius=0.1)
    again = create("qp", 2)
    again.load_state_dict(bal.state_dict())
    assert again.trust_radius == 0.1  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="trust_radius must be a number >= 0"):
        QPBalancer(2, trust_radius=-0.1)
    with pytest.raises(ValueError, match="renormalize=True"):
        QPBalancer(2, trust_radius=0.1, renormalize=False)


# --------------------------------------------------------------------------- gradient_ema
def _grads(prob) -> list[list[torch.Tensor]]:  # type: ignore[no-untyped-def]
    from moo_opt.gradients import objective_gradients

    params = prob.all_parameters()
    grads = objective_gradients(prob.losses(), params).grads
    return [
        [torch.zeros_like(p) if g is None else g for g, p in zip(row, params, strict=True)]
        for row in grads
    ]


def test_gradient_ema_weights_are_the_qp_of_the_averaged_gradients() -> None:
    """Three steps on three batches: the weights of the third are the equality QP's on the
    bias-corrected averages of the three steps' gradients and losses, computed here by hand."""
    from moo_opt.solvers import solve_equality_qp

    beta = 0.9
    bal = QPBalancer(2, gradient_ema=beta)
    avg: list[list[torch.Tensor]] | None = None
    avg_loss = torch.zeros(2, dtype=torch.float64)
    for step in range(1, 4):
        prob = toy_problem(seed=10 + step, scales=[1.0, 20.0])  # a new batch (and model) each step
        ref = toy_problem(seed=10 + step, scales=[1.0, 20.0])
        g = _grads(ref)
        values = torch.stack([loss.detach() for loss in ref.losses()])
        avg = (
            [[(1 - beta) * t for t in row] for row in g]
            if avg is None
            else [
                [beta * a + (1 - beta) * t for a, t in zip(ra, rg, strict=True)]
                for ra, rg in zip(avg, g, strict=True)
            ]
        )
        avg_loss = beta * avg_loss + (1 - beta) * values
        info = bal.backward(prob.losses(), prob.all_parameters())
    assert avg is not None
    corr = 1 - beta**3
    flat = [torch.cat([t.reshape(-1) for t in row]) / corr for row in avg]
    q = torch.stack([torch.stack([a @ b for b in flat]) for a in flat])
    scale = avg_loss / corr + 1.0
    z = solve_equality_qp(q / (scale[:, None] * scale[None, :])).weights
    coeff = z / (values + 1.0)
    torch.testing.assert_close(info.weights, coeff / coeff.sum(), rtol=1e-9, atol=1e-12)
    grads = prob.grads()  # the step itself: this batch's gradients with those weights
    for k, gk in enumerate(grads):
        torch.testing.assert_close(
            gk, sum(info.weights[i] * g[i][k] for i in range(2)), rtol=1e-10, atol=1e-14
        )
    assert bal.tracked_steps == 3


def test_gradient_ema_state_round_trips_and_a_skipped_step_leaves_it() -> None:
    bal = QPBalancer(2, gradient_ema=0.5, nonfinite="skip")
    for seed in range(2):
        prob = toy_problem(seed=seed)
        bal.backward(prob.losses(), prob.all_parameters())
    copy = QPBalancer(2, gradient_ema=0.5, nonfinite="skip")
    copy.load_state_dict(bal.state_dict())
    prob = toy_problem(seed=7)
    losses = prob.losses()
    bad = [losses[0], losses[1] * float("nan")]
    info = bal.backward(bad, prob.all_parameters())
    assert info.skipped and bal.tracked_steps == 2  # unchanged by the skipped step
    a, b = toy_problem(seed=5), toy_problem(seed=5)
    wa = bal.backward(a.losses(), a.all_parameters()).weights
    wb = copy.backward(b.losses(), b.all_parameters()).weights
    torch.testing.assert_close(wa, wb, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"gradient_ema must be a number in \[0, 1\)"):
        QPBalancer(2, gradient_ema=1.0)
