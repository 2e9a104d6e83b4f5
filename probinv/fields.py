r"""Random fields and priors on a grid.

Gaussian random fields with von Karman / Matern covariance, sampled exactly by FFT (circulant embedding), and the
prior parameterisations that the Pyro models build on:

* :func:`sample_grf` -- exact samples on a non-periodic grid (circulant embedding of the covariance on a padded grid);
* :func:`paper1_models` -- the random velocity models of Yang et al. (2021) in one call;
* :class:`WhitenedField` -- ``field = mean + L z`` with ``z ~ N(0, I)`` and ``L`` the covariance square root on the
  grid (Karhunen-Loeve modes), optionally truncated to the leading modes and squashed into bounds;
* :class:`BoxField` -- a flat prior inside ``[lo, hi]`` per pixel;
* :func:`grid_covariance_eigh` -- the Karhunen-Loeve modes themselves (exact up to 128 x 128, leading modes beyond).

Conventions (DESIGN.md): fields are ``(nz, nx)`` with z first, a batch is ``(batch, nz, nx)``; the grid spacing ``dx``
and the correlation lengths ``a_z``, ``a_x`` are in metres, wavenumbers in rad/m.

Covariance and spectrum
-----------------------
Both families are the same function. With the anisotropic scaled lag
:math:`r = \sqrt{(h_z / a_z)^2 + (h_x / a_x)^2}` the correlation (covariance of a unit-variance field) is

.. math:: \rho(h_z, h_x) = \frac{2^{1-\nu}}{\Gamma(\nu)} \, r^\nu K_\nu(r), \qquad \rho(0, 0) = 1,

where :math:`K_\nu` is the modified Bessel function of the second kind. ``von_karman`` names the smoothness the Hurst
exponent :math:`\kappa` (Sato & Fehler; Frankel & Clayton 1986), ``matern`` names it :math:`\nu` (Matern 1960; Stein
1999): a von Karman field with Hurst :math:`\kappa` **is** a Matern field with :math:`\nu = \kappa`. ``a`` is the scale
inside :math:`K_\nu(r / a)`; the Rasmussen-Williams length (``sqrt(2 nu) r / l``) is :math:`l = a \sqrt{2\nu}`.
Special cases: :math:`\nu = 1/2` gives :math:`\rho = e^{-r}` (exponential), :math:`\nu = 3/2` gives
:math:`(1 + r) e^{-r}`.

The 2D power spectral density, with the Fourier convention
:math:`\rho(\mathbf h) = (2\pi)^{-2} \iint P(\mathbf k) e^{i \mathbf k \cdot \mathbf h} \, dk_z \, dk_x`, is

.. math:: P(k_z, k_x) = \frac{4 \pi \nu \, a_z a_x}{\left(1 + k_z^2 a_z^2 + k_x^2 a_x^2\right)^{\nu + 1}},

normalised so that :math:`(2\pi)^{-2} \iint P \, d\mathbf k = \rho(0) = 1` (the field's variance before scaling by
``std**2``); it has units of m^2 (area, per unit variance). A field sampled at spacing ``dx`` on ``nz x nx`` points has
expected periodogram :math:`E|\sum_j f_j e^{-i \mathbf k \cdot \mathbf x_j}|^2 \, dx^2 / (n_z n_x) \to P(\mathbf k)`
(aliased) on large grids.

References
----------
Dietrich, C. R. & Newsam, G. N. (1997). Fast and exact simulation of stationary Gaussian processes through circulant
embedding of the covariance matrix. SIAM J. Sci. Comput. 18(4), 1088-1107.
Frankel, A. & Clayton, R. W. (1986). Finite difference simulations of seismic scattering. JGR 91(B6), 6465-6489.
Yang, Y., Gao, A. F., Castellanos, J. C., Ross, Z. E., Azizzadenesheli, K. & Clayton, R. W. (2021). Seismic wave
propagation and inversion with neural operators. The Seismic Record 1(3), 126-134.
"""
from __future__ import annotations

import functools
import logging
import math
import warnings
from typing import Sequence

import numpy as np
import scipy.special
import torch

from ._files import atomic_path

__all__ = [
    "BoxField",
    "WhitenedField",
    "grid_covariance_eigh",
    "matern_covariance",
    "matern_spectrum",
    "paper1_models",
    "sample_grf",
    "von_karman_covariance",
    "von_karman_spectrum",
]

logger = logging.getLogger(__name__)

_COVARIANCES = ("von_karman", "matern")
#: Largest number of grid points for which :class:`WhitenedField` eigendecomposes the covariance matrix (128 x 128:
#: four symmetry blocks of 4096 x 4096). Larger grids raise a ValueError.
MAX_EIGH_POINTS = 128 * 128
#: Largest circulant-embedding size (points) that :func:`sample_grf` tries before clipping negative eigenvalues.
_MAX_EMBEDDING_POINTS = 2 ** 24
#: Negative-eigenvalue mass (fraction of the total) accepted silently after clipping in the circulant embedding.
_NEGATIVE_MASS_TOL = 1e-10


# ----------------------------------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------------------------------
def _check_positive(name: str, value) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_shape(shape) -> tuple[int, int]:
    try:
        nz, nx = shape
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair (nz, nx) of positive integers, got {shape!r}") from None
    for name, n in (("nz", nz), ("nx", nx)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"shape must be a pair (nz, nx) of positive integers, got {name} = {n!r} in {shape!r}")
    return int(nz), int(nx)


