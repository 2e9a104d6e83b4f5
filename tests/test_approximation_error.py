"""CorrelatedGaussian noise and the Bayesian approximation-error estimate, against dense linear algebra."""
import numpy as np
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from probinv.fields import WhitenedField
from probinv.inference import laplace, map, nuts, svi
from probinv.models import CorrelatedGaussian, Gaussian, approximation_error, build_model

DT = torch.float64
S, R, T, RANK = 3, 4, 5, 2  # shots, receivers, samples, covariance rank: D = 20 values per shot


def _noise(seed=0, shots=S):
    g = torch.Generator().manual_seed(seed)
    w = 0.3 * torch.randn(shots, R * T, RANK, generator=g, dtype=DT)
    diag = 0.01 + 0.05 * torch.rand(shots, R, T, generator=g, dtype=DT)
    loc = 0.1 * torch.randn(shots, R, T, generator=g, dtype=DT)
    return CorrelatedGaussian(cov_factor=w, cov_diag=diag, loc=loc)


def _dense(noise, s):
    w = noise.cov_factor[s]
    return w @ w.T + torch.diag(noise.cov_diag[s].reshape(-1))


class MatrixForward:
    """``d[s, r, t] = sum_p G[s, r, t, p] v_p`` (a linear operator, so Laplace is exact)."""

    def __init__(self, g):
        self.g = g

    def __call__(self, fields, shots=None):
        g = self.g if shots is None else self.g[shots]
        v = fields["vp"]
        return torch.einsum("srtp,...p->...srt", g, v.reshape(v.shape[:-2] + (-1,)))


def _prior():
    # no bounds: the field is mean + L z, linear in z
    return WhitenedField((4, 5), 10.0, covariance="matern", nu=1.5, a_z=30.0, a_x=30.0, mean=2000.0, std=100.0,
                         n_modes=6, dtype=DT)


def _forward(seed=3):
    return MatrixForward(1e-3 * torch.randn(S, R, T, 20, generator=torch.Generator().manual_seed(seed), dtype=DT))


def test_log_prob_equals_the_dense_multivariate_normal():
    noise = _noise()
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, S, R, T, generator=g, dtype=DT)  # a batch of 2 models
    obs = torch.randn(S, R, T, generator=g, dtype=DT)
    lp = noise.distribution(pred, {}, None, 3).log_prob(obs)
    assert lp.shape == (2, S)
    for b in range(2):
        for s in range(S):
            ref = dist.MultivariateNormal((pred[b, s] + noise.loc[s]).reshape(-1), _dense(noise, s))
            # Woodbury vs Cholesky of the dense matrix: both float64, well conditioned (diag >= 0.01)
            assert float(lp[b, s]) == pytest.approx(float(ref.log_prob(obs[s].reshape(-1))), rel=1e-10)
    shots = torch.tensor([2, 0])
    lp_sub = noise.distribution(pred[:, shots], {}, shots, 3).log_prob(obs[shots])
    torch.testing.assert_close(lp_sub, lp[:, shots], rtol=1e-12, atol=0)


