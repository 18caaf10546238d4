"""Train, evaluate and ship the pre-trained models (resumable: run it again to continue).

    python -m plugins.lic.pretrained.build --photos data/photos --runs runs/pretrained [--jobs 2]

For every λ: ``python -m plugins.lic.train`` with the standard loss (``--balancer fixed``) on the
photographs of ``python -m plugins.lic.photos`` (never on ``samples``), resumed from its last
checkpoint when one exists; then every finished model is written into
``plugins/lic/pretrained/`` (entropy coders' tables updated, optimiser state kept), entropy-coded on
the ``samples`` photographs (``python -m plugins.lic.evaluate``) and recorded in its
``manifest.json`` (models of other λ already listed there stay), and ``RUNS/summary.md`` and
``RUNS/report/rd.png`` show the curve. Runs go through a pool of ``--jobs`` processes with one
torch thread each; ``--export-only`` ships what is finished without training.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

from plugins.lic import jobs
from plugins.lic.errors import DefaultsHelpFormatter

ROOT = Path(__file__).resolve().parents[3]
LAMBDAS = ("0.0018", "0.0067", "0.0035", "0.013", "0.0009", "0.0005")
MODEL = ("mbt2018-mean", 32, 48)
#: the recipe: Adam at 1e-3, ×0.1 at 75 % and 94 % of the steps; batch 8 of 128² crops
RECIPE = ["--patch-size", "128", "128", "--batch-size", "8", "-lr", "1e-3",
          "--aux-learning-rate", "1e-3", "--clip_max_norm", "1.0", "--test-every", "500",
          "--save-every", "500", "--log-every", "50", "--test-batch-size", "16", "--seed", "0",
          "--no-progress"]  # fmt: skip


def run_name(model: str, n: int, m: int, metric: str, lam: str) -> str:
    return f"{model}-N{n}-M{m}-{metric}-{lam}"


def train_argv(args: argparse.Namespace, lam: str, out: Path) -> list[str]:
    model, n, m = MODEL
    milestones = [round(args.steps * 0.75), round(args.steps * 0.94)]
    return ["-m", model, "--N", str(n), "--M", str(m), "-d", str(args.photos), "--lambda", lam,
            "--metric", "mse", "--balancer", "fixed", "--steps", str(args.steps),
            "--lr-milestones", *map(str, milestones), *RECIPE, "--out", str(out)]  # fmt: skip


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _train(job: tuple[list[str], Path]) -> tuple[str, int, float]:
    """One training run in this worker (resumed when it has a checkpoint); its output appended to
    run.log."""
    argv, out = job
    if (out / "done").exists():
        return str(out), 0, 0.0
    from plugins.lic import checkpoint, train

    last = out / checkpoint.LAST
    if last.exists():
        argv = [*argv, "--checkpoint", str(last)]
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "commit").exists():  # the code the run started with
        (out / "commit").write_text(git_commit() + "\n")
    start = time.perf_counter()
    with (
        (out / "run.log").open("a") as f,
        contextlib.redirect_stdout(f),
        contextlib.redirect_stderr(f),
    ):
        print(f"$ python -m plugins.lic.train {' '.join(argv)}", flush=True)
        code = train.main(argv)
    seconds = time.perf_counter() - start
    with (out / "train_seconds").open("a") as f:  # one line per part of a resumed run
        f.write(f"{seconds:.1f}\n")
    if code == 0:
        (out / "done").write_text("")
    return str(out), code, seconds


def git_commit() -> str:
    """The commit the models were built at (``+dirty`` with changes under plugins/ or moo_opt/)."""
    return jobs.git_commit("plugins", "moo_opt")


# --------------------------------------------------------------------------- evaluate and ship
def photo_set(photos: Path) -> str:
    """One line on the training data, from ``photos.json``."""
    rec = json.loads((photos / "photos.json").read_text())
    train = [p for p in rec["photos"] if p["split"] == "train"]
    packages = sorted({f"{p['package']} {p['version']}" for p in rec["photos"] if "package" in p})
    source = f"Debian packages {', '.join(packages)}" if packages else f"the folder {rec['source']}"
    return (
        f"{len(train)} photographs from {source} "
        f"(python -m plugins.lic.photos, longer side <= {rec['max_side']} px); "
        f"{len(rec['photos']) - len(train)} held out for the test loss"
    )


def export(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """Write every finished run into ``folder`` and entropy-code it on ``--eval-dataset``; returns
    the manifest records (by λ)."""
    import torch

    from plugins.lic import checkpoint, evaluate, models

    model, n, m = MODEL
    records = []
    for lam in sorted(args.lambdas, key=float):
        name = run_name(model, n, m, "mse", lam)
        run = args.runs / name
        if not (run / "done").exists():
            print(f"not finished, not shipped: {run}", file=sys.stderr)
            continue
        ckpt = checkpoint.load(run / checkpoint.LAST)
        spec = models.ModelSpec(**ckpt["model"])
        net = models.build(spec)
        net.load_state_dict(ckpt["state_dict"])
        # the entropy coders' tables travel with the weights: compress() works at once
        net.update(force=True)
        ckpt["state_dict"] = net.state_dict()
        target = folder / f"{name}.pth.tar"
        checkpoint.save_atomic(ckpt, target)
        point = evaluate.evaluate([target], args.eval_dataset, False, torch.device("cpu"))[0]
        minutes = sum(float(x) for x in (run / "train_seconds").read_text().split()) / 60
        commit = (
            (run / "commit").read_text().strip()
            if (run / "commit").exists()
            else (args.runs / "commit").read_text().strip()
        )
        mse = point["mse"]
        records.append({
            "name": name, "file": target.name, "model": spec.name, "N": spec.N, "M": spec.M,
            "lambda": float(lam), "metric": "mse",
            "steps": int(ckpt["step"]), "data": photo_set(args.photos),
            "command": "python -m plugins.lic.train "
                       f"{' '.join(train_argv(args, lam, Path('runs/pretrained') / name))}",
            "recipe": "Adam lr 1e-3 (aux 1e-3), x0.1 at steps "
                      f"{' and '.join(map(str, ckpt['args']['lr_milestones']))}; "
                      "batch 8 of 128x128 random crops; "
                      "gradient clipping 1.0; seed 0; one torch thread",
            "commit": commit, "train_minutes": round(minutes, 1),
            "machine": "2-core x86-64 CPU VM (two runs at a time, one thread each)",
            "eval": {"dataset": args.eval_dataset, "bpp": point["bpp"], "psnr": point["psnr-rgb"],
                     "ms_ssim": point["ms-ssim-rgb"], "mse": mse,
                     "L_D": float(lam) * 255**2 * mse, "rate": point["bpp"],
                     "coded": "entropy-coded bitstreams (compress/decompress)",
                     "decode_matches_forward": point["max_decode_gap"] <= evaluate.CONSISTENCY_TOL},
            "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
            "bytes": target.stat().st_size,
        })  # fmt: skip
        print(
            f"shipped {target} ({target.stat().st_size / 1e6:.1f} MB): {point['bpp']:.3f} bpp, "
            f"{point['psnr-rgb']:.2f} dB, L_D {float(lam) * 255**2 * mse:.3f}",
            flush=True,
        )
    return records


def jpeg_reference(
    dataset: str, qualities: tuple[int, ...] = (5, 10, 15, 20, 30, 40)
) -> dict[str, Any]:
    """Pillow's JPEG (4:2:0, default tables) on ``dataset`` at ``qualities``, as CompressAI's
    ``compressai.utils.bench jpeg`` measures it: bytes of the file, PSNR on 8-bit RGB; a
    reference curve in CompressAI's results format."""
    import io
    import math

    import numpy as np
    from PIL import Image

    from plugins.lic import data

    pictures = data.resolve(dataset, "test")
    originals = [np.round(pictures[i] * 255).astype(np.uint8) for i in range(len(pictures))]
    bpp, psnr = [], []
    for q in qualities:
        rates, quality = [], []
        for a in originals:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, "JPEG", quality=q)
            decoded = np.asarray(
                Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float64
            )
            rates.append(8 * buf.tell() / (a.shape[0] * a.shape[1]))
            quality.append(10 * math.log10(255**2 / float(np.mean((a - decoded) ** 2))))
        bpp.append(float(np.mean(rates)))
        psnr.append(float(np.mean(quality)))
    nan = [float("nan")] * len(qualities)
    return {"name": "JPEG (Pillow)", "description": f"Pillow JPEG, qualities {list(qualities)}",
            "dataset": dataset,
            "results": {"bpp": bpp, "psnr-rgb": psnr, "ms-ssim-rgb": nan,
                        "quality": list(qualities)}}  # fmt: skip


