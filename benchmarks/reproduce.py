"""The paper's comparison in its regime: Solution 1 from scratch and Solution 2 fine-tuning against
the standard loss, two seeds, entropy-coded on the photographs.

    make reproduce            # python benchmarks/reproduce.py --out repro-out
    python benchmarks/reproduce.py --out repro-out [--seeds 0 1] [--parts scratch finetune] \\
        [--steps 3000] [--finetune-steps 1000] [--jobs 2] [--skip VARIANT ...] \\
        [--ablation-seeds 0] [--scratch-lambdas VARIANT=λ,λ ...]

Per seed, two studies on the photographs of ``python -m plugins.lic.photos`` (the shipped models'
training data), each in its own folder of ``--out``:

* ``scratch-seed<S>`` (``scratch_study.py``): mbt2018-mean (N=32, M=48) from scratch with the
  shipped models' recipe scaled to ``--steps``: the standard loss at λ 0.0001…0.0067 (the anchor:
  Solution 1 lands at far lower rates than the standard loss at the same λ, so the anchor reaches
  down), Solution 1 with the paper's settings and with β = 0.0025 at λ 0.0018…0.0932, and the
  paper's ablations γ = 0 and no renormalisation at λ 0.0067;
* ``finetune-seed<S>`` (``finetune_study.py``): the six shipped models fine-tuned for
  ``--finetune-steps`` at Adam 5e-5 with the standard loss (the anchor), Solution 2 as the paper
  states it (``trust_radius=none``), Solution 2 with its fine-tuning default (trust radius 0.1), and
  the standard loss at ⅔λ (the control that tells the trust region's effect from a shifted λ).

Every checkpoint is entropy-coded on ``samples``. ``summary.md`` has, per variant: the BD-rate
against its anchor per seed (pchip, cubic as a check; n/a with the reason where a curve is not
monotonic or the curves do not overlap), the R-D cost ``bpp + λ·255²·MSE`` per λ against the
anchor's (mean and range over the seeds), the median time per step relative to the anchor's in the
same runs, the R-D plots and the paper's Figure 1 re-plotted from the logs at ``--figure-lambda``.
Everything is resumable: finished runs are kept (``.done`` files), a run stopped part-way resumes
from its last checkpoint, and ``--parts`` runs one study at a time. To fit a budget, ``--skip``
leaves variants out, ``--ablation-seeds`` runs the ablations on some seeds only and
``--scratch-lambdas`` replaces a scratch variant's λ grid; the summary reports each variant over the
seeds that ran it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from plugins.lic.jobs import git_commit, run_minutes  # noqa: E402

#: part → (its study's variants, λ grids that differ from the study's defaults, {variant: anchor},
#: the variants of Figure 1)
PARTS: dict[str, tuple[list[str], list[str], dict[str, str], list[str]]] = {
    "scratch": (
        ["standard", "c2f", "c2f-beta0.0025", "c2f-gamma0", "c2f-norenorm"],
        ["c2f=0.0018,0.0067,0.025,0.0932", "c2f-beta0.0025=0.0018,0.0067,0.025,0.0932"],
        {
            "c2f": "standard",
            "c2f-beta0.0025": "standard",
            "c2f-gamma0": "standard",
            "c2f-norenorm": "standard",
        },
        ["standard", "c2f", "c2f-beta0.0025"],
    ),
    "finetune": (
        ["standard", "qp", "qp-trust0.1", "standard-lam0.667"],
        [],
        {"qp": "standard", "qp-trust0.1": "standard", "standard-lam0.667": "standard"},
        ["standard", "qp", "qp-trust0.1"],
    ),
}


#: the paper's ablations (its Table 4), run only by --ablation-seeds
ABLATIONS = ("c2f-gamma0", "c2f-norenorm")


def command_line(script: str, argv: list[str] | None) -> str:
    """How this study was invoked, for its summary."""
    return (
        f"python benchmarks/{script} {' '.join(argv if argv is not None else sys.argv[1:])}".strip()
    )


def write_summary(out: Path, title: str, settings: str, table: str) -> None:
    """``summary.md`` (and ``settings.json``) of a study, echoed to stdout."""
    (out / "summary.md").write_text(f"# {title}\n\n{settings}\n\n{table}\n")
    json.dump({"settings": settings}, (out / "settings.json").open("w"))
    print(f"\n{settings}\n\n{table}\n\nsummary: {out / 'summary.md'}")


def points(res: dict[str, Any], variant: str) -> dict[float, tuple[float, float]]:
    """λ of each run → (bpp, MSE), the λ read from the run's folder (``<variant>-<λ>``): the λ it is
    judged at (a fine-tune's model's λ, even where it trained at another, e.g.
    ``standard-lam0.667``)."""
    r = res["results"]
    return {
        float(Path(c).parent.name.removeprefix(f"{variant}-")): (b, m)
        for c, b, m in zip(r["checkpoint"], r["bpp"], r["mse"])
    }


def step_time(run: Path) -> float:
    """The median of a run's logged per-step times (seconds)."""
    from plugins.lic.logs import read

    times = [r["step_time"] for r in read(run) if "step_time" in r]
    return statistics.median(times) if times else math.nan


