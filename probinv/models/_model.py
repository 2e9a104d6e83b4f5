"""The Pyro model around a forward operator: latent fields -> predicted data -> likelihood."""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.utils.checkpoint import checkpoint

from .. import distributed
from ..validation import check_int
from ._noise import check_noise_model

__all__ = ["Flat", "SeismicModel", "build_model", "prior_kind"]


@dataclass(frozen=True)
class Flat:
    """Improper flat prior on an unbounded field of ``shape = (nz, nx)`` (MAP = plain, unconstrained FWI).

    A bounded flat prior is :class:`probinv.fields.BoxField`; both sample the field itself as the Pyro site.
    """

    shape: tuple

    def __post_init__(self):
        shape = tuple(self.shape)
        if len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape):
            raise ValueError(f"shape must be (nz, nx) with positive ints, got {self.shape!r}")


def prior_kind(prior) -> str:
    """Classify a prior: ``"whitened"`` (has ``latent_dim``: the site is ``z ~ N(0, I)``), ``"box"`` (has
    ``latent_shape``: flat inside bounds), ``"flat"`` (:class:`Flat`) or ``"distribution"`` (a Pyro distribution on the
    field itself).
    """
    if isinstance(prior, Flat):
        return "flat"
    if isinstance(prior, torch.distributions.Distribution):
        return "distribution"
    if hasattr(prior, "latent_dim") and callable(prior):
        return "whitened"
    if hasattr(prior, "latent_shape") and callable(prior):
        return "box"
    raise TypeError(f"a prior must be a probinv.fields.WhitenedField, a probinv.fields.BoxField, probinv.models.Flat "
                    f"or a pyro Distribution on the field, got {type(prior).__name__}")


def _box_bounds(prior, dtype, device):
    """(lo, hi) of a BoxField-like prior, as tensors broadcastable to the field."""
    for a, b in (("lo", "hi"), ("low", "high")):
        if hasattr(prior, a) and hasattr(prior, b):
            lo, hi = getattr(prior, a), getattr(prior, b)
            return (torch.as_tensor(lo, dtype=dtype, device=device), torch.as_tensor(hi, dtype=dtype, device=device))
    if hasattr(prior, "bounds"):
        lo, hi = prior.bounds
        return torch.as_tensor(lo, dtype=dtype, device=device), torch.as_tensor(hi, dtype=dtype, device=device)
    # forward(u) = lo + (hi - lo) sigmoid(u): the limits u -> -inf, +inf give the bounds exactly
    shape = tuple(prior.latent_shape)
    lo = prior(torch.full(shape, -math.inf, dtype=dtype, device=device))
    hi = prior(torch.full(shape, math.inf, dtype=dtype, device=device))
    return lo.detach(), hi.detach()