def _smoothness(covariance: str, hurst, nu, hurst_default=None) -> float:
    """The Matern smoothness nu of the named family (von Karman: nu = hurst)."""
    if covariance not in _COVARIANCES:
        raise ValueError(f"covariance must be one of {_COVARIANCES}, got {covariance!r}")
    if covariance == "von_karman":
        if nu is not None:
            raise ValueError(f"covariance='von_karman' takes hurst (got hurst={hurst!r}), not nu (got nu={nu!r}); "
                             f"use covariance='matern' for nu")
        return _check_positive("hurst", hurst)
    if nu is None:
        raise ValueError("covariance='matern' needs the smoothness nu (e.g. nu=1.5), got nu=None")
    if hurst is not None and hurst != hurst_default:
        raise ValueError(f"covariance='matern' takes nu (got nu={nu!r}), not hurst (got hurst={hurst!r}); "
                         f"use covariance='von_karman' for hurst")
    return _check_positive("nu", nu)


def _resolve_dtype(dtype) -> torch.dtype:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype.is_complex:
        raise TypeError(f"dtype must be a real floating torch dtype (torch.float32 or torch.float64), got {dtype!r}")
    return dtype


def _check_mean(mean, shape, dtype, device) -> torch.Tensor:
    """``mean`` as a ``(nz, nx)`` tensor (a number or a broadcastable tensor/array)."""
    if isinstance(mean, (bool, str)) or mean is None:
        raise TypeError(f"mean must be a number or a tensor broadcastable to shape {shape}, got {mean!r}")
    m = torch.as_tensor(mean, dtype=dtype, device=device)
    try:
        m = torch.broadcast_to(m, shape).clone()
    except RuntimeError:
        raise ValueError(f"mean must be a number or broadcastable to shape {shape}, "
                         f"got shape {tuple(m.shape)}") from None
    if not bool(torch.isfinite(m).all()):
        raise ValueError("mean must be finite everywhere")
    return m


def _check_bounds(bounds, shape, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (lo, hi), got {bounds!r}") from None
    out = []
    for name, b in (("lo", lo), ("hi", hi)):
        if isinstance(b, (bool, str)) or b is None:
            raise TypeError(f"bounds {name} must be a number or a tensor broadcastable to {shape}, got {b!r}")
        t = torch.as_tensor(b, dtype=dtype, device=device)
        try:
            t = torch.broadcast_to(t, shape).clone()
        except RuntimeError:
            raise ValueError(f"bounds {name} must be broadcastable to shape {shape}, "
                             f"got shape {tuple(t.shape)}") from None
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"bounds {name} must be finite, got {b!r}")
        out.append(t)
    lo_t, hi_t = out
    if not bool((lo_t < hi_t).all()):
        raise ValueError(f"bounds must satisfy lo < hi everywhere, got lo={lo!r}, hi={hi!r}")
    return lo_t, hi_t


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
    nu = _check_positive("hurst", hurst)
    return _covariance(hz, hx, nu, _check_positive("a_z", a_z), _check_positive("a_x", a_x))


def matern_covariance(hz, hx, *, nu: float, a_z: float, a_x: float):
    r"""Matern correlation :math:`\rho = 2^{1-\nu}/\Gamma(\nu)\, r^\nu K_\nu(r)`, the same as
    :func:`von_karman_covariance` with ``hurst = nu``. See there for the parameters (``nu`` replaces ``hurst``)."""
    nu = _check_positive("nu", nu)
    return _covariance(hz, hx, nu, _check_positive("a_z", a_z), _check_positive("a_x", a_x))


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
    return _spectrum(kz, kx, _check_positive("hurst", hurst), _check_positive("a_z", a_z), _check_positive("a_x", a_x))


def matern_spectrum(kz, kx, *, nu: float, a_z: float, a_x: float) -> torch.Tensor:
    r"""2D power spectral density of the unit-variance Matern field,
    :math:`4\pi\nu a_z a_x / (1 + k_z^2 a_z^2 + k_x^2 a_x^2)^{\nu + 1}` (wavenumbers in rad/m): identical to
    :func:`von_karman_spectrum` with ``hurst = nu``; see there for the normalisation."""
    return _spectrum(kz, kx, _check_positive("nu", nu), _check_positive("a_z", a_z), _check_positive("a_x", a_x))


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
    nz, nx = _check_shape(shape)
    dx = _check_positive("dx", dx)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of fields, got {n!r}")
    n = int(n)
    smooth = _smoothness(covariance, hurst, nu, hurst_default=0.5)
    a_z = _check_positive("a_z", a_z)
    a_x = _check_positive("a_x", a_x)
    std = _check_positive("std", std)
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


