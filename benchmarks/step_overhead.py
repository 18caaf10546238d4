"""Time per LIC training step of each balancer, as a ratio to the standard loss's step.

Each variant is a real :class:`plugins.lic.train.Trainer` (the training step the CLI runs:
forward, balancing, clipping, optimiser and auxiliary steps, Solution 1's extra forward), plus
``compressai``: CompressAI's ``examples/train.py`` step (its ``RateDistortionLoss``, one
backward, clipping, the two optimisers) on the same model and batches. Repetitions are
interleaved (every round runs every variant once, in a shuffled order, on the same batch), so all
variants see the same machine noise; the ratio of a round is ``t_variant / t_fixed`` of that round
and the table prints its median, and the ratio of the mean times (the one that counts for the
amortised modes, whose cost falls on one step in k: use a multiple of k rounds).

    python benchmarks/step_overhead.py                       # both models, CPU sizes
    python benchmarks/step_overhead.py --models mbt2018-mean --patch 256 --cuda
    python benchmarks/step_overhead.py --profile qp          # where the time goes

On CUDA the time is measured with CUDA events, and ``--sync-count`` counts the host
synchronisations of one step of each variant with ``torch.cuda.set_sync_debug_mode("warn")``.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import moo_opt  # noqa: E402
from plugins.lic import models  # noqa: E402
from plugins.lic.objectives import rd_losses  # noqa: E402
from plugins.lic.train import Trainer, build_parser  # noqa: E402

#: variant → (balancer, --balancer-opt values, other trainer flags); "compressai" is CompressAI's
#: own step
VARIANTS: dict[str, tuple[str, list[str]] | tuple[str, list[str], list[str]]] = {
    "compressai": ("fixed", []),
    "fixed": ("fixed", []),
    "c2f-same": ("coarse-to-fine", []),
    "c2f-next": ("coarse-to-fine", ["mode=next_batch"]),
    "c2f-every4": ("coarse-to-fine", ["update_every=4"]),
    "qp": ("qp", []),
    "qp-every2": ("qp", ["solve_every=2"]),
    "mgda": ("mgda", []),
    "qp-rep": ("qp", ["gramian=representation"]),
    "mgda-rep": ("mgda", ["gramian=representation"]),
    "fixed-cl": ("fixed", [], ["--channels-last"]),
    "c2f-same-cl": ("coarse-to-fine", [], ["--channels-last"]),
    # the extra forward on a random sub-batch of 2 (of --batch's 8 by default; an approximation)
    "c2f-sub2": ("coarse-to-fine", [], ["--update-subbatch", "2"]),
    "c2f-sub2-every4": ("coarse-to-fine", ["update_every=4"], ["--update-subbatch", "2"]),
}
#: the other registered balancers at their defaults (the zoo's cost table: --variants zoo)
ZOO = [
    name for name in moo_opt.available() if name not in ("fixed", "coarse-to-fine", "qp", "mgda")
]
VARIANTS.update({name: (name, []) for name in ZOO})
#: model label → CLI flags ("mbt2018-mean": its usual size, CompressAI's quality 3)
MODELS: dict[str, list[str]] = {
    "mbt2018-mean": ["-m", "mbt2018-mean", "--quality", "3"],
    "small": ["-m", "mbt2018-mean", "--N", "32", "--M", "48"],
}


def make_trainer(
    model: list[str], variant: str, patch: int, batch: int, cuda: bool, out: Path
) -> Trainer:
    balancer, opts, *flags = VARIANTS[variant]
    argv = [*(flags[0] if flags else []), *model, "-d", "synthetic",
            "--patch-size", str(patch), str(patch), "--batch-size", str(batch),
            "--test-batch-size", "1", "--balancer", balancer, "--out", str(out / variant),
            "--no-progress"]  # fmt: skip
    for opt in opts:
        argv += ["--balancer-opt", opt]
    if cuda:
        argv.append("--cuda")
    return Trainer(build_parser().parse_args(argv))


def compressai_step(trainer: Trainer) -> Callable[[torch.Tensor], None]:
    """CompressAI's ``examples/train.py`` ``train_one_epoch`` body, with its own loss class."""
    from compressai.losses import RateDistortionLoss

    net, opt, aux_opt = trainer.net, trainer.optimizer, trainer.aux_optimizer
    criterion = RateDistortionLoss(lmbda=trainer.args.lmbda)
    clip = trainer.args.clip_max_norm

    def step(x: torch.Tensor) -> None:
        opt.zero_grad()
        aux_opt.zero_grad()
        out = net(x)
        loss = criterion(out, x)["loss"]
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        aux = net.aux_loss()
        aux.backward()
        aux_opt.step()

    return step


