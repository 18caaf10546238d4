"""The N = 2 closed forms, on host floats and on device tensors (no host synchronisation).

For Q = [[q11, q12], [q12, q22]] the equality-constrained optimum is
``w1 = (q22 − q12) / D``, ``w2 = (q11 − q12) / D`` with ``D = q11 + q22 − 2 q12 = |g1 − g2|²``;
the simplex optimum clips ``w1`` to [0, 1] (decided by the signs of the numerators first, so a
vertex answer is exact even when g1 ≈ g2). In equilibrated coordinates the reduced Hessian is the
scalar ``h = (q11 + q22 − 2 q12) / (q11 + q22)``: the problem is degenerate (g1 ≈ g2, every w
optimal) when ``h ≤ rcond·max(1, h)``, and the minimum-norm answer is then w = (½, ½), exactly
what the general null-space path returns.

:func:`solve_small` is the one dispatch of the N ≤ 2 cases that the equality and simplex solvers
share.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from moo_opt.solvers._input import Gramian, not_psd_error, to_weights
from moo_opt.solvers.result import SolveResult, SolveStatus, status_code


def closed_form_host(
    q11: float, q12: float, q22: float, rcond: float, simplex: bool
) -> tuple[float, float, bool, float]:
    """``(w1, w2, degenerate, condition)``; raises ``ValueError`` when Q is not PSD.

    ``w1 = (q22 − q12)/D`` and ``w2 = (q11 − q12)/D`` are computed separately (not ``1 − w1``), so
    that a weight near zero keeps its relative precision when the gradients' scales differ a lot.
    """
    if q11 * q22 < q12 * q12 * (1.0 - 1e3 * rcond) and q12 * q12 > 0.0:
        raise not_psd_error(f"q11·q22 = {q11 * q22:.6g} < q12² = {q12 * q12:.6g}")
    tr = q11 + q22
    denom = tr - 2.0 * q12
    a, b = q22 - q12, q11 - q12
    if simplex and (a < 0.0) != (b < 0.0):  # one gradient is past the other: a vertex, exactly
        return (0.0, 1.0, False, 1.0) if a < 0.0 else (1.0, 0.0, False, 1.0)
    h = denom / tr if tr > 0.0 else 0.0
    if h <= rcond * max(1.0, h):
        return 0.5, 0.5, True, math.inf
    return a / (a + b), b / (a + b), False, max(1.0, h) / h


def closed_form_device(
    q: Tensor, rcond: float, simplex: bool, base: SolveStatus
) -> tuple[Tensor, Tensor]:
    """Weights and status code for a symmetric float64 2×2 tensor, without leaving the device.

    Invalid input (NaN/Inf, not PSD) yields uniform weights and the ``INVALID_INPUT`` code.
    """
    q11, q12, q22 = q[0, 0], q[0, 1], q[1, 1]
    tr = q11 + q22
    denom = tr - 2.0 * q12
    h = torch.where(tr > 0.0, denom / torch.where(tr > 0.0, tr, 1.0), 0.0)
    degenerate = h <= rcond * torch.clamp(h, min=1.0)
    ab = torch.stack((q22 - q12, q11 - q12))
    if simplex:  # one gradient past the other: a vertex, exactly (even when nearly degenerate)
        vertex = (ab[0] < 0.0) != (ab[1] < 0.0)
        ab = torch.where(vertex, (ab >= 0.0).to(ab.dtype), ab)
        degenerate = degenerate & ~vertex
    w = ab / torch.where(degenerate, 1.0, ab.sum())
    invalid = (
        ~torch.isfinite(q).all()
        | (q11 < 0.0)
        | (q22 < 0.0)
        | ((q11 * q22 < q12 * q12 * (1.0 - 1e3 * rcond)) & (q12 != 0.0))
    )
    w = torch.where(degenerate | invalid, 0.5, w)
    code = torch.where(
        invalid,
        status_code(SolveStatus.INVALID_INPUT),
        torch.where(degenerate, status_code(SolveStatus.DEGENERATE), status_code(base)),
    )
    return w, code


def solve_small(
    g: Gramian,
    rcond: float,
    problem: Literal["equality", "simplex"],
    *,
    base: SolveStatus,
    ridge: float = 0.0,
    closed_form: bool = True,
) -> SolveResult | None:
    """The N ≤ 2 cases of ``problem``: N = 1 is w = (1); N = 2 the closed form, on an accelerator
    without a host synchronisation (the status is computed when read). ``ridge`` adds
    ``ridge·tr(Q)/N·I`` before solving; ``closed_form=False`` leaves N = 2 on the host to the
    caller's general method. None: the caller solves (N > 2, or N = 2 with the closed form
    declined)."""
    simplex = problem == "simplex"
    if g.dev is not None:  # N ≤ 2 on an accelerator: stay on the device
        qd = g.dev
        if g.n == 1:
            ok = torch.isfinite(qd).all() & (qd[0, 0] >= 0.0)
            code = torch.where(ok, status_code(base), status_code(SolveStatus.INVALID_INPUT))
            return SolveResult.closed_form(
                torch.ones(1, dtype=torch.float64, device=g.device), problem, gram=qd, status=code
            )
        solve_on = (
            qd + ridge * torch.trace(qd) / 2.0 * torch.eye(2, dtype=qd.dtype, device=qd.device)
            if ridge > 0.0
            else qd
        )
        w, code = closed_form_device(solve_on, rcond, simplex=simplex, base=base)
        return SolveResult.closed_form(w, problem, gram=qd, status=code)
    host = g.host
    assert host is not None
    if g.n == 1:
        return SolveResult.closed_form(
            to_weights(np.ones(1), g.device), problem, gram=host, status=base, condition=1.0
        )
    if g.n > 2 or not closed_form:
        return None
    solve_on = host + ridge * float(np.trace(host)) / 2.0 * np.eye(2) if ridge > 0.0 else host
    w1, w2, degenerate, cond = closed_form_host(
        float(solve_on[0, 0]), float(solve_on[0, 1]), float(solve_on[1, 1]), rcond, simplex=simplex
    )
    status = SolveStatus.DEGENERATE if degenerate else base
    return SolveResult.closed_form(
        to_weights(np.array((w1, w2)), g.device), problem, gram=host, status=status, condition=cond
    )
