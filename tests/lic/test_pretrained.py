"""The shipped models: the build pipeline at toy scale, loading by name and by path, the CLIs'
``--pretrained``, and the real manifest's promises (files, sizes, the paper's regime)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plugins.lic import checkpoint, evaluate, pretrained
from plugins.lic.pretrained import build
from plugins.lic.train import main as train_main


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    """``build`` at toy scale: 4 steps at two λ on a made-up photo folder, shipped into a folder."""
    root = tmp_path_factory.mktemp("build")
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 1)):
        (root / "photos" / split).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)).save(
                root / "photos" / split / f"{i}.png"
            )
    (root / "photos" / "photos.json").write_text(json.dumps({
        "max_side": 0, "source": "test", "photos": [
            {"file": f"{s}/{i}.png", "split": s}
            for s, n in (("train", 3), ("test", 1)) for i in range(n)]}))  # fmt: skip
    ship = root / "ship"
    ship.mkdir()
    argv = [
        "--photos",
        str(root / "photos"),
        "--runs",
        str(root / "runs"),
        "--steps",
        "4",
        "--lambdas",
        "0.05",
        "0.005",
        "--jobs",
        "1",
        "--ship",
        str(ship),
        "--eval-dataset",
        str(root / "photos" / "test"),
    ]
    assert build.main(argv) == 0
    return ship


@pytest.fixture
def registry(shipped: Path, monkeypatch) -> Path:
    monkeypatch.setattr(pretrained, "FOLDER", shipped)
    monkeypatch.setattr(pretrained, "MANIFEST", shipped / "manifest.json")
    return shipped


NAMES = ["mbt2018-mean-N32-M48-mse-0.005", "mbt2018-mean-N32-M48-mse-0.05"]


def test_build_writes_loadable_files_and_a_manifest(registry: Path) -> None:
    from compressai.models import MeanScaleHyperprior

    records = json.loads((registry / "manifest.json").read_text())
    assert [r["name"] for r in records] == NAMES  # by λ
    for r in records:
        for key in (
            "name",
            "file",
            "model",
            "N",
            "M",
            "lambda",
            "metric",
            "steps",
            "data",
            "command",
            "commit",
            "eval",
            "train_minutes",
        ):
            assert key in r, key
        path = registry / r["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == r["sha256"]
        ckpt = torch.load(path, weights_only=False)
        net = MeanScaleHyperprior(N=32, M=48)
        net.load_state_dict(ckpt["state_dict"])  # the plain CompressAI class
        # tables already updated
        assert ckpt["state_dict"]["entropy_bottleneck._quantized_cdf"].numel() > 0
        assert r["steps"] == 4 and r["eval"]["L_D"] == pytest.approx(
            r["lambda"] * 255**2 * r["eval"]["mse"]
        )
        assert "--lr-milestones 3 4" in r["command"] and r["command"].startswith(
            "python -m plugins.lic.train -m mbt2018-mean --N 32 --M 48"
        )
    summary = (registry.parent / "runs" / "summary.md").read_text()
    assert summary.count("| mbt2018-mean-N32-M48-mse-") == 2 and "Curve monotonic in λ" in summary
    assert (registry.parent / "runs" / "report" / "rd.png").is_file()
    jpeg = json.loads((registry.parent / "runs" / "jpeg.json").read_text())
    assert (
        jpeg["name"] == "JPEG (Pillow)"
        and len(jpeg["results"]["bpp"]) == 6
        and jpeg["results"]["bpp"] == sorted(jpeg["results"]["bpp"])
    )
    assert "| standard | 2 |" in (registry.parent / "runs" / "report" / "report.md").read_text()


def test_a_later_build_of_one_lambda_keeps_the_others_listed(
    shipped: Path, registry: Path, capsys
) -> None:
    root = shipped.parent
    argv = ["--photos", str(root / "photos"), "--runs", str(root / "runs"), "--steps", "4",
            "--lambdas", "0.05", "--jobs", "1", "--ship", str(shipped),
            "--eval-dataset", str(root / "photos" / "test"), "--export-only"]  # fmt: skip
    before = json.loads((shipped / "manifest.json").read_text())
    assert build.main(argv) == 0
    assert json.loads((shipped / "manifest.json").read_text()) == before
    from plugins.lic.pretrained.__main__ import main as listing

    assert listing() == 0
    out = capsys.readouterr().out
    assert all(name in out for name in NAMES) and "bpp" in out and "PSNR" in out


def test_by_name_in_python(registry: Path) -> None:
    assert pretrained.names() == NAMES
    assert [e.name for e in pretrained.select(["*-0.05", NAMES[0], "mbt2018-mean-*"])] == [
        NAMES[1],
        NAMES[0],
    ]
    net = pretrained.load(NAMES[0])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = net.decompress(**net.compress(x))  # ready to code: no update() needed
    assert out["x_hat"].shape == x.shape


def test_evaluate_by_name_and_by_path_agree(registry: Path, tmp_path: Path, capsys) -> None:
    photos = str(registry.parent / "photos" / "test")
    assert (
        evaluate.main(
            ["--pretrained", "mbt2018-mean-*", "-d", photos, "--out", str(tmp_path / "a.json")]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "2 point(s)" in err and " dB" in err
    by_name = json.loads((tmp_path / "a.json").read_text())["results"]
    assert by_name["lambda"] == [0.05, 0.005] or sorted(by_name["lambda"]) == [0.005, 0.05]
    manifest = {r["name"]: r for r in json.loads((registry / "manifest.json").read_text())}
    for lam, bpp in zip(by_name["lambda"], by_name["bpp"]):
        assert bpp == pytest.approx(
            manifest[f"mbt2018-mean-N32-M48-mse-{lam:g}"]["eval"]["bpp"], rel=1e-12
        )
    assert (
        evaluate.main(
            [str(registry / f"{NAMES[0]}.pth.tar"), "-d", photos, "--out", str(tmp_path / "b.json")]
        )
        == 0
    )
    assert json.loads((tmp_path / "b.json").read_text())["results"]["bpp"][0] in by_name["bpp"]


def test_train_fine_tunes_a_shipped_model_with_its_lambda(
    registry: Path, tmp_path: Path, capsys
) -> None:
    imgs = tmp_path / "imgs"
    for split in ("train", "test"):
        (imgs / split).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((64, 64, 3), 40 * i, dtype=np.uint8)).save(
                imgs / split / f"{i}.png"
            )
    common = [
        "-d",
        str(imgs),
        "--patch-size",
        "64",
        "64",
        "--batch-size",
        "2",
        "--steps",
        "2",
        "--no-progress",
    ]
    assert (
        train_main(
            [
                *common,
                "--pretrained",
                NAMES[0],
                "--finetune",
                "--balancer",
                "qp",
                "--out",
                str(tmp_path / "ft"),
            ]
        )
        == 0
    )
    ckpt = torch.load(tmp_path / "ft" / checkpoint.LAST, weights_only=False)
    assert (
        ckpt["args"]["lmbda"] == 0.005
        and ckpt["model"]["name"] == "mbt2018-mean"
        and ckpt["model"]["N"] == 32
    )
    assert (
        train_main(
            [
                *common,
                "--pretrained",
                NAMES[0],
                "--finetune",
                "--lambda",
                "0.02",
                "--out",
                str(tmp_path / "ft2"),
            ]
        )
        == 0
    )
    assert (
        "note: fine-tuning at --lambda 0.02; the checkpoint was trained at 0.005"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "--pretrained", "nope", "--finetune"],
            "--pretrained nope: no such shipped model; available: mbt2018-mean-N32-M48-mse-0.005, ",
        ),
        (
            ["train", "--pretrained", NAMES[0], "--checkpoint", "x.pth", "--finetune"],
            "--pretrained and --checkpoint: pass one of them",
        ),
        (["train", "--pretrained", "mbt2018-mean-*", "--finetune"], "give one model's full name"),
        (["evaluate", "--pretrained", "nope*"], "--pretrained nope*: no such shipped model"),
        (["evaluate"], "no checkpoints: pass checkpoint files or --pretrained NAME"),
    ],
)
def test_bad_names_are_one_line_and_exit_2(
    registry: Path, tmp_path: Path, capsys, argv: list[str], message: str
) -> None:
    if argv[0] == "train":
        code = train_main([*argv[1:], "--out", str(tmp_path / "o"), "--no-progress"])
    else:
        code = evaluate.main(argv[1:])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
