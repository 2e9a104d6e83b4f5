r"""Time-domain elastic solvers: SH (scalar shear waves) and P-SV (staggered-grid velocity-stress).

Both are pure, differentiable functions of tensors: gradients with respect to the models (and the source amplitudes)
come from reverse-mode automatic differentiation through the time loop.

Grid and staggering
-------------------
Fields are ``(nz, nx)`` (or ``(batch, nz, nx)``), z first and increasing downwards, spacing ``dx`` in both
directions. The convolutional PML is added *outside* the model (:mod:`probinv.physics.boundaries`), so every model
index is a valid location and the physical domain is exactly the grid passed in. Positions of the discrete fields,
in cells, relative to the integer model index ``(z, x)`` that stores them:

=======================  ====================  ====================
field                    SH                    P-SV
=======================  ====================  ====================
``u`` (SH displacement)  ``(z, x)``            --
``sigma_xy``             ``(z, x + 1/2)``      --
``sigma_zy``             ``(z + 1/2, x)``      --
``sigma_xx, sigma_zz``   --                    ``(z, x)``
``v_x``                  --                    ``(z, x + 1/2)``
``v_z``                  --                    ``(z + 1/2, x)``
``sigma_xz``             --                    ``(z + 1/2, x + 1/2)``
=======================  ====================  ====================

A source or receiver at model index ``(z, x)`` acts on the node of its quantity stored at that index: explosive
sources and pressure receivers exactly at ``(z, x)``, ``force_x`` / ``vx`` half a cell to the right (+x) and
``force_z`` / ``vz`` half a cell below (+z). Density is averaged arithmetically onto the velocity nodes, the shear
modulus harmonically onto the shear-stress nodes (0 if any neighbour is a fluid).

Time sampling
-------------
Sample ``n`` of every source and receiver trace is the value at ``t = n dt`` (DESIGN.md section 2). The P-SV
velocities live at half steps; a velocity trace sample ``n`` is the mean of the velocities at ``(n - 1/2) dt`` and
``(n + 1/2) dt``, and the explosive source enters the stress update at the half step as the mean of samples ``n``
and ``n + 1``.

Free surface
------------
``free_surface=True`` removes the top absorbing layer and puts a stress-free surface on model row ``z = 0``:

* SH: the surface passes through the ``u`` nodes of row 0; ``u`` is mirrored symmetrically and ``sigma_zy``
  antisymmetrically about it (exact image of a full space, so ``sigma_zy = 0`` at the surface).
* P-SV: stress imaging (Levander 1988; Robertsson 1996): the surface passes through the ``sigma_xx, sigma_zz, v_x``
  nodes of row 0; ``sigma_zz = 0`` there and ``sigma_zz``, ``sigma_xz`` are mirrored antisymmetrically; the
  velocities above the surface are zero (vacuum) and ``sigma_xx`` at the surface uses the modulus
  ``4 mu (lambda + mu) / (lambda + 2 mu)`` that follows from ``sigma_zz = 0``.

Gradients and memory
--------------------
Every step is linear in the wavefield, with the medium coefficients (buoyancy ``dt / rho`` on the velocity nodes,
``dt (lambda + 2 mu)``, ``dt lambda``, ``dt mu`` on the stress nodes; ``mu`` and ``dt / rho`` for SH) as pointwise
multipliers. The time loop runs inside one autograd node per block of steps whose backward is the exact transpose
of the discrete forward (the discrete adjoint: staggered ``D+`` and ``-D-`` are transposes, CPML memory variables
and free-surface images transposed explicitly), so reverse-mode gradients are exact to rounding while only the
fields that multiply a coefficient are kept: 5 wavefield-sized arrays per step for P-SV, 3 for SH (4 bytes each
per padded cell in float32). ``checkpoint_every=k`` keeps only the state at every k-th step and recomputes each
block during the backward pass (:func:`torch.utils.checkpoint.checkpoint`). With ``return_wavefield=True`` plain
autograd through every step is used instead (slower, much more memory). The CPML damping depends on the model's
maximum speed, which is treated as a constant (no gradient flows through the absorbing layer's strength).

References
----------
Robertsson, J. O. A. (1996). A numerical free-surface condition for elastic/viscoelastic finite-difference modeling
in the presence of topography. Geophysics 61(6), 1921-1934.
Virieux, J. (1986). P-SV wave propagation in heterogeneous media: velocity-stress finite-difference method.
Geophysics 51(4), 889-901.
Levander, A. R. (1988). Fourth-order finite-difference P-SV seismograms. Geophysics 53(11), 1425-1436.
Komatitsch, D. & Martin, R. (2007). An unsplit convolutional perfectly matched layer improved at grazing incidence
for the seismic wave equation. Geophysics 72(5), SM155-SM167.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from ..validation import check_field, check_locations, check_scalar
from . import _checks
from ._fd import STAGGERED_FIRST_DERIVATIVE, check_accuracy, max_stable_dt_staggered
from .boundaries import Widths, cpml_profile, dominant_frequency, pad_model, pml_widths

#: Minimum grid points per shortest (S) wavelength below which a warning is issued, per spatial order.
MIN_POINTS_PER_WAVELENGTH = {2: 10.0, 4: 6.0, 8: 4.0}

SOURCE_TYPES = ("explosive", "force_z", "force_x")
RECEIVER_COMPONENTS = ("vz", "vx", "pressure")
#: Testing switch: plain autograd through every step instead of the hand-written adjoint (the reference version).
_REFERENCE = False


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
# argument handling
# ----------------------------------------------------------------------------------------------------------------
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


class _Spec(NamedTuple):
    """One solver's time step and its adjoint (closures over the padded coefficients)."""

    step: object  # (n, state, save) -> (state, record [B, S, R], snapshot or None)
    adjoint: object  # (n, lam_state, g_record, saved, g_coeffs, g_amps) -> lam_state (accumulates the grads)
    n_save: int  # number of fields saved per step for the parameter gradients
    n_rec: int


