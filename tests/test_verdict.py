"""The posterior verdict: its warnings fire on constructed failures and stay silent on a well-specified problem.

A linear-Gaussian problem (Laplace is exact there): an 8 x 8 field under a Matern prior (std 100 m/s, a = 60 m,
cells of 20 m), 240 data from a fixed random matrix, Gaussian noise of known sigma. The truth is drawn from the full
prior (every mode), so a truncated prior really misses part of it.
"""
import warnings

import numpy as np
import pytest
import torch

from probinv import diagnostics
from probinv.fields import WhitenedField
from probinv.inference import Posterior, laplace, map
from probinv.models import Gaussian, build_model

DT = torch.float64
SHAPE = (8, 8)


def _prior(**kw):
    kw.setdefault("retained_variance", 1.0)
    return WhitenedField(SHAPE, 20.0, covariance="matern", nu=1.5, a_z=60.0, a_x=60.0, mean=2500.0, std=100.0,
                         dtype=DT, **kw)


class Problem:
    def __init__(self, seed=0, sigma=0.5):
        g = torch.Generator().manual_seed(seed)
        self.G = torch.randn(240, 64, generator=g, dtype=DT) * 0.01
        full = _prior(retained_variance=1.0)
        self.truth = full(torch.randn(full.latent_dim, generator=g, dtype=DT))
        self.sigma = sigma
        self.d = self.forward({"vp": self.truth}) + sigma * torch.randn(20, 12, generator=g, dtype=DT)

    def forward(self, fields):
        v = fields["vp"]
        return (v.reshape(v.shape[:-2] + (64,)) @ self.G.T).reshape(v.shape[:-2] + (20, 12))

    def model(self, prior=None, sigma=None):
        return build_model({"vp": prior if prior is not None else _prior()}, self.forward, self.d,
                           noise=Gaussian(self.sigma if sigma is None else sigma))


@pytest.fixture(scope="module")
def prob():
    return Problem()


@pytest.fixture(scope="module")
def good(prob):
    model = prob.model()
    return model, laplace(model, num_samples=1000, map_kwargs={"num_steps": 100})


def test_verdict_is_clean_on_a_well_specified_problem(prob, good):
    model, lap = good
    v = lap.verdict(model=model, truth={"vp": prob.truth})
    assert v.clean, str(v)
    assert {c.name for c in v.checks} >= {"map_convergence", "residual_chi2", "prior_truncation", "coverage",
                                          "better_than_prior", "informativeness"}
    # a calibrated posterior: coverage near nominal (64 correlated pixels of one truth: loose bounds)
    assert v.coverage["vp"][0.9] >= 0.8 and 0.2 <= v.coverage["vp"][0.5] <= 0.85
    # the z-score map is (mean - truth) / std, computed independently here
    torch.testing.assert_close(v.z_scores["vp"], (lap.mean("vp") - prob.truth) / lap.std("vp"))
    assert v.std_ratio["vp"] < 0.9  # the data inform the field
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # summary() issues no warning on a clean posterior
        table = lap.summary(var_names=["vp_z"], model=model, truth={"vp": prob.truth})
    assert table.attrs["verdict"].clean


def test_unconverged_map_is_flagged(prob):
    model = prob.model()
    m = map(model, num_steps=3, lr=0.01)  # three Adam steps of 0.01 in whitened units: far from the mode
    v = m.verdict()
    assert v["map_convergence"].ok is False and "not converged" in v["map_convergence"].message
    with pytest.warns(RuntimeWarning, match="not a mode"):
        lap = laplace(model, map_posterior=m, num_samples=200, newton_steps=0)
    assert lap.attrs["newton_decrement"] > 0.5
    assert lap.verdict()["map_convergence"].ok is False
    with pytest.warns(UserWarning, match="map_convergence"):
        lap.summary(var_names=["vp_z"])
    # by default laplace continues to the mode: with the exact Hessian of this quadratic (rank = latent dimension)
    # one Gauss-Newton step lands on it, so the Laplace mean equals the converged Laplace mean
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        moved = laplace(model, map_posterior=m, num_samples=200, rank=64)
    ref = laplace(model, num_samples=200, rank=64, map_kwargs={"num_steps": 200})
    assert moved.attrs["newton_steps"] >= 1 and moved.attrs["newton_decrement"] < 1e-3
    # (the reference is itself an L-BFGS result: 1e-4 whitened units, a thousandth of the posterior std here)
    torch.testing.assert_close(moved.gaussian.loc, ref.gaussian.loc, rtol=0, atol=1e-4)
    assert moved.verdict()["map_convergence"].ok is True


