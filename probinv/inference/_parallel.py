"""NUTS chains in parallel over the ranks of a ``torch.distributed`` process group (one chain or a group per rank)."""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from .. import distributed
from ..validation import check_int
from ._common import check_model, resolve_data
from ._laplace import laplace
from ._nuts import nuts
from ._posterior import Posterior

__all__ = ["nuts_parallel"]


def nuts_parallel(model, data: torch.Tensor | None = None, *, num_chains: int = 2, seed: int = 0,
                  precondition: str | None = "laplace", laplace_posterior: Posterior | None = None,
                  laplace_kwargs: Mapping | None = None, checkpoint: str | os.PathLike | None = None,
                  posterior_predictive: bool = False, **nuts_kwargs) -> Posterior:
    """:func:`probinv.inference.nuts` with its chains spread over the ranks, merged into one Posterior on every rank.

    Chain ``c`` runs on rank ``c % world_size`` as ``nuts(..., num_chains=1, seed=seed + c)``, which is how
    ``nuts(num_chains=C, seed=seed)`` seeds its chain ``c``: the merged Posterior equals the sequential one
    (same draws, same sample statistics; ``attrs["seconds"]`` is the sum of the chains' times as there). Inside the
    chains each rank evaluates the whole likelihood itself (:func:`probinv.distributed.local`); the Laplace
    preconditioner, when not given, is computed once before, by all ranks together (shot-sharded). Every rank must
    call this function with the same arguments. Without a process group the chains run one after another here.

    Parameters
    ----------
    model, data
        As for :func:`probinv.inference.nuts`.
    num_chains : int
        Chains in all (spread round-robin over the ranks).
    seed : int
        Chain ``c`` is seeded with ``seed + c``.
    precondition, laplace_posterior, laplace_kwargs
        As for :func:`probinv.inference.nuts`.
    checkpoint : path, optional
        Per-chain checkpoints ``<checkpoint>.chain<c>`` (a re-run with the same number of chains resumes each).
    posterior_predictive : bool
        Noise-free predicted data for the last 100 draws of each chain (computed after the merge).
    **nuts_kwargs
        Other keyword arguments of :func:`probinv.inference.nuts` (``num_samples``, ``warmup_steps``, ...).

    Returns
    -------
    Posterior
        ``method="nuts"``, chains in order ``0 .. num_chains - 1``; ``attrs["chain_ranks"]`` records the rank of each.
    """
    model = check_model(model)
    data = resolve_data(model, data)
    check_int("num_chains", num_chains)
    for key in ("num_chains", "seed", "init_chain"):
        if key in nuts_kwargs:
            raise TypeError(f"nuts_parallel got an unexpected keyword argument {key!r}")
    if precondition == "laplace" and laplace_posterior is None:
        laplace_posterior = laplace(model, data, **dict(laplace_kwargs or {}))
    world, me = distributed.world_size(), distributed.rank()
    mine = {}
    with distributed.local():
        for c in range(me, num_chains, world):
            path = None if checkpoint is None else f"{os.fspath(checkpoint)}.chain{c}"
            post = nuts(model, data, num_chains=1, seed=seed + c, precondition=precondition,
                        laplace_posterior=laplace_posterior, checkpoint=path, **nuts_kwargs)
            mine[c] = ({k: v.cpu() for k, v in post.samples.items()},
                       {k: v.cpu() for k, v in post.sample_stats.items()}, post.attrs, me)
    chains = {}
    for part in distributed.all_gather_object(mine):
        chains.update(part)
    first = chains[0]
    order = range(num_chains)
    samples = {k: torch.cat([chains[c][0][k] for c in order]).to(data.device) for k in first[0]}
    stats = {k: torch.cat([chains[c][1][k] for c in order]).to(data.device) for k in first[1]}
    attrs = dict(first[2])
    attrs.update(seed=seed, chain_ranks=[chains[c][3] for c in order],
                 n_gradients=int(sum(chains[c][2]["n_gradients"] for c in order)),
                 n_gradients_sampling=int(sum(chains[c][2]["n_gradients_sampling"] for c in order)),
                 seconds=float(sum(chains[c][2]["seconds"] for c in order)))
    gauss = None if laplace_posterior is None or precondition != "laplace" else laplace_posterior.gaussian
    post = Posterior(samples, field_names=model.field_names, method="nuts", dx=model.dx, sample_stats=stats,
                     observed_data=data, gaussian=gauss, attrs=attrs, dt=getattr(model.forward, "dt", None))
    post.add_discarded_variance(model)  # as inference.nuts does
    if posterior_predictive:
        post.add_posterior_predictive(model, max_draws=100)
    return post

