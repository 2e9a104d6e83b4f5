"""Built-in forward operators wrapping the physics solvers (DESIGN.md section 4)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["AcousticForward"]


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

    @property
    def n_shots(self) -> int:
        return int(self.source_amplitudes.shape[0])

    def __call__(self, fields: dict, shots: torch.Tensor | None = None) -> torch.Tensor:
        from ..physics import acoustic  # noqa: PLC0415 (the solver is optional at import time)

        if self.velocity not in fields:
            raise KeyError(f"AcousticForward needs the field {self.velocity!r}; got fields {sorted(fields)}")
        amp, src, rec = self.source_amplitudes, self.source_locations, self.receiver_locations
        if shots is not None:
            amp, src, rec = amp[shots.to(amp.device)], src[shots.to(src.device)], rec[shots.to(rec.device)]
        v = fields[self.velocity]
        kwargs = dict(self.options)
        if self.density is not None:
            kwargs["rho"] = fields[self.density]
        return acoustic(v, self.dx, self.dt, amp.to(v.dtype), src, rec, **kwargs)
