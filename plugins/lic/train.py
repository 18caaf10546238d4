"""Train a CompressAI model with balanced rate-distortion optimisation.

    python -m plugins.lic.train -m bmshj2018-factorized --N 32 --M 48 -d synthetic \\
        --balancer coarse-to-fine --steps 200 --out runs/x

CompressAI's ``examples/train.py`` flags, plus ``--balancer NAME`` (``fixed`` is the standard
loss L_R + L_D), ``--balancer-opt key=value``, ``--update-subbatch K``, ``--steps``, ``--out`` and
``--finetune``.
Checkpoints (``checkpoint.pth.tar``, ``checkpoint_best.pth.tar``) keep CompressAI's keys; their
``state_dict`` loads into the CompressAI class alone. Bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

import moo_opt
from plugins.lic import checkpoint, data, models, optim
from plugins.lic.errors import ArgumentParser, UsageError, finite, patch_size
from plugins.lic.logs import RunLog
from plugins.lic.objectives import OBJECTIVES, RDLosses, psnr, rd_losses, select

DEFAULT_MODEL = "bmshj2018-factorized"
DEFAULT_LAMBDA = 1e-2


def build_parser() -> argparse.ArgumentParser:
    """The command line: CompressAI's ``examples/train.py`` flags and this plugin's, in the
    order ``--help`` lists them."""
    p = ArgumentParser(prog="python -m plugins.lic.train", description=__doc__.split("\n\n")[0])
    _add_model_and_data_arguments(p)
    _add_optimizer_arguments(p)
    _add_loss_and_batch_arguments(p)
    _add_architecture_and_device_arguments(p)
    _add_checkpoint_arguments(p)
    _add_run_arguments(p)
    _add_balancer_arguments(p)
    _add_schedule_arguments(p)
    _add_output_arguments(p)
    return p


def _add_model_and_data_arguments(p: argparse.ArgumentParser) -> None:
    """The architecture, the training data and the number of passes over it."""
    p.add_argument(
        "-m",
        "--model",
        default=None,
        help=(
            f"architecture (default: the checkpoint's, else {DEFAULT_MODEL}): "
            f"{', '.join(models.available())}"
        ),
    )
    p.add_argument(
        "-d",
        "--dataset",
        default="synthetic",
        help="synthetic (default, embedded), or an ImageFolder root with train/ and test/",
    )
    p.add_argument(
        "-e", "--epochs", type=int, default=100, help="passes over the training set (see --steps)"
    )


def _add_optimizer_arguments(p: argparse.ArgumentParser) -> None:
    """The optimisers, their learning rates and the weight average (``--ema``)."""
    p.add_argument(
        "-lr",
        "--learning-rate",
        type=finite,
        default=1e-4,
        help="learning rate of the model's parameters",
    )
    p.add_argument(
        "--aux-learning-rate",
        type=finite,
        default=1e-3,
        help="learning rate of the entropy bottleneck's quantiles (Adam)",
    )
    p.add_argument(
        "--optimizer",
        choices=optim.OPTIMIZERS,
        default="adam",
        help="for the model's parameters (the auxiliary loss keeps Adam)",
    )
    p.add_argument(
        "--momentum", type=finite, default=0.0, help="SGD momentum (--optimizer sgd; 0: plain SGD)"
    )
    p.add_argument(
        "--ema",
        type=finite,
        default=0.0,
        metavar="DECAY",
        help=(
            "keep an exponential moving average of the weights "
            "(e.g. 0.999, with torch_ema's warm-up min(d, (1+t)/(10+t))): "
            "tested, evaluated and saved as state_dict; 0: off"
        ),
    )


def _add_loss_and_batch_arguments(p: argparse.ArgumentParser) -> None:
    """The rate-distortion loss (λ, metric) and the batch and crop sizes."""
    p.add_argument(
        "--lambda",
        dest="lmbda",
        type=finite,
        default=None,
        help=(
            "R-D trade-off inside the distortion λ·255²·MSE "
            f"(default: the checkpoint's, else {DEFAULT_LAMBDA})"
        ),
    )
    p.add_argument(
        "--metric",
        choices=["mse", "ms-ssim"],
        default=None,
        help="distortion (default: the checkpoint's, else mse)",
    )
    p.add_argument(
        "--batch-size", type=int, default=16, help="training crops per step (per process)"
    )
    p.add_argument("--test-batch-size", type=int, default=64, help="test crops per batch")
    p.add_argument(
        "--patch-size",
        type=int,
        nargs="+",
        default=(256, 256),
        metavar=("H", "W"),
        help="training crop: H W, or one value for a square",
    )


def _add_architecture_and_device_arguments(p: argparse.ArgumentParser) -> None:
    """The model's size (``--quality``, ``--N``, ``--M``) and where and how it runs."""
    p.add_argument(
        "--quality",
        type=int,
        default=None,
        help="CompressAI quality whose N, M are the defaults (default: 1)",
    )
    p.add_argument(
        "--N",
        type=int,
        default=None,
        help="channels of the transforms (default: the checkpoint's, else --quality's)",
    )
    p.add_argument(
        "--M",
        type=int,
        default=None,
        help="channels of the latent (default: the checkpoint's, else --quality's)",
    )
    p.add_argument("--cuda", action="store_true", help="train on the GPU")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast of the forward pass")
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="channels-last memory format for the model and batches (faster convolutions on CPUs)",
    )


