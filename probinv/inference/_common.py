"""Shared machinery: latent layouts, initial values, Jacobian-vector products, progress."""
from __future__ import annotations

import logging
import math
import warnings
from typing import Mapping

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to
from pyro.infer.autoguide.initialization import init_to_feasible, init_to_value

from ..models import SeismicModel

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


def check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def init_values(model: SeismicModel, data: torch.Tensor, init: Mapping | None) -> dict:
    """Initial latent-site values: ``init`` may give fields (by field name) or latent sites; whitened priors start at
    ``z = 0`` (the prior mean), box priors at their midpoint; flat priors need an explicit field."""
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
            from ..models._model import _box_bounds  # noqa: PLC0415
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
        for n, k in zip(self.names, self.sizes):
            out[n] = slice(i, i + k)
            i += k
        return out

    def unconstrained_flat(self, values: Mapping) -> torch.Tensor:
        parts = [t.inv(values[n]).reshape(-1) for n, t in zip(self.names, self.transforms)]
        return torch.cat(parts)

    def unflatten(self, u: torch.Tensor, constrained: bool = True) -> dict:
        """``u[..., size]`` -> ``{site: value[..., *shape]}`` (constrained by default)."""
        out, i = {}, 0
        batch = tuple(u.shape[:-1])
        for n, s, k, t in zip(self.names, self.shapes, self.sizes, self.transforms):
            x = u[..., i:i + k].reshape(batch + s)
            out[n] = t(x) if constrained else x
            i += k
        return out

    def log_abs_det(self, u: torch.Tensor) -> torch.Tensor:
        total, i = 0.0, 0
        for n, s, k, t in zip(self.names, self.shapes, self.sizes, self.transforms):
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


def jvp(f, x: torch.Tensor, v: torch.Tensor, mode: str = "auto", fd_step: float = 1e-4):
    """Jacobian-vector product ``J(x) v`` of ``f``: forward mode, double backward, or central differences."""
    if mode in ("auto", "forward"):
        try:
            return torch.func.jvp(f, (x,), (v,))[1]
        except Exception as err:  # custom autograd Functions may lack forward-mode support
            if mode == "forward":
                raise
            log.debug("forward-mode jvp unavailable (%s); trying double backward", err)
    if mode in ("auto", "reverse"):
        try:
            with torch.enable_grad():
                xx = x.detach().requires_grad_(True)
                y = f(xx)
                u = torch.zeros_like(y, requires_grad=True)
                (g,) = torch.autograd.grad(y, xx, u, create_graph=True)
                (jv,) = torch.autograd.grad(g, u, v)
            return jv.detach()
        except Exception as err:
            if mode == "reverse":
                raise
            warnings.warn(f"double-backward jvp unavailable ({err}); using central finite differences",
                          RuntimeWarning, stacklevel=2)
    h = fd_step * max(1.0, float(x.abs().max())) / max(float(v.abs().max()), 1e-30)
    with torch.no_grad():
        return (f(x + h * v) - f(x - h * v)) / (2 * h)


class Linearisation:
    """Jacobian products of ``f`` at ``x`` sharing one forward evaluation.

    ``mode="reverse"`` (or ``"auto"``): one forward ``y = f(x)`` and one differentiable backward ``g(u) = J^T u``
    are recorded; then ``J v = d(g . v)/du`` (double backward, exact, works through custom autograd Functions whose
    backward is made of differentiable torch operations) and ``J^T w`` reuse them without re-running the solver.
    ``mode="fd"``: central differences for ``J v`` (two forwards each), reverse mode for ``J^T w``.
    ``auto`` falls back to ``fd`` with a warning when the double backward is unavailable.
    """

    def __init__(self, f, x: torch.Tensor, mode: str = "auto", fd_step: float = 1e-4):
        self.f, self.x, self.fd_step = f, x.detach(), fd_step
        self.passes = 0
        self.mode = "fd" if mode == "fd" else "reverse"
        with torch.enable_grad():
            self._xx = self.x.clone().requires_grad_(True)
            self._y = f(self._xx)
            self.passes += 1
            if self.mode == "reverse":
                try:
                    self._u = torch.zeros_like(self._y, requires_grad=True)
                    (self._g,) = torch.autograd.grad(self._y, self._xx, self._u, create_graph=True)
                    self.passes += 1
                    if not self._g.requires_grad:
                        raise RuntimeError("the backward of f is not differentiable")
                except Exception as err:
                    if mode == "reverse":
                        raise
                    warnings.warn(f"double-backward Jacobian products unavailable ({err}); using central finite "
                                  f"differences", RuntimeWarning, stacklevel=2)
                    self.mode = "fd"

    @property
    def value(self) -> torch.Tensor:
        return self._y.detach()

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        if self.mode == "reverse":
            (jv,) = torch.autograd.grad(self._g, self._u, v.to(self._g.dtype), retain_graph=True)
            self.passes += 1
            return jv.detach()
        self.passes += 2
        return jvp(self.f, self.x, v, mode="fd", fd_step=self.fd_step)

    def vjp(self, w: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(self._y, self._xx, w, retain_graph=True)
        self.passes += 1
        return g.detach()


def vjp(f, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xx), xx, u)
    return g.detach()


def progress(iterable, enabled: bool, desc: str, total=None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm  # noqa: PLC0415
    return tqdm(iterable, desc=desc, total=total, leave=False)
