"""The balancers: hand-derived weights, ``.grad`` equal to autograd of Σ wᵢLᵢ (a coordinate-wise
balancer: its rule), bad input, skipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moo_opt import (
    CoarseToFineBalancer,
    FixedWeights,
    MGDABalancer,
    NonFiniteLossError,
    QPBalancer,
    available,
    balanced_step,
    create,
)
from moo_opt.balancers.coordinatewise import CoordinateBalancer
from moo_opt.gradients import objective_gradients
from moo_opt.solvers import SolveStatus
from moo_opt.weightings import renormalized
from tests.helpers.models import subbatch_step, toy_problem
from tests.helpers.state import same_entry

ALL = pytest.mark.parametrize("name", available())


def grads_of(problem, weights: torch.Tensor) -> list[torch.Tensor | None]:
    """What torch.autograd.backward(Σ wᵢ Lᵢ) writes."""
    for q in problem.all_parameters():
        q.grad = None
    sum(w * l for w, l in zip(weights, problem.losses())).backward()
    out = problem.grads()
    for q in problem.all_parameters():
        q.grad = None
    return out


@ALL
def test_grad_equals_autograd_of_the_weighted_sum(name: str) -> None:
    p = toy_problem(num_objectives=2)
    balancer = create(name, 2)
    info = balancer.backward(p.losses(), p.shared())
    got = p.grads()
    if isinstance(balancer, CoordinateBalancer):
        # no weighting gives a coordinate-wise rule: its own on the balanced set (the matrix G),
        # and autograd of the plain combination elsewhere
        g = objective_gradients(p.losses(), p.shared()).matrix()
        shared = len(p.shared())
        rule = create(name, 2).combine(g.T.contiguous())
        torch.testing.assert_close(torch.cat([a.reshape(-1) for a in got[:shared]]), rule)
        got, want = got[shared:], grads_of(p, balancer._plain(info.losses))[shared:]
    else:
        want = grads_of(p, info.weights)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_qp_two_objectives_closed_form_by_hand() -> None:
    p = toy_problem()
    losses = p.losses()
    values = torch.stack([l.detach() for l in losses])
    g = [
        torch.cat([t.reshape(-1) for t in torch.autograd.grad(l, p.shared(), retain_graph=True)])
        for l in losses
    ]
    c = 1.0
    g1, g2 = g[0] / (values[0] + c), g[1] / (values[1] + c)
    z1 = (g2 @ g2 - g1 @ g2) / ((g1 - g2) @ (g1 - g2))
    z = torch.stack([z1, 1 - z1])
    coeff = z / (values + c)
    expected = coeff / coeff.sum()
    info = QPBalancer(2).backward(p.losses(), p.shared())
    torch.testing.assert_close(info.weights, expected, rtol=1e-9, atol=0)
    assert float(info.weights.sum()) == pytest.approx(1.0, abs=1e-14)
    # the balance condition on the log-losses: gᵢ·d equal for both objectives
    d = z[0] * g1 + z[1] * g2
    assert float(g1 @ d) == pytest.approx(float(g2 @ d), rel=1e-9)
    assert info.solve is not None and info.solve.status is SolveStatus.OPTIMAL


def test_qp_solve_every_k_reuses_the_last_solution_and_says_so() -> None:
    p = toy_problem()
    b = QPBalancer(2, solve_every=3)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-2)
    ages, zs = [], []
    for step in range(7):
        if step == 4:  # a checkpoint in between solves: the reuse continues identically
            restored = QPBalancer(2)
            restored.load_state_dict(b.state_dict())
            assert restored.solve_every == 3 and torch.equal(restored.last_z, b.last_z)
            b = restored
        losses = p.losses()
        exact = QPBalancer(2).backward(p.losses(), p.shared())  # what a solve would give now
        opt.zero_grad()
        info = b.backward(losses, p.shared())
        ages.append(int(info.extras["solve_age"]))
        zs.append(info.extras["z"])
        if ages[-1] == 0:
            torch.testing.assert_close(info.weights, exact.weights, rtol=1e-12, atol=0)
        else:
            # the last z on the current losses, renormalised; a single weighted backward
            coeff = zs[-1] / (info.losses + 1.0)
            torch.testing.assert_close(info.weights, coeff / coeff.sum(), rtol=1e-12, atol=0)
            assert torch.equal(zs[-1], zs[-1 - ages[-1]])
        opt.step()
    assert ages == [0, 1, 2, 0, 1, 2, 0]
    for bad in (0, 2.0, False):
        with pytest.raises(ValueError, match="solve_every"):
            QPBalancer(2, solve_every=bad)


def test_qp_cvxpy_backend_and_simplex_option() -> None:
    p = toy_problem(num_objectives=3)
    analytic = QPBalancer(3).backward(p.losses(), p.shared())
    reference = QPBalancer(3, backend="cvxpy").backward(p.losses(), p.shared())
    torch.testing.assert_close(analytic.weights, reference.weights, rtol=1e-6, atol=1e-8)
    simplex = QPBalancer(3, simplex=True).backward(p.losses(), p.shared())
    assert bool((simplex.extras["z"] >= 0).all())
    assert simplex.solve is not None and simplex.solve.problem == "simplex"


def test_renormalisation_never_reverses_the_direction() -> None:
    w, flipped = renormalized(torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert w.tolist() == pytest.approx([1 / 3, 2 / 3]) and float(flipped) == 0.0
    w, flipped = renormalized(torch.tensor([-3.0, 1.0], dtype=torch.float64))
    assert w.tolist() == pytest.approx([-0.75, 0.25]) and float(flipped) == 1.0


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_mgda_weights_by_hand(normalization: str) -> None:
    p = toy_problem()
    losses = p.losses()
    values = torch.stack([l.detach() for l in losses])
    g = [
        torch.cat([t.reshape(-1) for t in torch.autograd.grad(l, p.shared(), retain_graph=True)])
        for l in losses
    ]
    norms = torch.stack([x.norm() for x in g])
    n = {
        "none": torch.ones(2, dtype=torch.float64),
        "l2": norms,
        "loss": values,
        "loss+": values * norms,
    }[normalization]
    h1, h2 = g[0] / n[0], g[1] / n[1]
    a1 = ((h2 @ h2 - h1 @ h2) / ((h1 - h2) @ (h1 - h2))).clamp(0, 1)
    expected = torch.stack([a1, 1 - a1]) / n
    info = MGDABalancer(2, normalization=normalization).backward(p.losses(), p.shared())
    torch.testing.assert_close(info.weights, expected, rtol=1e-9, atol=1e-15)


def test_fixed_weights_default_is_the_standard_loss() -> None:
    p = toy_problem()
    info = FixedWeights((1.0, 1.0)).backward(p.losses(), p.shared())
    assert info.weights.tolist() == [1.0, 1.0]
    assert FixedWeights(num_objectives=3).weights == (1.0, 1.0, 1.0)


# ---------------------------------------------------------------- Solution 1 by hand
def test_logit_gradient_by_hand() -> None:
    b = CoarseToFineBalancer(2, gamma=0.01)
    b.logits = torch.tensor([0.3, -0.1], dtype=torch.float64)
    before = torch.tensor([4.0, 0.5], dtype=torch.float64)
    after = torch.tensor([3.0, 0.45], dtype=torch.float64)
    delta = np.log(before.numpy() + 1) - np.log(after.numpy() + 1)
    z = np.exp([0.3, -0.1]) / np.exp([0.3, -0.1]).sum()
    expected = z * (delta - z @ delta) + 0.01 * np.array([0.3, -0.1])
    np.testing.assert_allclose(b.logit_gradient(before, after).numpy(), expected, rtol=1e-14)


def test_two_objective_logit_gradients_are_opposite_without_gamma() -> None:
    b = CoarseToFineBalancer(2, gamma=0.0)
    b.logits = torch.tensor([0.7, -0.2], dtype=torch.float64)
    g = b.logit_gradient(
        torch.tensor([2.0, 1.0], dtype=torch.float64), torch.tensor([1.5, 0.9], dtype=torch.float64)
    )
    assert float(g[0]) == pytest.approx(-float(g[1]), rel=1e-14)


def test_equal_improvements_leave_only_the_gamma_decay() -> None:
    b = CoarseToFineBalancer(3, gamma=0.001)
    b.logits = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    before = torch.tensor([3.0, 1.0, 0.2], dtype=torch.float64)
    after = (before + 1) * math.exp(-0.05) - 1  # every log(L + 1) drops by 0.05
    torch.testing.assert_close(
        b.logit_gradient(before, after), 0.001 * b.logits, rtol=1e-12, atol=1e-15
    )


def test_adam_step_matches_torch_optim_adam_with_weight_decay() -> None:
    b = CoarseToFineBalancer(2, beta=0.025, gamma=0.003)
    xi = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([xi], lr=0.025, weight_decay=0.003)
    rng = np.random.default_rng(0)
    for _ in range(20):
        before = torch.tensor(rng.uniform(0.5, 5, 2))
        after = before * torch.tensor(rng.uniform(0.8, 1.0, 2))
        c = torch.ones(2, dtype=torch.float64)
        delta = torch.log(before + c) - torch.log(after + c)
        z = torch.softmax(xi.detach(), 0)
        xi.grad = z * (delta - (z * delta).sum())  # Adam adds weight_decay·ξ itself
        adam.step()
        b._learn(before, after)
        torch.testing.assert_close(b.logits, xi.detach(), rtol=1e-13, atol=1e-15)


def test_coarse_to_fine_weights_renormalised_and_moving() -> None:
    p = toy_problem()
    b = CoarseToFineBalancer(2, beta=0.1)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-3)
    first = None
    for _ in range(10):
        info = balanced_step(b, opt, p.losses, p.shared(), max_norm=1.0)
        assert float(info.weights.sum()) == pytest.approx(1.0, abs=1e-14)
        first = info.extras["logits"] if first is None else first
    assert b.step == 10 and not torch.equal(b.logits, torch.zeros(2, dtype=torch.float64))
    # without renormalisation the coefficients are z / (L + c)
    raw = CoarseToFineBalancer(2, renormalize=False).backward(p.losses(), p.shared())
    torch.testing.assert_close(raw.weights, 0.5 / (raw.losses + 1.0))


def test_next_batch_mode_learns_in_backward_and_is_labelled_approximate() -> None:
    p = toy_problem()
    b = CoarseToFineBalancer(2, mode="next_batch")
    assert not b.needs_update
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-3)
    for _ in range(3):
        info = balanced_step(b, opt, p.losses, p.shared())
    assert float(info.extras["approximate"]) == 1.0
    assert b.step == 2  # the first batch has no predecessor
    with pytest.raises(RuntimeError, match="next_batch"):
        b.update([torch.tensor(1.0), torch.tensor(1.0)])


def test_update_every_k_learns_on_one_step_in_k() -> None:
    p = toy_problem()
    b = CoarseToFineBalancer(2, update_every=3)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-3)
    due = []
    for _ in range(7):
        opt.zero_grad()
        b.backward(p.losses(), p.shared())
        due.append(b.needs_update)
        opt.step()
        with torch.no_grad():
            assert b.update(p.losses()) == due[-1]
    assert due == [True, False, False, True, False, False, True]
    assert b.step == 3 and b.calls == 7
    # the logits only move on learning steps; the state (call counter included) round-trips
    restored = CoarseToFineBalancer(2)
    restored.load_state_dict(b.state_dict())
    assert restored.update_every == 3 and restored.calls == 7
    nb = CoarseToFineBalancer(2, mode="next_batch", update_every=2)
    for _ in range(6):
        balanced_step(nb, opt, p.losses, p.shared())
    assert nb.step == 3  # learning steps 0, 2, 4 are each learned from by the next backward
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="update_every"):
            CoarseToFineBalancer(2, update_every=bad)


def test_backward_twice_without_update_warns_once() -> None:
    p = toy_problem()
    b = CoarseToFineBalancer(2)
    b.backward(p.losses(), p.shared())
    with pytest.warns(UserWarning, match="without update"):
        b.backward(p.losses(), p.shared())


def test_update_without_backward_raises() -> None:
    with pytest.raises(RuntimeError, match="preceding backward"):
        CoarseToFineBalancer(2).update([torch.tensor(1.0), torch.tensor(2.0)])


def test_update_learns_exactly_when_due() -> None:
    """One rule: update() learns (True) when needs_update was True, else is a no-op (False)."""
    p = toy_problem()
    b = CoarseToFineBalancer(2, update_every=2)
    for step in range(4):
        b.backward(p.losses(), p.shared())
        due = b.needs_update
        assert b.update(p.losses()) is due and not b.needs_update
        assert b.update(p.losses()) is False  # a second call learns nothing
        assert due == (step % 2 == 0)


def test_update_before_of_the_whole_batch_is_the_exact_update() -> None:
    """The sub-batch estimate of δ with the whole batch as the sub-batch: the same logits, Adam
    moments, weights and parameters as the exact mode, bit for bit."""
    exact, sub = toy_problem(), toy_problem()
    b_exact, b_sub = CoarseToFineBalancer(2, beta=0.1), CoarseToFineBalancer(2, beta=0.1)
    opt_exact = torch.optim.SGD(exact.all_parameters(), lr=1e-2)
    opt_sub = torch.optim.SGD(sub.all_parameters(), lr=1e-2)
    everything = torch.arange(exact.x.shape[0])
    for _ in range(5):
        w_exact = balanced_step(b_exact, opt_exact, exact.losses, exact.shared()).weights
        w_sub = subbatch_step(sub, b_sub, opt_sub, everything).weights
        assert torch.equal(w_exact, w_sub)
    assert b_sub.step == 5 and not torch.equal(b_sub.logits, torch.zeros(2, dtype=torch.float64))
    for key in ("logits", "exp_avg", "exp_avg_sq"):
        assert torch.equal(getattr(b_exact, key), getattr(b_sub, key)), key
    assert all(torch.equal(a, b) for a, b in zip(exact.snapshot(), sub.snapshot()))


def test_update_before_takes_delta_between_the_sub_batch_losses() -> None:
    """δ = log(L_S + c) − log(L'_S + c) from ``before`` and the new losses, whatever the whole
    batch's losses of the backward were; the first Adam step is −β·sign of the gradient."""
    p = toy_problem()
    b = CoarseToFineBalancer(2, beta=0.1, gamma=0.0)
    b.backward(p.losses(), p.shared())
    before = torch.tensor([3.0, 0.5], dtype=torch.float64)
    after = torch.tensor([2.0, 0.45], dtype=torch.float64)
    assert b.update(after, before=[before[0], before[1]]) is True and not b.needs_update
    delta = torch.log(before + 1) - torch.log(after + 1)
    grad = 0.5 * (delta - 0.5 * delta.sum())  # z = (½, ½) at logits 0
    torch.testing.assert_close(b.exp_avg, 0.1 * grad, rtol=1e-13, atol=0)
    torch.testing.assert_close(b.logits, -0.1 * torch.sign(grad), rtol=1e-6, atol=0)
    b.backward(p.losses(), p.shared())
    with pytest.raises(ValueError, match="expected 2 losses before, got 3"):
        b.update(after, before=[1.0, 2.0, 3.0])
    skipping = CoarseToFineBalancer(2, nonfinite="skip")
    skipping.backward(p.losses(), p.shared())
    assert skipping.update(after, before=torch.tensor([float("nan"), 1.0])) is False
    assert skipping.skips == 1 and skipping.step == 0 and not skipping.needs_update


def test_takes_update_only_where_update_learns() -> None:
    assert CoarseToFineBalancer(2).takes_update and create("famo", 2).takes_update
    assert not CoarseToFineBalancer(2, mode="next_batch").takes_update
    assert not create("qp", 2).takes_update and not create("fixed", 2).takes_update


# ---------------------------------------------------------------- bad input and non-finite losses
@ALL
def test_wrong_number_of_losses(name: str) -> None:
    p = toy_problem(num_objectives=3)
    with pytest.raises(ValueError, match="expected 2 losses"):
        create(name, 2).backward(p.losses(), p.shared())


@ALL
def test_nan_loss_raises_by_default_and_writes_nothing(name: str) -> None:
    p = toy_problem()
    losses = p.losses()
    losses[1] = losses[1] * float("nan")
    with pytest.raises(NonFiniteLossError, match="nonfinite='skip'"):
        create(name, 2).backward(losses, p.shared())
    assert all(g is None for g in p.grads())


@ALL
def test_skip_leaves_parameters_grads_and_state_untouched(name: str) -> None:
    p = toy_problem()
    b = create(name, 2, nonfinite="skip")
    opt = torch.optim.Adam(p.all_parameters(), lr=1e-2)
    for _ in range(3):
        balanced_step(b, opt, p.losses, p.shared())
    state, params, opt_state = (
        b.state_dict(),
        p.snapshot(),
        {k: v for k, v in opt.state_dict().items()},
    )
    for q in p.all_parameters():
        q.grad = torch.full_like(q, 0.25)
    losses = p.losses()
    losses[0] = losses[0] + float("inf")
    info = b.backward(losses, p.shared())
    assert info.skipped and info.skips == 1
    assert all(torch.equal(q.grad, torch.full_like(q, 0.25)) for q in p.all_parameters())
    after = b.state_dict()
    assert after["skips"] == 1
    for key, value in state["state"].items():
        assert same_entry(value, after["state"][key]), key
    # through balanced_step: the optimiser does not step
    bad = lambda: [l * float("nan") for l in p.losses()]  # noqa: E731
    assert balanced_step(b, opt, bad, p.shared()).skipped
    assert all(torch.equal(a, q) for a, q in zip(params, p.snapshot()))
    assert opt.state_dict()["state"].keys() == opt_state["state"].keys()


def test_invalid_options_name_the_option() -> None:
    for call, message in [
        (lambda: CoarseToFineBalancer(2, beta=0.0), "beta"),
        (lambda: CoarseToFineBalancer(2, gamma=-1.0), "gamma"),
        (lambda: CoarseToFineBalancer(2, mode="fast"), "mode"),  # type: ignore[arg-type]
        (lambda: CoarseToFineBalancer(2, offsets=(1.0, 2.0, 3.0)), "offsets"),
        (lambda: QPBalancer(2, backend="gurobi"), "backend"),  # type: ignore[arg-type]
        (lambda: QPBalancer(2, offsets=-1.0), "offsets"),
        (lambda: MGDABalancer(2, normalization="max"), "normalization"),  # type: ignore[arg-type]
        (lambda: FixedWeights((1.0, float("nan"))), "finite"),
        (lambda: FixedWeights(2), "num_objectives=N"),  # type: ignore[arg-type]
        (lambda: QPBalancer(0), "num_objectives"),
        (lambda: QPBalancer(2, nonfinite="ignore"), "nonfinite"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(ValueError, match=message):
            call()


# ---------------------------------------------------------------- registry
def test_registry_names_and_errors() -> None:
    assert set(available()) >= {"fixed", "coarse-to-fine", "qp", "mgda"}
    assert isinstance(create("qp", 3, offsets=0.5), QPBalancer)
    with pytest.raises(
        ValueError, match=f"unknown balancer 'pcgrad-typo'; available: {', '.join(available())}$"
    ):
        create("pcgrad-typo")
    with pytest.raises(ValueError, match=r"unknown option\(s\) lr .*valid: offsets, beta"):
        create("coarse-to-fine", 2, lr=0.1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", [n for n in available() if not create(n, 2).reads_host])
def test_two_objectives_on_cuda_add_no_synchronisation(name: str) -> None:
    p = toy_problem(dtype=torch.float32)
    for m in (p.trunk, p.heads):
        m.cuda()
    p.x = p.x.float().cuda()
    p.targets = [t.float().cuda() for t in p.targets]
    b = create(name, 2, nonfinite="unchecked")
    losses = p.losses()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        info = b.backward(losses, p.shared())
        if b.needs_update:
            with torch.no_grad():
                b.update(p.losses())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert info.weights.device.type == "cuda"


def test_warmup_takes_standard_steps_then_balances_from_zero_logits() -> None:
    p = toy_problem()
    b = CoarseToFineBalancer(2, warmup=3)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-3)
    for _ in range(3):
        info = balanced_step(b, opt, p.losses, p.shared())
        assert not b.needs_update and float(info.extras["warmup"]) == 1.0
        torch.testing.assert_close(info.weights, torch.tensor([0.5, 0.5], dtype=info.weights.dtype))
        assert b.update(p.losses()) is False  # nothing to learn from a standard step
    assert b.step == 0 and torch.count_nonzero(b.logits) == 0 and b.calls == 3
    # the gradient of a warm-up step is the standard loss's (halved: the weights sum to one)
    grads = grads_of(p, torch.tensor([0.5, 0.5]))
    b2 = CoarseToFineBalancer(2, warmup=1)
    b2.backward(p.losses(), p.shared())
    for got, want in zip((q.grad for q in p.shared()), grads):
        torch.testing.assert_close(got, want)
    # the state round-trips: the restored balancer knows the warm-up is over and balances
    restored = CoarseToFineBalancer(2, warmup=3)
    restored.load_state_dict(b.state_dict())
    opt.zero_grad()
    info = restored.backward(p.losses(), p.shared())
    assert "warmup" not in info.extras and restored.needs_update
    torch.testing.assert_close(info.weights, restored.weights_for(info.losses)[0])
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="warmup"):
            CoarseToFineBalancer(2, warmup=bad)