def step_fn(trainer: Trainer, variant: str) -> Callable[[torch.Tensor], None]:
    if variant == "compressai":
        return compressai_step(trainer)
    return lambda x: trainer.train_step(x)


def timed(fn: Callable[[torch.Tensor], None], x: torch.Tensor, cuda: bool) -> float:
    """Seconds for one call: CUDA events on a GPU, the wall clock on the CPU."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def sync_count(fn: Callable[[torch.Tensor], None], x: torch.Tensor) -> int:
    """Host synchronisations of one call, as ``set_sync_debug_mode("warn")`` reports them."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def batches(trainer: Trainer, batch: int, count: int, device: torch.device) -> list[torch.Tensor]:
    n = len(trainer.train_set)
    return [
        torch.stack([trainer.train_set[(k * batch + i) % n] for i in range(batch)]).to(device)
        for k in range(count)
    ]


def run_model(label: str, args: argparse.Namespace, variants: list[str], out: Path) -> list[str]:
    torch.manual_seed(0)
    trainers = {
        v: make_trainer(MODELS[label], v, args.patch, args.batch, args.cuda, out) for v in variants
    }
    fns = {v: step_fn(t, v) for v, t in trainers.items()}
    device = next(iter(trainers.values())).device
    xs = batches(next(iter(trainers.values())), args.batch, args.warmup + args.reps, device)
    spec = next(iter(trainers.values())).spec
    for k in range(args.warmup):  # allocator, autotuning, Adam state
        for v in variants:
            fns[v](xs[k])
    times: dict[str, list[float]] = {v: [] for v in variants}
    order = list(variants)
    rng = random.Random(0)
    for k in range(args.warmup, args.warmup + args.reps):
        rng.shuffle(order)
        for v in order:
            times[v].append(timed(fns[v], xs[k], args.cuda))
    syncs = (
        {v: sync_count(fns[v], xs[0]) for v in variants} if args.cuda and args.sync_count else {}
    )
    base = times["fixed"]
    lines = [
        f"\n{label}: {spec.name} N={spec.N} M={spec.M}, batch {args.batch}, "
        f"{args.patch}² patches, {args.reps} interleaved rounds after {args.warmup} warm-up",
        "",
        "| variant | median step (ms) | mean step (ms) | median ratio to fixed | ratio IQR "
        "| mean-time ratio |" + (" host syncs per step |" if syncs else ""),
        "|---|---|---|---|---|---|" + ("---|" if syncs else ""),
    ]
    for v in variants:
        ratios = sorted(t / b for t, b in zip(times[v], base))
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [ratios[0], 0, ratios[-1]]
        mean = statistics.fmean(times[v])
        row = (
            f"| {v} | {1000 * statistics.median(times[v]):.1f} | {1000 * mean:.1f} "
            f"| {statistics.median(ratios):.3f}× | "
            f"{q[0]:.3f}–{q[2]:.3f} | {mean / statistics.fmean(base):.3f}× |"
        )
        if syncs:
            row += f" {syncs[v]} |"
        lines.append(row)
    return lines


