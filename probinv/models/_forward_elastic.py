"""Forward operators around the time-domain elastic solvers :func:`probinv.physics.sh` and :func:`probinv.physics.psv`.

Same protocol as :class:`probinv.models.AcousticForward` (DESIGN.md sections 1 and 4): ``fields`` (the names of the
fields read), ``n_shots``, ``__call__(fields, shots=None) -> data`` and ``describe() -> dict`` (JSON-able).
A density field is optional: without one the operator uses the constant density ``rho`` (kg/m^3) it was built with.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from ..physics import psv, sh
from ..physics.elastic import RECEIVER_COMPONENTS, SOURCE_TYPES
from ..validation import check_choice, check_scalar
from ._forward import _jsonable

__all__ = ["PSVForward", "SHForward"]

# settings of the solvers that do not change the data (memory / output form): left out of describe()
_COMPUTATIONAL = ("checkpoint_every", "return_wavefield")


def _solver_defaults(fn) -> dict:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _COMPUTATIONAL}


def _check_tensors(owner: str, amp, src, rec) -> None:
    if not isinstance(amp, torch.Tensor) or not amp.is_floating_point() or amp.ndim != 3:
        raise TypeError(f"{owner}: source_amplitudes must be a floating Tensor [n_shots, n_sources_per_shot, nt], "
                        f"got {type(amp).__name__}{tuple(amp.shape) if isinstance(amp, torch.Tensor) else ''}")
    for name, loc in (("source_locations", src), ("receiver_locations", rec)):
        if not isinstance(loc, torch.Tensor) or loc.dtype != torch.int64 or loc.ndim != 3 or loc.shape[-1] != 2:
            raise TypeError(f"{owner}: {name} must be an int64 Tensor [n_shots, n_per_shot, 2] of (z, x) indices, "
                            f"got {type(loc).__name__}"
                            f"{(loc.dtype, tuple(loc.shape)) if isinstance(loc, torch.Tensor) else ''}")
        if loc.shape[0] != amp.shape[0]:
            raise ValueError(f"{owner}: {name} has {loc.shape[0]} shots but source_amplitudes has {amp.shape[0]}")


def _select(shots, *tensors):
    if shots is None:
        return tensors
    return tuple(t[shots.to(t.device)] for t in tensors)


def _field(owner: str, fields, name: str) -> torch.Tensor:
    if name not in fields:
        raise KeyError(f"{owner} needs the field {name!r}; got fields {sorted(fields)}")
    return fields[name]


def _density(fields, name, rho, like):
    return fields[name] if name is not None else torch.full_like(like, rho)


@dataclass
class SHForward:
    """Forward operator ``fields -> SH displacement`` around :func:`probinv.physics.sh`.

    Parameters
    ----------
    dx : float
        Grid spacing (m).
    dt : float
        Time step (s).
    source_amplitudes : Tensor
        Force-density time functions ``[n_shots, n_sources_per_shot, nt]`` (see :func:`probinv.physics.sh`).
    source_locations, receiver_locations : Tensor
        int64 ``[n_shots, n_per_shot, 2]`` (z, x) grid indices.
    velocity : str
        Name of the S-speed field (m/s), default ``"vs"``.
    density : str, optional
        Name of a density field (kg/m^3); without it the constant ``rho`` is used.
    rho : float
        Constant density (kg/m^3) when ``density`` is None (the data scale as ``1 / rho``).
    options : dict
        Further keyword options of :func:`probinv.physics.sh` (``pml_width``, ``free_surface``, ``accuracy``,
        ``checkpoint_every``).
    metadata : dict
        JSON-able facts added to :meth:`describe` (e.g. ``{"wavelet": "ricker", "freq": 0.5}``).

    ``forward(fields, shots=idx)`` returns the displacement (m) ``[n_sub, n_receivers, nt]``
    (``[batch, n_sub, n_receivers, nt]`` for a batch of models).
    """

    dx: float
    dt: float
    source_amplitudes: torch.Tensor
    source_locations: torch.Tensor
    receiver_locations: torch.Tensor
    velocity: str = "vs"
    density: str | None = None
    rho: float = 2000.0
    options: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.dx = check_scalar("dx", self.dx)
        self.dt = check_scalar("dt", self.dt)
        self.rho = check_scalar("rho", self.rho)
        _check_tensors("SHForward", self.source_amplitudes, self.source_locations, self.receiver_locations)
        bad = set(self.options) - set(_solver_defaults(sh)) - set(_COMPUTATIONAL)
        if bad:
            raise ValueError(f"SHForward: unknown solver options {sorted(bad)}; valid: "
                             f"{sorted(set(_solver_defaults(sh)) | set(_COMPUTATIONAL))}")

    @property
    def fields(self) -> tuple[str, ...]:
        """The velocity field's name, then the density's when there is one."""
        return (self.velocity,) if self.density is None else (self.velocity, self.density)

    @property
    def n_shots(self) -> int:
        """Number of shots (the size of the plate over shots)."""
        return int(self.source_amplitudes.shape[0])

    def describe(self) -> dict:
        """Every physical setting, JSON-able: ``physics`` (``"sh"``), ``dx`` (m), ``dt`` (s), ``nt``, counts, the
        solver options with their defaults, field names, constant ``rho`` (kg/m^3, used only without a density
        field), locations and the metadata.
        """
        d = {"physics": "sh", "dx": self.dx, "dt": self.dt, "nt": int(self.source_amplitudes.shape[-1]),
             "n_shots": self.n_shots, "n_receivers": int(self.receiver_locations.shape[1]),
             "n_sources_per_shot": int(self.source_amplitudes.shape[1]),
             **{k: _jsonable(v) for k, v in {**_solver_defaults(sh), **self.options}.items()
                if k not in _COMPUTATIONAL},
             "velocity": self.velocity, "density": self.density, "rho": self.rho,
             "source_locations": self.source_locations.tolist(), "receiver_locations": self.receiver_locations.tolist()}
        d.update(_jsonable(self.metadata))
        return d

    def __call__(self, fields: dict, shots: torch.Tensor | None = None) -> torch.Tensor:
        """Displacement ``[n_shots, n_receivers, nt]`` (m) of ``{name: (nz, nx) or (batch, nz, nx)}``."""
        vs = _field("SHForward", fields, self.velocity)
        if self.density is not None:
            _field("SHForward", fields, self.density)
        amp, src, rec = _select(shots, self.source_amplitudes, self.source_locations, self.receiver_locations)
        rho = _density(fields, self.density, self.rho, vs)
        return sh(vs, rho, self.dx, self.dt, amp.to(dtype=vs.dtype, device=vs.device), src.to(vs.device),
                  rec.to(vs.device), **self.options)


@dataclass
class PSVForward:
    """Forward operator ``fields -> P-SV records`` around :func:`probinv.physics.psv`.

    Parameters
    ----------
    dx, dt, source_amplitudes, source_locations, receiver_locations
        As :class:`SHForward` (the source is a moment-rate / force density, :func:`probinv.physics.psv`).
    p_velocity, s_velocity : str
        Names of the P- and S-speed fields (m/s), default ``"vp"``, ``"vs"``.
    density : str, optional
        Name of a density field (kg/m^3); without it the constant ``rho`` is used.
    rho : float
        Constant density (kg/m^3) when ``density`` is None.
    source_type : {"explosive", "force_z", "force_x"}
    receiver_component : {"vz", "vx", "pressure"}
        Particle velocity (m/s) or pressure ``-(sxx + szz) / 2`` (Pa) at the receivers.
    options : dict
        Further keyword options of :func:`probinv.physics.psv` (``pml_width``, ``free_surface``, ``accuracy``,
        ``checkpoint_every``).
    metadata : dict
        JSON-able facts added to :meth:`describe`.
    """

    dx: float
    dt: float
    source_amplitudes: torch.Tensor
    source_locations: torch.Tensor
    receiver_locations: torch.Tensor
    p_velocity: str = "vp"
    s_velocity: str = "vs"
    density: str | None = None
    rho: float = 2000.0
    source_type: str = "explosive"
    receiver_component: str = "vz"
    options: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.dx = check_scalar("dx", self.dx)
        self.dt = check_scalar("dt", self.dt)
        self.rho = check_scalar("rho", self.rho)
        check_choice("source_type", self.source_type, SOURCE_TYPES)
        check_choice("receiver_component", self.receiver_component, RECEIVER_COMPONENTS)
        _check_tensors("PSVForward", self.source_amplitudes, self.source_locations, self.receiver_locations)
        valid = set(_solver_defaults(psv)) - {"source_type", "receiver_component"} | set(_COMPUTATIONAL)
        bad = set(self.options) - valid
        if bad:
            raise ValueError(f"PSVForward: unknown solver options {sorted(bad)}; valid: {sorted(valid)}")

    @property
    def fields(self) -> tuple[str, ...]:
        """P speed, S speed, then the density's name when there is one."""
        names = (self.p_velocity, self.s_velocity)
        return names if self.density is None else names + (self.density,)

    @property
    def n_shots(self) -> int:
        """Number of shots."""
        return int(self.source_amplitudes.shape[0])

    def describe(self) -> dict:
        """Every physical setting, JSON-able (as :meth:`SHForward.describe`, ``physics = "psv"``, plus
        ``source_type`` and ``receiver_component``).
        """
        opts = {**_solver_defaults(psv), **self.options, "source_type": self.source_type,
                "receiver_component": self.receiver_component}
        d = {"physics": "psv", "dx": self.dx, "dt": self.dt, "nt": int(self.source_amplitudes.shape[-1]),
             "n_shots": self.n_shots, "n_receivers": int(self.receiver_locations.shape[1]),
             "n_sources_per_shot": int(self.source_amplitudes.shape[1]),
             **{k: _jsonable(v) for k, v in opts.items() if k not in _COMPUTATIONAL},
             "p_velocity": self.p_velocity, "s_velocity": self.s_velocity, "density": self.density, "rho": self.rho,
             "source_locations": self.source_locations.tolist(), "receiver_locations": self.receiver_locations.tolist()}
        d.update(_jsonable(self.metadata))
        return d

    def __call__(self, fields: dict, shots: torch.Tensor | None = None) -> torch.Tensor:
        """Records ``[n_shots, n_receivers, nt]`` of ``{name: (nz, nx) or (batch, nz, nx)}``."""
        vp = _field("PSVForward", fields, self.p_velocity)
        vs = _field("PSVForward", fields, self.s_velocity)
        if self.density is not None:
            _field("PSVForward", fields, self.density)
        amp, src, rec = _select(shots, self.source_amplitudes, self.source_locations, self.receiver_locations)
        rho = _density(fields, self.density, self.rho, vp)
        return psv(vp, vs, rho, self.dx, self.dt, amp.to(dtype=vp.dtype, device=vp.device), src.to(vp.device),
                   rec.to(vp.device), source_type=self.source_type, receiver_component=self.receiver_component,
                   **self.options)
