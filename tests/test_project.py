"""The project's own entry points: docs build (with doctests), the demo and the benchmark run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_docs_build_without_warnings_and_doctests_pass(tmp_path: Path) -> None:
    html = run("-m", "sphinx", "-W", "-q", "-b", "html", "docs", str(tmp_path / "html"))
    assert html.returncode == 0, html.stdout + html.stderr
    doctest = run("-m", "sphinx", "-W", "-q", "-b", "doctest", "docs", str(tmp_path / "doctest"))
    assert doctest.returncode == 0, doctest.stdout + doctest.stderr


def test_solvers_demo_prints_certificates() -> None:
    proc = run("examples/solvers_demo.py")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for case in ("two conflicting gradients", "two aligned gradients", "three objectives", "degenerate"):
        assert case in out
    assert out.count("KKT=") >= 16 and "cvxpy" in out and "balance" in out


def test_solver_benchmark_runs_and_reports_ratios() -> None:
    proc = run("benchmarks/solvers.py", "--sizes", "2", "5", "--gramians", "2", "--repeats", "2", "--cvxpy-repeats", "1")
    assert proc.returncode == 0, proc.stderr
    assert "| equality | 5 |" in proc.stdout and "| simplex | 2 |" in proc.stdout
    assert "TorchJD" in proc.stdout and "×" in proc.stdout
