r"""Frequency-domain visco-acoustic / visco-elastic SH solver (Kolsky-Futterman constant Q) with exact gradients.

Solves, at every frequency :math:`\omega = 2\pi f` and for every shot,

.. math:: \nabla^2 u + \frac{\omega^2}{v(\omega)^2}\, u = -\delta(\mathbf x - \mathbf x_s), \qquad
          \frac{1}{v(\omega)} = \frac1v + \frac{\ln(\omega_{ref}/\omega)}{\pi v Q} + \frac{i}{2 v Q},

in the ``exp(-i omega t)`` convention (paper 2, eqs. 42-45; DESIGN.md section 2), so that the homogeneous-medium
response is :math:`(i/4) H_0^{(1)}(k r)` with :math:`k = \omega / v(\omega)`.

Discretisation
--------------
*Stencil.* A 9-point average-derivative scheme (Chen 2012): each second derivative is averaged over the three
neighbouring lines with weights ``((1 - a)/2, a, (1 - a)/2)`` and the mass term is lumped over the 3 x 3 cell with
weights ``c`` (centre), ``d`` (4 edges), ``e = (1 - c - 4 d) / 4`` (4 corners). The coefficients
``a = 0.81072864, c = 0.63925553, d = 0.09309815`` were obtained here by minimising the largest phase-velocity error
of the plane-wave dispersion relation over all propagation angles and over 6 points per wavelength and more; the
resulting largest phase-velocity error is 0.046 % for G >= 6 points per wavelength (0.24 % at G = 5, 0.9 % at
G = 4; the standard 5-point stencil has 2.6 % at G = 8).

*Absorbing layers.* ``pml_width`` cells are added outside the user's model on every side (top excluded with
``free_surface=True``), the model being extended by repeating its edge values, as the time-domain solvers do
(:mod:`probinv.physics.boundaries`). Inside them the coordinates are stretched,
:math:`\partial_x \to s_x^{-1}\partial_x`, :math:`s_x = 1 + i\sigma_x(x)/\omega`, with
:math:`\sigma(s) = \sigma_0 s^2`, :math:`\sigma_0 = 3 v_{max}\ln(1/R)/(2L)` (R = 1e-6), and the equation is
discretised in its conservative form

.. math:: \partial_x(\tfrac{s_z}{s_x}\partial_x u) + \partial_z(\tfrac{s_x}{s_z}\partial_z u)
          + s_x s_z k^2 u = -s_x s_z\delta.

The outer edge of the layers is a Dirichlet wall. The damping strength uses ``max(v)`` as a constant: it is not
differentiated (a perturbation of the largest velocity also retunes the layers; the returned gradient is that of the
solution with the layers held fixed).

*Source.* The point source ``-a delta / dx^2`` is spread over its 3 x 3 cell with the same mass-lumping weights
``W`` as the ``k^2 u`` term, i.e. ``(D + diag(m) W) u = W b``: the scheme then approximates
``W^{-1} D + k^2`` (an effective Laplacian) with a point source, which removes the ``1 / M(k h)`` amplitude bias
(3.6 % at 10 points per wavelength) that an unweighted point source gets from the lumped mass.

*Free surface* (no top layer). ``wave="acoustic"``: pressure release, ``u = 0`` one cell above row 0 (at
``z = -dx``), as in :func:`probinv.physics.acoustic`: a source at row ``i`` has its (negative) image at row
``-2 - i``. ``wave="sh"``: traction free, ``du/dz = 0`` on row 0 (``z = 0``), as in :func:`probinv.physics.sh`,
by the image method (the ghost row above row 0 mirrors row 1; positive image at row ``-i``).

*wave="sh"*: the visco-elastic SH equation of paper 2 eq. 44, ``lap U + omega^2 / vs(omega)^2 U = -S`` (pass
``v = vs`` and ``q = Qs``). In a homogeneous medium ``U`` is ``mu = rho vs(omega)^2`` times the SH displacement of a
unit line force; in a heterogeneous one eq. 44 (like the paper) drops the ``grad(mu) . grad(U) / mu`` term of
``div(mu grad U) / mu``, so it is the full visco-elastic SH equation only where ``mu`` varies slowly. The only
differences from the acoustic case are therefore the meaning of the field and the free-surface condition.

Measured accuracy
-----------------
Relative error of the complex response (amplitude and phase) against :math:`(i/4)H_0^{(1)}(kr)`, homogeneous medium,
v = 2000 m/s, f = 10 Hz, largest over the receivers 1 to 4 wavelengths from the source along the x axis and the
diagonal, ``pml_width=20``, ``omega_ref = omega`` (``python3 benchmarks/helmholtz.py --accuracy``):

==========================  ========  ========  ========  ========  ========
points per wavelength        5         6         8         10        15
==========================  ========  ========  ========  ========  ========
Q = infinity                 6.5 %     1.4 %     1.0 %     1.1 %     0.7 %
Q = 30                       6.4 %     1.3 %     1.0 %     1.1 %     0.7 %
==========================  ========  ========  ========  ========  ========

Below 6 points per wavelength the error grows quickly (a warning is issued); from 6 on it is the stencil's residual
phase error (<= 0.05 % of phase velocity, i.e. ~1 % after 4 wavelengths) plus the layers' reflections. For
comparison, the plain 5-point stencil (the same code with ``a = c = 1, d = 0``) has a 0.43 rad phase error, i.e. a
43 % relative error, after 4 wavelengths at 10 points per wavelength.

Linear algebra and devices
--------------------------
With ``method="sparse"`` (default) the matrix of each frequency is factorised once by SuperLU
(:func:`scipy.sparse.linalg.splu`) and all shots are solved as right-hand sides of that factorisation; the backward
pass reuses the same factorisation for the adjoint (transposed) solves, so a gradient costs one factorisation and
two sets of triangular solves per frequency. The factorisations are kept between the forward and the backward pass
when the output requires a gradient (memory grows with the number of frequencies; ``keep_factors=False``
refactorises in the backward pass instead, at the cost of a second factorisation per frequency). SciPy runs on the
CPU: if the inputs live on a GPU, the complex coefficients are copied to the CPU for the solve and the data (and
gradients) are copied back explicitly to the input's device. ``method="dense"`` builds the same matrix as a dense torch
tensor and calls :func:`torch.linalg.solve`, differentiated by plain autograd: it stays on the input's device (GPU
included) and is meant for small grids (memory ``(nz nx)^2``) and as the reference implementation of the custom
adjoint.

Gradients
---------
Let :math:`A(m) u = b` with :math:`A = D + \mathrm{diag}(m) W` (``D``: stretched Laplacian, ``W``: 9-point mass
lumping, ``m = s_x s_z \omega^2 / v(\omega)^2``). For a real loss, PyTorch passes
:math:`g = \partial L/\partial \mathrm{Re}\,u + i\,\partial L/\partial \mathrm{Im}\,u` (twice the conjugate
Wirtinger derivative, paper 2 eq. 4). Then, with :math:`\mu` solving the *transposed* (not conjugate-transposed)
system :math:`A^T \mu = \bar g`,

.. math:: \nabla_m L = -\overline{\mu \odot (W u)}, \qquad \nabla_p L = W^T \bar\mu \quad (b = W p),

and the chain rule through :math:`m(v, Q)` and the padding is left to autograd. ``A`` is not symmetric (the PML
factors and the free-surface mirror enter each row with that row's coefficients), which is why the transposed solve
``splu(...).solve(rhs, trans="T")`` is used rather than assuming symmetry.

References
----------
Chen, J.-B. (2012). An average-derivative optimal scheme for frequency-domain scalar wave equation. Geophysics 77(6).
Jo, C.-H., Shin, C., Suh, J. H. (1996). An optimal 9-point, finite-difference, frequency-space, 2-D scalar wave
extrapolator. Geophysics 61(2).
Kjartansson, E. (1979). Constant Q wave propagation and attenuation. JGR 84(B9).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from ..validation import check_field, check_locations, check_scalar
from ._checks import warn_points_per_wavelength
from .boundaries import Widths, pad_model, pml_widths

#: Average-derivative 9-point coefficients (a, c, d); e = (1 - c - 4 d) / 4. See the module docstring.
ADM9 = (0.81072864, 0.63925553, 0.09309815)
#: Theoretical normal-incidence reflection coefficient of the PML.
PML_REFLECTION = 1e-6
#: Fewer grid points than this per shortest wavelength triggers a warning (phase error grows quickly below).
MIN_POINTS_PER_WAVELENGTH = 6.0

_WAVES = ("acoustic", "sh")
_METHODS = ("sparse", "dense")


# ---------------------------------------------------------------------------------------------------------------------
# matrix assembly (numpy, complex128)
# ---------------------------------------------------------------------------------------------------------------------
def _stretch(n: int, w0: int, w1: int, dx: float, omega: float, vmax: float) -> tuple[np.ndarray, np.ndarray]:
    """Complex stretching ``s = 1 + i sigma / omega`` at the nodes ``-1..n`` and half nodes ``-1/2..n-1/2``.

    Returns ``(s_node [n + 2], s_half [n + 1])``; ``s_node[k]`` is node ``k - 1`` and ``s_half[k]`` is ``k - 1/2``.
    The ghost values outside the padded grid are only read for the free-surface mirror (where there is no layer).
    """
    def sigma(pos):
        depth = np.zeros_like(pos)
        if w0 > 0:
            depth = np.maximum(depth, np.clip((w0 - pos) / w0, 0.0, 1.0))
        if w1 > 0:
            depth = np.maximum(depth, np.clip((pos - (n - 1 - w1)) / w1, 0.0, 1.0))
        width = max(w0, w1, 1) * dx
        sigma0 = 3.0 * vmax * math.log(1.0 / PML_REFLECTION) / (2.0 * width)
        return sigma0 * depth ** 2

    nodes = np.arange(-1, n + 1, dtype=np.float64)
    halves = np.arange(-1, n, dtype=np.float64) + 0.5
    return 1.0 + 1j * sigma(nodes) / omega, 1.0 + 1j * sigma(halves) / omega


class _Pattern(NamedTuple):
    """Sparsity pattern of the 9-point operator on the padded grid, shared by all frequencies."""

    nz: int
    nx: int
    rows: np.ndarray        # [nnz] row (equation) index of each stored entry, in CSC order
    indices: np.ndarray     # CSC row indices
    indptr: np.ndarray      # CSC column pointers
    perm: np.ndarray        # COO -> CSC permutation of the entries
    coo_rows: np.ndarray
    coo_cols: np.ndarray
    w_data: np.ndarray      # [nnz] real mass-lumping weights W in CSC order
    # parts of D built per frequency from the stretching factors: entry -> (kind, offsets)
    jz: np.ndarray          # [nnz_coo] row (z) of the equation
    ix: np.ndarray          # [nnz_coo] column (x) of the equation
    dz: np.ndarray          # [nnz_coo] z offset of the *stencil* point (-1, 0, 1), before the mirror fold
    dxo: np.ndarray         # [nnz_coo] x offset of the stencil point


def _build_pattern(nz: int, nx: int, wave: str, free_surface: bool) -> _Pattern:
    """Enumerate the stencil entries (equation node, stencil offset) and the resulting sparsity pattern."""
    a, c, d = ADM9
    e = (1.0 - c - 4.0 * d) / 4.0
    jj, ii = np.meshgrid(np.arange(nz), np.arange(nx), indexing="ij")
    jj, ii = jj.ravel(), ii.ravel()
    n = nz * nx
    mirror = free_surface and wave == "sh"
    rows, cols, jzs, ixs, dzs, dxs, ws = [], [], [], [], [], [], []
    for dz in (-1, 0, 1):
        for dxo in (-1, 0, 1):
            jt, it = jj + dz, ii + dxo
            if mirror:
                jt = np.where(jt < 0, -jt, jt)     # image of row -1 is row 1 (traction free at row 0)
            ok = (jt >= 0) & (jt < nz) & (it >= 0) & (it < nx)      # outside: u = 0 (Dirichlet)
            col = jt * nx + it
            w = c if (dz == 0 and dxo == 0) else (d if (dz == 0 or dxo == 0) else e)
            rows.append((jj * nx + ii)[ok])
            cols.append(col[ok])
            jzs.append(jj[ok])
            ixs.append(ii[ok])
            dzs.append(np.full(ok.sum(), dz))
            dxs.append(np.full(ok.sum(), dxo))
            ws.append(np.full(ok.sum(), w))
    coo_rows = np.concatenate(rows)
    coo_cols = np.concatenate(cols)
    jz = np.concatenate(jzs)
    ix = np.concatenate(ixs)
    dzo = np.concatenate(dzs)
    dxo_ = np.concatenate(dxs)
    w_coo = np.concatenate(ws)
    # several stencil points can fold onto one matrix entry (mirror): sum them through the COO -> CSC conversion;
    # record, for every COO entry, the position of its (row, col) pair in the CSC data array
    key = coo_rows.astype(np.int64) * n + coo_cols
    uniq, inverse = np.unique(key, return_inverse=True)
    urows, ucols = uniq // n, uniq % n
    csc = sp.csc_matrix((np.arange(1, uniq.size + 1, dtype=np.float64), (urows, ucols)), shape=(n, n))
    order = np.empty(uniq.size, dtype=np.int64)
    order[csc.data.astype(np.int64) - 1] = np.arange(uniq.size)
    perm = order[inverse]                   # COO entry -> CSC data slot
    w_data = np.bincount(perm, weights=w_coo, minlength=uniq.size)
    rows_csc = csc.indices.astype(np.int64)
    return _Pattern(nz, nx, rows_csc, csc.indices, csc.indptr, perm, coo_rows, coo_cols, w_data,
                    jz, ix, dzo, dxo_)


def _laplacian_data(pat: _Pattern, widths: Widths, dx: float, omega: float, vmax: float) -> np.ndarray:
    """CSC data of ``D`` (stretched, average-derivative Laplacian) at one frequency."""
    a = ADM9[0]
    nz, nx = pat.nz, pat.nx
    sz, szh = _stretch(nz, widths.top, widths.bottom, dx, omega, vmax)
    sx, sxh = _stretch(nx, widths.left, widths.right, dx, omega, vmax)
    jz, ix, dz, dxo = pat.jz, pat.ix, pat.dz, pat.dxo
    h2 = dx * dx
    val = np.zeros(jz.size, dtype=np.complex128)
    # x-term on line jz + dz (weight a on the centre line, (1 - a)/2 on the two others):
    # [ax(i+1/2)(u_{i+1} - u_i) - ax(i-1/2)(u_i - u_{i-1})] / h^2, ax = sz(line) / sx(half node)
    wline = np.where(dz == 0, a, (1.0 - a) / 2.0)
    szl = sz[jz + dz + 1]
    ax_p = szl / sxh[ix + 1]                # half node i + 1/2  -> index i + 1
    ax_m = szl / sxh[ix]                    # half node i - 1/2  -> index i
    val += np.where(dxo == 1, wline * ax_p, 0) + np.where(dxo == -1, wline * ax_m, 0)
    val -= np.where(dxo == 0, wline * (ax_p + ax_m), 0)
    # z-term on column ix + dxo, weights on dxo
    wcol = np.where(dxo == 0, a, (1.0 - a) / 2.0)
    sxc = sx[ix + dxo + 1]
    az_p = sxc / szh[jz + 1]
    az_m = sxc / szh[jz]
    val += np.where(dz == 1, wcol * az_p, 0) + np.where(dz == -1, wcol * az_m, 0)
    val -= np.where(dz == 0, wcol * (az_p + az_m), 0)
    val /= h2
    full = val
    # sum the stencil points that fold onto one matrix entry (bincount: much faster than np.add.at)
    size = pat.w_data.size
    return (np.bincount(pat.perm, weights=full.real, minlength=size)
            + 1j * np.bincount(pat.perm, weights=full.imag, minlength=size))


def _stretch_product(pat: _Pattern, widths: Widths, dx: float, omega: float, vmax: float) -> np.ndarray:
    """``s_x s_z`` at the nodes of the padded grid, ``[nz, nx]`` complex."""
    sz, _ = _stretch(pat.nz, widths.top, widths.bottom, dx, omega, vmax)
    sx, _ = _stretch(pat.nx, widths.left, widths.right, dx, omega, vmax)
    return sz[1:-1, None] * sx[None, 1:-1]


def _matrix(pat: _Pattern, d_data: np.ndarray, m_flat: np.ndarray) -> sp.csc_matrix:
    """Assemble ``A = D + diag(m) W``."""
    n = pat.nz * pat.nx
    data = d_data + m_flat[pat.rows] * pat.w_data
    return sp.csc_matrix((data, pat.indices, pat.indptr), shape=(n, n))


# ---------------------------------------------------------------------------------------------------------------------
# the custom autograd function: sparse LU forward, transposed solves with the same factors backward
# ---------------------------------------------------------------------------------------------------------------------
class _Setup(NamedTuple):
    pat: _Pattern
    d_data: list            # per frequency CSC data of D
    src: np.ndarray         # [n_shots, n_src] flat padded indices
    rec: np.ndarray         # [n_shots, n_rec]
    dx: float
    keep_factors: bool


class _HelmholtzSparse(torch.autograd.Function):
    """``m [n_freqs, N] complex, amp [n_shots, n_src, n_freqs] complex -> data [n_shots, n_rec, n_freqs]``."""

    @staticmethod
    def forward(ctx, m, amp, setup):
        pat, src, rec = setup.pat, setup.src, setup.rec
        n = pat.nz * pat.nx
        n_shots = src.shape[0]
        m_np = m.detach().to("cpu", torch.complex128).numpy()
        amp_np = amp.detach().to("cpu", torch.complex128).numpy()
        shot_idx = np.broadcast_to(np.arange(n_shots)[:, None], src.shape)
        keep = (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]) and setup.keep_factors
        w = sp.csc_matrix((pat.w_data, pat.indices, pat.indptr), shape=(n, n))
        out = np.empty((n_shots, rec.shape[1], m_np.shape[0]), dtype=np.complex128)
        lus, fields = [], []
        for f in range(m_np.shape[0]):
            lu = spla.splu(_matrix(pat, setup.d_data[f], m_np[f]))
            pts = np.zeros((n, n_shots), dtype=np.complex128)
            np.add.at(pts, (src, shot_idx), -amp_np[..., f] / setup.dx ** 2)
            u = lu.solve(w @ pts)                                           # b = W (-a delta / dx^2)
            out[..., f] = u[rec, np.arange(n_shots)[:, None]]
            if keep:
                lus.append(lu)
                fields.append(u)
        ctx.setup, ctx.lus, ctx.fields = setup, lus, fields
        if not setup.keep_factors:
            ctx.m_np, ctx.amp_np = m_np, amp_np     # refactorise in backward: memory of one factorisation at a time
        ctx.m_meta = (m.dtype, m.device)
        ctx.amp_meta = (amp.dtype, amp.device)
        return torch.from_numpy(out).to(device=m.device, dtype=m.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        setup = ctx.setup
        pat, src, rec = setup.pat, setup.src, setup.rec
        n = pat.nz * pat.nx
        n_shots = src.shape[0]
        g = grad_out.detach().to("cpu", torch.complex128).numpy()
        w = sp.csc_matrix((pat.w_data, pat.indices, pat.indptr), shape=(n, n))
        n_freqs = g.shape[-1]
        grad_m = np.zeros((n_freqs, n), dtype=np.complex128)
        grad_amp = np.zeros((n_shots, src.shape[1], n_freqs), dtype=np.complex128)
        shots = np.broadcast_to(np.arange(n_shots)[:, None], rec.shape)
        for f in range(n_freqs):
            if setup.keep_factors:
                lu, u = ctx.lus[f], ctx.fields[f]
            else:
                lu = spla.splu(_matrix(pat, setup.d_data[f], ctx.m_np[f]))
                pts = np.zeros((n, n_shots), dtype=np.complex128)
                shot_idx = np.broadcast_to(np.arange(n_shots)[:, None], src.shape)
                np.add.at(pts, (src, shot_idx), -ctx.amp_np[..., f] / setup.dx ** 2)
                u = lu.solve(w @ pts)
            rhs = np.zeros((n, n_shots), dtype=np.complex128)
            np.add.at(rhs, (rec, shots), np.conj(g[..., f]))
            mu = lu.solve(rhs, trans="T")                                   # A^T mu = conj(g)
            grad_m[f] = -np.conj((mu * (w @ u)).sum(axis=1))
            wt_mu = w.T @ mu                                                # b = W p  ->  grad_p = W^T grad_b
            grad_amp[..., f] = -np.conj(wt_mu[src, np.arange(n_shots)[:, None]]) / setup.dx ** 2
        gm = torch.from_numpy(grad_m).to(device=ctx.m_meta[1], dtype=ctx.m_meta[0]) if ctx.needs_input_grad[0] else None
        ga = (torch.from_numpy(grad_amp).to(device=ctx.amp_meta[1], dtype=ctx.amp_meta[0])
              if ctx.needs_input_grad[1] else None)
        return gm, ga, None


def _dense_solve(m, amp, setup):
    """Solve by the reference path: the same matrix as a dense torch tensor, ``torch.linalg.solve``, plain autograd.

    The matrix is written entry by entry (``index_put``) so that only it and its LU factors (kept by autograd for
    the backward solve) are ``N^2`` in memory.
    """
    pat = setup.pat
    n = pat.nz * pat.nx
    dev, cdt = m.device, m.dtype
    rows = torch.as_tensor(pat.rows, device=dev)
    cols = torch.as_tensor(np.repeat(np.arange(n), np.diff(pat.indptr)), device=dev)
    w_data = torch.as_tensor(pat.w_data, dtype=cdt, device=dev)
    n_shots = setup.src.shape[0]
    src = torch.as_tensor(setup.src, device=dev)
    rec = torch.as_tensor(setup.rec, device=dev)
    shots = torch.arange(n_shots, device=dev)[:, None].expand_as(src)
    out = []
    for f in range(m.shape[0]):
        vals = torch.as_tensor(setup.d_data[f], dtype=cdt, device=dev) + m[f][rows] * w_data
        a = torch.zeros(n, n, dtype=cdt, device=dev).index_put((rows, cols), vals)
        pts = torch.zeros(n, n_shots, dtype=cdt, device=dev)
        amps = -amp[..., f] / setup.dx ** 2
        pts = pts.index_put((src.reshape(-1), shots.reshape(-1)), amps.reshape(-1), accumulate=True)
        rhs = torch.zeros_like(pts).index_add(0, rows, w_data[:, None] * pts[cols])      # W pts
        u = torch.linalg.solve(a, rhs)
        del a
        out.append(u[rec, torch.arange(n_shots, device=dev)[:, None]])
    return torch.stack(out, dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# public function
# ---------------------------------------------------------------------------------------------------------------------
def _check_q(q, v: torch.Tensor) -> torch.Tensor:
    if not isinstance(q, torch.Tensor):
        if isinstance(q, (int, float)) and not isinstance(q, bool):
            q = torch.full_like(v, float(q))
        else:
            raise TypeError(f"q must be a torch.Tensor shaped like v {tuple(v.shape)} or a number, "
                            f"got {type(q).__name__}")
    if not q.is_floating_point():
        raise TypeError(f"q must have a floating dtype (float32 or float64), got {q.dtype}")
    if q.shape != v.shape:
        raise ValueError(f"q must have the shape of v {tuple(v.shape)}, got {tuple(q.shape)}")
    if bool(torch.isnan(q).any()):
        raise ValueError(f"q must not contain NaN, got {int(torch.isnan(q).sum())} NaN values")
    qmin = float(q.detach().min())
    if qmin <= 0:
        raise ValueError(f"q must be positive everywhere (use inf for no attenuation), got minimum {qmin}")
    return q


def _check_frequencies(frequencies) -> np.ndarray:
    try:
        f = np.asarray(frequencies.detach().cpu() if isinstance(frequencies, torch.Tensor) else frequencies,
                       dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"frequencies must be a sequence or 1-D tensor of numbers in Hz, got {frequencies!r}") from None
    if f.size == 0:
        raise ValueError("frequencies must contain at least one frequency (Hz), got an empty sequence")
    if not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise ValueError(f"frequencies must be positive finite values in Hz, got {f.tolist()}")
    return f


def helmholtz(v: torch.Tensor, q, dx: float, frequencies, source_locations: torch.Tensor,
              receiver_locations: torch.Tensor, *, omega_ref: float, pml_width=20, free_surface: bool = False,
              wave: str = "acoustic", rho=None, source_amplitudes: torch.Tensor | None = None,
              method: str = "sparse", keep_factors: bool = True) -> torch.Tensor:
    r"""Frequency-domain response of a visco-acoustic (or visco-elastic SH) medium with constant Q.

    Solves :math:`\nabla^2 u + \omega^2 / v(\omega)^2\, u = -a_s(\omega)\,\delta(\mathbf x - \mathbf x_s)` for every
    shot and frequency (``exp(-i omega t)`` convention, Kolsky-Futterman :math:`v(\omega)`; see the module docstring
    for the equations, the stencil, the absorbing layers and the measured accuracy).

    Parameters
    ----------
    v : Tensor
        Reference wave speed (m/s) at ``omega_ref``: P speed for ``wave="acoustic"``, S speed for ``wave="sh"``;
        shaped ``(nz, nx)`` or ``(batch, nz, nx)``, float32 or float64.
    q : Tensor or float
        Quality factor Q (dimensionless, > 0), same shape as ``v``, or one number; ``inf`` means no attenuation.
    dx : float
        Grid spacing in metres (equal in z and x).
    frequencies : sequence of float or 1-D Tensor
        Frequencies in Hz (> 0); ``omega = 2 pi f``.
    source_locations : Tensor
        int64 ``[n_shots, n_sources_per_shot, 2]`` (z, x) grid indices; the point source's delta is ``1/dx^2`` on its
        cell. Several sources in one shot are superposed.
    receiver_locations : Tensor
        int64 ``[n_shots, n_receivers, 2]`` (z, x) grid indices.
    omega_ref : float
        Reference angular frequency (rad/s) at which ``v`` is the phase velocity's reference (``2 pi f_ref``).
    pml_width : int or 4 ints
        Absorbing-layer thickness in cells (top, bottom, left, right), added outside the model.
    free_surface : bool
        Free surface on top instead of a layer: pressure release one cell above row 0 for acoustic, traction free
        on row 0 for SH (the conventions of :func:`probinv.physics.acoustic` and :func:`probinv.physics.sh`).
    wave : {"acoustic", "sh"}
        Which equation (paper 2 eq. 42 or eq. 44); see the module docstring.
    rho : None
        Only ``None`` is accepted: the solved equations (paper 2 eqs. 42 and 44) have constant density, for which
        the response does not depend on it.
    source_amplitudes : Tensor, optional
        Complex (or real) source spectrum ``[n_shots, n_sources_per_shot, n_freqs]``; default 1 (the Green's
        function). Gradients flow to it.
    method : {"sparse", "dense"}
        ``"sparse"``: SciPy SuperLU with the custom adjoint (CPU solve, any grid). ``"dense"``: ``torch.linalg.solve``
        of the same matrix with plain autograd, on the input's device (small grids only).
    keep_factors : bool
        ``method="sparse"`` only. True: keep every frequency's LU factors and wavefields from the forward pass for
        the backward pass (fastest: the gradient costs one factorisation per frequency in all). False: keep only
        the coefficients and refactorise in the backward pass (memory of one factorisation at a time, for large
        grids with many frequencies; the gradient then costs two factorisations per frequency).

    Returns
    -------
    Tensor
        Complex (complex64 for float32 input, complex128 for float64) ``[n_shots, n_receivers, n_freqs]``, or
        ``[batch, n_shots, n_receivers, n_freqs]`` for a batch of models, on ``v``'s device.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, naming it, its value and what is valid.

    Examples
    --------
    >>> import torch
    >>> from probinv.physics import helmholtz
    >>> v = torch.full((40, 40), 2000.0, dtype=torch.float64)
    >>> src = torch.tensor([[[20, 20]]]); rec = torch.tensor([[[20, 30]]])
    >>> d = helmholtz(v, 50.0, 10.0, [20.0], src, rec, omega_ref=2 * torch.pi * 20.0)
    >>> d.shape
    torch.Size([1, 1, 1])
    """
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"v must be a torch.Tensor shaped (nz, nx) or (batch, nz, nx), got {type(v).__name__}")
    check_field("v", v.detach())
    q = _check_q(q, v)
    if q.dtype != v.dtype or q.device != v.device:
        raise ValueError(f"q must have v's dtype and device ({v.dtype}, {v.device}), got ({q.dtype}, {q.device})")
    dx = check_scalar("dx", dx)
    omega_ref = check_scalar("omega_ref", omega_ref)
    freqs = _check_frequencies(frequencies)
    if wave not in _WAVES:
        raise ValueError(f"wave must be one of {_WAVES}, got {wave!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not isinstance(keep_factors, bool):
        raise TypeError(f"keep_factors must be True or False, got {keep_factors!r}")
    if rho is not None:
        raise ValueError("rho must be None: helmholtz solves the constant-density equations of paper 2 "
                         "(eqs. 42 and 44), whose response does not depend on the density")
    if not isinstance(free_surface, bool):
        raise TypeError(f"free_surface must be True or False, got {free_surface!r}")
    widths = pml_widths(pml_width, free_surface)
    shape = tuple(v.shape[-2:])
    src = check_locations("source_locations", source_locations, None, shape, v.device)
    rec = check_locations("receiver_locations", receiver_locations, None, shape, v.device)
    if rec.shape[0] != src.shape[0]:
        raise ValueError(f"receiver_locations has {rec.shape[0]} shots but source_locations has {src.shape[0]}")
    n_shots, n_src = src.shape[:2]
    cdt = torch.complex128 if v.dtype == torch.float64 else torch.complex64
    if source_amplitudes is None:
        amp = torch.ones(n_shots, n_src, freqs.size, dtype=cdt, device=v.device)
    else:
        if not isinstance(source_amplitudes, torch.Tensor):
            raise TypeError(f"source_amplitudes must be a torch.Tensor [n_shots, n_sources_per_shot, n_freqs], "
                            f"got {type(source_amplitudes).__name__}")
        want = (n_shots, n_src, freqs.size)
        if tuple(source_amplitudes.shape) != want:
            raise ValueError(f"source_amplitudes must be shaped [n_shots, n_sources_per_shot, n_freqs] = {want}, "
                             f"got {tuple(source_amplitudes.shape)}")
        amp = source_amplitudes.to(cdt)
    vmin = float(v.detach().min())
    warn_points_per_wavelength(vmin, dx, float(freqs.max()), MIN_POINTS_PER_WAVELENGTH)

    vp = pad_model(v, widths)
    qp = pad_model(q, widths)
    nzp, nxp = vp.shape[-2:]
    pat = _build_pattern(nzp, nxp, wave, free_surface)
    omegas = 2.0 * math.pi * freqs
    src_np = ((src[..., 0] + widths.top) * nxp + src[..., 1] + widths.left).cpu().numpy()
    rec_np = ((rec[..., 0] + widths.top) * nxp + rec[..., 1] + widths.left).cpu().numpy()
    om = torch.as_tensor(omegas, dtype=v.dtype, device=v.device)[:, None, None]
    log_term = torch.log(omega_ref / om) / math.pi                                       # [n_freqs, 1, 1]

    def one(vm, qm):
        # the layers are tuned to each model's own largest velocity (a constant, not differentiated)
        vmax = float(vm.detach().max())
        d_data = [_laplacian_data(pat, widths, dx, w, vmax) for w in omegas]
        sxsz = torch.as_tensor(np.stack([_stretch_product(pat, widths, dx, w, vmax) for w in omegas]),
                               dtype=cdt, device=v.device)                              # [n_freqs, nzp, nxp]
        setup = _Setup(pat, d_data, src_np, rec_np, dx, keep_factors)
        invq = 1.0 / qm                                                                  # 0 where Q = inf
        slowness = (1.0 + log_term * invq + 0.5j * invq) / vm                            # 1 / v(omega)
        m = sxsz * (om * slowness) ** 2                                                  # s_x s_z k^2
        m = m.reshape(len(omegas), -1)
        if method == "dense":
            return _dense_solve(m, amp, setup)
        return _HelmholtzSparse.apply(m, amp, setup)

    if v.ndim == 2:
        return one(vp, qp)
    return torch.stack([one(vp[b], qp[b]) for b in range(v.shape[0])])


__all__ = ["helmholtz"]
