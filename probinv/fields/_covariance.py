r"""Von Karman / Matern covariance functions and spectra, and exact FFT sampling by circulant embedding.

See the package docstring (:mod:`probinv.fields`) for the covariance, its spectrum and their normalisation.
"""
from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Sequence

import numpy as np
import scipy.special
import torch

from ..validation import check_scalar, check_shape
from ._checks import _check_mean, _resolve_dtype

__all__ = [
    "matern_covariance", "matern_spectrum", "sample_grf", "von_karman_covariance", "von_karman_spectrum",
]

logger = logging.getLogger(__name__)

_COVARIANCES = ("von_karman", "matern")
#: Largest circulant-embedding size (points) that :func:`sample_grf` tries before clipping negative eigenvalues.
_MAX_EMBEDDING_POINTS = 2 ** 24
#: Negative-eigenvalue mass (fraction of the total) accepted silently after clipping in the circulant embedding.
_NEGATIVE_MASS_TOL = 1e-10


def _smoothness(covariance: str, hurst, nu, hurst_default=None) -> float:
    """Return the Matern smoothness nu of the named family (von Karman: nu = hurst)."""
    if covariance not in _COVARIANCES:
        raise ValueError(f"covariance must be one of {_COVARIANCES}, got {covariance!r}")
    if covariance == "von_karman":
        if nu is not None:
            raise ValueError(f"covariance='von_karman' takes hurst (got hurst={hurst!r}), not nu (got nu={nu!r}); "
                             f"use covariance='matern' for nu")
        return check_scalar("hurst", hurst)
    if nu is None:
        raise ValueError("covariance='matern' needs the smoothness nu (e.g. nu=1.5), got nu=None")
    if hurst is not None and hurst != hurst_default:
        raise ValueError(f"covariance='matern' takes nu (got nu={nu!r}), not hurst (got hurst={hurst!r}); "
                         f"use covariance='von_karman' for hurst")
    return check_scalar("nu", nu)


# ----------------------------------------------------------------------------------------------------------------------
# covariance functions and spectra
# ----------------------------------------------------------------------------------------------------------------------
def _matern_correlation_np(r: np.ndarray, nu: float) -> np.ndarray:
    """``2^(1-nu) / Gamma(nu) r^nu K_nu(r)`` for scaled lags ``r >= 0`` (float64, 1 at r = 0)."""
    r = np.asarray(r, dtype=np.float64)
    out = np.ones_like(r)
    pos = r > 0
    rp = r[pos]
    if nu == 0.5:
        out[pos] = np.exp(-rp)
    elif nu == 1.5:
        out[pos] = (1.0 + rp) * np.exp(-rp)
    elif nu == 2.5:
        out[pos] = (1.0 + rp + rp * rp / 3.0) * np.exp(-rp)
    else:
        # in logs with the exponentially scaled kve: no overflow of r^nu, no underflow of K_nu before the product
        with np.errstate(divide="ignore"):
            log = ((1.0 - nu) * math.log(2.0) - math.lgamma(nu) + nu * np.log(rp)
                   + np.log(scipy.special.kve(nu, rp)) - rp)
        out[pos] = np.exp(log)
    return out


def _covariance(hz, hx, nu: float, a_z: float, a_x: float):
    like = hz if isinstance(hz, torch.Tensor) else hx if isinstance(hx, torch.Tensor) else None
    hz_np = hz.detach().cpu().to(torch.float64).numpy() if isinstance(hz, torch.Tensor) else np.asarray(hz, float)
    hx_np = hx.detach().cpu().to(torch.float64).numpy() if isinstance(hx, torch.Tensor) else np.asarray(hx, float)
    r = np.sqrt((hz_np / a_z) ** 2 + (hx_np / a_x) ** 2)
    c = _matern_correlation_np(r, nu)
    if like is None:
        return c
    return torch.as_tensor(c, device=like.device,
                           dtype=like.dtype if like.is_floating_point() else torch.get_default_dtype())


