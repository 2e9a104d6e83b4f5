"""Physics-specific checks and warnings of the solvers (stability, sampling); the generic argument checks live in
:mod:`probinv.validation` and are re-exported here for the solvers."""
from __future__ import annotations

import math
import warnings

import torch

from ..validation import check_field as check_field
from ..validation import check_locations as check_locations
from ..validation import check_scalar as check_scalar


def check_dt(dt: float, dt_max: float, what: str) -> None:
    if dt > dt_max:
        raise ValueError(f"dt = {dt:.6g} s is unstable for {what}: the largest stable dt is {dt_max:.6g} s "
                         f"(reduce dt or coarsen nothing else: the limit scales with dx / vmax)")


def warn_points_per_wavelength(vmin: float, dx: float, fmax: float, minimum: float, stacklevel: int = 3) -> float:
    """Warn when the grid has fewer than ``minimum`` points per shortest wavelength ``vmin / fmax``."""
    ppw = vmin / (fmax * dx)
    if ppw < minimum:
        warnings.warn(f"only {ppw:.2f} grid points per minimum wavelength (vmin = {vmin:g} m/s, "
                      f"fmax = {fmax:g} Hz, dx = {dx:g} m); at least {minimum:g} are needed for accurate results: "
                      f"reduce dx or the source frequency", UserWarning, stacklevel=stacklevel)
    return ppw


def significant_max_frequency(source_amplitudes: torch.Tensor, dt: float, threshold: float = 0.01) -> float:
    """Highest frequency (Hz) where the mean amplitude spectrum of the sources exceeds ``threshold`` of its peak."""
    x = source_amplitudes.detach().reshape(-1, source_amplitudes.shape[-1]).to(torch.float64)
    nt = x.shape[-1]
    nfft = max(2 * nt, 64)
    spec = torch.fft.rfft(x, n=nfft).abs().mean(0)
    if float(spec.max()) == 0:
        return 0.0
    above = torch.nonzero(spec >= threshold * spec.max()).flatten()
    return float(above.max()) / (nfft * dt)
