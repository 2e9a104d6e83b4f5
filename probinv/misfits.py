r"""Misfit functions: pure, differentiable functions of synthetic and observed data.

Every misfit takes ``syn`` (the prediction, which carries the gradient) and ``obs`` shaped
``[n_shots, n_receivers, n]`` (any leading dimensions work; the last axis is time or frequency), and returns a scalar
tensor that is zero when ``syn == obs``. Time-domain misfits take the sample interval ``dt`` (s) where a time unit
enters. Complex data (frequency domain) are accepted where the definition makes sense (``l2``, ``l2_trace``,
``attenuation``, ``global_correlation``); gradients of complex inputs follow PyTorch's convention
(``dL/dRe + i dL/dIm``).

* ``l2``: :math:`\tfrac12\sum_{ijt}|s_{ij}(t)-o_{ij}(t)|^2` (any data).
* ``l2_trace``: :math:`\sum_{ij}\big(\sum_t|s_{ij}(t)-o_{ij}(t)|^2\big)^{1/2}` (paper 2 eq. 46; any data).
* ``traveltime``: :math:`\tfrac12\sum_{ij}\tau_{ij}^2`, :math:`\tau` the cross-correlation lag in seconds
  (eqs. 47-49; real traces); :func:`traveltime_shift` returns the lags themselves.
* ``attenuation``: :math:`\sum_{ij}\big(\sum_k \ln^2\frac{|o_{ij}(k)|+\epsilon}{|s_{ij}(k)|+\epsilon}\big)^{1/2}`
  (eq. 50; spectra).
* ``global_correlation``: :math:`\sum_{ij}\big(1-\mathrm{Re}\langle \hat s_{ij},\hat o_{ij}\rangle\big)` with
  unit-norm traces (any data).
* ``envelope``: :math:`\tfrac12\sum_{ijt}(E[s]-E[o])^2`, :math:`E` the modulus of the analytic signal (real traces).
* ``wasserstein``: :math:`\sum_{ij} W_2^2(\tilde s_{ij},\tilde o_{ij})` between positive-transformed, unit-mass
  traces (real traces).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check_pair(syn, obs, *, real_only: bool = False, name: str = "misfit") -> None:
    for arg, x in (("syn", syn), ("obs", obs)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor shaped [n_shots, n_receivers, n], "
                            f"got {type(x).__name__}")
        if x.ndim < 1:
            raise ValueError(f"{name}: {arg} must have at least one (time or frequency) axis, got a 0-d tensor")
        if real_only and x.is_complex():
            raise TypeError(f"{name}: {arg} must be real (time-domain traces), got dtype {x.dtype}")
        if not (x.is_floating_point() or x.is_complex()):
            raise TypeError(f"{name}: {arg} must have a floating or complex dtype, got {x.dtype}")
    if syn.shape != obs.shape:
        raise ValueError(f"{name}: syn and obs must have the same shape, got {tuple(syn.shape)} and "
                         f"{tuple(obs.shape)}")


def _check_dt(dt) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a positive finite number of seconds, got {dt!r}")
    return float(dt)


def l2(syn: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    r"""Half the sum of squared residuals, :math:`\tfrac12\sum|s - o|^2` (real or complex data).

    Parameters
    ----------
    syn, obs : Tensor
        Synthetic and observed data ``[n_shots, n_receivers, n]``.

    Returns
    -------
    Tensor
        Scalar, in (data unit)^2.
    """
    _check_pair(syn, obs, name="l2")
    r = syn - obs
    return 0.5 * (r.real.square().sum() + (r.imag.square().sum() if r.is_complex() else 0.0))


def l2_trace(syn: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    r"""Sum over traces of the trace L2 norm of the residual (paper 2 eq. 46), real or complex data.

    :math:`J = \sum_{ij}\|s_{ij} - o_{ij}\|_2`. Its gradient is the unit residual direction of every trace; at a
    trace with zero residual the (sub)gradient 0 is returned.
    """
    _check_pair(syn, obs, name="l2_trace")
    return torch.linalg.vector_norm(syn - obs, dim=-1).sum()


def _corr_derivatives(xs: torch.Tensor, tau: torch.Tensor, nfft: int):
    """Band-limited (trigonometric) interpolation of a correlation at lag ``tau`` (samples) from the half spectrum
    ``xs`` ``[..., nfft // 2 + 1]`` of the real correlation (``nfft`` even): returns ``C(tau), C'(tau), C''(tau)``.

    Hermitian symmetry: the full spectrum's sum is the DC and Nyquist terms once and the others twice (real part),
    half the work of the full sum and the same value for real traces.
    """
    k = torch.arange(xs.shape[-1], device=xs.device, dtype=tau.dtype) * (2 * math.pi / nfft)   # rad / sample
    w = torch.full_like(k, 2.0 / nfft)
    w[0] = w[-1] = 1.0 / nfft
    base = xs * torch.polar(w, k * tau[..., None])
    br, bi = base.real, base.imag
    return br.sum(-1), -(bi * k).sum(-1), -(br * (k * k)).sum(-1)


def traveltime_shift(syn: torch.Tensor, obs: torch.Tensor, dt: float, *, newton_steps: int = 8,
                     newton_tol: float = 1e-9, max_lag: float | None = None) -> torch.Tensor:
    r"""Differentiable cross-correlation time shift of ``obs`` relative to ``syn`` per trace (paper 2 eqs. 47-48).

    :math:`\tau_{ij} = \mathrm{argmax}_\tau\, C_{ij}(\tau)`, :math:`C(\tau) = \sum_t s(t)\, o(t + \tau)`, positive when
    the observed arrival is later than the synthetic one.

    How it is made differentiable and sub-sample accurate: the correlation is computed by zero-padded FFTs (no
    wrap-around) and interpolated between lags by its band-limited (trigonometric) interpolant, which is exact for
    band-limited traces. The integer argmax is refined by Newton's method on :math:`C'(\tau) = 0` (without
    gradient), then one more Newton step is taken *with* gradient,
    :math:`\tau = \tau_0 - C'(\tau_0)/C''(\tau_0)` (:math:`C''` detached). At the converged peak its value is
    :math:`\tau_0` and its derivative is the implicit-function derivative of the peak,
    :math:`\partial\tau/\partial s = -\partial_s C'(\tau)/C''(\tau)` (Luo & Schuster 1991), exactly.

    Parameters
    ----------
    syn, obs : Tensor
        Real traces ``[n_shots, n_receivers, nt]``.
    dt : float
        Sample interval in seconds.
    newton_steps : int
        Most refinement iterations (converges quadratically; 8 reaches rounding for smooth peaks).
    newton_tol : float
        Stop refining once no trace's Newton step exceeds this many samples (the last step's error is then of
        order its square).
    max_lag : float, optional
        Largest delay searched, in seconds (default: every lag of the linear correlation). Whole-trace correlation
        of records with several arrivals can jump to another arrival (a delay of periods); with ``max_lag`` (e.g.
        about half the dominant period) the delay is that of the highest correlation peak within the window. A
        trace whose correlation has no peak inside the window (its maximum there is at the window's edge) gets
        the edge value and no gradient.

    Returns
    -------
    Tensor
        Shifts in seconds, ``[n_shots, n_receivers]``. Traces whose correlation is identically zero get 0.
    """
    _check_pair(syn, obs, real_only=True, name="traveltime_shift")
    dt = _check_dt(dt)
    n = syn.shape[-1]
    limit = float(n - 1)
    if max_lag is not None:
        if isinstance(max_lag, bool) or not isinstance(max_lag, (int, float)) or not max_lag > 0:
            raise ValueError(f"max_lag must be a positive number of seconds (or None: every lag), got {max_lag!r}")
        limit = min(limit, float(max_lag) / dt)
    nfft = 1 << (2 * n - 1).bit_length()
    spec = torch.conj(torch.fft.rfft(syn, n=nfft)) * torch.fft.rfft(obs, n=nfft)       # C(k) = sum s(t) o(t + k)
    with torch.no_grad():
        c = torch.fft.irfft(spec, n=nfft)
        # only the lags of the linear correlation, -(n-1)..(n-1), are candidates
        lags = torch.fft.fftfreq(nfft, 1.0 / nfft, device=syn.device, dtype=syn.dtype)
        valid = lags.abs() <= limit
        c = torch.where(valid, c, torch.full_like(c, -torch.inf))
        tau = lags[torch.argmax(c, dim=-1)]
        for _ in range(newton_steps):
            _, c1, c2 = _corr_derivatives(spec, tau, nfft)
            step = torch.where(c2 < 0, -c1 / torch.where(c2 < 0, c2, -torch.ones_like(c2)), torch.zeros_like(c1))
            tau = (tau + step.clamp(-1.0, 1.0)).clamp(-limit, limit)
            if step.numel() == 0 or float(step.abs().max()) <= newton_tol:
                break
    # C' with gradient (through spec), C'' detached: one evaluation at the refined lag serves both
    _, c1, c2 = _corr_derivatives(spec, tau, nfft)
    c2 = c2.detach()
    with torch.no_grad():
        # a peak: C'' < 0 and C' = 0 (not a window edge the search was stopped at)
        good = (c2 < 0) & ((c1 / c2.abs().clamp_min(torch.finfo(c2.dtype).tiny)).abs() <= 1e-3)
        c2 = torch.where(good, c2, -torch.ones_like(c2))
    tau = tau - torch.where(good, c1 / c2, torch.zeros_like(c1))
    return tau * dt


def traveltime(syn: torch.Tensor, obs: torch.Tensor, dt: float) -> torch.Tensor:
    r"""Travel-time misfit :math:`\tfrac12\sum_{ij}\tau_{ij}^2` (paper 2 eq. 49), :math:`\tau` in seconds.

    See :func:`traveltime_shift` for the lag and how its gradient is computed. Returns a scalar in s^2.
    """
    return 0.5 * traveltime_shift(syn, obs, dt).square().sum()


def attenuation(syn: torch.Tensor, obs: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    r"""Log-amplitude-ratio misfit of paper 2 eq. 50 (frequency-domain attenuation imaging).

    :math:`J = \sum_{ij}\big(\sum_k \ln^2\frac{|o_{ij}(k)| + \epsilon}{|s_{ij}(k)| + \epsilon}\big)^{1/2}`.

    The paper puts ``eps`` in the denominator only; it is added to both amplitudes here so that the misfit is exactly
    zero for identical data (the difference is of order ``eps / |d|``).

    Parameters
    ----------
    syn, obs : Tensor
        Complex (or real) spectra ``[n_shots, n_receivers, n_freqs]``.
    eps : float
        Small positive constant (data units) guarding the logarithm.
    """
    _check_pair(syn, obs, name="attenuation")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    r = torch.log(obs.abs() + eps) - torch.log(syn.abs() + eps)
    return torch.linalg.vector_norm(r, dim=-1).sum()


def global_correlation(syn: torch.Tensor, obs: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    r"""Global-correlation misfit: :math:`\sum_{ij}(1 - \mathrm{Re}\langle s_{ij}, o_{ij}\rangle / (\|s_{ij}\|\,
    \|o_{ij}\|))`.

    Insensitive to the amplitude of each trace (source scaling, geometrical spreading); zero for identical (or
    positively proportional) traces, at most 2 per trace. Traces with zero norm contribute 1. ``eps`` (data units)
    may regularise the norms of near-silent traces.
    """
    _check_pair(syn, obs, name="global_correlation")
    ns = torch.linalg.vector_norm(syn, dim=-1)
    no = torch.linalg.vector_norm(obs, dim=-1)
    inner = (torch.conj(syn) * obs).sum(-1).real if syn.is_complex() or obs.is_complex() else (syn * obs).sum(-1)
    denom = ns * no + eps
    corr = torch.where(denom > 0, inner / torch.where(denom > 0, denom, torch.ones_like(denom)),
                       torch.zeros_like(inner))
    return (1.0 - corr).sum()


def analytic_envelope(x: torch.Tensor) -> torch.Tensor:
    r"""Envelope :math:`|x + i\mathcal H x|` of real traces ``[..., nt]`` (Hilbert transform by FFT, as
    :func:`scipy.signal.hilbert`: the spectrum's negative frequencies are zeroed and the positive ones doubled).
    """
    if not isinstance(x, torch.Tensor) or x.is_complex() or not x.is_floating_point():
        raise TypeError(f"x must be a real floating torch.Tensor [..., nt], got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    n = x.shape[-1]
    h = torch.zeros(n, dtype=x.dtype, device=x.device)
    h[0] = 1.0
    if n % 2 == 0:
        h[n // 2] = 1.0
        h[1:n // 2] = 2.0
    else:
        h[1:(n + 1) // 2] = 2.0
    analytic = torch.fft.ifft(torch.fft.fft(x, dim=-1) * h, dim=-1)
    # |z| with a zero (sub)gradient where the envelope vanishes
    return analytic.abs()


def envelope(syn: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    r"""Envelope misfit :math:`\tfrac12\sum_{ijt}(E[s](t) - E[o](t))^2`, :math:`E` from :func:`analytic_envelope`.

    Real time-domain traces ``[n_shots, n_receivers, nt]``; insensitive to the phase of the carrier, which mitigates
    cycle skipping.
    """
    _check_pair(syn, obs, real_only=True, name="envelope")
    return 0.5 * (analytic_envelope(syn) - analytic_envelope(obs)).square().sum()


_TRANSFORMS = ("square", "softplus", "exp")


def _positive(x: torch.Tensor, transform: str, beta: float, scale: torch.Tensor) -> torch.Tensor:
    if transform == "square":
        return x.square()
    if transform == "softplus":
        return F.softplus(beta * x / scale)
    return torch.exp(beta * x / scale)


def _quantiles(p: torch.Tensor, s: torch.Tensor, dt: float) -> torch.Tensor:
    """Quantile function of the piecewise-constant density ``p`` (unit mass, cells centred on ``t = n dt``) at ``s``."""
    n = p.shape[-1]
    cdf = torch.cat([torch.zeros_like(p[..., :1]), torch.cumsum(p, -1)], -1)           # at cell edges
    cdf = cdf / cdf[..., -1:]
    idx = torch.searchsorted(cdf.detach().contiguous(), s.expand(*cdf.shape[:-1], -1).contiguous())
    idx = idx.clamp(1, n)
    lo = torch.gather(cdf, -1, idx - 1)
    hi = torch.gather(cdf, -1, idx)
    frac = (s - lo) / (hi - lo).clamp_min(torch.finfo(p.dtype).tiny)
    return (idx - 1 + frac - 0.5) * dt


def wasserstein(syn: torch.Tensor, obs: torch.Tensor, dt: float, *, transform: str = "square", beta: float = 1.0,
                n_quantiles: int | None = None) -> torch.Tensor:
    r"""Quadratic Wasserstein misfit between positive-transformed, unit-mass traces (1-D optimal transport).

    Each trace is made positive (``transform``), normalised to unit mass and read as a piecewise-constant density on
    cells of width ``dt`` centred on ``t = n dt``; then, with the quantile functions :math:`F^{-1}`,
    :math:`W_2^2 = \int_0^1 |F_s^{-1}(u) - F_o^{-1}(u)|^2 du`, computed by the midpoint rule on ``n_quantiles``
    levels (default ``4 nt``). The misfit is :math:`\sum_{ij} W_2^2` in s^2; a pure time shift by :math:`\Delta t` of a
    compact pulse gives :math:`\Delta t^2` per trace.

    Parameters
    ----------
    syn, obs : Tensor
        Real traces ``[n_shots, n_receivers, nt]``.
    dt : float
        Sample interval (s).
    transform : {"square", "softplus", "exp"}
        Positivity transform: ``d^2``; ``softplus(beta d / max|obs|)``; ``exp(beta d / max|obs|)`` (Qiu et al. 2017;
        Yang et al. 2018 discuss the choices: ``square`` keeps the shape of compact pulses, the others keep the sign
        information).
    beta : float
        Sharpness of ``softplus`` / ``exp`` (dimensionless).
    n_quantiles : int, optional
        Number of quantile levels of the integral.
    """
    _check_pair(syn, obs, real_only=True, name="wasserstein")
    dt = _check_dt(dt)
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {_TRANSFORMS}, got {transform!r}")
    n = syn.shape[-1]
    m = 4 * n if n_quantiles is None else int(n_quantiles)
    if m < 1:
        raise ValueError(f"n_quantiles must be a positive integer, got {n_quantiles!r}")
    scale = obs.detach().abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(obs.dtype).tiny)
    ps = _positive(syn, transform, beta, scale)
    po = _positive(obs, transform, beta, scale)
    for arg, p in (("syn", ps), ("obs", po)):
        if bool((p.detach().sum(-1) <= 0).any()):
            raise ValueError(f"wasserstein: a trace of {arg} has zero mass after the '{transform}' transform "
                             f"(an all-zero trace); use transform='softplus' or 'exp' for such data")
    s = (torch.arange(m, dtype=syn.dtype, device=syn.device) + 0.5) / m
    qs = _quantiles(ps, s, dt)
    qo = _quantiles(po, s, dt)
    return (qs - qo).square().mean(-1).sum()


__all__ = ["analytic_envelope", "attenuation", "envelope", "global_correlation", "l2", "l2_trace", "traveltime",
           "traveltime_shift", "wasserstein"]
