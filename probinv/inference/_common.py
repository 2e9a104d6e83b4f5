"""Shared machinery: latent layouts, initial values, the forward operator's description, progress.

The Jacobian products live in :mod:`probinv.linearisation` (floor 2), which the models use too.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import init_to_feasible, init_to_value
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to
from tqdm import tqdm

from ..models import SeismicModel
from ..models._model import _box_bounds
from ..validation import check_int

log = logging.getLogger("probinv.inference")


def check_model(model) -> SeismicModel:
    if not isinstance(model, SeismicModel):
        raise TypeError(f"model must be a probinv.models.SeismicModel (see probinv.models.build_model), "
                        f"got {type(model).__name__}")
    return model


def resolve_data(model: SeismicModel, data):
    data = model.data if data is None else data
    if data is None:
        raise ValueError("data must be given (observed data [n_shots, ...]) either to build_model or here")
    if not isinstance(data, torch.Tensor) or not data.is_floating_point():
        raise TypeError(f"data must be a floating torch.Tensor [n_shots, ...], got {type(data).__name__}")
    return data


def describe_forward(forward) -> str:
    """Describe the forward operator as a JSON string, for a Posterior's ``attrs["forward"]``.

    ``forward.describe()`` (every physical setting, DESIGN.md section 1) when the operator has it; otherwise only the
    operator's type name, ``{"type": "<name>"}`` (a user's plain callable).
    """
    describe = getattr(forward, "describe", None)
    if not callable(describe):
        return json.dumps({"type": type(forward).__name__})
    description = describe()
    try:
        return json.dumps(description)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{type(forward).__name__}.describe() must return a JSON-able dict (numbers, strings, lists, "
                        f"dicts), got {description!r}: {err}") from None


def check_nuts_settings(num_samples, warmup_steps, num_chains, max_tree_depth, precondition,
                        target_accept_prob) -> None:
    """The argument checks both NUTS back ends (Pyro and NumPyro) share; each names the argument and the valid range."""
    check_int("num_samples", num_samples)
    check_int("warmup_steps", warmup_steps, minimum=0)
    check_int("num_chains", num_chains)
    check_int("max_tree_depth", max_tree_depth)
    if precondition not in ("laplace", None):
        raise ValueError(f"precondition must be 'laplace' or None, got {precondition!r}")
    if not 0 < target_accept_prob < 1:
        raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob!r}")


def init_values(model: SeismicModel, data: torch.Tensor, init: Mapping | None) -> dict:
    """Initial latent-site values: ``init`` may give fields (by field name) or latent sites; whitened priors start at
    ``z = 0`` (the prior mean), box priors at their midpoint; flat priors need an explicit field.
    """
    init = dict(init or {})
    values = {}
    for name, prior in model.priors.items():
        kind = model.kinds[name]
        site = model.latent_site(name)
        if site in init:
            values[site] = torch.as_tensor(init[site], dtype=data.dtype, device=data.device)
        elif name in init and kind == "whitened":
            field = torch.as_tensor(init[name], dtype=data.dtype, device=data.device)
            if not hasattr(prior, "inverse"):
                raise ValueError(f"init[{name!r}] is a field but the prior has no inverse(); give init[{site!r}]")
            values[site] = prior.inverse(field).detach()
        elif name in init:
            values[site] = torch.as_tensor(init[name], dtype=data.dtype, device=data.device)
        elif kind == "whitened":
            values[site] = torch.zeros(int(prior.latent_dim), dtype=data.dtype, device=data.device)
        elif kind == "box":
            lo, hi = _box_bounds(prior, data.dtype, data.device)
            values[site] = (0.5 * (lo + hi)).expand(tuple(prior.latent_shape)).clone()
        elif kind == "flat":
            raise ValueError(f"init[{name!r}] is required: a flat (improper) prior has no default starting model; "
                             f"pass init={{{name!r}: starting field (nz, nx)}}")
    for k, v in init.items():
        if k not in values and k not in model.priors:
            values[k] = torch.as_tensor(v, dtype=data.dtype, device=data.device)
    # copies: the optimisers update their parameters in place, never the caller's tensors
    return {k: v.detach().clone() for k, v in values.items()}


def init_strategy(values: Mapping):
    return init_to_value(values=dict(values), fallback=init_to_feasible)


def prototype_trace(model: SeismicModel, data: torch.Tensor, values: Mapping):
    """A trace of the full-data model with the latent sites set to ``values`` (others at a feasible point)."""
    with torch.no_grad():
        init_model = pyro.infer.autoguide.initialization.InitMessenger(init_strategy(values))(model)
        return poutine.trace(init_model).get_trace(data, subsample_size=None, full=True)


class Layout:
    """The ordered latent sites of a model as one flat vector in Pyro's unconstrained space."""

    def __init__(self, trace):
        self.names, self.shapes, self.transforms = [], [], []
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"] or site["infer"].get("_deterministic"):
                continue
            if type(site["fn"]).__name__ in ("Unit", "_Subsample") or site_is_subsample(site):  # factor / plate
                continue
            self.names.append(name)
            t = biject_to(site["fn"].support)
            self.transforms.append(t)
            self.shapes.append(tuple(t.inv(site["value"]).shape))
        self.sizes = [math.prod(s) for s in self.shapes]
        self.size = sum(self.sizes)

    def slices(self) -> dict:
        out, i = {}, 0
        for n, k in zip(self.names, self.sizes, strict=False):
            out[n] = slice(i, i + k)
            i += k
        return out

    def unconstrained_flat(self, values: Mapping) -> torch.Tensor:
        parts = [t.inv(values[n]).reshape(-1) for n, t in zip(self.names, self.transforms, strict=False)]
        return torch.cat(parts)

    def unflatten(self, u: torch.Tensor, constrained: bool = True) -> dict:
        """``u[..., size]`` -> ``{site: value[..., *shape]}`` (constrained by default)."""
        out, i = {}, 0
        batch = tuple(u.shape[:-1])
        for n, s, k, t in zip(self.names, self.shapes, self.sizes, self.transforms, strict=False):
            x = u[..., i:i + k].reshape(batch + s)
            out[n] = t(x) if constrained else x
            i += k
        return out

    def log_abs_det(self, u: torch.Tensor) -> torch.Tensor:
        total, i = 0.0, 0
        for s, k, t in zip(self.shapes, self.sizes, self.transforms, strict=False):
            x = u[..., i:i + k].reshape(tuple(u.shape[:-1]) + s)
            ld = t.log_abs_det_jacobian(x, t(x))
            total = total + ld.reshape(tuple(u.shape[:-1]) + (-1,)).sum(-1) if ld.ndim > 0 else total + ld
            i += k
        return total


def make_potential(model: SeismicModel, data: torch.Tensor, layout: Layout):
    """``U(u) = -log p(u, data)`` in the flat unconstrained space (full data; Jacobians included)."""
    def potential(u: torch.Tensor) -> torch.Tensor:
        return -(model.log_joint(layout.unflatten(u), data) + layout.log_abs_det(u))
    return potential


def samples_from_unconstrained(model: SeismicModel, layout: Layout, u: torch.Tensor) -> dict:
    """Latent sites (constrained) and fields for draws ``u[..., size]``."""
    values = layout.unflatten(u)
    with torch.no_grad():
        fields = model.fields_from_latents(values)
    out = {k: v.detach() for k, v in values.items()}
    out.update({k: v.detach() for k, v in fields.items()})
    return out


def progress(iterable, enabled: bool, desc: str, total=None):
    """``iterable`` wrapped in a tqdm bar when ``enabled``; the bar shows only on a terminal (``disable=None``)."""
    if not enabled:
        return iterable
    # plain tqdm (not tqdm.auto: no ipywidgets warning in notebooks); disable=None hides it when stderr is not a tty
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=None)
