"""Time per solve of moo-opt's QP solvers against the cvxpy reference (and TorchJD's MGDA
weighting).

Same Gramians for every solver, in one run: for each N, ``--gramians`` random Gram matrices
``GᵀG`` (G of 64×N, columns scaled by 10^U(−1, 1)) as CPU float64 tensors. For each solver the
time per solve is the median over Gramians of the median of ``--repeats`` timed calls. Printed:
the speed-up over cvxpy, the largest weight difference to cvxpy, and the objective gap relative to
the Gramian's scale (max Qᵢᵢ); for TorchJD's Frank–Wolfe ``MGDAWeighting`` (ε = 1e-3, a dev-only
comparison), how far its objective stops above the exact optimum.

    python benchmarks/solvers.py [--sizes 2 4 8 16 32] [--gramians 20] [--repeats 30]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from moo_opt.solvers import solve_equality_qp, solve_simplex_qp
from moo_opt.solvers.reference import solve_equality_qp_cvxpy, solve_simplex_qp_cvxpy


def gramians(n: int, count: int, seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed + n)
    out = []
    for _ in range(count):
        g = rng.standard_normal((64, n)) * 10.0 ** rng.uniform(-1, 1, size=n)
        out.append(torch.tensor(g.T @ g, dtype=torch.float64))
    return out


def time_per_call(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def objective(q: torch.Tensor, w: torch.Tensor) -> float:
    w = w.to(torch.float64)
    return 0.5 * float(w @ q @ w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--gramians", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--cvxpy-repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    try:
        from torchjd.aggregation import MGDAWeighting

        tjd: Callable[[torch.Tensor], torch.Tensor] | None = MGDAWeighting()
    except ImportError:
        tjd = None

    print(
        f"machine: {platform.machine()} {platform.processor() or ''} "
        f"· python {platform.python_version()} · torch {torch.__version__} · 1 thread"
    )
    print(
        f"{args.gramians} Gramians per N, median of {args.repeats} calls "
        f"(cvxpy: {args.cvxpy_repeats}); CPU float64 tensors\n"
    )
    header = (
        "| problem | N | moo-opt (µs) | cvxpy (µs) | speed-up | max abs(Δw) vs cvxpy "
        "| max (f − f_cvxpy)/scale |"
    )
    rows = [header, "|" + "---|" * 7]
    tjd_rows = [
        "| N | moo-opt simplex (µs) | TorchJD MGDAWeighting (µs) | TorchJD / moo-opt time "
        "| median (f_TorchJD − f*)/scale | max (f_TorchJD − f*)/scale |",
        "|" + "---|" * 6,
    ]
    for n in args.sizes:
        qs = gramians(n, args.gramians, args.seed)
        for problem, ours, ref in (
            ("equality", solve_equality_qp, solve_equality_qp_cvxpy),
            ("simplex", solve_simplex_qp, solve_simplex_qp_cvxpy),
        ):
            t_ours, t_ref, dw, df = [], [], 0.0, -np.inf
            for q in qs:
                t_ours.append(time_per_call(lambda q=q, f=ours: f(q), args.repeats))
                t_ref.append(time_per_call(lambda q=q, f=ref: f(q), args.cvxpy_repeats))
                a, b = ours(q), ref(q)
                dw = max(dw, float((a.weights - b.weights).abs().max()))
                scale = float(q.diagonal().max())
                df = max(df, (a.objective - b.objective) / scale)
            mo, mr = statistics.median(t_ours), statistics.median(t_ref)
            rows.append(
                f"| {problem} | {n} | {mo * 1e6:.1f} | {mr * 1e6:.0f} | {mr / mo:.0f}× "
                f"| {dw:.1e} | {df:+.1e} |"
            )
            if problem == "simplex" and tjd is not None:
                t_tjd, gaps = [], []
                for q in qs:
                    t_tjd.append(time_per_call(lambda q=q: tjd(q), args.repeats))
                    f_star = ours(q).objective
                    gaps.append((objective(q, tjd(q)) - f_star) / float(q.diagonal().max()))
                mt = statistics.median(t_tjd)
                tjd_rows.append(
                    f"| {n} | {mo * 1e6:.1f} | {mt * 1e6:.1f} | {mt / mo:.1f}× "
                    f"| {statistics.median(gaps):.1e} | {max(gaps):.1e} |"
                )
    print("\n".join(rows))
    if tjd is not None:
        print(
            "\nSimplex problem against TorchJD's Frank–Wolfe MGDAWeighting "
            "(ε = 1e-3, max 100 iterations):\n"
        )
        print("\n".join(tjd_rows))


if __name__ == "__main__":
    main()