def _accepts_shots(forward) -> bool:
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False
    return "shots" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class SeismicModel:
    """A Pyro model: latent fields (priors) -> forward operator -> noise model, with a plate over shots.

    Call it as a Pyro model: ``model(data=None, *, shots=None, subsample_size=None, full=False)`` (``full=True``
    ignores any subsampling). It records each field with
    ``pyro.deterministic`` (whitened priors) or samples it directly (flat / box priors) under the field's name, adds
    the regularisers with ``pyro.factor``, and observes ``data[shots]`` in ``pyro.plate("shots", n_shots,
    subsample_size=...)``; the forward operator is evaluated on the subsampled shots only, and Pyro scales the
    subsample's log-likelihood by ``n_shots / subsample_size`` so that the mini-batch likelihood is unbiased.
    With ``chunk_size`` set, or under a process group (``shard``), the observation site ``"obs"`` scores the observed
    data with the per-shot log-likelihood of :meth:`shot_log_likelihood` (chunked, checkpointed, all-reduced) and the
    call returns None instead of the predicted data; without data (prior predictive) it takes the ordinary path.

    Latent sites: ``"<field>_z"`` (shape ``[latent_dim]``, standard normal) for whitened priors; ``"<field>"`` itself
    (shape ``(nz, nx)``) for flat/box/distribution priors; the noise model's own sites (``"sigma"`` for
    :class:`GaussianLatentSigma`).

    Build it with :func:`build_model`; see its docstring for the parameters.
    """

    def __init__(self, priors, forward, data=None, *, noise=None, subsample_size=None, regularisers=(), dx=None,
                 vectorized=True, chunk_size=None, shard=True):
        if not isinstance(priors, Mapping) or not priors:
            raise TypeError(f"priors must be a non-empty dict {{field name: prior}}, got {type(priors).__name__}")
        self.priors = dict(priors)
        self.kinds = {name: prior_kind(p) for name, p in self.priors.items()}
        if not callable(forward):
            raise TypeError(f"forward must be a callable forward(fields: dict) -> Tensor, got {type(forward).__name__}")
        self.forward = forward
        self._forward_takes_shots = _accepts_shots(forward)
        if data is not None:
            if not isinstance(data, torch.Tensor) or not data.is_floating_point() or data.ndim < 1:
                raise TypeError(f"data must be a floating tensor [n_shots, ...], got "
                                f"{type(data).__name__}{'' if not isinstance(data, torch.Tensor) else data.dtype}")
            if not bool(torch.isfinite(data).all()):
                raise ValueError("data must be finite everywhere")
        self.data = data
        if noise is None:
            raise ValueError("noise must be given: probinv.models.Gaussian(sigma), GaussianLatentSigma(...), "
                             "StudentT(df, scale) or CorrelatedGaussian(cov_factor, cov_diag, loc)")
        check_noise_model(noise)
        self.noise = noise
        check_data = getattr(noise, "check_data", None)
        if data is not None and callable(check_data):
            check_data(data)
        if subsample_size is not None:
            subsample_size = check_int("subsample_size", subsample_size)
        if subsample_size is not None and data is not None and subsample_size > data.shape[0]:
            raise ValueError(f"subsample_size = {subsample_size} exceeds the number of shots {data.shape[0]}")
        self.subsample_size = subsample_size
        self.regularisers = tuple(regularisers)
        for reg in self.regularisers:
            if not callable(reg) or not hasattr(reg, "name"):
                raise TypeError(f"each regulariser must be callable(fields) -> log-density with a .name, got {reg!r}")
        if dx is None:
            dx = next((float(p.dx) for p in self.priors.values() if hasattr(p, "dx")), None)
        if dx is not None and (not math.isfinite(float(dx)) or float(dx) <= 0):
            raise ValueError(f"dx must be a positive grid spacing in metres, got {dx!r}")
        self.dx = None if dx is None else float(dx)
        self.vectorized = bool(vectorized)
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size)
        if not isinstance(shard, bool):
            raise TypeError(f"shard must be True or False, got {shard!r}")
        self.shard = shard

    # ------------------------------------------------------------------ chunked / sharded likelihood
    def _split(self) -> bool:
        """Whether the likelihood goes through :meth:`shot_log_likelihood`'s chunks and shards (else one call)."""
        return self.chunk_size is not None or (self.shard and distributed.sharding())

    def shot_log_likelihood(self, fields: Mapping[str, torch.Tensor], data: torch.Tensor, params: Mapping,
                            shots: torch.Tensor | None = None) -> torch.Tensor:
        """Log-likelihood of each shot ``[*batch, n_sub]``, evaluated in chunks and, under a process group, in shards.

        The shots ``shots`` (int64 indices; None = all) are split into contiguous blocks, one per rank
        (:func:`probinv.distributed.shard`; when ``shard`` is on and a group of > 1 ranks is initialised), and each
        rank's block into chunks of ``chunk_size`` shots. Each chunk's forward and log-density (the noise model's
        :meth:`~probinv.models.NoiseModel.distribution` on the chunk's shot indices) runs under
        :func:`torch.utils.checkpoint.checkpoint` when gradients are on, so only one chunk's solver graph is alive
        during backward. The per-shot values of the ranks are summed (:func:`probinv.distributed.all_reduce_sum`) and
        the fields and noise parameters enter through :func:`probinv.distributed.replicate`, so every rank gets the
        whole value and gradient. ``fields`` as in the Pyro model (a trailing singleton batch axis is dropped).
        """
        n_data_dims = data.ndim
        positions = (torch.arange(data.shape[0], device=data.device) if shots is None
                     else shots.to(data.device))
        n_sub = int(positions.shape[0])
        sharded = self.shard and distributed.sharding()
        block = distributed.shard(n_sub) if sharded else range(n_sub)
        names = list(fields)
        pnames = [k for k, v in params.items() if isinstance(v, torch.Tensor)]
        tensors = [fields[k] for k in names] + [params[k] for k in pnames]
        if sharded:
            tensors = list(distributed.replicate(*tensors))
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)

        def chunk_loglik(idx, *ts):
            f = dict(zip(names, ts[:len(names)], strict=True))
            p = {**params, **dict(zip(pnames, ts[len(names):], strict=True))}
            pred = self._predict_plate(f, idx)
            obs = data.index_select(0, idx)
            return self.noise.distribution(pred, p, idx, n_data_dims).log_prob(obs)

        size = len(block) if self.chunk_size is None else self.chunk_size
        parts = []
        for a in range(block.start, block.stop, max(size, 1)):
            idx = positions[a:min(a + size, block.stop)]
            if grad and len(block) > size:  # one chunk of the whole block: nothing to gain from recomputing
                parts.append(checkpoint(chunk_loglik, idx, *tensors, use_reentrant=False))
            else:
                parts.append(chunk_loglik(idx, *tensors))
        if not sharded:
            return torch.cat(parts, dim=-1)
        batch = tuple(self._outer_batch(fields))
        zeros = tensors[0].new_zeros
        before, after = zeros(batch + (block.start,)), zeros(batch + (n_sub - block.stop,))
        local = torch.cat([before, *parts, after], dim=-1) if parts else torch.cat([before, after], dim=-1)
        if not parts and grad:
            # a rank without shots must still run the backward's collective: tie its zeros to the inputs
            local = local + 0.0 * sum(t.sum() for t in tensors if t.requires_grad)
        return distributed.all_reduce_sum(local)

    def _outer_batch(self, fields) -> tuple:
        batch = tuple(next(iter(fields.values())).shape[:-2])
        return batch[:-1] if batch and batch[-1] == 1 else batch

    # ------------------------------------------------------------------ helpers used by inference
    @property
    def field_names(self) -> tuple:
        return tuple(self.priors)

    def latent_site(self, name: str) -> str:
        """The Pyro site holding the latent variable of field ``name``."""
        return f"{name}_z" if self.kinds[name] == "whitened" else name

    def fields_from_latents(self, latents: Mapping[str, torch.Tensor]) -> dict:
        """Map latent site values (constrained space) to fields ``{name: Tensor[..., nz, nx]}``."""
        out = {}
        for name, prior in self.priors.items():
            value = latents[self.latent_site(name)]
            out[name] = prior(value) if self.kinds[name] == "whitened" else value
        return out

    def predict(self, fields: Mapping[str, torch.Tensor], shots: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted data for ``fields`` (each ``[*batch, nz, nx]``) on ``shots`` (indices; None = all).

        Returns ``[*batch, n_sub, ...]``. The forward operator receives ``shots=`` when its signature accepts it;
        otherwise it runs on all shots and the subsample is selected afterwards.
        """
        first = next(iter(fields.values()))
        batch = tuple(first.shape[:-2])
        flat = {k: (v.reshape((-1,) + tuple(v.shape[-2:])) if batch else v) for k, v in fields.items()}
        if batch and not self.vectorized:
            n = math.prod(batch)
            pred = torch.stack([self._call_forward({k: v[i] for k, v in flat.items()}, shots) for i in range(n)])
        else:
            pred = self._call_forward(flat, shots)
        if batch:
            pred = pred.reshape(batch + tuple(pred.shape[1:]))
        return pred

    def _call_forward(self, fields, shots):
        if shots is not None and self._forward_takes_shots:
            return self.forward(fields, shots=shots)
        pred = self.forward(fields)
        if shots is not None:
            shot_axis = 1 if next(iter(fields.values())).ndim == 3 else 0
            pred = pred.index_select(shot_axis, shots.to(pred.device))
        return pred

    def _sample_fields(self, like: torch.Tensor | None):
        fields = {}
        for name, prior in self.priors.items():
            kind = self.kinds[name]
            if kind == "whitened":
                ref = prior(torch.zeros(int(prior.latent_dim), dtype=_dtype_of(prior, like),
                                        device=_device_of(prior, like)))
                zeros = torch.zeros(int(prior.latent_dim), dtype=ref.dtype, device=ref.device)
                z = pyro.sample(self.latent_site(name), dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
                fields[name] = pyro.deterministic(name, prior(z), event_dim=2)
            elif kind == "box":
                dtype, device = _dtype_of(prior, like), _device_of(prior, like)
                lo, hi = _box_bounds(prior, dtype, device)
                shape = torch.broadcast_shapes(lo.shape, hi.shape, tuple(prior.latent_shape))
                lo, hi = lo.expand(shape), hi.expand(shape)
                fields[name] = pyro.sample(name, dist.ImproperUniform(constraints.interval(lo, hi), (), shape))
            elif kind == "flat":
                fields[name] = pyro.sample(name, dist.ImproperUniform(constraints.real, (), tuple(prior.shape)))
            else:
                fields[name] = pyro.sample(name, prior)
        return fields

    # ------------------------------------------------------------------ the Pyro model
    def __call__(self, data: torch.Tensor | None = None, *, shots: torch.Tensor | None = None,
                 subsample_size: int | None = None, full: bool = False):
        data = self.data if data is None else data
        fields = self._sample_fields(data)
        for reg in self.regularisers:
            value = reg(fields)
            batch = next(iter(fields.values())).shape[:-2]
            pyro.factor(reg.name, value.reshape(batch) if batch else value)
        params = self.noise.sample_params(next(iter(fields.values())))
        if data is None:
            n_shots = self._n_shots_from_forward(fields)
            n_data_dims = None
        else:
            n_shots, n_data_dims = data.shape[0], data.ndim
        ss = self.subsample_size if subsample_size is None else subsample_size
        if full:  # the inference layer's full-data evaluations (Laplace, NUTS potential)
            ss, shots = None, None
        with pyro.plate("shots", n_shots, subsample_size=ss if shots is None else None, subsample=shots,
                        dim=-1) as idx:
            sub = None if (ss is None and shots is None) else idx
            if data is not None and self._split():
                obs = data if sub is None else data.index_select(0, idx.to(data.device))
                lp = self.shot_log_likelihood(fields, data, params, sub)
                pyro.sample("obs", _ShotLogLikelihood(lp, tuple(data.shape[1:])), obs=obs)
                return None
            pred = self._predict_plate(fields, sub)
            if n_data_dims is None:
                n_data_dims = pred.ndim - self._outer_batch_ndim(fields)
            obs = None if data is None else (data if sub is None else data.index_select(0, idx.to(data.device)))
            pyro.sample("obs", self.noise.distribution(pred, params, sub, n_data_dims), obs=obs)
        return pred

    def _outer_batch_ndim(self, fields) -> int:
        batch = tuple(next(iter(fields.values())).shape[:-2])
        return len(batch) - 1 if batch and batch[-1] == 1 else len(batch)

    def _predict_plate(self, fields, shots):
        # Global latents inside vectorising plates (particles, num_samples) carry a trailing singleton in the shot
        # plate's slot (dim -1): drop it so that the shots land in dim -1 of the likelihood's batch shape.
        batch = tuple(next(iter(fields.values())).shape[:-2])
        if batch and batch[-1] == 1:
            fields = {k: v.squeeze(-3) for k, v in fields.items()}
        return self.predict(fields, shots)

    def _n_shots_from_forward(self, fields) -> int:
        with torch.no_grad():
            one = {k: v.reshape((-1,) + tuple(v.shape[-2:]))[0] for k, v in fields.items()}
            return int(self.predict(one).shape[0])

    def log_joint(self, latents: Mapping[str, torch.Tensor], data: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(latents, data)`` on all shots, computed directly (no Pyro tracing: the fast path of the samplers).

        Equals the log density of a full-data trace of the Pyro model (tested); ``latents`` are the latent sites'
        constrained values (unbatched).
        """
        data = self.data if data is None else data
        lp = data.new_zeros(())
        for name, prior in self.priors.items():
            kind, value = self.kinds[name], latents[self.latent_site(name)]
            if kind == "whitened":
                lp = lp + (-0.5 * value**2 - 0.5 * math.log(2 * math.pi)).sum()
            elif kind == "distribution":
                lp = lp + prior.log_prob(value).sum()
        fields = self.fields_from_latents(latents)
        for reg in self.regularisers:
            lp = lp + reg(fields)
        params = self.noise.params_from_latents(latents)
        lp = lp + self.noise.log_prior(params, data)
        if self._split():
            return lp + self.shot_log_likelihood(fields, data, params).sum()
        pred = self.predict(fields)
        return lp + self.noise.log_prob(pred, data, params).sum()

    def log_likelihood(self, fields: Mapping[str, torch.Tensor], data: torch.Tensor | None = None,
                       noise_params: Mapping | None = None) -> torch.Tensor:
        """Full-data log-likelihood ``log p(data | fields)`` (all shots), batch shape ``fields`` batch.

        In chunks of ``chunk_size`` shots and sharded over the ranks of a process group when the model says so
        (:meth:`shot_log_likelihood`).
        """
        data = self.data if data is None else data
        if self._split():
            return self.shot_log_likelihood(fields, data, dict(noise_params or {})).sum(-1)
        pred = self.predict(fields)
        return self.noise.log_prob(pred, data, dict(noise_params or {}))


class _ShotLogLikelihood(dist.TorchDistribution):
    """The observation site of a chunked / sharded likelihood: its log-density of the observed data is the per-shot
    log-likelihood ``[*batch, n_sub]`` computed beforehand (:meth:`SeismicModel.shot_log_likelihood`); it cannot
    sample (the model takes the ordinary path when no data are observed).
    """

    arg_constraints = {}

    def __init__(self, log_likelihood, event_shape, validate_args=None):
        self.lp = log_likelihood
        super().__init__(log_likelihood.shape, torch.Size(event_shape), validate_args=False)

    @property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def log_prob(self, value):
        return self.lp

    def sample(self, sample_shape=()):
        raise NotImplementedError("a chunked / sharded observation site only scores the observed data")

    def expand(self, batch_shape, _instance=None):
        return _ShotLogLikelihood(self.lp.expand(torch.Size(batch_shape)), self.event_shape)


def _dtype_of(prior, like):
    for b in getattr(prior, "buffers", lambda: [])():
        if b.is_floating_point():
            return b.dtype
    return like.dtype if like is not None else torch.get_default_dtype()


def _device_of(prior, like):
    for b in getattr(prior, "buffers", lambda: [])():
        return b.device
    return like.device if like is not None else torch.device("cpu")


def build_model(priors: Mapping, forward: Callable, data: torch.Tensor | None = None, *, noise,
                subsample_size: int | None = None, regularisers: Sequence = (), dx: float | None = None,
                vectorized: bool = True, chunk_size: int | None = None, shard: bool = True) -> SeismicModel:
    """Combine field priors, a forward operator and a noise model into a Pyro model.

    Parameters
    ----------
    priors : dict[str, prior]
        ``{field name: prior}`` with names such as ``"vp"``, ``"vs"``, ``"rho"``, ``"q"``. A prior is a
        :class:`probinv.fields.WhitenedField` (latent site ``"<name>_z" ~ N(0, I)``, the field recorded with
        ``pyro.deterministic`` under ``name``), a :class:`probinv.fields.BoxField` (flat prior inside its bounds, the
        field itself is the site), :class:`Flat` (improper flat, unbounded) or any Pyro distribution on the
        ``(nz, nx)`` field.
    forward : callable
        ``forward(fields: dict[str, Tensor]) -> Tensor[n_shots, ...]`` (DESIGN.md section 4); fields are
        ``(nz, nx)`` or a batch ``(batch, nz, nx)`` giving ``[batch, n_shots, ...]``. If it accepts a keyword
        ``shots`` (int64 indices), it is called with the subsampled shots only and must return ``[n_sub, ...]``
        (``[batch, n_sub, ...]``); otherwise all shots are computed and the subsample selected afterwards.
    data : Tensor, optional
        Observed data ``[n_shots, ...]`` (e.g. ``[n_shots, n_receivers, nt]``), same units as ``forward``'s output.
        The inference functions also take the data; it may then be omitted here.
    noise : NoiseModel
        Any object satisfying the :class:`NoiseModel` protocol: the built-in :class:`Gaussian`,
        :class:`GaussianLatentSigma`, :class:`StudentT`, :class:`CorrelatedGaussian` (:func:`approximation_error`
        builds one for a surrogate forward operator) or a user's own class. ``TypeError`` names missing methods.
    subsample_size : int, optional
        Number of shots per likelihood evaluation (mini-batch; unbiased through Pyro's plate scaling).
    regularisers : sequence
        Extra log-density terms, e.g. :class:`TotalVariation`, :class:`Smoothness` (``pyro.factor`` sites).
    dx : float, optional
        Grid spacing (m) for coordinates of the results; default: the priors' ``dx``.
    vectorized : bool
        Whether ``forward`` accepts a batch of fields. If False, batches are looped over.
    chunk_size : int, optional
        Evaluate the likelihood (Pyro observation site, :meth:`SeismicModel.log_joint`, ``log_likelihood`` and the
        Gauss-Newton products of :func:`probinv.inference.laplace`) in chunks of this many shots, each recomputed in
        backward (:func:`torch.utils.checkpoint.checkpoint`): peak memory follows the chunk, not the survey, for one
        more forward per chunk and gradient. The value equals the unchunked one to rounding. Needs a forward operator
        that accepts ``shots=`` to save work (others compute every shot per chunk).
    shard : bool
        Under ``torchrun`` (an initialised process group of > 1 ranks, :mod:`probinv.distributed`), let each rank
        propagate its own block of the shots and all-reduce the log-likelihood and its gradient, so that every rank
        holds the whole value (default). False: every rank evaluates all shots itself.

    Returns
    -------
    SeismicModel
    """
    return SeismicModel(priors, forward, data, noise=noise, subsample_size=subsample_size,
                        regularisers=regularisers, dx=dx, vectorized=vectorized, chunk_size=chunk_size, shard=shard)
