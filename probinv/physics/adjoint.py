r"""Hand-written adjoint-state gradient of the acoustic L2 misfit (constant density).

Kept to prove that reverse-mode AD through :func:`probinv.physics.acoustic` gives the same gradient (paper 2's claim)
and to measure AD's overhead. It shares the grid set-up, the stencil primitives and the forward time loop with the
solver (it keeps the whole forward wavefield instead of what the AD node saves); the adjoint wave equation with its
transposed CPML and the imaging condition are written out here, independently of the AD node's backward. Its
backward loop is the plain full-grid version (no strip optimisation), so timings of it are a reference, not a tuned
competitor.

For the discrete forward :math:`p^{n+1} = 2p^n - p^{n-1} + v^2\Delta t^2 (L p^n + s^n)`, the Lagrangian gives the
adjoint wave equation run backwards in time, driven by the residual :math:`r^n = d^n_{pred} - d^n_{obs}` at the
receivers,

.. math:: \lambda^{n} = 2\lambda^{n+1} - \lambda^{n+2} + L^T\!\left(v^2 \Delta t^2 \lambda^{n+1}\right) + R^T r^n,

(with the CPML memory variables transposed along) and the imaging condition

.. math:: \frac{\partial J}{\partial v} = \sum_n \frac{2}{v}\, \lambda^{n+1} \left(p^{n+1} - 2 p^n + p^{n-1}\right),

i.e. the adjoint wavefield times the second time difference of the forward wavefield, which is stored whole.
"""
from __future__ import annotations

import torch

from ._acoustic_kernels import _fast_init_state, _fast_run_block, _step
from ._acoustic_setup import _setup
from ._acoustic_stencils import _stencil_t
from .boundaries import pad_model


def _fold_replicate(g: torch.Tensor, before: int, after: int, axis: int) -> torch.Tensor:
    """Transpose of replicate padding along ``axis``: the layer's entries are summed onto the edge sample."""
    n = g.shape[axis] - before - after
    core = g.narrow(axis, before, n).clone()
    if before:
        core.narrow(axis, 0, 1).add_(g.narrow(axis, 0, before).sum(axis, keepdim=True))
    if after:
        core.narrow(axis, n - 1, 1).add_(g.narrow(axis, before + n, after).sum(axis, keepdim=True))
    return core


