"""MAP estimation (= FWI for a flat prior): AutoDelta + Adam, or L-BFGS."""
from __future__ import annotations

import math
import time
from typing import Mapping

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta

from ._common import (check_model, check_positive_float, check_positive_int, init_strategy, init_values, log,
                      progress, resolve_data)
from ._posterior import Posterior

__all__ = ["map"]


def map(model, data: torch.Tensor | None = None, *, optimizer: str = "adam", num_steps: int = 500, lr: float = 0.01,
        init: Mapping | None = None, subsample_size: int | None = None, tol: float | None = None,
        history_every: int = 1, progress_bar: bool = False, callback=None) -> Posterior:
    """Maximum a posteriori estimate; with a flat prior this **is** deterministic FWI.

    The guide is ``AutoDelta``: one point per latent site, optimised in Pyro's unconstrained space (for a
    :class:`probinv.fields.BoxField` the point goes through the same sigmoid as the box; for
    :class:`probinv.models.Flat` it is the field itself).

    Parameters
    ----------
    model : SeismicModel
        From :func:`probinv.models.build_model`.
    data : Tensor, optional
        Observed data ``[n_shots, ...]``; default ``model.data``.
    optimizer : {"adam", "lbfgs"}
        ``"adam"``: ``pyro.optim.Adam`` (= ``torch.optim.Adam`` per parameter: the papers' optimiser) on the
        negative ELBO (= negative log joint for a point guide). ``"lbfgs"``: ``torch.optim.LBFGS`` with strong-Wolfe
        line search on the full-data negative log joint (tens of gradients on problems where Adam stalls).
    num_steps : int
        Adam steps, or L-BFGS iterations (each may take several gradients; the count is in ``attrs``).
    lr : float
        Learning rate (Adam) or initial step (L-BFGS, use 1).
    init : dict, optional
        Starting point: fields by name (whitened priors are inverted) or latent site values. Required for
        :class:`~probinv.models.Flat` priors.
    subsample_size : int, optional
        Shots per Adam step (stochastic mini-batch FWI); default the model's.
    tol : float, optional
        Stop when the relative loss change between steps is below ``tol`` (L-BFGS: its ``tolerance_change``).
    history_every : int
        Record the loss every ``history_every`` steps in ``attrs["loss"]``.
    progress_bar : bool
        Show a tqdm bar.
    callback : callable, optional
        ``callback(step, loss, fields)`` after each step (e.g. to log model misfit).

    Returns
    -------
    Posterior
        One chain with one draw (the MAP point); ``attrs`` holds ``loss`` history, ``n_gradients``, ``seconds``.
    """
    model = check_model(model)
    data = resolve_data(model, data)
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")
    check_positive_int("num_steps", num_steps)
    check_positive_float("lr", lr)
    check_positive_int("history_every", history_every)
    if tol is not None:
        check_positive_float("tol", tol)
    with pyro.get_param_store().scope():  # never clobber (nor reuse) the user's parameters
        return _map(model, data, optimizer, num_steps, lr, init, subsample_size, tol, history_every,
                    progress_bar, callback)


def _map(model, data, optimizer, num_steps, lr, init, subsample_size, tol, history_every, progress_bar, callback):
    values = init_values(model, data, init)
    guide = AutoDelta(model, init_loc_fn=init_strategy(values))
    elbo = Trace_ELBO()
    losses, n_grad, t0 = [], 0, time.perf_counter()
    kwargs = {} if subsample_size is None else {"subsample_size": subsample_size}
    if optimizer == "adam":
        optim = pyro.optim.Adam({"lr": lr})
        svi = SVI(model, guide, optim, elbo)
        prev = None
        for step in progress(range(num_steps), progress_bar, "MAP (Adam)"):
            loss = svi.step(data, **kwargs)
            n_grad += 1
            if step % history_every == 0:
                losses.append(float(loss))
            if callback is not None:
                callback(step, loss, _fields(model, guide, data))
            if not math.isfinite(loss):
                raise FloatingPointError(f"MAP loss became {loss} at step {step}: lower lr (now {lr})")
            if tol is not None and prev is not None and abs(prev - loss) <= tol * max(abs(loss), 1e-300):
                break
            prev = loss
    else:
        guide(data, full=True)  # create the parameters
        params = list(guide.parameters())
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=num_steps, line_search_fn="strong_wolfe",
                                tolerance_change=tol if tol is not None else 1e-12, tolerance_grad=1e-10,
                                history_size=50)

        def closure():
            nonlocal n_grad
            opt.zero_grad()
            loss = elbo.differentiable_loss(model, guide, data, full=True)
            loss.backward()
            n_grad += 1
            losses.append(float(loss.detach()))
            return loss

        opt.step(closure)
    seconds = time.perf_counter() - t0
    log.info("MAP (%s): %d gradients in %.2f s, final loss %.6g", optimizer, n_grad, seconds, losses[-1])
    latents = {k: v.detach() for k, v in guide.median(data).items()}
    with torch.no_grad():
        fields = model.fields_from_latents(latents)
    samples = {k: v[None, None] for k, v in {**latents, **fields}.items()}
    return Posterior(samples, field_names=model.field_names, method="map", dx=model.dx, observed_data=data,
                     attrs={"optimizer": optimizer, "lr": lr, "num_steps": num_steps, "loss": losses,
                            "n_gradients": n_grad, "seconds": seconds},
                     dt=getattr(model.forward, "dt", None))


def _fields(model, guide, data):
    with torch.no_grad():
        return model.fields_from_latents(guide.median(data))
