"""CompressAI architectures by name, with ``--N``/``--M`` overrides for models small enough for a
CPU."""

from __future__ import annotations

import functools
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
    # compressai 1.2.8 scripts a function at import: torch warns, users can do nothing
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        from compressai.zoo.image import cfgs, model_architectures

    return model_architectures, cfgs


def available() -> list[str]:
    """Every image architecture compressai 1.2.8 ships (all train on a CPU at small N, M)."""
    return list(_zoo()[0])


def takes_m(name: str) -> bool:
    return not name.startswith("cheng2020")


def spec_for(
    name: str, quality: int | None = None, N: int | None = None, M: int | None = None
) -> ModelSpec:
    """Resolve ``N``/``M``: given values win, else CompressAI's configuration for ``quality``
    (default 1)."""
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
    main = [
        p for n, p in net.named_parameters() if not n.endswith(".quantiles") and p.requires_grad
    ]
    aux = [p for n, p in net.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    return main, aux


# --------------------------------------------------------------------------- weights from elsewhere
#: entropy-coder tables: their shapes depend on ``update()``, not on the architecture
_CODER_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def representation(net: nn.Module) -> nn.Module:
    """The module whose output is the representation that ``gramian="representation"`` balances
    on: the analysis transform ``g_a``, whose output is the latent ``y``.

    ``y`` is the only tensor both objectives reach in every CompressAI image model: the distortion
    through the synthesis ``g_s`` (of the noisy or rounded ``ŷ``), the rate through ``y``'s
    likelihoods and the hyperprior (``z = h_a(y)`` and the context model are downstream of ``y``
    and reached by the rate alone, so ``z`` is not a second representation). Every parameter
    except ``g_a``'s is past ``y``; the balancer checks that ``y`` is a cut of the graph.
    """
    g_a = getattr(net, "g_a", None)
    if not isinstance(g_a, nn.Module):
        raise UsageError(
            f"{type(net).__name__} has no analysis transform g_a: gramian=representation needs "
            "one; use gramian=parameters"
        )
    return g_a


def _shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    return {
        k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith(_CODER_BUFFERS)
    }


@functools.cache
def _key_names(name: str) -> frozenset[str]:
    """The state-dict keys of an architecture (independent of N and M)."""
    return frozenset(_shapes(build(ModelSpec(name, 8, None if not takes_m(name) else 8))))


def _g_a_widths(state_dict: dict[str, Any]) -> tuple[int | None, int | None]:
    """Output channels of the analysis transform's first and last convolution (N and M for every
    CompressAI image architecture; M only where the architecture takes one)."""
    convs = [
        v
        for k, v in state_dict.items()
        if k.startswith("g_a.") and k.endswith("weight") and getattr(v, "ndim", 0) == 4
    ]
    return (int(convs[0].shape[0]), int(convs[-1].shape[0])) if convs else (None, None)


def fits(spec: ModelSpec, state_dict: dict[str, Any]) -> bool:
    """Whether ``state_dict`` has exactly the parameters and buffers of ``spec``, shape for shape
    (the entropy coders' tables, resized by CompressAI's ``load_state_dict``, are not compared)."""
    theirs = {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith(_CODER_BUFFERS)}
    if set(theirs) != _key_names(spec.name):
        return False
    return theirs == _shapes(build(spec))


def infer_spec(
    state_dict: dict[str, Any], name: str | None = None, N: int | None = None, M: int | None = None
) -> ModelSpec:
    """The architecture and channel counts of a bare ``state_dict``: the given ones, the others read
    off the tensors' shapes; every architecture is tried when ``name`` is None. One line naming
    the fix when nothing fits or several do."""
    if name is not None and name not in _zoo()[0]:
        raise UsageError(f"-m {name}: unknown model; available: {', '.join(available())}")
    first, last = _g_a_widths(state_dict)
    keys = {k for k in state_dict if not k.endswith(_CODER_BUFFERS)}
    found = []
    for arch in [name] if name is not None else available():
        if keys != _key_names(arch):
            continue
        n = N if N is not None else first
        m = None if not takes_m(arch) else (M if M is not None else last)
        if n is None or (takes_m(arch) and m is None):
            continue
        spec = ModelSpec(arch, int(n), None if m is None else int(m))
        if fits(spec, state_dict):
            found.append(spec)
    given = " ".join(
        f
        for f in (f"-m {name}" if name else "", f"--N {N}" if N else "", f"--M {M}" if M else "")
        if f
    )
    if not found:
        what = (
            f"{name} (N={N or first}, M={M or last})"
            if name
            else "any CompressAI image architecture"
        )
        raise UsageError(
            f"the weights do not fit {what}{' as given by ' + given if given else ''}; "
            "pass the architecture they were trained with (-m, --N, --M)"
        )
    if len(found) > 1:
        raise UsageError(
            f"the weights fit several architectures ({', '.join(s.name for s in found)}); pass -m"
        )
    return found[0]


def resolve(
    state_dict: dict[str, Any],
    saved: dict[str, Any] | None,
    name: str | None,
    N: int | None,
    M: int | None,
    where: str,
) -> ModelSpec:
    """The architecture of a checkpoint: its own description when it has one (the flags, where
    given, must agree with it), else read off the tensors (:func:`infer_spec`)."""
    if saved is None:
        try:
            return infer_spec(state_dict, name, N, M)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
    spec = ModelSpec(**saved)
    if (
        (name is not None and name != spec.name)
        or (N is not None and N != spec.N)
        or (M is not None and M != spec.M)
    ):
        asked = f"{name or spec.name} (N={N or spec.N}, M={M or spec.M})"
        raise UsageError(
            f"{where}: holds {spec.name} (N={spec.N}, M={spec.M}), not {asked}; "
            "drop -m/--N/--M or pass the matching ones"
        )
    return spec
