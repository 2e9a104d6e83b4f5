"""Argument checks specific to the fields package (dtype, mean, bounds, n_modes, dtype/device of inputs).

The generic checks (positive scalars, grid shapes) come from :mod:`probinv.validation`.
"""
from __future__ import annotations

import numpy as np
import torch


def _resolve_dtype(dtype) -> torch.dtype:
    """``dtype`` or torch's default, which must be a real floating dtype (``TypeError`` otherwise)."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype.is_complex:
        raise TypeError(f"dtype must be a real floating torch dtype (torch.float32 or torch.float64), got {dtype!r}")
    return dtype


def _check_mean(mean, shape, dtype, device) -> torch.Tensor:
    """``mean`` as a ``(nz, nx)`` tensor (a number or a broadcastable tensor/array)."""
    if isinstance(mean, (bool, str)) or mean is None:
        raise TypeError(f"mean must be a number or a tensor broadcastable to shape {shape}, got {mean!r}")
    m = torch.as_tensor(mean, dtype=dtype, device=device)
    try:
        m = torch.broadcast_to(m, shape).clone()
    except RuntimeError:
        raise ValueError(f"mean must be a number or broadcastable to shape {shape}, "
                         f"got shape {tuple(m.shape)}") from None
    if not bool(torch.isfinite(m).all()):
        raise ValueError("mean must be finite everywhere")
    return m


def _check_bounds(bounds, shape, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``bounds = (lo, hi)`` as two ``(nz, nx)`` tensors, finite, with ``lo < hi`` everywhere."""
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (lo, hi), got {bounds!r}") from None
    out = []
    for name, b in (("lo", lo), ("hi", hi)):
        if isinstance(b, (bool, str)) or b is None:
            raise TypeError(f"bounds {name} must be a number or a tensor broadcastable to {shape}, got {b!r}")
        t = torch.as_tensor(b, dtype=dtype, device=device)
        try:
            t = torch.broadcast_to(t, shape).clone()
        except RuntimeError:
            raise ValueError(f"bounds {name} must be broadcastable to shape {shape}, "
                             f"got shape {tuple(t.shape)}") from None
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"bounds {name} must be finite, got {b!r}")
        out.append(t)
    lo_t, hi_t = out
    if not bool((lo_t < hi_t).all()):
        raise ValueError(f"bounds must satisfy lo < hi everywhere, got lo={lo!r}, hi={hi!r}")
    return lo_t, hi_t


def _check_n_modes(n_modes, nz: int, nx: int) -> int:
    """Return the number of Karhunen-Loeve modes to keep: ``n_modes`` in ``[1, nz * nx]``, or ``nz * nx`` if None."""
    n_pts = nz * nx
    if n_modes is None:
        return n_pts
    if isinstance(n_modes, bool) or not isinstance(n_modes, (int, np.integer)) or n_modes < 1:
        raise ValueError(f"n_modes must be a positive integer, got {n_modes!r}")
    if n_modes > n_pts:
        raise ValueError(f"n_modes = {n_modes} is larger than the grid: a {nz} x {nx} grid has at most "
                         f"{n_pts} modes")
    return int(n_modes)


def _check_like(name: str, x: torch.Tensor, ref: torch.Tensor, owner: str) -> None:
    """Check that ``x`` is a tensor with the dtype and device of the buffer ``ref`` of the prior ``owner``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the {owner} holds {ref.dtype} buffers: build it with "
                        f"dtype={x.dtype} or call .to({x.dtype})")
    if x.device != ref.device:
        raise ValueError(f"{name} is on {x.device} but the {owner} is on {ref.device}: call .to({str(x.device)!r})")


def _outside_message(field: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> str:
    """Say how many values of ``field`` lie outside ``(lo, hi)``, for the error of an inverse map."""
    bad = ~((field > lo) & (field < hi))
    return (f"field must lie strictly inside the bounds (lo, hi) to be inverted: {int(bad.sum())} of {field.numel()} "
            f"values are outside (field range [{float(field.min()):g}, {float(field.max()):g}], bounds "
            f"[{float(lo.min()):g}, {float(hi.max()):g}])")
