"""MAP estimation (= FWI for a flat prior): AutoDelta + Adam, or L-BFGS, with resumable checkpoints."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta

from .. import diagnostics
from .._files import atomic_path
from ..validation import check_int, check_scalar
from ._common import (
    Layout,
    check_model,
    describe_forward,
    init_strategy,
    init_values,
    log,
    progress,
    prototype_trace,
    resolve_data,
)
from ._posterior import Posterior

__all__ = ["map"]


def map(model, data: torch.Tensor | None = None, *, optimizer: str = "adam", num_steps: int = 500, lr: float = 0.01,
        init: Mapping | None = None, subsample_size: int | None = None, tol: float | None = None,
        history_every: int = 1, progress_bar: bool = False, callback=None,
        checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 25) -> Posterior:
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
        line search on the full-data negative log joint (tens of gradients on problems where Adam stalls), history
        50, at most ``num_steps * 5 // 4`` gradients in all (torch's default budget for ``max_iter = num_steps``).
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
        Record the loss every ``history_every`` steps in ``attrs["loss"]`` (Adam; L-BFGS records every gradient).
    progress_bar : bool
        Show a tqdm bar.
    callback : callable, optional
        ``callback(step, loss, fields)`` after each Adam step or L-BFGS iteration (e.g. to log model misfit), before
        the step's checkpoint is written.
    checkpoint : path, optional
        File that receives the whole optimisation state every ``checkpoint_every`` steps and at the end, atomically:
        the latent values, the optimiser's state (Adam's moments; L-BFGS's curvature history, last direction and
        step, and the loss and gradient at the current point, so that no gradient is recomputed), the step and
        gradient counts, the loss history and the random number generator. If the file exists when ``map`` is
        called, the run resumes from it (``init`` is then ignored; optimizer, lr, tol, history_every and
        subsample_size must be the same, and the latent sites too: ``ValueError`` otherwise) and gives
        bit for bit the result of an uninterrupted run, whatever ``checkpoint_every``; a finished run returns its
        result again. ``num_steps`` may be raised on resume to continue a run; the continuation equals a longer
        uninterrupted run exactly for Adam, and for L-BFGS when the shorter run's gradient budget
        (``num_steps * 5 // 4``) did not cut a line search short.
    checkpoint_every : int
        Steps (Adam) or iterations (L-BFGS) between checkpoints; it changes nothing in the result.

    Returns
    -------
    Posterior
        One chain with one draw (the MAP point); ``attrs`` holds ``loss`` history, ``n_gradients``, ``n_steps``
        (steps or iterations done), ``converged`` (stopped by ``tol`` or L-BFGS's own tests before ``num_steps``),
        ``seconds``, ``forward`` (the forward operator's description, JSON) and the convergence record that
        :func:`probinv.diagnostics.verdict` reads (:func:`convergence_checks`: ``relative_gradient``,
        ``loss_change``, ``chi2_per_datum``; two extra full-data gradients).
    """
    model = check_model(model)
    data = resolve_data(model, data)
    forward = describe_forward(model.forward)  # before the work: a bad description fails fast
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")
    check_int("num_steps", num_steps)
    check_scalar("lr", lr)
    check_int("history_every", history_every)
    if tol is not None:
        check_scalar("tol", tol)
    check_int("checkpoint_every", checkpoint_every)
    settings = {"optimizer": optimizer, "lr": lr, "tol": tol, "history_every": history_every,
                "subsample_size": subsample_size}
    with pyro.get_param_store().scope():  # never clobber (nor reuse) the user's parameters
        run = _Run(model, data, optimizer, num_steps, lr, init, subsample_size, tol, history_every, progress_bar,
                   callback, checkpoint, checkpoint_every, settings, forward)
        return run.result()


