"""The project's own entry points: docs build (with doctests), the demo and the benchmark run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_docs_build_without_warnings_and_doctests_pass(tmp_path: Path) -> None:
    html = run("-m", "sphinx", "-W", "-q", "-b", "html", "docs", str(tmp_path / "html"))
    assert html.returncode == 0, html.stdout + html.stderr
    site = tmp_path / "html"
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file() and (
        site / "searchindex.js"
    ).is_file()
    remote = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?:https?:)?//")
    # scripts, styles and images served by the site itself: no CDN
    for page in site.rglob("*.html"):
        assert not remote.search(page.read_text(encoding="utf-8")), page
    assert "_static/mathjax/tex-chtml.js" in (site / "mathematics.html").read_text(encoding="utf-8")
    assert_every_public_name_documented(site / "objects.inv")
    doctest = run("-m", "sphinx", "-W", "-q", "-b", "doctest", "docs", str(tmp_path / "doctest"))
    assert doctest.returncode == 0, doctest.stdout + doctest.stderr


#: the modules whose public names (``__all__``, else the functions and classes they define) the API
#: reference must document
PUBLIC_MODULES = (
    "moo_opt",
    "moo_opt.solvers",
    "moo_opt.solvers.reference",
    "moo_opt.gradients",
    "moo_opt.metrics",
    "moo_opt.distributed",
    "moo_opt.weightings",
)


def assert_every_public_name_documented(inventory: Path) -> None:
    import importlib
    import inspect

    from sphinx.util.inventory import InventoryFile

    with inventory.open("rb") as f:
        documented = {
            name
            for objects in InventoryFile.load(f, "", lambda base, uri: uri).values()
            for name in objects
        }
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None) or [
            n for n, obj in vars(module).items()
            if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module_name
        ]  # fmt: skip
        for name in names:
            obj = getattr(module, name)
            home = f"{getattr(obj, '__module__', module_name)}.{name}"
            if f"{module_name}.{name}" not in documented and home not in documented:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public names missing from the API reference: {missing}"


def test_solvers_demo_prints_certificates() -> None:
    proc = run("examples/solvers_demo.py")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for case in (
        "two conflicting gradients",
        "two aligned gradients",
        "three objectives",
        "degenerate",
    ):
        assert case in out
    assert out.count("KKT=") >= 16 and "cvxpy" in out and "balance" in out


def test_solver_benchmark_runs_and_reports_ratios() -> None:
    proc = run(
        "benchmarks/solvers.py",
        "--sizes",
        "2",
        "5",
        "--gramians",
        "2",
        "--repeats",
        "2",
        "--cvxpy-repeats",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    assert "| equality | 5 |" in proc.stdout and "| simplex | 2 |" in proc.stdout
    assert "TorchJD" in proc.stdout and "×" in proc.stdout


def test_step_overhead_benchmark_runs_and_reports_ratios() -> None:
    variants = "fixed,compressai,c2f-every4,qp-every2,c2f-sub2"
    proc = run(
        "benchmarks/step_overhead.py",
        "--models",
        "small",
        "--variants",
        variants,
        "--reps",
        "2",
        "--warmup",
        "0",
        "--patch",
        "64",
        "--batch",
        "2",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for v in variants.split(","):
        assert f"| {v} |" in proc.stdout
    assert "| fixed | " in proc.stdout and "1.000×" in proc.stdout and "commit" in proc.stdout


def test_step_overhead_covers_every_registered_balancer() -> None:
    from moo_opt import available

    proc = run(
        "benchmarks/step_overhead.py",
        "--models",
        "small",
        "--variants",
        "zoo",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--patch",
        "64",
        "--batch",
        "2",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in available():
        assert f"| {'c2f-same' if name == 'coarse-to-fine' else name} |" in proc.stdout


def test_readme_python_snippets_run(tmp_path: Path) -> None:
    """The README's usage is executable documentation: every python block runs, in order."""
    import re

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    script = tmp_path / "readme.py"
    script.write_text("\n".join(blocks))
    proc = run(str(script))
    assert proc.returncode == 0, proc.stderr
    assert "weight/distortion" in proc.stdout and "SolveStatus.OPTIMAL" in proc.stdout


def test_toy_example_compares_the_balancers(tmp_path: Path) -> None:
    out = tmp_path / "toy.png"
    proc = run("examples/toy_two_objectives.py", "--steps", "30", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for label in (
        "fixed (standard loss)",
        "coarse-to-fine (Solution 1)",
        "qp (Solution 2)",
        "mgda",
    ):
        assert label in proc.stdout
    assert "D/R" in proc.stdout
    assert out.stat().st_size > 10_000


def test_fairgrad_alpha_benchmark_counts_every_solve() -> None:
    proc = run("benchmarks/fairgrad_alpha.py", "--gramians", "5", "--alphas", "1", "100")
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in proc.stdout.splitlines() if r.startswith("| 1 |") or r.startswith("| 100 |")]
    assert len(rows) == 2
    for row in rows:  # the four status counts add up to the Gramians solved
        assert sum(int(x) for x in row.strip("|").split("|")[1:5]) == 5