class _TimeBlock(torch.autograd.Function):
    """Steps ``n0 .. n1-1`` as one autograd node with a hand-written backward.

    Each step is linear in the wavefield state with the (padded) medium coefficients as pointwise multipliers. The
    forward saves, per step, only the fields that multiply a coefficient (``spec.n_save``); the backward runs the
    exact transpose of each step backwards in time (the discrete adjoint) and accumulates the coefficient gradients.
    This is reverse-mode differentiation of the time loop, without thousands of small autograd nodes. It is
    differentiable once: ``create_graph=True`` through it raises an error instead of returning wrong second
    derivatives.
    """

    @staticmethod
    def forward(ctx, spec, n0, n1, amps, coeffs_n, *tensors):
        coeffs, state = tensors[:coeffs_n], tensors[coeffs_n:]
        shape = state[0].shape
        nsteps = n1 - n0
        need = any(ctx.needs_input_grad[3:])
        saves = state[0].new_empty((nsteps, spec.n_save) + tuple(shape)) if need else None
        recs = state[0].new_empty(shape[:2] + (spec.n_rec, nsteps))
        for i, n in enumerate(range(n0, n1)):
            state, rec, _ = spec.step(n, state, saves[i] if need else None)
            recs[..., i] = rec
        ctx.spec, ctx.n0, ctx.n1, ctx.coeffs_n = spec, n0, n1, coeffs_n
        ctx.amps_shape = amps.shape
        if need:
            ctx.save_for_backward(saves, *coeffs)
        return (*state, recs)

    @staticmethod
    @once_differentiable  # second derivatives would need the adjoint of the adjoint: refuse them loudly
    def backward(ctx, *grads):
        spec, n0, n1 = ctx.spec, ctx.n0, ctx.n1
        saves, *coeffs = ctx.saved_tensors
        g_rec = grads[-1]
        shape = saves.shape[2:]
        lam = tuple(g if g is not None else saves.new_zeros(shape) for g in grads[:-1])
        if g_rec is None:
            g_rec = saves.new_zeros(shape[:2] + (spec.n_rec, n1 - n0))
        g_coeffs = [saves.new_zeros(shape) for _ in coeffs]
        g_amps = saves.new_zeros(shape[:2] + ctx.amps_shape[2:])
        for i in range(n1 - n0 - 1, -1, -1):
            lam = spec.adjoint(n0 + i, lam, g_rec[..., i], saves[i], g_coeffs, g_amps)
        g_coeffs = [g.sum_to_size(c.shape) for g, c in zip(g_coeffs, coeffs, strict=True)]
        return (None, None, None, g_amps.sum_to_size(ctx.amps_shape), None, *g_coeffs, *lam)


