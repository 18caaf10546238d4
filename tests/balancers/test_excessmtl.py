"""ExcessMTL (issue 20): agreement with TorchJD's ``ExcessMTLWeighting`` and with the official
code's rule over sequences of gradients, the promised properties (the objective further from
convergence gains weight, on the simplex, whatever the gradients' scales), the mirror-ascent step
against cvxpy and scipy, the exact state round trip and the clear errors."""

from __future__ import annotations

import io
import math

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from torchjd.aggregation import ExcessMTLWeighting

from moo_opt import BalanceInfo, ExcessMTLBalancer, balanced_step, create
from moo_opt.balancers.excessmtl import mirror_ascent
from tests.helpers.models import toy_problem


def _step(balancer: ExcessMTLBalancer, matrix: torch.Tensor) -> tuple[BalanceInfo, torch.Tensor]:
    """One backward of the losses ``gᵢ·θ`` (gradients exactly the rows of ``matrix``):
    ``(info, θ.grad)``."""
    theta = torch.zeros(matrix.shape[1], dtype=matrix.dtype, requires_grad=True)
    info = balancer.backward([g @ theta + 1.0 for g in matrix], [theta])
    assert theta.grad is not None
    return info, theta.grad


def _sequence(seed: int, n: int, steps: int, p: int = 40) -> list[torch.Tensor]:
    """Gradient matrices whose rows have different scales, changing from step to step."""
    gen = torch.Generator().manual_seed(seed)
    scales = 10.0 ** (2 * torch.rand(n, 1, generator=gen, dtype=torch.float64) - 1)
    return [
        scales * (1 + t % 3) * torch.randn(n, p, generator=gen, dtype=torch.float64)
        for t in range(steps)
    ]


# ---------------------------------------------------------------------- TorchJD, official code
@pytest.mark.parametrize(("n", "warmup"), [(2, 0), (3, 0), (4, 1), (3, 3), (5, 5)])
def test_agrees_with_torchjd_over_a_sequence(n: int, warmup: int) -> None:
    """Ours with ``n_warmup_steps=k`` is TorchJD's with ``max(k, 1)``: with 0, the first step only
    sets the baseline (the official code); TorchJD's 0 differs (next test). Weights and ``.grad``
    to 1e-14 (measured: ≤ 3.4e-16 on the weights, ≤ 3.2e-16 of max|G| on the direction)."""
    balancer = ExcessMTLBalancer(n, n_warmup_steps=warmup)
    theirs = ExcessMTLWeighting(n_warmup_steps=max(warmup, 1))
    for matrix in _sequence(n + warmup, n, warmup + 12):
        info, grad = _step(balancer, matrix)
        expected = theirs(matrix)
        assert float((info.weights - expected).abs().max()) <= 1e-14
        assert float((grad - expected @ matrix).abs().max()) <= 1e-14 * float(matrix.abs().max())
        assert torch.equal(info.weights, balancer.weights)


def test_torchjd_without_warmup_moves_by_the_raw_risk_on_the_first_step() -> None:
    """TorchJD's ``n_warmup_steps=0`` takes a step with the unscaled Ê on the first call (about
    ‖gᵢ‖₁: one-hot weights for gradients of a large model); ours does not move."""
    matrix = torch.tensor([[1.0, 2.0, -3.0], [0.5, -0.5, 0.0]], dtype=torch.float64)
    info, _ = _step(ExcessMTLBalancer(2), matrix)
    assert info.weights.tolist() == [0.5, 0.5] and float(info.extras["warmup"]) == 1.0
    risk = info.extras["excess_risk"]
    torch.testing.assert_close(risk, (matrix**2 / torch.sqrt(matrix**2 + 1e-7)).sum(dim=1))
    jd = ExcessMTLWeighting()(matrix)
    torch.testing.assert_close(jd, torch.softmax(risk, dim=0), rtol=1e-15, atol=0)


def _official(matrices: list[torch.Tensor], step: float, eps: float) -> list[torch.Tensor]:
    """The official code's (and LibMTL's) rule, from reading it: weights start at 1, the first
    step's Ê is the baseline (no move), then ``w ← w·exp(η Ê / b)`` renormalised to sum N."""
    n = matrices[0].shape[0]
    weights, sums, base, out = torch.ones(n, dtype=torch.float64), None, None, []
    for m in matrices:
        sums = m**2 if sums is None else sums + m**2
        risk = torch.stack([(m[i] / torch.sqrt(sums[i] + eps)) @ m[i] for i in range(n)])
        if base is None:
            base = risk
        else:
            weights = weights * torch.exp(risk / base * step)
            weights = weights / weights.sum() * n
        out.append(weights)
    return out


