"""Noise models: the likelihood of the observed data given the predicted data.

A noise model is any object that satisfies the :class:`NoiseModel` protocol (DESIGN.md section 1, "Protocols, not
type switches"): its Pyro sample sites, its log-density and its whitener. :class:`~probinv.models.SeismicModel` and
the inference functions use nothing else, so a new likelihood (a misfit, a robust norm) plugs in without touching
them. The four built-in ones (:class:`Gaussian`, :class:`GaussianLatentSigma`, :class:`StudentT`,
:class:`CorrelatedGaussian`) are small frozen dataclasses that implement it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import pyro
import pyro.distributions as dist
import torch

from ..validation import check_positive

__all__ = ["CorrelatedGaussian", "Gaussian", "GaussianLatentSigma", "NOISE_MODEL_METHODS", "NoiseModel", "StudentT",
           "check_noise_model"]


@runtime_checkable
class NoiseModel(Protocol):
    """What a noise model (likelihood) provides to :func:`probinv.models.build_model` and the inference functions.

    Any object with these methods is a noise model; nothing checks its type. Conventions: ``pred`` and ``data`` are
    shaped like the forward operator's output ``[*batch, n_shots, *trace]`` (e.g. ``trace = (n_receivers, nt)``),
    data units; ``params`` is the dict returned by :meth:`sample_params` (or :meth:`params_from_latents`), empty for a
    noise model without parameters of its own.

    An optional method ``check_data(data)`` is called by the model with the observed data, to reject tensor
    parameters that do not fit them (``ValueError``).
    """

    def sample_params(self, like: torch.Tensor) -> dict:
        """Declare the noise model's own latent sites inside the Pyro model.

        Calls ``pyro.sample`` for each of its parameters and returns their values by parameter name (``{}`` when it
        has none). ``like`` gives the dtype and device.
        """

    def params_from_latents(self, latents: Mapping[str, torch.Tensor]) -> dict:
        """Read the parameters ``{name: value}`` from latent site values ``{site: value}``.

        The inverse of :meth:`sample_params`' naming; ``{}`` when there are no parameters.
        """

    def log_prior(self, params: Mapping[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """Return the log-density of the parameters under their hyperprior.

        A scalar (0 when there are no parameters), consistent with the sites of :meth:`sample_params`.
        """

    def distribution(self, pred: torch.Tensor, params: Mapping, shots: torch.Tensor | None,
                     n_data_dims: int) -> torch.distributions.Distribution:
        """Return the observation distribution of the Pyro site ``"obs"``.

        Batch shape ``[..., n_sub]`` (the shot plate in the last batch axis), every other data axis an event axis
        (``n_data_dims - 1`` of them). ``shots`` are the subsampled shot indices (None: all); per-shot parameters
        must be subsampled with them.
        """

    def log_prob(self, pred: torch.Tensor, data: torch.Tensor, params: Mapping) -> torch.Tensor:
        """Return ``log p(data | pred, params)`` over all shots, summed over the data axes.

        Shape ``pred.shape[:-data.ndim]`` (a scalar for unbatched predictions).
        """

    def whiten(self, residual: torch.Tensor, params: Mapping) -> torch.Tensor:
        """Apply the linear map ``r -> C^{-1/2} r`` to full-data residuals ``[n_shots, *trace]``.

        Its squared norm weights the Gauss-Newton Hessian (the expected Fisher information) of
        :func:`probinv.inference.laplace`.
        """


NOISE_MODEL_METHODS = ("sample_params", "params_from_latents", "log_prior", "distribution", "log_prob", "whiten")


def check_noise_model(noise) -> None:
    """Raise ``TypeError`` naming the :class:`NoiseModel` methods that ``noise`` lacks."""
    missing = [m for m in NOISE_MODEL_METHODS if not callable(getattr(noise, m, None))]
    if missing:
        raise TypeError(f"noise must satisfy the probinv.models.NoiseModel protocol (methods "
                        f"{', '.join(NOISE_MODEL_METHODS)}); {type(noise).__name__} lacks {', '.join(missing)}")


class _NoiseDefaults:
    """The protocol's methods that the built-in noise models share: no parameters of their own, the log-density from
    :meth:`distribution`, the data check.
    """

    def sample_params(self, like: torch.Tensor) -> dict:
        return {}

    def params_from_latents(self, latents: Mapping[str, torch.Tensor]) -> dict:
        return {}

    def log_prior(self, params: Mapping[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(())

    def log_prob(self, pred: torch.Tensor, data: torch.Tensor, params: Mapping) -> torch.Tensor:
        return self.distribution(pred, params, None, data.ndim).log_prob(data).sum(-1)

    def check_data(self, data: torch.Tensor) -> None:
        check_noise_data(self, data)


def _per_shot(value, pred: torch.Tensor, shots: torch.Tensor | None, n_data_dims: int):
    """Select the subsampled shots of a per-shot (or per-trace / per-sample) scale shaped like the full data."""
    if not isinstance(value, torch.Tensor):
        return torch.as_tensor(value, dtype=pred.dtype, device=pred.device)
    value = value.to(dtype=pred.dtype, device=pred.device)
    if shots is not None and value.ndim == n_data_dims and value.shape[0] != 1:
        value = value.index_select(0, shots.to(value.device))
    return value


@dataclass(frozen=True)
class Gaussian(_NoiseDefaults):
    """Independent Gaussian noise with known standard deviation.

    Parameters
    ----------
    sigma : float or Tensor
        Standard deviation in data units. A tensor must broadcast to the data ``[n_shots, n_receivers, nt]``;
        when it has the data's number of dimensions and its first axis is ``n_shots``, it is subsampled with the shots.
    """

    sigma: float | torch.Tensor

    def __post_init__(self):
        check_positive("sigma", self.sigma)

    def distribution(self, pred, params, shots, n_data_dims):
        sigma = _per_shot(self.sigma, pred, shots, n_data_dims)
        return dist.Normal(pred, sigma).to_event(n_data_dims - 1)

    def whiten(self, residual, params):
        """``r / sigma``."""
        return residual / _per_shot(self.sigma, residual, None, residual.ndim)


@dataclass(frozen=True)
class GaussianLatentSigma(_NoiseDefaults):
    """Gaussian noise whose standard deviation is a latent site ``"sigma"`` with a hyperprior.

    Parameters
    ----------
    prior : pyro.distributions.Distribution, optional
        Hyperprior on the (scalar) noise standard deviation, in data units. Default: log-normal with median
        ``scale`` and log-standard-deviation 1 (an order of magnitude either way at two sigma).
    scale : float
        Median of the default hyperprior (data units). Ignored when ``prior`` is given.
    name : str
        Name of the latent site.
    """

    scale: float = 1.0
    prior: object = None
    name: str = "sigma"

    def __post_init__(self):
        check_positive("scale", self.scale)
        if self.prior is not None and not isinstance(self.prior, torch.distributions.Distribution):
            raise TypeError(f"prior must be a torch/pyro Distribution on (0, inf), got {type(self.prior).__name__}")

    def _prior(self, like):
        if self.prior is not None:
            return self.prior
        loc = torch.tensor(math.log(self.scale), dtype=like.dtype, device=like.device)
        return dist.LogNormal(loc, torch.ones_like(loc))

    def sample_params(self, like: torch.Tensor) -> dict:
        return {"sigma": pyro.sample(self.name, self._prior(like))}

    def params_from_latents(self, latents):
        return {"sigma": latents[self.name]}

    def log_prior(self, params, like):
        return self._prior(like).log_prob(params["sigma"]).sum()

    def distribution(self, pred, params, shots, n_data_dims):
        sigma = params["sigma"]
        # a batched sigma (particles, chains) carries a trailing singleton for the shot plate: keep it aligned
        return dist.Normal(pred, sigma.reshape(sigma.shape + (1,) * (n_data_dims - 1))).to_event(n_data_dims - 1)

    def whiten(self, residual, params):
        """``r / sigma`` with the (scalar) sigma of ``params``."""
        return residual / torch.as_tensor(params["sigma"], dtype=residual.dtype, device=residual.device)


@dataclass(frozen=True)
class StudentT(_NoiseDefaults):
    """Independent Student-t noise (robust to outliers, e.g. bad traces).

    Parameters
    ----------
    df : float
        Degrees of freedom (> 0); large values approach the Gaussian.
    scale : float or Tensor
        Scale in data units (the standard deviation is ``scale * sqrt(df / (df - 2))`` for ``df > 2``).
    """

    df: float
    scale: float | torch.Tensor

    def __post_init__(self):
        check_positive("df", self.df)
        check_positive("scale", self.scale)

    def distribution(self, pred, params, shots, n_data_dims):
        scale = _per_shot(self.scale, pred, shots, n_data_dims)
        df = torch.as_tensor(self.df, dtype=pred.dtype, device=pred.device)
        return dist.StudentT(df, pred, scale).to_event(n_data_dims - 1)

    def whiten(self, residual, params):
        """``r / (scale sqrt((df + 3) / (df + 1)))``: the Fisher information of a Student-t location is
        ``(df + 1) / ((df + 3) scale^2)``.
        """
        scale = torch.as_tensor(self.scale, dtype=residual.dtype, device=residual.device)
        return residual / (scale * ((self.df + 3) / (self.df + 1)) ** 0.5)


def check_noise_data(noise, data: torch.Tensor) -> None:
    """Raise ValueError when a tensor parameter (``sigma``, ``scale``, ``cov_diag``, ``loc``) of ``noise`` does not
    broadcast to the data ``[n_shots, ...]``.
    """
    for name in ("sigma", "scale", "cov_diag", "loc"):
        value = getattr(noise, name, None)
        if isinstance(value, torch.Tensor):
            try:
                ok = torch.broadcast_shapes(value.shape, data.shape) == data.shape
            except RuntimeError:
                ok = False
            if not ok:
                raise ValueError(f"noise {name} shaped {tuple(value.shape)} does not broadcast to the data shape "
                                 f"{tuple(data.shape)}")


def _flat_trace(value: torch.Tensor, n_trace_dims: int) -> torch.Tensor:
    """``[..., *trace]`` -> ``[..., D]`` (the last ``n_trace_dims`` axes of one shot flattened)."""
    return value.reshape(tuple(value.shape[:value.ndim - n_trace_dims]) + (-1,)) if n_trace_dims else value[..., None]


@dataclass(frozen=True, eq=False)
class CorrelatedGaussian(_NoiseDefaults):
    r"""Gaussian noise with a mean offset and a low-rank-plus-diagonal covariance within each shot.

    ``obs[s] ~ N(pred[s] + loc[s], W[s] W[s]^T + diag(cov_diag[s]))`` over the flattened record of shot ``s``
    (``D = n_receivers * nt`` values, C order), shots independent. This is the form of the *Bayesian
    approximation-error* model (Kaipio & Somersalo 2007): when the forward operator is an approximation (a trained
    surrogate, a coarse grid), its error ``e = F_accurate(m) - F_approx(m)`` over prior draws has a mean (``loc``) and a
    correlated covariance (low rank ``W``), which are added to the measurement noise (``cov_diag``) so that the
    posterior is not overconfident. :func:`approximation_error` estimates it from paired runs.

    To keep the correlation *between* shots too, give the forward operator and data a single "shot" that holds all
    records (``[1, n_shots * n_receivers, nt]``); the shot plate then has one element.

    Parameters
    ----------
    cov_factor : Tensor[n_shots or 1, D, r]
        Low-rank factor ``W`` (data units).
    cov_diag : float or Tensor broadcastable to the data ``[n_shots, *trace]``
        Diagonal variance (data units squared), e.g. ``sigma_noise**2`` plus the error variance the factor misses.
    loc : float or Tensor broadcastable to the data, optional
        Mean offset added to the prediction (data units); default 0.
    info : dict, optional
        Provenance (what :func:`approximation_error` measured); not used in the likelihood.

    One SVD per dtype / device / shot subset is cached; a log-density then costs O(D r) per shot, and
    :meth:`whitener` applies ``M`` with ``M^T M = C^{-1}`` for the Gauss-Newton Hessian of
    :func:`probinv.inference.laplace`.
    """

    cov_factor: torch.Tensor
    cov_diag: float | torch.Tensor
    loc: float | torch.Tensor = 0.0
    info: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        w = self.cov_factor
        if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.ndim != 3:
            raise TypeError(f"cov_factor must be a floating Tensor[n_shots or 1, D, rank], got "
                            f"{type(w).__name__}{tuple(w.shape) if isinstance(w, torch.Tensor) else ''}")
        if not bool(torch.isfinite(w).all()):
            raise ValueError("cov_factor must be finite everywhere")
        check_positive("cov_diag", self.cov_diag)
        if isinstance(self.loc, torch.Tensor):
            if not self.loc.is_floating_point() or not bool(torch.isfinite(self.loc).all()):
                raise ValueError("loc must be a finite floating tensor")
        elif isinstance(self.loc, bool) or not isinstance(self.loc, (int, float)) or not math.isfinite(self.loc):
            raise TypeError(f"loc must be a finite number or a tensor, got {self.loc!r}")

    def check_data(self, data: torch.Tensor) -> None:
        """Raise ValueError when the factor or a tensor parameter does not fit the data ``[n_shots, *trace]``."""
        d = int(math.prod(data.shape[1:]))
        w = self.cov_factor
        if w.shape[1] != d or w.shape[0] not in (1, data.shape[0]):
            raise ValueError(f"cov_factor shaped {tuple(w.shape)} does not fit data shaped {tuple(data.shape)}: "
                             f"expected [{data.shape[0]} or 1, {d}, rank] (D = product of the per-shot axes)")
        check_noise_data(self, data)

    def _parts(self, like, shots, n_data_dims):
        """``loc``, ``W [S or 1, D, r]``, ``diag [S or 1, D]`` and the trace shape, on ``like``'s dtype/device."""
        nt = n_data_dims - 1
        trace = tuple(like.shape[like.ndim - nt:]) if nt else ()
        w = self.cov_factor.to(dtype=like.dtype, device=like.device)
        if shots is not None and w.shape[0] != 1:
            w = w.index_select(0, shots.to(w.device))
        diag = _per_shot(self.cov_diag, like, shots, n_data_dims)
        diag = diag.reshape((1,) * max(0, n_data_dims - diag.ndim) + tuple(diag.shape))
        diag = diag.expand(tuple(diag.shape[:diag.ndim - nt]) + trace)
        loc = _per_shot(self.loc, like, shots, n_data_dims)
        return loc, w, _flat_trace(diag, nt), trace

    def _factor(self, like, shots, n_data_dims):
        """Cached ``(loc, W, diag, trace, isd, U, shrink, logdet)`` of the whitening (one SVD per dtype/device/shots).

        With ``D^{-1/2} W = U S V^T``: ``log det C = sum log diag + sum log(1 + S^2)`` per shot.
        """
        key = (like.dtype, str(like.device), None if shots is None else tuple(shots.tolist()), n_data_dims,
               tuple(like.shape[like.ndim - n_data_dims + 1:]))
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            if len(cache) >= 32:  # random mini-batches: keep the cache bounded
                cache.clear()
            loc, w, diag, trace = self._parts(like, shots, n_data_dims)
            isd = diag.rsqrt()
            u, sv, _ = torch.linalg.svd(w * isd[..., None], full_matrices=False)  # [S, D, r], [S, r]
            shrink = 1 - (1 + sv**2).rsqrt()
            logdet = diag.log().sum(-1) + torch.log1p(sv**2).sum(-1)  # [S or 1]
            cache[key] = (loc, w, diag, trace, isd, u, shrink, logdet)
        return cache[key]

    def distribution(self, pred, params, shots, n_data_dims):
        loc, w, diag, trace, isd, u, shrink, logdet = self._factor(pred, shots, n_data_dims)
        return _LowRankGaussian(pred + loc, trace, w, diag, isd, u, shrink, logdet)

    def whitener(self, like: torch.Tensor, shots: torch.Tensor | None = None):
        r"""The linear map ``r -> M r`` per shot, for residual-shaped tensors like ``like [n_shots, *trace]`` (leading
        batch axes allowed), with ``M^T M = C^{-1}``. With ``D^{-1/2} W = U S V^T``,
        ``M = (I - U diag(1 - (1 + S^2)^{-1/2}) U^T) D^{-1/2}`` satisfies ``M^T M = C^{-1}`` and ``M C M^T = I``, so
        ``|M r|^2 = r^T C^{-1} r`` (the Gauss-Newton weighting). Costs O(D r) per shot after one cached SVD.
        """
        _, _, _, trace, isd, u, shrink, _ = self._factor(like, shots, like.ndim)
        return lambda values: _whiten(values, trace, isd, u, shrink)

    def whiten(self, residual, params):
        """``M r`` per shot with ``M^T M = C^{-1}`` (see :meth:`whitener`); ``residual [n_shots, *trace]``."""
        return self.whitener(residual)(residual)


