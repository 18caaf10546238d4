r"""Weights from a Gramian: the pure part of every Gramian balancer.

Each function maps the Gramian :math:`Q = G^\top G` of the per-objective gradients (N×N, float64;
and the loss values, for the methods that read them) to ``(weights, result)``: the weights on the
raw losses, so that the update direction is :math:`G w`, and the solver's
:class:`~moo_opt.solvers.SolveResult` with its status and certificate (``None`` for a method
without a solver). They hold no state and need no model, so a method can be used, tested or
compared on Gramians alone (TorchJD's ``Weighting`` idea); the balancers of
:mod:`moo_opt.balancers` call them and add the gradients, the state and the logging. A function
given ``extras`` (a dict) fills it with the method's diagnostics, the tensors a balancer logs.

GradNorm has no function here: its weights are learned state, moved by a step on a loss built from
:math:`Q` (:class:`~moo_opt.GradNormBalancer`), not a function of one Gramian.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from moo_opt.solvers import (
    SolveResult,
    cagrad_direction_weights,
    project_to_dual_cone,
    solve_box_qp,
    solve_cagrad,
    solve_config,
    solve_equality_qp,
    solve_fairgrad,
    solve_nash,
    solve_sdmgrad,
    solve_simplex_qp,
)
from moo_opt.solvers.alignment import AlignmentScale, balance_transform

Extras = dict[str, Tensor]
MGDANormalization = Literal["none", "l2", "loss", "loss+"]
NashNormalization = Literal["none", "frobenius"]
CAGradRescale = Literal["none", "1+c^2", "1+c"]
QPBackend = Literal["analytic", "cvxpy"]

__all__ = [
    "aligned_mtl_weights",
    "cagrad_weights",
    "config_weights",
    "dualproj_weights",
    "fairgrad_weights",
    "imtl_g_weights",
    "mgda_weights",
    "nash_mtl_weights",
    "pcgrad_weights",
    "preference_vector",
    "qp_coefficients",
    "qp_weights",
    "renormalized",
    "sdmgrad_weights",
    "upgrad_weights",
    "within_trust_region",
]


def _put(extras: Extras | None, **items: Tensor) -> None:
    if extras is not None:
        extras.update(items)


def preference_vector(task_weights: Sequence[float] | None, n: int) -> Tensor:
    """``u`` as a float64 (N,) tensor: ``task_weights``, or 1/N each when None."""
    if task_weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64)
    return torch.tensor(tuple(task_weights), dtype=torch.float64)


def renormalized(coeff: Tensor) -> tuple[Tensor, Tensor]:
    """``coeff / Σcoeff`` (weights summing to one, the direction unchanged).

    [decision] When ``Σcoeff ≤ 0`` (possible only with negative QP weights) dividing by it would
    reverse the direction; the coefficients are then divided by ``Σ|coeff|`` instead and the
    returned flag is 1. Computed on the device, without a host synchronisation.
    """
    total = coeff.sum()
    flip = total <= 0.0
    denom = torch.where(flip, coeff.abs().sum(), total)
    return coeff / denom, flip.to(coeff.dtype)


def within_trust_region(coeff: Tensor, radius: float) -> tuple[Tensor, Tensor]:
    """``coeff`` (summing to one) moved towards the standard coefficients ``1/N`` until no entry is
    further than ``radius`` from them, along the segment between the two; returns the coefficients
    and the fraction ``t`` of the step kept (1 when already inside). On the device, no host sync."""
    standard = torch.full_like(coeff, 1.0 / coeff.numel())
    diff = coeff - standard
    excess = diff.abs().max()
    outside = excess > radius
    t = torch.where(
        outside, radius / excess.clamp_min(torch.finfo(coeff.dtype).tiny), torch.ones_like(excess)
    )
    return torch.where(outside, standard + t * diff, coeff), t


def qp_coefficients(
    z: Tensor,
    losses: Tensor,
    offsets: Tensor,
    *,
    renormalize: bool = True,
    trust_radius: float | None = None,
    extras: Extras | None = None,
) -> Tensor:
    """Solution 2's coefficients on the raw losses for the log-loss weights ``z``:
    :math:`z_i / (L_i + c_i)`, renormalised to sum to one, then pulled into the trust region."""
    coeff = z / (losses + offsets)
    _put(extras, z=z)
    if renormalize:
        coeff, flipped = renormalized(coeff)
        _put(extras, renormalized_by_abs=flipped)
    if trust_radius is not None:
        coeff, scale = within_trust_region(coeff, trust_radius)
        _put(extras, trust_scale=scale)
    return coeff


def qp_weights(
    gram: Tensor,
    losses: Tensor,
    offsets: Tensor | float = 1.0,
    *,
    renormalize: bool = True,
    simplex: bool = False,
    trust_radius: float | None = None,
    rcond: float | None = None,
    ridge: float = 0.0,
    backend: QPBackend = "analytic",
    scale: Tensor | None = None,
    extras: Extras | None = None,
) -> tuple[Tensor, SolveResult]:
    r"""Solution 2 (Zhang et al., CVPR 2025): the weights ``z`` of
    :math:`\min_z \tfrac12 z^\top \tilde Q z` s.t. :math:`\sum z = 1` (or over the simplex) with
    :math:`\tilde Q_{ij} = Q_{ij} / (s_i s_j)`, :math:`s = L + c` (the Gramian of the log-losses'
    gradients; ``scale`` replaces ``s``), then :func:`qp_coefficients`. ``backend="cvxpy"``
    solves with the reference solver (the ``cvxpy`` extra)."""
    if not isinstance(offsets, Tensor):
        offsets = torch.as_tensor(offsets, dtype=torch.float64, device=losses.device)
    s = losses + offsets if scale is None else scale
    scaled = gram / (s[:, None] * s[None, :])
    if backend == "cvxpy":
        from moo_opt.solvers import reference

        result = (
            reference.solve_simplex_qp_cvxpy if simplex else reference.solve_equality_qp_cvxpy
        )(scaled)
    elif simplex:
        result = solve_simplex_qp(scaled, rcond=rcond)
    else:
        result = solve_equality_qp(scaled, rcond=rcond, ridge=ridge)
    z = result.weights.to(losses.device)
    return qp_coefficients(
        z, losses, offsets, renormalize=renormalize, trust_radius=trust_radius, extras=extras
    ), result


def _norms(gram: Tensor) -> Tensor:
    """The gradients' norms from the Gramian's diagonal."""
    return gram.diagonal().clamp(min=0.0).sqrt()


def mgda_weights(
    gram: Tensor,
    losses: Tensor | None = None,
    *,
    normalization: MGDANormalization = "none",
    rcond: float | None = None,
    extras: Extras | None = None,
) -> tuple[Tensor, SolveResult]:
    r"""MGDA: the min-norm point :math:`\alpha` of the normalised gradients' convex hull
    (:func:`~moo_opt.solvers.solve_simplex_qp` on :math:`Q_{ij} / (n_i n_j)`) as weights
    :math:`\alpha_i / n_i` on the raw losses; ``normalization`` picks :math:`n`: ``"none"`` (1),
    ``"l2"`` (:math:`|g_i|`), ``"loss"`` (:math:`L_i`), ``"loss+"`` (:math:`L_i |g_i|`); a zero
    :math:`n_i` counts as 1. The ``"loss"`` normalisations need ``losses``."""
    if normalization in ("loss", "loss+") and losses is None:
        raise ValueError(f"normalization={normalization!r} divides by the losses; pass losses")
    ones = (
        torch.ones(gram.shape[0], dtype=gram.dtype, device=gram.device)
        if losses is None
        else torch.ones_like(losses)
    )
    norms = _norms(gram)
    n = {
        "none": lambda: ones,
        "l2": lambda: norms,
        "loss": lambda: losses,
        "loss+": lambda: losses * norms,
    }[normalization]()
    n = torch.where(n > 0.0, n, torch.ones_like(n))
    result = solve_simplex_qp(gram / (n[:, None] * n[None, :]), rcond=rcond)
    alpha = result.weights.to(ones.device)
    _put(extras, alpha=alpha)
    return alpha / n, result


def imtl_g_weights(
    gram: Tensor, *, rcond: float | None = None, extras: Extras | None = None
) -> tuple[Tensor, SolveResult]:
    r"""IMTL-G: equal projections of the direction on every unit gradient, i.e. the equality QP on
    the unit gradients' Gramian :math:`Q_{ij} / (|g_i||g_j|)`; its weights ``z`` divided by the
    norms and renormalised (:func:`renormalized`) are the weights on the raw losses."""
    norms = _norms(gram)
    norms = torch.where(norms > 0.0, norms, torch.ones_like(norms))
    result = solve_equality_qp(gram / (norms[:, None] * norms[None, :]), rcond=rcond)
    z = result.weights.to(gram.device)
    alpha, flipped = renormalized(z / norms)
    _put(extras, z=z, grad_norm=norms, renormalized_by_abs=flipped)
    return alpha, result


def upgrad_weights(
    gram: Tensor,
    *,
    task_weights: Sequence[float] | None = None,
    rcond: float | None = None,
    tol: float = 1e-12,
) -> tuple[Tensor, SolveResult]:
    r"""UPGrad: every gradient, scaled by its preference :math:`u_i` (``task_weights``, 1/N each by
    default), projected onto the dual cone of the gradients; the weights are the sum of the
    projections' rows (:func:`~moo_opt.solvers.project_to_dual_cone`)."""
    u = preference_vector(task_weights, gram.shape[0])
    result = project_to_dual_cone(gram, torch.diag(u), rcond=rcond, tol=tol)
    return result.weights.sum(dim=0), result


