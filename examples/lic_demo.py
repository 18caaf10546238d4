"""The end-to-end LIC demo (``make demo``): train, fine-tune, entropy-code, report.

On the embedded ``synthetic`` pictures, from scratch, at three λ: the standard loss (``fixed``)
and Solution 1 (``coarse-to-fine``); then Solution 2 (``qp``) fine-tunes each standard model, with
the standard loss fine-tuned for the same steps beside it as the fair comparison. Every checkpoint
is evaluated with real entropy coding on the held-out ``samples`` photographs, and
``demo-out/report.md`` gets the R-D curves, the BD-rates against the standard loss and the
Figure 1 view of training. The size (model, steps, patches) is set for about ten minutes on a
2-core CPU, not for a favourable result: the report says what came out.

    python examples/lic_demo.py [--out demo-out] [--steps 500] [--finetune-steps 150]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from plugins.lic import evaluate, report, train

LAMBDAS = ("0.0035", "0.013", "0.0483")
MODEL = ["-m", "bmshj2018-factorized", "--N", "32", "--M", "48"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--steps", type=int, default=500, help="training steps from scratch, per run")
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    runs = args.out / "runs"
    if runs.exists():
        shutil.rmtree(runs)  # the demo always starts fresh
    common = [*MODEL, "-d", "synthetic", "--patch-size", str(args.patch), str(args.patch), "--batch-size", str(args.batch_size),
              "--test-batch-size", "16", "-lr", "1e-3", "--seed", str(args.seed), "--log-every", "10"]  # fmt: skip
    curves: dict[str, list[Path]] = {"standard": [], "coarse-to-fine": [], "standard+finetune": [], "qp-finetune": []}
    jobs = []
    for lam in LAMBDAS:
        jobs.append(("standard", lam, ["--balancer", "fixed", "--steps", str(args.steps)], None))
        jobs.append(("coarse-to-fine", lam, ["--balancer", "coarse-to-fine", "--steps", str(args.steps)], None))
    for lam in LAMBDAS:
        base = runs / f"standard-{lam}" / "checkpoint.pth.tar"
        ft = ["--finetune", "--checkpoint", str(base), "--steps", str(args.finetune_steps), "-lr", "1e-4"]
        jobs.append(("standard+finetune", lam, ["--balancer", "fixed", *ft], base))
        jobs.append(("qp-finetune", lam, ["--balancer", "qp", *ft], base))
    for i, (curve, lam, extra, _) in enumerate(jobs, 1):
        out = runs / f"{curve}-{lam}"
        print(f"[{i}/{len(jobs)}] {curve} λ={lam} ({time.perf_counter() - start:.0f} s elapsed)", flush=True)
        code = train.main([*common, "--lambda", lam, *extra, "--out", str(out)])
        if code != 0:
            return code
        curves[curve].append(out / "checkpoint.pth.tar")
    results = []
    for curve, paths in curves.items():
        print(f"evaluating {curve} with entropy coding on the samples photographs ({time.perf_counter() - start:.0f} s elapsed)", flush=True)
        path = args.out / f"{curve}.json"
        code = evaluate.main([*map(str, paths), "-d", "samples", "--out", str(path), "--name", curve])
        if code != 0:
            return code
        results.append(str(path))
    logs = [str(runs / f"{c}-0.013") for c in curves]
    code = report.main([*results, "--anchor", "standard", "--out", str(args.out), "--logs", *logs])
    if code != 0:
        return code
    # the fair comparison for Solution 2: fine-tuned for the same steps with the standard loss
    code = report.main([results[2], results[3], "--anchor", "standard+finetune", "--out", str(args.out / "finetune")])
    elapsed = time.perf_counter() - start
    with (args.out / "report.md").open("a") as f:
        f.write(
            f"\n## Demo settings\n\n`python examples/lic_demo.py {' '.join(argv or sys.argv[1:])}`: {len(jobs)} training runs of "
            f"bmshj2018-factorized (N=32, M=48), {args.steps} steps from scratch and {args.finetune_steps} fine-tuning steps, "
            f"{args.patch}² patches, batch {args.batch_size}, Adam lr 1e-3 (fine-tuning 1e-4), seed {args.seed}, λ ∈ {{{', '.join(LAMBDAS)}}}. "
            f"BD-rates above are against `standard` (before any fine-tuning); Solution 2 against the standard loss "
            f"fine-tuned for the same steps is in [finetune/report.md](finetune/report.md). Wall time {elapsed / 60:.1f} min.\n"
        )
    print(f"demo finished in {elapsed / 60:.1f} min; report: {args.out / 'report.md'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
