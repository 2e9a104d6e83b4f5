"""Inference on a tiny nonlinear acoustic problem (16 x 16 cells, 20 m, 6 Matern modes, bounded velocities).

Why the data inform the kept modes: transmission geometry (2 sources on the left edge at depths 60 and 140 m, 10
receivers on the right edge over the top 200 m), a 5 Hz Ricker and a 0.55 s record, long enough for the direct
arrivals through the whole model (300 m at ~2000 m/s = 0.15 s after the wavelet's 0.25 s delay), 2 % noise.
Velocity perturbations of one prior std (100 m/s) change the traces by ~10-20 % of their amplitude, i.e. many noise
sigmas, so the leading modes' posterior std is several times below the prior's (``test_laplace_...`` checks it).
The bottom of the model (below 240 m) is not crossed by any source-receiver path.
"""
import numpy as np
import pytest
import torch

from probinv.fields import WhitenedField
from probinv.inference import laplace, map, nuts
from probinv.linearisation import jvp, vjp
from probinv.models import AcousticForward, Flat, Gaussian, build_model
from probinv.physics import acoustic, ricker
from probinv.physics.acoustic import _propagate_reference

DT = torch.float64
N, DX, STEP, NT, NMODES = 16, 20.0, 0.004, 138, 6  # dt stable up to 2600 m/s (the prior's upper bound)


def _geometry():
    src = torch.tensor([[[3, 0]], [[7, 0]]])
    rec = torch.tensor([[[j, N - 1] for j in range(10)]] * 2)
    amp = ricker(5.0, NT, STEP, dtype=DT).reshape(1, 1, -1).repeat(2, 1, 1)
    return amp, src, rec


@pytest.fixture(scope="module")
def problem():
    prior = WhitenedField((N, N), DX, covariance="matern", nu=1.5, a_z=100.0, a_x=100.0, mean=2000.0, std=100.0,
                          n_modes=NMODES, bounds=(1500.0, 2600.0), dtype=DT)
    amp, src, rec = _geometry()
    fwd = AcousticForward(DX, STEP, amp, src, rec, options={"pml_width": 5})
    g = torch.Generator().manual_seed(7)
    z_true = torch.randn(NMODES, generator=g, dtype=DT)
    clean = fwd({"vp": prior(z_true)})
    sigma = 0.02 * float(clean.abs().max())
    data = clean + sigma * torch.randn(clean.shape, generator=g, dtype=DT)
    model = build_model({"vp": prior}, fwd, data, noise=Gaussian(sigma))
    # MAP by L-BFGS started at the truth (this file tests the Laplace approximation and the sampler, not the
    # optimiser): it converges in ~10 gradients instead of ~60 from the prior mean
    lap = laplace(model, map_kwargs={"num_steps": 15, "init": {"vp_z": z_true}})
    return {"prior": prior, "fwd": fwd, "model": model, "z_true": z_true, "lap": lap, "sigma": sigma}


def test_reverse_mode_jvp_is_the_solver_jacobian(problem):
    """The double-backward JVP through the solver's hand-written backward (what Laplace uses) (a) passes the dot test
    against the solver's VJP and (b) equals forward-mode AD through the plain-operator reference solver.

    (Central differences are not the reference here: the CPML damping profile is built from ``v.max()`` as a constant
    of the solver, so finite differences of the whole solver see the profile move and differ by ~1 % from AD.)"""
    prior, fwd = problem["prior"], problem["fwd"]
    z = problem["z_true"]
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(NMODES, dtype=DT, generator=gen)
    f = lambda zz: fwd({"vp": prior(zz)})  # noqa: E731
    a = jvp(f, z, v, mode="reverse")
    u = torch.randn(a.shape, dtype=DT, generator=gen)
    assert float((a * u).sum()) == pytest.approx(float((vjp(f, z, u) * v).sum()), rel=1e-10)
    amp, src, rec = _geometry()
    ref = lambda zz: _propagate_reference(prior(zz), DX, STEP, amp, src, rec, pml_width=5)  # noqa: E731
    b = jvp(ref, z, v, mode="forward")
    assert float((a - b).norm() / b.norm()) < 1e-10


def test_laplace_on_acoustic_is_informative_and_std_larger_where_not_illuminated(problem):
    lap, prior = problem["lap"], problem["prior"]
    g = lap.gaussian
    # data inform the modes: the best-constrained direction's std is far below the prior's (1)
    assert float(g.eigvals.max()) > 25.0
    # the MAP point explains the data: normalised misfit ~ 1 per datum (chi^2 / n within 30 %)
    model = problem["model"]
    pred = model.predict({"vp": lap.samples["vp"][0].mean(0) * 0 + prior(g.loc)})
    chi2 = float((((model.data - pred) / problem["sigma"]) ** 2).mean())
    assert 0.7 < chi2 < 1.3
    # every kept mode is informed: the smallest eigenvalue of the prior-preconditioned misfit Hessian is > 1
    assert float(g.eigvals.min()) > 1.0
    assert float(lap.std("vp").max()) < float(torch.sqrt((prior.modes * prior.scales).pow(2).sum(-1)).max())