def von_karman_covariance(hz, hx, *, hurst: float, a_z: float, a_x: float):
    r"""Von Karman correlation :math:`\rho(h_z, h_x) = 2^{1-\kappa}/\Gamma(\kappa)\, r^\kappa K_\kappa(r)`.

    Parameters
    ----------
    hz, hx : array_like or Tensor
        Lags in m along z and x (broadcast together).
    hurst : float
        Hurst exponent :math:`\kappa > 0` (0.5: exponential correlation; smaller is rougher).
    a_z, a_x : float
        Correlation lengths in m: :math:`r = \sqrt{(h_z/a_z)^2 + (h_x/a_x)^2}`.

    Returns
    -------
    ndarray or Tensor
        Correlation (covariance of a unit-variance field), 1 at zero lag; a tensor on the input's device when a lag
        is a tensor. Evaluated in float64 with :func:`scipy.special.kve` on the host (a set-up utility, not
        differentiable with respect to the lags).
    """
    nu = check_scalar("hurst", hurst)
    return _covariance(hz, hx, nu, check_scalar("a_z", a_z), check_scalar("a_x", a_x))


def matern_covariance(hz, hx, *, nu: float, a_z: float, a_x: float):
    r"""Matern correlation :math:`\rho = 2^{1-\nu}/\Gamma(\nu)\, r^\nu K_\nu(r)`.

    The same function as :func:`von_karman_covariance` with ``hurst = nu``. See there for the parameters (``nu``
    replaces ``hurst``) and the result.
    """
    nu = check_scalar("nu", nu)
    return _covariance(hz, hx, nu, check_scalar("a_z", a_z), check_scalar("a_x", a_x))


def _spectrum(kz, kx, nu: float, a_z: float, a_x: float) -> torch.Tensor:
    kz = torch.as_tensor(kz)
    kx = torch.as_tensor(kx, device=kz.device)
    if not kz.is_floating_point():
        kz = kz.to(torch.get_default_dtype())
    if not kx.is_floating_point():
        kx = kx.to(kz.dtype)
    q = 1.0 + (kz * a_z) ** 2 + (kx * a_x) ** 2
    return (4.0 * math.pi * nu * a_z * a_x) * q.pow(-(nu + 1.0))


def von_karman_spectrum(kz, kx, *, hurst: float, a_z: float, a_x: float) -> torch.Tensor:
    r"""2D power spectral density of the unit-variance von Karman field.

    .. math:: P(k_z, k_x) = \frac{4 \pi \kappa \, a_z a_x}{(1 + k_z^2 a_z^2 + k_x^2 a_x^2)^{\kappa + 1}}

    the Fourier transform of :func:`von_karman_covariance` with
    :math:`\rho(\mathbf h) = (2\pi)^{-2}\iint P(\mathbf k) e^{i\mathbf k\cdot\mathbf h}\,d\mathbf k`, so that
    :math:`(2\pi)^{-2}\iint P\,d\mathbf k = 1`. Multiply by ``std**2`` for a field of standard deviation ``std``.

    Parameters
    ----------
    kz, kx : array_like or Tensor
        Wavenumbers in rad/m (broadcast together).
    hurst : float
        Hurst exponent :math:`\kappa > 0`; the spectrum decays as :math:`k^{-2\kappa - 2}` for :math:`k a \gg 1`.
    a_z, a_x : float
        Correlation lengths in m.

    Returns
    -------
    Tensor
        Spectral density in m^2 (per unit variance), broadcast shape of ``kz`` and ``kx``, their dtype and device;
        differentiable with respect to the wavenumbers.
    """
    return _spectrum(kz, kx, check_scalar("hurst", hurst), check_scalar("a_z", a_z), check_scalar("a_x", a_x))


