"""The models shipped with the project, by name, as CompressAI's zoo serves its own.

    >>> from plugins.lic import pretrained
    >>> [e.name for e in pretrained.entries()][:1]            # doctest: +SKIP
    ['mbt2018-mean-N32-M48-mse-0.0005']
    >>> net = pretrained.load("mbt2018-mean-N32-M48-mse-0.0018")  # doctest: +SKIP

Each file in this folder is a checkpoint of ``python -m plugins.lic.train`` (``state_dict``
loadable into the plain CompressAI class, with its entropy coders' tables already updated, plus
the optimisers' and the run's state); ``manifest.json`` lists them with their architecture, λ,
training recipe and the bpp/PSNR measured with real entropy coding on the ``samples``
photographs. The CLIs take ``--pretrained NAME`` (``train`` and ``evaluate``), and
``python -m plugins.lic.pretrained`` prints the table. ``python -m plugins.lic.pretrained.build``
re-trains them.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugins.lic.errors import UsageError

#: the shipped models; the environment variable ``MOO_OPT_PRETRAINED`` names another folder laid
#: out the same way (a private zoo built with ``build --ship FOLDER``)
FOLDER = Path(os.environ.get("MOO_OPT_PRETRAINED") or Path(__file__).resolve().parent)
MANIFEST = FOLDER / "manifest.json"


@dataclass(frozen=True)
class Entry:
    """One shipped model, as ``manifest.json`` describes it."""

    name: str
    file: str
    model: str
    N: int
    M: int | None
    lmbda: float
    metric: str
    steps: int
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def path(self) -> Path:
        return FOLDER / self.file


def entries(manifest: Path | None = None) -> list[Entry]:
    """Every shipped model, in the manifest's order (by λ)."""
    manifest = MANIFEST if manifest is None else manifest
    if not manifest.exists():
        return []
    out = []
    for r in json.loads(manifest.read_text()):
        out.append(
            Entry(
                r["name"],
                r["file"],
                r["model"],
                int(r["N"]),
                r.get("M"),
                float(r["lambda"]),
                r["metric"],
                int(r["steps"]),
                r,
            )
        )
    return out


def names() -> list[str]:
    return [e.name for e in entries()]


def select(patterns: list[str]) -> list[Entry]:
    """The entries named by ``patterns`` (names or shell-style patterns such as ``'*-mse-*'``), in
    the order given; an unknown name is the one-line error listing what there is."""
    known = entries()
    chosen: list[Entry] = []
    for pattern in patterns:
        hits = [e for e in known if fnmatch.fnmatchcase(e.name, pattern)]
        if not hits:
            listing = (
                ", ".join(e.name for e in known)
                or "none (plugins/lic/pretrained/manifest.json is missing)"
            )
            raise UsageError(f"--pretrained {pattern}: no such shipped model; available: {listing}")
        chosen.extend(e for e in hits if e not in chosen)
    return chosen


def get(name: str) -> Entry:
    """The entry of one name (no patterns)."""
    hits = [e for e in select([name]) if e.name == name]
    if len(hits) != 1:
        raise UsageError(
            f"--pretrained {name}: give one model's full name; available: {', '.join(names())}"
        )
    return hits[0]


def load(name: str, device: str = "cpu"):
    """The plain CompressAI model of a shipped name, in eval mode, ready to ``compress()``."""
    import torch

    from plugins.lic import checkpoint, models

    entry = get(name)
    ckpt = checkpoint.load(entry.path)
    spec = models.resolve(
        ckpt["state_dict"], ckpt.get("model"), entry.model, entry.N, entry.M, str(entry.path)
    )
    net = models.build(spec)
    net.load_state_dict(ckpt["state_dict"])
    return net.to(torch.device(device)).eval()