def test_flat_prior_map_is_plain_acoustic_fwi():
    """Adam MAP with a flat prior == torch.optim.Adam on the acoustic L2 misfit, iterate by iterate (rel 1e-6)."""
    amp, src, rec = _geometry()
    fwd = AcousticForward(DX, STEP, amp, src, rec, options={"pml_width": 5})
    zz, xx = torch.meshgrid(torch.arange(N, dtype=DT), torch.arange(N, dtype=DT), indexing="ij")
    v_true = 2000.0 + 150.0 * torch.exp(-((zz - 6) ** 2 + (xx - 8) ** 2) / 8.0)
    data = fwd({"vp": v_true})
    v0 = torch.full((N, N), 2000.0, dtype=DT)
    model = build_model({"vp": Flat((N, N))}, fwd, data, noise=Gaussian(1e-3))
    seen = []
    map(model, num_steps=6, lr=10.0, init={"vp": v0}, callback=lambda step, loss, f: seen.append(f["vp"].clone()))
    v = v0.clone().requires_grad_(True)
    opt = torch.optim.Adam([v], lr=10.0)
    for step in range(6):
        opt.zero_grad()
        loss = 0.5 * (((data - acoustic(v, DX, STEP, amp, src, rec, pml_width=5)) / 1e-3) ** 2).sum()
        loss.backward()
        opt.step()
        assert float((seen[step] - v.detach()).norm() / v.detach().norm()) < 1e-6
    assert float((seen[-1] - v0).abs().max()) > 10.0  # the iterates did move


@pytest.mark.slow
def test_preconditioned_nuts_on_acoustic(problem):
    """2 chains of Laplace-preconditioned NUTS: r-hat < 1.05 everywhere; Laplace and NUTS std maps within 30 % in
    the median. (Measured: 40 min on 2 cores shared with other jobs.)"""
    post = nuts(problem["model"], num_samples=200, warmup_steps=100, num_chains=2, laplace_posterior=problem["lap"],
                seed=0)
    rhat = post.summary(var_names=["vp_z", "vp"])["r_hat"].to_numpy()
    assert np.all(rhat < 1.05)
    rel = (problem["lap"].std("vp") / post.std("vp") - 1).abs()
    assert float(rel.median()) < 0.30


@pytest.mark.slow
def test_posterior_std_larger_where_not_illuminated():
    """24 x 24 cells of 10 m, 20 Matern modes (a = 40 m), 12 Hz; sources on the left edge at 20-100 m depth and
    receivers on the right edge over the top 110 m: the paths cross the top half only. The Laplace posterior std,
    relative to the prior std of the kept modes, is larger in the bottom quarter than in the top quarter (measured
    here: ~0.5 vs ~0.3). (~30 s on 2 cores.)"""
    n, dx, dt, nt, k = 24, 10.0, 0.0025, 130, 20
    prior = WhitenedField((n, n), dx, covariance="matern", nu=1.5, a_z=40.0, a_x=40.0, mean=2000.0, std=100.0,
                          n_modes=k, bounds=(1500.0, 2600.0), dtype=DT)
    src = torch.tensor([[[2, 0]], [[6, 0]], [[10, 0]]])
    rec = torch.tensor([[[j, n - 1] for j in range(12)]] * 3)
    amp = ricker(12.0, nt, dt, dtype=DT).reshape(1, 1, -1).repeat(3, 1, 1)
    fwd = AcousticForward(dx, dt, amp, src, rec, options={"pml_width": 5})
    g = torch.Generator().manual_seed(7)
    z_true = torch.randn(k, generator=g, dtype=DT)
    clean = fwd({"vp": prior(z_true)})
    sigma = 0.02 * float(clean.abs().max())
    data = clean + sigma * torch.randn(clean.shape, generator=g, dtype=DT)
    model = build_model({"vp": prior}, fwd, data, noise=Gaussian(sigma))
    lap = laplace(model, map_kwargs={"num_steps": 40, "init": {"vp_z": z_true}})
    prior_sd = torch.sqrt((prior.modes * prior.scales).pow(2).sum(-1)).reshape(n, n)
    ratio = lap.std("vp") / prior_sd
    assert float(ratio[18:].mean()) > 1.2 * float(ratio[:6].mean())
    assert float(lap.std("vp")[18:].mean()) > float(lap.std("vp")[:6].mean())
