"""Set-up of one acoustic call: argument checks, padding into the CPML, coefficients and source/receiver indices."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..validation import check_field, check_locations, check_scalar
from . import _checks, _fd
from ._acoustic_kernels import _build_fast, _Fast, _Geometry
from ._acoustic_stencils import _build_ops, _Ops, _stencil
from .boundaries import Widths, dominant_frequency, pad_model, pml_widths

#: Smallest points-per-wavelength (of the highest significant source frequency) before a warning, per accuracy.
MIN_POINTS_PER_WAVELENGTH = {2: 10.0, 4: 6.0, 8: 4.0}


class _Setup(NamedTuple):
    v2dt2: torch.Tensor  # [batch, 1, H, W]
    gx: torch.Tensor | None
    gz: torch.Tensor | None
    amp: torch.Tensor  # [batch, shots, ns, nt] / dx^2 (and scaled for density)
    geom: _Geometry
    ops: _Ops
    widths: Widths
    batched: bool
    shape: tuple  # (batch, shots, H, W)
    fast: _Fast | None  # the strip kernel's layout, None: the plain full-grid kernel


def _check_amplitudes(source_amplitudes, v) -> torch.Tensor:
    if not isinstance(source_amplitudes, torch.Tensor):
        raise TypeError("source_amplitudes must be a torch.Tensor shaped [n_shots, n_sources_per_shot, nt], "
                        f"got {type(source_amplitudes).__name__}")
    if source_amplitudes.ndim not in (3, 4) or (source_amplitudes.ndim == 4 and v.ndim == 2):
        raise ValueError("source_amplitudes must be shaped [n_shots, n_sources_per_shot, nt] (or [batch, n_shots, "
                         f"n_sources_per_shot, nt] for a batch of models), got shape {tuple(source_amplitudes.shape)}")
    if not source_amplitudes.is_floating_point():
        raise TypeError(f"source_amplitudes must have a floating dtype, got {source_amplitudes.dtype}")
    if source_amplitudes.device != v.device:
        raise ValueError(f"source_amplitudes is on {source_amplitudes.device} but v is on {v.device}")
    if source_amplitudes.shape[-1] < 1:
        raise ValueError(f"source_amplitudes must have at least one time sample, got shape "
                         f"{tuple(source_amplitudes.shape)}")
    if not bool(torch.isfinite(source_amplitudes).all()):
        raise ValueError("source_amplitudes must be finite everywhere")
    return source_amplitudes.to(v.dtype)


def _flat_locations(name, loc, batch, n_shots, shape, widths, w_pad, device, batched) -> torch.Tensor:
    """Validate ``[n_shots, n, 2]`` (or ``[batch, n_shots, n, 2]``) locations; flat padded indices [batch, shots, n]."""
    if isinstance(loc, torch.Tensor) and loc.ndim == 4 and batched:
        if loc.shape[0] != batch:
            raise ValueError(f"{name} is given per model with {loc.shape[0]} models but v has a batch of {batch}")
        flat = check_locations(name, loc.reshape(-1, *loc.shape[2:]), None, shape, device)
        flat = flat.reshape(loc.shape)
    else:
        flat = check_locations(name, loc, None, shape, device)
        flat = flat.unsqueeze(0).expand(batch, *flat.shape)
    if flat.shape[1] != n_shots:
        raise ValueError(f"{name} has {flat.shape[1]} shots but source_amplitudes has {n_shots}")
    return ((flat[..., 0] + widths.top) * w_pad + flat[..., 1] + widths.left).contiguous()


def _setup(v, dx, dt, source_amplitudes, source_locations, receiver_locations, rho, pml_width, free_surface,
           accuracy, wavefield_every, pml_vmax=None, fast_kernel: bool = True) -> _Setup:
    """Check the arguments of :func:`probinv.physics.acoustic` and build everything its time loop needs.

    ``fast_kernel=False`` forces the plain full-grid kernel (``_setup(...).fast is None``).
    """
    check_field("v", v)
    dx = check_scalar("dx", dx)
    dt = check_scalar("dt", dt)
    accuracy = _fd.check_accuracy(accuracy)
    if not isinstance(free_surface, bool):
        raise TypeError(f"free_surface must be True or False, got {free_surface!r}")
    widths = pml_widths(pml_width, free_surface)
    batched = v.ndim == 3
    vb = v if batched else v.unsqueeze(0)
    batch, nz, nx = vb.shape
    amp = _check_amplitudes(source_amplitudes, v)
    if amp.ndim == 4 and amp.shape[0] != batch:
        raise ValueError(f"source_amplitudes is given per model with {amp.shape[0]} models but v has a batch of "
                         f"{batch}")
    amp = amp if amp.ndim == 4 else amp.unsqueeze(0).expand(batch, *amp.shape)
    n_shots = amp.shape[1]
    if rho is not None:
        check_field("rho", rho)
        if rho.shape[-2:] != v.shape[-2:] or (rho.ndim == 3 and rho.shape != vb.shape):
            raise ValueError(f"rho must have the shape of v {tuple(v.shape)} (or (nz, nx) for a batch), got "
                             f"{tuple(rho.shape)}")
        if rho.device != v.device:
            raise ValueError(f"rho is on {rho.device} but v is on {v.device}")
    h, w = nz + widths.top + widths.bottom, nx + widths.left + widths.right
    src_idx = _flat_locations("source_locations", source_locations, batch, n_shots, (nz, nx), widths, w, v.device,
                              batched)
    if src_idx.shape[-1] != amp.shape[2]:
        raise ValueError(f"source_locations has {src_idx.shape[-1]} sources per shot but source_amplitudes has "
                         f"{amp.shape[2]}")
    rec_idx = _flat_locations("receiver_locations", receiver_locations, batch, n_shots, (nz, nx), widths, w,
                              v.device, batched)
    vmax, vmin = float(v.detach().max()), float(v.detach().min())
    dt_max = _fd.max_stable_dt_second_order(vmax, dx, accuracy)
    _checks.check_dt(dt, dt_max, f"accuracy={accuracy}, dx = {dx:g} m and vmax = {vmax:g} m/s")
    fmax = _checks.significant_max_frequency(amp, dt)
    if fmax > 0:
        _checks.warn_points_per_wavelength(vmin, dx, fmax, MIN_POINTS_PER_WAVELENGTH[accuracy])
    if wavefield_every is not None and (isinstance(wavefield_every, bool) or not isinstance(wavefield_every, int)
                                        or wavefield_every < 1):
        raise ValueError(f"wavefield_every must be a positive int (snapshot every k steps), got {wavefield_every!r}")

    vp = pad_model(vb, widths).unsqueeze(1)  # [batch, 1, H, W]
    v2dt2 = vp.square() * dt ** 2
    scale = 1.0 / dx ** 2
    gx = gz = None
    if pml_vmax is None:
        vmax_b = [float(m) for m in vb.detach().flatten(1).max(1).values]
    else:
        vmax_b = [check_scalar("pml_vmax", pml_vmax)] * batch
    freq_b = [dominant_frequency(a, dt) for a in amp]
    ops = _build_ops(accuracy, dx, dt, (h, w), widths, vmax_b, freq_b, free_surface, v.dtype, v.device)
    if rho is not None:
        rb = rho if rho.ndim == 3 else rho.unsqueeze(0).expand(batch, nz, nx)
        lnr = pad_model(rb, widths).log().unsqueeze(1)
        # rho (1/rho)' = -(ln rho)': the density term of div(1/rho grad p) = (lap p - grad ln rho . grad p) / rho;
        # ln rho is extended by replication, so its top mirror never matters: zero halo, central differences
        gx = _stencil(lnr, ops.w1, -1)
        gz = _stencil(F.pad(lnr, (0, 0, len(ops.w1) // 2, len(ops.w1) // 2), mode="replicate"), ops.w1,
                      -2).narrow(-2, len(ops.w1) // 2, h)
    amp = amp * scale
    geom = _Geometry(src_idx, rec_idx, int(wavefield_every) if wavefield_every else 0,
                     (widths.top, widths.bottom, widths.left, widths.right))
    fast = _build_fast(ops, widths, h, w, geom, free_surface, nz) if fast_kernel else None
    return _Setup(v2dt2, gx, gz, amp, geom, ops, widths, batched, (batch, n_shots, h, w), fast)