def test_zoo_solver_benchmark_runs_and_reports_ratios() -> None:
    proc = run(
        "benchmarks/zoo_solvers.py", "--sizes", "2", "3", "--gramians", "2", "--repeats", "2"
    )
    assert proc.returncode == 0, proc.stderr
    for row in (
        "| 3 | nash (Nash-MTL) |",
        "| 2 | dual cone, N rows (UPGrad) |",
        "| 3 | dual cone, 1 row (DualProj) |",
        "| 3 | fairgrad (FairGrad, alpha=2) |",
        "| 3 | cagrad (CAGrad, c=0.5) |",
        "| 3 | gradvac (GradVac, beta=0.5) |",
        "| 3 | sdmgrad (SDMGrad, lam=0.3) |",
        "| 3 | excessmtl (20 steps, P=1000) |",
    ):
        assert row in proc.stdout
    assert "×" in proc.stdout and "| optimal |" in proc.stdout


def image_folder(root: Path, counts: dict[str, int], shape: tuple[int, int]) -> Path:
    """An ImageFolder of random RGB pictures: ``counts`` images of ``shape`` (H, W) per split."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in counts.items():
        (root / split).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(
                root / split / f"{i}.png"
            )
    return root


def assert_needs_photos(command: list[str], nowhere: Path, env: dict[str, str]) -> None:
    """A script pointed at a missing photographs folder says to run `make photos` (exit 2)."""
    missing = subprocess.run(
        [*command, "--photos", str(nowhere)], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert missing.returncode == 2 and "make photos" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr


def toy_zoo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Photographs and a private zoo (MOO_OPT_PRETRAINED) of two toy models trained on them: the
    fine-tuning data and the environment that serves the zoo instead of the shipped models."""
    import json
    import os

    photos = image_folder(tmp_path / "photos", {"train": 3, "test": 1}, (128, 160))
    (photos / "photos.json").write_text(json.dumps({"max_side": 0, "source": "test", "photos": []}))
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    built = run("-m", "plugins.lic.pretrained.build", "--photos", str(photos),
                "--runs", str(tmp_path / "runs"), "--steps", "4", "--lambdas", "0.05", "0.005",
                "--jobs", "1", "--ship", str(zoo),
                "--eval-dataset", str(photos / "test"))  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    return photos, {**os.environ, "MOO_OPT_PRETRAINED": str(zoo)}


def test_finetune_study_runs_at_toy_size(tmp_path: Path) -> None:
    """`benchmarks/finetune_study.py` end to end on a private zoo of two toy models."""
    photos, env = toy_zoo(tmp_path)
    args = [sys.executable, "benchmarks/finetune_study.py", "--out", str(tmp_path / "ft"),
            "--photos", str(photos), "--steps", "2",
            "--variants", "qp-shared", "qp-sgd", "standard-lam0.667",
            "--eval-dataset", str(photos / "test"), "--jobs", "1"]  # fmt: skip
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = (tmp_path / "ft" / "summary.md").read_text()
    for v in (
        "| standard |",
        "| standard-sgd |",
        "| qp-shared | standard |",
        "| qp-sgd | standard-sgd |",
        "| standard-lam0.667 | standard |",
    ):
        assert v in summary, summary


