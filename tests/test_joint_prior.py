"""The log-Q prior and the joint vp-Q prior against closed forms, and the joint Pyro model."""
import math

import pyro
import pytest
import torch

from probinv.fields import JointVpQPrior, LogQField, WhitenedField
from probinv.models import Gaussian, JointSeismicModel, SeismicModel, build_joint_model

D = torch.float64
SHAPE, DX = (8, 10), 50.0
KW = dict(covariance="matern", nu=1.5, a_z=100.0, a_x=150.0, dtype=D)
N = 4000  # draws: standard errors below ~2 % of the quantities tested


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_log_q_field_is_lognormal_with_the_closed_form_moments():
    prior = LogQField(SHAPE, DX, q_median=40.0, log_std=0.8, n_modes=SHAPE[0] * SHAPE[1], **KW)  # all modes
    q = prior.sample(N, generator=_gen())
    assert bool((q > 0).all())
    logq = q.log()
    # ln Q ~ N(ln 40, 0.8^2) at every pixel: the pooled mean has SE 0.8 / sqrt(N) (x ~sqrt(correlated pixels))
    assert float(logq.mean()) == pytest.approx(math.log(40.0), abs=0.05)
    assert float(logq.std(dim=0).mean()) == pytest.approx(0.8, rel=0.03)  # SE of a std ~ 1/sqrt(2N) = 1.1 %
    mean, sd = prior.lognormal_moments()
    # all modes kept: the variance of ln Q is 0.8^2 at every pixel, so E[Q] = 40 e^{0.32}, sd = E sqrt(e^{0.64} - 1)
    torch.testing.assert_close(mean, torch.full(SHAPE, 40.0 * math.exp(0.32), dtype=D), rtol=1e-9, atol=0)
    assert float(sd[0, 0]) == pytest.approx(40.0 * math.exp(0.32) * math.sqrt(math.expm1(0.64)), rel=1e-9)
    # sample moments: the lognormal's mean has SE sd / sqrt(N) = 0.015 E[Q] per pixel; pooled over pixels, 3 %
    assert float(q.mean()) == pytest.approx(float(mean.mean()), rel=0.04)
    assert float(q.std(dim=0).mean()) == pytest.approx(float(sd.mean()), rel=0.08)  # heavy tail: SE ~ 3 %
    # z = 0 is the median exactly
    torch.testing.assert_close(prior(torch.zeros(prior.latent_dim, dtype=D)), torch.full(SHAPE, 40.0, dtype=D))


