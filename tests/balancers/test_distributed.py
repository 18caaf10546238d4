"""Exact balancing under torch.distributed: two processes on half batches give the weights and
the parameter updates of one process on the whole batch (gloo, CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from moo_opt import Balancer, GramianBalancer, available, balanced_step, create
from tests.helpers.models import subbatch_step, toy_problem

#: every balancer, every Gramian balancer again with gramian="representation" ("+rep"), and
#: the options that change what a step computes or draws ("name:option=value")
NAMES = (
    available()
    + [f"{n}+rep" for n in available() if isinstance(create(n, 2), GramianBalancer)]
    + ["sdmgrad:sampled=1", "moco:variant=libmtl", "excessmtl:n_warmup_steps=2"]
)
STEPS = 3


def build(name: str) -> Balancer:
    """The balancer a :data:`NAMES` entry names (N = 2)."""
    base, _, option = name.removesuffix("+rep").partition(":")
    options: dict[str, object] = {"gramian": "representation"} if name.endswith("+rep") else {}
    if option:
        key, value = option.split("=")
        options[key] = int(value) if value.isdigit() else value
    return create(base, 2, **options)


def run(name: str, rank: int, world: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """STEPS balanced SGD steps on this rank's share of the batch; (weights per step,
    parameters)."""
    p = toy_problem(seed=0, num_objectives=2, batch=16)
    share = p.x.shape[0] // world
    p.x = p.x[rank * share : (rank + 1) * share]
    p.targets = [t[rank * share : (rank + 1) * share] for t in p.targets]
    balancer = build(name)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-3)
    trunk = p.trunk if name.endswith("+rep") else None
    weights = [
        balanced_step(balancer, opt, p.losses, p.shared(), representation=trunk).weights.clone()
        for _ in range(STEPS)
    ]
    return weights, p.snapshot()


#: the sub-batch of Solution 1's update: the first two samples of each rank's share (8 of 16)
SUBBATCH = torch.tensor([0, 1])


def run_subbatch(rank: int, world: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """STEPS Solution 1 steps whose update recomputes the losses on :data:`SUBBATCH` of this
    rank's share (one process: the same samples of every share at once); (weights, logits)."""
    p = toy_problem(seed=0, num_objectives=2, batch=16)
    share = p.x.shape[0] // world
    p.x = p.x[rank * share : (rank + 1) * share]
    p.targets = [t[rank * share : (rank + 1) * share] for t in p.targets]
    index = torch.cat([SUBBATCH + r * 8 for r in range(2 // world)])
    balancer = create("coarse-to-fine", 2, beta=0.1)
    opt = torch.optim.SGD(p.all_parameters(), lr=1e-2)
    weights = [subbatch_step(p, balancer, opt, index).weights.clone() for _ in range(STEPS)]
    return weights, balancer.logits.clone()


def worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {name: run(name, rank, world) for name in NAMES}
        results["subbatch"] = run_subbatch(rank, world)
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    out = str(tmp / "result")
    mp.spawn(worker, args=(2, str(tmp / "init"), out), nprocs=2, join=True)
    return [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("name", NAMES)
def test_two_processes_equal_one_process_on_the_whole_batch(
    two_process_results: list[dict], name: str
) -> None:
    single_weights, single_params = run(name, rank=0, world=1)
    for rank_results in two_process_results:
        weights, params = rank_results[name]
        for w, s in zip(weights, single_weights, strict=True):
            torch.testing.assert_close(w, s, rtol=1e-10, atol=1e-12)
        for a, b in zip(params, single_params, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and the two ranks agree with each other exactly: one update, replicated
    for a, b in zip(two_process_results[0][name][1], two_process_results[1][name][1], strict=True):
        assert torch.equal(a, b)


def test_a_sub_batch_update_averages_its_losses_over_the_processes(
    two_process_results: list[dict],
) -> None:
    """Each rank's sub-batch losses, before and after the step, averaged over the ranks: the
    logits of one process whose sub-batch is the union of the ranks'."""
    single_weights, single_logits = run_subbatch(rank=0, world=1)
    assert not torch.equal(single_logits, torch.zeros(2, dtype=torch.float64))
    for rank_results in two_process_results:
        weights, logits = rank_results["subbatch"]
        for w, s in zip(weights, single_weights, strict=True):
            torch.testing.assert_close(w, s, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(logits, single_logits, rtol=1e-10, atol=1e-12)


def test_one_process_needs_no_process_group() -> None:
    from moo_opt.distributed import mean_, world_size

    assert world_size() == 1
    t = torch.tensor([1.0, 2.0])
    assert mean_(t) is t and t.tolist() == [1.0, 2.0]