def _run(spec: _Spec, coeffs: tuple, amps: torch.Tensor, state: tuple, nt: int, checkpoint_every: int | None,
         autograd_steps: bool):
    """All time steps; returns the records [B, S, R, nt] and the snapshots (list, autograd_steps only).

    ``autograd_steps``: plain PyTorch autograd through every step (the reference implementation, also used for
    ``return_wavefield``); otherwise :class:`_TimeBlock` nodes, ``checkpoint_every`` steps each under
    :func:`torch.utils.checkpoint.checkpoint` when asked.
    """
    if autograd_steps:
        def block(n0, n1, *st):
            recs, snaps = [], []
            for n in range(n0, n1):
                st, r, snap = spec.step(n, st, None)
                recs.append(r)
                snaps.append(snap)
            return st, torch.stack(recs, dim=-1), snaps

        if checkpoint_every is None or not torch.is_grad_enabled():
            _, recs, snaps = block(0, nt, *state)
            return recs, snaps
        recs, snaps = [], []
        for n0 in range(0, nt, checkpoint_every):
            state, r, sn = checkpoint(block, n0, min(nt, n0 + checkpoint_every), *state, use_reentrant=False)
            recs.append(r)
            snaps.extend(sn)
        return torch.cat(recs, dim=-1), snaps

    k = len(coeffs)
    if checkpoint_every is None or not torch.is_grad_enabled():
        out = _TimeBlock.apply(spec, 0, nt, amps, k, *coeffs, *state)
        return out[-1], []
    recs = []
    for n0 in range(0, nt, checkpoint_every):
        out = checkpoint(_TimeBlock.apply, spec, n0, min(nt, n0 + checkpoint_every), amps, k, *coeffs, *state,
                         use_reentrant=False)
        state = out[:-1]
        recs.append(out[-1])
    return torch.cat(recs, dim=-1), []


def _strip_batch(out: torch.Tensor, batched: bool) -> torch.Tensor:
    return out if batched else out[0]