class _Run:
    """One MAP optimisation with its resumable state."""

    def __init__(self, model, data, optimizer, num_steps, lr, init, subsample_size, tol, history_every,
                 progress_bar, callback, checkpoint, checkpoint_every, settings, forward):
        self.model, self.data, self.optimizer, self.num_steps, self.lr = model, data, optimizer, num_steps, lr
        self.tol, self.history_every, self.progress_bar, self.callback = tol, history_every, progress_bar, callback
        self.checkpoint, self.checkpoint_every, self.settings = checkpoint, checkpoint_every, settings
        self.forward = forward  # the forward operator's description (JSON)
        self.kwargs = {} if subsample_size is None else {"subsample_size": subsample_size}
        values = init_values(model, data, init)
        # the starting point, for the relative gradient norm: a copy (the guide's parameters are updated in place)
        self.start = {k: v.clone() for k, v in values.items()}
        self.guide = AutoDelta(model, init_loc_fn=init_strategy(values))
        self.elbo = Trace_ELBO()
        self.losses, self.n_grad, self.steps, self.converged, self.seconds = [], 0, 0, False, 0.0
        self.saved = None
        if checkpoint is not None and os.path.exists(checkpoint):
            self.saved = torch.load(checkpoint, weights_only=False)
            if self.saved["settings"] != settings:
                raise ValueError(f"checkpoint {os.fspath(checkpoint)!r} was written with other settings "
                                 f"({self.saved['settings']}), not {settings}: use the same options or another file")

    # ------------------------------------------------------------------ checkpoints
    def _restore_params(self):
        """Copy the saved latent values into the guide's parameters (the module holds the param store's tensors,
        which ``ParamStore.set_state`` would replace by new ones the module never sees).
        """
        current = dict(pyro.get_param_store().named_parameters())
        saved = self.saved["params"]["params"]
        if sorted(saved) != sorted(current):
            raise ValueError(f"checkpoint {os.fspath(self.checkpoint)!r} holds the parameters {sorted(saved)}, this "
                             f"model has {sorted(current)}: it was written for another model")
        with torch.no_grad():
            for name, value in saved.items():
                current[name].copy_(value)
        self.losses, self.n_grad = list(self.saved["losses"]), self.saved["n_gradients"]
        self.steps, self.converged = self.saved["steps"], self.saved["converged"]
        self.seconds = self.saved["seconds"]
        torch.set_rng_state(self.saved["rng"])
        log.info("MAP: resuming after %d steps (%d gradients) from %s", self.steps, self.n_grad, self.checkpoint)

    def _save(self, optim_state, extra=None):
        if self.checkpoint is None:
            return
        state = {"settings": self.settings, "params": pyro.get_param_store().get_state(), "optim": optim_state,
                 "rng": torch.get_rng_state(), "losses": self.losses, "n_gradients": self.n_grad,
                 "steps": self.steps, "converged": self.converged,
                 "seconds": self.seconds + time.perf_counter() - self.t0}
        state.update(extra or {})
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)

    # ------------------------------------------------------------------ optimisers
    def _adam(self):
        optim = pyro.optim.Adam({"lr": self.lr})
        svi = SVI(self.model, self.guide, optim, self.elbo)
        prev = None
        if self.saved is not None:
            self.guide(self.data, **self.kwargs)  # create the parameters (the RNG is restored afterwards)
            self._restore_params()
            optim.set_state(self.saved["optim"])
            prev = self.saved["prev"]
        for step in progress(range(self.steps, self.num_steps), self.progress_bar, "MAP (Adam)"):
            if self.converged:
                break
            loss = svi.step(self.data, **self.kwargs)
            self.n_grad += 1
            self.steps = step + 1
            if step % self.history_every == 0:
                self.losses.append(float(loss))
            if self.callback is not None:
                self.callback(step, loss, _fields(self.model, self.guide, self.data))
            if not math.isfinite(loss):
                raise FloatingPointError(f"MAP loss became {loss} at step {step}: lower lr (now {self.lr})")
            if self.tol is not None and prev is not None and abs(prev - loss) <= self.tol * max(abs(loss), 1e-300):
                self.converged = True
            prev = loss
            if self.steps % self.checkpoint_every == 0 or self.converged:
                self._save(optim.get_state(), {"prev": prev})
        self._save(optim.get_state(), {"prev": prev})

    def _lbfgs(self):
        """L-BFGS one iteration per ``step()`` call, exactly as one ``step()`` with ``max_iter = num_steps``.

        torch's LBFGS keeps its curvature history, direction and step in its state between calls; what one long call
        keeps in local variables is emulated: the gradient budget (``max_eval``, shared by the line searches), the
        stopping tests, and the loss and gradient at the accepted point, which a new call would otherwise evaluate
        again (the closure returns them from the line search's own evaluation instead).
        """
        model, guide, data, elbo = self.model, self.guide, self.data, self.elbo
        guide(data, full=True)  # create the parameters
        params = list(guide.parameters())
        tolerance_change = self.tol if self.tol is not None else 1e-12
        budget = self.num_steps * 5 // 4  # torch's default max_eval for max_iter = num_steps
        opt = torch.optim.LBFGS(params, lr=self.lr, max_iter=1, max_eval=budget, line_search_fn="strong_wolfe",
                                tolerance_change=tolerance_change, tolerance_grad=1e-10, history_size=50)
        evaluated = []  # (params, loss, grads) of this iteration's evaluations; the accepted point is among them
        if self.saved is not None:
            self._restore_params()
            opt.load_state_dict(self.saved["optim"])
            if self.saved["point"] is not None:
                loss, grads = self.saved["point"]
                evaluated.append(([p.detach().clone() for p in params], loss, grads))
        call = {"first": False, "initial_evaluated": False}

        def lookup():
            for entry in evaluated:
                if all(torch.equal(p, q) for p, q in zip(params, entry[0], strict=False)):
                    return entry
            return None

        def closure():
            if call["first"]:
                call["first"] = False
                entry = lookup()
                evaluated.clear()
                if entry is not None:  # the accepted point of the previous line search: already evaluated
                    evaluated.append(entry)
                    for p, g in zip(params, entry[2], strict=False):
                        p.grad = g.clone()
                    return entry[1].clone()
                call["initial_evaluated"] = True
            opt.zero_grad()
            loss = elbo.differentiable_loss(model, guide, data, full=True)
            loss.backward()
            self.n_grad += 1
            self.losses.append(float(loss.detach()))
            evaluated.append(([p.detach().clone() for p in params], loss.detach(),
                              [p.grad.detach().clone() for p in params]))
            return loss

        def save():
            entry = lookup()
            self._save(opt.state_dict(), {"point": None if entry is None else (entry[1], entry[2])})

        group = opt.param_groups[0]
        for _ in progress(range(self.steps, self.num_steps), self.progress_bar, "MAP (L-BFGS)"):
            if self.converged or self.n_grad >= budget:  # the budget: what one long step() would have had
                break
            # what one long step() would have left of the budget after this iteration's first evaluation
            group["max_eval"] = budget - max(self.n_grad, 1) + 1
            before = self.n_grad
            call.update(first=True, initial_evaluated=False)
            opt.step(closure)
            self.steps += 1
            entry = lookup()
            line_search = self.n_grad - before - int(call["initial_evaluated"])
            state = opt.state[params[0]]
            # torch's stopping tests of one long step() (the budget is tested above): no line search (optimal at
            # the start, or not a descent direction), a small gradient, a small step, a small change of the loss
            self.converged = bool(
                line_search == 0 or entry is None
                or max(float(g.abs().max()) for g in entry[2]) <= group["tolerance_grad"]
                or float(state["d"].mul(state["t"]).abs().max()) <= tolerance_change
                or abs(float(entry[1]) - state["prev_loss"]) < tolerance_change)
            if self.callback is not None and entry is not None:
                self.callback(self.steps - 1, float(entry[1]), _fields(model, guide, data))
            if self.steps % self.checkpoint_every == 0 or self.converged:
                save()
        save()

    def result(self) -> Posterior:
        self.t0 = time.perf_counter()
        if self.optimizer == "adam":
            self._adam()
        else:
            self._lbfgs()
        seconds = self.seconds + time.perf_counter() - self.t0
        log.info("MAP (%s): %d gradients in %.2f s, final loss %.6g", self.optimizer, self.n_grad, seconds,
                 self.losses[-1])
        latents = {k: v.detach() for k, v in self.guide.median(self.data).items()}
        with torch.no_grad():
            fields = self.model.fields_from_latents(latents)
        samples = {k: v[None, None] for k, v in {**latents, **fields}.items()}
        checks = convergence_checks(self.model, self.data, latents, self.start, self.losses)
        return Posterior(samples, field_names=self.model.field_names, method="map", dx=self.model.dx,
                         observed_data=self.data,
                         attrs={"optimizer": self.optimizer, "lr": self.lr, "num_steps": self.num_steps,
                                "loss": self.losses, "n_gradients": self.n_grad, "n_steps": self.steps,
                                "converged": self.converged, "seconds": seconds,
                                "forward": self.forward, **checks},
                         dt=getattr(self.model.forward, "dt", None))


