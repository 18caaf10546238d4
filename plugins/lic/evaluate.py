"""Evaluate checkpoints with real entropy coding, in CompressAI's results JSON format.

    python -m plugins.lic.evaluate runs/a/checkpoint_best.pth.tar runs/b/checkpoint_best.pth.tar \\
        -d samples --out results.json --name standard

Each image is padded to a multiple of 64 as CompressAI pads, ``compress()``-ed and
``decompress()``-ed; bpp is 8·(bytes of the strings)/(pixels of the original image); PSNR and
MS-SSIM are measured on the decoded image rounded to 8 bits. The decoded image is compared with
the forward pass's reconstruction (they must agree within 2/255) and the output says whether they
did. ``--estimate`` reports the likelihood-based bpp instead, labelled as an estimate.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from plugins.lic import checkpoint, data, models
from plugins.lic.errors import ArgumentParser, UsageError
from plugins.lic.objectives import bpp as likelihood_bpp

#: decoded and forward reconstructions must agree within this (in [0, 1] units)
CONSISTENCY_TOL = 2.0 / 255.0


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m plugins.lic.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "checkpoints",
        nargs="*",
        type=Path,
        help=(
            "checkpoints: written by plugins.lic.train, CompressAI train.py checkpoints or bare "
            "state_dicts (then -m/--N/--M where the tensors do not tell)"
        ),
    )
    p.add_argument(
        "--pretrained",
        nargs="+",
        default=[],
        metavar="NAME",
        help=(
            "shipped models by name or pattern "
            "(python -m plugins.lic.pretrained lists them; default: none)"
        ),
    )
    p.add_argument(
        "-m",
        "--model",
        default=None,
        help="architecture of bare state_dicts (default: read off their tensors)",
    )
    p.add_argument(
        "--N",
        type=int,
        default=None,
        help="channels of the transforms of bare state_dicts (default: read off their tensors)",
    )
    p.add_argument(
        "--M",
        type=int,
        default=None,
        help="channels of the latent of bare state_dicts (default: read off their tensors)",
    )
    p.add_argument(
        "-d",
        "--dataset",
        default="samples",
        help="samples (default), synthetic, a folder of images, or an ImageFolder root (its test/)",
    )
    p.add_argument("--out", type=Path, default=None, help="results JSON (default: print it)")
    p.add_argument(
        "--name", default=None, help="the curve's name (default: the first checkpoint's balancer)"
    )
    p.add_argument(
        "--description", default="", help="free text stored in the results JSON (default: empty)"
    )
    p.add_argument(
        "--estimate",
        action="store_true",
        help="likelihood-based bpp (an estimate), no entropy coding",
    )
    p.add_argument("--cuda", action="store_true", help="code on the GPU")
    return p


def load_model(
    path: Path,
    device: torch.device,
    name: str | None = None,
    N: int | None = None,
    M: int | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a checkpoint of any :data:`checkpoint.KINDS`, ready to code, and the checkpoint
    (with its ``model`` description filled in)."""
    ckpt = checkpoint.load(path)
    spec = models.resolve(ckpt["state_dict"], ckpt.get("model"), name, N, M, str(path))
    ckpt["model"] = spec.as_dict()
    net = models.build(spec)
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError:
        raise UsageError(
            f"{path}: its weights do not fit {spec.name} (N={spec.N}, M={spec.M}); "
            "the checkpoint is damaged"
        ) from None
    net = net.to(device).eval()
    net.update(force=True)
    return net, ckpt


def ms_ssim_or_nan(a: torch.Tensor, b: torch.Tensor) -> float:
    from pytorch_msssim import ms_ssim

    if min(a.shape[-2:]) <= 160:  # five scales need more than 160 pixels per side
        return math.nan
    return float(ms_ssim(a, b, data_range=255.0))


def psnr255(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a - b) ** 2))
    return 10 * math.log10(255.0**2 / mse) if mse > 0 else math.inf


