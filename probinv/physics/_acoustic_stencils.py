"""Stencils and CPML coefficients of the acoustic solver: the linear operators one time step applies.

:func:`_stencil` applies a central-difference stencil along one axis of ``[..., nz, nx]`` tensors with zero values
outside (plus the free-surface odd-mirror correction on top), :func:`_stencil_t` its transpose; :func:`_build_ops`
gathers the weights and the CPML coefficients of one call into :class:`_Ops`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import _fd
from .boundaries import Widths, cpml_profile

# ----------------------------------------------------------------------------------------------------------------------
# linear stencil operators on [..., nz, nx] tensors


def _top_mirror_correction(weights: tuple[float, ...]) -> torch.Tensor | None:
    """Matrix ``C`` [(M-1), (M-1)] adding the odd-mirror ghost values above a free surface at row -1.

    With ``p[-1] = 0`` and ``p[-2-j] = -p[j]``, output row ``i`` of a stencil ``out[i] = sum_k w_k u[i+k]`` gains
    ``sum_j C[i, j] u[j]`` on top of its zero-halo value.
    """
    m = (len(weights) - 1) // 2
    if m < 2:
        return None
    c = torch.zeros(m - 1, m - 1, dtype=torch.float64)
    for i in range(m - 1):
        for k in range(-m, m + 1):
            j = i + k
            if j <= -2:
                c[i, -2 - j] -= weights[k + m]
    return c


def _stencil(u: torch.Tensor, weights: tuple[float, ...], axis: int, corr: torch.Tensor | None = None) -> torch.Tensor:
    """``out[i] = sum_k w_k u[i + k]`` along ``axis`` (-1: x, -2: z) with zero values outside, plus ``corr`` on top."""
    m = (len(weights) - 1) // 2
    n = u.shape[axis]
    up = F.pad(u, (m, m) if axis == -1 else (0, 0, m, m))
    out = None
    for k in range(m):  # pair symmetric / antisymmetric offsets: one multiply per pair
        wl, wr = weights[k], weights[2 * m - k]
        left, right = up.narrow(axis, k, n), up.narrow(axis, 2 * m - k, n)
        if wl == wr:
            term = torch.add(left, right).mul_(wl)
        elif wl == -wr:
            term = torch.sub(right, left).mul_(wr)
        else:
            term = torch.add(left * wl, right, alpha=wr)
        out = term if out is None else out.add_(term)
    if weights[m] != 0:
        out = out + weights[m] * u
    if corr is not None:
        r = corr.shape[0]
        top = out.narrow(-2, 0, r) + torch.einsum("ij,...jx->...ix", corr, u.narrow(-2, 0, r))
        out = torch.cat([top, out.narrow(-2, r, n - r)], dim=-2)
    return out


def _stencil_t(u: torch.Tensor, weights: tuple[float, ...], axis: int, corr: torch.Tensor | None = None):
    """Transpose of :func:`_stencil` (reversed weights, transposed correction)."""
    return _stencil(u, tuple(reversed(weights)), axis, None if corr is None else corr.t().contiguous())


class _Ops(NamedTuple):
    """Everything one time step needs besides the fields (built once per call by :func:`_build_ops`)."""

    w2: tuple  # second derivative weights / dx^2, offsets -M..M
    w1: tuple  # central first derivative weights / dx, offsets -M..M
    c2: torch.Tensor | None  # free-surface corrections (z, top) of the two stencils
    c1: torch.Tensor | None
    ax: torch.Tensor  # CPML coefficients [1, 1, 1, W] and [1, 1, H, 1]
    bx: torch.Tensor
    az: torch.Tensor
    bz: torch.Tensor


def _pml_vmax(vmax: float) -> float:
    """``vmax`` rounded up to two significant digits (the CPML strength; see :func:`_build_ops`)."""
    scale10 = 10.0 ** (math.floor(math.log10(vmax)) - 1)
    return math.ceil(vmax / scale10 - 1e-9) * scale10


def _build_ops(accuracy: int, dx: float, dt: float, shape: tuple[int, int], widths: Widths, vmax: list[float],
               freq: list[float], free_surface: bool, dtype, device) -> _Ops:
    """Stencil weights and CPML coefficients; ``vmax`` and ``freq`` per model of the batch (one profile each)."""
    c = _fd.SECOND_DERIVATIVE[accuracy]
    w2 = tuple(x / dx ** 2 for x in (list(reversed(c[1:])) + list(c)))
    c1 = _fd.CENTRAL_FIRST_DERIVATIVE[accuracy]
    w1 = tuple(x / dx for x in ([-a for a in reversed(c1)] + [0.0] + list(c1)))
    if free_surface:
        c2m, c1m = _top_mirror_correction(w2), _top_mirror_correction(w1)
        c2m = None if c2m is None else c2m.to(dtype=dtype, device=device)
        c1m = None if c1m is None else c1m.to(dtype=dtype, device=device)
    else:
        c2m = c1m = None
    h, w = shape
    # The damping uses vmax rounded up to two significant digits: the layer (and so the forward map) then stays
    # fixed under small model perturbations and AD gives the gradient of exactly the function evaluated. A
    # reflection coefficient of 1e-5 with a quadratic profile gives ~2e-10 reflected energy with 20 cells
    # (tests/test_boundaries.py).
    prof = []
    for vm, fr in zip(vmax, freq, strict=True):
        px = cpml_profile(w, (widths.left, widths.right), dx, dt, _pml_vmax(vm), fr, r=1e-5, dtype=dtype,
                          device=device)
        pz = cpml_profile(h, (widths.top, widths.bottom), dx, dt, _pml_vmax(vm), fr, r=1e-5, dtype=dtype,
                          device=device)
        prof.append((px.a, px.b, pz.a, pz.b))
    ax, bx, az, bz = (torch.stack([p[i] for p in prof]) for i in range(4))
    n = len(prof)
    return _Ops(w2, w1, c2m, c1m, ax.view(n, 1, 1, w), bx.view(n, 1, 1, w), az.view(n, 1, h, 1),
                bz.view(n, 1, h, 1))
