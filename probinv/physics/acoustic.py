r"""Time-domain 2D acoustic wave propagation (constant or variable density), differentiable by reverse-mode AD.

The equation (DESIGN.md section 2) is

.. math:: \frac{1}{v^2} \partial_t^2 p - \nabla^2 p = f(t)\,\delta(\mathbf{x} - \mathbf{x}_s),

discretised with leapfrog (second order) in time and central differences of order ``accuracy`` (2, 4 or 8) in space,
with a convolutional PML (:mod:`probinv.physics.boundaries`) added *outside* the user's grid and an optional
pressure-release free surface on top.

How the gradient is computed
----------------------------
The whole time loop is one :class:`torch.autograd.Function` whose backward runs the hand-derived transpose of the
discrete step in reverse (reverse-mode AD of the time loop with one fused node instead of thousands of tiny autograd
nodes). The forward saves one wavefield per step (``q^n = L p^n + s^n``, what ``dL/dv`` needs; plus ``p^n`` when
``rho`` is given) in one preallocated buffer, so the memory is predictable and the heap does not fragment.
``checkpoint_every=k`` keeps only the state at the start of every block of ``k`` steps; backward re-runs each block
from it (saving that block's ``q^n`` only) before transposing it: the same gradient to rounding, memory ~ ``nt / k``
states + ``k`` wavefields.

The fast kernel keeps the wavefields in zero-padded buffers updated in place and does the CPML work only in the
layer strips. The plain full-grid kernel (:func:`_step`, :func:`_step_transpose`) is used where the strips would
touch the free-surface mirror rows (models shallower than ``accuracy`` cells); :func:`_propagate_reference` runs it
with autograd through ordinary torch operations, the reference the tests compare with.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import _checks, _fd
from .boundaries import Widths, cpml_profile, dominant_frequency, pad_model, pml_widths

#: Use the strip kernel (False: the plain full-grid kernel everywhere; the tests compare the two).
_FAST_KERNEL = True

#: Smallest points-per-wavelength (of the highest significant source frequency) before a warning, per accuracy.
MIN_POINTS_PER_WAVELENGTH = {2: 10.0, 4: 6.0, 8: 4.0}


# ----------------------------------------------------------------------------------------------------------------------
# linear stencil operators on [..., nz, nx] tensors


def _top_mirror_correction(weights: tuple[float, ...]) -> torch.Tensor | None:
    """Matrix ``C`` [(M-1), (M-1)] adding the odd-mirror ghost values above a free surface at row -1.

    With ``p[-1] = 0`` and ``p[-2-j] = -p[j]``, output row ``i`` of a stencil ``out[i] = sum_k w_k u[i+k]`` gains
    ``sum_j C[i, j] u[j]`` on top of its zero-halo value.
    """
    m = (len(weights) - 1) // 2
    if m < 2:
        return None
    c = torch.zeros(m - 1, m - 1, dtype=torch.float64)
    for i in range(m - 1):
        for k in range(-m, m + 1):
            j = i + k
            if j <= -2:
                c[i, -2 - j] -= weights[k + m]
    return c


def _stencil(u: torch.Tensor, weights: tuple[float, ...], axis: int, corr: torch.Tensor | None = None) -> torch.Tensor:
    """``out[i] = sum_k w_k u[i + k]`` along ``axis`` (-1: x, -2: z) with zero values outside, plus ``corr`` on top."""
    m = (len(weights) - 1) // 2
    n = u.shape[axis]
    up = F.pad(u, (m, m) if axis == -1 else (0, 0, m, m))
    out = None
    for k in range(m):  # pair symmetric / antisymmetric offsets: one multiply per pair
        wl, wr = weights[k], weights[2 * m - k]
        left, right = up.narrow(axis, k, n), up.narrow(axis, 2 * m - k, n)
        if wl == wr:
            term = torch.add(left, right).mul_(wl)
        elif wl == -wr:
            term = torch.sub(right, left).mul_(wr)
        else:
            term = torch.add(left * wl, right, alpha=wr)
        out = term if out is None else out.add_(term)
    if weights[m] != 0:
        out = out + weights[m] * u
    if corr is not None:
        r = corr.shape[0]
        top = out.narrow(-2, 0, r) + torch.einsum("ij,...jx->...ix", corr, u.narrow(-2, 0, r))
        out = torch.cat([top, out.narrow(-2, r, n - r)], dim=-2)
    return out


def _stencil_t(u: torch.Tensor, weights: tuple[float, ...], axis: int, corr: torch.Tensor | None = None):
    """Transpose of :func:`_stencil` (reversed weights, transposed correction)."""
    return _stencil(u, tuple(reversed(weights)), axis, None if corr is None else corr.t().contiguous())


class _Ops(NamedTuple):
    """Everything one time step needs besides the fields (built once per call by :func:`_build_ops`)."""

    w2: tuple  # second derivative weights / dx^2, offsets -M..M
    w1: tuple  # central first derivative weights / dx, offsets -M..M
    c2: torch.Tensor | None  # free-surface corrections (z, top) of the two stencils
    c1: torch.Tensor | None
    ax: torch.Tensor  # CPML coefficients [1, 1, 1, W] and [1, 1, H, 1]
    bx: torch.Tensor
    az: torch.Tensor
    bz: torch.Tensor


def _pml_vmax(vmax: float) -> float:
    """``vmax`` rounded up to two significant digits (the CPML strength; see :func:`_build_ops`)."""
    scale10 = 10.0 ** (math.floor(math.log10(vmax)) - 1)
    return math.ceil(vmax / scale10 - 1e-9) * scale10


def _build_ops(accuracy: int, dx: float, dt: float, shape: tuple[int, int], widths: Widths, vmax: list[float],
               freq: list[float], free_surface: bool, dtype, device) -> _Ops:
    """Stencil weights and CPML coefficients; ``vmax`` and ``freq`` per model of the batch (one profile each)."""
    c = _fd.SECOND_DERIVATIVE[accuracy]
    w2 = tuple(x / dx ** 2 for x in (list(reversed(c[1:])) + list(c)))
    c1 = _fd.CENTRAL_FIRST_DERIVATIVE[accuracy]
    w1 = tuple(x / dx for x in ([-a for a in reversed(c1)] + [0.0] + list(c1)))
    if free_surface:
        c2m, c1m = _top_mirror_correction(w2), _top_mirror_correction(w1)
        c2m = None if c2m is None else c2m.to(dtype=dtype, device=device)
        c1m = None if c1m is None else c1m.to(dtype=dtype, device=device)
    else:
        c2m = c1m = None
    h, w = shape
    # The damping uses vmax rounded up to two significant digits: the layer (and so the forward map) then stays
    # fixed under small model perturbations and AD gives the gradient of exactly the function evaluated. A
    # reflection coefficient of 1e-5 with a quadratic profile gives ~2e-10 reflected energy with 20 cells
    # (tests/test_boundaries.py).
    prof = []
    for vm, fr in zip(vmax, freq):
        px = cpml_profile(w, (widths.left, widths.right), dx, dt, _pml_vmax(vm), fr, r=1e-5, dtype=dtype,
                          device=device)
        pz = cpml_profile(h, (widths.top, widths.bottom), dx, dt, _pml_vmax(vm), fr, r=1e-5, dtype=dtype,
                          device=device)
        prof.append((px.a, px.b, pz.a, pz.b))
    ax, bx, az, bz = (torch.stack([p[i] for p in prof]) for i in range(4))
    n = len(prof)
    return _Ops(w2, w1, c2m, c1m, ax.view(n, 1, 1, w), bx.view(n, 1, 1, w), az.view(n, 1, h, 1),
                bz.view(n, 1, h, 1))


# ----------------------------------------------------------------------------------------------------------------------
# one time step and its transpose


def _step(state, v2dt2, gx, gz, amp_n, src_idx, ops: _Ops):
    """One leapfrog step ``p^{n+1} = 2 p^n - p^{n-1} + v^2 dt^2 (L p^n + s^n)`` with CPML memory variables.

    ``state = (p^n, p^{n-1}, psi_x, psi_z, zeta_x, zeta_z)``, each ``[batch, shots, H, W]``. ``amp_n``
    ``[batch, shots, ns]`` are the source values already divided by ``dx^2``. Returns the next state and
    ``q = L p^n + s^n``. Pure function: used without autograd by the fast path and with autograd by the reference.
    """
    p, pprev, psx, psz, zx, zz = state
    dxp = _stencil(p, ops.w1, -1)
    dzp = _stencil(p, ops.w1, -2, ops.c1)
    psx = ops.bx * psx + ops.ax * dxp
    psz = ops.bz * psz + ops.az * dzp
    wx = _stencil(p, ops.w2, -1) + _stencil(psx, ops.w1, -1)
    wz = _stencil(p, ops.w2, -2, ops.c2) + _stencil(psz, ops.w1, -2)
    zx = ops.bx * zx + ops.ax * wx
    zz = ops.bz * zz + ops.az * wz
    q = wx + zx + wz + zz
    if gx is not None:
        q = q - gx * dxp - gz * dzp
    if src_idx.shape[-1]:
        q = q.flatten(-2).scatter_add(-1, src_idx, amp_n).view_as(q)
    pnew = 2 * p - pprev + v2dt2 * q
    return (pnew, p, psx, psz, zx, zz), q


def _step_transpose(bar, v2dt2, gx, gz, q_n, p_n, src_idx, ops: _Ops):
    """Adjoint of :func:`_step`: maps the adjoints of its outputs to those of its inputs.

    ``bar = (P1, P0, PSX, PSZ, ZX, ZZ)``: adjoints of ``(p^{n+1}, p^n, psi_x^n, psi_z^n, zeta_x^n, zeta_z^n)``.
    Returns the adjoints of ``(p^n, p^{n-1}, psi_x^{n-1}, ...)``, of ``v^2 dt^2`` (summed over shots), of
    ``gx, gz`` (or None) and of the source values ``[batch, shots, ns]``.
    """
    p1, p0, psxb, pszb, zxb, zzb = bar
    qb = v2dt2 * p1
    g_v2dt2 = (p1 * q_n).sum(1, keepdim=True)
    g_amp = qb.flatten(-2).gather(-1, src_idx) if src_idx.shape[-1] else None
    zxb = zxb + qb
    zzb = zzb + qb
    wxb = qb + ops.ax * zxb
    wzb = qb + ops.az * zzb
    psxb = psxb + _stencil_t(wxb, ops.w1, -1)
    pszb = pszb + _stencil_t(wzb, ops.w1, -2)
    dxpb = ops.ax * psxb
    dzpb = ops.az * pszb
    g_gx = g_gz = None
    if gx is not None:
        dxpb = dxpb - gx * qb
        dzpb = dzpb - gz * qb
        g_gx = -(qb * _stencil(p_n, ops.w1, -1)).sum(1, keepdim=True)
        g_gz = -(qb * _stencil(p_n, ops.w1, -2, ops.c1)).sum(1, keepdim=True)
    pb = (2 * p1 + p0 + _stencil_t(wxb, ops.w2, -1) + _stencil_t(wzb, ops.w2, -2, ops.c2)
          + _stencil_t(dxpb, ops.w1, -1) + _stencil_t(dzpb, ops.w1, -2, ops.c1))
    new_bar = (pb, -p1, ops.bx * psxb, ops.bz * pszb, ops.bx * zxb, ops.bz * zzb)
    return new_bar, g_v2dt2, g_gx, g_gz, g_amp


class _Geometry(NamedTuple):
    src_idx: torch.Tensor  # [batch, shots, ns] flat indices into the padded grid
    rec_idx: torch.Tensor  # [batch, shots, nr]
    snap_every: int  # 0: no snapshots
    crop: tuple  # (top, bottom, left, right) widths to crop snapshots to the user grid


def _run_block(state, v2dt2, gx, gz, amp, geom: _Geometry, ops: _Ops, n0: int, store: bool):
    """Run ``amp.shape[-1]`` steps from ``state``; returns state, data block, snapshots and the saved fields."""
    nsteps = amp.shape[-1]
    p = state[0]
    batch, shots, h, w = p.shape
    nr = geom.rec_idx.shape[-1]
    data = p.new_empty(batch, shots, nr, nsteps)
    qs = p.new_empty(nsteps, batch, shots, h, w) if store else None
    ps = p.new_empty(nsteps, batch, shots, h, w) if store and gx is not None else None
    snaps = []
    t, bt, lf, rt = geom.crop
    for i in range(nsteps):
        p = state[0]
        if nr:
            data[..., i] = p.flatten(-2).gather(-1, geom.rec_idx)
        if geom.snap_every and (n0 + i) % geom.snap_every == 0:
            snaps.append(p[..., t:h - bt, lf:w - rt].clone())
        if ps is not None:
            ps[i] = p
        state, q = _step(state, v2dt2, gx, gz, amp[..., i], geom.src_idx, ops)
        if qs is not None:
            qs[i] = q
    snap = torch.stack(snaps, dim=2) if snaps else p.new_empty(batch, shots, 0, h - t - bt, w - lf - rt)
    return state, data, snap, qs, ps


# ----------------------------------------------------------------------------------------------------------------------
# the fast kernel: wavefields kept in zero-padded buffers, in-place updates, CPML work only in the layer strips
#
# Same discrete operator as _step (the tests compare the two to rounding). The state is
# (p^n buffer, p^{n-1} buffer, psi per strip, zeta per strip): the buffers carry M = accuracy/2 halo cells (zeros,
# or the free-surface odd mirror on top, refreshed every step), and psi/zeta exist only where the CPML coefficient
# a != 0 (they are identically zero elsewhere), so the interior costs one Laplacian and one update per step.


class _Strip(NamedTuple):
    axis: int  # -1: x (left/right layers), -2: z (top/bottom)
    lo: int  # first padded-grid index of the layer along axis
    n: int  # layer thickness in cells
    o0: int  # range [o0, o1) where d(psi) is non-zero (the layer plus M cells inwards, clipped to the grid)
    o1: int
    a: torch.Tensor  # CPML coefficients of the layer, broadcastable to [batch, shots, ..strip..]
    b: torch.Tensor


class _Fast(NamedTuple):
    m: int
    h: int
    w: int
    strips: tuple
    src_q: torch.Tensor  # source indices into the unpadded (H*W) grid
    src_buf: torch.Tensor  # ... into the padded ((H+2M)*(W+2M)) buffer
    rec_q: torch.Tensor
    rec_buf: torch.Tensor
    free_surface: bool


def _build_fast(ops: _Ops, widths: Widths, h: int, w: int, geom: "_Geometry", free_surface: bool,
                nz: int) -> _Fast | None:
    m = (len(ops.w2) - 1) // 2
    if free_surface and nz < 2 * m:
        return None  # the bottom layer would reach the mirror rows: use the plain full-grid kernel
    strips = []
    for axis, (w0, w1), a, b, n_ax in ((-1, (widths.left, widths.right), ops.ax, ops.bx, w),
                                       (-2, (widths.top, widths.bottom), ops.az, ops.bz, h)):
        for lo, n in ((0, w0), (n_ax - w1, w1)):
            if n == 0:
                continue
            o0, o1 = max(0, lo - m), min(n_ax, lo + n + m)
            strips.append(_Strip(axis, lo, n, o0, o1, a.narrow(axis, lo, n), b.narrow(axis, lo, n)))
    wp = w + 2 * m

    def to_buf(idx):
        return (idx // w + m) * wp + idx % w + m

    return _Fast(m, h, w, tuple(strips), geom.src_idx, to_buf(geom.src_idx), geom.rec_idx, to_buf(geom.rec_idx),
                 free_surface)


def _d_along(src: torch.Tensor, axis: int, weights, start: int, length: int, offset: int) -> torch.Tensor:
    """``out[i] = sum_k w_k src[offset + start + i + k]`` along ``axis``, ``i < length`` (no bounds padding)."""
    m = (len(weights) - 1) // 2
    out = None
    for j, wk in enumerate(weights):
        if wk == 0:
            continue
        sl = src.narrow(axis, offset + start + j - m, length)
        if out is None:
            out = sl * wk
        else:
            out.add_(sl, alpha=wk)
    return out


def _spread(target: torch.Tensor, u: torch.Tensor, axis: int, weights, lo: int) -> None:
    """``target += S^T u`` where ``u`` sits at ``[lo, lo + len)`` along ``axis`` and S is the zero-halo stencil."""
    m = (len(weights) - 1) // 2
    n_ax = target.shape[axis]
    length = u.shape[axis]
    upp = F.pad(u, (2 * m, 2 * m) if axis == -1 else (0, 0, 2 * m, 2 * m))
    val = _d_along(upp, axis, tuple(reversed(weights)), 0, length + 2 * m, m)
    j0, j1 = max(0, lo - m), min(n_ax, lo + length + m)
    target.narrow(axis, j0, j1 - j0).add_(val.narrow(axis, j0 - (lo - m), j1 - j0))


def _fast_init_state(fast: _Fast, batch: int, shots: int, like: torch.Tensor):
    m, h, w = fast.m, fast.h, fast.w
    bufs = [like.new_zeros(batch, shots, h + 2 * m, w + 2 * m) for _ in range(2)]
    psis, zetas = [], []
    for s in fast.strips:
        shape = [batch, shots, h, w]
        shape[s.axis] = s.n + 4 * m
        psis.append(like.new_zeros(shape))
        shape[s.axis] = s.n
        zetas.append(like.new_zeros(shape))
    return tuple(bufs + psis + zetas)


def _fast_run_block(state, v2dt2, gx, gz, amp, geom, ops: _Ops, fast: _Fast, n0: int, store: bool,
                    keep_p: bool = False):
    """The fast forward over ``amp.shape[-1]`` steps (no autograd); same outputs as :func:`_run_block`.

    ``store``: keep ``q^n = L p^n + s^n`` of every step (what dL/dv needs); ``keep_p``: keep ``p^n`` too.
    """
    m, h, w = fast.m, fast.h, fast.w
    ns = len(fast.strips)
    cur, prev = (t.clone() for t in state[:2])
    psis = [t.clone() for t in state[2:2 + ns]]
    zetas = [t.clone() for t in state[2 + ns:]]
    batch, shots = cur.shape[:2]
    nsteps = amp.shape[-1]
    nr = fast.rec_buf.shape[-1]
    data = cur.new_empty(batch, shots, nr, nsteps)
    qs = cur.new_empty(nsteps, batch, shots, h, w) if store else None
    ps = cur.new_empty(nsteps, batch, shots, h, w) if keep_p or (store and gx is not None) else None
    q_tmp = None if store else cur.new_empty(batch, shots, h, w)
    snaps = []
    t, bt, lf, rt = geom.crop
    w2, w1 = ops.w2, ops.w1
    for i in range(nsteps):
        if fast.free_surface:
            for k in range(1, m):
                cur[..., m - 1 - k, :].copy_(cur[..., m - 1 + k, :]).neg_()
        inner = cur[..., m:m + h, m:m + w]
        if nr:
            data[..., i] = cur.flatten(-2).gather(-1, fast.rec_buf)
        if geom.snap_every and (n0 + i) % geom.snap_every == 0:
            snaps.append(inner[..., t:h - bt, lf:w - rt].clone())
        if ps is not None:
            ps[i] = inner
        q = qs[i] if store else q_tmp
        torch.mul(inner, 2 * w2[m], out=q)
        for k in range(-m, m + 1):
            if k:
                q.add_(cur[..., m + k:m + k + h, m:m + w], alpha=w2[m + k])
                q.add_(cur[..., m:m + h, m + k:m + k + w], alpha=w2[m + k])
        rows, cols = cur[..., m:m + h, :], cur[..., :, m:m + w]
        for j, s in enumerate(fast.strips):
            src = rows if s.axis == -1 else cols
            dp = _d_along(src, s.axis, w1, s.lo, s.n, m)
            psi = psis[j]
            psi_in = psi.narrow(s.axis, 2 * m, s.n)
            psi_in.mul_(s.b).addcmul_(s.a, dp)
            dpsi = _d_along(psi, s.axis, w1, s.o0, s.o1 - s.o0, 2 * m - s.lo)
            d2p = _d_along(src, s.axis, w2, s.lo, s.n, m)
            d2p.add_(dpsi.narrow(s.axis, s.lo - s.o0, s.n))
            zetas[j].mul_(s.b).addcmul_(s.a, d2p)
            q.narrow(s.axis, s.o0, s.o1 - s.o0).add_(dpsi)
            q.narrow(s.axis, s.lo, s.n).add_(zetas[j])
        if gx is not None:
            q.addcmul_(gx, _d_along(rows, -1, w1, 0, w, m), value=-1)
            q.addcmul_(gz, _d_along(cols, -2, w1, 0, h, m), value=-1)
        if fast.src_q.shape[-1]:
            q.flatten(-2).scatter_add_(-1, fast.src_q, amp[..., i])
        prev[..., m:m + h, m:m + w].mul_(-1).add_(inner, alpha=2).addcmul_(v2dt2, q)
        cur, prev = prev, cur
    snap = torch.stack(snaps, dim=2) if snaps else cur.new_empty(batch, shots, 0, h - t - bt, w - lf - rt)
    return (cur, prev, *psis, *zetas), data, snap, qs, ps


def _fast_backward(g_data, g_snap, g_state, v2dt2, gx, gz, qs, ps, geom, ops: _Ops, fast: _Fast, n0: int):
    """Transposed steps of :func:`_fast_run_block` in reverse; returns the adjoints of its inputs."""
    m, h, w = fast.m, fast.h, fast.w
    ns = len(fast.strips)
    nsteps = qs.shape[0]
    a1 = g_state[0][..., m:m + h, m:m + w].clone()  # adjoint of p^{n+1}
    a0 = g_state[1][..., m:m + h, m:m + w].clone()  # adjoint of the output slot holding p^n
    s_adj = [g.narrow(s.axis, 2 * m, s.n).clone() for g, s in zip(g_state[2:2 + ns], fast.strips)]
    z_adj = [g.clone() for g in g_state[2 + ns:]]
    batch, shots = a1.shape[:2]
    qbuf = a1.new_zeros(batch, shots, h + 2 * m, w + 2 * m)
    qb = qbuf[..., m:m + h, m:m + w]
    gacc = torch.zeros_like(a1)
    g_gx = torch.zeros_like(gx) if gx is not None else None
    g_gz = torch.zeros_like(gz) if gz is not None else None
    g_amp = a1.new_zeros(*fast.src_q.shape, nsteps)
    w2, w1 = ops.w2, ops.w1
    t, bt, lf, rt = geom.crop
    snap_pos = {}
    if geom.snap_every:
        snap_pos = {i: j for j, i in enumerate(i for i in range(nsteps) if (n0 + i) % geom.snap_every == 0)}
    for i in range(nsteps - 1, -1, -1):
        torch.mul(v2dt2, a1, out=qb)
        gacc.addcmul_(a1, qs[i])
        if fast.src_buf.shape[-1]:
            g_amp[..., i] = qbuf.flatten(-2).gather(-1, fast.src_buf)
        pb = qb * (2 * w2[m])
        for k in range(-m, m + 1):
            if k:
                pb.add_(qbuf[..., m + k:m + k + h, m:m + w], alpha=w2[m - k])
                pb.add_(qbuf[..., m:m + h, m + k:m + k + w], alpha=w2[m - k])
        if ops.c2 is not None:
            r = ops.c2.shape[0]
            pb[..., :r, :] += torch.einsum("ji,...jx->...ix", ops.c2, qb[..., :r, :])
        pb.add_(a1, alpha=2).add_(a0)
        for j, s in enumerate(fast.strips):
            zb = z_adj[j].add_(qb.narrow(s.axis, s.lo, s.n))
            d2pb = s.a * zb
            zb.mul_(s.b)
            dpsib = qb.narrow(s.axis, s.o0, s.o1 - s.o0).clone()
            dpsib.narrow(s.axis, s.lo - s.o0, s.n).add_(d2pb)
            _spread(pb, d2pb, s.axis, w2, s.lo)
            before, after = s.o0 - (s.lo - m), s.lo + s.n + m - s.o1
            dpp = F.pad(dpsib, (before, after) if s.axis == -1 else (0, 0, before, after))
            sb = s_adj[j].add_(_d_along(dpp, s.axis, tuple(reversed(w1)), 0, s.n, m))
            _spread(pb, s.a * sb, s.axis, w1, s.lo)
            sb.mul_(s.b)
        if gx is not None:
            pn = ps[i]
            g_gx.sub_((qb * _stencil(pn, w1, -1)).sum(1, keepdim=True))
            g_gz.sub_((qb * _stencil(pn, w1, -2, ops.c1)).sum(1, keepdim=True))
            pb.sub_(_stencil_t(gx * qb, w1, -1)).sub_(_stencil_t(gz * qb, w1, -2, ops.c1))
        if fast.rec_q.shape[-1]:
            pb.flatten(-2).scatter_add_(-1, fast.rec_q, g_data[..., i])
        if i in snap_pos:
            pb[..., t:h - bt, lf:w - rt] += g_snap[:, :, snap_pos[i]]
        a0 = a1.neg_()
        a1 = pb
    pad = (m, m, m, m)
    g_states = [F.pad(a1, pad), F.pad(a0, pad)]
    for sa, s in zip(s_adj, fast.strips):
        g_states.append(F.pad(sa, (2 * m, 2 * m) if s.axis == -1 else (0, 0, 2 * m, 2 * m)))
    g_states += z_adj
    return gacc.sum(1, keepdim=True), g_gx, g_gz, g_amp, tuple(g_states)


def _full_backward(g_data, g_snap, g_state, v2dt2, gx, gz, qs, ps, geom, ops: _Ops, n0: int):
    """Transposed steps of :func:`_run_block` in reverse; returns the adjoints of its inputs."""
    nsteps = qs.shape[0]
    bar = tuple(g_state)
    g_v = torch.zeros_like(v2dt2)
    g_gx = torch.zeros_like(gx) if gx is not None else None
    g_gz = torch.zeros_like(gz) if gz is not None else None
    ns = geom.src_idx.shape[-1]
    g_amp = v2dt2.new_zeros(*geom.src_idx.shape, nsteps)
    t, bt, lf, rt = geom.crop
    h, w = v2dt2.shape[-2:]
    snap_steps = [i for i in range(nsteps) if geom.snap_every and (n0 + i) % geom.snap_every == 0]
    for i in range(nsteps - 1, -1, -1):
        bar, gv, ggx, ggz, ga = _step_transpose(bar, v2dt2, gx, gz, qs[i], None if ps is None else ps[i],
                                                geom.src_idx, ops)
        g_v += gv
        if gx is not None:
            g_gx += ggx
            g_gz += ggz
        if ns:
            g_amp[..., i] = ga
        pb = bar[0]
        if geom.rec_idx.shape[-1]:
            pb = pb.flatten(-2).scatter_add(-1, geom.rec_idx, g_data[..., i]).view_as(pb)
        if snap_steps and i in snap_steps:
            pb = pb.clone()
            pb[..., t:h - bt, lf:w - rt] += g_snap[:, :, snap_steps.index(i)]
        bar = (pb,) + bar[1:]
    return g_v, g_gx, g_gz, g_amp, bar


def _run(state, v2dt2, gx, gz, amp, geom, ops, fast, n0, store):
    if fast is not None:
        return _fast_run_block(state, v2dt2, gx, gz, amp, geom, ops, fast, n0, store=store)
    return _run_block(state, v2dt2, gx, gz, amp, geom, ops, n0, store=store)


def _initial_state(fast, batch, shots, h, w, like):
    if fast is not None:
        return _fast_init_state(fast, batch, shots, like)
    return tuple(like.new_zeros(batch, shots, h, w) for _ in range(6))


def _differentiable_backward(v2dt2, gx, gz, amp, geom, ops, g_data, g_snap):
    """Vector-Jacobian product of the time loop built from ordinary autograd operations (differentiable again)."""
    batch, shots = g_data.shape[:2]
    h, w = v2dt2.shape[-2:]
    t, bt, lf, rt = geom.crop
    state = tuple(v2dt2.new_zeros(batch, shots, h, w) for _ in range(6))
    data, snaps = [], []
    for n in range(amp.shape[-1]):
        data.append(state[0].flatten(-2).gather(-1, geom.rec_idx))
        if geom.snap_every and n % geom.snap_every == 0:
            snaps.append(state[0][..., t:h - bt, lf:w - rt])
        state, _ = _step(state, v2dt2, gx, gz, amp[..., n], geom.src_idx, ops)
    outputs, grads_out = [torch.stack(data, -1)], [g_data]
    if snaps:
        outputs.append(torch.stack(snaps, 2))
        grads_out.append(g_snap)
    inputs = [x for x in (v2dt2, gx, gz, amp) if x is not None and x.requires_grad]
    grads = iter(torch.autograd.grad(outputs, inputs, grads_out, create_graph=True, allow_unused=True))
    result = [next(grads) if x is not None and x.requires_grad else None for x in (v2dt2, gx, gz, amp)]
    return (*result, None, None, None, None, None)


class _AcousticPropagation(torch.autograd.Function):
    """The whole time loop as one autograd node; backward runs the hand-transposed steps in reverse.

    With ``every = k < nt`` (checkpointing) the forward keeps only the state at the start of each block of ``k``
    steps; backward re-runs each block from its state (saving ``q^n`` of that block only) before transposing it.
    """

    @staticmethod
    def forward(ctx, v2dt2, gx, gz, amp, geom, ops, fast, every, shape):
        batch, shots, h, w = shape
        nt = amp.shape[-1]
        state = _initial_state(fast, batch, shots, h, w, v2dt2)
        k = nt if every is None else min(every, nt)
        datas, snaps, starts = [], [], []
        saved = (None, None)
        for n0 in range(0, nt, k):
            if k < nt:
                starts.append(state)
            state, data, snap, qs, ps = _run(state, v2dt2, gx, gz, amp[..., n0:n0 + k], geom, ops, fast, n0,
                                             store=k >= nt)
            datas.append(data)
            snaps.append(snap)
            saved = (qs, ps)
        ctx.geom, ctx.ops, ctx.fast, ctx.k, ctx.nt, ctx.starts = geom, ops, fast, k, nt, starts
        ctx.save_for_backward(v2dt2, gx, gz, amp, *saved)
        data = torch.cat(datas, -1) if len(datas) > 1 else datas[0]
        snap = torch.cat(snaps, 2) if len(snaps) > 1 else snaps[0]
        return data, snap

    @staticmethod
    def backward(ctx, g_data, g_snap):
        v2dt2, gx, gz, amp, qs, ps = ctx.saved_tensors
        geom, ops, fast, k, nt = ctx.geom, ctx.ops, ctx.fast, ctx.k, ctx.nt
        if torch.is_grad_enabled():
            # create_graph=True (double backward: Gauss-Newton products, Hessian-vector products): the fast transposed
            # kernel works in place and is not itself differentiable, so differentiate the plain-operator loop instead
            return _differentiable_backward(v2dt2, gx, gz, amp, geom, ops, g_data, g_snap)
        g_v = torch.zeros_like(v2dt2)
        g_gx = torch.zeros_like(gx) if gx is not None else None
        g_gz = torch.zeros_like(gz) if gz is not None else None
        g_amp = torch.zeros_like(amp)
        g_state = None
        snap_idx = 0 if not geom.snap_every else -(-nt // geom.snap_every)  # snapshots after the current block
        for b, n0 in reversed(list(enumerate(range(0, nt, k)))):
            n1 = min(n0 + k, nt)
            if k < nt:
                with torch.no_grad():
                    _, _, _, qs, ps = _run(ctx.starts[b], v2dt2, gx, gz, amp[..., n0:n1], geom, ops, fast, n0,
                                           store=True)
                ctx.starts[b] = None  # free the block's start state as soon as it has been used
            if g_state is None:  # the final state does not reach the outputs: zero adjoint
                g_state = _initial_state(fast, *g_data.shape[:2], *v2dt2.shape[-2:], v2dt2)
            n_snap = sum(1 for i in range(n0, n1) if geom.snap_every and i % geom.snap_every == 0)
            gs = g_snap[:, :, snap_idx - n_snap:snap_idx]
            snap_idx -= n_snap
            if fast is not None:
                gv, ggx, ggz, ga, g_state = _fast_backward(g_data[..., n0:n1], gs, g_state, v2dt2, gx, gz, qs, ps,
                                                           geom, ops, fast, n0)
            else:
                gv, ggx, ggz, ga, g_state = _full_backward(g_data[..., n0:n1], gs, g_state, v2dt2, gx, gz, qs, ps,
                                                           geom, ops, n0)
            g_v += gv
            if gx is not None:
                g_gx += ggx
                g_gz += ggz
            g_amp[..., n0:n1] = ga
        return g_v, g_gx, g_gz, g_amp, None, None, None, None, None


# ----------------------------------------------------------------------------------------------------------------------
# the public function


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
        flat = _checks.check_locations(name, loc.reshape(-1, *loc.shape[2:]), None, shape, device)
        flat = flat.reshape(loc.shape)
    else:
        flat = _checks.check_locations(name, loc, None, shape, device)
        flat = flat.unsqueeze(0).expand(batch, *flat.shape)
    if flat.shape[1] != n_shots:
        raise ValueError(f"{name} has {flat.shape[1]} shots but source_amplitudes has {n_shots}")
    return ((flat[..., 0] + widths.top) * w_pad + flat[..., 1] + widths.left).contiguous()


def _setup(v, dx, dt, source_amplitudes, source_locations, receiver_locations, rho, pml_width, free_surface,
           accuracy, wavefield_every, pml_vmax=None) -> _Setup:
    _checks.check_field("v", v)
    dx = _checks.check_scalar("dx", dx)
    dt = _checks.check_scalar("dt", dt)
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
    n_shots, nt = amp.shape[1], amp.shape[-1]
    if rho is not None:
        _checks.check_field("rho", rho)
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
        _checks.warn_points_per_wavelength(vmin, dx, fmax, MIN_POINTS_PER_WAVELENGTH[accuracy], stacklevel=4)
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
        vmax_b = [_checks.check_scalar("pml_vmax", pml_vmax)] * batch
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
    fast = _build_fast(ops, widths, h, w, geom, free_surface, nz) if _FAST_KERNEL else None
    return _Setup(v2dt2, gx, gz, amp, geom, ops, widths, batched, (batch, n_shots, h, w), fast)


def acoustic(v: torch.Tensor, dx: float, dt: float, source_amplitudes: torch.Tensor,
             source_locations: torch.Tensor, receiver_locations: torch.Tensor, *, rho: torch.Tensor | None = None,
             pml_width=20, free_surface: bool = False, accuracy: int = 4, checkpoint_every: int | None = None,
             return_wavefield: bool = False, wavefield_every: int = 1, gradient: str = "fused",
             pml_vmax: float | None = None):
    r"""Simulate 2D acoustic waves and record pressure at receivers; differentiable in ``v``, ``rho`` and sources.

    Solves :math:`\frac{1}{v^2} p_{tt} - \nabla^2 p = f(t)\,\delta(\mathbf{x}-\mathbf{x}_s)` (constant density) or,
    when ``rho`` is given, :math:`\frac{1}{\rho v^2} p_{tt} - \nabla\cdot(\frac{1}{\rho}\nabla p)
    = \frac{1}{\rho} f(t)\,\delta(\mathbf{x}-\mathbf{x}_s)`. The source is scaled by :math:`1/\rho` at the source
    so that a constant ``rho`` gives exactly the constant-density result (the scheme solves
    :math:`p_{tt} = v^2 (\nabla^2 p - \nabla\ln\rho\cdot\nabla p + f\delta)`; with constant ``rho`` the density term
    vanishes identically). The point source's delta is ``1/dx^2`` on its cell, so a homogeneous-medium trace equals
    the 2D Green's function convolved with ``f`` (DESIGN.md section 2).

    Parameters
    ----------
    v : Tensor (nz, nx) or (batch, nz, nx)
        Wave speed in m/s, z first (depth increasing downwards). A batch of models runs every shot in every model.
    dx : float
        Grid spacing in m (equal in z and x).
    dt : float
        Time step in s; must satisfy the CFL limit of ``accuracy``
        (:func:`probinv.physics._fd.max_stable_dt_second_order`; the error message states it).
    source_amplitudes : Tensor [n_shots, n_sources_per_shot, nt]
        Source time functions ``f`` (sample ``n`` at ``t = n dt``); the point source is ``f delta(x - x_s)``, so ``f``
        carries the unit of ``p`` times m^2 / s^2... i.e. of the right-hand side times m^2. With a batch of models it
        may also be ``[batch, n_shots, n_sources, nt]`` (one set of sources per model).
    source_locations : int64 Tensor [n_shots, n_sources_per_shot, 2]
        ``(z, x)`` grid indices; every index of the model grid is valid (the PML lies outside it). With a batch of
        models it may also be given per model, ``[batch, n_shots, n_sources_per_shot, 2]``.
    receiver_locations : int64 Tensor [n_shots, n_receivers, 2]
        ``(z, x)`` grid indices (or ``[batch, n_shots, n_receivers, 2]``).
    rho : Tensor (nz, nx) or (batch, nz, nx), optional
        Density in kg/m^3. ``None``: constant density.
    pml_width : int or 4 ints (top, bottom, left, right)
        CPML thickness in cells, added outside the model on every absorbing side.
    free_surface : bool
        Pressure-release surface on top. ``p = 0`` sits one cell above row 0 (at ``z = -dx``) and the wide stencils
        see the odd mirror ``p[-1-k] = -p[-1+k]`` there, so a source at row ``i`` has its image at row ``-2 - i``.
        The top PML is then removed.
    pml_vmax : float, optional
        Velocity (m/s) that sets the CPML damping strength. By default it is each model's maximum, rounded up to
        two significant digits. The forward map is then piecewise smooth in ``v``: it jumps slightly when the
        maximum crosses a multiple of 100 m/s (at ~2000 m/s). Samplers (NUTS/HMC) cannot cross such jumps; they
        collapse their step size. For inversion, give a fixed value, such as the prior's upper velocity bound.
    accuracy : {2, 4, 8}
        Spatial order of the central differences.
    checkpoint_every : int, optional
        Gradient checkpointing: keep only the state every ``k`` steps and recompute each block of ``k`` steps during
        backward (same gradient to rounding, memory ~ ``nt / k`` states + ``k`` wavefields instead of ``nt``;
        ``k ~ sqrt(2 nt)`` is about the smallest). Costs one extra forward.
    return_wavefield : bool
        Also return pressure snapshots of the user grid.
    wavefield_every : int
        With ``return_wavefield``, keep the snapshot of every ``wavefield_every``-th step (step ``n`` is
        ``t = n dt``).
    gradient : {"fused", "autograd"}
        How reverse-mode differentiation runs through the time loop. ``"fused"`` (default): one autograd node for the
        whole loop whose backward is the exact transpose of the discrete step, saving one wavefield per step (fast,
        predictable memory). ``"autograd"``: plain PyTorch autograd through every operation of every step (paper 2's
        unmodified AD; slower, more memory), kept so that AD == adjoint can be shown without any hand-derived code.
        Both give the same values and gradients to rounding error (tested); ``checkpoint_every`` applies to both.

    Returns
    -------
    Tensor [n_shots, n_receivers, nt] or [batch, n_shots, n_receivers, nt]
        Pressure at the receivers; sample ``n`` is ``t = n dt``.
    Tensor [n_shots, n_snapshots, nz, nx] (or with the batch first), only with ``return_wavefield=True``
        Snapshots at steps ``0, k, 2k, ...`` with ``k = wavefield_every``.

    Notes
    -----
    Leapfrog: ``p^{n+1} = 2 p^n - p^{n-1} + v^2 dt^2 (L p^n + f^n delta)`` with ``p^0 = p^{-1} = 0``; the receivers
    record ``p^n`` and the source enters through ``f^n``, centred on ``t = n dt``, so both sample ``n`` mean
    ``t = n dt``. CPML after Pasalic & McGarry (2010): per axis the stretched second derivative is
    ``u_xx + d_x psi + zeta`` with ``psi = b psi + a u_x``, ``zeta = b zeta + a (u_xx + d_x psi)``.
    """
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be None or a positive int (steps per block), got "
                         f"{checkpoint_every!r}")
    if not isinstance(return_wavefield, bool):
        raise TypeError(f"return_wavefield must be True or False, got {return_wavefield!r}")
    if gradient not in ("fused", "autograd"):
        raise ValueError(f"gradient must be 'fused' or 'autograd', got {gradient!r}")
    if gradient == "autograd":
        return _propagate_reference(v, dx, dt, source_amplitudes, source_locations, receiver_locations, rho=rho,
                                    pml_width=pml_width, free_surface=free_surface, accuracy=accuracy,
                                    checkpoint_every=checkpoint_every, return_wavefield=return_wavefield,
                                    wavefield_every=wavefield_every)
    s = _setup(v, dx, dt, source_amplitudes, source_locations, receiver_locations, rho, pml_width, free_surface,
               accuracy, wavefield_every if return_wavefield else None, pml_vmax)
    batch, shots, h, w = s.shape
    params = (s.v2dt2, s.gx, s.gz, s.amp)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in params)
    if not need_grad:
        with torch.no_grad():
            state = _initial_state(s.fast, batch, shots, h, w, s.v2dt2)
            _, data, snap, _, _ = _run(state, s.v2dt2, s.gx, s.gz, s.amp, s.geom, s.ops, s.fast, 0, store=False)
    else:
        data, snap = _AcousticPropagation.apply(s.v2dt2, s.gx, s.gz, s.amp, s.geom, s.ops, s.fast,
                                                checkpoint_every, s.shape)
    if not s.batched:
        data, snap = data[0], snap[0]
    return (data, snap) if return_wavefield else data


def _propagate_reference(v, dx, dt, source_amplitudes, source_locations, receiver_locations, *, rho=None,
                         pml_width=20, free_surface=False, accuracy=4, checkpoint_every=None,
                         return_wavefield=False, wavefield_every=1):
    """The same scheme with autograd through ordinary torch operations (``acoustic(..., gradient="autograd")``).

    ``checkpoint_every=k`` wraps each block of ``k`` steps in :func:`torch.utils.checkpoint.checkpoint`.
    """
    s = _setup(v, dx, dt, source_amplitudes, source_locations, receiver_locations, rho, pml_width, free_surface,
               accuracy, wavefield_every if return_wavefield else None)
    batch, shots, h, w = s.shape
    nt = s.amp.shape[-1]
    t, b, l, r = s.widths

    def block(n0, n1, *state):
        data, snaps = [], []
        for n in range(n0, n1):
            data.append(state[0].flatten(-2).gather(-1, s.geom.rec_idx))
            if return_wavefield and n % wavefield_every == 0:
                snaps.append(state[0][..., t:h - b, l:w - r])
            state, _ = _step(state, s.v2dt2, s.gx, s.gz, s.amp[..., n], s.geom.src_idx, s.ops)
        return (*state, torch.stack(data, -1), *snaps)

    state = tuple(s.v2dt2.new_zeros(batch, shots, h, w) for _ in range(6))
    k = nt if checkpoint_every is None else checkpoint_every
    data, snaps = [], []
    for n0 in range(0, nt, k):
        n1 = min(n0 + k, nt)
        if checkpoint_every is None:
            out = block(n0, n1, *state)
        else:
            from torch.utils.checkpoint import checkpoint  # imported here: it pulls in torch._dynamo (seconds)

            out = checkpoint(block, n0, n1, *state, use_reentrant=False)
        state, data_blk, snap_blk = out[:6], out[6], out[7:]
        data.append(data_blk)
        snaps.extend(snap_blk)
    data = torch.cat(data, -1)
    if return_wavefield:
        snap = torch.stack(snaps, -3)
        return (data, snap) if s.batched else (data[0], snap[0])
    return data if s.batched else data[0]


__all__ = ["acoustic"]