def _add_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    """What the run starts from: a checkpoint to resume, or weights to fine-tune."""
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help=(
            "resume from it (or, with --finetune, load its weights only: "
            "then also a bare state_dict or a CompressAI train.py checkpoint; "
            "default: none, start from scratch)"
        ),
    )
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="NAME",
        help=(
            "a shipped model (python -m plugins.lic.pretrained lists them) as --checkpoint; "
            "its λ and metric are the defaults (default: none)"
        ),
    )
    p.add_argument(
        "--finetune",
        action="store_true",
        help="load only the model weights from --checkpoint/--pretrained (start of Solution 2)",
    )
    p.add_argument(
        "--keep-optimizer",
        action="store_true",
        help=(
            "with --finetune: carry the checkpoint's optimiser state over "
            "(Adam's moments; the same --optimizer), at the new -lr"
        ),
    )


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The seed, the gradient clipping and the data-loading processes."""
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the initial weights, the crops and the quantisation noise",
    )
    p.add_argument(
        "--clip_max_norm", type=finite, default=1.0, help="gradient clipping max norm (0 disables)"
    )
    p.add_argument(
        "-n",
        "--num-workers",
        type=int,
        default=0,
        help="data-loading processes (0: in the training process)",
    )


def _add_balancer_arguments(p: argparse.ArgumentParser) -> None:
    """The balancer of the rate and distortion objectives and its options."""
    p.add_argument("--balancer", default="fixed", help=f"one of {', '.join(moo_opt.available())}")
    p.add_argument(
        "--balancer-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="balancer option, repeatable",
    )
    p.add_argument(
        "--update-subbatch",
        type=int,
        default=None,
        metavar="K",
        help=(
            "recompute the losses after the step on K random samples of the batch only "
            "(1 <= K <= --batch-size; balancers that learn from that recomputation, e.g. "
            "coarse-to-fine): an approximation that makes the extra forward about K/batch of its "
            "cost, logged approximate=1 (default: off, the whole batch, exact)"
        ),
    )


def _add_schedule_arguments(p: argparse.ArgumentParser) -> None:
    """The step budget, the crops per epoch, when to test and to save, and the learning-rate
    schedule."""
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="stop after this many optimiser steps (default: none, --epochs decides)",
    )
    p.add_argument(
        "--crops-per-image",
        default="auto",
        metavar="K|auto",
        help=(
            "random crops of each training image per epoch "
            f"(auto: 1 for {data.AUTO_EPOCH_CROPS}+ images, "
            f"else enough for an epoch of {data.AUTO_EPOCH_CROPS} crops)"
        ),
    )
    p.add_argument(
        "--test-every",
        type=int,
        default=None,
        metavar="STEPS",
        help="test every STEPS steps (default: at the end of each epoch) and at the end",
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=None,
        metavar="STEPS",
        help=(
            "write checkpoint.pth.tar every STEPS steps (default: at each test) and at the end; "
            "checkpoint_best.pth.tar at each test that improves"
        ),
    )
    p.add_argument(
        "--lr-milestones",
        type=int,
        nargs="+",
        default=None,
        metavar="STEP",
        help=(
            "multiply the learning rate by --lr-gamma at these steps "
            "(default: CompressAI's ReduceLROnPlateau on the test loss)"
        ),
    )
    p.add_argument(
        "--lr-gamma", type=finite, default=0.1, help="factor of each --lr-milestones step"
    )


def _add_output_arguments(p: argparse.ArgumentParser) -> None:
    """The output folder, the logging and the tolerance of non-finite steps."""
    p.add_argument(
        "--out", type=Path, default=Path("runs/train"), help="folder for checkpoints and logs"
    )
    p.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="steps between log lines (each reads values back from the device)",
    )
    p.add_argument(
        "--max-skips",
        type=int,
        default=10,
        help="stop after this many consecutive steps with a NaN/Inf loss or gradient",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")


# --------------------------------------------------------------------------- validation
def parse_balancer_options(name: str, pairs: list[str]) -> dict[str, Any]:
    if name in moo_opt.registry.broken():
        raise UsageError(
            f"--balancer {name}: {moo_opt.registry.broken()[name]}; reinstall or fix that package"
        )
    if name not in moo_opt.available():
        raise UsageError(f"--balancer {name}: unknown; available: {', '.join(moo_opt.available())}")
    valid = moo_opt.options(name)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(
                f"--balancer-opt {pair!r}: expected KEY=VALUE, e.g. --balancer-opt gamma=0.003"
            )
        if key not in valid:
            raise UsageError(
                f"--balancer-opt {key}: unknown option of {name}; valid: {', '.join(valid)}"
            )
        lowered = raw.strip().lower()
        if lowered in ("true", "false"):
            value: Any = lowered == "true"
        elif lowered in ("none", "null"):
            value = None
        else:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw  # a string option, e.g. mode=next_batch
        if lowered.lstrip("+-") in ("nan", "inf", "infinity") or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise UsageError(f"--balancer-opt {key}={raw}: must be a finite number")
        out[key] = value
    return out


#: the options ``--balancer qp --finetune`` takes unless ``--balancer-opt`` sets them: the
#: configuration that benchmarks/finetune_study.py found to keep a fine-tuned model's R-D cost
#: (docs/tutorials/finetune.rst); ``--balancer-opt trust_radius=none`` gives the paper's
#: unconstrained QP
FINETUNE_QP_DEFAULTS: dict[str, Any] = {"trust_radius": 0.1}


def make_balancer(args: argparse.Namespace) -> moo_opt.Balancer:
    opts = parse_balancer_options(args.balancer, args.balancer_opt)
    opts.setdefault("nonfinite", "skip")  # a fault costs a step, not the run (see --max-skips)
    if args.balancer == "qp" and args.finetune:
        added = {k: v for k, v in FINETUNE_QP_DEFAULTS.items() if k not in opts}
        opts.update(added)
        if added:
            shown = ", ".join(f"{k}={v}" for k, v in added.items())
            print(
                f"note: --balancer qp --finetune uses {shown} by default "
                "(see docs/tutorials/finetune.rst); "
                f"override with --balancer-opt",
                file=sys.stderr,
            )
    try:
        return moo_opt.create(args.balancer, len(OBJECTIVES), **opts)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--balancer-opt: {exc}") from None


def check_update_subbatch(args: argparse.Namespace, balancer: moo_opt.Balancer) -> None:
    """``--update-subbatch`` only with a balancer that recomputes the losses after the step."""
    if args.update_subbatch is not None and not balancer.takes_update:
        opts = "".join(f" --balancer-opt {o}" for o in args.balancer_opt)
        raise UsageError(
            f"--update-subbatch goes with a balancer that learns from the losses recomputed after "
            f"the step (e.g. coarse-to-fine in its default mode=same_batch); "
            f"--balancer {args.balancer}{opts} does not"
        )


def apply_checkpoint_defaults(args: argparse.Namespace) -> dict[str, Any] | None:
    """Read ``--checkpoint`` (or ``--pretrained``'s file) and fill the flags left unset from it:
    λ and the metric from the run that wrote it, else the defaults. Returns the checkpoint."""
    if args.pretrained is not None:
        from plugins.lic import pretrained

        if args.checkpoint is not None:
            raise UsageError("--pretrained and --checkpoint: pass one of them")
        entry = pretrained.get(args.pretrained)
        args.checkpoint = entry.path
        saved_args: dict[str, Any] = {"lmbda": entry.lmbda, "metric": entry.metric}
    ckpt = None
    if args.checkpoint is not None:
        ckpt = checkpoint.load(args.checkpoint)
        kind = checkpoint.kind(ckpt)
        if kind != "moo-opt" and not args.finetune:
            what = (
                "a bare state_dict" if kind == "state-dict" else "a CompressAI train.py checkpoint"
            )
            raise UsageError(
                f"--checkpoint {args.checkpoint}: {what} has no training state of "
                "plugins.lic.train to resume; start from its weights with --finetune"
            )
        if args.pretrained is None:
            saved_args = ckpt.get("args", {}) if kind == "moo-opt" else {}
        lam = saved_args.get("lmbda")
        if (
            args.finetune
            and args.lmbda is not None
            and lam is not None
            and not math.isclose(args.lmbda, float(lam))
        ):
            print(
                f"note: fine-tuning at --lambda {args.lmbda:g}; "
                f"the checkpoint was trained at {float(lam):g}",
                file=sys.stderr,
            )
        if args.lmbda is None and lam is not None:
            args.lmbda = float(lam)
        if args.metric is None and saved_args.get("metric") is not None:
            args.metric = saved_args["metric"]
    if args.lmbda is None:
        args.lmbda = DEFAULT_LAMBDA
    if args.metric is None:
        args.metric = "mse"
    return ckpt


def model_spec(args: argparse.Namespace, ckpt: dict[str, Any] | None) -> models.ModelSpec:
    """The architecture: the checkpoint's (its description, or read off its tensors), else the
    flags."""
    if ckpt is None:
        return models.spec_for(args.model or DEFAULT_MODEL, args.quality, args.N, args.M)
    return models.resolve(
        ckpt["state_dict"],
        ckpt.get("model"),
        args.model,
        args.N,
        args.M,
        f"--checkpoint {args.checkpoint}",
    )


def validate(args: argparse.Namespace) -> None:
    """Check the flags (after :func:`apply_checkpoint_defaults`); the first bad one raises a
    :class:`UsageError`. Normalises ``--patch-size`` to H W and ``--crops-per-image`` K to an
    int."""
    args.patch_size = patch_size(list(args.patch_size))
    if not (args.lmbda > 0 and math.isfinite(args.lmbda)):
        raise UsageError(
            f"--lambda {args.lmbda}: must be > 0 (e.g. 0.0018 … 0.0483, CompressAI's range)"
        )
    _validate_counts(args)
    _validate_schedule(args)
    _validate_patch(args)
    _validate_optimizer(args)
    _validate_run(args)


def _validate_counts(args: argparse.Namespace) -> None:
    """The sizes, periods and limits that must be positive, and ``--crops-per-image``."""
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--test-batch-size", args.test_batch_size),
        ("--epochs", args.epochs),
        ("--log-every", args.log_every),
        ("--max-skips", args.max_skips),
        ("--test-every", args.test_every),
        ("--save-every", args.save_every),
    ):
        if value is not None and value <= 0:
            raise UsageError(f"{flag} {value}: must be positive")
    if args.update_subbatch is not None and not 1 <= args.update_subbatch <= args.batch_size:
        raise UsageError(
            f"--update-subbatch {args.update_subbatch}: must lie between 1 and "
            f"--batch-size ({args.batch_size})"
        )
    if args.crops_per_image != "auto":
        try:
            args.crops_per_image = int(args.crops_per_image)
        except ValueError:
            raise UsageError(
                f"--crops-per-image {args.crops_per_image}: expected a positive integer or auto"
            ) from None
        if args.crops_per_image <= 0:
            raise UsageError(
                f"--crops-per-image {args.crops_per_image}: must be positive (or auto)"
            )


def _validate_schedule(args: argparse.Namespace) -> None:
    """``--lr-milestones`` with ``--lr-gamma``, and the step budget."""
    if args.lr_milestones is not None:
        if any(m <= 0 for m in args.lr_milestones) or list(args.lr_milestones) != sorted(
            set(args.lr_milestones)
        ):
            raise UsageError(
                f"--lr-milestones {' '.join(map(str, args.lr_milestones))}: "
                "must be increasing positive step numbers"
            )
        if not (0 < args.lr_gamma and math.isfinite(args.lr_gamma)):
            raise UsageError(f"--lr-gamma {args.lr_gamma}: must be > 0")
    if args.steps is not None and args.steps <= 0:
        raise UsageError(f"--steps {args.steps}: must be positive")


def _validate_patch(args: argparse.Namespace) -> None:
    """The training crop: positive, and large enough for MS-SSIM's five scales."""
    if min(args.patch_size) <= 0:
        raise UsageError(f"--patch-size {args.patch_size}: must be positive")
    if args.metric == "ms-ssim" and min(args.patch_size) <= 160:
        raise UsageError(
            "--metric ms-ssim needs patches larger than 160 pixels (five scales); "
            f"got --patch-size {args.patch_size[0]} {args.patch_size[1]}"
        )


def _validate_optimizer(args: argparse.Namespace) -> None:
    """The learning rates, SGD's momentum and the weight average's decay."""
    for flag, rate in (
        ("-lr/--learning-rate", args.learning_rate),
        ("--aux-learning-rate", args.aux_learning_rate),
    ):
        if rate <= 0:
            raise UsageError(f"{flag} {rate:g}: must be > 0 (e.g. 1e-4)")
    if not (0.0 <= args.momentum < 1.0):
        raise UsageError(f"--momentum {args.momentum}: must lie in [0, 1)")
    if args.momentum and args.optimizer != "sgd":
        raise UsageError(
            "--momentum is SGD's; pass --optimizer sgd "
            f"(or drop --momentum with --optimizer {args.optimizer})"
        )
    if not (args.ema == 0.0 or 0.0 < args.ema < 1.0):
        raise UsageError(f"--ema {args.ema}: a decay in (0, 1), e.g. 0.999, or 0 for none")


def _validate_run(args: argparse.Namespace) -> None:
    """``--keep-optimizer``'s pairing with ``--finetune``, the workers and the device."""
    if args.keep_optimizer and not args.finetune:
        raise UsageError(
            "--keep-optimizer goes with --finetune (a resumed run always keeps its optimiser state)"
        )
    if args.num_workers < 0:
        raise UsageError(f"-n/--num-workers {args.num_workers}: must be >= 0")
    if args.cuda and not torch.cuda.is_available():
        raise UsageError("--cuda: no CUDA device is available; drop --cuda to train on the CPU")


def prepare_out(out: Path, resuming: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; pass a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--out {out}: cannot create it ({exc.strerror}); pass a writable folder"
        ) from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"--out {out}: not writable; pass a writable folder")
    if not resuming and (out / checkpoint.LAST).exists():
        raise UsageError(
            f"--out {out}: already holds a run; "
            f"resume it with --checkpoint {out / checkpoint.LAST} or choose another --out"
        )
    checkpoint.remove_stale_temporaries(out)  # left by a run killed while saving


