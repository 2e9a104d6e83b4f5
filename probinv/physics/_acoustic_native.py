"""The acoustic time loop on the compiled kernel (``_native/acoustic.c``): forward, fused gradient, checkpointing.

Same discrete operator and conventions as :mod:`._acoustic_kernels` (the PyTorch reference): the same
``_Setup`` (padding, CPML coefficients, stencil weights, free-surface corrections, source/receiver indices) drives
both, and the C code evaluates ``_step`` / ``_step_transpose`` point by point. OpenMP threads run whole time loops
of different (model, shot) pairs (``torch.get_num_threads()`` of them), so there is no per-step synchronisation and
no per-step Python. The wavefield state of one (model, shot) pair is ``(p^n, p^{n-1}, psi_x, psi_z, zeta_x,
zeta_z)`` on the padded grid plus an ``M = accuracy / 2`` zero halo.
"""
from __future__ import annotations

import ctypes
from typing import NamedTuple

import torch

from . import _native
from ._acoustic_grad import _differentiable_backward

_P = ctypes.c_void_p
_I = ctypes.c_int64


class _AcArgs(ctypes.Structure):
    """Mirror of ``AcArgs`` in ``_native/acoustic.c`` (same field order)."""

    _fields_ = ([(n, _I) for n in ("n_bs", "shots", "H", "W", "M", "nsteps", "n0", "ns", "nr", "left", "right",
                                   "top", "bottom", "free_surface", "snap_every", "crop_top", "crop_left",
                                   "crop_nz", "crop_nx", "n_threads")]
                + [(n, _P) for n in ("v2dt2", "gx", "gz", "ax", "bx", "az", "bz", "w1", "w2", "c1", "c2",
                                     "p", "pp", "psx", "psz", "zx", "zz", "src", "rec", "amp", "data", "qs", "ps",
                                     "snaps", "a1", "a0", "psxb", "pszb", "zxb", "zzb", "g_data", "g_snap", "g_v",
                                     "g_gx", "g_gz", "g_amp")])


def _lib():
    lib = _native.load("acoustic")
    if lib is not None and not getattr(lib, "_probinv_ready", False):
        for fn in ("probinv_acoustic_forward_f32", "probinv_acoustic_forward_f64", "probinv_acoustic_backward_f32",
                   "probinv_acoustic_backward_f64"):
            getattr(lib, fn).argtypes = [ctypes.POINTER(_AcArgs)]
            getattr(lib, fn).restype = ctypes.c_int
        lib._probinv_ready = True
    return lib


def available(v: torch.Tensor) -> bool:
    """Whether the compiled kernel can run ``v``'s device and dtype (CPU, float32/float64) and is built."""
    return v.device.type == "cpu" and v.dtype in (torch.float32, torch.float64) and _lib() is not None


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _Plan(NamedTuple):
    """Everything constant during one call, as the C kernel wants it (contiguous tensors, ints)."""

    suffix: str
    batch: int
    shots: int
    h: int
    w: int
    m: int
    widths: tuple  # (top, bottom, left, right) of the CPML
    crop: tuple  # (top, left, nz, nx) of the user grid inside the padded one
    snap_every: int
    keep: tuple  # tensors the pointers below refer to
    ints: dict
    ptrs: dict


def _plan(s) -> _Plan:
    """Build the kernel's plan from a :class:`._acoustic_setup._Setup` (``s.fast`` is not used)."""
    batch, shots, h, w = s.shape
    ops, geom = s.ops, s.geom
    m = (len(ops.w2) - 1) // 2
    dtype = s.v2dt2.dtype
    w1 = torch.tensor(ops.w1, dtype=dtype)
    w2 = torch.tensor(ops.w2, dtype=dtype)
    c1 = None if ops.c1 is None else ops.c1.contiguous()
    c2 = None if ops.c2 is None else ops.c2.contiguous()
    ax, bx = (t.reshape(-1, w).contiguous() for t in (ops.ax, ops.bx))
    az, bz = (t.reshape(-1, h).contiguous() for t in (ops.az, ops.bz))
    src = geom.src_idx.reshape(batch * shots, -1).contiguous()
    rec = geom.rec_idx.reshape(batch * shots, -1).contiguous()
    t, bt, lf, rt = geom.crop
    keep = (w1, w2, c1, c2, ax, bx, az, bz, src, rec)
    ints = dict(n_bs=batch * shots, shots=shots, H=h, W=w, M=m, ns=src.shape[-1], nr=rec.shape[-1],
                left=s.widths.left, right=s.widths.right, top=s.widths.top, bottom=s.widths.bottom,
                free_surface=int(c2 is not None), snap_every=geom.snap_every, crop_top=t, crop_left=lf,
                crop_nz=h - t - bt, crop_nx=w - lf - rt)
    ptrs = dict(ax=_ptr(ax), bx=_ptr(bx), az=_ptr(az), bz=_ptr(bz), w1=_ptr(w1), w2=_ptr(w2), c1=_ptr(c1),
                c2=_ptr(c2), src=_ptr(src), rec=_ptr(rec))
    return _Plan("f32" if dtype == torch.float32 else "f64", batch, shots, h, w, m, tuple(s.widths),
                 (t, lf, h - t - bt, w - lf - rt), geom.snap_every, keep, ints, ptrs)


