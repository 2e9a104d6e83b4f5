"""Noise models: the likelihood of the observed data given the predicted data.

Each noise model is a small frozen dataclass with two methods used by :class:`~probinv.models.SeismicModel`:
``sample_params()`` (declares its own latent sites, if any, inside the Pyro model) and
``distribution(pred, params, shots)`` (the observation distribution, batch shape ``[..., n_sub]`` over the shot plate
and every other data axis as an event axis).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

__all__ = ["Gaussian", "GaussianLatentSigma", "StudentT", "NoiseModel"]


def _check_positive(name: str, value) -> None:
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor or a positive number, got dtype {value.dtype}")
        if not bool(torch.isfinite(value).all()) or bool((value <= 0).any()):
            raise ValueError(f"{name} must be positive and finite everywhere, got minimum {float(value.min())}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number or a tensor, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _per_shot(value, pred: torch.Tensor, shots: torch.Tensor | None, n_data_dims: int):
    """Select the subsampled shots of a per-shot (or per-trace / per-sample) scale shaped like the full data."""
    if not isinstance(value, torch.Tensor):
        return torch.as_tensor(value, dtype=pred.dtype, device=pred.device)
    value = value.to(dtype=pred.dtype, device=pred.device)
    if shots is not None and value.ndim == n_data_dims and value.shape[0] != 1:
        value = value.index_select(0, shots.to(value.device))
    return value


@dataclass(frozen=True)
class Gaussian:
    """Independent Gaussian noise with known standard deviation.

    Parameters
    ----------
    sigma : float or Tensor
        Standard deviation in data units. A tensor must broadcast to the data ``[n_shots, n_receivers, nt]``;
        when it has the data's number of dimensions and its first axis is ``n_shots``, it is subsampled with the shots.
    """

    sigma: float | torch.Tensor

    def __post_init__(self):
        _check_positive("sigma", self.sigma)

    def sample_params(self, like: torch.Tensor) -> dict:
        return {}

    def distribution(self, pred, params, shots, n_data_dims):
        sigma = _per_shot(self.sigma, pred, shots, n_data_dims)
        return dist.Normal(pred, sigma).to_event(n_data_dims - 1)

    def scale(self, params, like, shots=None, n_data_dims=None):
        """The standard deviation used for Gauss-Newton whitening of the residuals."""
        return _per_shot(self.sigma, like, shots, n_data_dims or like.ndim)


@dataclass(frozen=True)
class GaussianLatentSigma:
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
        _check_positive("scale", self.scale)
        if self.prior is not None and not isinstance(self.prior, torch.distributions.Distribution):
            raise TypeError(f"prior must be a torch/pyro Distribution on (0, inf), got {type(self.prior).__name__}")

    def _prior(self, like):
        if self.prior is not None:
            return self.prior
        loc = torch.tensor(math.log(self.scale), dtype=like.dtype, device=like.device)
        return dist.LogNormal(loc, torch.ones_like(loc))

    def sample_params(self, like: torch.Tensor) -> dict:
        return {"sigma": pyro.sample(self.name, self._prior(like))}

    def distribution(self, pred, params, shots, n_data_dims):
        sigma = params["sigma"]
        # a batched sigma (particles, chains) carries a trailing singleton for the shot plate: keep it aligned
        return dist.Normal(pred, sigma.reshape(sigma.shape + (1,) * (n_data_dims - 1))).to_event(n_data_dims - 1)

    def scale_from(self, params):
        return params["sigma"]


@dataclass(frozen=True)
class StudentT:
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
        _check_positive("df", self.df)
        _check_positive("scale", self.scale)

    def sample_params(self, like: torch.Tensor) -> dict:
        return {}

    def distribution(self, pred, params, shots, n_data_dims):
        scale = _per_shot(self.scale, pred, shots, n_data_dims)
        df = torch.as_tensor(self.df, dtype=pred.dtype, device=pred.device)
        return dist.StudentT(df, pred, scale).to_event(n_data_dims - 1)


NoiseModel = Gaussian | GaussianLatentSigma | StudentT
