r"""Paper 2's misfits as likelihoods: noise models of the open protocol (:class:`probinv.models.NoiseModel`).

Two are Gaussian likelihoods on a *transformed* datum (a proper generative noise model):

* :class:`TravelTime` -- the cross-correlation delay :math:`\tau_{ij}` of every trace (paper 2 eqs. 47-48, computed
  by :func:`probinv.misfits.traveltime_shift`) is Gaussian, :math:`\tau_{ij} \sim N(0, \sigma_{ij}^2)`, sigma in
  seconds: :math:`\log p = -\tfrac12\sum_{ij} \tau_{ij}^2/\sigma_{ij}^2 - \sum_{ij}\ln(\sqrt{2\pi}\sigma_{ij})`.
  With one sigma this is paper 2's travel-time misfit (eq. 49) divided by :math:`\sigma^2`.
* :class:`Attenuation` -- the log spectral amplitude ratio :math:`r_{ijk} = \ln\frac{|o_{ijk}| + \epsilon}
  {|s_{ijk}| + \epsilon}` of every trace and frequency (paper 2 eq. 50's quantity) is Gaussian with standard
  deviation sigma (natural-log units). Eq. 50 sums the per-trace norms :math:`\|r_{ij}\|`; the Gaussian likelihood
  sums their squares (the norm is not a log density of any noise model and is not differentiable at zero).

Two are **tempered** likelihoods :math:`\exp(-J/T)` of a misfit J, a modelling choice rather than a noise model:

* :class:`GlobalCorrelation` -- :math:`J = \sum_{ij}(1 - \hat s_{ij}\cdot\hat o_{ij})` with unit-norm traces. Since
  :math:`1 - \hat s\cdot\hat o = \tfrac12\|\hat s - \hat o\|^2`, :math:`\exp(-J/T)` is the Gaussian likelihood of the
  *normalised* traces with variance ``T`` per sample: ``sqrt(T)`` is the assumed noise of a unit-norm trace per
  sample, e.g. ``T = sigma^2 / ||o||^2`` for data noise sigma on a trace of norm ``||o||``.
* :class:`Envelope` -- :math:`J = \tfrac12\sum(E[s] - E[o])^2` (:func:`probinv.misfits.envelope`): ``sqrt(T)`` is the
  assumed noise of an envelope sample in data units.

``T`` scales the posterior's spread (its width grows as ``sqrt(T)`` in the linear regime): it must be chosen and
reported, it is not estimated from the data. These two have no generative model: ``sample`` raises.

Data and shapes. ``pred`` and ``data`` are ``[*batch, n_shots, n_receivers, *trace]``: ``trace = (nt,)`` for time
series (travel time, envelope, global correlation) and ``(n_freqs, 2)`` (real and imaginary parts, the layout of
:class:`probinv.models.FrequencyForward`) or complex ``(n_freqs,)`` for spectra (attenuation, global correlation).

Gauss-Newton (:func:`probinv.inference.laplace`). :meth:`whiten` maps a **prediction** to the whitened transformed
residual ``(T(pred) - T(observed)) / sigma`` (travel time: ``tau(pred, observed) / sigma``), whose squared norm over
2 is the negative log-likelihood up to a constant; the Laplace approximation linearises it, as it linearises
``pred / sigma`` for the Gaussian noise model. It needs the observed data: pass ``observed=`` when building the
likelihood (the other methods take the data as an argument). For the built-in linear noise models, whitening a
prediction or a residual gives the same Jacobian, which is all that Gauss-Newton uses.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from ..misfits import analytic_envelope, traveltime_shift
from ..validation import check_int, check_positive, check_scalar

__all__ = ["Attenuation", "Envelope", "GlobalCorrelation", "TraceL2", "TravelTime"]


class _Misfit(dist.TorchDistribution):
    """Observation distribution of a misfit likelihood: ``log_prob(value)`` is the likelihood's per-shot log density
    ``[..., n_sub]`` of the observed records ``value``; ``sample`` draws data when the likelihood is generative.
    """

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, pred, n_event, loglik, sampler=None):
        self.pred, self.n_event, self._loglik, self._sampler = pred, n_event, loglik, sampler
        shape = tuple(pred.shape)
        super().__init__(torch.Size(shape[:len(shape) - n_event]), torch.Size(shape[len(shape) - n_event:]),
                         validate_args=False)

    def expand(self, batch_shape, _instance=None):
        pred = self.pred.expand(tuple(batch_shape) + tuple(self.event_shape))
        return _Misfit(pred, self.n_event, self._loglik, self._sampler)

    def log_prob(self, value):
        return self._loglik(self.pred, value.expand(self.pred.shape) if value.shape != self.pred.shape else value)

    def sample(self, sample_shape=()):
        if self._sampler is None:
            raise NotImplementedError("a tempered misfit likelihood exp(-J/T) is no generative noise model: simulate "
                                      "data with a noise model such as probinv.models.Gaussian instead")
        with torch.no_grad():
            pred = self.pred.expand(tuple(sample_shape) + tuple(self.pred.shape))
            return self._sampler(pred)


def _per_shot(value, like, shots, n_dims):
    """A per-trace parameter (float, or tensor broadcastable to ``[n_shots, n_receivers, ...]``) on ``like``'s dtype
    and device, subsampled with ``shots`` when it has ``n_dims`` axes and a first axis > 1.
    """
    if not isinstance(value, torch.Tensor):
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)
    value = value.to(dtype=like.dtype, device=like.device)
    if shots is not None and value.ndim == n_dims and value.shape[0] != 1:
        value = value.index_select(0, shots.to(value.device))
    return value


def _sum_trailing(x, n):
    return x.sum(dim=tuple(range(-n, 0))) if n else x


def _require_observed(owner, observed):
    if observed is None:
        raise ValueError(f"{owner}.whiten needs the observed data: build it with observed=data "
                         f"(the Laplace approximation's Gauss-Newton Hessian linearises T(pred) - T(observed))")
    return observed


class _Defaults:
    def sample_params(self, like):
        return {}

    def params_from_latents(self, latents: Mapping):
        return {}

    def log_prior(self, params, like):
        return like.new_zeros(())

    def log_prob(self, pred, data, params):
        """``log p(data | pred)`` summed over shots and data axes: shape ``pred.shape[:-data.ndim]``."""
        n_data_dims = data.ndim
        lp = self.distribution(pred, params, None, n_data_dims).log_prob(data)
        return lp.sum(-1)


def _check_observed(observed):
    if observed is not None and (not isinstance(observed, torch.Tensor) or observed.ndim < 3):
        raise TypeError(f"observed must be a Tensor [n_shots, n_receivers, ...] or None, got "
                        f"{type(observed).__name__}")


@dataclass(frozen=True, eq=False)
class TravelTime(_Defaults):
    r"""Gaussian likelihood of the cross-correlation delay of every trace (paper 2 eqs. 47-49).

    Parameters
    ----------
    sigma : float or Tensor
        Standard deviation of a delay in seconds; a tensor broadcastable to ``[n_shots, n_receivers]`` (per trace,
        subsampled with the shots when shaped ``[n_shots, n_receivers]``).
    dt : float
        Sample interval of the traces (s).
    observed : Tensor, optional
        Observed records ``[n_shots, n_receivers, nt]``, needed by :meth:`whiten` only.
    newton_steps : int
        Sub-sample refinement of the correlation peak (:func:`probinv.misfits.traveltime_shift`).
    max_lag : float, optional
        Largest delay searched, in seconds (default: the whole correlation). Whole-trace correlation of records
        with several arrivals can pick another arrival than the synthetic trace's (a delay of periods); about half
        the dominant period keeps each delay on its own arrival. Traces with no correlation peak within the window
        contribute a constant (no gradient).

    Data are real time series ``[..., n_shots, n_receivers, nt]``. ``sample`` delays each predicted trace by a
    Gaussian delay (band-limited shift by FFT, zero-padded: no wrap-around).
    """

    sigma: float | torch.Tensor
    dt: float
    observed: torch.Tensor | None = field(default=None, repr=False)
    newton_steps: int = 8
    max_lag: float | None = None

    def __post_init__(self):
        check_positive("sigma", self.sigma)
        object.__setattr__(self, "dt", check_scalar("dt", self.dt))
        check_int("newton_steps", self.newton_steps, minimum=0)
        if self.max_lag is not None:
            object.__setattr__(self, "max_lag", check_scalar("max_lag", self.max_lag))
        _check_observed(self.observed)

    def delays(self, pred, obs):
        """Delays ``[..., n_shots, n_receivers]`` (s) of ``obs`` relative to ``pred`` (positive: obs later)."""
        obs = obs.expand(pred.shape) if obs.shape != pred.shape else obs
        return traveltime_shift(pred, obs, self.dt, newton_steps=self.newton_steps, max_lag=self.max_lag)

    def _loglik(self, sigma):
        def f(pred, value):
            tau = self.delays(pred, value)
            lp = -0.5 * (tau / sigma) ** 2 - torch.log(sigma * math.sqrt(2 * math.pi))
            return lp.sum(-1)                                                    # over receivers -> [..., n_sub]
        return f

    def _sampler(self, sigma):
        def f(pred):
            nt = pred.shape[-1]
            n = 2 * nt
            tau = sigma * torch.randn(pred.shape[:-1], dtype=pred.dtype, device=pred.device)
            freq = torch.fft.rfftfreq(n, d=self.dt, device=pred.device).to(pred.dtype)
            spec = torch.fft.rfft(pred, n=n) * torch.exp(-2j * math.pi * freq * tau[..., None])
            return torch.fft.irfft(spec, n=n)[..., :nt]
        return f

    def distribution(self, pred, params, shots, n_data_dims):
        if n_data_dims != 3:
            raise ValueError(f"TravelTime needs data [n_shots, n_receivers, nt] (3 axes), got {n_data_dims} axes")
        sigma = _per_shot(self.sigma, pred, shots, 2)
        return _Misfit(pred, n_data_dims - 1, self._loglik(sigma), self._sampler(sigma))

    def whiten(self, pred, params):
        """``tau(pred, observed) / sigma``, ``[n_shots, n_receivers]`` (see the module docstring)."""
        obs = _require_observed("TravelTime", self.observed).to(dtype=pred.dtype, device=pred.device)
        return self.delays(pred, obs) / _per_shot(self.sigma, pred, None, 2)


def _amplitude(x, stacked):
    """``|x|`` of complex data (``stacked``: the last axis holds the real and imaginary parts)."""
    if x.is_complex():
        return x.abs()
    if stacked:
        return torch.sqrt(x[..., 0] ** 2 + x[..., 1] ** 2)
    return x.abs()


@dataclass(frozen=True, eq=False)
class Attenuation(_Defaults):
    r"""Gaussian likelihood of the log spectral amplitude ratios (paper 2 eq. 50's quantity).

    Parameters
    ----------
    sigma : float or Tensor
        Standard deviation of ``ln|o| - ln|s|`` (dimensionless; 0.1 is a 10 % amplitude error), broadcastable to
        ``[n_shots, n_receivers, n_freqs]``.
    eps : float
        Added to both amplitudes (data units) to guard the logarithm, as :func:`probinv.misfits.attenuation`.
    observed : Tensor, optional
        Observed spectra, needed by :meth:`whiten` only.

    Data: real ``[..., n_shots, n_receivers, n_freqs, 2]`` (the layout of :class:`FrequencyForward`) or complex
    ``[..., n_shots, n_receivers, n_freqs]``. ``sample`` multiplies each predicted spectrum by ``exp(e)``,
    ``e ~ N(0, sigma^2)`` (amplitude noise, phase kept).
    """

    sigma: float | torch.Tensor
    eps: float = 1e-10
    observed: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        check_positive("sigma", self.sigma)
        object.__setattr__(self, "eps", check_scalar("eps", self.eps))
        _check_observed(self.observed)

    def log_ratio(self, pred, obs):
        """``ln(|obs| + eps) - ln(|pred| + eps)`` ``[..., n_shots, n_receivers, n_freqs]``."""
        stacked = not pred.is_complex()
        if stacked and pred.shape[-1] != 2:
            raise ValueError(f"Attenuation needs complex spectra or real [..., n_freqs, 2] (re, im), got a last "
                             f"axis of {pred.shape[-1]}")
        return torch.log(_amplitude(obs, stacked) + self.eps) - torch.log(_amplitude(pred, stacked) + self.eps)

    def distribution(self, pred, params, shots, n_data_dims):
        stacked = not pred.is_complex()
        if n_data_dims != (4 if stacked else 3):
            raise ValueError(f"Attenuation needs data [n_shots, n_receivers, n_freqs, 2] or complex [n_shots, "
                             f"n_receivers, n_freqs], got {n_data_dims} axes")
        sigma = _per_shot(self.sigma, pred, shots, 3)

        def loglik(p, value):
            r = self.log_ratio(p, value)
            return _sum_trailing(-0.5 * (r / sigma) ** 2 - torch.log(sigma * math.sqrt(2 * math.pi)), 2)

        def sampler(p):
            e = sigma * torch.randn(p.shape[:-1] if stacked else p.shape, dtype=sigma.dtype, device=p.device)
            return p * torch.exp(e)[..., None] if stacked else p * torch.exp(e)

        return _Misfit(pred, n_data_dims - 1, loglik, sampler)

    def whiten(self, pred, params):
        """``(ln|pred| - ln|observed|) / sigma`` ``[n_shots, n_receivers, n_freqs]``."""
        obs = _require_observed("Attenuation", self.observed).to(device=pred.device)
        obs = obs.to(pred.dtype)
        return -self.log_ratio(pred, obs) / _per_shot(self.sigma, pred, None, 3)


@dataclass(frozen=True, eq=False)
class GlobalCorrelation(_Defaults):
    r"""Tempered global-correlation likelihood :math:`\exp(-J/T)`, :math:`J = \sum_{ij}(1 - \hat s\cdot\hat o)`.

    Parameters
    ----------
    temperature : float
        ``T`` (dimensionless): a modelling choice, the variance per sample of the noise on unit-norm traces (see
        the module docstring). Not a noise model: nothing estimates it.
    trace_dims : int
        Trailing axes forming one trace: 1 for time series ``[..., nt]``, 2 for stacked spectra ``[..., n_freqs, 2]``
        (then the inner product is ``Re(conj(s) o)`` summed over frequencies).
    eps : float
        Added to the product of the norms (data units squared) for near-silent traces.
    observed : Tensor, optional
        Needed by :meth:`whiten` only.
    """

    temperature: float
    trace_dims: int = 1
    eps: float = 0.0
    observed: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "temperature", check_scalar("temperature", self.temperature))
        check_int("trace_dims", self.trace_dims)
        object.__setattr__(self, "eps", check_scalar("eps", self.eps, positive=False))
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps!r}")
        _check_observed(self.observed)

    def _unit(self, x):
        flat = x.reshape(tuple(x.shape[:x.ndim - self.trace_dims]) + (-1,))
        norm = torch.linalg.vector_norm(flat, dim=-1, keepdim=True)
        return flat / (norm + math.sqrt(self.eps)).clamp_min(torch.finfo(x.dtype).tiny)

    def misfit(self, pred, obs):
        """Per-trace ``1 - <s, o> / (|s| |o|)`` ``[..., n_shots, n_receivers]``."""
        obs = obs.expand(pred.shape) if obs.shape != pred.shape else obs
        return 1.0 - (self._unit(pred) * self._unit(obs)).sum(-1)

    def distribution(self, pred, params, shots, n_data_dims):
        if n_data_dims != 2 + self.trace_dims:
            raise ValueError(f"GlobalCorrelation(trace_dims={self.trace_dims}) needs data with "
                             f"{2 + self.trace_dims} axes [n_shots, n_receivers, ...], got {n_data_dims}")
        return _Misfit(pred, n_data_dims - 1, lambda p, v: -self.misfit(p, v).sum(-1) / self.temperature)

    def whiten(self, pred, params):
        """``(s / |s| - o / |o|) / sqrt(T)`` per trace, ``[n_shots, n_receivers, D]``: half its squared norm is J/T."""
        obs = _require_observed("GlobalCorrelation", self.observed).to(dtype=pred.dtype, device=pred.device)
        return (self._unit(pred) - self._unit(obs)) / math.sqrt(self.temperature)


@dataclass(frozen=True, eq=False)
class Envelope(_Defaults):
    r"""Tempered envelope likelihood :math:`\exp(-J/T)`, :math:`J = \tfrac12\sum_{ijt}(E[s] - E[o])^2`.

    Parameters
    ----------
    temperature : float
        ``T`` in data units squared: a modelling choice, the variance of the noise on an envelope sample.
    observed : Tensor, optional
        Needed by :meth:`whiten` only.

    Data are real time series ``[..., n_shots, n_receivers, nt]``.
    """

    temperature: float
    observed: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "temperature", check_scalar("temperature", self.temperature))
        _check_observed(self.observed)

    def distribution(self, pred, params, shots, n_data_dims):
        if n_data_dims != 3:
            raise ValueError(f"Envelope needs data [n_shots, n_receivers, nt] (3 axes), got {n_data_dims}")

        def loglik(p, v):
            r = analytic_envelope(p) - analytic_envelope(v)
            return -0.5 * r.square().sum(dim=(-2, -1)) / self.temperature

        return _Misfit(pred, n_data_dims - 1, loglik)

    def whiten(self, pred, params):
        """``(E[pred] - E[observed]) / sqrt(T)``."""
        obs = _require_observed("Envelope", self.observed).to(dtype=pred.dtype, device=pred.device)
        return (analytic_envelope(pred) - analytic_envelope(obs)) / math.sqrt(self.temperature)


@dataclass(frozen=True, eq=False)
class TraceL2(_Defaults):
    r"""Tempered likelihood :math:`\exp(-J/T)` of paper 2's FWI misfit, :math:`J = \sum_{ij}\|s_{ij} - o_{ij}\|_2`
    (eq. 46: the sum over traces of the trace L2 norm, :func:`probinv.misfits.l2_trace`).

    With a flat prior, MAP is paper 2's deterministic FWI (``T = 1``: Adam is invariant to the scale of the loss).
    ``T`` (data units) is a modelling choice, not a noise model: ``sample`` raises.

    Parameters
    ----------
    temperature : float
        ``T`` in data units.
    trace_dims : int
        Trailing axes forming one trace (1 for time series, 2 for stacked spectra).
    observed : Tensor, optional
        Needed by :meth:`whiten` only.

    :meth:`whiten` returns ``(s - o) / sqrt(T ||s - o||)`` per trace, the iteratively reweighted least-squares form
    whose half squared norm equals ``J / (2 T)``: its Gauss-Newton Hessian is that of the reweighted problem at the
    current residual (the curvature of the norm itself is left out).
    """

    temperature: float = 1.0
    trace_dims: int = 1
    observed: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "temperature", check_scalar("temperature", self.temperature))
        check_int("trace_dims", self.trace_dims)
        _check_observed(self.observed)

    def _norms(self, pred, obs):
        r = pred - obs
        flat = r.reshape(tuple(r.shape[:r.ndim - self.trace_dims]) + (-1,))
        return flat, torch.linalg.vector_norm(flat, dim=-1)

    def distribution(self, pred, params, shots, n_data_dims):
        if n_data_dims != 2 + self.trace_dims:
            raise ValueError(f"TraceL2(trace_dims={self.trace_dims}) needs data with {2 + self.trace_dims} axes, "
                             f"got {n_data_dims}")
        return _Misfit(pred, n_data_dims - 1, lambda p, v: -self._norms(p, v)[1].sum(-1) / self.temperature)

    def whiten(self, pred, params):
        """``(s - o) / sqrt(T ||s - o||)`` per trace (see the class docstring)."""
        obs = _require_observed("TraceL2", self.observed).to(dtype=pred.dtype, device=pred.device)
        flat, norm = self._norms(pred, obs)
        return flat / torch.sqrt(self.temperature * norm.detach().clamp_min(torch.finfo(pred.dtype).tiny))[..., None]
