"""Real photographs to train on, assembled into an ImageFolder without a download at run time.

    # from Debian packages (apt-get download, dpkg-deb -x; no root)
    python -m plugins.lic.photos data/photos
    # from a folder of your own photographs
    python -m plugins.lic.photos data/photos -d FOLDER

The Debian source is 27 community photographs (landscapes, macro, street and still life) shipped
in the wallpaper packages ``lomiri-wallpapers-16.04``, ``lomiri-wallpapers-20.04`` and
``mate-backgrounds``; the packages' drawings and gradients are left out (:data:`DEBIAN_PHOTOS`
lists what is kept). Each photograph is converted to RGB and downscaled with a Lanczos filter so
that its longer side is at most ``--max-side`` pixels (1024 by default: the scale of the
evaluation photographs, and a 2-6x reduction that removes the JPEG artefacts of the originals),
then written as PNG into ``OUT/train`` or ``OUT/test`` (:data:`DEBIAN_TEST`: three photographs
held out for the trainer's test loss). ``OUT/photos.json`` records every file's source, package
version and checksum; ``OUT/licenses/`` holds the packages' copyright files (the photographs are
CC-BY, CC-BY-SA, CC0 and GPL-2+ licensed: see them before redistributing).

The ``samples`` photographs (scikit-image's) are the evaluation set: never train on them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from plugins.lic.data import image_files
from plugins.lic.errors import ArgumentParser, UsageError


@dataclass(frozen=True)
class Source:
    """One Debian package and the photographs kept from it (paths inside the package)."""

    package: str
    folder: str
    files: tuple[str, ...]


DEBIAN_PHOTOS = (
    Source(
        "lomiri-wallpapers-16.04",
        "usr/share/backgrounds",
        (
            "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg",
            "Picture_0B_by_freespace.jpg", "Picture_1A_by_freespace.jpg",
            "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
            "analogpattern_by_Peter_Nerlich.jpg", "free_by_Peter_Nerlich.jpg",
            "friends_by_Aitzol_Berasategi.jpg", "greentock_by_Peter_Nerlich.jpg",
            "life_by_Aitzol_Berasategi.jpg", "picosdeeuropa_by_Aitzol_Berasategi.jpg",
            "seeding_by_Clements_Engelhardt.jpg", "sunset_by_Aitzol_Berasategi.jpg",
        ),
    ),
    Source("lomiri-wallpapers-20.04", "usr/share/backgrounds", ("Kleiber_by_Lukas_Baubkus.jpg",)),
    Source(
        "mate-backgrounds",
        "usr/share/backgrounds/mate/nature",
        (
            "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg",
            "GreenMeadow.jpg", "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg",
            "Wood.jpg", "YellowFlower.jpg",
        ),
    ),
)  # fmt: skip
#: held out for the trainer's test loss: a landscape, a still life, a macro
DEBIAN_TEST = frozenset(
    {"life_by_Aitzol_Berasategi.jpg", "Picture_0B_by_freespace.jpg", "RainDrops.jpg"}
)
MAX_SIDE = 1024
RECORD = "photos.json"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m plugins.lic.photos", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the ImageFolder to write (OUT/train, OUT/test)")
    p.add_argument(
        "-d",
        "--from-folder",
        dest="folder",
        type=Path,
        default=None,
        help=(
            "take the photographs from this folder instead of Debian's packages "
            "(every 8th goes to test/; default: Debian's)"
        ),
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=MAX_SIDE,
        help="downscale so that the longer side is at most this (0: keep the size)",
    )
    return p


# --------------------------------------------------------------------------- sources
def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise UsageError(
            f"{cmd[0]}: cannot run it ({exc.strerror}); pass -d FOLDER with your own photographs"
        ) from None
    if proc.returncode != 0:
        lines = [
            ln
            for ln in (proc.stderr or proc.stdout).splitlines()
            if ln.strip() and not ln.startswith("W:")
        ]
        last = lines[-1] if lines else f"exit code {proc.returncode}"
        raise UsageError(
            f"{what} failed: {last}; check the network and apt's sources (apt-get update), "
            "or pass -d FOLDER"
        )


def debian_photos(work: Path) -> list[tuple[Path, str, dict[str, str]]]:
    """Download and unpack the packages into ``work``; ``(file, split, provenance)`` per
    photograph."""
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise UsageError(
            f"{missing[0]} not found: the photographs come from Debian packages; "
            "on a system without apt, pass -d FOLDER (a folder of your own photographs)"
        )
    packages = [s.package for s in DEBIAN_PHOTOS]
    _run(["apt-get", "download", *packages], work, f"apt-get download {' '.join(packages)}")
    found = []
    for source in DEBIAN_PHOTOS:
        debs = sorted(work.glob(f"{source.package}_*.deb"))
        if not debs:
            raise UsageError(
                f"apt-get download {source.package}: no .deb arrived; "
                "pass -d FOLDER with your own photographs"
            )
        root = work / source.package
        _run(["dpkg-deb", "-x", str(debs[-1]), str(root)], work, f"dpkg-deb -x {debs[-1].name}")
        version = debs[-1].name.split("_")[1]
        for name in source.files:
            path = root / source.folder / name
            if not path.is_file():
                raise UsageError(
                    f"{source.package} {version}: has no {source.folder}/{name} "
                    "(the package changed); pass -d FOLDER with your own photographs"
                )
            split = "test" if name in DEBIAN_TEST else "train"
            found.append(
                (
                    path,
                    split,
                    {
                        "package": source.package,
                        "version": version,
                        "original": f"{source.folder}/{name}",
                    },
                )
            )
        copyright_file = root / "usr/share/doc" / source.package / "copyright"
        if copyright_file.is_file():
            licenses = work / "licenses"
            licenses.mkdir(exist_ok=True)
            shutil.copy(copyright_file, licenses / f"{source.package}.copyright")
    return found


def folder_photos(folder: Path) -> list[tuple[Path, str, dict[str, str]]]:
    """Every image of ``folder`` (sorted); every 8th, starting with the 4th, is held out for
    test/."""
    files = image_files(folder)
    if len(files) < 2:
        raise UsageError(
            f"-d {folder}: needs at least two photographs (one for train/, one for test/)"
        )
    return [
        (
            f,
            "test" if i % 8 == 3 or (len(files) < 4 and i == len(files) - 1) else "train",
            {"original": str(f)},
        )
        for i, f in enumerate(files)
    ]


# --------------------------------------------------------------------------- writing
def downscale(img: Image.Image, max_side: int) -> Image.Image:
    """RGB, with the longer side at most ``max_side`` (Lanczos; never enlarged)."""
    img = img.convert("RGB")
    if max_side <= 0 or max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def assemble(
    out: Path, folder: Path | None = None, max_side: int = MAX_SIDE
) -> list[dict[str, object]]:
    """Write the ImageFolder ``out`` and its ``photos.json``; returns the records."""
    if max_side < 0:
        raise UsageError(f"--max-side {max_side}: must be >= 0 (0 keeps the original size)")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORD).exists():
        raise UsageError(f"{out}: not empty and not made by this command; choose a new folder")
    with tempfile.TemporaryDirectory(prefix="moo-opt-photos-") as tmp:
        work = Path(tmp)
        found = folder_photos(folder) if folder is not None else debian_photos(work)
        for split in ("train", "test"):
            shutil.rmtree(out / split, ignore_errors=True)
            (out / split).mkdir(parents=True)
        records: list[dict[str, object]] = []
        for path, split, provenance in found:
            with Image.open(path) as img:
                original = img.size
                small = downscale(img, max_side)
            target = out / split / f"{path.stem}.png"
            small.save(target, optimize=False)
            digest = hashlib.sha256(target.read_bytes()).hexdigest()
            records.append(
                {
                    "file": f"{split}/{target.name}",
                    "split": split,
                    "size": list(small.size),
                    "original_size": list(original),
                    **provenance,
                    "sha256": digest,
                }
            )
        if (work / "licenses").is_dir():
            shutil.rmtree(out / "licenses", ignore_errors=True)
            shutil.copytree(work / "licenses", out / "licenses")
    (out / RECORD).write_text(
        json.dumps(
            {
                "max_side": max_side,
                "source": "debian" if folder is None else str(folder),
                "photos": records,
            },
            indent=2,
        )
        + "\n"
    )
    return records


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        records = assemble(args.out, args.folder, args.max_side)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = {s: sum(r["split"] == s for r in records) for s in ("train", "test")}
    print(
        f"{args.out}: {counts['train']} training and {counts['test']} test photographs "
        f"(longer side <= {args.max_side or 'original'} px); sources in {args.out / RECORD}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
