"""``probinv demo`` end to end in its reduced mode: every promised file, readable NetCDF with units, a sane result, and
a ``config.toml`` that repeats it through ``probinv invert``."""
import csv

import torch
import xarray as xr

from probinv.cli import main
from probinv.inference import Posterior


def test_demo_reduced_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROBINV_DEMO_SMALL", "1")
    out = tmp_path / "probinv-demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"results in {out.resolve()}/" in printed
    for f in ("posterior.nc", "map.nc", "observed.nc", "true_model.nc", "initial_model.nc", "config.toml",
              "models.png", "uncertainty.png", "gathers.png", "misfit.png", "summary.txt", "summary.csv"):
        assert (out / f).stat().st_size > 0, f
    post = Posterior.from_netcdf(out / "posterior.nc")
    assert post.method == "laplace" and post.num_draws == 100
    with xr.open_dataset(out / "true_model.nc") as ds:
        true = torch.as_tensor(ds["vp"].values)
        assert ds["vp"].attrs["units"] == "m/s" and ds["z"].attrs["units"] == "m"
    with xr.open_dataset(out / "posterior.nc", group="posterior") as ds:
        assert ds["vp"].dims == ("chain", "draw", "z", "x")
    init = torch.as_tensor(xr.open_dataset(out / "initial_model.nc")["vp"].values)
    mean, std = post.mean("vp").to(true), post.std("vp").to(true)

    def rel(a):
        return float((a - true).norm() / true.norm())

    # the inversion must explain the data better than the start: measured 0.054 -> 0.0117 (reduced mode; 0.0117 to
    # 0.0156 over noise seeds 0-5); require half
    assert rel(mean) < 0.5 * rel(init)
    # uncertainty is positive and physically sized (m/s): measured 1.1 ... 38 m/s against a 200 m/s prior std
    assert 0 < float(std.min()) and float(std.max()) < 200
    # calibration, loosely: the Laplace posterior of 40 prior modes under-covers the truth (which is not in the
    # prior's span). Measured 78 % of the pixels within 2 posterior std (noise seed 0; 69.5-78 % over noise seeds
    # 0-5; 75 % before simulation and inversion shared one operator, 74.7 % with another torch build, issue 15): it
    # moves by several points with any perturbation of the MAP path, so require 60 %, below the worst seed
    assert float(((mean - true).abs() <= 2 * std).double().mean()) > 0.6
    summary = (out / "summary.txt").read_text()
    assert "mean" in summary and "true" in summary
    with open(out / "summary.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["", "mean", "sd"] and rows[0][-1] == "true" and len(rows) == 5  # header + 4 pixels

    # the written configuration repeats the demo: `probinv invert config.toml --method map` (into rerun/) gives the
    # same MAP (same set-up, same operator, same MAP; measured bit for bit, asserted to float32 rounding)
    capsys.readouterr()
    assert main(["invert", str(out / "config.toml"), "--method", "map", "--no-figures"]) == 0
    demo_map = Posterior.from_netcdf(out / "map.nc").mean("vp")
    rerun_map = Posterior.from_netcdf(out / "rerun" / "map.nc").mean("vp")
    assert torch.allclose(rerun_map, demo_map, rtol=1e-6, atol=0.0)
    with xr.open_dataset(out / "observed.nc") as ds:  # one operator: the data's is the posterior's
        assert ds.attrs["forward"] == post.attrs["forward"]