def l2_gradient(v: torch.Tensor, dx: float, dt: float, source_amplitudes: torch.Tensor,
                source_locations: torch.Tensor, receiver_locations: torch.Tensor, observed: torch.Tensor, *,
                pml_width=20, free_surface: bool = False, accuracy: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Misfit :math:`J = \frac12 \lVert d_{pred}(v) - d_{obs} \rVert^2` and :math:`\partial J / \partial v`.

    Parameters
    ----------
    v, dx, dt, source_amplitudes, source_locations, receiver_locations, pml_width, free_surface, accuracy
        As in :func:`probinv.physics.acoustic` (constant density).
    observed : Tensor [n_shots, n_receivers, nt] (or [batch, n_shots, n_receivers, nt])
        Observed data, shaped like the predicted data.

    Returns
    -------
    loss : Tensor []
        The misfit (0-dim, dtype of ``v``), in squared data units.
    grad : Tensor, shape of ``v``
        Its gradient with respect to ``v`` in (data units)^2 s/m. No autograd graph is built.
    """
    with torch.no_grad():
        v = v.detach()
        s = _setup(v, dx, dt, source_amplitudes.detach(), source_locations, receiver_locations, None, pml_width,
                   free_surface, accuracy, None)
        batch, shots, h, w = s.shape
        nt = s.amp.shape[-1]
        expected = (shots, s.geom.rec_idx.shape[-1], nt) if not s.batched else (batch, shots,
                                                                                  s.geom.rec_idx.shape[-1], nt)
        if not isinstance(observed, torch.Tensor) or tuple(observed.shape) != expected:
            got = tuple(observed.shape) if isinstance(observed, torch.Tensor) else type(observed).__name__
            raise ValueError(f"observed must be shaped like the predicted data {expected}, got {got}")
        obs = observed.detach().to(v.dtype)
        obs = obs if s.batched else obs.unsqueeze(0)
        ops, src, rec = s.ops, s.geom.src_idx, s.geom.rec_idx

        # forward, storing the whole wavefield p^0 .. p^nt (the solver's fast kernel when it applies)
        if s.fast is not None:
            state = _fast_init_state(s.fast, batch, shots, s.v2dt2)
            state, data, _, _, ps = _fast_run_block(state, s.v2dt2, None, None, s.amp, s.geom, ops, s.fast, 0,
                                                    store=False, keep_p=True)
            m = s.fast.m
            wavefield = torch.cat([ps, state[0][None, ..., m:m + h, m:m + w]])
        else:
            wavefield = v.new_empty(nt + 1, batch, shots, h, w)
            state = tuple(v.new_zeros(batch, shots, h, w) for _ in range(6))
            data = v.new_empty(batch, shots, rec.shape[-1], nt)
            for n in range(nt):
                wavefield[n] = state[0]
                data[..., n] = state[0].flatten(-2).gather(-1, rec)
                state, _ = _step(state, s.v2dt2, None, None, s.amp[..., n], src, ops)
            wavefield[nt] = state[0]
        residual = data - obs
        loss = 0.5 * residual.square().sum()

        # adjoint wave equation backwards in time; lam1 = lambda^{n+1}, lam2 = lambda^{n+2}
        lam1 = v.new_zeros(batch, shots, h, w)
        lam2 = torch.zeros_like(lam1)
        mem = {k: torch.zeros_like(lam1) for k in ("zx", "zz", "px", "pz")}
        g_v2dt2 = v.new_zeros(batch, 1, h, w)
        for n in range(nt - 1, -1, -1):
            # imaging condition for step n: lambda^{n+1} (p^{n+1} - 2 p^n + p^{n-1}) / (v^2 dt^2)
            pm1 = wavefield[n - 1] if n > 0 else torch.zeros_like(lam1)
            g_v2dt2 += (lam1 * (wavefield[n + 1] - 2 * wavefield[n] + pm1)).sum(1, keepdim=True)
            u = s.v2dt2 * lam1
            # transpose of the CPML-stretched Laplacian applied to u, memory variables updated backwards
            zx = mem["zx"] + u
            zz = mem["zz"] + u
            wx = u + ops.ax * zx
            wz = u + ops.az * zz
            px = mem["px"] + _stencil_t(wx, ops.w1, -1)
            pz = mem["pz"] + _stencil_t(wz, ops.w1, -2)
            mem = {"zx": ops.bx * zx, "zz": ops.bz * zz, "px": ops.bx * px, "pz": ops.bz * pz}
            lt_u = (_stencil_t(wx, ops.w2, -1) + _stencil_t(wz, ops.w2, -2, ops.c2)
                    + _stencil_t(ops.ax * px, ops.w1, -1) + _stencil_t(ops.az * pz, ops.w1, -2, ops.c1))
            lam0 = 2 * lam1 - lam2 + lt_u
            lam0 = lam0.flatten(-2).scatter_add(-1, rec, residual[..., n]).view_as(lam0)
            lam2, lam1 = lam1, lam0
        g_v2dt2 = g_v2dt2 / s.v2dt2
        # chain rule through v2dt2 = v_padded^2 dt^2, then the transpose of the replicate padding
        vpad = pad_model(v if s.batched else v.unsqueeze(0), s.widths)
        g_pad = 2 * dt ** 2 * vpad * g_v2dt2[:, 0]
        wd = s.widths
        grad = _fold_replicate(_fold_replicate(g_pad, wd.left, wd.right, -1), wd.top, wd.bottom, -2)
        return loss, (grad if s.batched else grad[0])


__all__ = ["l2_gradient"]
