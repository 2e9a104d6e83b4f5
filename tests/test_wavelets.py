"""probinv.physics.ricker: peak, zero crossings, spectrum and argument checks."""
import math

import pytest
import torch

from probinv.physics import ricker


def test_ricker_peak_zero_crossings_and_spectrum():
    f, dt, nt = 12.0, 1e-3, 1000
    w = ricker(f, nt, dt, dtype=torch.float64)
    t0 = 1.5 / f
    assert w.dtype == torch.float64 and w.shape == (nt,)
    # peak 1 at t0 = 125 samples; zero crossings at t0 +- 1 / (pi f sqrt(2)), from 1 - 2 pi^2 f^2 tau^2 = 0
    assert int(torch.argmax(w)) == round(t0 / dt) and abs(float(w.max()) - 1) < 1e-12
    tz = t0 + 1 / (math.pi * f * math.sqrt(2))
    i = int(tz / dt)
    assert float(w[i]) > 0 > float(w[i + 1])
    # the amplitude spectrum f^2 exp(-f^2 / fp^2) peaks at the dominant frequency fp: within one FFT bin
    nfft = 8 * nt
    spec = torch.fft.rfft(w, n=nfft).abs()
    assert abs(int(torch.argmax(spec)) / (nfft * dt) - f) <= 1 / (nfft * dt)
    # starts at ~1e-4 of its peak (t0 = 1.5 / f): exp(-(1.5 pi)^2) (1 - 2 (1.5 pi)^2) ~ -1.6e-8 * 43
    assert abs(float(w[0])) < 1e-5


def test_ricker_t0_dtype_and_errors():
    w = ricker(10.0, 200, 1e-3, t0=0.05)
    assert w.dtype == torch.get_default_dtype() and int(torch.argmax(w)) == 50
    with pytest.raises(ValueError, match="freq must be a positive finite frequency in Hz, got -1"):
        ricker(-1.0, 10, 1e-3)
    with pytest.raises(ValueError, match="nt must be a positive integer number of samples, got 0"):
        ricker(10.0, 0, 1e-3)
    with pytest.raises(ValueError, match="dt must be a positive finite time step in s, got nan"):
        ricker(10.0, 10, float("nan"))
