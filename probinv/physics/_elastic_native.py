"""The SH and P-SV time loops on the compiled kernel (``_native/elastic.c``): forward, fused gradient, checkpointing.

Same discrete operators and conventions as :func:`probinv.physics.elastic.sh` / :func:`~probinv.physics.elastic.psv`
(the PyTorch reference): the solver computes the padded medium coefficients, the CPML profiles, the scaled source
amplitudes and the flat source/receiver indices exactly as for the reference path and hands them to the C code,
which runs whole time loops of the (model, shot) pairs on ``torch.get_num_threads()`` threads. The gradient is one
autograd node: the kernel's hand-written transposed steps (the discrete adjoint) accumulate the gradients of the
medium coefficients and of the source amplitudes; ``checkpoint_every=k`` keeps the state at every k-th step and
recomputes each block during the backward pass.
"""
from __future__ import annotations

import ctypes
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from . import _native

_P = ctypes.c_void_p
_I = ctypes.c_int64

#: per kind: number of coefficient fields, of state arrays (wavefields and CPML memory), of fields saved per step
_SIZES = {"sh": (3, 6, 3), "psv": (7, 13, 5)}
_SOURCE_TYPES = {"explosive": 0, "force_z": 1, "force_x": 2}
_RECEIVER_COMPONENTS = {"vz": 0, "vx": 1, "pressure": 2}


class _ElArgs(ctypes.Structure):
    """Mirror of ``ElArgs`` in ``_native/elastic.c`` (same field order)."""

    _fields_ = ([(n, _I) for n in ("n_bs", "shots", "H", "W", "M", "nsteps", "ns", "nr", "free_surface", "src_type",
                                   "rec_comp", "xl", "xr", "zt", "zb", "n_threads")]
                + [("dt", ctypes.c_double)]
                + [(n, _P) for n in ("co", "px", "pz", "cc", "state", "src", "rec", "amp", "data", "saves", "lam",
                                     "g_data", "g_co", "g_amp")])


def _lib():
    lib = _native.load("elastic")
    if lib is not None and not getattr(lib, "_probinv_ready", False):
        for kind in ("sh", "psv"):
            for which in ("forward", "backward"):
                for sfx in ("f32", "f64"):
                    fn = getattr(lib, f"probinv_{kind}_{which}_{sfx}")
                    fn.argtypes = [ctypes.POINTER(_ElArgs)]
                    fn.restype = ctypes.c_int
        lib._probinv_ready = True
    return lib