def test_representation_weights_benchmark_runs(tmp_path: Path) -> None:
    """`benchmarks/representation_weights.py`: exact and representation weights, side by side."""
    import json

    photos = image_folder(tmp_path / "photos", {"train": 3, "test": 1}, (128, 160))
    (photos / "photos.json").write_text(json.dumps({"max_side": 0, "source": "test", "photos": []}))
    proc = run("benchmarks/representation_weights.py", "--photos", str(photos), "--steps", "3",
               "--patch", "64", "--batch", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    row = [line for line in proc.stdout.splitlines() if line.startswith("| mbt2018-mean")]
    assert len(row) == 1 and "| 3 |" in row[0] and "z_D" in row[0], proc.stdout


def test_lic_demo_end_to_end_at_toy_size(tmp_path: Path) -> None:
    """`make demo`'s script on a private zoo of two toy models, two steps per fine-tune: every stage
    runs, the report has both curves, the BD-rate row, the R-D costs and Figure 1; a second call
    reuses the runs."""
    photos, env = toy_zoo(tmp_path)
    out = tmp_path / "demo"
    args = [sys.executable, "examples/lic_demo.py", "--out", str(out), "--photos", str(photos),
            "--steps", "2", "--patch", "64", "--batch-size", "2",
            "--eval-dataset", str(photos / "test"), "--jobs", "1"]  # fmt: skip
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "report:" in proc.stdout
    text = (out / "report.md").read_text()
    for name in ("standard-ft", "qp-ft", "shipped"):
        assert f"| {name} |" in text and (out / f"{name}.json").exists()
    assert (
        "| 0.005 |" in text
        and "| 0.05 |" in text
        and "ΔJ (qp-ft vs standard-ft)" in text
        and "wall time" in text
    )
    for png in ("rd.png", "figure1.png"):
        assert (out / png).stat().st_size > 10_000
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and "(0 s;" in again.stdout
    assert_needs_photos(args[:2], tmp_path / "nowhere", env)


def test_scratch_study_runs_at_toy_size(tmp_path: Path) -> None:
    """`benchmarks/scratch_study.py` end to end: two steps per run, entropy-coded on two small
    images."""
    photos = image_folder(tmp_path / "photos", {"train": 3, "test": 2}, (64, 96))
    args = ["benchmarks/scratch_study.py", "--out", str(tmp_path / "s"), "--photos", str(photos),
            "--steps", "2", "--patch", "64", "--batch-size", "2", "--variants", "c2f-warmup",
            "--lambdas", "standard=0.005,0.05", "c2f-warmup=0.05",
            "--eval-dataset", str(photos / "test"), "--jobs", "1", "--seed", "1"]  # fmt: skip
    proc = run(*args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = (tmp_path / "s" / "summary.md").read_text()
    assert (
        "| standard | 0.005 |" in summary
        and "| c2f-warmup | 0.05 |" in summary
        and "seed 1;" in summary
        and "| c2f-warmup | standard | " in summary.split("overlapping")[1]
    )
    more = [
        a.replace("c2f-warmup=0.05", "c2f-warmup=0.05,0.01") for a in args
    ]  # a λ more: its run, and the evaluation again
    again = run(*more)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert (
        re.search(r"standard-0\.005/run\.log \(0 s;", again.stdout)
        and "| c2f-warmup | 0.01 |" in (tmp_path / "s" / "summary.md").read_text()
    )
    bad = run("benchmarks/scratch_study.py", "--lambdas", "nope=1")
    assert bad.returncode != 0 and "VARIANT=λ" in bad.stderr


def test_reproduction_runs_at_toy_size(tmp_path: Path) -> None:
    """`make reproduce`'s script on a private zoo of two toy models and its photographs, two seeds,
    two steps per run: both studies, the summary's tables over seeds, the plots; a second call
    reuses every run."""
    photos, env = toy_zoo(tmp_path)
    out = tmp_path / "repro"
    args = [sys.executable, "benchmarks/reproduce.py", "--out", str(out), "--photos", str(photos),
            "--steps", "2", "--finetune-steps", "2", "--patch", "64", "--batch-size", "2",
            "--eval-dataset", str(photos / "test"), "--jobs", "2"]  # fmt: skip
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    for row in ("| c2f | standard | ", "| c2f-gamma0 | standard | ", "| c2f-norenorm | standard | ",
                "| qp | standard | ", "| qp-trust0.1 | standard | ",
                "| standard-lam0.667 | standard | ", "| c2f-beta0.0025 | 0.",
                "| qp-trust0.1 | 0."):  # fmt: skip
        assert row in summary, (row, summary)
    assert (
        "0.005: " in summary
        and "python benchmarks/finetune_study.py" in summary
        and "commit" in summary
    )
    for part in ("scratch", "finetune"):
        assert (out / f"rd-{part}.png").stat().st_size > 10_000 and (
            out / f"figure1-{part}.png"
        ).stat().st_size > 10_000
        assert (out / f"{part}-seed1" / "summary.md").exists()
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert (
        again.returncode == 0
        and "(0 s;" in again.stdout
        and not re.search(r"\((?!0 s;)\d+ s;", again.stdout)
    ), again.stdout[-2000:]
    assert_needs_photos(args[:2], tmp_path / "nowhere", env)


def test_readme_lists_every_registered_balancer() -> None:
    """The README's table of balancers names every registered one, with its class and whether it
    needs per-objective gradients (a Gramian balancer, or a coordinate-wise one)."""
    import moo_opt
    from moo_opt.balancers.base import GramianBalancer
    from moo_opt.balancers.coordinatewise import CoordinateBalancer

    rows = {
        m[0]: (m[1], m[2])
        for m in re.findall(
            r"^\| `([\w-]+)` \| `(\w+)` \| .* \| (yes|no) \|$",
            (ROOT / "README.md").read_text(),
            re.M,
        )
    }
    assert sorted(rows) == sorted(moo_opt.available())
    for name, (cls, gramian) in rows.items():
        balancer = moo_opt.create(name, 2)
        assert type(balancer).__name__ == cls and (gramian == "yes") == isinstance(
            balancer, (GramianBalancer, CoordinateBalancer)
        ), name


def test_finetune_study_anchors_solution_1_cheaper_modes_on_exact_solution_1() -> None:
    """Every variant's anchor is a variant; the cheaper modes of Solution 1 are compared with the
    exact one at equal steps, which runs with them, and its own anchor (the standard loss) too."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import finetune_study
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    variants = finetune_study.VARIANTS
    assert all(anchor in variants for _, anchor in variants.values())
    assert [variants[v][1] for v in ("c2f", "c2f-sub2", "c2f-every4", "c2f-cl", "c2f-next")] == [
        "standard",
        *["c2f"] * 4,
    ]
    assert finetune_study.with_anchors(["c2f-sub2", "qp", "c2f-every4"]) == [
        "standard",
        "c2f",
        "c2f-sub2",
        "qp",
        "c2f-every4",
    ]
    assert "--update-subbatch" in variants["c2f-sub2"][0]


def test_reproduction_subsets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A campaign cut to fit a budget: --skip leaves variants out, --ablation-seeds runs the
    ablations on some seeds only, --scratch-lambdas replaces a scratch grid; a wrong name is a
    one-line error."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import reproduce
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    photos = tmp_path / "photos"
    photos.mkdir()
    calls: list[tuple[str, list[str]]] = []
    args = ["--out", str(tmp_path / "r"), "--photos", str(photos), "--seeds", "0", "1",
            "--ablation-seeds", "0", "--skip", "c2f-beta0.0025", "standard-lam0.667",
            "--scratch-lambdas", "c2f=0.01,0.1", "--parts", "scratch", "finetune"]  # fmt: skip
    import finetune_study
    import scratch_study

    for module in (scratch_study, finetune_study):  # record the first study's argv and stop there
        monkeypatch.setattr(
            module, "main", lambda argv, name=module.__name__: calls.append((name, argv)) or 1
        )
    assert reproduce.main(args) == 1
    name, argv = calls[0]
    variants = argv[argv.index("--variants") + 1 : argv.index("--steps")]
    assert name == "scratch_study" and variants == ["standard", "c2f", "c2f-gamma0", "c2f-norenorm"]
    assert argv[argv.index("--lambdas") + 1 :] == ["c2f=0.01,0.1"]
    ns = reproduce.argparse.Namespace(
        out=tmp_path, skip=["c2f-beta0.0025", "qp"], ablation_seeds=[0], scratch_lambdas=[],
        photos="p", patch=64, batch_size=2, jobs=1, eval_dataset="e", steps=2, finetune_steps=2,
        models=["m"],
    )  # fmt: skip
    seed1 = reproduce.study_argv("scratch", 1, ns)[1]
    assert seed1[seed1.index("--variants") + 1 : seed1.index("--steps")] == ["standard", "c2f"]
    ft = reproduce.study_argv("finetune", 1, ns)[1]
    assert ft[ft.index("--variants") + 1 : ft.index("--steps")] == [
        "standard",
        "qp-trust0.1",
        "standard-lam0.667",
    ]
    for bad in (["--skip", "standard"], ["--skip", "nope"], ["--scratch-lambdas", "qp=0.1"]):
        proc = subprocess.run(
            [sys.executable, "benchmarks/reproduce.py", "--photos", str(photos), *bad],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
            "reproduce.py: error: --"
        ), proc.stderr


def test_functions_and_solver_modules_stay_small() -> None:
    """The house rule that keeps the code readable in one sitting: no function over 60 lines in
    moo_opt/ and plugins/ (docstring included), no solver module over 350 lines."""
    import ast

    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
        for path in [*(ROOT / "moo_opt").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (node.end_lineno or node.lineno) - node.lineno + 1 > 60
    ]
    assert not long, "functions over 60 lines: " + ", ".join(long)
    big = [
        p.name
        for p in (ROOT / "moo_opt" / "solvers").glob("*.py")
        if len(p.read_text().splitlines()) > 350
    ]
    assert not big, f"solver modules over 350 lines: {big}"


def test_solver_regression_benchmark_runs() -> None:
    """`benchmarks/solver_regression.py` times the checkout's solvers against an exported commit."""
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/solver_regression.py",
            "--base",
            "HEAD",
            "--rounds",
            "1",
            "--calls",
            "2",
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| cagrad 16 |" in proc.stdout and "geometric mean HEAD / base" in proc.stdout
