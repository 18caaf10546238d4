"""Fine-tuning the shipped models: Solution 2's formulations against the standard loss, same steps.

    python benchmarks/finetune_study.py --out ft-out [--models 'mbt2018-mean-N32-M48-mse-*'] \\
        [--steps 1000] [--lr 5e-5] [--sgd-lr 1e-3] [--variants qp qp-shared ...] [--jobs 2]

Every shipped model (``plugins/lic/pretrained``, trained with the standard loss on the
photographs of ``python -m plugins.lic.photos``) is fine-tuned at its own λ on the same
photographs, for the same steps, once per variant (:data:`VARIANTS`: the standard loss and
Solution 2 under each candidate formulation and optimiser setting), then entropy-coded on the
``samples`` photographs. ``summary.md`` has, per variant and λ, the R-D cost
``J = bpp + λ·255²·MSE`` (what the standard loss minimises; MSE the mean over images) against the
anchor's (the standard fine-tune with the same optimiser setting) and against the starting model,
where each point lands, the weight on distortion at the end, and BD-rates where the curves
overlap. Finished runs (a ``.done`` file) are not run again.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reproduce import _init_worker, run_all  # noqa: E402  (the same pool and .done files)

QP = ["--balancer", "qp"]
SGD = ["--optimizer", "sgd", "--momentum", "0.9"]
#: variant → (training flags, anchor); "{sgd_lr}" is replaced by --sgd-lr
VARIANTS: dict[str, tuple[list[str], str]] = {
    "standard": (["--balancer", "fixed"], "standard"),
    "standard-keep": (["--balancer", "fixed", "--keep-optimizer"], "standard-keep"),
    "standard-sgd": (["--balancer", "fixed", *SGD, "-lr", "{sgd_lr}"], "standard-sgd"),
    "qp": (QP, "standard"),
    "qp-shared": ([*QP, "--balancer-opt", "shared_only=true"], "standard"),
    "qp-simplex": ([*QP, "--balancer-opt", "simplex=true"], "standard"),
    "qp-keep": ([*QP, "--keep-optimizer"], "standard-keep"),
    "qp-shared-keep": ([*QP, "--balancer-opt", "shared_only=true", "--keep-optimizer"], "standard-keep"),
    "qp-adam-keep": ([*QP, "--balancer-opt", "metric=adam", "--keep-optimizer"], "standard-keep"),
    "qp-sgd": ([*QP, *SGD, "-lr", "{sgd_lr}"], "standard-sgd"),
    "qp-shared-sgd": ([*QP, "--balancer-opt", "shared_only=true", *SGD, "-lr", "{sgd_lr}"], "standard-sgd"),
}


def rd_cost(point_bpp: float, mse: float, lam: float) -> float:
    return point_bpp + lam * 255**2 * mse


def last_weight(run: Path) -> float:
    """The mean weight on distortion over the run's last quarter of logged steps."""
    from plugins.lic.logs import read

    ws = [r["weight/distortion"] for r in read(run) if "weight/distortion" in r]
    tail = ws[len(ws) * 3 // 4 :] or ws
    return statistics.fmean(tail) if tail else float("nan")


def summarise(out: Path, variants: list[str], models: list[Any], start: dict[str, Any], dataset: str = "samples") -> str:
    from plugins.lic import report

    results = {v: report.load_results(out / f"{v}.json") for v in variants}
    lams = [m.lmbda for m in models]
    lines = [
        f"R-D cost J = bpp + λ·255²·MSE on `{dataset}` against the anchor (the standard fine-tune with the same optimiser setting) "
        "and, in brackets, against the shipped model the fine-tune started from; then bpp / PSNR and the weight on distortion "
        "(mean of the last quarter of the run).",
        "",
        "| variant | anchor | " + " | ".join(f"λ={lam:g}" for lam in lams) + " | mean ΔJ | BD-rate vs anchor |",
        "|---|---|" + "---|" * (len(lams) + 2),
    ]
    for v in variants:
        anchor = VARIANTS[v][1]
        r, a = results[v]["results"], results[anchor]["results"]
        cells, deltas = [], []
        for lam in lams:
            i, j = r["lambda"].index(lam), a["lambda"].index(lam)
            k = start["results"]["lambda"].index(lam)
            cost = rd_cost(r["bpp"][i], r["mse"][i], lam)
            base = rd_cost(a["bpp"][j], a["mse"][j], lam)
            s = rd_cost(start["results"]["bpp"][k], start["results"]["mse"][k], lam)
            deltas.append(100 * (cost / base - 1))
            run = out / "runs" / f"{v}-{lam:g}"
            cells.append(f"{deltas[-1]:+.1f} % ({100 * (cost / s - 1):+.1f} %); {r['bpp'][i]:.3f} / {r['psnr-rgb'][i]:.2f}; w_D {last_weight(run):.3f}")
        bd = report.bd_metrics(results[anchor], results[v]) if v != anchor else {"bd_rate_pchip": float("nan"), "reason": "anchor"}
        bd_text = report.fmt(bd["bd_rate_pchip"], 2, " %") + (f" ({bd['reason']})" if bd.get("reason") else "")
        lines.append(f"| {v} | {anchor} | " + " | ".join(cells) + f" | {statistics.fmean(deltas):+.1f} % | {bd_text} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("ft-out"))
    parser.add_argument("--models", nargs="+", default=["mbt2018-mean-N32-M48-mse-*"], help="shipped models (names or patterns)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT")
    parser.add_argument("--photos", default="data/photos", help="the fine-tuning data (the shipped models' training photographs)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", default="5e-5", help="Adam learning rate (the paper's fine-tuning rate)")
    parser.add_argument("--sgd-lr", default="1e-3", help="learning rate of the SGD variants")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--eval-dataset", default="samples")
    args = parser.parse_args(argv)
    from plugins.lic import pretrained

    models = pretrained.select(args.models)
    variants = list(dict.fromkeys([*(VARIANTS[v][1] for v in args.variants), *args.variants]))  # anchors first
    out: Path = args.out
    common = ["-d", args.photos, "--patch-size", str(args.patch), str(args.patch), "--batch-size", str(args.batch_size), "--test-batch-size", "16",
              "--log-every", "25", "--test-every", str(max(args.steps // 4, 1)), "--save-every", str(max(args.steps // 4, 1)), "--no-progress"]  # fmt: skip
    trains, evals = [], []
    for v in variants:
        flags = [f.replace("{sgd_lr}", args.sgd_lr) for f in VARIANTS[v][0]]
        lr = [] if "-lr" in flags else ["-lr", args.lr]
        for m in models:
            d = out / "runs" / f"{v}-{m.lmbda:g}"
            trains.append(("train", [*common, "--pretrained", m.name, "--finetune", "--steps", str(args.steps), *lr, *flags, "--out", str(d)], d / "run.log"))
        ckpts = [str(out / "runs" / f"{v}-{m.lmbda:g}" / "checkpoint.pth.tar") for m in models]
        evals.append(("evaluate", [*ckpts, "-d", args.eval_dataset, "--name", v, "--out", str(out / f"{v}.json")], out / f"{v}.eval.log"))
    evals.append(("evaluate", ["--pretrained", *(m.name for m in models), "-d", args.eval_dataset, "--name", "shipped", "--out", str(out / "shipped.json")],
                  out / "shipped.eval.log"))  # fmt: skip
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(args.jobs, initializer=_init_worker) as pool:
        print(f"{len(trains)} fine-tunes, {len(evals)} evaluations; {args.jobs} processes", flush=True)
        run_all(pool, trains, start)
        run_all(pool, evals, start)
    from plugins.lic import report

    shipped = report.load_results(out / "shipped.json")
    table = summarise(out, variants, models, shipped, args.eval_dataset)
    command = f"python benchmarks/finetune_study.py {' '.join(argv if argv is not None else sys.argv[1:])}".strip()
    settings = (
        f"`{command}`: {len(models)} shipped models ({', '.join(m.name for m in models)}), {args.steps} fine-tuning steps each at "
        f"Adam lr {args.lr} (SGD variants: lr {args.sgd_lr}, momentum 0.9), batch {args.batch_size} of {args.patch}² crops of {args.photos}; "
        f"entropy-coded on `{args.eval_dataset}`; wall time {(time.perf_counter() - start) / 60:.1f} min with {args.jobs} processes."
    )
    (out / "summary.md").write_text(f"# Fine-tuning the shipped models\n\n{settings}\n\n{table}\n")
    json.dump({"settings": settings}, (out / "settings.json").open("w"))
    print(f"\n{settings}\n\n{table}\n\nsummary: {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
