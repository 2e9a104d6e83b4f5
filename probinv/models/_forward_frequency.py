r"""Frequency-domain forward operators around :func:`probinv.physics.helmholtz` (visco-acoustic, visco-elastic SH).

Same protocol as :class:`probinv.models.AcousticForward`. The solver's complex response is returned as **real** data
with the real and imaginary parts stacked on a last axis, ``[n_shots, n_receivers, n_freqs, 2]``, so that every
noise model of :mod:`probinv.models` (Gaussian on the real and imaginary parts, ...) applies unchanged.

Source spectrum
---------------
In the ``exp(-i omega t)`` convention of DESIGN.md (``u(t) = (2 pi)^-1 \int U(omega) e^{-i omega t} d omega``), the
spectrum of a time wavelet ``w`` sampled at ``t = n dt`` is its discrete-time Fourier transform times ``dt``,

.. math:: S(f) = \Delta t \sum_{n=0}^{n_t - 1} w_n\, e^{+ i 2\pi f n \Delta t},

the Riemann sum of :math:`\int w(t) e^{i\omega t} dt` (units of ``w`` times seconds). With this normalisation the
frequency-domain record ``S(f) G(f)`` is the Fourier transform of the time-domain record ``w * g`` of the same
(non-attenuating, ``Q = inf``) medium, sample for sample of the convolution's Riemann sum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..physics import helmholtz
from ..physics.wavelets import ricker
from ..validation import check_choice, check_scalar
from ._forward import _jsonable

__all__ = ["FrequencyForward", "ViscoAcousticForward", "ViscoElasticSHForward", "wavelet_spectrum"]

_WAVES = ("acoustic", "sh")
_OPTIONS = ("pml_width", "free_surface", "method", "keep_factors")
_COMPUTATIONAL = ("method", "keep_factors")


def wavelet_spectrum(wavelet: torch.Tensor, dt: float, frequencies) -> torch.Tensor:
    r"""Complex spectrum :math:`S(f) = \Delta t \sum_n w_n e^{i 2\pi f n \Delta t}` of time wavelets.

    Parameters
    ----------
    wavelet : Tensor[..., nt]
        Real samples at ``t = n dt`` (any unit ``U``).
    dt : float
        Sample interval (s).
    frequencies : sequence of float
        Frequencies (Hz).

    Returns
    -------
    Tensor[..., n_freqs]
        Complex (complex128 for float64 input, complex64 otherwise), unit ``U s``.
    """
    if not isinstance(wavelet, torch.Tensor) or not wavelet.is_floating_point() or wavelet.ndim < 1:
        raise TypeError(f"wavelet must be a real floating Tensor [..., nt], got {type(wavelet).__name__}")
    dt = check_scalar("dt", dt)
    f = torch.as_tensor(np.asarray(frequencies, dtype=np.float64).reshape(-1), dtype=torch.float64,
                        device=wavelet.device)
    if f.numel() == 0 or not bool(torch.isfinite(f).all()) or bool((f <= 0).any()):
        raise ValueError(f"frequencies must be positive finite values in Hz, got {f.tolist()}")
    t = torch.arange(wavelet.shape[-1], dtype=torch.float64, device=wavelet.device) * dt
    kernel = torch.exp(1j * 2 * math.pi * f[:, None] * t[None, :]) * dt                # [n_freqs, nt]
    cdt = torch.complex128 if wavelet.dtype == torch.float64 else torch.complex64
    return (wavelet.to(torch.complex128) @ kernel.T).to(cdt)


@dataclass
class FrequencyForward:
    """Forward operator ``fields -> frequency-domain records`` around :func:`probinv.physics.helmholtz`.

    Parameters
    ----------
    dx : float
        Grid spacing (m).
    frequencies : sequence of float
        Frequencies (Hz).
    source_locations, receiver_locations : Tensor
        int64 ``[n_shots, n_per_shot, 2]`` (z, x) grid indices.
    omega_ref : float
        Reference angular frequency (rad/s) of the Kolsky-Futterman dispersion (``v`` is the speed there).
    source_spectrum : Tensor, optional
        Complex ``[n_shots, n_sources_per_shot, n_freqs]`` (e.g. :func:`wavelet_spectrum` of a Ricker, see
        :meth:`from_ricker`); default 1 (the Green's function).
    wave : {"acoustic", "sh"}
        Paper 2 eq. 42 (visco-acoustic, pressure) or eq. 44 (visco-elastic SH).
    velocity : str
        Name of the speed field (m/s).
    quality : str, optional
        Name of the Q field; None uses the constant ``q``.
    q : float
        Constant Q when ``quality`` is None (``inf``: no attenuation).
    options : dict
        ``pml_width``, ``free_surface``, ``method``, ``keep_factors`` of :func:`probinv.physics.helmholtz`.
    metadata : dict
        JSON-able facts added to :meth:`describe`.

    ``forward(fields, shots=idx)`` returns real ``[n_sub, n_receivers, n_freqs, 2]`` (real and imaginary parts of
    the response; ``[batch, ...]`` for a batch of models). :attr:`complex_data` turns such data back into complex.
    """

    dx: float
    frequencies: tuple
    source_locations: torch.Tensor
    receiver_locations: torch.Tensor
    omega_ref: float
    source_spectrum: torch.Tensor | None = None
    wave: str = "acoustic"
    velocity: str = "vp"
    quality: str | None = "q"
    q: float = math.inf
    options: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.dx = check_scalar("dx", self.dx)
        self.omega_ref = check_scalar("omega_ref", self.omega_ref)
        check_choice("wave", self.wave, _WAVES)
        f = np.asarray(self.frequencies.detach().cpu() if isinstance(self.frequencies, torch.Tensor)
                       else self.frequencies, dtype=np.float64).reshape(-1)
        if f.size == 0 or not np.all(np.isfinite(f)) or np.any(f <= 0):
            raise ValueError(f"frequencies must be positive finite values in Hz, got {f.tolist()}")
        self.frequencies = tuple(float(x) for x in f)
        if isinstance(self.q, bool) or not isinstance(self.q, (int, float)) or not self.q > 0:
            raise ValueError(f"q must be a positive number (inf for no attenuation), got {self.q!r}")
        for name in ("source_locations", "receiver_locations"):
            loc = getattr(self, name)
            if not isinstance(loc, torch.Tensor) or loc.dtype != torch.int64 or loc.ndim != 3 or loc.shape[-1] != 2:
                raise TypeError(f"{name} must be an int64 Tensor [n_shots, n_per_shot, 2] of (z, x) indices, got "
                                f"{type(loc).__name__}")
        if self.receiver_locations.shape[0] != self.source_locations.shape[0]:
            raise ValueError(f"receiver_locations has {self.receiver_locations.shape[0]} shots but "
                             f"source_locations has {self.source_locations.shape[0]}")
        want = (self.n_shots, int(self.source_locations.shape[1]), len(self.frequencies))
        if self.source_spectrum is not None:
            s = self.source_spectrum
            if not isinstance(s, torch.Tensor) or tuple(s.shape) != want:
                raise ValueError(f"source_spectrum must be a Tensor [n_shots, n_sources_per_shot, n_freqs] = {want}, "
                                 f"got {tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__}")
        bad = set(self.options) - set(_OPTIONS)
        if bad:
            raise ValueError(f"unknown helmholtz options {sorted(bad)}; valid: {list(_OPTIONS)}")

    @classmethod
    def from_ricker(cls, dx: float, frequencies, source_locations, receiver_locations, *, freq: float, dt: float,
                    nt: int, t0: float | None = None, omega_ref: float | None = None, **kwargs) -> FrequencyForward:
        """The operator whose sources are the :func:`wavelet_spectrum` of a Ricker wavelet.

        ``freq`` (Hz), ``dt`` (s), ``nt`` and ``t0`` (s, default ``1.5 / freq``) define the wavelet as
        :func:`probinv.physics.ricker`; ``omega_ref`` defaults to ``2 pi max(frequencies)``. Other keywords go to
        the constructor. The wavelet's settings are recorded in ``metadata``.
        """
        w = ricker(freq, nt, dt, t0, dtype=torch.float64)
        n_shots, n_src = source_locations.shape[:2]
        spec = wavelet_spectrum(w, dt, frequencies).expand(n_shots, n_src, -1).clone()
        omega_ref = 2 * math.pi * float(np.max(np.asarray(frequencies, dtype=np.float64))) if omega_ref is None \
            else omega_ref
        meta = {"wavelet": "ricker", "freq": float(freq), "wavelet_dt": float(dt), "wavelet_nt": int(nt),
                "wavelet_t0": float(1.5 / freq if t0 is None else t0), **kwargs.pop("metadata", {})}
        return cls(dx, frequencies, source_locations, receiver_locations, omega_ref, source_spectrum=spec,
                   metadata=meta, **kwargs)

    @property
    def fields(self) -> tuple[str, ...]:
        """The speed field's name, then the Q field's when there is one."""
        return (self.velocity,) if self.quality is None else (self.velocity, self.quality)

    @property
    def n_shots(self) -> int:
        """Number of shots."""
        return int(self.source_locations.shape[0])

    @staticmethod
    def complex_data(data: torch.Tensor) -> torch.Tensor:
        """``[..., n_freqs, 2]`` real data -> complex ``[..., n_freqs]``."""
        return torch.view_as_complex(data.contiguous())

    def describe(self) -> dict:
        """Every physical setting, JSON-able: ``physics`` (``"viscoacoustic"`` or ``"viscoelastic_sh"``), ``dx`` (m),
        ``frequencies`` (Hz), ``omega_ref`` (rad/s), ``pml_width``, ``free_surface``, field names, constant ``q``,
        the source spectrum (``[re, im]`` pairs, or None for unit sources), locations and metadata.
        """
        opts = {"pml_width": 20, "free_surface": False, **self.options}
        spec = None if self.source_spectrum is None else torch.view_as_real(
            self.source_spectrum.to(torch.complex128)).tolist()
        d = {"physics": "viscoacoustic" if self.wave == "acoustic" else "viscoelastic_sh", "wave": self.wave,
             "dx": self.dx, "frequencies": list(self.frequencies), "omega_ref": self.omega_ref,
             "n_shots": self.n_shots, "n_receivers": int(self.receiver_locations.shape[1]),
             "n_sources_per_shot": int(self.source_locations.shape[1]),
             **{k: _jsonable(v) for k, v in opts.items() if k not in _COMPUTATIONAL},
             "velocity": self.velocity, "quality": self.quality, "q": _jsonable(float(self.q)),
             "source_spectrum": spec, "data_layout": "[n_shots, n_receivers, n_freqs, (re, im)]",
             "source_locations": self.source_locations.tolist(), "receiver_locations": self.receiver_locations.tolist()}
        d.update(_jsonable(self.metadata))
        return d

    def __call__(self, fields: dict, shots: torch.Tensor | None = None) -> torch.Tensor:
        """Real ``[n_shots, n_receivers, n_freqs, 2]`` of ``{name: (nz, nx) or (batch, nz, nx)}``."""
        for name in self.fields:
            if name not in fields:
                raise KeyError(f"{type(self).__name__} needs the field {name!r}; got fields {sorted(fields)}")
        v = fields[self.velocity]
        q = fields[self.quality] if self.quality is not None else float(self.q)
        src, rec, spec = self.source_locations, self.receiver_locations, self.source_spectrum
        if shots is not None:
            src, rec = src[shots.to(src.device)], rec[shots.to(rec.device)]
            spec = None if spec is None else spec[shots.to(spec.device)]
        if spec is not None:
            spec = spec.to(device=v.device)
        out = helmholtz(v, q, self.dx, self.frequencies, src.to(v.device), rec.to(v.device),
                        omega_ref=self.omega_ref, wave=self.wave, source_amplitudes=spec, **self.options)
        return torch.view_as_real(out)


def ViscoAcousticForward(dx, frequencies, source_locations, receiver_locations, **kwargs) -> FrequencyForward:
    """Visco-acoustic operator (paper 2 eq. 42): fields ``vp`` and ``q`` by default; with ``freq=``, ``dt=``,
    ``nt=`` a Ricker source spectrum (:meth:`FrequencyForward.from_ricker`), else ``omega_ref=`` is required and the
    sources are unit (or ``source_spectrum=``).
    """
    kwargs.setdefault("velocity", "vp")
    return _make("acoustic", dx, frequencies, source_locations, receiver_locations, kwargs)


def ViscoElasticSHForward(dx, frequencies, source_locations, receiver_locations, **kwargs) -> FrequencyForward:
    """Visco-elastic SH operator (paper 2 eq. 44): fields ``vs`` and ``q`` by default; keywords as
    :func:`ViscoAcousticForward`.
    """
    kwargs.setdefault("velocity", "vs")
    return _make("sh", dx, frequencies, source_locations, receiver_locations, kwargs)


def _make(wave, dx, frequencies, src, rec, kwargs):
    if "freq" in kwargs:
        return FrequencyForward.from_ricker(dx, frequencies, src, rec, wave=wave, **kwargs)
    if "omega_ref" not in kwargs:
        raise ValueError("give omega_ref= (rad/s) or a Ricker source (freq=, dt=, nt=)")
    omega_ref = kwargs.pop("omega_ref")
    return FrequencyForward(dx, frequencies, src, rec, omega_ref, wave=wave, **kwargs)
