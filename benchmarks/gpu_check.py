"""The GPU check: one command that records, on a machine with a CUDA device, what the CPU cannot.

Stages, each a subprocess with its own timeout (one that fails or runs out of time loses only its
own section), each written to the summary as soon as it ends:

1. ``pytest -m gpu``: the CUDA-only tests (no host synchronisation in the balancers and solvers
   on the device, the device solvers against the host ones);
2. ``benchmarks/step_overhead.py --variants all --cuda --sync-count``: every variant (so every
   registered balancer) on mbt2018-mean at CompressAI's quality 3 (randomly initialised: nothing
   is downloaded), batches of 16 256² crops, CUDA events, host synchronisations per step;
3. the same with the trainer's ``--amp``, then with ``--channels-last``;
4. ``torchrun --nproc_per_node 2`` of ``plugins.lic.train`` on nccl when there are two devices,
   else a line saying so;
5. images/s of the standard step (``fixed``) against CompressAI's ``examples/train.py`` step.

The whole run keeps to ``--budget`` seconds (450 by default: it fits the 8 minutes planned on an
H100/H200 with room for the install). Output, in ``--out`` (default ``$OUT``, else
``gpu-check-out/``): ``summary.md`` (markdown for benchmarks/RESULTS.md), ``gpu-check.log`` (every
command's output) and ``results.json`` (each stage's status and rows); nothing else, as the device
tool brings back at most 8 files.

Without a CUDA device, or with ``--dry-run``, it is a rehearsal: the same stages and flags on the
CPU at tiny sizes (the small mbt2018-mean, N=32 M=48, a couple of variants, 64² crops, batch 2,
one or two rounds; the 2-process command on gloo), so that a missing wheel, flag or typo shows
here, not on the first GPU. Its figures are CPU figures and the summary says so at the top.

Missing imports are installed from the wheels of ``make gpu-wheels`` (``.gpu-wheels/``) with
``pip install --no-deps --no-index --find-links`` into a folder put on ``PYTHONPATH`` (the
machine's environment is left as it is); the project itself is imported from the repository
through ``PYTHONPATH``. On the device tool (it runs a bash command in a copy of the repository
root; ``carry`` brings git-ignored paths; what the command writes under ``$OUT`` comes back)::

    make gpu-wheels                                  # here, once: about 5 MB into .gpu-wheels/
    run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-wheels"], timeout_s=540)

A rerun of some stages: ``bash benchmarks/gpu_check.sh --stages amp,throughput --budget 200``.
This file uses the standard library alone: the stages import torch, never the orchestrator.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".gpu-wheels"
#: what the stages import (top-level module → the wheel that provides it; None: it must come with
#: the machine, as torch and torchvision do, built for its CUDA)
REQUIRED: dict[str, str | None] = {
    "torch": None, "torchvision": None, "numpy": "numpy", "scipy": "scipy", "PIL": "pillow",
    "compressai": "compressai", "pytorch_msssim": "pytorch-msssim", "einops": "einops",
    "pandas": "pandas", "torch_geometric": "torch-geometric", "tqdm": "tqdm",
    "matplotlib": "matplotlib", "pytest": "pytest", "hypothesis": "hypothesis",
    "cvxpy": "cvxpy", "clarabel": "clarabel", "osqp": "osqp",
}  # fmt: skip
STAGES = ("tests", "fp32", "amp", "channels-last", "nccl", "throughput")
#: stage → (heading, timeout in seconds)
PLAN: dict[str, tuple[str, float]] = {
    "tests": ("1. CUDA tests (`pytest -m gpu`)", 120),
    "fp32": ("2. Step overhead of every variant (fp32)", 170),
    "amp": ("3a. Step overhead with `--amp` (bfloat16 autocast)", 110),
    "channels-last": ("3b. Step overhead with `--channels-last`", 110),
    "nccl": ("4. Two processes on nccl (`torchrun`)", 120),
    "throughput": ("5. Images/s: the standard step against CompressAI's step", 70),
}
PROBE = r"""
import importlib.util, json, platform, sys
info = {"python": platform.python_version(),
        "missing": [m for m in sys.argv[1].split(",") if importlib.util.find_spec(m) is None]}
