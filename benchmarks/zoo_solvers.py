"""Time per solve of the balancer zoo's exact solvers, against MGDA's simplex QP and TorchJD.

Same Gramians for every solver, in one run: for each N, ``--gramians`` random Gram matrices
``GᵀG`` (G of 64×N, columns scaled by 10^U(−1, 1)) as CPU float64 tensors. Time per solve: the
median over Gramians of the median of ``--repeats`` timed calls. Printed: microseconds, the ratio
to :func:`~moo_opt.solvers.solve_simplex_qp` (MGDA, the solver every Gramian balancer already
paid for before the zoo) on the same Gramians, the worst status and the largest KKT residual; and,
where TorchJD (a dev dependency; its UPGrad needs ``qpsolvers`` and ``quadprog``, also in ``dev``)
has the method, its time and the largest difference of its weights to ours, relative to our largest
weight. UPGrad is timed as :func:`~moo_opt.weightings.upgrad_weights` (the N projections of
``gᵢ/N`` and their sum), against ``UPGradWeighting()``: TorchJD's default projector solves with
``Q/tr(Q) + 1e-4·I`` (``reg_eps``), so its weights differ from the exact ones by that ridge; the
difference to its projector with ``reg_eps=0`` (quadprog on the exact Gramian) is printed after it.
DualProj (:func:`~moo_opt.weightings.dualproj_weights`, one projection of the mean) likewise
against ``DualProjWeighting()``. ConFIG (:func:`~moo_opt.solvers.solve_config`) has no TorchJD
column: TorchJD's ConFIG takes the gradients, not their Gramian (tests/balancers/test_zoo2.py
compares the directions). FairGrad (:func:`~moo_opt.solvers.solve_fairgrad`, α = 2) against
``FairGradWeighting(alpha=2)`` (``scipy.optimize.least_squares`` at its default tolerances).
GradVac (:func:`~moo_opt.balancers.gradvac.gradvac`, β = 0.5: no solver, a stateful surgery, so
no status or residual) against ``GradVacWeighting()``: both go through the Gramians in turn from
zero targets, the targets evolving, with the same orders (ours from a generator, TorchJD's from
the global RNG, both seeded alike); the difference is at TorchJD's default ``eps=1e-8`` (added to
two denominators), then at ``eps=0``.
SDMGrad (:func:`~moo_opt.solvers.solve_sdmgrad`, λ = 0.3, applied weights ``(w + λ/N)/(1 + λ)``)
against ``SDMGradWeighting(lambda_=0.3)`` on ``A = Q`` (20 projected SGD steps at step 10,
warm-started from its previous call, as in training), and, after it, against 20000 steps at step 1
(its default step 10 can oscillate without converging on some Gramians).

ExcessMTL has no Gramian and is stateful, so a second table: for each N, a sequence of
``EXCESS_STEPS`` float64 gradient matrices (N × ``EXCESS_WIDTH``, rows scaled by 10^U(−1, 1)), run
from a fresh state at every repeat by :meth:`ExcessMTLBalancer.combine` (the sums of squares, the
exponentiated-gradient step, ``Gw``) and by TorchJD's ``ExcessMTL(n_warmup_steps=1)`` aggregator
(the rule of our ``n_warmup_steps=0``: tests/balancers/test_excessmtl.py); time per call (the
sequence's time over its length) and the largest difference of the directions, relative to the
matrix's largest value.

    python benchmarks/zoo_solvers.py [--sizes 2 4 8 16] [--gramians 20] [--repeats 30]
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable

import numpy as np
import torch
from solvers import gramians, time_per_call  # benchmarks/solvers.py: the same Gramians and timing

from moo_opt import ExcessMTLBalancer
from moo_opt.balancers.gradvac import gradvac
from moo_opt.solvers import (
    SolveResult,
    balance_transform,
    cagrad_direction_weights,
    solve_cagrad,
    solve_config,
    solve_fairgrad,
    solve_nash,
    solve_sdmgrad,
    solve_simplex_qp,
)
from moo_opt.weightings import dualproj_weights, upgrad_weights

C = 0.5
LAM = 0.3
EXCESS_STEPS, EXCESS_WIDTH = 20, 1000


def ours() -> dict[str, Callable[[torch.Tensor], SolveResult]]:
    return {
        "simplex (MGDA, baseline)": solve_simplex_qp,
        "nash (Nash-MTL)": solve_nash,
        "dual cone, N rows (UPGrad)": lambda q: upgrad_weights(q)[1],
        "dual cone, 1 row (DualProj)": lambda q: dualproj_weights(q)[1],
        "cagrad (CAGrad, c=0.5)": lambda q: solve_cagrad(q, C),
        "balance transform (Aligned-MTL)": balance_transform,
        "pseudo-inverse (ConFIG)": solve_config,
        "fairgrad (FairGrad, alpha=2)": lambda q: solve_fairgrad(q, 2.0),
        "sdmgrad (SDMGrad, lam=0.3)": lambda q: solve_sdmgrad(q, LAM),
    }


def direction_weights(name: str, q: torch.Tensor, result: SolveResult) -> np.ndarray | None:
    """Our weights on the raw gradients, in TorchJD's convention, for the methods it has."""
    if name.startswith("cagrad"):
        return cagrad_direction_weights(q.numpy(), result.weights.numpy(), C)
    if name.startswith("dual cone"):
        return result.weights.numpy().reshape(-1, q.shape[0]).sum(0)
    if name.startswith("fairgrad"):
        return result.weights.numpy()
    if name.startswith("sdmgrad"):
        return (result.weights.numpy() + LAM / q.shape[0]) / (1.0 + LAM)
    if name.startswith("balance"):
        n = q.shape[0]
        return result.weights.numpy() @ np.full(n, 1.0 / n)
    return None


