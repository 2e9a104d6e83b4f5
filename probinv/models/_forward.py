"""Built-in forward operators wrapping the physics solvers (DESIGN.md sections 1 and 4).

A forward operator is any object with ``fields`` (the names of the fields it reads), ``n_shots``,
``__call__(fields, shots=None) -> data`` and ``describe() -> dict`` (every physical setting, JSON-able, stored in the
posterior file). :class:`AcousticForward` is the one around :func:`probinv.physics.acoustic`.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch
from torch.utils.checkpoint import checkpoint

from ..physics import acoustic
from ..survey import Acquisition, PhysicsOptions
from ..validation import check_int

__all__ = ["AcousticForward"]

# the solver's own defaults of its physical settings, so that describe() states every one of them, also those a
# caller left at their default; the others (checkpointing, wavefield output, gradient method) do not change the data
_COMPUTATIONAL = ("rho", "return_wavefield", "wavefield_every", "checkpoint_every", "gradient")
_SOLVER_DEFAULTS = {name: p.default for name, p in inspect.signature(acoustic).parameters.items()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _COMPUTATIONAL}


def _jsonable(value):
    """``value`` as plain JSON types (tensors and numpy scalars to numbers / nested lists)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item"):  # numpy scalar
        return _jsonable(value.item())
    return str(value)


