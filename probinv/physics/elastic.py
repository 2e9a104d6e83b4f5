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

References
----------
Virieux, J. (1986). P-SV wave propagation in heterogeneous media: velocity-stress finite-difference method.
Geophysics 51(4), 889-901.
Levander, A. R. (1988). Fourth-order finite-difference P-SV seismograms. Geophysics 53(11), 1425-1436.
Komatitsch, D. & Martin, R. (2007). An unsplit convolutional perfectly matched layer improved at grazing incidence
for the seismic wave equation. Geophysics 72(5), SM155-SM167.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from . import _checks
from ._fd import STAGGERED_FIRST_DERIVATIVE, check_accuracy, max_stable_dt_staggered
from .boundaries import Widths, cpml_profile, dominant_frequency, pad_model, pml_widths

#: Minimum grid points per shortest (S) wavelength below which a warning is issued, per spatial order.
MIN_POINTS_PER_WAVELENGTH = {2: 10.0, 4: 6.0, 8: 4.0}

SOURCE_TYPES = ("explosive", "force_z", "force_x")
RECEIVER_COMPONENTS = ("vz", "vx", "pressure")


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


def _d_plus(f: torch.Tensor, axis: int, coeffs, inv_dx: float, top: torch.Tensor | None = None) -> torch.Tensor:
    """Staggered derivative from integer to half points: ``out[j] = sum_k c_k (f[j+k] - f[j-k+1]) / dx``.

    ``out[j]`` is the derivative at ``j + 1/2``. Values outside the array are 0, or ``top`` before the start of the
    z axis (``M - 1`` rows, the image above a free surface).
    """
    m = len(coeffs)
    n = f.shape[axis]
    fp = _pad_axis(f, axis, m - 1, m, top)
    out = None
    for k, c in enumerate(coeffs, start=1):
        term = fp.narrow(axis, m - 1 + k, n) - fp.narrow(axis, m - k, n)
        out = term * (c * inv_dx) if out is None else out + term * (c * inv_dx)
    return out


def _d_minus(f: torch.Tensor, axis: int, coeffs, inv_dx: float, top: torch.Tensor | None = None) -> torch.Tensor:
    """Staggered derivative from half to integer points: ``out[j] = sum_k c_k (f[j+k-1] - f[j-k]) / dx``.

    ``f[j]`` is the value at ``j + 1/2``. Values outside the array are 0, or ``top`` (``M`` rows) before the start
    of the z axis.
    """
    m = len(coeffs)
    n = f.shape[axis]
    fp = _pad_axis(f, axis, m, m - 1, top)
    out = None
    for k, c in enumerate(coeffs, start=1):
        term = fp.narrow(axis, m + k - 1, n) - fp.narrow(axis, m - k, n)
        out = term * (c * inv_dx) if out is None else out + term * (c * inv_dx)
    return out


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
    dx = _checks.check_scalar("dx", dx)
    dt = _checks.check_scalar("dt", dt)
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
    src = _checks.check_locations("source_locations", source_locations, n_shots, (nz, nx), ref.device)
    if src.shape[1] != source_amplitudes.shape[1]:
        raise ValueError(f"source_locations has {src.shape[1]} sources per shot but source_amplitudes has "
                         f"{source_amplitudes.shape[1]}")
    rec = _checks.check_locations("receiver_locations", receiver_locations, n_shots, (nz, nx), ref.device)
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
    return field.reshape(b, s, -1).scatter_add(2, idx.expand(b, -1, -1), values.expand(b, -1, -1)).reshape(shape)


