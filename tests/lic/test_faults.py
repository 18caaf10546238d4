"""Faults during LIC training: a NaN/Inf loss or gradient costs one step, never the run or the
model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plugins.lic import checkpoint
from plugins.lic import train as train_module
from plugins.lic.logs import read
from plugins.lic.objectives import RDLosses

TINY = ["-m", "bmshj2018-factorized", "--N", "8", "--M", "12", "--patch-size", "32", "32",
        "--batch-size", "2", "--test-batch-size", "8", "--no-progress", "-lr", "1e-3",
        "--log-every", "1"]  # fmt: skip


def inject(monkeypatch, bad_calls: set[int], kind: str) -> list[int]:
    """Make the losses of the given (1-based) training forward passes non-finite."""
    real = train_module.rd_losses
    calls = [0]

    def faulty(out, x, lmbda, metric="mse"):
        rd = real(out, x, lmbda, metric)
        if not torch.is_grad_enabled():  # Solution 1's re-forward and tests: untouched
            return rd
        calls[0] += 1
        if calls[0] not in bad_calls:
            return rd
        if kind == "loss":
            return RDLosses(rd.distortion * float("nan"), rd.rate, rd.mse)
        # a finite loss whose gradient is NaN: 0·√(0·θ) has value 0 and derivative 0·∞
        theta = out["x_hat"].sum()
        return RDLosses(rd.distortion + 0.0 * torch.sqrt(theta * 0.0), rd.rate, rd.mse)

    monkeypatch.setattr(train_module, "rd_losses", faulty)
    return calls


@pytest.mark.parametrize("balancer", ["fixed", "coarse-to-fine", "qp"])
@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_a_fault_costs_one_step(tmp_path: Path, monkeypatch, balancer: str, kind: str) -> None:
    inject(monkeypatch, {3, 5}, kind)
    assert (
        train_module.main([*TINY, "--balancer", balancer, "--steps", "8", "--out", str(tmp_path)])
        == 0
    )
    records = [r for r in read(tmp_path) if "skipped_steps" in r]
    assert records[-1]["skipped_steps"] == 2 and records[-1]["step"] == 8
    ckpt = torch.load(tmp_path / checkpoint.LAST, weights_only=False)
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
    if balancer == "coarse-to-fine":
        # the logits learned from the 6 good steps only
        assert ckpt["balancer"]["state"]["step"] == 6


def test_skipped_step_leaves_the_model_and_optimiser_untouched(tmp_path: Path, monkeypatch) -> None:
    """Two runs that differ only by a fault at step 3 of the second: after the fault, its model
    equals the first run's model after 2 steps (nothing was changed by the skipped step)."""
    assert (
        train_module.main(
            [*TINY, "--balancer", "coarse-to-fine", "--steps", "2", "--out", str(tmp_path / "a")]
        )
        == 0
    )
    inject(monkeypatch, {3}, "gradient")
    trainer_states = []
    real_step = train_module.Trainer.train_step

    def spy(self, x):
        result = real_step(self, x)
        state = {k: v.clone() for k, v in self.net.state_dict().items()}
        state["adam_exp_avg"] = torch.cat(
            [s["exp_avg"].reshape(-1) for s in self.optimizer.state.values()]
        )
        state["aux_exp_avg"] = torch.cat(
            [s["exp_avg"].reshape(-1) for s in self.aux_optimizer.state.values()]
        )
        trainer_states.append(state)
        return result

    monkeypatch.setattr(train_module.Trainer, "train_step", spy)
    assert (
        train_module.main(
            [*TINY, "--balancer", "coarse-to-fine", "--steps", "3", "--out", str(tmp_path / "b")]
        )
        == 0
    )
    reference = torch.load(tmp_path / "a" / checkpoint.LAST, weights_only=False)["state_dict"]
    for k, v in trainer_states[2].items():
        assert torch.equal(v, trainer_states[1][k]), k
        if k in reference:
            assert torch.equal(v, reference[k]), k


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                root / split / f"{i}.png"
            )
    return root


def test_k_consecutive_faults_stop_the_run_and_name_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    root = _folder(tmp_path / "imgs")
    inject(monkeypatch, set(range(5, 100)), "loss")
    code = train_module.main(
        [
            *TINY,
            "-d",
            str(root),
            "--steps",
            "50",
            "--test-every",
            "2",
            "--max-skips",
            "3",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert "stopped at step 7: 3 consecutive steps had a NaN or Inf loss or gradient" in err
    assert f"the last good checkpoint is {tmp_path / 'run' / checkpoint.LAST}" in err
    ckpt = torch.load(tmp_path / "run" / checkpoint.LAST, weights_only=False)
    assert ckpt["step"] == 6 and math.isfinite(ckpt["loss"])


def test_sigkill_at_random_moments_during_saves_leaves_a_loadable_checkpoint(
    tmp_path: Path,
) -> None:
    """A process killed while writing checkpoints: the file is always a whole, earlier
    checkpoint."""
    import random
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "saver.py"
    script.write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "from plugins.lic.checkpoint import save_atomic\n"
        "i = 0\n"
        "while True:\n"
        "    i += 1\n"
        "    save_atomic({'state_dict': {'w': torch.full((400_000,), float(i))}, 'step': i}, "
        "sys.argv[1])\n"
        "    print(i, flush=True)\n"
    )
    path = tmp_path / checkpoint.LAST
    rng = random.Random(0)
    last_step = 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one save completed
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = torch.load(path, weights_only=False)
        w = ckpt["state_dict"]["w"]
        assert w.numel() == 400_000 and bool((w == float(ckpt["step"])).all())  # whole, not torn
        last_step = ckpt["step"]
    assert last_step >= 1
    checkpoint.remove_stale_temporaries(tmp_path)  # what a resumed training run does first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([checkpoint.LAST, "saver.py"])


@pytest.mark.parametrize("balancer", ["coarse-to-fine", "qp", "mgda"])
@pytest.mark.parametrize("case", ["constant-rate", "identical"])
def test_degenerate_balancing_inputs_give_finite_weights_and_a_logged_status(
    tmp_path: Path, monkeypatch, balancer: str, case: str
) -> None:
    """A rate with zero gradient (a constant loss) or two identical objectives in a real run."""
    real = train_module.rd_losses

    def degenerate(out, x, lmbda, metric="mse"):
        rd = real(out, x, lmbda, metric)
        if case == "constant-rate":
            return RDLosses(rd.distortion, rd.rate.detach() + 0.0 * out["x_hat"].sum(), rd.mse)
        return RDLosses(rd.distortion, rd.distortion * 1.0, rd.mse)

    monkeypatch.setattr(train_module, "rd_losses", degenerate)
    assert (
        train_module.main([*TINY, "--balancer", balancer, "--steps", "4", "--out", str(tmp_path)])
        == 0
    )
    records = [r for r in read(tmp_path) if "weight/distortion" in r]
    for r in records:
        assert math.isfinite(r["weight/distortion"]) and math.isfinite(r["weight/rate"]), r
        assert r["skipped_steps"] == 0
        if balancer != "coarse-to-fine":
            assert r["solver/status"] in ("optimal", "degenerate"), r
    if balancer == "qp" and case == "identical":
        assert records[-1]["solver/status"] == "degenerate"