def test_underestimated_noise_is_flagged(prob):
    model = prob.model(sigma=prob.sigma / 3)  # true noise 3x the assumed: chi^2 per datum ~ 9
    lap = laplace(model, num_samples=500, map_kwargs={"num_steps": 100})
    v = lap.verdict(model=model, truth={"vp": prob.truth})
    assert v["residual_chi2"].ok is False and "underestimated" in v["residual_chi2"].message
    assert v["residual_chi2"].value > 6  # 9 / (1 - p_eff / N), p_eff larger under the smaller sigma
    # over-estimated noise: chi^2 ~ 1/9
    model = prob.model(sigma=prob.sigma * 3)
    lap = laplace(model, num_samples=200, map_kwargs={"num_steps": 100})
    assert lap.verdict()["residual_chi2"].ok is False and "overestimated" in lap.verdict()["residual_chi2"].message


def test_truncated_prior_is_flagged(prob, good):
    model = prob.model(prior=_prior(retained_variance=None, n_modes=3))
    lap = laplace(model, num_samples=200, map_kwargs={"num_steps": 100})
    v = lap.verdict(model=model)
    assert v["prior_truncation"].ok is False and "keeps only" in v["prior_truncation"].message
    # 99 % passes the truncation check (and here shows in the residuals: see the module docstring)
    model = prob.model(prior=_prior(retained_variance=0.99))
    v = laplace(model, num_samples=200, map_kwargs={"num_steps": 100}).verdict(model=model)
    assert v["prior_truncation"].ok is True and v["residual_chi2"].ok is False


def test_a_posterior_without_its_discarded_variance_is_flagged(prob, good):
    model, lap = good
    model = prob.model(prior=_prior(retained_variance=0.99))
    bare = Posterior(lap.samples, field_names=["vp"], method="laplace")
    assert "add_discarded_variance" in bare.verdict(model=model)["prior_truncation"].message
    bare.add_discarded_variance(model)
    assert bare.verdict(model=model)["prior_truncation"].ok is True
    assert float(bare.discarded_variance["vp"].mean()) == pytest.approx(0.0098 * 100.0 ** 2, rel=0.01)


def test_non_mixing_chains_and_divergences_are_flagged():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 200, 3, generator=g, dtype=DT)
    mixed = Posterior({"theta": x}, field_names=[], method="nuts",
                      sample_stats={"diverging": torch.zeros(2, 200, dtype=torch.bool)})
    assert mixed.verdict()["sampler"].ok is True
    stuck = x.clone()
    stuck[1] += 3.0  # the second chain sits 3 sd away: r-hat ~ 1.5
    bad = Posterior({"theta": stuck}, field_names=[], method="nuts",
                    sample_stats={"diverging": torch.arange(400).reshape(2, 200) % 50 == 0})
    check = bad.verdict()["sampler"]
    assert check.ok is False and "not mixed" in check.message and "8 divergent" in check.message
    assert check.value["rhat"] > 1.2
    # an autocorrelated chain (AR(1), rho = 0.99): ESS ~ 400 (1 - rho) / (1 + rho) ~ 2 < 100
    ar = torch.zeros(2, 200, dtype=DT)
    for t in range(1, 200):
        ar[:, t] = 0.99 * ar[:, t - 1] + torch.randn(2, generator=g, dtype=DT)
    slow = Posterior({"theta": ar}, field_names=[], method="nuts")
    assert slow.verdict()["sampler"].ok is False and "ESS" in slow.verdict()["sampler"].message


def test_independent_draws_get_no_chain_diagnostics(good):
    assert all(c.name != "sampler" for c in good[1].verdict().checks)


