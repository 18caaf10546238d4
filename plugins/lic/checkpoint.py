"""CompressAI-format checkpoints, written atomically (temporary file, fsync, rename)."""

from __future__ import annotations

import errno
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from plugins.lic.errors import UsageError

LAST = "checkpoint.pth.tar"
BEST = "checkpoint_best.pth.tar"


def save_atomic(obj: Any, path: Path) -> None:
    """Write ``obj`` with ``torch.save`` so that ``path`` is either the old file or the new one,
    never a torn write: a temporary file in the same folder, flushed and fsynced, then renamed
    over ``path`` and the folder fsynced. A failure (disk full, …) leaves the old file intact."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise UsageError(
                f"{path}: no space left on the device while saving; "
                "the previous checkpoint is intact"
            ) from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that a killed :func:`save_atomic` left in ``folder``."""
    stale = [
        p for p in Path(folder).glob(".*.tmp") if p.name.startswith((f".{LAST}.", f".{BEST}."))
    ]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


#: what a checkpoint file holds: ours (``plugins.lic.train``), CompressAI's ``examples/train.py``
#: checkpoint (weights and optimisers, no model description), or a bare ``state_dict`` (the
#: format of CompressAI's zoo downloads)
KINDS = ("moo-opt", "compressai-train", "state-dict")


def kind(ckpt: dict[str, Any]) -> str:
    """Which of :data:`KINDS` a loaded checkpoint is."""
    if isinstance(ckpt.get("model"), dict):
        return "moo-opt"
    return "state-dict" if set(ckpt) == {"state_dict"} else "compressai-train"


def load(path: Path) -> dict[str, Any]:
    """A checkpoint as a dict with a ``state_dict``, whatever the :data:`KINDS` of the file (a bare
    state dict comes back as ``{"state_dict": it}``). Keys written by ``DataParallel``
    (``module.``) and by older CompressAI releases are renamed as CompressAI's zoo renames them."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise UsageError(
            f"--checkpoint {path}: not a readable checkpoint ({type(exc).__name__}); "
            "pass a checkpoint.pth.tar written by training"
        ) from None
    if (
        isinstance(ckpt, dict)
        and ckpt
        and "state_dict" not in ckpt
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt.items())
    ):
        ckpt = {"state_dict": ckpt}
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UsageError(
            f"--checkpoint {path}: neither a checkpoint with a 'state_dict' nor a state_dict; "
            "pass a CompressAI-format checkpoint"
        )
    # compressai 1.2.8 scripts a function at import: torch warns, users can do nothing
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        # the zoo's renaming of old and DataParallel keys
        from compressai.zoo.pretrained import load_pretrained

    ckpt["state_dict"] = load_pretrained(ckpt["state_dict"])
    return ckpt
