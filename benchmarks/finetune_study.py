"""Fine-tuning the shipped models: Solution 2's formulations against the standard loss, and
Solution 1's cheaper modes against exact Solution 1, same steps.

    python benchmarks/finetune_study.py --out ft-out [--models 'mbt2018-mean-N32-M48-mse-*'] \\
        [--steps 1000] [--lr 5e-5] [--sgd-lr 1e-4] [--variants qp qp-shared ...] [--jobs 2]

Every shipped model (``plugins/lic/pretrained``, trained with the standard loss on the
photographs of ``python -m plugins.lic.photos``) is fine-tuned at its own λ on the same
photographs, for the same steps, once per variant (:data:`VARIANTS`: the standard loss,
Solution 2 under each candidate formulation and optimiser setting, and Solution 1 exact and in its
cheaper modes), then entropy-coded on the ``samples`` photographs. ``summary.md`` has, per variant
and λ, the R-D cost ``J = bpp + λ·255²·MSE`` (what the standard loss minimises; MSE the mean over
images) against the anchor's (each variant names its own: the standard fine-tune with the same
optimiser setting, or for Solution 1's cheaper modes exact Solution 1, whose own anchor is the
standard fine-tune; anchors run too) and against the starting model,
where each point lands, the weight on distortion at the end, and BD-rates where the curves
overlap. Finished runs (a ``.done`` file) are not run again.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reproduce import command_line, write_summary  # noqa: E402

from plugins.lic.jobs import run_stages  # noqa: E402  (the same pool and .done files)


def qp(*opts: str) -> list[str]:
    """``--balancer qp`` with these options, and the paper's unconstrained QP
    (``trust_radius=none``) unless one is given: the CLI's fine-tuning default is the configuration
    this study recommends."""
    if not any(o.startswith("trust_radius=") for o in opts):
        opts = (*opts, "trust_radius=none")
    return ["--balancer", "qp", *(x for o in opts for x in ("--balancer-opt", o))]


C2F = ["--balancer", "coarse-to-fine"]
SGD = ["--optimizer", "sgd", "--momentum", "0.9", "--clip_max_norm", "0"]  # unclipped: see below
#: variant → (training flags, anchor); "{sgd_lr}" is replaced by --sgd-lr and "{sgd_lr2}" by
#: twice it: Solution 2's coefficients sum to one where the standard loss's (1, 1) sum to two, so
#: under SGD (not scale-free as Adam is) the balanced variants take twice the rate, and equal
#: coefficients give exactly the standard step (which gradient clipping would break, hence no
#: clipping under SGD)
VARIANTS: dict[str, tuple[list[str], str]] = {
    "standard": (["--balancer", "fixed"], "standard"),
    "standard-keep": (["--balancer", "fixed", "--keep-optimizer"], "standard-keep"),
    "standard-sgd": (["--balancer", "fixed", *SGD, "-lr", "{sgd_lr}"], "standard-sgd"),
    "qp": (qp(), "standard"),
    "qp-shared": (qp("shared_only=true"), "standard"),
    "qp-simplex": (qp("simplex=true"), "standard"),
    "qp-keep": ([*qp(), "--keep-optimizer"], "standard-keep"),
    "qp-shared-keep": ([*qp("shared_only=true"), "--keep-optimizer"], "standard-keep"),
    "qp-adam-keep": ([*qp("metric=adam"), "--keep-optimizer"], "standard-keep"),
    "qp-trust0.05": (qp("trust_radius=0.05"), "standard"),
    "qp-trust0.1": (qp("trust_radius=0.1"), "standard"),
    "qp-trust0.2": (qp("trust_radius=0.2"), "standard"),
    "qp-shared-trust0.1": (qp("shared_only=true", "trust_radius=0.1"), "standard"),
    # the Gramian at the latent y (issue 19), against its exact counterpart
    "qp-trust0.1-rep": (qp("trust_radius=0.1", "gramian=representation"), "qp-trust0.1"),
    "qp-rep": (qp("gramian=representation"), "qp"),
    "qp-ema0.99": (qp("gradient_ema=0.99"), "standard"),
    "qp-ema0.999": (qp("gradient_ema=0.999"), "standard"),
    "qp-sgd": ([*qp(), *SGD, "-lr", "{sgd_lr2}"], "standard-sgd"),
    "qp-shared-sgd": ([*qp("shared_only=true"), *SGD, "-lr", "{sgd_lr2}"], "standard-sgd"),
    # the control of a trust region that its boundary pins (w_D/w_R = 0.4/0.6): the standard loss
    # at the same λ_eff = 2λ/3, so that a gain is credited to the balancing only if this does not
    # have it
    "standard-lam0.667": (["--balancer", "fixed", "--lambda", "{lam*2/3}"], "standard"),
    # Solution 1, exact (one extra forward per step on the whole batch), and its cheaper modes
    # against it at equal steps: the extra forward on a random sub-batch of 2 of the batch's 8 (an
    # estimate of δ), on one step in four, and in channels-last memory format (the same method)
    "c2f": (C2F, "standard"),
    "c2f-sub2": ([*C2F, "--update-subbatch", "2"], "c2f"),
    "c2f-every4": ([*C2F, "--balancer-opt", "update_every=4"], "c2f"),
    "c2f-cl": ([*C2F, "--channels-last"], "c2f"),
    "c2f-next": ([*C2F, "--balancer-opt", "mode=next_batch"], "c2f"),
}
LAMBDA_SCALE = re.compile(r"\{lam\*(\d+)/(\d+)\}")  # "{lam*2/3}": the model's λ times 2/3


def with_anchors(selected: list[str]) -> list[str]:
    """The variants to run: ``selected`` and their anchors, the anchors' anchors and so on (exact
    Solution 1 anchors its cheaper modes and has the standard fine-tune as its own), anchors
    first."""
    out: list[str] = []

    def add(variant: str) -> None:
        if variant not in out:
            if VARIANTS[variant][1] != variant:
                add(VARIANTS[variant][1])
            out.append(variant)

    for v in selected:
        add(VARIANTS[v][1])
    for v in selected:
        add(v)
    return out


def rd_cost(point_bpp: float, mse: float, lam: float) -> float:
    return point_bpp + lam * 255**2 * mse


def last_weight(run: Path) -> tuple[float, float]:
    """The mean weight on distortion over the run's last quarter of logged steps, and the mean ratio
    of the weights on distortion and rate (the balanced step's λ is λ times it)."""
    from plugins.lic.logs import read

    rows = [r for r in read(run) if "weight/distortion" in r and "weight/rate" in r]
    tail = rows[len(rows) * 3 // 4 :] or rows
    if not tail:
        return float("nan"), float("nan")
    return statistics.fmean(r["weight/distortion"] for r in tail), statistics.fmean(
        r["weight/distortion"] / r["weight/rate"] for r in tail
    )


def point(
    res: dict[str, Any], out: Path, variant: str, lam: float
) -> int:  # res: an evaluation's "results"
    """The index of the run ``variant`` fine-tuned from the model of ``lam`` in its evaluation (by
    checkpoint path: a run may have trained at another λ, e.g. ``standard-lam0.667``)."""
    want = (out / "runs" / f"{variant}-{lam:g}" / "checkpoint.pth.tar").as_posix()
    return [Path(c).as_posix() for c in res["checkpoint"]].index(want)


def summarise(
    out: Path,
    variants: list[str],
    models: list[Any],
    start: dict[str, Any],
    dataset: str = "samples",
) -> str:
    from plugins.lic import report

    results = {v: report.load_results(out / f"{v}.json") for v in variants}
    lams = [m.lmbda for m in models]
    lines = [
        f"R-D cost J = bpp + λ·255²·MSE on `{dataset}` against the anchor "
        "(the standard fine-tune with the same optimiser setting; "
        "for Solution 1's cheaper modes, exact Solution 1 `c2f`) "
        "and, in brackets, against the shipped model the fine-tune started from; "
        "then bpp / PSNR, the weight on distortion "
        "and λ_eff/λ = w_D/w_R (the standard loss at λ·w_D/w_R takes the same step direction; "
        "means over the last quarter of the run).",
        "",
        "| variant | anchor | "
        + " | ".join(f"λ={lam:g}" for lam in lams)
        + " | mean ΔJ | BD-rate vs anchor |",
        "|---|---|" + "---|" * (len(lams) + 2),
    ]
    for v in variants:
        anchor = VARIANTS[v][1]
        r, a = results[v]["results"], results[anchor]["results"]
        cells, deltas = [], []
        for lam in lams:
            i, j = point(r, out, v, lam), point(a, out, anchor, lam)
            k = start["results"]["lambda"].index(lam)
            cost = rd_cost(r["bpp"][i], r["mse"][i], lam)
            base = rd_cost(a["bpp"][j], a["mse"][j], lam)
            s = rd_cost(start["results"]["bpp"][k], start["results"]["mse"][k], lam)
            deltas.append(100 * (cost / base - 1))
            run = out / "runs" / f"{v}-{lam:g}"
            w_d, ratio = last_weight(run)
            cells.append(
                f"{deltas[-1]:+.1f} % ({100 * (cost / s - 1):+.1f} %); "
                f"{r['bpp'][i]:.3f} / {r['psnr-rgb'][i]:.2f}; w_D {w_d:.3f}, λ_eff/λ {ratio:.3g}"
            )
        bd = (
            report.bd_metrics(results[anchor], results[v])
            if v != anchor
            else {"bd_rate_pchip": float("nan"), "reason": "anchor"}
        )
        bd_text = report.fmt(bd["bd_rate_pchip"], 2, " %") + (
            f" ({bd['reason']})" if bd.get("reason") else ""
        )
        lines.append(
            f"| {v} | {anchor} | "
            + " | ".join(cells)
            + f" | {statistics.fmean(deltas):+.1f} % | {bd_text} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("ft-out"))
    parser.add_argument(
        "--models",
        nargs="+",
        default=["mbt2018-mean-N32-M48-mse-*"],
        help="shipped models (names or patterns)",
    )
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT"
    )
    parser.add_argument(
        "--photos",
        default="data/photos",
        help="the fine-tuning data (the shipped models' training photographs)",
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument(
        "--lr", default="5e-5", help="Adam learning rate (the paper's fine-tuning rate)"
    )
    parser.add_argument(
        "--sgd-lr",
        default="1e-4",
        help="learning rate of the SGD variants (1e-3 diverges within 20 steps)",
    )
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--seed", type=int, default=0, help="every run's seed (a second seed: another --out)"
    )
    parser.add_argument("--eval-dataset", default="samples")
    args = parser.parse_args(argv)
    from plugins.lic import pretrained

    models = pretrained.select(args.models)
    variants = with_anchors(args.variants)
    out: Path = args.out
    common = ["-d", args.photos, "--patch-size", str(args.patch), str(args.patch),
              "--batch-size", str(args.batch_size), "--test-batch-size", "16", "--log-every", "25",
              "--test-every", str(max(args.steps // 4, 1)),
              "--save-every", str(max(args.steps // 4, 1)), "--no-progress"]  # fmt: skip
    trains, evals = [], []
    for v in variants:
        flags = [
            f.replace("{sgd_lr2}", f"{2 * float(args.sgd_lr):g}").replace("{sgd_lr}", args.sgd_lr)
            for f in VARIANTS[v][0]
        ]
        lr = [] if "-lr" in flags else ["-lr", args.lr]
        for m in models:
            d = out / "runs" / f"{v}-{m.lmbda:g}"
            own = [
                LAMBDA_SCALE.sub(lambda x, lam=m.lmbda: f"{lam * int(x[1]) / int(x[2]):.6g}", f)
                for f in flags
            ]
            trains.append(
                (
                    "train",
                    [
                        *common,
                        "--pretrained",
                        m.name,
                        "--finetune",
                        "--steps",
                        str(args.steps),
                        *lr,
                        *own,
                        "--out",
                        str(d),
                        "--seed",
                        str(args.seed),
                    ],
                    d / "run.log",
                )
            )
        ckpts = [str(out / "runs" / f"{v}-{m.lmbda:g}" / "checkpoint.pth.tar") for m in models]
        evals.append(
            (
                "evaluate",
                [*ckpts, "-d", args.eval_dataset, "--name", v, "--out", str(out / f"{v}.json")],
                out / f"{v}.eval.log",
            )
        )
    evals.append(("evaluate", ["--pretrained", *(m.name for m in models), "-d", args.eval_dataset,
                               "--name", "shipped", "--out", str(out / "shipped.json")],
                  out / "shipped.eval.log"))  # fmt: skip
    start = time.perf_counter()
    run_stages(args.jobs, {"fine-tunes": trains, "evaluations": evals}, start)
    from plugins.lic import report

    shipped = report.load_results(out / "shipped.json")
    table = summarise(out, variants, models, shipped, args.eval_dataset)
    command = command_line("finetune_study.py", argv)
    settings = (
        f"`{command}`: {len(models)} shipped models ({', '.join(m.name for m in models)}), "
        f"{args.steps} fine-tuning steps each at "
        f"Adam lr {args.lr} (SGD variants: lr {args.sgd_lr}, balanced ones twice it, "
        "momentum 0.9, no clipping), "
        f"batch {args.batch_size} of {args.patch}² crops of {args.photos}, seed {args.seed}; "
        f"entropy-coded on `{args.eval_dataset}`; "
        f"wall time {(time.perf_counter() - start) / 60:.1f} min with {args.jobs} processes."
    )
    write_summary(out, "Fine-tuning the shipped models", settings, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