def test_az_loo_and_compare_rank_noise_models(prob, good):
    """The per-shot log-likelihood group makes ``az.loo`` run; ``az.compare`` prefers the true noise level to a 3x
    underestimated one (whose elpd is worse by far more than its standard error here)."""
    import arviz as az

    model, lap = good
    ll = lap.add_log_likelihood(model)
    assert ll.shape == (1, 1000, 20)
    # independent check of one entry: the Gaussian log-density of shot 3 under draw 5
    pred = prob.forward({"vp": lap.samples["vp"][0, 5]})[3]
    expected = torch.distributions.Normal(pred, prob.sigma).log_prob(prob.d[3]).sum()
    torch.testing.assert_close(ll[0, 5, 3], expected)
    lap.add_prior(model, num_samples=100)
    idata = lap.to_arviz()
    assert idata.log_likelihood["obs"].dims == ("chain", "draw", "shot")
    assert idata.prior["vp"].dims == ("chain", "draw", "z", "x")
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo)
    wrong_model = prob.model(sigma=prob.sigma / 3)
    wrong = laplace(wrong_model, num_samples=1000, map_kwargs={"num_steps": 100})
    wrong.add_log_likelihood(wrong_model)
    table = az.compare({"right": idata, "wrong": wrong.to_arviz()})
    assert table.index[0] == "right"
    # the prior group's field variance is the prior's (every mode): 100^2 within sampling error (100 draws x 64
    # correlated pixels: 25 %)
    assert float(idata.prior["vp"].var(("chain", "draw")).mean()) == pytest.approx(100.0 ** 2, rel=0.25)


def test_netcdf_round_trip_keeps_the_new_groups(prob, good, tmp_path):
    model, lap = good
    lap.add_log_likelihood(model)
    lap.add_prior(model, num_samples=20)
    lap.to_netcdf(tmp_path / "p.nc")
    back = Posterior.from_netcdf(tmp_path / "p.nc")
    torch.testing.assert_close(back.discarded_variance["vp"], lap.discarded_variance["vp"], rtol=0, atol=0)
    torch.testing.assert_close(back.log_likelihood, lap.log_likelihood, rtol=0, atol=0)
    torch.testing.assert_close(back.prior_samples["vp"], lap.prior_samples["vp"], rtol=0, atol=0)
    torch.testing.assert_close(back.std("vp"), lap.std("vp"), rtol=1e-12, atol=0)
    assert back.verdict().clean == lap.verdict().clean


def test_verdict_errors(good):
    with pytest.raises(ValueError, match="unknown keys"):
        diagnostics.verdict(good[1], thresholds={"rhat_max": 1.1})
    with pytest.raises(ValueError, match="truth names 'vs'"):
        good[1].verdict(truth={"vs": torch.zeros(SHAPE)})


def _evidence_fit(prob, std=100.0, a=60.0, steps=100):
    prior = WhitenedField(SHAPE, 20.0, covariance="matern", nu=1.5, a_z=a, a_x=a, mean=2500.0, std=std,
                          retained_variance=1.0, dtype=DT)
    model = prob.model(prior=prior)
    lap = laplace(model, rank=64, num_samples=2, map_kwargs={"num_steps": steps})
    return prior, lap, diagnostics.laplace_log_evidence(lap, model)


def test_laplace_evidence_is_the_analytic_marginal_likelihood(prob):
    """Linear-Gaussian: the Laplace evidence (full rank, L-BFGS to rounding) equals
    log N(d; G m, sigma^2 I + G C G^T) to 1e-5 relative."""
    prior, lap, ev = _evidence_fit(prob, steps=300)
    G = prob.G
    L = prior.modes * prior.scales
    cov = prob.sigma ** 2 * torch.eye(240, dtype=DT) + G @ L @ L.T @ G.T
    exact = torch.distributions.MultivariateNormal(G @ prior.mean_field.reshape(-1), cov).log_prob(prob.d.reshape(-1))
    assert ev == pytest.approx(float(exact), abs=1e-5 * abs(float(exact)))
    with pytest.raises(ValueError, match="laplace result"):
        diagnostics.laplace_log_evidence(map(prob.model(), num_steps=2), prob.model())


