"""Source wavelets.

Time sampling follows the package convention: sample ``n`` is the value at ``t = n * dt``.
"""
from __future__ import annotations

import math

import torch


def ricker(freq: float, nt: int, dt: float, t0: float | None = None, *, dtype: torch.dtype | None = None,
           device: torch.device | str | None = None) -> torch.Tensor:
    r"""Ricker (Mexican-hat) wavelet.

    .. math:: w(t) = \left(1 - 2\pi^2 f^2 (t - t_0)^2\right) \exp\left(-\pi^2 f^2 (t - t_0)^2\right)

    Parameters
    ----------
    freq : float
        Peak (dominant) frequency in Hz. Its spectrum has significant energy up to about ``2.5 * freq``.
    nt : int
        Number of time samples.
    dt : float
        Time step in s.
    t0 : float, optional
        Time of the peak in s. Default ``1.5 / freq``, so the wavelet starts at about 1e-4 of its peak.
    dtype, device : optional
        Of the returned tensor (default: torch's default dtype, CPU).

    Returns
    -------
    Tensor[nt]
        Dimensionless amplitudes, peak value 1 at ``t0``.
    """
    if not (isinstance(freq, (int, float)) and math.isfinite(freq) and freq > 0):
        raise ValueError(f"freq must be a positive finite frequency in Hz, got {freq!r}")
    if not (isinstance(nt, int) and nt > 0):
        raise ValueError(f"nt must be a positive integer number of samples, got {nt!r}")
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite time step in s, got {dt!r}")
    if t0 is None:
        t0 = 1.5 / freq
    t = torch.arange(nt, dtype=torch.float64, device=device) * dt - t0
    arg = (math.pi * freq * t) ** 2
    w = (1 - 2 * arg) * torch.exp(-arg)
    return w.to(dtype if dtype is not None else torch.get_default_dtype())


__all__ = ["ricker"]
