"""Solver speed against an earlier commit, measured in the same run: did a refactor slow them?

    python benchmarks/solver_regression.py --base 5da1c94 [--rounds 3] [--calls 200]

``moo_opt`` of ``--base`` is exported (``git archive``) to a temporary folder; the two versions are
timed in alternating subprocesses (base, this checkout, base, ...: ``--rounds`` each, so that a
change in the machine's load hits both alike) on the same seeded Gramians, every public solver at
N = 2, 4, 8, 16. Each subprocess reports the median time per call; the table gives the median
over rounds for both and their ratio (this checkout / base: above 1 is slower), with the spread of
the per-round ratios, which is the noise to judge it against.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the timing child: prints {"solver N": seconds per call}
CHILD = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from moo_opt import solvers
calls = int(sys.argv[1])
rng = np.random.default_rng(0)
out = {}
for n in (2, 4, 8, 16):
    g = rng.standard_normal((64, n))
    q = torch.from_numpy(g.T @ g)
    lower = torch.full((n,), 1.0 / n, dtype=torch.float64)
    cases = {
        "equality": lambda: solvers.solve_equality_qp(q),
        "simplex": lambda: solvers.solve_simplex_qp(q),
        "box": lambda: solvers.solve_box_qp(q, lower),
        "nash": lambda: solvers.solve_nash(q),
        "cagrad": lambda: solvers.solve_cagrad(q, 0.4),
    }
    for name, call in cases.items():
        call()
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            call().weights
            times.append(time.perf_counter() - t)
        out[f"{name} {n}"] = sorted(times)[len(times) // 2]
print(json.dumps(out))
"""


def export(rev: str, into: Path) -> Path:
    """``moo_opt`` as it was at ``rev``, in ``into``."""
    data = subprocess.run(
        ["git", "archive", rev, "moo_opt"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def timings(tree: Path, calls: int) -> dict[str, float]:
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(calls)], cwd=tree, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"timing {tree} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the earlier commit to compare against")
    parser.add_argument("--rounds", type=int, default=3, help="subprocesses per version")
    parser.add_argument("--calls", type=int, default=200, help="calls per solver and N")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = export(args.base, Path(tmp))
        runs: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
        for _ in range(args.rounds):
            runs["base"].append(timings(base, args.calls))
            runs["head"].append(timings(ROOT, args.calls))
    head_rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(f"{args.rounds} rounds per version, median of {args.calls} calls each; 1 torch thread")
    print(
        f"\n| solver N | base {args.base} (µs) | HEAD {head_rev} (µs) | HEAD / base | per round |"
    )
    print("|---|---|---|---|---|")
    ratios = []
    for key in runs["base"][0]:
        b = statistics.median(r[key] for r in runs["base"])
        h = statistics.median(r[key] for r in runs["head"])
        rounds = [hr[key] / br[key] for br, hr in zip(runs["base"], runs["head"])]
        ratios.append(h / b)
        spread = f"{min(rounds):.2f}–{max(rounds):.2f}"
        print(f"| {key} | {1e6 * b:.1f} | {1e6 * h:.1f} | {h / b:.2f} | {spread} |")
    print(f"\ngeometric mean HEAD / base: {statistics.geometric_mean(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