def paper1_models(n: int, *, seed: int | None = None, generator: torch.Generator | None = None,
                  dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                  refine: int = 1) -> torch.Tensor:
    r"""Random velocity models of paper 1 (Yang et al. 2021, "Seismic wave propagation and inversion with neural
    operators"): von Karman, Hurst :math:`\kappa = 0.5`, :math:`a_x = a_z = 1.6` km, mean 3000 m/s, std 150 m/s, on
    a 64 x 64 grid at dx = 160 m (10.24 km square).

    The paper also lists :math:`\varepsilon = 0.1`. In the random-media literature (Sato & Fehler; Frankel & Clayton
    1986) :math:`\varepsilon` is the fractional RMS fluctuation :math:`\sigma_v / \bar v`, which with
    :math:`\bar v` = 3 km/s would mean 300 m/s, contradicting the :math:`\sigma = 0.15` km/s (:math:`\sigma/\mu = 0.05`)
    listed next to it; the paper does not define :math:`\varepsilon` further. We follow the explicit
    :math:`\mu = 3` km/s, :math:`\sigma = 0.15` km/s (so the fractional fluctuation is 0.05), which is also what
    PAPERS.md fixes; for the :math:`\varepsilon`-as-fractional-RMS reading call
    ``sample_grf((64, 64), 160.0, hurst=0.5, a_z=1600.0, a_x=1600.0, mean=3000.0, std=300.0)``.

    With :math:`\kappa = 0.5` the correlation is exponential, :math:`\rho(r) = e^{-r/a}`: 0.37 at 1.6 km (10 cells).

    Parameters
    ----------
    n : int
        Number of models.
    seed : int, optional
        Seed for a fresh generator (reproducible); mutually exclusive with ``generator``.
    generator : torch.Generator, optional
        Random generator on ``device``.
    dtype, device : optional
        Of the result.
    refine : int
        Grid refinement: ``refine = 2`` gives 128 x 128 at 80 m, the same 10.24 km domain and covariance (the paper's
        evaluation at 2x resolution, its Fig. 4d-f).

    Returns
    -------
    Tensor[n, 64 * refine, 64 * refine]
        Velocities in m/s.
    """
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator to paper1_models, not both")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        dev = torch.device("cpu") if device is None else torch.device(device)
        generator = torch.Generator(device=dev)
        generator.manual_seed(int(seed))
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 1:
        raise ValueError(f"refine must be a positive integer (1: 64 x 64 at 160 m, 2: 128 x 128 at 80 m), "
                         f"got {refine!r}")
    return sample_grf((64 * int(refine), 64 * int(refine)), 160.0 / int(refine), n=n, covariance="von_karman",
                      hurst=0.5, a_z=1600.0, a_x=1600.0, mean=3000.0, std=150.0, generator=generator, dtype=dtype,
                      device=device)


