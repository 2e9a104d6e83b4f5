r"""Priors on a grid as torch modules: the whitened (Karhunen-Loeve) Gaussian field with smooth bounds, and the box."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..validation import check_scalar, check_shape
from ._checks import _check_bounds, _check_like, _check_mean, _check_n_modes, _outside_message, _resolve_dtype
from ._karhunen_loeve import grid_covariance_eigh

__all__ = ["BoxField", "WhitenedField"]


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
        nz, nx = check_shape(shape)
        n_pts = nz * nx
        dx = check_scalar("dx", dx)
        std = check_scalar("std", std)
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
        """Return the unbounded Gaussian field ``mean + L z`` (before the bounds), ``[..., nz, nx]``."""
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
        nz, nx = check_shape(shape)
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