def spread(values: list[float], digits: int = 2, suffix: str = " %") -> str:
    """ "mean (min … max)" of finite values; n/a when any is missing."""
    if not values or not all(math.isfinite(v) for v in values):
        return "n/a"
    mean = f"{statistics.fmean(values):+.{digits}f}{suffix}"
    return (
        mean
        if len(values) == 1
        else f"{mean} ({min(values):+.{digits}f} … {max(values):+.{digits}f})"
    )


def summarise_part(out: Path, part: str, seeds: list[int], figure_lambda: float) -> str:
    from plugins.lic import report

    folders = {s: out / f"{part}-seed{s}" for s in seeds}
    # every variant a seed ran (--skip and --ablation-seeds leave some out); a variant is reported
    # over the seeds that ran it
    results = {
        s: {
            v: report.load_results(folders[s] / f"{v}.json")
            for v in PARTS[part][0]
            if (folders[s] / f"{v}.json").exists()
        }
        for s in seeds
    }
    variants = [v for v in PARTS[part][0] if any(v in results[s] for s in seeds)]
    anchors = {v: a for v, a in PARTS[part][2].items() if v in variants}
    figure = [v for v in PARTS[part][3] if v in results[seeds[0]]]
    lines = [
        f"### {part}: BD-rate against the anchor",
        "",
        "| variant | anchor | monotonic (seeds) | BD-rate pchip per seed | cubic per seed "
        "| mean BD-rate (range) | BD-PSNR per seed | why n/a |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ran = {v: [s for s in seeds if v in results[s]] for v in variants}
    for v, a in anchors.items():
        bds = [report.bd_metrics(results[s][a], results[s][v]) for s in ran[v]]
        mono = sum(report.monotonic(results[s][v]) for s in ran[v])
        pchip = [b["bd_rate_pchip"] for b in bds]
        cells = [
            ", ".join(report.fmt(x, 2, " %") for x in pchip),
            ", ".join(report.fmt(b["bd_rate_cubic"], 2, " %") for b in bds),
            spread(pchip),
            ", ".join(report.fmt(b["bd_quality_pchip"], 3, " dB") for b in bds),
            "; ".join(dict.fromkeys(b["reason"] for b in bds if b["reason"])) or "",
        ]
        lines.append(
            f"| {v} | {a} | {mono}/{len(ran[v])} (seeds {', '.join(map(str, ran[v]))}) | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "Anchor curves monotonic: "
        + ", ".join(
            f"{a} {sum(report.monotonic(results[s][a]) for s in seeds)}/{len(seeds)}"
            for a in dict.fromkeys(anchors.values())
        ),
    ]
    lines += [
        "",
        f"### {part}: R-D cost J = bpp + λ·255²·MSE against the anchor's at the same λ "
        "(mean over seeds, range; negative: better at that λ)",
        "",
        "| variant | anchor | λ: ΔJ | mean ΔJ over λ |",
        "|---|---|---|---|",
    ]
    for v, a in anchors.items():
        per_lam: dict[float, list[float]] = {}
        for s in ran[v]:
            test, base = points(results[s][v], v), points(results[s][a], a)
            for lam, (b, m) in test.items():
                if lam in base:
                    j0 = base[lam][0] + lam * 255**2 * base[lam][1]
                    per_lam.setdefault(lam, []).append(100 * ((b + lam * 255**2 * m) / j0 - 1))
        cells = (
            "; ".join(f"{lam:g}: {spread(x, 1)}" for lam, x in sorted(per_lam.items()))
            or "no common λ"
        )
        overall = (
            f"{statistics.fmean(statistics.fmean(x) for x in per_lam.values()):+.1f} %"
            if per_lam
            else "n/a"
        )
        lines.append(f"| {v} | {a} | {cells} | {overall} |")
    lines += [
        "",
        f"### {part}: time per step (the median over the variant's runs, every seed, "
        "of each run's median logged step time; "
        "measured under the campaign's load, several runs at a time, so a guide, not a benchmark: "
        "benchmarks/step_overhead.py is one)",
        "",
        "| variant | median s/step | × anchor |",
        "|---|---|---|",
    ]
    times = {
        v: statistics.median(
            [
                step_time(Path(c).parent)
                for s in ran[v]
                for c in results[s][v]["results"]["checkpoint"]
            ]
        )
        for v in variants
    }
    for v in variants:
        anchor = anchors.get(v, v)
        lines.append(f"| {v} | {times[v]:.3f} | {times[v] / times[anchor]:.2f}× |")
    shared = set.intersection(*(set(points(results[seeds[0]][v], v)) for v in figure))
    if shared:  # at the λ nearest --figure-lambda that every variant of the figure has
        lam = min(shared, key=lambda x: abs(math.log(x / figure_lambda)))
        fig_runs = [folders[seeds[0]] / "runs" / f"{v}-{lam:g}" for v in figure]
        report.plot_figure1(fig_runs, out / f"figure1-{part}.png")
        lines += [
            "",
            f"Figure 1 at λ {lam:g} (seed {seeds[0]}): `figure1-{part}.png` "
            f"({', '.join(r.name for r in fig_runs)}).",
        ]
    curves = [{**results[s][v], "name": f"{v} s{s}"} for v in variants for s in ran[v]]
    report.plot_rd(curves, out / f"rd-{part}.png")
    lines += [
        f"R-D curves of every seed: `rd-{part}.png`; each seed's own study summary: "
        + ", ".join(f"`{part}-seed{s}/summary.md`" for s in seeds)
        + "."
    ]
    return "\n".join(lines)


def study_argv(part: str, seed: int, args: argparse.Namespace) -> tuple[str, list[str]]:
    variants = [
        v
        for v in PARTS[part][0]
        if v not in args.skip and (seed in args.ablation_seeds or v not in ABLATIONS)
    ]
    # the later wins
    lambdas = dict(
        g.split("=", 1)
        for g in [*PARTS[part][1], *(args.scratch_lambdas if part == "scratch" else [])]
    )
    grids = [f"{v}={lams}" for v, lams in lambdas.items() if v in variants]
    common = ["--out", str(args.out / f"{part}-seed{seed}"), "--seed", str(seed),
              "--photos", args.photos, "--patch", str(args.patch),
              "--batch-size", str(args.batch_size), "--jobs", str(args.jobs),
              "--eval-dataset", args.eval_dataset, "--variants", *variants]  # fmt: skip
    if part == "scratch":
        return "scratch_study", [
            *common,
            "--steps",
            str(args.steps),
            *(["--lambdas", *grids] if grids else []),
        ]
    return "finetune_study", [
        *common,
        "--steps",
        str(args.finetune_steps),
        "--models",
        *args.models,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("repro-out"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--parts",
        nargs="+",
        default=list(PARTS),
        choices=list(PARTS),
        help="the studies to run (default: %(default)s)",
    )
    parser.add_argument(
        "--steps", type=int, default=3000, help="training steps from scratch (default: %(default)s)"
    )
    parser.add_argument(
        "--finetune-steps", type=int, default=1000, help="fine-tuning steps (default: %(default)s)"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["mbt2018-mean-N32-M48-mse-*"],
        help="the shipped models to fine-tune (default: %(default)s)",
    )
    parser.add_argument(
        "--photos",
        default="data/photos",
        help="training photographs (default: %(default)s; `make photos` fetches them)",
    )
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="runs in parallel, one torch thread each (default: %(default)s)",
    )
    parser.add_argument(
        "--eval-dataset",
        default="samples",
        help="what the checkpoints are entropy-coded on (default: %(default)s)",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        metavar="VARIANT",
        help="variants left out (not an anchor: standard)",
    )
    parser.add_argument(
        "--ablation-seeds",
        type=int,
        nargs="*",
        help="the seeds that also run the ablations γ = 0 and no renormalisation "
        "(default: every seed)",
    )
    parser.add_argument(
        "--scratch-lambdas",
        nargs="*",
        default=[],
        metavar="VARIANT=λ,λ",
        help="a scratch variant's λ grid instead of the default",
    )
    parser.add_argument(
        "--figure-lambda",
        type=float,
        default=0.0067,
        help="the λ of the Figure 1 re-plots (the nearest each study has; default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.ablation_seeds is None:
        args.ablation_seeds = args.seeds
    known = {v for variants, *_ in PARTS.values() for v in variants}
    for v in args.skip:
        if v not in known or v == "standard":
            parser.error(
                f"--skip {v}: expected a variant other than the anchor, "
                f"one of {', '.join(sorted(known - {'standard'}))}"
            )
    for g in args.scratch_lambdas:
        if "=" not in g or g.split("=", 1)[0] not in PARTS["scratch"][0]:
            parser.error(
                f"--scratch-lambdas {g!r}: expected VARIANT=λ,λ,... "
                f"with VARIANT one of {', '.join(PARTS['scratch'][0])}"
            )
    if not Path(args.photos).is_dir():
        print(
            f"error: --photos {args.photos}: no photographs; "
            f"run `make photos` (python -m plugins.lic.photos {args.photos})",
            file=sys.stderr,
        )
        return 2
    import finetune_study
    import scratch_study

    studies = {"scratch_study": scratch_study.main, "finetune_study": finetune_study.main}
    start = time.perf_counter()
    calls = []
    for part in args.parts:
        for seed in args.seeds:
            script, study = study_argv(part, seed, args)
            calls.append(f"python benchmarks/{script}.py {' '.join(study)}")
            print(f"== {part}, seed {seed}: {calls[-1]}", flush=True)
            if studies[script](study) != 0:
                return 1
    out: Path = args.out
    sections = [summarise_part(out, part, args.seeds, args.figure_lambda) for part in args.parts]
    settings = (
        f"`{command_line('reproduce.py', argv)}` at commit {git_commit(short=True)}: "
        f"seeds {args.seeds}, "
        f"{args.steps} steps from scratch, "
        f"{args.finetune_steps} fine-tuning steps, "
        f"batch {args.batch_size} of {args.patch}² crops of {args.photos}, entropy-coded on "
        f"`{args.eval_dataset}`. Its training runs and evaluations took "
        f"{run_minutes(out):.0f} min of run time in all ({args.jobs} at a time); "
        f"this invocation's wall time {(time.perf_counter() - start) / 60:.1f} min. "
        "The studies it ran:\n\n" + "\n".join(f"    {c}" for c in calls)
    )
    write_summary(out, "The paper's comparison in its regime", settings, "\n\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
