r"""The acoustic solver of :func:`probinv.physics.acoustic` in JAX: the same discrete operator, compiled.

Same equation, conventions (DESIGN.md sections 2-3), stencils, CPML, free surface, source normalisation and time
sampling as the PyTorch solver; this module re-implements its plain full-grid step
(``probinv.physics._acoustic_kernels._step``) operation for operation, so that the two agree to rounding error
(``tests/test_jax_acoustic.py``). The time loop is one ``lax.scan``; its reverse pass is hand-written
(``jax.custom_vjp``: the exact transpose of the step, as the PyTorch solver's fused backward) and stores ``q^n`` of
every step, or with ``checkpoint_every=k`` one state per block of ``k`` steps, recomputing each block's ``q^n`` in
reverse (memory ~ ``nt / k`` states + ``k`` wavefields). Shots and a batch of models are ``vmap``-ed.

Everything that depends on the model (the CPML strength from ``max(v)`` when ``pml_vmax`` is not given, the dominant
frequency of the sources) is computed with ``jnp`` under ``stop_gradient``, so the function can be traced inside
``jit``/``grad`` (a NumPyro potential); the argument checks that need concrete values (CFL, positivity) run only
when the inputs are concrete.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import torch

from ..physics import _fd
from ..physics._acoustic_setup import MIN_POINTS_PER_WAVELENGTH
from ..physics._checks import check_dt, significant_max_frequency, warn_points_per_wavelength
from ..physics.boundaries import Widths, pml_widths
from ..validation import check_locations, check_scalar
from ._config import enable_x64

enable_x64()

__all__ = ["acoustic"]

#: Time steps per iteration of the compiled loops: the loop's per-iteration overhead dominates small grids (16 x 16
#: gradient 7.9 -> 5.1 ms with 4, 64 x 64 unchanged within noise; benchmarks/backends.py's set-ups, load ~7). Not in the
#: checkpointed loops (large problems, where it only lengthens the compilation)
_UNROLL = 4


def _to_array(name: str, x):
    """A float jnp array from a jax/numpy array or a torch tensor (detached; its dtype kept)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, (jax.Array, np.ndarray)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {x.dtype}")
        return jnp.asarray(x)
    raise TypeError(f"{name} must be a jax/numpy array (or a torch tensor), got {type(x).__name__}")


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _locations(name: str, loc, shape, batch: int | None) -> np.ndarray:
    """Checked int64 locations ``[n_shots, n, 2]`` or, per model of a batch, ``[batch, n_shots, n, 2]``."""
    if isinstance(loc, jax.Array | np.ndarray):
        loc = torch.from_numpy(np.array(loc))  # a writable copy for torch
    if isinstance(loc, torch.Tensor) and loc.ndim == 4 and batch is not None:
        if loc.shape[0] != batch:
            raise ValueError(f"{name} is given per model with {loc.shape[0]} models but v has a batch of {batch}")
        return check_locations(name, loc.reshape(-1, *loc.shape[2:]), None, shape, "cpu").reshape(
            loc.shape).numpy()
    return check_locations(name, loc, None, shape, "cpu").numpy()


# ----------------------------------------------------------------------------------------------------------------------
# stencils (the operations of probinv.physics._acoustic_stencils._stencil, in the same order)


def _mirror_correction(weights: tuple) -> np.ndarray | None:
    """Matrix adding the free-surface odd-mirror ghost values (``_top_mirror_correction`` of the PyTorch solver)."""
    m = (len(weights) - 1) // 2
    if m < 2:
        return None
    c = np.zeros((m - 1, m - 1))
    for i in range(m - 1):
        for k in range(-m, m + 1):
            j = i + k
            if j <= -2:
                c[i, -2 - j] -= weights[k + m]
    return c


def _narrow(u, axis: int, start: int, length: int):
    return jax.lax.slice_in_dim(u, start, start + length, axis=u.ndim + axis)


