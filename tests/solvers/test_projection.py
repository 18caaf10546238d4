"""The Euclidean projection onto the simplex (MoCo's weights): exact KKT conditions, the cvxpy
reference, hand cases, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from moo_opt.solvers import project_to_simplex
from moo_opt.solvers.reference import project_to_simplex_cvxpy

EPS = float(np.finfo(np.float64).eps)

scales = st.sampled_from([1e-6, 1e-2, 1.0, 10.0, 1e3])
points = st.integers(1, 24).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-1.0, 1.0, allow_subnormal=False), min_size=n, max_size=n), scales
    )
)


def _point(spec: tuple[list[float], float]) -> np.ndarray:
    values, scale = spec
    return scale * np.asarray(values, dtype=np.float64)


def assert_is_the_projection(v: np.ndarray, w: np.ndarray) -> None:
    """The KKT conditions of ``min ½|w − v|²`` on the simplex, to rounding: ``w ≥ 0``, ``Σw = 1``,
    and one threshold τ with ``vᵢ − wᵢ = τ`` where ``wᵢ > 0`` and ``vᵢ ≤ τ`` where ``wᵢ = 0``."""
    n = v.shape[0]
    tol = 8 * n * EPS * max(1.0, float(np.abs(v).max()))
    assert np.isfinite(w).all() and (w >= 0.0).all(), w
    assert abs(float(w.sum()) - 1.0) <= tol, (w.sum(), tol)
    support = w > 0.0
    assert support.any()
    gaps = v[support] - w[support]
    tau = float(gaps.mean())
    assert np.abs(gaps - tau).max() <= tol, (gaps, tol)
    assert (v[~support] <= tau + tol).all(), (v, tau)


@given(spec=points)
def test_satisfies_the_kkt_conditions_exactly(spec: tuple[list[float], float]) -> None:
    v = _point(spec)
    w = project_to_simplex(torch.from_numpy(v)).numpy()
    assert_is_the_projection(v, w)


@given(spec=points)
def test_matches_cvxpy(spec: tuple[list[float], float]) -> None:
    v = _point(spec)
    w = project_to_simplex(v).numpy()
    reference = project_to_simplex_cvxpy(v)
    # Clarabel's answer is accurate to its tolerances, ours to rounding: the objective is never
    # above the reference's, and the points agree to the reference's accuracy
    assert np.sum((w - v) ** 2) <= np.sum((reference - v) ** 2) + 1e-12 * max(1.0, np.sum(v**2))
    np.testing.assert_allclose(w, reference, rtol=0, atol=1e-7 * max(1.0, float(np.abs(v).max())))


@given(spec=points, shift=st.floats(-100.0, 100.0))
def test_is_invariant_to_adding_a_constant(spec: tuple[list[float], float], shift: float) -> None:
    v = _point(spec)
    np.testing.assert_allclose(
        project_to_simplex(v + shift).numpy(),
        project_to_simplex(v).numpy(),
        rtol=0,
        atol=64 * v.shape[0] * EPS * (1.0 + abs(shift) + float(np.abs(v).max())),
    )


def test_hand_cases() -> None:
    def proj(*v: float) -> list[float]:
        return project_to_simplex(torch.tensor(v, dtype=torch.float64)).tolist()

    assert proj(0.2, 0.3, 0.5) == pytest.approx([0.2, 0.3, 0.5], abs=1e-16)  # already there
    assert proj(0.5, 2.0, -1.0) == [0.0, 1.0, 0.0]  # a vertex
    assert proj(1.0, 1.0) == [0.5, 0.5]  # ties
    assert proj(0.0, 0.0, 0.0, 0.0) == [0.25] * 4  # the centre
    assert proj(1.0, 0.5, -3.0) == pytest.approx([0.75, 0.25, 0.0], abs=1e-16)
    assert proj(7.0) == [1.0]
    assert project_to_simplex(np.array([3, 1])).tolist() == [1.0, 0.0]  # integers


def test_keeps_the_device_and_returns_float64() -> None:
    w = project_to_simplex(torch.tensor([0.1, 0.2], dtype=torch.float32))
    assert w.dtype == torch.float64 and w.device.type == "cpu"


def test_bad_input_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="non-empty vector"):
        project_to_simplex(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="non-empty vector"):
        project_to_simplex(torch.zeros(0))
    with pytest.raises(ValueError, match="NaN or Inf"):
        project_to_simplex(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="must be real"):
        project_to_simplex(torch.zeros(2, dtype=torch.complex64))
    # unchecked on request: NaN in, NaN out
    assert torch.isnan(project_to_simplex(torch.tensor([0.0, float("nan")]), validate=False)).any()
