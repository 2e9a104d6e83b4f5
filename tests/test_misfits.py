"""Tests of probinv.misfits: zero on identical data, analytic values, gradients vs finite differences, checks."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scipy.signal
import torch

from probinv import misfits

DT = 2e-3
NT = 200


def pulse(shift=0.0, nt=NT, dt=DT, f=25.0, t0=0.12, dtype=torch.float64):
    """Ricker pulse delayed by ``shift`` samples (exactly, sampled from the continuous function)."""
    t = (torch.arange(nt, dtype=dtype) - shift) * dt - t0
    a = (math.pi * f * t) ** 2
    return (1 - 2 * a) * torch.exp(-a)


def batch(shifts, **kw):
    """[n_shots=len(shifts), 2 receivers, nt] with the same shift for both receivers of a shot (2nd one scaled)."""
    return torch.stack([torch.stack([pulse(s, **kw), 0.5 * pulse(s, **kw)]) for s in shifts])


def complex_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
            + 1j * torch.randn(2, 3, 5, generator=g, dtype=torch.float64))


REAL_MISFITS = {
    "l2": lambda s, o: misfits.l2(s, o),
    "l2_trace": lambda s, o: misfits.l2_trace(s, o),
    "traveltime": lambda s, o: misfits.traveltime(s, o, DT),
    "global_correlation": lambda s, o: misfits.global_correlation(s, o),
    "envelope": lambda s, o: misfits.envelope(s, o),
    "wasserstein": lambda s, o: misfits.wasserstein(s, o, DT),
    "wasserstein_softplus": lambda s, o: misfits.wasserstein(s, o, DT, transform="softplus", beta=3.0),
    "attenuation": lambda s, o: misfits.attenuation(s, o),
}
COMPLEX_MISFITS = ("l2", "l2_trace", "global_correlation", "attenuation")


@pytest.mark.parametrize("name", sorted(REAL_MISFITS))
def test_zero_on_identical_data(name):
    d = batch([0.0, 3.3])
    x = d.clone().requires_grad_()
    val = REAL_MISFITS[name](x, d)
    # traveltime: Newton refinement on an exact peak at lag 0 leaves only rounding (~1e-16 s^2)
    assert abs(float(val.detach())) < 1e-12
    # at the minimum the gradient is zero (and finite: no 0/0 from norms or square roots); rounding level
    (g,) = torch.autograd.grad(val, x)
    assert bool(torch.isfinite(g).all()) and float(g.abs().max()) < 1e-12


@pytest.mark.parametrize("name", COMPLEX_MISFITS)
def test_zero_on_identical_complex_data(name):
    d = complex_data()
    assert abs(float(REAL_MISFITS[name](d, d.clone()))) < 1e-12


@pytest.mark.parametrize("name", sorted(set(REAL_MISFITS) - {"attenuation"}))
def test_gradient_matches_finite_differences_real(name):
    # (attenuation is a frequency-domain misfit of |d|: it is checked on complex spectra below, away from |d| = 0)
    # Central differences along a random direction in float64; steps chosen so truncation (h^2) and rounding
    # (eps / h) are both below 1e-7 relative; tolerance 1e-5 relative.
    obs = batch([0.0, -2.0])
    syn0 = batch([1.4, 0.7]) + 0.01 * torch.randn(2, 2, NT, dtype=torch.float64)
    direction = torch.randn_like(syn0)
    syn = syn0.clone().requires_grad_()
    (g,) = torch.autograd.grad(REAL_MISFITS[name](syn, obs), syn)
    h = 1e-6
    fd = (float(REAL_MISFITS[name](syn0 + h * direction, obs)) - float(REAL_MISFITS[name](syn0 - h * direction, obs))
          ) / (2 * h)
    an = float((g * direction).sum())
    assert abs(fd - an) <= 1e-5 * abs(an) + 1e-12, (fd, an)


@pytest.mark.parametrize("name", COMPLEX_MISFITS)
def test_gradient_matches_finite_differences_complex(name):
    # PyTorch's complex gradient g = dL/dRe + i dL/dIm, so the derivative along a complex direction u is Re(conj(g) u)
    obs = complex_data(1)
    syn0 = complex_data(2)
    u = complex_data(3)
    syn = syn0.clone().requires_grad_()
    (g,) = torch.autograd.grad(REAL_MISFITS[name](syn, obs), syn)
    h = 1e-6
    fd = (float(REAL_MISFITS[name](syn0 + h * u, obs)) - float(REAL_MISFITS[name](syn0 - h * u, obs))) / (2 * h)
    an = float((g.conj() * u).real.sum())
    assert abs(fd - an) <= 1e-5 * abs(an), (fd, an)


@pytest.mark.parametrize("shift", [5.0, -7.0, 2.3, -0.4, 11.75])
def test_traveltime_shift_recovers_known_shift(shift):
    # obs is syn delayed by `shift` samples (exact continuous Ricker): tau = shift * dt to 1 % (issue); the band-limited
    # interpolation is in fact accurate to ~1e-4 samples for this well-sampled pulse.
    syn = batch([0.0, 0.0])
    obs = batch([shift, shift])
    tau = misfits.traveltime_shift(syn, obs, DT)
    assert tau.shape == (2, 2)
    np.testing.assert_allclose(tau.numpy(), shift * DT, rtol=0.01, atol=0)
    np.testing.assert_allclose(float(misfits.traveltime(syn, obs, DT)), 0.5 * 4 * (shift * DT) ** 2, rtol=0.02)


def test_traveltime_gradient_is_implicit_derivative():
    # d tau / d shift of the synthetic = -dt (moving syn later reduces the delay of obs): check through autograd
    # by differentiating with respect to a continuous shift parameter of the synthetic.
    s = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    t = (torch.arange(NT, dtype=torch.float64) - s) * DT - 0.12
    a = (math.pi * 25.0 * t) ** 2
    syn = ((1 - 2 * a) * torch.exp(-a))[None, None]
    obs = pulse(4.0)[None, None]
    tau = misfits.traveltime_shift(syn, obs, DT)[0, 0]
    (g,) = torch.autograd.grad(tau, s)
    np.testing.assert_allclose(float(tau.detach()), (4.0 - 1.3) * DT, rtol=1e-3)
    np.testing.assert_allclose(float(g), -DT, rtol=1e-3)


def test_traveltime_max_lag_keeps_the_delay_on_its_arrival():
    # obs: the synthetic's arrival delayed by 3 samples plus a 2x stronger arrival 60 samples later (a reflection
    # the synthetic lacks). The whole correlation peaks on the strong one (~60 samples); a window of 20 samples
    # (0.04 s) finds the 3-sample delay as from a clean pair.
    syn = pulse(0.0)[None, None]
    obs = (pulse(3.0) + 2.0 * pulse(63.0))[None, None]
    whole = float(misfits.traveltime_shift(syn, obs, DT)[0, 0]) / DT
    assert abs(whole - 63.0) < 1.0
    windowed = float(misfits.traveltime_shift(syn, obs, DT, max_lag=20 * DT)[0, 0]) / DT
    clean = float(misfits.traveltime_shift(syn, pulse(3.0)[None, None], DT)[0, 0]) / DT
    # the strong arrival's correlation tail at lag 3 (60 samples = 0.12 s away) is ~exp(-(pi 25 0.12)^2)
    # ~ 1e-38 small: the windowed delay equals the clean pair's (measured 3e-15 samples apart)
    assert abs(windowed - 3.0) < 1e-6 and abs(windowed - clean) < 1e-6
    # the gradient of the windowed delay is the implicit derivative at the windowed peak: finite differences of a
    # continuous shift of the synthetic (central, h = 1e-4 samples; the delay is smooth there: 1e-6 relative)
    s = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)

    def delay(shift):
        t = (torch.arange(NT, dtype=torch.float64) - shift) * DT - 0.12
        a = (math.pi * 25.0 * t) ** 2
        return misfits.traveltime_shift(((1 - 2 * a) * torch.exp(-a))[None, None], obs, DT, max_lag=20 * DT)[0, 0]

    (g,) = torch.autograd.grad(delay(s), s)
    h = 1e-4
    with torch.no_grad():
        fd = (float(delay(torch.tensor(0.4 + h, dtype=torch.float64))) -
              float(delay(torch.tensor(0.4 - h, dtype=torch.float64)))) / (2 * h)
    assert abs(float(g) - fd) <= 1e-6 * abs(fd), (float(g), fd)
    # no peak inside the window (the true delay, 30 samples, lies beyond 10): the edge value and no gradient
    syn2 = pulse(0.0)[None, None].clone().requires_grad_(True)
    tau = misfits.traveltime_shift(syn2, pulse(30.0)[None, None], DT, max_lag=10 * DT)
    assert float(tau.detach()) == pytest.approx(10 * DT, rel=1e-12)
    (g2,) = torch.autograd.grad(tau.sum(), syn2)
    assert float(g2.abs().max()) == 0.0
    with pytest.raises(ValueError, match=re.escape("max_lag must be a positive number of seconds (or None: every "
                                                   "lag), got 0")):
        misfits.traveltime_shift(syn, obs, DT, max_lag=0)


def test_l2_and_l2_trace_values():
    syn = torch.zeros(1, 2, 3, dtype=torch.float64)
    obs = torch.tensor([[[3.0, 4.0, 0.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    assert float(misfits.l2(syn, obs)) == pytest.approx(0.5 * (9 + 16 + 1))
    assert float(misfits.l2_trace(syn, obs)) == pytest.approx(5.0 + 1.0)
    c = torch.tensor([[[3j, 4.0]]], dtype=torch.complex128)
    assert float(misfits.l2(c, torch.zeros_like(c))) == pytest.approx(12.5)


def test_attenuation_value():
    # |obs| = e |syn| at every frequency: each trace contributes sqrt(K) (eps negligible at these amplitudes)
    syn = complex_data()
    obs = syn * math.e * torch.exp(1j * torch.rand(syn.shape, dtype=torch.float64))
    assert float(misfits.attenuation(syn, obs)) == pytest.approx(6 * math.sqrt(5), rel=1e-8)


def test_global_correlation_values():
    d = batch([0.0, 2.0])
    assert float(misfits.global_correlation(3.0 * d, d)) == pytest.approx(0.0, abs=1e-12)   # amplitude-blind
    assert float(misfits.global_correlation(-d, d)) == pytest.approx(2.0 * 4, rel=1e-12)   # 4 traces, each 2


def test_envelope_matches_scipy_and_tone_value():
    x = batch([0.0, 3.0]) + 0.1 * torch.randn(2, 2, NT, dtype=torch.float64)
    ref = np.abs(scipy.signal.hilbert(x.numpy(), axis=-1))
    np.testing.assert_allclose(misfits.analytic_envelope(x).numpy(), ref, rtol=1e-12, atol=1e-12)
    # a periodic tone a cos(2 pi k n / N) has envelope a exactly: misfit = 0.5 N (a - b)^2 per trace
    n = torch.arange(64, dtype=torch.float64)
    tone = torch.cos(2 * math.pi * 5 * n / 64)[None, None]
    assert float(misfits.envelope(2.0 * tone, 0.5 * tone)) == pytest.approx(0.5 * 64 * 1.5 ** 2, rel=1e-12)
    assert float(misfits.envelope(tone, torch.sin(2 * math.pi * 5 * n / 64)[None, None])) < 1e-20  # phase-blind


@pytest.mark.parametrize("shift", [4.0, -9.0, 2.5])
def test_wasserstein_of_shifted_pulse(shift):
    # The 'square' transform of a compact pulse shifted by s samples is the same density translated by s dt, so
    # W2^2 = (s dt)^2 per trace; sub-sample shifts are affected by the piecewise-constant density (1 %).
    syn = batch([0.0, 0.0])
    obs = batch([shift, shift])
    w = float(misfits.wasserstein(syn, obs, DT))
    assert w == pytest.approx(4 * (shift * DT) ** 2, rel=0.01)


def test_float32_and_shapes():
    d = batch([0.0, 1.0], dtype=torch.float32)
    o = batch([2.0, 1.5], dtype=torch.float32)
    for name, f in REAL_MISFITS.items():
        val = f(d, o)
        assert val.shape == () and val.dtype == torch.float32 and torch.isfinite(val), name


def test_input_checks():
    d = batch([0.0])
    with pytest.raises(ValueError, match=re.escape("l2: syn and obs must have the same shape, got (1, 2, 200) and "
                                                   "(1, 2, 199)")):
        misfits.l2(d, d[..., :-1])
    with pytest.raises(TypeError, match=re.escape("traveltime_shift: syn must be real (time-domain traces), "
                                                  "got dtype torch.complex128")):
        misfits.traveltime(d.to(torch.complex128), d.to(torch.complex128), DT)
    with pytest.raises(ValueError, match=re.escape("dt must be a positive finite number of seconds, got -0.001")):
        misfits.traveltime(d, d, -1e-3)
    with pytest.raises(ValueError, match=re.escape("transform must be one of ('square', 'softplus', 'exp'), "
                                                   "got 'abs'")):
        misfits.wasserstein(d, d, DT, transform="abs")
    with pytest.raises(ValueError, match=re.escape("a trace of syn has zero mass")):
        misfits.wasserstein(torch.zeros_like(d), d, DT)
    with pytest.raises(ValueError, match=re.escape("eps must be a positive number, got 0")):
        misfits.attenuation(d, d, eps=0)
    with pytest.raises(TypeError, match=re.escape("l2: obs must be a torch.Tensor")):
        misfits.l2(d, d.numpy())