def _stencil(u, weights: tuple, axis: int, corr=None):
    """``out[i] = sum_k w_k u[i + k]`` along ``axis`` (-1: x, -2: z) with zero values outside, plus ``corr`` on top."""
    m = (len(weights) - 1) // 2
    n = u.shape[axis]
    pad = [(0, 0)] * u.ndim
    pad[u.ndim + axis] = (m, m)
    up = jnp.pad(u, pad)
    out = None
    for k in range(m):  # pairs of symmetric / antisymmetric offsets, as the PyTorch stencil does
        wl, wr = weights[k], weights[2 * m - k]
        left, right = _narrow(up, axis, k, n), _narrow(up, axis, 2 * m - k, n)
        if wl == wr:
            term = (left + right) * wl
        elif wl == -wr:
            term = (right - left) * wr
        else:
            term = left * wl + right * wr
        out = term if out is None else out + term
    if weights[m] != 0:
        out = out + weights[m] * u
    if corr is not None:
        r = corr.shape[0]
        top = _narrow(out, -2, 0, r) + jnp.einsum("ij,...jx->...ix", corr, _narrow(u, -2, 0, r))
        out = jnp.concatenate([top, _narrow(out, -2, r, n - r)], axis=-2)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# CPML profiles (probinv.physics.boundaries.cpml_profile with a traceable vmax)


def _round_vmax(vmax):
    """``vmax`` rounded up to two significant digits (``_pml_vmax`` of the PyTorch solver), traceable."""
    scale10 = 10.0 ** (jnp.floor(jnp.log10(vmax)) - 1)
    return jnp.ceil(vmax / scale10 - 1e-9) * scale10


def _cpml_profile(n: int, widths: tuple[int, int], dx: float, dt: float, vmax, freq, r: float = 1e-5,
                  order: int = 2):
    """``(a, b)`` shaped ``[n]`` in float64: :func:`probinv.physics.boundaries.cpml_profile` with ``vmax``, ``freq``
    possibly traced scalars.
    """
    w0, w1 = int(widths[0]), int(widths[1])
    i = np.arange(n, dtype=np.float64)
    s = np.zeros(n)
    if w0 > 0:
        s = np.maximum(s, np.clip((w0 - i) / w0, 0, 1))
    if w1 > 0:
        s = np.maximum(s, np.clip((i - (n - 1 - w1)) / w1, 0, 1))
    length = max(w0, w1, 1) * dx
    d0 = -(order + 1) * vmax * math.log(r) / (2 * length)
    d = d0 * s ** order
    alpha = math.pi * freq * (1 - s) * (s > 0)
    b = jnp.exp(-(d + alpha) * dt)
    denom = d + alpha
    a = jnp.where(denom > 0, d / jnp.where(denom > 0, denom, 1.0) * (b - 1), 0.0)
    b = jnp.where(s > 0, b, 1.0)
    return a, b


def _dominant_frequency(amp, dt: float):
    """Peak of the mean amplitude spectrum of ``amp [..., nt]`` (``boundaries.dominant_frequency``), traceable."""
    x = jax.lax.stop_gradient(amp).reshape(-1, amp.shape[-1]).astype(jnp.float64)
    nt = x.shape[-1]
    nfft = max(2 * nt, 64)
    spec = jnp.abs(jnp.fft.rfft(x, n=nfft)).mean(0).at[0].set(0.0)
    f = jnp.argmax(spec) / (nfft * dt)
    return jnp.where(f > 0, f, 1.0 / (nt * dt))


# ----------------------------------------------------------------------------------------------------------------------
# the time loop of one model (all its shots at once), with a hand-written reverse pass
#
# jax.grad through the scan is correct but slow: the transposed scan of JAX's generic reverse mode cost ~10 forward
# runs on 64 x 64 (1.9 s vs 0.18 s; the PyTorch solver's fused backward ~2 forward runs). ``_loop`` is therefore a
# ``jax.custom_vjp`` whose reverse pass runs the exact transpose of the step (``_step_transpose`` of the PyTorch
# solver, operation for operation), needing only ``q^n = L p^n + s^n`` of every step: stored by the forward pass
# (``k_block=None``), or recomputed block by block from one saved state per block of ``k_block`` steps.


