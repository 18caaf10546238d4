"""Training and evaluation runs through a pool of one-thread processes, each skipped once done.

A job is ``(kind, argv, log)``: ``kind`` is ``"train"`` or ``"evaluate"`` (``plugins.lic.train`` /
``plugins.lic.evaluate`` called with ``argv``), its output goes to ``log`` and, when it succeeds,
``log``'s ``.done`` file records its seconds and its arguments. A job whose ``.done`` records the
same arguments is not run again, and a training run that was stopped part-way (its ``--out`` holds a
checkpoint but no ``.done``) resumes from its last checkpoint, so an interrupted study or demo
continues where it stopped.
Used by the demo (``examples/lic_demo.py``) and the studies in ``benchmarks/``.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import subprocess
import time
from pathlib import Path
from typing import Any

Job = tuple[str, list[str], Path]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


#: the flags that pick a run's starting weights: a resumed run takes them from its own
#: checkpoint instead
_START_FLAGS = {"--pretrained": 1, "--checkpoint": 1, "--finetune": 0, "--keep-optimizer": 0}


def resume_argv(argv: list[str]) -> list[str] | None:
    """The arguments that continue a training run stopped part-way: the same run, started from the
    last checkpoint in its ``--out`` (which holds its weights, optimiser, schedule, balancer and
    step; a fine-tune's too, so the flags that chose its starting weights go). ``None`` without
    one."""
    from plugins.lic import checkpoint

    if "--out" not in argv:
        return None
    last = Path(argv[argv.index("--out") + 1]) / checkpoint.LAST
    if not last.is_file():
        return None
    kept, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg in _START_FLAGS:
            skip = _START_FLAGS[arg]
        else:
            kept.append(arg)
    return [*kept, "--checkpoint", str(last)]


def run_job(job: Job) -> tuple[str, int, float]:
    """One ``train``/``evaluate`` call in this worker, its output in ``<log>``; skipped when done.

    The ``.done`` file holds the run's seconds and then its arguments: a call whose arguments
    changed (an evaluation given more checkpoints) runs again; a ``.done`` without arguments (older)
    counts as done."""
    kind, argv, log = job
    done = log.with_suffix(".done")
    if done.exists():
        recorded = done.read_text().split("\n", 1)[1:]
        if not recorded or not recorded[0].strip() or json.loads(recorded[0]) == [kind, *argv]:
            return str(log), 0, 0.0
    from plugins.lic import evaluate, train

    resumed = resume_argv(argv) if kind == "train" else None
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with (
        log.open("a" if resumed else "w") as f,
        contextlib.redirect_stdout(f),
        contextlib.redirect_stderr(f),
    ):
        if resumed:
            print(f"resuming: {' '.join(resumed)}", flush=True)
        code = (train.main if kind == "train" else evaluate.main)(resumed or argv)
    if code == 0:
        done.write_text(f"{time.perf_counter() - start:.1f}\n{json.dumps([kind, *argv])}\n")
    return str(log), code, time.perf_counter() - start


def run_all(pool: Any, jobs: list[Job], start: float) -> None:
    for log, code, seconds in pool.imap_unordered(run_job, jobs):
        print(
            f"  {'ok ' if code == 0 else 'FAILED'} {log} ({seconds:.0f} s; "
            f"{(time.perf_counter() - start) / 60:.1f} min elapsed)",
            flush=True,
        )
        if code != 0:
            raise SystemExit(f"a run failed: see {log}")


def run_stages(jobs: int, stages: dict[str, list[Job]], start: float) -> None:
    """Each stage's jobs (name → jobs, e.g. the training runs, then the evaluations), one stage
    after the other, through a pool of ``jobs`` one-thread processes."""
    with mp.get_context("spawn").Pool(jobs, initializer=_init_worker) as pool:
        print(
            ", ".join(f"{len(todo)} {name}" for name, todo in stages.items())
            + f"; {jobs} processes",
            flush=True,
        )
        for todo in stages.values():
            run_all(pool, todo, start)


def run_minutes(out: Path) -> float:
    """The run time of every finished run and evaluation, from their ``.done`` files."""
    return sum(float(p.read_text().split("\n", 1)[0] or 0) for p in out.rglob("*.done")) / 60


def git_commit(*paths: str, short: bool = False) -> str:
    """The checkout's commit, with ``+dirty`` where tracked files (under ``paths``, or anywhere)
    have uncommitted changes; "unknown" outside git. Recorded beside every result."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", *(["--short"] if short else []), "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *paths],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")
