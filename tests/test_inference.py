"""Inference on a linear-Gaussian problem whose posterior is known exactly.

Forward: a fixed random matrix ``G`` (4 shots x 3 receivers x 36 pixels) applied to a 6 x 6 field with a Matern
(nu = 1.5) whitened prior truncated to K leading modes, Gaussian noise. In whitened coordinates ``z`` the posterior
is ``N(mu, C)`` with ``C = (I + A^T A)^-1``, ``mu = C A^T b``, ``A = G L / sigma``, ``b = (d - G m) / sigma``.
The data inform the parameters: sigma is chosen so the posterior std of the leading modes is 2-30x smaller than the
prior's (checked in ``test_problem_is_informative``).
"""
import re

import numpy as np
import pyro.infer
import pytest
import torch

from probinv.fields import BoxField, WhitenedField
from probinv.inference import laplace, map, nuts, svgd, svi
from probinv.models import Flat, Gaussian, GaussianLatentSigma, build_model

DT = torch.float64


class Linear:
    def __init__(self, n_modes=6, sigma=2.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.prior = WhitenedField((6, 6), 20.0, covariance="matern", nu=1.5, a_z=60.0, a_x=60.0, mean=2500.0,
                                   std=100.0, n_modes=n_modes, dtype=DT)
        self.G = torch.randn(4, 3, 36, generator=g, dtype=DT) * 0.1
        self.sigma = sigma
        z_true = torch.randn(n_modes, generator=g, dtype=DT)
        self.d = self.forward({"vp": self.prior(z_true)}) + sigma * torch.randn(4, 3, generator=g, dtype=DT)
        L = self.prior.modes * self.prior.scales
        A = self.G.reshape(12, 36) @ L / sigma
        b = (self.d.reshape(-1) - self.G.reshape(12, 36) @ self.prior.mean_field.reshape(-1)) / sigma
        self.P = torch.eye(n_modes, dtype=DT) + A.T @ A
        self.C = torch.linalg.inv(self.P)
        self.mu = self.C @ A.T @ b
        self.sd = self.C.diagonal().sqrt()
        self.L = L

    def forward(self, fields, shots=None):
        G = self.G if shots is None else self.G[shots]
        v = fields["vp"]
        return torch.einsum("srp,...p->...sr", G, v.reshape(v.shape[:-2] + (-1,)))

    def model(self, **kw):
        return build_model({"vp": self.prior}, self.forward, self.d, noise=Gaussian(self.sigma), **kw)


@pytest.fixture(scope="module")
def lin():
    return Linear()


@pytest.fixture(scope="module")
def lap(lin):
    return laplace(lin.model(), map_kwargs={"num_steps": 100})


def test_problem_is_informative(lin):
    assert float(lin.sd.max()) < 0.5 and float(lin.sd.min()) < 0.1  # prior std is 1 in every whitened direction


def test_map_equals_analytic_mode(lin):
    post = map(lin.model(), optimizer="lbfgs", num_steps=100, lr=1.0)
    z = post.samples["vp_z"][0, 0]
    # L-BFGS on a strongly convex quadratic converges to rounding; 1e-4 is the acceptance tolerance
    assert float((z - lin.mu).norm() / lin.mu.norm()) < 1e-4
    v_exact = lin.prior(lin.mu)
    assert float((post.mean("vp") - v_exact).norm() / v_exact.norm()) < 1e-4
    assert post.attrs["n_gradients"] < 60


def test_laplace_is_exact_for_a_linear_problem(lin, lap):
    g = lap.gaussian
    # exact operator assembled from K products (rank + oversample >= K): equal to rounding
    assert torch.allclose(g.covariance(), lin.C, atol=1e-12)
    assert torch.allclose(g.loc, lin.mu, atol=1e-7 * float(lin.mu.norm()))
    # the field-space std of the stored draws: 1000 draws -> relative sampling error ~ 1/sqrt(2000) = 2.2 %, 5 sigma
    sd_field = torch.sqrt(((lin.L @ lin.C) * lin.L).sum(-1)).reshape(6, 6)
    assert torch.allclose(lap.std("vp", discarded=False), sd_field, rtol=0.11)
    # the 6 kept modes hold only part of the prior: the discarded modes' variance (their posterior is their prior) is
    # the prior's diagonal minus the kept part, 100^2 (1 - sum_k lam_k v_k^2), and it adds to the kept variance
    full = WhitenedField((6, 6), 20.0, covariance="matern", nu=1.5, a_z=60.0, a_x=60.0, mean=2500.0, std=100.0,
                         retained_variance=1.0, dtype=DT)
    kept = (lin.L ** 2).sum(-1).reshape(6, 6)
    discarded = ((full.modes * full.scales) ** 2).sum(-1).reshape(6, 6) - kept
    torch.testing.assert_close(lap.discarded_variance["vp"], discarded, rtol=0, atol=1e-8)
    torch.testing.assert_close(lap.std("vp") ** 2, lap.std("vp", discarded=False) ** 2 + discarded, rtol=1e-12,
                               atol=1e-8)
    assert lap.attrs["retained_variance"]["vp"] == pytest.approx(lin.prior.retained_fraction)
    # a converged MAP of a quadratic: the Newton decrement is rounding, chi^2 per datum ~ (12 - p_eff) / 12 < 1
    assert lap.attrs["newton_decrement"] < 1e-5
    assert 0.0 < lap.attrs["chi2_per_datum"] < 1.5


def test_laplace_randomised_low_rank_is_exact_for_low_rank_misfit():
    """K = 30 modes but only 12 data: the misfit Hessian has rank <= 12, so the randomised range finder with
    rank 12 + 5 probes (< 30) captures it exactly (to rounding)."""
    lin = Linear(n_modes=30)
    post = laplace(lin.model(), rank=12, oversample=5, num_samples=10, map_kwargs={"num_steps": 200})
    assert post.attrs["rank"] == 12 and post.attrs["solver_passes"] == 2 + 2 * 2 * 17
    assert torch.allclose(post.gaussian.covariance(), lin.C, atol=1e-9)


def test_nuts_recovers_the_exact_posterior(lin, lap):
    post = nuts(lin.model(), num_samples=300, warmup_steps=100, num_chains=2, laplace_posterior=lap, seed=1)
    z = post.samples["vp_z"]
    assert z.shape == (2, 300, 6)
    err = ((post.mean("vp_z") - lin.mu) / lin.sd).abs()
    # ESS ~ 600 draws: Monte-Carlo error of the mean ~ 0.04 sd, of the std ~ 3 % (so 10 % is > 3 MC sigma)
    assert float(err.mean()) < 0.15
    assert float((post.std("vp_z") / lin.sd - 1).abs().max()) < 0.10
    stats = post.sample_stats
    assert set(stats) >= {"diverging", "tree_depth", "step_size", "acceptance_rate", "n_steps", "lp"}
    assert int(stats["diverging"].sum()) == 0
    # preconditioning works: in Laplace-whitened coordinates the exact posterior is N(0, I) -> short trees
    assert float(stats["n_steps"].double().mean()) < 8
    rhat = post.summary(var_names=["vp_z"])["r_hat"].to_numpy()
    assert np.all(rhat < 1.05)


def test_nuts_checkpoint_resume_equals_uninterrupted(lin, lap, tmp_path):
    kw = dict(num_samples=15, warmup_steps=15, laplace_posterior=lap, seed=3)
    full = nuts(lin.model(), num_chains=2, **kw)
    ck = tmp_path / "nuts.pt"
    nuts(lin.model(), num_chains=1, checkpoint=ck, **kw)  # "interrupted" after one chain
    resumed = nuts(lin.model(), num_chains=2, checkpoint=ck, **kw)
    assert torch.equal(resumed.samples["vp_z"], full.samples["vp_z"])
    with pytest.raises(ValueError, match="was written for another problem or other settings"):
        nuts(lin.model(), num_chains=2, checkpoint=ck, num_samples=16, warmup_steps=15, laplace_posterior=lap)
    # same settings, other data (the model's potential differs): not resumed either
    other = build_model({"vp": lin.prior}, lin.forward, lin.d + 0.1, noise=Gaussian(lin.sigma))
    with pytest.raises(ValueError, match="was written for another problem"):
        nuts(other, num_chains=2, checkpoint=ck, **kw)


def test_nuts_without_preconditioning_runs(lin):
    post = nuts(lin.model(), num_samples=30, warmup_steps=30, num_chains=1, precondition=None, seed=0)
    assert post.attrs["precondition"] == "None" and torch.isfinite(post.samples["vp"]).all()
    # this posterior is narrow (sd down to ~0.05 of the prior): unpreconditioned trees are longer
    assert float(post.sample_stats["n_steps"].double().mean()) > 3


def test_svi_multivariate_normal_matches_the_exact_posterior(lin):
    """Started away from the answer (MAP-free prior mean, scale 0.1): the full-covariance guide must find N(mu, C);
    20000 guide draws give Monte-Carlo errors ~ 0.007 sd (mean) and 0.5 % (std)."""
    post = svi(lin.model(), guide="multivariate", num_steps=1000, lr=0.05, lr_final=3e-4, num_particles=64,
               tol=None, num_samples=20000, seed=0)
    err = ((post.mean("vp_z") - lin.mu) / lin.sd).abs()
    assert float(err.mean()) < 0.05
    assert float((post.std("vp_z") / lin.sd - 1).abs().max()) < 0.05


def test_svi_mean_field_gives_the_conditional_std(lin, lap):
    """The KL(q||p)-optimal factorised Gaussian of N(mu, P^-1) has mean mu and std 1/sqrt(P_ii) (exactly);
    started from the Laplace solution (diagonal of C, larger), it must shrink to the conditional std."""
    post = svi(lin.model(), guide="normal", laplace_posterior=lap, num_steps=800, lr=0.05, lr_final=3e-4,
               num_particles=32, tol=None, num_samples=20000, seed=0)
    cond_sd = lin.P.diagonal().rsqrt()
    assert float((post.std("vp_z") / cond_sd - 1).abs().max()) < 0.05
    assert float(((post.mean("vp_z") - lin.mu) / lin.sd).abs().mean()) < 0.1


def test_svi_low_rank_runs_and_converges(lin, lap):
    post = svi(lin.model(), guide="lowrank", laplace_posterior=lap, num_steps=3000, lr=0.01, num_particles=8,
               window=100, tol=1e-3, num_samples=2000, seed=0)
    assert post.attrs["converged"] and post.attrs["n_steps"] < 3000
    assert float(((post.mean("vp_z") - lin.mu) / lin.sd).abs().mean()) < 0.3


def test_svi_checkpoint_resume_equals_uninterrupted(lin, lap, tmp_path, monkeypatch):
    kw = dict(guide="multivariate", laplace_posterior=lap, num_steps=40, lr=0.01, num_particles=2, tol=None,
              num_samples=50, seed=1, checkpoint_every=10)
    full = svi(lin.model(), **kw)
    ck = tmp_path / "svi.pt"
    real_step, calls = pyro.infer.SVI.step, {"n": 0}

    def dying_step(self, *args, **kwargs):  # the process is killed during step 26 (last checkpoint: step 20)
        calls["n"] += 1
        if calls["n"] > 25:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(pyro.infer.SVI, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        svi(lin.model(), checkpoint=ck, **kw)
    monkeypatch.setattr(pyro.infer.SVI, "step", real_step)
    resumed = svi(lin.model(), checkpoint=ck, **kw)
    # parameters, optimiser moments and the random stream are restored: the same numbers, not just close ones
    assert resumed.attrs["loss"] == full.attrs["loss"]
    assert torch.equal(resumed.samples["vp_z"], full.samples["vp_z"])
    with pytest.raises(ValueError, match="was written with other settings"):
        svi(lin.model(), checkpoint=ck, **{**kw, "lr": 0.02})


def test_svgd_particles_approximate_the_posterior(lin, lap):
    """64 particles in 6 dimensions, RBF kernel: SVGD under-disperses in finite-particle regimes (Ba et al. 2021), so
    the std check is loose (factor 2); the mean must be within a third of a posterior sd on average."""
    post = svgd(lin.model(), num_particles=64, num_steps=300, lr=0.05, laplace_posterior=lap, seed=0)
    assert post.samples["vp"].shape == (1, 64, 6, 6)
    assert float(((post.mean("vp_z") - lin.mu) / lin.sd).abs().mean()) < 0.33
    ratio = post.std("vp_z") / lin.sd
    assert float(ratio.min()) > 0.5 and float(ratio.max()) < 2.0


def test_flat_prior_map_adam_is_plain_fwi(lin):
    """A flat prior's Adam MAP iterates equal a torch.optim.Adam loop on 0.5 ||(d - G v) / sigma||^2."""
    v0 = torch.full((6, 6), 2500.0, dtype=DT)
    model = build_model({"vp": Flat((6, 6))}, lin.forward, lin.d, noise=Gaussian(lin.sigma))
    seen = []
    post = map(model, num_steps=30, lr=5.0, init={"vp": v0},
               callback=lambda step, loss, f: seen.append(f["vp"].clone()))
    v = v0.clone().requires_grad_(True)
    opt = torch.optim.Adam([v], lr=5.0)
    for step in range(30):
        opt.zero_grad()
        loss = 0.5 * (((lin.d - lin.forward({"vp": v})) / lin.sigma) ** 2).sum()
        loss.backward()
        opt.step()
        assert float((seen[step] - v.detach()).norm() / v.detach().norm()) < 1e-6
    assert torch.allclose(post.mean("vp"), v.detach(), rtol=1e-6)
    assert torch.equal(v0, torch.full((6, 6), 2500.0, dtype=DT))  # the caller's init is never modified


def test_errors(lin):
    model = build_model({"vp": Flat((6, 6))}, lin.forward, lin.d, noise=Gaussian(lin.sigma))
    with pytest.raises(ValueError, match=re.escape("init['vp'] is required")):
        map(model)
    with pytest.raises(ValueError, match="optimizer must be 'adam' or 'lbfgs', got 'sgd'"):
        map(lin.model(), optimizer="sgd")
    with pytest.raises(ValueError, match="laplace needs at least one whitened"):
        laplace(model)
    with pytest.raises(ValueError, match="num_samples must be an int >= 1, got 0"):
        nuts(lin.model(), num_samples=0)
    with pytest.raises(ValueError, match="guide must be one of"):
        svi(lin.model(), guide="flow")
    with pytest.raises(ValueError, match="num_particles must be an int >= 2, got 1"):
        svgd(lin.model(), num_particles=1)
    with pytest.raises(TypeError, match="model must be a probinv.models.SeismicModel"):
        map(lambda: None, lin.d)


def test_box_prior_and_latent_sigma_models_run(lin):
    """Bounded flat prior (BoxField, sampled through Pyro's sigmoid transform) with a latent noise sigma: MAP moves
    towards the data, NUTS stays inside the box, and sigma's posterior brackets the true noise level (2) (its
    hyperprior is broad: log-normal with median 1 and log-sd 1; 12 data constrain sigma to ~ +-20 %; a short
    unpreconditioned chain: only a smoke-level bracket is asserted)."""
    box = BoxField((6, 6), (2000.0, 3000.0), dtype=DT)
    model = build_model({"vp": box}, lin.forward, lin.d, noise=GaussianLatentSigma(scale=1.0))
    m = map(model, num_steps=200, lr=0.05)
    assert m.attrs["loss"][-1] < m.attrs["loss"][0]
    post = nuts(model, num_samples=10, warmup_steps=10, num_chains=1, precondition=None,
                init={"vp": m.mean("vp"), "sigma": m.mean("sigma")}, seed=0, max_tree_depth=4)
    vp = post.samples["vp"]
    assert bool(((vp > 2000.0) & (vp < 3000.0)).all())
    assert 0.2 < float(post.mean("sigma")) < 20.0


def test_svgd_with_several_latent_sites(lin, lap):
    """A field and a latent noise sigma: the particles hold both sites. The field's particles agree with the exact
    posterior at the true sigma (12 data determine sigma only to ~ +-20 %, so the vp_z posterior widens a little:
    the mean within half a posterior sd on average, std within a factor 2), and sigma's particles bracket the true
    noise level 2 (hyperprior log-normal, median 2)."""
    model = build_model({"vp": lin.prior}, lin.forward, lin.d, noise=GaussianLatentSigma(scale=2.0))
    post = svgd(model, num_particles=48, num_steps=300, lr=0.05, seed=0,
                init={"vp_z": lin.mu, "sigma": torch.tensor(2.0, dtype=DT)}, init_scale=0.3)
    assert post.samples["vp_z"].shape == (1, 48, 6) and post.samples["sigma"].shape == (1, 48)
    assert float(((post.mean("vp_z") - lin.mu) / lin.sd).abs().mean()) < 0.5
    ratio = post.std("vp_z") / lin.sd
    assert float(ratio.min()) > 0.5 and float(ratio.max()) < 2.0
    sig = post.samples["sigma"][0]
    assert 1.0 < float(sig.mean()) < 4.0 and float(sig.std()) > 0.05
    # the fields are the prior's map of each particle's own latent (rows not mixed between particles)
    torch.testing.assert_close(post.samples["vp"][0], lin.prior(post.samples["vp_z"][0]))


def test_svgd_particle_rows_and_single_site_equivalence(lin):
    """Pyro's flat particle vector holds each site for all particles ([n, k_s] blocks one after the other); the rows
    gather one particle's sites. With one site the step equals Pyro's own SVGD step (same particles after 5 steps)."""
    from types import SimpleNamespace

    import pyro
    from pyro.infer import SVGD, RBFSteinKernel

    from probinv.inference._svgd import _particle_rows

    rows = _particle_rows(SimpleNamespace(sizes=[3, 1]), 2, "cpu")
    assert rows.tolist() == [[0, 1, 2, 6], [3, 4, 5, 7]]
    model = lin.model()
    post = svgd(model, num_particles=8, num_steps=5, lr=0.05, seed=0, init={"vp_z": lin.mu}, init_scale=0.5)
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(0)
        gen = torch.Generator().manual_seed(0)
        particles = lin.mu + 0.5 * torch.randn((8, 6), dtype=DT, generator=gen)
        runner = SVGD(model, RBFSteinKernel(), pyro.optim.Adam({"lr": 0.05}), num_particles=8, max_plate_nesting=1)
        pyro.param("svgd_particles", particles.clone().reshape(-1))
        for _ in range(5):
            runner.step(lin.d, full=True)
        ref = pyro.param("svgd_particles").detach().reshape(8, 6)
    torch.testing.assert_close(post.samples["vp_z"][0], ref, rtol=1e-10, atol=1e-12)