Weighting = Callable[[torch.Tensor], torch.Tensor]


def torchjd_weightings() -> tuple[dict[str, Weighting], dict[str, tuple[str, Weighting]]]:
    """TorchJD's weightings by our row names, and the exact variants their diffs are also shown
    against, with a label (UPGrad and DualProj without their ridge, SDMGrad run to convergence)."""
    try:
        from torchjd.aggregation import (
            AlignedMTLWeighting,
            CAGradWeighting,
            FairGradWeighting,
            SDMGradWeighting,
        )
    except ImportError:  # pragma: no cover - dev dependency
        return {}, {}
    timed: dict[str, Weighting] = {
        "cagrad (CAGrad, c=0.5)": CAGradWeighting(c=C),
        "fairgrad (FairGrad, alpha=2)": FairGradWeighting(alpha=2.0),
        "balance transform (Aligned-MTL)": AlignedMTLWeighting(),
        "sdmgrad (SDMGrad, lam=0.3)": SDMGradWeighting(lambda_=LAM),
    }
    exact: dict[str, tuple[str, Weighting]] = {
        "sdmgrad (SDMGrad, lam=0.3)": (
            "lr=1, 20000 steps",
            SDMGradWeighting(lr=1.0, n_iter=20000, lambda_=LAM),
        )
    }
    try:
        import qpsolvers  # noqa: F401  (TorchJD's UPGrad imports them only when called)
        import quadprog  # noqa: F401
        from torchjd.aggregation import DualProjWeighting, UPGradWeighting
        from torchjd.linalg import QuadprogProjector
    except ImportError:  # pragma: no cover - dev dependencies
        return timed, exact
    timed["dual cone, N rows (UPGrad)"] = UPGradWeighting()
    exact["dual cone, N rows (UPGrad)"] = (
        "reg_eps=0",
        UPGradWeighting(projector=QuadprogProjector(reg_eps=0.0)),
    )
    timed["dual cone, 1 row (DualProj)"] = DualProjWeighting()
    exact["dual cone, 1 row (DualProj)"] = (
        "reg_eps=0",
        DualProjWeighting(projector=QuadprogProjector(reg_eps=0.0)),
    )
    return timed, exact


def max_diff(name: str, qs: list[torch.Tensor], rs: list[SolveResult], ref: Weighting) -> float:
    """The largest difference of ``ref``'s weights to ours, relative to our largest weight."""
    diffs = []
    for q, r in zip(qs, rs):
        w = direction_weights(name, q, r)
        assert w is not None
        diffs.append(float(np.abs(w - ref(q).numpy()).max() / np.abs(w).max()))
    return max(diffs)


def gradvac_run(seed: int) -> Weighting:
    """GradVac's weights for one Gramian after another (β = 0.5), its targets carried along."""
    generator = torch.Generator().manual_seed(seed)
    targets: list[torch.Tensor] = []

    def weights(q: torch.Tensor) -> torch.Tensor:
        start = targets[0] if targets else torch.zeros_like(q)
        step = gradvac(q, start, 0.5, generator)
        targets[:] = [step.targets]
        return step.weights

    return weights


def gradvac_diff(qs: list[torch.Tensor], seed: int, eps: float) -> float:
    """The largest difference of TorchJD's GradVac weights to ours along the same run, relative to
    our largest weight."""
    from torchjd.aggregation import GradVacWeighting

    ours_run = gradvac_run(seed)
    torch.manual_seed(seed)  # TorchJD's orders come from the global RNG
    theirs = GradVacWeighting(beta=0.5, eps=eps)
    diffs = []
    for q in qs:
        w = ours_run(q)
        diffs.append(float((w - theirs(q)).abs().max() / w.abs().max()))
    return max(diffs)


