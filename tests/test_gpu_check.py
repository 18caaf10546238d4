"""The GPU check (``benchmarks/gpu_check.sh``): its rehearsal runs every stage on the CPU at tiny
sizes and writes every section, so that the first GPU it meets finds no missing flag or typo; and
what the GPU run would select and spend, checked without running it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = load("gpu_check")


@pytest.mark.slow  # about a minute on 2 cores: seven processes that import torch and CompressAI
def test_rehearsal_runs_every_stage_and_writes_every_section(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run", "--out", str(tmp_path)],
        cwd=ROOT,
        env={**env, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("## GPU check (") and "Rehearsal on the CPU" in summary
    for heading in [
        "Environment and wheels",
        *(h for h, _ in gpu_check.PLAN.values()),
        "Wall time",
    ]:
        assert f"\n### {heading}\n" in summary, heading
    assert "Missing imports: none." in summary
    assert "pytest: " in summary and "skipped" in summary  # the CUDA tests, collected and skipped
    assert summary.count("| fixed | ") == 3 and summary.count("| compressai | ") == 3
    assert "| fixed-cl | " in summary and "--amp, 1 interleaved rounds" in summary
    assert "--channels-last, 1 interleaved rounds" in summary
    assert "< 2: the 2-process nccl run was not run." in summary and "done: 2 steps" in summary
    assert "× CompressAI's images/s." in summary and "**failed**" not in summary
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["rehearsal"] is True
    assert {s: r["status"] for s, r in results["stages"].items()} == dict.fromkeys(
        gpu_check.STAGES, "passed"
    )
    # the device tool brings back at most 8 files
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gpu-check.log",
        "results.json",
        "summary.md",
    ]


def test_gpu_run_times_every_variant_on_mbt2018_mean_quality_3() -> None:
    from moo_opt import available

    step_overhead = load("step_overhead")
    everything = step_overhead.select_variants("all")
    assert everything == list(step_overhead.VARIANTS)  # a variant added later is picked up
    balancers = {step_overhead.VARIANTS[v][0] for v in everything}
    assert balancers == set(available())
    # under --channels-last the variants that only add it would repeat their base rows
    last = step_overhead.select_variants("all", ("--channels-last",))
    assert "fixed-cl" not in last and "c2f-same-cl" not in last and "fixed" in last
    gpu = gpu_check.GPU
    assert gpu.cuda and gpu.patch == 256 and gpu.model == "mbt2018-mean"
    assert step_overhead.MODELS[gpu.model] == ["-m", "mbt2018-mean", "--quality", "3"]
    assert [gpu.timing[s][0] for s in ("fp32", "amp", "channels-last")] == ["all"] * 3
    assert gpu.timing["throughput"][0] == "fixed,compressai"


def test_stage_commands_carry_their_flags(tmp_path: Path) -> None:
    ctx = gpu_check.Context("python", {}, gpu_check.GPU, tmp_path, None, 0.0, 2)  # type: ignore[arg-type]
    amp = gpu_check.overhead_command(ctx, "amp")
    assert {"--cuda", "--sync-count", "--amp"} <= set(amp) and "--channels-last" not in amp
    assert "--channels-last" in gpu_check.overhead_command(ctx, "channels-last")
    ddp = gpu_check.ddp_command(ctx)
    assert ddp[2:6] == ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert "--cuda" in ddp and "--quality" in ddp
    rehearsal = gpu_check.Context("python", {}, gpu_check.REHEARSAL, tmp_path, None, 0.0, 0)  # type: ignore[arg-type]
    assert "--cuda" not in gpu_check.overhead_command(rehearsal, "fp32")
    assert "--cuda" not in gpu_check.ddp_command(rehearsal)


def test_the_plan_fits_eight_minutes() -> None:
    budget = gpu_check.parse([]).budget
    assert budget <= 8 * 60 - 30  # room for the install and the summary
    assert all(timeout < budget for _, timeout in gpu_check.PLAN.values())
    for variants, _, seconds in gpu_check.GPU.timing.values():
        assert seconds < 100 and variants
    with pytest.raises(SystemExit):
        gpu_check.parse(["--stages", "fp32,typo"])


def test_throughput_lines_give_images_per_second_and_the_ratio() -> None:
    row = {"median_ratio": 1.0, "mean_ms": 0.0}
    data = {"models": [{"architecture": "mbt2018-mean", "N": 128, "M": 192, "batch": 16,
                        "patch": 256, "rounds": 3,
                        "rows": [{**row, "variant": "fixed", "median_ms": 50.0,
                                  "images_per_s": 320.0},
                                 {**row, "variant": "compressai", "median_ms": 40.0,
                                  "images_per_s": 400.0}]}]}  # fmt: skip
    text = "\n".join(gpu_check.throughput_lines(data))
    assert "| CompressAI `examples/train.py` | 40.0 | 400.0 |" in text
    assert "0.800× CompressAI's images/s" in text
    assert gpu_check.throughput_lines(None) == ["No rows (see the log)."]


def test_missing_wheels_are_named_and_the_script_parses(tmp_path: Path) -> None:
    (tmp_path / "pytorch_msssim-1.0.0-py3-none-any.whl").write_bytes(b"")
    assert gpu_check.wheel_names(tmp_path) == {"pytorch_msssim"}
    assert gpu_check.norm("pytorch-msssim") == "pytorch_msssim"
    cmd = gpu_check.install_command("python", ["compressai"], tmp_path / "site", dry_run=False)
    assert {"--no-deps", "--no-index", "--target"} <= set(cmd) and "--dry-run" not in cmd
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")]).returncode == 0