# ----------------------------------------------------------------------------------------------------------------------
# Karhunen-Loeve modes on the grid: dense eigendecomposition split by the grid's reflection symmetries
# ----------------------------------------------------------------------------------------------------------------------
def _parity_bases(n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Even and odd orthonormal bases of R^n under the reflection i -> n-1-i.

    Returns, for each parity with at least one vector, ``(idx, w, phi)``: basis vector ``a`` is
    ``w[a, 0] delta_{idx[a, 0]} + w[a, 1] delta_{idx[a, 1]}`` (``phi[:, a]`` densely, ``phi`` of shape ``[n, n_a]``).
    Even: ``(delta_i + delta_{n-1-i}) / sqrt 2`` for ``i < n // 2`` and ``delta_mid`` (odd n, written as two halves);
    odd: ``(delta_i - delta_{n-1-i}) / sqrt 2``.
    """
    h = n // 2
    s = 1.0 / math.sqrt(2.0)
    i = np.arange(h)
    out = []
    for sign in (1.0, -1.0):
        idx = np.stack([i, n - 1 - i], axis=1)
        w = np.tile([s, sign * s], (h, 1))
        if sign > 0 and n % 2:
            idx = np.concatenate([idx, [[h, h]]])
            w = np.concatenate([w, [[0.5, 0.5]]])
        if len(idx) == 0:
            continue
        phi = np.zeros((n, len(idx)))
        for col in range(2):
            np.add.at(phi, (idx[:, col], np.arange(len(idx))), w[:, col])
        out.append((idx, w, phi))
    return out


def _grid_eigh_blocks(nz: int, nx: int, dx: float, nu: float, a_z: float, a_x: float):
    """Eigendecompositions of the four reflection-symmetry blocks of the grid's correlation matrix (float64, CPU).

    Returns ``(eigenvalues [N], order [N], blocks)``: ``order`` sorts the concatenated block eigenvalues decreasingly,
    ``blocks`` is a list of ``(w, v)`` per (z parity, x parity) in :func:`_parity_bases` order.
    """
    iz = np.arange(nz)
    ix = np.arange(nx)
    table = _matern_correlation_np(np.sqrt((iz[:, None] * dx / a_z) ** 2 + (ix[None, :] * dx / a_x) ** 2), nu)
    # R[(i,j),(k,l)] = table[|i-k|, |j-l|] commutes with the reflections z -> nz-1-z and x -> nx-1-x, so in the
    # even/odd bases of both axes it is block diagonal with four blocks of about N/4: four eigh of size N/4 cost about
    # 1/16 of one of size N. Each block is gathered straight from the lag table: with basis vectors of two weighted
    # deltas per axis and the reflection invariance, phi_a^T T phi_b = 2 sum_q w_0(a) w_q(b) T[idx_0(a), idx_q(b)].
    blocks = []
    for idx_z, w_z, _ in _parity_bases(nz):
        for idx_x, w_x, _ in _parity_bases(nx):
            na, nb_x = len(idx_z), len(idx_x)
            block = np.zeros((na, nb_x, na, nb_x))
            for qz in range(2):
                dz = np.abs(idx_z[:, 0][:, None] - idx_z[:, qz][None, :])
                wz = 2.0 * w_z[:, 0][:, None] * w_z[:, qz][None, :]
                for qx in range(2):
                    dxx = np.abs(idx_x[:, 0][:, None] - idx_x[:, qx][None, :])
                    wx = 2.0 * w_x[:, 0][:, None] * w_x[:, qx][None, :]
                    block += (wz[:, None, :, None] * wx[None, :, None, :]) * table[dz[:, None, :, None],
                                                                                   dxx[None, :, None, :]]
            nb = na * nb_x
            w, v = torch.linalg.eigh(torch.from_numpy(block.reshape(nb, nb)))
            del block
            blocks.append((w, v))
    lam = torch.cat([b[0] for b in blocks])
    order = torch.argsort(lam, descending=True, stable=True)
    lam = lam[order].clamp_min(0.0)  # rounding can leave tiny negative eigenvalues of a PSD matrix
    return lam, order, blocks


def _cache_file(cache_dir, key: tuple) -> str:
    import hashlib
    import os

    from ._version import __version__
    digest = hashlib.sha256(repr((__version__, "grid_eigh_v1") + key).encode()).hexdigest()[:20]
    return os.path.join(os.fspath(cache_dir), f"grid_eigh_{key[0]}x{key[1]}_{digest}.pt")


@functools.lru_cache(maxsize=4)
def _grid_eigh_memo(nz: int, nx: int, dx: float, nu: float, a_z: float, a_x: float, cache_dir):
    import os
    key = (nz, nx, dx, nu, a_z, a_x)
    path = _cache_file(cache_dir, key) if cache_dir is not None else None
    if path is not None and os.path.exists(path):
        data = torch.load(path, map_location="cpu", weights_only=True)
        if tuple(data["key"]) == key:
            logger.info("loaded the %d x %d grid eigendecomposition from %s", nz, nx, path)
            return data["lam"], data["order"], list(zip(data["w"], data["v"]))
    out = _grid_eigh_blocks(*key)
    if path is not None:
        with atomic_path(path) as tmp:
            torch.save({"key": list(key), "lam": out[0], "order": out[1], "w": [b[0] for b in out[2]],
                        "v": [b[1] for b in out[2]]}, tmp)
        logger.info("saved the %d x %d grid eigendecomposition to %s", nz, nx, path)
    return out


def _assemble_modes(nz: int, nx: int, order: torch.Tensor, blocks, k: int) -> torch.Tensor:
    """The ``k`` leading modes ``[N, k]`` (column-major storage) in grid coordinates, signs fixed."""
    n_pts = nz * nx
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n_pts)
    rows = torch.empty(k, n_pts, dtype=torch.float64)  # row j is mode j
    start = 0
    bases = [(pz, px) for _, _, pz in _parity_bases(nz) for _, _, px in _parity_bases(nx)]
    for (w, v), (phi_z, phi_x) in zip(blocks, bases):
        nb = len(w)
        keep = rank[start:start + nb] < k
        start += nb
        if not bool(keep.any()):
            continue
        na, nb_x = phi_z.shape[1], phi_x.shape[1]
        vk = v[:, keep]
        # back to grid coordinates: mode = phi_z V phi_x^T (two small matmuls per mode, batched)
        vecs = torch.from_numpy(phi_z) @ (vk.T.reshape(-1, na, nb_x) @ torch.from_numpy(phi_x).T)
        vecs = vecs.reshape(-1, n_pts)
        # deterministic signs: the largest-magnitude entry of each mode is positive
        sign = torch.sign(vecs.gather(1, vecs.abs().argmax(dim=1, keepdim=True)))
        rows[rank[start - nb:start][keep]] = vecs * sign  # row scatter: ~30x faster than scattering columns
    return rows.T  # [points, modes] view: modes @ z and modes.T @ f both read it contiguously


#: Largest number of leading modes the iterative path computes (its subspace holds 2 n_modes vectors of N points).
_MAX_ITERATIVE_MODES = 4096


@functools.lru_cache(maxsize=4)
def _leading_modes_fft(nz: int, nx: int, dx: float, nu: float, a_z: float, a_x: float, k: int,
                       tol: float = 1e-9, max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The ``k`` leading eigenpairs of the grid's correlation matrix by subspace iteration with FFT matrix products.

    ``R v`` is computed in ``O(M log M)`` by embedding the (block-Toeplitz) correlation in a circulant of
    ``M >= (2 nz - 1)(2 nx - 1)`` points (any circulant containing every lag works for products: no definiteness
    needed). Subspace iteration on ``l = max(2k, k + 10)`` vectors with a Rayleigh-Ritz step per iteration converges
    like ``(lambda_l / lambda_k)^iter`` (64 x 64: 3 to 8 iterations to 1e-9 for the families of the docstring
    table); it stops when the ``k`` Ritz values change by less than ``tol * lambda_1``. Deterministic (fixed seed).
    Returns ``(eigenvalues [k], modes [N, k], max relative residual |R v - lambda v| / lambda_1)``.
    """
    mz, mx = _fast_len(2 * nz - 1), _fast_len(2 * nx - 1)
    iz, ix = np.arange(mz), np.arange(mx)
    hz = np.minimum(iz, mz - iz) * dx
    hx = np.minimum(ix, mx - ix) * dx
    c = _matern_correlation_np(np.sqrt((hz[:, None] / a_z) ** 2 + (hx[None, :] / a_x) ** 2), nu)
    c_hat = torch.from_numpy(np.ascontiguousarray(np.fft.rfft2(c).real))  # even c: real transform
    n_pts = nz * nx

    def matvec(v: torch.Tensor) -> torch.Tensor:  # [N, b] -> R [N, b]
        x = v.T.reshape(-1, nz, nx)
        y = torch.fft.irfft2(torch.fft.rfft2(x, s=(mz, mx)) * c_hat, s=(mz, mx))[:, :nz, :nx]
        return y.reshape(-1, n_pts).T

    n_sub = min(n_pts, max(2 * k, k + 10))
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(matvec(torch.randn(n_pts, n_sub, generator=gen, dtype=torch.float64)))
    previous = None
    for it in range(max_iter):
        z = matvec(q)
        b = q.T @ z
        w, u = torch.linalg.eigh(0.5 * (b + b.T))
        w, u = w.flip(0), u.flip(1)
        if previous is not None and float((w[:k] - previous).abs().max()) < tol * float(w[0]):
            break
        previous = w[:k]
        q, _ = torch.linalg.qr(z)
    modes = q @ u[:, :k]
    lam = w[:k].clamp_min(0.0)
    residual = float((matvec(modes) - modes * w[:k]).norm(dim=0).max() / w[0])
    logger.info("leading %d modes of a %d x %d grid: %d subspace iterations, relative residual %.1e",
                k, nz, nx, it + 1, residual)
    if residual > 1e-4:
        warnings.warn(f"the {k} leading modes of the {nz} x {nx} grid converged only to a relative residual of "
                      f"{residual:.1e} in {max_iter} iterations", RuntimeWarning, stacklevel=4)
    sign = torch.sign(modes.gather(0, modes.abs().argmax(dim=0, keepdim=True)))
    return lam, modes * sign, residual


def grid_covariance_eigh(shape: Sequence[int], dx: float, *, covariance: str = "matern", hurst: float | None = None,
                         nu: float | None = None, a_z: float, a_x: float, n_modes: int | None = None,
                         cache_dir=None, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Eigendecomposition of the correlation matrix of a von Karman / Matern field on a grid (Karhunen-Loeve modes).

    The ``N x N`` matrix (``N = nz * nx``) :math:`R_{ij} = \rho(\mathbf x_i - \mathbf x_j)` is block-diagonalised by
    the grid's two reflection symmetries into four blocks of about ``N/4``, each solved with ``torch.linalg.eigh`` in
    float64: on 64 x 64, four 1024 x 1024 problems instead of one 4096 x 4096 (16x fewer flops; measured on one CPU
    thread: 1.3 s for all 4096 modes against 14 s for ``torch.linalg.eigh`` of the dense matrix). The block
    eigendecompositions are cached in memory (the last 4 grids/covariances) and, with ``cache_dir``, on disk
    (written atomically; reloaded by later processes); only the ``n_modes`` leading modes are assembled.

    Limits of this dense path: grids up to ``MAX_EIGH_POINTS`` = 128 x 128 points (blocks up to 4096 x 4096).
    Measured CPU time on one thread, first call: 0.05 s (32 x 32), 0.9 s (64 x 64), 8.4 s (96 x 96), about a minute
    (128 x 128, peak memory 1.5 GB, cache 0.5 GB); a cached call takes 0.02-0.15 s. The returned modes take
    ``8 N n_modes`` bytes.

    Larger grids (``method="iterative"``, automatic above ``MAX_EIGH_POINTS``) need ``n_modes`` (at most 4096): the
    leading modes come from subspace iteration with FFT products by the correlation matrix (``O(M log M)`` each, no
    ``N x N`` matrix), with Ritz values accurate to about 1e-9 of the largest; only ``n_modes`` eigenvalues are
    returned then (and cached in memory only). Measured on 64 x 64 against the dense path: eigenvalues within 7e-7
    relative for 100 and 400 modes, 0.5-9 s CPU; 256 x 256 with 200 modes (Matern 1.5, a = 10 cells, 89.8 % of the
    variance): 48 s CPU. The cost grows like ``N n_modes^2`` (QR of the subspace).

    Why not Fourier coefficients of the circulant embedding as the latent space (a circulant square root, as in
    :func:`sample_grf`)? Their number is that of the padded grid, at least 4 N, and restricted to the grid about
    three quarters of any band of them are nearly linearly dependent (Slepian concentration), so the latent
    coordinates would be poorly identified by data: bad geometry for samplers. Karhunen-Loeve modes are orthonormal
    on the grid itself.

    Parameters
    ----------
    shape, dx, covariance, hurst, nu, a_z, a_x
        As in :func:`sample_grf` (``hurst`` defaults to 0.5 for ``von_karman``).
    n_modes : int, optional
        Number of leading modes to return (default all ``N``).
    cache_dir : str or os.PathLike, optional
        Folder for an on-disk cache of the eigendecompositions (default: none; dense path only).
    method : {"auto", "dense", "iterative"}
        ``auto``: dense (exact, all eigenvalues) up to ``MAX_EIGH_POINTS`` points, iterative above.

    Returns
    -------
    eigenvalues : Tensor[N] (dense) or Tensor[n_modes] (iterative)
        Eigenvalues, float64, CPU, decreasing, clipped at 0; all ``N`` of them sum to ``N`` (trace of a correlation
        matrix).
    modes : Tensor[N, n_modes]
        Float64, CPU, orthonormal columns ``modes[:, k]`` (flattened row-major ``(nz, nx)``), sign fixed so that the
        largest-magnitude entry is positive. ``eigenvalues`` is cached: treat it as read-only.
    """
    nz, nx = _check_shape(shape)
    n_pts = nz * nx
    if method not in ("auto", "dense", "iterative"):
        raise ValueError(f"method must be 'auto', 'dense' or 'iterative', got {method!r}")
    if method == "auto":
        method = "dense" if n_pts <= MAX_EIGH_POINTS else "iterative"
    if method == "dense" and n_pts > MAX_EIGH_POINTS:
        raise ValueError(f"shape {shape} has {n_pts} points: the dense eigendecomposition is limited to "
                         f"{MAX_EIGH_POINTS} points (128 x 128); use method='iterative' with n_modes")
    k = _check_n_modes(n_modes, nz, nx)
    if method == "iterative" and (n_modes is None or k > _MAX_ITERATIVE_MODES):
        raise ValueError(f"the iterative eigendecomposition of the {nz} x {nx} grid ({n_pts} points) needs n_modes "
                         f"between 1 and {_MAX_ITERATIVE_MODES}, got n_modes={n_modes!r}")
    if covariance == "von_karman" and hurst is None and nu is None:
        hurst = 0.5
    smooth = _smoothness(covariance, hurst, nu)
    args = (nz, nx, _check_positive("dx", dx), smooth, _check_positive("a_z", a_z), _check_positive("a_x", a_x))
    if method == "iterative":
        lam, modes, _ = _leading_modes_fft(*args, k)
        return lam, modes
    lam, order, blocks = _grid_eigh_memo(*args, cache_dir)
    return lam, _assemble_modes(nz, nx, order, blocks, k)


def _check_n_modes(n_modes, nz: int, nx: int) -> int:
    n_pts = nz * nx
    if n_modes is None:
        return n_pts
    if isinstance(n_modes, bool) or not isinstance(n_modes, (int, np.integer)) or n_modes < 1:
        raise ValueError(f"n_modes must be a positive integer, got {n_modes!r}")
    if n_modes > n_pts:
        raise ValueError(f"n_modes = {n_modes} is larger than the grid: a {nz} x {nx} grid has at most "
                         f"{n_pts} modes")
    return int(n_modes)


# ----------------------------------------------------------------------------------------------------------------------
# priors as modules
# ----------------------------------------------------------------------------------------------------------------------
def _check_like(name: str, x: torch.Tensor, ref: torch.Tensor, owner: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the {owner} holds {ref.dtype} buffers: build it with "
                        f"dtype={x.dtype} or call .to({x.dtype})")
    if x.device != ref.device:
        raise ValueError(f"{name} is on {x.device} but the {owner} is on {ref.device}: call .to({str(x.device)!r})")


def _outside_message(field: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> str:
    bad = ~((field > lo) & (field < hi))
    return (f"field must lie strictly inside the bounds (lo, hi) to be inverted: {int(bad.sum())} of {field.numel()} "
            f"values are outside (field range [{float(field.min()):g}, {float(field.max()):g}], bounds "
            f"[{float(lo.min()):g}, {float(hi.max()):g}])")


class WhitenedField(torch.nn.Module):
    r"""Whitened (Karhunen-Loeve) parameterisation of a Gaussian random-field prior: ``field = mean + L z``.

    ``L = V diag(std sqrt(lambda))`` with ``(lambda, V)`` the eigendecomposition of the correlation matrix of the
    ``nz x nx`` grid (:func:`grid_covariance_eigh`), so ``z ~ N(0, I)`` gives exactly the covariance
    ``std^2 rho(x_i - x_j)`` on the grid (not periodic). With ``n_modes = K`` only the ``K`` leading modes are kept:
    the best rank-K approximation of the prior (in variance), with ``latent_dim = K``; samplers then see a
    well-conditioned ``K``-dimensional latent space.

    With ``bounds = (lo, hi)`` the Gaussian field ``u = mean + L z`` is mapped pixel by pixel through

    .. math:: f = lo + (hi - lo)\,\sigma\!\left(\alpha (u - m) + \beta\right), \quad
              \beta = \mathrm{logit}\frac{m - lo}{hi - lo}, \quad \alpha = \frac{hi - lo}{(m - lo)(hi - m)},

    a smooth increasing bijection of the real line onto ``(lo, hi)`` with ``f(m) = m`` and slope 1 at the mean ``m``,
    so fluctuations small compared with the distance to the bounds are unchanged.

    Dimension reduction on 64 x 64 (4096 pixels), measured with :meth:`modes_for_variance` (``test_fields.py``
    asserts these counts):

    ============================================================  =======  =======  =======
    prior                                                          90 %     95 %     99 %
    ============================================================  =======  =======  =======
    paper 1 (von Karman kappa 0.5, a = 1.6 km = 10 cells)            326     1049     3226
    Matern nu = 1.5, a = 1.6 km = 10 cells                            16       27       79
    ============================================================  =======  =======  =======

    The rough (exponential) paper-1 family has a slowly decaying spectrum (:math:`\lambda_k \sim k^{-3/2}`), so it
    compresses poorly (99 % needs 79 % of the pixels); the smoother Matern 1.5 family keeps 99 % of the variance with
    79 parameters instead of 4096 (a 52x reduction).

    Parameters
    ----------
    shape : (int, int)
        Grid ``(nz, nx)``; above ``MAX_EIGH_POINTS`` (128 x 128) points ``n_modes`` is required.
    dx : float
        Grid spacing in m.
    covariance : {"matern", "von_karman"}
        Family (``nu`` for matern, ``hurst`` for von_karman; the same function).
    hurst, nu : float
        Smoothness (``hurst`` defaults to 0.5 with von_karman).
    a_z, a_x : float
        Correlation lengths in m.
    mean : float or Tensor broadcastable to ``(nz, nx)``
        Prior mean (e.g. m/s); may vary in space (a background model).
    std : float
        Prior standard deviation (units of ``mean``).
    n_modes : int, optional
        Keep the ``n_modes`` leading modes (default: all ``nz * nx``).
    bounds : (lo, hi), optional
        Floats or tensors broadcastable to ``(nz, nx)`` with ``lo < mean < hi`` everywhere.
    dtype, device : optional
        Of the buffers (default torch's default dtype, CPU); ``.to()`` moves them. Inputs must match.
    cache_dir : str or os.PathLike, optional
        Folder for an on-disk cache of the eigendecomposition (see :func:`grid_covariance_eigh`).
    method : {"auto", "dense", "iterative"}
        How the modes are computed (:func:`grid_covariance_eigh`): exact dense eigendecomposition up to 128 x 128
        points, leading modes by FFT-based subspace iteration above (needs ``n_modes``).

    Attributes
    ----------
    latent_dim : int
        ``K``, the size of ``z``.
    modes : Tensor[nz * nx, K]
        Orthonormal columns (flattened row-major ``(nz, nx)``), decreasing prior variance (buffer).
    scales : Tensor[K]
        ``std * sqrt(lambda_k)``: the prior standard deviation along each mode (buffer). ``L = modes * scales``.
    mean_field : Tensor[nz, nx]
        The prior mean (buffer).
    eigenvalues : Tensor[nz * nx]
        All prior variances ``std^2 lambda_k`` (kept and dropped), decreasing (buffer); only the ``K`` kept ones
        with ``method="iterative"``.
    total_variance : float
        ``std^2 nz nx``, the trace of the prior covariance.
    explained_variance : float
        Fraction of the prior variance (trace) kept by the ``K`` modes.
    lo, hi : Tensor[nz, nx] or None
        Bounds (buffers) when given.
    """

    def __init__(self, shape: Sequence[int], dx: float, *, covariance: str = "matern", hurst: float | None = None,
                 nu: float | None = None, a_z: float, a_x: float, mean=0.0, std: float = 1.0,
                 n_modes: int | None = None, bounds=None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, cache_dir=None, method: str = "auto"):
        super().__init__()
        nz, nx = _check_shape(shape)
        n_pts = nz * nx
        dx = _check_positive("dx", dx)
        std = _check_positive("std", std)
        dtype = _resolve_dtype(dtype)
        device = torch.device("cpu") if device is None else torch.device(device)
        k = _check_n_modes(n_modes, nz, nx)
        mean_t = _check_mean(mean, (nz, nx), dtype, device)
        lam, vecs = grid_covariance_eigh((nz, nx), dx, covariance=covariance, hurst=hurst, nu=nu, a_z=a_z, a_x=a_x,
                                         n_modes=n_modes, cache_dir=cache_dir, method=method)
        self.shape = (nz, nx)
        self.dx = dx
        self.covariance = covariance
        self.std = std
        self.latent_dim = k
        # the trace of a correlation matrix is N exactly, whether or not all eigenvalues are known (iterative path)
        self.total_variance = std ** 2 * n_pts
        self.explained_variance = float(lam[:k].sum()) / n_pts
        self.register_buffer("modes", vecs.to(dtype=dtype, device=device))  # vecs is freshly assembled: no copy
        self.register_buffer("scales", (std * lam[:k].sqrt()).to(dtype=dtype, device=device))
        self.register_buffer("eigenvalues", (std ** 2 * lam).to(dtype=dtype, device=device))
        self.register_buffer("mean_field", mean_t)
        if bounds is not None:
            lo, hi = _check_bounds(bounds, (nz, nx), dtype, device)
            if not bool(((mean_t > lo) & (mean_t < hi)).all()):
                raise ValueError(f"mean must lie strictly inside bounds (lo, hi) everywhere, got mean range "
                                 f"[{float(mean_t.min()):g}, {float(mean_t.max()):g}] and bounds {bounds!r}")
            p = (mean_t - lo) / (hi - lo)
            self.register_buffer("lo", lo)
            self.register_buffer("hi", hi)
            self.register_buffer("_alpha", (hi - lo) / ((mean_t - lo) * (hi - mean_t)))
            self.register_buffer("_beta", torch.log(p) - torch.log1p(-p))
        else:
            self.lo = None
            self.hi = None
        # eigenvalues below this fraction of the largest are numerically zero: inverse() ignores them
        self._tiny = float(lam[0]) * n_pts * torch.finfo(torch.float64).eps

    @property
    def bounds(self):
        """``(lo, hi)`` tensors, or None."""
        return None if self.lo is None else (self.lo, self.hi)

    def modes_for_variance(self, fraction: float) -> int:
        """Smallest number of leading modes holding ``fraction`` (0 < fraction <= 1) of the prior variance."""
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        cum = torch.cumsum(self.eigenvalues.to(torch.float64), 0) / self.total_variance
        if float(cum[-1]) < fraction - 1e-9:
            raise ValueError(f"only the {len(cum)} leading eigenvalues are known (iterative eigendecomposition), "
                             f"holding {float(cum[-1]):.4f} of the variance; fraction {fraction} needs more: "
                             f"build with a larger n_modes")
        target = torch.tensor(min(fraction, float(cum[-1])), dtype=torch.float64, device=cum.device)
        return int(torch.searchsorted(cum, target - 1e-12).item()) + 1

    def gaussian(self, z: torch.Tensor) -> torch.Tensor:
        """The unbounded Gaussian field ``mean + L z`` (before the bounds), ``[..., nz, nx]``."""
        _check_like("z", z, self.modes, "WhitenedField")
        if z.ndim < 1 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must be shaped [..., latent_dim] = [..., {self.latent_dim}], got {tuple(z.shape)}")
        u = (z * self.scales) @ self.modes.T
        return self.mean_field + u.reshape(*z.shape[:-1], *self.shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latent ``z[..., latent_dim]`` to the field ``[..., nz, nx]`` (bounded if ``bounds`` were given)."""
        u = self.gaussian(z)
        if self.lo is None:
            return u
        return self.lo + (self.hi - self.lo) * torch.sigmoid(self._alpha * (u - self.mean_field) + self._beta)

    def inverse(self, field: torch.Tensor) -> torch.Tensor:
        """Latent ``z[..., latent_dim]`` of ``field[..., nz, nx]``: least squares in the kept modes.

        Exact round trip ``inverse(forward(z)) == z`` (to rounding); a field outside the span of the kept modes is
        projected onto it. With bounds the field must lie strictly inside ``(lo, hi)``; it is first mapped back to
        the Gaussian field ``u`` (inverse squashing) and the least squares are taken there. Modes whose prior
        variance is numerically zero (below ``N eps`` of the largest) get ``z = 0``.
        """
        _check_like("field", field, self.modes, "WhitenedField")
        if field.ndim < 2 or tuple(field.shape[-2:]) != self.shape:
            raise ValueError(f"field must be shaped [..., nz, nx] = [..., {self.shape[0]}, {self.shape[1]}], "
                             f"got {tuple(field.shape)}")
        if self.lo is not None:
            if not bool(((field > self.lo) & (field < self.hi)).all()):
                raise ValueError(_outside_message(field, self.lo, self.hi))
            p = (field - self.lo) / (self.hi - self.lo)
            u = (torch.log(p) - torch.log1p(-p) - self._beta) / self._alpha
        else:
            u = field - self.mean_field
        coef = u.reshape(*u.shape[:-2], -1) @ self.modes
        ok = self.scales ** 2 > self._tiny * self.std ** 2
        return torch.where(ok, coef / torch.where(ok, self.scales, torch.ones_like(self.scales)), 0.0)

    def sample(self, n: int = 1, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` prior samples ``[n, nz, nx]`` (``z ~ N(0, I)`` through :meth:`forward`)."""
        z = torch.randn((n, self.latent_dim), generator=generator, dtype=self.modes.dtype, device=self.modes.device)
        return self.forward(z)

    def extra_repr(self) -> str:
        return (f"shape={self.shape}, dx={self.dx:g}, covariance={self.covariance!r}, latent_dim={self.latent_dim}, "
                f"explained_variance={self.explained_variance:.4f}, bounded={self.lo is not None}")


class BoxField(torch.nn.Module):
    r"""Flat prior inside ``[lo, hi]`` per pixel (no smoothness), in unconstrained latent coordinates.

    ``forward(u) = lo + (hi - lo) * sigmoid(u)`` maps the latent ``u[..., nz, nx]`` (any real values) into the box.
    A density flat in the field corresponds in latent space to ``exp(log_abs_det_jacobian(u))``:

    .. math:: \log\left|\frac{\partial f}{\partial u}\right| = \sum_{ij} \left[\log(hi - lo) + \log\sigma(u_{ij})
              + \log\sigma(-u_{ij})\right],

    i.e. ``u_ij`` are independent standard logistic variables under the flat prior (normalised by
    ``prod(hi - lo)``).

    Parameters
    ----------
    shape : (int, int)
        Grid ``(nz, nx)``.
    bounds : (lo, hi), optional
        Floats or tensors broadcastable to ``(nz, nx)``, ``lo < hi``. Alternatively pass ``lo=`` and ``hi=``.
    lo, hi : float or Tensor, optional
        Keyword form of ``bounds``.
    dtype, device : optional
        Of the buffers.

    Attributes
    ----------
    latent_shape : (int, int)
        ``(nz, nx)``.
    lo, hi, mean_field : Tensor[nz, nx]
        Bounds and the prior mean ``(lo + hi) / 2`` (buffers).
    """

    def __init__(self, shape: Sequence[int], bounds=None, *, lo=None, hi=None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        super().__init__()
        nz, nx = _check_shape(shape)
        if bounds is None:
            if lo is None or hi is None:
                raise ValueError("BoxField needs bounds=(lo, hi) or both lo= and hi=")
            bounds = (lo, hi)
        elif lo is not None or hi is not None:
            raise ValueError("give BoxField either bounds=(lo, hi) or lo= and hi=, not both")
        dtype = _resolve_dtype(dtype)
        device = torch.device("cpu") if device is None else torch.device(device)
        lo_t, hi_t = _check_bounds(bounds, (nz, nx), dtype, device)
        self.shape = (nz, nx)
        self.latent_shape = (nz, nx)
        self.register_buffer("lo", lo_t)
        self.register_buffer("hi", hi_t)
        self.register_buffer("mean_field", 0.5 * (lo_t + hi_t))

    @property
    def bounds(self):
        """``(lo, hi)`` tensors."""
        return self.lo, self.hi

    def _check_latent(self, u: torch.Tensor) -> None:
        _check_like("u", u, self.lo, "BoxField")
        if u.ndim < 2 or tuple(u.shape[-2:]) != self.latent_shape:
            raise ValueError(f"u must be shaped [..., nz, nx] = [..., {self.latent_shape[0]}, "
                             f"{self.latent_shape[1]}], got {tuple(u.shape)}")

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Field ``[..., nz, nx]`` inside ``(lo, hi)`` from the unconstrained latent ``u[..., nz, nx]``."""
        self._check_latent(u)
        return self.lo + (self.hi - self.lo) * torch.sigmoid(u)

    def inverse(self, field: torch.Tensor) -> torch.Tensor:
        """Latent ``u = logit((field - lo) / (hi - lo))``; ``field`` must lie strictly inside ``(lo, hi)``."""
        _check_like("field", field, self.lo, "BoxField")
        if field.ndim < 2 or tuple(field.shape[-2:]) != self.latent_shape:
            raise ValueError(f"field must be shaped [..., nz, nx] = [..., {self.latent_shape[0]}, "
                             f"{self.latent_shape[1]}], got {tuple(field.shape)}")
        if not bool(((field > self.lo) & (field < self.hi)).all()):
            raise ValueError(_outside_message(field, self.lo, self.hi))
        p = (field - self.lo) / (self.hi - self.lo)
        return torch.log(p) - torch.log1p(-p)

    def log_abs_det_jacobian(self, u: torch.Tensor) -> torch.Tensor:
        """``log|det d forward / d u|`` summed over the grid, shaped ``u.shape[:-2]``."""
        self._check_latent(u)
        terms = torch.log(self.hi - self.lo) + torch.nn.functional.logsigmoid(u) + torch.nn.functional.logsigmoid(-u)
        return terms.sum(dim=(-2, -1))

    def sample(self, n: int = 1, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` fields ``[n, nz, nx]`` uniform in ``[lo, hi)`` per pixel."""
        r = torch.rand((n, *self.shape), generator=generator, dtype=self.lo.dtype, device=self.lo.device)
        return self.lo + (self.hi - self.lo) * r

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
