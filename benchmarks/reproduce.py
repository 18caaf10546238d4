"""The paper's comparison at CPU scale: every variant, the same seeds and steps, entropy-coded.

    python benchmarks/reproduce.py [--out repro-out] [--seeds 0 1] [--steps 1500] [--jobs 2]

One small architecture (mbt2018-mean, N=32, M=48: the mean-scale hyperprior of the paper at a
CPU's size) trained from scratch on the embedded ``synthetic`` pictures at four λ of
CompressAI's set, for every seed:

* ``standard``: the standard loss (``--balancer fixed``); the anchor of every BD-rate;
* ``c2f``: Solution 1 (``coarse-to-fine``, the exact same-batch mode);
* ``c2f-gamma0`` and ``c2f-norenorm``: its ablations (γ = 0; no renormalisation);
* ``c2f-every4``: the cheaper mode (the logits learn on one step in four);
* ``standard-ft``, ``qp-ft``, ``qp-ft-every2`` and ``qp-ft-adam``: the ``standard`` checkpoint
  fine-tuned for the same steps with the standard loss, with Solution 2, with Solution 2 solving
  on one step in two, and with Solution 2 in Adam's metric (the fine-tunes' anchor is
  ``standard-ft``).

Every checkpoint is entropy-coded on the six ``samples`` photographs (``plugins.lic.evaluate``);
each seed gets the report tool's BD-rates and plots; ``summary.md`` has the table over seeds
(mean and the range). Runs that finished (a ``done`` file) are not run again, so an interrupted
reproduction continues where it stopped. The runs go through a pool of ``--jobs`` processes with
one torch thread each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins.lic.jobs import run_minutes, run_stages  # noqa: E402

LAMBDAS = ("0.0018", "0.0067", "0.025", "0.0932")
MODEL = ["-m", "mbt2018-mean", "--N", "32", "--M", "48"]
#: scratch variant → balancer flags
SCRATCH: dict[str, list[str]] = {
    "standard": ["--balancer", "fixed"],
    "c2f": ["--balancer", "coarse-to-fine"],
    "c2f-gamma0": ["--balancer", "coarse-to-fine", "--balancer-opt", "gamma=0"],
    "c2f-norenorm": ["--balancer", "coarse-to-fine", "--balancer-opt", "renormalize=false"],
    "c2f-every4": ["--balancer", "coarse-to-fine", "--balancer-opt", "update_every=4"],
}
FINETUNE: dict[str, list[str]] = {
    "standard-ft": ["--balancer", "fixed"],
    "qp-ft": ["--balancer", "qp"],
    "qp-ft-every2": ["--balancer", "qp", "--balancer-opt", "solve_every=2"],
    "qp-ft-adam": ["--balancer", "qp", "--balancer-opt", "metric=adam"],
}
#: variant → its anchor
ANCHORS = {**{v: "standard" for v in SCRATCH if v != "standard"}, **{v: "standard-ft" for v in FINETUNE if v != "standard-ft"}}


def command_line(script: str, argv: list[str] | None) -> str:
    """How this study was invoked, for its summary."""
    return f"python benchmarks/{script} {' '.join(argv if argv is not None else sys.argv[1:])}".strip()


def write_summary(out: Path, title: str, settings: str, table: str) -> None:
    """``summary.md`` (and ``settings.json``) of a study, echoed to stdout."""
    (out / "summary.md").write_text(f"# {title}\n\n{settings}\n\n{table}\n")
    json.dump({"settings": settings}, (out / "settings.json").open("w"))
    print(f"\n{settings}\n\n{table}\n\nsummary: {out / 'summary.md'}")


def summarise(out: Path, seeds: list[int], args: argparse.Namespace) -> str:
    from plugins.lic import report

    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in ANCHORS}
    mono: dict[str, list[bool]] = {v: [] for v in [*SCRATCH, *FINETUNE]}
    for seed in seeds:
        results = {v: report.load_results(out / f"seed{seed}" / f"{v}.json") for v in mono}
        for v, r in results.items():
            mono[v].append(report.monotonic(r))
        for v, anchor in ANCHORS.items():
            rows[v].append(report.bd_metrics(results[anchor], results[v]))
    lines = [
        "| variant | anchor | monotonic curves | BD-rate per seed (pchip) | mean BD-rate | range | BD-PSNR per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for v, ms in rows.items():
        rates = [m["bd_rate_pchip"] for m in ms]
        finite = [r for r in rates if math.isfinite(r)]
        mean = f"{statistics.fmean(finite):+.2f} %" if len(finite) == len(rates) else "n/a"
        spread = f"{min(finite):+.2f} … {max(finite):+.2f} %" if len(finite) == len(rates) and len(rates) > 1 else "n/a"
        per_seed = ", ".join(report.fmt(r, 2, " %") for r in rates)
        psnr = ", ".join(report.fmt(m["bd_quality_pchip"], 3, " dB") for m in ms)
        reasons = "; ".join(dict.fromkeys(m["reason"] for m in ms if m["reason"]))
        lines.append(f"| {v} | {ANCHORS[v]} | {sum(mono[v])}/{len(seeds)} | {per_seed} | {mean} | {spread} | {psnr}{' (' + reasons + ')' if reasons else ''} |")
    lines += ["", f"Anchor curves monotonic: standard {sum(mono['standard'])}/{len(seeds)}, standard-ft {sum(mono['standard-ft'])}/{len(seeds)}."]
    lines += ["", rd_cost_table(out, seeds)]
    return "\n".join(lines)


def rd_cost(res: dict[str, Any]) -> dict[float, float]:
    """λ → the standard R-D cost ``bpp + λ·255²·MSE`` of each point (MSE from the mean PSNR)."""
    r = res["results"]
    return {float(lam): b + float(lam) * 255**2 * 10 ** (-p / 10) for lam, b, p in zip(r["lambda"], r["bpp"], r["psnr-rgb"])}


def rd_cost_table(out: Path, seeds: list[int]) -> str:
    """Each variant's R-D cost at each λ against its anchor's: defined even where the curves do
    not overlap (where BD-rate is not), and the quantity the standard loss minimises."""
    from plugins.lic import report

    lines = [
        "R-D cost ``bpp + λ·255²·MSE`` on the evaluation photographs, relative to the anchor at the same λ and seed "
        "(negative: a better trade-off at that λ):",
        "",
        "| variant | anchor | " + " | ".join(f"λ={lam:g}" for lam in sorted(rd_cost(report.load_results(out / f"seed{seeds[0]}" / "standard.json")))) + " | mean |",
    ]
    lines.append("|---|---|" + "---|" * (lines[-1].count("|") - 3))
    for v, anchor in ANCHORS.items():
        per_lam: dict[float, list[float]] = {}
        for seed in seeds:
            test = rd_cost(report.load_results(out / f"seed{seed}" / f"{v}.json"))
            base = rd_cost(report.load_results(out / f"seed{seed}" / f"{anchor}.json"))
            for lam, j in test.items():
                per_lam.setdefault(lam, []).append(100 * (j / base[lam] - 1))
        cells = [f"{statistics.fmean(x):+.1f} % ({min(x):+.1f} … {max(x):+.1f})" for _, x in sorted(per_lam.items())]
        overall = statistics.fmean(d for x in per_lam.values() for d in x)
        lines.append(f"| {v} | {anchor} | " + " | ".join(cells) + f" | {overall:+.1f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("repro-out"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--lambdas", nargs="+", default=list(LAMBDAS))
    parser.add_argument("--steps", type=int, default=1500, help="training steps from scratch")
    parser.add_argument("--finetune-steps", type=int, default=400)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", default="1e-3", help="Adam learning rate from scratch (fine-tuning: a tenth)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one torch thread each")
    parser.add_argument("--cuda", action="store_true", help="train and evaluate on the GPU (then raise --steps and --jobs 1)")
    parser.add_argument("--eval-dataset", default="samples", help="what the checkpoints are entropy-coded on")
    args = parser.parse_args(argv)
    if args.cuda:
        import torch

        if not torch.cuda.is_available():
            parser.error("--cuda: no CUDA device is available; drop --cuda")
    start = time.perf_counter()
    out: Path = args.out
    common = [*MODEL, "-d", "synthetic", "--patch-size", str(args.patch), str(args.patch), "--batch-size", str(args.batch_size),
              "--test-batch-size", "16", "--log-every", "25", "--no-progress", *(["--cuda"] if args.cuda else [])]  # fmt: skip
    ft_lr = str(float(args.lr) / 10)

    def run_dir(seed: int, variant: str, lam: str) -> Path:
        return out / f"seed{seed}" / "runs" / f"{variant}-{lam}"

    scratch, finetune, evals = [], [], []
    for seed in args.seeds:
        for lam in args.lambdas:
            for v, flags in SCRATCH.items():
                d = run_dir(seed, v, lam)
                scratch.append(("train", [*common, "--seed", str(seed), "-lr", args.lr, "--lambda", lam, *flags, "--steps", str(args.steps), "--out", str(d)], d / "run.log"))
            base = run_dir(seed, "standard", lam) / "checkpoint.pth.tar"
            for v, flags in FINETUNE.items():
                d = run_dir(seed, v, lam)
                ft = ["--finetune", "--checkpoint", str(base), "--steps", str(args.finetune_steps), "-lr", ft_lr]
                finetune.append(("train", [*common, "--seed", str(seed), "--lambda", lam, *flags, *ft, "--out", str(d)], d / "run.log"))
        for v in [*SCRATCH, *FINETUNE]:
            ckpts = [str(run_dir(seed, v, lam) / "checkpoint.pth.tar") for lam in args.lambdas]
            evals.append(("evaluate", [*ckpts, "-d", args.eval_dataset, "--name", v, *(["--cuda"] if args.cuda else []), "--out", str(out / f"seed{seed}" / f"{v}.json")], out / f"seed{seed}" / f"{v}.eval.log"))
    run_stages(args.jobs, {"runs from scratch": scratch, "fine-tunes": finetune, "evaluations": evals}, start)
    from plugins.lic import report

    for seed in args.seeds:
        d = out / f"seed{seed}"
        mid = args.lambdas[len(args.lambdas) // 2]
        jsons = [str(d / f"{v}.json") for v in SCRATCH]
        logs = [str(run_dir(seed, v, mid)) for v in ("standard", "c2f")]
        ft_jsons = [str(d / f"{v}.json") for v in FINETUNE]
        for argv_r in ([*jsons, "--anchor", "standard", "--out", str(d / "scratch"), "--logs", *logs],
                       [*ft_jsons, "--anchor", "standard-ft", "--out", str(d / "finetune")]):  # fmt: skip
            with contextlib.redirect_stdout(sys.stderr):
                if report.main(argv_r) != 0:
                    return 1
    table = summarise(out, args.seeds, args)
    command = command_line("reproduce.py", argv)
    settings = (
        f"`{command}`: mbt2018-mean (N=32, M=48), {args.steps} steps from scratch at Adam lr {args.lr} and "
        f"{args.finetune_steps} fine-tuning steps at lr {ft_lr}, batch {args.batch_size} of {args.patch}² synthetic patches, "
        f"λ ∈ {{{', '.join(args.lambdas)}}}, seeds {args.seeds}; entropy-coded on `{args.eval_dataset}`. "
        f"{len(scratch) + len(finetune)} training runs and {len(evals)} evaluations took {run_minutes(out):.0f} min of run time "
        f"in all ({args.jobs} at a time); this invocation's wall time {(time.perf_counter() - start) / 60:.1f} min."
    )
    write_summary(out, "Reproduction at CPU scale", settings, table)
    for seed in args.seeds:  # the plots, for benchmarks/figures (small PNGs)
        for part in ("scratch", "finetune"):
            for name in ("rd.png", "figure1.png"):
                src = out / f"seed{seed}" / part / name
                if src.exists():
                    shutil.copy(src, out / f"seed{seed}-{part}-{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
