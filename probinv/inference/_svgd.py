"""Stein variational gradient descent (Pyro's SVGD): the variational FWI of Zhang & Curtis (2020)."""
from __future__ import annotations

import math
import time
from collections.abc import Mapping

import pyro
import torch
from pyro.infer import SVGD, RBFSteinKernel

from ..validation import check_int, check_scalar
from ._common import (
    Layout,
    check_model,
    describe_forward,
    init_values,
    log,
    progress,
    prototype_trace,
    resolve_data,
    samples_from_unconstrained,
)
from ._posterior import Posterior

__all__ = ["svgd"]


def svgd(model, data: torch.Tensor | None = None, *, num_particles: int = 32, num_steps: int = 500,
         lr: float = 0.05, laplace_posterior: Posterior | None = None, init: Mapping | None = None,
         init_scale: float = 1.0, bandwidth_factor: float | None = None, tol: float | None = None,
         subsample_size: int | None = None, seed: int = 0, progress_bar: bool = False,
         posterior_predictive: bool = False) -> Posterior:
    r"""Stein variational gradient descent with Pyro's ``SVGD`` and an RBF kernel (median bandwidth heuristic).

    All particles go through the forward operator as **one batch of models** ``(num_particles, nz, nx)`` (the
    model runs inside Pyro's vectorising particle plate), so a batched solver propagates them together.

    Initial particles: draws of the Laplace approximation when ``laplace_posterior`` is given (recommended: the
    particles then start where the posterior mass is), otherwise ``init`` (or the prior mean) plus
    ``init_scale`` times standard normal noise in Pyro's unconstrained (whitened) space.

    Parameters
    ----------
    model : SeismicModel
    data : Tensor, optional
    num_particles : int (>= 2)
    num_steps : int
    lr : float
        Adam learning rate on the particles.
    laplace_posterior : Posterior, optional
    init : dict, optional
    init_scale : float
    bandwidth_factor : float, optional
        Multiplies the RBF kernel's median-heuristic bandwidth.
    tol : float, optional
        Stop when the mean squared SVGD update (Pyro's returned statistic) falls below ``tol``.
    subsample_size : int, optional
        Shots per step.
    seed : int

    Returns
    -------
    Posterior
        One chain whose draws are the particles; ``attrs``: ``n_steps``, ``n_gradients`` (particle gradients =
        steps x particles), ``seconds``, ``update`` (history of the mean squared update).
    """
    model = check_model(model)
    data = resolve_data(model, data)
    forward = describe_forward(model.forward)  # before the work: a bad description fails fast
    check_int("num_particles", num_particles, minimum=2)
    check_int("num_steps", num_steps)
    check_scalar("lr", lr)
    check_scalar("init_scale", init_scale)
    if tol is not None:
        check_scalar("tol", tol)
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(seed)
        gen = torch.Generator(device=data.device).manual_seed(seed)
        if laplace_posterior is not None:
            if laplace_posterior.gaussian is None:
                raise ValueError("laplace_posterior has no Gaussian approximation (not a laplace() result)")
            values = {k: v[0, 0] for k, v in laplace_posterior.samples.items() if k not in model.field_names}
            for name in model.field_names:
                if model.kinds[name] != "whitened":
                    values[model.latent_site(name)] = laplace_posterior.samples[name][0, 0]
        else:
            values = init_values(model, data, init)
        trace = prototype_trace(model, data, values)
        layout = Layout(trace)
        if len(layout.names) != 1:
            # Pyro's SVGD packs the particles site by site and reshapes them to (num_particles, -1): with several
            # latent sites the kernel would compare mixed rows, so only one latent site is supported.
            raise ValueError(f"svgd needs a model with exactly one latent site (one field, known noise); this model "
                             f"has {layout.names}")
        u0 = layout.unconstrained_flat({n: trace.nodes[n]["value"] for n in layout.names}).detach()
        particles = u0 + init_scale * torch.randn((num_particles, u0.numel()), dtype=u0.dtype, device=u0.device,
                                                  generator=gen)
        if laplace_posterior is not None:
            g = laplace_posterior.gaussian
            zs = g.sample(num_particles, generator=gen)
            sl = layout.slices()
            i = 0
            for s in laplace_posterior.attrs["whitened_sites"]:
                k = sl[s].stop - sl[s].start
                particles[:, sl[s]] = zs[:, i:i + k]
                i += k
        kernel = RBFSteinKernel(bandwidth_factor=bandwidth_factor)
        runner = SVGD(model, kernel, pyro.optim.Adam({"lr": lr}), num_particles=num_particles,
                      max_plate_nesting=1)
        # pre-create the particle parameter (the guide's own init would sample improper flat priors)
        pyro.param("svgd_particles", particles.clone().reshape(-1))
        kw = {"full": True} if subsample_size is None else {"subsample_size": subsample_size}
        history, t0 = [], time.perf_counter()
        for step in progress(range(num_steps), progress_bar, "SVGD"):
            sq = runner.step(data, **kw)
            upd = float(sum(sq.values()) / max(len(sq), 1))
            history.append(upd)
            if not math.isfinite(upd):
                raise FloatingPointError(f"SVGD update became {upd} at step {step}: lower lr (now {lr})")
            if tol is not None and upd < tol:
                break
        seconds = time.perf_counter() - t0
        u = pyro.param("svgd_particles").detach().reshape(num_particles, -1)
    log.info("SVGD: %d particles, %d steps, %.1f s", num_particles, len(history), seconds)
    samples = samples_from_unconstrained(model, layout, u)
    samples = {k: v[None] for k, v in samples.items()}
    post = Posterior(samples, field_names=model.field_names, method="svgd", dx=model.dx, observed_data=data,
                     dt=getattr(model.forward, "dt", None),
                     attrs={"num_particles": num_particles, "n_steps": len(history),
                            "n_gradients": len(history) * num_particles, "seconds": seconds, "update": history,
                            "lr": lr, "forward": forward})
    if posterior_predictive:
        post.add_posterior_predictive(model, max_draws=100)
    return post