@torch.no_grad()
def code_image(net: torch.nn.Module, x: torch.Tensor, estimate: bool) -> dict[str, float]:
    """One image (1×3×H×W in [0, 1]) through the codec."""
    from compressai.ops import compute_padding

    h, w = x.shape[-2:]
    pad, unpad = compute_padding(h, w, min_div=2**6)
    padded = F.pad(x, pad, mode="constant", value=0)
    forward = net(padded)
    x_fwd = F.pad(forward["x_hat"], unpad).clamp(0, 1)
    if estimate:
        rec, enc_t, dec_t = x_fwd, math.nan, math.nan
        rate = float(likelihood_bpp(forward["likelihoods"], h * w))
        gap = 0.0
    else:
        t0 = time.perf_counter()
        enc = net.compress(padded)
        enc_t = time.perf_counter() - t0
        t0 = time.perf_counter()
        dec = net.decompress(enc["strings"], enc["shape"])
        dec_t = time.perf_counter() - t0
        rec = F.pad(dec["x_hat"], unpad).clamp(0, 1)
        nbytes = sum(len(s) for strings in enc["strings"] for s in strings)
        rate = nbytes * 8.0 / (h * w)
        gap = float((rec - x_fwd).abs().max())
    org, out = (x * 255).round(), (rec * 255).round()
    return {
        "bpp": rate,
        "psnr-rgb": psnr255(org, out),
        "mse": float(torch.mean((org - out) ** 2)) / 255.0**2,
        "ms-ssim-rgb": ms_ssim_or_nan(org, out),
        "encoding_time": enc_t,
        "decoding_time": dec_t,
        "max_decode_gap": gap,
    }


def evaluate(
    paths: list[Path],
    dataset: str,
    estimate: bool,
    device: torch.device,
    model: str | None = None,
    N: int | None = None,
    M: int | None = None,
    lambdas: dict[Path, float] | None = None,
) -> list[dict[str, Any]]:
    """One point per checkpoint; ``lambdas`` gives the λ of checkpoints that do not record it."""
    pictures = data.resolve(dataset, "test")
    images = [
        torch.from_numpy(np.ascontiguousarray(pictures[i].transpose(2, 0, 1)))[None]
        for i in range(len(pictures))
    ]
    points = []
    for path in paths:
        net, ckpt = load_model(path, device, model, N, M)
        per_image = [code_image(net, x.to(device), estimate) for x in images]
        mean = {
            k: float(np.nanmean([r[k] for r in per_image]))
            if not all(math.isnan(r[k]) for r in per_image)
            else math.nan
            for k in per_image[0]
        }
        mean["max_decode_gap"] = max(r["max_decode_gap"] for r in per_image)
        args = ckpt.get("args", {})
        points.append(
            {
                **mean,
                "checkpoint": str(path),
                "lambda": args.get("lmbda", (lambdas or {}).get(path)),
                "balancer": ckpt.get("balancer", {}).get("balancer"),
                "step": ckpt.get("step"),
                "model": ckpt.get("model"),
            }
        )
    points.sort(key=lambda p: p["bpp"])
    return points


def results_json(
    points: list[dict[str, Any]], name: str, description: str, dataset: str, estimate: bool
) -> dict[str, Any]:
    keys = [
        "bpp",
        "psnr-rgb",
        "ms-ssim-rgb",
        "mse",
        "encoding_time",
        "decoding_time",
        "lambda",
        "checkpoint",
        "step",
    ]
    consistent = all(p["max_decode_gap"] <= CONSISTENCY_TOL for p in points)
    return {
        "name": name,
        "description": description,
        "dataset": dataset,
        "estimate": estimate,
        "bpp_kind": "likelihood estimate" if estimate else "entropy-coded bitstream",
        "decode_matches_forward": consistent,
        "max_decode_gap": max(p["max_decode_gap"] for p in points),
        "results": {k: [p[k] for p in points] for k in keys},
    }


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.cuda and not torch.cuda.is_available():
            raise UsageError("--cuda: no CUDA device is available; drop --cuda")
        device = torch.device("cuda" if args.cuda else "cpu")
        paths, lambdas = list(args.checkpoints), {}
        if args.pretrained:
            from plugins.lic import pretrained

            for entry in pretrained.select(args.pretrained):
                paths.append(entry.path)
                lambdas[entry.path] = entry.lmbda
        if not paths:
            raise UsageError("no checkpoints: pass checkpoint files or --pretrained NAME")
        points = evaluate(
            paths, args.dataset, args.estimate, device, args.model, args.N, args.M, lambdas
        )
        name = args.name or (points[0]["balancer"] or "model")
        out = results_json(points, name, args.description, args.dataset, args.estimate)
        text = json.dumps(out, indent=2, allow_nan=True)
        if args.out is None:
            print(text)
        else:
            if args.out.parent and not args.out.parent.exists():
                args.out.parent.mkdir(parents=True)
            args.out.write_text(text + "\n")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    check = (
        "decoded images match the forward pass"
        if out["decode_matches_forward"]
        else "WARNING: decoded images differ from the forward pass"
    )
    r = out["results"]
    pts = ", ".join(f"{b:.3f} bpp / {p:.2f} dB" for b, p in zip(r["bpp"], r["psnr-rgb"]))
    print(
        f"{name}: {len(points)} point(s): {pts} ({out['bpp_kind']}); {check} "
        f"(max gap {out['max_decode_gap']:.2g})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
