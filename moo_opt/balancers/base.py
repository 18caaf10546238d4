"""The one API every balancer implements: ``backward`` fills ``.grad`` and returns a
:class:`BalanceInfo`; amortised balancers also take ``update``; state round-trips exactly."""

from __future__ import annotations

import copy
import functools
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from moo_opt import distributed
from moo_opt.gradients import (
    ObjectiveGradients,
    accumulate_grad,
    check_losses,
    check_parameters,
    objective_gradients,
    reachable_leaves,
)
from moo_opt.representations import (
    backward_trunk,
    check_representations,
    cut_gramian,
    representation_gradients,
)
from moo_opt.solvers import SolveResult

NonFinite = Literal["raise", "skip", "unchecked"]
_NONFINITE = ("raise", "skip", "unchecked")
Gramian = Literal["parameters", "representation"]
_GRAMIANS = ("parameters", "representation")


class NonFiniteLossError(ValueError):
    """A loss (or the Gramian of the gradients) is NaN or Inf; nothing was written."""


@dataclass(frozen=True, eq=False)
class BalanceInfo:
    """What one balancing step did. Tensors are detached and stay on the losses' device."""

    #: (N,) coefficients applied to the raw losses: ``.grad`` received ``Σᵢ wᵢ ∇Lᵢ``
    weights: Tensor
    #: (N,) the losses' values
    losses: Tensor
    #: True when the step was skipped (``nonfinite="skip"``): nothing was written or changed
    skipped: bool = False
    #: the solver's result, for balancers that solve a QP
    solve: SolveResult | None = None
    #: balancer-specific per-objective tensors (logits, softmax weights, QP weights, …)
    extras: Mapping[str, Tensor] = field(default_factory=dict)
    #: steps skipped so far by this balancer (this one included)
    skips: int = 0

    def as_dict(self, names: Sequence[str] | None = None) -> dict[str, float | int | str]:
        """Flat Python scalars for loggers: ``weight/<name>``, ``loss/<name>``, ``<extra>/<name>``,
        ``solver/*``, ``skipped``, ``skips``. Reads the tensors (a host synchronisation on CUDA)."""
        n = self.weights.numel()
        names = [str(i) for i in range(n)] if names is None else list(names)
        if len(names) != n:
            raise ValueError(f"as_dict needs {n} names, got {len(names)}")
        out: dict[str, float | int | str] = {}
        for key, values in (("weight", self.weights), ("loss", self.losses), *self.extras.items()):
            flat = values.detach().double().cpu().reshape(-1).tolist()
            if len(flat) == n:
                out.update({f"{key}/{name}": v for name, v in zip(names, flat)})
            elif len(flat) == 1:
                out[key] = flat[0]
            else:
                out.update({f"{key}/{i}": v for i, v in enumerate(flat)})
        if self.solve is not None:
            out["solver/status"] = self.solve.status.value
            out["solver/kkt_residual"] = self.solve.kkt_residual
            out["solver/condition"] = self.solve.condition
            out["solver/method"] = self.solve.method
        out["skipped"] = int(self.skipped)
        out["skips"] = self.skips
        return out


def as_offsets(offsets: float | Sequence[float], n: int) -> tuple[float, ...]:
    """Validate the log-loss offsets cᵢ (a scalar or one per objective, each finite and ≥ 0)."""
    values = (
        (float(offsets),) * n
        if isinstance(offsets, (int, float))
        else tuple(float(c) for c in offsets)
    )
    if len(values) != n:
        raise ValueError(f"offsets needs 1 or {n} values, got {len(values)}")
    if not all(math.isfinite(c) and c >= 0.0 for c in values):
        raise ValueError(f"offsets must be finite and >= 0, got {values}")
    return values


def positive_int(name: str, value: int, minimum: int = 1) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum`` (1: positive; 0: a count
    that may be zero), else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


