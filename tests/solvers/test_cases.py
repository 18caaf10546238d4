"""Hand-derived cases, degenerate inputs, invalid inputs and the device contract of the solvers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from moo_opt.solvers import SolveStatus, solve_equality_qp, solve_simplex_qp
from moo_opt.solvers._closed_form import closed_form_device
from moo_opt.solvers.result import STATUS_CODES
from tests.helpers.assertions import assert_balanced, assert_certified

BOTH = pytest.mark.parametrize(
    "solve", [solve_equality_qp, solve_simplex_qp], ids=["equality", "simplex"]
)


def gram(*columns: list[float]) -> np.ndarray:
    g = np.array(columns, dtype=np.float64).T
    return g.T @ g


def weights(result) -> np.ndarray:
    return result.weights.numpy()


# ---------------------------------------------------------------- closed forms and hand cases
@BOTH
def test_orthogonal_gradients_weight_inverse_to_squared_norms(solve) -> None:
    q = gram([3.0, 0.0], [0.0, 1.0])  # |g1|² = 9, |g2|² = 1
    r = solve(q)
    np.testing.assert_allclose(weights(r), [0.1, 0.9], rtol=1e-15)
    assert r.status is SolveStatus.OPTIMAL
    assert r.objective == pytest.approx(0.5 * (0.01 * 9 + 0.81 * 1))
    assert_certified(r)


@BOTH
def test_opposite_gradients_cancel(solve) -> None:
    r = solve(gram([1.0, 2.0], [-1.0, -2.0]))
    np.testing.assert_allclose(weights(r), [0.5, 0.5], rtol=1e-15)
    assert r.status is SolveStatus.OPTIMAL
    assert r.objective == 0.0


@BOTH
def test_identical_gradients_are_degenerate_with_uniform_weights(solve) -> None:
    r = solve(gram([1.0, 2.0], [1.0, 2.0]))
    assert r.status is SolveStatus.DEGENERATE
    np.testing.assert_array_equal(weights(r), [0.5, 0.5])
    assert r.condition == float("inf")
    assert_certified(r)


def test_parallel_gradients_of_different_length_extrapolate() -> None:
    """g2 = 2·g1: the affine hull contains 0, reached with w = (2, −1); the simplex stops at g1."""
    q = gram([1.0, 1.0], [2.0, 2.0])
    eq = solve_equality_qp(q)
    np.testing.assert_allclose(weights(eq), [2.0, -1.0], rtol=1e-14)
    assert eq.status is SolveStatus.OPTIMAL and eq.objective == pytest.approx(0.0, abs=1e-15)
    sx = solve_simplex_qp(q)
    np.testing.assert_array_equal(weights(sx), [1.0, 0.0])
    assert sx.objective == pytest.approx(1.0)


@BOTH
def test_zero_gradient_takes_all_the_weight(solve) -> None:
    r = solve(gram([0.0, 0.0, 0.0], [1.0, -2.0, 0.5]))
    np.testing.assert_allclose(weights(r), [1.0, 0.0], atol=1e-300)
    assert r.objective == 0.0
    assert_certified(r)


@BOTH
def test_all_zero_gramian_gives_uniform_weights(solve) -> None:
    r = solve(np.zeros((3, 3)))
    assert r.status is SolveStatus.DEGENERATE
    np.testing.assert_allclose(weights(r), np.full(3, 1 / 3), rtol=1e-15)


@BOTH
def test_single_objective(solve) -> None:
    r = solve(np.array([[4.0]]))
    np.testing.assert_array_equal(weights(r), [1.0])
    assert r.status is SolveStatus.OPTIMAL and r.objective == 2.0 and r.condition == 1.0


def test_scales_from_1e_minus_12_to_1e12_keep_relative_precision() -> None:
    """Jacobi equilibration: every weight, even one of 1e-24, keeps its relative precision."""
    d = np.array([1e-12, 1.0, 1e12])
    r = solve_equality_qp(np.diag(d))
    expected = (1 / d) / (1 / d).sum()
    np.testing.assert_allclose(weights(r), expected, rtol=1e-14)
    assert r.status is SolveStatus.OPTIMAL
    assert_certified(r)


def test_balance_condition_three_objectives() -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((10, 3)) * np.array([1.0, 100.0, 0.01])
    r = solve_equality_qp(g.T @ g)
    assert_balanced(r, g, tol=1e-12)


def test_more_objectives_than_rank_returns_minimum_norm_weights() -> None:
    """P = 2 < N = 5: the optimal set is {w : Gw = 0, Σw = 1}; the minimum-norm one is returned."""
    rng = np.random.default_rng(1)
    g = rng.standard_normal((2, 5))
    r = solve_equality_qp(g.T @ g)
    assert r.status is SolveStatus.DEGENERATE
    w = weights(r)
    assert np.linalg.norm(g @ w) <= 1e-12
    # minimum norm on the affine set: w lies in the row space of [G; 1ᵀ]
    a = np.vstack([g, np.ones(5)])
    np.testing.assert_allclose(w, np.linalg.pinv(a) @ np.r_[0.0, 0.0, 1.0], atol=1e-12)


def test_duplicated_gradients_in_simplex() -> None:
    q = gram([1.0, 0.0], [1.0, 0.0], [0.0, 1.0])
    r = solve_simplex_qp(q)
    assert_certified(r)
    assert r.objective == pytest.approx(0.25)
    w = weights(r)
    assert w[0] + w[1] == pytest.approx(0.5) and w[2] == pytest.approx(0.5)


def test_simplex_active_set_and_wolfe_agree_when_equality_optimum_is_negative() -> None:
    q = gram([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.9, 0.1])
    eq = solve_equality_qp(q)
    assert weights(eq).min() < 0
    fast, exact = solve_simplex_qp(q), solve_simplex_qp(q, method="wolfe")
    assert fast.method == "active-set" and fast.iterations >= 2
    assert exact.method == "wolfe" and exact.iterations >= 1
    for r in (fast, exact):
        assert_certified(r)
        assert r.status is SolveStatus.OPTIMAL
    np.testing.assert_allclose(weights(fast), weights(exact), atol=1e-14)


def test_iteration_cap_is_reported_not_hidden() -> None:
    rng = np.random.default_rng(3)
    g = rng.standard_normal((40, 20))
    r = solve_simplex_qp(g.T @ g, max_iter=2, method="wolfe")
    assert r.status is SolveStatus.MAX_ITER
    assert r.iterations == 2
    assert_certified_feasible = r.kkt.primal_feasibility <= 1e-12
    assert assert_certified_feasible


def test_ridge_reports_regularized() -> None:
    q = gram([1.0, 2.0], [1.0, 2.0], [0.0, 1.0])
    r = solve_equality_qp(q, ridge=1e-3)
    assert r.status is SolveStatus.REGULARIZED
    assert np.isfinite(r.condition) and np.isfinite(weights(r)).all()
    assert weights(r).sum() == pytest.approx(1.0)


@BOTH
def test_inputs_numpy_float32_and_tensor_agree(solve) -> None:
    q = gram([1.0, 0.5, 0.0], [0.2, 1.0, 0.3], [0.0, 0.1, 2.0])
    a = solve(q)
    b = solve(torch.tensor(q))
    c = solve(torch.tensor(q, dtype=torch.float32))
    assert a.weights.dtype == torch.float64 and c.weights.dtype == torch.float64
    np.testing.assert_allclose(weights(a), weights(b), rtol=0, atol=0)
    np.testing.assert_allclose(weights(a), weights(c), rtol=1e-6)


@BOTH
def test_result_keeps_a_copy_of_q(solve) -> None:
    q = torch.tensor(gram([1.0, 0.0], [0.0, 2.0]))
    r = solve(q)
    objective = r.objective
    q.mul_(1e6)
    assert r.kkt_residual <= 1e-12 and solve(q).objective != objective
    fresh = solve(torch.tensor(gram([1.0, 0.0], [0.0, 2.0])))
    assert fresh.as_dict()["objective"] == objective


def test_as_dict_is_plain_python() -> None:
    d = solve_equality_qp(gram([1.0, 0.0], [0.0, 1.0])).as_dict()
    assert d["status"] == "optimal" and d["weights"] == [0.5, 0.5] and d["method"] == "closed-form"
    assert {"objective", "kkt_residual", "condition", "iterations"} <= d.keys()


# ---------------------------------------------------------------- invalid input
@BOTH
@pytest.mark.parametrize(
    "q, message",
    [
        (np.ones((2, 3)), "square"),
        (np.ones((2, 2, 2)), "square"),
        (np.ones((0, 0)), "empty"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN or Inf"),
        (np.array([[np.inf, 0.0], [0.0, 1.0]]), "NaN or Inf"),
        (np.array([[1.0, 0.5], [0.0, 1.0]]), "not symmetric"),
        (np.array([[-1.0, 0.0], [0.0, 1.0]]), "positive semi-definite"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive semi-definite"),
        (np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]]), "positive semi-definite"),
        (np.array([[1 + 1j, 0], [0, 1]]), "real"),
        (np.array([["a", "b"], ["c", "d"]]), "numeric"),
    ],
)
def test_invalid_input_raises_a_named_value_error(solve, q, message) -> None:
    with pytest.raises(ValueError, match=message):
        solve(q)


def test_invalid_options_raise() -> None:
    q = np.eye(3)
    with pytest.raises(ValueError, match="ridge"):
        solve_equality_qp(q, ridge=-1.0)
    with pytest.raises(ValueError, match="method"):
        solve_equality_qp(q, method="newton")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="closed-form"):
        solve_equality_qp(q, method="closed-form")
    with pytest.raises(ValueError, match="tol"):
        solve_simplex_qp(q, tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        solve_simplex_qp(q, max_iter=0)


def test_float32_asymmetry_within_rounding_is_accepted() -> None:
    g = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0))
    q = g.T @ g
    q[0, 1] += 1e-6 * q[0, 1].abs()
    assert_certified(solve_equality_qp(q))


# ---------------------------------------------------------------- device contract
def test_deferred_validation_on_device_gives_uniform_weights_and_invalid_status() -> None:
    q = torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]], dtype=torch.float64)
    w, code = closed_form_device(q, 1e-14, simplex=False, base=SolveStatus.OPTIMAL)
    assert STATUS_CODES[int(code)] is SolveStatus.INVALID_INPUT
    assert torch.equal(w, torch.tensor([0.5, 0.5], dtype=torch.float64))
    w, code = closed_form_device(
        torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64),
        1e-14,
        False,
        SolveStatus.OPTIMAL,
    )
    assert STATUS_CODES[int(code)] is SolveStatus.INVALID_INPUT


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@BOTH
def test_two_objectives_on_cuda_never_synchronise(solve) -> None:
    g = torch.randn(1000, 2, device="cuda", dtype=torch.float32)
    q = g.T @ g
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        r = solve(q)
        w = r.weights * 2.0  # use the weights on the device
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert w.device.type == "cuda"
    host = solve(q.cpu())
    np.testing.assert_allclose(r.weights.cpu().numpy(), host.weights.numpy(), rtol=1e-10)
    assert r.status is host.status


# ---------------------------------------------------------------- packaging contract
def test_core_imports_no_optional_dependency() -> None:
    code = (
        "import sys, moo_opt, moo_opt.solvers; "
        "bad = [m for m in ('cvxpy', 'compressai', 'matplotlib', 'plugins') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_reference_without_cvxpy_says_how_to_install(monkeypatch) -> None:
    from moo_opt.solvers import reference

    monkeypatch.setitem(sys.modules, "cvxpy", None)
    with pytest.raises(ImportError, match=r"pip install 'moo-opt\[cvxpy\]'"):
        reference.solve_equality_qp_cvxpy(np.eye(2))
