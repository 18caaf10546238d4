"""Autograd plumbing, no policy: per-objective gradients, their Gramian, and a combined ``.grad``.

* :func:`objective_gradients` differentiates N scalar losses over one graph (``retain_graph``
  only until the last objective) with respect to the balanced parameters, and also with respect
  to every other leaf the losses reach, so that those get the plain weighted sum.
* :meth:`ObjectiveGradients.gramian` accumulates ``Q = GᵀG`` parameter tensor by parameter (no
  P×N matrix unless :meth:`ObjectiveGradients.matrix` is asked for), in float64.
* :meth:`ObjectiveGradients.accumulate` writes ``Σᵢ wᵢ ∇Lᵢ`` into ``.grad`` as
  ``torch.autograd.backward(Σᵢ wᵢ Lᵢ)`` would: added to existing gradients, ``.grad`` left as it
  is for a parameter no objective reaches.

Nothing here reads a value back to the host: on CUDA, N gradient passes and the Gramian stay on
the device (under several processes, :meth:`ObjectiveGradients.mean_over_ranks_` reads which
parameters each rank reached, as :mod:`moo_opt.distributed` says).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from moo_opt import distributed


def check_losses(losses: Sequence[Tensor], num_objectives: int) -> list[Tensor]:
    """The losses as a list of scalar tensors with a graph; ``ValueError`` naming the problem."""
    if isinstance(losses, Tensor):
        if losses.dim() != 1:
            raise ValueError(
                f"losses must be a sequence of {num_objectives} scalar tensors, "
                f"got a tensor of shape {tuple(losses.shape)}"
            )
        losses = list(losses.unbind())
    losses = list(losses)
    if len(losses) != num_objectives:
        raise ValueError(
            f"expected {num_objectives} losses (one per objective, in a fixed order), "
            f"got {len(losses)}"
        )
    for i, loss in enumerate(losses):
        if not isinstance(loss, Tensor):
            raise ValueError(
                f"loss {i} is a {type(loss).__name__}, not a tensor: "
                "pass the loss tensors themselves"
            )
        if loss.numel() != 1:
            raise ValueError(
                f"loss {i} is not a scalar (shape {tuple(loss.shape)}): "
                "reduce it, e.g. with .mean()"
            )
        if not loss.requires_grad:
            raise ValueError(
                f"loss {i} has no autograd graph (requires_grad=False): "
                "compute it from the parameters, outside torch.no_grad()"
            )
    return losses


def check_parameters(parameters: Iterable[Tensor]) -> list[Tensor]:
    """The balanced parameters as a list; ``ValueError`` when none requires a gradient."""
    params = [p for p in parameters]
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise ValueError(f"parameter {i} is a {type(p).__name__}, not a tensor")
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError(
            "no parameter requires a gradient: "
            "pass the parameters to balance, e.g. model.parameters()"
        )
    return params


def accumulate_grad(tensor: Tensor, grad: Tensor) -> None:
    """``tensor.grad += grad`` as autograd accumulates (set when there is none yet)."""
    if tensor.grad is None:
        tensor.grad = grad
    else:
        tensor.grad.add_(grad)


def reachable_leaves(roots: Sequence[Tensor], stop: Sequence[Tensor] = ()) -> list[Tensor]:
    """Every leaf tensor requiring a gradient that the ``roots`` depend on, in a stable order.

    Paths through a tensor of ``stop`` (matched by its producing node and output, or by identity
    for a leaf) are not followed, and that tensor is not listed: the leaves past a cut of the
    graph.
    """
    cut = {(id(t.grad_fn), t.output_nr) for t in stop if t.grad_fn is not None}
    seen: set[int] = {id(t) for t in stop}
    # the graph's Python node objects are created on access: keep every one alive so that the
    # ids compared below stay unique for the walk
    alive: list[object] = [t.grad_fn for t in stop]
    leaves: list[Tensor] = []
    stack = []
    for root in roots:
        if root.grad_fn is None:  # a root that is a leaf
            if root.requires_grad and id(root) not in seen:
                seen.add(id(root))
                leaves.append(root)
        elif (id(root.grad_fn), root.output_nr) not in cut:
            stack.append(root.grad_fn)
    visited: set[int] = set()
    while stack:
        node = stack.pop()
        alive.append(node)
        if id(node) in visited:
            continue
        visited.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) not in seen:
            seen.add(id(variable))
            leaves.append(variable)
        for next_fn, nr in node.next_functions:
            alive.append(next_fn)
            if next_fn is not None and (id(next_fn), nr) not in cut:
                stack.append(next_fn)
    return leaves


@dataclass
class ObjectiveGradients:
    """``grads[i][k]``: gradient of loss i with respect to ``params[k]`` (None where unreached)."""

    params: list[Tensor]
    grads: list[list[Tensor | None]]
    #: leaves outside the balanced set and their per-objective gradients
    others: list[Tensor]
    other_grads: list[list[Tensor | None]]

    @property
    def num_objectives(self) -> int:
        return len(self.grads)

    def mean_over_ranks_(self) -> ObjectiveGradients:
        """Average each objective's gradients over the processes, in place (one flattened
        all-reduce per objective and set; nothing with one process): the gradients of the whole
        batch, which every rank then balances alike (:mod:`moo_opt.distributed`)."""
        if distributed.world_size() > 1:
            self.grads = [distributed.mean_tensors_(g, self.params) for g in self.grads]
            self.other_grads = [distributed.mean_tensors_(g, self.others) for g in self.other_grads]
        return self

    def reach(self) -> list[list[int]]:
        """For each balanced parameter, the objectives whose graph reaches it (autograd gives the
        others no gradient, ``None``; a gradient that happens to be zero still counts as
        reached)."""
        return [
            [i for i, g in enumerate(self.grads) if g[k] is not None]
            for k in range(len(self.params))
        ]

    def shared(self) -> list[bool]:
        """For each balanced parameter: reached by two objectives or more."""
        return [len(r) >= 2 for r in self.reach()]

    def gramian(self, metric: Sequence[Tensor] | None = None, shared_only: bool = False) -> Tensor:
        """``Q[i, j] = Σₖ ⟨∂Lᵢ/∂θₖ, ∂Lⱼ/∂θₖ⟩`` over the balanced parameters, float64, on their
        device.

        Products and sums are in float64 (a float32 product is exact in float64), so that the
        matrix is positive semi-definite to float64 precision even for nearly parallel gradients,
        and it is symmetrised exactly. ``metric``: one non-negative tensor per parameter, of its
        shape, for ``Q = Gᵀ diag(metric) G`` (an optimiser's diagonal preconditioner).
        ``shared_only``: the sum runs over the parameters that two objectives or more reach
        (:meth:`shared`); a parameter of one objective alone adds only to that objective's
        diagonal entry, so leaving it out changes nothing else.
        """
        if metric is not None and len(metric) != len(self.params):
            raise ValueError(
                f"metric needs one tensor per parameter ({len(self.params)}), got {len(metric)}"
            )
        n = self.num_objectives
        device = self.params[0].device
        q = torch.zeros(n, n, dtype=torch.float64, device=device)
        for k in range(len(self.params)):
            rows = [(i, g[k]) for i, g in enumerate(self.grads) if g[k] is not None]
            if not rows or (shared_only and len(rows) < 2):
                continue
            # one conversion copy per gradient, straight into float64 (stack-then-convert copies
            # twice and was 4x slower on a 1.5M-element parameter)
            m = torch.empty(len(rows), rows[0][1].numel(), dtype=torch.float64, device=device)
            for r, (_, g) in enumerate(rows):
                m[r].copy_(g.reshape(-1))
            block = (
                m @ m.T if metric is None else (m * metric[k].reshape(-1).to(torch.float64)) @ m.T
            )
            if len(rows) == n:
                q += block
            else:
                idx = torch.tensor([i for i, _ in rows], device=device)
                q[idx[:, None], idx] += block
        return 0.5 * (q + q.mT)

    def matrix(self) -> Tensor:
        """The P×N matrix ``G`` of the balanced parameters (allocates P×N: only when asked)."""
        cols = []
        for g in self.grads:
            parts = [
                gk.reshape(-1)
                if gk is not None
                else torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
                for gk, p in zip(g, self.params)
            ]
            cols.append(torch.cat(parts))
        return torch.stack(cols, dim=1)

    def directions(
        self, weights: Tensor, own: Tensor | None = None
    ) -> tuple[list[Tensor | None], list[Tensor | None]]:
        """``Σᵢ wᵢ ∂Lᵢ/∂θ`` for every parameter, balanced and other (None where no objective
        reaches it). With ``own`` (N coefficients), a balanced parameter that one objective ``i``
        alone reaches gets ``ownᵢ ∂Lᵢ/∂θ`` instead (its objective's own gradient, whatever the
        sign of ``wᵢ``). The objectives' gradients are left untouched."""
        # the coefficients, converted once per (dtype, device, own)
        cast: dict[tuple[torch.dtype, torch.device, bool], Tensor] = {}
        out: list[list[Tensor | None]] = []
        for params, grads, balanced in (
            (self.params, self.grads, True),
            (self.others, self.other_grads, False),
        ):
            combined: list[Tensor | None] = []
            for k in range(len(params)):
                direction: Tensor | None = None
                alone = own is not None and balanced and sum(g[k] is not None for g in grads) == 1
                for i, g in enumerate(grads):
                    gk = g[k]
                    if gk is None:
                        continue
                    key = (gk.dtype, gk.device, alone)
                    if key not in cast:
                        cast[key] = (own if alone else weights).to(device=gk.device, dtype=gk.dtype)  # type: ignore[union-attr]
                    w = cast[key][i]
                    direction = gk * w if direction is None else direction.addcmul_(gk, w)
                combined.append(direction)
            out.append(combined)
        return out[0], out[1]

    def accumulate(self, weights: Tensor, own: Tensor | None = None) -> None:
        """Add :meth:`directions` to ``θ.grad`` for every parameter, balanced or not, as
        ``torch.autograd.backward(Σᵢ wᵢ Lᵢ)`` would (``.grad`` left as it is where no objective
        reaches)."""
        balanced, others = self.directions(weights, own)
        for p, d in zip(self.params + self.others, balanced + others):
            if d is not None:
                accumulate_grad(p, d)


def objective_gradients(
    losses: Sequence[Tensor], params: Sequence[Tensor], *, include_others: bool = True
) -> ObjectiveGradients:
    """Per-objective gradients of ``losses`` over one graph.

    ``params`` is the balanced set; with ``include_others`` every other reachable leaf requiring
    a gradient is differentiated in the same passes (no extra backward). The graph is retained
    between objectives and freed by the last pass.
    """
    param_ids = {id(p) for p in params}
    others = (
        [t for t in reachable_leaves(losses) if id(t) not in param_ids] if include_others else []
    )
    inputs = list(params) + others
    grads: list[list[Tensor | None]] = []
    other_grads: list[list[Tensor | None]] = []
    last = len(losses) - 1
    for i, loss in enumerate(losses):
        g = torch.autograd.grad(loss.reshape(()), inputs, retain_graph=i < last, allow_unused=True)
        grads.append(list(g[: len(params)]))
        other_grads.append(list(g[len(params) :]))
    return ObjectiveGradients(list(params), grads, others, other_grads)
