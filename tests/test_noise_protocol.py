"""Noise models are an open protocol: a user's own class goes through build_model, log_joint, map and laplace.

The problem is linear-Gaussian (a fixed random matrix from a 6 x 6 Matern field with 6 whitened modes to 4 shots x 3
receivers), so the exact posterior ``N(mu, C)``, ``C = (I + A^T A)^-1``, is known in whitened coordinates.
"""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from probinv.fields import WhitenedField
from probinv.inference import laplace, map
from probinv.models import CorrelatedGaussian, Gaussian, GaussianLatentSigma, NoiseModel, StudentT, build_model

DT = torch.float64
SIGMA = 2.0


class MyGaussian:
    """Independent Gaussian noise written from scratch (no probinv base class)."""

    def __init__(self, sigma):
        self.sigma = sigma

    def sample_params(self, like):
        return {}

    def params_from_latents(self, latents):
        return {}

    def log_prior(self, params, like):
        return like.new_zeros(())

    def distribution(self, pred, params, shots, n_data_dims):
        return dist.Normal(pred, torch.full_like(pred, self.sigma)).to_event(n_data_dims - 1)

    def log_prob(self, pred, data, params):
        r = (data - pred) / self.sigma
        lp = -0.5 * r**2 - math.log(self.sigma) - 0.5 * math.log(2 * math.pi)
        return lp.reshape(lp.shape[:lp.ndim - data.ndim] + (-1,)).sum(-1)

    def whiten(self, residual, params):
        return residual / self.sigma


class LaplaceScale:
    """Laplace (L1) noise whose scale ``b`` is a latent site with a log-normal hyperprior."""

    def __init__(self, median=1.0, site="b"):
        self.median, self.site = median, site

    def _hyperprior(self, like):
        loc = torch.tensor(math.log(self.median), dtype=like.dtype)
        return dist.LogNormal(loc, torch.ones_like(loc))

    def sample_params(self, like):
        return {"b": pyro.sample(self.site, self._hyperprior(like))}

    def params_from_latents(self, latents):
        return {"b": latents[self.site]}

    def log_prior(self, params, like):
        return self._hyperprior(like).log_prob(params["b"]).sum()

    def distribution(self, pred, params, shots, n_data_dims):
        b = params["b"]
        return dist.Laplace(pred, b.reshape(b.shape + (1,) * (n_data_dims - 1))).to_event(n_data_dims - 1)

    def log_prob(self, pred, data, params):
        return self.distribution(pred, params, None, data.ndim).log_prob(data).sum(-1)

    def whiten(self, residual, params):
        # Fisher information of a Laplace location: 1 / b^2
        return residual / params["b"]


class Problem:
    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.prior = WhitenedField((6, 6), 20.0, covariance="matern", nu=1.5, a_z=60.0, a_x=60.0, mean=2500.0,
                                   std=100.0, n_modes=6, dtype=DT)
        self.G = torch.randn(4, 3, 36, generator=g, dtype=DT) * 0.1
        z = torch.randn(6, generator=g, dtype=DT)
        self.d = self.forward({"vp": self.prior(z)}) + SIGMA * torch.randn(4, 3, generator=g, dtype=DT)
        a = self.G.reshape(12, 36) @ (self.prior.modes * self.prior.scales) / SIGMA
        b = (self.d.reshape(-1) - self.G.reshape(12, 36) @ self.prior.mean_field.reshape(-1)) / SIGMA
        self.C = torch.linalg.inv(torch.eye(6, dtype=DT) + a.T @ a)
        self.mu = self.C @ a.T @ b

    def forward(self, fields):
        v = fields["vp"]
        return torch.einsum("srp,...p->...sr", self.G, v.reshape(v.shape[:-2] + (-1,)))

    def model(self, noise):
        return build_model({"vp": self.prior}, self.forward, self.d, noise=noise)


@pytest.fixture(scope="module")
def problem():
    return Problem()


def test_builtin_noise_models_satisfy_the_protocol():
    w = torch.zeros(1, 12, 1, dtype=DT)
    for noise in (Gaussian(1.0), GaussianLatentSigma(), StudentT(3.0, 1.0), CorrelatedGaussian(w, 1.0),
                  MyGaussian(1.0), LaplaceScale()):
        assert isinstance(noise, NoiseModel)


def test_a_users_gaussian_gives_the_exact_posterior_through_map_and_laplace(problem):
    model = problem.model(MyGaussian(SIGMA))
    post = map(model, optimizer="lbfgs", num_steps=100, lr=1.0)
    torch.testing.assert_close(post.samples["vp_z"][0, 0], problem.mu, rtol=1e-6, atol=1e-6)
    lap = laplace(model, map_posterior=post, rank=6, num_samples=10)
    torch.testing.assert_close(lap.gaussian.covariance(), problem.C, rtol=1e-9, atol=1e-12)
    # and the same numbers as the built-in Gaussian (the log-density written differently: rounding only)
    ref = laplace(problem.model(Gaussian(SIGMA)), map_kwargs={"num_steps": 100}, rank=6, num_samples=10)
    torch.testing.assert_close(lap.gaussian.loc, ref.gaussian.loc, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(lap.gaussian.eigvals, ref.gaussian.eigvals, rtol=1e-10, atol=0)


def test_a_users_noise_model_with_a_latent_site(problem):
    noise = LaplaceScale(median=SIGMA)
    model = problem.model(noise)
    latents = {"vp_z": torch.linspace(-1, 1, 6, dtype=DT), "b": torch.tensor(1.7, dtype=DT)}
    tr = poutine.trace(poutine.condition(model, data=latents)).get_trace(problem.d, full=True)
    assert "b" in tr.nodes
    assert float(model.log_joint(latents)) == pytest.approx(float(tr.log_prob_sum()), rel=1e-12)
    post = map(model, optimizer="lbfgs", num_steps=100, lr=1.0)
    b = post.samples["b"][0, 0]
    assert 0 < float(b) < 10 * SIGMA
    lap = laplace(model, map_posterior=post, rank=6, num_samples=10)
    # laplace holds b at its MAP value and whitens with it: J^T J / b^2 in the Hessian
    a = problem.G.reshape(12, 36) @ (problem.prior.modes * problem.prior.scales) / b
    torch.testing.assert_close(lap.gaussian.covariance(), torch.linalg.inv(torch.eye(6, dtype=DT) + a.T @ a),
                               rtol=1e-9, atol=1e-12)
    assert torch.equal(lap.samples["b"][0], b.expand(10))


def test_an_incomplete_noise_model_is_refused_with_the_missing_methods(problem):
    class Half:
        def distribution(self, pred, params, shots, n_data_dims):
            return dist.Normal(pred, 1.0).to_event(n_data_dims - 1)

    with pytest.raises(TypeError, match="Half lacks sample_params, params_from_latents, log_prior, log_prob, whiten"):
        problem.model(Half())
