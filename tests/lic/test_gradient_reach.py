"""Which parameters each R-D objective reaches in CompressAI's hyperprior models (issue 8).

In training mode CompressAI's quantisation proxy adds uniform noise to ``y`` without the means,
so the distortion never reaches the hyper-analysis, hyper-synthesis or entropy models, and the
rate never reaches the synthesis transform ``g_s``. ``moo_opt.objective_gradients`` gets ``None``
for an unreached parameter from autograd (no pass over it, no zeros), and the Gramian skips it:
the off-diagonal entry is summed over ``g_a`` alone. These tests pin that down, so that a change
of CompressAI that couples the objectives more (and costs more) shows up here.
"""

from __future__ import annotations

import pytest
import torch

from moo_opt.gradients import objective_gradients
from plugins.lic import models
from plugins.lic.objectives import rd_losses


@pytest.mark.parametrize("name", ["mbt2018-mean", "bmshj2018-hyperprior"])
def test_rate_skips_g_s_and_distortion_skips_the_entropy_models(name: str) -> None:
    torch.manual_seed(0)
    net = models.build(models.spec_for(name, N=8, M=12)).train()
    main, _ = models.parameter_groups(net)
    names = {id(p): n for n, p in net.named_parameters()}
    x = torch.rand(2, 3, 64, 64)
    grads = objective_gradients(rd_losses(net(x), x, 0.01).as_list(), main)
    reached_d = {names[id(p)].split(".")[0] for p, g in zip(main, grads.grads[0]) if g is not None}
    reached_r = {names[id(p)].split(".")[0] for p, g in zip(main, grads.grads[1]) if g is not None}
    assert reached_d == {"g_a", "g_s"}
    assert reached_r == {"g_a", "h_a", "h_s", "entropy_bottleneck"}
    # the Gramian's cross term is the g_a part alone
    g_a = [(gd, gr) for p, gd, gr in zip(main, *grads.grads) if names[id(p)].startswith("g_a.")]
    cross = sum(float((gd.double() * gr.double()).sum()) for gd, gr in g_a)
    assert float(grads.gramian()[0, 1]) == pytest.approx(cross, rel=1e-12)
    # shared_only balances g_a alone: exactly the parameters both objectives reach
    assert {names[id(p)].split(".")[0] for p, s in zip(main, grads.shared()) if s} == {"g_a"}


def test_qp_shared_only_trains_from_the_cli(tmp_path) -> None:
    from plugins.lic.logs import read
    from plugins.lic.train import main as train_main

    argv = ["-m", "mbt2018-mean", "--N", "8", "--M", "12", "--patch-size", "64", "64",
            "--batch-size", "2", "--no-progress", "--balancer", "qp",
            "--balancer-opt", "shared_only=true", "--steps", "4", "--log-every", "2",
            "--out", str(tmp_path)]  # fmt: skip
    assert train_main(argv) == 0
    records = [r for r in read(tmp_path) if "weight/distortion" in r]
    assert [r["step"] for r in records] == [2, 4] and all(
        r["solver/status"] == "optimal" for r in records
    )
    assert (
        torch.load(tmp_path / "checkpoint.pth.tar", weights_only=False)["balancer"]["options"][
            "shared_only"
        ]
        is True
    )


@pytest.mark.parametrize("name", models.available())
def test_the_latent_is_a_cut_of_every_architecture(name: str) -> None:
    """``gramian=representation`` balances at ``y = g_a(x)``: every parameter but ``g_a``'s is
    past it (the balancer checks the cut), and ``.grad`` is the gradient of the weighted sum of
    the two objectives."""
    import moo_opt

    torch.manual_seed(0)
    spec = models.spec_for(name, N=8, M=12) if models.takes_m(name) else models.spec_for(name, N=8)
    net = models.build(spec).train()
    main, _ = models.parameter_groups(net)
    x = torch.rand(2, 3, 64, 64)

    def losses() -> list[torch.Tensor]:
        torch.manual_seed(1)  # the same quantisation noise in both forwards
        return rd_losses(net(x), x, 0.01).as_list()

    balancer = moo_opt.create("qp", 2, gramian="representation")
    info = moo_opt.balanced_step(
        balancer, torch.optim.SGD(main, lr=0.0), losses, main,
        representation=models.representation(net),
    )  # fmt: skip
    assert info.solve is not None and info.solve.status.value == "optimal"
    weighted = sum(w * loss for w, loss in zip(info.weights.tolist(), losses()))
    expected = torch.autograd.grad(weighted, main, allow_unused=True)
    for p, e in zip(main, expected, strict=True):
        if e is None:
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-7)
