"""MoCo (Fernando et al., ICLR 2023): agreement with independent references of the paper's rule
and of LibMTL's variant over several steps, λ on the simplex, convergence to MGDA's weights on
fixed gradients, the exact state round trip, option checks."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from moo_opt import MoCoBalancer, create
from moo_opt.gradients import objective_gradients
from moo_opt.solvers import SolveStatus, solve_simplex_qp
from tests.helpers.models import toy_problem

SHAPES = [(3, 2), (4,)]  # two balanced parameters
HEAD = 3  # one leaf outside the balanced set


# ---------------------------------------------------------------------- independent references
def _simplex_by_bisection(v: np.ndarray) -> np.ndarray:
    """The projection onto the simplex by bisection on the threshold τ of ``max(v − τ, 0)``."""
    lo, hi = float(v.min()) - 1.0, float(v.max())
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.maximum(v - mid, 0.0).sum() > 1.0 else (lo, mid)
    return np.maximum(v - 0.5 * (lo + hi), 0.0)


def reference_moco(
    gradients: list[np.ndarray],
    values: list[np.ndarray],
    *,
    beta: float = 0.5,
    beta_sigma: float = 0.5,
    gamma: float = 0.1,
    gamma_sigma: float = 0.5,
    rho: float = 0.0,
    radius: float | None = None,
    variant: str = "paper",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(direction, λ)`` of each step: Algorithm 1 of the paper (or LibMTL's ``MoCo``) on the
    (N, P) matrices of the gradients of the successive steps (and the losses' values)."""
    n, p = gradients[0].shape
    y, lam = np.zeros((n, p)), np.full(n, 1.0 / n)
    out = []
    for k, (g, loss) in enumerate(zip(gradients, values), start=1):
        if variant == "libmtl":
            g = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-8) * loss[:, None]
        y = y - beta / k**beta_sigma * (y - g)
        if radius is not None:
            norms = np.linalg.norm(y, axis=1, keepdims=True)
            y = np.where(norms > radius, y * radius / np.maximum(norms, 1e-300), y)
        v = lam - gamma / k**gamma_sigma * (y @ y.T + rho * np.eye(n)) @ lam
        if variant == "libmtl":
            lam = np.exp(v - v.max()) / np.exp(v - v.max()).sum()
        else:
            lam = _simplex_by_bisection(v)
        out.append((lam @ y, lam))
    return out


