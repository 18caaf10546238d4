"""Evaluation with entropy coding, the results JSON, BD-rates and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plugins.lic import evaluate, report
from plugins.lic.train import main as train_main

TINY = ["-m", "bmshj2018-factorized", "--N", "8", "--M", "12", "--patch-size", "32", "32",
        "--batch-size", "2", "--test-batch-size", "8", "--no-progress", "-lr", "1e-3",
        "--steps", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("ckpts")
    paths = []
    for lam in ("0.001", "0.01", "0.05"):
        assert train_main([*TINY, "--lambda", lam, "--out", str(root / lam)]) == 0
        paths.append(root / lam / "checkpoint.pth.tar")
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(70, 90), (64, 64)]):  # not multiples of 64: padding is exercised
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_bpp_is_eight_times_bytes_over_pixels(checkpoints: list[Path], images: Path) -> None:
    from compressai.ops import compute_padding

    net, _ = evaluate.load_model(checkpoints[0], torch.device("cpu"))
    x = torch.from_numpy(
        np.asarray(Image.open(images / "0.png"), dtype=np.float32).transpose(2, 0, 1) / 255
    )[None]
    pad, _ = compute_padding(70, 90, min_div=64)
    enc = net.compress(torch.nn.functional.pad(x, pad))
    nbytes = sum(len(s) for strings in enc["strings"] for s in strings)
    res = evaluate.code_image(net, x, estimate=False)
    assert res["bpp"] == pytest.approx(8 * nbytes / (70 * 90), rel=1e-12)
    assert res["max_decode_gap"] <= evaluate.CONSISTENCY_TOL
    assert math.isnan(res["ms-ssim-rgb"])  # too small for five MS-SSIM scales
    est = evaluate.code_image(net, x, estimate=True)
    assert math.isnan(est["encoding_time"]) and est["bpp"] > 0


def test_results_json_in_compressai_format_round_trips_into_the_report(
    checkpoints: list[Path], images: Path, tmp_path: Path, capsys
) -> None:
    out_a, out_b = tmp_path / "a.json", tmp_path / "b.json"
    assert (
        evaluate.main(
            [*map(str, checkpoints), "-d", str(images), "--out", str(out_a), "--name", "standard"]
        )
        == 0
    )
    assert "decoded images match the forward pass" in capsys.readouterr().err
    res = json.loads(out_a.read_text())
    assert (
        res["name"] == "standard"
        and res["bpp_kind"] == "entropy-coded bitstream"
        and res["decode_matches_forward"]
    )
    r = res["results"]
    assert len(r["bpp"]) == 3 and r["bpp"] == sorted(r["bpp"])
    assert {"psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time", "lambda"} <= r.keys()
    # 3-step models have no R-D trade-off yet: give the curve a monotonic PSNR so that BD-rate is
    # defined, and a second curve with the same points at 10 % less rate
    res["results"]["psnr-rgb"] = [20.0, 22.0, 24.0]
    out_a.write_text(json.dumps(res))
    other = json.loads(out_a.read_text())
    other["name"] = "cheaper"
    other["results"]["bpp"] = [b * 0.9 for b in other["results"]["bpp"]]
    out_b.write_text(json.dumps(other))
    rep = tmp_path / "report"
    assert (
        report.main(
            [
                str(out_a),
                str(out_b),
                "--anchor",
                "standard",
                "--out",
                str(rep),
                "--logs",
                str(checkpoints[0].parent),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "cheaper: BD-rate -10.00 % (pchip), n/a (cubic)" in printed
        and "cubic needs four points" in printed
    )
    text = (rep / "report.md").read_text()
    assert "rd.png" in text and "figure1.png" in text and "| cheaper | 3 |" in text
    assert (rep / "rd.png").stat().st_size > 10_000 and (
        rep / "figure1.png"
    ).stat().st_size > 10_000


def test_bd_rate_known_answer() -> None:
    rate = [0.2, 0.4, 0.7, 1.1]
    psnr = [26.0, 29.0, 31.5, 33.5]
    anchor = {"name": "a", "results": {"bpp": rate, "psnr-rgb": psnr}}
    for factor in (0.8, 1.25):
        test = {"name": "t", "results": {"bpp": [b * factor for b in rate], "psnr-rgb": psnr}}
        m = report.bd_metrics(anchor, test)
        assert m["bd_rate_pchip"] == pytest.approx((factor - 1) * 100, abs=1e-6)
        assert m["bd_rate_cubic"] == pytest.approx((factor - 1) * 100, abs=1e-6)
        assert (m["bd_quality_pchip"] > 0) == (factor < 1)
        assert m["reason"] == ""
    apart = {"name": "t", "results": {"bpp": rate, "psnr-rgb": [p + 20 for p in psnr]}}
    m = report.bd_metrics(anchor, apart)
    assert math.isnan(m["bd_rate_pchip"]) and "do not overlap" in m["reason"]
    # a curve whose quality falls where its rate rises gets no BD-rate (cubic alone would return a
    # number), in any order
    bent = {
        "name": "t",
        "results": {"bpp": [0.7, 0.2, 1.1, 0.4], "psnr-rgb": [29.5, 26.0, 33.5, 30.0]},
    }
    m = report.bd_metrics(anchor, bent)
    assert (
        all(math.isnan(m[k]) for k in ("bd_rate_pchip", "bd_rate_cubic", "bd_quality_pchip"))
        and "test curve is not monotonic" in m["reason"]
    )
    shuffled = {
        "name": "t",
        "results": {"bpp": [0.7, 0.2, 1.1, 0.4], "psnr-rgb": [31.5, 26.0, 33.5, 29.0]},
    }
    assert report.bd_metrics(anchor, shuffled)["bd_rate_pchip"] == pytest.approx(0.0, abs=1e-6)


def test_bad_inputs_exit_2(checkpoints: list[Path], tmp_path: Path, capsys) -> None:
    (tmp_path / "corrupt.pth.tar").write_bytes(b"junk")
    foreign = tmp_path / "foreign.pth.tar"
    torch.save({"state_dict": {}}, foreign)
    (tmp_path / "noimages").mkdir()
    cases = [
        ([str(tmp_path / "missing.pth.tar")], "no such file"),
        ([str(tmp_path / "corrupt.pth.tar")], "not a readable checkpoint"),
        (
            [str(foreign)],
            "the weights do not fit any CompressAI image architecture; "
            "pass the architecture they were trained with (-m, --N, --M)",
        ),
        ([str(checkpoints[0]), "-d", str(tmp_path / "noimages")], "no images found"),
    ]
    for argv, message in cases:
        assert evaluate.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and message in err, err
    (tmp_path / "bad.json").write_text("{")
    assert report.main([str(tmp_path / "bad.json"), "--anchor", "x"]) == 2
    assert "not a JSON results file" in capsys.readouterr().err


def test_figure1_speeds_are_smoothed_by_a_centred_moving_mean() -> None:
    from plugins.lic.report import smoothed

    assert smoothed([1.0, 2.0, 3.0], parts=15) == [1.0, 2.0, 3.0]  # short series: a window of one
    values = [float(i % 2) for i in range(30)]  # 0, 1, 0, 1, …: its trend is flat at 0.5
    out = smoothed(values, parts=10)  # window of three
    assert all(abs(v - 0.5) <= 1 / 6 + 1e-12 for v in out[1:-1])
    assert smoothed([math.nan, 2.0, 4.0], parts=1)[:2] == [
        2.0,
        3.0,
    ]  # NaNs are left out of the mean
