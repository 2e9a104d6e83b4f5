"""Set-up of one elastic call: argument checks shared by SH and P-SV, layer widths, indices and CPML profiles."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..validation import check_locations, check_scalar
from . import _checks
from ._fd import STAGGERED_FIRST_DERIVATIVE, check_accuracy, max_stable_dt_staggered
from .boundaries import Widths, cpml_profile, dominant_frequency, pml_widths

#: Minimum grid points per shortest (S) wavelength below which a warning is issued, per spatial order.
MIN_POINTS_PER_WAVELENGTH = {2: 10.0, 4: 6.0, 8: 4.0}


class _Setup(NamedTuple):
    batched: bool
    widths: Widths
    coeffs: tuple
    freq: float
    src_idx: torch.Tensor  # [1, n_shots, n_src] flat indices in the padded grid
    rec_idx: torch.Tensor  # [1, n_shots, n_rec]
    padded_shape: tuple


def _as_batch(field: torch.Tensor) -> torch.Tensor:
    return field if field.ndim == 3 else field.unsqueeze(0)


def _common_checks(fields: dict, dx, dt, source_amplitudes, source_locations, receiver_locations, pml_width,
                   free_surface, accuracy, checkpoint_every, return_wavefield, vmax: float, vmin: float) -> _Setup:
    ref_name, ref = next(iter(fields.items()))
    for name, f in fields.items():
        if f.shape != ref.shape:
            raise ValueError(f"{name} has shape {tuple(f.shape)} but {ref_name} has shape {tuple(ref.shape)}: "
                             f"all model fields must have the same shape")
        if f.dtype != ref.dtype or f.device != ref.device:
            raise ValueError(f"{name} is {f.dtype} on {f.device} but {ref_name} is {ref.dtype} on {ref.device}: "
                             f"all model fields must share dtype and device")
    dx = check_scalar("dx", dx)
    dt = check_scalar("dt", dt)
    accuracy = check_accuracy(accuracy)
    if not isinstance(free_surface, bool):
        raise TypeError(f"free_surface must be True or False, got {free_surface!r}")
    if not isinstance(return_wavefield, bool):
        raise TypeError(f"return_wavefield must be True or False, got {return_wavefield!r}")
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be None or a positive int number of time steps, "
                         f"got {checkpoint_every!r}")
    widths = pml_widths(pml_width, free_surface)
    if not isinstance(source_amplitudes, torch.Tensor):
        raise TypeError(f"source_amplitudes must be a torch.Tensor shaped [n_shots, n_sources_per_shot, nt], "
                        f"got {type(source_amplitudes).__name__}")
    if source_amplitudes.ndim != 3 or source_amplitudes.shape[-1] < 1:
        raise ValueError(f"source_amplitudes must be shaped [n_shots, n_sources_per_shot, nt] with nt >= 1, "
                         f"got shape {tuple(source_amplitudes.shape)}")
    if source_amplitudes.dtype != ref.dtype or source_amplitudes.device != ref.device:
        raise ValueError(f"source_amplitudes is {source_amplitudes.dtype} on {source_amplitudes.device} but the "
                         f"model is {ref.dtype} on {ref.device}")
    if not bool(torch.isfinite(source_amplitudes).all()):
        raise ValueError("source_amplitudes must be finite, got NaN/inf values")
    n_shots = source_amplitudes.shape[0]
    nz, nx = ref.shape[-2:]
    src = check_locations("source_locations", source_locations, n_shots, (nz, nx), ref.device)
    if src.shape[1] != source_amplitudes.shape[1]:
        raise ValueError(f"source_locations has {src.shape[1]} sources per shot but source_amplitudes has "
                         f"{source_amplitudes.shape[1]}")
    rec = check_locations("receiver_locations", receiver_locations, n_shots, (nz, nx), ref.device)
    dt_max = max_stable_dt_staggered(vmax, dx, accuracy)
    _checks.check_dt(dt, dt_max, f"the staggered scheme of accuracy {accuracy} with vmax = {vmax:g} m/s and "
                                 f"dx = {dx:g} m")
    fmax = _checks.significant_max_frequency(source_amplitudes, dt)
    if fmax > 0 and vmin > 0:
        _checks.warn_points_per_wavelength(vmin, dx, fmax, MIN_POINTS_PER_WAVELENGTH[accuracy])
    nzp, nxp = nz + widths.top + widths.bottom, nx + widths.left + widths.right

    def flat(loc):
        return ((loc[..., 0] + widths.top) * nxp + loc[..., 1] + widths.left).unsqueeze(0)

    return _Setup(ref.ndim == 3, widths, STAGGERED_FIRST_DERIVATIVE[accuracy],
                  dominant_frequency(source_amplitudes, dt), flat(src), flat(rec), (nzp, nxp))


def _profiles(setup: _Setup, dx, dt, vmax: torch.Tensor, ref):
    """CPML ``(a, b)`` per axis (``z``/``x``) and node type (``0`` integer, ``h`` half points).

    Each model of a batch gets the damping of its own maximum speed (``vmax`` [B]), so that a batch gives exactly
    the result of separate calls. Shapes ``[B, 1, NZ, 1]`` (z) and ``[B, 1, 1, NX]`` (x).
    """
    nzp, nxp = setup.padded_shape
    w = setup.widths
    kw = dict(dtype=ref.dtype, device=ref.device)
    out = {}
    for name, n, ws in (("z", nzp, (w.top, w.bottom)), ("x", nxp, (w.left, w.right))):
        for shift, tag in ((0.0, "0"), (0.5, "h")):
            ps = [cpml_profile(n, ws, dx, dt, float(v), setup.freq, shift=shift, **kw) for v in vmax.tolist()]
            shape = (-1, 1, n, 1) if name == "z" else (-1, 1, 1, n)
            out[name + tag] = (torch.stack([p.a for p in ps]).reshape(shape),
                               torch.stack([p.b for p in ps]).reshape(shape))
    return out
