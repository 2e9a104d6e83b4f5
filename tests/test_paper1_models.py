"""Tests of probinv.scenarios.paper1_models: paper 1's random velocity models (Yang et al. 2021).

Moved from test_fields.py with the generator. The statistical checks compare estimates with their analytic values
within 5 standard errors of the estimate, computed exactly for Gaussian fields (Isserlis' theorem); the seeds
are fixed, so the tests are deterministic.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from probinv.fields import matern_covariance, sample_grf
from probinv.scenarios import paper1_models


# ----------------------------------------------------------------------------------------------------------------------
# helpers: exact standard errors of pooled covariance estimates (the same as in test_fields.py)
# ----------------------------------------------------------------------------------------------------------------------
def lag_covariance(shape, dx, nu, a_z, a_x):
    """Correlation on all lags ``(-(nz-1)..nz-1, -(nx-1)..nx-1)``, as a function ``c(dz, dx)`` of integer lags."""
    nz, nx = shape
    hz = np.arange(-(nz - 1), nz)
    hx = np.arange(-(nx - 1), nx)
    table = matern_covariance(hz[:, None] * dx, hx[None, :] * dx, nu=nu, a_z=a_z, a_x=a_x)

    def c(dz, dxx):
        dz, dxx = np.broadcast_arrays(np.atleast_1d(dz), np.atleast_1d(dxx))
        out = np.zeros(dz.shape)
        ok = (np.abs(dz) < nz) & (np.abs(dxx) < nx)  # lags beyond the grid never occur (count 0)
        out[ok] = table[dz[ok] + nz - 1, dxx[ok] + nx - 1]
        return out
    return c


def pooled_estimate(fields, mean, hz, hx):
    """Mean over samples and over all pixel pairs at lag (hz, hx) >= 0 of (f_a - mean)(f_b - mean)."""
    d = fields - mean
    nz, nx = d.shape[-2:]
    a = d[:, : nz - hz, : nx - hx]
    b = d[:, hz:, hx:]
    return float((a * b).mean())


def pooled_se(c, shape, hz, hx, n):
    """Exact standard error of :func:`pooled_estimate` for n independent Gaussian fields of correlation c (Isserlis):
    Var = 1/(n m^2) sum_d cnt(d) [c(d)^2 + c(d - h) c(d + h)], d running over differences of pair starts."""
    nz, nx = shape
    mz, mx = nz - hz, nx - hx
    dz = np.arange(-(mz - 1), mz)[:, None]
    dxx = np.arange(-(mx - 1), mx)[None, :]
    cnt = (mz - np.abs(dz)) * (mx - np.abs(dxx))
    terms = c(dz, dxx) ** 2 + c(dz - hz, dxx - hx) * c(dz + hz, dxx + hx)
    m = mz * mx
    return math.sqrt(float((cnt * terms).sum()) / (n * m * m))


# ----------------------------------------------------------------------------------------------------------------------
# paper 1's family
# ----------------------------------------------------------------------------------------------------------------------
def test_paper1_models_statistics():
    n = 64
    v = paper1_models(n, seed=3, dtype=torch.float64)
    assert v.shape == (n, 64, 64) and v.dtype == torch.float64
    assert torch.equal(v, paper1_models(n, seed=3, dtype=torch.float64))
    c = lag_covariance((64, 64), 160.0, 0.5, 1600.0, 1600.0)
    # mean 3000 m/s: SE of the grand mean from the covariance (the fields are correlated over ~10 cells)
    dz = np.arange(-63, 64)[:, None]
    dxx = np.arange(-63, 64)[None, :]
    se_mean = 150.0 * math.sqrt(float(((64 - abs(dz)) * (64 - abs(dxx)) * c(dz, dxx)).sum()) / 64 ** 4 / n)
    assert abs(float(v.mean()) - 3000.0) < 5 * se_mean
    # std 150 m/s and correlation length: exponential correlation exp(-r / 1.6 km), 1/e at 10 cells in z and in x
    var = pooled_estimate(v, 3000.0, 0, 0)
    assert abs(var / 150.0 ** 2 - 1) < 5 * pooled_se(c, (64, 64), 0, 0, n)
    for hz, hx in [(10, 0), (0, 10), (3, 4)]:
        rho = pooled_estimate(v, 3000.0, hz, hx) / 150.0 ** 2
        assert abs(rho - math.exp(-math.hypot(hz, hx) / 10)) < 5 * pooled_se(c, (64, 64), hz, hx, n)
    # many models are generated in chunks of 256 spectra (128 x 128 embedding): still distinct, same statistics
    big = paper1_models(2 * 257 + 1, seed=0, dtype=torch.float64)
    assert big.shape == (515, 64, 64)
    dist = torch.cdist(big.reshape(515, -1), big.reshape(515, -1)) + torch.eye(515) * 1e9
    assert float(dist.min()) > 150.0 * 16  # no repeats (0); E dist = 150 sqrt(2 * 4096) = 13576 m/s, min 8356 seen
    var = pooled_estimate(big, 3000.0, 0, 0)
    assert abs(var / 150.0 ** 2 - 1) < 5 * pooled_se(c, (64, 64), 0, 0, 515)
    # 2x resolution: same domain, same covariance in metres (lag 20 cells = 1.6 km)
    fine = paper1_models(32, seed=1, dtype=torch.float64, refine=2)
    assert fine.shape == (32, 128, 128)
    c2 = lag_covariance((128, 128), 80.0, 0.5, 1600.0, 1600.0)
    rho = pooled_estimate(fine, 3000.0, 20, 0) / 150.0 ** 2
    assert abs(rho - math.exp(-1)) < 5 * pooled_se(c2, (128, 128), 20, 0, 32)
    with pytest.raises(ValueError, match=re.escape("refine must be a positive integer")):
        paper1_models(1, refine=0)
    with pytest.raises(ValueError, match="either seed or generator"):
        paper1_models(1, seed=1, generator=torch.Generator())


def test_paper1_models_is_sample_grf_with_paper1_settings():
    # the move from probinv.fields changed nothing: the same draws as sample_grf with the paper's parameters
    from_grf = sample_grf((64, 64), 160.0, n=3, covariance="von_karman", hurst=0.5, a_z=1600.0, a_x=1600.0,
                          mean=3000.0, std=150.0, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.equal(paper1_models(3, seed=7, dtype=torch.float64), from_grf)
    with pytest.raises(TypeError, match=re.escape("seed must be an integer, got 1.5")):
        paper1_models(1, seed=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_paper1_models_on_cuda():
    dev = torch.device("cuda")
    assert paper1_models(2, seed=0, device=dev).device.type == "cuda"
