r"""Fourier neural operator for the 2D acoustic wavefield (Yang et al., 2021, after Li et al., 2021).

Architecture (paper 1, Fig. 1): a pointwise lifting ``P`` of the input channels to width ``w``; four Fourier layers
``v <- relu(K v + W v + b)`` (``K`` the truncated spectral convolution on the lifted channels, ``W`` a pointwise
linear map); a pointwise projection ``Q`` (``w -> hidden -> n_frames``, ReLU between) to the ``N`` output frames.

Every operation is pointwise or spectral, so the same weights evaluate any grid of the same physical domain
(trained on 64 x 64, evaluated on 128 x 128). All tensors are contiguous ``NCHW`` ``[batch, channels, nz, nx]``:
channels-last or strided layouts made the CPU spectral convolution two orders of magnitude slower in torch 2.x.

Input encoding (:func:`encode_inputs`, 5 channels): normalised velocity ``(v - v_mean) / v_std``, a Gaussian source
bump of physical width ``source_width`` (m), the source distance ``r / L``, and the coordinates ``z / L``, ``x / L``
(``L`` the domain extent of the training grid), all in physical units so that a finer grid of the same domain gives
the same functions.
"""
from __future__ import annotations

import torch

from .spectral import SpectralConv2d

__all__ = ["FNO2d", "encode_inputs", "N_INPUT_CHANNELS"]

N_INPUT_CHANNELS = 5


def encode_inputs(v: torch.Tensor, source_locations: torch.Tensor, dx: float, *, v_mean: float, v_std: float,
                  extent: float, source_width: float) -> torch.Tensor:
    r"""Input channels of the FNO for velocity models and point sources.

    Parameters
    ----------
    v : Tensor[batch, nz, nx]
        Velocity in m/s.
    source_locations : Tensor[batch, 2] (int64)
        Source grid indices ``(z, x)``, one source per model.
    dx : float
        Grid spacing in m (equal in z and x).
    v_mean, v_std : float
        Velocity normalisation in m/s (the training family's mean and standard deviation).
    extent : float
        Length scale ``L`` in m for distances and coordinates (the training domain's side).
    source_width : float
        Standard deviation in m of the Gaussian source bump.

    Returns
    -------
    Tensor[batch, 5, nz, nx]
        ``[(v - v_mean)/v_std, exp(-r^2 / (2 s^2)), r / L, z / L, x / L]``, dtype and device of ``v``.
    """
    b, nz, nx = v.shape
    dtype, device = v.dtype, v.device
    z = torch.arange(nz, dtype=dtype, device=device) * dx
    x = torch.arange(nx, dtype=dtype, device=device) * dx
    src = source_locations.to(device=device, dtype=dtype) * dx  # [B, 2] metres
    dz = z[None, :, None] - src[:, 0, None, None]
    dxx = x[None, None, :] - src[:, 1, None, None]
    r = torch.sqrt(dz * dz + dxx * dxx)  # [B, nz, nx]
    bump = torch.exp(-0.5 * (r / source_width) ** 2)
    zz = (z / extent)[None, :, None].expand(b, nz, nx)
    xx = (x / extent)[None, None, :].expand(b, nz, nx)
    return torch.stack([(v - v_mean) / v_std, bump, r / extent, zz, xx], dim=1).contiguous()


class FNO2d(torch.nn.Module):
    r"""FNO mapping input channels ``[batch, in_channels, nz, nx]`` to ``[batch, out_channels, nz, nx]``.

    Parameters
    ----------
    in_channels : int
        Input channels (5 for :func:`encode_inputs`).
    out_channels : int
        Output channels (the ``N`` wavefield frames).
    width : int
        Lifted channel width ``w`` (paper 1 / Li et al.: 32 here by default).
    modes : int or (int, int)
        Kept Fourier modes ``(m_z, m_x)`` per layer (``|k_z| < m_z``, ``0 <= k_x < m_x``).
    n_layers : int
        Number of Fourier layers (4 in paper 1).
    hidden : int
        Hidden width of the projection ``Q`` (128 in the reference FNO).
    method : {"dft", "fft"}
        Spectral convolution implementation (see :func:`probinv.surrogate.spectral.spectral_conv2d`).
    dtype, device : optional
        Of the parameters.
    """

    def __init__(self, in_channels: int = N_INPUT_CHANNELS, out_channels: int = 64, *, width: int = 32,
                 modes: int | tuple[int, int] = 12, n_layers: int = 4, hidden: int = 128, method: str = "dft",
                 dtype: torch.dtype | None = None, device=None):
        super().__init__()
        for name, val in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width),
                          ("n_layers", n_layers), ("hidden", hidden)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        mz, mx = (modes, modes) if isinstance(modes, int) else tuple(modes)
        kw = dict(dtype=dtype, device=device)
        self.config = dict(in_channels=in_channels, out_channels=out_channels, width=width, modes=(mz, mx),
                           n_layers=n_layers, hidden=hidden, method=method)
        self.lift = torch.nn.Conv2d(in_channels, width, 1, **kw)
        self.spectral = torch.nn.ModuleList(
            [SpectralConv2d(width, width, mz, mx, method=method, **kw) for _ in range(n_layers)])
        self.pointwise = torch.nn.ModuleList([torch.nn.Conv2d(width, width, 1, **kw) for _ in range(n_layers)])
        self.proj1 = torch.nn.Conv2d(width, hidden, 1, **kw)
        self.proj2 = torch.nn.Conv2d(hidden, out_channels, 1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[batch, in_channels, nz, nx]`` -> ``[batch, out_channels, nz, nx]`` (contiguous NCHW)."""
        if x.ndim != 4 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"x must be shaped [batch, {self.config['in_channels']}, nz, nx], got {tuple(x.shape)}")
        h = self.lift(x.contiguous())
        for spec, point in zip(self.spectral, self.pointwise):
            # ReLU after every Fourier layer, as in paper 1 (Li et al. leave the last one linear)
            h = torch.relu(spec(h) + point(h))
        return self.proj2(torch.relu(self.proj1(h)))

    def n_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())
