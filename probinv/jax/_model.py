"""The NumPyro model of the JAX backend: whitened priors, noise models, forward operators and the model builder.

Mirrors :mod:`probinv.models` (same site names ``"<field>_z"`` / ``"<field>"`` / ``"sigma"`` / ``"obs"``, same shapes,
a ``"shots"`` plate with subsampling) so that a posterior of either backend reads the same. The pieces are built from
their PyTorch counterparts (``from_torch``: the prior's Karhunen-Loeve basis, mean and bounds transform are copied as
arrays, so both backends map a latent ``z`` to the same field) and :func:`from_torch_model` converts a whole
:class:`probinv.models.SeismicModel` whose prior(s), forward operator and noise model have JAX versions.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import torch

from .. import fields as _fields
from .. import models as _models
from ..physics import _fd
from ..physics._checks import check_dt
from ..validation import check_int, check_positive
from ._acoustic import _run_prepared
from ._acoustic import acoustic as _acoustic
from ._config import enable_x64

enable_x64()

__all__ = ["AcousticForward", "Gaussian", "GaussianLatentSigma", "NumPyroModel", "WhitenedPrior", "build_model",
           "from_torch_model"]


def _np(x):
    """A numpy array from a torch tensor or anything array-like (float64 kept)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# ----------------------------------------------------------------------------------------------------------------------
# priors


@dataclass(frozen=True, eq=False)
class WhitenedPrior:
    r"""The whitened Gaussian-random-field prior of :class:`probinv.fields.WhitenedField`, as JAX arrays.

    ``field = mean + L z`` with ``L = modes * scales``, then (with bounds) pixel by pixel
    ``lo + (hi - lo) sigmoid(alpha (u - mean) + beta)``: the PyTorch module's formulas on its own buffers. Build it
    with :meth:`from_torch`.

    Attributes
    ----------
    modes : array [nz * nx, K]
    scales : array [K]
    mean_field : array [nz, nx]
    lo, hi, alpha, beta : array [nz, nx] or None
        Bounds and the squashing's slope and offset (None without bounds).
    shape : (int, int)
    dx : float
        Grid spacing in m.
    """

    modes: jax.Array
    scales: jax.Array
    mean_field: jax.Array
    lo: jax.Array | None
    hi: jax.Array | None
    alpha: jax.Array | None
    beta: jax.Array | None
    shape: tuple
    dx: float

    @classmethod
    def from_torch(cls, prior) -> WhitenedPrior:
        """Copy the basis, mean and bounds transform of a :class:`probinv.fields.WhitenedField` (dtype kept)."""
        if not isinstance(prior, _fields.WhitenedField):
            raise TypeError(f"prior must be a probinv.fields.WhitenedField, got {type(prior).__name__}")
        bounded = prior.lo is not None
        return cls(jnp.asarray(_np(prior.modes)), jnp.asarray(_np(prior.scales)), jnp.asarray(_np(prior.mean_field)),
                   *(jnp.asarray(_np(getattr(prior, n))) if bounded else None for n in ("lo", "hi", "_alpha", "_beta")),
                   tuple(prior.shape), float(prior.dx))

    @property
    def latent_dim(self) -> int:
        return int(self.scales.shape[0])

    def __call__(self, z):
        """Field ``[..., nz, nx]`` of the latent ``z[..., K]``."""
        u = (z * self.scales) @ self.modes.T
        u = self.mean_field + u.reshape(z.shape[:-1] + self.shape)
        if self.lo is None:
            return u
        return self.lo + (self.hi - self.lo) * jax.nn.sigmoid(self.alpha * (u - self.mean_field) + self.beta)


# ----------------------------------------------------------------------------------------------------------------------
# noise models


@dataclass(frozen=True, eq=False)
class Gaussian:
    """Independent Gaussian noise with known standard deviation (:class:`probinv.models.Gaussian`).

    ``sigma``: a float, or an array broadcastable to the data ``[n_shots, ...]`` (a per-shot array, with the data's
    number of dimensions and ``n_shots`` first, is subsampled with the shots).
    """

    sigma: float | jax.Array

    def __post_init__(self):
        check_positive("sigma", self.sigma if isinstance(self.sigma, float | int) else torch.from_numpy(
            np.array(self.sigma, dtype=np.float64)))

    def sample_params(self, dtype) -> dict:
        return {}

    def log_prior(self, params) -> jax.Array:
        return jnp.zeros(())

    def _sigma(self, shots, n_data_dims):
        sigma = self.sigma
        if isinstance(sigma, float | int):
            return sigma
        sigma = jnp.asarray(sigma)
        if shots is not None and sigma.ndim == n_data_dims and sigma.shape[0] != 1:
            sigma = sigma[shots]
        return sigma

    def distribution(self, pred, params, shots, n_data_dims):
        return dist.Normal(pred, self._sigma(shots, n_data_dims)).to_event(n_data_dims - 1)

    def log_prob(self, pred, data, params):
        return self.distribution(pred, params, None, data.ndim).log_prob(data).sum(-1)