class _Cfg(NamedTuple):
    """Static (hashable) description of the discrete operator."""

    w1: tuple  # first-derivative weights (1/m)
    w2: tuple  # second-derivative weights (1/m^2)
    corr1: tuple | None  # free-surface mirror corrections (matrices as tuples of rows), or None
    corr2: tuple | None
    k_block: int | None  # steps per checkpoint block; None: store q of every step
    strips: tuple  # absorbing-layer widths (top, bottom, left, right) in cells: where the CPML memories live


def _mat(c, dtype):
    return None if c is None else jnp.asarray(np.array(c), dtype=dtype)


def _stencil_t(u, weights: tuple, axis: int, corr=None):
    """Transpose of :func:`_stencil` (zero values outside): the reversed weights and the transposed correction."""
    return _stencil(u, tuple(reversed(weights)), axis, None if corr is None else corr.T)


def _index(ndim: int, axis: int, start: int, stop: int) -> tuple:
    idx = [slice(None)] * ndim
    idx[ndim + axis] = slice(start, stop)
    return tuple(idx)


def _at_strips(u, weights: tuple, axis: int, lo: int, hi: int, corr=None):
    """``(_stencil(u, weights, axis, corr)`` at the first ``lo`` and the last ``hi`` indices along ``axis``), as a
    pair (None for a zero width): the stencil is taken on a slab of the strip plus its halo only. ``corr`` (the
    free-surface correction) applies at the top of the grid, so only to the first (``lo``) strip of the z axis.
    """
    n, m = u.shape[axis], (len(weights) - 1) // 2
    first = last = None
    if lo:
        k = min(lo + m, n)
        first = _narrow(_stencil(_narrow(u, axis, 0, k), weights, axis, corr), axis, 0, lo)
    if hi:
        k = min(hi + m, n)
        last = _narrow(_stencil(_narrow(u, axis, n - k, k), weights, axis), axis, k - hi, hi)
    return first, last


def _add_strip_stencil(target, pair, weights: tuple, axis: int, corr=None):
    """``target + _stencil(u, weights, axis, corr)`` for ``u`` zero except in the two strips ``pair = (first, last)``
    at the ends of ``axis`` (None: zero width): each strip's stencil reaches ``m`` points into the interior.
    """
    n, m = target.shape[axis], (len(weights) - 1) // 2
    first, last = pair
    if first is not None:
        k = min(first.shape[axis] + m, n)
        pad = [(0, 0)] * first.ndim
        pad[first.ndim + axis] = (0, k - first.shape[axis])
        target = target.at[_index(target.ndim, axis, 0, k)].add(_stencil(jnp.pad(first, pad), weights, axis, corr))
    if last is not None:
        k = min(last.shape[axis] + m, n)
        pad = [(0, 0)] * last.ndim
        pad[last.ndim + axis] = (k - last.shape[axis], 0)
        target = target.at[_index(target.ndim, axis, n - k, n)].add(_stencil(jnp.pad(last, pad), weights, axis))
    return target


def _strips(u, axis: int, lo: int, hi: int):
    """The first ``lo`` and last ``hi`` slices of ``u`` along ``axis`` (None for a zero width)."""
    n = u.shape[axis]
    return (_narrow(u, axis, 0, lo) if lo else None), (_narrow(u, axis, n - hi, hi) if hi else None)


def _add_strips(target, pair, axis: int):
    n = target.shape[axis]
    first, last = pair
    if first is not None:
        target = target.at[_index(target.ndim, axis, 0, first.shape[axis])].add(first)
    if last is not None:
        target = target.at[_index(target.ndim, axis, n - last.shape[axis], n)].add(last)
    return target


def _pmap2(f, *pairs):
    """``f`` applied strip by strip to pairs ``(first, last)`` (None stays None)."""
    return tuple(None if xs[0] is None else f(*xs) for xs in zip(*pairs))


