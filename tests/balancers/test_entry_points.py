"""Balancers from other distributions: the ``moo_opt.balancers`` entry-point group, read lazily.

A throw-away distribution (a module and a ``.dist-info`` with ``entry_points.txt`` on the path) adds
``thirdparty-mgda``; another one points at a class that does not exist. The good one is listed,
created, trained from the LIC CLI by name and resumed, and passes the conformance suite and the
2-process equality test; the broken one is one ``ValueError`` naming its distribution and never
breaks ``available()``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moo_opt import registry

ROOT = Path(__file__).resolve().parents[2]
MODULE = '''
from moo_opt.balancers import MGDABalancer


class ThirdPartyMGDA(MGDABalancer):
    """MGDA under another name, installed from another distribution."""

    name = "thirdparty-mgda"
'''


def distribution(
    site: Path, dist: str, module: str, code: str, entry_points: dict[str, str]
) -> None:
    """A minimal installed distribution in ``site``: its module and its ``.dist-info``."""
    (site / f"{module}.py").write_text(code)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{registry.GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    )


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    distribution(
        site,
        "thirdparty-balancers",
        "thirdparty_balancers",
        MODULE,
        {"thirdparty-mgda": "thirdparty_balancers:ThirdPartyMGDA"},
    )
    distribution(
        site,
        "thirdparty-broken",
        "thirdparty_broken",
        "",
        {"thirdparty-broken": "thirdparty_broken:Missing"},
    )
    return site


@pytest.fixture()
def fresh_registry(site: Path, monkeypatch: pytest.MonkeyPatch):
    """The registry as a new process on this path sees it (restored afterwards)."""
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_BROKEN", {})
    monkeypatch.setattr(registry, "_discovered", False)
    yield registry
    sys.modules.pop("thirdparty_balancers", None)


def test_an_entry_point_adds_a_balancer_and_a_broken_one_names_its_distribution(
    fresh_registry,
) -> None:
    names = fresh_registry.available()
    assert "thirdparty-mgda" in names and "thirdparty-broken" not in names and "qp" in names
    balancer = fresh_registry.create("thirdparty-mgda", 2)
    assert type(balancer).__name__ == "ThirdPartyMGDA" and fresh_registry.options(
        "thirdparty-mgda"
    ) == fresh_registry.options("mgda")
    with pytest.raises(
        ValueError,
        match=r"the balancer 'thirdparty-broken' of thirdparty-broken 0\.1 "
        r".*cannot be loaded: AttributeError",
    ):
        fresh_registry.create("thirdparty-broken", 2)


def test_entry_points_are_read_lazily(fresh_registry) -> None:
    assert "thirdparty-mgda" not in fresh_registry._REGISTRY  # nothing read at import
    fresh_registry.options("qp")
    assert "thirdparty-mgda" in fresh_registry._REGISTRY


def test_register_refuses_a_nameless_class_and_a_taken_name(fresh_registry) -> None:
    from moo_opt import MGDABalancer

    with pytest.raises(TypeError, match="not a Balancer subclass"):
        fresh_registry.register(int)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'mgda' is already registered"):
        fresh_registry.register(type("Other", (MGDABalancer,), {"name": "mgda"}))


def run(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_lic_cli_trains_and_resumes_a_third_party_balancer_by_name(
    site: Path, tmp_path: Path
) -> None:
    args = ["-m", "plugins.lic.train", "-m", "bmshj2018-factorized", "--N", "8", "--M", "12",
            "--patch-size", "32", "--batch-size", "2", "--test-batch-size", "8", "--no-progress",
            "--balancer", "thirdparty-mgda", "--out", str(tmp_path / "run")]  # fmt: skip
    first = run(site, *args, "--steps", "3")
    assert first.returncode == 0, first.stderr[-2000:]
    again = run(
        site, *args, "--steps", "5", "--checkpoint", str(tmp_path / "run" / "checkpoint.pth.tar")
    )
    assert again.returncode == 0 and "done: 5 steps" in again.stdout, again.stderr[-2000:]
    broken = run(
        site,
        *args[:-2],
        "--balancer",
        "thirdparty-broken",
        "--out",
        str(tmp_path / "other"),
        "--steps",
        "1",
    )
    assert (
        broken.returncode == 2
        and "thirdparty-broken 0.1" in broken.stderr
        and "Traceback" not in broken.stderr
    )


def test_a_third_party_balancer_passes_the_conformance_suite_and_the_two_process_test(
    site: Path,
) -> None:
    """The shared suites pick up every registered balancer, a third-party one included."""
    proc = run(site, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/balancers/test_conformance.py", "tests/balancers/test_distributed.py",
               "-k", "thirdparty")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    passed = int(proc.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= 5, proc.stdout[-1000:]
