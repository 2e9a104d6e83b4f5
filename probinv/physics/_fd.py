"""Finite-difference stencil coefficients and the stability limits that follow from them.

Shared by the time-domain solvers so that every scheme declares its order and its CFL limit in one place.
"""
from __future__ import annotations

import math

#: Central second-derivative coefficients ``[c0, c1, ..., cM]``:
#: ``u'' ~ (c0 u_i + sum_k ck (u_{i+k} + u_{i-k})) / dx^2``.
SECOND_DERIVATIVE = {
    2: (-2.0, 1.0),
    4: (-5.0 / 2.0, 4.0 / 3.0, -1.0 / 12.0),
    8: (-205.0 / 72.0, 8.0 / 5.0, -1.0 / 5.0, 8.0 / 315.0, -1.0 / 560.0),
}

#: Staggered first-derivative coefficients ``[c1, ..., cM]``: ``u'(i+1/2) ~ sum_k ck (u_{i+k} - u_{i-k+1}) / dx``.
STAGGERED_FIRST_DERIVATIVE = {
    2: (1.0,),
    4: (9.0 / 8.0, -1.0 / 24.0),
    8: (1225.0 / 1024.0, -245.0 / 3072.0, 49.0 / 5120.0, -5.0 / 7168.0),
}

#: Central first-derivative coefficients ``[c1, ..., cM]``: ``u'(i) ~ sum_k ck (u_{i+k} - u_{i-k}) / dx``.
CENTRAL_FIRST_DERIVATIVE = {
    2: (1.0 / 2.0,),
    4: (2.0 / 3.0, -1.0 / 12.0),
    8: (4.0 / 5.0, -1.0 / 5.0, 4.0 / 105.0, -1.0 / 280.0),
}

VALID_ACCURACIES = (2, 4, 8)


def check_accuracy(accuracy) -> int:
    if isinstance(accuracy, bool) or accuracy not in VALID_ACCURACIES:
        raise ValueError(f"accuracy must be one of {VALID_ACCURACIES} (spatial order of the stencil), got {accuracy!r}")
    return int(accuracy)


def second_derivative_symbol_max(accuracy: int) -> float:
    """Largest magnitude of the 1D second-derivative symbol (times dx^2); reached at the Nyquist wavenumber."""
    c = SECOND_DERIVATIVE[accuracy]
    return abs(c[0] + 2.0 * sum(ck * (-1) ** k for k, ck in enumerate(c[1:], start=1)))


def staggered_symbol_max(accuracy: int) -> float:
    """Largest magnitude of the 1D staggered first-derivative symbol (times dx); reached at Nyquist."""
    return 2.0 * sum(abs(ck) for ck in STAGGERED_FIRST_DERIVATIVE[accuracy])


def max_stable_dt_second_order(vmax: float, dx: float, accuracy: int, ndim: int = 2) -> float:
    """Largest stable dt (s) of leapfrog ``u_tt = v^2 lap u`` with the central stencil of ``accuracy``.

    Von Neumann: ``v^2 dt^2 lambda_max <= 4`` with ``lambda_max = ndim * symbol_max / dx^2``.
    """
    lam = ndim * second_derivative_symbol_max(accuracy) / dx ** 2
    return 2.0 / (vmax * math.sqrt(lam))


def max_stable_dt_staggered(vmax: float, dx: float, accuracy: int, ndim: int = 2) -> float:
    """Largest stable dt (s) of the staggered velocity-stress (or velocity-pressure) leapfrog scheme.

    Von Neumann: ``v dt sqrt(ndim) * symbol_max / dx <= 2``.
    """
    return 2.0 * dx / (vmax * math.sqrt(ndim) * staggered_symbol_max(accuracy))