def _latent_gradient_norm(model, data, layout, values) -> float:
    """``|grad_u (-log p(u, data))|`` in Pyro's unconstrained latent space at the constrained ``values`` (full data;
    no Jacobian term: the MAP objective of ``AutoDelta``, whose gradient vanishes at a converged MAP).
    """
    u = layout.unconstrained_flat(values).detach().requires_grad_(True)
    with torch.enable_grad():
        loss = -model.log_joint(layout.unflatten(u), data)
        (g,) = torch.autograd.grad(loss, u)
    return float(g.norm())


def convergence_checks(model, data, latents, start, losses) -> dict:
    """The MAP's convergence record for :func:`probinv.diagnostics.verdict` (two extra full-data gradients).

    ``relative_gradient``: ``|g(final)| / |g(start)|`` in the unconstrained latent space (NaN-free: 0 when the start
    already was stationary); ``loss_change``: how many nats the best recorded loss fell over the last 10 % of the
    record (at least 2 entries); ``chi2_per_datum``: the residual chi^2 per datum at the MAP with its noise
    parameters (:func:`probinv.diagnostics.chi2_per_datum`).
    """
    out = {}
    try:
        values = {k: v for k, v in latents.items()}
        layout = Layout(prototype_trace(model, data, values))
        g_end = _latent_gradient_norm(model, data, layout, values)
        full_start = dict(values)
        full_start.update({k: v for k, v in start.items() if k in values})
        g_start = _latent_gradient_norm(model, data, layout, full_start)
        out["relative_gradient"] = g_end / g_start if g_start > 0 else 0.0
    except (RuntimeError, ValueError, KeyError) as err:  # e.g. a forward operator without a backward
        log.info("MAP: no gradient check (%s)", err)
    finite = [x for x in losses if math.isfinite(x)]
    if len(finite) >= 2:
        k = max(1, len(finite) // 10)
        out["loss_change"] = float(min(finite[:-k]) - min(finite))
    fields = model.fields_from_latents(latents)
    out["chi2_per_datum"] = diagnostics.chi2_per_datum(model, fields, latents, data)
    out["n_data"] = int(data.numel())
    return out


def _fields(model, guide, data):
    with torch.no_grad():
        return model.fields_from_latents(guide.median(data))
