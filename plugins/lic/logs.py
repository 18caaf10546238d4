"""Training logs: one JSON object per logged step (``log.jsonl``) and TensorBoard scalars."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class RunLog:
    """Appends to ``DIR/log.jsonl`` (flushed every line) and, when available, ``DIR/tb``."""

    def __init__(self, folder: Path, tensorboard: bool = True) -> None:
        self.path = folder / "log.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(folder / "tb"))
            except ImportError:  # the lic extra brings tensorboard; without it, the JSONL log alone
                self._tb = None

    def write(self, record: dict[str, Any]) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        self._file.write(json.dumps(clean, sort_keys=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = int(record.get("step", 0))
            for key, value in record.items():
                if (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and key != "step"
                    and math.isfinite(value)
                ):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read(path: Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl`` (a folder or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