@pytest.mark.parametrize("step", [0.1, 1.0, 3.0])
def test_is_the_official_rule_on_the_simplex(step: float) -> None:
    """The official weights are N times ours (they sum to N), to rounding with a negligible ε:
    ε in the baseline's division (not in the official code) changes them by about η t ε / b."""
    matrices = _sequence(7, 3, 15)
    balancer = ExcessMTLBalancer(3, robust_step_size=step, eps=1e-300)
    for m, official in zip(matrices, _official(matrices, step, 1e-300)):
        info, _ = _step(balancer, m)
        torch.testing.assert_close(3 * info.weights, official, rtol=1e-13, atol=0)


# ---------------------------------------------------------------------- promised properties
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 5), warmup=st.integers(0, 3))
def test_the_larger_relative_risk_gains_weight_on_the_simplex(
    seed: int, n: int, warmup: int
) -> None:
    """Each step multiplies wᵢ by exp(η rᵢ)/Z: the ratios wᵢ(t)/wᵢ(t−1) are ordered as the
    relative risks rᵢ, the largest gains weight, the smallest loses it; Σw = 1, w > 0."""
    balancer = ExcessMTLBalancer(n, n_warmup_steps=warmup, robust_step_size=0.5)
    before = balancer.weights
    for t, matrix in enumerate(_sequence(seed, n, warmup + 8)):
        info, _ = _step(balancer, matrix)
        w = info.weights
        assert abs(float(w.sum()) - 1.0) <= 1e-14 and bool((w > 0).all())
        if t < max(warmup, 1):
            assert torch.equal(w, torch.full((n,), 1.0 / n, dtype=torch.float64))
            continue
        r, gain = info.extras["relative_risk"], torch.log(w / before)
        order = torch.argsort(r)
        assert bool((gain[order].diff() >= -1e-12).all())
        torch.testing.assert_close(gain - gain.mean(), 0.5 * (r - r.mean()), rtol=0, atol=1e-12)
        assert float(gain[order[-1]]) >= 0.0 >= float(gain[order[0]])
        before = w


def test_the_objective_further_from_convergence_gains_weight() -> None:
    """Two objectives with gradients of the same size at first: one's gradients shrink (it
    converges), the other's do not; the second's weight grows towards 1."""
    gen = torch.Generator().manual_seed(3)
    balancer = ExcessMTLBalancer(2)
    weights = []
    for t in range(30):
        g = torch.randn(2, 50, generator=gen, dtype=torch.float64)
        g[0] *= 0.8**t
        weights.append(float(_step(balancer, g)[0].weights[1]))
    assert weights[0] == 0.5  # the first step sets the baseline
    assert all(b > a for a, b in zip(weights[2:], weights[3:]))  # once the first has shrunk
    assert weights[-1] > 0.99


def test_the_weights_do_not_depend_on_the_gradients_scales() -> None:
    """Scale processing: objective i's gradients times cᵢ (every step) change Ê by cᵢ and its
    baseline too; the weights agree to rounding when ε is negligible."""
    matrices = _sequence(11, 3, 10)
    scales = torch.tensor([[1e-3], [1.0], [1e4]], dtype=torch.float64)
    a, b = ExcessMTLBalancer(3, eps=1e-300), ExcessMTLBalancer(3, eps=1e-300)
    for m in matrices:
        torch.testing.assert_close(
            _step(a, m)[0].weights, _step(b, scales * m)[0].weights, rtol=1e-12, atol=0
        )


def test_the_heads_get_the_same_weights() -> None:
    p = toy_problem(seed=4, num_objectives=3, scales=[1.0, 5.0, 0.2])
    balancer = ExcessMTLBalancer(3)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-2)
    for _ in range(3):
        balanced_step(balancer, opt, p.losses, p.shared())
    losses = p.losses()
    heads = [list(h.parameters()) for h in p.heads]
    own = [torch.autograd.grad(loss, h, retain_graph=True) for loss, h in zip(losses, heads)]
    for q in p.all_parameters():
        q.grad = None
    info = balancer.backward(losses, p.shared())
    assert float(info.weights.max()) > 0.34  # the weights have moved from 1/3
    for w, h, gradients in zip(info.weights, heads, own):
        for q, g in zip(h, gradients):
            torch.testing.assert_close(q.grad, w * g, rtol=1e-14, atol=0)


