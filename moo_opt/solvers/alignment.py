"""Aligned-MTL's balance transform: the matrix B that makes the gradients orthogonal and of equal
norm."""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import Tensor

from moo_opt.solvers._input import prepare, to_weights
from moo_opt.solvers.result import KKTReport, SolveResult, SolveStatus

AlignmentScale = Literal["min", "median", "rmse"]
ALIGNMENT_SCALES: tuple[str, ...] = ("min", "median", "rmse")


def balance_transform(
    q: Tensor | np.ndarray,
    *,
    scale: AlignmentScale = "min",
    rcond: float | None = None,
    validate: bool | None = None,
) -> SolveResult:
    r"""The balance transform of Aligned-MTL: :math:`B = \sigma\, V \Lambda^{-1/2} V^\top`.

    Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment for Multi-Task
    Learning", CVPR 2023 (Algorithm 1). With :math:`Q = G^\top G = V\Lambda V^\top` restricted to
    its numerical range (eigenvalues above ``rcond·λmax``; rank r), the aligned gradients
    :math:`\hat G = G B` satisfy :math:`\hat G^\top \hat G = \sigma^2 P` with
    :math:`P = V_r V_r^\top` the projector on the range: orthogonal components of equal norm σ,
    condition number 1. σ is the smallest singular value of G (``scale="min"``, the paper's choice),
    their median (``"median"``), or the square root of the mean eigenvalue (``"rmse"``). Computed
    exactly by one symmetric eigen-decomposition (LAPACK, float64, on the host).

    Statuses: ``OPTIMAL`` when G has full column rank; ``DEGENERATE`` when rank r < N (the
    directions of the null space are left out: B maps them to 0) or when Q = 0 ([decision] B is then
    the identity: every gradient is zero and any weights give the same direction). The certificate
    reports :math:`\max |B Q B - \sigma^2 P| / \sigma^2` as its stationarity term.

    Args:
        q: the N×N Gram matrix (tensor on any device, or a numpy array).
        scale: ``"min"``, ``"median"`` or ``"rmse"``.
        rcond: relative eigenvalue cut-off of the rank; default ``N·100·eps`` of Q's precision.
        validate: as for :func:`~moo_opt.solvers.solve_equality_qp`.

    Returns:
        a :class:`~moo_opt.solvers.SolveResult` of problem ``"alignment"`` whose ``weights`` are the
        N×N matrix B (float64, on Q's device): a direction with task preferences u is :math:`G B u`.
    """
    if scale not in ALIGNMENT_SCALES:
        raise ValueError(f"scale must be one of {ALIGNMENT_SCALES}, got {scale!r}")
    g = prepare(q, True if validate is None else validate)
    host = g.host
    assert host is not None
    rc = g.n * g.default_rcond() if rcond is None else float(rcond)
    lam, vec = np.linalg.eigh(host)
    top = float(lam[-1])
    keep = lam > rc * top if top > 0.0 else np.zeros(g.n, dtype=bool)
    rank = int(keep.sum())
    b, sigma2 = _transform(lam[keep], vec[:, keep], scale, g.n)

    def certificate() -> KKTReport:  # read lazily: the training step never pays for it
        return _alignment_kkt(host, b, sigma2, vec[:, keep])

    status = SolveStatus.OPTIMAL if rank == g.n else SolveStatus.DEGENERATE
    condition = top / float(lam[0]) if rank == g.n else float("inf")
    return SolveResult.solved(
        to_weights(b, g.device),
        "alignment",
        method="eigh",
        gram=host,
        status=status,
        condition=condition,
        certificate=certificate,
    )


def _transform(
    lam: np.ndarray, vec: np.ndarray, scale: AlignmentScale, n: int
) -> tuple[np.ndarray, float]:
    """B = σ·V Λ^(-1/2) Vᵀ on the kept eigenpairs, and σ²; the identity and 0 when none is kept
    (Q = 0)."""
    if lam.size == 0:
        return np.eye(n), 0.0
    sigma2 = float({"min": lam.min(), "median": np.median(lam), "rmse": lam.mean()}[scale])
    return (vec * (np.sqrt(sigma2) / np.sqrt(lam))) @ vec.T, sigma2


def _alignment_kkt(host: np.ndarray, b: np.ndarray, sigma2: float, basis: np.ndarray) -> KKTReport:
    """max |B Q B − σ²P| / σ² as the stationarity term, P the projector on the kept eigenvectors."""
    if sigma2 == 0.0:
        return KKTReport(0.0, 0.0, 0.0, 0.0)
    gap = b @ host @ b - sigma2 * (basis @ basis.T)
    return KKTReport(float(np.abs(gap).max()) / sigma2, 0.0, 0.0, 0.0)
