"""Two objectives whose scales differ by orders of magnitude, trained with four balancers.

A shared trunk feeds two regression heads: a "distortion-like" objective of scale ~10³ and a
"rate-like" one of scale ~1, the situation of rate-distortion training where λ·255²·MSE dwarfs
the bpp. Every balancer starts from the same weights and sees the same batches. Printed: the final
losses and the ratio of the objectives' improvement speeds (the decrease of log(L + 1) over the
run; 1 is perfectly balanced). Saved: a PNG of the loss trajectories and the weights.

    python examples/toy_two_objectives.py [--steps 400] [--out demo-out/toy.png]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from moo_opt import balanced_step, create

# offsets c = 0: the balancers equalise the decrease of log L itself, which is what the printed
# speeds measure (the LIC default c = 1 suits losses of order 1, not a loss that tends to 0.01)
BALANCERS = {
    "fixed (standard loss)": ("fixed", {}),
    "coarse-to-fine (Solution 1)": ("coarse-to-fine", {"offsets": 0.0}),
    "qp (Solution 2)": ("qp", {"offsets": 0.0}),
    "mgda": ("mgda", {}),
}
NAMES = ("distortion", "rate")


def make_data(seed: int, n: int = 1024) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    a, b = torch.randn(8, 1, generator=gen), torch.randn(8, 1, generator=gen)
    # two equally hard targets, 30x apart in scale: the losses differ by ~10³
    y_d = 30.0 * torch.tanh(x @ a)
    y_r = torch.tanh(x @ b)
    return x, y_d, y_r


OPTIMIZER = {"name": "adam", "lr": 3e-3}


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    if OPTIMIZER["name"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=OPTIMIZER["lr"])
    return torch.optim.SGD(model.parameters(), lr=OPTIMIZER["lr"], momentum=0.9)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
        self.head_d = nn.Linear(64, 1)
        self.head_r = nn.Linear(64, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        return self.head_d(h), self.head_r(h)


def full_losses(model: Model, x: Tensor, y_d: Tensor, y_r: Tensor) -> list[float]:
    with torch.no_grad():
        p_d, p_r = model(x)
        return [float(((p_d - y_d) ** 2).mean()), float(((p_r - y_r) ** 2).mean())]


def train(key: str, options: dict, steps: int, seed: int) -> dict:
    """One run: the balancer's steps are timed; the full-data losses are recorded every 10 steps."""
    torch.manual_seed(seed)
    model = Model()
    x, y_d, y_r = make_data(seed)
    balancer = create(key, 2, **options)
    optimizer = make_optimizer(model)
    gen = torch.Generator().manual_seed(seed + 1)
    history: dict[str, list[float]] = {"distortion": [], "rate": [], "w_distortion": []}
    initial = full_losses(model, x, y_d, y_r)
    elapsed = 0.0
    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=gen)

        def losses(idx: Tensor = idx) -> list[Tensor]:
            p_d, p_r = model(x[idx])
            return [((p_d - y_d[idx]) ** 2).mean(), ((p_r - y_r[idx]) ** 2).mean()]

        start = time.perf_counter()
        info = balanced_step(balancer, optimizer, losses, model.parameters(), max_norm=1.0)
        elapsed += time.perf_counter() - start
        w = info.weights.abs().tolist()
        history["w_distortion"].append(w[0] / (w[0] + w[1]))
        if step % 10 == 0 or step == steps - 1:
            d, r = full_losses(model, x, y_d, y_r)
            history["distortion"].append(d)
            history["rate"].append(r)
    final = full_losses(model, x, y_d, y_r)
    speed = [(math.log(i) - math.log(f)) / steps for i, f in zip(initial, final)]
    return {"initial": initial, "final": final, "speed": speed, "time": elapsed, "history": history}


def plot(results: dict[str, dict], steps: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for label, res in results.items():
        h = res["history"]
        xs = [min(10 * i, steps - 1) for i in range(len(h["distortion"]))]
        axes[0].plot(xs, h["distortion"], label=label)
        axes[1].plot(xs, h["rate"], label=label)
        axes[2].plot(h["w_distortion"], label=label)
    axes[0].set(
        title="distortion-like objective (full data)", xlabel="step", ylabel="loss", yscale="log"
    )
    axes[1].set(title="rate-like objective (full data)", xlabel="step", ylabel="loss", yscale="log")
    axes[2].set(title="weight share of distortion |w_D|/(|w_D|+|w_R|)", xlabel="step", yscale="log")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument(
        "--lr", type=float, default=None, help="default: 0.05 (SGD, momentum 0.9), 3e-3 (Adam)"
    )
    parser.add_argument("--out", type=Path, default=Path("demo-out/toy_two_objectives.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    OPTIMIZER.update(name=args.optimizer, lr=args.lr or (0.05 if args.optimizer == "sgd" else 3e-3))
    results = {
        label: train(key, opts, args.steps, args.seed) for label, (key, opts) in BALANCERS.items()
    }
    print(
        f"{args.steps} steps, {OPTIMIZER['name']} lr {OPTIMIZER['lr']}, batch 128, clip 1.0, "
        f"seed {args.seed}; losses on the full data\n"
    )
    print(
        f"{'balancer':<30} {'L_D start→end':>22} {'L_R start→end':>18} "
        f"{'speed D':>8} {'speed R':>8} {'D/R':>6} {'ms/step':>8}"
    )
    for label, res in results.items():
        (d0, r0), (d1, r1), (sd, sr) = res["initial"], res["final"], res["speed"]
        print(
            f"{label:<30} {d0:>10.1f}→{d1:<10.3g} {r0:>8.3f}→{r1:<8.3g} "
            f"{sd * 1e3:>8.2f} {sr * 1e3:>8.2f} {sd / sr:>6.2f} "
            f"{res['time'] / args.steps * 1e3:>6.2f}ms"
        )
    print(
        "\nspeed = (log L_start − log L_end) / steps, ×1000; "
        "D/R = 1: both objectives improved equally fast"
    )
    try:
        plot(results, args.steps, args.out)
        print(f"plot: {args.out}")
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install 'moo-opt[lic]')")


if __name__ == "__main__":
    main()
