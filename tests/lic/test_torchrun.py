"""``torchrun --nproc_per_node 2 -m plugins.lic.train`` (gloo on the CPU): trains, rank 0 alone
logs and checkpoints, and one process resumes the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plugins.lic.logs import read

ROOT = Path(__file__).resolve().parents[2]
TINY = ["-m", "bmshj2018-factorized", "--N", "8", "--M", "12", "--patch-size", "32", "32",
        "--test-batch-size", "8", "--no-progress", "--log-every", "1"]  # fmt: skip


@pytest.mark.parametrize(
    "balancer, extra",
    [("coarse-to-fine", []), ("qp", []), ("coarse-to-fine", ["--update-subbatch", "1"])],
)
def test_two_processes_train_and_one_resumes(
    tmp_path: Path, balancer: str, extra: list[str]
) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "plugins.lic.train",
    ]
    proc = subprocess.run([*cmd, *TINY, "--batch-size", "2", "--steps", "4", "--balancer", balancer,
                           *extra, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done: 4 steps") == 1  # rank 0 only
    records = [r for r in read(out) if "weight/distortion" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # one log, written by rank 0
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["step"] == 4 and ckpt["balancer"]["balancer"] == balancer
    if extra:  # the sub-batch's losses, averaged over the ranks like the recomputed ones
        assert ckpt["update_subbatch"]["k"] == 1 and all(r["approximate"] == 1 for r in records)
    resumed = subprocess.run([sys.executable, "-m", "plugins.lic.train", *TINY,
                              "--batch-size", "4", "--steps", "6", "--balancer", balancer,
                              *extra, "--out", str(out),
                              "--checkpoint", str(out / "checkpoint.pth.tar")],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(out / "checkpoint.pth.tar", weights_only=False)["step"] == 6
