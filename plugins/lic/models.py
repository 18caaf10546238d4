"""CompressAI architectures by name, with ``--N``/``--M`` overrides for models small enough for a CPU."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from plugins.lic.errors import UsageError


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: saved in every checkpoint."""

    name: str
    N: int
    M: int | None
    quality: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _zoo() -> tuple[dict[str, type[nn.Module]], dict[str, dict[int, tuple[int, ...]]]]:
    with warnings.catch_warnings():  # compressai 1.2.8 scripts a function at import: torch warns, users can do nothing
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        from compressai.zoo.image import cfgs, model_architectures

    return model_architectures, cfgs


def available() -> list[str]:
    """Every image architecture compressai 1.2.8 ships (all train on a CPU at small N, M)."""
    return list(_zoo()[0])


def takes_m(name: str) -> bool:
    return not name.startswith("cheng2020")


def spec_for(name: str, quality: int | None = None, N: int | None = None, M: int | None = None) -> ModelSpec:
    """Resolve ``N``/``M``: given values win, else CompressAI's configuration for ``quality`` (default 1)."""
    archs, cfgs = _zoo()
    if name not in archs:
        raise UsageError(f"-m {name}: unknown model; available: {', '.join(available())}")
    q = 1 if quality is None else quality
    defaults = cfgs.get(name) or cfgs.get(name.replace("_", "-"), {})
    if q not in defaults:
        raise UsageError(f"--quality {q}: {name} has qualities {min(defaults)}..{max(defaults)}")
    cfg = defaults[q]
    n = N if N is not None else cfg[0]
    if not takes_m(name):
        if M is not None:
            raise UsageError(f"--M: {name} has a single channel count; pass only --N")
        return ModelSpec(name, int(n), None, quality)
    m = M if M is not None else cfg[1]
    if n <= 0 or m <= 0:
        raise UsageError(f"--N {n} --M {m}: channel counts must be positive")
    return ModelSpec(name, int(n), int(m), quality)


def build(spec: ModelSpec) -> nn.Module:
    archs, _ = _zoo()
    cls = archs[spec.name]
    return cls(N=spec.N) if spec.M is None else cls(N=spec.N, M=spec.M)


def parameter_groups(net: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """CompressAI's split: the main parameters, and the entropy bottlenecks' ``quantiles`` trained
    by the auxiliary loss (never balanced)."""
    main = [p for n, p in net.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux = [p for n, p in net.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    return main, aux
