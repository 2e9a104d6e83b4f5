"""Linear operators of the elastic solvers: staggered derivatives, free-surface images, CPML strips, averages.

Everything one SH or P-SV time step applies besides the medium coefficients, with the transposes the hand-written
backward needs. No autograd inside (the reference path differentiates these with plain autograd).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------------------------
# staggered derivatives with zero (or mirrored) values outside the padded grid
# ----------------------------------------------------------------------------------------------------------------
def _pad_axis(f: torch.Tensor, axis: int, before: int, after: int, top: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-pad ``f`` along ``axis`` (-1 or -2); ``top`` (if given) replaces the zeros before the start."""
    if axis == -1:
        return F.pad(f, (before, after))
    if top is None:
        return F.pad(f, (0, 0, before, after))
    bottom = f.new_zeros(f.shape[:-2] + (after, f.shape[-1]))
    return torch.cat([top, f, bottom], dim=-2)


def _d_plus_padded(f: torch.Tensor, axis: int, coeffs, inv_dx: float,
                   top: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`_d_plus` by padding the whole field (differentiable by autograd; the reference version)."""
    m = len(coeffs)
    n = f.shape[axis]
    fp = _pad_axis(f, axis, m - 1, m, top)
    out = None
    for k, c in enumerate(coeffs, start=1):
        term = fp.narrow(axis, m - 1 + k, n) - fp.narrow(axis, m - k, n)
        out = term * (c * inv_dx) if out is None else out + term * (c * inv_dx)
    return out


def _d_minus_padded(f: torch.Tensor, axis: int, coeffs, inv_dx: float,
                    top: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`_d_minus` by padding the whole field (differentiable by autograd; the reference version)."""
    m = len(coeffs)
    n = f.shape[axis]
    fp = _pad_axis(f, axis, m, m - 1, top)
    out = None
    for k, c in enumerate(coeffs, start=1):
        term = fp.narrow(axis, m + k - 1, n) - fp.narrow(axis, m - k, n)
        out = term * (c * inv_dx) if out is None else out + term * (c * inv_dx)
    return out


def _staggered(f: torch.Tensor, axis: int, coeffs, inv_dx: float, top, plus: bool) -> torch.Tensor:
    """Staggered derivative without padding the whole field (no autograd): interior in place, edges on slabs.

    ``out[j] = sum_k c_k (f[j + k + o] - f[j - k + 1 + o]) / dx`` with ``o = 0`` (:func:`_d_plus`) or ``-1``
    (:func:`_d_minus`); rows/columns whose stencil leaves the array use the padded version on a thin slab.
    """
    padded = _d_plus_padded if plus else _d_minus_padded
    n, m, o = f.shape[axis], len(coeffs), (0 if plus else -1)
    lo, hi = m - 1 - o, n - m - o  # outputs whose stencil stays inside the array
    if hi - lo < 2 * m:
        return padded(f, axis, coeffs, inv_dx, top)
    out = torch.empty_like(f)
    length = hi - lo
    inner = out.narrow(axis, lo, length)
    for k, c in enumerate(coeffs, start=1):
        a = f.narrow(axis, lo + k + o, length)
        b = f.narrow(axis, lo - k + 1 + o, length)
        if k == 1:
            torch.sub(a, b, out=inner)
            inner.mul_(c * inv_dx)
        else:
            inner.add_(a, alpha=c * inv_dx)
            inner.sub_(b, alpha=c * inv_dx)
    if lo > 0:
        slab = f.narrow(axis, 0, lo + m + o)
        out.narrow(axis, 0, lo).copy_(padded(slab, axis, coeffs, inv_dx, top).narrow(axis, 0, lo))
    s0 = hi - m + 1 + o
    slab = f.narrow(axis, s0, n - s0)
    out.narrow(axis, hi, n - hi).copy_(padded(slab, axis, coeffs, inv_dx).narrow(axis, hi - s0, n - hi))
    return out


def _d_plus(f: torch.Tensor, axis: int, coeffs, inv_dx: float, top: torch.Tensor | None = None) -> torch.Tensor:
    """Staggered derivative from integer to half points: ``out[j] = sum_k c_k (f[j+k] - f[j-k+1]) / dx``.

    ``out[j]`` is the derivative at ``j + 1/2``. Values outside the array are 0, or ``top`` before the start of the
    z axis (``M - 1`` rows, the image above a free surface).
    """
    if torch.is_grad_enabled():
        return _d_plus_padded(f, axis, coeffs, inv_dx, top)
    return _staggered(f, axis, coeffs, inv_dx, top, plus=True)


def _d_minus(f: torch.Tensor, axis: int, coeffs, inv_dx: float, top: torch.Tensor | None = None) -> torch.Tensor:
    """Staggered derivative from half to integer points: ``out[j] = sum_k c_k (f[j+k-1] - f[j-k]) / dx``.

    ``f[j]`` is the value at ``j + 1/2``. Values outside the array are 0, or ``top`` (``M`` rows) before the start
    of the z axis.
    """
    if torch.is_grad_enabled():
        return _d_minus_padded(f, axis, coeffs, inv_dx, top)
    return _staggered(f, axis, coeffs, inv_dx, top, plus=False)


def _image_symmetric_integer(f: torch.Tensor, m: int) -> torch.Tensor:
    """Rows ``f[-(m-1)], ..., f[-1]`` of a field on integer rows mirrored symmetrically about row 0."""
    return torch.flip(f[..., 1:m, :], dims=(-2,))


def _image_antisymmetric_integer(f: torch.Tensor, m: int) -> torch.Tensor:
    """Rows ``f[-(m-1)], ..., f[-1]`` mirrored antisymmetrically about row 0 (``f[-r] = -f[r]``)."""
    return -torch.flip(f[..., 1:m, :], dims=(-2,))


def _image_antisymmetric_half(f: torch.Tensor, m: int) -> torch.Tensor:
    """Rows ``-m .. -1`` of a field on half rows (``f[j]`` at ``j + 1/2``) mirrored antisymmetrically about 0."""
    return -torch.flip(f[..., 0:m, :], dims=(-2,))


# ----------------------------------------------------------------------------------------------------------------
# CPML memory variables, only where the layer is (a != 0)
# ----------------------------------------------------------------------------------------------------------------
class _Strip(NamedTuple):
    """A slab of the padded grid where a CPML memory variable lives (``a != 0``): ``axis``, ``start``, ``length``."""

    axis: int
    start: int
    length: int
    a: torch.Tensor
    b: torch.Tensor


def _strips(ab: tuple, axis: int) -> list[_Strip]:
    """Return the contiguous runs of ``a != 0`` (the layers) of a CPML profile; memory variables live only there."""
    a, b = ab
    active = ((a != 0) | (b != 1)).reshape(a.shape[0], -1).any(0).tolist()
    out, j, n = [], 0, len(active)
    while j < n:
        if active[j]:
            k = j
            while k < n and active[k]:
                k += 1
            out.append(_Strip(axis, j, k - j, a.narrow(axis, j, k - j), b.narrow(axis, j, k - j)))
            j = k
        else:
            j += 1
    return out


def _strip_zeros(strips: list[_Strip], shape, like: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for s in strips:
        sh_ = list(shape)
        sh_[s.axis] = s.length
        out.append(like.new_zeros(sh_))
    return out


def _stretch(d: torch.Tensor, strips: list[_Strip], psis) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """CPML: ``psi <- b psi + a d`` on the layer strips, and the stretched derivative ``d + psi``."""
    if not strips:
        return d, []
    if torch.is_grad_enabled():
        d = d.clone()  # the reference path: keep autograd's view of d intact
    new = []
    for s, p in zip(strips, psis, strict=True):
        ds = d.narrow(s.axis, s.start, s.length)
        p = s.b * p + s.a * ds
        new.append(p)
        ds.add_(p)
    return d, new


def _stretch_t(ld: torch.Tensor, strips: list[_Strip], lpsis, inplace: bool):
    """Transpose of :func:`_stretch`: adjoint of the plain derivative and of the previous memory variables."""
    if not strips:
        return ld, []
    out = ld if inplace else ld.clone()
    new = []
    for s, lp in zip(strips, lpsis, strict=True):
        t = lp + ld.narrow(s.axis, s.start, s.length)
        new.append(s.b * t)
        out.narrow(s.axis, s.start, s.length).add_(s.a * t)
    return out, new


# ----------------------------------------------------------------------------------------------------------------
# medium averages onto the staggered nodes
# ----------------------------------------------------------------------------------------------------------------
def _average_next(f: torch.Tensor, axis: int, harmonic: bool) -> torch.Tensor:
    """Average of ``f`` at index ``j`` and ``j + 1`` along ``axis`` (the last index is kept), i.e. at ``j + 1/2``."""
    n = f.shape[axis]
    nxt = torch.cat([f.narrow(axis, 1, n - 1), f.narrow(axis, n - 1, 1)], dim=axis)
    if not harmonic:
        return 0.5 * (f + nxt)
    return _harmonic([f, nxt])


def _harmonic(values: list[torch.Tensor]) -> torch.Tensor:
    """Harmonic mean, 0 where any value is 0 (a fluid neighbour), with finite gradients there."""
    zero = values[0] == 0
    for v in values[1:]:
        zero = zero | (v == 0)
    safe = [torch.where(zero, torch.ones_like(v), v) for v in values]
    h = len(values) / sum(1.0 / v for v in safe)
    return torch.where(zero, torch.zeros_like(h), h)


def _shift(f: torch.Tensor, axis: int) -> torch.Tensor:
    """``f`` at index ``j + 1`` along ``axis`` (the last index repeated)."""
    n = f.shape[axis]
    return torch.cat([f.narrow(axis, 1, n - 1), f.narrow(axis, n - 1, 1)], dim=axis)


# ----------------------------------------------------------------------------------------------------------------
# sources, receivers and the transposed free-surface images
# ----------------------------------------------------------------------------------------------------------------
def _gather(field: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``field`` [B, S, NZ, NX] sampled at flat indices ``idx`` [1, S, R] -> [B, S, R]."""
    b, s = field.shape[:2]
    return torch.gather(field.reshape(b, s, -1), 2, idx.expand(b, -1, -1))


def _inject(field: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Add ``values`` [B or 1, S, n_src] at flat indices ``idx`` [1, S, n_src] of ``field`` [B, S, NZ, NX]."""
    b, s = field.shape[:2]
    shape = field.shape
    if not torch.is_grad_enabled():  # field is a fresh temporary of the step
        field.view(b, s, -1).scatter_add_(2, idx.expand(b, -1, -1), values.expand(b, -1, -1))
        return field
    return field.reshape(b, s, -1).scatter_add(2, idx.expand(b, -1, -1), values.expand(b, -1, -1)).reshape(shape)


def _scatter_add_(field: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """In place: ``field`` [B, S, NZ, NX] += ``values`` [B, S, R] at flat indices ``idx`` [1, S, R] (adjoint only)."""
    b, s = field.shape[:2]
    field.view(b, s, -1).scatter_add_(2, idx.expand(b, -1, -1), values)
    return field


def _d_minus_image_t(y: torch.Tensor, coeffs, inv_dx: float, sign: float) -> torch.Tensor:
    """Transpose of ``_d_minus(f, -2, ..., top=image)`` with the half-row image ``f[-i] = sign * f[i-1]``."""
    m = len(coeffs)
    z = -_d_plus(F.pad(y, (0, 0, m, 0)), -2, coeffs, inv_dx)
    adj = z[..., m:, :].clone()
    adj[..., :m, :] += sign * torch.flip(z[..., :m, :], dims=(-2,))
    return adj


def _d_plus_image_t(y: torch.Tensor, coeffs, inv_dx: float, sign: float) -> torch.Tensor:
    """Transpose of ``_d_plus(f, -2, ..., top=image)`` with the integer-row image ``f[-i] = sign * f[i]``."""
    m = len(coeffs)
    if m == 1:
        return -_d_minus(y, -2, coeffs, inv_dx)
    z = -_d_minus(F.pad(y, (0, 0, m - 1, 0)), -2, coeffs, inv_dx)
    adj = z[..., m - 1:, :].clone()
    adj[..., 1:m, :] += sign * torch.flip(z[..., :m - 1, :], dims=(-2,))
    return adj
