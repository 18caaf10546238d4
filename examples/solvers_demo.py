"""Solve both balancing QPs on a few Gram matrices and print their KKT certificates beside cvxpy.

Run with ``make demo`` (or ``python examples/solvers_demo.py``). Needs the ``cvxpy`` extra for the
reference column.
"""

from __future__ import annotations

import numpy as np

from moo_opt.solvers import SolveResult, solve_equality_qp, solve_simplex_qp


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2025)
    base = rng.standard_normal(256)
    other = rng.standard_normal(256)
    # distortion-like gradient 40x larger than the rate-like one, at 120 degrees
    g_d = 40.0 * base
    g_r = np.cos(np.radians(120)) * base + np.sin(np.radians(120)) * other
    aligned_1 = base
    aligned_2 = 3.0 * (0.95 * base + np.sqrt(1 - 0.95**2) * other)
    three = rng.standard_normal((256, 3)) @ np.array(
        [[1.0, -0.6, 0.2], [0.0, 1.0, -0.5], [0.0, 0.0, 0.3]]
    )
    three *= np.array([1.0, 10.0, 0.1])
    return {
        "two conflicting gradients (norms 40:1, 120°)": np.stack([g_d, g_r], axis=1),
        "two aligned gradients (norms 1:3, cos 0.95)": np.stack([aligned_1, aligned_2], axis=1),
        "three objectives (scales 1, 10, 0.1)": three,
        "duplicated gradient (degenerate)": np.stack([base, base, other], axis=1),
    }


def _fmt(w: np.ndarray) -> str:
    return "[" + ", ".join(f"{x:+.6f}" for x in w) + "]"


def _row(label: str, r: SolveResult) -> str:
    return (
        f"  {label:<9} w = {_fmt(r.weights.numpy())}  status={r.status.value:<10} "
        f"objective={r.objective:.10g}  KKT={r.kkt_residual:.1e}  cond={r.condition:.3g}  "
        f"({r.method})"
    )


def main() -> None:
    try:
        from moo_opt.solvers.reference import solve_equality_qp_cvxpy, solve_simplex_qp_cvxpy
    except ImportError:  # pragma: no cover
        solve_equality_qp_cvxpy = solve_simplex_qp_cvxpy = None  # type: ignore[assignment]
    print(
        "moo-opt solvers: min 1/2 wᵀQw s.t. Σw = 1 (Solution 2), "
        "and the same over the simplex (MGDA)"
    )
    print(
        "KKT = largest relative KKT residual; "
        "cond = condition of the equilibrated reduced Hessian\n"
    )
    for name, g in _cases().items():
        q = g.T @ g
        print(f"{name}: N = {q.shape[0]}, diag(Q) = {np.array2string(np.diag(q), precision=3)}")
        for problem, ours, ref in (
            ("equality", solve_equality_qp, solve_equality_qp_cvxpy),
            ("simplex", solve_simplex_qp, solve_simplex_qp_cvxpy),
        ):
            r = ours(q)
            print(_row(problem, r))
            d = g @ r.weights.numpy()
            if problem == "equality":
                print(f"  {'':<9} balance: gᵢ·d / |d|² = {_fmt(g.T @ d / max(d @ d, 1e-300))}")
            if ref is not None:
                c = ref(q)
                gap = float(np.abs(c.weights.numpy() - r.weights.numpy()).max())
                print(_row("cvxpy", c) + f"  |Δw|∞={gap:.1e}")
        print()


if __name__ == "__main__":
    main()