def available(t: torch.Tensor) -> bool:
    """Whether the compiled kernel can run ``t``'s device and dtype (CPU, float32/float64) and is built."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and _lib() is not None


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _layer_bounds(masks: list[torch.Tensor], n: int) -> tuple[int, int]:
    """``(lo, hi)`` such that no CPML profile in ``masks`` is active in ``[lo, hi)`` (the interior); ``(n, n)`` if
    an active cell lies between two inactive ones (then every cell takes the general update: still exact).
    """
    active = torch.zeros(n, dtype=torch.bool)
    for m in masks:
        active |= m.reshape(-1, n).any(0).cpu()
    inactive = torch.nonzero(~active).flatten().tolist()
    if not inactive:
        return n, n
    lo, hi = inactive[0], inactive[-1] + 1
    if hi - lo != len(inactive):
        return n, n
    return lo, hi


class _Plan(NamedTuple):
    """Everything constant during one call, as the kernel wants it."""

    kind: str
    suffix: str
    batch: int
    shots: int
    h: int
    w: int
    m: int
    nsteps: int
    keep: tuple  # tensors the pointers refer to
    ints: dict
    ptrs: dict


def _plan(kind: str, prof: dict, coeffs_c: tuple, src_idx, rec_idx, batch: int, shots: int, shape: tuple,
          nt: int, free_surface: bool, dt: float, inv_dx: float, stencil, source_type: str = "explosive",
          receiver_component: str = "vz") -> _Plan:
    h, w = shape
    dtype = prof["x0"][0].dtype

    def prof_axis(tag0, tagh, n):
        parts = [prof[tag0][0], prof[tag0][1], prof[tagh][0], prof[tagh][1]]
        return torch.stack([p.reshape(-1, n).expand(batch, n) for p in parts], 1).contiguous()

    px = prof_axis("x0", "xh", w)
    pz = prof_axis("z0", "zh", h)

    def masks(tag0, tagh):
        return [(prof[t][0] != 0) | (prof[t][1] != 1) for t in (tag0, tagh)]

    xl, xr = _layer_bounds(masks("x0", "xh"), w)
    zt, zb = _layer_bounds(masks("z0", "zh"), h)
    cc = torch.tensor([c * inv_dx for c in stencil], dtype=dtype)
    src = src_idx.expand(batch, -1, -1).reshape(batch * shots, -1).contiguous()
    rec = rec_idx.expand(batch, -1, -1).reshape(batch * shots, -1).contiguous()
    ints = dict(n_bs=batch * shots, shots=shots, H=h, W=w, M=len(stencil), ns=src.shape[-1], nr=rec.shape[-1],
                free_surface=int(free_surface), src_type=_SOURCE_TYPES[source_type],
                rec_comp=_RECEIVER_COMPONENTS[receiver_component], xl=xl, xr=xr, zt=zt, zb=zb)
    keep = (px, pz, cc, src, rec)
    ptrs = dict(px=_ptr(px), pz=_ptr(pz), cc=_ptr(cc), src=_ptr(src), rec=_ptr(rec))
    return _Plan(kind, "f32" if dtype == torch.float32 else "f64", batch, shots, h, w, len(stencil), nt, keep,
                 dict(ints, dt=dt), ptrs)


def _zeros_state(plan: _Plan, like: torch.Tensor) -> torch.Tensor:
    n_state = _SIZES[plan.kind][1]
    return like.new_zeros(plan.batch * plan.shots, n_state, plan.h + 3 * plan.m, plan.w + 2 * plan.m)


def _call(plan: _Plan, which: str, nsteps: int, **ptrs) -> None:
    args = _ElArgs(**plan.ints, nsteps=nsteps, n_threads=torch.get_num_threads())
    for k, p in {**plan.ptrs, **ptrs}.items():
        setattr(args, k, p)
    err = getattr(_lib(), f"probinv_{plan.kind}_{which}_{plan.suffix}")(ctypes.byref(args))
    if err:
        raise MemoryError(f"the compiled {plan.kind} {which} kernel failed (code {err}: out of memory)")


def _forward_block(plan: _Plan, state: torch.Tensor, co: torch.Tensor, amp: torch.Tensor, store: bool):
    """Run ``amp.shape[-1]`` steps in place on ``state``; returns (data [n_bs, nr, k], saves or None)."""
    n_bs, nsteps = plan.batch * plan.shots, amp.shape[-1]
    amp_c = amp.reshape(n_bs, -1, nsteps).contiguous()
    data = co.new_empty(n_bs, plan.ints["nr"], nsteps)
    saves = co.new_empty(n_bs, nsteps, _SIZES[plan.kind][2], plan.h, plan.w) if store else None
    _call(plan, "forward", nsteps, co=_ptr(co), state=_ptr(state), amp=_ptr(amp_c), data=_ptr(data),
          saves=_ptr(saves))
    return data, saves


def _run_forward(plan: _Plan, co: torch.Tensor, amp: torch.Tensor, every: int | None, store: bool):
    nt = amp.shape[-1]
    k = nt if every is None else min(every, nt)
    state = _zeros_state(plan, co)
    datas, starts, saves = [], [], None
    for n0 in range(0, nt, k):
        if store and k < nt:
            starts.append(state.clone())
        data, saves = _forward_block(plan, state, co, amp[..., n0:n0 + k], store=store and k >= nt)
        datas.append(data)
    data = torch.cat(datas, -1) if len(datas) > 1 else datas[0]
    return data.view(plan.batch, plan.shots, *data.shape[1:]), starts, saves, k


class _NativeElasticPropagation(torch.autograd.Function):
    """The whole SH / P-SV time loop on the compiled kernel as one autograd node with the compiled transpose."""

    @staticmethod
    def forward(ctx, co, amp, plan, every):
        co = co.contiguous()
        amp_full = amp.expand(plan.batch, *amp.shape[1:]).contiguous()
        data, starts, saves, k = _run_forward(plan, co, amp_full, every, store=True)
        ctx.plan, ctx.k, ctx.starts, ctx.amp_shape = plan, k, starts, amp.shape
        ctx.save_for_backward(co, amp_full, saves)
        return data

    @staticmethod
    @once_differentiable  # second derivatives would need the adjoint of the adjoint: refuse them loudly
    def backward(ctx, g_data):
        co, amp, saves = ctx.saved_tensors
        plan, k = ctx.plan, ctx.k
        nt = amp.shape[-1]
        n_bs = plan.batch * plan.shots
        n_co = _SIZES[plan.kind][0]
        g_co = co.new_zeros(n_bs, n_co, plan.h, plan.w)
        g_amp = torch.zeros_like(amp)
        lam = _zeros_state(plan, co)
        g_data = g_data.reshape(n_bs, -1, nt)
        for b, n0 in reversed(list(enumerate(range(0, nt, k)))):
            n1 = min(n0 + k, nt)
            if k < nt:
                # the block runs in place on a copy: the saved start stays valid for another backward pass
                # (retain_graph: e.g. Laplace's repeated vector-Jacobian products on one graph)
                _, saves = _forward_block(plan, ctx.starts[b].clone(), co, amp[..., n0:n1], store=True)
            ga = co.new_empty(n_bs, plan.ints["ns"], n1 - n0)
            gd = g_data[..., n0:n1].contiguous()  # kept referenced while the kernel reads it
            _call(plan, "backward", n1 - n0, co=_ptr(co), saves=_ptr(saves), lam=_ptr(lam), g_data=_ptr(gd),
                  g_co=_ptr(g_co), g_amp=_ptr(ga))
            g_amp[..., n0:n1] = ga.view(*amp.shape[:-1], n1 - n0)
            saves = None
        g_co = g_co.view(plan.batch, plan.shots, n_co, plan.h, plan.w).sum(1)
        return g_co, g_amp.sum_to_size(ctx.amp_shape), None, None


def propagate(kind: str, coeffs: tuple, amps: torch.Tensor, prof: dict, setup, free_surface: bool, dt: float,
              inv_dx: float, checkpoint_every: int | None, source_type: str = "explosive",
              receiver_component: str = "vz") -> torch.Tensor:
    """Receiver data ``[batch, shots, n_rec, nt]`` of one SH (``kind="sh"``) or P-SV (``"psv"``) call.

    ``coeffs``: the padded medium coefficients ``[batch, 1, NZ, NX]`` in the order of the reference path
    (SH: ``mu_x, mu_z, dt / rho``; P-SV: ``dt / rho_x, dt / rho_z, dt (lambda + 2 mu)_xx, dt lambda_xx, dt lambda,
    dt (lambda + 2 mu), dt mu_xz``); ``amps``: the scaled source terms ``[batch or 1, shots, n_src, nt]``.
    """
    batch = coeffs[0].shape[0]
    shots, _, nt = amps.shape[1:]
    h, w = setup.padded_shape
    plan = _plan(kind, prof, coeffs, setup.src_idx, setup.rec_idx, batch, shots, (h, w), nt, free_surface, dt,
                 inv_dx, setup.coeffs, source_type, receiver_component)
    co = torch.stack([c.expand(batch, 1, h, w).reshape(batch, h, w) for c in coeffs], 1)
    need_grad = torch.is_grad_enabled() and (co.requires_grad or amps.requires_grad)
    if not need_grad:
        with torch.no_grad():
            amp_full = amps.expand(batch, *amps.shape[1:]).contiguous()
            data, _, _, _ = _run_forward(plan, co.contiguous(), amp_full, None, store=False)
        return data
    return _NativeElasticPropagation.apply(co, amps, plan, checkpoint_every)
