"""Posterior: summaries against numpy, ArviZ conversion (dims, coords in metres, groups), exact NetCDF round trip."""
import os
import re

import numpy as np
import pytest
import torch
import xarray as xr
from test_inference import Linear  # the linear-Gaussian problem (tests/ is on sys.path under pytest)

from probinv import diagnostics
from probinv.inference import LowRankGaussian, Posterior, laplace, map, nuts, svgd, svi


def _posterior(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    samples = {"vp": 2000 + 100 * torch.randn(2, 50, 4, 5, generator=g, dtype=dtype),
               "vp_z": torch.randn(2, 50, 3, generator=g, dtype=torch.float64),
               "sigma": torch.rand(2, 50, generator=g, dtype=dtype)}
    stats = {"diverging": torch.rand(2, 50, generator=g) > 0.9, "n_steps": torch.randint(1, 30, (2, 50), generator=g),
             "step_size": torch.rand(2, 50, generator=g, dtype=torch.float64)}
    obs = torch.randn(3, 4, 7, generator=g, dtype=dtype)
    pp = torch.randn(2, 50, 3, 4, 7, generator=g, dtype=dtype)
    gauss = LowRankGaussian(torch.randn(3, dtype=torch.float64),
                            torch.linalg.qr(torch.randn(3, 2, dtype=torch.float64))[0],
                            torch.tensor([5.0, 0.5], dtype=torch.float64))
    return Posterior(samples, field_names=["vp"], method="nuts", dx=12.5, sample_stats=stats, observed_data=obs,
                     posterior_predictive=pp, gaussian=gauss, attrs={"seed": 3, "note": "test"}, dt=0.004)


def test_summaries_match_numpy():
    post = _posterior()
    x = post.samples["vp"].reshape(100, 4, 5).numpy()
    assert np.allclose(post.mean("vp").numpy(), x.mean(0), rtol=1e-6)
    assert np.allclose(post.std("vp").numpy(), x.std(0, ddof=1), rtol=1e-5)
    q = post.quantile("vp", [0.05, 0.5, 0.95]).numpy()
    assert np.allclose(q, np.quantile(x, [0.05, 0.5, 0.95], axis=0), rtol=1e-6)
    lo, hi = post.credible_interval("vp", 0.9)
    assert np.allclose((hi - lo).numpy(), post.ci_width("vp", 0.9).numpy())
    assert np.allclose(lo.numpy(), np.quantile(x, 0.05, axis=0), rtol=1e-6)
    assert post.num_chains == 2 and post.num_draws == 50


def test_to_arviz_dims_coords_groups():
    post = _posterior()
    idata = post.to_arviz(posterior_predictive=True)
    assert diagnostics.arviz_backend() == "arviz"  # arviz 0.23 on Python 3.11 (CI)
    vp = idata.posterior["vp"]
    assert vp.dims == ("chain", "draw", "z", "x")
    assert np.allclose(vp.coords["z"].values, np.arange(4) * 12.5)
    assert np.allclose(vp.coords["x"].values, np.arange(5) * 12.5)
    assert set(idata.sample_stats.data_vars) == {"diverging", "n_steps", "step_size"}
    assert idata.observed_data["obs"].dims == ("shot", "receiver", "time")
    assert np.allclose(idata.observed_data["obs"].coords["time"].values, np.arange(7) * 0.004)
    assert idata.posterior_predictive["obs"].dims == ("chain", "draw", "shot", "receiver", "time")
    assert "posterior_predictive" not in post.to_arviz().groups()
    table = post.summary(var_names=["sigma"])
    assert table.shape[0] == 1 and {"mean", "sd", "r_hat", "ess_bulk"} <= set(table.columns)
    assert table["mean"].iloc[0] == pytest.approx(float(post.mean("sigma")), abs=1e-3)


def test_netcdf_round_trip_is_exact(tmp_path):
    for dtype in (torch.float32, torch.float64):
        post = _posterior(dtype)
        path = tmp_path / f"post_{dtype}.nc"
        post.to_netcdf(path)
        back = Posterior.from_netcdf(path)
        for name in post.samples:
            assert back.samples[name].dtype == post.samples[name].dtype
            assert torch.equal(back.samples[name], post.samples[name])
        for name in post.sample_stats:
            assert back.sample_stats[name].dtype == post.sample_stats[name].dtype
            assert torch.equal(back.sample_stats[name], post.sample_stats[name])
        assert torch.equal(back.observed_data, post.observed_data)
        assert torch.equal(back.posterior_predictive, post.posterior_predictive)
        for a, b in zip(back.gaussian, post.gaussian, strict=True):
            assert torch.equal(a, b)
        assert (back.method, back.field_names, back.dx, back.dt, back.attrs) == \
            (post.method, post.field_names, post.dx, post.dt, post.attrs)
    # CF-style coordinates with units, readable by xarray; no temporary file left behind
    with xr.open_dataset(tmp_path / "post_torch.float64.nc", group="posterior") as ds:
        assert ds["vp"].dims == ("chain", "draw", "z", "x") and ds["z"].attrs["units"] == "m"
    assert sorted(os.listdir(tmp_path)) == ["post_torch.float32.nc", "post_torch.float64.nc"]


def test_low_rank_gaussian_algebra():
    g = _posterior().gaussian
    c = g.covariance()
    s = torch.stack([g.sqrt_matvec(e) for e in torch.eye(3, dtype=torch.float64)], 1)
    assert torch.allclose(s @ s.T, c, atol=1e-12)  # the symmetric square root
    assert torch.allclose(g.std(), c.diagonal().sqrt(), atol=1e-12)
    lam = torch.tensor([5.0, 0.5], dtype=torch.float64)
    h = torch.eye(3, dtype=torch.float64) + (g.eigvecs * lam) @ g.eigvecs.T
    assert torch.allclose(c, torch.linalg.inv(h), atol=1e-12)


def test_every_method_gives_an_arviz_summary_and_round_trips(tmp_path):
    """Tiny runs of every method on the linear-Gaussian problem: summary() works and NetCDF is exact."""
    lin = Linear()
    model = lin.model()
    m = map(model, optimizer="lbfgs", num_steps=30)
    lap = laplace(model, map_posterior=m, num_samples=50, posterior_predictive=True)
    results = [m, lap,
               nuts(model, num_samples=10, warmup_steps=10, num_chains=2, laplace_posterior=lap),
               svi(model, guide="normal", num_steps=20, num_samples=20, laplace_posterior=lap),
               svgd(model, num_particles=8, num_steps=5, laplace_posterior=lap)]
    for post in results:
        table = post.summary(var_names=["vp"])
        assert table.shape[0] == 36 and np.all(np.isfinite(table["mean"].to_numpy()))
        path = tmp_path / f"{post.method}.nc"
        post.to_netcdf(path)
        back = Posterior.from_netcdf(path)
        assert all(torch.equal(back.samples[k], v) for k, v in post.samples.items())
    assert lap.to_arviz(posterior_predictive=True).posterior_predictive["obs"].shape == (1, 50, 4, 3)


def test_errors():
    post = _posterior()
    with pytest.raises(KeyError, match=re.escape("no samples named 'vs'")):
        post.mean("vs")
    with pytest.raises(ValueError, match=re.escape("q must lie in [0, 1], got 1.5")):
        post.quantile("vp", 1.5)
    with pytest.raises(ValueError, match="prob must lie in"):
        post.ci_width("vp", 1.0)
    with pytest.raises(ValueError, match="field_names \\['vs'\\] have no samples"):
        Posterior({"vp": torch.zeros(1, 1, 2, 2)}, field_names=["vs"], method="map")
    with pytest.raises(ValueError, match="must be shaped \\[chain, draw, ...\\]"):
        Posterior({"vp": torch.zeros(2)}, field_names=[], method="map")
    bare = Posterior({"vp": torch.zeros(1, 1, 2, 2)}, field_names=["vp"], method="map")
    with pytest.raises(ValueError, match="no posterior predictive draws"):
        bare.to_arviz(posterior_predictive=True)
