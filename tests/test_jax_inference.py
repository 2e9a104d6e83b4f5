"""The NumPyro backend's model and NUTS against the PyTorch path.

* Model log-densities: the NumPyro model of a PyTorch model (same priors' basis, forward operator, noise model)
  has the same log joint density, to relative 1e-10 in float64 (the solvers agree to ~1e-15, the sums of ~1e3 terms
  lose a few more digits) and 1e-5 in float32.
* The linear-Gaussian exact posterior of ``tests/test_inference.py`` is recovered by NumPyro NUTS with the same
  tolerances as the PyTorch NUTS test there.
* NUTS on the 16 x 16 acoustic problem of ``tests/test_inference_acoustic.py``: posterior mean and std of the
  latent modes match the PyTorch NUTS within Monte-Carlo error (a short run; a longer one is marked slow).
"""
import pytest

pytest.importorskip("jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from numpyro import handlers  # noqa: E402
from numpyro.infer.util import log_density  # noqa: E402
from test_inference import Linear  # noqa: E402

import probinv.jax as pj  # noqa: E402
from probinv.fields import WhitenedField  # noqa: E402
from probinv.inference import laplace, nuts  # noqa: E402
from probinv.models import AcousticForward, Gaussian, GaussianLatentSigma, build_model  # noqa: E402
from probinv.physics import ricker  # noqa: E402

N, DX, STEP, NMODES = 16, 20.0, 0.004, 6


def _acoustic_model(free_surface, noise_kind, nt=138, dtype=torch.float64, seed=7):
    prior = WhitenedField((N, N), DX, covariance="matern", nu=1.5, a_z=100.0, a_x=100.0, mean=2000.0, std=100.0,
                          n_modes=NMODES, bounds=(1500.0, 2600.0), dtype=dtype)
    src = torch.tensor([[[3, 0]], [[7, 0]]]) if not free_surface else torch.tensor([[[0, 2]], [[0, 9]]])
    rec = torch.tensor([[[j, N - 1] for j in range(10)]] * 2)
    amp = ricker(5.0, nt, STEP, dtype=dtype).reshape(1, 1, -1).repeat(2, 1, 1)
    fwd = AcousticForward(DX, STEP, amp, src, rec, options={"pml_width": 5, "pml_vmax": 2600.0,
                                                            "free_surface": free_surface})
    g = torch.Generator().manual_seed(seed)
    z_true = torch.randn(NMODES, generator=g, dtype=torch.float64).to(dtype)
    clean = fwd({"vp": prior(z_true)})
    sigma = 0.02 * float(clean.abs().max())
    data = clean + sigma * torch.randn(clean.shape, generator=g, dtype=torch.float64).to(dtype)
    noise = Gaussian(sigma) if noise_kind == "gaussian" else GaussianLatentSigma(scale=sigma)
    return build_model({"vp": prior}, fwd, data, noise=noise), z_true, sigma


def _rel(a, b):
    return abs(float(a) - float(b)) / abs(float(b))


@pytest.mark.parametrize("free_surface, noise_kind", [(True, "gaussian"), (False, "latent_sigma")])
def test_acoustic_log_density_equals_pytorch(free_surface, noise_kind):
    tm, z_true, sigma = _acoustic_model(free_surface, noise_kind)
    jm = pj.from_torch_model(tm)
    g = torch.Generator().manual_seed(3)
    lt, lj = [], []
    for _ in range(2):  # two heterogeneous models (prior draws around the truth)
        z = z_true + 0.5 * torch.randn(NMODES, generator=g, dtype=torch.float64)
        latents = {"vp_z": z}
        if noise_kind == "latent_sigma":
            latents["sigma"] = torch.tensor(1.3 * sigma, dtype=torch.float64)
        lt.append(float(tm.log_joint(latents)))
        jl = {k: jnp.asarray(v.numpy()) for k, v in latents.items()}
        lj.append(float(log_density(jm, (), {"full": True}, jl)[0]))
        assert _rel(jm.log_joint(jl), lt[-1]) < 1e-10
    assert all(_rel(a, b) < 1e-10 for a, b in zip(lj, lt, strict=True))
    assert abs(lt[0] - lt[1]) > 1.0  # the two models are distinguishable: the comparison is not of constants


def test_linear_log_density_float32_and_subsampled_plate():
    lin = Linear()
    G = jnp.asarray(lin.G.numpy())

    def fwd(fields, shots=None):
        g = G if shots is None else G[shots]
        v = fields["vp"]
        return jnp.einsum("srp,...p->...sr", g.astype(v.dtype), v.reshape(v.shape[:-2] + (-1,)))

    fwd.n_shots = 4
    z = torch.randn(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # float32: priors and data in single precision on both sides
    prior32 = WhitenedField((6, 6), 20.0, covariance="matern", nu=1.5, a_z=60.0, a_x=60.0, mean=2500.0, std=100.0,
                            n_modes=6, dtype=torch.float32)
    tm32 = build_model({"vp": prior32}, lambda f, shots=None: lin.forward(f, shots) if f["vp"].dtype == torch.float64
                       else torch.einsum("srp,...p->...sr", lin.G.float(), f["vp"].reshape(-1)),
                       lin.d.float(), noise=Gaussian(lin.sigma))
    jm32 = pj.from_torch_model(tm32, forward=fwd)
    lt32 = float(tm32.log_joint({"vp_z": z.float()}))
    lj32 = log_density(jm32, (), {"full": True}, {"vp_z": jnp.asarray(z.float().numpy())})[0]
    # the fields and predictions are float32 (numpyro's log_density adds the sites' float32 terms into a float64 sum)
    assert jm32.priors["vp"](jnp.asarray(z.float().numpy())).dtype == jnp.float32
    assert _rel(lj32, lt32) < 1e-5
    # subsampling: one shot per evaluation, its log-likelihood scaled by n_shots / 1 (unbiased)
    jm = pj.from_torch_model(lin.model(subsample_size=1), forward=fwd)
    zj = jnp.asarray(z.numpy())
    with handlers.seed(rng_seed=5):
        tr = handlers.trace(handlers.substitute(jm, data={"vp_z": zj})).get_trace()
    shot = int(tr["shots"]["value"][0])
    obs = tr["obs"]
    assert obs["value"].shape == (1, 3) and obs["scale"] == 4.0
    pred = fwd({"vp": jm.priors["vp"](zj)})
    ll_shot = jax.scipy.stats.norm.logpdf(jnp.asarray(lin.d.numpy())[shot], pred[shot], lin.sigma).sum()
    assert _rel(obs["fn"].log_prob(obs["value"]).sum(), ll_shot) < 1e-12


def _linear_jax(lin):
    G = jnp.asarray(lin.G.numpy())

    def fwd(fields, shots=None):
        g = G if shots is None else G[shots]
        v = fields["vp"]
        return jnp.einsum("srp,...p->...sr", g, v.reshape(v.shape[:-2] + (-1,)))

    fwd.n_shots = 4
    return pj.from_torch_model(lin.model(), forward=fwd)


@pytest.fixture(scope="module")
def lin_lap():
    lin = Linear()
    return lin, laplace(lin.model(), map_kwargs={"num_steps": 100})


def test_numpyro_nuts_recovers_the_exact_posterior(lin_lap):
    lin, lap = lin_lap
    post = pj.nuts(_linear_jax(lin), num_samples=300, warmup_steps=100, num_chains=2, laplace_posterior=lap, seed=1)
    z = post.samples["vp_z"]
    assert z.shape == (2, 300, 6) and post.samples["vp"].shape == (2, 300, 6, 6)
    # the same tolerances as test_inference.py's PyTorch NUTS test: ESS ~ 600 draws, MC error of the mean ~ 0.04 sd,
    # of the std ~ 3 % (10 % is > 3 MC sigma)
    err = ((post.mean("vp_z") - lin.mu) / lin.sd).abs()
    assert float(err.mean()) < 0.15
    assert float((post.std("vp_z") / lin.sd - 1).abs().max()) < 0.10
    # the fields are the prior's map of the latents
    assert torch.allclose(post.samples["vp"][0, :5], lin.prior(z[0, :5]), rtol=1e-12)
    stats = post.sample_stats
    assert set(stats) >= {"diverging", "tree_depth", "step_size", "acceptance_rate", "n_steps", "lp"}
    assert int(stats["diverging"].sum()) == 0
    assert float(stats["n_steps"].double().mean()) < 8  # Laplace-whitened: the exact posterior is N(0, I)
    assert np.all(post.summary(var_names=["vp_z"])["r_hat"].to_numpy() < 1.05)
    assert post.attrs["backend"] == "jax" and post.attrs["n_gradients"] > post.attrs["n_gradients_sampling"] > 0


def test_numpyro_nuts_on_a_float32_model_recovers_the_exact_posterior(lin_lap):
    """A float32 model (prior, forward, data in single precision; its own float32 Laplace): NumPyro's NUTS state is
    float64 under jax_enable_x64, which once made the tree building fail on mixed float32/float64 branches. Same
    tolerances as the float64 test (float32 rounding, ~1e-7 relative, is far below the Monte-Carlo error)."""
    lin, _ = lin_lap
    prior32 = WhitenedField((6, 6), 20.0, covariance="matern", nu=1.5, a_z=60.0, a_x=60.0, mean=2500.0, std=100.0,
                            n_modes=6, dtype=torch.float32)
    G32 = lin.G.float()
    tm32 = build_model({"vp": prior32}, lambda f, shots=None: torch.einsum(
        "srp,...p->...sr", G32 if shots is None else G32[shots], f["vp"].reshape(f["vp"].shape[:-2] + (-1,))),
        lin.d.float(), noise=Gaussian(lin.sigma))
    G = jnp.asarray(G32.numpy())

    def fwd(fields, shots=None):
        v = fields["vp"]
        return jnp.einsum("srp,...p->...sr", G if shots is None else G[shots], v.reshape(v.shape[:-2] + (-1,)))

    fwd.n_shots = 4
    lap32 = laplace(tm32, map_kwargs={"num_steps": 100})
    assert lap32.gaussian.loc.dtype == torch.float32
    post = pj.nuts(pj.from_torch_model(tm32, forward=fwd), num_samples=300, warmup_steps=100, num_chains=2,
                   laplace_posterior=lap32, seed=1)
    assert post.samples["vp_z"].dtype == torch.float32 and post.samples["vp"].dtype == torch.float32
    err = ((post.mean("vp_z").double() - lin.mu) / lin.sd).abs()
    assert float(err.mean()) < 0.15
    assert float((post.std("vp_z").double() / lin.sd - 1).abs().max()) < 0.10
    assert int(post.sample_stats["diverging"].sum()) == 0


@pytest.mark.slow
def test_numpyro_nuts_checkpoint_resume_equals_uninterrupted(lin_lap, tmp_path):
    """Per-chain checkpoints: a run "interrupted" after its first chain resumes to the same draws (~20 s)."""
    lin, lap = lin_lap
    jm = _linear_jax(lin)
    kw = dict(num_samples=20, warmup_steps=20, num_chains=2, laplace_posterior=lap, seed=1)
    full = pj.nuts(jm, checkpoint=tmp_path / "nuts", **kw)
    (tmp_path / "nuts.chain1.npz").unlink()  # "interrupted" after the first chain
    resumed = pj.nuts(jm, checkpoint=tmp_path / "nuts", **kw)
    assert torch.equal(resumed.samples["vp_z"], full.samples["vp_z"])
    assert torch.equal(resumed.sample_stats["n_steps"], full.sample_stats["n_steps"])
    with pytest.raises(ValueError, match="was written for another problem or other settings"):
        pj.nuts(jm, checkpoint=tmp_path / "nuts", **{**kw, "num_samples": 19})


@pytest.mark.parametrize("warmup, samples", [(40, 60), pytest.param(100, 300, marks=pytest.mark.slow)])
def test_numpyro_nuts_matches_pyro_nuts_on_acoustic(warmup, samples):
    """16 x 16 acoustic problem, 2 Laplace-preconditioned chains each: the NumPyro and Pyro posterior means and stds
    of the 6 latent modes agree within Monte-Carlo error. The tolerance comes from the chains' ESS: ArviZ's MCSE of
    the mean and of the sd (sd / sqrt(ESS)-type estimates) of the two independent runs add in quadrature; 4 combined
    MCSE leave a false-alarm rate ~1e-3 over the 12 comparisons, while the runs are long enough (MCSE < 0.25 sd,
    checked) that a wrong posterior (a mean off by one sd, a std off by 50 %) fails. The short version takes ~40 s
    on 2 busy cores (Pyro ~15 s, NumPyro's compilation ~10 s); the slow one runs 5x more draws."""
    tm, z_true, _ = _acoustic_model(False, "gaussian", nt=138)
    lap = laplace(tm, map_kwargs={"num_steps": 15, "init": {"vp_z": z_true}})
    kw = dict(num_samples=samples, warmup_steps=warmup, num_chains=2, laplace_posterior=lap, seed=0)
    pt = nuts(tm, **kw)
    pjx = pj.nuts(pj.from_torch_model(tm), **kw)
    st, sj = pt.summary(var_names=["vp_z"]), pjx.summary(var_names=["vp_z"])
    sd = st["sd"].to_numpy()
    se_mean = np.hypot(st["mcse_mean"].to_numpy(), sj["mcse_mean"].to_numpy())
    se_sd = np.hypot(st["mcse_sd"].to_numpy(), sj["mcse_sd"].to_numpy())
    assert np.all(se_mean < 0.25 * sd) and np.all(se_sd < 0.25 * sd)  # the comparison has power
    assert np.all(np.abs(st["mean"].to_numpy() - sj["mean"].to_numpy()) < 4 * se_mean)
    assert np.all(np.abs(st["sd"].to_numpy() - sj["sd"].to_numpy()) < 4 * se_sd)
    # short chains: a few divergent transitions occur on both backends (Pyro's too) near the prior's velocity bounds
    assert int(pjx.sample_stats["diverging"].sum()) <= 0.05 * 2 * samples


def test_bad_arguments_are_named(lin_lap):
    lin, lap = lin_lap
    with pytest.raises(TypeError, match="model must be a probinv.jax.NumPyroModel or a probinv.models.SeismicModel"):
        pj.nuts("model")
    with pytest.raises(ValueError, match="precondition must be 'laplace' or None"):
        pj.nuts(_linear_jax(lin), precondition="diag", laplace_posterior=lap)
    from probinv.models import StudentT
    with pytest.raises(TypeError, match="noise StudentT has no JAX version"):
        pj.from_torch_model(build_model({"vp": lin.prior}, lin.forward, lin.d, noise=StudentT(3.0, 1.0)))
    with pytest.raises(TypeError, match="forward must be a probinv.models.AcousticForward"):
        pj.from_torch_model(lin.model())  # a plain torch callable cannot be converted: pass forward=
    # the time step is checked against the prior's upper velocity bound (the solver cannot check traced models)
    tm, _, _ = _acoustic_model(False, "gaussian", nt=20)
    fast = build_model({"vp": WhitenedField((N, N), DX, covariance="matern", nu=1.5, a_z=100.0, a_x=100.0,
                                            mean=2000.0, std=100.0, n_modes=NMODES, bounds=(1500.0, 9000.0),
                                            dtype=torch.float64)}, tm.forward, tm.data, noise=tm.noise)
    with pytest.raises(ValueError, match="is unstable .* the prior's upper bound vmax = 9000"):
        pj.from_torch_model(fast)
