r"""Absorbing layers (convolutional PML) and free-surface bookkeeping shared by every time-domain solver.

The PML is added *outside* the user's model: the model is extended by ``pml_width`` cells on every absorbing side by
repeating its edge values (as deepwave does), so every grid index of the model is a valid source/receiver location
and the physical domain is exactly the grid the user passed. With ``free_surface=True`` the top side gets no layer.

CPML after Komatitsch & Martin (2007, Geophysics 72, SM155) with kappa = 1: for a spatial derivative
:math:`\partial_x u` the memory variable obeys

.. math:: \psi^{n+1} = b\,\psi^n + a\,(\partial_x u)^{n+1}, \qquad
          b = e^{-(d + \alpha)\,\Delta t}, \qquad a = \frac{d}{d + \alpha}(b - 1),

and the stretched derivative is :math:`\partial_x u + \psi`. Damping profile
:math:`d(s) = d_0 s^N`, :math:`d_0 = -(N + 1) v_{max} \ln R / (2 L)`, with :math:`s\in[0,1]` the normalised depth
into the layer, :math:`L` its thickness and :math:`\alpha(s) = \pi f (1 - s)`; interior points have ``a = 0, b = 1``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch


class Widths(NamedTuple):
    """Layer widths in cells on each side of a 2D model."""

    top: int
    bottom: int
    left: int
    right: int


class CPMLProfile(NamedTuple):
    """1D CPML coefficients along one axis of the padded grid (both shaped ``[n_padded]``)."""

    a: torch.Tensor
    b: torch.Tensor


def pml_widths(pml_width, free_surface: bool) -> Widths:
    """Resolve ``pml_width`` (an int, or 4 ints top/bottom/left/right) and ``free_surface`` into :class:`Widths`."""
    if isinstance(pml_width, bool):
        raise TypeError(f"pml_width must be an int or 4 ints (top, bottom, left, right), got {pml_width!r}")
    if isinstance(pml_width, int):
        w = [pml_width] * 4
    else:
        try:
            w = [int(p) for p in pml_width]
        except TypeError:
            raise TypeError(f"pml_width must be an int or 4 ints (top, bottom, left, right), "
                            f"got {pml_width!r}") from None
        if len(w) != 4 or any(int(p) != p for p in pml_width):
            raise ValueError(f"pml_width must be an int or 4 ints (top, bottom, left, right), got {pml_width!r}")
    if any(p < 0 for p in w):
        raise ValueError(f"pml_width must be >= 0 cells, got {pml_width!r}")
    if free_surface:
        w[0] = 0
    return Widths(*w)


def pad_model(field: torch.Tensor, widths: Widths) -> torch.Tensor:
    """Extend ``field`` (``[..., nz, nx]``) into the absorbing layers by repeating its edge values."""
    t, b, lf, r = widths
    if t == b == lf == r == 0:
        return field
    shape = field.shape
    x = field.reshape(-1, 1, shape[-2], shape[-1])
    x = torch.nn.functional.pad(x, (lf, r, t, b), mode="replicate")
    return x.reshape(*shape[:-2], x.shape[-2], x.shape[-1])


def cpml_profile(n: int, widths: tuple[int, int], dx: float, dt: float, vmax: float, freq: float, *,
                 shift: float = 0.0, r: float = 1e-3, order: int = 2,
                 dtype: torch.dtype = torch.float32, device=None) -> CPMLProfile:
    """CPML coefficients along one axis.

    Parameters
    ----------
    n : int
        Number of points of the padded axis (model + both layers).
    widths : (int, int)
        Layer thickness in cells at the start and the end of the axis (0: no layer on that side).
    dx, dt : float
        Grid spacing (m) and time step (s).
    vmax : float
        Largest wave speed in m/s (sets the damping strength).
    freq : float
        Dominant frequency in Hz (sets the frequency shift ``alpha = pi * freq``, which stops the layer from
        absorbing grazing/low-frequency waves badly).
    shift : float
        0 for integer grid points, 0.5 for the staggered points half a cell after them.
    r : float
        Theoretical normal-incidence reflection coefficient of the layer.
    order : int
        Polynomial order ``N`` of the damping profile.

    Returns
    -------
    CPMLProfile
        ``a`` and ``b`` shaped ``[n]``, with ``a = 0``, ``b = 1`` in the interior.
    """
    w0, w1 = int(widths[0]), int(widths[1])
    i = torch.arange(n, dtype=torch.float64) + shift
    # normalised depth into each layer, in [0, 1]; the layer starts at the model's edge grid point
    s = torch.zeros(n, dtype=torch.float64)
    if w0 > 0:
        s = torch.maximum(s, ((w0 - i) / w0).clamp(0, 1))
    if w1 > 0:
        s = torch.maximum(s, ((i - (n - 1 - w1)) / w1).clamp(0, 1))
    wmax = max(w0, w1, 1)
    length = wmax * dx
    d0 = -(order + 1) * vmax * math.log(r) / (2 * length)
    d = d0 * s ** order
    alpha = math.pi * freq * (1 - s) * (s > 0)
    b = torch.exp(-(d + alpha) * dt)
    denom = d + alpha
    a = torch.where(denom > 0, d / torch.where(denom > 0, denom, torch.ones_like(denom)) * (b - 1),
                    torch.zeros_like(d))
    b = torch.where(s > 0, b, torch.ones_like(b))
    return CPMLProfile(a.to(dtype=dtype, device=device), b.to(dtype=dtype, device=device))


def dominant_frequency(source_amplitudes: torch.Tensor, dt: float) -> float:
    """Frequency (Hz) of the peak of the mean amplitude spectrum of ``source_amplitudes`` (``[..., nt]``)."""
    x = source_amplitudes.detach().reshape(-1, source_amplitudes.shape[-1]).to(torch.float64)
    nt = x.shape[-1]
    nfft = max(2 * nt, 64)
    spec = torch.fft.rfft(x, n=nfft).abs().mean(0)
    spec[0] = 0.0
    k = int(torch.argmax(spec))
    f = k / (nfft * dt)
    return f if f > 0 else 1.0 / (nt * dt)


__all__ = ["CPMLProfile", "Widths", "cpml_profile", "dominant_frequency", "pad_model", "pml_widths"]
