"""Factories from names to forward operators and likelihoods, for configurations (``physics = "sh"``, ...).

:func:`build_forward` and :func:`build_likelihood` turn the names a configuration file uses into the objects of
:mod:`probinv.models`; :data:`PHYSICS`, :data:`LIKELIHOODS` and :func:`physics_fields` list what is valid, so that a
configuration checker can name the valid choices.
"""
from __future__ import annotations

import math

import torch

from ..survey import Acquisition, PhysicsOptions
from ..validation import check_choice
from ._forward import AcousticForward
from ._forward_elastic import PSVForward, SHForward
from ._forward_frequency import FrequencyForward
from ._likelihoods import Attenuation, Envelope, GlobalCorrelation, TraceL2, TravelTime
from ._noise import Gaussian, StudentT

__all__ = ["LIKELIHOODS", "PHYSICS", "build_forward", "build_likelihood", "physics_fields"]

#: Physics names -> (latent fields read, optional fields read).
_FIELDS = {
    "acoustic": (("vp",), ("rho",)),
    "sh": (("vs",), ("rho",)),
    "psv": (("vp", "vs"), ("rho",)),
    "viscoacoustic": (("vp", "q"), ()),
    "viscoelastic_sh": (("vs", "q"), ()),
}
PHYSICS = tuple(_FIELDS)
LIKELIHOODS = ("gaussian", "student_t", "travel_time", "attenuation", "global_correlation", "envelope", "trace_l2")


def physics_fields(physics: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(required fields, optional fields)`` of a physics name, e.g. ``(("vp", "q"), ())``."""
    check_choice("physics", physics, PHYSICS)
    return _FIELDS[physics]


def build_forward(physics: str, acquisition: Acquisition, dx: float, options: PhysicsOptions | None = None, *,
                  density: bool = False, rho: float = 2000.0, receiver_component: str = "vz",
                  source_type: str = "explosive", frequencies=None, omega_ref: float | None = None,
                  dtype: torch.dtype | None = None, device=None):
    """The forward operator of ``physics`` for a survey.

    Parameters
    ----------
    physics : {"acoustic", "sh", "psv", "viscoacoustic", "viscoelastic_sh"}
    acquisition : probinv.survey.Acquisition
        Sources, receivers, time axis and Ricker peak frequency (Hz). For the frequency-domain physics the Ricker
        of the time axis gives the source spectrum (:meth:`FrequencyForward.from_ricker`).
    dx : float
        Grid spacing (m).
    options : probinv.survey.PhysicsOptions, optional
        Accuracy, PML width, free surface, ``pml_vmax`` (acoustic only); the frequency-domain solver takes the PML
        width and the free surface.
    density : bool
        Whether a ``rho`` field is read (time-domain physics); otherwise the constant ``rho`` (kg/m^3) for SH and
        P-SV.
    receiver_component, source_type : str
        P-SV only (:class:`PSVForward`).
    frequencies : sequence of float
        Frequencies (Hz), required for the frequency-domain physics.
    omega_ref : float, optional
        Reference angular frequency (rad/s), default ``2 pi max(frequencies)``.
    dtype, device : optional
        Of the source wavelets.
    """
    check_choice("physics", physics, PHYSICS)
    options = options or PhysicsOptions()
    acq = acquisition if device is None else acquisition.to(device)
    if physics == "acoustic":
        return AcousticForward.from_survey(acq, dx, options, dtype=dtype, device=device,
                                           density="rho" if density else None)
    kw = {"pml_width": options.pml_width, "free_surface": options.free_surface}
    if physics in ("sh", "psv"):
        amp = acq.source_amplitudes(dtype=dtype, device=device)
        meta = {"wavelet": "ricker", "freq": float(acq.freq)}
        kw["accuracy"] = options.accuracy
        if physics == "sh":
            return SHForward(dx, acq.dt, amp, acq.source_locations, acq.receiver_locations,
                             density="rho" if density else None, rho=rho, options=kw, metadata=meta)
        return PSVForward(dx, acq.dt, amp, acq.source_locations, acq.receiver_locations,
                          density="rho" if density else None, rho=rho, receiver_component=receiver_component,
                          source_type=source_type, options=kw, metadata=meta)
    if frequencies is None:
        raise ValueError(f"physics {physics!r} needs frequencies (Hz), e.g. frequencies=[2.0, 3.0, 4.0]")
    if density:
        raise ValueError(f"physics {physics!r} solves constant-density equations: density must be False")
    wave = "acoustic" if physics == "viscoacoustic" else "sh"
    return FrequencyForward.from_ricker(dx, frequencies, acq.source_locations, acq.receiver_locations,
                                        freq=float(acq.freq), dt=float(acq.dt), nt=int(acq.nt), omega_ref=omega_ref,
                                        wave=wave, velocity="vp" if wave == "acoustic" else "vs", options=kw)


def build_likelihood(name: str, *, sigma: float | torch.Tensor | None = None, dt: float | None = None,
                     temperature: float | None = None, df: float | None = None, observed: torch.Tensor | None = None,
                     trace_dims: int = 1, max_lag: float | None = None):
    """The likelihood (noise model) called ``name``.

    ``gaussian`` (``sigma``, data units), ``student_t`` (``df``, ``sigma`` as the scale), ``travel_time``
    (``sigma`` in s, ``dt`` in s, optional ``max_lag`` in s), ``attenuation`` (``sigma`` in natural-log units),
    ``global_correlation``, ``envelope`` and ``trace_l2`` (``temperature``, a modelling choice). ``observed`` is
    needed by the Laplace approximation of the non-Gaussian-data ones (their ``whiten``); ``trace_dims`` is 2 for
    stacked spectra.
    """
    check_choice("likelihood", name, LIKELIHOODS)

    def need(arg, value):
        if value is None:
            raise ValueError(f"likelihood {name!r} needs {arg}")
        return value

    if name == "gaussian":
        return Gaussian(need("sigma", sigma))
    if name == "student_t":
        return StudentT(need("df", df), need("sigma", sigma))
    if name == "travel_time":
        return TravelTime(need("sigma", sigma), need("dt", dt), observed=observed, max_lag=max_lag)
    if name == "attenuation":
        return Attenuation(need("sigma", sigma), observed=observed)
    if name == "global_correlation":
        return GlobalCorrelation(need("temperature", temperature), trace_dims=trace_dims, observed=observed)
    if name == "envelope":
        return Envelope(need("temperature", temperature), observed=observed)
    t = 1.0 if temperature is None else temperature
    if not math.isfinite(float(t)):
        raise ValueError(f"temperature must be finite, got {t!r}")
    return TraceL2(t, trace_dims=trace_dims, observed=observed)
