"""Argument checks shared by every floor of probinv.

Each check raises an error that names the argument, the value it got and what would be valid: ``TypeError`` for a
value of the wrong kind, ``ValueError`` for a value of the right kind out of range. Checks return the value in its
canonical form (``float``, ``int``, ``int64`` tensor ...), so that a caller writes ``dx = check_scalar("dx", dx)``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "check_choice", "check_field", "check_int", "check_locations", "check_positive", "check_scalar", "check_shape",
]


def check_scalar(name: str, value, *, positive: bool = True) -> float:
    """A real number (a Python or numpy scalar, or a one-element tensor); positive and finite unless told otherwise.

    ``TypeError`` for a non-number (``bool`` and ``str`` included), ``ValueError`` for a non-finite value or, with
    ``positive=True``, one ``<= 0``.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic) and not isinstance(value, np.bool_):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a {'positive ' if positive else ''}finite number, got {value!r}")
    return float(value)


def check_int(name: str, value, minimum: int = 1) -> int:
    """An integer ``>= minimum`` (Python or numpy; ``bool`` is refused). Always ``ValueError``, with the range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_choice(name: str, value, valid) -> object:
    """One of the values in ``valid``."""
    if value not in tuple(valid):
        raise ValueError(f"{name} must be one of {', '.join(repr(v) for v in valid)}, got {value!r}")
    return value


def check_positive(name: str, value) -> None:
    """A positive finite number, or a floating tensor that is positive and finite everywhere (e.g. a noise std)."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor or a positive number, got dtype {value.dtype}")
        if not bool(torch.isfinite(value).all()) or bool((value <= 0).any()):
            raise ValueError(f"{name} must be positive and finite everywhere, got minimum {float(value.min())}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number or a tensor, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def check_shape(shape, name: str = "shape") -> tuple[int, int]:
    """A grid shape ``(nz, nx)`` of positive integers."""
    try:
        nz, nx = shape
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (nz, nx) of positive integers, got {shape!r}") from None
    for label, n in (("nz", nz), ("nx", nx)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name} must be a pair (nz, nx) of positive integers, got {label} = {n!r} in {shape!r}")
    return int(nz), int(nx)


def check_field(name: str, field, *, positive: bool = True, allow_zero: bool = False) -> torch.Tensor:
    """A model field: a floating tensor ``[nz, nx]`` or ``[batch, nz, nx]``, finite, and positive if asked.

    The message of a bad value says how many values are bad and where the first one is (grid indices).
    """
    if not isinstance(field, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped (nz, nx) or (batch, nz, nx), got {type(field).__name__}")
    if field.ndim not in (2, 3):
        raise ValueError(f"{name} must be shaped (nz, nx) or (batch, nz, nx), got shape {tuple(field.shape)}")
    if not field.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {field.dtype}")
    field_d = field.detach()
    finite = torch.isfinite(field_d)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        where = tuple(torch.nonzero(~finite)[0].tolist())
        raise ValueError(f"{name} must be finite everywhere, got {n_bad} NaN/inf values (the first at index {where})")
    if positive:
        bad = field_d < 0 if allow_zero else field_d <= 0
        if bool(bad.any()):
            where = tuple(torch.nonzero(bad)[0].tolist())
            raise ValueError(f"{name} must be {'>= 0' if allow_zero else 'positive'} everywhere, got minimum "
                             f"{float(field_d.min())} ({int(bad.sum())} values; the first at index {where})")
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
    if locations.device.type != torch.device(device).type:
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
