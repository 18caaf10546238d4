"""Solution 1 from scratch on the photographs against the standard loss: where each λ lands.

    python benchmarks/scratch_study.py --out scratch-out [--steps 4000] \\
        [--variants standard c2f ...] [--lambdas c2f=0.0018,0.0067,0.025] [--jobs 2]

Every variant (:data:`VARIANTS`) trains mbt2018-mean (N=32, M=48) from scratch on the photographs of
``python -m plugins.lic.photos`` with the shipped models' recipe scaled to ``--steps`` (Adam lr
1e-3, ×0.1 at 75 % and 94 % of the steps, batch 8 of 128² crops, clipping 1.0, ``--seed``, 0 by
default: give each seed its own ``--out``), each at its own λ grid: the standard loss's reaches down
and Solution 1's up, because Solution 1 lands at far lower rates for the same λ. Every checkpoint is
entropy-coded on ``samples``. ``summary.md`` gives, per variant and λ, bpp / PSNR and the R-D cost
at that λ; where the point lands on the standard curve (the standard λ with the same rate,
interpolated in log-log, and the PSNR gap at that rate); the λ range over which the variant's curve
overlaps the standard one in rate; the BD-rate where it does; and the trajectory of λ_eff/λ =
w_D/w_R (the standard loss at λ·w_D/w_R takes the same step direction) over the run's quarters.
Finished runs (a ``.done`` file) are not run again.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reproduce import command_line, write_summary  # noqa: E402

from plugins.lic.jobs import run_stages  # noqa: E402  (the same pool and .done files)

C2F = ["--balancer", "coarse-to-fine"]
#: the optimiser of the authors' ELIC script: cautious Adam at lr 2e-4 and a weight EMA of 0.999
#: (torch_ema, with its warm-up)
AUTHORS = ["--optimizer", "cautious-adam", "--ema", "0.999", "-lr", "2e-4"]
#: variant → (training flags, default λ grid); "{quarter}" is replaced by a quarter of --steps
VARIANTS: dict[str, tuple[list[str], list[str]]] = {
    # down to λ 0.0001: Solution 1 lands at far lower rates than the standard loss at the same λ
    "standard": (["--balancer", "fixed"], ["0.0001", "0.0002", "0.0005", "0.0018", "0.0067"]),
    "c2f": (C2F, ["0.0018", "0.0067", "0.025", "0.0932"]),
    # the logits' learning rate a tenth of the default: do they move early because β outruns the
    # noise of δ?
    "c2f-beta0.0025": ([*C2F, "--balancer-opt", "beta=0.0025"], ["0.0018", "0.0067"]),
    # the standard loss for the first quarter of the run, then Solution 1 (balancing along the
    # standard trajectory)
    "c2f-warmup": ([*C2F, "--balancer-opt", "warmup={quarter}"], ["0.0018", "0.0067"]),
    # ten times the logit decay: γ pulls the logits back towards the standard weights (the authors:
    # "γ needs tuning per model")
    "c2f-gamma0.01": ([*C2F, "--balancer-opt", "gamma=0.01"], ["0.0018", "0.0067"]),
    # log L instead of log(L + 1) (FAMO's default offsets c = 0): do the offsets make the rate's
    # logit run?
    "c2f-offsets0": ([*C2F, "--balancer-opt", "offsets=0"], ["0.0018", "0.0067"]),
    # the paper's ablations (its Table 4): no logit decay (γ = 0: "does not converge"), and the
    # weights not renormalised
    "c2f-gamma0": ([*C2F, "--balancer-opt", "gamma=0"], ["0.0067"]),
    "c2f-norenorm": ([*C2F, "--balancer-opt", "renormalize=false"], ["0.0067"]),
    # the authors' ELIC script: cautious Adam, weight EMA 0.999, lr 2e-4, γ 0.003 (clipping 1.0 as
    # everywhere here)
    "c2f-authors": ([*C2F, "--balancer-opt", "gamma=0.003", *AUTHORS], ["0.0018", "0.0067"]),
    # their optimiser with the standard loss: the anchor that tells the optimiser's effect from the
    # balancing's
    "standard-authors": (
        ["--balancer", "fixed", *AUTHORS],
        ["0.0001", "0.0002", "0.0005", "0.0018"],
    ),
}

#: a variant's second anchor (same optimiser), beside the standard loss
ANCHORS = {"c2f-authors": "standard-authors"}


def trajectory(log: list[dict[str, Any]], parts: int = 4) -> list[float]:
    """The mean of w_D/w_R over each of ``parts`` consecutive stretches of a run's logged steps."""
    rows = [
        r["weight/distortion"] / r["weight/rate"]
        for r in log
        if "weight/distortion" in r and r.get("weight/rate")
    ]
    if not rows:
        return []
    size = max(len(rows) // parts, 1)
    return [
        statistics.fmean(rows[i : i + size])
        for i in range(0, size * parts, size)
        if rows[i : i + size]
    ]


def speeds(log: list[dict[str, Any]], until: float = 0.75) -> str:
    """The logged per-step improvements δ_D and δ_R of log(L + c) (mean, and δ_D's standard
    deviation) over the first ``until`` of a run, the stretch before the learning-rate drop: "n/a"
    without them."""
    rows = [r for r in log if "speed/distortion" in r]
    rows = rows[: max(int(len(rows) * until), 1)]
    if len(rows) < 2:
        return "n/a"
    d, r = [x["speed/distortion"] for x in rows], [x["speed/rate"] for x in rows]
    return f"{statistics.fmean(d):.4f} (sd {statistics.pstdev(d):.3f}), {statistics.fmean(r):.5f}"


def landing(point_bpp: float, point_psnr: float, standard: dict[str, Any]) -> tuple[float, float]:
    """The standard λ whose point has this rate and the PSNR gap to the standard curve at this rate
    (both interpolated linearly in log rate between neighbouring standard points); NaN outside."""
    pts = sorted(zip(standard["bpp"], standard["psnr-rgb"], standard["lambda"]))
    for (b0, p0, l0), (b1, p1, l1) in zip(pts, pts[1:]):
        if b0 <= point_bpp <= b1 and b1 > b0:
            t = (math.log(point_bpp) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0))), point_psnr - (
                p0 + t * (p1 - p0)
            )
    return math.nan, math.nan


