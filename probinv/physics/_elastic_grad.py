"""Reverse-mode differentiation of the elastic time loops: one autograd node per block with the exact transposed steps.

:class:`_TimeBlock` runs a block of steps of a :class:`_Spec` (a solver's step and its adjoint, closures built by
:func:`probinv.physics.sh` / :func:`probinv.physics.psv`); :func:`_run` chains the blocks, with checkpointing, or
runs plain autograd through every step (the reference).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint


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
