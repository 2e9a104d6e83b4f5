"""Argument checks shared by the solvers: each raises an error naming the argument, its value and what is valid."""
from __future__ import annotations

import math
import warnings

import torch


def check_scalar(name: str, value, *, positive: bool = True) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_field(name: str, field, *, positive: bool = True, allow_zero: bool = False) -> torch.Tensor:
    """A model field: a floating tensor ``[nz, nx]`` or ``[batch, nz, nx]``, finite, and positive if asked."""
    if not isinstance(field, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped (nz, nx) or (batch, nz, nx), got {type(field).__name__}")
    if field.ndim not in (2, 3):
        raise ValueError(f"{name} must be shaped (nz, nx) or (batch, nz, nx), got shape {tuple(field.shape)}")
    if not field.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {field.dtype}")
    field_d = field.detach()
    if not bool(torch.isfinite(field_d).all()):
        n_bad = int((~torch.isfinite(field_d)).sum())
        raise ValueError(f"{name} must be finite everywhere, got {n_bad} NaN/inf values")
    if positive:
        fmin = float(field_d.min())
        if fmin < 0 or (fmin == 0 and not allow_zero):
            raise ValueError(f"{name} must be {'>= 0' if allow_zero else 'positive'} everywhere, got minimum {fmin}")
    return field


def check_locations(name: str, locations, n_shots: int | None, shape: tuple[int, int], device) -> torch.Tensor:
    """Integer grid locations ``[n_shots, n_per_shot, 2]`` of (z, x) indices inside a grid of ``shape``."""
    if not isinstance(locations, torch.Tensor):
        raise TypeError(f"{name} must be an int64 torch.Tensor shaped [n_shots, n_per_shot, 2], "
                        f"got {type(locations).__name__}")
    if locations.ndim != 3 or locations.shape[-1] != 2:
        raise ValueError(f"{name} must be shaped [n_shots, n_per_shot, 2] with (z, x) grid indices, "
                         f"got shape {tuple(locations.shape)}")
    if locations.is_floating_point() or locations.is_complex() or locations.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer grid indices (int64), got dtype {locations.dtype}")
    if n_shots is not None and locations.shape[0] != n_shots:
        raise ValueError(f"{name} has {locations.shape[0]} shots but source_amplitudes has {n_shots}")
    if locations.device != torch.device(device) and not (locations.device.type == torch.device(device).type):
        raise ValueError(f"{name} is on {locations.device} but the model is on {device}")
    nz, nx = shape
    if locations.numel():
        z, x = locations[..., 0], locations[..., 1]
        bad = (z < 0) | (z >= nz) | (x < 0) | (x >= nx)
        if bool(bad.any()):
            idx = torch.nonzero(bad)[0].tolist()
            zb, xb = int(z[idx[0], idx[1]]), int(x[idx[0], idx[1]])
            raise ValueError(f"{name}[{idx[0]}, {idx[1]}] = (z={zb}, x={xb}) is outside the model grid: "
                             f"valid indices are 0 <= z < {nz}, 0 <= x < {nx}")
    return locations.to(torch.int64)


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