# ----------------------------------------------------------------------------------------------------------------
# SH
# ----------------------------------------------------------------------------------------------------------------
def sh(vs: torch.Tensor, rho: torch.Tensor, dx: float, dt: float, source_amplitudes: torch.Tensor,
       source_locations: torch.Tensor, receiver_locations: torch.Tensor, *, pml_width=20, free_surface: bool = False,
       accuracy: int = 4, checkpoint_every: int | None = None, return_wavefield: bool = False):
    r"""SH (anti-plane shear) waves: :math:`\rho\,u_{tt} - \nabla\cdot(\mu \nabla u) = s`, :math:`\mu = \rho v_s^2`.

    Solved as the equivalent staggered velocity-stress system
    :math:`\rho\,\dot v = \partial_x \sigma_{xy} + \partial_z \sigma_{zy} + s`,
    :math:`\sigma_{xy} = \mu\,\partial_x u`, :math:`\sigma_{zy} = \mu\,\partial_z u`, :math:`\dot u = v`
    (leapfrog in time, staggered stencils of order ``accuracy`` in space).

    Parameters
    ----------
    vs : Tensor (nz, nx) or (batch, nz, nx)
        Shear-wave speed in m/s, > 0 everywhere.
    rho : Tensor, same shape as ``vs``
        Density in kg/m^3, > 0.
    dx : float
        Grid spacing in m (both directions).
    dt : float
        Time step in s; must satisfy the CFL limit ``max_stable_dt_staggered(max vs, dx, accuracy)``.
    source_amplitudes : Tensor [n_shots, n_sources_per_shot, nt]
        Force density time functions ``f`` (N/m per unit length out of plane); the point source is
        ``s = f(t) delta(x - x_s)`` with the delta discretised as ``1 / dx^2`` on its cell. Sample ``n`` is at
        ``t = n dt``.
    source_locations, receiver_locations : int64 Tensor [n_shots, n, 2]
        ``(z, x)`` model indices of the sources / receivers (the ``u`` nodes).
    pml_width : int or 4 ints (top, bottom, left, right)
        CPML thickness in cells, added outside the model.
    free_surface : bool
        Stress-free surface through row 0 (then no top layer).
    accuracy : {2, 4, 8}
        Spatial order of the staggered stencils.
    checkpoint_every : int, optional
        Recompute the forward in blocks of this many steps during backward (gradient checkpointing).
    return_wavefield : bool
        Also return the displacement at every time step on the model grid.

    Returns
    -------
    Tensor [n_shots, n_receivers, nt] (or [batch, n_shots, n_receivers, nt] for a batch of models)
        Displacement ``u`` (m) at the receivers at ``t = n dt``. In a homogeneous medium
        ``u = G(r, t; v_s) * f / mu`` with ``G`` the 2D Green's function of DESIGN.md section 2.
    wavefield : Tensor [(batch,) n_shots, nt, nz, nx]
        Only if ``return_wavefield``: ``u`` at every sample.
    """
    check_field("vs", vs)
    check_field("rho", rho)
    vmax = float(vs.detach().max())
    setup = _common_checks({"vs": vs, "rho": rho}, dx, dt, source_amplitudes, source_locations,
                           receiver_locations, pml_width, free_surface, accuracy, checkpoint_every,
                           return_wavefield, vmax, float(vs.detach().min()))
    dx, dt = float(dx), float(dt)
    w = setup.widths
    vs_p = pad_model(_as_batch(vs), w).unsqueeze(1)  # [B, 1, NZ, NX]
    rho_p = pad_model(_as_batch(rho), w).unsqueeze(1)
    mu = rho_p * vs_p ** 2
    mu_x = _average_next(mu, -1, harmonic=True)
    mu_z = _average_next(mu, -2, harmonic=True)
    buoy_dt = dt / rho_p
    prof = _profiles(setup, dx, dt, _as_batch(vs).detach().amax(dim=(-2, -1)), vs)
    c = setup.coeffs
    m = len(c)
    inv_dx = 1.0 / dx
    nzp, nxp = setup.padded_shape
    n_shots, _, nt = source_amplitudes.shape
    bsz = vs_p.shape[0]
    # force density f / dx^2, and the dt / rho of its node, applied in the velocity update
    src_scale = torch.gather(buoy_dt.reshape(bsz, 1, -1).expand(-1, n_shots, -1), 2,
                             setup.src_idx.expand(bsz, -1, -1))
    amps = source_amplitudes.unsqueeze(0) * (src_scale / dx ** 2).unsqueeze(-1)  # [B, S, n_src, nt]
    shape = (bsz, n_shots, nzp, nxp)
    fs = free_surface
    t, lf = w.top, w.left
    s_ux, s_uz = _strips(prof["xh"], -1), _strips(prof["zh"], -2)
    s_sx, s_sz = _strips(prof["x0"], -1), _strips(prof["z0"], -2)
    groups = (s_ux, s_uz, s_sx, s_sz)
    psi0 = [p for g in groups for p in _strip_zeros(g, shape, vs_p)]
    state = (vs_p.new_zeros(shape), vs_p.new_zeros(shape), *psi0)  # u, v, then the CPML memory strips
    cuts = [2]
    for g in groups:
        cuts.append(cuts[-1] + len(g))
    rec_idx, src_idx = setup.rec_idx, setup.src_idx
    nz, nx = vs.shape[-2:]

    def split(st):
        return [list(st[cuts[i]:cuts[i + 1]]) for i in range(4)]

    def step(n, state, save):
        u, v = state[:2]
        p_ux, p_uz, p_sx, p_sz = split(state)
        rec = _gather(u, rec_idx)
        snap = u[..., t:t + nz, lf:lf + nx] if return_wavefield else None
        ex, p_ux = _stretch(_d_plus(u, -1, c, inv_dx), s_ux, p_ux)
        ez, p_uz = _stretch(_d_plus(u, -2, c, inv_dx, _image_symmetric_integer(u, m) if fs else None), s_uz, p_uz)
        dsx, p_sx = _stretch(_d_minus(mu_x * ex, -1, c, inv_dx), s_sx, p_sx)
        sz = mu_z * ez
        dsz, p_sz = _stretch(_d_minus(sz, -2, c, inv_dx, _image_antisymmetric_half(sz, m) if fs else None), s_sz,
                             p_sz)
        div = dsx + dsz if save is None else torch.add(dsx, dsz, out=save[2])
        v = _inject(torch.addcmul(v, buoy_dt, div), src_idx, amps[..., n])
        u = torch.add(u, v, alpha=dt)
        if save is not None:
            save[0], save[1] = ex, ez
        return (u, v, *p_ux, *p_uz, *p_sx, *p_sz), rec, snap

    neg_mu_x, neg_mu_z = -mu_x.detach(), -mu_z.detach()

    def adjoint(n, lam, g_rec, saved, g_co, g_amps):
        lu, lv = lam[:2]
        l_ux, l_uz, l_sx, l_sz = split(lam)
        ex, ez, div = saved
        lv = torch.add(lv, lu, alpha=dt)
        g_amps[..., n] = _gather(lv, src_idx)
        g_co[2].addcmul_(lv, div)
        r = buoy_dt * lv
        ld_sx, l_sx = _stretch_t(r, s_sx, l_sx, inplace=False)
        ld_sz, l_sz = _stretch_t(r, s_sz, l_sz, inplace=True)
        # adjoint stresses: (D-)^T = -D+; carry the minus sign in the coefficients instead of negating fields
        nsx = _d_plus(ld_sx, -1, c, inv_dx)
        g_co[0].addcmul_(nsx, ex, value=-1.0)
        qx = neg_mu_x * nsx
        if fs:
            lsz = _d_minus_image_t(ld_sz, c, inv_dx, -1.0)
            g_co[1].addcmul_(lsz, ez)
            qz = mu_z * lsz
        else:
            nsz = _d_plus(ld_sz, -2, c, inv_dx)
            g_co[1].addcmul_(nsz, ez, value=-1.0)
            qz = neg_mu_z * nsz
        ld_ux, l_ux = _stretch_t(qx, s_ux, l_ux, inplace=True)
        ld_uz, l_uz = _stretch_t(qz, s_uz, l_uz, inplace=True)
        lu = lu - _d_minus(ld_ux, -1, c, inv_dx)
        lu = lu + _d_plus_image_t(ld_uz, c, inv_dx, 1.0) if fs else lu - _d_minus(ld_uz, -2, c, inv_dx)
        lu = _scatter_add_(lu, rec_idx, g_rec)
        return (lu, lv, *l_ux, *l_uz, *l_sx, *l_sz)

    spec = _Spec(step, adjoint, 3, rec_idx.shape[-1])
    recs, snaps = _run(spec, (mu_x, mu_z, buoy_dt), amps, state, nt, checkpoint_every,
                       return_wavefield or _REFERENCE)
    data = _strip_batch(recs, setup.batched)
    if return_wavefield:
        return data, _strip_batch(torch.stack(snaps, dim=2), setup.batched)
    return data


