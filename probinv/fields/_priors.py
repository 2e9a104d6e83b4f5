r"""Priors on a grid as torch modules: the whitened (Karhunen-Loeve) Gaussian field with smooth bounds, and the box."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..validation import check_scalar, check_shape
from ._checks import _check_bounds, _check_like, _check_mean, _check_n_modes, _outside_message, _resolve_dtype
from ._karhunen_loeve import MAX_EIGH_POINTS, grid_covariance_eigh

__all__ = ["BoxField", "WhitenedField", "linear_depth_trend"]

#: Default fraction of the prior variance (trace of the covariance) that :class:`WhitenedField` keeps when neither
#: ``n_modes`` nor ``retained_variance`` is given.
DEFAULT_RETAINED_VARIANCE = 0.99


def linear_depth_trend(field: torch.Tensor) -> torch.Tensor:
    """Least-squares fit ``a + b z`` of a model ``field[nz, nx]`` (e.g. a starting model), as a field ``[nz, nx]``.

    A prior mean for sedimentary settings, where velocity increases roughly linearly with depth: pass
    ``mean=linear_depth_trend(initial)`` to :class:`WhitenedField` so that the Gaussian fluctuations describe the
    departures from the compaction trend rather than from a model that already holds structure. ``z`` is the row
    index (the fit does not depend on the grid spacing); the result has the input's dtype and device.
    """
    if not isinstance(field, torch.Tensor) or field.ndim != 2 or not field.is_floating_point():
        raise ValueError(f"field must be a floating tensor (nz, nx), got "
                         f"{tuple(field.shape) if isinstance(field, torch.Tensor) else type(field).__name__}")
    nz = field.shape[0]
    z = torch.arange(nz, dtype=torch.float64, device=field.device)
    row = field.to(torch.float64).mean(1)  # equal weights per row: the row means carry the whole LS problem
    zc = z - z.mean()
    slope = (zc * (row - row.mean())).sum() / (zc * zc).sum().clamp_min(1e-300) if nz > 1 else row.new_zeros(())
    trend = row.mean() + slope * zc
    return trend[:, None].expand(field.shape).to(field.dtype).clone()


class WhitenedField(torch.nn.Module):
    r"""Whitened (Karhunen-Loeve) parameterisation of a Gaussian random-field prior: ``field = mean + L z``.

    ``L = V diag(std sqrt(lambda))`` with ``(lambda, V)`` the eigendecomposition of the correlation matrix of the
    ``nz x nx`` grid (:func:`grid_covariance_eigh`), so ``z ~ N(0, I)`` gives exactly the covariance
    ``std^2 rho(x_i - x_j)`` on the grid (not periodic). Only the ``K`` leading modes are kept: the best rank-K
    approximation of the prior (in variance), with ``latent_dim = K``; samplers then see a well-conditioned
    ``K``-dimensional latent space. ``K`` is the smallest number of modes that holds ``retained_variance`` of the
    prior variance (default 0.99), or ``n_modes`` when given.

    **The discarded modes are not forgotten.** Their posterior is their prior (the truncated model cannot see them),
    so their variance belongs in every posterior uncertainty: :attr:`discarded_variance` holds it per pixel,
    ``std^2 (1 - sum_{k<K} lambda_k v_k(x)^2)`` (exact: the diagonal of a correlation matrix is 1), and the
    inference functions attach it to each :class:`probinv.inference.Posterior` (see :meth:`discarded_variance_at`),
    whose ``std()``, ``credible_interval()`` and coverage include it.

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
        Keep the ``n_modes`` leading modes (exclusive with ``retained_variance``).
    retained_variance : float in (0, 1], optional
        Keep the fewest leading modes that hold this fraction of the prior variance (the trace); the default when
        ``n_modes`` is not given is 0.99 (``DEFAULT_RETAINED_VARIANCE``); 1 keeps every mode. Needs the dense
        eigendecomposition (grids up to 128 x 128); larger grids need ``n_modes``.
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
    retained_fraction : float
        The same as ``explained_variance`` (the name the posterior verdict reports).
    discarded_variance : Tensor[nz, nx]
        Per-pixel prior variance of the discarded modes, in the units of the Gaussian field squared (buffer; zero
        when every mode is kept).
    lo, hi : Tensor[nz, nx] or None
        Bounds (buffers) when given.
    """

    def __init__(self, shape: Sequence[int], dx: float, *, covariance: str = "matern", hurst: float | None = None,
                 nu: float | None = None, a_z: float, a_x: float, mean=0.0, std: float = 1.0,
                 n_modes: int | None = None, retained_variance: float | None = None, bounds=None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None, cache_dir=None,
                 method: str = "auto"):
        super().__init__()
        nz, nx = check_shape(shape)
        n_pts = nz * nx
        dx = check_scalar("dx", dx)
        std = check_scalar("std", std)
        dtype = _resolve_dtype(dtype)
        device = torch.device("cpu") if device is None else torch.device(device)
        if n_modes is not None and retained_variance is not None:
            raise ValueError(f"give n_modes or retained_variance, not both (got n_modes={n_modes!r}, "
                             f"retained_variance={retained_variance!r})")
        if n_modes is None:
            frac = DEFAULT_RETAINED_VARIANCE if retained_variance is None else retained_variance
            if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
                raise ValueError(f"retained_variance must be a fraction in (0, 1], got {retained_variance!r}")
            if n_pts > MAX_EIGH_POINTS or method == "iterative":
                # retained_variance needs every eigenvalue (the dense path): grid_covariance_eigh raises its own
                # message asking for n_modes (or naming the dense path's limit)
                grid_covariance_eigh((nz, nx), dx, covariance=covariance, hurst=hurst, nu=nu, a_z=a_z, a_x=a_x,
                                     method=method)
            lam_all, _ = grid_covariance_eigh((nz, nx), dx, covariance=covariance, hurst=hurst, nu=nu, a_z=a_z,
                                              a_x=a_x, n_modes=1, cache_dir=cache_dir, method=method)
            cum = torch.cumsum(lam_all, 0) / n_pts
            n_modes = min(n_pts, int(torch.searchsorted(cum, torch.tensor(float(frac) - 1e-12,
                                                                          dtype=cum.dtype)).item()) + 1)
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
        self.retained_fraction = self.explained_variance
        # the discarded modes' variance per pixel: the diagonal of std^2 (R - V_K diag(lam_K) V_K^T), with diag R = 1
        kept = (vecs ** 2 * lam[:k]).sum(1).reshape(nz, nx)
        self.register_buffer("discarded_variance", (std ** 2 * (1.0 - kept).clamp_min(0.0)).to(dtype=dtype,
                                                                                             device=device))
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

    def discarded_variance_at(self, field: torch.Tensor) -> torch.Tensor:
        r"""Per-pixel variance of the discarded modes in field units at ``field[..., nz, nx]`` (e.g. m^2/s^2).

        Without bounds this is :attr:`discarded_variance` (exact). With bounds the squashing map is linearised at
        ``field`` (delta method): ``discarded_variance * (df/du)^2`` with
        ``df/du = alpha (f - lo)(hi - f) / (hi - lo)`` (1 at the prior mean, smaller towards the bounds).
        """
        if self.lo is None:
            return self.discarded_variance.expand(field.shape).clone()
        f = field.to(self.discarded_variance)
        slope = self._alpha * (f - self.lo) * (self.hi - f) / (self.hi - self.lo)
        return self.discarded_variance * slope.clamp_min(0.0) ** 2

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