def matern_spectrum(kz, kx, *, nu: float, a_z: float, a_x: float) -> torch.Tensor:
    r"""2D power spectral density of the unit-variance Matern field.

    :math:`4\pi\nu a_z a_x / (1 + k_z^2 a_z^2 + k_x^2 a_x^2)^{\nu + 1}` (wavenumbers in rad/m): identical to
    :func:`von_karman_spectrum` with ``hurst = nu``; see there for the parameters and the normalisation.
    """
    return _spectrum(kz, kx, check_scalar("nu", nu), check_scalar("a_z", a_z), check_scalar("a_x", a_x))


# ----------------------------------------------------------------------------------------------------------------------
# exact FFT sampling by circulant embedding
# ----------------------------------------------------------------------------------------------------------------------
def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (FFT-friendly)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


@functools.lru_cache(maxsize=16)
def _embedding(nz: int, nx: int, dx: float, nu: float, a_z: float, a_x: float) -> tuple[np.ndarray, float, int, int]:
    """Square roots of the circulant-embedding eigenvalues, ``sqrt(lambda / M)``, float64 ``[mz, mx]``.

    The correlation is embedded on a periodic ``mz x mx`` grid with ``mz >= 2 nz``, ``mx >= 2 nx`` (the lags wrap at
    ``m/2``, so every lag of the ``nz x nx`` grid appears exactly). The embedding is enlarged until the circulant is
    non-negative definite to rounding (negative eigenvalue mass <= 1e-10 of the total); if it never is within
    ``_MAX_EMBEDDING_POINTS``, negative eigenvalues are clipped to zero and their mass is returned (and warned about).
    """
    grow = 1.0
    while True:
        # grow the padding in 25 % steps: the smallest valid embedding keeps each sample cheap
        mz, mx = _fast_len(math.ceil(2 * nz * grow)), _fast_len(math.ceil(2 * nx * grow))
        iz = np.arange(mz)
        ix = np.arange(mx)
        hz = np.minimum(iz, mz - iz) * dx
        hx = np.minimum(ix, mx - ix) * dx
        r = np.sqrt((hz[:, None] / a_z) ** 2 + (hx[None, :] / a_x) ** 2)
        c = _matern_correlation_np(r, nu)
        lam = np.fft.fft2(c).real  # c is even in both axes: its DFT is real
        neg_mass = float(-lam[lam < 0].sum() / np.abs(lam).sum())
        if neg_mass <= _NEGATIVE_MASS_TOL or 1.6 * mz * mx > _MAX_EMBEDDING_POINTS:
            break
        grow *= 1.25
    if neg_mass > _NEGATIVE_MASS_TOL:
        warnings.warn(f"circulant embedding of the covariance ({mz} x {mx}) is not non-negative definite: clipped "
                      f"negative eigenvalues holding {neg_mass:.2e} of the spectral mass; the samples' covariance is "
                      f"approximate to that order", RuntimeWarning, stacklevel=3)
    logger.debug("circulant embedding %d x %d for a %d x %d grid, negative mass %.2e", mz, mx, nz, nx, neg_mass)
    root = np.sqrt(np.clip(lam, 0.0, None) / (mz * mx))
    root.setflags(write=False)
    return root, neg_mass, mz, mx