@pytest.mark.slow
def test_laplace_evidence_recovers_the_prior_std_and_correlation_length(prob):
    """Empirical Bayes on a known truth (prior std 100 m/s, correlation length 60 m): halving or doubling either
    lowers the evidence (the 64 coefficients fix the std to ~ 1 / sqrt(128) = 9 %). (~30 s on 2 busy cores.)"""
    ev = _evidence_fit(prob)[2]
    assert _evidence_fit(prob, std=50.0)[2] < ev and _evidence_fit(prob, std=200.0)[2] < ev
    assert _evidence_fit(prob, a=30.0)[2] < ev and _evidence_fit(prob, a=120.0)[2] < ev


def test_plot_draws_suits_the_method(good):
    """Markov chains get traces and rank histograms (two columns); independent draws get marginal histograms with
    the 90 % interval (one column), whose shaded span is the posterior's own interval at that pixel."""
    import matplotlib.pyplot as plt

    _, lap = good
    fig = diagnostics.plot_draws(lap, "vp", pixels=[(2, 3), (5, 5)], truth=torch.zeros(SHAPE), prior_std=100.0)
    assert len(fig.axes) == 2 and "independent" in fig._suptitle.get_text()
    lo, hi = lap.credible_interval("vp", 0.9)
    (span,) = [p for p in fig.axes[0].patches if p.get_label() == "90 % interval"]
    xs = np.asarray(span.get_xy())[:, 0] if np.ndim(span.get_xy()) == 2 else [span.get_x(),
                                                                                span.get_x() + span.get_width()]
    # the shaded span is the posterior's own 90 % interval (numpy vs torch quantiles: rounding)
    assert min(xs) == pytest.approx(float(lo[2, 3]), rel=1e-9) and max(xs) == pytest.approx(float(hi[2, 3]), rel=1e-9)
    plt.close(fig)
    g = torch.Generator().manual_seed(0)
    chains = Posterior({"vp": torch.randn(2, 40, *SHAPE, generator=g, dtype=DT)}, field_names=["vp"], method="nuts")
    fig = diagnostics.plot_draws(chains, "vp")
    assert len(fig.axes) == 6 and "Markov" in fig._suptitle.get_text()
    plt.close(fig)
    with pytest.raises(ValueError, match="name must be a field"):
        diagnostics.plot_draws(chains, "vs")


def test_illumination_is_the_diagonal_of_the_data_information(prob):
    """Linear-Gaussian: the Hutchinson estimate of diag(J^T J) of the whitened data (J = G / sigma) equals the closed
    form. 4000 probes: relative sd sqrt(2 / 4000) = 2.2 % per pixel, so 12 % is > 5 sd."""
    model = prob.model()
    lit = diagnostics.illumination(model, {"vp": prob.truth}, probes=4000, seed=3)["vp"]
    exact = (prob.G ** 2).sum(0) / prob.sigma ** 2
    assert lit.shape == SHAPE
    torch.testing.assert_close(lit.reshape(-1), exact, rtol=0.12, atol=0.0)
    # pixels the data do not see (zero columns of G) have zero illumination and are not "illuminated" in the verdict
    G = prob.G.clone()
    G[:, 32:] = 0.0  # the lower half of the 8 x 8 field

    def half(f):
        v = f["vp"]
        return (v.reshape(v.shape[:-2] + (64,)) @ G.T).reshape(v.shape[:-2] + (20, 12))

    blind = build_model({"vp": _prior()}, half, prob.d, noise=Gaussian(prob.sigma))
    lit = diagnostics.illumination(blind, {"vp": prob.truth}, probes=4)["vp"]
    assert float(lit[4:].abs().max()) == 0.0 and bool((lit[:4] > 0).all())
    lap = laplace(blind, num_samples=200, map_kwargs={"num_steps": 50})
    v = lap.verdict(model=blind, illumination={"vp": lit})
    ratio = lap.std("vp") / 100.0
    lit_mask = lit >= lit.max() / 10.0  # within 10 dB of the peak
    assert v.std_ratio_illuminated["vp"] == pytest.approx(float(ratio[lit_mask].median()))
    assert v.std_ratio["vp"] == pytest.approx(float(ratio.median()))
    assert "illuminate" in v["informativeness"].message
    with pytest.raises(ValueError, match="probes"):
        diagnostics.illumination(model, {"vp": prob.truth}, probes=0)
    with pytest.raises(ValueError, match="fields lacks"):
        diagnostics.illumination(model, {})
