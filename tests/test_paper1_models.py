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
from covariance_stats import lag_covariance, pooled_estimate, pooled_se

from probinv.fields import sample_grf
from probinv.scenarios import paper1_models


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