def summarise(out: Path, grids: dict[str, list[str]], dataset: str = "samples") -> str:
    from plugins.lic import report
    from plugins.lic.logs import read

    results = {v: report.load_results(out / f"{v}.json") for v in grids}
    std = results["standard"]["results"]
    lo = min(std["bpp"])
    lines = [
        f"Per λ: bpp / PSNR on `{dataset}`, the R-D cost J = bpp + λ·255²·MSE at that λ, "
        "where the point lands on the standard curve "
        "(the standard λ with the same rate; the PSNR gap at that rate; "
        "`below`/`above`: outside the standard curve's rates), "
        "λ_eff/λ = w_D/w_R per quarter of the run, "
        "and the balancers' per-step improvements δ of log(L + c) over the first "
        "three quarters (mean, δ_D's standard deviation).",
        "",
        "| variant | λ | bpp / PSNR | J | lands at standard λ | ΔPSNR at equal rate "
        "| λ_eff/λ by quarter | δ_D (sd), δ_R |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v, r in results.items():
        res = r["results"]
        for lam, b, p, mse in sorted(zip(res["lambda"], res["bpp"], res["psnr-rgb"], res["mse"])):
            at, gap = landing(b, p, std) if v != "standard" else (lam, 0.0)
            where = f"{at:.2g}" if math.isfinite(at) else ("below" if b < lo else "above")
            log = read(out / "runs" / f"{v}-{lam:g}")
            traj = ", ".join(f"{x:.3g}" for x in trajectory(log)) or "n/a"
            cells = (
                f"{b + lam * 255**2 * mse:.4f} | {where} | {report.fmt(gap, 2, ' dB')} | {traj} "
                f"| {speeds(log)}"
            )
            lines.append(f"| {v} | {lam:g} | {b:.3f} / {p:.2f} | {cells} |")
    lines += [
        "",
        "| variant | anchor | λ overlapping the anchor's curve in rate "
        "| BD-rate vs the anchor (pchip) |",
        "|---|---|---|---|",
    ]
    pairs = [(v, "standard") for v in results if v != "standard"]
    pairs += [(v, a) for v, a in ANCHORS.items() if v in results and a in results]
    for v, a in pairs:
        r, rates = results[v], results[a]["results"]["bpp"]
        inside = [
            f"{lam:g}"
            for lam, b in zip(r["results"]["lambda"], r["results"]["bpp"])
            if min(rates) <= b <= max(rates)
        ]
        bd = report.bd_metrics(results[a], r)
        text = report.fmt(bd["bd_rate_pchip"], 2, " %") + (
            f" ({bd['reason']})" if bd.get("reason") else ""
        )
        lines.append(f"| {v} | {a} | {', '.join(inside) or 'none'} | {text} |")
    return "\n".join(lines)


def parse_grids(variants: list[str], overrides: list[str]) -> dict[str, list[str]]:
    grids = {v: list(VARIANTS[v][1]) for v in dict.fromkeys(["standard", *variants])}
    for item in overrides:
        name, _, lams = item.partition("=")
        if name not in grids or not lams:
            raise SystemExit(
                f"--lambdas {item!r}: expected VARIANT=λ,λ,... "
                f"with VARIANT one of {', '.join(grids)}"
            )
        grids[name] = [x for x in lams.split(",") if x]
    return grids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("scratch-out"))
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["standard", "c2f"],
        choices=list(VARIANTS),
        metavar="VARIANT",
    )
    parser.add_argument(
        "--lambdas",
        nargs="*",
        default=[],
        metavar="VARIANT=λ,λ",
        help="a variant's λ grid instead of its default",
    )
    parser.add_argument("--photos", default="data/photos")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--seed", type=int, default=0, help="every run's seed (a second seed: another --out)"
    )
    parser.add_argument("--eval-dataset", default="samples")
    args = parser.parse_args(argv)
    grids = parse_grids(args.variants, args.lambdas)
    out: Path = args.out
    every = str(max(args.steps // 8, 1))
    milestones = [
        str(m) for m in sorted({max(args.steps * 3 // 4, 1), max(args.steps * 94 // 100, 1)})
    ]
    common = ["-m", "mbt2018-mean", "--N", "32", "--M", "48", "-d", args.photos,
              "--patch-size", str(args.patch), str(args.patch),
              "--batch-size", str(args.batch_size), "--test-batch-size", "16",
              "--steps", str(args.steps), "--lr-milestones", *milestones,
              "--aux-learning-rate", "1e-3", "--clip_max_norm", "1.0", "--seed", str(args.seed),
              "--log-every", "25", "--test-every", every,
              "--save-every", every, "--no-progress"]  # fmt: skip
    trains, evals = [], []
    for v, lams in grids.items():
        flags = [f.replace("{quarter}", str(args.steps // 4)) for f in VARIANTS[v][0]]
        lr = [] if "-lr" in flags else ["-lr", "1e-3"]
        for lam in lams:
            d = out / "runs" / f"{v}-{float(lam):g}"
            trains.append(
                ("train", [*common, "--lambda", lam, *lr, *flags, "--out", str(d)], d / "run.log")
            )
        ckpts = [str(out / "runs" / f"{v}-{float(lam):g}" / "checkpoint.pth.tar") for lam in lams]
        evals.append(
            (
                "evaluate",
                [*ckpts, "-d", args.eval_dataset, "--name", v, "--out", str(out / f"{v}.json")],
                out / f"{v}.eval.log",
            )
        )
    start = time.perf_counter()
    run_stages(args.jobs, {"runs from scratch": trains, "evaluations": evals}, start)
    table = summarise(out, grids, args.eval_dataset)
    command = command_line("scratch_study.py", argv)
    settings = (
        f"`{command}`: mbt2018-mean N=32 M=48 from scratch, "
        f"{args.steps} steps (Adam lr 1e-3 unless the variant says, ×0.1 at steps "
        f"{' and '.join(milestones)}), "
        f"batch {args.batch_size} of {args.patch}² crops of {args.photos}, clipping 1.0, "
        f"seed {args.seed}; "
        f"entropy-coded on `{args.eval_dataset}`; "
        f"wall time {(time.perf_counter() - start) / 60:.1f} min with {args.jobs} processes."
    )
    write_summary(out, "Solution 1 from scratch against the standard loss", settings, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
