"""NUTS through NumPyro, preconditioned by the Laplace approximation of the PyTorch path; returns a ``Posterior``."""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import torch
from jax.flatten_util import ravel_pytree
from numpyro.infer import NUTS
from numpyro.infer.initialization import init_to_value
from numpyro.infer.util import initialize_model

from .. import inference as _inference
from .._files import atomic_path
from ..inference import Posterior
from ..inference._common import check_nuts_settings, describe_forward
from ..models import SeismicModel
from ._config import enable_x64
from ._model import NumPyroModel, from_torch_model

enable_x64()

__all__ = ["nuts"]


def _torch(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x))


def nuts(model: NumPyroModel, data=None, *, num_samples: int = 500, warmup_steps: int = 500, num_chains: int = 2,
         precondition: str | None = "laplace", laplace_posterior: Posterior | None = None, max_tree_depth: int = 8,
         target_accept_prob: float = 0.8, adapt_mass_matrix: bool = True, seed: int = 0,
         checkpoint: str | os.PathLike | None = None, chain_method: str | None = None,
         laplace_kwargs: dict | None = None) -> Posterior:
    r"""No-U-Turn sampling of the full-data posterior with NumPyro: the JAX twin of :func:`probinv.inference.nuts`.

    With ``precondition="laplace"`` the chains run in the Laplace-whitened coordinates ``w`` of the whitened latent
    sites, :math:`z = z^* + C^{1/2} w` (``z*`` and the low-rank ``C`` of a :func:`probinv.inference.laplace` result,
    the PyTorch path's Gauss-Newton Laplace), the other latent sites (a latent ``sigma``) in NumPyro's unconstrained
    space around their MAP value; each chain starts at its own draw of the Laplace approximation. The whole
    trajectory (leapfrog steps, the solver's time loop, the gradient) is one compiled XLA program. Step-size and
    diagonal mass-matrix adaptation run during warm-up.

    Chains: ``chain_method="parallel"`` needs ``num_chains`` JAX devices: on CPU call
    ``numpyro.set_host_device_count(num_chains)`` before JAX initialises (before any JAX computation in the
    process). The default picks ``"parallel"`` when enough devices exist, ``"sequential"`` otherwise. With
    ``checkpoint=path`` the chains run one after another, each saved (atomically, ``.npz``) when finished; a re-run with
    the same arguments resumes after the last finished chain (chain ``c`` uses the key ``PRNGKey(seed + c)`` either
    way).

    Parameters
    ----------
    model : NumPyroModel or SeismicModel
        From :func:`probinv.jax.from_torch_model` or :func:`probinv.jax.build_model`; a PyTorch
        :class:`probinv.models.SeismicModel` is converted with :func:`probinv.jax.from_torch_model` (the entry point
        of ``backend = "jax"``: the MAP and Laplace stages stay on the PyTorch path, NUTS runs here).
    data : array, optional
        Observed data; default ``model.data``.
    num_samples, warmup_steps, num_chains : int
    precondition : {"laplace", None}
    laplace_posterior : Posterior, optional
        A :func:`probinv.inference.laplace` result on the same problem; computed on ``model.torch_model`` (with
        ``laplace_kwargs``) when omitted.
    max_tree_depth : int
    target_accept_prob : float
    adapt_mass_matrix : bool
    seed : int
    checkpoint : path, optional
    chain_method : {"parallel", "sequential", "vectorized"}, optional

    Returns
    -------
    Posterior
        The same class as the PyTorch path: samples ``[chain, draw, ...]`` of the latent sites and the fields (torch
        tensors), ``sample_stats`` ``diverging``, ``n_steps``, ``tree_depth``, ``step_size``, ``acceptance_rate``,
        ``lp``; ``attrs``: ``backend="jax"``, ``n_gradients`` (warm-up included), ``n_gradients_sampling``,
        ``seconds`` (warm-up and sampling, compilation included), ``chain_method``.
    """
    if isinstance(model, SeismicModel):
        model = from_torch_model(model)
    if not isinstance(model, NumPyroModel):
        raise TypeError(f"model must be a probinv.jax.NumPyroModel or a probinv.models.SeismicModel, got "
                        f"{type(model).__name__}")
    data = model.data if data is None else jnp.asarray(data.detach().cpu().numpy() if isinstance(
        data, torch.Tensor) else np.asarray(data))
    if data is None:
        raise ValueError("no data: pass data= or build the model with data")
    check_nuts_settings(num_samples, warmup_steps, num_chains, max_tree_depth, precondition, target_accept_prob)
    if chain_method not in (None, "parallel", "sequential", "vectorized"):
        raise ValueError(f"chain_method must be None, 'parallel', 'sequential' or 'vectorized', got {chain_method!r}")
    if chain_method is None:
        chain_method = "parallel" if jax.local_device_count() >= num_chains else "sequential"

    wsites = [model.latent_site(n) for n in model.field_names]
    values = {}
    gauss = None
    if precondition == "laplace":
        if laplace_posterior is None:
            if model.torch_model is None:
                raise ValueError("precondition='laplace' needs laplace_posterior (probinv.inference.laplace on the "
                                 "PyTorch model) for a model not built by probinv.jax.from_torch_model")
            laplace_posterior = _inference.laplace(model.torch_model, torch.from_numpy(np.array(data)),
                                                   **dict(laplace_kwargs or {}))
        if laplace_posterior.gaussian is None:
            raise ValueError("laplace_posterior has no Gaussian approximation (not a probinv.inference.laplace result)")
        gauss = laplace_posterior.gaussian
        if list(laplace_posterior.attrs["whitened_sites"]) != wsites:
            raise ValueError(f"laplace_posterior's whitened sites {laplace_posterior.attrs['whitened_sites']} are not "
                             f"the model's {wsites}")
        loc = gauss.loc.detach().cpu().numpy()
        i = 0
        for s in wsites:
            k = int(model.priors[s[:-2]].latent_dim)
            values[s] = jnp.asarray(loc[i:i + k])
            i += k
        for k, v in laplace_posterior.samples.items():
            if k not in values and k not in model.field_names:
                values[k] = jnp.asarray(v[0, 0].detach().cpu().numpy())
    dtype = next(iter(model.priors.values())).modes.dtype
    init_strategy = init_to_value(values=values) if values else numpyro.infer.init_to_median
    # initialise inside one jit: run eagerly, NumPyro's initialisation evaluates the model op by op (one XLA
    # compilation per primitive: ~15 s of the 16 x 16 acoustic problem's set-up); its potential and postprocess
    # functions are built from the model and the supports only, so they hold no tracer
    box = {}

    def _init(key):
        box["info"] = initialize_model(key, model, model_kwargs={"data": data, "full": True},
                                       init_strategy=init_strategy, validate_grad=False)
        return box["info"].param_info.z

    u0_tree = jax.jit(_init)(jax.random.PRNGKey(seed))
    info = box["info"]
    u0, unravel = ravel_pytree(u0_tree)
    # positions of the whitened sites in the flat unconstrained vector
    offsets, i = {}, 0
    for name in sorted(u0_tree):  # ravel_pytree orders dict keys sorted
        n = int(np.prod(np.shape(u0_tree[name])))
        offsets[name] = (i, n)
        i += n
    widx = np.concatenate([np.arange(offsets[s][0], offsets[s][0] + offsets[s][1]) for s in wsites])
    if gauss is not None:
        vecs = jnp.asarray(gauss.eigvecs.detach().cpu().numpy(), dtype)
        dfac = jnp.asarray((1 - torch.rsqrt(1 + gauss.eigvals)).detach().cpu().numpy(), dtype)

    def to_u(w):
        if gauss is None:
            return u0 + w
        ww = w[widx]
        return u0 + w.at[widx].set(ww - ((ww @ vecs) * dfac) @ vecs.T)

    def potential(w):
        # NumPyro's NUTS state (step size, mass matrix, momenta) is float64 under jax_enable_x64: the chains move in
        # float64 coordinates and the model computes in its own dtype, so a float32 model does not mix float32 and
        # float64 in the branches of the tree building (a TypeError in lax.cond otherwise)
        return info.potential_fn(unravel(to_u(w.astype(u0.dtype)))).astype(jnp.float64)

    kernel = NUTS(potential_fn=potential, max_tree_depth=max_tree_depth, target_accept_prob=target_accept_prob,
                  adapt_step_size=True, adapt_mass_matrix=adapt_mass_matrix, dense_mass=False)
    n_iter = warmup_steps + num_samples

    def one_chain(key_w):
        key, w = key_w
        # the kernel's initialisation inside the compiled program too (eager, NumPyro evaluates the initial
        # potential and gradient op by op: ~9 s per chain on the 16 x 16 acoustic problem)
        state = kernel.init(key, warmup_steps, init_params=w)

        def body(st, _):
            st = kernel.sample(st, (), {})
            return st, (st.z, st.num_steps, st.diverging, st.adapt_state.step_size, st.accept_prob,
                        st.potential_energy)

        return jax.lax.scan(body, state, None, length=n_iter)[1]

    # the whole run of every chain is one compiled program (numpyro's MCMC compiles warm-up and sampling
    # separately, and again for every chain of the "sequential" method: seconds per compilation)
    runners = {"sequential": jax.jit(lambda kw: jax.lax.map(one_chain, kw)),
               "vectorized": jax.jit(jax.vmap(one_chain)), "parallel": jax.pmap(one_chain)}

    def run(keys, w0, method):
        tc = time.perf_counter()
        out = [np.asarray(x) for x in runners[method]((keys, w0))]
        ws, nsteps, div, step, acc, pe = out
        extra = {"num_steps": nsteps[:, warmup_steps:], "diverging": div[:, warmup_steps:],
                 "adapt_state.step_size": step[:, warmup_steps:], "accept_prob": acc[:, warmup_steps:],
                 "potential_energy": pe[:, warmup_steps:]}
        return ws[:, warmup_steps:], extra, int(nsteps[:, :warmup_steps].sum()), time.perf_counter() - tc

    keys = jnp.stack([jax.random.PRNGKey(seed + c) for c in range(num_chains)])
    w0 = np.zeros((num_chains, u0.shape[0]), dtype=np.float64)
    if gauss is not None:  # over-dispersed starts: a draw of the Laplace approximation per chain
        for c in range(num_chains):
            w0[c, widx] = np.asarray(jax.random.normal(jax.random.PRNGKey(10_000 + seed + c), (len(widx),),
                                                       jnp.float64))
    w0 = jnp.asarray(w0)
    chains = []
    if checkpoint is None:
        w, extra, warm, secs = run(keys, w0, chain_method)
        chains = [{"w": w[c], **{k: v[c] for k, v in extra.items()}} for c in range(num_chains)]
        n_warm, seconds = warm, secs
    else:
        config = np.array(repr((num_samples, warmup_steps, seed, str(precondition), int(u0.shape[0]),
                                f"{float(potential(jnp.zeros(u0.shape, jnp.float64))):.10g}")))
        n_warm, seconds = 0, 0.0
        for c in range(num_chains):
            path = f"{os.fspath(checkpoint)}.chain{c}.npz"
            if os.path.exists(path):
                with np.load(path) as f:
                    if str(f["config"]) != str(config):
                        raise ValueError(f"checkpoint {path!r} was written for another problem or other settings; "
                                         f"delete it or pass another path")
                    ch = {k: f[k] for k in f.files if k != "config"}
            else:
                w, extra, warm, secs = run(keys[c:c + 1], w0[c:c + 1], "sequential")
                ch = {"w": w[0], **{k: v[0] for k, v in extra.items()}, "n_warm": np.array(warm),
                      "seconds": np.array(secs)}
                with atomic_path(path) as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez(fh, config=config, **ch)
            n_warm += int(ch.pop("n_warm"))
            seconds += float(ch.pop("seconds"))
            chains.append(ch)
    w = jnp.asarray(np.stack([c["w"] for c in chains]))
    u = jax.vmap(jax.vmap(to_u))(w.astype(u0.dtype))
    constrained = jax.jit(jax.vmap(jax.vmap(lambda uu: info.postprocess_fn(unravel(uu)))))(u)
    samples = {k: _torch(v) for k, v in constrained.items() if k != "obs"}
    n_steps = np.stack([c["num_steps"] for c in chains]).astype(np.int64)
    stats = {"diverging": _torch(np.stack([c["diverging"] for c in chains])),
             "n_steps": _torch(n_steps),
             "tree_depth": _torch(np.ceil(np.log2(np.maximum(n_steps, 1))).astype(np.int64)),
             "step_size": _torch(np.stack([c["adapt_state.step_size"] for c in chains]).astype(np.float64)),
             "acceptance_rate": _torch(np.stack([c["accept_prob"] for c in chains]).astype(np.float64)),
             "lp": _torch(-np.stack([c["potential_energy"] for c in chains]).astype(np.float64))}
    n_sampling = int(n_steps.sum())
    attrs = {"backend": "jax", "precondition": str(precondition), "num_warmup": warmup_steps,
             "num_samples": num_samples, "n_gradients": n_warm + n_sampling, "n_gradients_sampling": n_sampling,
             "seconds": seconds, "seed": seed, "max_tree_depth": max_tree_depth, "chain_method": chain_method}
    tm = model.torch_model
    if tm is not None:
        attrs["forward"] = describe_forward(tm.forward)
    return Posterior(samples, field_names=model.field_names, method="nuts", dx=model.dx, sample_stats=stats,
                     observed_data=torch.from_numpy(np.array(data)), gaussian=gauss, attrs=attrs,
                     dt=getattr(model.forward, "dt", None))
