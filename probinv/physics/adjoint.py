r"""Adjoint-state gradient of the acoustic L2 misfit (constant density), written independently of the solver.

Kept to check that reverse-mode AD through :func:`probinv.physics.acoustic` gives the gradient of the adjoint-state
method (paper 2's claim), and to measure AD's overhead against it.

What it is
----------
The **discrete** adjoint of the scheme that :func:`probinv.physics.acoustic` documents, derived by hand from the
Lagrangian of the discrete equations (not the continuous adjoint equation discretised afterwards). So the two
gradients are the same number computed in two different ways and agree to rounding error, not merely to
discretisation error. For every axis (x, z) and step ``n = 0 .. nt-1``, with ``p^0 = p^{-1} = 0`` and zero memory
variables, the forward is (CPML after Pasalic & McGarry, 2010, coefficients ``A, B`` of
:func:`probinv.physics.boundaries.cpml_profile`)

.. math::
    \psi^{n+1} = B\psi^n + A D_1 p^n, \quad w^n = D_2 p^n + D_1\psi^{n+1}, \quad
    \zeta^{n+1} = B\zeta^n + A w^n, \\
    q^n = \sum_{x,z} \left(w^n + \zeta^{n+1}\right) + s^n/\Delta x^2, \quad
    p^{n+1} = 2p^n - p^{n-1} + v^2\Delta t^2 q^n, \quad d^n = R\,p^n,

and the adjoint runs backwards in time (``n = nt-1 .. 0``, all adjoint variables zero at the end), driven by the
residual :math:`r^n = d^n - d^n_{obs}` at the receivers:

.. math::
    u = v^2\Delta t^2 \lambda^{n+1}, \quad \bar\zeta \leftarrow u + B\bar\zeta, \quad \bar w = u + A\bar\zeta,
    \quad \bar\psi \leftarrow D_1^T \bar w + B\bar\psi, \\
    \lambda^n = 2\lambda^{n+1} - \lambda^{n+2}
    + \sum_{x,z} \left(D_2^T \bar w + D_1^T (A\bar\psi)\right) + R^T r^n,

with the imaging condition (the adjoint field times the second time difference of the forward field, which is
stored whole)

.. math:: \frac{\partial J}{\partial v} = \sum_n \frac{2}{v}\, \lambda^{n+1} \left(p^{n+1} - 2p^n + p^{n-1}\right)

on the padded grid, folded back onto the model by the transpose of the edge-replicating padding. (The continuous
adjoint-state gradient :math:`-\frac{2}{v^3}\int \lambda_c\, \partial_t^2 p\, dt` is its limit:
:math:`\lambda^{n+1} = -\lambda_c / (v^2 \Delta t)` up to the time-step factor.)

What is independent and what is shared
--------------------------------------
Its own: the finite-difference weights (closed form, exact rationals), the stencil application through explicitly
padded arrays (ghost cells hold zeros or the free-surface odd mirror ``p[-1] = 0``, ``p[-2-j] = -p[j]``), their
transposes, the CPML recursions, the forward and the adjoint time loops, the CFL check. It imports no private name
of the acoustic implementation. Shared with the solver, because they *define* the problem rather than solve it: the
layer widths, the edge-replicating padding, the CPML coefficient profiles and the dominant frequency
(:mod:`probinv.physics.boundaries`), the argument checks of :mod:`probinv.validation`, and the documented CPML
strength (each model's maximum velocity rounded up to two significant digits, or ``pml_vmax``). A bug in those is
not caught by comparing the two gradients; they have tests of their own (``tests/test_boundaries.py``, the analytic
tests). The loops are plain full-grid tensor code: slow next to the fused solver, and meant for small grids.
"""
from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F

from ..validation import check_field, check_locations, check_scalar
from .boundaries import Widths, cpml_profile, dominant_frequency, pad_model, pml_widths

_ACCURACIES = (2, 4, 8)


# ----------------------------------------------------------------------------------------------------------------------
# central-difference weights and their application, with explicit ghost cells


def _central_weights(accuracy: int, derivative: int) -> list[float]:
    """Weights at offsets ``-M .. M`` (``M = accuracy / 2``) of the central first or second derivative (times dx^k).

    Closed forms of the maximal-order central stencils: ``c_k = (-1)^(k+1) (M!)^2 / (k (M-k)! (M+k)!)`` for the
    first derivative (antisymmetric, ``c_0 = 0``) and twice that divided by ``k`` for the second derivative
    (symmetric, ``c_0 = -2 sum c_k``).
    """
    m = accuracy // 2
    c = {}
    for k in range(1, m + 1):
        ck = Fraction((-1) ** (k + 1) * math.factorial(m) ** 2, k * math.factorial(m - k) * math.factorial(m + k))
        c[k] = ck if derivative == 1 else 2 * ck / k
    if derivative == 1:
        return [float(-c[-k]) if k < 0 else (0.0 if k == 0 else float(c[k])) for k in range(-m, m + 1)]
    c0 = -2 * sum(c.values())
    return [float(c0) if k == 0 else float(c[abs(k)]) for k in range(-m, m + 1)]


