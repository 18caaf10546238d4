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
    python benchmarks/step_overhead.py --variants all --amp  # every variant, bf16 autocast

``--variants all`` is every entry of ``VARIANTS`` (so every registered balancer, and whatever
variant is added there later); ``--amp`` and ``--channels-last`` give every variant, the
``compressai`` step included, the trainer's flag of that name. ``--max-seconds`` stops the timed
rounds once that much time has gone (the table says how many ran); ``--json`` writes the rows.

On CUDA the time is measured with CUDA events, and ``--sync-count`` counts the host
synchronisations of one step of each variant with ``torch.cuda.set_sync_debug_mode("warn")``.
"""

from __future__ import annotations

import argparse
import json
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
    "qp-rep-shared": ("qp", ["gramian=representation", "shared_only=true"]),
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


def own_flags(variant: str) -> list[str]:
    """The trainer flags of the variant itself (``fixed-cl``: ``--channels-last``)."""
    entry = VARIANTS[variant]
    return list(entry[2]) if len(entry) > 2 else []


def make_trainer(
    model: list[str],
    variant: str,
    patch: int,
    batch: int,
    cuda: bool,
    out: Path,
    extra: tuple[str, ...] = (),
) -> Trainer:
    """The variant's trainer; ``extra`` are trainer flags given to every variant (``--amp``)."""
    balancer, opts = VARIANTS[variant][:2]
    own = [f for f in own_flags(variant) if f not in extra]
    argv = [*extra, *own, *model, "-d", "synthetic",
            "--patch-size", str(patch), str(patch), "--batch-size", str(batch),
            "--test-batch-size", "1", "--balancer", balancer, "--out", str(out / variant),
            "--no-progress"]  # fmt: skip
    for opt in opts:
        argv += ["--balancer-opt", opt]
    if cuda:
        argv.append("--cuda")
    return Trainer(build_parser().parse_args(argv))


def compressai_step(trainer: Trainer) -> Callable[[torch.Tensor], None]:
    """CompressAI's ``examples/train.py`` ``train_one_epoch`` body, with its own loss class; under
    the trainer's ``--amp`` / ``--channels-last`` its forward gets the same autocast / memory
    format as the trainer's (CompressAI's script has neither), so the row stays like for like."""
    from compressai.losses import RateDistortionLoss

    net, opt, aux_opt = trainer.net, trainer.optimizer, trainer.aux_optimizer
    criterion = RateDistortionLoss(lmbda=trainer.args.lmbda)
    clip = trainer.args.clip_max_norm
    amp, channels_last = trainer.args.amp, trainer.args.channels_last

    def step(x: torch.Tensor) -> None:
        opt.zero_grad()
        aux_opt.zero_grad()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
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


Step = Callable[[torch.Tensor], None]


def trainer_flags(args: argparse.Namespace) -> tuple[str, ...]:
    """The trainer flags that ``--amp`` / ``--channels-last`` give every variant."""
    flags = (("--amp", args.amp), ("--channels-last", args.channels_last))
    return tuple(flag for flag, on in flags if on)


def select_variants(spec: str, extra: tuple[str, ...] = ()) -> list[str]:
    """``--variants``: ``all`` (every entry of VARIANTS, less those whose own flags ``extra``
    already gives every variant: they would repeat their base row), ``zoo``, or a list."""
    if spec == "all":
        return [v for v in VARIANTS if not (own_flags(v) and set(own_flags(v)) <= set(extra))]
    if spec == "zoo":
        return ["fixed", "c2f-same", "qp", "mgda", *ZOO]
    return spec.split(",")


def build(
    label: str, args: argparse.Namespace, variants: list[str], out: Path, failed: list[str]
) -> dict[str, tuple[Trainer, Step]]:
    """Each variant's trainer and step; one that cannot be built is left out (a line in
    ``failed``) so the others' rows survive, except ``fixed``, the baseline."""
    torch.manual_seed(0)
    built: dict[str, tuple[Trainer, Step]] = {}
    for v in variants:
        try:
            t = make_trainer(
                MODELS[label], v, args.patch, args.batch, args.cuda, out, trainer_flags(args)
            )
            built[v] = (t, step_fn(t, v))
        except Exception as exc:
            if v == "fixed":
                raise
            failed.append(f"{v}: {type(exc).__name__}: {exc}")
    return built


def attempt(
    fns: dict[str, Step], v: str, x: torch.Tensor, cuda: bool, failed: list[str]
) -> float | None:
    """The seconds of one step of ``v``; a variant whose step raises is dropped from ``fns``."""
    try:
        return timed(fns[v], x, cuda)
    except Exception as exc:
        if v == "fixed":
            raise
        failed.append(f"{v}: {type(exc).__name__}: {exc}")
        del fns[v]
        return None


def measure(
    fns: dict[str, Step], xs: list[torch.Tensor], args: argparse.Namespace, failed: list[str]
) -> tuple[dict[str, list[float]], int]:
    """Warm-up, then interleaved rounds (shuffled order, same batch), until ``--reps`` rounds or
    ``--max-seconds``; returns each surviving variant's times and the number of rounds."""
    for k in range(args.warmup):  # allocator, autotuning, Adam state
        for v in list(fns):
            attempt(fns, v, xs[k], args.cuda, failed)
    times: dict[str, list[float]] = {v: [] for v in fns}
    order, rng = list(fns), random.Random(0)
    start, rounds = time.perf_counter(), 0
    for k in range(args.warmup, args.warmup + args.reps):
        rng.shuffle(order)
        for v in [v for v in order if v in fns]:
            seconds = attempt(fns, v, xs[k], args.cuda, failed)
            if seconds is not None:
                times[v].append(seconds)
        rounds += 1
        if args.max_seconds and time.perf_counter() - start > args.max_seconds:
            break
    return {v: ts for v, ts in times.items() if v in fns}, rounds


