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
layer strips. The plain full-grid kernel (``_step``, ``_step_transpose``) is used where the strips would touch the
free-surface mirror rows (models shallower than ``accuracy`` cells); ``_propagate_reference`` runs it with autograd
through ordinary torch operations, the reference the tests compare with.

Two implementations of the fused loop
-------------------------------------
On the CPU (float32/float64) the fused loop runs by default on a compiled C kernel (``backend="native"``;
:mod:`probinv.physics._native`, built with the system C compiler on first use, threads over the (model, shot)
pairs, no Python inside the time loop). The PyTorch implementation (``backend="torch"``) is the reference the tests
compare it with (same values and gradients to float64 rounding) and the path on GPUs; without a C compiler it is
used everywhere, after one warning.

Where the code lives
--------------------
This module is the public API (checks of the options, dispatch). The private modules beside it hold the rest:
``_acoustic_stencils`` (stencils, their transposes, CPML coefficients), ``_acoustic_kernels`` (the time step and its
exact transpose, plain and strip kernels), ``_acoustic_grad`` (the fused autograd node with checkpointing, and the
plain-autograd reference), ``_acoustic_setup`` (argument checks, padding, source/receiver indices) and
``_acoustic_native`` (the same loop, gradient and checkpointing on the compiled kernel ``_native/acoustic.c``).
"""
from __future__ import annotations

import torch

from ..validation import check_choice
from . import _acoustic_native
from ._acoustic_grad import _AcousticPropagation, _propagate_reference
from ._acoustic_kernels import _initial_state, _run
from ._acoustic_setup import MIN_POINTS_PER_WAVELENGTH as MIN_POINTS_PER_WAVELENGTH
from ._acoustic_setup import _setup

#: Torch path: use the strip kernel (False: the plain full-grid kernel everywhere; the tests compare the two).
_FAST_KERNEL = True


def acoustic(v: torch.Tensor, dx: float, dt: float, source_amplitudes: torch.Tensor,
             source_locations: torch.Tensor, receiver_locations: torch.Tensor, *, rho: torch.Tensor | None = None,
             pml_width=20, free_surface: bool = False, accuracy: int = 4, checkpoint_every: int | None = None,
             return_wavefield: bool = False, wavefield_every: int = 1, gradient: str = "fused",
             pml_vmax: float | None = None, backend: str = "auto"):
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
    backend : {"auto", "native", "torch"}
        Which implementation of the fused time loop runs. ``"native"``: the compiled C kernel
        (:mod:`probinv.physics._native`, OpenMP threads over the (model, shot) pairs, ``torch.get_num_threads()``
        of them; CPU float32/float64 only). ``"torch"``: the PyTorch implementation (the reference, and the path on
        GPUs). ``"auto"`` (default): native where it can run (CPU, float32/float64, a C compiler available), torch
        otherwise. If the kernel cannot be compiled, ``"auto"`` and ``"native"`` fall back to torch with one
        warning per process. Both give the same values and gradients to rounding error (tested);
        ``gradient="autograd"`` always runs the torch reference.

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
    check_choice("backend", backend, ("auto", "native", "torch"))
    if backend == "native" and isinstance(v, torch.Tensor) and (v.device.type != "cpu"
                                                                 or v.dtype not in (torch.float32, torch.float64)):
        raise ValueError(f"backend='native' runs CPU float32/float64 tensors only, got v on {v.device} with "
                         f"{v.dtype}; use backend='torch' or 'auto'")
    if gradient == "autograd":
        return _propagate_reference(v, dx, dt, source_amplitudes, source_locations, receiver_locations, rho=rho,
                                    pml_width=pml_width, free_surface=free_surface, accuracy=accuracy,
                                    checkpoint_every=checkpoint_every, return_wavefield=return_wavefield,
                                    wavefield_every=wavefield_every, pml_vmax=pml_vmax)
    native = backend != "torch" and isinstance(v, torch.Tensor) and _acoustic_native.available(v)
    s = _setup(v, dx, dt, source_amplitudes, source_locations, receiver_locations, rho, pml_width, free_surface,
               accuracy, wavefield_every if return_wavefield else None, pml_vmax,
               fast_kernel=_FAST_KERNEL and not native)
    batch, shots, h, w = s.shape
    params = (s.v2dt2, s.gx, s.gz, s.amp)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in params)
    if native:
        data, snap = _acoustic_native.propagate(s, checkpoint_every, need_grad)
    elif not need_grad:
        with torch.no_grad():
            state = _initial_state(s.fast, batch, shots, h, w, s.v2dt2)
            _, data, snap, _, _ = _run(state, s.v2dt2, s.gx, s.gz, s.amp, s.geom, s.ops, s.fast, 0, store=False)
    else:
        data, snap = _AcousticPropagation.apply(s.v2dt2, s.gx, s.gz, s.amp, s.geom, s.ops, s.fast,
                                                checkpoint_every, s.shape)
    if not s.batched:
        data, snap = data[0], snap[0]
    return (data, snap) if return_wavefield else data


__all__ = ["acoustic"]