def _with_ghosts(u: torch.Tensor, m: int, axis: int, mirror: bool) -> torch.Tensor:
    """``u`` with ``m`` ghost cells on both sides of ``axis`` (-1: x, -2: z): zeros, except above a free surface.

    With ``mirror`` (z only) the pressure-release surface sits one cell above row 0: ghost row -1 is zero and row
    ``-2-j`` holds ``-u[j]`` (odd mirror).
    """
    if axis == -1:
        return F.pad(u, (m, m))
    if not mirror:
        return F.pad(u, (0, 0, m, m))
    top = torch.cat([-u.narrow(-2, 0, m - 1).flip(-2), torch.zeros_like(u.narrow(-2, 0, 1))], dim=-2)
    return torch.cat([top, u, torch.zeros_like(u.narrow(-2, 0, m))], dim=-2)


def _apply(u: torch.Tensor, weights: list[float], axis: int, mirror: bool = False) -> torch.Tensor:
    """``out[i] = sum_k w_k u[i + k]`` along ``axis`` (``k = -M .. M``), ghost cells as in :func:`_with_ghosts`."""
    m = (len(weights) - 1) // 2
    n = u.shape[axis]
    ext = _with_ghosts(u, m, axis, mirror)
    out = torch.zeros_like(u)
    for j, wk in enumerate(weights):
        if wk != 0.0:
            out = out + wk * ext.narrow(axis, j, n)
    return out


def _apply_t(g: torch.Tensor, weights: list[float], axis: int, mirror: bool = False) -> torch.Tensor:
    """Transpose of :func:`_apply`: spread ``w_k g[i]`` onto the ghosted array, then fold the ghosts back."""
    m = (len(weights) - 1) // 2
    n = g.shape[axis]
    shape = list(g.shape)
    shape[axis] = n + 2 * m
    ext = g.new_zeros(shape)
    for j, wk in enumerate(weights):
        if wk != 0.0:
            ext.narrow(axis, j, n).add_(g, alpha=wk)
    out = ext.narrow(axis, m, n).clone()  # zero ghosts receive nothing back
    if mirror and axis == -2 and m > 1:
        # ghost row i (< m-1) held -u[m-2-i]: its adjoint goes back there with the sign
        out.narrow(-2, 0, m - 1).sub_(ext.narrow(-2, 0, m - 1).flip(-2))
    return out


def _fold_replicate(g: torch.Tensor, before: int, after: int, axis: int) -> torch.Tensor:
    """Transpose of replicate padding along ``axis``: the layer's entries are summed onto the edge sample."""
    n = g.shape[axis] - before - after
    core = g.narrow(axis, before, n).clone()
    if before:
        core.narrow(axis, 0, 1).add_(g.narrow(axis, 0, before).sum(axis, keepdim=True))
    if after:
        core.narrow(axis, n - 1, 1).add_(g.narrow(axis, before + n, after).sum(axis, keepdim=True))
    return core


def _cpml_strength(vmax: float) -> float:
    """``vmax`` rounded up to two significant digits (the solver's documented default CPML strength)."""
    step = 10.0 ** (math.floor(math.log10(vmax)) - 1)
    return math.ceil(vmax / step - 1e-9) * step  # the 1e-9 keeps exact multiples (2200 / 10 = 220.00000000000003)


# ----------------------------------------------------------------------------------------------------------------------
# set-up


def _as_batch(x: torch.Tensor, batch: int, ndim: int) -> torch.Tensor:
    """``x`` with a leading batch axis (expanded when it has ``ndim`` axes, i.e. is shared by every model)."""
    return x.unsqueeze(0).expand(batch, *x.shape) if x.ndim == ndim else x