def rows(
    times: dict[str, list[float]], syncs: dict[str, int], batch: int
) -> list[dict[str, float | int | str | None]]:
    """One record per variant: median and mean step, ratios to ``fixed``, images/s, syncs."""
    base = times["fixed"]
    out: list[dict[str, float | int | str | None]] = []
    for v, ts in times.items():
        ratios = sorted(t / b for t, b in zip(ts, base))
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [ratios[0], 0, ratios[-1]]
        median, mean = statistics.median(ts), statistics.fmean(ts)
        out.append({"variant": v, "median_ms": 1000 * median, "mean_ms": 1000 * mean,
                    "median_ratio": statistics.median(ratios), "ratio_q1": q[0],
                    "ratio_q3": q[2], "mean_ratio": mean / statistics.fmean(base),
                    "images_per_s": batch / median, "syncs": syncs.get(v)})  # fmt: skip
    return out


def table(records: list[dict[str, float | int | str | None]], syncs: bool) -> list[str]:
    lines = [
        "| variant | median step (ms) | mean step (ms) | median ratio to fixed | ratio IQR "
        "| mean-time ratio | images/s |" + (" host syncs per step |" if syncs else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if syncs else ""),
    ]
    for r in records:
        lines.append(
            f"| {r['variant']} | {r['median_ms']:.1f} | {r['mean_ms']:.1f} "
            f"| {r['median_ratio']:.3f}× | {r['ratio_q1']:.3f}–{r['ratio_q3']:.3f} "
            f"| {r['mean_ratio']:.3f}× | {r['images_per_s']:.1f} |"
            + (f" {r['syncs']} |" if syncs else "")
        )
    return lines


def run_model(
    label: str, args: argparse.Namespace, variants: list[str], out: Path
) -> tuple[list[str], dict[str, object]]:
    """The table of one model (markdown lines) and its record (for ``--json``)."""
    failed: list[str] = []
    built = build(label, args, variants, out, failed)
    trainer = built["fixed"][0]
    fns = {v: fn for v, (_, fn) in built.items()}
    xs = batches(trainer, args.batch, args.warmup + args.reps, trainer.device)
    times, rounds = measure(fns, xs, args, failed)
    syncs = {v: sync_count(fns[v], xs[0]) for v in times} if args.cuda and args.sync_count else {}
    records = rows(times, syncs, args.batch)
    spec, flags = trainer.spec, " ".join(trainer_flags(args))
    head = (
        f"\n{label}: {spec.name} N={spec.N} M={spec.M}, batch {args.batch}, "
        f"{args.patch}² patches{', ' + flags if flags else ''}, {rounds} interleaved rounds "
        f"after {args.warmup} warm-up"
    )
    lines = [head, "", *table(records, bool(syncs))]
    lines += [f"left out: {line}" for line in failed]
    record = {"model": label, "architecture": spec.name, "N": spec.N, "M": spec.M,
              "batch": args.batch, "patch": args.patch, "flags": list(trainer_flags(args)),
              "rounds": rounds, "warmup": args.warmup, "rows": records,
              "left_out": failed}  # fmt: skip
    return lines, record


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


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models", default="small,mbt2018-mean", help=f"comma-separated, of {', '.join(MODELS)}"
    )
    p.add_argument("--variants", default=",".join(v for v in VARIANTS if v not in ZOO),
                   help=f"comma-separated, of {', '.join(VARIANTS)} (fixed is always run), "
                        "'zoo': every registered balancer, or 'all': every variant")  # fmt: skip
    p.add_argument(
        "--patch",
        type=int,
        default=128,
        help="square patch size (256 is CompressAI's; 128 keeps the CPU run short)",
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=15, help="interleaved rounds")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="stop the timed rounds of a model after the round that passes this many seconds",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--amp", action="store_true", help="every variant with the trainer's --amp")
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="every variant with the trainer's --channels-last",
    )
    p.add_argument(
        "--sync-count", action="store_true", help="CUDA: count host synchronisations per step"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the tables' rows here")
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
    return p


def main(argv: list[str] | None = None) -> int:
    p = arg_parser()
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    labels = args.models.split(",")
    variants = select_variants(args.variants, trainer_flags(args))
    for name in [*labels, *variants]:
        if name not in MODELS and name not in VARIANTS:
            p.error(f"{name}: not a model ({', '.join(MODELS)}) or variant ({', '.join(VARIANTS)})")
    if "fixed" not in variants:
        variants.insert(0, "fixed")
    models.available()  # imports compressai once, outside the timings
    records: list[dict[str, object]] = []
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
            lines, record = run_model(label, args, variants, Path(tmp))
            print("\n".join(lines), flush=True)
            records.append(record)
            if args.json:  # after each model: a later failure keeps the earlier rows
                args.json.write_text(json.dumps({"machine": machine(), "models": records}))
            if args.forward_modes:
                print("\n".join(forward_modes(label, args, Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