def forward_modes(label: str, args: argparse.Namespace, out: Path) -> list[str]:
    """Solution 1's extra forward (losses only) under ``no_grad``, ``inference_mode`` and
    channels-last, beside the training forward that builds a graph; interleaved rounds."""
    import copy

    trainer = make_trainer(MODELS[label], "fixed", args.patch, args.batch, args.cuda, out)
    last = copy.deepcopy(trainer.net).to(memory_format=torch.channels_last)
    xs = batches(trainer, args.batch, args.warmup + args.reps, trainer.device)

    def losses(net: torch.nn.Module, x: torch.Tensor) -> None:
        rd_losses(net(x), x, trainer.args.lmbda)  # the trainer's loss arithmetic

    def with_grad(x: torch.Tensor) -> None:
        losses(trainer.net, x)

    def no_grad(x: torch.Tensor) -> None:
        with torch.no_grad():
            losses(trainer.net, x)

    def inference(x: torch.Tensor) -> None:
        with torch.inference_mode():
            losses(trainer.net, x)

    def channels_last(x: torch.Tensor) -> None:
        with torch.inference_mode():
            losses(last, x.contiguous(memory_format=torch.channels_last))

    modes = {
        "graph (training forward)": with_grad,
        "no_grad": no_grad,
        "inference_mode": inference,
        "inference_mode + channels_last": channels_last,
    }
    for k in range(args.warmup):
        for fn in modes.values():
            fn(xs[k])
    times: dict[str, list[float]] = {m: [] for m in modes}
    order, rng = list(modes), random.Random(1)
    for k in range(args.warmup, args.warmup + args.reps):
        rng.shuffle(order)
        for m in order:
            times[m].append(timed(modes[m], xs[k], args.cuda))
    base = times["no_grad"]
    lines = [f"\n{label}: the extra forward of Solution 1 (losses only), "
             f"batch {args.batch}, {args.patch}² patches", "",
             "| forward | median (ms) | median ratio to no_grad |", "|---|---|---|"]  # fmt: skip
    for m, ts in times.items():
        lines.append(
            f"| {m} | {1000 * statistics.median(ts):.1f} "
            f"| {statistics.median(t / b for t, b in zip(ts, base)):.3f}× |"
        )
    return lines


def profile(label: str, variant: str, args: argparse.Namespace, out: Path) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    trainer = make_trainer(MODELS[label], variant, args.patch, args.batch, args.cuda, out)
    fn = step_fn(trainer, variant)
    xs = batches(trainer, args.batch, 3 + args.reps, trainer.device)
    for x in xs[:3]:
        fn(x)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.cuda else [])
    with torch_profile(activities=activities) as prof:
        for x in xs[3:]:
            fn(x)
    key = "self_cuda_time_total" if args.cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=30))


def machine() -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    ).stdout.strip()
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU {platform.machine()}"
    return (
        f"{dev} · python {platform.python_version()} · torch {torch.__version__} "
        f"· {torch.get_num_threads()} threads · commit {commit or '?'}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models", default="small,mbt2018-mean", help=f"comma-separated, of {', '.join(MODELS)}"
    )
    p.add_argument("--variants", default=",".join(v for v in VARIANTS if v not in ZOO),
                   help=f"comma-separated, of {', '.join(VARIANTS)} (fixed is always run), "
                        "or 'zoo': every registered balancer")  # fmt: skip
    p.add_argument(
        "--patch",
        type=int,
        default=128,
        help="square patch size (256 is CompressAI's; 128 keeps the CPU run short)",
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=15, help="interleaved rounds")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--cuda", action="store_true")
    p.add_argument(
        "--sync-count", action="store_true", help="CUDA: count host synchronisations per step"
    )
    p.add_argument(
        "--forward-modes",
        action="store_true",
        help="also time the extra forward under no_grad, inference_mode, channels-last",
    )
    p.add_argument(
        "--profile",
        metavar="VARIANT",
        default=None,
        help="profile this variant on the first model instead",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    labels = args.models.split(",")
    variants = (
        ["fixed", "c2f-same", "qp", "mgda", *ZOO]
        if args.variants == "zoo"
        else args.variants.split(",")
    )
    for name in [*labels, *variants]:
        if name not in MODELS and name not in VARIANTS:
            p.error(f"{name}: not a model ({', '.join(MODELS)}) or variant ({', '.join(VARIANTS)})")
    if "fixed" not in variants:
        variants.insert(0, "fixed")
    models.available()  # imports compressai once, outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        if args.profile:
            profile(labels[0], args.profile, args, Path(tmp))
            return 0
        print(machine())
        print(
            "command: python benchmarks/step_overhead.py "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}"
        )
        for label in labels:
            print("\n".join(run_model(label, args, variants, Path(tmp))), flush=True)
            if args.forward_modes:
                print("\n".join(forward_modes(label, args, Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