# ---------------------------------------------------------------------- a controlled problem
def _sequence(seed: int, n: int, steps: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Random gradient matrices (N, P + HEAD) and positive loss values, step by step."""
    rng = np.random.default_rng(seed)
    p = sum(int(np.prod(s)) for s in SHAPES) + HEAD
    scales = 10.0 ** rng.uniform(-2, 2, size=(n, 1))
    gradients = [scales * rng.normal(size=(n, p)) for _ in range(steps)]
    values = [rng.uniform(0.1, 5.0, size=n) for _ in range(steps)]
    return gradients, values


def _leaves() -> tuple[list[torch.Tensor], torch.Tensor]:
    shared = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    return shared, torch.zeros(HEAD, dtype=torch.float64, requires_grad=True)


def _losses(
    shared: list[torch.Tensor], head: torch.Tensor, g: np.ndarray, value: np.ndarray
) -> list[torch.Tensor]:
    """Linear losses at θ = 0 whose gradients are the rows of ``g`` and values ``value``."""
    flat = torch.cat([*(q.reshape(-1) for q in shared), head])
    rows = torch.from_numpy(g)
    return [rows[i] @ flat + float(value[i]) for i in range(g.shape[0])]


def _run(
    balancer: MoCoBalancer, gradients: list[np.ndarray], values: list[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(balanced .grad, head .grad, weights)`` of each step."""
    shared, head = _leaves()
    out = []
    for g, v in zip(gradients, values):
        for q in (*shared, head):
            q.grad = None
        info = balancer.backward(_losses(shared, head, g, v), shared)
        grad = torch.cat([q.grad.reshape(-1) for q in shared]).numpy()
        out.append((grad, head.grad.numpy().copy(), info.weights.numpy()))
    return out


PAPER_CASES = [
    {},
    {"beta": 1.0, "beta_sigma": 0.0, "gamma": 0.02, "gamma_sigma": 0.0, "rho": 0.5},
    {"beta": 0.9, "beta_sigma": 1.0, "gamma": 1e-3, "gamma_sigma": 0.25, "radius": 3.0},
    {"variant": "libmtl"},
    {"variant": "libmtl", "beta": 0.3, "gamma": 0.5, "rho": 0.1},
]


@pytest.mark.parametrize("options", PAPER_CASES)
@pytest.mark.parametrize("n", [2, 3, 5])
def test_agrees_with_the_reference_rule_over_several_steps(options: dict, n: int) -> None:
    worst = 0.0
    for seed in range(3):
        gradients, values = _sequence(seed, n, steps=12)
        ours = _run(MoCoBalancer(n, **options), gradients, values)
        balanced = [g[:, :-HEAD] for g in gradients]
        want = reference_moco(balanced, values, **options)
        for k, ((grad, head, lam), (d, ref_lam), g) in enumerate(zip(ours, want, gradients)):
            np.testing.assert_allclose(lam, ref_lam, rtol=0, atol=1e-12, err_msg=f"step {k}")
            size = np.abs(balanced[k]).max()
            np.testing.assert_allclose(grad, d, rtol=0, atol=1e-12 * size, err_msg=f"step {k}")
            plain = np.ones(n) if options.get("variant") == "libmtl" else lam
            np.testing.assert_allclose(head, plain @ g[:, -HEAD:], rtol=1e-13, atol=0)
            worst = max(worst, float(np.abs(lam - ref_lam).max()))
    assert worst <= 1e-12


@pytest.mark.parametrize("variant", ["paper", "libmtl"])
def test_weights_stay_on_the_simplex(variant: str) -> None:
    gradients, values = _sequence(7, 4, steps=30)
    for _, _, lam in _run(MoCoBalancer(4, gamma=5.0, gamma_sigma=0.0, variant=variant),
                          gradients, values):  # fmt: skip
        assert (lam >= 0.0).all() and abs(lam.sum() - 1.0) <= 1e-14, lam


def test_with_beta_one_the_direction_is_the_current_gradients_times_the_weights() -> None:
    p = toy_problem(seed=2, num_objectives=3, scales=[1.0, 30.0, 0.2])
    b = MoCoBalancer(3, beta=1.0, beta_sigma=0.0)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-2)
    for _ in range(4):
        opt.zero_grad()
        g = objective_gradients(p.losses(), p.shared()).matrix()
        info = b.backward(p.losses(), p.shared())
        # y is the current gradients exactly, and .grad = G λ
        assert torch.equal(torch.cat(b.y.tensors, dim=1), g.T)
        applied = torch.cat([q.grad.reshape(-1) for q in p.shared()])
        torch.testing.assert_close(applied, g @ info.weights, rtol=1e-14, atol=1e-16)
        opt.step()


@pytest.mark.parametrize("case", ["interior", "face"])
def test_on_fixed_gradients_the_weights_converge_to_mgdas(case: str) -> None:
    if case == "interior":
        g = torch.randn(3, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        g[1] -= g[0]  # conflicting gradients: the min-norm point is inside the hull
    else:  # the min-norm point (½, ½, 0) lies on the edge g1 g2
        g = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [2.0, 2.0, 1.0]], dtype=torch.float64)
    q = g @ g.T
    mgda = solve_simplex_qp(q)
    assert mgda.status is SolveStatus.OPTIMAL
    step = 1.0 / float(torch.linalg.eigvalsh(q).max())
    b = MoCoBalancer(3, beta=1.0, beta_sigma=0.0, gamma=step, gamma_sigma=0.0, rho=0.0)
    for _ in range(3000):
        d = b.combine(g)
    torch.testing.assert_close(b.lam, mgda.weights, rtol=0, atol=1e-10)
    torch.testing.assert_close(d, mgda.weights @ g, rtol=0, atol=1e-10)
    if case == "face":
        assert float(b.lam[2]) == 0.0  # the projection puts it exactly on the face