def _step_fn(cfg: _Cfg, v2dt2, coef, src, rows):
    """The step with the CPML memory variables kept in the absorbing strips only (as the C kernel does): the
    x-memories ``psx``, ``zx`` are pairs ``(left, right)`` of ``[shots, H, width]`` slabs, the z-memories ``psz``,
    ``zz`` pairs ``(top, bottom)`` of ``[shots, width, W]``; outside the strips they are zero in the full-grid
    scheme (``a = 0``, ``b = 1`` there), so the arithmetic is the same to rounding.
    """
    ax, bx, az, bz = coef
    t, bt, lf, rt = cfg.strips
    corr1, corr2 = _mat(cfg.corr1, v2dt2.dtype), _mat(cfg.corr2, v2dt2.dtype)
    w1, w2 = cfg.w1, cfg.w2

    def step(state, amp_n):
        """One leapfrog step (``probinv.physics._acoustic_kernels._step``); returns the state and ``q^n``."""
        p, pprev, psx, psz, zx, zz = state
        psx = _pmap2(lambda b, s, a, d: b * s + a * d, bx, psx, ax, _at_strips(p, w1, -1, lf, rt))
        psz = _pmap2(lambda b, s, a, d: b * s + a * d, bz, psz, az, _at_strips(p, w1, -2, t, bt, corr1))
        wx = _add_strip_stencil(_stencil(p, w2, -1), psx, w1, -1)
        wz = _add_strip_stencil(_stencil(p, w2, -2, corr2), psz, w1, -2)
        zx = _pmap2(lambda b, s, a, d: b * s + a * d, bx, zx, ax, _strips(wx, -1, lf, rt))
        zz = _pmap2(lambda b, s, a, d: b * s + a * d, bz, zz, az, _strips(wz, -2, t, bt))
        q = _add_strips(_add_strips(wx + wz, zx, -1), zz, -2)
        if src.shape[-1]:
            q = q.reshape(q.shape[0], -1).at[rows, src].add(amp_n).reshape(q.shape)
        pnew = 2 * p - pprev + v2dt2 * q
        return (pnew, p, psx, psz, zx, zz), q

    return step


def _transpose_fn(cfg: _Cfg, v2dt2, coef, src, rec, rows):
    ax, bx, az, bz = coef
    t, bt, lf, rt = cfg.strips
    corr1, corr2 = _mat(cfg.corr1, v2dt2.dtype), _mat(cfg.corr2, v2dt2.dtype)
    w1, w2 = cfg.w1, cfg.w2
    w1t = tuple(reversed(w1))
    corr1t = None if corr1 is None else corr1.T

    def tstep(carry, inputs):
        """Adjoint of one step (``probinv.physics._acoustic_kernels._step_transpose``) and of the receiver gather
        before it; accumulates the adjoint of ``v^2 dt^2``; returns the adjoint of the source values. The memory
        adjoints live in the strips, as the forward memories do.
        """
        bar, g_v = carry
        q_n, g_data_n = inputs
        p1, p0, psxb, pszb, zxb, zzb = bar
        qb = v2dt2 * p1
        g_v = g_v + (p1 * q_n).sum(0)
        g_amp = qb.reshape(qb.shape[0], -1)[rows, src] if src.shape[-1] else jnp.zeros(src.shape, qb.dtype)
        zxb = _pmap2(lambda z, q: z + q, zxb, _strips(qb, -1, lf, rt))
        zzb = _pmap2(lambda z, q: z + q, zzb, _strips(qb, -2, t, bt))
        wxb = _add_strips(qb, _pmap2(lambda a, z: a * z, ax, zxb), -1)
        wzb = _add_strips(qb, _pmap2(lambda a, z: a * z, az, zzb), -2)
        psxb = _pmap2(lambda s, d: s + d, psxb, _at_strips(wxb, w1t, -1, lf, rt))
        pszb = _pmap2(lambda s, d: s + d, pszb, _at_strips(wzb, w1t, -2, t, bt))
        pb = 2 * p1 + p0 + _stencil_t(wxb, w2, -1) + _stencil_t(wzb, w2, -2, corr2)
        pb = _add_strip_stencil(pb, _pmap2(lambda a, s: a * s, ax, psxb), w1t, -1)
        pb = _add_strip_stencil(pb, _pmap2(lambda a, s: a * s, az, pszb), w1t, -2, corr1t)
        if rec.shape[-1]:  # data^n = p^n at the receivers, gathered before step n
            pb = pb.reshape(pb.shape[0], -1).at[rows, rec].add(g_data_n).reshape(pb.shape)
        mul = lambda b, s: b * s  # noqa: E731
        return ((pb, -p1, _pmap2(mul, bx, psxb), _pmap2(mul, bz, pszb), _pmap2(mul, bx, zxb),
                 _pmap2(mul, bz, zzb)), g_v), g_amp

    return tstep