# --------------------------------------------------------------------------- state
def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def distributed_setup(cuda: bool) -> tuple[int, int]:
    """``(rank, world size)``; joins the process group that ``torchrun`` describes in the
    environment (gloo on the CPU, nccl on GPUs). The balancers then average every objective's
    gradient over the processes themselves (see moo_opt.distributed): no DDP wrapper."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


class TrainingStopped(Exception):
    """Training cannot go on (repeated non-finite steps); the message says where to resume."""


class StepMeter:
    """The time per step since the last log line, and each objective's improvement speed: an EMA
    (0.9) of the per-step decrease of log(L + 1), on the device, over the steps not skipped."""

    def __init__(self) -> None:
        self.speed: torch.Tensor | None = None
        self._prev: torch.Tensor | None = None
        self._time, self._count = 0.0, 0

    def add(self, seconds: float, losses: torch.Tensor, skipped: bool) -> None:
        self._time += seconds
        self._count += 1
        if skipped:
            return
        log_loss = torch.log1p(losses)
        if self._prev is not None:
            delta = self._prev - log_loss
            self.speed = delta if self.speed is None else 0.9 * self.speed + 0.1 * delta
        self._prev = log_loss

    def take_time(self) -> float:
        """The mean seconds per step since the last call (resets the count)."""
        mean = self._time / self._count
        self._time, self._count = 0.0, 0
        return mean


class Trainer:
    def __init__(self, args: argparse.Namespace) -> None:
        """Everything a run needs, from the flags: the balancer, the data, the model and its
        optimisers, and the state of ``--checkpoint`` (resumed, or its weights to fine-tune)."""
        if args.finetune and args.checkpoint is None and args.pretrained is None:
            raise UsageError(
                "--finetune needs --checkpoint or --pretrained "
                "(the pre-trained model to start from)"
            )
        ckpt = apply_checkpoint_defaults(args)
        validate(args)
        self.args = args
        self.balancer = make_balancer(args)
        check_update_subbatch(args, self.balancer)
        self.subbatch = (
            None
            if args.update_subbatch is None
            else data.SubBatchIndices(args.update_subbatch, args.seed)
        )
        self.spec = model_spec(args, ckpt)
        prepare_out(args.out, resuming=args.checkpoint is not None and not args.finetune)
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        self.rank, self.world = distributed_setup(args.cuda)
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if args.cuda else "cpu")
        self._set_up_data()
        self._set_up_model()
        self._set_up_optimizers()
        self.step, self.epoch, self.best = 0, 0, math.inf
        self.last_test_loss: float | None = None
        self.skipped_steps = self.consecutive_skips = 0
        if ckpt is not None:
            self._load(args.checkpoint, ckpt)
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        self.total = args.steps if args.steps is not None else args.epochs * self.steps_per_epoch

    def _set_up_data(self) -> None:
        """The training crops and their sampler (this process's share), and the test batches."""
        args = self.args
        patch = tuple(args.patch_size)
        pictures = data.resolve(args.dataset, "train", args.seed)
        self.train_set = data.PatchDataset(pictures, patch, args.seed)  # type: ignore[arg-type]
        crops = (
            data.auto_crops_per_image(self.train_set.images)
            if args.crops_per_image == "auto"
            else args.crops_per_image
        )
        self.train_set.crops_per_image = crops
        self.test_batches = data.test_batches(
            data.resolve(args.dataset, "test", args.seed), patch, args.test_batch_size
        )  # type: ignore[arg-type]
        if len(self.train_set) < args.batch_size * self.world:
            what = f"--batch-size {args.batch_size}" + (
                f" × {self.world} processes" if self.world > 1 else ""
            )
            raise UsageError(
                f"{what}: more than the {len(self.train_set)} crops of an epoch "
                f"({self.train_set.images} usable training images × {crops}); "
                f"raise --crops-per-image or lower --batch-size"
            )
        self.sampler = data.EpochSampler(
            len(self.train_set), args.batch_size, args.seed, self.rank, self.world
        )

    def _set_up_model(self) -> None:
        """The network (it must fit the crop size) on the device, and its parameter groups."""
        patch = tuple(self.args.patch_size)
        self.net = models.build(self.spec)
        factor = int(getattr(self.net, "downsampling_factor", 1))
        if any(side % factor for side in patch):
            k = max(factor, patch[0] // factor * factor)
            raise UsageError(
                f"--patch-size {patch[0]} {patch[1]}: {self.spec.name} downsamples by {factor}; "
                f"use multiples of {factor}, e.g. --patch-size {k} {k}"
            )
        self.net = self.net.to(self.device)
        if self.args.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.main_params, self.aux_params = models.parameter_groups(self.net)
        uses_representation = getattr(self.balancer, "gramian", "parameters") == "representation"
        self.representation = models.representation(self.net) if uses_representation else None

    def _set_up_optimizers(self) -> None:
        """The model's optimiser (bound to the balancer), the auxiliary loss's Adam, the weight
        average and the learning-rate schedule."""
        args = self.args
        self.optimizer = optim.build(
            args.optimizer, self.main_params, args.learning_rate, args.momentum
        )
        self.aux_optimizer = torch.optim.Adam(self.aux_params, lr=args.aux_learning_rate)
        try:
            # QPBalancer(metric="adam") reads Adam's preconditioner
            self.balancer.bind_optimizer(self.optimizer)
        except ValueError as exc:
            raise UsageError(
                f"--balancer-opt: {exc}; use --optimizer adam or cautious-adam"
            ) from None
        self.ema = optim.WeightEMA(self.net, args.ema) if args.ema else None
        self.scheduler: Any
        if args.lr_milestones is None:  # CompressAI's: on the test loss, at each test
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, "min")
        else:  # stepped after every optimiser step, so that its count is the step number
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
                self.optimizer, args.lr_milestones, args.lr_gamma
            )

    @property
    def plateau(self) -> bool:
        """The learning rate follows the test loss (no ``--lr-milestones``)."""
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def _load(self, path: Path, ckpt: dict[str, Any]) -> None:
        """Start from ``ckpt`` (read from ``path``): its weights; with ``--finetune
        --keep-optimizer`` also its optimisers' state; when resuming, the whole training state."""
        self._load_weights(path, ckpt)
        if self.args.finetune and not self.args.keep_optimizer:
            return
        self._load_optimizers(path, ckpt)
        if self.args.finetune:  # the moments carry over; the learning rates are this run's
            self._set_learning_rates()
            return
        self._load_training_state(path, ckpt)

    def _load_weights(self, path: Path, ckpt: dict[str, Any]) -> None:
        """The network's weights; an architecture they do not fit is a usage error."""
        resume = not self.args.finetune
        # a resumed run continues from the raw weights; a fine-tune starts from the model (the
        # EMA's, if any)
        weights = ckpt.get("raw_state_dict", ckpt["state_dict"]) if resume else ckpt["state_dict"]
        try:
            self.net.load_state_dict(weights)
        except RuntimeError:
            raise UsageError(
                f"--checkpoint {path}: its weights do not fit {self.spec.name} "
                f"(N={self.spec.N}, M={self.spec.M}); pass the matching -m/--N/--M"
            ) from None

    def _load_optimizers(self, path: Path, ckpt: dict[str, Any]) -> None:
        """Both optimisers' state, which must be of plugins.lic.train and of this --optimizer."""
        saved_optimizer = ckpt.get("optimizer_kind", "adam")
        if "optimizer" not in ckpt or checkpoint.kind(ckpt) != "moo-opt":
            raise UsageError(
                f"--checkpoint {path}: holds no optimiser state of plugins.lic.train; "
                "drop --keep-optimizer"
            )
        if saved_optimizer != self.args.optimizer:
            raise UsageError(
                f"--checkpoint {path}: its optimiser is {saved_optimizer}; "
                f"pass --optimizer {saved_optimizer}"
            )
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.aux_optimizer.load_state_dict(ckpt["aux_optimizer"])

    def _set_learning_rates(self) -> None:
        """This run's -lr and --aux-learning-rate on the loaded optimisers."""
        for opt, lr in (
            (self.optimizer, self.args.learning_rate),
            (self.aux_optimizer, self.args.aux_learning_rate),
        ):
            for group in opt.param_groups:
                group["lr"] = lr
                if "initial_lr" in group:
                    group["initial_lr"] = lr

    def _load_training_state(self, path: Path, ckpt: dict[str, Any]) -> None:
        """The rest of a resumed run: the weight average, the schedule, the balancer, the counters
        and the random number generators."""
        if ("ema" in ckpt) != (self.ema is not None):
            flag = f"with --ema {ckpt['ema']['decay']}" if "ema" in ckpt else "without --ema"
            raise UsageError(f"--checkpoint {path}: resume it {flag}, as it was trained")
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        saved_kind = ckpt.get("lr_scheduler_kind", "ReduceLROnPlateau")
        if saved_kind != type(self.scheduler).__name__:
            flag = (
                "without --lr-milestones"
                if saved_kind == "ReduceLROnPlateau"
                else "with its --lr-milestones"
            )
            raise UsageError(
                f"--checkpoint {path}: was trained with the {saved_kind} learning-rate schedule; "
                f"resume {flag}"
            )
        self.scheduler.load_state_dict(ckpt["lr_scheduler"])
        if "balancer" in ckpt:
            if ckpt["balancer"].get("balancer") != self.balancer.name:
                raise UsageError(
                    f"--checkpoint {path}: was trained with "
                    f"--balancer {ckpt['balancer'].get('balancer')}; "
                    "resume with it, or use --finetune"
                )
            self.balancer.load_state_dict(ckpt["balancer"])
        self.step, self.epoch = int(ckpt.get("step", 0)), int(ckpt.get("epoch", 0))
        self.best = float(ckpt.get("best_loss", math.inf))
        loss = ckpt.get("loss")
        self.last_test_loss = None if loss is None else float(loss)
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        self._load_subbatch(path, ckpt)

    def _load_subbatch(self, path: Path, ckpt: dict[str, Any]) -> None:
        """The sub-batch generator's state (``--update-subbatch``): a run resumes with the K it was
        trained with, and draws the sub-batches an uninterrupted run would."""
        saved = ckpt.get("update_subbatch")
        k = None if saved is None else int(saved["k"])
        if k != self.args.update_subbatch:
            flag = "without --update-subbatch" if k is None else f"with --update-subbatch {k}"
            raise UsageError(f"--checkpoint {path}: resume it {flag}, as it was trained")
        if saved is not None and self.subbatch is not None:
            self.subbatch.load_state_dict(saved)

    # ----------------------------------------------------------------------- one step
    def forward(self, x: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
        """The model's output on ``x``, and ``x`` as the model saw it (channels-last with
        ``--channels-last``)."""
        if self.args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.args.amp):
            out = self.net(x)
        return out, x

    def losses(self, x: torch.Tensor) -> RDLosses:
        return rd_losses(*self.forward(x), self.args.lmbda, self.args.metric)

    def train_step(self, x: torch.Tensor) -> tuple[moo_opt.BalanceInfo, Any, torch.Tensor, bool]:
        """One step (:func:`moo_opt.balanced_step`, with the auxiliary loss's step and the weight
        average's update after the optimiser's); returns ``(info, losses, aux loss, skipped)``. A
        NaN or Inf loss or gradient skips the step: parameters, optimisers and the balancer's state
        stay as they were."""
        self.aux_optimizer.zero_grad(set_to_none=True)
        first: list[Any] = []  # the losses of the step (not those the amortised update recomputes)
        auxiliary: list[torch.Tensor] = []
        kept: list[tuple[dict[str, Any], torch.Tensor]] = []  # its forward, for --update-subbatch

        def losses() -> list[torch.Tensor]:
            out, seen = self.forward(x)
            if self.subbatch is not None:
                kept.append((out, seen))
            rd = rd_losses(out, seen, self.args.lmbda, self.args.metric)
            first.append(rd)
            return rd.as_list()

        def after_step() -> None:
            aux = self.net.aux_loss()
            auxiliary.append(aux.detach())
            if bool(torch.isfinite(aux)):
                aux.backward()
                self.aux_optimizer.step()
            if self.ema is not None:
                self.ema.update()

        max_norm = self.args.clip_max_norm if self.args.clip_max_norm > 0 else None
        info = moo_opt.balanced_step(
            self.balancer,
            self.optimizer,
            losses,
            self.main_params,
            max_norm=max_norm,
            after_step=after_step,
            representation=self.representation,
            update_losses=self._subbatch_update_losses(x, kept),
        )
        if self.subbatch is not None and not info.skipped:
            info = self._labelled_approximate(info)
        aux = auxiliary[0] if auxiliary else self.net.aux_loss().detach()
        self._count(info.skipped)
        return info, first[0], aux, info.skipped

    def _subbatch_update_losses(
        self, x: torch.Tensor, kept: list[tuple[dict[str, Any], torch.Tensor]]
    ) -> Callable[[], tuple[list[torch.Tensor], list[torch.Tensor]]] | None:
        """With ``--update-subbatch K``, :func:`moo_opt.balanced_step`'s ``update_losses``: K
        random samples of the batch ``x``, their losses before the step from the step's own
        forward (``kept``: its output and input) and after it from a forward pass on them alone;
        without, None (the whole batch, recomputed)."""
        subbatch = self.subbatch
        if subbatch is None:
            return None

        def update_losses() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
            out, seen = kept[0]
            index = subbatch.draw(x.shape[0]).to(x.device)
            before = rd_losses(select(out, index), seen[index], self.args.lmbda, self.args.metric)
            return before.as_list(), self.losses(x[index]).as_list()

        return update_losses

    def _labelled_approximate(self, info: moo_opt.BalanceInfo) -> moo_opt.BalanceInfo:
        """``info`` with ``approximate=1`` and ``update_subbatch=K`` in its extras (logged): the
        amortised update learns from a sub-batch's estimate of the improvement."""
        assert self.subbatch is not None
        one = torch.ones((), dtype=torch.float64, device=info.losses.device)
        extras = {**info.extras, "approximate": one, "update_subbatch": one * self.subbatch.k}
        return dataclasses.replace(info, extras=extras)

    def _count(self, skipped: bool) -> None:
        if not skipped:
            self.consecutive_skips = 0
            return
        self.skipped_steps += 1
        self.consecutive_skips += 1
        if self.consecutive_skips >= self.args.max_skips:
            last = self.args.out / checkpoint.LAST
            where = (
                f"the last good checkpoint is {last} (resume with --checkpoint {last})"
                if last.exists()
                else "no checkpoint was written yet"
            )
            raise TrainingStopped(
                f"stopped at step {self.step + 1}: {self.consecutive_skips} consecutive steps "
                "had a NaN or Inf loss or gradient; "
                f"{where}; lower -lr/--learning-rate or check the data"
            )

    # ----------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def test(self) -> dict[str, float]:
        """The test loss, of the EMA weights when there are (``--ema``)."""
        if self.ema is not None:
            with self.ema.applied():
                return self._test()
        return self._test()

    def _test(self) -> dict[str, float]:
        self.net.eval()
        sums = {"distortion": 0.0, "rate": 0.0, "mse": 0.0}
        count = 0
        for batch in self.test_batches:
            x = batch.to(self.device)
            rd = self.losses(x)
            n = x.shape[0]
            sums["distortion"] += float(rd.distortion) * n
            sums["rate"] += float(rd.rate) * n
            sums["mse"] += float(rd.mse) * n
            count += n
        self.net.train()
        res = {k: v / count for k, v in sums.items()}
        res["loss"] = res["distortion"] + res["rate"]
        res["psnr"] = psnr(res["mse"])
        return res

    def save(self, last: bool, best: bool) -> None:
        """Write ``checkpoint.pth.tar`` (``last``) and/or ``checkpoint_best.pth.tar`` (``best``)
        with the whole training state at this step; ``loss`` is the latest test loss."""
        extra: dict[str, Any] = {}
        # the model is the EMA's; the raw weights and the average resume the run
        if self.ema is not None:
            with self.ema.applied():
                model = {k: v.clone() for k, v in self.net.state_dict().items()}
            extra = {"raw_state_dict": self.net.state_dict(), "ema": self.ema.state_dict()}
        else:
            model = self.net.state_dict()
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "state_dict": model,
            **extra,
            "optimizer_kind": self.args.optimizer,
            "loss": self.last_test_loss,
            "best_loss": self.best,
            "optimizer": self.optimizer.state_dict(),
            "aux_optimizer": self.aux_optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "lr_scheduler_kind": type(self.scheduler).__name__,
            "balancer": self.balancer.state_dict(),
            "rng": rng_state(),
            **({} if self.subbatch is None else {"update_subbatch": self.subbatch.state_dict()}),
            "model": self.spec.as_dict(),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()},
        }
        if last:
            checkpoint.save_atomic(state, self.args.out / checkpoint.LAST)
        if best:
            checkpoint.save_atomic(state, self.args.out / checkpoint.BEST)

    # ----------------------------------------------------------------------- the loop
    def run(self) -> dict[str, float]:
        """Train to the step budget, one epoch at a time (as CompressAI's ``examples/train.py``:
        train an epoch, test, save); returns the last test."""
        main_process = self.rank == 0  # the only one that logs and writes checkpoints
        log = RunLog(self.args.out) if main_process else None
        bar = self._progress_bar() if main_process else None
        if self.train_set.skipped and main_process:
            print(
                f"note: {self.train_set.skipped} training images smaller than --patch-size "
                "were skipped",
                file=sys.stderr,
            )
        meter = StepMeter()
        result: dict[str, float] = {}
        while self.step < self.total:
            result = self.train_epoch(meter, log, bar) or result
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
        return result

    def _progress_bar(self) -> Any:
        if self.args.no_progress:
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.total,
            initial=self.step,
            desc=f"{self.spec.name} {self.balancer.name}",
            unit="step",
            dynamic_ncols=True,
        )

    def _loader(self) -> DataLoader:
        """The training batches of the current epoch, from the step the run is at."""
        self.epoch = self.step // self.steps_per_epoch
        self.train_set.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, start_batch=self.step % self.steps_per_epoch)
        # a private generator: creating the loader's iterator must not draw from the global RNG
        # (the quantisation noise stream), or a resumed run would diverge from an uninterrupted one
        return DataLoader(
            self.train_set,
            batch_size=self.args.batch_size,
            sampler=self.sampler,
            num_workers=self.args.num_workers,
            drop_last=True,
            generator=torch.Generator().manual_seed(self.args.seed + self.epoch),
        )

    def train_epoch(
        self, meter: StepMeter, log: RunLog | None, bar: Any
    ) -> dict[str, float] | None:
        """The rest of the current epoch (or of the budget): a step per batch, logged every
        ``--log-every`` steps; the test and the checkpoints when due. Returns the last test, if
        any."""
        result = None
        for x in self._loader():
            t0 = time.perf_counter()
            info, rd, aux, skipped = self.train_step(x.to(self.device))
            self.step += 1
            meter.add(time.perf_counter() - t0, info.losses, skipped)
            if (
                self.step % self.args.log_every == 0 or self.step == self.total
            ) and log is not None:
                record = self._record(info, rd, aux, meter.speed, meter.take_time())
                log.write(record)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{record['loss']:.3f}",
                        bpp=f"{record['bpp']:.3f}",
                        psnr=f"{record['psnr']:.2f}",
                        w_d=f"{record['weight/distortion']:.3f}",
                    )
            elif self.step % self.args.log_every == 0 or self.step == self.total:
                meter.take_time()
            if bar is not None:
                bar.update(1)
            if not self.plateau:
                self.scheduler.step()
            result = self.test_and_save(log) or result
            if self.step >= self.total or self.step % self.steps_per_epoch == 0:
                break
        return result

    def test_and_save(self, log: RunLog | None) -> dict[str, float] | None:
        """After a step: the test when due (and the plateau schedule's step), the checkpoints when
        due or when the test improved. Returns the test, if one ran."""
        args = self.args
        end = self.step >= self.total
        due_test = end or (
            self.step % self.steps_per_epoch == 0
            if args.test_every is None
            else self.step % args.test_every == 0
        )
        due_save = end or (
            due_test if args.save_every is None else self.step % args.save_every == 0
        )
        result, improved = None, False
        if due_test:
            result = self.test()
            self.last_test_loss = result["loss"]
            improved = result["loss"] < self.best
            self.best = min(self.best, result["loss"])
            if self.plateau:
                self.scheduler.step(result["loss"])
            if log is not None:
                log.write(
                    {
                        "step": self.step,
                        "epoch": self.epoch,
                        "test/loss": result["loss"],
                        "test/bpp": result["rate"],
                        "test/psnr": result["psnr"],
                        "test/distortion": result["distortion"],
                    }
                )
        if self.rank == 0 and (due_save or improved):
            self.save(last=due_save, best=improved)
        return result

    def _record(
        self,
        info: moo_opt.BalanceInfo,
        rd: Any,
        aux: torch.Tensor,
        speed: torch.Tensor | None,
        step_time: float,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "step": self.step,
            "epoch": self.epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        values = info.as_dict(names=OBJECTIVES)
        mse = float(rd.mse.detach())
        record.update(
            {
                "loss": float(rd.distortion.detach()) + float(rd.rate.detach()),
                "bpp": float(rd.rate.detach()),
                "mse": mse,
                "psnr": psnr(mse),
                "aux_loss": float(aux),
                "step_time": step_time,
            }
        )
        record.update(values)
        record.update(
            {"skipped_steps": self.skipped_steps, "consecutive_skips": self.consecutive_skips}
        )
        if speed is not None:
            record.update({f"speed/{name}": v for name, v in zip(OBJECTIVES, speed.tolist())})
        return record


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        trainer = Trainer(args)
        try:
            result = trainer.run()
        finally:
            if trainer.world > 1:
                import torch.distributed as dist

                dist.destroy_process_group()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if trainer.rank != 0:
        return 0
    print(
        f"done: {trainer.step} steps; test loss {result.get('loss', float('nan')):.4f}, "
        f"bpp {result.get('rate', float('nan')):.4f}, "
        f"PSNR {result.get('psnr', float('nan')):.2f} dB; "
        f"checkpoints and log.jsonl in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