def _save_load(obj: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize(
    "options", [{}, {"radius": [1.0, 2.0, 0.5]}, {"variant": "libmtl", "rho": 0.1}]
)
def test_state_round_trip_mid_run_is_bit_identical(options: dict) -> None:
    gradients, values = _sequence(11, 3, steps=10)
    first = MoCoBalancer(3, **options)
    _run(first, gradients[:4], values[:4])
    saved = _save_load(first.state_dict())
    assert saved["state"]["step"] == 4 and len(saved["state"]["y"]) == len(SHAPES)
    uninterrupted = _run(first, gradients[4:], values[4:])
    resumed = MoCoBalancer(3)
    resumed.load_state_dict(saved)
    again = _run(resumed, gradients[4:], values[4:])
    for a, b in zip(uninterrupted, again):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert resumed.state_dict()["options"] == first.state_dict()["options"]


def test_a_changed_parameter_set_is_a_clear_error() -> None:
    gradients, values = _sequence(0, 2, steps=2)
    b = MoCoBalancer(2)
    shared, head = _leaves()
    b.backward(_losses(shared, head, gradients[0], values[0]), shared)
    with pytest.raises(ValueError, match="balanced coordinates changed since MoCo's tracked"):
        b.backward(_losses(shared, head, gradients[1], values[1]), shared[:1])


def test_radius_bounds_the_tracked_gradients() -> None:
    gradients, values = _sequence(5, 3, steps=6)
    b = MoCoBalancer(3, beta=0.9, radius=[0.5, 1.0, 2.0])
    shared, head = _leaves()
    for g, v in zip(gradients, values):
        info = b.backward(_losses(shared, head, g, v), shared)
        norms = torch.cat(b.y.tensors, dim=1).norm(dim=1)
        assert (norms <= torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64) * (1 + 1e-14)).all()
        torch.testing.assert_close(info.extras["y_norm"], norms, rtol=1e-12, atol=0)


def test_the_schedules_are_reported_and_the_step_counts() -> None:
    gradients, values = _sequence(1, 2, steps=3)
    b = MoCoBalancer(2, beta=0.8, beta_sigma=0.5, gamma=0.2, gamma_sigma=1.0)
    shared, head = _leaves()
    for k, (g, v) in enumerate(zip(gradients, values), start=1):
        info = b.backward(_losses(shared, head, g, v), shared)
        assert float(info.extras["beta"]) == pytest.approx(0.8 / k**0.5, rel=1e-15)
        assert float(info.extras["gamma"]) == pytest.approx(0.2 / k, rel=1e-15)
    assert b.step == 3


def test_a_skipped_step_changes_nothing() -> None:
    gradients, values = _sequence(3, 2, steps=2)
    b = MoCoBalancer(2, nonfinite="skip")
    _run(b, gradients[:1], values[:1])
    before = b.state_dict()
    shared, head = _leaves()
    losses = _losses(shared, head, gradients[1], values[1])
    info = b.backward([losses[0], losses[1] * float("nan")], shared)
    assert info.skipped and b.step == 1
    after = b.state_dict()["state"]
    assert torch.equal(after["lam"], before["state"]["lam"])
    assert all(torch.equal(x, y) for x, y in zip(after["y"], before["state"]["y"]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beta": 0.0}, r"beta must be a finite number in \(0, 1\]"),
        ({"beta": 1.5}, r"beta must be a finite number in \(0, 1\]"),
        ({"beta": True}, "beta must be a finite number"),
        ({"beta_sigma": -0.1}, "beta_sigma must be a finite number >= 0"),
        ({"gamma": 0.0}, "gamma must be a finite number > 0"),
        ({"gamma": float("nan")}, "gamma must be a finite number"),
        ({"gamma_sigma": -1.0}, "gamma_sigma must be a finite number"),
        ({"rho": -1e-3}, "rho must be a finite number >= 0"),
        ({"radius": 0.0}, "radius must be a finite number > 0"),
        ({"radius": [1.0]}, "radius needs 1 or 2 values"),
        ({"variant": "softmax"}, "variant must be one of"),
        ({"gramian": "representation"}, "unknown option"),
    ],
)
def test_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create("moco", 2, **options)


def test_representations_are_refused() -> None:
    p = toy_problem()
    y = p.trunk(p.x)
    with pytest.raises(ValueError, match="does not balance a Gramian"):
        MoCoBalancer(2).backward(p.losses(), p.shared(), representations=[y])