@dataclass(frozen=True, eq=False)
class GaussianLatentSigma:
    """Gaussian noise with a latent scalar standard deviation ``"sigma"`` (:class:`probinv.models.GaussianLatentSigma`
    with its default hyperprior: log-normal, median ``scale``, log-standard-deviation 1).
    """

    scale: float = 1.0
    name: str = "sigma"

    def __post_init__(self):
        check_positive("scale", self.scale)

    def _prior(self, dtype):
        return dist.LogNormal(jnp.asarray(math.log(self.scale), dtype), jnp.asarray(1.0, dtype))

    def sample_params(self, dtype) -> dict:
        return {"sigma": numpyro.sample(self.name, self._prior(dtype))}

    def log_prior(self, params) -> jax.Array:
        sigma = params["sigma"]
        return self._prior(sigma.dtype).log_prob(sigma).sum()

    def distribution(self, pred, params, shots, n_data_dims):
        return dist.Normal(pred, params["sigma"]).to_event(n_data_dims - 1)

    def log_prob(self, pred, data, params):
        return self.distribution(pred, params, None, data.ndim).log_prob(data).sum(-1)


def noise_from_torch(noise):
    """The JAX version of a built-in PyTorch noise model (Gaussian; GaussianLatentSigma with its default prior)."""
    if isinstance(noise, _models.Gaussian):
        return Gaussian(noise.sigma if isinstance(noise.sigma, float | int) else jnp.asarray(_np(noise.sigma)))
    if isinstance(noise, _models.GaussianLatentSigma):
        if noise.prior is not None:
            raise TypeError("GaussianLatentSigma with a custom prior has no JAX version yet; use the default "
                            "log-normal (scale=...)")
        return GaussianLatentSigma(noise.scale, noise.name)
    raise TypeError(f"noise {type(noise).__name__} has no JAX version; the JAX backend supports probinv.models."
                    f"Gaussian and GaussianLatentSigma")


# ----------------------------------------------------------------------------------------------------------------------
# forward operators


class AcousticForward:
    """Forward operator ``fields -> data`` around :func:`probinv.jax.acoustic` (:class:`probinv.models.
    AcousticForward` in JAX): ``forward(fields, shots=None) -> [n_shots or n_sub, n_receivers, nt]``.

    The geometry is checked and flattened once here; ``shots`` may be traced (the plate's subsample).

    Parameters
    ----------
    dx, dt : float
        Grid spacing (m) and time step (s).
    source_amplitudes : array [n_shots, n_sources, nt]
    source_locations, receiver_locations : int array [n_shots, n, 2]
    shape : (int, int)
        The model grid ``(nz, nx)``.
    velocity : str
        Name of the velocity field.
    options : dict
        ``pml_width``, ``free_surface``, ``accuracy``, ``pml_vmax``, ``checkpoint_every`` (as :func:`probinv.jax.
        acoustic`).
    """

    def __init__(self, dx, dt, source_amplitudes, source_locations, receiver_locations, shape, *, velocity="vp",
                 options: Mapping | None = None):
        self.dx, self.dt, self.velocity = float(dx), float(dt), velocity
        self.options = dict(options or {})
        amp = jnp.asarray(_np(source_amplitudes))
        # a concrete reference model passes the checks that need values; the CFL limit is checked per model below
        v_ref = np.full(tuple(shape), 1.0, dtype=amp.dtype)
        self._amp, self._src, self._rec, self._vmax, self._static = _acoustic(
            v_ref, dx, dt, amp, source_locations, receiver_locations, _prepare_only=True, **self.options)
        self.n_shots = int(self._amp.shape[0])

    @classmethod
    def from_torch(cls, forward, shape) -> AcousticForward:
        """The JAX version of a :class:`probinv.models.AcousticForward` (constant density only)."""
        if not isinstance(forward, _models.AcousticForward):
            raise TypeError(f"forward must be a probinv.models.AcousticForward, got {type(forward).__name__}")
        if forward.density is not None:
            raise ValueError("the JAX acoustic solver is constant-density: forward.density must be None")
        opts = {k: v for k, v in forward.options.items() if k in ("pml_width", "free_surface", "accuracy",
                                                                   "pml_vmax", "checkpoint_every")}
        return cls(forward.dx, forward.dt, forward.source_amplitudes, forward.source_locations,
                   forward.receiver_locations, shape, velocity=forward.velocity, options=opts)

    def __call__(self, fields, shots=None):
        v = fields[self.velocity]
        amp, src, rec = self._amp, self._src, self._rec
        if shots is not None:
            amp, src, rec = amp[shots], src[shots], rec[shots]
        return _run_prepared(v, amp.astype(v.dtype), src, rec, self._vmax, self._static)