@dataclass
class AcousticForward:
    """Forward operator ``fields -> data`` around :func:`probinv.physics.acoustic`.

    Parameters
    ----------
    dx : float
        Grid spacing (m).
    dt : float
        Time step (s).
    source_amplitudes : Tensor
        ``[n_shots, n_sources_per_shot, nt]``.
    source_locations, receiver_locations : Tensor
        int64 ``[n_shots, n_per_shot, 2]`` (z, x) grid indices.
    velocity : str
        Name of the velocity field in the fields dict (default ``"vp"``).
    density : str, optional
        Name of a density field (kg/m^3) passed as ``rho`` when present.
    options : dict
        Further keyword options of :func:`probinv.physics.acoustic` (``pml_width``, ``accuracy``, ...). For
        sampling, give ``pml_vmax`` (e.g. the prior's upper velocity bound, m/s): it fixes the absorbing boundary's
        strength, so that the forward map is continuous in the velocity (by default the strength follows each
        model's maximum velocity rounded to two digits, and the data jump when it crosses a multiple of 100 m/s).
    metadata : dict
        JSON-able facts the operator cannot see in its tensors (e.g. ``{"wavelet": "ricker", "freq": 10.0}``),
        added to :meth:`describe`.
    chunk_size : int, optional
        Propagate at most this many shots at a time (default: all requested shots in one batched call). With
        gradients enabled each chunk runs under :func:`torch.utils.checkpoint.checkpoint`, so only the predicted
        data of the other chunks are kept and a chunk's solver graph is rebuilt during backward: peak memory follows
        the chunk, not the survey, for the cost of one more forward per chunk in backward. The data are the same
        (each shot is propagated independently); not part of :meth:`describe` (it does not change the data).

    Calling it as ``forward(fields, shots=idx)`` runs only the shots ``idx`` and returns
    ``[n_sub, n_receivers, nt]`` (``[batch, n_sub, n_receivers, nt]`` for a batch of models).
    """

    dx: float
    dt: float
    source_amplitudes: torch.Tensor
    source_locations: torch.Tensor
    receiver_locations: torch.Tensor
    velocity: str = "vp"
    density: str | None = None
    options: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    chunk_size: int | None = None

    def __post_init__(self):
        if self.chunk_size is not None:
            check_int("chunk_size", self.chunk_size)

    @classmethod
    def from_survey(cls, acquisition: Acquisition, dx: float, physics: PhysicsOptions, *,
                    dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                    velocity: str = "vp", density: str | None = None,
                    chunk_size: int | None = None) -> AcousticForward:
        """The operator of a survey: Ricker sources of ``acquisition`` and the solver settings ``physics``.

        Parameters
        ----------
        acquisition : probinv.survey.Acquisition
            Sources, receivers, time axis (dt in s, nt samples) and Ricker peak frequency (Hz).
        dx : float
            Grid spacing in m.
        physics : probinv.survey.PhysicsOptions
            Solver settings (accuracy, absorbing layer, free surface).
        dtype, device : optional
            Of the source wavelets (default: torch's default dtype, CPU).
        chunk_size : int, optional
            Shots per solver call (see the class).
        """
        acq = acquisition if device is None else acquisition.to(device)
        return cls(dx=float(dx), dt=float(acq.dt), source_amplitudes=acq.source_amplitudes(dtype=dtype, device=device),
                   source_locations=acq.source_locations, receiver_locations=acq.receiver_locations,
                   velocity=velocity, density=density, options=physics.solver_kwargs(),
                   metadata={"wavelet": "ricker", "freq": float(acq.freq)}, chunk_size=chunk_size)

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the fields the operator reads: the velocity, then the density when there is one."""
        return (self.velocity,) if self.density is None else (self.velocity, self.density)

    @property
    def n_shots(self) -> int:
        """Number of shots (the size of the plate over shots)."""
        return int(self.source_amplitudes.shape[0])

    def describe(self) -> dict:
        """Every physical setting as JSON-able values (the posterior file stores ``json.dumps`` of it).

        Keys: ``physics`` (``"acoustic"``), ``dx`` (m), ``dt`` (s), ``nt``, ``n_shots``, ``n_receivers``,
        ``n_sources_per_shot``, the solver options with their defaults filled in (``accuracy``, ``pml_width``,
        ``pml_vmax`` in m/s or None, ``free_surface``, ...), ``velocity`` / ``density`` (field names),
        ``source_locations`` / ``receiver_locations`` (grid indices, nested lists) and the ``metadata``.
        """
        d = {"physics": "acoustic", "dx": float(self.dx), "dt": float(self.dt),
             "nt": int(self.source_amplitudes.shape[-1]), "n_shots": self.n_shots,
             "n_receivers": int(self.receiver_locations.shape[1]),
             "n_sources_per_shot": int(self.source_amplitudes.shape[1]),
             **{k: _jsonable(v) for k, v in {**_SOLVER_DEFAULTS, **self.options}.items()
                if k not in _COMPUTATIONAL},
             "velocity": self.velocity, "density": self.density,
             "source_locations": self.source_locations.tolist(), "receiver_locations": self.receiver_locations.tolist()}
        d.update(_jsonable(self.metadata))
        return d

    def __call__(self, fields: dict, shots: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted pressure ``[n_shots, n_receivers, nt]`` (``[batch, ...]`` for a batch) of ``{name: (nz, nx)}``."""
        if self.velocity not in fields:
            raise KeyError(f"AcousticForward needs the field {self.velocity!r}; got fields {sorted(fields)}")
        amp, src, rec = self.source_amplitudes, self.source_locations, self.receiver_locations
        if shots is not None:
            amp, src, rec = amp[shots.to(amp.device)], src[shots.to(src.device)], rec[shots.to(rec.device)]
        v = fields[self.velocity]
        kwargs = dict(self.options)
        rho = None if self.density is None else fields[self.density]
        n = int(amp.shape[0])
        if self.chunk_size is None or n <= self.chunk_size:
            if rho is not None:
                kwargs["rho"] = rho
            return acoustic(v, self.dx, self.dt, amp.to(v.dtype), src, rec, **kwargs)

        def run(a, b, v, rho):
            extra = {} if rho is None else {"rho": rho}
            return acoustic(v, self.dx, self.dt, amp[a:b].to(v.dtype), src[a:b], rec[a:b], **kwargs, **extra)

        grad = torch.is_grad_enabled() and (v.requires_grad or (rho is not None and rho.requires_grad))
        parts = []
        for a in range(0, n, self.chunk_size):
            b = min(a + self.chunk_size, n)
            # checkpointed: the chunk's solver graph is not kept but rebuilt when backward reaches it
            parts.append(checkpoint(run, a, b, v, rho, use_reentrant=False) if grad else run(a, b, v, rho))
        return torch.cat(parts, dim=-3)