def dualproj_weights(
    gram: Tensor,
    *,
    task_weights: Sequence[float] | None = None,
    rcond: float | None = None,
    tol: float = 1e-12,
) -> tuple[Tensor, SolveResult]:
    r"""DualProj: the preference-weighted mean :math:`Gu` (``task_weights``, 1/N each by default)
    projected onto the dual cone of the gradients, :math:`v = \arg\min_{v \ge u} \tfrac12 v^\top
    Qv` (:func:`~moo_opt.solvers.solve_box_qp`, one of UPGrad's projections); the weights are
    :math:`v`."""
    u = preference_vector(task_weights, gram.shape[0])
    result = solve_box_qp(gram, u, rcond=rcond, tol=tol)
    return result.weights, result


def nash_mtl_weights(
    gram: Tensor,
    *,
    normalization: NashNormalization = "none",
    rcond: float | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
) -> tuple[Tensor, SolveResult]:
    r"""Nash-MTL: the bargaining solution :math:`\alpha` with :math:`\alpha_i (Q\alpha)_i = 1`
    (:func:`~moo_opt.solvers.solve_nash`); ``normalization="frobenius"`` multiplies it by
    :math:`\sqrt{|Q|_F}`."""
    result = solve_nash(gram, rcond=rcond, tol=tol, max_iter=max_iter)
    alpha = result.weights
    if normalization == "frobenius":
        alpha = alpha * math.sqrt(float(gram.norm()))
    return alpha, result


