"""FairGrad's solver as α grows: how often it certifies its weights, and in how many steps.

    python benchmarks/fairgrad_alpha.py [--gramians 300] [--alphas 1 2 5 20 100 1000] [--seed 0]

Random Gramians Q = GᵀG, N = 2–8 objectives in 2–40 dimensions, column scales 10^U(−2,2) and a
random shared component (so that some gradients are dominated and MGDA would leave them out): per
α, the count of each status of :func:`~moo_opt.solvers.solve_fairgrad` (default ``max_iter=100``)
and the median and largest Newton step counts. As α grows the objectives outside MGDA's support
get weights that fall geometrically with α (like r^(−α) for an improvement ratio r > 1): the
solver must reach them, and at α = 1000 many lie below float64's range (``INACCURATE``).
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

from moo_opt.solvers import solve_fairgrad


def gramians(count: int, seed: int) -> list[np.ndarray]:
    """``count`` random Gramians as described above."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(2, 9))
        d = int(rng.integers(n, 40))
        g = rng.standard_normal((d, n)) * 10.0 ** rng.uniform(-2, 2, n)
        g = g + rng.uniform(0, 1) * rng.standard_normal((d, 1))
        out.append(g.T @ g)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gramians", type=int, default=300)
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=[1.0, 2.0, 5.0, 20.0, 100.0, 1000.0]
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    qs = gramians(args.gramians, args.seed)
    print(f"{len(qs)} random Gramians, seed {args.seed}")
    print("| α | optimal | infeasible | max_iter | inaccurate | median steps | most steps |")
    print("|---|---|---|---|---|---|---|")
    for alpha in args.alphas:
        counts: collections.Counter[str] = collections.Counter()
        steps = []
        for q in qs:
            result = solve_fairgrad(q, alpha)
            counts[result.status.name] += 1
            steps.append(result.iterations)
        row = [counts[s] for s in ("OPTIMAL", "INFEASIBLE", "MAX_ITER", "INACCURATE")]
        print(f"| {alpha:g} | {' | '.join(map(str, row))} | {np.median(steps):g} | {max(steps)} |")


if __name__ == "__main__":
    main()