def _zero_state(cfg: _Cfg, shots: int, shape: tuple, dtype):
    """Zero wavefields ``[shots, H, W]`` and zero memory strips."""
    t, bt, lf, rt = cfg.strips
    h, w = shape
    zero = jnp.zeros((shots, h, w), dtype=dtype)
    xs = tuple(jnp.zeros((shots, h, k), dtype=dtype) if k else None for k in (lf, rt))
    zs = tuple(jnp.zeros((shots, k, w), dtype=dtype) if k else None for k in (t, bt))
    return (zero, zero, xs, zs, xs, zs)


def _forward(cfg: _Cfg, v2dt2, amp_t, coef, src, rec, store: str):
    """Run the loop. ``amp_t [nt, shots, ns]`` (already / dx^2). Returns data ``[nt, shots, nr]`` and the saved
    fields: ``store="q"`` every ``q^n`` ``[nt, shots, H, W]``; ``"blocks"`` the state at the start of every block;
    ``"none"`` nothing.
    """
    shots = amp_t.shape[1]
    rows = jnp.arange(shots)[:, None]
    step = _step_fn(cfg, v2dt2, coef, src, rows)

    def body(state, amp_n):
        data_n = state[0].reshape(shots, -1)[rows, rec]  # p^n: sample n is t = n dt
        state, q = step(state, amp_n)
        return state, (data_n, q if store == "q" else None)

    state = _zero_state(cfg, shots, v2dt2.shape, v2dt2.dtype)
    if store != "blocks":
        _, (data, qs) = jax.lax.scan(body, state, amp_t, unroll=_UNROLL)
        return data, qs
    k = cfg.k_block
    nb = amp_t.shape[0] // k  # the caller pads nt to a multiple of k

    def block(state, amp_block):
        s_end, (data, _) = jax.lax.scan(body, state, amp_block)
        return s_end, (data, state)

    _, (data, starts) = jax.lax.scan(block, state, amp_t.reshape((nb, k) + amp_t.shape[1:]))
    return data.reshape((nb * k,) + data.shape[2:]), starts


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _loop(cfg: _Cfg, v2dt2, amp_t, coef, src, rec):
    """Receiver data ``[nt, shots, nr]`` of the time loop; ``v2dt2 [H, W]``, ``amp_t [nt, shots, ns]`` (/ dx^2),
    ``coef = (ax, bx, az, bz)`` (not differentiated: they depend on the model only through ``stop_gradient``),
    ``src``/``rec`` flat indices ``[shots, n]`` into the padded grid.
    """
    return _forward(cfg, v2dt2, amp_t, coef, src, rec, "none")[0]


def _loop_fwd(cfg, v2dt2, amp_t, coef, src, rec):
    data, saved = _forward(cfg, v2dt2, amp_t, coef, src, rec, "q" if cfg.k_block is None else "blocks")
    return data, (v2dt2, amp_t, coef, src, rec, saved)