# ----------------------------------------------------------------------------------------------------------------------
# the model


class NumPyroModel:
    """A NumPyro model: whitened priors -> forward operator -> noise model, with a plate over shots.

    Call it as a NumPyro model ``model(data=None, *, subsample_size=None, full=False)``. Sites: ``"<field>_z"``
    (``[K]``, standard normal) and the field itself as ``numpyro.deterministic`` (``(nz, nx)``), the noise model's
    sites (``"sigma"``), and ``"obs"`` observed in ``numpyro.plate("shots", n_shots, subsample_size=...)``: the
    forward operator runs on the subsampled shots only and NumPyro scales the subsample's log-likelihood by
    ``n_shots / subsample_size``. Build it with :func:`build_model` or :func:`from_torch_model`.
    """

    def __init__(self, priors: Mapping, forward: Callable, data=None, *, noise, subsample_size: int | None = None,
                 dx: float | None = None, torch_model=None):
        if not isinstance(priors, Mapping) or not priors:
            raise TypeError(f"priors must be a non-empty dict {{field name: WhitenedPrior}}, got {priors!r}")
        for name, p in priors.items():
            if not isinstance(p, WhitenedPrior):
                raise TypeError(f"priors[{name!r}] must be a probinv.jax.WhitenedPrior (WhitenedPrior.from_torch("
                                f"field)), got {type(p).__name__}")
        if not callable(forward):
            raise TypeError(f"forward must be a callable forward(fields, shots=None) -> array, got {forward!r}")
        if not all(callable(getattr(noise, m, None)) for m in ("sample_params", "log_prior", "distribution",
                                                               "log_prob")):
            raise TypeError(f"noise must be a probinv.jax noise model (Gaussian, GaussianLatentSigma), got {noise!r}")
        self.priors = dict(priors)
        self.forward = forward
        self.noise = noise
        self.data = None if data is None else jnp.asarray(_np(data))
        if subsample_size is not None:
            subsample_size = check_int("subsample_size", subsample_size)
            if self.data is not None and subsample_size > self.data.shape[0]:
                raise ValueError(f"subsample_size = {subsample_size} exceeds the number of shots {self.data.shape[0]}")
        self.subsample_size = subsample_size
        self.dx = dx if dx is not None else next(iter(self.priors.values())).dx
        self.torch_model = torch_model

    @property
    def field_names(self) -> tuple:
        return tuple(self.priors)

    @staticmethod
    def latent_site(name: str) -> str:
        return f"{name}_z"

    def fields_from_latents(self, latents: Mapping) -> dict:
        return {name: prior(latents[self.latent_site(name)]) for name, prior in self.priors.items()}

    def __call__(self, data=None, *, subsample_size: int | None = None, full: bool = False):
        data = self.data if data is None else data
        fields = {}
        for name, prior in self.priors.items():
            dtype = prior.modes.dtype
            z = numpyro.sample(self.latent_site(name), dist.Normal(jnp.zeros(prior.latent_dim, dtype),
                                                                    jnp.ones(prior.latent_dim, dtype)).to_event(1))
            fields[name] = numpyro.deterministic(name, prior(z))
        params = self.noise.sample_params(next(iter(self.priors.values())).modes.dtype)
        n_shots = data.shape[0] if data is not None else self.forward.n_shots
        ss = None if full else (self.subsample_size if subsample_size is None else subsample_size)
        with numpyro.plate("shots", n_shots, subsample_size=ss) as idx:
            sub = None if ss is None or ss == n_shots else idx
            pred = self.forward(fields, shots=sub)
            n_data_dims = pred.ndim
            obs = None if data is None else (data if sub is None else data[idx])
            numpyro.sample("obs", self.noise.distribution(pred, params, sub, n_data_dims), obs=obs)
        return pred

    def log_joint(self, latents: Mapping, data=None) -> jax.Array:
        """``log p(latents, data)`` on all shots (the PyTorch ``SeismicModel.log_joint``); latents constrained."""
        data = self.data if data is None else data
        lp = jnp.zeros(())
        for name in self.priors:
            z = latents[self.latent_site(name)]
            lp = lp + (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum()
        params = {"sigma": latents[self.noise.name]} if isinstance(self.noise, GaussianLatentSigma) else {}
        lp = lp + self.noise.log_prior(params)
        pred = self.forward(self.fields_from_latents(latents))
        return lp + self.noise.log_prob(pred, data, params).sum()


def build_model(priors: Mapping, forward: Callable, data=None, *, noise, subsample_size: int | None = None,
                dx: float | None = None) -> NumPyroModel:
    """Combine JAX priors, a JAX forward operator and a JAX noise model into a NumPyro model.

    Parameters
    ----------
    priors : dict[str, WhitenedPrior]
        ``{field name: prior}`` (:meth:`WhitenedPrior.from_torch` of a :class:`probinv.fields.WhitenedField`).
    forward : callable
        ``forward(fields: dict[str, array (nz, nx)], shots=None) -> array [n_shots or n_sub, ...]`` written in JAX
        (:class:`AcousticForward`, or a user's function); with ``shots`` (int indices, possibly traced) it returns
        the subsampled shots only.
    data : array [n_shots, ...], optional
        Observed data (numpy/jax/torch).
    noise : Gaussian or GaussianLatentSigma
    subsample_size : int, optional
        Shots per likelihood evaluation.
    dx : float, optional
        Grid spacing (m) for the posterior's coordinates; default the priors'.

    Returns
    -------
    NumPyroModel
    """
    return NumPyroModel(priors, forward, data, noise=noise, subsample_size=subsample_size, dx=dx)


def from_torch_model(model, forward: Callable | None = None) -> NumPyroModel:
    """The NumPyro twin of a PyTorch :class:`probinv.models.SeismicModel` (same sites, same density).

    Parameters
    ----------
    model : SeismicModel
        Its priors must be :class:`probinv.fields.WhitenedField`, its noise model :class:`probinv.models.Gaussian`
        or :class:`probinv.models.GaussianLatentSigma` (default prior), and its forward operator a
        :class:`probinv.models.AcousticForward` (constant density) unless ``forward`` is given. Regularisers are not
        supported (``ValueError``).
    forward : callable, optional
        A JAX forward operator to use instead of converting ``model.forward`` (e.g. the JAX version of a user's own
        operator).

    Returns
    -------
    NumPyroModel
        With ``torch_model`` set to ``model`` (used by :func:`probinv.jax.nuts` for the Laplace preconditioner).
    """
    if not isinstance(model, _models.SeismicModel):
        raise TypeError(f"model must be a probinv.models.SeismicModel, got {type(model).__name__}")
    if model.regularisers:
        raise ValueError(f"the JAX backend does not support regularisers yet; the model has "
                         f"{[r.name for r in model.regularisers]}")
    noise = noise_from_torch(model.noise)
    priors = {name: WhitenedPrior.from_torch(p) for name, p in model.priors.items()}
    if forward is None:
        shape = next(iter(priors.values())).shape
        forward = AcousticForward.from_torch(model.forward, shape)
        # inside a traced model the solver cannot check the time step against each model: check it here against
        # the prior's upper bound, the fastest model the sampler can propose
        prior = model.priors.get(forward.velocity)
        if prior is not None and prior.hi is not None:
            vmax = float(prior.hi.max())
            acc = forward._static["accuracy"]
            check_dt(forward.dt, _fd.max_stable_dt_second_order(vmax, forward.dx, acc),
                     f"accuracy={acc}, dx = {forward.dx:g} m and the prior's upper bound vmax = {vmax:g} m/s")
    return NumPyroModel(priors, forward, model.data, noise=noise,
                        subsample_size=model.subsample_size, dx=model.dx, torch_model=model)
