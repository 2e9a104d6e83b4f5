"""Stein variational gradient descent (Pyro's SVGD): the variational FWI of Zhang & Curtis (2020)."""
from __future__ import annotations

import math
import time
from collections.abc import Mapping

import pyro
import torch
from pyro import poutine
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


def _particle_rows(layout: Layout, n: int, device) -> torch.Tensor:
    """Index ``[n, D]`` that gathers particle ``p``'s latent vector (the layout's site order) from Pyro's flat
    ``svgd_particles``, which holds the sites one after the other, each for all particles (``[n, k_s]`` blocks).
    """
    rows, offset = [], 0
    for k in layout.sizes:
        rows.append(offset + torch.arange(n, device=device)[:, None] * k + torch.arange(k, device=device)[None, :])
        offset += n * k
    return torch.cat(rows, dim=1)


class _SiteSafeSVGD(SVGD):
    """Pyro's SVGD step with the particles gathered per particle (``rows``, :func:`_particle_rows`).

    Pyro reshapes its flat particle vector to ``(num_particles, -1)``, which with several latent sites (a field and
    a latent noise sigma) mixes the particles' rows; this step computes the same update on the correctly gathered
    ``[num_particles, D]`` matrix and scatters it back.
    """

    rows: torch.Tensor

    def step(self, *args, **kwargs):
        with torch.enable_grad(), poutine.trace(param_only=True) as param_capture:
            loss = self.loss(self.model, self.guide, *args, **kwargs)
            loss.backward()
        particles = pyro.param("svgd_particles").unconstrained()
        x = particles[self.rows]
        grad = particles.grad[self.rows]
        log_kernel, kernel_grad = self.kernel.log_kernel_and_grad(x)
        # univariate mode (Pyro's default): a kernel per coordinate
        kernel = log_kernel.exp()
        update = (torch.einsum("nmd,md->nd", kernel, grad) + torch.einsum("nmd,nmd->nd", kernel, kernel_grad))
        new_grad = torch.empty_like(particles.grad)
        new_grad[self.rows.reshape(-1)] = (update / self.num_particles).reshape(-1)
        particles.grad = new_grad
        squared = {site["name"]: value.mean().item() for site, value in self.guide._unpack_latent(new_grad.pow(2.0))}
        params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
        self.optim(params)
        pyro.infer.util.zero_grads(params)
        return squared


def svgd(model, data: torch.Tensor | None = None, *, num_particles: int = 32, num_steps: int = 500,
         lr: float = 0.05, laplace_posterior: Posterior | None = None, init: Mapping | None = None,
         init_scale: float = 1.0, bandwidth_factor: float | None = None, tol: float | None = None,
         subsample_size: int | None = None, seed: int = 0, progress_bar: bool = False,
         posterior_predictive: bool = False) -> Posterior:
    r"""Stein variational gradient descent with Pyro's ``SVGD`` and an RBF kernel (median bandwidth heuristic).

    Any number of latent sites (several fields, a latent noise sigma): each particle is the concatenation of all
    of them in Pyro's unconstrained space, and the kernel compares whole particles.

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
        perm = _particle_rows(layout, num_particles, data.device)
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
        runner = _SiteSafeSVGD(model, kernel, pyro.optim.Adam({"lr": lr}), num_particles=num_particles,
                               max_plate_nesting=1)
        runner.rows = perm
        # pre-create the particle parameter (the guide's own init would sample improper flat priors), in Pyro's
        # site-major layout
        flat = torch.empty(particles.numel(), dtype=particles.dtype, device=particles.device)
        flat[perm.reshape(-1)] = particles.reshape(-1)
        pyro.param("svgd_particles", flat)
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
        u = pyro.param("svgd_particles").detach()[perm]
    log.info("SVGD: %d particles, %d steps, %.1f s", num_particles, len(history), seconds)
    samples = samples_from_unconstrained(model, layout, u)
    samples = {k: v[None] for k, v in samples.items()}
    post = Posterior(samples, field_names=model.field_names, method="svgd", dx=model.dx, observed_data=data,
                     dt=getattr(model.forward, "dt", None),
                     attrs={"num_particles": num_particles, "n_steps": len(history),
                            "n_gradients": len(history) * num_particles, "seconds": seconds, "update": history,
                            "lr": lr, "forward": forward})
    post.add_discarded_variance(model)
    if posterior_predictive:
        post.add_posterior_predictive(model, max_draws=100)
    return post