def _loop_bwd(cfg, res, g_data):
    v2dt2, amp_t, coef, src, rec, saved = res
    shots = amp_t.shape[1]
    rows = jnp.arange(shots)[:, None]
    tstep = _transpose_fn(cfg, v2dt2, coef, src, rec, rows)
    carry = (_zero_state(cfg, shots, v2dt2.shape, v2dt2.dtype), jnp.zeros_like(v2dt2))
    if cfg.k_block is None:
        (_, g_v), g_amp = jax.lax.scan(tstep, carry, (saved, g_data), reverse=True, unroll=_UNROLL)
    else:
        k = cfg.k_block
        nb = amp_t.shape[0] // k
        step = _step_fn(cfg, v2dt2, coef, src, rows)

        def block_t(carry, inputs):
            start, amp_block, g_block = inputs
            _, qs = jax.lax.scan(step, start, amp_block)  # the block's q^n, from its start
            return jax.lax.scan(tstep, carry, (qs, g_block), reverse=True)

        blocks = lambda x: x.reshape((nb, k) + x.shape[1:])  # noqa: E731
        (_, g_v), g_amp = jax.lax.scan(block_t, carry, (saved, blocks(amp_t), blocks(g_data)), reverse=True)
        g_amp = g_amp.reshape((nb * k,) + g_amp.shape[2:])
    return g_v, g_amp, jax.tree_util.tree_map(jnp.zeros_like, coef), None, None


_loop.defvjp(_loop_fwd, _loop_bwd)