def _zeros_state(plan: _Plan, like: torch.Tensor) -> list[torch.Tensor]:
    hp, wp = plan.h + 2 * plan.m, plan.w + 2 * plan.m
    return [like.new_zeros(plan.batch * plan.shots, hp, wp) for _ in range(6)]


def _n_snaps(plan: _Plan, n0: int, nsteps: int) -> int:
    if not plan.snap_every:
        return 0
    return sum(1 for i in range(n0, n0 + nsteps) if i % plan.snap_every == 0)


def _args(plan: _Plan, nsteps: int, n0: int, **ptrs) -> _AcArgs:
    a = _AcArgs(**plan.ints, nsteps=nsteps, n0=n0, n_threads=torch.get_num_threads())
    for k, p in {**plan.ptrs, **ptrs}.items():
        setattr(a, k, p)
    return a


def _call(plan: _Plan, which: str, args: _AcArgs) -> None:
    err = getattr(_lib(), f"probinv_acoustic_{which}_{plan.suffix}")(ctypes.byref(args))
    if err:
        raise MemoryError(f"the compiled acoustic {which} kernel failed (code {err}: out of memory)")


def _forward_block(plan: _Plan, state: list, v2dt2, gx, gz, amp, n0: int, store: bool):
    """Run ``amp.shape[-1]`` steps in place on ``state``; returns (state, data, snapshots, q^n, p^n)."""
    n_bs, nsteps = plan.batch * plan.shots, amp.shape[-1]
    like = v2dt2
    amp_c = amp.reshape(n_bs, -1, nsteps).contiguous()
    data = like.new_empty(n_bs, plan.ints["nr"], nsteps)
    qs = like.new_empty(n_bs, nsteps, plan.h, plan.w) if store else None
    ps = like.new_empty(n_bs, nsteps, plan.h, plan.w) if store and gx is not None else None
    n_snap = _n_snaps(plan, n0, nsteps)
    snaps = like.new_empty(n_bs, n_snap, plan.crop[2], plan.crop[3])
    args = _args(plan, nsteps, n0, v2dt2=_ptr(v2dt2), gx=_ptr(gx), gz=_ptr(gz), amp=_ptr(amp_c), data=_ptr(data),
                 qs=_ptr(qs), ps=_ptr(ps), snaps=_ptr(snaps) if n_snap else None,
                 **dict(zip(("p", "pp", "psx", "psz", "zx", "zz"), map(_ptr, state), strict=True)))
    _call(plan, "forward", args)
    if nsteps % 2:  # the kernel swaps its p / p_prev pointers every step
        state = [state[1], state[0], *state[2:]]
    return state, data, snaps, qs, ps


def _backward_block(plan: _Plan, astate: list, v2dt2, gx, gz, g_data, g_snap, qs, ps, n0: int, g_v, g_gx, g_gz):
    """Transposed steps of one block in reverse, in place on ``astate``; returns (astate, adjoint of amp)."""
    n_bs, nsteps = plan.batch * plan.shots, qs.shape[1]
    g_amp = v2dt2.new_empty(n_bs, plan.ints["ns"], nsteps)
    g_data = g_data.reshape(n_bs, -1, nsteps).contiguous()
    n_snap = _n_snaps(plan, n0, nsteps)
    if g_snap is not None and n_snap:
        g_snap = g_snap.reshape(n_bs, n_snap, plan.crop[2], plan.crop[3]).contiguous()
    else:
        g_snap = None
    args = _args(plan, nsteps, n0, v2dt2=_ptr(v2dt2), gx=_ptr(gx), gz=_ptr(gz), qs=_ptr(qs), ps=_ptr(ps),
                 g_data=_ptr(g_data), g_snap=_ptr(g_snap), g_v=_ptr(g_v), g_gx=_ptr(g_gx), g_gz=_ptr(g_gz),
                 g_amp=_ptr(g_amp), **dict(zip(("a1", "a0", "psxb", "pszb", "zxb", "zzb"), map(_ptr, astate),
                                               strict=True)))
    _call(plan, "backward", args)
    if nsteps % 2:
        astate = [astate[1], astate[0], *astate[2:]]
    return astate, g_amp


def _contig(t):
    return None if t is None else t.contiguous()


