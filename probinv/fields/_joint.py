r"""Priors for the quality factor Q (a whitened Gaussian field of ln Q) and the joint vp-Q prior.

Q is positive and spans decades (10 in sediments, 1000 in hard rock), so the Gaussian random field is put on
:math:`\ln Q`: :class:`LogQField` is a :class:`WhitenedField` of ``ln Q`` (Matern / von Karman covariance, optional
bounds) whose output is ``Q = exp(u)``. Without bounds Q is log-normal: with median :math:`Q_{med}` and log-standard
deviation :math:`s`, :math:`E[Q] = Q_{med} e^{s^2/2}`, :math:`\mathrm{sd}[Q] = E[Q]\sqrt{e^{s^2} - 1}`; with bounds
the squashing of :class:`WhitenedField` is applied to ``ln Q`` (monotone, fixing the mean of ``ln Q``), so the median
of Q stays :math:`Q_{med}` exactly and every draw lies inside ``(q_lo, q_hi)``.

:class:`JointVpQPrior` couples a velocity prior and a log-Q prior through their whitened coordinates,

.. math:: z_Q = \rho\, z_v + \sqrt{1 - \rho^2}\, z_Q', \qquad z_v, z_Q' \sim N(0, I) \text{ independent},

so that, when both priors have the same correlation function (the same Karhunen-Loeve modes), the Gaussian fields
``u_v`` and ``ln Q`` have the pointwise correlation :math:`\rho` and the cross-covariance
:math:`\rho\,\sigma_v \sigma_{\ln Q} C(\mathbf x - \mathbf x')`. :math:`\rho = 0` (default) is the independent prior.
The latent sites of a Pyro model stay the independent ``vp_z`` and ``q_z`` (= :math:`z_Q'`):
:func:`probinv.models.build_joint_model` builds the model.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..validation import check_scalar
from ._priors import WhitenedField

__all__ = ["JointVpQPrior", "LogQField"]


class LogQField(WhitenedField):
    r"""Whitened Gaussian random field of ``ln Q``; ``forward(z)`` returns ``Q = exp(u)`` (dimensionless, > 0).

    Parameters
    ----------
    shape : (int, int)
        Grid ``(nz, nx)``.
    dx : float
        Grid spacing (m).
    q_median : float or Tensor broadcastable to ``(nz, nx)``
        Median of Q (= ``exp`` of the mean of ``ln Q``).
    log_std : float
        Standard deviation of ``ln Q`` (``ln 10 = 2.30`` is a decade per standard deviation).
    bounds : (q_lo, q_hi), optional
        Q bounds, ``0 < q_lo < q_median < q_hi``; the squashing of :class:`WhitenedField` acts on ``ln Q``.
    covariance, hurst, nu, a_z, a_x, n_modes, dtype, device, cache_dir, method
        As :class:`WhitenedField` (the correlation of ``ln Q``).

    Attributes
    ----------
    q_median : Tensor[nz, nx]
    q_bounds : (Tensor, Tensor) or None
        ``(q_lo, q_hi)`` (the inherited ``lo``, ``hi`` and ``bounds`` are those of ``ln Q``).
    """

    def __init__(self, shape: Sequence[int], dx: float, *, q_median=50.0, log_std: float = 0.5,
                 bounds=None, covariance: str = "matern", hurst: float | None = None, nu: float | None = None,
                 a_z: float, a_x: float, n_modes: int | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, cache_dir=None, method: str = "auto"):
        qm = torch.as_tensor(q_median, dtype=torch.float64)
        if not bool(torch.isfinite(qm).all()) or bool((qm <= 0).any()):
            raise ValueError(f"q_median must be positive and finite (dimensionless Q), got {q_median!r}")
        log_std = check_scalar("log_std", log_std)
        log_bounds = None
        if bounds is not None:
            try:
                q_lo, q_hi = bounds
            except (TypeError, ValueError):
                raise ValueError(f"bounds must be (q_lo, q_hi), got {bounds!r}") from None
            lo_t, hi_t = torch.as_tensor(q_lo, dtype=torch.float64), torch.as_tensor(q_hi, dtype=torch.float64)
            if bool((lo_t <= 0).any()) or not bool(torch.isfinite(hi_t).all()) or bool((hi_t <= lo_t).any()):
                raise ValueError(f"bounds must be (q_lo, q_hi) with 0 < q_lo < q_hi < inf, got {bounds!r}")
            log_bounds = (torch.log(lo_t), torch.log(hi_t))
        super().__init__(shape, dx, covariance=covariance, hurst=hurst, nu=nu, a_z=a_z, a_x=a_x,
                         mean=torch.log(qm), std=log_std, n_modes=n_modes, bounds=log_bounds, dtype=dtype,
                         device=device, cache_dir=cache_dir, method=method)
        self.log_std = log_std

    @property
    def q_median(self) -> torch.Tensor:
        """Median of Q, ``exp(mean of ln Q)``."""
        return torch.exp(self.mean_field)

    @property
    def q_bounds(self):
        """``(q_lo, q_hi)`` or None."""
        return None if self.lo is None else (torch.exp(self.lo), torch.exp(self.hi))

    def log_q(self, z: torch.Tensor) -> torch.Tensor:
        """``ln Q[..., nz, nx]`` of latent ``z[..., latent_dim]`` (bounded if bounds were given)."""
        return super().forward(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Q ``[..., nz, nx]`` of latent ``z[..., latent_dim]``."""
        return torch.exp(self.log_q(z))

    def inverse(self, field: torch.Tensor) -> torch.Tensor:
        """Latent ``z`` of a Q field (positive; strictly inside the bounds when given)."""
        if not isinstance(field, torch.Tensor) or bool((field <= 0).any()):
            raise ValueError("field must be a tensor of positive Q values")
        return super().inverse(torch.log(field))

    def lognormal_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Closed-form mean and standard deviation of Q per pixel for the unbounded field (``n_modes`` = all):
        :math:`E[Q] = Q_{med} e^{s_i^2/2}`, :math:`sd = E[Q]\sqrt{e^{s_i^2} - 1}`, :math:`s_i^2` the kept variance
        of ``ln Q`` at pixel ``i``.
        """
        var = ((self.modes * self.scales) ** 2).sum(-1).reshape(self.shape)
        mean = self.q_median * torch.exp(0.5 * var)
        return mean, mean * torch.sqrt(torch.expm1(var))


class JointVpQPrior:
    r"""Joint prior of a velocity field and a Q field, correlated through their whitened coordinates.

    Parameters
    ----------
    vp : WhitenedField
        Velocity prior (m/s).
    q : LogQField
        Q prior.
    rho : float
        Correlation coefficient of the two whitened coordinates, ``-1 < rho < 1`` (0: independent). With
        ``rho != 0`` both priors need the same grid and the same Karhunen-Loeve modes (same covariance family,
        lengths and ``n_modes``): then ``rho`` is the pointwise correlation of the Gaussian fields of ``vp`` and
        ``ln Q`` (before any bounds).
    names : (str, str)
        Field names of the velocity and Q (default ``("vp", "q")``).
    """

    def __init__(self, vp: WhitenedField, q: LogQField, rho: float = 0.0, *, names: tuple = ("vp", "q")):
        if not isinstance(vp, WhitenedField):
            raise TypeError(f"vp must be a probinv.fields.WhitenedField, got {type(vp).__name__}")
        if not isinstance(q, LogQField):
            raise TypeError(f"q must be a probinv.fields.LogQField, got {type(q).__name__}")
        rho = check_scalar("rho", rho, positive=False)
        if not -1.0 < rho < 1.0:
            raise ValueError(f"rho must lie in (-1, 1), got {rho!r}")
        if rho != 0.0:
            if vp.shape != q.shape or vp.latent_dim != q.latent_dim:
                raise ValueError(f"rho != 0 needs priors on the same grid with the same Karhunen-Loeve modes, got "
                                 f"shapes {vp.shape}, {q.shape} and latent_dim {vp.latent_dim}, {q.latent_dim}")
            if not torch.allclose(vp.modes.to(torch.float64), q.modes.to(torch.float64), atol=1e-6):
                raise ValueError("rho != 0 needs the same Karhunen-Loeve modes in vp and q (same covariance "
                                 "family, correlation lengths and dx)")
        if len(names) != 2 or names[0] == names[1]:
            raise ValueError(f"names must be two different field names, got {names!r}")
        self.vp, self.q, self.rho, self.names = vp, q, rho, tuple(names)

    @property
    def priors(self) -> dict:
        """``{vp name: vp prior, q name: q prior}`` (the independent priors of the two latent sites)."""
        return {self.names[0]: self.vp, self.names[1]: self.q}

    def q_latent(self, z_v: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
        """The coupled whitened coordinate ``rho z_v + sqrt(1 - rho^2) z_q`` of Q."""
        if self.rho == 0.0:
            return z_q
        return self.rho * z_v + math.sqrt(1.0 - self.rho ** 2) * z_q

    def fields(self, z_v: torch.Tensor, z_q: torch.Tensor) -> dict:
        """``{vp name: vp, q name: Q}`` of the independent latents ``z_v``, ``z_q``."""
        return {self.names[0]: self.vp(z_v), self.names[1]: self.q(self.q_latent(z_v, z_q))}

    def sample(self, n: int = 1, *, generator: torch.Generator | None = None) -> dict:
        """``n`` joint draws ``{name: Tensor[n, nz, nx]}``."""
        dt, dev = self.vp.modes.dtype, self.vp.modes.device
        z_v = torch.randn((n, self.vp.latent_dim), generator=generator, dtype=dt, device=dev)
        z_q = torch.randn((n, self.q.latent_dim), generator=generator, dtype=dt, device=dev)
        return self.fields(z_v, z_q)
