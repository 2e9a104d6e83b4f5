"""probinv.models: sites, likelihoods, shot subsampling (unbiasedness by enumeration), regularisers, errors."""
import itertools
import math
import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from scipy import stats

from probinv.fields import BoxField, WhitenedField
from probinv.models import (
    AcousticForward,
    Flat,
    Gaussian,
    GaussianLatentSigma,
    Smoothness,
    StudentT,
    TotalVariation,
    build_model,
    smoothness,
    total_variation,
)
from probinv.physics import ricker

DT = torch.float64


def _prior(n_modes=5):
    return WhitenedField((4, 5), 10.0, covariance="matern", nu=1.5, a_z=30.0, a_x=30.0, mean=2000.0, std=100.0,
                         n_modes=n_modes, dtype=DT)


def _matrix(n_shots=4, n_rec=3):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n_shots, n_rec, 20, generator=g, dtype=DT) * 1e-3


class MatrixForward:
    """``d[s, r] = sum_p G[s, r, p] v_p``; records the shots it was asked for."""

    def __init__(self, g):
        self.g, self.calls = g, []

    def __call__(self, fields, shots=None):
        g = self.g if shots is None else self.g[shots]
        self.calls.append(None if shots is None else shots.tolist())
        v = fields["vp"]
        return torch.einsum("srp,...p->...sr", g, v.reshape(v.shape[:-2] + (-1,)))


def _data(fwd, prior, sigma=0.05):
    torch.manual_seed(1)
    d = fwd({"vp": prior(torch.randn(prior.latent_dim, dtype=DT))})
    return d + sigma * torch.randn_like(d)


def test_sites_and_deterministic_field():
    prior, fwd = _prior(), MatrixForward(_matrix())
    data = _data(fwd, prior)
    model = build_model({"vp": prior}, fwd, data, noise=Gaussian(0.05))
    tr = poutine.trace(model).get_trace()
    assert tr.nodes["vp_z"]["value"].shape == (5,)
    assert torch.equal(tr.nodes["vp"]["value"], prior(tr.nodes["vp_z"]["value"]))
    assert tr.nodes["obs"]["value"] is data
    # the likelihood is the independent Gaussian log density summed over every datum
    pred = fwd({"vp": tr.nodes["vp"]["value"]})
    expected = (-0.5 * ((data - pred) / 0.05) ** 2 - math.log(0.05) - 0.5 * math.log(2 * math.pi)).sum()
    assert torch.allclose(tr.nodes["obs"]["fn"].log_prob(data).sum(), expected, rtol=1e-12)
    assert model.dx == 10.0


@pytest.mark.parametrize("takes_shots", [True, False])
def test_minibatch_likelihood_unbiased_by_enumeration(takes_shots):
    """The mean over all C(4, 2) shot subsets of the plate-scaled subsample log-likelihood equals the full one
    exactly (each shot is in half the subsets and is scaled by n / m = 2), to float64 rounding."""
    prior, g = _prior(), _matrix()
    mf = MatrixForward(g)
    fwd = mf if takes_shots else (lambda fields: mf(fields))
    data = _data(mf, prior)
    model = build_model({"vp": prior}, fwd, data, noise=Gaussian(0.05), subsample_size=2)
    z = torch.randn(prior.latent_dim, dtype=DT)
    cond = poutine.condition(model, data={"vp_z": z})
    full = poutine.trace(cond).get_trace(full=True)
    full.compute_log_prob()
    full_ll = full.nodes["obs"]["log_prob_sum"]
    subs = []
    for subset in itertools.combinations(range(4), 2):
        mf.calls.clear()
        tr = poutine.trace(cond).get_trace(shots=torch.tensor(subset))
        tr.compute_log_prob()
        subs.append(tr.nodes["obs"]["log_prob_sum"])
        # the forward operator saw only the subsampled shots when it accepts them
        assert mf.calls[-1] == (list(subset) if takes_shots else None)
    assert torch.allclose(torch.stack(subs).mean(), full_ll, rtol=1e-12)
    # and a random subsample (subsample_size=2) evaluates the forward on 2 shots
    mf.calls.clear()
    poutine.trace(cond).get_trace()
    if takes_shots:
        assert len(mf.calls[-1]) == 2