def _run_blocks(step, state: tuple, nt: int, checkpoint_every: int | None):
    """Run ``step(n, *state) -> (state, record)`` for n = 0..nt-1, optionally checkpointed in blocks."""
    records = []
    if checkpoint_every is None or not torch.is_grad_enabled():
        for n in range(nt):
            state, rec = step(n, *state)
            records.append(rec)
        return state, records

    def block(n0, n1, *st):
        recs = []
        for n in range(n0, n1):
            st, r = step(n, *st)
            recs.append(r)
        return tuple(st) + tuple(recs)

    for n0 in range(0, nt, checkpoint_every):
        n1 = min(nt, n0 + checkpoint_every)
        out = checkpoint(block, n0, n1, *state, use_reentrant=False)
        k = len(state)
        state = tuple(out[:k])
        records.extend(out[k:])
    return state, records


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
    _checks.check_field("vs", vs)
    _checks.check_field("rho", rho)
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
    zeros = vs_p.new_zeros((bsz, n_shots, nzp, nxp))
    state = (zeros, zeros, zeros, zeros, zeros, zeros)  # u, v, psi_ux, psi_uz, psi_sx, psi_sz
    fs = free_surface
    t, l = w.top, w.left

    def step(n, u, v, p_ux, p_uz, p_sx, p_sz):
        rec = _gather(u, setup.rec_idx)
        snap = u[..., t:t + vs.shape[-2], l:l + vs.shape[-1]] if return_wavefield else None
        dux = _d_plus(u, -1, c, inv_dx)
        duz = _d_plus(u, -2, c, inv_dx, _image_symmetric_integer(u, m) if fs else None)
        p_ux = prof["xh"][1] * p_ux + prof["xh"][0] * dux
        p_uz = prof["zh"][1] * p_uz + prof["zh"][0] * duz
        sx = mu_x * (dux + p_ux)
        sz = mu_z * (duz + p_uz)
        dsx = _d_minus(sx, -1, c, inv_dx)
        dsz = _d_minus(sz, -2, c, inv_dx, _image_antisymmetric_half(sz, m) if fs else None)
        p_sx = prof["x0"][1] * p_sx + prof["x0"][0] * dsx
        p_sz = prof["z0"][1] * p_sz + prof["z0"][0] * dsz
        v = v + buoy_dt * (dsx + p_sx + dsz + p_sz)
        v = _inject(v, setup.src_idx, amps[..., n])
        u = u + dt * v
        return (u, v, p_ux, p_uz, p_sx, p_sz), (rec, snap)

    _, records = _run_blocks(step, state, nt, checkpoint_every)
    data = torch.stack([r[0] for r in records], dim=-1)
    data = _strip_batch(data, setup.batched)
    if return_wavefield:
        wf = _strip_batch(torch.stack([r[1] for r in records], dim=2), setup.batched)
        return data, wf
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
    _checks.check_field("vp", vp)
    _checks.check_field("vs", vs, allow_zero=True)
    _checks.check_field("rho", rho)
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
    zeros = vp_p.new_zeros((bsz, n_shots, nzp, nxp))
    # vx, vz, sxx, szz, sxz, psi: dvx/dx, dvz/dz, dvx/dz, dvz/dx, dsxx/dx, dsxz/dz, dsxz/dx, dszz/dz
    state = (zeros,) * 13
    t, l = w.top, w.left
    nz, nx = vp.shape[-2:]
    surface_mask = None
    if fs:
        surface_mask = torch.ones((nzp, 1), dtype=vp.dtype, device=vp.device)
        surface_mask[0] = 0

    def step(n, vx, vz, sxx, szz, sxz, p1, p2, p3, p4, p5, p6, p7, p8):
        prs = -0.5 * (sxx + szz) if receiver_component == "pressure" else None
        rec_p = _gather(prs, setup.rec_idx) if prs is not None else None
        # velocities: t_{n-1/2} -> t_{n+1/2}
        d5 = _d_plus(sxx, -1, c, inv_dx)
        d6 = _d_minus(sxz, -2, c, inv_dx, _image_antisymmetric_half(sxz, m) if fs else None)
        d7 = _d_minus(sxz, -1, c, inv_dx)
        d8 = _d_plus(szz, -2, c, inv_dx, _image_antisymmetric_integer(szz, m) if fs else None)
        p5 = prof["xh"][1] * p5 + prof["xh"][0] * d5
        p6 = prof["z0"][1] * p6 + prof["z0"][0] * d6
        p7 = prof["x0"][1] * p7 + prof["x0"][0] * d7
        p8 = prof["zh"][1] * p8 + prof["zh"][0] * d8
        vx_old, vz_old = vx, vz
        vx = vx + bx_dt * (d5 + p5 + d6 + p6)
        vz = vz + bz_dt * (d7 + p7 + d8 + p8)
        if source_type == "force_x":
            vx = _inject(vx, setup.src_idx, amps[..., n])
        elif source_type == "force_z":
            vz = _inject(vz, setup.src_idx, amps[..., n])
        if receiver_component == "vx":
            rec = 0.5 * (_gather(vx_old, setup.rec_idx) + _gather(vx, setup.rec_idx))
            snap = 0.5 * (vx_old + vx) if return_wavefield else None
        elif receiver_component == "vz":
            rec = 0.5 * (_gather(vz_old, setup.rec_idx) + _gather(vz, setup.rec_idx))
            snap = 0.5 * (vz_old + vz) if return_wavefield else None
        else:
            rec, snap = rec_p, prs
        if snap is not None:
            snap = snap[..., t:t + nz, l:l + nx]
        # stresses: t_n -> t_{n+1}
        d1 = _d_minus(vx, -1, c, inv_dx)
        d2 = _d_minus(vz, -2, c, inv_dx)
        d3 = _d_plus(vx, -2, c, inv_dx)
        d4 = _d_plus(vz, -1, c, inv_dx)
        p1 = prof["x0"][1] * p1 + prof["x0"][0] * d1
        p2 = prof["z0"][1] * p2 + prof["z0"][0] * d2
        p3 = prof["zh"][1] * p3 + prof["zh"][0] * d3
        p4 = prof["xh"][1] * p4 + prof["xh"][0] * d4
        exx = dt * (d1 + p1)
        ezz = dt * (d2 + p2)
        sxx = sxx + lam2mu_xx * exx + lam_xx * ezz
        szz = szz + lam * exx + lam2mu * ezz
        sxz = sxz + mu_xz * (dt * (d3 + p3 + d4 + p4))
        if source_type == "explosive":
            sxx = _inject(sxx, setup.src_idx, amps[..., n])
            szz = _inject(szz, setup.src_idx, amps[..., n])
        if fs:
            szz = szz * surface_mask
        return (vx, vz, sxx, szz, sxz, p1, p2, p3, p4, p5, p6, p7, p8), (rec, snap)

    _, records = _run_blocks(step, state, nt, checkpoint_every)
    data = torch.stack([r[0] for r in records], dim=-1)
    data = _strip_batch(data, setup.batched)
    if return_wavefield:
        wf = _strip_batch(torch.stack([r[1] for r in records], dim=2), setup.batched)
        return data, wf
    return data


def _shift(f: torch.Tensor, axis: int) -> torch.Tensor:
    """``f`` at index ``j + 1`` along ``axis`` (the last index repeated)."""
    n = f.shape[axis]
    return torch.cat([f.narrow(axis, 1, n - 1), f.narrow(axis, n - 1, 1)], dim=axis)


__all__ = ["psv", "sh"]
