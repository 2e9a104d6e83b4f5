"""Posterior predictive checks: replicated data with noise, their PIT, and the report's figure.

The linear-Gaussian problem of tests/test_verdict.py (Laplace is exact there): the replicated data of an exact
posterior are draws of the posterior predictive N(G mean, G Cov G^T + sigma^2 I), so the observed data's PIT is
uniform and the central 90 % interval holds ~90 % of them; with the noise sigma underestimated 3x the check sees it.
"""
import math

import pytest
import torch
from test_verdict import Problem, _prior

from probinv import diagnostics, plotting
from probinv.inference import laplace
from probinv.models import Gaussian, build_model

DT = torch.float64


def test_predictive_check_of_calibrated_and_too_narrow_replicates():
    g = torch.Generator().manual_seed(3)
    obs = torch.randn(40, 50, generator=g, dtype=DT)
    rep = torch.randn(199, 40, 50, generator=g, dtype=DT)
    out = diagnostics.predictive_check(obs, rep, level=0.9)
    # 2000 independent data: the coverage's binomial sd is sqrt(0.9 * 0.1 / 2000) = 0.0067; with 199 replicates the
    # PIT interval (0.05, 0.95) holds ranks 10..189, i.e. 180 / 200 = 0.90 exactly in expectation; 4 sd = 0.027
    assert abs(out["coverage"] - 0.9) < 0.027
    assert out["n_draws"] == 199 and out["pit"].shape == obs.shape
    # PIT uniform: each decile holds 10 % of the data (sd sqrt(0.1 * 0.9 / 2000) = 0.0067; 4 sd)
    hist = torch.histc(out["pit"], bins=10, min=0.0, max=1.0) / obs.numel()
    assert float((hist - 0.1).abs().max()) < 0.027
    # replicates half as wide: P(|x| < 1.645 / 2) = 0.589 of N(0, 1) inside the band (same 4 sd tolerance)
    narrow = diagnostics.predictive_check(obs, 0.5 * rep, level=0.9)
    assert abs(narrow["coverage"] - (math.erf(1.6449 / 2 / math.sqrt(2)))) < 0.03
    # a chain axis is pooled; complex spectra count real and imaginary parts as data
    pooled = diagnostics.predictive_check(obs, rep[:198].reshape(2, 99, 40, 50))
    assert pooled["n_draws"] == 198
    spec = diagnostics.predictive_check(torch.complex(obs, obs), torch.complex(rep, rep))
    assert spec["pit"].shape == (40, 50, 2)


def test_predictive_check_errors():
    obs = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="level must be in"):
        diagnostics.predictive_check(obs, torch.zeros(5, 3, 4), level=1.5)
    with pytest.raises(ValueError, match=r"predictive must be \[\.\.\., 3, 4\]"):
        diagnostics.predictive_check(obs, torch.zeros(5, 4, 3))
    with pytest.raises(ValueError, match="at least 2"):
        diagnostics.predictive_check(obs, torch.zeros(1, 3, 4))


@pytest.fixture(scope="module")
def linear():
    prob = Problem()
    model = prob.model(_prior())
    return prob, model, laplace(model, num_samples=400, map_kwargs={"num_steps": 100}, seed=1)


def test_replicated_data_carry_the_noise_and_a_calibrated_check(linear):
    prob, model, post = linear
    free = post.add_posterior_predictive(model, max_draws=200).clone()
    assert post.attrs["posterior_predictive_noise"] is False
    rep = post.add_posterior_predictive(model, max_draws=200, noise=True, seed=5)
    assert post.attrs["posterior_predictive_noise"] is True
    assert rep.shape == (1, 200) + tuple(prob.d.shape)
    # the noise added to the noise-free prediction is N(0, sigma^2): its sd over 200 x 240 values has a relative
    # standard error of 1 / sqrt(2 * 48000) = 0.3 %; 2 % is > 6 of them
    assert abs(float((rep - free).std()) / prob.sigma - 1.0) < 0.02
    # the seed makes the draws reproducible, and the global RNG is left alone
    state = torch.random.get_rng_state()
    again = post.add_posterior_predictive(model, max_draws=200, noise=True, seed=5)
    assert torch.equal(again, rep) and torch.equal(torch.random.get_rng_state(), state)
    # exact posterior (linear-Gaussian Laplace): the observed data's 90 % coverage is 0.9 up to the binomial sd of
    # 240 data (0.019) and the ~199/201 granularity: 4 sd = 0.08
    check = diagnostics.predictive_check(post.observed_data if post.observed_data is not None else prob.d, rep)
    assert abs(check["coverage"] - 0.9) < 0.08
    # noise sigma underestimated 3x: replicates far too narrow (measured 0.64; the posterior's own spread and the
    # closer fit of the over-weighted data keep it above the 0.42 of a N(0, 1) against a 1/3-wide band); 0.75 is
    # 0.15 = 8 binomial sd below the calibrated 0.9
    bad_model = build_model({"vp": _prior()}, prob.forward, prob.d, noise=Gaussian(prob.sigma / 3))
    bad = laplace(bad_model, num_samples=200, map_kwargs={"num_steps": 100}, seed=1)
    bad_check = diagnostics.predictive_check(prob.d, bad.add_posterior_predictive(bad_model, noise=True))
    assert bad_check["coverage"] < 0.75


def test_predictive_figure(linear):
    prob, model, post = linear
    rep = post.add_posterior_predictive(model, max_draws=50, noise=True)
    check = diagnostics.predictive_check(prob.d, rep)
    # the linear problem's data [20, 12] read as one shot of 20 receivers x 12 samples
    fig = plotting.plot_predictive_check(prob.d, rep, 0.004, pit=check["pit"], coverage=check["coverage"])
    assert len(fig.axes) == 2 and "posterior predictive check" in fig._suptitle.get_text()
    assert len(fig.axes[1].patches) == 10  # the PIT histogram's bars
    with pytest.raises(ValueError, match="predictive must be"):
        plotting.plot_predictive_check(prob.d, rep[..., :5], 0.004)


def test_the_verdict_reports_the_predictive_check(linear):
    prob, model, post = linear
    post.add_posterior_predictive(model, max_draws=100, noise=True, seed=2)
    post.observed_data = prob.d
    v = post.verdict(model=model)
    item = next(c for c in v.checks if c.name == "predictive")
    # information only (never a warning by itself); the value is predictive_check's coverage of the same draws
    assert item.ok is None and item.value == diagnostics.predictive_check(prob.d, post.posterior_predictive)["coverage"]
    assert "replicated data sets" in str(v)
