"""Analytic solutions shared by the solver tests (the one module every test compares against).

Conventions follow DESIGN.md section 2.
"""
from __future__ import annotations

import numpy as np
from scipy.special import hankel1


def green2d_time(wavelet: np.ndarray, dt: float, r: float, v: float, pad_factor: int = 8) -> np.ndarray:
    r"""Trace of ``(1/v^2) p_tt - lap p = f(t) delta(x)`` at distance ``r`` (m) in 2D, homogeneous medium.

    ``p = G * f`` with :math:`G(r,t) = H(t - r/v) / (2\pi\sqrt{t^2 - r^2/v^2})`. Computed exactly in the frequency
    domain, where :math:`\hat G(\omega) = (i/4) H_0^{(1)}(\omega r / v)` in the ``exp(-i omega t)`` convention
    (its complex conjugate in numpy's FFT sign convention), on a zero-padded axis so nothing wraps around.
    ``wavelet`` is ``f`` sampled at ``t = n dt``; returns the trace at the same times.
    """
    nt = wavelet.shape[-1]
    n = pad_factor * nt
    omega = 2 * np.pi * np.fft.rfftfreq(n, dt)
    ghat = np.zeros_like(omega, dtype=complex)
    k = omega[1:] * r / v
    ghat[1:] = np.conj(0.25j * hankel1(0, k))
    spec = np.fft.rfft(wavelet, n=n) * ghat
    return np.fft.irfft(spec, n=n)[..., :nt]


def green2d_helmholtz(omega: float, r, v: complex) -> np.ndarray:
    r"""Solution of ``lap u + k^2 u = -delta(x)`` in 2D: :math:`u = (i/4) H_0^{(1)}(k r)`, ``k = omega / v``.

    ``v`` may be complex (Kolsky-Futterman velocity ``v(omega)``), which makes ``k`` complex with a positive
    imaginary part (decay with distance).
    """
    k = omega / np.asarray(v)
    return 0.25j * hankel1(0, k * np.asarray(r, dtype=float))
