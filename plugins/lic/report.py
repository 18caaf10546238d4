"""R-D curves, BD-rates against an anchor, and the paper's Figure 1 view of training logs.

    python -m plugins.lic.report standard.json balanced.json --anchor standard --out report/ \\
        [--logs runs/standard runs/balanced]

Writes ``rd.png`` (PSNR and MS-SSIM against bpp), ``figure1.png`` (from ``--logs``: each
objective's loss and improvement speed over steps, and the balancer's weights) and
``report.md`` (the BD-rate table, the inputs and how to reproduce them). BD-rate and BD-PSNR use
the ``bjontegaard`` package with pchip interpolation; cubic is given as a check.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from plugins.lic.errors import ArgumentParser, UsageError
from plugins.lic.logs import read as read_log


def load_results(path: Path) -> dict[str, Any]:
    try:
        res = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such results file") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UsageError(
            f"{path}: not a JSON results file; pass the output of python -m plugins.lic.evaluate"
        ) from None
    if (
        not isinstance(res, dict)
        or "name" not in res
        or "results" not in res
        or "bpp" not in res["results"]
    ):
        raise UsageError(
            f"{path}: not in CompressAI's results format (name, results.bpp, results.psnr-rgb)"
        )
    return res


def bd_metrics(
    anchor: dict[str, Any], test: dict[str, Any], metric: str = "psnr-rgb"
) -> dict[str, Any]:
    """BD-rate (%) and BD-quality of ``test`` against ``anchor`` (pchip, with cubic as a check).

    NaN with a ``reason`` when it cannot be computed: fewer than two points (four for cubic),
    quality ranges that do not overlap (the integral would extrapolate), or a curve that is not
    monotonic (the quality falls somewhere as the rate rises: no BD-rate is quoted on it)."""
    import warnings

    import bjontegaard as bd

    ra, da = _by_rate(anchor["results"]["bpp"], anchor["results"][metric])
    rt, dt = _by_rate(test["results"]["bpp"], test["results"][metric])
    out: dict[str, Any] = {}
    reasons = []
    if min(len(ra), len(rt)) < 2:
        reasons.append("fewer than two points")
    elif max(min(da), min(dt)) >= min(max(da), max(dt)):
        reasons.append(
            f"{metric} ranges do not overlap "
            f"({min(da):.2f}–{max(da):.2f} vs {min(dt):.2f}–{max(dt):.2f})"
        )
    elif unsorted := [n for n, d in (("anchor", da), ("test", dt)) if not _rises(d)]:
        reasons.append(
            f"the {' and the '.join(unsorted)} curve is not monotonic "
            f"({metric} falls where the rate rises)"
        )
    blocked = bool(reasons)
    for method in ("pchip", "cubic"):
        for key, fn in (("bd_rate", bd.bd_rate), ("bd_quality", bd.bd_psnr)):
            value = math.nan
            if not blocked and not (method == "cubic" and min(len(ra), len(rt)) < 4):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        value = float(
                            fn(ra, da, rt, dt, method=method, require_matching_points=False)
                        )
                except (ValueError, ZeroDivisionError, AssertionError) as exc:
                    reasons.append(
                        f"{key} ({method}): {str(exc).rstrip('.') or type(exc).__name__}"
                    )
            out[f"{key}_{method}"] = value
    if min(len(ra), len(rt)) < 4:
        reasons.append("cubic needs four points")
    out["reason"] = "; ".join(dict.fromkeys(reasons))
    return out


def _by_rate(rates: list[float], quality: list[float]) -> tuple[list[float], list[float]]:
    """The points sorted by rate (evaluations list them in checkpoint order)."""
    pts = sorted(zip(rates, quality))
    return [r for r, _ in pts], [q for _, q in pts]


def _rises(quality: list[float]) -> bool:
    """Quality strictly increases along points sorted by rate."""
    return all(b > a for a, b in zip(quality, quality[1:]))


def monotonic(res: dict[str, Any]) -> bool:
    """Higher rate gives higher quality along the curve (in any listed order: sorted by bpp
    first)."""
    return _rises(_by_rate(res["results"]["bpp"], res["results"]["psnr-rgb"])[1])


def _pyplot():
    """matplotlib.pyplot on the headless Agg backend (the lic extra provides matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rd(results: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    markers = "osD^v<>ph*"
    for i, res in enumerate(results):
        r = res["results"]
        for ax, key in zip(axes, ("psnr-rgb", "ms-ssim-rgb")):
            ax.plot(
                r["bpp"], r[key], marker=markers[i % len(markers)], label=res["name"], alpha=0.85
            )
    axes[0].set(xlabel="bpp", ylabel="PSNR (dB)", title="rate-distortion (PSNR)")
    axes[1].set(xlabel="bpp", ylabel="MS-SSIM", title="rate-distortion (MS-SSIM)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="lower center",
        ncol=max(1, len(results)),
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def smoothed(values: list[float], parts: int = 15) -> list[float]:
    """A centred moving mean over about a ``parts``-th of the series (the per-step speeds are mostly
    batch noise; their trend is what the paper's Figure 1 compares). NaNs are left out of each
    mean."""
    half = max(len(values) // parts, 1) // 2
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(i - half, 0) : i + half + 1] if not math.isnan(v)]
        out.append(sum(window) / len(window) if window else math.nan)
    return out


def plot_figure1(logs: list[Path], path: Path) -> None:
    """Each objective's loss and improvement speed over steps, and the weights: one line per run."""
    plt = _pyplot()

    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for folder in logs:
        try:
            records = [r for r in read_log(folder) if "weight/distortion" in r]
        except FileNotFoundError:
            raise UsageError(
                f"--logs {folder}: no log.jsonl; pass the --out folder of a training run"
            ) from None
        label = Path(folder).name
        steps = [r["step"] for r in records]
        for row, name in enumerate(("distortion", "rate")):
            axes[row, 0].plot(steps, [r[f"loss/{name}"] for r in records], label=label)
            axes[row, 1].plot(
                steps, smoothed([r.get(f"speed/{name}", math.nan) for r in records]), label=label
            )
            axes[row, 2].plot(steps, [r[f"weight/{name}"] for r in records], label=label)
    for row, name in enumerate(("distortion", "rate")):
        axes[row, 0].set(title=f"{name} loss", xlabel="step", yscale="log")
        axes[row, 1].set(
            title=f"{name} improvement speed (EMA of −Δ log(L+1), moving mean)", xlabel="step"
        )
        axes[row, 2].set(title=f"weight on {name}", xlabel="step", yscale="log")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    fig.legend(
        *axes[0, 0].get_legend_handles_labels(),
        loc="lower center",
        ncol=max(1, len(logs)),
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fmt(x: float, digits: int = 2, suffix: str = "") -> str:
    return (
        "n/a"
        if x is None or (isinstance(x, float) and math.isnan(x))
        else f"{x:+.{digits}f}{suffix}"
    )


def write_report(
    results: list[dict[str, Any]], anchor: str, out: Path, logs: list[Path], command: str
) -> dict[str, dict[str, Any]]:
    """Write ``rd.png``, ``figure1.png`` (with ``logs``) and ``report.md`` into ``out``; returns
    the BD metrics of every run but the anchor, by name."""
    names = [r["name"] for r in results]
    if anchor not in names:
        raise UsageError(f"--anchor {anchor}: no results named so; names: {', '.join(names)}")
    out.mkdir(parents=True, exist_ok=True)
    plot_rd(results, out / "rd.png")
    if logs:
        plot_figure1(logs, out / "figure1.png")
    base = next(r for r in results if r["name"] == anchor)
    table = {r["name"]: bd_metrics(base, r) for r in results if r["name"] != anchor}
    lines = _bd_section(results, anchor, table) + _points_section(results)
    if logs:
        lines += _training_section(logs)
    lines += ["", "## Reproduce", "", "```", command, "```", ""]
    (out / "report.md").write_text("\n".join(lines))
    return table


def _bd_section(
    results: list[dict[str, Any]], anchor: str, table: dict[str, dict[str, Any]]
) -> list[str]:
    """The report's title, the R-D plot and the BD-rate table (one row per run)."""
    lines = [
        "# Rate-distortion report",
        "",
        f"Anchor: **{anchor}**. "
        "BD-rate: average bitrate difference at equal PSNR (negative is better); "
        "BD-PSNR: average PSNR difference at equal rate (positive is better). Interpolation: pchip "
        "(cubic as a check; n/a with fewer than four points). bpp: "
        + ", ".join(sorted({r.get("bpp_kind", "entropy-coded bitstream") for r in results}))
        + ".",
        "",
        "![R-D curves](rd.png)",
        "",
        "| run | points | monotonic | BD-rate (pchip) | BD-rate (cubic) | BD-PSNR (pchip) | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = table.get(r["name"])
        row = (
            f"| {r['name']} | {len(r['results']['bpp'])} | {'yes' if monotonic(r) else 'no'} | "
            + (
                "anchor | anchor | anchor | |"
                if m is None
                else (
                    f"{fmt(m['bd_rate_pchip'], 2, ' %')} | {fmt(m['bd_rate_cubic'], 2, ' %')} | "
                    f"{fmt(m['bd_quality_pchip'], 3, ' dB')} | {m['reason']} |"
                )
            )
        )
        lines.append(row)
    return lines


def _points_section(results: list[dict[str, Any]]) -> list[str]:
    """Every evaluated point of every run, and a warning when a curve is not monotonic."""
    lines = [
        "",
        "## Points",
        "",
        "| run | λ | bpp | PSNR (dB) | MS-SSIM | checkpoint |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        res = r["results"]
        for i, b in enumerate(res["bpp"]):
            lam = res.get("lambda", [None] * len(res["bpp"]))[i]
            lines.append(
                f"| {r['name']} | {lam} | {b:.4f} | {res['psnr-rgb'][i]:.2f} | "
                f"{res['ms-ssim-rgb'][i]:.4f} | "
                f"`{res.get('checkpoint', [''] * len(res['bpp']))[i]}` |"
            )
    if not all(monotonic(r) for r in results):
        lines += [
            "",
            "A curve that is not monotonic (higher rate, higher PSNR) makes its BD-rate "
            "unreliable: train longer before quoting it.",
        ]
    return lines


def _training_section(logs: list[Path]) -> list[str]:
    """The Figure 1 view of the training logs."""
    return [
        "",
        "## Training (the paper's Figure 1 view)",
        "",
        "![Figure 1](figure1.png)",
        "",
        "Logs: " + ", ".join(f"`{p}`" for p in logs),
    ]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m plugins.lic.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "results", nargs="+", type=Path, help="results JSON files of python -m plugins.lic.evaluate"
    )
    parser.add_argument(
        "--anchor", required=True, help="name of the reference run (the standard loss)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("report"), help="folder for report.md and the plots"
    )
    parser.add_argument(
        "--logs",
        nargs="*",
        type=Path,
        default=[],
        help="training --out folders for the Figure 1 view (default: none, no Figure 1)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        results = [load_results(p) for p in args.results]
        table = write_report(
            results,
            args.anchor,
            args.out,
            args.logs,
            "python -m plugins.lic.report " + " ".join(argv or sys.argv[1:]),
        )
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, m in table.items():
        note = f" — {m['reason']}" if m["reason"] else ""
        print(
            f"{name}: BD-rate {fmt(m['bd_rate_pchip'], 2, ' %')} (pchip), "
            f"{fmt(m['bd_rate_cubic'], 2, ' %')} (cubic); "
            f"BD-PSNR {fmt(m['bd_quality_pchip'], 3, ' dB')}{note}"
        )
    print(f"report: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