# ----------------------------------------------------------------------------------------------------------------
# P-SV
# ----------------------------------------------------------------------------------------------------------------
def psv(vp: torch.Tensor, vs: torch.Tensor, rho: torch.Tensor, dx: float, dt: float,
        source_amplitudes: torch.Tensor, source_locations: torch.Tensor, receiver_locations: torch.Tensor, *,
        source_type: str = "explosive", receiver_component: str = "vz", pml_width=20, free_surface: bool = False,
        accuracy: int = 4, checkpoint_every: int | None = None, return_wavefield: bool = False):
    r"""P-SV waves with the staggered-grid velocity-stress scheme (Virieux 1986; Levander 1988).

    .. math::
        \dot\sigma_{xx} = (\lambda + 2\mu)\,\partial_x v_x + \lambda\,\partial_z v_z + s_{xx}, \quad
        \dot\sigma_{zz} = \lambda\,\partial_x v_x + (\lambda + 2\mu)\,\partial_z v_z + s_{zz}, \quad
        \dot\sigma_{xz} = \mu\,(\partial_z v_x + \partial_x v_z),

        \rho\,\dot v_x = \partial_x \sigma_{xx} + \partial_z \sigma_{xz} + f_x, \quad
        \rho\,\dot v_z = \partial_x \sigma_{xz} + \partial_z \sigma_{zz} + f_z,

    with :math:`\mu = \rho v_s^2`, :math:`\lambda = \rho (v_p^2 - 2 v_s^2)` (paper 2, eqs. 40-41).

    Parameters
    ----------
    vp : Tensor (nz, nx) or (batch, nz, nx)
        P-wave speed in m/s, > 0, and > ``vs`` wherever ``vs > 0`` (``lambda + mu > 0``, which the 2D elastic energy
        needs to be positive; physical solids also have ``vp >= sqrt(4/3) vs``, which is not enforced).
    vs : Tensor, same shape
        S-wave speed in m/s, >= 0 (0: fluid, e.g. water; then P-SV reduces to acoustics with density).
    rho : Tensor, same shape
        Density in kg/m^3, > 0.
    dx : float
        Grid spacing in m.
    dt : float
        Time step in s; must satisfy ``dt <= max_stable_dt_staggered(max vp, dx, accuracy)``.
    source_amplitudes : Tensor [n_shots, n_sources_per_shot, nt]
        Source time functions, sample ``n`` at ``t = n dt``, each a point source with its delta discretised as
        ``1 / dx^2`` on its node. ``"explosive"``: stress-rate density added to both normal stresses,
        :math:`s_{xx} = s_{zz} = a(t)\,\delta(\mathbf x - \mathbf x_s)` (``a`` in N/s per m out of plane, i.e. a
        moment rate; positive = tensile stress increment); ``"force_z"`` / ``"force_x"``: force density
        :math:`f = a(t)\,\delta(\mathbf x - \mathbf x_s)` (``a`` in N/m) added to ``v_z`` / ``v_x``.
    source_locations, receiver_locations : int64 Tensor [n_shots, n, 2]
        ``(z, x)`` model indices; the quantity acts on / is read at its own staggered node stored at that index
        (module docstring): ``v_x`` at ``(z, x + 1/2)``, ``v_z`` at ``(z + 1/2, x)``, stresses at ``(z, x)``.
    source_type : {"explosive", "force_z", "force_x"}
    receiver_component : {"vz", "vx", "pressure"}
        Particle velocity (m/s, positive down for ``vz``) or pressure ``p = -(sigma_xx + sigma_zz) / 2`` (Pa).
    pml_width, free_surface, accuracy, checkpoint_every
        As in :func:`sh`. ``free_surface=True`` puts a stress-free surface through row 0 (module docstring).
    return_wavefield : bool
        Also return the recorded component on the model grid (at its own nodes) at every sample.

    Returns
    -------
    Tensor [n_shots, n_receivers, nt] (or [batch, n_shots, n_receivers, nt])
        The ``receiver_component`` at the receivers at ``t = n dt``.
    wavefield : Tensor [(batch,) n_shots, nt, nz, nx]
        Only if ``return_wavefield``.
    """
    if source_type not in SOURCE_TYPES:
        raise ValueError(f"source_type must be one of {SOURCE_TYPES}, got {source_type!r}")
    if receiver_component not in RECEIVER_COMPONENTS:
        raise ValueError(f"receiver_component must be one of {RECEIVER_COMPONENTS}, got {receiver_component!r}")
    check_field("vp", vp)
    check_field("vs", vs, allow_zero=True)
    check_field("rho", rho)
    if vp.shape == vs.shape:
        bad = (vs > 0) & (vp <= vs)
        if bool(bad.any()):
            i = torch.nonzero(bad)[0].tolist()
            raise ValueError(f"vp must exceed vs wherever vs > 0 (lambda + mu > 0 for a stable elastic medium), got "
                             f"vp = {float(vp[tuple(i)]):g} m/s <= vs = {float(vs[tuple(i)]):g} m/s at index "
                             f"{tuple(i)}")
    vmax = float(vp.detach().max())
    vs_pos = vs.detach()[vs.detach() > 0]
    vmin = float(vs_pos.min()) if vs_pos.numel() else float(vp.detach().min())
    setup = _common_checks({"vp": vp, "vs": vs, "rho": rho}, dx, dt, source_amplitudes, source_locations,
                           receiver_locations, pml_width, free_surface, accuracy, checkpoint_every,
                           return_wavefield, vmax, vmin)
    dx, dt = float(dx), float(dt)
    w = setup.widths
    vp_p = pad_model(_as_batch(vp), w).unsqueeze(1)
    vs_p = pad_model(_as_batch(vs), w).unsqueeze(1)
    rho_p = pad_model(_as_batch(rho), w).unsqueeze(1)
    mu = rho_p * vs_p ** 2
    lam2mu = rho_p * vp_p ** 2
    lam = lam2mu - 2 * mu
    fs = free_surface
    if fs:
        # sigma_zz = 0 at the surface row: eliminate d_z v_z from the sigma_xx update there
        surf = 4 * mu[..., :1, :] * (lam[..., :1, :] + mu[..., :1, :]) / lam2mu[..., :1, :]
        lam2mu_xx = torch.cat([surf, lam2mu[..., 1:, :]], dim=-2)
        lam_xx = torch.cat([torch.zeros_like(surf), lam[..., 1:, :]], dim=-2)
    else:
        lam2mu_xx, lam_xx = lam2mu, lam
    mu_xz = _harmonic([mu, _shift(mu, -1),
                       _shift(mu, -2), _shift(_shift(mu, -1), -2)])
    # moduli times dt: the stress update is sigma += (dt C) (strain rate)
    lam2mu_xx, lam_xx, lam, lam2mu, mu_xz = (dt * f for f in (lam2mu_xx, lam_xx, lam, lam2mu, mu_xz))
    bx_dt = dt / _average_next(rho_p, -1, harmonic=False)
    bz_dt = dt / _average_next(rho_p, -2, harmonic=False)
    prof = _profiles(setup, dx, dt, _as_batch(vp).detach().amax(dim=(-2, -1)), vp)
    c = setup.coeffs
    m = len(c)
    inv_dx = 1.0 / dx
    nzp, nxp = setup.padded_shape
    n_shots, _, nt = source_amplitudes.shape
    bsz = vp_p.shape[0]
    amps = source_amplitudes.unsqueeze(0) / dx ** 2  # [1, S, n_src, nt]
    if source_type == "explosive":
        # the stress update from t_n to t_{n+1} sees the source at the half step
        amps = 0.5 * (amps + F.pad(amps[..., 1:], (0, 1))) * dt
    else:
        bdt = bz_dt if source_type == "force_z" else bx_dt
        scale = torch.gather(bdt.reshape(bsz, 1, -1).expand(-1, n_shots, -1), 2, setup.src_idx.expand(bsz, -1, -1))
        amps = amps * scale.unsqueeze(-1)
    shape = (bsz, n_shots, nzp, nxp)
    t, lf = w.top, w.left
    nz, nx = vp.shape[-2:]
    surface_mask = None
    if fs:
        surface_mask = torch.ones((nzp, 1), dtype=vp.dtype, device=vp.device)
        surface_mask[0] = 0
    # CPML memory strips of dvx/dx, dvz/dz, dvx/dz, dvz/dx, dsxx/dx, dsxz/dz, dsxz/dx, dszz/dz
    groups = (_strips(prof["x0"], -1), _strips(prof["z0"], -2), _strips(prof["zh"], -2), _strips(prof["xh"], -1),
              _strips(prof["xh"], -1), _strips(prof["z0"], -2), _strips(prof["x0"], -1), _strips(prof["zh"], -2))
    s1, s2, s3, s4, s5, s6, s7, s8 = groups
    psi0 = [p for g in groups for p in _strip_zeros(g, shape, vp_p)]
    state = tuple(vp_p.new_zeros(shape) for _ in range(5)) + tuple(psi0)  # vx, vz, sxx, szz, sxz, strips
    cuts = [5]
    for g in groups:
        cuts.append(cuts[-1] + len(g))
    rec_idx, src_idx = setup.rec_idx, setup.src_idx
    rc = receiver_component

    def split(st):
        return [list(st[cuts[i]:cuts[i + 1]]) for i in range(8)]

    def step(n, state, save):
        vx, vz, sxx, szz, sxz = state[:5]
        p1, p2, p3, p4, p5, p6, p7, p8 = split(state)
        prs = -0.5 * (sxx + szz) if rc == "pressure" else None
        # velocities: t_{n-1/2} -> t_{n+1/2}
        d5, p5 = _stretch(_d_plus(sxx, -1, c, inv_dx), s5, p5)
        d6, p6 = _stretch(_d_minus(sxz, -2, c, inv_dx, _image_antisymmetric_half(sxz, m) if fs else None), s6, p6)
        d7, p7 = _stretch(_d_minus(sxz, -1, c, inv_dx), s7, p7)
        d8, p8 = _stretch(_d_plus(szz, -2, c, inv_dx, _image_antisymmetric_integer(szz, m) if fs else None), s8, p8)
        fx = d5 + d6 if save is None else torch.add(d5, d6, out=save[0])
        fz = d7 + d8 if save is None else torch.add(d7, d8, out=save[1])
        vx_old, vz_old = vx, vz
        vx = torch.addcmul(vx, bx_dt, fx)
        vz = torch.addcmul(vz, bz_dt, fz)
        if source_type == "force_x":
            vx = _inject(vx, src_idx, amps[..., n])
        elif source_type == "force_z":
            vz = _inject(vz, src_idx, amps[..., n])
        if rc == "pressure":
            rec, snap = _gather(prs, rec_idx), prs
        else:
            old, new = (vx_old, vx) if rc == "vx" else (vz_old, vz)
            rec = 0.5 * (_gather(old, rec_idx) + _gather(new, rec_idx))
            snap = 0.5 * (old + new) if return_wavefield else None
        if return_wavefield:
            snap = snap[..., t:t + nz, lf:lf + nx]
        # stresses: t_n -> t_{n+1}
        d1, p1 = _stretch(_d_minus(vx, -1, c, inv_dx), s1, p1)
        d2, p2 = _stretch(_d_minus(vz, -2, c, inv_dx), s2, p2)
        d3, p3 = _stretch(_d_plus(vx, -2, c, inv_dx), s3, p3)
        d4, p4 = _stretch(_d_plus(vz, -1, c, inv_dx), s4, p4)
        exx, ezz = d1, d2
        exz = d3 + d4 if save is None else torch.add(d3, d4, out=save[4])
        sxx = torch.addcmul(torch.addcmul(sxx, lam2mu_xx, exx), lam_xx, ezz)
        szz = torch.addcmul(torch.addcmul(szz, lam, exx), lam2mu, ezz)
        sxz = torch.addcmul(sxz, mu_xz, exz)
        if source_type == "explosive":
            sxx = _inject(sxx, src_idx, amps[..., n])
            szz = _inject(szz, src_idx, amps[..., n])
        if fs:
            szz = szz * surface_mask
        if save is not None:
            save[2], save[3] = exx, ezz
        return (vx, vz, sxx, szz, sxz, *p1, *p2, *p3, *p4, *p5, *p6, *p7, *p8), rec, snap

    def adjoint(n, lam_st, g_rec, saved, g_co, g_amps):
        lvx, lvz, lsxx, lszz, lsxz = lam_st[:5]
        l1, l2, l3, l4, l5, l6, l7, l8 = split(lam_st)
        fx, fz, exx, ezz, exz = saved
        if fs:
            lszz = lszz * surface_mask
        if source_type == "explosive":
            g_amps[..., n] = _gather(lsxx, src_idx) + _gather(lszz, src_idx)
        # stress update (coefficients: bx, bz, lam2mu_xx, lam_xx, lam, lam2mu, mu_xz)
        g_co[2].addcmul_(lsxx, exx)
        g_co[3].addcmul_(lsxx, ezz)
        g_co[4].addcmul_(lszz, exx)
        g_co[5].addcmul_(lszz, ezz)
        g_co[6].addcmul_(lsxz, exz)
        q1 = torch.addcmul(lam2mu_xx * lsxx, lam, lszz)
        q2 = torch.addcmul(lam_xx * lsxx, lam2mu, lszz)
        q34 = mu_xz * lsxz
        ld1, l1 = _stretch_t(q1, s1, l1, inplace=True)
        ld2, l2 = _stretch_t(q2, s2, l2, inplace=True)
        ld3, l3 = _stretch_t(q34, s3, l3, inplace=False)
        ld4, l4 = _stretch_t(q34, s4, l4, inplace=True)
        lvx = lvx - _d_plus(ld1, -1, c, inv_dx) - _d_minus(ld3, -2, c, inv_dx)
        lvz = lvz - _d_plus(ld2, -2, c, inv_dx) - _d_minus(ld4, -1, c, inv_dx)
        half = 0.5 * g_rec
        if rc == "vx":
            lvx = _scatter_add_(lvx, rec_idx, half)
        elif rc == "vz":
            lvz = _scatter_add_(lvz, rec_idx, half)
        # velocity update
        if source_type == "force_x":
            g_amps[..., n] = _gather(lvx, src_idx)
        elif source_type == "force_z":
            g_amps[..., n] = _gather(lvz, src_idx)
        g_co[0].addcmul_(lvx, fx)
        g_co[1].addcmul_(lvz, fz)
        rx = bx_dt * lvx
        rz = bz_dt * lvz
        ld5, l5 = _stretch_t(rx, s5, l5, inplace=False)
        ld6, l6 = _stretch_t(rx, s6, l6, inplace=True)
        ld7, l7 = _stretch_t(rz, s7, l7, inplace=False)
        ld8, l8 = _stretch_t(rz, s8, l8, inplace=True)
        if rc == "vx":
            lvx = _scatter_add_(lvx, rec_idx, half)
        elif rc == "vz":
            lvz = _scatter_add_(lvz, rec_idx, half)
        lsxx = lsxx - _d_minus(ld5, -1, c, inv_dx)
        lsxz = lsxz + _d_minus_image_t(ld6, c, inv_dx, -1.0) if fs else lsxz - _d_plus(ld6, -2, c, inv_dx)
        lsxz = lsxz - _d_plus(ld7, -1, c, inv_dx)
        lszz = lszz + _d_plus_image_t(ld8, c, inv_dx, -1.0) if fs else lszz - _d_minus(ld8, -2, c, inv_dx)
        if rc == "pressure":
            lsxx = _scatter_add_(lsxx, rec_idx, -half)
            lszz = _scatter_add_(lszz, rec_idx, -half)
        return (lvx, lvz, lsxx, lszz, lsxz, *l1, *l2, *l3, *l4, *l5, *l6, *l7, *l8)

    spec = _Spec(step, adjoint, 5, rec_idx.shape[-1])
    coeffs = (bx_dt, bz_dt, lam2mu_xx, lam_xx, lam, lam2mu, mu_xz)
    recs, snaps = _run(spec, coeffs, amps, state, nt, checkpoint_every, return_wavefield or _REFERENCE)
    data = _strip_batch(recs, setup.batched)
    if return_wavefield:
        return data, _strip_batch(torch.stack(snaps, dim=2), setup.batched)
    return data


def _shift(f: torch.Tensor, axis: int) -> torch.Tensor:
    """``f`` at index ``j + 1`` along ``axis`` (the last index repeated)."""
    n = f.shape[axis]
    return torch.cat([f.narrow(axis, 1, n - 1), f.narrow(axis, n - 1, 1)], dim=axis)


__all__ = ["psv", "sh"]