def fairgrad_weights(
    gram: Tensor,
    *,
    alpha: float = 2.0,
    rcond: float | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
    extras: Extras | None = None,
) -> tuple[Tensor, SolveResult]:
    r"""FairGrad: the α-fair weights :math:`w > 0` with :math:`(Qw)_i = w_i^{-1/\alpha}`
    (:func:`~moo_opt.solvers.solve_fairgrad`); ``extras`` gets ``improvement``, :math:`Qw` (each
    objective's first-order improvement :math:`g_i\cdot d`)."""
    result = solve_fairgrad(gram, alpha, rcond=rcond, tol=tol, max_iter=max_iter)
    w = result.weights
    _put(extras, improvement=gram.to(torch.float64) @ w.to(gram.device))
    return w, result


def sdmgrad_weights(
    gram: Tensor,
    *,
    lam: float = 0.3,
    task_weights: Sequence[float] | None = None,
    sampled: Sequence[int] | None = None,
    rcond: float | None = None,
    tol: float = 1e-12,
    extras: Extras | None = None,
) -> tuple[Tensor, SolveResult]:
    r"""SDMGrad: the inner weights :math:`w^* = \arg\min_{w\in\Delta}\tfrac12|Gw + \lambda Gp|^2`
    (:func:`~moo_opt.solvers.solve_sdmgrad`; p the ``task_weights``, 1/N each by default) and the
    weights :math:`(w^* + \lambda p)/(1 + \lambda)` on the raw losses.

    ``sampled`` (SDMGrad-OS): the K objectives drawn this step. Only their block of ``gram`` is
    read; the others count as zero gradients, which enter the inner simplex as one zero vertex
    (when K < N) and get weight 0; the sampled ones get :math:`\tfrac NK (w^*_i + \lambda
    p_i)/(1 + \lambda)`. ``extras`` gets ``inner`` (:math:`w^*` per objective, 0 where
    unsampled)."""
    n = gram.shape[0]
    p = preference_vector(task_weights, n)
    if sampled is None:
        result = solve_sdmgrad(gram, lam, p, rcond=rcond, tol=tol)
        inner = result.weights.cpu()
        coeff = (inner + lam * p) / (1.0 + lam)
    else:
        idx = torch.tensor(list(sampled), dtype=torch.long)
        k = idx.numel()
        q = gram.detach().to("cpu", torch.float64)[idx[:, None], idx]
        ps = p[idx]
        if k < n:  # the unsampled objectives' zero gradients: one zero vertex
            q = torch.nn.functional.pad(q, (0, 1, 0, 1))
            ps = torch.cat((ps, torch.zeros(1, dtype=torch.float64)))
        result = solve_sdmgrad(q, lam, ps, rcond=rcond, tol=tol)
        inner = torch.zeros(n, dtype=torch.float64)
        inner[idx] = result.weights.cpu()[:k]
        coeff = torch.zeros(n, dtype=torch.float64)
        coeff[idx] = (n / k) * (inner[idx] + lam * p[idx]) / (1.0 + lam)
    _put(extras, inner=inner.to(gram.device))
    return coeff.to(gram.device), result