def finite_number(
    name: str,
    value: float,
    low: float = 0.0,
    high: float = math.inf,
    *,
    above: bool = False,
    below: bool = False,
) -> float:
    """``value`` as a float if it is a finite int or float (not a bool) at least ``low`` (more
    than it if ``above``) and at most ``high`` (less than it if ``below``), else a ``ValueError``
    naming ``name`` and the range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if above else value >= low)
    ok = ok and (value < high if below else value <= high)
    if not ok:
        if math.isinf(high):
            bounds = f"{'>' if above else '>='} {low:g}"
        else:
            bounds = f"in {'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}"
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")
    return float(value)


def preferences(task_weights: Sequence[float] | None, n: int) -> tuple[float, ...] | None:
    """Validated task preferences ``u``: None (the default, 1/N each) or N finite numbers ≥ 0."""
    if task_weights is None:
        return None
    try:
        values = tuple(float(u) for u in task_weights)
    except (TypeError, ValueError):
        raise ValueError(
            f"task_weights needs {n} finite values >= 0 (a sequence), got {task_weights!r}"
        ) from None
    if len(values) != n or not all(math.isfinite(u) and u >= 0.0 for u in values):
        raise ValueError(f"task_weights needs {n} finite values >= 0, got {values}")
    return values


def adam_step_(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """One step of ``torch.optim.Adam``'s arithmetic, in place, for a balancer's own small
    parameters (``step``: the count including this step)."""
    b1, b2 = betas
    exp_avg.lerp_(grad, 1.0 - b1)
    exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1.0 - b2**step)).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / (1.0 - b1**step))


def _recording(init: Any) -> Any:
    """Wrap a balancer's ``__init__`` so that the outermost call records the options it was given
    (its bound arguments with the defaults filled in, and the class's
    :attr:`Balancer.option_defaults` for the arguments not passed): :meth:`Balancer.state_dict`
    saves them and rebuilding from them gives the same balancer, whatever the class keeps in its
    attributes."""
    sig = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Balancer, *args: Any, **kwargs: Any) -> None:
        if "_given_options" not in self.__dict__:  # the outermost constructor of this object
            for key, value in type(self).option_defaults.items():
                kwargs.setdefault(key, value)
            bound = sig.bind(self, *args, **kwargs)
            bound.apply_defaults()
            self.__dict__["_given_options"] = copy.deepcopy(
                {k: v for k, v in bound.arguments.items() if k != "self"}
            )
        init(self, *args, **kwargs)

    return wrapper


class Offsets:
    """The offsets ``cᵢ`` of ``log(Lᵢ + cᵢ)``: validated values and a tensor copy per device."""

    def __init__(self, offsets: float | Sequence[float], n: int) -> None:
        self.values = as_offsets(offsets, n)
        self._tensor: Tensor | None = None

    def on(self, device: torch.device) -> Tensor:
        if self._tensor is None or self._tensor.device != device:  # copied once, not every step
            self._tensor = torch.tensor(self.values, dtype=torch.float64, device=device)
        return self._tensor


class Balancer(ABC):
    """Base class: input checks, non-finite handling and the state-dict format.

    Subclasses set :attr:`name` (the registry key) and implement :meth:`_backward`. Their
    constructor's keyword arguments are their options, declared there once: the options a
    balancer was built with are recorded (:meth:`options_of` lists them with their defaults),
    :meth:`state_dict` saves them and :meth:`load_state_dict` rebuilds from them, so attributes are
    free to be named and shaped as the class likes. A subclass that only changes defaults sets
    :attr:`option_defaults` instead of repeating the constructor.
    """

    name: ClassVar[str]
    #: True for a method that reads values back to the host every step by design (on CUDA, a
    #: synchronisation even with ``nonfinite="unchecked"``)
    reads_host: ClassVar[bool] = False
    #: defaults that differ from the constructor's (a subclass's own defaults, e.g. FAMO's)
    option_defaults: ClassVar[Mapping[str, Any]] = {}
    #: attributes that are runtime bindings, not options or state (e.g. an optimiser): kept as they
    #: are by :meth:`load_state_dict`
    _runtime_attributes: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording(cls.__dict__["__init__"])  # type: ignore[method-assign]
        unknown = set(cls.option_defaults) - set(cls.options_of())
        if unknown:
            raise TypeError(
                f"{cls.__qualname__}.option_defaults: {', '.join(sorted(unknown))} "
                "not among its options"
            )

    @classmethod
    def options_of(cls) -> dict[str, Any]:
        """The options of this class (keyword arguments other than ``num_objectives``) and their
        defaults."""
        params = inspect.signature(cls.__init__).parameters.values()
        declared = {
            p.name: p.default
            for p in params
            if p.name not in ("self", "num_objectives")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        return {k: cls.option_defaults.get(k, v) for k, v in declared.items()}

    def __init__(self, num_objectives: int, *, nonfinite: NonFinite = "raise") -> None:
        positive_int("num_objectives", num_objectives)
        if nonfinite not in _NONFINITE:
            raise ValueError(f"nonfinite must be one of {_NONFINITE}, got {nonfinite!r}")
        self.num_objectives = num_objectives
        self.nonfinite: NonFinite = nonfinite
        self.skips = 0

    # ------------------------------------------------------------------ the API
    def backward(
        self,
        losses: Sequence[Tensor],
        parameters: Iterable[Tensor],
        *,
        representations: Sequence[Tensor] | Tensor | None = None,
    ) -> BalanceInfo:
        """Fill ``.grad`` with the balanced combination of the losses' gradients.

        ``losses``: N scalar tensors with a graph, in a fixed order. ``parameters``: the balanced
        set (for gradient-based balancers, the parameters whose gradients form the Gramian);
        every other leaf the losses reach gets the plain weighted sum, as autograd would give it.
        ``representations``: for a Gramian balancer built with ``gramian="representation"``, the
        shared trunk's output(s) from the forward that computed the losses
        (:class:`GramianBalancer`).
        """
        ls = check_losses(losses, self.num_objectives)
        params = check_parameters(parameters)
        reps = self._representations(representations)
        values = torch.stack([loss.detach().reshape(()) for loss in ls]).to(torch.float64)
        distributed.mean_(values)  # the losses of the whole batch when several processes balance
        if reps is None:
            return self._backward(ls, values, params)
        return self._backward_at(ls, values, params, reps)

    def _representations(
        self, representations: Sequence[Tensor] | Tensor | None
    ) -> list[Tensor] | None:
        """The checked representations of :meth:`backward` (none for this balancer)."""
        if representations is not None:
            raise ValueError(
                f"balancer {self.name!r} does not balance a Gramian: representations apply to the "
                "Gramian balancers built with gramian='representation'; drop them"
            )
        return None

    def _backward_at(
        self, losses: list[Tensor], values: Tensor, params: list[Tensor], reps: list[Tensor]
    ) -> BalanceInfo:
        raise NotImplementedError  # only the Gramian balancers accept representations

    @property
    def needs_update(self) -> bool:
        """True when :meth:`update` is due after this step's optimiser step: read it after
        :meth:`backward` (amortised balancers, on the steps that learn; always False for the
        others). See :func:`moo_opt.balanced_step`."""
        return False

    @property
    def takes_update(self) -> bool:
        """True for a balancer that learns from :meth:`update` on some steps (Solution 1 in
        ``same_batch`` mode), whose :attr:`needs_update` can therefore be True; False for the
        others, for which :meth:`update` is always a no-op. A caller that prepares something for
        the update (e.g. a sub-batch) can check it once, up front."""
        return False

    def update(
        self,
        new_losses: Sequence[Tensor] | Tensor,
        *,
        before: Sequence[Tensor] | Tensor | None = None,
    ) -> bool:
        """Amortised balancers: learn from the losses recomputed after the optimiser step.
        Returns whether it learned, which it does exactly when :attr:`needs_update` was True; a
        no-op returning False otherwise (and always for the other balancers). Raises only on
        misuse: losses of the wrong length, or (Solution 1) a mode or call order that never
        asks for it.

        ``before``: the pre-step losses of the samples ``new_losses`` were computed on, when those
        are a sub-batch rather than the whole batch of the last :meth:`backward` (which is what
        ``None``, the default, means); see :func:`moo_opt.balanced_step`'s ``update_losses``."""
        return False

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Balancers that read the optimiser's state (``QPBalancer(metric="adam")``) keep it; a
        no-op for the others. :func:`moo_opt.balanced_step` calls it."""
        return None

    @abstractmethod
    def _backward(
        self, losses: list[Tensor], values: Tensor, params: list[Tensor]
    ) -> BalanceInfo: ...

    # ------------------------------------------------------------------ helpers for subclasses
    def _finite_or_skip(
        self,
        values: Tensor,
        gram: Tensor | None = None,
        *,
        what: str = "the Gramian of the gradients",
    ) -> bool:
        """True to go on; False to skip. One host synchronisation unless
        ``nonfinite="unchecked"``. ``gram``: a further tensor to check, named ``what`` in the
        error."""
        if self.nonfinite == "unchecked":
            return True
        ok = torch.isfinite(values).all()
        if gram is not None:
            ok = ok & torch.isfinite(gram).all()
        if bool(ok):
            return True
        if self.nonfinite == "raise":
            culprit = "a loss" if not bool(torch.isfinite(values).all()) else what
            raise NonFiniteLossError(
                f"{culprit} is NaN or Inf (losses {values.tolist()}); fix the loss, "
                "lower the learning rate, or pass nonfinite='skip' to skip such steps"
            )
        self.skips += 1
        return False

    def _skipped(self, values: Tensor) -> BalanceInfo:
        nan = torch.full_like(values, float("nan"))
        return BalanceInfo(weights=nan, losses=values, skipped=True, skips=self.skips)

    @staticmethod
    def _backward_weighted(losses: list[Tensor], weights: Tensor) -> None:
        """``torch.autograd.backward(Σᵢ wᵢ Lᵢ)`` with the weights detached; under several
        processes the new gradients are averaged over the ranks before they are accumulated."""
        total = sum(
            w.to(loss.dtype) * loss.reshape(())
            for w, loss in zip(weights.detach().unbind(), losses)
        )
        assert isinstance(total, Tensor)
        if distributed.world_size() == 1:
            total.backward()
            return
        leaves = reachable_leaves(losses)
        grads = distributed.mean_tensors_(
            torch.autograd.grad(total, leaves, allow_unused=True), leaves
        )
        for leaf, g in zip(leaves, grads):
            if g is not None:
                accumulate_grad(leaf, g)

    # ------------------------------------------------------------------ state
    def _options(self) -> dict[str, Any]:
        """The options this balancer was built with (``num_objectives`` included), as passed to
        ``type(self)(**options)``."""
        return copy.deepcopy(self.__dict__["_given_options"])

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        return None

    def _load_vectors(self, state: Mapping[str, Any], keys: Sequence[str]) -> None:
        """Set each attribute in ``keys`` from ``state``: a float64 tensor of shape (N,),
        checked."""
        for key in keys:
            value = state[key]
            if not isinstance(value, Tensor) or value.shape != (self.num_objectives,):
                raise ValueError(
                    f"state_dict entry {key!r} must be a tensor of shape ({self.num_objectives},)"
                )
            setattr(self, key, value.to(torch.float64))

    def state_dict(self) -> dict[str, Any]:
        """``{"balancer": name, "options": {...}, "state": {...}, "skips": int}``; tensors are
        cloned."""
        state = {k: v.clone() if isinstance(v, Tensor) else v for k, v in self._state().items()}
        return {
            "balancer": self.name,
            "options": dict(self._options()),
            "state": state,
            "skips": self.skips,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore options and state saved by :meth:`state_dict` (of the same balancer type)."""
        name = state_dict.get("balancer")
        if name != self.name:
            raise ValueError(
                f"state_dict is of balancer {name!r}, not {self.name!r}: "
                f"create a {name!r} balancer to load it"
            )
        options = dict(state_dict["options"])
        fresh = type(self)(**options)  # validates the options
        if fresh.num_objectives != self.num_objectives:
            raise ValueError(
                f"state_dict has {fresh.num_objectives} objectives, "
                f"this balancer {self.num_objectives}: "
                f"create it with num_objectives={fresh.num_objectives} to load it"
            )
        kept = {k: self.__dict__[k] for k in self._runtime_attributes if k in self.__dict__}
        self.__dict__.update(fresh.__dict__)
        self.__dict__.update(kept)
        self._load_state(
            {k: v.clone() if isinstance(v, Tensor) else v for k, v in state_dict["state"].items()}
        )
        self.skips = int(state_dict.get("skips", 0))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}({opts})"


