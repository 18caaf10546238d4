"""SDMGrad (Xiao, Ban & Ji, NeurIPS 2023): MGDA at λ = 0, the mean as λ → ∞, the KKT conditions of
the inner problem on the step's Gramian, and objective sampling (SDMGrad-OS) drawn from the
balancer's own generator: reproducible from the seed and the state, only the sampled gradients
computed, the paper's N/K rescaling."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from moo_opt import SDMGradBalancer, create
from moo_opt.solvers import SolveStatus, solve_sdmgrad
from moo_opt.solvers.sdmgrad import sdmgrad_kkt
from tests.helpers.models import toy_problem


def _gram(n: int, seed: int) -> tuple[object, torch.Tensor]:
    p = toy_problem(seed=seed, num_objectives=n, scales=[1.0] * n)
    b = SDMGradBalancer(n)
    return p, b.gradients(p.losses(), p.shared()).gramian()


@pytest.mark.parametrize(("n", "seed"), [(2, 0), (3, 1), (4, 2), (5, 3)])
def test_lambda_zero_is_mgda(n: int, seed: int) -> None:
    p = toy_problem(seed=seed, num_objectives=n, scales=[1.0, 10.0, 0.1, 1.0, 3.0][:n])
    ours = create("sdmgrad", n, lam=0.0).backward(p.losses(), p.shared())
    mgda = create("mgda", n).backward(p.losses(), p.shared())
    torch.testing.assert_close(ours.weights, mgda.weights, rtol=0.0, atol=1e-14)
    torch.testing.assert_close(ours.extras["inner"], mgda.weights, rtol=0.0, atol=1e-14)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_large_lambda_tends_to_the_mean(n: int) -> None:
    """The weights are (w + λ/N)/(1 + λ): within 1/(1 + λ) of 1/N, whatever w."""
    p = toy_problem(seed=n, num_objectives=n, scales=[1.0, 10.0, 0.1, 1.0, 3.0][:n])
    previous = None
    for lam in (0.3, 10.0, 1e3, 1e6):
        info = create("sdmgrad", n, lam=lam).backward(p.losses(), p.shared())
        gap = float((info.weights - 1.0 / n).abs().max())
        assert gap <= 1.0 / (1.0 + lam) + 1e-15
        assert previous is None or gap <= previous + 1e-15
        previous = gap
        assert info.solve is not None and info.solve.kkt_residual <= 1e-9


@pytest.mark.parametrize("lam", [0.0, 0.3, 2.0])
def test_inner_weights_satisfy_the_kkt_conditions(lam: float) -> None:
    """On the step's Gramian Q: w ≥ 0, Σw = 1, ν = Q(w + λp) − (wᵀQ(w + λp))1 ≥ 0 and wᵢνᵢ = 0
    (relative to the size of the terms), and the applied weights are (w + λp)/(1 + λ)."""
    p, q = _gram(4, 7)
    b = SDMGradBalancer(4, lam=lam)
    info = b.backward(p.losses(), p.shared())
    w = info.extras["inner"].numpy()
    pref = np.full(4, 0.25)
    assert info.solve is not None and info.solve.status is SolveStatus.OPTIMAL
    assert (w >= 0.0).all() and abs(w.sum() - 1.0) <= 1e-14
    v = w + lam * pref
    nu = q.numpy() @ v - float(w @ q.numpy() @ v)
    size = float(np.abs(q.numpy()).max()) * (1.0 + lam) ** 2
    assert (nu >= -1e-12 * size).all() and (np.abs(w * nu) <= 1e-12 * size).all()
    assert sdmgrad_kkt(q.numpy(), w, lam, pref).max <= 1e-12
    np.testing.assert_allclose(info.weights.numpy(), (w + lam * pref) / (1.0 + lam), rtol=1e-15)


def test_preferences_set_the_target_direction() -> None:
    p = toy_problem(seed=3, num_objectives=3, scales=[1.0, 1.0, 1.0])
    info = create("sdmgrad", 3, lam=1e6, task_weights=[0.0, 1.0, 0.0]).backward(
        p.losses(), p.shared()
    )
    torch.testing.assert_close(
        info.weights, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-6, rtol=0.0
    )


# ---------------------------------------------------------------- objective sampling


def _run(b: SDMGradBalancer, steps: int, seed: int = 0) -> list[tuple[list[float], list[float]]]:
    p = toy_problem(seed=seed, num_objectives=b.num_objectives, scales=[1.0] * b.num_objectives)
    out = []
    for _ in range(steps):
        info = b.backward(p.losses(), p.shared())
        out.append((info.weights.tolist(), info.extras["sampled"].tolist()))
    return out


def test_sampling_draws_exactly_k_and_rescales_by_n_over_k() -> None:
    """Each step: K objectives, the others weight 0; the sampled ones get
    (N/K)(w + λp)/(1 + λ) with w solved on their block plus one zero vertex."""
    n, k, lam = 5, 2, 0.3
    b = SDMGradBalancer(n, sampled=k, lam=lam, seed=3)
    p = toy_problem(seed=1, num_objectives=n, scales=[1.0] * n)
    q = b.gradients(p.losses(), p.shared()).gramian()
    for _ in range(6):
        info = b.backward(p.losses(), p.shared())
        mask = info.extras["sampled"].bool()
        assert int(mask.sum()) == k
        assert (info.weights[~mask] == 0.0).all()
        idx = torch.nonzero(mask).flatten()
        block = torch.nn.functional.pad(q[idx[:, None], idx], (0, 1, 0, 1))
        inner = solve_sdmgrad(block, lam, torch.tensor([1.0 / n] * k + [0.0])).weights
        expected = (n / k) * (inner[:k] + lam / n) / (1.0 + lam)
        torch.testing.assert_close(info.weights[idx], expected, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(info.extras["inner"][idx], inner[:k])
        for param in p.all_parameters():
            param.grad = None


def test_sampling_computes_only_the_sampled_gradients() -> None:
    """An unsampled objective's graph is never differentiated (the point of SDMGrad-OS)."""
    n = 4
    p = toy_problem(seed=2, num_objectives=n, scales=[1.0] * n)
    b = SDMGradBalancer(n, sampled=1, seed=5)
    for _ in range(5):
        h = p.trunk(p.x)
        outs = [head(h) for head in p.heads]
        hits = [0] * n
        for i, o in enumerate(outs):
            o.register_hook(lambda g, i=i, hits=hits: hits.__setitem__(i, hits[i] + 1))
        losses = [((o - t) ** 2).mean() for o, t in zip(outs, p.targets)]
        info = b.backward(losses, p.shared())
        drawn = int(torch.nonzero(info.extras["sampled"]).item())
        assert hits == [int(i == drawn) for i in range(n)]


