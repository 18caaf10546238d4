"""``plugins.lic.jobs``: finished runs are skipped, runs stopped part-way resume exactly."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from plugins.lic import checkpoint
from plugins.lic.jobs import resume_argv, run_job
from plugins.lic.train import main as train

TINY = ["-m", "bmshj2018-factorized", "--N", "8", "--M", "12", "--patch-size", "32", "32",
        "--batch-size", "2", "--test-batch-size", "8", "--log-every", "2", "--save-every", "2",
        "--no-progress", "-lr", "1e-3"]  # fmt: skip


def test_resume_argv_starts_from_the_runs_own_checkpoint(tmp_path: Path) -> None:
    argv = [
        "--pretrained",
        "m",
        "--finetune",
        "--keep-optimizer",
        "--steps",
        "4",
        "--out",
        str(tmp_path),
    ]
    assert resume_argv(argv) is None  # nothing saved yet: the run starts afresh
    (tmp_path / checkpoint.LAST).write_bytes(b"")
    assert resume_argv(argv) == [
        "--steps",
        "4",
        "--out",
        str(tmp_path),
        "--checkpoint",
        str(tmp_path / checkpoint.LAST),
    ]


def test_a_finetune_stopped_part_way_resumes_and_matches_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    """Solution 2 fine-tuned for 6 steps in one job, or stopped after 4 and the same job run again:
    the second call resumes (its fine-tuning defaults and step come from the checkpoint) and ends
    bit-identical; a third call is skipped by its ``.done``."""
    assert train([*TINY, "--steps", "4", "--out", str(tmp_path / "pre")]) == 0
    start = str(tmp_path / "pre" / checkpoint.LAST)

    def job(name: str, steps: int) -> tuple[str, list[str], Path]:
        argv = [
            *TINY,
            "--balancer",
            "qp",
            "--finetune",
            "--checkpoint",
            start,
            "--steps",
            str(steps),
            "--out",
            str(tmp_path / name),
        ]
        return "train", argv, tmp_path / name / "run.log"

    assert run_job(job("a", 6))[1] == 0
    assert train(job("b", 4)[1]) == 0  # "stopped" after 4 of 6 steps: a checkpoint, no .done
    assert not (tmp_path / "b" / "run.done").exists()
    _, code, _ = run_job(job("b", 6))
    assert code == 0 and "resuming:" in (tmp_path / "b" / "run.log").read_text()
    a, b = (torch.load(tmp_path / n / checkpoint.LAST, weights_only=False) for n in ("a", "b"))
    assert b["step"] == 6 and b["balancer"]["options"] == a["balancer"]["options"]
    # the fine-tuning default survived the resume
    assert a["balancer"]["options"]["trust_radius"] == 0.1
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert json.loads((tmp_path / "b" / "run.done").read_text().split("\n")[1]) == [
        "train",
        *job("b", 6)[1],
    ]
    assert run_job(job("b", 6))[2] == 0.0  # done: not run again
