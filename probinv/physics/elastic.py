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

Where the code lives
--------------------
This module holds the public functions (their steps and transposed steps are closures over the padded coefficients).
Beside it: ``_elastic_ops`` (staggered derivatives, free-surface images, CPML strips, averages and their transposes),
``_elastic_grad`` (the autograd node per block of steps, checkpointing) and ``_elastic_setup`` (argument checks shared
by SH and P-SV, indices, CPML profiles). On the CPU (float32/float64) the time loop runs by default on a compiled C
kernel (``backend="native"``; ``_elastic_native`` and ``_native/elastic.c``: the same operators, step by step, with the
hand-written transposes in C, threads over the (model, shot) pairs); the PyTorch implementation (``backend="torch"``)
is the reference the tests compare it with (data and gradients equal to 1e-12 relative in float64) and the GPU path.

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

import torch
import torch.nn.functional as F

from ..validation import check_choice, check_field
from . import _elastic_native
from ._elastic_grad import _run, _Spec
from ._elastic_ops import (
    _average_next,
    _d_minus,
    _d_minus_image_t,
    _d_plus,
    _d_plus_image_t,
    _gather,
    _harmonic,
    _image_antisymmetric_half,
    _image_antisymmetric_integer,
    _image_symmetric_integer,
    _inject,
    _scatter_add_,
    _shift,
    _stretch,
    _stretch_t,
    _strip_zeros,
    _strips,
)
from ._elastic_setup import MIN_POINTS_PER_WAVELENGTH as MIN_POINTS_PER_WAVELENGTH
from ._elastic_setup import _as_batch, _common_checks, _profiles
from .boundaries import pad_model

SOURCE_TYPES = ("explosive", "force_z", "force_x")


RECEIVER_COMPONENTS = ("vz", "vx", "pressure")


#: Testing switch: plain autograd through every step instead of the hand-written adjoint (the reference version).
_REFERENCE = False


def _strip_batch(out: torch.Tensor, batched: bool) -> torch.Tensor:
    return out if batched else out[0]


def _use_native(backend: str, ref: torch.Tensor, return_wavefield: bool) -> bool:
    """Whether this call runs on the compiled kernel (``backend`` checked, ``ref`` a model field)."""
    check_choice("backend", backend, ("auto", "native", "torch"))
    if backend == "native" and isinstance(ref, torch.Tensor) and (ref.device.type != "cpu"
                                                                   or ref.dtype not in (torch.float32, torch.float64)):
        raise ValueError(f"backend='native' runs CPU float32/float64 tensors only, got the model on {ref.device} "
                         f"with {ref.dtype}; use backend='torch' or 'auto'")
    # return_wavefield (and the testing switch _REFERENCE) need the per-step autograd of the reference path
    return (backend != "torch" and not return_wavefield and not _REFERENCE and isinstance(ref, torch.Tensor)
            and _elastic_native.available(ref))


# ----------------------------------------------------------------------------------------------------------------
# SH
# ----------------------------------------------------------------------------------------------------------------
def sh(vs: torch.Tensor, rho: torch.Tensor, dx: float, dt: float, source_amplitudes: torch.Tensor,
       source_locations: torch.Tensor, receiver_locations: torch.Tensor, *, pml_width=20, free_surface: bool = False,
       accuracy: int = 4, checkpoint_every: int | None = None, return_wavefield: bool = False,
       backend: str = "auto"):
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
    backend : {"auto", "native", "torch"}
        Which implementation of the time loop runs. ``"native"``: the compiled C kernel (:mod:`probinv.physics._native`,
        threads over the (model, shot) pairs, ``torch.get_num_threads()`` of them, CPU float32/float64 only);
        ``"torch"``: the PyTorch reference path (any device). ``"auto"`` (default): native where it can run, torch
        otherwise. ``return_wavefield=True`` always runs the reference path. If the kernel cannot be compiled,
        ``"auto"`` and ``"native"`` fall back to torch with one warning per process.

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
    native = _use_native(backend, vs, return_wavefield)
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
    if native:
        recs = _elastic_native.propagate("sh", (mu_x, mu_z, buoy_dt), amps, prof, setup, free_surface, dt, inv_dx,
                                         checkpoint_every)
        return _strip_batch(recs, setup.batched)
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
        accuracy: int = 4, checkpoint_every: int | None = None, return_wavefield: bool = False,
        backend: str = "auto"):
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
    backend : {"auto", "native", "torch"}
        Which implementation of the time loop runs. ``"native"``: the compiled C kernel (:mod:`probinv.physics._native`,
        threads over the (model, shot) pairs, ``torch.get_num_threads()`` of them, CPU float32/float64 only);
        ``"torch"``: the PyTorch reference path (any device). ``"auto"`` (default): native where it can run, torch
        otherwise. ``return_wavefield=True`` always runs the reference path. If the kernel cannot be compiled,
        ``"auto"`` and ``"native"`` fall back to torch with one warning per process.

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
    native = _use_native(backend, vp, return_wavefield)
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
    if native:
        recs = _elastic_native.propagate("psv", (bx_dt, bz_dt, lam2mu_xx, lam_xx, lam, lam2mu, mu_xz), amps, prof,
                                         setup, free_surface, dt, inv_dx, checkpoint_every, source_type,
                                         receiver_component)
        return _strip_batch(recs, setup.batched)
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


__all__ = ["psv", "sh"]
