"""CompressAI-format checkpoints, written atomically (temporary file, fsync, rename)."""

from __future__ import annotations

import errno
import os
import tempfile
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
            raise UsageError(f"{path}: no space left on the device while saving; the previous checkpoint is intact") from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that a killed :func:`save_atomic` left in ``folder``."""
    stale = [p for p in Path(folder).glob(".*.tmp") if p.name.startswith((f".{LAST}.", f".{BEST}."))]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise UsageError(f"--checkpoint {path}: not a readable checkpoint ({type(exc).__name__}); pass a checkpoint.pth.tar written by training") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UsageError(f"--checkpoint {path}: has no 'state_dict'; pass a CompressAI-format checkpoint")
    return ckpt
