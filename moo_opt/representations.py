"""Autograd plumbing for balancing on a shared representation, no policy.

The objectives' gradients are taken with respect to the representation ``y`` (the output of the
shared trunk, e.g. a learned codec's latent ``y = g_a(x)``) and to the parameters past it (the
heads), in N passes that stop at ``y``; the weighted direction then goes back through the trunk
once: ``torch.autograd.backward(y, Σᵢ wᵢ ∂Lᵢ/∂y)``. The trunk is traversed once per step, as in the
standard loss, instead of N times (MGDA-UB, Sener & Koltun 2018; LibMTL's ``rep_grad``).

* :func:`split_at` finds the leaves before the representations (the trunk) and past them (the
  heads), and checks that the representations are a *cut*: every path from a trunk leaf to the
  losses goes through them.
* :func:`representation_gradients` differentiates the losses with respect to the representations
  and the head leaves (one pass per objective; the graph is kept for the trunk's backward).
* :func:`backward_trunk` sends the combined direction back through the trunk.

Under several processes the heads' gradients are averaged over the ranks like any parameter's;
the representations' Gramian is the sum of the ranks' Gramians over ``R²`` (each rank holds its
samples' rows of ``∂L/∂y``, and ``L`` is the mean of the ranks' losses), and the trunk's gradient
is averaged after its backward: with equal per-rank batches, the same step as one process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from moo_opt import distributed
from moo_opt.gradients import ObjectiveGradients, accumulate_grad, reachable_leaves


def check_representations(representations: Sequence[Tensor] | Tensor) -> list[Tensor]:
    """The representations as a non-empty list of tensors with a graph; ``ValueError`` naming
    the problem."""
    reps = [representations] if isinstance(representations, Tensor) else list(representations)
    if not reps:
        raise ValueError(
            "representations is empty: pass the shared trunk's output, e.g. representations=[y]"
        )
    for i, rep in enumerate(reps):
        if not isinstance(rep, Tensor):
            raise ValueError(
                f"representation {i} is a {type(rep).__name__}, not a tensor: pass the trunk's "
                "output tensor(s)"
            )
        if not rep.requires_grad:
            raise ValueError(
                f"representation {i} does not require a gradient: pass the trunk's output from "
                "the forward that computed the losses, outside torch.no_grad()"
            )
    return reps


@dataclass
class RepresentationGradients:
    """The per-objective gradients at a cut of the graph."""

    #: ``params``: the representations (non-leaf tensors, or leaves), with their gradients
    at_cut: ObjectiveGradients
    #: the balanced parameters past the cut (``params``) and the other leaves past it
    heads: ObjectiveGradients
    #: the leaves before the cut, which receive the combined gradient through the trunk
    trunk: list[Tensor]


def split_at(losses: Sequence[Tensor], reps: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """``(trunk leaves, head leaves)``: the leaves the representations depend on, and those the
    losses reach without passing through a representation. ``ValueError`` when a leaf is in
    both (the representations are not a cut) or when no loss depends on them."""
    trunk = reachable_leaves(reps)
    heads = reachable_leaves(losses, stop=reps)
    trunk_ids = {id(t) for t in trunk}
    crossing = [t for t in heads if id(t) in trunk_ids]
    if crossing:
        shapes = ", ".join(str(tuple(t.shape)) for t in crossing[:3])
        raise ValueError(
            f"{len(crossing)} parameter(s) (shapes {shapes}) reach the losses both through the "
            "representations and past them: the representations must be a cut of the graph "
            "(the whole output of the shared trunk, computed in the same forward as the losses), "
            "or use gramian='parameters'"
        )
    return trunk, heads


def representation_gradients(
    losses: Sequence[Tensor], reps: Sequence[Tensor], params: Sequence[Tensor]
) -> RepresentationGradients:
    """The objectives' gradients with respect to ``reps`` and to the leaves past them, one pass
    per objective that stops at the representations; under several processes the heads'
    gradients are averaged over the ranks (the representations' stay per rank)."""
    if distributed.world_size() > 1 and any(r.grad_fn is None for r in reps):
        raise ValueError(
            "a representation is a leaf tensor: under several processes the representations must "
            "be computed from each process's own samples (the trunk's output, not a parameter)"
        )
    trunk, head_leaves = split_at(losses, reps)
    head_ids = {id(t) for t in head_leaves}
    param_ids = {id(p) for p in params}
    head_params = [p for p in params if id(p) in head_ids]
    others = [t for t in head_leaves if id(t) not in param_ids]
    inputs = [*reps, *head_params, *others]
    rows = [
        list(torch.autograd.grad(loss.reshape(()), inputs, retain_graph=True, allow_unused=True))
        for loss in losses
    ]
    if all(row[k] is None for row in rows for k in range(len(reps))):
        raise ValueError(
            "no loss depends on the representations: pass the trunk's output from the forward "
            "that computed these losses"
        )
    n, h = len(reps), len(head_params)
    heads = ObjectiveGradients(
        head_params, [r[n : n + h] for r in rows], others, [r[n + h :] for r in rows]
    )
    heads.mean_over_ranks_()
    at_cut = ObjectiveGradients(list(reps), [r[:n] for r in rows], [], [])
    return RepresentationGradients(at_cut, heads, trunk)


def cut_gramian(grads: ObjectiveGradients, shared_only: bool = False) -> Tensor:
    """The Gramian of the gradients at the representations, of the whole batch: under ``R``
    processes the sum of the ranks' Gramians over ``R²``."""
    gram = grads.gramian(shared_only=shared_only)
    world = distributed.world_size()
    if world > 1:
        distributed.mean_(gram)
        gram = gram / world
    return gram


def backward_trunk(
    reps: Sequence[Tensor], directions: Sequence[Tensor | None], trunk: Sequence[Tensor]
) -> None:
    """Backpropagate ``directions`` (the combined gradient at each representation) through the
    trunk into ``.grad``, freeing the graph; averaged over the ranks under several processes."""
    pairs = [(r, d) for r, d in zip(reps, directions) if d is not None]
    if not pairs:
        return
    outputs, grads = [r for r, _ in pairs], [d for _, d in pairs]
    if distributed.world_size() == 1:
        torch.autograd.backward(outputs, grads)
        return
    trunk = list(trunk)
    if not trunk:
        return
    local = torch.autograd.grad(outputs, trunk, grads, allow_unused=True)
    for leaf, g in zip(trunk, distributed.mean_tensors_(local, trunk)):
        if g is not None:
            accumulate_grad(leaf, g)
