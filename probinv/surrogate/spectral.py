r"""Spectral (Fourier) convolution of the FNO, written for speed on CPU.

The Fourier layer of Li et al. (2021) transforms its input to the Fourier domain, multiplies the lowest modes by a
learned complex matrix per mode (channel mixing), drops the others and transforms back:

.. math:: (\mathcal{K} v)(x) = \mathcal{F}^{-1}\big[ R(k) \cdot (\mathcal{F} v)(k) \big](x), \quad
          |k_z| < m_z,\ 0 \le k_x < m_x .

Only ``2 m_z x m_x`` Fourier coefficients per channel survive (rows ``0..m_z-1`` and ``-m_z..-1`` of the real FFT,
columns ``0..m_x-1``). On a CPU, for the small grids of seismic surrogates (64 x 64, 128 x 128), it is faster to
compute exactly those coefficients with dense real matrix products against truncated DFT matrices than to run
``rfft2`` over the whole grid, zero-pad and ``irfft2`` back: every step is then a BLAS GEMM whose backward is two
GEMMs of the same size, so the backward costs about 2x the forward (the FFT path with complex ``einsum`` measured
5-30x, see ``benchmarks/fno_speed.py``). Both paths are implemented (``method="dft"`` and ``method="fft"``), give the
same numbers to rounding error, and are tested against each other and against a direct DFT double sum.

Conventions
-----------
Inputs are contiguous ``NCHW`` tensors ``[batch, channels, nz, nx]`` (z first). The transform is the
``torch.fft.rfft2`` convention (unnormalised forward, ``1/(nz nx)`` inverse), so for a weight ``W[i, o, kz, kx]``
(complex) the layer output equals

``irfft2(Y, s=(nz, nx))`` with ``Y[b, o, kz, kx] = sum_i rfft2(x)[b, i, kz, kx] W[i, o, kz, kx]`` on the kept modes
and 0 elsewhere. As in ``irfft``, the imaginary part of the ``kx = 0`` column is ignored. The layer is grid-free: the
same weights act on any ``nz >= 2 m_z``, ``nx >= 2 m_x - 1`` (the coefficients are those of the same physical
wavenumbers when the grid covers the same domain at a finer spacing).

The weight is stored as a real tensor ``[in_channels, out_channels, 2 * m_z, m_x, 2]`` (real, imaginary parts in
the last axis); rows ``0..m_z-1`` hold wavenumbers ``0..m_z-1`` and rows ``m_z..2 m_z-1`` wavenumbers ``-m_z..-1``,
i.e. the two weight blocks ``weights1``, ``weights2`` of the reference FNO implementation stacked.
"""
from __future__ import annotations

import math

import torch

from ..validation import check_choice, check_int

__all__ = ["SpectralConv2d", "dft_matrices", "spectral_conv2d"]

_DFT_CACHE: dict = {}


def _check_modes(nz: int, nx: int, modes_z: int, modes_x: int) -> None:
    if nz < 2 * modes_z:
        raise ValueError(f"the grid has nz = {nz} rows but modes_z = {modes_z} needs nz >= 2 * modes_z = "
                         f"{2 * modes_z}: use a larger grid or fewer modes")
    if nx < 2 * modes_x - 1:
        raise ValueError(f"the grid has nx = {nx} columns but modes_x = {modes_x} needs nx >= 2 * modes_x - 1 = "
                         f"{2 * modes_x - 1}: use a larger grid or fewer modes")


