"""Checkpoints from elsewhere: a bare ``state_dict`` (CompressAI's zoo format) and a CompressAI
``examples/train.py`` checkpoint, evaluated and fine-tuned; weights that do not fit are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plugins.lic import checkpoint, evaluate, models
from plugins.lic.train import main as train_main

SPEC = models.ModelSpec("mbt2018-mean", 8, 12)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The same freshly built weights in three files: bare, CompressAI train.py (saved through
    DataParallel, so with ``module.`` keys), and ours."""
    root = tmp_path_factory.mktemp("foreign")
    torch.manual_seed(0)
    net = models.build(SPEC)
    main, aux = models.parameter_groups(net)
    opt, aux_opt = torch.optim.Adam(main, 1e-4), torch.optim.Adam(aux, 1e-3)
    sd = net.state_dict()
    torch.save(sd, root / "raw.pth")
    torch.save(
        {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}, "loss": 1.5,
         "optimizer": opt.state_dict(), "aux_optimizer": aux_opt.state_dict(),
         "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt).state_dict()},
        root / "compressai-train.pth.tar",
    )  # fmt: skip
    torch.save(
        {"state_dict": sd, "model": SPEC.as_dict(), "args": {"lmbda": 0.01}}, root / "ours.pth.tar"
    )
    torch.save({"a": 1}, root / "junk.pth")
    imgs = root / "imgs"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (imgs / split).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
                imgs / split / f"{i}.png"
            )
    return {
        "raw": root / "raw.pth",
        "train.py": root / "compressai-train.pth.tar",
        "ours": root / "ours.pth.tar",
        "junk": root / "junk.pth",
        "imgs": imgs,
    }


def test_kinds_are_recognised_and_keys_renamed(files: dict[str, Path]) -> None:
    kinds = {
        name: checkpoint.kind(checkpoint.load(files[name])) for name in ("raw", "train.py", "ours")
    }
    assert kinds == {"raw": "state-dict", "train.py": "compressai-train", "ours": "moo-opt"}
    assert not any(
        k.startswith("module.") for k in checkpoint.load(files["train.py"])["state_dict"]
    )


def test_the_architecture_is_read_off_the_tensors(files: dict[str, Path]) -> None:
    sd = checkpoint.load(files["raw"])["state_dict"]
    assert models.infer_spec(sd) == SPEC
    assert models.infer_spec(sd, "mbt2018-mean") == SPEC
    assert models.infer_spec(sd, "mbt2018-mean", 8, 12) == SPEC
    for name in ("bmshj2018-factorized", "cheng2020-anchor", "mbt2018"):
        other = models.build(
            models.spec_for(name, N=8, M=None if name.startswith("cheng") else 12)
        ).state_dict()
        assert models.infer_spec(other).name == name


def test_every_kind_evaluates_to_the_same_point(
    files: dict[str, Path], tmp_path: Path, capsys
) -> None:
    points = {}
    for name in ("raw", "train.py", "ours"):
        out = tmp_path / f"{name}.json"
        assert (
            evaluate.main(
                [
                    str(files[name]),
                    "-d",
                    str(files["imgs"] / "test"),
                    "--out",
                    str(out),
                    "--name",
                    name,
                ]
            )
            == 0
        )
        points[name] = json.loads(out.read_text())["results"]
    assert points["raw"]["bpp"] == points["train.py"]["bpp"] == points["ours"]["bpp"]
    assert points["raw"]["psnr-rgb"] == points["ours"]["psnr-rgb"]
    assert points["ours"]["lambda"] == [0.01] and points["raw"]["lambda"] == [None]
    # the flags, where given, are checked rather than trusted
    assert (
        evaluate.main(
            [
                str(files["raw"]),
                "-m",
                "mbt2018-mean",
                "--N",
                "8",
                "--M",
                "12",
                "-d",
                str(files["imgs"] / "test"),
            ]
        )
        == 0
    )


@pytest.mark.parametrize("name", ["raw", "train.py"])
def test_fine_tune_from_a_foreign_checkpoint(
    files: dict[str, Path], tmp_path: Path, name: str
) -> None:
    argv = [
        "-d",
        str(files["imgs"]),
        "--patch-size",
        "64",
        "64",
        "--batch-size",
        "2",
        "--no-progress",
        "--steps",
        "2",
        "--lambda",
        "0.01",
    ]
    assert (
        train_main(
            [
                *argv,
                "--finetune",
                "--checkpoint",
                str(files[name]),
                "--balancer",
                "qp",
                "--out",
                str(tmp_path / "ft"),
            ]
        )
        == 0
    )
    ckpt = torch.load(tmp_path / "ft" / checkpoint.LAST, weights_only=False)
    assert ckpt["model"] == SPEC.as_dict() and ckpt["step"] == 2
    models.build(SPEC).load_state_dict(ckpt["state_dict"])


BAD = [
    (
        "raw",
        ["-m", "bmshj2018-hyperprior"],
        "train",
        "the weights do not fit bmshj2018-hyperprior (N=8, M=12) "
        "as given by -m bmshj2018-hyperprior",
    ),
    (
        "raw",
        ["--N", "16"],
        "train",
        "the weights do not fit any CompressAI image architecture as given by --N 16",
    ),
    (
        "raw",
        [],
        "resume",
        "a bare state_dict has no training state of plugins.lic.train to resume; "
        "start from its weights with --finetune",
    ),
    (
        "train.py",
        [],
        "resume",
        "a CompressAI train.py checkpoint has no training state of plugins.lic.train to resume",
    ),
    (
        "ours",
        ["--M", "16"],
        "train",
        "holds mbt2018-mean (N=8, M=12), not mbt2018-mean (N=8, M=16); "
        "drop -m/--N/--M or pass the matching ones",
    ),
    ("junk", [], "train", "neither a checkpoint with a 'state_dict' nor a state_dict"),
    (
        "raw",
        ["-m", "mbt2018-mean", "--M", "24"],
        "evaluate",
        "the weights do not fit mbt2018-mean (N=8, M=24)",
    ),
    ("junk", [], "evaluate", "neither a checkpoint with a 'state_dict' nor a state_dict"),
]


@pytest.mark.parametrize(
    "name, flags, cli, message", BAD, ids=[f"{c}-{n}-{m[:30]}" for n, _, c, m in BAD]
)
def test_weights_that_do_not_fit_are_one_line_and_exit_2(
    files: dict[str, Path], tmp_path: Path, capsys, name, flags, cli, message
) -> None:
    if cli == "evaluate":
        code = evaluate.main([str(files[name]), *flags, "-d", str(files["imgs"] / "test")])
    else:
        mode = ["--finetune"] if cli == "train" else []
        code = train_main(["-d", str(files["imgs"]), "--patch-size", "64", "64",
                           "--batch-size", "2", "--steps", "1", "--no-progress", *flags, *mode,
                           "--checkpoint", str(files[name]),
                           "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