def test_per_shot_sigma_is_subsampled():
    prior, mf = _prior(), MatrixForward(_matrix())
    data = _data(mf, prior)
    with pytest.raises(ValueError, match=re.escape("noise sigma shaped (4, 1, 1) does not broadcast to the data")):
        build_model({"vp": prior}, mf, data, noise=Gaussian(torch.ones(4, 1, 1, dtype=DT)))
    sigma = torch.tensor([0.01, 0.02, 0.03, 0.04], dtype=DT).reshape(4, 1)
    model = build_model({"vp": prior}, mf, data, noise=Gaussian(sigma))
    z = torch.zeros(prior.latent_dim, dtype=DT)
    tr = poutine.trace(poutine.condition(model, data={"vp_z": z})).get_trace(shots=torch.tensor([1, 3]))
    assert torch.equal(tr.nodes["obs"]["fn"].base_dist.scale[:, 0], torch.tensor([0.02, 0.04], dtype=DT))


def test_student_t_and_latent_sigma():
    prior, mf = _prior(), MatrixForward(_matrix())
    data = _data(mf, prior)
    z = torch.zeros(prior.latent_dim, dtype=DT)
    pred = mf({"vp": prior(z)})
    model = build_model({"vp": prior}, mf, data, noise=StudentT(df=3.0, scale=0.05))
    tr = poutine.trace(poutine.condition(model, data={"vp_z": z})).get_trace()
    expected = stats.t.logpdf(data.numpy(), 3.0, loc=pred.detach().numpy(), scale=0.05).sum()
    assert float(tr.nodes["obs"]["fn"].log_prob(data).sum()) == pytest.approx(expected, rel=1e-10)

    model = build_model({"vp": prior}, mf, data, noise=GaussianLatentSigma(scale=0.1))
    tr = poutine.trace(poutine.condition(model, data={"vp_z": z, "sigma": torch.tensor(0.2, dtype=DT)})).get_trace()
    assert tr.nodes["sigma"]["fn"].support is dist.LogNormal(0.0, 1.0).support
    expected = stats.norm.logpdf(data.numpy(), loc=pred.detach().numpy(), scale=0.2).sum()
    assert float(tr.nodes["obs"]["fn"].log_prob(data).sum()) == pytest.approx(expected, rel=1e-10)


def test_regulariser_factors():
    """TV of a linear ramp (no kink: eps small) and the smoothness of a ramp are known in closed form."""
    nz, nx, dx = 4, 5, 10.0
    zz, xx = torch.meshgrid(torch.arange(nz, dtype=DT), torch.arange(nx, dtype=DT), indexing="ij")
    ramp = 2000.0 + 3.0 * zz * dx + 4.0 * xx * dx  # gradient (3, 4) m/s per m, |grad| = 5
    assert float(total_variation(ramp, dx, eps=1e-9)) == pytest.approx(5.0 * (nz - 1) * (nx - 1) * dx * dx, rel=1e-9)
    s_expected = 9.0 * (nz - 1) * nx * dx * dx + 16.0 * nz * (nx - 1) * dx * dx
    assert float(smoothness(ramp, dx)) == pytest.approx(s_expected, rel=1e-12)
    mf = MatrixForward(_matrix())
    model = build_model({"vp": Flat((nz, nx))}, mf, mf({"vp": ramp}), noise=Gaussian(1.0),
                        regularisers=[TotalVariation("vp", 0.5, dx, eps=1e-9), Smoothness("vp", 0.25, dx)])
    tr = poutine.trace(poutine.condition(model, data={"vp": ramp})).get_trace()
    assert float(tr.nodes["tv_vp"]["fn"].log_factor) == pytest.approx(-0.5 * 5.0 * 12 * 100.0, rel=1e-9)
    assert float(tr.nodes["smooth_vp"]["fn"].log_factor) == pytest.approx(-0.25 * s_expected, rel=1e-12)