def _run_forward(plan: _Plan, v2dt2, gx, gz, amp, every, store: bool):
    """The whole time loop; returns data, snapshots and, for backward, the block start states or q^n/p^n."""
    nt = amp.shape[-1]
    k = nt if every is None else min(every, nt)
    state = _zeros_state(plan, v2dt2)
    datas, snaps, starts, saved = [], [], [], (None, None)
    for n0 in range(0, nt, k):
        if store and k < nt:
            starts.append([t.clone() for t in state])
        state, data, snap, qs, ps = _forward_block(plan, state, v2dt2, gx, gz, amp[..., n0:n0 + k], n0,
                                                   store=store and k >= nt)
        datas.append(data)
        snaps.append(snap)
        saved = (qs, ps)
    data = torch.cat(datas, -1) if len(datas) > 1 else datas[0]
    snap = torch.cat(snaps, 1) if len(snaps) > 1 else snaps[0]
    b, s = plan.batch, plan.shots
    return data.view(b, s, *data.shape[1:]), snap.view(b, s, *snap.shape[1:]), starts, saved, k


class _NativeAcousticPropagation(torch.autograd.Function):
    """The whole time loop on the compiled kernel as one autograd node (mirror of ``_AcousticPropagation``)."""

    @staticmethod
    def forward(ctx, v2dt2, gx, gz, amp, plan, geom, ops, every):
        v2dt2, gx, gz = _contig(v2dt2), _contig(gx), _contig(gz)
        data, snap, starts, saved, k = _run_forward(plan, v2dt2, gx, gz, amp, every, store=True)
        ctx.plan, ctx.geom, ctx.ops, ctx.k, ctx.starts = plan, geom, ops, k, starts
        ctx.save_for_backward(v2dt2, gx, gz, amp, *saved)
        return data, snap

    @staticmethod
    def backward(ctx, g_data, g_snap):
        v2dt2, gx, gz, amp, qs, ps = ctx.saved_tensors
        plan, k = ctx.plan, ctx.k
        if torch.is_grad_enabled():
            # create_graph=True (double backward): the compiled transpose is not itself differentiable, so
            # differentiate the plain-operator loop of the reference path instead (as the fused torch node does)
            return _differentiable_backward(v2dt2, gx, gz, amp, ctx.geom, ctx.ops, g_data, g_snap)[:4] + (None,) * 4
        nt = amp.shape[-1]
        n_bs = plan.batch * plan.shots
        g_v = v2dt2.new_zeros(n_bs, plan.h, plan.w)
        g_gx = v2dt2.new_zeros(n_bs, plan.h, plan.w) if gx is not None else None
        g_gz = v2dt2.new_zeros(n_bs, plan.h, plan.w) if gz is not None else None
        g_amp = torch.zeros_like(amp)
        astate = _zeros_state(plan, v2dt2)
        g_data = g_data.contiguous()
        has_snap = plan.snap_every and g_snap is not None
        snap_end = _n_snaps(plan, 0, nt)
        for b, n0 in reversed(list(enumerate(range(0, nt, k)))):
            n1 = min(n0 + k, nt)
            if k < nt:
                _, _, _, qs, ps = _forward_block(plan, [t.clone() for t in ctx.starts[b]], v2dt2, gx, gz,
                                                 amp[..., n0:n1], n0, store=True)
            n_snap = _n_snaps(plan, n0, n1 - n0)
            gs = g_snap[:, :, snap_end - n_snap:snap_end] if has_snap else None
            snap_end -= n_snap
            astate, ga = _backward_block(plan, astate, v2dt2, gx, gz, g_data[..., n0:n1], gs, qs, ps, n0, g_v,
                                         g_gx, g_gz)
            g_amp[..., n0:n1] = ga.view(*amp.shape[:-1], n1 - n0)
            qs = ps = None
        shape = (plan.batch, plan.shots, plan.h, plan.w)
        g_v = g_v.view(shape).sum(1, keepdim=True)
        g_gx = None if g_gx is None else g_gx.view(shape).sum(1, keepdim=True)
        g_gz = None if g_gz is None else g_gz.view(shape).sum(1, keepdim=True)
        return g_v, g_gx, g_gz, g_amp, None, None, None, None


def propagate(s, every, need_grad: bool):
    """Data ``[batch, shots, nr, nt]`` and snapshots ``[batch, shots, n_snap, nz, nx]`` of a set-up ``s``."""
    plan = _plan(s)
    if not need_grad:
        with torch.no_grad():
            data, snap, _, _, _ = _run_forward(plan, s.v2dt2.contiguous(), _contig(s.gx), _contig(s.gz), s.amp,
                                               None, store=False)
        return data, snap
    return _NativeAcousticPropagation.apply(s.v2dt2, s.gx, s.gz, s.amp, plan, s.geom, s.ops, every)
