"""Stochastic variational inference with Gaussian guides initialised from the MAP / Laplace solution."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoMultivariateNormal, AutoNormal
from tqdm import tqdm

from .._files import atomic_path
from ..validation import check_int, check_scalar
from ._common import check_model, describe_forward, init_strategy, init_values, log, resolve_data
from ._posterior import Posterior

__all__ = ["svi"]

_GUIDES = {"normal": AutoNormal, "lowrank": AutoLowRankMultivariateNormal, "multivariate": AutoMultivariateNormal}


def _laplace_init(model, laplace_posterior):
    """Latent values at the Laplace centre and the Laplace covariance per whitened site block."""
    g = laplace_posterior.gaussian
    sites = list(laplace_posterior.attrs["whitened_sites"])
    values = {k: v[0, 0] for k, v in laplace_posterior.samples.items() if k not in model.field_names}
    for name in model.field_names:
        if model.kinds[name] != "whitened":
            values[model.latent_site(name)] = laplace_posterior.samples[name][0, 0]
    i = 0
    for s in sites:
        k = values[s].numel()
        values[s] = g.loc[i:i + k].reshape(values[s].shape)
        i += k
    return values, sites, g.covariance()


def svi(model, data: torch.Tensor | None = None, *, guide: str = "multivariate", num_steps: int = 2000,
        lr: float = 0.01, lr_final: float | None = None, num_particles: int = 1, init: Mapping | None = None,
        laplace_posterior: Posterior | None = None, init_scale: float = 0.1, rank: int | None = None,
        tol: float | None = 1e-4, window: int = 100, num_samples: int = 1000, subsample_size: int | None = None,
        seed: int = 0, progress_bar: bool = False, posterior_predictive: bool = False,
        checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 100) -> Posterior:
    r"""Variational inference (Trace_ELBO) with an ``AutoNormal``, ``AutoLowRankMultivariateNormal`` or
    ``AutoMultivariateNormal`` guide.

    Initialisation: with ``laplace_posterior`` the guide's location is the MAP point and its scale the Laplace
    covariance (exact for ``"multivariate"``: Cholesky factor; its diagonal for ``"normal"`` and ``"lowrank"``); the
    scales of other latent sites start at ``init_scale``. Without it, the location is ``init`` (or the prior mean) and
    every scale ``init_scale``. A good start matters: on stiff problems guides left at ``init_scale`` never move.

    Learning rate: ``ClippedAdam`` with exponential decay from ``lr`` to ``lr_final`` over ``num_steps``.
    Convergence: stop when the mean ELBO loss of the last ``window`` steps changed by less than ``tol`` (relative to
    its magnitude, or absolutely below 1) from the previous window.

    Parameters
    ----------
    model : SeismicModel
    data : Tensor, optional
    guide : {"normal", "lowrank", "multivariate"}
    num_steps : int
    lr, lr_final : float
        Initial and final learning rates (default ``lr_final = lr / 10``).
    num_particles : int
        ELBO Monte-Carlo particles per step.
    init : dict, optional
    laplace_posterior : Posterior, optional
    init_scale : float
    rank : int, optional
        Rank of the low-rank guide (default ~sqrt of the latent dimension).
    tol : float or None
        Convergence tolerance (None: run all steps).
    window : int
    num_samples : int
        Draws from the fitted guide stored in the Posterior (one chain).
    subsample_size : int, optional
        Shots per ELBO evaluation.
    seed : int
    progress_bar : bool
        A progress bar (tqdm on standard error, only on a terminal) with the rate and ETA.
    checkpoint : path, optional
        File that receives the whole optimisation state (guide parameters, optimiser moments, loss history, random
        number generator) every ``checkpoint_every`` steps and at the end, atomically. If it exists when ``svi`` is
        called with the same settings, the run resumes from it and gives the same result as an uninterrupted run.
    checkpoint_every : int

    Returns
    -------
    Posterior
        ``attrs``: ``loss`` (ELBO loss history), ``n_steps``, ``n_gradients`` (steps x particles), ``converged``,
        ``seconds``.
    """
    model = check_model(model)
    data = resolve_data(model, data)
    forward = describe_forward(model.forward)  # before the work: a bad description fails fast
    if guide not in _GUIDES:
        raise ValueError(f"guide must be one of {sorted(_GUIDES)}, got {guide!r}")
    check_int("num_steps", num_steps)
    check_scalar("lr", lr)
    lr_final = lr / 10 if lr_final is None else check_scalar("lr_final", lr_final)
    check_int("num_particles", num_particles)
    check_scalar("init_scale", init_scale)
    check_int("window", window)
    check_int("num_samples", num_samples)
    if tol is not None:
        check_scalar("tol", tol)
    check_int("checkpoint_every", checkpoint_every)
    settings = {"guide": guide, "num_steps": num_steps, "lr": lr, "lr_final": lr_final, "num_particles": num_particles,
                "tol": tol, "window": window, "seed": seed, "subsample_size": subsample_size,
                "laplace_init": laplace_posterior is not None, "init_scale": init_scale, "rank": rank}
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(seed)
        if laplace_posterior is not None:
            if laplace_posterior.gaussian is None:
                raise ValueError("laplace_posterior has no Gaussian approximation (not a laplace() result)")
            values, wsites, cov = _laplace_init(model, laplace_posterior)
        else:
            values, wsites, cov = init_values(model, data, init), [], None
        kwargs = {"init_loc_fn": init_strategy(values)}
        if guide != "multivariate" or cov is None:
            kwargs["init_scale"] = init_scale
        if guide == "lowrank" and rank is not None:
            kwargs["rank"] = check_int("rank", rank)
        g = _GUIDES[guide](model, **kwargs)
        g(data, full=True)  # build the parameters
        if cov is not None:
            _set_scales(g, guide, wsites, cov, init_scale)
        gamma = (lr_final / lr) ** (1.0 / num_steps)
        optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": gamma})
        run = SVI(model, g, optim, Trace_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1,
                                              max_plate_nesting=1))
        losses, converged, t0, start = [], False, time.perf_counter(), 0
        if checkpoint is not None and os.path.exists(checkpoint):
            state = torch.load(checkpoint, weights_only=False)
            if state["settings"] != settings:
                raise ValueError(f"checkpoint {os.fspath(checkpoint)!r} was written with other settings "
                                 f"({state['settings']}), not {settings}: use the same options or another file")
            # copy into the existing tensors: the guide module holds the very tensors of the param store, and
            # ParamStore.set_state would replace them by new ones the module never sees
            current = dict(pyro.get_param_store().named_parameters())
            with torch.no_grad():
                for name, value in state["params"]["params"].items():
                    current[name].copy_(value)
            optim.set_state(state["optim"])
            torch.set_rng_state(state["rng"])
            losses, converged, start = list(state["losses"]), state["converged"], len(state["losses"])
            log.info("SVI: resuming at step %d from %s", start, checkpoint)

        def save():
            if checkpoint is not None:
                with atomic_path(checkpoint) as tmp:
                    torch.save({"settings": settings, "params": pyro.get_param_store().get_state(),
                                "optim": optim.get_state(), "rng": torch.get_rng_state(), "losses": losses,
                                "converged": converged}, tmp)

        kw = {} if subsample_size is None else {"subsample_size": subsample_size}
        # tqdm: rate and ETA; only on a terminal (disable=None), not in logs or captured output
        bar = tqdm(range(start, num_steps), desc=f"SVI ({guide})", unit="step", initial=start, total=num_steps,
                   leave=False, disable=None if progress_bar else True)
        for step in bar:
            if converged:
                break
            loss = run.step(data, **kw)
            if not math.isfinite(loss):
                raise FloatingPointError(f"ELBO loss became {loss} at step {step}: lower lr (now {lr})")
            losses.append(float(loss))
            if tol is not None and len(losses) >= 2 * window and len(losses) % window == 0:
                a = sum(losses[-2 * window:-window]) / window
                b = sum(losses[-window:]) / window
                if abs(a - b) <= tol * max(abs(b), 1.0):
                    converged = True
            if (step + 1) % checkpoint_every == 0 or converged:
                save()
            if converged:
                break
        bar.close()
        save()
        seconds = time.perf_counter() - t0
        log.info("SVI (%s): %d steps, %.1f s, converged=%s, loss %.6g", guide, len(losses), seconds, converged,
                 losses[-1])
        latents = _guide_draws(g, data, num_samples)
        fields = model.fields_from_latents(latents)
    samples = {k: v[None] for k, v in {**latents, **fields}.items()}
    post = Posterior(samples, field_names=model.field_names, method="svi", dx=model.dx, observed_data=data,
                     dt=getattr(model.forward, "dt", None),
                     attrs={"guide": guide, "loss": losses, "n_steps": len(losses),
                            "n_gradients": len(losses) * num_particles, "converged": converged,
                            "seconds": seconds, "lr": lr, "lr_final": lr_final,
                            "forward": forward})
    # truncated whitened priors: the discarded modes' variance belongs in the reported uncertainty
    post.add_discarded_variance(model)
    if posterior_predictive:
        post.add_posterior_predictive(model, max_draws=100)
    return post


def _set_scales(g, guide, wsites, cov, init_scale):
    """Write the Laplace covariance (whitened block) into the guide's scale parameters."""
    shapes = g._unconstrained_shapes if hasattr(g, "_unconstrained_shapes") else None
    if guide == "normal":
        i = 0
        sd = cov.diagonal().sqrt()
        for s in wsites:
            shape = getattr(g.locs, s).shape
            k = int(torch.Size(shape).numel())
            with torch.no_grad():
                setattr(g.scales, s, sd[i:i + k].reshape(shape).detach().clone())
            i += k
        return
    # AutoContinuous: the packed latent follows _unconstrained_shapes' order
    n = g.latent_dim
    dtype, device = cov.dtype, cov.device
    full = torch.eye(n, dtype=dtype, device=device) * init_scale**2
    pos, offs = {}, 0
    for name, shape in shapes.items():
        k = int(torch.Size(shape).numel())
        pos[name] = (offs, offs + k)
        offs += k
    idx = torch.cat([torch.arange(*pos[s], device=device) for s in wsites])
    full[idx[:, None], idx[None, :]] = cov
    with torch.no_grad():
        if guide == "multivariate":
            chol = torch.linalg.cholesky(full)
            d = chol.diagonal()
            g.scale = d.detach().clone()
            g.scale_tril = (chol / d[:, None]).detach().clone()
        else:
            g.scale = full.diagonal().sqrt().detach().clone()
            g.cov_factor.data.mul_(1e-3)  # start at the (diagonal) Laplace scale


def _guide_draws(g, data, num_samples, chunk=1000):
    """``num_samples`` draws of every latent site from the fitted guide, vectorised in a plate at dim -2."""
    out = []
    with torch.no_grad():
        for start in range(0, num_samples, chunk):
            n = min(chunk, num_samples - start)
            with pyro.plate("_guide_draws", n, dim=-2):
                tr = pyro.poutine.trace(g).get_trace(data, full=True)
            out.append({name: site["value"].reshape((n,) + tuple(site["value"].shape[2:]))
                        for name, site in tr.nodes.items()
                        if site["type"] == "sample" and not site["is_observed"]
                        and not site["infer"].get("is_auxiliary")})
    return {k: torch.cat([o[k] for o in out]) for k in out[0]}