class GramianBalancer(Balancer):
    r"""Balancers that choose weights from the Gramian of the per-objective gradients.

    Subclasses that offer ``shared_only`` (a constructor option kept in :attr:`shared_only`) balance
    only the parameters that two objectives or more reach: the Gramian is taken over those, and a
    parameter that one objective alone reaches gets that objective's own gradient (coefficient
    :meth:`_own`, 1 by default), as MGDA (Sener & Koltun) and TorchJD's ``mtl_backward`` treat
    task-specific parameters. Whatever the balanced weights, such a parameter is never pushed
    against its own objective.

    ``gramian`` (an option of every Gramian balancer): ``"parameters"`` (the default) takes
    :math:`Q = G^\top G` over the balanced parameters, exactly. ``"representation"`` takes it
    over the shared trunk's output :math:`y` (passed as ``backward(..., representations=[y])``)
    and the balanced parameters past it (the heads): with :math:`J` the Jacobian of :math:`y`
    with respect to the trunk's parameters, the exact Gramian's trunk block
    :math:`G_y^\top J J^\top G_y` is replaced by :math:`G_y^\top G_y`, so the two agree when
    :math:`J J^\top = I` (the trunk's map to :math:`y` is the identity, or an isometry) and
    otherwise differ by the trunk's metric (docs: :ref:`representation-gramian`). The
    per-objective passes stop at :math:`y` and the combined direction goes back through the trunk
    once, so the trunk's backward is paid once per step, as in the standard loss; ``.grad``
    receives the gradient of
    :math:`\sum_i w_i L_i` (the heads' own gradients under ``shared_only``) either way.
    """

    #: balance the shared parameters only (see the class docstring); an option where offered
    shared_only: bool = False
    #: where the Gramian is taken (see the class docstring)
    gramian: Gramian = "parameters"

    def __init__(
        self,
        num_objectives: int,
        *,
        gramian: Gramian = "parameters",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(num_objectives, nonfinite=nonfinite)
        if gramian not in _GRAMIANS:
            raise ValueError(f"gramian must be one of {_GRAMIANS}, got {gramian!r}")
        self.gramian = gramian

    def _representations(
        self, representations: Sequence[Tensor] | Tensor | None
    ) -> list[Tensor] | None:
        if self.gramian == "parameters":
            if representations is not None:
                raise ValueError(
                    f"representations given to a {self.name!r} balancer with "
                    "gramian='parameters': build it with gramian='representation' to use them, "
                    "or drop them"
                )
            return None
        if representations is None:
            raise ValueError(
                f"the {self.name!r} balancer has gramian='representation': pass the shared "
                "trunk's output, backward(losses, parameters, representations=[y])"
            )
        return check_representations(representations)

    def _backward(
        self,
        losses: list[Tensor],
        values: Tensor,
        params: list[Tensor],
        reps: list[Tensor] | None = None,
    ) -> BalanceInfo:
        if reps is not None:
            return self._balance_at(losses, values, params, reps)
        # each objective's gradient of the whole batch
        grads = objective_gradients(losses, params).mean_over_ranks_()
        gram = self._gramian(grads)
        if not self._finite_or_skip(values, gram):
            return self._skipped(values)
        weights, result, extras = self._weights(values, gram)
        grads.accumulate(weights, self._own(values) if self.shared_only else None)
        return BalanceInfo(
            weights=weights, losses=values, solve=result, extras=extras, skips=self.skips
        )

    def _backward_at(
        self, losses: list[Tensor], values: Tensor, params: list[Tensor], reps: list[Tensor]
    ) -> BalanceInfo:
        return self._backward(losses, values, params, reps)

    def _balance_at(
        self, losses: list[Tensor], values: Tensor, params: list[Tensor], reps: list[Tensor]
    ) -> BalanceInfo:
        """The step with the Gramian at the representations (``gramian="representation"``)."""
        grads = representation_gradients(losses, reps, params)
        gram = cut_gramian(grads.at_cut, self.shared_only)
        if grads.heads.params:
            gram = gram + self._gramian(grads.heads)
        if not self._finite_or_skip(values, gram):
            return self._skipped(values)
        weights, result, extras = self._weights(values, gram)
        own = self._own(values) if self.shared_only else None
        grads.heads.accumulate(weights, own)
        at_reps, _ = grads.at_cut.directions(weights, own)
        backward_trunk(grads.at_cut.params, at_reps, grads.trunk)
        return BalanceInfo(
            weights=weights, losses=values, solve=result, extras=extras, skips=self.skips
        )

    def _gramian(self, grads: ObjectiveGradients) -> Tensor:
        return grads.gramian(shared_only=self.shared_only)

    def _own(self, values: Tensor) -> Tensor:
        """The coefficient of each objective on the parameters it alone reaches (``shared_only``):
        1, its own plain gradient, as the standard sum of the losses gives it."""
        return torch.ones_like(values)

    @abstractmethod
    def _weights(
        self, values: Tensor, gram: Tensor
    ) -> tuple[Tensor, SolveResult | None, dict[str, Tensor]]:
        """``(weights on the raw losses, solver result or None for a method without a solver,
        extras)`` from the loss values and Gramian."""

    def gradients(
        self, losses: Sequence[Tensor], parameters: Iterable[Tensor]
    ) -> ObjectiveGradients:
        """The per-objective gradients this balancer would use (for inspection and tests)."""
        return objective_gradients(
            check_losses(losses, self.num_objectives), check_parameters(parameters)
        )
