"""Time stepping of the acoustic solver and its exact transpose (no autograd inside).

Two kernels of the same discrete operator: the plain full-grid one (:func:`_step`, :func:`_step_transpose`,
:func:`_run_block`, :func:`_full_backward`), which also runs under autograd as the reference, and the fast strip
kernel (:func:`_fast_run_block`, :func:`_fast_backward`) that keeps the wavefields in zero-padded buffers updated in
place and does the CPML work only in the layer strips. :func:`_run` and :func:`_initial_state` pick one.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._acoustic_stencils import _Ops, _stencil, _stencil_t
from .boundaries import Widths

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


def _build_fast(ops: _Ops, widths: Widths, h: int, w: int, geom: _Geometry, free_surface: bool,
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
    """Run the fast forward over ``amp.shape[-1]`` steps (no autograd); same outputs as :func:`_run_block`.

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
    s_adj = [g.narrow(s.axis, 2 * m, s.n).clone() for g, s in zip(g_state[2:2 + ns], fast.strips, strict=True)]
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
    for sa, s in zip(s_adj, fast.strips, strict=True):
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