try:
    import torch
    info.update(torch=torch.__version__, cuda=torch.cuda.is_available(),
                devices=torch.cuda.device_count(),
                device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
except Exception as exc:
    info["torch_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(info))
"""


@dataclass(frozen=True)
class Sizes:
    """What the stages run: CUDA sizes, or the CPU rehearsal's."""

    cuda: bool
    model: str  # a label of step_overhead.MODELS
    patch: int
    batch: int
    warmup: int
    #: stage → (--variants, --reps, --max-seconds)
    timing: dict[str, tuple[str, int, float]]
    ddp_model: tuple[str, ...]
    ddp_patch: int
    ddp_batch: int
    ddp_steps: int


GPU = Sizes(
    cuda=True, model="mbt2018-mean", patch=256, batch=16, warmup=2,
    timing={"fp32": ("all", 40, 90.0), "amp": ("all", 20, 50.0),
            "channels-last": ("all", 20, 50.0), "throughput": ("fixed,compressai", 60, 30.0)},
    ddp_model=("-m", "mbt2018-mean", "--quality", "3"), ddp_patch=256, ddp_batch=8, ddp_steps=30,
)  # fmt: skip
#: ``--variants all`` is not run here (too slow on 2 cores); tests/test_gpu_check.py checks what it
#: selects. fixed-cl exercises a variant's own flags.
REHEARSAL = Sizes(
    cuda=False, model="small", patch=64, batch=2, warmup=0,
    timing={"fp32": ("fixed,compressai,fixed-cl", 2, 30.0), "amp": ("fixed,compressai", 1, 30.0),
            "channels-last": ("fixed,compressai", 1, 30.0),
            "throughput": ("fixed,compressai", 1, 30.0)},
    ddp_model=("-m", "bmshj2018-factorized", "--N", "8", "--M", "12"), ddp_patch=32, ddp_batch=2,
    ddp_steps=2,
)  # fmt: skip


@dataclass
class Outcome:
    """How a stage's command ended."""

    status: str  # passed, failed, timed out, not run, skipped
    seconds: float = 0.0
    output: str = ""
    detail: str = ""


@dataclass
class Report:
    """The output folder: the summary and the results, rewritten as each stage ends."""

    out: Path
    rehearsal: bool
    #: the check's temporary folder, shown as $TMP in the summary
    tmp: str = ""
    results: dict[str, object] = field(default_factory=dict)

    @property
    def summary(self) -> Path:
        return self.out / "summary.md"

    @property
    def log(self) -> Path:
        return self.out / "gpu-check.log"

    def start(self, env: dict[str, object], argv: list[str]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        where = env.get("device") or "no CUDA device"
        lines = [f"## GPU check ({date}, {where})", ""]
        if self.rehearsal:
            lines += [
                "**Rehearsal on the CPU at tiny sizes: these are not GPU figures; "
                "do not paste them as such.**",
                "",
            ]
        lines.append(f"Command: `{shlex.join(['bash', 'benchmarks/gpu_check.sh', *argv])}`.")
        self.summary.write_text("\n".join(lines) + "\n")
        self.results.update(environment=env, rehearsal=self.rehearsal, stages={})
        self.save()

    def section(self, heading: str, body: list[str]) -> None:
        text = "\n".join(["", f"### {heading}", "", *body]) + "\n"
        with self.summary.open("a", encoding="utf-8") as f:
            f.write(text.replace(self.tmp, "$TMP") if self.tmp else text)

    def record(self, stage: str, outcome: Outcome, extra: object = None) -> None:
        stages = self.results["stages"]
        assert isinstance(stages, dict)
        stages[stage] = {
            "status": outcome.status,
            "seconds": round(outcome.seconds, 1),
            "detail": outcome.detail,
            "data": extra,
        }
        self.save()

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1) + "\n")

    def append_log(self, title: str, cmd: list[str], outcome: Outcome) -> None:
        with self.log.open("a", encoding="utf-8") as f:
            f.write(f"\n===== {title}: {shlex.join(cmd)}\n{outcome.output}")
            f.write(f"===== {outcome.status} in {outcome.seconds:.1f} s {outcome.detail}\n")


def run(cmd: list[str], timeout: float, env: dict[str, str]) -> Outcome:
    """Runs ``cmd`` in the repository, output and errors together; on timeout its whole process
    group (torchrun's workers too) is killed and what it printed so far is kept."""
    if timeout < 5:
        return Outcome("not run", detail="the check's time budget was spent")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return Outcome("timed out", time.perf_counter() - t0, output, f"after {timeout:.0f} s")
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return Outcome("failed", seconds, output, f"exit code {proc.returncode}")
    return Outcome("passed", seconds, output)


def status_line(outcome: Outcome) -> str:
    detail = f" ({outcome.detail})" if outcome.detail else ""
    return f"**{outcome.status}** in {outcome.seconds:.1f} s{detail}."


def tail(text: str, lines: int = 15) -> list[str]:
    return ["```", *text.rstrip().splitlines()[-lines:], "```"]


# ------------------------------------------------------------------------ environment and wheels
def probe(python: str, env: dict[str, str]) -> dict[str, object]:
    proc = subprocess.run(
        [python, "-c", PROBE, ",".join(REQUIRED)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        return {"probe_error": proc.stderr.strip().splitlines()[-1:] or ["?"]}
    return json.loads(proc.stdout)


def wheel_names(folder: Path) -> set[str]:
    """The distributions that ``folder`` has a wheel of (names normalised as in file names)."""
    return {p.name.split("-")[0].lower() for p in folder.glob("*.whl")}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def install_command(python: str, names: list[str], site: Path, dry_run: bool) -> list[str]:
    cmd = [
        python,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-index",
        "--find-links",
        str(WHEELS),
        "--target",
        str(site),
        *names,
    ]
    return [*cmd, "--dry-run"] if dry_run else cmd


def prepare(python: str, env: dict[str, str], site: Path) -> Prepared:
    """The environment (Python, torch, devices) after installing what is missing from the
    wheels, and the markdown lines that say what was installed or is still missing. With
    nothing missing, pip's ``--dry-run`` checks that every wheel there fits this Python (the
    rehearsal's check of the install step)."""
    info = probe(python, env)
    missing = [m for m in info.get("missing", []) if isinstance(m, str)]
    have = wheel_names(WHEELS)
    wanted = [str(REQUIRED[m]) for m in missing if REQUIRED[m] and norm(str(REQUIRED[m])) in have]
    lines = [
        f"- Python {info.get('python', '?')}, torch {info.get('torch', '?')}, "
        f"{info.get('devices', 0)} CUDA device(s): {info.get('device') or 'none'}."
    ]
    if "torch_error" in info or "probe_error" in info:
        lines.append(f"- torch does not import: {info.get('torch_error') or info['probe_error']}")
    lines.append(f"- Missing imports: {', '.join(missing) or 'none'}.")
    unavailable = [m for m in missing if REQUIRED[m] is None or norm(str(REQUIRED[m])) not in have]
    if unavailable:
        lines.append(
            f"- No wheel in .gpu-wheels/ for: {', '.join(unavailable)} (add the "
            "distribution to GPU_WHEEL_PACKAGES and run `make gpu-wheels`)."
        )
    dry = not wanted
    names = sorted(have) if dry else wanted
    if not names:
        lines.append(
            "- Wheels: none to install" + ("" if have else " (no .gpu-wheels/ here)") + "."
        )
        return Prepared(info, lines)
    cmd = install_command(python, names, site, dry)
    outcome = run(cmd, 300, env)
    verb = "would install (pip --dry-run)" if dry else "installed"
    lines.append(f"- Wheels {verb}: {', '.join(names)}: {status_line(outcome)}")
    after = info if dry else probe(python, env)
    if not dry:
        still = [m for m in after.get("missing", []) if isinstance(m, str)]
        lines.append(f"- Still missing after the install: {', '.join(still) or 'none'}.")
    if outcome.status != "passed":
        lines += ["", *tail(outcome.output, 5)]
    return Prepared(after, lines, (cmd, outcome))


@dataclass
class Prepared:
    info: dict[str, object]
    lines: list[str]
    install: tuple[list[str], Outcome] | None = None


# ------------------------------------------------------------------------------------- stages
@dataclass
class Context:
    """What every stage needs: the interpreter, the environment, the sizes, the time left."""

    python: str
    env: dict[str, str]
    sizes: Sizes
    tmp: Path
    report: Report
    deadline: float
    devices: int

    def run(self, stage: str, cmd: list[str]) -> Outcome:
        timeout = min(PLAN[stage][1], self.deadline - time.perf_counter())
        outcome = run(cmd, timeout, self.env)
        self.report.append_log(stage, cmd, outcome)
        return outcome


StageResult = tuple[Outcome, list[str], object]


def shown(cmd: list[str]) -> str:
    """The command as the summary shows it: ``python`` for the interpreter, paths relative."""
    return shlex.join(["python", *cmd[1:]]).replace(str(ROOT) + "/", "")


def stage_tests(ctx: Context) -> StageResult:
    cmd = [ctx.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    outcome = ctx.run("tests", cmd)
    counts = re.compile(r"\d+ (passed|failed|skipped|deselected|errors?)\b")
    found = [line.strip("= ") for line in outcome.output.splitlines() if counts.search(line)]
    body = [f"`{shown(cmd)}`: {status_line(outcome)}"]
    if found:
        body += ["", f"pytest: {found[-1]}"]
    if outcome.status != "passed":
        body += ["", *tail(outcome.output, 25)]
    return outcome, body, {"pytest": found[-1] if found else None}


def overhead_command(ctx: Context, stage: str) -> list[str]:
    s = ctx.sizes
    variants, reps, seconds = s.timing[stage]
    cmd = [
        ctx.python,
        "benchmarks/step_overhead.py",
        "--models",
        s.model,
        "--variants",
        variants,
        "--patch",
        str(s.patch),
        "--batch",
        str(s.batch),
        "--reps",
        str(reps),
        "--warmup",
        str(s.warmup),
        "--max-seconds",
        str(seconds),
        "--sync-count",
        "--json",
        str(ctx.tmp / f"{stage}.json"),
    ]
    cmd += ["--cuda"] if s.cuda else []
    return cmd + {"amp": ["--amp"], "channels-last": ["--channels-last"]}.get(stage, [])


def read_json(path: Path) -> dict[str, object] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def table_lines(output: str) -> list[str]:
    """step_overhead's own lines (machine, command, heading, table), not the warnings; a blank
    line between paragraphs and before each table, as markdown wants."""
    keep = ("|", "left out:", "command:")
    lines: list[str] = []
    for line in output.splitlines():
        if not (line.startswith(keep) or " · python " in line or "interleaved rounds" in line):
            continue
        if lines and not (line.startswith("|") and lines[-1].startswith("|")):
            lines.append("")
        lines.append(f"`{line[len('command: ') :]}`" if line.startswith("command:") else line)
    return lines


def stage_overhead(ctx: Context, stage: str) -> StageResult:
    cmd = overhead_command(ctx, stage)
    outcome = ctx.run(stage, cmd)
    body = [status_line(outcome), "", *table_lines(outcome.output)]
    if outcome.status != "passed":
        body += ["", *tail(outcome.output)]
    return outcome, body, read_json(ctx.tmp / f"{stage}.json")


def throughput_lines(data: dict[str, object] | None) -> list[str]:
    """The images/s of ``fixed`` and ``compressai`` and their ratio, from step_overhead's JSON."""
    models = data.get("models") if data else None
    if not isinstance(models, list) or not models:
        return ["No rows (see the log)."]
    model = models[0]
    found = {r["variant"]: r for r in model["rows"] if r["variant"] in ("fixed", "compressai")}
    if len(found) < 2:
        return [f"Rows missing: {', '.join(sorted({'fixed', 'compressai'} - set(found)))}."]
    fixed, cai = found["fixed"], found["compressai"]
    return [
        f"{model['architecture']} N={model['N']} M={model['M']}, batch {model['batch']}, "
        f"{model['patch']}² crops, {model['rounds']} interleaved rounds; images/s = batch / "
        "median step time.",
        "",
        "| step | median step (ms) | images/s |",
        "|---|---|---|",
        f"| standard loss (`fixed`, `plugins.lic.train`) | {fixed['median_ms']:.1f} "
        f"| {fixed['images_per_s']:.1f} |",
        f"| CompressAI `examples/train.py` | {cai['median_ms']:.1f} | {cai['images_per_s']:.1f} |",
        "",
        f"The standard step gives {fixed['images_per_s'] / cai['images_per_s']:.3f}× CompressAI's "
        "images/s.",
    ]


def stage_throughput(ctx: Context) -> StageResult:
    outcome, body, data = stage_overhead(ctx, "throughput")
    machine = [line for line in table_lines(outcome.output) if " · python " in line]
    lines = [status_line(outcome), "", *machine, *([""] if machine else [])]
    lines += throughput_lines(data if isinstance(data, dict) else None)
    if outcome.status != "passed":
        lines += ["", *tail(outcome.output)]
    return outcome, lines, data


def ddp_command(ctx: Context) -> list[str]:
    s, out = ctx.sizes, ctx.tmp / "ddp"
    cmd = [
        ctx.python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "plugins.lic.train",
        *s.ddp_model,
        "-d",
        "synthetic",
        "--patch-size",
        str(s.ddp_patch),
        str(s.ddp_patch),
        "--batch-size",
        str(s.ddp_batch),
        "--test-batch-size",
        "8",
        "--steps",
        str(s.ddp_steps),
        "--balancer",
        "coarse-to-fine",
        "--out",
        str(out),
        "--no-progress",
        "--log-every",
        str(max(1, s.ddp_steps // 5)),
    ]
    return cmd + (["--cuda"] if s.cuda else [])


def ddp_lines(ctx: Context, outcome: Outcome) -> list[str]:
    """The ``done:`` line, and the mean logged step time (after the first log) as images/s over
    the two processes."""
    lines = [f"- {line}" for line in outcome.output.splitlines() if line.startswith("done:")]
    log = ctx.tmp / "ddp" / "log.jsonl"
    records = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
    times = [r["step_time"] for r in records[1:] if isinstance(r.get("step_time"), float)]
    if times:
        mean = sum(times) / len(times)
        images = 2 * ctx.sizes.ddp_batch / mean
        lines.append(
            f"- Mean logged step time after the first log: {1000 * mean:.1f} ms, "
            f"{images:.1f} images/s over both processes."
        )
    return lines


def stage_nccl(ctx: Context) -> StageResult:
    cmd = ddp_command(ctx)
    body: list[str] = []
    if ctx.devices < 2:
        body.append(
            f"`torch.cuda.device_count()` = {ctx.devices} < 2: the 2-process nccl run was not run."
        )
        if ctx.sizes.cuda:
            return Outcome("skipped", detail="fewer than 2 CUDA devices"), body, None
        body += ["", "Rehearsal: the same command on the CPU (gloo, tiny model):"]
    outcome = ctx.run("nccl", cmd)
    body += ["", f"`{shown(cmd)}`: {status_line(outcome)}", "", *ddp_lines(ctx, outcome)]
    if outcome.status != "passed":
        body += ["", *tail(outcome.output)]
    return outcome, body, None


def run_stage(ctx: Context, stage: str) -> StageResult:
    if stage == "tests":
        return stage_tests(ctx)
    if stage == "nccl":
        return stage_nccl(ctx)
    if stage == "throughput":
        return stage_throughput(ctx)
    return stage_overhead(ctx, stage)


# --------------------------------------------------------------------------------------- main
def stage_env(site: Path, rehearsal: bool) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(site), os.environ.get("PYTHONPATH", "")) if p
    )
    if rehearsal:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the rehearsal runs on the CPU, GPU or not
    return env


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: $OUT, else gpu-check-out/)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="the rehearsal: every stage on the CPU at tiny sizes"
    )
    p.add_argument(
        "--budget",
        type=float,
        default=450.0,
        help="seconds for all the stages together (default: 450)",
    )
    p.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"comma-separated, of {', '.join(STAGES)} (default: all)",
    )
    p.add_argument("--python", default=sys.executable, help="the interpreter of the stages")
    args = p.parse_args(argv)
    unknown = sorted(set(args.stages.split(",")) - set(STAGES))
    if unknown:
        p.error(f"--stages: unknown {', '.join(unknown)} (of {', '.join(STAGES)})")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    t0 = time.perf_counter()
    out = args.out or Path(os.environ.get("OUT") or ROOT / "gpu-check-out")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        site = tmp / "site"
        prepared = prepare(args.python, stage_env(site, args.dry_run), site)
        print("\n".join(prepared.lines), flush=True)
        rehearsal = args.dry_run or not prepared.info.get("cuda")
        report = Report(out, rehearsal, str(tmp))
        report.start(prepared.info, argv)
        if prepared.install:
            report.append_log("wheels", *prepared.install)
        report.section("Environment and wheels", prepared.lines)
        devices = prepared.info.get("devices")
        ctx = Context(
            args.python,
            stage_env(site, rehearsal),
            REHEARSAL if rehearsal else GPU,
            tmp,
            report,
            t0 + args.budget,
            devices if isinstance(devices, int) and not rehearsal else 0,
        )
        failed = 0
        for stage in [s for s in STAGES if s in args.stages.split(",")]:
            outcome, body, data = run_stage(ctx, stage)
            report.section(PLAN[stage][0], body)
            report.record(stage, outcome, data)
            failed += outcome.status not in ("passed", "skipped")
            print(f"{stage}: {status_line(outcome)}", flush=True)
        wall = time.perf_counter() - t0
        report.section(
            "Wall time", [f"{wall:.0f} s for the whole check (budget {args.budget:.0f} s)."]
        )
    print(f"\n{report.summary}:\n\n{report.summary.read_text()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