def test_log_q_field_bounds_keep_the_median_and_span_decades():
    prior = LogQField(SHAPE, DX, q_median=30.0, log_std=math.log(10.0), bounds=(3.0, 1000.0), **KW)
    q = prior.sample(N, generator=_gen(1))
    assert bool((q > 3.0).all()) and bool((q < 1000.0).all())
    # the squashing is monotone and fixes the mean of ln Q: P(Q < 30) = 1/2 exactly, SE 0.5 / sqrt(N) = 0.008
    assert float((q < 30.0).double().mean()) == pytest.approx(0.5, abs=0.03)
    assert float(q.max() / q.min()) > 100.0  # spans decades
    lo, hi = prior.q_bounds
    assert float(lo.min()) == pytest.approx(3.0) and float(hi.max()) == pytest.approx(1000.0)
    z = torch.randn(3, prior.latent_dim, dtype=D, generator=_gen(2))
    torch.testing.assert_close(prior.inverse(prior(z)), z, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("rho", [0.0, 0.6, -0.4])
def test_joint_prior_pointwise_correlation_is_rho(rho):
    vp = WhitenedField(SHAPE, DX, mean=2000.0, std=100.0, **KW)
    q = LogQField(SHAPE, DX, q_median=50.0, log_std=0.5, **KW)
    joint = JointVpQPrior(vp, q, rho)
    s = joint.sample(N, generator=_gen(3))
    a = (s["vp"] - 2000.0).reshape(N, -1)
    b = (s["q"].log() - math.log(50.0)).reshape(N, -1)
    corr = (a * b).mean(0) / (a.std(0) * b.std(0))
    # sample correlation SE (1 - rho^2) / sqrt(N) <= 0.016; the mean over 80 correlated pixels is tighter still
    assert float(corr.mean()) == pytest.approx(rho, abs=0.04)


def test_joint_prior_checks():
    vp = WhitenedField(SHAPE, DX, mean=2000.0, std=100.0, **KW)
    q_other = LogQField(SHAPE, DX, q_median=50.0, log_std=0.5, covariance="matern", nu=1.5, a_z=300.0, a_x=300.0,
                        dtype=D)
    with pytest.raises(ValueError, match="rho must lie in"):
        JointVpQPrior(vp, LogQField(SHAPE, DX, **KW), 1.0)
    with pytest.raises(ValueError, match="same Karhunen-Loeve modes"):
        JointVpQPrior(vp, q_other, 0.5)
    JointVpQPrior(vp, q_other, 0.0)  # independent priors may differ
    with pytest.raises(TypeError, match="LogQField"):
        JointVpQPrior(vp, vp, 0.0)
    with pytest.raises(ValueError, match="q_median"):
        LogQField(SHAPE, DX, q_median=-1.0, **KW)
    with pytest.raises(ValueError, match="bounds"):
        LogQField(SHAPE, DX, q_median=10.0, bounds=(20.0, 5.0), **KW)


def _linear_forward(fields, shots=None):
    """A plain linear operator of vp and ln Q: two 'shots' (row means of each field)."""
    out = torch.stack([fields["vp"].mean(-1) / 1000.0, fields["q"].log().mean(-1)], dim=-2)
    return out if shots is None else out.index_select(-2, shots)


def test_joint_model_couples_q_to_the_velocity_latent():
    vp = WhitenedField(SHAPE, DX, mean=2000.0, std=100.0, **KW)
    q = LogQField(SHAPE, DX, q_median=50.0, log_std=0.5, **KW)
    joint = JointVpQPrior(vp, q, 0.7)
    data = torch.zeros(2, SHAPE[0], dtype=D)
    model = build_joint_model(joint, _linear_forward, data, noise=Gaussian(0.1))
    assert isinstance(model, JointSeismicModel)
    pyro.set_rng_seed(0)
    tr = pyro.poutine.trace(model).get_trace()
    z_v, z_q = tr.nodes["vp_z"]["value"], tr.nodes["q_z"]["value"]
    torch.testing.assert_close(tr.nodes["q"]["value"], q(0.7 * z_v + math.sqrt(1 - 0.49) * z_q))
    torch.testing.assert_close(model.fields_from_latents({"vp_z": z_v, "q_z": z_q})["q"], tr.nodes["q"]["value"])
    # log_joint (the samplers' fast path) equals the Pyro trace's log density
    torch.testing.assert_close(model.log_joint({"vp_z": z_v, "q_z": z_q}), tr.log_prob_sum(), rtol=1e-10, atol=1e-8)
    back = model.latents_of({"vp": tr.nodes["vp"]["value"], "q": tr.nodes["q"]["value"]})
    torch.testing.assert_close(back["vp_z"], z_v, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(back["q_z"], z_q, rtol=1e-6, atol=1e-6)
    independent = build_joint_model(JointVpQPrior(vp, q), _linear_forward, data, noise=Gaussian(0.1))
    assert type(independent) is SeismicModel


def test_joint_model_laplace_equals_the_linear_gaussian_posterior():
    """vp and ln Q are linear in (z_v, z_q) (no bounds) and so is the forward map: Laplace is exact, rho != 0."""
    from probinv.inference import laplace

    kw = dict(KW, n_modes=5)
    vp = WhitenedField(SHAPE, DX, mean=2000.0, std=100.0, **kw)
    q = LogQField(SHAPE, DX, q_median=50.0, log_std=0.5, **kw)
    joint = JointVpQPrior(vp, q, 0.7)
    z_true = torch.randn(10, dtype=D, generator=_gen(4))
    truth = joint.fields(z_true[:5], z_true[5:])
    sigma = 0.02
    data = _linear_forward(truth) + sigma * torch.randn(2, SHAPE[0], dtype=D, generator=_gen(5))
    model = build_joint_model(joint, _linear_forward, data, noise=Gaussian(sigma))
    lap = laplace(model, rank=10, seed=0, num_samples=10)

    def pred(z):
        return _linear_forward(model.fields_from_latents({"vp_z": z[:5], "q_z": z[5:]})).reshape(-1) / sigma

    a = torch.autograd.functional.jacobian(pred, torch.zeros(10, dtype=D))
    cov = torch.linalg.inv(torch.eye(10, dtype=D) + a.T @ a)
    b = (data.reshape(-1) / sigma) - pred(torch.zeros(10, dtype=D))
    # linear-Gaussian closed form: the MAP (L-BFGS to its tolerance) and the Gauss-Newton covariance are exact
    torch.testing.assert_close(lap.gaussian.loc, cov @ a.T @ b, rtol=0, atol=1e-6)
    torch.testing.assert_close(lap.gaussian.covariance(), cov, rtol=0, atol=1e-8)
