"""Balancers by name: ``create("qp", 2, offsets=1.0)``, ``available()``, ``options("qp")``."""

from __future__ import annotations

import inspect
from typing import Any

from moo_opt.balancers import (
    AlignedMTLBalancer,
    Balancer,
    CAGradBalancer,
    CoarseToFineBalancer,
    DWABalancer,
    FAMOBalancer,
    FixedWeights,
    GradNormBalancer,
    IMTLGBalancer,
    MGDABalancer,
    NashMTLBalancer,
    PCGradBalancer,
    QPBalancer,
    RLWBalancer,
    UncertaintyWeighting,
    UPGradBalancer,
)

_REGISTRY: dict[str, type[Balancer]] = {
    cls.name: cls for cls in (FixedWeights, CoarseToFineBalancer, QPBalancer, MGDABalancer, IMTLGBalancer, DWABalancer, RLWBalancer, FAMOBalancer, UncertaintyWeighting, PCGradBalancer, CAGradBalancer, UPGradBalancer, NashMTLBalancer, GradNormBalancer, AlignedMTLBalancer)
}


def available() -> list[str]:
    """Registered balancer names."""
    return sorted(_REGISTRY)


def _lookup(name: str) -> type[Balancer]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown balancer {name!r}; available: {', '.join(available())}") from None


def options(name: str) -> dict[str, Any]:
    """The options of a balancer (keyword arguments other than ``num_objectives``) and their defaults."""
    sig = inspect.signature(_lookup(name).__init__)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name not in ("self", "num_objectives") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def register(cls: type[Balancer]) -> type[Balancer]:
    """Add a balancer class under its ``name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Balancer)):
        raise TypeError(f"{cls!r} is not a Balancer subclass")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a balancer named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def create(name: str, num_objectives: int = 2, **opts: Any) -> Balancer:
    """A new balancer ``name`` for ``num_objectives`` objectives; unknown names or options raise a
    ``ValueError`` that lists the valid ones, bad values one that names the option."""
    cls = _lookup(name)
    valid = options(name)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for balancer {name!r}; valid: {', '.join(valid)}")
    return cls(num_objectives=num_objectives, **opts)
