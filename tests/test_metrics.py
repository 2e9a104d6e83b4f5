"""Tests of probinv.metrics against scikit-image, pytorch-msssim and hand-computable values."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import pytorch_msssim
import torch
from skimage.filters import gaussian
from skimage.metrics import structural_similarity

from probinv import metrics

DATA = os.environ.get("PROBINV_DATA", "/work/shared/data")


def layered_model(nz=60, nx=90, seed=0):
    """A layered velocity model with a smooth random perturbation (m/s), and a blurred, noisy estimate of it."""
    rng = np.random.default_rng(seed)
    z = np.arange(nz)[:, None] * np.ones(nx)
    true = 1500.0 + 25.0 * z + 300.0 * (z > nz // 2) + gaussian(rng.standard_normal((nz, nx)), 4) * 2000.0
    est = gaussian(true, sigma=2.5, preserve_range=True) + 40.0 * rng.standard_normal((nz, nx))
    return est, true


def skimage_ssim(a, b, data_range):
    # the conventions of Wang et al. (2004) in scikit-image's spelling (see probinv.metrics)
    return structural_similarity(a, b, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_scikit_image(seed):
    est, true = layered_model(seed=seed)
    dr = true.max() - true.min()
    ref = skimage_ssim(est, true, dr)
    ours = float(metrics.ssim(torch.tensor(est), torch.tensor(true)))          # default data_range = true's range
    assert 0.2 < ref < 0.99   # a non-trivial comparison
    assert abs(ours - ref) < 1e-3
    ours32 = float(metrics.ssim(torch.tensor(est, dtype=torch.float32), torch.tensor(true, dtype=torch.float32),
                                data_range=float(dr)))
    assert abs(ours32 - ref) < 1e-3


@pytest.mark.skipif(not os.path.exists(os.path.join(DATA, "marmousi.npz")), reason="shared velocity models absent")
def test_ssim_matches_scikit_image_on_marmousi():
    vp = np.load(os.path.join(DATA, "marmousi.npz"))["vp"][::8, ::8].astype(np.float64)
    est = gaussian(vp, sigma=3, preserve_range=True)
    dr = vp.max() - vp.min()
    assert abs(float(metrics.ssim(torch.tensor(est), torch.tensor(vp))) - skimage_ssim(est, vp, dr)) < 1e-3


def test_ssim_identity_batch_and_gradient():
    est, true = layered_model()
    t = torch.tensor(true)
    assert float(metrics.ssim(t, t)) == pytest.approx(1.0, abs=1e-12)
    b = torch.stack([torch.tensor(est), t])
    vals = metrics.ssim(b, t)
    assert vals.shape == (2,)
    assert float(vals[1]) == pytest.approx(1.0, abs=1e-12)
    assert float(vals[0]) == pytest.approx(float(metrics.ssim(torch.tensor(est), t)), abs=1e-12)
    x = torch.tensor(est, requires_grad=True)
    metrics.ssim(x, t).backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().max()) > 0


def test_ms_ssim_equals_pytorch_msssim_on_large_grids():
    # 5 scales fit on a 200 x 200 grid: the result must be the library's own ms_ssim (which builds its Gaussian
    # window in float32, hence agreement to ~1e-5 rather than rounding)
    est, true = layered_model(200, 200)
    dr = float(true.max() - true.min())
    ours = float(metrics.ms_ssim(torch.tensor(est), torch.tensor(true)))
    lib = float(pytorch_msssim.ms_ssim(torch.tensor(est)[None, None], torch.tensor(true)[None, None], data_range=dr))
    assert ours == pytest.approx(lib, abs=1e-4)


def test_ms_ssim_small_grid_reduces_scales():
    # 44 x 100 (paper 2's Marmousi2 grid) supports 3 scales with the 11-px window: weights 0.0448, 0.2856, 0.3001
    # renormalised; with one scale MS-SSIM is SSIM clipped at 0
    est, true = layered_model(44, 100)
    with pytest.warns(UserWarning, match="supports 3 scale"):
        v = float(metrics.ms_ssim(torch.tensor(est), torch.tensor(true)))
    assert 0 < v <= 1
    one = float(metrics.ms_ssim(torch.tensor(est), torch.tensor(true), weights=[1.0]))
    assert one == pytest.approx(max(0.0, float(metrics.ssim(torch.tensor(est), torch.tensor(true)))), abs=1e-12)
    t = torch.tensor(true)
    with pytest.warns(UserWarning):
        assert float(metrics.ms_ssim(t, t)) == pytest.approx(1.0, abs=1e-12)


def test_relative_l2():
    ref = torch.full((4, 5), 2.0, dtype=torch.float64)
    model = ref.clone()
    model[0, 0] = 2.0 + 2.0 * np.sqrt(20)     # error norm 2 sqrt(20), reference norm 2 sqrt(20)
    assert float(metrics.relative_l2(model, ref)) == pytest.approx(1.0, rel=1e-12)
    b = metrics.relative_l2(torch.stack([model, ref]), ref)
    assert b.shape == (2,) and float(b[1]) == 0.0


def test_input_checks():
    est, true = layered_model()
    e, t = torch.tensor(est), torch.tensor(true)
    with pytest.raises(ValueError, match=re.escape("ssim: model and reference must have the same grid, got (60, 89) "
                                                   "and (60, 90)")):
        metrics.ssim(e[:, :-1], t)
    with pytest.raises(ValueError, match=re.escape("ssim: data_range must be a positive number")):
        metrics.ssim(e, t, data_range=-1.0)
    with pytest.raises(ValueError, match=re.escape("ssim: win_size must be an odd integer >= 3, got 4")):
        metrics.ssim(e, t, win_size=4)
    with pytest.raises(ValueError, match=re.escape("ms_ssim: 5 scales need min(nz, nx) > 160")):
        metrics.ms_ssim(e, t, weights=metrics.MS_SSIM_WEIGHTS)
    with pytest.raises(ValueError, match=re.escape("relative_l2: reference has zero norm")):
        metrics.relative_l2(e, torch.zeros_like(t))
    with pytest.raises(TypeError, match=re.escape("relative_l2: model must be a torch.Tensor")):
        metrics.relative_l2(est, t)
    with pytest.raises(ValueError, match=re.escape("ssim: reference is constant")):
        metrics.ssim(e, torch.ones_like(t))