def test_whitener_is_an_inverse_square_root():
    noise = _noise()
    like = torch.zeros(S, R, T, dtype=DT)
    whiten = noise.whitener(like)
    eye = torch.eye(R * T, dtype=DT)
    for s in range(S):
        cols = torch.zeros(R * T, S, R, T, dtype=DT)
        cols[:, s] = eye.reshape(R * T, R, T)
        m = whiten(cols)[:, s].reshape(R * T, R * T).T  # column j = C^{-1/2} e_j
        c = _dense(noise, s)
        torch.testing.assert_close(m.T @ m, torch.linalg.inv(c), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(m @ c @ m.T, eye, rtol=0, atol=1e-10)


def test_direct_log_joint_equals_the_pyro_trace_and_subsampling_is_unbiased():
    prior, fwd = _prior(), _forward()
    noise = _noise()
    data = fwd({"vp": prior(torch.randn(6, dtype=DT))}) + 0.1
    model = build_model({"vp": prior}, fwd, data, noise=noise)
    latents = {"vp_z": torch.randn(6, generator=torch.Generator().manual_seed(4), dtype=DT)}
    tr = poutine.trace(poutine.condition(model, data=latents)).get_trace(full=True)
    full = float(model.log_joint(latents))
    assert full == pytest.approx(float(tr.log_prob_sum()), rel=1e-12)
    # every one-shot subsample, scaled by n_shots, averages to the full log-likelihood (enumeration, exact)
    sub = []
    for s in range(S):
        t = poutine.trace(poutine.condition(model, data=latents)).get_trace(shots=torch.tensor([s]))
        t.compute_log_prob()
        sub.append(float(t.nodes["obs"]["log_prob_sum"]))  # Pyro's plate scale (n_shots) is already applied
    like = float(tr.nodes["obs"]["fn"].log_prob(data).sum())
    assert np.mean(sub) == pytest.approx(like, rel=1e-12)


def test_samples_have_the_dense_covariance():
    noise = _noise()
    pred = torch.zeros(S, R, T, dtype=DT)
    torch.manual_seed(0)
    x = noise.distribution(pred, {}, None, 3).sample((40000,))
    assert x.shape == (40000, S, R, T)
    for s in range(S):
        c = _dense(noise, s)
        emp = torch.cov(x[:, s].reshape(40000, -1).T)
        # Monte-Carlo error of a covariance entry ~ sqrt(2 / N) * max variance ~ 0.7 %; allow 4 %
        assert float((emp - c).abs().max() / c.diagonal().max()) < 0.04
        torch.testing.assert_close(x[:, s].mean(0), noise.loc[s], rtol=0, atol=0.02)


def _linear_posterior(prior, fwd, noise, data):
    """Exact Gaussian posterior of the whitened z: precision I + J^T C^-1 J, mean from the normal equations."""
    jac = torch.autograd.functional.jacobian(lambda z: fwd({"vp": prior(z)}), torch.zeros(6, dtype=DT))
    jac = jac.reshape(S, R * T, 6)
    resid0 = (data - fwd({"vp": prior(torch.zeros(6, dtype=DT))}) - noise.loc).reshape(S, R * T)
    prec, rhs = torch.eye(6, dtype=DT), torch.zeros(6, dtype=DT)
    for s in range(S):
        ci = torch.linalg.inv(_dense(noise, s))
        prec += jac[s].T @ ci @ jac[s]
        rhs += jac[s].T @ ci @ resid0[s]
    return torch.linalg.solve(prec, rhs), torch.linalg.inv(prec)


def test_svi_and_nuts_sample_the_exact_posterior_with_correlated_noise():
    prior, fwd = _prior(), _forward()
    noise = _noise(seed=5)
    data = fwd({"vp": prior(torch.randn(6, generator=torch.Generator().manual_seed(6), dtype=DT))}) + 0.05
    model = build_model({"vp": prior}, fwd, data, noise=noise)
    mean, cov = _linear_posterior(prior, fwd, noise, data)
    sd = cov.diagonal().sqrt()
    lap = laplace(model, rank=6)
    post = svi(model, guide="multivariate", laplace_posterior=lap, num_steps=300, lr=0.01, num_particles=16,
               tol=None, num_samples=20000, seed=0)
    # started at the exact answer (Laplace is exact here): the ELBO's optimum is the posterior itself; 20000 draws
    assert float(((post.mean("vp_z") - mean) / sd).abs().max()) < 0.1
    assert float((post.std("vp_z") / sd - 1).abs().max()) < 0.1
    post = nuts(model, num_samples=400, warmup_steps=100, num_chains=1, laplace_posterior=lap, seed=0)
    # 400 draws: Monte-Carlo error of a mean ~ 0.05 sd, of a std ~ 4 % (nearly independent draws in whitened coords)
    assert float(((post.mean("vp_z") - mean) / sd).abs().max()) < 0.25
    assert float((post.std("vp_z") / sd - 1).abs().max()) < 0.2


def test_laplace_is_exact_with_correlated_noise():
    """Linear forward, whitened prior, correlated Gaussian noise: the posterior of z is Gaussian with precision
    I + J^T C^-1 J and mean from the normal equations, both assembled densely here."""
    prior, fwd = _prior(), _forward()
    noise = _noise(seed=5)
    z_true = torch.randn(6, generator=torch.Generator().manual_seed(6), dtype=DT)
    data = fwd({"vp": prior(z_true)}) + 0.05
    model = build_model({"vp": prior}, fwd, data, noise=noise)
    m = map(model, optimizer="lbfgs", num_steps=50, lr=1.0)
    post = laplace(model, map_posterior=m, rank=6)
    mean, cov = _linear_posterior(prior, fwd, noise, data)
    gauss = post.gaussian
    vec, lam = gauss.eigvecs, gauss.eigvals
    dense_cov = torch.eye(6, dtype=DT) - vec @ torch.diag(lam / (1 + lam)) @ vec.T
    # L-BFGS to its tolerance on a 6-parameter quadratic; the Hessian is assembled from exact products (rank = n)
    torch.testing.assert_close(gauss.loc, mean, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(dense_cov, cov, rtol=1e-8, atol=1e-10)


def test_approximation_error_recovers_the_sample_mean_and_covariance():
    prior = _prior()
    acc, app = _forward(3), _forward(4)
    g = torch.Generator().manual_seed(7)
    fields = [{"vp": prior(torch.randn(6, generator=g, dtype=DT))} for _ in range(12)]
    e = np.stack([(acc(f) - app(f)).numpy() for f in fields])  # [N, S, R, T], independent numpy statistics
    sigma = 0.02
    fwd, full = approximation_error(acc, app, fields, sigma=sigma, rank=11)
    assert full.cov_factor.shape == (S, R * T, 11)
    np.testing.assert_allclose(fwd.offset.numpy(), e.mean(0), rtol=1e-10, atol=1e-15)
    f = fields[0]  # the corrected operator adds the mean error
    np.testing.assert_allclose(fwd(f).numpy(), (app(f)).numpy() + e.mean(0), rtol=1e-10, atol=1e-15)
    for s in range(S):
        cov = np.cov(e[:, s].reshape(12, -1), rowvar=False)
        got = (_dense(full, s) - sigma**2 * torch.eye(R * T, dtype=DT)).numpy()
        np.testing.assert_allclose(got, cov, rtol=1e-9, atol=1e-12 * np.abs(cov).max())
    _, low = approximation_error(acc, app, fields, sigma=sigma, rank=3)
    assert low.cov_factor.shape == (S, R * T, 3)
    for s in range(S):
        cov = np.cov(e[:, s].reshape(12, -1), rowvar=False)
        got = (_dense(low, s) - sigma**2 * torch.eye(R * T, dtype=DT)).numpy()
        # every datum keeps its marginal error variance; the factor is the best rank-3 part of the covariance
        np.testing.assert_allclose(np.diag(got), np.diag(cov), rtol=1e-9)
        w = low.cov_factor[s].numpy()
        np.testing.assert_allclose(np.linalg.eigvalsh(w @ w.T)[-3:], np.linalg.eigvalsh(cov)[-3:], rtol=1e-9)


def test_rank_selection_by_cross_validation():
    prior = _prior()
    acc, app = _forward(3), _forward(4)
    g = torch.Generator().manual_seed(8)
    fields = [{"vp": prior(torch.randn(6, generator=g, dtype=DT))} for _ in range(40)]
    # a linear error of a 6-mode prior lives in a 6-dimensional subspace: the held-out score needs rank >= 6
    _, noise = approximation_error(acc, app, fields, sigma=1e-4)
    scores = noise.info["holdout_scores"]
    assert noise.info["rank"] >= 6 and noise.info["kept_variance"] > 1 - 1e-9
    assert scores[4] < max(scores.values())

    # an error that is white noise, independent between models, has no low-dimensional structure: keeping all
    # N - 1 sample directions would call the error zero everywhere else, and the held-out score says so
    class Noisy:
        def __init__(self):
            self.g = torch.Generator().manual_seed(9)

        def __call__(self, f):
            d = acc(f)
            return d + 0.01 * torch.randn(d.shape, generator=self.g, dtype=DT)

    _, noise = approximation_error(acc, Noisy(), fields, sigma=1e-4)
    scores = noise.info["holdout_scores"]
    assert noise.info["rank"] < 31 and scores[noise.info["rank"]] > scores[31]
    # the marginal variance is kept on the diagonal: ~0.01^2 per datum whatever the rank
    var = (noise.cov_factor**2).sum(-1).reshape(S, R, T) + noise.cov_diag
    assert float((var / 1e-4).mean()) == pytest.approx(1.0, abs=0.1)  # 40 samples: ~2 % error on the average


def test_regression_on_features_removes_an_error_linear_in_the_model():
    """Linear operators and an unbounded prior: the error (G1 - G2) (mean + L z) is affine in z, so regressing it on
    the whitened coordinates ``prior.inverse`` makes the corrected operator equal the accurate one on new models, and
    leaves (numerically) no error; shots subsampling picks the matching rows of the correction."""
    prior = _prior()
    acc, app = _forward(3), _forward(4)
    g = torch.Generator().manual_seed(10)
    fields = [{"vp": prior(torch.randn(6, generator=g, dtype=DT))} for _ in range(20)]
    fwd, noise = approximation_error(acc, app, fields, sigma=1e-3, features=lambda f: prior.inverse(f["vp"]))
    assert noise.info["explained_by_features"] == pytest.approx(1.0, abs=1e-12)
    new = {"vp": prior(torch.randn(2, 6, generator=g, dtype=DT))}  # a batch of 2 unseen models
    torch.testing.assert_close(fwd(new), acc(new), rtol=1e-9, atol=1e-12)
    shots = torch.tensor([2, 0])
    torch.testing.assert_close(fwd(new, shots=shots), acc(new)[:, shots], rtol=1e-9, atol=1e-12)
    # the remaining error is the measurement noise: the factor carries (numerically) nothing
    assert float(noise.cov_factor.abs().max()) < 1e-9
    with pytest.raises(ValueError, match="more models"):
        approximation_error(acc, app, fields[:5], sigma=1e-3, features=lambda f: prior.inverse(f["vp"]))


def test_errors():
    noise = _noise()
    with pytest.raises(TypeError, match="cov_factor"):
        CorrelatedGaussian(cov_factor=torch.zeros(4, 2, dtype=DT), cov_diag=1.0)
    with pytest.raises(ValueError, match="cov_diag"):
        CorrelatedGaussian(cov_factor=noise.cov_factor, cov_diag=-1.0)
    prior, fwd = _prior(), _forward()
    data = torch.zeros(S, R, T + 1, dtype=DT)
    with pytest.raises(ValueError, match=r"cov_factor shaped \(3, 20, 2\) does not fit data shaped \(3, 4, 6\)"):
        build_model({"vp": prior}, fwd, data, noise=noise)
    with pytest.raises(ValueError, match="at least 2 models"):
        approximation_error(fwd, fwd, [{"vp": prior(torch.zeros(6, dtype=DT))}], sigma=0.1)
    with pytest.raises(ValueError, match="rank"):
        approximation_error(fwd, fwd, [], sigma=0.1, rank=0)
    with pytest.raises(ValueError, match="holdout"):
        approximation_error(fwd, fwd, [], sigma=0.1, holdout=1.5)
    assert isinstance(Gaussian(1.0), Gaussian)
