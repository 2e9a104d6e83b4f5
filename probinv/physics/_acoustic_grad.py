"""Reverse-mode differentiation of the acoustic time loop: the fused autograd node and the plain-autograd reference.

:class:`_AcousticPropagation` is the whole time loop as one :class:`torch.autograd.Function`; its backward runs the
hand-transposed steps of :mod:`._acoustic_kernels` in reverse, re-running blocks from saved states when checkpointing.
:func:`_propagate_reference` is the same scheme with autograd through ordinary torch operations
(``acoustic(..., gradient="autograd")``), the reference the tests compare with.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from ._acoustic_kernels import _fast_backward, _full_backward, _initial_state, _run, _step
from ._acoustic_setup import _setup


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


def _propagate_reference(v, dx, dt, source_amplitudes, source_locations, receiver_locations, *, rho=None,
                         pml_width=20, free_surface=False, accuracy=4, checkpoint_every=None,
                         return_wavefield=False, wavefield_every=1, pml_vmax=None):
    """Run the same scheme with autograd through ordinary torch operations (``acoustic(..., gradient="autograd")``).

    ``checkpoint_every=k`` wraps each block of ``k`` steps in :func:`torch.utils.checkpoint.checkpoint`.
    """
    s = _setup(v, dx, dt, source_amplitudes, source_locations, receiver_locations, rho, pml_width, free_surface,
               accuracy, wavefield_every if return_wavefield else None, pml_vmax, fast_kernel=False)
    batch, shots, h, w = s.shape
    nt = s.amp.shape[-1]
    t, b, lf, r = s.widths

    def block(n0, n1, *state):
        data, snaps = [], []
        for n in range(n0, n1):
            data.append(state[0].flatten(-2).gather(-1, s.geom.rec_idx))
            if return_wavefield and n % wavefield_every == 0:
                snaps.append(state[0][..., t:h - b, lf:w - r])
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
            out = checkpoint(block, n0, n1, *state, use_reentrant=False)
        state, data_blk, snap_blk = out[:6], out[6], out[7:]
        data.append(data_blk)
        snaps.extend(snap_blk)
    data = torch.cat(data, -1)
    if return_wavefield:
        snap = torch.stack(snaps, -3)
        return (data, snap) if s.batched else (data[0], snap[0])
    return data if s.batched else data[0]