def test_box_prior_samples_the_field_in_its_bounds():
    box = BoxField((4, 5), (1500.0, 3000.0), dtype=DT)
    mf = MatrixForward(_matrix())
    model = build_model({"vp": box}, mf, mf({"vp": torch.full((4, 5), 2000.0, dtype=DT)}), noise=Gaussian(1.0))
    mid = torch.full((4, 5), 2250.0, dtype=DT)
    tr = poutine.trace(poutine.condition(model, data={"vp": mid})).get_trace()
    support = tr.nodes["vp"]["fn"].support
    assert bool(support.check(torch.full((4, 5), 2999.0, dtype=DT)).all())
    assert not bool(support.check(torch.full((4, 5), 3001.0, dtype=DT)).all())
    assert torch.equal(tr.nodes["vp"]["value"], mid)


def test_batched_fields_run_as_one_batch():
    """A vectorising plate at dim -2 (SVGD particles) sends a (P, nz, nx) batch through the forward once."""
    prior, mf = _prior(), MatrixForward(_matrix())
    data = _data(mf, prior)
    model = build_model({"vp": prior}, mf, data, noise=Gaussian(0.05))
    z = torch.randn(7, 1, prior.latent_dim, dtype=DT)
    with pyro.plate("particles", 7, dim=-2):
        tr = poutine.trace(poutine.condition(model, data={"vp_z": z})).get_trace()
    tr.compute_log_prob()
    lp = tr.nodes["obs"]["log_prob"]
    assert lp.shape == (7, 4)
    one = build_model({"vp": prior}, mf, data, noise=Gaussian(0.05))
    tr3 = poutine.trace(poutine.condition(one, data={"vp_z": z[3, 0]})).get_trace()
    tr3.compute_log_prob()
    assert torch.allclose(lp[3], tr3.nodes["obs"]["log_prob"], rtol=1e-12)


def test_acoustic_forward_subsamples_shots():
    n, nt, dt = 10, 60, 0.004
    src = torch.tensor([[[1, 1]], [[1, 5]], [[1, 8]]])
    rec = torch.tensor([[[8, j] for j in range(0, 10, 3)]] * 3)
    amp = ricker(8.0, nt, dt, dtype=DT).reshape(1, 1, -1).repeat(3, 1, 1)
    fwd = AcousticForward(50.0, dt, amp, src, rec, options={"pml_width": 4})
    v = torch.full((n, n), 2000.0, dtype=DT)
    full = fwd({"vp": v})
    sub = fwd({"vp": v}, shots=torch.tensor([2, 0]))
    assert full.shape == (3, 4, nt)
    assert torch.allclose(sub, full[[2, 0]], rtol=1e-12, atol=1e-30)


def test_errors():
    prior, mf = _prior(), MatrixForward(_matrix())
    data = _data(mf, prior)
    with pytest.raises(TypeError, match="priors must be a non-empty dict"):
        build_model({}, mf, data, noise=Gaussian(1.0))
    with pytest.raises(TypeError, match="a prior must be"):
        build_model({"vp": 3.0}, mf, data, noise=Gaussian(1.0))
    with pytest.raises(ValueError, match="noise must be given"):
        build_model({"vp": prior}, mf, data, noise=None)
    with pytest.raises(ValueError, match=re.escape("sigma must be a positive finite number, got -1.0")):
        Gaussian(-1.0)
    with pytest.raises(ValueError, match="subsample_size = 9 exceeds the number of shots 4"):
        build_model({"vp": prior}, mf, data, noise=Gaussian(1.0), subsample_size=9)
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        TotalVariation("vp", -1.0)
    with pytest.raises(ValueError, match=re.escape("shape must be (nz, nx)")):
        Flat((3,))


@pytest.mark.parametrize("noise", [Gaussian(0.05), StudentT(4.0, 0.05), GaussianLatentSigma(scale=0.1)])
def test_direct_log_joint_equals_the_pyro_trace(noise):
    """``SeismicModel.log_joint`` (the samplers' fast path) equals the full-data Pyro trace's log density."""
    prior, mf = _prior(), MatrixForward(_matrix())
    data = _data(mf, prior)
    model = build_model({"vp": prior}, mf, data, noise=noise, regularisers=[Smoothness("vp", 1e-3, 10.0)])
    latents = {"vp_z": torch.randn(prior.latent_dim, dtype=DT), "sigma": torch.tensor(0.07, dtype=DT)}
    tr = poutine.trace(poutine.condition(model, data=latents)).get_trace(full=True)
    assert float(model.log_joint(latents)) == pytest.approx(float(tr.log_prob_sum()), rel=1e-12)
