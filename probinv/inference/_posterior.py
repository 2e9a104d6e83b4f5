"""The ``Posterior`` result object, its ArviZ conversion and its NetCDF (netCDF4) round trip."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import netCDF4
import numpy as np
import pyro
import torch

from .. import diagnostics
from .._files import atomic_path
from .._version import __version__

__all__ = ["LowRankGaussian", "Posterior"]


class LowRankGaussian(NamedTuple):
    r"""A Gaussian in the whitened latent space with a low-rank update of the identity covariance.

    .. math:: C = I - V \operatorname{diag}\left(\frac{\lambda}{1 + \lambda}\right) V^T, \quad
              C^{1/2} = I - V \operatorname{diag}\left(1 - \frac{1}{\sqrt{1 + \lambda}}\right) V^T

    ``loc [n]``, ``eigvecs V [n, r]`` (orthonormal columns), ``eigvals lambda [r]`` (>= 0, the prior-preconditioned
    misfit Hessian's eigenvalues). The coordinates are whitened, so the prior covariance is the identity.
    """

    loc: torch.Tensor
    eigvecs: torch.Tensor
    eigvals: torch.Tensor

    def covariance(self) -> torch.Tensor:
        v, lam = self.eigvecs, self.eigvals
        eye = torch.eye(self.loc.shape[-1], dtype=self.loc.dtype, device=self.loc.device)
        return eye - (v * (lam / (1 + lam))) @ v.T

    def sqrt_matvec(self, w: torch.Tensor) -> torch.Tensor:
        """``C^{1/2} w`` for ``w[..., n]`` (symmetric square root)."""
        d = 1 - torch.rsqrt(1 + self.eigvals)
        return w - ((w @ self.eigvecs) * d) @ self.eigvecs.T

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        w = torch.randn((n, self.loc.shape[-1]), dtype=self.loc.dtype, device=self.loc.device, generator=generator)
        return self.loc + self.sqrt_matvec(w)

    def std(self) -> torch.Tensor:
        return torch.sqrt(torch.clamp(1 - ((self.eigvecs**2) * (self.eigvals / (1 + self.eigvals))).sum(-1), min=0))


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class Posterior:
    """Samples (and summaries) of a posterior over fields.

    Parameters
    ----------
    samples : dict[str, Tensor]
        ``{name: Tensor[chain, draw, ...]}``: the fields (``[chain, draw, nz, nx]``, SI units) and the latent sites.
    field_names : sequence of str
        Which entries of ``samples`` are fields on the grid (dims ``z, x``).
    method : str
        ``"map"``, ``"laplace"``, ``"svi"``, ``"svgd"`` or ``"nuts"``.
    dx : float, optional
        Grid spacing (m) for the ``z``/``x`` coordinates (cell centres at ``i * dx``).
    sample_stats : dict[str, Tensor], optional
        Per-draw statistics ``[chain, draw]`` (e.g. ``diverging``, ``tree_depth``, ``step_size``, ``acceptance_rate``,
        ``n_steps``, ``lp``).
    observed_data : Tensor, optional
        The data ``[n_shots, n_receivers, nt]`` (or any shape with shots first).
    posterior_predictive : Tensor, optional
        Predicted data per draw ``[chain, draw, *observed_data.shape]``.
    gaussian : LowRankGaussian, optional
        The Laplace approximation in whitened latent coordinates (``laplace`` and preconditioned ``nuts``).
    attrs : dict, optional
        Provenance: configuration, timings, gradient counts (JSON-serialisable values). The inference functions store
        ``attrs["forward"]``, the forward operator's ``describe()`` as a JSON string (or ``{"type": name}`` for an
        operator without it).
    dt : float, optional
        Time sampling (s) of the data, for the ``time`` coordinate.
    discarded_variance : dict[str, Tensor], optional
        ``{field: Tensor[nz, nx]}``, the variance (field units squared) of the prior modes a truncated whitened prior
        discards (:class:`probinv.fields.WhitenedField`); see :meth:`add_discarded_variance`.

    Notes
    -----
    **Discarded prior variance.** A whitened prior keeps only its leading Karhunen-Loeve modes; the posterior of the
    discarded modes is their prior (the truncated model never sees them), independent of the kept ones. The draws in
    ``samples`` are of the kept part only (they are what the sampler produced; the chain diagnostics use them). Every
    uncertainty this object reports adds the discarded part:

    * :meth:`std` returns ``sqrt(var(draws) + discarded_variance)`` (``discarded=False`` for the kept part only);
    * :meth:`field_draws` returns ``draws + sqrt(discarded_variance) * eps`` with ``eps ~ N(0, 1)`` independent per
      draw and pixel (fixed seed 0, so repeated calls agree): exact draws of each pixel's marginal (the pixels'
      mutual correlation in the discarded part is not reproduced); :meth:`quantile`, :meth:`credible_interval`,
      the coverage of :func:`probinv.diagnostics.verdict` and the ``posterior`` group of :meth:`to_arviz` use them.

    The discarded variance of a bounded prior is in field units through the linearised bounds map at the posterior
    mean (:meth:`probinv.fields.WhitenedField.discarded_variance_at`). A MAP result (one point) carries none.
    """

    def __init__(self, samples: Mapping[str, torch.Tensor], *, field_names: Sequence[str], method: str,
                 dx: float | None = None, sample_stats: Mapping | None = None,
                 observed_data: torch.Tensor | None = None, posterior_predictive: torch.Tensor | None = None,
                 gaussian: LowRankGaussian | None = None, attrs: Mapping | None = None, dt: float | None = None,
                 discarded_variance: Mapping[str, torch.Tensor] | None = None):
        self.samples = {k: v.detach() for k, v in samples.items()}
        for k, v in self.samples.items():
            if v.ndim < 2:
                raise ValueError(f"samples[{k!r}] must be shaped [chain, draw, ...], got {tuple(v.shape)}")
        missing = [f for f in field_names if f not in self.samples]
        if missing:
            raise ValueError(f"field_names {missing} have no samples; sample names are {sorted(self.samples)}")
        self.field_names = tuple(field_names)
        self.method = str(method)
        self.dx = None if dx is None else float(dx)
        self.dt = None if dt is None else float(dt)
        self.sample_stats = {k: v.detach() for k, v in (sample_stats or {}).items()}
        self.observed_data = None if observed_data is None else observed_data.detach()
        self.posterior_predictive = None if posterior_predictive is None else posterior_predictive.detach()
        self.gaussian = gaussian
        self.attrs = dict(attrs or {})
        self.discarded_variance = {}
        self.log_likelihood = None  # [chain, draw, shot], add_log_likelihood
        self.prior_samples = {}  # {name: [1, draw, ...]}, add_prior
        self._field_draws = {}
        for name, var in (discarded_variance or {}).items():
            self._set_discarded(name, var)

    def _set_discarded(self, name: str, var: torch.Tensor) -> None:
        if name not in self.field_names:
            raise ValueError(f"discarded_variance names {name!r}, not a field; fields are {list(self.field_names)}")
        var = torch.as_tensor(var).detach()
        if tuple(var.shape) != tuple(self.samples[name].shape[2:]):
            raise ValueError(f"discarded_variance[{name!r}] must be shaped like the field "
                             f"{tuple(self.samples[name].shape[2:])}, got {tuple(var.shape)}")
        self.discarded_variance[name] = var.to(self.samples[name].dtype).clamp_min(0.0)
        self._field_draws.pop(name, None)

    def add_discarded_variance(self, model) -> dict:
        """Attach the discarded-mode variance of every truncated whitened prior of ``model`` (a SeismicModel).

        For each field whose prior has ``discarded_variance_at`` (:class:`probinv.fields.WhitenedField`), the
        per-pixel variance in field units at the posterior mean is stored in :attr:`discarded_variance` (see the
        class notes); fields whose prior keeps every mode get zeros. Returns :attr:`discarded_variance`.
        """
        for name in self.field_names:
            prior = model.priors.get(name)
            if callable(getattr(prior, "discarded_variance_at", None)):
                with torch.no_grad():
                    mean = self.mean(name).to(prior.discarded_variance)
                    var = prior.discarded_variance_at(mean)
                self._set_discarded(name, var.to(self.samples[name].device))
                frac = getattr(prior, "retained_fraction", None)
                if frac is not None:
                    self.attrs.setdefault("retained_variance", {})[name] = float(frac)
        return self.discarded_variance

    # ------------------------------------------------------------------ summaries
    def __repr__(self):
        shapes = ", ".join(f"{k}{tuple(v.shape[2:])}" for k, v in self.samples.items())
        return f"Posterior(method={self.method!r}, chains={self.num_chains}, draws={self.num_draws}, {shapes})"

    @property
    def num_chains(self) -> int:
        return int(next(iter(self.samples.values())).shape[0])

    @property
    def num_draws(self) -> int:
        return int(next(iter(self.samples.values())).shape[1])

    def _get(self, name: str) -> torch.Tensor:
        if name not in self.samples:
            raise KeyError(f"no samples named {name!r}; available: {sorted(self.samples)}")
        return self.samples[name]

    def draws(self, name: str) -> torch.Tensor:
        """All draws of ``name`` with chains pooled: ``[chain * draw, ...]``."""
        x = self._get(name)
        return x.reshape((-1,) + tuple(x.shape[2:]))

    def field_draws(self, name: str) -> torch.Tensor:
        """Draws of ``name`` with chains pooled ``[chain * draw, ...]``, the discarded prior variance included.

        ``draws(name) + sqrt(discarded_variance) * eps``, ``eps ~ N(0, 1)`` per draw and pixel from a generator
        seeded 0 (cached: repeated calls return the same tensor); equal to :meth:`draws` when nothing is discarded.
        """
        x = self.draws(name)
        var = self.discarded_variance.get(name)
        if var is None or x.shape[0] < 2:
            return x
        if name not in self._field_draws:
            gen = torch.Generator(device="cpu").manual_seed(0)
            eps = torch.randn(tuple(x.shape), generator=gen, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
            self._field_draws[name] = x + var.to(x.device).sqrt() * eps
        return self._field_draws[name]

    def mean(self, name: str) -> torch.Tensor:
        """Posterior mean of ``name`` (e.g. ``(nz, nx)`` in m/s for ``"vp"``)."""
        return self.draws(name).mean(0)

    def std(self, name: str, *, discarded: bool = True) -> torch.Tensor:
        """Posterior standard deviation of ``name`` (0 for a single draw, e.g. MAP).

        ``sqrt(var(draws) + discarded_variance)``: the discarded modes of a truncated prior are included unless
        ``discarded=False`` (the kept modes only).
        """
        x = self.draws(name)
        if x.shape[0] < 2:
            return torch.zeros_like(x[0])
        var = x.var(0, unbiased=True)
        if discarded and name in self.discarded_variance:
            var = var + self.discarded_variance[name].to(var)
        return var.sqrt()

    def quantile(self, name: str, q) -> torch.Tensor:
        """Quantiles ``q`` (float or sequence in [0, 1]) over all draws; shape ``[len(q), ...]`` for a sequence.

        Of :meth:`field_draws` (the discarded prior variance included).
        """
        x = self.field_draws(name)
        qt = torch.as_tensor(q, dtype=x.dtype, device=x.device)
        if bool(((qt < 0) | (qt > 1)).any()):
            raise ValueError(f"q must lie in [0, 1], got {q!r}")
        return torch.quantile(x, qt, dim=0)

    def credible_interval(self, name: str, prob: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Equal-tailed credible interval ``(lower, upper)`` holding probability ``prob``."""
        if not 0 < prob < 1:
            raise ValueError(f"prob must lie in (0, 1), got {prob!r}")
        lo, hi = self.quantile(name, [(1 - prob) / 2, (1 + prob) / 2])
        return lo, hi

    def ci_width(self, name: str, prob: float = 0.9) -> torch.Tensor:
        """Width of the equal-tailed ``prob`` credible interval (same units as the field)."""
        lo, hi = self.credible_interval(name, prob)
        return hi - lo

    def summary(self, var_names: Sequence[str] | None = None, *, model=None, truth: Mapping | None = None,
                warn: bool = True, **kwargs):
        """ArviZ summary table (pandas DataFrame): mean, sd, HDI, MCSE, ESS, r-hat per scalar entry.

        The posterior's :meth:`verdict` (with ``model`` and ``truth`` when given) is attached as
        ``table.attrs["verdict"]`` (a :class:`probinv.diagnostics.Verdict`), and each failed check is issued as a
        ``UserWarning`` when ``warn``.
        """
        table = diagnostics.summary(self.to_arviz(), var_names=var_names, **kwargs)
        v = self.verdict(model=model, truth=truth, warn=warn)
        table.attrs["verdict"] = v
        return table

    def verdict(self, model=None, truth: Mapping | None = None, *, warn: bool = False, **kwargs):
        """Whether to trust this posterior: :func:`probinv.diagnostics.verdict` of it (see there)."""
        return diagnostics.verdict(self, model=model, truth=truth, warn=warn, **kwargs)

    # ------------------------------------------------------------------ ArviZ
    def _coords_dims(self):
        coords, dims = {}, {}
        for name, v in self.samples.items():
            if name in self.field_names:
                nz, nx = v.shape[-2:]
                step = self.dx if self.dx is not None else 1.0
                coords["z"] = np.arange(nz) * step
                coords["x"] = np.arange(nx) * step
                dims[name] = ["z", "x"]
            else:
                dims[name] = [f"{name}_dim_{i}" for i in range(v.ndim - 2)]
        if self.observed_data is not None:
            od = self.observed_data
            names = ["shot", "receiver", "time"] if od.ndim == 3 else [f"obs_dim_{i}" for i in range(od.ndim)]
            dims["obs"] = names
            if od.ndim == 3:
                coords["shot"] = np.arange(od.shape[0])
                coords["receiver"] = np.arange(od.shape[1])
                coords["time"] = np.arange(od.shape[2]) * (self.dt if self.dt is not None else 1.0)
        return coords, dims

    def to_arviz(self, posterior_predictive: bool = False, *, discarded: bool = True):
        """ArviZ object (dims ``chain, draw, z, x`` with coordinates in metres, ``sample_stats``,
        ``observed_data``, and ``posterior_predictive`` when asked and available).

        The ``posterior`` group's fields are :meth:`field_draws` (the discarded prior variance included, so that
        ArviZ's sd and HDI are honest) unless ``discarded=False``; :func:`probinv.diagnostics.verdict` computes r-hat
        and ESS from the raw draws. A ``log_likelihood`` group (``obs``, dims ``chain, draw, shot``: the
        log-likelihood of each shot's data) is added when :meth:`add_log_likelihood` was called, so that
        ``az.loo`` / ``az.compare`` rank priors and noise models; a ``prior`` group when :meth:`add_prior` was.
        """
        coords, dims = self._coords_dims()
        if posterior_predictive and self.posterior_predictive is None:
            raise ValueError("this Posterior has no posterior predictive draws: pass posterior_predictive=True to "
                             "the inference function (or call add_posterior_predictive(model))")
        attrs = {"method": self.method, "probinv_version": __version__}
        if self.dx is not None:
            attrs["dx_m"] = self.dx
        samples = dict(self.samples)
        if discarded:
            for name in self.discarded_variance:
                samples[name] = self.field_draws(name).reshape(self.samples[name].shape)
        ll = None
        if self.log_likelihood is not None:
            ll = {"obs": self.log_likelihood}
            coords.setdefault("shot", np.arange(self.log_likelihood.shape[-1]))
        return diagnostics.to_arviz_dataset(
            samples, sample_stats=self.sample_stats or None, log_likelihood=ll,
            prior=self.prior_samples or None,
            observed_data=None if self.observed_data is None else {"obs": self.observed_data},
            posterior_predictive={"obs": self.posterior_predictive} if posterior_predictive else None,
            coords=coords, dims=dims, attrs=attrs)

    def add_posterior_predictive(self, model, max_draws: int | None = None, *, noise: bool = False,
                                 seed: int = 0) -> torch.Tensor:
        """Evaluate ``model.predict`` on the field draws, store and return it ``[chain, draw, *data_shape]``.

        ``max_draws`` keeps the last draws of each chain only. ``noise=False``: the noise-free predicted data;
        ``noise=True``: replicated data ``d_rep ~ p(d | fields, noise parameters)`` drawn from the model's noise model
        with each draw's own noise parameters (e.g. a latent sigma), the posterior predictive distribution that
        posterior predictive checks compare the observed data with (:func:`probinv.diagnostics.predictive_check`);
        ``seed`` seeds those noise draws (the global RNG is left as it was). Likelihoods that cannot simulate data
        (the tempered misfits) raise NotImplementedError with ``noise=True``.
        """
        fields = {}
        for name in self.field_names:
            x = self.samples[name]
            if max_draws is not None:
                x = x[:, -max_draws:]
            fields[name] = x
        c, d = next(iter(fields.values())).shape[:2]
        with torch.no_grad():
            pred = model.predict({k: v.reshape((c * d,) + tuple(v.shape[2:])) for k, v in fields.items()})
            if noise:
                others = {k: (v[:, -max_draws:] if max_draws is not None else v).reshape((c * d,) + tuple(v.shape[2:]))
                          for k, v in self.samples.items() if k not in self.field_names}
                devices = [pred.device] if pred.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    pred = torch.stack([
                        model.noise.distribution(pred[i], model.noise.params_from_latents(
                            {k: v[i] for k, v in others.items()}), None, pred.ndim - 1).sample()
                        for i in range(c * d)])
        self.posterior_predictive = pred.reshape((c, d) + tuple(pred.shape[1:]))
        self.attrs["posterior_predictive_noise"] = bool(noise)
        return self.posterior_predictive

    def add_log_likelihood(self, model, max_draws: int | None = None, batch: int = 16) -> torch.Tensor:
        """Evaluate the per-shot log-likelihood ``log p(data_s | draw)`` of every draw; store and return it
        ``[chain, draw, n_shots]`` (the ``log_likelihood`` group of :meth:`to_arviz`, for ``az.loo``/``az.compare``).

        Uses the model's noise model (``distribution(...).log_prob``: batch axis = shots) with the draw's own noise
        parameters (e.g. a latent ``sigma``); ``max_draws`` keeps the last draws of each chain (the samples are then
        cut to the same draws: ArviZ needs matching chain/draw axes); ``batch`` draws go through the forward
        operator at once. The data are :attr:`observed_data`.
        """
        if self.observed_data is None:
            raise ValueError("this Posterior has no observed_data: the log-likelihood needs the data")
        if max_draws is not None:
            self._keep_last(max_draws)
        data = self.observed_data
        c, d = self.num_chains, self.num_draws
        flat = {k: v.reshape((c * d,) + tuple(v.shape[2:])) for k, v in self.samples.items()}
        out = []
        with torch.no_grad():
            for i in range(0, c * d, batch):
                part = {k: v[i:i + batch] for k, v in flat.items()}
                fields = {n: part[n] for n in self.field_names}
                pred = model.predict(fields).to(data.dtype)
                n = pred.shape[0]
                # a global noise latent inside a batch carries a singleton in the shot plate's slot (the models'
                # convention for vectorised particles): [n] -> [n, 1]
                latents = {k: v.reshape((n, 1) + tuple(v.shape[1:])) for k, v in part.items()
                           if k not in self.field_names}
                params = model.noise.params_from_latents(latents) if latents else {}
                lp = model.noise.distribution(pred, params, None, data.ndim).log_prob(data)
                out.append(lp.reshape(n, data.shape[0]))
        self.log_likelihood = torch.cat(out).reshape(c, d, data.shape[0])
        return self.log_likelihood

    def _keep_last(self, max_draws: int) -> None:
        if max_draws >= self.num_draws:
            return
        self.samples = {k: v[:, -max_draws:] for k, v in self.samples.items()}
        self.sample_stats = {k: v[:, -max_draws:] for k, v in self.sample_stats.items()}
        if self.posterior_predictive is not None:
            self.posterior_predictive = self.posterior_predictive[:, -max_draws:]
        self._field_draws = {}

    def add_prior(self, model, num_samples: int = 500, seed: int = 0) -> dict:
        """Draw ``num_samples`` from the model's prior (fields, whitened latents, noise latents); store them as the
        ``prior`` group of :meth:`to_arviz` (``{name: [1, draw, ...]}``) and return them.

        Whitened fields are drawn with every mode (kept modes through the prior, plus the discarded variance per
        pixel as in :meth:`field_draws`, linearised through the bounds at the prior mean); the noise model's latent
        sites from their hyperprior (``noise.sample_params``).
        """
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        out = {}
        like = next(iter(self.samples.values()))
        for name in self.field_names:
            prior = model.priors.get(name)
            if not hasattr(prior, "latent_dim"):
                continue
            dtype = prior.modes.dtype
            z = torch.randn((num_samples, int(prior.latent_dim)), generator=gen, dtype=dtype)
            f = prior(z.to(prior.modes.device))
            var = prior.discarded_variance_at(prior.mean_field) if hasattr(prior, "discarded_variance_at") else None
            if var is not None and float(var.max()) > 0:
                f = f + var.sqrt() * torch.randn(tuple(f.shape), generator=gen, dtype=dtype).to(f.device)
            out[model.latent_site(name)] = z[None]
            out[name] = f[None]
        with pyro.poutine.block(), torch.no_grad(), torch.random.fork_rng():  # the caller's RNG is left alone
            torch.manual_seed(int(seed))
            draws = [model.noise.sample_params(like) for _ in range(num_samples)] if num_samples else []
        for key in (draws[0] if draws else {}):
            site = getattr(model.noise, "name", key) if key == "sigma" else key
            out[site] = torch.stack([dr[key] for dr in draws])[None]
        self.prior_samples = {k: v.detach() for k, v in out.items()}
        return self.prior_samples

    # ------------------------------------------------------------------ NetCDF
    def to_netcdf(self, path: str | os.PathLike) -> None:
        """Write every value (exact round trip) to a NetCDF-4 file, atomically (temp file + ``os.replace``).

        Groups ``posterior``, ``sample_stats``, ``observed_data``, ``posterior_predictive``, ``gaussian``,
        ``discarded_variance``, ``log_likelihood``, ``prior`` (those present), with
        CF-style ``z``/``x`` (m) and ``time`` (s) coordinates, and provenance as global attributes (``attrs_json``:
        every entry of ``attrs``; ``forward``: the forward operator's description, when recorded).
        """
        with atomic_path(path) as tmp:
            with netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
                ds.probinv_version = __version__
                ds.method = self.method
                ds.field_names = json.dumps(list(self.field_names))
                ds.attrs_json = json.dumps(self.attrs, default=str)
                if isinstance(self.attrs.get("forward"), str):
                    # the forward operator's settings (JSON) also as a global attribute of their own, readable with
                    # ncdump -h; the round trip reads attrs_json
                    ds.forward = self.attrs["forward"]
                ds.Conventions = "CF-1.8"
                if self.dx is not None:
                    ds.dx = self.dx
                if self.dt is not None:
                    ds.dt = self.dt
                coords, dims = self._coords_dims()
                self._write_group(ds.createGroup("posterior"), self.samples, coords, dims, chain_draw=True)
                if self.sample_stats:
                    self._write_group(ds.createGroup("sample_stats"), self.sample_stats, {}, {}, chain_draw=True)
                if self.observed_data is not None:
                    self._write_group(ds.createGroup("observed_data"), {"obs": self.observed_data}, coords,
                                      {"obs": dims["obs"]}, chain_draw=False)
                if self.posterior_predictive is not None:
                    self._write_group(ds.createGroup("posterior_predictive"), {"obs": self.posterior_predictive},
                                      coords, {"obs": dims.get("obs", [])}, chain_draw=True)
                if self.gaussian is not None:
                    self._write_group(ds.createGroup("gaussian"), self.gaussian._asdict(), {}, {}, chain_draw=False)
                if self.discarded_variance:
                    self._write_group(ds.createGroup("discarded_variance"), self.discarded_variance, coords,
                                      {k: ["z", "x"] for k in self.discarded_variance}, chain_draw=False)
                if self.log_likelihood is not None:
                    self._write_group(ds.createGroup("log_likelihood"), {"obs": self.log_likelihood}, coords,
                                      {"obs": ["shot"]}, chain_draw=True)
                if self.prior_samples:
                    self._write_group(ds.createGroup("prior"), self.prior_samples, coords, dims, chain_draw=True)

    @staticmethod
    def _write_group(grp, values: Mapping, coords, dims, *, chain_draw: bool):
        units = {"z": "m", "x": "m", "time": "s"}
        for name, value in values.items():
            arr = _np(value)
            vdims = list(dims.get(name, []))
            lead = ["chain", "draw"] if chain_draw else []
            n_rest = arr.ndim - len(lead)
            if len(vdims) != n_rest:
                vdims = [f"{name}_dim_{i}" for i in range(n_rest)]
            all_dims = lead + vdims
            for d, n in zip(all_dims, arr.shape, strict=False):
                if d not in grp.dimensions:
                    grp.createDimension(d, n)
                    if d in coords and len(coords[d]) == n:
                        cv = grp.createVariable(d, "f8", (d,))
                        cv[:] = np.asarray(coords[d], dtype="f8")
                        if d in units:
                            cv.units = units[d]
            dtype = arr.dtype
            store = arr.astype("i1") if dtype == np.bool_ else arr
            var = grp.createVariable(name, store.dtype, tuple(all_dims))
            var.torch_dtype = str(value.dtype) if isinstance(value, torch.Tensor) else str(dtype)
            var[...] = store

    @classmethod
    def from_netcdf(cls, path: str | os.PathLike) -> Posterior:
        """Read a file written by :meth:`to_netcdf`; every value is restored with its dtype."""
        def read_group(grp):
            out = {}
            for name, var in grp.variables.items():
                if name in grp.dimensions:  # coordinate variable
                    continue
                var.set_auto_mask(False)
                arr = np.array(var[...])
                tdt = getattr(var, "torch_dtype", "")
                if tdt in ("torch.bool", "bool"):
                    arr = arr.astype(bool)
                out[name] = torch.from_numpy(np.ascontiguousarray(arr))
            return out

        with netCDF4.Dataset(os.fspath(path), "r") as ds:
            groups = ds.groups
            samples = read_group(groups["posterior"])
            stats = read_group(groups["sample_stats"]) if "sample_stats" in groups else None
            obs = read_group(groups["observed_data"])["obs"] if "observed_data" in groups else None
            pp = read_group(groups["posterior_predictive"])["obs"] if "posterior_predictive" in groups else None
            gauss = LowRankGaussian(**read_group(groups["gaussian"])) if "gaussian" in groups else None
            field_names = json.loads(ds.field_names)
            attrs = json.loads(ds.attrs_json)
            dx = float(ds.dx) if "dx" in ds.ncattrs() else None
            dt = float(ds.dt) if "dt" in ds.ncattrs() else None
            method = str(ds.method)
            discarded = read_group(groups["discarded_variance"]) if "discarded_variance" in groups else None
            ll = read_group(groups["log_likelihood"])["obs"] if "log_likelihood" in groups else None
            prior = read_group(groups["prior"]) if "prior" in groups else {}
        post = cls(samples, field_names=field_names, method=method, dx=dx, sample_stats=stats, observed_data=obs,
                   posterior_predictive=pp, gaussian=gauss, attrs=attrs, dt=dt, discarded_variance=discarded)
        post.log_likelihood = ll
        post.prior_samples = prior
        return post
