"""The end-to-end steps behind ``probinv simulate / invert / report`` and ``probinv demo``: one orchestration.

A configuration (:mod:`probinv.config`) is resolved once into a :class:`probinv.config.Setup`, whose one forward
operator (``setup.forward``) simulates the observed data, runs inside the inversion's model and predicts the report's
gathers. :func:`run` is the whole of ``probinv invert`` and of ``probinv demo`` (the demo is a built-in
configuration); :func:`run_simulation` is ``probinv simulate`` and :func:`report` is ``probinv report``. The steps are
plain functions of tensors and configuration values, so notebooks compose the same code: :func:`simulate` (observed
data with noise), :func:`build_prior` and :func:`build_model` (the Pyro model around the set-up's operator),
:func:`run_inversion` (MAP, then Laplace / SVI / SVGD / NUTS, with checkpoints and resume) and :func:`write_report`
(NetCDF posterior, figures, ArviZ summary).

Checkpoints and resume
----------------------
An inversion runs in stages: ``map`` (always first: it is FWI and the starting point of every posterior method),
then the posterior method. Every ``checkpoint_every`` optimiser steps MAP writes its whole state (latent values,
Adam moments or the L-BFGS history, step and gradient counts, loss history, random-number state) atomically to
``checkpoint_map.pt`` (:func:`probinv.inference.map`), so the result does not depend on ``checkpoint_every`` and a
resumed run gives bit for bit the result of an uninterrupted one. The Laplace approximation at the MAP point (the
posterior of ``laplace``, the start of SVI / SVGD and the preconditioner of NUTS) is kept as ``stage_laplace.nc``,
fingerprinted by the MAP point, the data and its settings; the NUTS and SVI stages checkpoint their own state. With
``resume=True`` MAP continues from its checkpoint (a finished MAP is not rerun), a matching ``stage_laplace.nc`` is
read back instead of recomputed, and the posterior method continues from its checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arviz as az
import netCDF4
import pandas as pd
import pyro
import torch
import xarray as xr

from . import diagnostics, distributed, fields, inference, io, models, plotting
from ._files import atomic_path
from .config import (
    BACKENDS,
    METHODS,
    Config,
    ConfigError,
    Setup,
    check_geometry,
    default_bounds,
    field_prior,
    jax_backend_problem,
    prior_bounds,
    resolve,
)
from .validation import check_choice

log = logging.getLogger(__name__)

__all__ = [
    "InversionResult",
    "Observed",
    "RunResult",
    "Simulation",
    "build_config_model",
    "build_field_priors",
    "build_likelihood",
    "build_model",
    "build_prior",
    "default_bounds",
    "load_observed",
    "report",
    "run",
    "run_inversion",
    "run_simulation",
    "simulate",
    "write_inputs",
    "write_posterior",
    "write_report",
]


@dataclass
class Simulation:
    """Observed data of a survey.

    Attributes
    ----------
    clean : Tensor[n_shots, n_receivers, nt]
        Noise-free pressure data.
    observed : Tensor[n_shots, n_receivers, nt]
        ``clean`` plus Gaussian noise of standard deviation ``sigma``.
    sigma : float
        Noise standard deviation (data units).
    """

    clean: torch.Tensor
    observed: torch.Tensor
    sigma: float


def simulate(setup: Setup, *, relative: float = 0.01, sigma: float | None = None, seed: int = 0) -> Simulation:
    """Simulate the true model of ``setup`` with its forward operator and add white Gaussian noise.

    Parameters
    ----------
    setup : probinv.config.Setup
        Models and the forward operator (``setup.forward``).
    relative : float
        Noise standard deviation as a fraction of the clean data's RMS (used when ``sigma`` is None).
    sigma : float, optional
        Absolute noise standard deviation (data units).
    seed : int
        Seed of the noise (a local generator: the global RNG is untouched).

    Returns
    -------
    Simulation
        Clean and noisy data ``[n_shots, n_receivers, nt]`` and the noise standard deviation.
    """
    with torch.no_grad():
        clean = setup.forward(setup.true)
    rms = float(clean.pow(2).mean().sqrt())
    s = float(sigma) if sigma is not None else relative * rms
    if not (s > 0 and math.isfinite(s)):
        raise ValueError(f"the noise standard deviation must be positive, got {s} (relative = {relative}, data RMS "
                         f"= {rms}); set [noise].relative > 0 or [noise].sigma")
    g = torch.Generator(device=clean.device).manual_seed(int(seed))
    noise = torch.randn(clean.shape, generator=g, dtype=clean.dtype, device=clean.device) * s
    return Simulation(clean=clean, observed=clean + noise, sigma=s)


def build_prior(prior_cfg: Mapping[str, Any], initial: torch.Tensor, dx: float, *, dt: float, accuracy: int = 4,
                bounds: tuple[float, float] | None = None):
    """The velocity prior of a ``[prior]`` configuration section, centred on the starting model.

    ``type = "whitened"``: :class:`probinv.fields.WhitenedField` (Matern / von Karman Gaussian random field with
    mean ``initial``, standard deviation ``std`` m/s, ``n_modes`` Karhunen-Loeve modes or else those holding
    ``retained_variance`` of the prior variance, squashed into ``bounds``);
    ``type = "box"``: :class:`probinv.fields.BoxField` (flat within ``bounds`` per pixel).

    Parameters
    ----------
    prior_cfg : mapping
        The ``[prior]`` section.
    initial : Tensor[nz, nx]
        Starting model (m/s), the prior mean.
    dx, dt : float
        Grid spacing (m) and time step (s); with ``accuracy`` they cap the default upper bound at a stable velocity.
    bounds : (float, float), optional
        Velocity bounds in m/s (a set-up's ``setup.bounds``); default: :func:`probinv.config.prior_bounds`.
    """
    nz, nx = initial.shape
    bounds = bounds if bounds is not None else prior_bounds(prior_cfg, initial, dx, dt, accuracy)
    if prior_cfg.get("type", "whitened") == "box":
        return fields.BoxField((nz, nx), bounds=tuple(bounds), dtype=initial.dtype, device=initial.device)
    length = prior_cfg.get("correlation_length") or (max(nz, nx) * dx / 6)
    cov = prior_cfg.get("covariance", "matern")
    smooth_kw = {"nu": prior_cfg.get("nu", 1.5)} if cov == "matern" else {"hurst": prior_cfg.get("hurst", 0.5)}
    # n_modes when given (capped at the pixel count), otherwise the modes holding retained_variance of the prior
    # variance (WhitenedField's default fraction when neither is set); the discarded rest is reported by the posterior
    if prior_cfg.get("n_modes") is not None:
        count = {"n_modes": min(int(prior_cfg["n_modes"]), nz * nx)}
    else:
        frac = prior_cfg.get("retained_variance")
        count = {"retained_variance": None if frac is None else float(frac)}
    return fields.WhitenedField((nz, nx), dx, covariance=cov, a_z=length, a_x=length, mean=initial,
                                std=float(prior_cfg.get("std", 150.0)), bounds=tuple(bounds),
                                dtype=initial.dtype, device=initial.device, **count, **smooth_kw)


def build_model(setup: Setup, observed: torch.Tensor, sigma: float, prior, *, forward=None):
    """Pyro model: ``vp ~ prior``, data ``~ N(forward(vp), sigma^2)`` in a plate over shots.

    Parameters
    ----------
    setup : probinv.config.Setup
        Its forward operator (``setup.forward``, the one that simulated the data) is the model's.
    observed : Tensor[n_shots, n_receivers, nt]
        Observed pressure data.
    sigma : float
        Noise standard deviation (data units).
    prior : probinv.fields prior
        Of the velocity ``vp`` (m/s).
    forward : forward operator, optional
        Another operator (any object of the protocol: ``fields``, ``n_shots``, ``__call__``, ``describe``).

    The set-up's operator fixes the absorbing boundary's strength at the prior's upper velocity bound
    (``pml_vmax``): with each model's own maximum (rounded) the forward map would jump whenever a sample's maximum
    crosses a multiple of 100 m/s, which stalls NUTS and L-BFGS.
    """
    fwd = setup.forward if forward is None else forward
    return models.build_model({"vp": prior}, fwd, observed, noise=models.Gaussian(sigma=float(sigma)), dx=setup.dx)


def _q_prior(prior_cfg: Mapping[str, Any], initial: torch.Tensor, dx: float, bounds: tuple[float, float]):
    """The Q prior of a ``[prior.q]`` section: :class:`probinv.fields.LogQField` (whitened field of ln Q, median the
    starting Q, ``std`` the standard deviation of ln Q) or, ``type = "box"``, flat in Q within ``bounds``.
    """
    nz, nx = initial.shape
    if prior_cfg.get("type", "whitened") == "box":
        return fields.BoxField((nz, nx), bounds=tuple(bounds), dtype=initial.dtype, device=initial.device)
    length = prior_cfg.get("correlation_length") or (max(nz, nx) * dx / 6)
    cov = prior_cfg.get("covariance", "matern")
    smooth_kw = {"nu": prior_cfg.get("nu", 1.5)} if cov == "matern" else {"hurst": prior_cfg.get("hurst", 0.5)}
    if prior_cfg.get("n_modes") is not None:
        n_modes = min(int(prior_cfg["n_modes"]), nz * nx)
    else:  # LogQField takes a mode count: that of the retained variance (the same modes as a velocity prior's)
        frac = prior_cfg.get("retained_variance")
        n_modes = fields.WhitenedField((nz, nx), dx, covariance=cov, a_z=length, a_x=length,
                                       retained_variance=None if frac is None else float(frac), dtype=initial.dtype,
                                       **smooth_kw).latent_dim
    return fields.LogQField((nz, nx), dx, q_median=initial, log_std=float(prior_cfg.get("std", 0.5)),
                            bounds=tuple(bounds), covariance=cov, a_z=length, a_x=length, n_modes=n_modes,
                            dtype=initial.dtype, device=initial.device, **smooth_kw)


def build_field_priors(cfg: Config, setup: Setup):
    """The priors of every latent field of a configuration (``setup.fields``), centred on the starting model.

    Velocities and density: :func:`build_prior` of ``[prior.<field>]`` (``[prior]`` for vp); Q: a whitened field of
    ln Q (:class:`probinv.fields.LogQField`) or a box. Bounds are ``setup.field_bounds``.

    Returns
    -------
    dict[str, prior]
        ``{field: prior}`` (independent priors; :func:`build_config_model` couples vp and Q when
        ``[prior.q].velocity_correlation`` is not 0).

    Raises
    ------
    ConfigError
        Naming the section of a prior that cannot be built (e.g. explicit bounds that exclude the start).
    """
    priors = {}
    for name in setup.fields:
        pc = field_prior(cfg, name)
        section = f"[prior.{name}]" if f"prior.{name}" in cfg.sections or name != "vp" else "[prior]"
        try:
            if name == "q":
                priors[name] = _q_prior(pc, setup.initial[name], setup.dx, setup.field_bounds[name])
            else:
                priors[name] = build_prior(pc, setup.initial[name], setup.dx, dt=setup.acquisition.dt,
                                           accuracy=setup.physics.accuracy, bounds=setup.field_bounds[name])
        except ValueError as exc:
            raise ConfigError([f"{section}: {exc} (start of {name}: {float(setup.initial[name].min()):.4g} to "
                               f"{float(setup.initial[name].max()):.4g}, bounds {list(setup.field_bounds[name])})"],
                              cfg.source) from None
    return priors


def _joint_prior(cfg: Config, setup: Setup, priors: dict):
    """The joint velocity-Q prior of ``[prior.q].velocity_correlation`` (None when it is 0 or there is no Q)."""
    rho = field_prior(cfg, "q").get("velocity_correlation", 0.0) if "q" in priors else 0.0
    if not rho:
        return None
    velocity = setup.fields[0]
    try:
        return fields.JointVpQPrior(priors[velocity], priors["q"], float(rho), names=(velocity, "q"))
    except (TypeError, ValueError) as exc:
        raise ConfigError([f"[prior.q].velocity_correlation = {rho!r}: {exc}"], cfg.source) from None


def build_likelihood(cfg: Config, setup: Setup, observed: torch.Tensor, sigma: float):
    """The noise model of ``[likelihood]`` (:func:`probinv.models.build_likelihood`).

    ``gaussian`` and ``student_t`` take ``sigma`` (the data noise: ``[noise]``, data units); ``travel_time`` and
    ``attenuation`` their ``[likelihood].sigma`` (s; natural-log units; travel_time also its ``max_lag``, s); the
    tempered ones their temperature (no sigma). ``observed`` serves the Gauss-Newton whitening of the misfit
    likelihoods (Laplace).
    """
    lk = cfg.likelihood
    data_sigma = lk.name in ("gaussian", "student_t")
    return models.build_likelihood(lk.name, sigma=float(sigma) if data_sigma else lk.sigma, dt=setup.acquisition.dt,
                                   temperature=lk.temperature, df=lk.df, observed=observed,
                                   trace_dims=2 if setup.frequency_domain else 1, max_lag=lk.max_lag)


def build_config_model(cfg: Config, setup: Setup, observed: torch.Tensor, sigma: float):
    """The Pyro model of a configuration: its physics (``setup.forward``), field priors and likelihood.

    The acoustic vp-only Gaussian configuration gives exactly :func:`build_model` of :func:`build_prior` (every
    configuration before ``[physics].name`` / ``[prior.<field>]`` / ``[likelihood]`` existed).
    """
    if setup.fields == ("vp",) and cfg.likelihood.name == "gaussian":
        prior = build_prior(cfg.prior if "prior.vp" not in cfg.sections else cfg.sections["prior.vp"],
                            setup.initial["vp"], setup.dx, dt=setup.acquisition.dt, accuracy=setup.physics.accuracy,
                            bounds=setup.bounds)
        return build_model(setup, observed, sigma, prior)
    priors = build_field_priors(cfg, setup)
    noise = build_likelihood(cfg, setup, observed, sigma)
    joint = _joint_prior(cfg, setup, priors)
    if joint is not None:
        other = {k: p for k, p in priors.items() if k not in joint.names}
        return models.build_joint_model(joint, setup.forward, observed, noise=noise, other_priors=other or None,
                                        dx=setup.dx)
    return models.build_model(priors, setup.forward, observed, noise=noise, dx=setup.dx)


def _likelihood_attrs(cfg: Config, sigma: float, simulated: bool) -> dict:
    """Attributes of a result file that state the likelihood: a Gaussian's noise sigma (data units), a misfit
    likelihood's sigma (s or log units), a tempered one's temperature (no sigma: T is a modelling choice).
    """
    lk = cfg.likelihood
    if lk.name in ("gaussian", "student_t"):
        out = {"noise_sigma": sigma}
        if lk.name == "student_t":
            out["likelihood"], out["likelihood_df"] = lk.name, lk.df
        return out
    out = {"likelihood": lk.name}
    if lk.sigma is not None:
        out["likelihood_sigma"] = lk.sigma
    if lk.name in ("global_correlation", "envelope", "trace_l2"):
        out["likelihood_temperature"] = lk.temperature if lk.temperature is not None else 1.0
    if simulated:  # the noise added to the simulated data (not a parameter of this likelihood)
        out["simulation_noise_sigma"] = sigma
    return out


@dataclass
class InversionResult:
    """What :func:`run_inversion` returns: the MAP point and the final posterior (MAP itself for ``map``)."""

    map: Any
    posterior: Any
    loss: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def _latent_init(post, model) -> dict:
    """Last draw of every latent site of a Posterior (the values a block of MAP ends at)."""
    names = [model.latent_site(n) for n in model.field_names]
    return {n: post.samples[n][-1, -1].clone() for n in names if n in post.samples}


def _map_stage(model, *, optimizer: str, steps: int, lr: float, seed: int, checkpoint_dir: Path | None,
               checkpoint_every: int, resume: bool, progress: bool, stop_after: int | None,
               say: Callable[[str], None]) -> tuple[Any, list]:
    """MAP with a full optimiser-state checkpoint (``checkpoint_map.pt``, :func:`probinv.inference.map`).

    The result is the same for any ``checkpoint_every`` and for an interrupted and resumed run. Returns the MAP
    posterior and its loss history.
    """
    ck_file = checkpoint_dir / "checkpoint_map.pt" if checkpoint_dir is not None else None
    if ck_file is not None and ck_file.exists():
        if resume:
            say(f"resume: MAP from its checkpoint {ck_file}")
        else:
            ck_file.unlink()  # inference.map resumes whenever the file exists: a fresh run starts afresh
    elif resume:
        say(f"resume: no MAP checkpoint in {checkpoint_dir}; starting from the beginning")
    every = checkpoint_every or steps
    # stop_after (tests of resume): stop, as if killed, one step after the stop_after-th checkpoint was written
    stop_at = stop_after * every + 1 if stop_after is not None and ck_file is not None else None

    def callback(step, loss, fields):
        done = step + 1
        if progress and (done % every == 0 or done == steps):
            say(f"MAP step {done}/{steps}: negative log posterior {float(loss):.6g}")
        if stop_at is not None and done == stop_at and done < steps:
            raise KeyboardInterrupt(f"stopped after {stop_after} MAP checkpoints (stop_after)")

    pyro.set_rng_seed(seed)
    map_post = inference.map(model, optimizer=optimizer, num_steps=steps, lr=lr if optimizer == "adam" else 1.0,
                             progress_bar=False, callback=callback, checkpoint=ck_file, checkpoint_every=every)
    losses = [float(x) for x in map_post.attrs.get("loss", [])]
    map_post.attrs.update(step=int(map_post.attrs.get("n_steps", steps)), loss_history=losses)
    return map_post, losses


def _laplace_key(model, map_post, **settings) -> str:
    """Fingerprint of a Laplace stage: its settings, the MAP point it linearises at and the data it explains."""
    h = hashlib.sha256()
    for name in sorted(map_post.samples):
        h.update(name.encode())
        h.update(map_post.samples[name][-1, -1].detach().cpu().contiguous().numpy().tobytes())
    h.update(model.data.detach().cpu().contiguous().numpy().tobytes())
    return json.dumps({**settings, "map_and_data_sha256": h.hexdigest()}, sort_keys=True)


def _laplace_stage(model, map_post, *, rank: int, num_samples: int, seed: int, jvp_mode: str,
                   checkpoint_dir: Path | None, resume: bool, progress: bool, say: Callable[[str], None]):
    """The Laplace approximation at the MAP point, kept as the stage checkpoint ``stage_laplace.nc``.

    With ``resume`` a stage file written for the same MAP point, data and settings is read back (an exact round trip)
    instead of recomputed: resuming an SVI / SVGD / NUTS run does not redo its Laplace start (issue 15: the Laplace
    step is most of the demo's time). A stage file of another MAP point or other settings is recomputed and replaced.
    """
    key = _laplace_key(model, map_post, rank=rank, num_samples=num_samples, seed=seed, jvp_mode=jvp_mode)
    stage = checkpoint_dir / "stage_laplace.nc" if checkpoint_dir is not None else None
    if stage is not None and resume and stage.exists():
        lap = inference.Posterior.from_netcdf(stage)
        if lap.attrs.get("stage_key") == key and lap.gaussian is not None:
            say(f"resume: the Laplace approximation from its stage checkpoint {stage} (not recomputed)")
            return lap
        say(f"resume: {stage} was computed at another MAP point or with other settings; recomputing it")
    lap = inference.laplace(model, map_posterior=map_post, rank=rank, num_samples=num_samples, seed=seed,
                            jvp_mode=jvp_mode, progress_bar=progress)
    lap.attrs["stage_key"] = key
    if stage is not None:
        lap.to_netcdf(stage)
    return lap


def run_inversion(model, *, method: str = "map", optimizer: str = "adam", steps: int = 200, lr: float = 0.02,
                  num_samples: int = 200,
                  warmup: int = 100, num_chains: int = 2, max_tree_depth: int = 8, n_particles: int = 16, seed: int = 0,
                  rank: int | None = None, jvp_mode: str = "auto", checkpoint_dir: str | Path | None = None,
                  checkpoint_every: int = 25,
                  resume: bool = False, progress: bool = True, stop_after: int | None = None,
                  log_fn: Callable[[str], None] | None = None, backend: str = "torch") -> InversionResult:
    """MAP (= FWI), then the posterior ``method``, with block checkpoints and resume.

    Parameters
    ----------
    model : probinv.models.SeismicModel
        From :func:`build_model`.
    method : {"map", "laplace", "svi", "svgd", "nuts"}
        Posterior method run after MAP.
    optimizer : {"adam", "lbfgs"}
        MAP optimiser.
    steps, lr : int, float
        MAP steps (Adam steps or L-BFGS iterations) and learning rate (L-BFGS: use 1); also SVI / SVGD steps.
    num_samples, warmup, num_chains, max_tree_depth, n_particles : int
        Laplace / NUTS draws, NUTS warm-up, chains and maximum tree depth, SVGD particles.
    seed : int
        Seed of every random choice (Pyro's global seed is set from it before each stage).
    rank : int, optional
        Laplace rank (default: the latent dimension, capped at 100).
    jvp_mode : {"auto", "reverse", "fd"}
        How Laplace computes Jacobian-vector products (see :func:`probinv.inference.laplace`).
    checkpoint_dir : path, optional
        Where checkpoints and finished stages go; no checkpoints when None.
    checkpoint_every : int
        MAP steps between checkpoints (0: only at the end); it does not change the result.
    resume : bool
        Continue from the checkpoints in ``checkpoint_dir``.
    stop_after : int, optional
        Stop (as if killed) just after this many MAP checkpoints; for tests of resume.
    backend : {"torch", "jax"}
        Where NUTS runs: PyTorch/Pyro (:func:`probinv.inference.nuts`) or NumPyro/JAX (:func:`probinv.jax.nuts`,
        needs the ``jax`` extra); MAP and Laplace always run on PyTorch. ``"jax"`` serves only ``method="nuts"``
        (and ``"map"`` / ``"laplace"``, which it does not change).
    """
    say = log_fn or log.info
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}, got {method!r}")
    _check_backend(backend, method)
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckdir is not None:
        ckdir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    # ---- stage 1: MAP (see _map_stage)
    t0 = time.perf_counter()
    map_post, losses = _map_stage(model, optimizer=optimizer, steps=steps, lr=lr, seed=seed, checkpoint_dir=ckdir,
                                  checkpoint_every=checkpoint_every, resume=resume, progress=progress,
                                  stop_after=stop_after, say=say)
    seconds["map"] = time.perf_counter() - t0
    if method == "map":
        return InversionResult(map=map_post, posterior=map_post, loss=losses, seconds=seconds)

    # ---- stage 2: the posterior method
    init = _latent_init(map_post, model)
    pyro.set_rng_seed(seed)
    t0 = time.perf_counter()
    say(f"{method}: running from the MAP point")
    # every posterior method starts from the Laplace approximation at the MAP point: it is the posterior itself
    # for "laplace", the preconditioner of NUTS and the initial location/scale of SVI and the particles of SVGD
    latent_dim = sum(int(v.numel()) for v in init.values())
    lap = _laplace_stage(model, map_post, rank=rank or min(latent_dim, 100), num_samples=num_samples, seed=seed,
                         jvp_mode=jvp_mode, checkpoint_dir=ckdir, resume=resume, progress=progress, say=say)
    post = lap
    if method != "laplace":
        seconds["laplace"] = time.perf_counter() - t0
        say(f"{method}: initialised / preconditioned by the Laplace approximation")
    ck_method = ckdir / f"checkpoint_{method}.pt" if ckdir is not None and method in ("nuts", "svi") else None
    if ck_method is not None and not resume and ck_method.exists():
        ck_method.unlink()  # a fresh run never continues an older run's sampler state
    if method == "nuts" and backend == "jax":
        from probinv import jax as pjax  # noqa: PLC0415 (optional: the jax extra provides jax, numpyro)

        post = pjax.nuts(model, num_samples=num_samples, warmup_steps=warmup, num_chains=num_chains,
                         laplace_posterior=lap, seed=seed, max_tree_depth=max_tree_depth, checkpoint=ck_method)
    elif method == "nuts" and distributed.world_size() > 1:  # under torchrun: the chains spread over the ranks
        post = inference.nuts_parallel(model, num_samples=num_samples, warmup_steps=warmup, num_chains=num_chains,
                                       laplace_posterior=lap, seed=seed, max_tree_depth=max_tree_depth,
                                       checkpoint=ck_method, progress_bar=progress)
    elif method == "nuts":
        post = inference.nuts(model, num_samples=num_samples, warmup_steps=warmup, num_chains=num_chains,
                              laplace_posterior=lap, seed=seed, max_tree_depth=max_tree_depth, checkpoint=ck_method,
                              progress_bar=progress)
    elif method == "svi":
        post = inference.svi(model, laplace_posterior=lap, num_steps=steps, lr=lr if optimizer == "adam" else 0.01,
                             num_samples=num_samples, seed=seed, checkpoint=ck_method,
                             checkpoint_every=checkpoint_every or 100, progress_bar=progress)
    elif method == "svgd":
        post = inference.svgd(model, laplace_posterior=lap, num_particles=n_particles, num_steps=steps,
                              lr=lr if optimizer == "adam" else 0.05, seed=seed, progress_bar=progress)
    seconds[method] = time.perf_counter() - t0
    if ckdir is not None and method != "laplace":  # _laplace_stage wrote stage_laplace.nc
        post.to_netcdf(ckdir / f"stage_{method}.nc")
    return InversionResult(map=map_post, posterior=post, loss=losses, seconds=seconds)


def _check_backend(backend: str, method: str) -> None:
    """``backend`` is one of ``BACKENDS`` and serves ``method`` (the JAX backend has NUTS only)."""
    check_choice("backend", backend, BACKENDS)
    if backend == "jax" and method in ("svi", "svgd"):
        raise ValueError(f"backend='jax' runs NUTS only (MAP and Laplace stay on PyTorch), got method={method!r}: "
                         f"use backend='torch' for {method}, or method='nuts'")


def _units(name: str) -> str:
    """Units of a field in text: m/s (velocities), kg/m^3, "dimensionless" for Q."""
    units = io.FIELD_UNITS.get(name, ("1",))[0]
    return "dimensionless" if units == "1" else units


def write_report(out_dir: str | Path, posterior, *, dx: float, true: torch.Tensor | None = None,
                 initial: torch.Tensor | None = None, map_field: torch.Tensor | None = None,
                 observed: torch.Tensor | None = None, predicted: torch.Tensor | None = None,
                 dt: float | None = None, loss: list | None = None, receiver_x=None, name: str = "vp",
                 level: float = 0.9, source_x: float | None = None, model=None,
                 verdict: diagnostics.Verdict | None = None, predictive_check: bool = True,
                 illumination: torch.Tensor | None = None) -> dict[str, Path]:
    """Figures and the ArviZ summary of a posterior, written into ``out_dir``.

    Writes ``models.png`` (true / initial / MAP / posterior mean, those given), ``uncertainty.png`` (mean, std and
    ``level`` credible-interval width), ``gathers.png`` (observed vs predicted, first shot), ``misfit.png`` (loss
    history), ``summary.csv`` and ``summary.txt`` (ArviZ summary of selected pixels, then the posterior's
    :func:`probinv.diagnostics.verdict`), and, when the posterior has several draws, ``trace.png`` / ``rank.png``
    (MCMC methods, more than 3 draws per chain) or ``draws.png`` (independent draws:
    :func:`probinv.diagnostics.plot_draws`). Returns ``{what: path}``.

    ``model`` (the SeismicModel) lets the verdict compute residuals and prior comparisons; ``verdict`` is one
    already computed (:meth:`Posterior.verdict`), otherwise it is computed here with ``true`` as the truth.

    When the posterior carries replicated time gathers (``posterior_predictive`` drawn with noise, as ``probinv
    invert`` stores them) and ``predictive_check``, ``predictive.png`` draws the posterior predictive check
    (:func:`probinv.diagnostics.predictive_check`: observed traces inside the predictive band, PIT histogram; its
    number is the verdict's ``predictive`` item).

    ``illumination`` (``[nz, nx]``, :func:`probinv.diagnostics.illumination` of this field) adds ``illumination.png``:
    the map in dB below its peak beside the posterior / prior std (with ``model``), the verdict's "illuminated"
    contour on both.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    mean = posterior.mean(name)
    panels = {}
    if true is not None:
        panels["true"] = true
    if initial is not None:
        panels["initial"] = initial
    if map_field is not None:
        panels["MAP (= FWI)"] = map_field
    panels["posterior mean"] = mean
    files["models"] = plotting.save_figure(plotting.plot_models(panels, dx, name=name, ncols=min(len(panels), 4)),
                                           out / "models.png")
    several = posterior.num_chains * posterior.num_draws > 1
    if several:
        lo, hi = posterior.credible_interval(name, level)
        files["uncertainty"] = plotting.save_figure(
            plotting.plot_posterior_maps(mean, posterior.std(name), dx, lower=lo, upper=hi, level=level, name=name),
            out / "uncertainty.png")
    if observed is not None and predicted is not None and dt is not None:
        files["gathers"] = plotting.save_figure(
            plotting.plot_gather_comparison(observed, predicted, dt, receiver_x=receiver_x, source_x=source_x),
            out / "gathers.png")
    if loss:
        files["misfit"] = plotting.save_figure(plotting.plot_misfit({"MAP": loss}, ylabel="negative log posterior"),
                                               out / "misfit.png")
    rep, obs_data = posterior.posterior_predictive, posterior.observed_data
    dt_pp = dt if dt is not None else getattr(posterior, "dt", None)
    if predictive_check and rep is not None and obs_data is not None and dt_pp is not None and obs_data.ndim == 3 \
            and not obs_data.is_complex() and posterior.attrs.get("posterior_predictive_noise"):
        # time gathers: observed traces inside the predictive band, PIT histogram (the number is in the verdict)
        ppc = diagnostics.predictive_check(obs_data, rep, level=level)
        files["predictive"] = plotting.save_figure(
            plotting.plot_predictive_check(obs_data, rep, dt_pp, level=level, receiver_x=receiver_x, pit=ppc["pit"],
                                           coverage=ppc["coverage"]), out / "predictive.png")
    if illumination is not None:
        ratio = (diagnostics.std_ratio_map(posterior, model.priors.get(name), name)
                 if several and model is not None else None)
        files["illumination"] = plotting.save_figure(
            plotting.plot_illumination(illumination, dx, std_ratio=ratio, name=name,
                                       threshold_db=diagnostics.VERDICT_THRESHOLDS["illuminated_db"]),
            out / "illumination.png")
    nz, nx = mean.shape
    pixels = [(nz // 2, nx // 2), (nz // 4, nx // 4), (nz // 4, 3 * nx // 4), (3 * nz // 4, nx // 2)]
    labels = [f"{name}[{iz},{ix}]" for iz, ix in pixels]
    if several:
        idata = posterior.to_arviz()
        da = idata.posterior[name]
        sel = {lab: da.isel(z=iz, x=ix, drop=True) for lab, (iz, ix) in zip(labels, pixels, strict=True)}
        # r-hat and ESS need at least 2 chains of 4 draws; a single chain (Laplace) gets the statistics only
        diag = posterior.num_chains >= 2 and posterior.num_draws >= 4
        table = az.summary(xr.Dataset(sel), kind="all" if diag else "stats")
    else:  # one point (MAP): its values
        table = pd.DataFrame({"value": [float(mean[iz, ix]) for iz, ix in pixels]}, index=labels)
    if true is not None:
        table["true"] = [float(true[iz, ix]) for iz, ix in pixels]
    with atomic_path(out / "summary.csv") as tmp:
        table.to_csv(tmp)
    if verdict is None:
        verdict = posterior.verdict(model=model, truth={name: true} if true is not None else None)
    with atomic_path(out / "summary.txt") as tmp:
        tmp.write_text(
            f"ArviZ summary of {posterior.method} at selected pixels (z, x grid indices; {_units(name)})\n"
            f"{table.to_string()}\n"
            f"\n{verdict}\n")
    files["summary"] = out / "summary.txt"
    if several and posterior.method in diagnostics.MCMC_METHODS:
        if posterior.num_draws > 3:
            for kind in ("trace", "rank"):
                files[kind] = plotting.save_figure(
                    plotting.plot_arviz(idata, kind, var_name=name, pixels=pixels[:3]), out / f"{kind}.png")
    elif several:  # independent draws (laplace, svi, svgd): marginal histograms, no chains to trace
        files["draws"] = plotting.save_figure(
            diagnostics.plot_draws(posterior, name, pixels[:3], truth=true), out / "draws.png")
    return files


# ----------------------------------------------------------------------------------------------------------------------
# the orchestration of the commands: probinv simulate / invert / report / demo
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Observed:
    """The data an inversion explains, with the set-up that describes them.

    Attributes
    ----------
    setup : probinv.config.Setup
        The resolved configuration; for a data file, with the file's source / receiver locations.
    data : Tensor[n_shots, n_receivers, nt]
        Observed pressure data.
    sigma : float
        Noise standard deviation (data units).
    simulation : Simulation, optional
        The simulation that produced ``data`` (None for a data file).
    units : str
        Units of ``data`` (simulated pressure: Pa; a data file's ``units`` attribute).
    """

    setup: Setup
    data: torch.Tensor
    sigma: float
    simulation: Simulation | None = None
    units: str = "Pa"


def load_observed(cfg: Config, setup: Setup) -> Observed:
    """Observed data and noise sigma: from ``[data].observed``, else simulated from the true model with ``[noise]``."""
    if cfg.data.observed is None:
        sim = simulate(setup, relative=cfg.noise.relative, sigma=cfg.noise.sigma, seed=cfg.noise.seed)
        return Observed(setup, sim.observed, sim.sigma, sim, units=setup.data_units)
    p = cfg.path(cfg.data.observed)
    key = f"[data].observed = {cfg.data.observed!r}"
    try:
        g = io.read_segy_gather(p, setup.dx) if p.suffix.lower() in (".sgy", ".segy") else io.read_gather(p)
    except (io.InputError, OSError) as exc:  # unreadable, empty or truncated file, a folder: name the key
        raise ConfigError([f"{key}: {exc}"], cfg.source) from None
    # NaN / inf samples would surface as "sigma must be a positive finite number, got nan" (issue 15)
    bad = io.describe_bad_values(g.data, dims=("shot", "receiver", "time"), spacing={"time": (g.dt, "s")})
    if bad:
        raise ConfigError([f"{key}: data {bad}; replace the bad samples (e.g. by 0, or drop their traces) in the "
                           f"file"], cfg.source)
    acq = setup.acquisition
    if tuple(g.data.shape) != (acq.n_shots, acq.n_receivers, acq.nt):
        raise ConfigError([f"[data].observed = {cfg.data.observed!r} holds data shaped {tuple(g.data.shape)} but the "
                           f"configuration describes [n_shots, n_receivers, nt] = "
                           f"{[acq.n_shots, acq.n_receivers, acq.nt]}: make [acquisition] and [time] match the file"],
                          cfg.source)
    nz, nx = next(iter(setup.true.values())).shape
    outside = check_geometry(g.source_locations, g.receiver_locations, nz, nx, setup.dx, key)
    if outside:
        raise ConfigError(outside, cfg.source)
    setup = setup.with_geometry(g.source_locations, g.receiver_locations)
    sigma = cfg.noise.sigma if cfg.noise.sigma is not None else cfg.noise.relative * float(g.data.pow(2).mean().sqrt())
    return Observed(setup, g.data.to(next(iter(setup.true.values())).dtype), sigma, None, units=g.units)


def write_posterior(posterior, path: str | Path, *, data_units: str = "Pa") -> Path:
    """:meth:`Posterior.to_netcdf` with a CF ``units`` attribute on every variable of every group, atomically.

    Fields known to :data:`probinv.io.FIELD_UNITS` get their units and long name (``vp``: m/s, P-wave velocity),
    observed and predicted data (``obs``) ``data_units``, and everything else, whose values are dimensionless
    (whitened latent coordinates, the Laplace Gaussian, sample statistics, shot and receiver indices), ``"1"``;
    coordinates keep theirs (``z``, ``x``: m, ``time``: s).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        posterior.to_netcdf(tmp)
        with netCDF4.Dataset(tmp, "a") as ds:
            _set_units(ds, data_units)
    return path


def _set_units(group, data_units: str) -> None:
    for name, var in group.variables.items():
        if "units" in var.ncattrs():
            continue
        if name in io.FIELD_UNITS:
            var.units, var.long_name = io.FIELD_UNITS[name]
        elif name == "obs":
            var.units, var.long_name = data_units, "pressure data" if data_units == "Pa" else "data"
        else:
            var.units = "1"
    for sub in group.groups.values():
        _set_units(sub, data_units)


def _forward_attr(setup: Setup) -> str:
    """The set-up's operator description as the JSON text stored in result files (attribute ``forward``)."""
    return json.dumps(setup.forward.describe())


def write_inputs(out_dir: str | Path, obs: Observed, *, config: str | None = None, clean: bool = True,
                 figures: bool = True) -> dict[str, Path]:
    """Write the inversion's inputs and return ``{what: path}``.

    ``true_model.nc``, ``initial_model.nc``, ``observed.nc`` (with the forward operator's description as the
    attribute ``forward``) and, as asked, ``clean.nc``, ``model.png`` and ``gather.png``.

    Parameters
    ----------
    out_dir : path
        Output folder (created).
    obs : Observed
        From :func:`load_observed`.
    config : str, optional
        The configuration as JSON (provenance attribute of every file).
    clean : bool
        Also write the noise-free data of a simulation (``clean.nc``).
    figures : bool
        Also draw the true model with the survey (``model.png``) and the first shot's observed gather
        (``gather.png``).
    """
    out = Path(out_dir)
    setup, acq = obs.setup, obs.setup.acquisition
    geometry = {"dt": acq.dt, "source_locations": acq.source_locations, "receiver_locations": acq.receiver_locations,
                "dx": setup.dx, "units": setup.data_units, "config": config}
    files = {"true_model": io.write_model(out / "true_model.nc", setup.true, setup.dx, config=config),
             "initial_model": io.write_model(out / "initial_model.nc", setup.initial, setup.dx, config=config)}
    write = _write_spectra if setup.frequency_domain else io.write_gather
    files["observed"] = write(out / "observed.nc", data=obs.data, **geometry,
                              attrs={"noise_sigma": obs.sigma, "forward": _forward_attr(setup)})
    if clean and obs.simulation is not None:
        files["clean"] = write(out / "clean.nc", data=obs.simulation.clean, **geometry,
                               attrs={"forward": _forward_attr(setup)})
    if figures:
        first = setup.fields[0]
        files["model_figure"] = plotting.save_figure(
            plotting.plot_model(setup.true[first], setup.dx, title="true model", name=first,
                                sources=acq.source_locations, receivers=acq.receiver_locations), out / "model.png")
        if not setup.frequency_domain:
            files["gather_figure"] = plotting.save_figure(
                plotting.plot_gather(obs.data[0], acq.dt, title="observed, shot 0",
                                     receiver_x=acq.receiver_locations[0, :, 1] * setup.dx), out / "gather.png")
    return files


def _write_spectra(path: Path, *, data: torch.Tensor, dt: float, source_locations, receiver_locations, dx: float,
                   units: str, config: str | None, attrs: dict) -> Path:
    """Frequency-domain data ``[n_shots, n_receivers, n_freqs, 2]`` (real, imaginary parts) as NetCDF, atomically.

    The variable ``data`` has dimensions ``(shot, receiver, frequency, part)``; the frequencies (Hz) are the
    coordinate ``frequency`` (from the forward operator's description in ``attrs["forward"]``).
    """
    freqs = json.loads(attrs["forward"])["frequencies"]
    ds = xr.Dataset(
        {"data": (("shot", "receiver", "frequency", "part"), data.detach().cpu().numpy(),
                  {"units": units, "long_name": "spectra of the records (real and imaginary parts)"}),
         "source_locations": (("shot", "source", "index"), source_locations.cpu().numpy(), {"units": "1"}),
         "receiver_locations": (("shot", "receiver", "index"), receiver_locations.cpu().numpy(), {"units": "1"})},
        coords={"frequency": ("frequency", freqs, {"units": "Hz"}), "part": ["real", "imag"]},
        attrs={**attrs, "dx": dx, "wavelet_dt": dt, **({"probinv_config": config} if config else {})})
    with atomic_path(Path(path)) as tmp:
        ds.to_netcdf(tmp)
    return Path(path)


def _out_dir(cfg: Config, out_dir: str | Path | None) -> Path:
    return Path(out_dir) if out_dir is not None else cfg.path(cfg.output.directory)


def run_simulation(cfg: Config, out_dir: str | Path | None = None, *,
                   dtype: torch.dtype | None = None) -> tuple[Observed, dict[str, Path]]:
    """``probinv simulate``: simulate the configuration's true model with ``[noise]`` and write the inputs.

    Writes into ``out_dir`` (default: ``[output].directory``) what :func:`write_inputs` writes; returns the
    simulated :class:`Observed` and ``{what: path}``.
    """
    out = io.check_output_dir(_out_dir(cfg, out_dir))  # before the work: nothing written, no traceback
    setup = resolve(cfg, dtype=dtype)
    sim = simulate(setup, relative=cfg.noise.relative, sigma=cfg.noise.sigma, seed=cfg.noise.seed)
    obs = Observed(setup, sim.observed, sim.sigma, sim)
    return obs, write_inputs(out, obs, config=cfg.to_json())


@dataclass
class RunResult:
    """What :func:`run` returns: the observed data with their set-up, the inversion's result and the files written."""

    observed: Observed
    inversion: InversionResult
    files: dict[str, Path]
    #: :meth:`Posterior.verdict` of the final posterior (with the model, the illumination, and the truth of
    #: simulated data)
    verdict: diagnostics.Verdict | None = None
    #: ``{field: Tensor[nz, nx]}``, the illumination maps at the MAP point (:func:`probinv.diagnostics.illumination`;
    #: None for a single point or a failed map)
    illumination: dict | None = None

    @property
    def setup(self) -> Setup:
        """The set-up (with the observed data's geometry)."""
        return self.observed.setup

    @property
    def posterior(self):
        """The final posterior (:class:`probinv.inference.Posterior`)."""
        return self.inversion.posterior


#: Posterior draws whose replicated data (forward + noise) ``probinv invert`` keeps for the predictive check.
PREDICTIVE_DRAWS = 20
#: Hutchinson probes of the illumination map (:func:`probinv.diagnostics.illumination`, one gradient each) behind the
#: verdict's "where the data illuminate" informativeness
ILLUMINATION_PROBES = 16


def run(cfg: Config, out_dir: str | Path | None = None, *, method: str | None = None, steps: int | None = None,
        resume: bool = False, figures: bool = True, save_inputs: bool = False, stop_after: int | None = None,
        dtype: torch.dtype | None = None, progress: bool = True,
        log_fn: Callable[[str], None] | None = None, backend: str | None = None) -> RunResult:
    """``probinv invert`` (and ``probinv demo``): observed data, MAP, the posterior method, result files, report.

    Parameters
    ----------
    cfg : probinv.config.Config
        The configuration; resolved once (:func:`probinv.config.resolve`), its forward operator serves the
        simulation of the data, the inversion and the report's predicted gathers.
    out_dir : path, optional
        Output folder (default: ``[output].directory``); checkpoints go to ``out_dir/checkpoints``.
    method, steps : optional
        Override ``[inference].method`` and ``[inference].steps``.
    resume : bool
        Continue from the checkpoints in the output folder.
    figures : bool
        Write the report (figures and ArviZ summary); else only the NetCDF results.
    save_inputs : bool
        Also write the inputs (``true_model.nc``, ``initial_model.nc``, ``observed.nc``).
    stop_after : int, optional
        Stop (as if killed) just after this many MAP checkpoints; for tests of resume.
    dtype : torch.dtype, optional
        Floating dtype of the computation (default: torch's default dtype).
    progress, log_fn
        Progress messages, and where they go (default: the ``probinv.workflow`` logger at INFO level).
    backend : {"torch", "jax"}, optional
        Overrides ``[inference].backend`` (see :func:`run_inversion`).

    Returns
    -------
    RunResult
        Writes ``posterior.nc`` (the posterior, with the observed data, the configuration and the forward operator's
        description as attributes) and ``map.nc``, plus the report's files.
    """
    # under torchrun (WORLD_SIZE > 1) every rank runs this function: the likelihood is sharded over the ranks' shots,
    # NUTS chains are spread over them, and only rank 0 writes the results and the report
    distributed.init_from_env()
    main = distributed.is_main()
    say = (log_fn or log.info) if main else log.debug
    progress = progress and main
    inf = dict(cfg.inference)
    inf.update({k: v for k, v in (("method", method), ("steps", steps), ("backend", backend)) if v})
    try:  # before the work; a configuration problem (the command exits with status 2), whichever value overrode it
        _check_backend(inf["backend"], inf["method"])
    except ValueError as exc:
        raise ConfigError([f"[inference]: {exc}"], cfg.source) from None
    jax_problem = jax_backend_problem(cfg.physics.name, cfg.likelihood.name,
                                      tuple(s[len("prior."):] for s in cfg.sections if s.startswith("prior.")))
    if inf["backend"] == "jax" and inf["method"] == "nuts" and jax_problem:
        raise ConfigError([f"--backend jax: {jax_problem}"], cfg.source)
    out = io.check_output_dir(_out_dir(cfg, out_dir))  # before the work: nothing written, no traceback
    setup = resolve(cfg, dtype=dtype)
    obs = load_observed(cfg, setup)  # checks the data file before the output folder is created
    out.mkdir(parents=True, exist_ok=True)
    setup, provenance = obs.setup, cfg.to_json()
    files: dict[str, Path] = {}
    if obs.simulation is not None:
        say(f"simulated observed data; noise sigma = {obs.sigma:.4g}")
    if save_inputs and main:
        files.update(write_inputs(out, obs, config=provenance, clean=False, figures=False))
    model = build_config_model(cfg, setup, obs.data, obs.sigma)
    say(f"method {inf['method']}, {inf['steps']} MAP steps, output {out}/")
    # each rank keeps its own checkpoints (its RNG and sampler states): --resume needs the same number of ranks
    ckdir = out / "checkpoints" / f"rank{distributed.rank()}" if distributed.is_active() else out / "checkpoints"
    res = run_inversion(model, method=inf["method"], optimizer=inf["optimizer"], steps=inf["steps"], lr=inf["lr"],
                        rank=inf["rank"], num_samples=inf["num_samples"], warmup=inf["warmup"],
                        num_chains=inf["num_chains"], max_tree_depth=inf["max_tree_depth"],
                        n_particles=inf["n_particles"], seed=inf["seed"], checkpoint_dir=ckdir,
                        checkpoint_every=cfg.output.checkpoint_every, resume=resume, stop_after=stop_after,
                        progress=progress, log_fn=say, backend=inf["backend"])
    post, acq = res.posterior, setup.acquisition
    post.observed_data = obs.data
    post.dt = acq.dt
    if cfg.likelihood.name not in ("gaussian", "student_t"):
        # the misfit likelihoods describe transformed data (delays, log amplitude ratios, tempered misfits), not the
        # recorded samples: replicated traces would not be a posterior predictive of the data they score
        say(f"no posterior predictive check: the {cfg.likelihood.name} likelihood does not model the recorded samples")
    elif main and post.num_chains * post.num_draws > 1:
        # replicated data of PREDICTIVE_DRAWS posterior draws (+ noise) for the report's posterior predictive check
        try:
            post.add_posterior_predictive(model, max_draws=-(-PREDICTIVE_DRAWS // post.num_chains), noise=True,
                                          seed=inf["seed"])
        except NotImplementedError as exc:  # a tempered likelihood cannot simulate data
            say(f"no posterior predictive check: {exc}")
    for p in (post, res.map):
        # the inference layer records its model's operator too; this keeps files complete with any version of it
        p.attrs.update(probinv_config=provenance, **_likelihood_attrs(cfg, obs.sigma, obs.simulation is not None))
        p.attrs.setdefault("forward", _forward_attr(setup))
    if main:
        write_posterior(post, out / "posterior.nc", data_units=obs.units)
        write_posterior(res.map, out / "map.nc", data_units=obs.units)
    files["posterior"], files["map"] = out / "posterior.nc", out / "map.nc"
    truth = dict(setup.true) if obs.simulation is not None else None
    lit = (_illumination(model, res.map, inf["seed"], say)
           if post.num_chains * post.num_draws > 1 and not distributed.is_active() else None)
    verdict = post.verdict(model=model, truth=truth, illumination=lit)
    if figures and main:
        files.update(_write_run_report(out, res, setup, obs, model, verdict, truth, lit))
    distributed.barrier()  # the other ranks return once rank 0's files are complete
    return RunResult(obs, res, files, verdict, lit)


def _illumination(model, map_post, seed: int, say) -> dict | None:
    """The illumination map of every field at the MAP point (:func:`probinv.diagnostics.illumination`)."""
    fields_, latents = diagnostics.posterior_point(map_post)
    try:
        return diagnostics.illumination(model, fields_, latents, probes=ILLUMINATION_PROBES, seed=seed)
    except (RuntimeError, NotImplementedError) as exc:  # an operator without a gradient, a noise model without whiten
        say(f"no illumination map (the verdict's informativeness is over all pixels): {exc}")
        return None


def _write_run_report(out: Path, res: InversionResult, setup: Setup, obs: Observed, model, verdict,
                      truth: dict | None, illumination: dict | None = None) -> dict[str, Path]:
    """The report of a run: :func:`write_report` of the first field (the physics' velocity) into ``out`` and of
    every further field (vs, rho, q) into ``out/<field>/`` (maps, std, summary.txt in the field's units).

    The gathers figure compares time series; the frequency-domain physics have spectra and get none.
    """
    post, acq = res.posterior, setup.acquisition
    names = setup.fields
    map_fields = {n: res.map.mean(n) for n in names}
    time_data = not setup.frequency_domain
    with torch.no_grad():
        predicted = setup.forward(map_fields) if time_data else None
    files = {}
    for i, name in enumerate(names):
        first = i == 0
        written = write_report(out if first else out / name, post, dx=setup.dx,
                               true=truth[name] if truth is not None else None, initial=setup.initial[name],
                               map_field=map_fields[name], observed=obs.data if first and time_data else None,
                               predicted=predicted if first else None, dt=acq.dt, loss=res.loss if first else None,
                               receiver_x=acq.receiver_locations[0, :, 1] * setup.dx,
                               source_x=float(acq.source_locations[0, 0, 1]) * setup.dx, model=model, name=name,
                               verdict=verdict, predictive_check=first,
                               illumination=(illumination or {}).get(name))
        files.update(written if first else {f"{k}_{name}": v for k, v in written.items()})
    return files


def report(result: str | Path, out_dir: str | Path | None = None) -> tuple[Any, dict[str, Path]]:
    """``probinv report``: figures and the ArviZ summary of a posterior file (default: ``<result>_report/``).

    Returns the :class:`probinv.inference.Posterior` and ``{what: path}`` of the files written.
    """
    path = Path(result)
    what = "a posterior written by `probinv invert` or `probinv demo`, e.g. probinv-demo/posterior.nc"
    if path.is_dir():
        raise IsADirectoryError(f"result {str(path)!r} is a folder, not a file: give the posterior file inside it "
                                f"({what})")
    if not path.is_file():
        raise FileNotFoundError(f"no such result file: {str(path)!r} ({what})")
    out = io.check_output_dir(Path(out_dir) if out_dir else path.parent / f"{path.stem}_report", "report folder")
    post = _read_posterior(path, what)
    names = [n for n in ("vp", "vs", "rho", "q") if n in post.field_names]
    if not names:
        raise io.InputError(f"{str(path)!r} has no vp, vs, rho or q field (fields: {list(post.field_names)}): probinv "
                            f"report draws the posteriors of these fields; give {what}")
    if post.dx is None:
        raise io.InputError(f"{str(path)!r} carries no grid spacing dx: it was not written by probinv; give {what}")
    # the velocity first (into the report folder), every further field into its own sub-folder
    first = next(n for n in ("vp", "vs") if n in names) if {"vp", "vs"} & set(names) else names[0]
    files = write_report(out, post, dx=post.dx, loss=post.attrs.get("loss_history"), name=first)
    for name in names:
        if name != first:
            files.update({f"{k}_{name}": v for k, v in write_report(out / name, post, dx=post.dx, name=name).items()})
    return post, files


def _read_posterior(path: Path, what: str):
    """:meth:`Posterior.from_netcdf`, after checking that ``path`` is a readable NetCDF file holding a posterior."""
    try:
        with netCDF4.Dataset(path, "r") as ds:
            groups, attrs = set(ds.groups), set(ds.ncattrs())
    except OSError as exc:  # empty, truncated, not NetCDF
        size = path.stat().st_size
        state = "is empty (0 bytes)" if size == 0 else f"is not a readable NetCDF file ({size} bytes: truncated?)"
        raise io.InputError(f"result {str(path)!r} {state}: {exc}; give {what}") from None
    lacks = ["the group 'posterior'"] if "posterior" not in groups else []
    missing = [k for k in ("method", "field_names", "attrs_json") if k not in attrs]
    lacks += [f"the attribute(s) {missing}"] if missing else []
    if lacks:
        kind = "a model file (probinv.io.write_model)" if {"z", "x"} <= _variables(path) else "not a posterior"
        raise io.InputError(f"result {str(path)!r} is {kind}: it lacks {' and '.join(lacks)} of a posterior file; "
                            f"give {what}")
    return inference.Posterior.from_netcdf(path)


def _variables(path: Path) -> set:
    with netCDF4.Dataset(path, "r") as ds:
        return set(ds.variables)
