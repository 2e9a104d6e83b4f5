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


# ------------------------------------------------------------------------------------- sensitivity calibration
_DC, _KC, _SIGC = 40, 2, 0.01  # data values, latent coordinates, measurement noise of the calibration tests


def _sin_problem():
    """``F(z) = sin(W z + b)``, one shot of 40 values, 2 latent coordinates: the sensitivity ``d F / d z`` turns with
    ``z`` over the prior, so an error along it is spread over many directions marginally but not at any one model."""
    g = torch.Generator().manual_seed(0)
    w = 2.0 * torch.randn(_DC, _KC, generator=g, dtype=DT)
    b = 6.28 * torch.rand(_DC, generator=g, dtype=DT)

    def forward(f):
        return torch.sin(f["vp"] @ w.T + b).reshape(f["vp"].shape[:-1] + (1, _DC))

    return forward, g


def _linearised_coverage(accurate, fwd, noise, n=300, seed=5):
    """Fraction of the latent coordinates of ``n`` truths ``z ~ N(0, I)`` inside the 90 % interval of the
    Gauss-Newton posterior linearised at the truth (``H = J~^T J~ + I``, ``J~ = M J``, ``M^T M = C^{-1}``), with data
    from ``accurate`` plus noise: the quantity the calibration targets, computed here with autograd Jacobians and
    the noise model's own whitener, independently of the code under test."""
    g = torch.Generator().manual_seed(seed)
    whiten = noise.whitener(torch.zeros(1, _DC, dtype=DT))
    inside = []
    for _ in range(n):
        z = torch.randn(_KC, generator=g, dtype=DT)
        y = accurate({"vp": z}) + _SIGC * torch.randn(1, _DC, generator=g, dtype=DT)
        jac = torch.autograd.functional.jacobian(lambda zz: fwd({"vp": zz}).reshape(-1), z)  # [D, K]
        jt = whiten(jac.T.reshape(_KC, 1, _DC)).reshape(_KC, _DC).T
        h_inv = torch.linalg.inv(jt.T @ jt + torch.eye(_KC, dtype=DT))
        mean = z + h_inv @ (jt.T @ whiten(y - fwd({"vp": z})).reshape(-1) - z)
        inside.append(((mean - z).abs() < 1.6449 * h_inv.diagonal().sqrt()).double())
    return float(torch.stack(inside).mean())


def test_calibration_inflates_an_error_along_the_sensitivities_to_nominal_coverage():
    """The accurate operator is the approximate one at a shifted model, ``F(z + delta(z))`` with ``delta`` a
    deterministic but erratic function of ``z`` (no linear trend to regress), so the error ~ ``J(z) delta(z)`` lies
    along the sensitivities at every model. The fitted Gaussian has the right variance per datum (full rank here)
    but puts only a fraction of it along ``J(z)``: the linearised posterior covers the truth far less than 90 %.
    The held-out sensitivity chi2 inflates the covariance; coverage is then nominal within 0.05 (300 truths x 2
    coordinates, binomial standard error ~0.015, plus the finite held-out estimate of alpha)."""
    forward, g = _sin_problem()

    def accurate(f):
        z = f["vp"]
        shift = 0.1 * torch.stack([torch.sin(97 * z[..., 0] + 31 * z[..., 1]),
                                   torch.cos(53 * z[..., 0] - 71 * z[..., 1])], -1)
        return forward({"vp": z + shift})

    fields = [{"vp": torch.randn(_KC, generator=g, dtype=DT)} for _ in range(300)]
    kw = dict(sigma=_SIGC, features=lambda f: f["vp"])
    fwd0, plain = approximation_error(accurate, forward, fields, **kw)
    fwd1, calibrated = approximation_error(accurate, forward, fields, calibrate=lambda z: {"vp": z}, **kw)
    info = calibrated.info
    assert len(info["sensitivity_chi2"]) == 60 and info["inflation"] > 4
    assert info["inflation"] == pytest.approx(np.mean(info["sensitivity_chi2"]))
    torch.testing.assert_close(calibrated.cov_diag, plain.cov_diag * info["inflation"])
    torch.testing.assert_close(fwd1.coef, fwd0.coef)  # the correction itself is unchanged
    assert _linearised_coverage(accurate, fwd0, plain) < 0.5
    assert _linearised_coverage(accurate, fwd1, calibrated) == pytest.approx(0.9, abs=0.05)


def test_calibration_leaves_a_well_specified_error_model_alone():
    """An error independent of the model, Gaussian with a rank-2 covariance: the fitted noise model is right, the
    held-out sensitivity chi2 / k averages 1 (60 held-out models x k = 2: standard error 0.13), so alpha stays
    below 1.4 (3 standard errors) and the coverage stays nominal."""
    forward, g = _sin_problem()
    basis = torch.randn(_DC, 2, generator=g, dtype=DT) * 0.05
    fields = [{"vp": torch.randn(_KC, generator=g, dtype=DT), "w": torch.randn(2, generator=g, dtype=DT)}
              for _ in range(300)]

    def accurate(f):
        w = f["w"] if "w" in f else torch.randn(2, generator=g, dtype=DT)
        return forward(f) + (basis @ w).reshape(1, _DC)

    fwd, noise = approximation_error(accurate, forward, fields, sigma=_SIGC, features=lambda f: f["vp"],
                                     calibrate=lambda z: {"vp": z})
    assert 1.0 <= noise.info["inflation"] < 1.4
    assert np.mean(noise.info["sensitivity_chi2"]) == pytest.approx(1.0, abs=0.4)
    assert _linearised_coverage(accurate, fwd, noise) == pytest.approx(0.9, abs=0.05)


def test_calibration_errors():
    forward, g = _sin_problem()
    fields = [{"vp": torch.randn(_KC, generator=g, dtype=DT)} for _ in range(6)]
    with pytest.raises(ValueError, match="calibrate needs features"):
        approximation_error(forward, forward, fields, sigma=0.1, calibrate=lambda z: {"vp": z})
    with pytest.raises(TypeError, match="calibrate must be callable"):
        approximation_error(forward, forward, fields, sigma=0.1, features=lambda f: f["vp"], calibrate=3)
    with pytest.raises(ValueError, match="calibrate needs more models"):
        approximation_error(forward, forward, fields[:4], sigma=0.1, features=lambda f: f["vp"],
                            calibrate=lambda z: {"vp": z})