def dft_matrices(nz: int, nx: int, modes_z: int, modes_x: int, dtype: torch.dtype,
                 device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Truncated real DFT matrices for the ``"dft"`` path (cached per size, dtype and device).

    Returns
    -------
    fz : Tensor[4 m_z, nz]
        Rows ``[cos; -sin](2 pi k_z z / nz)`` for the kept ``k_z`` (``0..m_z-1, -m_z..-1``): ``fz @ x`` gives the
        real parts (first ``2 m_z`` rows) and imaginary parts (last ``2 m_z`` rows) of the DFT along z.
    fx : Tensor[nx, 2 m_x]
        Columns ``[cos, -sin](2 pi k_x x / nx)`` for ``k_x = 0..m_x-1`` (DFT along x).
    gx : Tensor[2 m_x, 2 nx]
        Inverse real DFT along x, ``[[C, S], [-S, C]]`` with ``C = c_k cos(2 pi k x / nx) / nx``,
        ``S = c_k sin(...) / nx``, ``c_0 = 1``, ``c_k = 2``: maps ``[Yr, Yi]`` to ``[Yr C - Yi S, Yi C + Yr S]``.
    gz : Tensor[nz, 4 m_z]
        Inverse DFT along z, ``[cos, -sin](2 pi k_z z / nz) / nz``: ``gz @ [U; V]`` is the real part.
    """
    key = (nz, nx, modes_z, modes_x, dtype, str(device))
    hit = _DFT_CACHE.get(key)
    if hit is not None:
        return hit
    kz = torch.cat([torch.arange(modes_z), torch.arange(-modes_z, 0)]).to(torch.float64)
    z = torch.arange(nz, dtype=torch.float64)
    phz = 2 * math.pi * torch.outer(kz, z) / nz  # [2mz, nz]
    fz = torch.cat([torch.cos(phz), -torch.sin(phz)], dim=0)
    kx = torch.arange(modes_x, dtype=torch.float64)
    xx = torch.arange(nx, dtype=torch.float64)
    phx = 2 * math.pi * torch.outer(xx, kx) / nx  # [nx, mx]
    fx = torch.cat([torch.cos(phx), -torch.sin(phx)], dim=1)
    ck = torch.full((modes_x,), 2.0, dtype=torch.float64)
    ck[0] = 1.0
    c = (ck[:, None] * torch.cos(phx.T)) / nx  # [mx, nx]
    s = (ck[:, None] * torch.sin(phx.T)) / nx
    gx = torch.cat([torch.cat([c, s], dim=1), torch.cat([-s, c], dim=1)], dim=0)  # [2mx, 2nx]
    gz = torch.cat([torch.cos(phz.T), -torch.sin(phz.T)], dim=1) / nz  # [nz, 4mz]
    out = tuple(t.to(dtype=dtype, device=device).contiguous() for t in (fz, fx, gx, gz))
    if len(_DFT_CACHE) > 64:
        _DFT_CACHE.clear()
    _DFT_CACHE[key] = out
    return out


def _mix_modes(xr: torch.Tensor, xi: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex channel mixing per mode as one real batched GEMM.

    ``xr, xi``: ``[B, Cin, K]``; ``weight``: ``[Cin, Cout, K, 2]``. Returns ``yr, yi``: ``[B, Cout, K]``.
    """
    b, cin, k = xr.shape
    cout = weight.shape[1]
    wr, wi = weight[..., 0], weight[..., 1]  # [Cin, Cout, K]
    # [[wr, wi], [-wi, wr]] so that [xr, xi] @ M = [xr wr - xi wi, xr wi + xi wr]
    m = torch.cat([torch.cat([wr, wi], dim=1), torch.cat([-wi, wr], dim=1)], dim=0)  # [2Cin, 2Cout, K]
    m = m.permute(2, 0, 1).contiguous()  # [K, 2Cin, 2Cout]
    xs = torch.cat([xr, xi], dim=1).permute(2, 0, 1).contiguous()  # [K, B, 2Cin]
    ys = torch.bmm(xs, m)  # [K, B, 2Cout]
    ys = ys.permute(1, 2, 0)  # [B, 2Cout, K]
    return ys[:, :cout], ys[:, cout:]


def spectral_conv2d(x: torch.Tensor, weight: torch.Tensor, *, method: str = "dft",
                    out_shape: tuple[int, int] | None = None) -> torch.Tensor:
    r"""Fourier-layer convolution of ``x`` with a truncated complex kernel.

    Parameters
    ----------
    x : Tensor[batch, in_channels, nz, nx]
        Real input (any float dtype). Made contiguous if it is not (strided inputs are very slow on CPU).
    weight : Tensor[in_channels, out_channels, 2 * modes_z, modes_x, 2]
        Real and imaginary parts of the kernel on the kept modes (layout in the module docstring).
    method : {"dft", "fft"}
        ``"dft"`` (default): truncated DFTs as real GEMMs (fast forward and backward on CPU for grids up to a few
        hundred points a side). ``"fft"``: ``rfft2``/``irfft2`` with a complex mode mix, better for large grids.
    out_shape : (nz_out, nx_out), optional
        Evaluate the output on another grid of the same domain (super-resolution); default the input grid.

    Returns
    -------
    Tensor[batch, out_channels, nz_out, nx_out]
        Same dtype and device as ``x``.
    """
    check_choice("method", method, ("dft", "fft"))
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a Tensor[batch, channels, nz, nx], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if weight.ndim != 5 or weight.shape[-1] != 2 or weight.shape[2] % 2:
        raise ValueError(f"weight must be shaped [in_channels, out_channels, 2 * modes_z, modes_x, 2], got "
                         f"{tuple(weight.shape)}")
    if weight.shape[0] != x.shape[1]:
        raise ValueError(f"x has {x.shape[1]} channels but weight expects in_channels = {weight.shape[0]}")
    b, cin, nz, nx = x.shape
    cout, mz2, mx = weight.shape[1], weight.shape[2], weight.shape[3]
    mz = mz2 // 2
    _check_modes(nz, nx, mz, mx)
    nzo, nxo = (nz, nx) if out_shape is None else (int(out_shape[0]), int(out_shape[1]))
    _check_modes(nzo, nxo, mz, mx)
    x = x.contiguous()
    if method == "dft":
        fz, fx, _, _ = dft_matrices(nz, nx, mz, mx, x.dtype, x.device)
        _, _, gx, gz = dft_matrices(nzo, nxo, mz, mx, x.dtype, x.device)
        g = torch.matmul(fz, x)  # [B, Cin, 4mz, nx]: DFT along z, real rows then imaginary rows
        h = torch.matmul(g, fx)  # [B, Cin, 4mz, 2mx] = [[gr fc, gr fs], [gi fc, gi fs]]
        h = h.view(b, cin, 2, mz2, 2, mx)
        xr = h[:, :, 0, :, 0] - h[:, :, 1, :, 1]  # Re X = Re(g) cos - Im(g) sin (fs = -sin already)
        xi = h[:, :, 0, :, 1] + h[:, :, 1, :, 0]
        yr, yi = _mix_modes(xr.reshape(b, cin, mz2 * mx), xi.reshape(b, cin, mz2 * mx), weight.reshape(
            cin, cout, mz2 * mx, 2))
        yri = torch.cat([yr.reshape(b, cout, mz2, mx), yi.reshape(b, cout, mz2, mx)], dim=-1)  # [B, Cout, 2mz, 2mx]
        uv = torch.matmul(yri, gx)  # [B, Cout, 2mz, 2nxo] = [U, V]
        uv = uv.view(b, cout, mz2, 2, nxo).transpose(2, 3).reshape(b, cout, 2 * mz2, nxo)  # [U; V]
        y = torch.matmul(gz, uv)  # [B, Cout, nzo, nxo]
        # keep the amplitude of the represented function when the output grid differs from the input grid
        return y if (nzo, nxo) == (nz, nx) else y * (nzo * nxo / (nz * nx))
    # method == "fft"
    xf = torch.fft.rfft2(x)  # [B, Cin, nz, nx//2+1]
    xk = torch.cat([xf[:, :, :mz, :mx], xf[:, :, nz - mz:, :mx]], dim=2)  # [B, Cin, 2mz, mx]
    xr = xk.real.reshape(b, cin, mz2 * mx)
    xi = xk.imag.reshape(b, cin, mz2 * mx)
    yr, yi = _mix_modes(xr, xi, weight.reshape(cin, cout, mz2 * mx, 2))
    yk = torch.complex(yr, yi).reshape(b, cout, mz2, mx)
    out = torch.zeros(b, cout, nzo, nxo // 2 + 1, dtype=yk.dtype, device=x.device)
    out[:, :, :mz, :mx] = yk[:, :, :mz]
    out[:, :, nzo - mz:, :mx] = yk[:, :, mz:]
    return torch.fft.irfft2(out, s=(nzo, nxo)) * (nzo * nxo / (nz * nx))


class SpectralConv2d(torch.nn.Module):
    r"""Fourier layer kernel :math:`\mathcal{F}^{-1} R \mathcal{F}` as a module (a thin wrapper of
    :func:`spectral_conv2d`).

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts.
    modes_z, modes_x : int
        Kept wavenumbers: ``|k_z| < modes_z`` (``2 modes_z`` rows) and ``0 <= k_x < modes_x``.
    method : {"dft", "fft"}
        Implementation (see :func:`spectral_conv2d`).
    dtype, device : optional
        Of the weight.

    Notes
    -----
    The weight is initialised like the reference FNO, uniform in ``[0, 1/(in_channels out_channels))`` for real
    and imaginary parts.
    """

    def __init__(self, in_channels: int, out_channels: int, modes_z: int, modes_x: int, *, method: str = "dft",
                 dtype: torch.dtype | None = None, device=None):
        super().__init__()
        in_channels, out_channels = check_int("in_channels", in_channels), check_int("out_channels", out_channels)
        modes_z, modes_x = check_int("modes_z", modes_z), check_int("modes_x", modes_x)
        check_choice("method", method, ("dft", "fft"))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.modes_z, self.modes_x, self.method = modes_z, modes_x, method
        scale = 1.0 / (in_channels * out_channels)
        self.weight = torch.nn.Parameter(
            scale * torch.rand(in_channels, out_channels, 2 * modes_z, modes_x, 2, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, out_shape: tuple[int, int] | None = None) -> torch.Tensor:
        """``x``: ``[batch, in_channels, nz, nx]`` -> ``[batch, out_channels, nz_out, nx_out]``."""
        return spectral_conv2d(x, self.weight, method=self.method, out_shape=out_shape)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, modes_z={self.modes_z}, modes_x={self.modes_x}, "
                f"method={self.method!r}")
