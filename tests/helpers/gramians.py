"""Reusable hypothesis strategies for Gram matrices ``Q = GᵀG``.

Structure (sizes, rank, duplicated and zero columns, column scales) is drawn by hypothesis so that
failures shrink to small readable cases; the entries come from a numpy generator seeded by a drawn
integer, which keeps large matrices cheap to generate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st


@dataclass(frozen=True)
class GramCase:
    """A generated Jacobian ``G`` (P×N, columns are gradients) and its Gram matrix."""

    g: np.ndarray
    description: str

    @property
    def q(self) -> np.ndarray:
        return self.g.T @ self.g

    @property
    def n(self) -> int:
        return self.g.shape[1]


@st.composite
def jacobians(
    draw: st.DrawFn,
    min_n: int = 1,
    max_n: int = 32,
    max_p: int = 64,
    rank_deficient: bool = True,
    duplicates: bool = True,
    zeros: bool = True,
    max_log10_scale: float = 6.0,
) -> GramCase:
    """Random G with optional rank deficiency, duplicated and zero columns, and column scales
    ``10^U(−s, s)`` with ``s`` drawn up to ``max_log10_scale``."""
    n = draw(st.integers(min_n, max_n))
    p = draw(st.integers(1, max_p))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    notes = [f"P={p} N={n}"]
    rank = min(p, n)
    if rank_deficient and draw(st.booleans()):
        rank = draw(st.integers(1, rank))
        notes.append(f"rank<={rank}")
    g = (
        rng.standard_normal((p, rank)) @ rng.standard_normal((rank, n))
        if rank < min(p, n)
        else rng.standard_normal((p, n))
    )
    if duplicates and n > 1 and draw(st.booleans()):
        k = draw(st.integers(1, n - 1))
        for _ in range(k):
            i, j = rng.integers(n, size=2)
            g[:, j] = g[:, i]
        notes.append(f"{k} duplicated")
    s = draw(st.floats(0.0, max_log10_scale))
    if s > 0:
        g = g * 10.0 ** rng.uniform(-s, s, size=n)
        notes.append(f"scales 1e±{s:.1f}")
    if zeros and draw(st.booleans()):
        k = draw(st.integers(1, n))
        g[:, rng.choice(n, size=k, replace=False)] = 0.0
        notes.append(f"{k} zero")
    return GramCase(g, ", ".join(notes))


def well_posed(
    min_n: int = 1, max_n: int = 16, max_log10_scale: float = 2.0
) -> st.SearchStrategy[GramCase]:
    """Full-column-rank G (P ≥ N) with moderate scales: the optimum is unique and well
    conditioned."""
    return _full_rank(min_n, max_n, max_log10_scale)


@st.composite
def _full_rank(draw: st.DrawFn, min_n: int, max_n: int, max_log10_scale: float) -> GramCase:
    n = draw(st.integers(min_n, max_n))
    p = draw(st.integers(n + 2, max(n + 2, 64)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    s = draw(st.floats(0.0, max_log10_scale))
    g = rng.standard_normal((p, n)) * 10.0 ** rng.uniform(-s, s, size=n)
    return GramCase(g, f"P={p} N={n} full rank, scales 1e±{s:.1f}")


def gramians(**kwargs: object) -> st.SearchStrategy[np.ndarray]:
    """Just the Gram matrices of :func:`jacobians`."""
    return jacobians(**kwargs).map(lambda c: c.q)  # type: ignore[arg-type]
