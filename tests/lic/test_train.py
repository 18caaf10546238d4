"""``python -m plugins.lic.train``: short runs with every balancer, resume, checkpoints, bad
input."""

from __future__ import annotations

import errno
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from moo_opt import available
from plugins.lic import checkpoint
from plugins.lic.errors import UsageError
from plugins.lic.logs import read
from plugins.lic.train import main
from tests.helpers.state import same_entry

ROOT = Path(__file__).resolve().parents[2]
TINY = ["-m", "bmshj2018-factorized", "--N", "8", "--M", "12", "--patch-size", "32", "32",
        "--batch-size", "2", "--test-batch-size", "8", "--log-every", "5", "--no-progress",
        "-lr", "1e-3"]  # fmt: skip


def train(out: Path, *extra: str) -> int:
    return main([*TINY, "--out", str(out), *extra])


#: every balancer, Solution 2 with the Gramian at the latent y, and SDMGrad sampling objectives
BALANCERS = [*available(), "qp:gramian=representation", "sdmgrad:sampled=1"]


def balancer_flags(balancer: str) -> list[str]:
    """``--balancer NAME [--balancer-opt KEY=VALUE]`` for ``NAME[:KEY=VALUE]``."""
    name, _, opt = balancer.partition(":")
    return ["--balancer", name, *(["--balancer-opt", opt] if opt else [])]


@pytest.mark.parametrize("balancer", BALANCERS)
def test_twenty_steps_with_each_balancer(tmp_path: Path, balancer: str, capsys) -> None:
    assert train(tmp_path, *balancer_flags(balancer), "--steps", "20") == 0
    assert "done: 20 steps" in capsys.readouterr().out
    records = [r for r in read(tmp_path) if "weight/distortion" in r]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    for r in records:
        for key in (
            "loss/distortion",
            "loss/rate",
            "weight/distortion",
            "weight/rate",
            "psnr",
            "bpp",
            "step_time",
        ):
            assert math.isfinite(r[key]), (key, r)
    if balancer.split(":")[0] in ("coarse-to-fine", "qp"):
        assert all(r["weight/distortion"] + r["weight/rate"] == pytest.approx(1.0) for r in records)
    if balancer == "coarse-to-fine":
        assert records[-1]["logits/distortion"] != 0.0 and "speed/distortion" in records[-1]
    if balancer.split(":")[0] in ("qp", "mgda"):
        assert records[-1]["solver/status"] == "optimal"
    assert (tmp_path / checkpoint.LAST).exists() and (tmp_path / checkpoint.BEST).exists()
    assert any("test/psnr" in r for r in read(tmp_path))
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())


def test_checkpoint_is_compressai_format_and_loads_into_the_plain_class(tmp_path: Path) -> None:
    from compressai.models import FactorizedPrior

    assert train(tmp_path, "--steps", "3") == 0
    ckpt = torch.load(tmp_path / checkpoint.LAST, weights_only=False)
    for key in (
        "state_dict",
        "optimizer",
        "aux_optimizer",
        "lr_scheduler",
        "epoch",
        "balancer",
        "step",
        "rng",
        "args",
        "model",
    ):
        assert key in ckpt
    FactorizedPrior(N=8, M=12).load_state_dict(ckpt["state_dict"])


@pytest.mark.parametrize("balancer", BALANCERS)
def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path: Path, balancer: str) -> None:
    """12 steps in one go, or 6, stop, resume, 6 more: bit-identical parameters and balancer
    state."""
    assert train(tmp_path / "a", *balancer_flags(balancer), "--steps", "12") == 0
    assert train(tmp_path / "b", *balancer_flags(balancer), "--steps", "6") == 0
    assert (
        train(
            tmp_path / "b",
            *balancer_flags(balancer),
            "--steps",
            "12",
            "--checkpoint",
            str(tmp_path / "b" / checkpoint.LAST),
        )
        == 0
    )
    a = torch.load(tmp_path / "a" / checkpoint.LAST, weights_only=False)
    b = torch.load(tmp_path / "b" / checkpoint.LAST, weights_only=False)
    assert b["step"] == 12
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for k, v in a["balancer"]["state"].items():
        assert same_entry(v, b["balancer"]["state"][k]), k
    logged = lambda run: [
        (r["step"], r["loss/distortion"], r["weight/distortion"])
        for r in read(run)
        if "weight/distortion" in r
    ]  # noqa: E731
    assert logged(tmp_path / "a")[-1] == logged(tmp_path / "b")[-1]
    steps = [r["step"] for r in read(tmp_path / "b") if "weight/distortion" in r]
    assert steps == [5, 6, 10, 12]


