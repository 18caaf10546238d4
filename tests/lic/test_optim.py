"""The trainer's optimisers (Adam, SGD, cautious Adam), the weights' EMA, and fine-tunes that carry
the optimiser state over."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from plugins.lic import checkpoint, optim
from plugins.lic.train import main

TINY = ["-m", "bmshj2018-factorized", "--N", "8", "--M", "12", "--patch-size", "32", "32",
        "--batch-size", "2", "--test-batch-size", "8", "--log-every", "5", "--no-progress",
        "-lr", "1e-3"]  # fmt: skip


def train(out: Path, *extra: str) -> int:
    return main([*TINY, "--out", str(out), *extra])


def cautious_by_hand(
    theta: np.ndarray,
    grads: list[np.ndarray],
    lr: float,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> np.ndarray:
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        keep = (m * g > 0).astype(np.float64)
        scale = min(1 / max(keep.mean(), 1e-3), 10.0)
        theta = theta - lr / (1 - b1**t) * scale * keep * m / (np.sqrt(v / (1 - b2**t)) + eps)
    return theta


def test_cautious_adam_matches_a_hand_computation() -> None:
    """Three steps with gradients whose signs flip in some coordinates: the masked, rescaled
    update."""
    theta0 = np.array([0.5, -1.0, 2.0, 0.0], dtype=np.float64)
    grads = [
        np.array([1.0, -2.0, 0.5, 3.0]),
        np.array([-1.0, -1.0, 0.5, -0.1]),
        np.array([-2.0, 1.0, -0.5, 1.0]),
    ]
    p = torch.nn.Parameter(torch.tensor(theta0))
    opt = optim.CautiousAdam([p], lr=0.1)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(
        p.detach().numpy(), cautious_by_hand(theta0, grads, 0.1), rtol=1e-12, atol=1e-14
    )
    assert isinstance(opt, torch.optim.Adam) and set(opt.state[p]) == {
        "step",
        "exp_avg",
        "exp_avg_sq",
    }


def test_cautious_adam_is_adam_where_every_sign_agrees() -> None:
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3).double(), torch.nn.Linear(4, 3).double()
    b.load_state_dict(a.state_dict())
    oa, ob = torch.optim.Adam(a.parameters(), lr=0.01), optim.CautiousAdam(b.parameters(), lr=0.01)
    x = torch.randn(8, 4, dtype=torch.float64)
    for net, opt in ((a, oa), (b, ob)):
        net(x).pow(
            2
        ).sum().backward()  # one step from zero moments: m has the gradient's sign everywhere
        opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-14)


def test_sgd_with_momentum_matches_a_hand_computation() -> None:
    """What ``--optimizer sgd --momentum μ`` builds: heavy ball, b ← μ·b + g (b = g at the first
    step), θ ← θ − lr·b, no dampening, no Nesterov."""
    theta0 = np.array([0.5, -1.0, 2.0], dtype=np.float64)
    grads = [np.array([1.0, -2.0, 0.5]), np.array([-1.0, -1.0, 0.5]), np.array([-2.0, 1.0, -0.5])]
    p = torch.nn.Parameter(torch.tensor(theta0))
    opt = optim.build("sgd", [p], lr=0.1, momentum=0.9)
    theta, buf = theta0.copy(), None
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
        buf = g.copy() if buf is None else 0.9 * buf + g
        theta = theta - 0.1 * buf
    np.testing.assert_allclose(p.detach().numpy(), theta, rtol=1e-14, atol=1e-15)
    plain = torch.nn.Parameter(torch.tensor(theta0))
    sgd = optim.build("sgd", [plain], lr=0.1)  # momentum 0: θ − lr·g
    plain.grad = torch.tensor(grads[0])
    sgd.step()
    np.testing.assert_allclose(plain.detach().numpy(), theta0 - 0.1 * grads[0], rtol=1e-14)


def test_weight_ema_by_hand_and_round_trip() -> None:
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema = optim.WeightEMA(net, 0.5, warmup=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[3.0, 0.0]]))
    ema.update()  # 0.5·[1, 2] + 0.5·[3, 0]
    with ema.applied():
        assert net.weight.tolist() == [[2.0, 1.0]]
    assert net.weight.tolist() == [[3.0, 0.0]]
    other = optim.WeightEMA(net, 0.9)
    other.load_state_dict(ema.state_dict())
    assert (
        other.decay == 0.5
        and other.updates == 1
        and not other.warmup
        and torch.equal(other.shadow[0], ema.shadow[0])
    )
    old = {
        k: v for k, v in ema.state_dict().items() if k != "warmup"
    }  # written before the warm-up existed: the fixed decay
    other.load_state_dict(old)
    assert not other.warmup and other.current_decay() == 0.5
    with pytest.raises(ValueError, match="decay must lie in"):
        optim.WeightEMA(net, 1.0)


def test_weight_ema_warmup_by_hand() -> None:
    """torch_ema's default: d_t = min(d, (1 + t)/(10 + t)), so the average forgets the initial
    weights."""
    net = torch.nn.Linear(1, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = optim.WeightEMA(net, 0.999)
    expected, history = 0.0, []
    for t in range(1, 2001):
        with torch.no_grad():
            net.weight.fill_(float(t))
        d = min(0.999, (1 + t) / (10 + t))
        assert ema.current_decay() == d
        ema.update()
        expected = d * expected + (1 - d) * t
        history.append(expected)
    assert ema.shadow[0].item() == pytest.approx(expected, rel=1e-12)
    assert [d for d in (min(0.999, (1 + t) / (10 + t)) for t in (1, 8990, 8991))] == [
        2 / 11,
        8991 / 9000,
        0.999,
    ]
    fixed = optim.WeightEMA(net, 0.999, warmup=False)
    assert fixed.current_decay() == 0.999
    # the warm-up's average tracks the iterates (it lags by about t/10 early on), a fixed decay
    # keeps the start's zero
    assert history[99] > 80 and 0.999**100 > 0.9


@pytest.mark.parametrize(
    "flags",
    [["--optimizer", "sgd", "--momentum", "0.9", "-lr", "1e-2"], ["--optimizer", "cautious-adam"]],
)
def test_trains_and_resumes_exactly_with_each_optimiser_and_an_ema(
    tmp_path: Path, flags: list[str]
) -> None:
    common = [*flags, "--ema", "0.9", "--balancer", "qp"]
    assert train(tmp_path / "a", *common, "--steps", "12") == 0
    assert train(tmp_path / "b", *common, "--steps", "6") == 0
    assert (
        train(
            tmp_path / "b",
            *common,
            "--steps",
            "12",
            "--checkpoint",
            str(tmp_path / "b" / checkpoint.LAST),
        )
        == 0
    )
    a = torch.load(tmp_path / "a" / checkpoint.LAST, weights_only=False)
    b = torch.load(tmp_path / "b" / checkpoint.LAST, weights_only=False)
    assert a["optimizer_kind"] == flags[1] and a["ema"]["updates"] == 12
    for key in ("state_dict", "raw_state_dict"):
        for k, v in a[key].items():
            assert torch.equal(v, b[key][k]), (key, k)
    # the saved model is the average, not the raw weights; the average is what was tested
    assert not torch.equal(a["state_dict"]["g_a.0.weight"], a["raw_state_dict"]["g_a.0.weight"])
    shadow = dict(zip([n for n, p in _named(a)], a["ema"]["shadow"]))
    assert torch.equal(shadow["g_a.0.weight"], a["state_dict"]["g_a.0.weight"])


def _named(ckpt: dict) -> list[tuple[str, torch.Tensor]]:
    from compressai.models import FactorizedPrior

    net = FactorizedPrior(N=8, M=12)
    return [(n, p) for n, p in net.named_parameters() if p.requires_grad]


def test_finetune_from_an_ema_checkpoint_starts_from_the_average(tmp_path: Path) -> None:
    assert train(tmp_path / "pre", "--ema", "0.5", "--steps", "4") == 0
    pre = torch.load(tmp_path / "pre" / checkpoint.LAST, weights_only=False)
    assert (
        train(
            tmp_path / "ft",
            "--finetune",
            "--checkpoint",
            str(tmp_path / "pre" / checkpoint.LAST),
            "-lr",
            "1e-30",
            "--steps",
            "1",
            "--clip_max_norm",
            "0",
        )
        == 0
    )
    ft = torch.load(tmp_path / "ft" / checkpoint.LAST, weights_only=False)
    torch.testing.assert_close(
        ft["state_dict"]["g_s.0.weight"], pre["state_dict"]["g_s.0.weight"], rtol=0, atol=1e-20
    )


def test_keep_optimizer_carries_the_moments_at_the_new_learning_rate(tmp_path: Path) -> None:
    assert train(tmp_path / "pre", "--steps", "5") == 0
    pre = torch.load(tmp_path / "pre" / checkpoint.LAST, weights_only=False)
    args = [
        "--finetune",
        "--checkpoint",
        str(tmp_path / "pre" / checkpoint.LAST),
        "-lr",
        "5e-5",
        "--steps",
        "2",
        "--balancer",
        "qp",
    ]
    assert train(tmp_path / "kept", *args, "--keep-optimizer") == 0
    assert train(tmp_path / "fresh", *args) == 0
    kept = torch.load(tmp_path / "kept" / checkpoint.LAST, weights_only=False)["optimizer"]
    fresh = torch.load(tmp_path / "fresh" / checkpoint.LAST, weights_only=False)["optimizer"]
    assert float(kept["state"][0]["step"]) == float(pre["optimizer"]["state"][0]["step"]) + 2 == 7
    assert float(fresh["state"][0]["step"]) == 2
    assert kept["param_groups"][0]["lr"] == fresh["param_groups"][0]["lr"] == 5e-5


BAD = [
    (["--momentum", "0.9"], "--momentum is SGD's; pass --optimizer sgd"),
    (["--optimizer", "sgd", "--momentum", "1"], "--momentum 1.0: must lie in [0, 1)"),
    (["--ema", "1.5"], "--ema 1.5: a decay in (0, 1)"),
    (["--keep-optimizer"], "--keep-optimizer goes with --finetune"),
    (
        ["--optimizer", "sgd", "--balancer", "qp", "--balancer-opt", "metric=adam"],
        "metric='adam' needs a torch.optim.Adam or AdamW optimiser, got SGD; "
        "use --optimizer adam or cautious-adam",
    ),
    (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    assert train(tmp_path / "out", "--steps", "2", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err


def test_resume_and_keep_optimizer_refuse_what_does_not_match(tmp_path: Path, capsys) -> None:
    assert train(tmp_path / "pre", "--ema", "0.9", "--steps", "2") == 0
    last = str(tmp_path / "pre" / checkpoint.LAST)
    assert train(tmp_path / "pre", "--steps", "4", "--checkpoint", last) == 2
    assert "resume it with --ema 0.9, as it was trained" in capsys.readouterr().err
    assert (
        train(
            tmp_path / "ft",
            "--finetune",
            "--keep-optimizer",
            "--optimizer",
            "sgd",
            "--checkpoint",
            last,
            "--steps",
            "1",
        )
        == 2
    )
    assert "its optimiser is adam; pass --optimizer adam" in capsys.readouterr().err
    torch.save(torch.load(last, weights_only=False)["state_dict"], tmp_path / "raw.pth")
    assert (
        train(
            tmp_path / "ft2",
            "--finetune",
            "--keep-optimizer",
            "--checkpoint",
            str(tmp_path / "raw.pth"),
            "--steps",
            "1",
        )
        == 2
    )
    assert (
        "holds no optimiser state of plugins.lic.train; drop --keep-optimizer"
        in capsys.readouterr().err
    )


def test_qp_finetune_takes_the_recommended_options_unless_given(tmp_path: Path, capsys) -> None:
    """``--balancer qp --finetune`` uses FINETUNE_QP_DEFAULTS (said on stderr, kept in the
    checkpoint, so a resume keeps them); an option given with --balancer-opt wins; training from
    scratch and a resume are untouched."""
    from plugins.lic.train import FINETUNE_QP_DEFAULTS

    assert train(tmp_path / "pre", "--steps", "2") == 0
    pre = str(tmp_path / "pre" / checkpoint.LAST)
    capsys.readouterr()
    assert (
        train(
            tmp_path / "ft", "--finetune", "--checkpoint", pre, "--balancer", "qp", "--steps", "2"
        )
        == 0
    )
    assert "note: --balancer qp --finetune uses" in capsys.readouterr().err
    opts = torch.load(tmp_path / "ft" / checkpoint.LAST, weights_only=False)["balancer"]["options"]
    assert {k: opts[k] for k in FINETUNE_QP_DEFAULTS} == FINETUNE_QP_DEFAULTS
    # resume
    assert (
        train(
            tmp_path / "ft",
            "--checkpoint",
            str(tmp_path / "ft" / checkpoint.LAST),
            "--balancer",
            "qp",
            "--steps",
            "3",
        )
        == 0
    )
    resumed = torch.load(tmp_path / "ft" / checkpoint.LAST, weights_only=False)["balancer"][
        "options"
    ]
    assert {k: resumed[k] for k in FINETUNE_QP_DEFAULTS} == FINETUNE_QP_DEFAULTS
    given = [x for k in FINETUNE_QP_DEFAULTS for x in ("--balancer-opt", f"{k}=none")]
    assert (
        train(
            tmp_path / "paper",
            "--finetune",
            "--checkpoint",
            pre,
            "--balancer",
            "qp",
            "--steps",
            "1",
            *given,
        )
        == 0
    )
    paper = torch.load(tmp_path / "paper" / checkpoint.LAST, weights_only=False)["balancer"][
        "options"
    ]
    assert all(paper[k] is None for k in FINETUNE_QP_DEFAULTS)
    assert train(tmp_path / "scratch", "--balancer", "qp", "--steps", "1") == 0
    scratch = torch.load(tmp_path / "scratch" / checkpoint.LAST, weights_only=False)["balancer"][
        "options"
    ]
    assert scratch["trust_radius"] is None
