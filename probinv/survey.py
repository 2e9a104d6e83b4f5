"""Survey types on the ground floor: sources, receivers, wavelet, time axis, and the solver settings of a survey.

These are plain dataclasses of tensors and numbers, importable by every floor (scenarios, configuration, forward
operators, the workflow) without pulling in anything above :mod:`probinv.physics`. Locations are int64 ``(z, x)``
grid indices ``[n_shots, n_per_shot, 2]``, times in s, frequencies in Hz, velocities in m/s (DESIGN.md section 2).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .physics.wavelets import ricker
from .validation import check_choice, check_int, check_scalar

__all__ = ["ACCURACIES", "Acquisition", "PhysicsOptions"]

#: Spatial orders of the acoustic finite differences.
ACCURACIES = (2, 4, 8)


@dataclass(frozen=True)
class Acquisition:
    """Sources, receivers, wavelet and time axis of a survey.

    Frozen: a resolved set-up is shared by every step; make another one with ``dataclasses.replace``.

    Attributes
    ----------
    source_locations : Tensor[n_shots, 1, 2] (int64)
        ``(z, x)`` grid indices of one point source per shot.
    receiver_locations : Tensor[n_shots, n_receivers, 2] (int64)
        ``(z, x)`` grid indices of the receivers of every shot.
    dt : float
        Time step in s (sample ``n`` at ``t = n * dt``).
    nt : int
        Number of time samples.
    freq : float
        Peak frequency of the Ricker source wavelet in Hz.
    """

    source_locations: torch.Tensor
    receiver_locations: torch.Tensor
    dt: float
    nt: int
    freq: float

    @property
    def n_shots(self) -> int:
        """Number of shots."""
        return int(self.source_locations.shape[0])

    @property
    def n_receivers(self) -> int:
        """Number of receivers per shot."""
        return int(self.receiver_locations.shape[1])

    def source_amplitudes(self, *, dtype: torch.dtype | None = None,
                          device: torch.device | str | None = None) -> torch.Tensor:
        """Ricker wavelets ``[n_shots, 1, nt]`` (dimensionless, peak 1 at ``t0 = 1.5 / freq``)."""
        w = ricker(self.freq, self.nt, self.dt, dtype=dtype, device=device)
        return w.expand(self.n_shots, 1, self.nt).contiguous()

    def to(self, device) -> Acquisition:
        """The same survey with its location tensors on ``device``."""
        return Acquisition(self.source_locations.to(device), self.receiver_locations.to(device), self.dt, self.nt,
                           self.freq)


@dataclass(frozen=True)
class PhysicsOptions:
    """Settings of the acoustic solver that a survey fixes (the keyword options of :func:`probinv.physics.acoustic`).

    Attributes
    ----------
    accuracy : int
        Spatial order of the finite differences (2, 4 or 8).
    pml_width : int
        Absorbing layer width in cells (added outside the grid).
    free_surface : bool
        Free (pressure-release) surface on top instead of an absorbing layer.
    pml_vmax : float, optional
        Velocity in m/s that sets the absorbing layer's strength. ``None`` lets the solver use each model's own
        maximum (rounded); a fixed value (the prior's upper bound) makes the forward map the same for every model,
        so that simulation, inversion and report use one operator.
    """

    accuracy: int = 4
    pml_width: int = 20
    free_surface: bool = False
    pml_vmax: float | None = None

    def __post_init__(self):
        """Check the settings (``ValueError`` / ``TypeError`` naming the setting, its value and what is valid)."""
        check_choice("accuracy", self.accuracy, ACCURACIES)
        check_int("pml_width", self.pml_width, minimum=0)
        if not isinstance(self.free_surface, bool):
            raise TypeError(f"free_surface must be True or False, got {self.free_surface!r}")
        if self.pml_vmax is not None:
            object.__setattr__(self, "pml_vmax", check_scalar("pml_vmax", self.pml_vmax))

    def solver_kwargs(self) -> dict:
        """The keyword arguments of :func:`probinv.physics.acoustic` (``pml_vmax`` left out when it is None)."""
        kw = asdict(self)
        if kw["pml_vmax"] is None:
            del kw["pml_vmax"]
        return kw