def test_finetune_loads_weights_only_and_starts_at_step_zero(tmp_path: Path) -> None:
    assert train(tmp_path / "pre", "--steps", "4") == 0
    assert (
        train(
            tmp_path / "ft",
            "--balancer",
            "qp",
            "--steps",
            "2",
            "--finetune",
            "--checkpoint",
            str(tmp_path / "pre" / checkpoint.LAST),
        )
        == 0
    )
    ft = torch.load(tmp_path / "ft" / checkpoint.LAST, weights_only=False)
    assert ft["step"] == 2 and ft["balancer"]["balancer"] == "qp"


def _image_folder(root: Path, size: int = 48, count: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                root / split / f"{i}.png"
            )
    return root


def test_trains_on_an_image_folder(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    assert train(tmp_path / "out", "-d", str(root), "--steps", "2") == 0


BAD = [
    (["-m", "nope"], "-m nope: unknown model"),
    (["--balancer", "pcgrad-typo"], "--balancer pcgrad-typo: unknown"),
    (["-d", "imagenet"], "-d imagenet: neither a registered dataset"),
    (["--lambda", "0"], "--lambda 0.0: must be > 0"),
    (["--lambda", "-0.01"], "must be > 0"),
    (
        ["--balancer", "coarse-to-fine", "--balancer-opt", "lr=0.1"],
        "--balancer-opt lr: unknown option of coarse-to-fine",
    ),
    (
        ["--balancer", "coarse-to-fine", "--balancer-opt", "beta=-1"],
        "--balancer-opt: beta must be > 0",
    ),
    (["--balancer", "qp", "--balancer-opt", "offsets"], "expected KEY=VALUE"),
    (["--patch-size", "512", "512"], "larger than every image"),
    (
        ["--patch-size", "40", "40"],
        "--patch-size 40 40: bmshj2018-factorized downsamples by 16; "
        "use multiples of 16, e.g. --patch-size 32 32",
    ),
    (["--steps", "0"], "--steps 0: must be positive"),
    (["--finetune"], "--finetune needs --checkpoint"),
    (["--batch-size", "x"], "invalid int value"),
    (["--metric", "ms-ssim"], "--metric ms-ssim needs patches larger than 160 pixels"),
    (["-lr", "nan"], "argument -lr/--learning-rate: must be a finite number, got 'nan'"),
    (["--lambda", "inf"], "argument --lambda: must be a finite number"),
    (["-lr", "0"], "-lr/--learning-rate 0: must be > 0"),
    (
        ["--balancer", "coarse-to-fine", "--balancer-opt", "gamma=nan"],
        "--balancer-opt gamma=nan: must be a finite number",
    ),
    (
        ["--balancer", "coarse-to-fine", "--balancer-opt", "gamma=1e999"],
        "--balancer-opt gamma=1e999: must be a finite number",
    ),
    (
        ["--patch-size", "32", "32", "32"],
        "--patch-size 32 32 32: one value (a square) or two (H W)",
    ),
    (
        ["--balancer", "coarse-to-fine", "--update-subbatch", "0"],
        "--update-subbatch 0: must lie between 1 and --batch-size (2)",
    ),
    (
        ["--balancer", "coarse-to-fine", "--update-subbatch", "3"],
        "--update-subbatch 3: must lie between 1 and --batch-size (2)",
    ),
    (
        ["--update-subbatch", "1"],
        "--update-subbatch goes with a balancer that learns from the losses recomputed after the "
        "step (e.g. coarse-to-fine in its default mode=same_batch); --balancer fixed does not",
    ),
    (
        ["--balancer", "coarse-to-fine", "--balancer-opt", "mode=next_batch"]
        + ["--update-subbatch", "1"],
        "--balancer coarse-to-fine --balancer-opt mode=next_batch does not",
    ),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    assert train(tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err


def test_bad_folders_and_files(tmp_path: Path, capsys) -> None:
    cases = []
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir()
    cases.append((["-d", str(tmp_path / "empty")], "no images found"))
    root = _image_folder(tmp_path / "txt")
    (root / "train" / "readme.txt").write_text("x")
    cases.append((["-d", str(root)], "readme.txt: not an image file"))
    cases.append((["-d", str(tmp_path / "missing")], "neither a registered dataset"))
    (tmp_path / "afile").write_text("x")
    cases.append((["--out", str(tmp_path / "afile")], "is a file"))
    # unwritable even for root
    cases.append((["--out", "/proc/moo-opt-cannot-write-here"], "cannot create it"))
    corrupt = tmp_path / "corrupt.pth.tar"
    corrupt.write_bytes(b"not a checkpoint")
    cases.append((["--checkpoint", str(corrupt)], "not a readable checkpoint"))
    cases.append((["--checkpoint", str(tmp_path / "none.pth.tar")], "no such file"))
    for extra, message in cases:
        assert main([*TINY, "--out", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and message in err, (extra, err)


def test_existing_run_is_not_overwritten_and_other_models_are_refused(
    tmp_path: Path, capsys
) -> None:
    assert train(tmp_path, "--steps", "2") == 0
    before = (tmp_path / checkpoint.LAST).read_bytes()
    assert train(tmp_path, "--steps", "2") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / checkpoint.LAST).read_bytes() == before
    args = ["--steps", "4", "--checkpoint", str(tmp_path / checkpoint.LAST)]
    assert main([*TINY[:2], "--N", "8", "--M", "16", *TINY[6:], "--out", str(tmp_path), *args]) == 2
    assert "holds bmshj2018-factorized (N=8, M=12)" in capsys.readouterr().err
    assert (tmp_path / checkpoint.LAST).read_bytes() == before


def test_atomic_save_keeps_the_previous_file_when_the_disk_is_full(
    tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "ckpt.pth.tar"
    checkpoint.save_atomic({"state_dict": {"w": torch.ones(3)}}, path)

    def full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UsageError, match="no space left.*previous checkpoint is intact"):
        checkpoint.save_atomic({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth.tar"]  # no temporary left behind


def test_module_entry_point_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "plugins.lic.train", "--lambda", "-1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: --lambda")


def test_channels_last_trains_and_saves_a_plain_checkpoint(tmp_path: Path) -> None:
    assert train(tmp_path, "--balancer", "coarse-to-fine", "--steps", "6", "--channels-last") == 0
    records = [r for r in read(tmp_path) if "weight/distortion" in r]
    assert records and all(math.isfinite(r["loss"]) for r in records)
    from compressai.models import FactorizedPrior

    net = FactorizedPrior(N=8, M=12)
    net.load_state_dict(checkpoint.load(tmp_path / "checkpoint.pth.tar")["state_dict"])


# --------------------------------------------------------------------------- --update-subbatch
C2F = ["--balancer", "coarse-to-fine", "--balancer-opt", "beta=0.1"]


def test_update_subbatch_of_the_whole_batch_is_the_exact_run(tmp_path: Path) -> None:
    """K = --batch-size: the sub-batch is the batch (in its order), its pre-step losses are the
    step's, so the run is Solution 1's exact mode bit for bit, only labelled approximate."""
    assert train(tmp_path / "exact", *C2F, "--steps", "6") == 0
    assert train(tmp_path / "sub", *C2F, "--steps", "6", "--update-subbatch", "2") == 0
    a = torch.load(tmp_path / "exact" / checkpoint.LAST, weights_only=False)
    b = torch.load(tmp_path / "sub" / checkpoint.LAST, weights_only=False)
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert torch.equal(a["balancer"]["state"]["logits"], b["balancer"]["state"]["logits"])
    assert b["update_subbatch"]["k"] == 2 and "update_subbatch" not in a
    records = [r for r in read(tmp_path / "sub") if "weight/distortion" in r]
    assert all(r["approximate"] == 1.0 and r["update_subbatch"] == 2.0 for r in records)
    assert not any("approximate" in r for r in read(tmp_path / "exact"))


def test_update_subbatch_draws_from_its_own_seeded_generator() -> None:
    from plugins.lic.data import SubBatchIndices

    global_state = torch.get_rng_state()
    draws = [SubBatchIndices(3, seed=5).draw(8) for _ in range(2)]
    a, b = SubBatchIndices(3, seed=5), SubBatchIndices(3, seed=6)
    seq_a = [a.draw(8).tolist() for _ in range(6)]
    assert seq_a != [b.draw(8).tolist() for _ in range(6)]
    assert torch.equal(draws[0], draws[1]) and draws[0].tolist() == seq_a[0]
    assert all(len(set(d)) == 3 and d == sorted(d) and 0 <= min(d) and max(d) < 8 for d in seq_a)
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is left alone
    resumed = SubBatchIndices(3, seed=0)
    resumed.load_state_dict(SubBatchIndices(3, seed=5).state_dict())
    assert [resumed.draw(8).tolist() for _ in range(6)] == seq_a


def test_update_subbatch_resume_matches_an_uninterrupted_run(tmp_path: Path, capsys) -> None:
    """K = 1 of 2: 8 steps in one go, or 4, stop, resume, 4 more: the same weights, logits and
    generator state (the sub-batches drawn after the resume are the uninterrupted run's)."""
    sub = [*C2F, "--update-subbatch", "1"]
    assert train(tmp_path / "a", *sub, "--steps", "8") == 0
    assert train(tmp_path / "b", *sub, "--steps", "4") == 0
    last = str(tmp_path / "b" / checkpoint.LAST)
    assert train(tmp_path / "b", *C2F, "--steps", "8", "--checkpoint", last) == 2
    assert "resume it with --update-subbatch 1, as it was trained" in capsys.readouterr().err
    assert train(tmp_path / "b", *sub, "--steps", "8", "--checkpoint", last) == 0
    a = torch.load(tmp_path / "a" / checkpoint.LAST, weights_only=False)
    b = torch.load(tmp_path / "b" / checkpoint.LAST, weights_only=False)
    assert b["step"] == 8
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for key in ("logits", "exp_avg", "exp_avg_sq"):
        assert torch.equal(a["balancer"]["state"][key], b["balancer"]["state"][key]), key
    assert torch.equal(a["update_subbatch"]["generator"], b["update_subbatch"]["generator"])
    assert train(tmp_path / "exact", *C2F, "--steps", "8") == 0
    exact = torch.load(tmp_path / "exact" / checkpoint.LAST, weights_only=False)
    # a sub-batch of one sample is another estimate of δ
    assert not torch.equal(exact["balancer"]["state"]["logits"], a["balancer"]["state"]["logits"])


# --------------------------------------------------------------------------- small photo sets
def test_a_small_folder_gets_several_crops_per_image_and_tests_and_saves_on_its_intervals(
    tmp_path: Path, monkeypatch
) -> None:
    """Six images, batch 8 (more than the images): an epoch is auto-sized (86 crops of each), so
    the run tests and writes checkpoints only at --test-every/--save-every, not after every step."""
    root = _image_folder(tmp_path / "imgs", count=6)
    writes: list[tuple[int, str]] = []
    real_save = checkpoint.save_atomic

    def counting(obj, path):
        writes.append((obj["step"], Path(path).name))
        real_save(obj, path)

    monkeypatch.setattr(checkpoint, "save_atomic", counting)
    assert (
        train(
            tmp_path / "out",
            "-d",
            str(root),
            "--batch-size",
            "8",
            "--steps",
            "20",
            "--test-every",
            "5",
            "--save-every",
            "10",
        )
        == 0
    )
    tests = [r["step"] for r in read(tmp_path / "out") if "test/loss" in r]
    assert tests == [5, 10, 15, 20]
    assert [s for s, name in writes if name == checkpoint.LAST] == [10, 20]
    assert {s for s, name in writes if name == checkpoint.BEST} <= {5, 10, 15, 20}
    ckpt = torch.load(tmp_path / "out" / checkpoint.LAST, weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["loss"] == pytest.approx(
        [r["test/loss"] for r in read(tmp_path / "out") if "test/loss" in r][-1]
    )


def test_crops_per_image_sets_the_epoch(tmp_path: Path) -> None:
    from plugins.lic import data

    root = _image_folder(tmp_path / "imgs", count=6)
    assert (
        data.auto_crops_per_image(6) == 86
        and data.auto_crops_per_image(512) == 1
        and data.auto_crops_per_image(10_000) == 1
    )
    ds = data.PatchDataset(data.resolve(str(root), "train"), (32, 32), seed=0, crops_per_image=3)
    assert len(ds) == 18
    crops = [ds[i] for i in range(len(ds))]
    assert not torch.equal(crops[0], crops[6])  # the same picture, another crop
    ds.set_epoch(0)
    assert torch.equal(ds[7], crops[7])  # a function of (seed, epoch, index)
    # --crops-per-image 2: 12 crops, batch 4 -> 3 steps per epoch, tested at the end of each
    assert (
        train(
            tmp_path / "out",
            "-d",
            str(root),
            "--crops-per-image",
            "2",
            "--batch-size",
            "4",
            "--steps",
            "6",
        )
        == 0
    )
    assert [r["step"] for r in read(tmp_path / "out") if "test/loss" in r] == [3, 6]


def test_resume_in_the_middle_of_an_epoch_of_a_small_folder_is_bit_exact(tmp_path: Path) -> None:
    """20 steps in one go against 10, stop, resume, 10 more, with a step learning-rate schedule
    whose first milestone lies before and second after the interruption."""
    root = _image_folder(tmp_path / "imgs", count=6)
    common = [
        "-d",
        str(root),
        "--batch-size",
        "4",
        "--test-every",
        "5",
        "--save-every",
        "10",
        "--lr-milestones",
        "7",
        "15",
        "--lr-gamma",
        "0.5",
    ]
    assert train(tmp_path / "a", *common, "--steps", "20") == 0
    assert train(tmp_path / "b", *common, "--steps", "10") == 0
    assert (
        train(
            tmp_path / "b",
            *common,
            "--steps",
            "20",
            "--checkpoint",
            str(tmp_path / "b" / checkpoint.LAST),
        )
        == 0
    )
    a = torch.load(tmp_path / "a" / checkpoint.LAST, weights_only=False)
    b = torch.load(tmp_path / "b" / checkpoint.LAST, weights_only=False)
    assert a["step"] == b["step"] == 20 and a["epoch"] == 0
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert (
        a["optimizer"]["param_groups"][0]["lr"]
        == b["optimizer"]["param_groups"][0]["lr"]
        == pytest.approx(1e-3 * 0.25)
    )
    assert a["loss"] == b["loss"]
    lrs = {r["step"]: r["lr"] for r in read(tmp_path / "b") if "lr" in r}
    assert (
        lrs[5] == pytest.approx(1e-3)
        and lrs[10] == pytest.approx(5e-4)
        and lrs[20] == pytest.approx(2.5e-4)
    )


SMALL_FOLDER_BAD = [
    (["--crops-per-image", "0"], "--crops-per-image 0: must be positive"),
    (["--crops-per-image", "many"], "--crops-per-image many: expected a positive integer or auto"),
    (
        ["--crops-per-image", "1", "--batch-size", "8"],
        "--batch-size 8: more than the 6 crops of an epoch (6 usable training images × 1); "
        "raise --crops-per-image",
    ),
    (["--test-every", "0"], "--test-every 0: must be positive"),
    (["--save-every", "-5"], "--save-every -5: must be positive"),
    (
        ["--lr-milestones", "10", "5"],
        "--lr-milestones 10 5: must be increasing positive step numbers",
    ),
    (["--lr-milestones", "5", "--lr-gamma", "0"], "--lr-gamma 0.0: must be > 0"),
]


@pytest.mark.parametrize("extra, message", SMALL_FOLDER_BAD, ids=[m for _, m in SMALL_FOLDER_BAD])
def test_small_folder_options_bad_input(
    tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    root = _image_folder(tmp_path / "imgs", count=6)
    assert train(tmp_path / "out", "-d", str(root), "--steps", "2", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err


def test_resuming_with_another_learning_rate_schedule_is_refused(tmp_path: Path, capsys) -> None:
    assert train(tmp_path, "--steps", "2") == 0
    assert (
        train(
            tmp_path,
            "--steps",
            "4",
            "--lr-milestones",
            "3",
            "--checkpoint",
            str(tmp_path / checkpoint.LAST),
        )
        == 2
    )
    assert (
        "was trained with the ReduceLROnPlateau learning-rate schedule; "
        "resume without --lr-milestones" in capsys.readouterr().err
    )


def test_one_patch_size_is_a_square(tmp_path: Path) -> None:
    args = [*TINY, "--out", str(tmp_path), "--steps", "1"]
    args[args.index("--patch-size") : args.index("--patch-size") + 3] = ["--patch-size", "32"]
    assert main(args) == 0
    assert torch.load(tmp_path / checkpoint.LAST, weights_only=False)["args"]["patch_size"] in (
        (32, 32),
        [32, 32],
    )


def test_every_flag_of_every_cli_says_its_default() -> None:
    """``--help`` of each of the plugin's CLIs names the default of every flag that takes a
    value."""
    import argparse

    from plugins.lic import evaluate, photos, report, train
    from plugins.lic.pretrained import build

    parsers = {"train": train.build_parser(), "evaluate": evaluate.build_parser(),
               "photos": photos.build_parser(), "report": report.build_parser(),
               "pretrained.build": build.build_parser()}  # fmt: skip
    for name, parser in parsers.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if (
                not action.option_strings
                or action.required
                or action.nargs == 0
                or action.help == argparse.SUPPRESS
            ):
                continue
            text = formatter._expand_help(action)
            assert "default" in text and "default: None" not in text, (
                name,
                action.option_strings,
                text,
            )