def _flat_indices(name: str, loc, batch: int, n_shots: int, shape: tuple[int, int], widths: Widths, wp: int,
                  device) -> torch.Tensor:
    """Flat indices into the padded ``(H, W)`` grid, ``[batch, n_shots, n]``, of ``(z, x)`` locations."""
    per_model = isinstance(loc, torch.Tensor) and loc.ndim == 4
    if per_model and loc.shape[0] != batch:
        raise ValueError(f"{name} is given per model with {loc.shape[0]} models but v has a batch of {batch}")
    loc = check_locations(name, loc.reshape(-1, *loc.shape[2:]) if per_model else loc, None, shape, device)
    loc = loc.reshape(batch, -1, *loc.shape[1:]) if per_model else _as_batch(loc, batch, 3)
    if loc.shape[1] != n_shots:
        raise ValueError(f"{name} has {loc.shape[1]} shots but source_amplitudes has {n_shots}")
    return ((loc[..., 0] + widths.top) * wp + loc[..., 1] + widths.left).contiguous()


# ----------------------------------------------------------------------------------------------------------------------
# the gradient


def l2_gradient(v: torch.Tensor, dx: float, dt: float, source_amplitudes: torch.Tensor,
                source_locations: torch.Tensor, receiver_locations: torch.Tensor, observed: torch.Tensor, *,
                pml_width=20, free_surface: bool = False, accuracy: int = 4,
                pml_vmax: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Misfit :math:`J = \frac12 \lVert d_{pred}(v) - d_{obs} \rVert^2` and :math:`\partial J / \partial v`.

    Parameters
    ----------
    v, dx, dt, source_amplitudes, source_locations, receiver_locations, pml_width, free_surface, accuracy, pml_vmax
        As in :func:`probinv.physics.acoustic` (constant density): ``v`` (nz, nx) or (batch, nz, nx) in m/s,
        ``dx`` in m, ``dt`` in s, sources ``[n_shots, n_sources, nt]`` (or per model), int64 ``(z, x)`` locations.
    observed : Tensor [n_shots, n_receivers, nt] (or [batch, n_shots, n_receivers, nt])
        Observed data, shaped like the predicted data.

    Returns
    -------
    loss : Tensor []
        The misfit (0-dim, dtype of ``v``), in squared data units.
    grad : Tensor, shape of ``v``
        Its gradient with respect to ``v`` in (data units)^2 s/m. No autograd graph is built.
    """
    check_field("v", v)
    dx = check_scalar("dx", dx)
    dt = check_scalar("dt", dt)
    if isinstance(accuracy, bool) or accuracy not in _ACCURACIES:
        raise ValueError(f"accuracy must be one of {_ACCURACIES} (spatial order of the stencil), got {accuracy!r}")
    if not isinstance(free_surface, bool):
        raise TypeError(f"free_surface must be True or False, got {free_surface!r}")
    widths = pml_widths(pml_width, free_surface)
    if not isinstance(source_amplitudes, torch.Tensor) or source_amplitudes.ndim not in (3, 4):
        got = tuple(source_amplitudes.shape) if isinstance(source_amplitudes, torch.Tensor) else type(
            source_amplitudes).__name__
        raise ValueError(f"source_amplitudes must be a tensor shaped [n_shots, n_sources_per_shot, nt] (or with a "
                         f"batch axis first), got {got}")
    with torch.no_grad():
        batched = v.ndim == 3
        vb = (v if batched else v.unsqueeze(0)).detach()
        batch, nz, nx = vb.shape
        amp = _as_batch(source_amplitudes.detach().to(v.dtype), batch, 3)
        if amp.shape[0] != batch:
            raise ValueError(f"source_amplitudes is given per model with {amp.shape[0]} models but v has a batch of "
                             f"{batch}")
        shots, nt = amp.shape[1], amp.shape[-1]
        hp, wp = nz + widths.top + widths.bottom, nx + widths.left + widths.right
        src = _flat_indices("source_locations", source_locations, batch, shots, (nz, nx), widths, wp, v.device)
        rec = _flat_indices("receiver_locations", receiver_locations, batch, shots, (nz, nx), widths, wp, v.device)
        if src.shape[-1] != amp.shape[2]:
            raise ValueError(f"source_locations has {src.shape[-1]} sources per shot but source_amplitudes has "
                             f"{amp.shape[2]}")
        expected = (batch, shots, rec.shape[-1], nt) if batched else (shots, rec.shape[-1], nt)
        if not isinstance(observed, torch.Tensor) or tuple(observed.shape) != expected:
            got = tuple(observed.shape) if isinstance(observed, torch.Tensor) else type(observed).__name__
            raise ValueError(f"observed must be shaped like the predicted data {expected}, got {got}")
        obs = observed.detach().to(v.dtype)
        obs = obs if batched else obs.unsqueeze(0)

        w1 = [c / dx for c in _central_weights(accuracy, 1)]
        w2 = [c / dx ** 2 for c in _central_weights(accuracy, 2)]
        # von Neumann limit of leapfrog with this Laplacian: v^2 dt^2 * 2 max|symbol| / dx^2 <= 4
        symbol_max = abs(sum(c * (-1) ** k for k, c in enumerate(w2, start=-(len(w2) // 2))))
        vmax = float(vb.max())
        dt_max = 2.0 / (vmax * math.sqrt(2 * symbol_max))
        if dt > dt_max:
            raise ValueError(f"dt = {dt:.6g} s is unstable for accuracy={accuracy}, dx = {dx:g} m and vmax = "
                             f"{vmax:g} m/s: the largest stable dt is {dt_max:.6g} s")

        # CPML coefficients per model: A, B shaped [batch, 1, 1, W] (x) and [batch, 1, H, 1] (z)
        coef = {-1: ([], []), -2: ([], [])}
        for b in range(batch):
            strength = _cpml_strength(float(vb[b].max())) if pml_vmax is None else check_scalar("pml_vmax", pml_vmax)
            freq = dominant_frequency(amp[b], dt)
            for axis, n, side in ((-1, wp, (widths.left, widths.right)), (-2, hp, (widths.top, widths.bottom))):
                prof = cpml_profile(n, side, dx, dt, strength, freq, r=1e-5, dtype=v.dtype, device=v.device)
                coef[axis][0].append(prof.a)
                coef[axis][1].append(prof.b)
        cpml = {-1: tuple(torch.stack(c).view(batch, 1, 1, wp) for c in coef[-1]),
                -2: tuple(torch.stack(c).view(batch, 1, hp, 1) for c in coef[-2])}

        vpad = pad_model(vb, widths).unsqueeze(1)  # [batch, 1, H, W]
        v2dt2 = vpad.square() * dt ** 2
        amp = amp / dx ** 2  # the point source's delta is 1/dx^2 on its cell
        mirror = {-1: False, -2: free_surface}

        # forward, keeping the whole wavefield p^0 .. p^nt
        zeros = v.new_zeros(batch, shots, hp, wp)
        p_prev, p = zeros, zeros
        psi = {-1: zeros, -2: zeros}
        zeta = {-1: zeros, -2: zeros}
        wavefield = v.new_empty(nt + 1, batch, shots, hp, wp)
        wavefield[0] = p
        data = v.new_empty(batch, shots, rec.shape[-1], nt)
        for n in range(nt):
            data[..., n] = p.flatten(-2).gather(-1, rec)
            q = zeros.flatten(-2).scatter_add(-1, src, amp[..., n]).view_as(zeros)
            for axis in (-1, -2):
                a, b = cpml[axis]
                psi[axis] = b * psi[axis] + a * _apply(p, w1, axis, mirror[axis])
                w = _apply(p, w2, axis, mirror[axis]) + _apply(psi[axis], w1, axis)
                zeta[axis] = b * zeta[axis] + a * w
                q = q + w + zeta[axis]
            p_prev, p = p, 2 * p - p_prev + v2dt2 * q
            wavefield[n + 1] = p
        residual = data - obs
        loss = 0.5 * residual.square().sum()

        # adjoint, backwards in time; lam1 = lambda^{n+1}, lam2 = lambda^{n+2}
        lam1, lam2 = zeros, zeros
        zeta_bar = {-1: zeros, -2: zeros}
        psi_bar = {-1: zeros, -2: zeros}
        g_v = v.new_zeros(batch, 1, hp, wp)
        for n in range(nt - 1, -1, -1):
            p_before = wavefield[n - 1] if n > 0 else zeros
            g_v += (lam1 * (wavefield[n + 1] - 2 * wavefield[n] + p_before)).sum(1, keepdim=True)
            u = v2dt2 * lam1
            lam0 = 2 * lam1 - lam2
            for axis in (-1, -2):
                a, b = cpml[axis]
                zeta_bar[axis] = u + b * zeta_bar[axis]
                w_bar = u + a * zeta_bar[axis]
                psi_bar[axis] = _apply_t(w_bar, w1, axis) + b * psi_bar[axis]
                lam0 = (lam0 + _apply_t(w_bar, w2, axis, mirror[axis])
                        + _apply_t(a * psi_bar[axis], w1, axis, mirror[axis]))
            lam0 = lam0.flatten(-2).scatter_add(-1, rec, residual[..., n]).view_as(lam0)
            lam2, lam1 = lam1, lam0
        g_pad = (2 / vpad * g_v)[:, 0]
        grad = _fold_replicate(_fold_replicate(g_pad, widths.left, widths.right, -1), widths.top, widths.bottom, -2)
        return loss, (grad if batched else grad[0])


__all__ = ["l2_gradient"]
