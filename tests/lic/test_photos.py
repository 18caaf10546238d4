"""``python -m plugins.lic.photos``: an ImageFolder of real photographs from Debian's packages or a
folder."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plugins.lic import photos
from plugins.lic.train import main as train_main

ROOT = Path(__file__).resolve().parents[2]


def _photos(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            folder / f"p{i:02d}.jpg"
        )
    return folder


def test_from_a_folder_splits_downscales_and_records_every_file(tmp_path: Path, capsys) -> None:
    src = _photos(tmp_path / "src", [(300, 200), (90, 160)] + [(120, 80)] * 8)
    assert photos.main([str(tmp_path / "out"), "-d", str(src), "--max-side", "150"]) == 0
    assert "9 training and 1 test photographs" in capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "photos.json").read_text())
    assert record["max_side"] == 150 and len(record["photos"]) == 10
    by_name = {Path(r["file"]).name: r for r in record["photos"]}
    assert by_name["p03.png"]["split"] == "test"  # every 8th from the 4th
    assert by_name["p00.png"]["size"] == [150, 100] and by_name["p00.png"]["original_size"] == [
        300,
        200,
    ]  # aspect kept
    assert by_name["p01.png"]["size"] == [84, 150]
    assert by_name["p02.png"]["size"] == [120, 80]  # never enlarged
    for r in record["photos"]:
        path = tmp_path / "out" / r["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == r["sha256"]
        assert Image.open(path).size == tuple(r["size"]) and Image.open(path).mode == "RGB"
    # run again into the same folder: rebuilt, nothing left over
    assert photos.main([str(tmp_path / "out"), "-d", str(src), "--max-side", "0"]) == 0
    assert len(list((tmp_path / "out" / "train").iterdir())) == 9
    assert Image.open(tmp_path / "out" / "train" / "p00.png").size == (300, 200)


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "no-apt",
            "apt-get not found: the photographs come from Debian packages; "
            "on a system without apt, pass -d FOLDER",
        ),
        ("not-empty", "not empty and not made by this command; choose a new folder"),
        ("one-photo", "needs at least two photographs"),
        ("max-side", "--max-side -1: must be >= 0"),
        (
            "apt-fails",
            "apt-get download lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds "
            "failed: E: no network here",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch, capsys, case: str, message: str
) -> None:
    argv = [str(tmp_path / "out")]
    if case == "no-apt":
        monkeypatch.setattr(photos.shutil, "which", lambda tool: None)
    elif case == "not-empty":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "mine.txt").write_text("keep me")
    elif case == "one-photo":
        argv += ["-d", str(_photos(tmp_path / "src", [(64, 64)]))]
    elif case == "max-side":
        argv += ["-d", str(tmp_path), "--max-side", "-1"]
    elif case == "apt-fails":
        fake = tmp_path / "bin"
        fake.mkdir()
        (fake / "apt-get").write_text(
            "#!/bin/sh\necho 'W: a warning' >&2\necho 'E: no network here' >&2\nexit 100\n"
        )
        (fake / "apt-get").chmod(0o755)
        (fake / "dpkg-deb").write_text("#!/bin/sh\nexit 0\n")
        (fake / "dpkg-deb").chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    assert photos.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    if case == "not-empty":
        assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


@pytest.mark.skipif(
    shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None,
    reason="needs Debian's apt-get and dpkg-deb",
)
def test_debian_photographs_then_a_short_training_run(tmp_path: Path) -> None:
    """The real command (apt-get download from Debian's archive, as on a fresh machine), then train
    on it."""
    out = tmp_path / "photos"
    proc = subprocess.run(
        [sys.executable, "-m", "plugins.lic.photos", str(out), "--max-side", "256"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "photos.json").read_text())
    names = {Path(r["original"]).name for r in record["photos"]}
    assert names == {f for s in photos.DEBIAN_PHOTOS for f in s.files}
    assert sorted(
        Path(r["original"]).name for r in record["photos"] if r["split"] == "test"
    ) == sorted(photos.DEBIAN_TEST)
    assert len(list((out / "train").iterdir())) == 24 and len(list((out / "test").iterdir())) == 3
    assert {r["package"] for r in record["photos"]} == {s.package for s in photos.DEBIAN_PHOTOS}
    assert sorted(p.name for p in (out / "licenses").iterdir()) == sorted(
        f"{s.package}.copyright" for s in photos.DEBIAN_PHOTOS
    )
    assert all(max(r["size"]) == 256 for r in record["photos"])
    tiny = [
        "-m",
        "bmshj2018-factorized",
        "--N",
        "8",
        "--M",
        "12",
        "--patch-size",
        "64",
        "64",
        "--batch-size",
        "8",
        "--no-progress",
    ]
    assert train_main([*tiny, "-d", str(out), "--steps", "3", "--out", str(tmp_path / "run")]) == 0