# ---------------------------------------------------------------------- the mirror-ascent step
def _value(w: np.ndarray, p: np.ndarray, s: np.ndarray) -> float:
    """⟨w, s⟩ − KL(w ‖ p), with 0·log 0 = 0."""
    positive = w > 0
    return float(w @ s - (w[positive] * np.log(w[positive] / p[positive])).sum())


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 6),
    logits=st.lists(st.floats(-5.0, 5.0), min_size=6, max_size=6),
    scores=st.lists(st.floats(-8.0, 8.0), min_size=6, max_size=6),
)
@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_mirror_ascent_is_the_maximiser_found_by_cvxpy_and_scipy(
    n: int, logits: list[float], scores: list[float]
) -> None:
    """Its value is log Z (the closed form's optimal value) to rounding; cvxpy (Clarabel on the
    exponential cone, at tight tolerances) and scipy's SLSQP find no better point, and the same
    one to their accuracy (the maximiser is unique: the objective is strictly concave)."""
    ell = torch.log_softmax(torch.tensor(logits[:n], dtype=torch.float64), dim=0)
    s = torch.tensor(scores[:n], dtype=torch.float64)
    w = mirror_ascent(ell, s).exp().numpy()
    p, sn = ell.exp().numpy(), s.numpy()
    assert abs(w.sum() - 1.0) <= 1e-14 and (w > 0).all()
    best = float(torch.logsumexp(ell + s, dim=0))
    assert abs(_value(w, p, sn) - best) <= 1e-12 * max(1.0, abs(best))

    x = cp.Variable(n)
    problem = cp.Problem(cp.Maximize(sn @ x - cp.sum(cp.rel_entr(x, p))), [cp.sum(x) == 1])
    tight = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
    problem.solve(solver=cp.CLARABEL, **tight)
    # at these tolerances Clarabel often stops just short ("inaccurate"), its weights within a
    # few 1e-6 of the maximiser; at its defaults, "optimal" means within 5e-5 only
    assert problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
    assert problem.value <= best + 1e-9 * max(1.0, abs(best))
    np.testing.assert_allclose(x.value, w, rtol=0, atol=1e-5)

    result = minimize(
        lambda v: -_value(np.clip(v, 0.0, None), p, sn),
        p,
        jac=lambda v: np.log(np.clip(v, 1e-300, None) / p) + 1.0 - sn,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1.0}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    assert result.success, result.message
    assert -result.fun <= best + 1e-9 * max(1.0, abs(best))
    np.testing.assert_allclose(result.x, w, rtol=0, atol=1e-5)  # SLSQP: 2e-6 near 0


def test_mirror_ascent_saturates_and_an_underflowed_weight_comes_back() -> None:
    ell = torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64))
    ell = mirror_ascent(ell, torch.tensor([2000.0, 0.0], dtype=torch.float64))
    assert ell.exp().tolist() == [1.0, 0.0] and bool(torch.isfinite(ell).all())
    back = mirror_ascent(ell, torch.tensor([0.0, 2001.0], dtype=torch.float64)).exp()
    torch.testing.assert_close(back, torch.softmax(torch.tensor([0.0, 1.0]).double(), dim=0))


# ---------------------------------------------------------------------- state, errors
def _save_load(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize(("warmup", "stop"), [(0, 1), (0, 4), (3, 2), (3, 3), (3, 6)])
def test_state_round_trip_mid_run_is_bit_identical(warmup: int, stop: int) -> None:
    matrices = [m.float() for m in _sequence(5, 3, 10)]  # float32 gradients: float32 sums
    a = ExcessMTLBalancer(3, n_warmup_steps=warmup, robust_step_size=2.0)
    for m in matrices[:stop]:
        _step(a, m)
    saved = _save_load(a.state_dict())
    assert [t.dtype for t in saved["state"]["sums"]] == [torch.float32]
    b = ExcessMTLBalancer(3)
    b.load_state_dict(saved)
    assert b.n_warmup_steps == warmup and b.steps == stop
    for m in matrices[stop:]:
        (info_a, grad_a), (info_b, grad_b) = _step(a, m), _step(b, m)
        assert torch.equal(info_a.weights, info_b.weights) and torch.equal(grad_a, grad_b)
        assert all(
            torch.equal(x, y) for x, y in zip(info_a.extras.values(), info_b.extras.values())
        )


def test_a_changed_parameter_set_is_a_clear_error() -> None:
    p = toy_problem(num_objectives=2)
    balancer = create("excessmtl", 2)
    balancer.backward(p.losses(), p.shared())
    with pytest.raises(ValueError, match="balanced coordinates changed since excessmtl's sums"):
        balancer.backward(p.losses(), p.all_parameters())
    with pytest.raises(ValueError, match="balanced coordinates changed"):
        balancer.backward(p.losses(), p.shared()[:1])


def test_options_are_checked_and_representations_refused() -> None:
    for bad in (0.0, -1.0, math.inf, math.nan, True, "1"):
        with pytest.raises(ValueError, match="robust_step_size must be a finite number > 0"):
            create("excessmtl", 2, robust_step_size=bad)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="n_warmup_steps must be an integer >= 0"):
            create("excessmtl", 2, n_warmup_steps=bad)
    for bad in (0.0, -1e-7, math.inf):
        with pytest.raises(ValueError, match="eps must be a finite number > 0"):
            create("excessmtl", 2, eps=bad)
    with pytest.raises(ValueError, match="unknown option.*gramian"):
        create("excessmtl", 2, gramian="representation")
    p = toy_problem()
    with pytest.raises(ValueError, match="does not balance a Gramian"):
        create("excessmtl", 2).backward(p.losses(), p.shared(), representations=[p.trunk(p.x)])
    saved = create("excessmtl", 2).state_dict()
    saved["state"]["log_weights"] = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="'log_weights' must be a tensor of shape \\(2,\\)"):
        create("excessmtl", 2).load_state_dict(saved)