def test_sampling_is_reproducible_from_the_seed_and_the_state() -> None:
    first = _run(SDMGradBalancer(4, sampled=2, seed=11), 8)
    assert first == _run(SDMGradBalancer(4, sampled=2, seed=11), 8)
    assert first != _run(SDMGradBalancer(4, sampled=2, seed=12), 8)
    b = SDMGradBalancer(4, sampled=2, seed=11)
    _run(b, 3)
    state = b.state_dict()
    rest = _run(b, 5)
    resumed = SDMGradBalancer(4)
    resumed.load_state_dict(state)
    assert resumed.sampled == 2 and resumed.seed == 11
    assert _run(resumed, 5) == rest
    assert first[3:] == rest


def test_sampling_never_touches_the_global_rng() -> None:
    p = toy_problem(seed=0, num_objectives=3, scales=[1.0] * 3)  # seeds the global RNG itself
    b = SDMGradBalancer(3, sampled=1, seed=0)
    before = torch.get_rng_state()
    for _ in range(4):
        b.backward(p.losses(), p.shared())
    assert torch.equal(torch.get_rng_state(), before)


def test_each_objective_is_drawn_with_probability_k_over_n() -> None:
    """Uniform subsets of exactly K: each objective is drawn with probability K/N (so the N/K
    factor makes the preference part of the step an unbiased estimate of λg₀), every subset
    occurs."""
    n, k, steps = 4, 2, 400
    masks = torch.tensor([m for _, m in _run(SDMGradBalancer(n, sampled=k), steps)])
    assert (masks.sum(dim=1) == k).all()
    assert (masks.mean(dim=0) - k / n).abs().max() <= 0.075  # 3σ = 0.075 at 400 draws
    subsets = {tuple(torch.nonzero(m).flatten().tolist()) for m in masks}
    assert subsets == set(itertools.combinations(range(n), k))


def test_sampling_all_is_the_plain_method() -> None:
    p = toy_problem(seed=4, num_objectives=3, scales=[1.0] * 3)
    full = SDMGradBalancer(3, sampled=3).backward(p.losses(), p.shared())
    plain = SDMGradBalancer(3).backward(p.losses(), p.shared())
    torch.testing.assert_close(full.weights, plain.weights, rtol=0.0, atol=0.0)
    assert "sampled" not in full.extras


def test_a_skipped_step_draws_nothing() -> None:
    b = SDMGradBalancer(3, sampled=1, nonfinite="skip")
    state = b.generator.get_state()
    p = toy_problem(seed=0, num_objectives=3, scales=[1.0] * 3)
    losses = p.losses()
    losses[2] = losses[2] * float("nan")
    info = b.backward(losses, p.shared())
    assert info.skipped and b.skips == 1
    assert torch.equal(b.generator.get_state(), state)


def test_sampling_with_the_representation_gramian() -> None:
    n = 3
    p = toy_problem(seed=5, num_objectives=n, scales=[1.0] * n)
    b = SDMGradBalancer(n, sampled=2, gramian="representation")
    h = p.trunk(p.x)
    losses = [((head(h) - t) ** 2).mean() for head, t in zip(p.heads, p.targets)]
    info = b.backward(losses, p.all_parameters(), representations=[h])
    mask = info.extras["sampled"].bool()
    assert int(mask.sum()) == 2 and (info.weights[~mask] == 0.0).all()
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in p.shared())


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lam": -0.1}, "lam must be a finite number >= 0"),
        ({"lam": float("nan")}, "lam must be a finite number >= 0"),
        ({"lam": float("inf")}, "lam must be a finite number >= 0"),
        ({"lam": True}, "lam must be a finite number >= 0"),
        ({"sampled": 0}, "sampled must be a positive integer"),
        ({"sampled": 4}, r"sampled must be None or in 1\.\.3"),
        ({"sampled": 1.5}, "sampled must be a positive integer"),
        ({"task_weights": [1.0, -1.0, 0.0]}, "task_weights needs 3 finite values >= 0"),
        ({"task_weights": [1.0, 1.0]}, "task_weights needs 3 finite values >= 0"),
        ({"tol": 0.0}, "tol must be > 0"),
    ],
)
def test_rejects_bad_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create("sdmgrad", 3, **kwargs)
