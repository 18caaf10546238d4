"""Balancers by name: ``create("qp", 2, offsets=1.0)``, ``available()``, ``options("qp")``.

A balancer class joins the registry where it is defined, with the :func:`register` decorator (the
built-ins in ``moo_opt.balancers`` do so). A balancer from another distribution joins through the
entry-point group ``moo_opt.balancers`` (name = the balancer's name, value = ``module:Class``), e.g.
in its ``pyproject.toml``::

    [project.entry-points."moo_opt.balancers"]
    my-balancer = "my_package.balancers:MyBalancer"

Entry points are read on the first call of :func:`available`, :func:`options` or :func:`create`
(never at import); one that cannot be loaded is left out of :func:`available` and makes
:func:`create` raise a ``ValueError`` naming its distribution, so a broken third-party package
never breaks the others.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from moo_opt.balancers.base import Balancer

GROUP = "moo_opt.balancers"
_REGISTRY: dict[str, type[Balancer]] = {}
#: entry-point name → why it could not be loaded
_BROKEN: dict[str, str] = {}
_discovered = False
B = TypeVar("B", bound="type[Balancer]")


def register(cls: B) -> B:
    """Add a balancer class under its ``name`` (a class decorator, or a call)."""
    from moo_opt.balancers.base import Balancer

    if not (isinstance(cls, type) and issubclass(cls, Balancer)):
        raise TypeError(f"{cls!r} is not a Balancer subclass")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"{cls.__qualname__} has no name: give it a class attribute name = 'my-balancer'"
        )
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(
            f"a balancer named {name!r} is already registered "
            f"({_REGISTRY[name].__module__}.{_REGISTRY[name].__qualname__})"
        )
    _REGISTRY[name] = cls
    return cls


def _distribution(entry: metadata.EntryPoint) -> str:
    dist = getattr(entry, "dist", None)
    return (
        f"{dist.metadata['Name']} {dist.version}" if dist is not None else "an unknown distribution"
    )


def _discover() -> None:
    """Import the built-ins and load the ``moo_opt.balancers`` entry points, once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import moo_opt.balancers  # noqa: F401  (the built-ins register themselves)

    for entry in metadata.entry_points(group=GROUP):
        if entry.name in _REGISTRY:
            continue  # a built-in, or a package that registered itself on import
        where = f"the balancer {entry.name!r} of {_distribution(entry)} (entry point {entry.value})"
        try:
            cls = entry.load()
            if getattr(cls, "name", None) != entry.name:
                raise TypeError(
                    f"its class is named {getattr(cls, 'name', None)!r}, not {entry.name!r}"
                )
            register(cls)
        except Exception as exc:  # noqa: BLE001  (any failure of a third-party import is reported, not raised)
            _BROKEN[entry.name] = f"{where} cannot be loaded: {type(exc).__name__}: {exc}"


def available() -> list[str]:
    """Registered balancer names (the built-ins, those registered in this process, and those of
    installed distributions' ``moo_opt.balancers`` entry points that load)."""
    _discover()
    return sorted(_REGISTRY)


def broken() -> dict[str, str]:
    """The ``moo_opt.balancers`` entry points that could not be loaded: name → why (naming the
    distribution)."""
    _discover()
    return dict(_BROKEN)


def _lookup(name: str) -> type[Balancer]:
    _discover()
    if name in _BROKEN:
        raise ValueError(_BROKEN[name] + "; reinstall or fix that package")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown balancer {name!r}; available: {', '.join(available())}"
        ) from None


def options(name: str) -> dict[str, Any]:
    """The options of a balancer (keyword arguments other than ``num_objectives``) and their
    defaults."""
    return _lookup(name).options_of()


def create(name: str, num_objectives: int = 2, **opts: Any) -> Balancer:
    """A new balancer ``name`` for ``num_objectives`` objectives; unknown names or options raise a
    ``ValueError`` that lists the valid ones, bad values one that names the option."""
    cls = _lookup(name)
    valid = options(name)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for balancer {name!r}; "
            f"valid: {', '.join(valid)}"
        )
    return cls(num_objectives=num_objectives, **opts)
