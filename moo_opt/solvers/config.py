"""ConFIG's conflict-free direction: the minimum-norm least-squares solution of ``Q̂v = p`` on the
unit gradients' Gramian."""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from moo_opt.solvers._input import host_gramian, iteration_options, preference_vector, to_weights
from moo_opt.solvers.result import KKTReport, SolveResult, SolveStatus


def solve_config(
    q: Tensor | np.ndarray,
    preferences: Tensor | np.ndarray | None = None,
    *,
    rcond: float | None = None,
    validate: bool | None = None,
) -> SolveResult:
    r"""ConFIG's direction in weight space: :math:`v = \hat Q^+ p`, the minimum-norm least-squares
    solution of :math:`\hat Q v = p` on the Gramian of the unit gradients.

    Liu, Zhao, Thuerey et al., "ConFIG: Towards Conflict-free Training of Physics Informed Neural
    Networks" (ICLR 2025), Equation 2: with the unit gradients :math:`u_i = g_i/|g_i|` (the rows
    of U), the direction is :math:`d = U^+ p` (:math:`p = \mathbf 1` in the paper). As
    :math:`U^+ = U^\top (UU^\top)^+`, :math:`d = \sum_i v_i u_i` with :math:`v = \hat Q^+ p` and
    :math:`\hat Q_{ij} = Q_{ij}/(|g_i||g_j|)`. When :math:`\hat Q v = p` holds,
    :math:`u_i \cdot d = p_i`: the direction has the cosine :math:`p_i/|d|` with every gradient.

    :math:`\hat Q^+` is applied through ``eigh`` on the live objectives (nonzero gradients),
    with the eigenvalues at most ``rcond·λmax`` treated as zero. A zero gradient has no direction:
    its row of U is zero (TorchJD's ``nan_to_num``) and its weight is exactly 0. Statuses
    ([decision]: never a silent fallback):

    * ``OPTIMAL``: :math:`\hat Q` is non-singular to ``rcond``; :math:`v` is the unique solution.
    * ``DEGENERATE``: :math:`\hat Q` is singular (linearly dependent gradients) but
      :math:`\hat Q v = p` still holds (to :math:`\sqrt{\mathrm{rcond}}\,|p|_\infty`): equal
      cosines, :math:`v` the minimum-norm one among many.
    * ``INFEASIBLE``: no direction has the requested projections (a zero gradient with
      :math:`p_i > 0`, opposed gradients): :math:`v` is the minimum-norm least-squares answer,
      as ``pinv`` gives it (and d may be 0).

    Certificate (:func:`config_kkt`): the normal equations' relative residual and v's relative
    component in the cut null space, both at rounding level for every status.

    Args:
        q: the N×N Gram matrix ``GᵀG`` (tensor or array), validated.
        preferences: p, N finite numbers (default ones, the paper's and TorchJD's).
        rcond: relative eigenvalue cut-off (≥ 0); default ``100·eps`` of ``q``'s precision.
        validate: ``None``/``True`` check ``q``; ``False`` skips the checks.

    Returns:
        :class:`SolveResult` with ``problem="config"``, ``method="eigh"``, weights v (on the unit
        gradients, float64 on ``q``'s device) and ``gram`` :math:`\hat Q`.
    """
    g, host = host_gramian(q, validate)
    rc = iteration_options(g, rcond, 1.0, 1)
    p = preference_vector(preferences, g.n, 1.0)
    c, v, null = _pinv_solve(host, p, rc)
    status = SolveStatus.OPTIMAL
    if null.shape[1] > 0:
        residual = float(np.abs(c @ v - p).max())
        consistent = residual <= math.sqrt(rc) * max(float(np.abs(p).max()), 1e-300)
        status = SolveStatus.DEGENERATE if consistent else SolveStatus.INFEASIBLE
    return SolveResult.solved(
        to_weights(v, g.device),
        "config",
        method="eigh",
        gram=c,
        status=status,
        certificate=lambda: config_kkt(c, p, v, null),
    )


def _pinv_solve(
    host: np.ndarray, p: np.ndarray, rcond: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Q̂, v = Q̂⁺p, the cut null space (N, K))``: zero gradients are cut, with zero rows in
    Q̂, a zero weight and their unit vector in the null space."""
    n = host.shape[0]
    diag = np.diag(host)
    live = diag > 0.0
    s = np.sqrt(np.where(live, diag, 1.0))
    c = np.where(np.outer(live, live), host / np.outer(s, s), 0.0)
    v = np.zeros(n)
    null = np.eye(n)[:, ~live]
    if live.any():
        lam, vec = np.linalg.eigh(c[np.ix_(live, live)])
        keep = lam > rcond * max(float(lam[-1]), 0.0)
        v[live] = vec[:, keep] @ ((vec[:, keep].T @ p[live]) / lam[keep])
        cut = np.zeros((n, int((~keep).sum())))
        cut[live] = vec[:, ~keep]
        null = np.hstack((null, cut))
    return c, v, null


def config_kkt(c: np.ndarray, p: np.ndarray, v: np.ndarray, null: np.ndarray) -> KKTReport:
    r"""The certificate of :func:`solve_config`: ``stationarity`` is the normal equations' residual
    :math:`|\hat Q(\hat Qv - p)|_\infty / (\lambda_{\max}(\lambda_{\max}|v|_\infty + |p|_\infty))`,
    ``primal_feasibility`` the component of v in the cut null space ``null`` relative to
    :math:`|v|` (v must be the minimum-norm solution)."""
    top = max(float(np.linalg.eigvalsh(c)[-1]), 1e-300)
    scale = top * (top * float(np.abs(v).max(initial=0.0)) + float(np.abs(p).max(initial=0.0)))
    stationarity = float(np.abs(c @ (c @ v - p)).max()) / max(scale, 1e-300)
    norm = float(np.linalg.norm(v))
    primal = float(np.abs(null.T @ v).max(initial=0.0)) / norm if norm > 0.0 else 0.0
    return KKTReport(stationarity, primal, 0.0, 0.0)