def cagrad_weights(
    gram: Tensor,
    *,
    c: float = 0.5,
    rescale: CAGradRescale = "1+c^2",
    rcond: float | None = None,
    tol: float = 1e-12,
    extras: Extras | None = None,
) -> tuple[Tensor, SolveResult]:
    r"""CAGrad: the inner weights of the conflict-averse problem
    (:func:`~moo_opt.solvers.solve_cagrad`) turned into the direction's weights on the raw losses,
    divided by ``rescale`` (1, :math:`1 + c^2` or :math:`1 + c`)."""
    result = solve_cagrad(gram, c, rcond=rcond, tol=tol)
    q = np.asarray(result.gram)  # the validated host copy the solver worked on
    w = torch.from_numpy(cagrad_direction_weights(q, result.weights.cpu().numpy(), c, rcond=rcond))
    divisor = {"none": 1.0, "1+c^2": 1.0 + c**2, "1+c": 1.0 + c}[rescale]
    _put(extras, inner=result.weights.to(gram.device))
    return (w / divisor).to(gram.device), result


def config_weights(
    gram: Tensor,
    *,
    task_weights: Sequence[float] | None = None,
    rcond: float | None = None,
    extras: Extras | None = None,
) -> tuple[Tensor, SolveResult]:
    r"""ConFIG: :math:`v = \hat Q^+ p` on the unit gradients' Gramian
    (:func:`~moo_opt.solvers.solve_config`; ``task_weights`` p, ones by default), the unit direction
    :math:`\hat d = Ga/|Ga|` with :math:`a_i = v_i/|g_i|` (0 for a zero gradient), scaled by
    :math:`\sum_i g_i\cdot\hat d`: the weights on the raw losses are
    :math:`w = a\,(\mathbf 1^\top Qa)/(a^\top Qa)` (0 when :math:`Ga = 0`)."""
    u = None if task_weights is None else torch.tensor(tuple(task_weights), dtype=torch.float64)
    result = solve_config(gram, u, rcond=rcond)
    q = torch.as_tensor(result.gram)  # Q̂, the validated host copy normalised
    host = gram.detach().to("cpu", torch.float64)
    norms = host.diagonal().clamp(min=0.0).sqrt()
    a = result.weights.cpu() / torch.where(norms > 0.0, norms, torch.ones_like(norms))
    qa = host @ a
    square = float(a @ qa)
    length = float(qa.sum()) / math.sqrt(square) if square > 0.0 else 0.0
    w = a * (float(qa.sum()) / square) if square > 0.0 else torch.zeros_like(a)
    cosines = (
        (q @ result.weights.cpu()) / math.sqrt(square) if square > 0.0 else torch.zeros_like(a)
    )
    _put(
        extras,
        v=result.weights,
        cosine=cosines.to(gram.device),
        length=torch.tensor(length, dtype=torch.float64, device=gram.device),
    )
    return w.to(gram.device), result


def aligned_mtl_weights(
    gram: Tensor,
    *,
    task_weights: Sequence[float] | None = None,
    scale: AlignmentScale = "min",
    rcond: float | None = None,
) -> tuple[Tensor, SolveResult]:
    r"""Aligned-MTL: the balance transform :math:`B` that makes the aligned gradients :math:`GB`
    orthogonal with equal norms (:func:`~moo_opt.solvers.alignment.balance_transform`, ``scale``
    picking their common norm), applied to the preferences :math:`u`: weights :math:`Bu`."""
    result = balance_transform(gram, scale=scale, rcond=rcond)
    u = preference_vector(task_weights, gram.shape[0]).to(gram.device)
    return result.weights @ u, result


def pcgrad_weights(
    gram: Tensor, *, generator: torch.Generator | None = None, extras: Extras | None = None
) -> tuple[Tensor, None]:
    r"""PCGrad: each gradient loses its component along every other gradient it conflicts with, in
    a random order (drawn from ``generator``), and the results are summed. The projections stay in
    the span of the gradients, so the surgery runs on :math:`Q` (float64, on the host) and returns
    the weights of the summed direction; no solver (``None``). A zero gradient is never projected
    on."""
    q = gram.detach().to("cpu", torch.float64)
    n = q.shape[0]
    coeffs = torch.eye(n, dtype=torch.float64)
    projections = 0
    for i in range(n):
        c = coeffs[i]
        for j in torch.randperm(n, generator=generator).tolist():
            if j == i or q[j, j] <= 0.0:
                continue
            dot = float(c @ q[:, j])
            if dot < 0.0:
                c[j] -= dot / float(q[j, j])
                projections += 1
    _put(extras, projections=torch.tensor(float(projections), dtype=torch.float64))
    return coeffs.sum(dim=0), None