def _propagate_one(v, amp, src, rec, pml_vmax, *, dx, dt, widths: Widths, accuracy, free_surface, k_block):
    """Receiver data ``[shots, nr, nt]`` of one model ``v (nz, nx)``; ``amp [shots, ns, nt]`` unscaled,
    ``src``/``rec`` flat indices into the padded grid ``[shots, n]``.
    """
    dtype = v.dtype
    c2 = _fd.SECOND_DERIVATIVE[accuracy]
    w2 = tuple(x / dx ** 2 for x in (list(reversed(c2[1:])) + list(c2)))
    c1 = _fd.CENTRAL_FIRST_DERIVATIVE[accuracy]
    w1 = tuple(x / dx for x in ([-a for a in reversed(c1)] + [0.0] + list(c1)))
    corr2 = corr1 = None
    if free_surface:
        corr2, corr1 = (None if c is None else tuple(map(tuple, c.tolist()))
                        for c in (_mirror_correction(w2), _mirror_correction(w1)))
    t, bt, lf, rt = widths
    vp = jnp.pad(v, ((t, bt), (lf, rt)), mode="edge")
    h, w = vp.shape
    v2dt2 = vp * vp * dt ** 2
    if pml_vmax is None:
        vmax = _round_vmax(jax.lax.stop_gradient(v).max().astype(jnp.float64))
    else:
        vmax = _round_vmax(jnp.asarray(pml_vmax).astype(jnp.float64))
    freq = _dominant_frequency(amp, dt)
    # the CPML coefficients on the strips only: (left, right) slabs [1, 1, width] and (top, bottom) [1, width, 1]
    ax, bx = (_strips(jax.lax.stop_gradient(c).astype(dtype).reshape(1, 1, w), -1, lf, rt)
              for c in _cpml_profile(w, (lf, rt), dx, dt, vmax, freq))
    az, bz = (_strips(jax.lax.stop_gradient(c).astype(dtype).reshape(1, h, 1), -2, t, bt)
              for c in _cpml_profile(h, (t, bt), dx, dt, vmax, freq))
    amp = amp * (1.0 / dx ** 2)
    nt = amp.shape[-1]
    amp_t = jnp.moveaxis(amp, -1, 0)  # [nt, shots, ns]
    if k_block is not None and k_block >= nt:
        k_block = None
    if k_block is not None:
        # zero source samples after the last step: the extra steps come after every recorded sample
        nb = -(-nt // k_block)
        amp_t = jnp.concatenate([amp_t, jnp.zeros((nb * k_block - nt,) + amp_t.shape[1:], dtype)], 0)
    cfg = _Cfg(w1=w1, w2=w2, corr1=corr1, corr2=corr2, k_block=k_block, strips=(t, bt, lf, rt))
    data = _loop(cfg, v2dt2, amp_t, (ax, bx, az, bz), src, rec)[:nt]
    return jnp.moveaxis(data, 0, -1)


@functools.partial(jax.jit, static_argnames=("dx", "dt", "widths", "accuracy", "free_surface", "k_block",
                                             "batched", "amp_batched", "src_batched", "rec_batched", "has_vmax"))
def _acoustic_jit(v, amp, src, rec, pml_vmax, *, dx, dt, widths, accuracy, free_surface, k_block, batched,
                  amp_batched, src_batched, rec_batched, has_vmax):
    run = functools.partial(_propagate_one, dx=dx, dt=dt, widths=widths, accuracy=accuracy,
                            free_surface=free_surface, k_block=k_block)
    vmax = pml_vmax if has_vmax else None
    if not batched:
        return run(v, amp, src, rec, vmax)
    return jax.vmap(lambda vv, a, s, r: run(vv, a, s, r, vmax),
                    in_axes=(0, 0 if amp_batched else None, 0 if src_batched else None,
                             0 if rec_batched else None))(v, amp, src, rec)


def acoustic(v, dx: float, dt: float, source_amplitudes, source_locations, receiver_locations, *, pml_width=20,
             free_surface: bool = False, accuracy: int = 4, pml_vmax: float | None = None,
             checkpoint_every: int | None = None, _prepare_only: bool = False):
    r"""Simulate 2D acoustic waves and record pressure at receivers: :func:`probinv.physics.acoustic` in JAX.

    Solves :math:`\frac{1}{v^2} p_{tt} - \nabla^2 p = f(t)\,\delta(\mathbf{x}-\mathbf{x}_s)` (delta as ``1/dx^2`` on
    the source cell) with leapfrog in time, central differences of order ``accuracy`` in space, the CPML of
    :mod:`probinv.physics.boundaries` outside the model and an optional pressure-release free surface one cell above
    row 0 (odd mirror). The result equals the PyTorch solver's to rounding error, and so do its derivatives
    (``jax.grad`` / ``jax.vjp`` through the time loop). Traceable: it may be called inside ``jax.jit``, ``jax.grad``
    and ``jax.vmap`` (the argument checks that need values then run only on concrete inputs).

    The JAX backend enables float64 (``jax_enable_x64``) when imported; float32 inputs still run in float32.

    Parameters
    ----------
    v : array (nz, nx) or (batch, nz, nx)
        Wave speed in m/s, z first. float32 or float64 (jax or numpy arrays; a torch tensor is converted). A batch
        runs every shot in every model (``vmap``).
    dx : float
        Grid spacing in m.
    dt : float
        Time step in s (CFL-checked as in the PyTorch solver when ``v`` is concrete).
    source_amplitudes : array [n_shots, n_sources_per_shot, nt] (or [batch, n_shots, n_sources, nt])
        Source time functions; sample ``n`` at ``t = n dt``.
    source_locations, receiver_locations : int array [n_shots, n, 2] (or [batch, n_shots, n, 2])
        ``(z, x)`` grid indices, concrete (numpy/torch/jax).
    pml_width : int or 4 ints (top, bottom, left, right)
        CPML thickness in cells outside the model.
    free_surface : bool
        Pressure-release surface on top (the top PML is then removed).
    accuracy : {2, 4, 8}
        Spatial order.
    pml_vmax : float, optional
        Velocity (m/s) setting the CPML strength; default each model's maximum rounded up to two significant
        digits (as the PyTorch solver). Give a fixed value for sampling.
    checkpoint_every : int, optional
        Steps per checkpoint block: the reverse pass keeps one state per block and recomputes the block (memory
        ~ ``nt / k`` states + ``k`` wavefields instead of ``nt`` wavefields). Default None: ``q^n`` of every step is
        stored, as the PyTorch solver does by default. Does not change values (to rounding).

    Returns
    -------
    jax.Array [n_shots, n_receivers, nt] or [batch, n_shots, n_receivers, nt]
        Pressure at the receivers; sample ``n`` is ``t = n dt``; dtype of ``v``.
    """
    v = _to_array("v", v)
    if v.ndim not in (2, 3):
        raise ValueError(f"v must be shaped (nz, nx) or (batch, nz, nx), got shape {tuple(v.shape)}")
    dx = check_scalar("dx", dx)
    dt = check_scalar("dt", dt)
    accuracy = _fd.check_accuracy(accuracy)
    if not isinstance(free_surface, bool):
        raise TypeError(f"free_surface must be True or False, got {free_surface!r}")
    widths = pml_widths(pml_width, free_surface)
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be None or a positive int (steps per block), got "
                         f"{checkpoint_every!r}")
    if pml_vmax is not None:
        pml_vmax = check_scalar("pml_vmax", pml_vmax)
    batched = v.ndim == 3
    batch = v.shape[0] if batched else None
    nz, nx = v.shape[-2:]
    amp = _to_array("source_amplitudes", source_amplitudes).astype(v.dtype)
    if amp.ndim not in (3, 4) or (amp.ndim == 4 and not batched):
        raise ValueError("source_amplitudes must be shaped [n_shots, n_sources_per_shot, nt] (or [batch, n_shots, "
                         f"n_sources_per_shot, nt] for a batch of models), got shape {tuple(amp.shape)}")
    if amp.ndim == 4 and amp.shape[0] != batch:
        raise ValueError(f"source_amplitudes is given per model with {amp.shape[0]} models but v has a batch of "
                         f"{batch}")
    if amp.shape[-1] < 1:
        raise ValueError(f"source_amplitudes must have at least one time sample, got shape {tuple(amp.shape)}")
    n_shots = amp.shape[-3]
    src = _locations("source_locations", source_locations, (nz, nx), batch)
    rec = _locations("receiver_locations", receiver_locations, (nz, nx), batch)
    for name, loc in (("source_locations", src), ("receiver_locations", rec)):
        if loc.shape[-3] != n_shots:
            raise ValueError(f"{name} has {loc.shape[-3]} shots but source_amplitudes has {n_shots}")
    if src.shape[-2] != amp.shape[-2]:
        raise ValueError(f"source_locations has {src.shape[-2]} sources per shot but source_amplitudes has "
                         f"{amp.shape[-2]}")
    if _is_concrete(amp) and not np.isfinite(np.asarray(amp)).all():
        raise ValueError("source_amplitudes must be finite everywhere")
    if _is_concrete(v) and not _prepare_only:
        vn = np.asarray(v)
        if not np.isfinite(vn).all() or (vn <= 0).any():
            raise ValueError(f"v must be positive and finite everywhere (m/s), got range [{vn.min():g}, {vn.max():g}]")
        vmax, vmin = float(vn.max()), float(vn.min())
        check_dt(dt, _fd.max_stable_dt_second_order(vmax, dx, accuracy),
                 f"accuracy={accuracy}, dx = {dx:g} m and vmax = {vmax:g} m/s")
        if _is_concrete(amp):
            fmax = significant_max_frequency(torch.from_numpy(np.array(amp, dtype=np.float64)), dt)
            if fmax > 0:
                warn_points_per_wavelength(vmin, dx, fmax, MIN_POINTS_PER_WAVELENGTH[accuracy])
    w_pad = nx + widths.left + widths.right

    def flat(loc):
        return jnp.asarray((loc[..., 0] + widths.top) * w_pad + loc[..., 1] + widths.left, dtype=jnp.int32)

    k = checkpoint_every
    static = dict(dx=dx, dt=dt, widths=tuple(widths), accuracy=accuracy, free_surface=free_surface, k_block=k,
                  has_vmax=pml_vmax is not None)
    vmax = jnp.asarray(pml_vmax if pml_vmax is not None else 0.0)
    if _prepare_only:
        return amp, flat(src), flat(rec), vmax, static
    return _acoustic_jit(v, amp, flat(src), flat(rec), vmax, batched=batched, amp_batched=amp.ndim == 4,
                         src_batched=src.ndim == 4, rec_batched=rec.ndim == 4, **static)


def _run_prepared(v, amp, src, rec, vmax, static):
    """Run the solver on arguments prepared (checked, flattened) by ``acoustic(..., _prepare_only=True)``.

    ``v (nz, nx)`` or ``(batch, nz, nx)``; ``amp [shots, ns, nt]``, ``src``/``rec`` flat indices ``[shots, n]``
    (shared by the models of a batch), possibly traced (a subsample of shots inside a NumPyro model).
    """
    return _acoustic_jit(v, amp, src, rec, vmax, batched=v.ndim == 3, amp_batched=False, src_batched=False,
                         rec_batched=False, **static)
