"""The solvers' numerical tolerances, in one place (each solver's algorithmic parameters, such as
step counts and damping, stay with its algorithm)."""

from __future__ import annotations

import numpy as np

#: an index whose relative multiplier ``ν_i / scale`` is at most this touches the optimal face: the
#: simplex QP's tie-break, the box QP's singular-face test and CAGrad's uniqueness test read it
TOUCHING = 1e-9
#: a candidate whose KKT residual is at most this is certified (the test suite's KKT tolerance)
CERTIFIED = 1e-9
#: a "Gw* = 0" answer of CAGrad is certified to this: |Gw| is only known to √(rcond)·T from Q
ZERO_CERTIFIED = 1e-6
#: CAGrad's bisection on κ: relative width of the final bracket, and the floor of κ relative to its
#: ceiling
BRACKET_RTOL = 1e-15
KAPPA_FLOOR = 2.0**-64
#: rows whose diagonal is below this fraction of the largest are equilibrated with this floor
#: instead (a zero gradient has no scale of its own)
DIAG_FLOOR = 1e-32
#: relative asymmetry tolerated per input precision: Gram matrices computed in low precision are
#: symmetric only up to rounding; the symmetric part is what gets solved
SYMMETRY_TOL = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-4}
SYMMETRY_TOL_LOW = 1e-2  # float16, bfloat16