def sample_grf(shape: Sequence[int], dx: float, *, n: int = 1, covariance: str = "von_karman", hurst: float = 0.5,
               nu: float | None = None, a_z: float, a_x: float, mean=0.0, std: float = 1.0,
               generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
    r"""Exact samples of a stationary Gaussian random field on a grid, by FFT circulant embedding.

    The covariance :math:`\sigma^2\rho(h_z, h_x)` (module docstring) is embedded in a periodic grid of at least twice
    the size in each direction, on which it is a circulant matrix diagonalised by the 2D FFT; the samples restricted
    to the ``nz x nx`` corner have exactly the covariance :math:`\sigma^2\rho` (Dietrich & Newsam 1997) and are not
    periodic. The padding is enlarged until the embedding is non-negative definite (to rounding); the rare case
    where it cannot be (very smooth, very long-range fields) clips the negative eigenvalues and warns with their mass.
    Each complex FFT gives two independent fields (real and imaginary parts).

    Parameters
    ----------
    shape : (int, int)
        Grid size ``(nz, nx)``.
    dx : float
        Grid spacing in m (same in z and x).
    n : int
        Number of independent fields.
    covariance : {"von_karman", "matern"}
        Family; ``von_karman`` uses ``hurst``, ``matern`` uses ``nu`` (the same function with ``nu = hurst``).
    hurst : float
        Hurst exponent of the von Karman family (default 0.5: exponential correlation).
    nu : float, optional
        Matern smoothness (required with ``covariance="matern"``).
    a_z, a_x : float
        Correlation lengths in m.
    mean : float or Tensor broadcastable to ``(nz, nx)``
        Mean of the field (e.g. 3000.0 m/s, or a depth-dependent background).
    std : float
        Standard deviation of the field (same units as ``mean``).
    generator : torch.Generator, optional
        Random generator on ``device``, for reproducible samples.
    dtype, device : optional
        Of the result (default: torch's default dtype, CPU).

    Returns
    -------
    Tensor[n, nz, nx]
        Independent samples, in the units of ``mean`` and ``std``.

    Notes
    -----
    Cost per pair of fields: one complex FFT of the embedding grid (at least ``2 nz x 2 nx``; smooth, long-range
    covariances need more padding, found automatically in 25 % steps and cached per grid and covariance).

    Examples
    --------
    >>> v = sample_grf((64, 64), 160.0, n=4, hurst=0.5, a_z=1600.0, a_x=1600.0, mean=3000.0, std=150.0)
    >>> v.shape
    torch.Size([4, 64, 64])
    """
    nz, nx = check_shape(shape)
    dx = check_scalar("dx", dx)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of fields, got {n!r}")
    n = int(n)
    smooth = _smoothness(covariance, hurst, nu, hurst_default=0.5)
    a_z = check_scalar("a_z", a_z)
    a_x = check_scalar("a_x", a_x)
    std = check_scalar("std", std)
    dtype = _resolve_dtype(dtype)
    if device is None and generator is not None:
        device = generator.device
    device = torch.device("cpu") if device is None else torch.device(device)
    mean_t = _check_mean(mean, (nz, nx), dtype, device)

    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but device is {device}: create the generator with "
                         f"torch.Generator(device={str(device)!r})")

    root_np, _, mz, mx = _embedding(nz, nx, dx, smooth, a_z, a_x)
    root = torch.tensor(root_np, dtype=dtype, device=device)  # a copy: the cached array is read-only
    n_complex = (n + 1) // 2
    # in chunks of about 2^22 embedding points, so thousands of models do not hold thousands of padded spectra
    chunk = max(1, (1 << 22) // (mz * mx))
    parts = []
    for start in range(0, n_complex, chunk):
        m = min(chunk, n_complex - start)
        # xi = xi_1 + i xi_2 with independent standard normal parts (E|xi|^2 = 2): y = fft2(sqrt(lambda / M) xi) has
        # E[y y^H] = 2 R and E[y y^T] = 0, so Re y and Im y are independent with covariance R (Dietrich & Newsam
        # 1997). (Real randn viewed as complex: twice as fast as complex randn in float64.)
        xi = torch.view_as_complex(torch.randn((m, mz, mx, 2), generator=generator, dtype=dtype, device=device))
        y = torch.fft.fft2(root * xi)[:, :nz, :nx]
        parts.append(torch.stack([y.real, y.imag], dim=1).reshape(2 * m, nz, nx))  # real, imag of draw 0, then 1..
    fields = torch.cat(parts, dim=0)[:n]
    return mean_t + std * fields
