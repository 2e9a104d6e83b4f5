"""diagnostics: r-hat / ESS through ArviZ, coverage (calibration) against known answers."""
import numpy as np
import pytest
import torch

from probinv import diagnostics


def test_coverage_of_a_calibrated_gaussian():
    """Truth and posterior draws from the same N(0, 1) per pixel: the fraction inside the central p interval is p.
    With 4000 independent pixels the binomial standard error is <= 0.008, so 0.03 is > 3.5 standard errors."""
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(40, 100, generator=g, dtype=torch.float64)
    draws = torch.randn(1000, 40, 100, generator=g, dtype=torch.float64)
    cov = diagnostics.coverage(draws, truth, probs=(0.5, 0.9))
    assert cov[0.5] == pytest.approx(0.5, abs=0.03) and cov[0.9] == pytest.approx(0.9, abs=0.03)
    # an overconfident posterior (std halved) under-covers: P(|Z| < 0.674 / 2) = 0.26 for the 50 % interval
    cov = diagnostics.coverage(0.5 * draws, truth, probs=(0.5,))
    assert cov[0.5] == pytest.approx(0.264, abs=0.03)
    with pytest.raises(ValueError, match="probs must lie in"):
        diagnostics.coverage(draws, truth, probs=(1.5,))


def test_rhat_and_ess():
    g = np.random.default_rng(0)
    good = g.standard_normal((2, 1000, 3))
    assert np.all(diagnostics.rhat(good) < 1.01)
    shifted = good.copy()
    shifted[1] += 2.0  # chains disagree
    assert np.all(diagnostics.rhat(shifted) > 1.5)
    ess = diagnostics.ess(good)
    assert ess.shape == (3,) and np.all(ess > 1500)  # iid draws: ESS ~ 2000
    ar = np.zeros((1, 2000))
    for t in range(1, 2000):  # AR(1) with rho = 0.9: ESS ~ n (1 - rho) / (1 + rho) = 105
        ar[0, t] = 0.9 * ar[0, t - 1] + g.standard_normal()
    assert 50 < float(diagnostics.ess(ar[..., None])[0]) < 200


def test_to_arviz_dataset_feature_detection():
    obj = diagnostics.to_arviz_dataset({"a": np.zeros((2, 3, 4))}, dims={"a": ["k"]}, coords={"k": np.arange(4)})
    assert obj.posterior["a"].dims == ("chain", "draw", "k")