def gradvac_row(n: int, qs: list[torch.Tensor], args: argparse.Namespace, base: float) -> str:
    """The table's row of GradVac."""
    run = gradvac_run(args.seed)
    t = statistics.median(time_per_call(lambda q=q: run(q), args.repeats) for q in qs)
    jd_time, jd_diff = "—", "—"
    try:
        from torchjd.aggregation import GradVacWeighting
    except ImportError:  # pragma: no cover - dev dependency
        pass
    else:
        theirs = GradVacWeighting(beta=0.5)
        t_jd = statistics.median(time_per_call(lambda q=q: theirs(q), args.repeats) for q in qs)
        jd_time = f"{1e6 * t_jd:.0f}"
        jd_diff = (
            f"{gradvac_diff(qs, args.seed, 1e-8):.1e} "
            f"(eps=0: {gradvac_diff(qs, args.seed, 0.0):.1e})"
        )
    return (
        f"| {n} | gradvac (GradVac, beta=0.5) | {1e6 * t:.0f} | {t / base:.2f}× | — | — "
        f"| {jd_time} | {jd_diff} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--gramians", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"{platform.processor() or platform.machine()} · python {platform.python_version()} "
        f"· torch {torch.__version__} · 1 thread"
    )
    solvers, (references, exact) = ours(), torchjd_weightings()
    print(
        "| N | solver | µs per solve | ratio to simplex | worst status | max KKT residual "
        "| TorchJD µs | max weight diff to TorchJD |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        qs = gramians(n, args.gramians, args.seed)
        base = None
        for name, solve in solvers.items():
            t = statistics.median(
                time_per_call(lambda q=q, f=solve: f(q), args.repeats) for q in qs
            )
            results = [solve(q) for q in qs]
            base = t if base is None else base
            worst = max((r.status.value for r in results), key=lambda s: s != "optimal")
            kkt = max(r.kkt_residual for r in results)
            jd_time, jd_diff = "—", "—"
            if name in references:
                ref = references[name]
                t_jd = statistics.median(
                    time_per_call(lambda q=q, f=ref: f(q), args.repeats) for q in qs
                )
                jd_time = f"{1e6 * t_jd:.0f}"
                jd_diff = f"{max_diff(name, qs, results, ref):.1e}"
                if name in exact:
                    label, variant = exact[name]
                    jd_diff += f" ({label}: {max_diff(name, qs, results, variant):.1e})"
            print(
                f"| {n} | {name} | {1e6 * t:.0f} | {t / base:.2f}× | {worst} | {kkt:.1e} "
                f"| {jd_time} | {jd_diff} |"
            )
        assert base is not None
        print(gradvac_row(n, qs, args, base))
    excessmtl_table(args.sizes, args.repeats, args.seed)


Step = Callable[[torch.Tensor], torch.Tensor]


def run_sequence(make: Callable[[], Step], matrices: list[torch.Tensor]) -> list[torch.Tensor]:
    """The directions of a fresh stateful rule ``make()`` over the sequence ``matrices``."""
    step = make()
    return [step(m) for m in matrices]


def excessmtl_table(sizes: list[int], repeats: int, seed: int) -> None:
    """ExcessMTL on sequences of gradient matrices, against TorchJD's (module docstring)."""
    try:
        from torchjd.aggregation import ExcessMTL
    except ImportError:  # pragma: no cover - dev dependency
        return
    print("\n| N | rule | µs per call | TorchJD µs | max direction diff to TorchJD |")
    print("|---|---|---|---|---|")
    for n in sizes:
        gen = torch.Generator().manual_seed(seed + n)
        scales = 10.0 ** (2 * torch.rand(n, 1, generator=gen, dtype=torch.float64) - 1)
        matrices = [
            scales * torch.randn(n, EXCESS_WIDTH, generator=gen, dtype=torch.float64)
            for _ in range(EXCESS_STEPS)
        ]
        makers: list[Callable[[], Step]] = [
            lambda n=n: ExcessMTLBalancer(n).combine,
            lambda: ExcessMTL(n_warmup_steps=1),
        ]
        t, t_jd = (
            time_per_call(lambda f=f, ms=matrices: run_sequence(f, ms), repeats) / EXCESS_STEPS
            for f in makers
        )
        ours, theirs = (run_sequence(f, matrices) for f in makers)
        diff = max(
            float((a - b).abs().max() / m.abs().max()) for a, b, m in zip(ours, theirs, matrices)
        )
        print(
            f"| {n} | excessmtl ({EXCESS_STEPS} steps, P={EXCESS_WIDTH}) | {1e6 * t:.0f} "
            f"| {1e6 * t_jd:.0f} | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
