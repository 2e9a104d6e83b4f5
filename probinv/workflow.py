"""The end-to-end steps behind ``probinv simulate / invert / report`` and ``probinv demo``.

Each step is a plain function of tensors and configuration values, so that the CLI, the demo and the notebooks
compose the same code: :func:`simulate` (observed data with noise), :func:`build_prior` and :func:`build_model`
(the Pyro model around the acoustic solver), :func:`run_inversion` (MAP, then Laplace / SVI / SVGD / NUTS, with
checkpoints and resume) and :func:`write_report` (NetCDF posterior, figures, ArviZ summary).

Checkpoints and resume
----------------------
An inversion runs in stages: ``map`` (always first: it is FWI and the starting point of every posterior method),
then the posterior method. MAP runs in blocks of ``checkpoint_every`` optimiser steps; after each block its result
(latent values, loss history, step count) is written atomically to ``checkpoint_map.nc`` and the next block starts
from the previous block's end. The optimiser is restarted at every block boundary: that is part of the algorithm, in
an interrupted and an uninterrupted run alike, so a resumed run gives the same result as an uninterrupted one. The
finished posterior stage is written to ``stage_<method>.nc``. With ``resume=True`` MAP continues from its last block
(a finished MAP is not rerun) and the posterior method runs from the MAP point.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .io import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "InversionResult",
    "Simulation",
    "build_model",
    "build_prior",
    "default_bounds",
    "run_inversion",
    "simulate",
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


def forward_data(v: torch.Tensor, setup, **overrides) -> torch.Tensor:
    """Acoustic pressure data ``[n_shots, n_receivers, nt]`` (or ``[batch, ...]``) of velocity ``v`` in ``setup``."""
    from .physics import acoustic

    acq = setup.acquisition
    opts = {**setup.physics, **overrides}
    return acoustic(v, setup.dx, acq.dt, setup.source_amplitudes.to(v), acq.source_locations.to(v.device),
                    acq.receiver_locations.to(v.device), **opts)


def simulate(setup, *, relative: float = 0.01, sigma: float | None = None, seed: int = 0) -> Simulation:
    """Simulate the true model of ``setup`` and add white Gaussian noise.

    Parameters
    ----------
    setup : probinv.config.Setup
        Models, acquisition, sources and physics options.
    relative : float
        Noise standard deviation as a fraction of the clean data's RMS (used when ``sigma`` is None).
    sigma : float, optional
        Absolute noise standard deviation (data units).
    seed : int
        Seed of the noise (a local generator: the global RNG is untouched).
    """
    with torch.no_grad():
        clean = forward_data(setup.true["vp"], setup)
    rms = float(clean.pow(2).mean().sqrt())
    s = float(sigma) if sigma is not None else relative * rms
    if not (s > 0 and math.isfinite(s)):
        raise ValueError(f"the noise standard deviation must be positive, got {s} (relative = {relative}, data RMS "
                         f"= {rms}); set [noise].relative > 0 or [noise].sigma")
    g = torch.Generator(device=clean.device).manual_seed(int(seed))
    noise = torch.randn(clean.shape, generator=g, dtype=clean.dtype, device=clean.device) * s
    return Simulation(clean=clean, observed=clean + noise, sigma=s)


def default_bounds(initial: torch.Tensor, dx: float, dt: float, accuracy: int) -> tuple[float, float]:
    """Velocity bounds (m/s) of the prior: 0.6 x / 1.4 x the starting model's range, the upper one capped at 98 % of
    the largest velocity the time step keeps stable (so no proposal can make the solver blow up)."""
    from .physics._fd import max_stable_dt_second_order

    v_stable = 2.0 / (dt * math.sqrt(2 * _symbol(accuracy) / dx ** 2))
    assert math.isclose(max_stable_dt_second_order(v_stable, dx, accuracy), dt, rel_tol=1e-9)
    lo = 0.6 * float(initial.min())
    hi = min(1.4 * float(initial.max()), 0.98 * v_stable)
    return float(f"{lo:.4g}"), float(f"{hi:.4g}")


def _symbol(accuracy: int) -> float:
    from .physics._fd import second_derivative_symbol_max

    return second_derivative_symbol_max(accuracy)


def build_prior(prior_cfg: Mapping[str, Any], initial: torch.Tensor, dx: float, *, dt: float, accuracy: int = 4):
    """The velocity prior of a ``[prior]`` configuration section, centred on the starting model.

    ``type = "whitened"``: :class:`probinv.fields.WhitenedField` (Matern / von Karman Gaussian random field with
    mean ``initial``, standard deviation ``std`` m/s, ``n_modes`` Karhunen-Loeve modes, squashed into ``bounds``);
    ``type = "box"``: :class:`probinv.fields.BoxField` (flat within ``bounds`` per pixel).
    """
    from . import fields

    nz, nx = initial.shape
    bounds = prior_cfg.get("bounds") or default_bounds(initial, dx, dt, accuracy)
    if prior_cfg.get("type", "whitened") == "box":
        return fields.BoxField((nz, nx), bounds=tuple(bounds), dtype=initial.dtype, device=initial.device)
    length = prior_cfg.get("correlation_length") or (max(nz, nx) * dx / 6)
    cov = prior_cfg.get("covariance", "matern")
    smooth_kw = {"nu": prior_cfg.get("nu", 1.5)} if cov == "matern" else {"hurst": prior_cfg.get("hurst", 0.5)}
    n_modes = min(int(prior_cfg.get("n_modes") or nz * nx), nz * nx)
    return fields.WhitenedField((nz, nx), dx, covariance=cov, a_z=length, a_x=length, mean=initial,
                                std=float(prior_cfg.get("std", 150.0)), n_modes=n_modes, bounds=tuple(bounds),
                                dtype=initial.dtype, device=initial.device, **smooth_kw)


def build_model(setup, observed: torch.Tensor, sigma: float, prior):
    """Pyro model: ``vp ~ prior``, data ``~ N(acoustic(vp), sigma^2)`` in a plate over shots.

    The absorbing boundary's strength is fixed at the prior's upper velocity bound (``pml_vmax``): with the default
    (each model's own maximum, rounded) the forward map would jump whenever a sample's maximum crosses a multiple of
    100 m/s, which stalls NUTS and L-BFGS."""
    from . import models

    acq = setup.acquisition
    options = dict(setup.physics)
    bounds = getattr(prior, "bounds", None)
    if bounds is not None and "pml_vmax" not in options:
        options["pml_vmax"] = float(torch.as_tensor(bounds[1]).max())
    fwd = models.AcousticForward(dx=setup.dx, dt=acq.dt, source_amplitudes=setup.source_amplitudes.to(observed),
                                 source_locations=acq.source_locations, receiver_locations=acq.receiver_locations,
                                 options=options)
    return models.build_model({"vp": prior}, fwd, observed, noise=models.Gaussian(sigma=float(sigma)), dx=setup.dx)


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


def run_inversion(model, *, method: str = "map", optimizer: str = "adam", steps: int = 200, lr: float = 0.02,
                  num_samples: int = 200,
                  warmup: int = 100, num_chains: int = 2, max_tree_depth: int = 8, n_particles: int = 16, seed: int = 0,
                  rank: int | None = None, jvp_mode: str = "auto", checkpoint_dir: str | Path | None = None,
                  checkpoint_every: int = 25,
                  resume: bool = False, progress: bool = True, stop_after: int | None = None,
                  log_fn: Callable[[str], None] | None = None) -> InversionResult:
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
        MAP steps per block (0: one block).
    resume : bool
        Continue from the checkpoints in ``checkpoint_dir``.
    stop_after : int, optional
        Stop (as if killed) after this many MAP blocks; for tests of resume.
    """
    import pyro

    from . import inference

    say = log_fn or log.info
    if method not in ("map", "laplace", "svi", "svgd", "nuts"):
        raise ValueError(f"method must be one of 'map', 'laplace', 'svi', 'svgd', 'nuts', got {method!r}")
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckdir is not None:
        ckdir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    # ---- stage 1: MAP in blocks; after each block the block's result (latent values, loss history, step count)
    # is written atomically to checkpoint_map.nc, which is also the finished stage once step == steps
    ck_file = ckdir / "checkpoint_map.nc" if ckdir else None
    done, losses, init, map_post = 0, [], None, None
    if resume and ck_file is not None and ck_file.is_file():
        map_post = inference.Posterior.from_netcdf(ck_file)
        done, losses = int(map_post.attrs["step"]), [float(x) for x in map_post.attrs["loss_history"]]
        init = _latent_init(map_post, model)
        say(f"resume: MAP from step {done} of {steps} ({ck_file})")
    elif resume:
        say(f"resume: no MAP checkpoint in {ckdir}; starting from the beginning")
    block = checkpoint_every if checkpoint_every and ckdir is not None else steps
    t0 = time.perf_counter()
    blocks_run = 0
    while done < steps:
        n = min(block, steps - done)
        pyro.set_rng_seed(seed + done)
        map_post = inference.map(model, optimizer=optimizer, num_steps=n, lr=lr if optimizer == "adam" else 1.0,
                                 init=init, progress_bar=False)
        losses += [float(x) for x in map_post.attrs.get("loss", [])]
        done += n
        init = _latent_init(map_post, model)
        map_post.attrs.update(step=done, loss_history=losses)
        if progress:
            say(f"MAP step {done}/{steps}: negative log posterior {losses[-1]:.6g}")
        if ck_file is not None:
            map_post.to_netcdf(ck_file)
        blocks_run += 1
        if stop_after is not None and blocks_run >= stop_after and done < steps:
            raise KeyboardInterrupt(f"stopped after {blocks_run} MAP blocks (stop_after)")
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
    lap = inference.laplace(model, map_posterior=map_post, rank=rank or min(latent_dim, 100),
                            num_samples=num_samples, seed=seed, jvp_mode=jvp_mode)
    post = lap
    if method != "laplace":
        seconds["laplace"] = time.perf_counter() - t0
        say(f"{method}: initialised / preconditioned by the Laplace approximation")
    ck_method = ckdir / f"checkpoint_{method}.pt" if ckdir is not None and method in ("nuts", "svi") else None
    if ck_method is not None and not resume and ck_method.exists():
        ck_method.unlink()  # a fresh run never continues an older run's sampler state
    if method == "nuts":
        post = inference.nuts(model, num_samples=num_samples, warmup_steps=warmup, num_chains=num_chains,
                              laplace_posterior=lap, seed=seed, max_tree_depth=max_tree_depth, checkpoint=ck_method)
    elif method == "svi":
        post = inference.svi(model, laplace_posterior=lap, num_steps=steps, lr=lr if optimizer == "adam" else 0.01,
                             num_samples=num_samples, seed=seed, checkpoint=ck_method,
                             checkpoint_every=checkpoint_every or 100)
    elif method == "svgd":
        post = inference.svgd(model, laplace_posterior=lap, num_particles=n_particles, num_steps=steps,
                              lr=lr if optimizer == "adam" else 0.05, seed=seed)
    seconds[method] = time.perf_counter() - t0
    if ckdir is not None:
        post.to_netcdf(ckdir / f"stage_{method}.nc")
    return InversionResult(map=map_post, posterior=post, loss=losses, seconds=seconds)


def write_report(out_dir: str | Path, posterior, *, dx: float, true: torch.Tensor | None = None,
                 initial: torch.Tensor | None = None, map_field: torch.Tensor | None = None,
                 observed: torch.Tensor | None = None, predicted: torch.Tensor | None = None,
                 dt: float | None = None, loss: list | None = None, receiver_x=None, name: str = "vp",
                 level: float = 0.9) -> dict[str, Path]:
    """Figures and the ArviZ summary of a posterior, written into ``out_dir``.

    Writes ``models.png`` (true / initial / MAP / posterior mean, those given), ``uncertainty.png`` (mean, std and
    ``level`` credible-interval width), ``gathers.png`` (observed vs predicted, first shot), ``misfit.png`` (loss
    history), ``summary.csv`` and ``summary.txt`` (ArviZ summary of selected pixels), and ``trace.png`` /
    ``rank.png`` when the posterior has several draws per chain. Returns ``{what: path}``.
    """
    from . import plotting

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
    files["models"] = plotting.save_figure(plotting.plot_models(panels, dx, ncols=min(len(panels), 4)),
                                           out / "models.png")
    several = posterior.num_chains * posterior.num_draws > 1
    if several:
        lo, hi = posterior.credible_interval(name, level)
        files["uncertainty"] = plotting.save_figure(
            plotting.plot_posterior_maps(mean, posterior.std(name), dx, lower=lo, upper=hi, level=level),
            out / "uncertainty.png")
    if observed is not None and predicted is not None and dt is not None:
        files["gathers"] = plotting.save_figure(
            plotting.plot_gather_comparison(observed, predicted, dt, receiver_x=receiver_x), out / "gathers.png")
    if loss:
        files["misfit"] = plotting.save_figure(plotting.plot_misfit({"MAP": loss}, ylabel="negative log posterior"),
                                               out / "misfit.png")
    nz, nx = mean.shape
    pixels = [(nz // 2, nx // 2), (nz // 4, nx // 4), (nz // 4, 3 * nx // 4), (3 * nz // 4, nx // 2)]
    labels = [f"{name}[{iz},{ix}]" for iz, ix in pixels]
    if several:
        import arviz as az
        import xarray as xr

        idata = posterior.to_arviz()
        da = idata.posterior[name]
        sel = {lab: da.isel(z=iz, x=ix, drop=True) for lab, (iz, ix) in zip(labels, pixels)}
        # r-hat and ESS need at least 2 chains of 4 draws; a single chain (Laplace) gets the statistics only
        diag = posterior.num_chains >= 2 and posterior.num_draws >= 4
        table = az.summary(xr.Dataset(sel), kind="all" if diag else "stats")
    else:  # one point (MAP): its values
        import pandas as pd

        table = pd.DataFrame({"value": [float(mean[iz, ix]) for iz, ix in pixels]}, index=labels)
    if true is not None:
        table["true"] = [float(true[iz, ix]) for iz, ix in pixels]
    with atomic_path(out / "summary.csv") as tmp:
        table.to_csv(tmp)
    with atomic_path(out / "summary.txt") as tmp:
        tmp.write_text(
            f"ArviZ summary of {posterior.method} at selected pixels (z, x grid indices; m/s)\n{table.to_string()}\n")
    files["summary"] = out / "summary.txt"
    if several and posterior.num_draws > 3:
        for kind in ("trace", "rank"):
            files[kind] = plotting.save_figure(plotting.plot_arviz(idata, kind, var_name=name, pixels=pixels[:3]),
                                               out / f"{kind}.png")
    return files
