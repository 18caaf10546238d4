"""How far the representation Gramian's weights lie from the exact ones along a training run.

A shipped model is fine-tuned with a Gramian balancer (Solution 2 by default, with the options
given) and the exact Gramian, by the trainer's own step; before every step the same balancer with
``gramian="representation"`` balances the same batch with the same quantisation noise (its
gradients are discarded), so both see the same parameters. Printed per model: the median, 90th
percentile and largest difference of the weight on distortion ``w_D`` and, for Solution 2, of the
QP's log-loss weight ``z_D`` (extras ``z``, before any trust region), and the last values of each.

    python benchmarks/representation_weights.py [--models mbt2018-mean-N32-M48-mse-0.0018 ...] \\
        [--steps 200] [--balancer qp] [--balancer-opt trust_radius=0.1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import moo_opt  # noqa: E402
from moo_opt.training import with_outputs_of  # noqa: E402
from plugins.lic import models  # noqa: E402
from plugins.lic.train import Trainer, build_parser  # noqa: E402


def representation_info(trainer: Trainer, twin: moo_opt.Balancer, x: torch.Tensor) -> tuple:
    """``twin``'s info on batch ``x`` (the representation Gramian), leaving no gradient behind and
    the global random state (the quantisation noise) as it found it."""
    state = torch.random.get_rng_state()
    losses, reps = with_outputs_of(
        models.representation(trainer.net), lambda: trainer.losses(x).as_list()
    )
    info = twin.backward(losses, trainer.main_params, representations=reps)
    trainer.optimizer.zero_grad(set_to_none=True)
    torch.random.set_rng_state(state)
    return info


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.median(ordered):.2e} | {p90:.2e} | {ordered[-1]:.2e}"


def run(name: str, args: argparse.Namespace, out: Path) -> str:
    opts = [x for o in args.balancer_opt for x in ("--balancer-opt", o)]
    argv = ["-d", args.photos, "--pretrained", name, "--finetune", "--steps", str(args.steps),
            "--patch-size", str(args.patch), str(args.patch), "--batch-size", str(args.batch),
            "-lr", args.lr, "--balancer", args.balancer, *opts, "--no-progress",
            "--out", str(out / name)]  # fmt: skip
    trainer = Trainer(build_parser().parse_args(argv))
    options = {k: v for k, v in trainer.balancer._options().items() if k != "num_objectives"}
    twin = moo_opt.create(args.balancer, 2, **{**options, "gramian": "representation"})
    dw: list[float] = []
    dz: list[float] = []
    last = ""
    while trainer.step < args.steps:
        for x in trainer._loader():
            if trainer.step >= args.steps:
                break
            x = x.to(trainer.device)
            rep = representation_info(trainer, twin, x)
            exact, *_ = trainer.train_step(x)
            trainer.step += 1
            dw.append(abs(float(rep.weights[0]) - float(exact.weights[0])))
            last = f"w_D {float(exact.weights[0]):.4f} / {float(rep.weights[0]):.4f}"
            if "z" in exact.extras:
                z, z_rep = float(exact.extras["z"][0]), float(rep.extras["z"][0])
                dz.append(abs(z_rep - z))
                last = f"z_D {z:.4f} / {z_rep:.4f}; {last}"
        trainer.epoch += 1
    z_cells = quantiles(dz) if dz else "— | — | —"
    return f"| {name} | {len(dw)} | {quantiles(dw)} | {z_cells} | {last} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["mbt2018-mean-N32-M48-mse-0.0018"])
    p.add_argument("--photos", default="data/photos")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", default="5e-5")
    p.add_argument("--balancer", default="qp")
    p.add_argument("--balancer-opt", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    print(
        "| model | steps | |Δw_D| median | p90 | max | |Δz_D| median | p90 | max "
        "| last (exact / representation) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            print(run(name, args, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