def _whiten(values, trace, isd, u, shrink):
    y = _flat_trace(values, len(trace)) * isd
    proj = (y[..., None, :] @ u)[..., 0, :] * shrink  # [..., S, r]
    return (y - (u @ proj[..., None])[..., 0]).reshape(values.shape)


class _LowRankGaussian(dist.TorchDistribution):
    """``N(mean, W W^T + diag)`` over each shot's record, batch ``[..., n_shots]``, event ``trace``; the whitening
    factorisation is precomputed by :class:`CorrelatedGaussian`, so a log-density costs O(D r) per shot.
    """

    arg_constraints = {}
    has_rsample = True

    def __init__(self, mean, trace, w, diag, isd, u, shrink, logdet, validate_args=None):
        self.mean_, self.trace, self.w, self.diag = mean, tuple(trace), w, diag
        self.isd, self.u, self.shrink, self.logdet = isd, u, shrink, logdet
        nt = len(self.trace)
        batch = torch.broadcast_shapes(mean.shape[:mean.ndim - nt], logdet.shape)
        super().__init__(batch, torch.Size(self.trace), validate_args=False)

    @property
    def support(self):
        return torch.distributions.constraints.independent(torch.distributions.constraints.real, len(self.trace))

    @property
    def mean(self):
        return self.mean_.expand(self.batch_shape + self.event_shape)

    def log_prob(self, value):
        y = _whiten(value - self.mean_, self.trace, self.isd, self.u, self.shrink)
        d = self.isd.shape[-1]
        quad = (_flat_trace(y, len(self.trace)) ** 2).sum(-1)
        return -0.5 * quad - 0.5 * self.logdet - 0.5 * d * math.log(2 * math.pi)

    def rsample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape
        eps_w = torch.randn(shape + (self.w.shape[-1], 1), dtype=self.w.dtype, device=self.w.device)
        eps_d = torch.randn(shape + self.diag.shape[-1:], dtype=self.w.dtype, device=self.w.device)
        flat = (self.w @ eps_w)[..., 0] + self.diag.sqrt() * eps_d
        return self.mean + flat.reshape(shape + self.event_shape)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        mean = self.mean_.expand(batch_shape + self.event_shape)
        return _LowRankGaussian(mean, self.trace, self.w, self.diag, self.isd, self.u, self.shrink, self.logdet)

