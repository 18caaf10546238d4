"""Time per solve of the balancer zoo's exact solvers, against MGDA's simplex QP and TorchJD.

Same Gramians for every solver, in one run: for each N, ``--gramians`` random Gram matrices
``GᵀG`` (G of 64×N, columns scaled by 10^U(−1, 1)) as CPU float64 tensors. Time per solve: the
median over Gramians of the median of ``--repeats`` timed calls. Printed: microseconds, the ratio
to :func:`~moo_opt.solvers.solve_simplex_qp` (MGDA, the solver every Gramian balancer already
paid for before the zoo) on the same Gramians, the worst status and the largest KKT residual; and,
where TorchJD (a dev dependency) has the method without extra packages, its time and the largest
difference of its weights to ours.

    python benchmarks/zoo_solvers.py [--sizes 2 4 8 16] [--gramians 20] [--repeats 30]
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable

import numpy as np
import torch
from solvers import gramians, time_per_call  # benchmarks/solvers.py: the same Gramians and timing

from moo_opt.solvers import (
    SolveResult,
    balance_transform,
    cagrad_direction_weights,
    project_to_dual_cone,
    solve_cagrad,
    solve_nash,
    solve_simplex_qp,
)

C = 0.5


def ours() -> dict[str, Callable[[torch.Tensor], SolveResult]]:
    return {
        "simplex (MGDA, baseline)": solve_simplex_qp,
        "nash (Nash-MTL)": solve_nash,
        "dual cone, N rows (UPGrad)": lambda q: project_to_dual_cone(
            q, torch.eye(q.shape[0], dtype=torch.float64) / q.shape[0]
        ),
        "cagrad (CAGrad, c=0.5)": lambda q: solve_cagrad(q, C),
        "balance transform (Aligned-MTL)": balance_transform,
    }


def direction_weights(name: str, q: torch.Tensor, result: SolveResult) -> np.ndarray | None:
    """Our weights on the raw gradients, in TorchJD's convention, for the methods it has."""
    if name.startswith("cagrad"):
        return cagrad_direction_weights(q.numpy(), result.weights.numpy(), C)
    if name.startswith("balance"):
        n = q.shape[0]
        return result.weights.numpy() @ np.full(n, 1.0 / n)
    return None


def torchjd_weightings() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    try:
        from torchjd.aggregation import AlignedMTLWeighting, CAGradWeighting
    except ImportError:  # pragma: no cover - dev dependency
        return {}
    return {
        "cagrad (CAGrad, c=0.5)": CAGradWeighting(c=C),
        "balance transform (Aligned-MTL)": AlignedMTLWeighting(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--gramians", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"{platform.processor() or platform.machine()} · python {platform.python_version()} "
        f"· torch {torch.__version__} · 1 thread"
    )
    solvers, references = ours(), torchjd_weightings()
    print(
        "| N | solver | µs per solve | ratio to simplex | worst status | max KKT residual "
        "| TorchJD µs | max weight diff to TorchJD |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        qs = gramians(n, args.gramians, args.seed)
        base = None
        for name, solve in solvers.items():
            t = statistics.median(
                time_per_call(lambda q=q, f=solve: f(q), args.repeats) for q in qs
            )
            results = [solve(q) for q in qs]
            base = t if base is None else base
            worst = max((r.status.value for r in results), key=lambda s: s != "optimal")
            kkt = max(r.kkt_residual for r in results)
            jd_time, jd_diff = "—", "—"
            if name in references:
                ref = references[name]
                t_jd = statistics.median(
                    time_per_call(lambda q=q, f=ref: f(q), args.repeats) for q in qs
                )
                jd_time = f"{1e6 * t_jd:.0f}"
                diffs = []
                for q, r in zip(qs, results):
                    w = direction_weights(name, q, r)
                    assert w is not None
                    diffs.append(float(np.abs(w - ref(q).numpy()).max() / np.abs(w).max()))
                jd_diff = f"{max(diffs):.1e}"
            print(
                f"| {n} | {name} | {1e6 * t:.0f} | {t / base:.2f}× | {worst} | {kkt:.1e} "
                f"| {jd_time} | {jd_diff} |"
            )


if __name__ == "__main__":
    main()