#: the paper's regime: the distortion term and the rate of order one (see the README)
REGIME_MAX = 1.5


def summary(records: list[dict[str, Any]]) -> str:
    """The table of the shipped models (markdown) and whether they keep the promises: a
    monotonic curve, and L_D and the rate of order one."""
    lines = [
        "| model | λ | steps | training (min) | bpp | PSNR (dB) | MS-SSIM | L_D = λ·255²·MSE "
        "| rate (bpp) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        e = r["eval"]
        lines.append(f"| {r['name']} | {r['lambda']:g} | {r['steps']} | {r['train_minutes']:.0f} | "
                     f"{e['bpp']:.3f} | {e['psnr']:.2f} | "
                     f"{e['ms_ssim']:.4f} | {e['L_D']:.3f} | {e['rate']:.3f} |")  # fmt: skip
    bpp = [r["eval"]["bpp"] for r in records]
    psnr = [r["eval"]["psnr"] for r in records]
    monotonic = all(b > a for a, b in zip(bpp, bpp[1:])) and all(
        b > a for a, b in zip(psnr, psnr[1:])
    )
    outside = [r["name"] for r in records if max(r["eval"]["L_D"], r["eval"]["rate"]) > REGIME_MAX]
    lines += ["", f"Curve monotonic in λ (bpp and PSNR): {'yes' if monotonic else 'NO'}. "
              f"L_D and rate at most {REGIME_MAX}: "
              f"{'all' if not outside else 'not ' + ', '.join(outside)}."]  # fmt: skip
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument(
        "--photos",
        type=Path,
        default=Path("data/photos"),
        help="the ImageFolder of python -m plugins.lic.photos",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("runs/pretrained"),
        help="the training runs' folders (resumable)",
    )
    parser.add_argument("--lambdas", nargs="+", default=list(LAMBDAS), help="one model per λ")
    parser.add_argument("--steps", type=int, default=16000, help="training steps of each model")
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs in parallel, one torch thread each"
    )
    parser.add_argument(
        "--eval-dataset",
        default="samples",
        help="what the shipped models are entropy-coded on (never trained on)",
    )
    parser.add_argument(
        "--export-only",
        action="store_true",
        help="ship the finished runs without training the others",
    )
    parser.add_argument(
        "--ship",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="where the finished models and manifest.json go",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Train the runs not finished yet, then ship every finished one: the models, the manifest,
    the R-D report and the summary. Returns 1 when a run fails, else 0."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.photos / "photos.json").exists():
        parser.error(
            f"--photos {args.photos}: not made by python -m plugins.lic.photos; "
            "run it first (make photos)"
        )
    if not _train_all(args):
        return 1
    records = export(args, args.ship)
    if records:
        records = _write_manifest(args, records)
        curve = [r for r in records if (r["model"], r["N"], r["M"]) == MODEL]
        _write_curve_report(args, curve)
        table = summary(curve)
        (args.runs / "summary.md").write_text(table + "\n")
        print(
            f"\n{table}\n\nmanifest: {args.ship / 'manifest.json'} ({len(records)} models); "
            f"R-D plot: {args.runs / 'report' / 'rd.png'}"
        )
    return 0


def _train_all(args: argparse.Namespace) -> bool:
    """Train (or resume) every λ's run in a pool of ``--jobs`` processes (none with
    ``--export-only``); False at the first that fails, after pointing at its log."""
    model, n, m = MODEL
    queue = [
        (
            train_argv(args, lam, args.runs / run_name(model, n, m, "mse", lam)),
            args.runs / run_name(model, n, m, "mse", lam),
        )
        for lam in args.lambdas
    ]
    args.runs.mkdir(parents=True, exist_ok=True)
    if not (args.runs / "commit").exists():
        (args.runs / "commit").write_text(git_commit() + "\n")
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(args.jobs, initializer=_init_worker) as pool:
        for out, code, seconds in pool.imap_unordered(_train, [] if args.export_only else queue):
            print(
                f"{'ok' if code == 0 else 'FAILED'} {out} ({seconds / 60:.1f} min; "
                f"{(time.perf_counter() - start) / 60:.1f} min elapsed)",
                flush=True,
            )
            if code != 0:
                print(f"see {out}/run.log", file=sys.stderr)
                return False
    return True


def _write_manifest(
    args: argparse.Namespace, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Write ``manifest.json`` in ``--ship``: ``records`` and the models of other λ shipped
    earlier (whose files are still there); returns its records."""
    built = {r["name"] for r in records}
    manifest = args.ship / "manifest.json"
    kept = [
        r
        for r in (json.loads(manifest.read_text()) if manifest.exists() else [])
        if r["name"] not in built and (args.ship / r["file"]).exists()
    ]
    # other λ shipped earlier stay listed
    records = sorted(kept + records, key=lambda r: (r["model"], r["N"], r["M"] or 0, r["lambda"]))
    manifest.write_text(json.dumps(records, indent=2) + "\n")
    return records


def _write_curve_report(args: argparse.Namespace, curve: list[dict[str, Any]]) -> None:
    """``shipped.json`` (the curve in CompressAI's results format), ``jpeg.json`` and the R-D
    report of the two in ``RUNS/report``."""
    from plugins.lic import report

    keys = {"bpp": "bpp", "psnr-rgb": "psnr", "ms-ssim-rgb": "ms_ssim", "mse": "mse"}
    results = {"name": "standard",
               "description": "the shipped models (mbt2018-mean N=32 M=48), entropy-coded",
               "dataset": args.eval_dataset,
               "results": {**{k: [r["eval"][v] for r in curve] for k, v in keys.items()},
                           "lambda": [r["lambda"] for r in curve],
                           "checkpoint": [f"plugins/lic/pretrained/{r['file']}"
                                          for r in curve]}}  # fmt: skip
    (args.runs / "shipped.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.runs / "jpeg.json").write_text(
        json.dumps(jpeg_reference(args.eval_dataset), indent=2) + "\n"
    )
    with contextlib.redirect_stdout(sys.stderr):  # the shipped curve, with Pillow's JPEG for scale
        report.main(
            [
                str(args.runs / "shipped.json"),
                str(args.runs / "jpeg.json"),
                "--anchor",
                "JPEG (Pillow)",
                "--out",
                str(args.runs / "report"),
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
