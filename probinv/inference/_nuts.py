"""NUTS initialised at the MAP point and preconditioned by the Laplace approximation."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping

import pyro
import torch
from pyro.infer.mcmc import NUTS
from tqdm import tqdm

from .._files import atomic_path
from ._common import (
    Layout,
    check_model,
    check_nuts_settings,
    describe_forward,
    init_values,
    log,
    make_potential,
    prototype_trace,
    resolve_data,
    samples_from_unconstrained,
)
from ._laplace import laplace
from ._posterior import Posterior

__all__ = ["nuts"]


def _save_atomic(obj, path):
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def nuts(model, data: torch.Tensor | None = None, *, num_samples: int = 500, warmup_steps: int = 500,
         num_chains: int = 2, precondition: str | None = "laplace", laplace_posterior: Posterior | None = None,
         init: Mapping | None = None, max_tree_depth: int = 8, target_accept_prob: float = 0.8,
         adapt_mass_matrix: bool = True, seed: int = 0, checkpoint: str | os.PathLike | None = None,
         progress_bar: bool = False, posterior_predictive: bool = False, laplace_kwargs: Mapping | None = None
         ) -> Posterior:
    r"""No-U-Turn sampling of the full-data posterior, preconditioned by the Laplace approximation.

    With ``precondition="laplace"`` the chains run in the Laplace-whitened coordinates ``w`` of the whitened latent
    sites, :math:`z = z^* + C^{1/2} w` (:math:`z^*` the MAP point, :math:`C` the low-rank Laplace covariance, so the
    target is close to :math:`N(0, I)` in ``w``), with the other latent sites (latent sigma, box or flat fields) in
    Pyro's unconstrained space around their MAP value. This removes the stiffness of the whitened posterior (measured
    condition numbers ~1e5 on small acoustic problems) so that NUTS takes short trees with step sizes O(1).
    Pyro's step-size (and diagonal mass-matrix) adaptation then runs during warm-up. Each chain starts at its own
    draw from the Laplace approximation (over-dispersed starts for r-hat). ``precondition=None`` samples Pyro's
    unconstrained space directly (started at the MAP point or ``init``), for comparison.

    Chains run one after another (Pyro runs chains sequentially on few cores anyway). With ``checkpoint=path``, each
    finished chain is saved (atomically) and a re-run with the same arguments resumes after the last finished chain,
    giving the same result as an uninterrupted run (chain ``c`` is seeded with ``seed + c``).

    Parameters
    ----------
    model : SeismicModel
    data : Tensor, optional
    num_samples, warmup_steps : int
        Kept draws and warm-up (adaptation) transitions per chain.
    num_chains : int
    precondition : {"laplace", None}
    laplace_posterior : Posterior, optional
        A :func:`probinv.inference.laplace` result to reuse; computed with ``laplace_kwargs`` when omitted.
    init : dict, optional
        Starting point when ``precondition=None`` (as for :func:`probinv.inference.map`).
    max_tree_depth : int
    target_accept_prob : float
    adapt_mass_matrix : bool
        Diagonal mass-matrix adaptation on top of the preconditioning.
    seed : int
    checkpoint : path, optional
        File for per-chain checkpoints (resume).
    progress_bar : bool
        One progress bar per chain (tqdm on standard error, only on a terminal): transitions done, rate, ETA, the
        phase (warm-up or sampling), the step size, the gradients of the last transition and the divergences so far.
    posterior_predictive : bool
        Also store noise-free predicted data for the last 100 draws of each chain.

    Returns
    -------
    Posterior
        Samples ``[chain, draw, ...]``; ``sample_stats``: ``diverging``, ``n_steps`` (gradient evaluations per
        transition), ``tree_depth`` (= ceil(log2(n_steps))), ``step_size``, ``acceptance_rate``, ``lp`` (log joint in
        the sampled coordinates); ``attrs``: ``n_gradients`` (warm-up included), ``seconds``.
    """
    model = check_model(model)
    data = resolve_data(model, data)
    forward = describe_forward(model.forward)  # before the work: a bad description fails fast
    check_nuts_settings(num_samples, warmup_steps, num_chains, max_tree_depth, precondition, target_accept_prob)

    gauss = None
    if precondition == "laplace":
        if laplace_posterior is None:
            laplace_posterior = laplace(model, data, **dict(laplace_kwargs or {}))
        if laplace_posterior.gaussian is None:
            raise ValueError("laplace_posterior has no Gaussian approximation (not a probinv.inference.laplace result)")
        gauss = laplace_posterior.gaussian
        centre = {k: v[0, 0] for k, v in laplace_posterior.samples.items()}
        wsites = list(laplace_posterior.attrs["whitened_sites"])
        i = 0
        for s in wsites:  # the centre is the MAP point (the Gaussian's loc), not a draw
            k = centre[s].numel()
            centre[s] = gauss.loc[i:i + k].reshape(centre[s].shape)
            i += k
        values = {model.latent_site(n): centre[model.latent_site(n)] if model.kinds[n] == "whitened" else centre[n]
                  for n in model.field_names}
        values.update({k: v for k, v in centre.items() if k not in values and k not in model.field_names})
    else:
        wsites = []
        values = init_values(model, data, init)
    trace = prototype_trace(model, data, values)
    layout = Layout(trace)
    u0 = layout.unconstrained_flat({n: trace.nodes[n]["value"] for n in layout.names}).detach()
    slices = layout.slices()
    potential_u = make_potential(model, data, layout)

    # u = u0 + S w, S = C^{1/2} on the whitened block(s), identity elsewhere
    wsl = [slices[s] for s in wsites]

    widx = torch.cat([torch.arange(s.start, s.stop, device=u0.device) for s in wsl]) if wsl else None

    def to_u(w):
        if gauss is None:
            return u0 + w
        return u0 + w.index_copy(-1, widx, gauss.sqrt_matvec(w.index_select(-1, widx)))

    counter = [0]

    def potential(params):
        counter[0] += 1
        return potential_u(to_u(params["w"]))

    state = {"chains": []}
    config = None
    if checkpoint is not None:
        # the potential at the start point fingerprints the model, data and noise model: a checkpoint of another
        # problem with the same sampler settings must not be resumed
        with torch.no_grad():
            config = _config(num_samples, warmup_steps, seed, precondition, u0.numel(), float(potential_u(u0)))
    if checkpoint is not None and os.path.exists(checkpoint):
        state = torch.load(checkpoint, weights_only=False)
        if state.get("config") != config:
            raise ValueError(f"checkpoint {os.fspath(checkpoint)!r} was written for another problem or other "
                             f"settings ({state.get('config')}, now {config}); delete it or pass another path")
        log.info("NUTS: resuming after %d finished chain(s) from %s", len(state["chains"]), checkpoint)
    state["config"] = config
    t0 = time.perf_counter()
    for chain in range(len(state["chains"]), num_chains):
        pyro.set_rng_seed(seed + chain)
        gen = torch.Generator(device=u0.device).manual_seed(seed + chain)
        w0 = torch.zeros_like(u0)
        if gauss is not None:  # start at a draw of the Laplace approximation (over-dispersed starts)
            for s in wsl:
                w0[s] = torch.randn(s.stop - s.start, dtype=u0.dtype, device=u0.device, generator=gen)
        kernel = NUTS(potential_fn=potential, max_tree_depth=max_tree_depth, target_accept_prob=target_accept_prob,
                      adapt_step_size=True, adapt_mass_matrix=adapt_mass_matrix, full_mass=False)
        kernel.initial_params = {"w": w0}
        counter[0] = 0
        kernel.setup(warmup_steps)
        params = kernel.initial_params
        draws, stats = [], {k: [] for k in ("diverging", "n_steps", "tree_depth", "step_size", "acceptance_rate",
                                            "lp")}
        tc = time.perf_counter()
        # a chain takes minutes on small grids: without a bar nothing is printed until it ends (issue 15)
        bar = tqdm(range(warmup_steps + num_samples), desc=f"NUTS chain {chain + 1}/{num_chains}", unit="draw",
                   leave=False, disable=None if progress_bar else True)
        for t in bar:
            n_div, c_before = len(kernel._divergences), counter[0]
            mean_before = kernel._mean_accept_prob
            step_size = kernel.step_size
            params = kernel.sample(params)
            if t >= warmup_steps:
                n = t - warmup_steps + 1
                n_steps = counter[0] - c_before
                draws.append(params["w"].detach().clone())
                stats["diverging"].append(len(kernel._divergences) > n_div)
                stats["n_steps"].append(n_steps)
                stats["tree_depth"].append(math.ceil(math.log2(max(n_steps, 1))))
                stats["step_size"].append(step_size)
                stats["acceptance_rate"].append(kernel._mean_accept_prob * n - mean_before * (n - 1))
                stats["lp"].append(-float(kernel._potential_energy_last))
            if t == warmup_steps - 1:
                warm_grads = counter[0]
            if not bar.disable:
                bar.set_postfix_str(f"{'warm-up' if t < warmup_steps else 'sampling'}, step size "
                                    f"{kernel.step_size:.3g}, {counter[0] - c_before} gradients, "
                                    f"{len(kernel._divergences)} divergences", refresh=False)
        bar.close()
        kernel.cleanup()
        n_grad_total = counter[0]
        w = torch.stack(draws)
        with torch.no_grad():
            u = to_u(w)
        state["chains"].append({
            "u": u, "stats": {k: torch.tensor(v) for k, v in stats.items()}, "n_gradients": n_grad_total,
            "n_gradients_sampling": n_grad_total - (warm_grads if warmup_steps else 0),
            "seconds": time.perf_counter() - tc})
        log.info("NUTS chain %d: %d gradients, %d divergences, %.1f s", chain, n_grad_total,
                 int(sum(stats["diverging"])), state["chains"][-1]["seconds"])
        if checkpoint is not None:
            _save_atomic(state, checkpoint)
    u = torch.stack([c["u"] for c in state["chains"]])
    samples = samples_from_unconstrained(model, layout, u)
    stats = {k: torch.stack([c["stats"][k] for c in state["chains"]]) for k in state["chains"][0]["stats"]}
    stats["step_size"] = stats["step_size"].to(torch.float64)
    stats["acceptance_rate"] = stats["acceptance_rate"].to(torch.float64)
    stats["lp"] = stats["lp"].to(torch.float64)
    attrs = {"precondition": str(precondition), "num_warmup": warmup_steps, "num_samples": num_samples,
             "n_gradients": int(sum(c["n_gradients"] for c in state["chains"])),
             "n_gradients_sampling": int(sum(c["n_gradients_sampling"] for c in state["chains"])),
             "seconds": float(sum(c["seconds"] for c in state["chains"])), "seed": seed,
             "max_tree_depth": max_tree_depth, "forward": forward}
    post = Posterior(samples, field_names=model.field_names, method="nuts", dx=model.dx, sample_stats=stats,
                     observed_data=data, gaussian=gauss, attrs=attrs, dt=getattr(model.forward, "dt", None))
    # truncated whitened priors: the discarded modes' variance belongs in the reported uncertainty
    post.add_discarded_variance(model)
    if posterior_predictive:
        post.add_posterior_predictive(model, max_draws=100)
    log.info("NUTS: %d chains in %.1f s", num_chains, time.perf_counter() - t0)
    return post


def _config(num_samples, warmup_steps, seed, precondition, dim, potential_at_start):
    return {"num_samples": num_samples, "warmup_steps": warmup_steps, "seed": seed,
            "precondition": str(precondition), "dim": dim, "potential_at_start": f"{potential_at_start:.10g}"}
