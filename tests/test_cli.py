"""The ``probinv`` command on tiny configurations: every command runs, bad configurations exit non-zero with their
message before anything runs, and a resumed inversion equals an uninterrupted one."""
import os
import subprocess
import sys
import textwrap

import netCDF4
import numpy as np
import pytest
import torch
import xarray as xr

from probinv.cli import main
from probinv.inference import Posterior

# 10 x 12 cells, 2 shots, 0.45 s of record (the 6 Hz Ricker peaks at 0.25 s): a few ms per solver call, so each
# inversion takes seconds
TINY = """
[model]
scenario = "anomaly"
scenario_options = {{ nz = 10, nx = 12, dx = 10.0, n_shots = 2 }}
[wavelet]
freq = 6.0
[physics]
pml_width = 6
[time]
t_max = 0.45
[noise]
relative = 0.02
[prior]
correlation_length = 40.0
std = 100.0
n_modes = 8
[inference]
method = "map"
steps = {steps}
lr = 0.05
num_samples = 20
warmup = 10
num_chains = 2
max_tree_depth = 4
[output]
directory = "out"
checkpoint_every = 2
"""


def _config(tmp_path, steps=6, extra="", name="c.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(TINY.format(steps=steps)) + textwrap.dedent(extra))
    return p


def test_scenarios_lists_names(capsys):
    assert main(["scenarios", "--verbose"]) == 0
    out = capsys.readouterr().out
    for name in ("anomaly", "layered", "checkerboard", "flat_layers", "curved_layers", "demo", "marmousi2"):
        assert name in out
    assert "options: nz=30" in out


def test_simulate_writes_netcdf_with_units(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert main(["simulate", str(cfg)]) == 0
    out = tmp_path / "out"
    with xr.open_dataset(out / "observed.nc") as ds:
        dt = float(ds["time"][1] - ds["time"][0])
        # 2 shots, a receiver at every column, ceil(t_max / dt) + 1 samples
        assert ds["data"].shape == (2, 12, int(np.ceil(0.45 / dt - 1e-9)) + 1)
        assert ds["time"].attrs["units"] == "s" and ds.attrs["noise_sigma"] > 0
        assert '"scenario": "anomaly"' in ds.attrs["probinv_config"]
    with xr.open_dataset(out / "true_model.nc") as ds:
        assert ds["vp"].attrs["units"] == "m/s" and ds["x"].attrs["units"] == "m"
    assert (out / "gather.png").stat().st_size > 1000
    assert "results in" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    ("[prior]\nstdev = 3.0\n", "[prior].stdev is not a known key: did you mean 'std'?"),
    ("[time]\ndt = 0.01\n", "[time].dt = 0.01 s is unstable"),
    ("[data]\nobserved = \"missing.nc\"\n", "[data].observed = 'missing.nc': no such file"),
])
def test_bad_config_exits_2_before_running(tmp_path, capsys, extra, message):
    text = _config(tmp_path).read_text()
    # merge the extra keys into the existing section or add the section
    section, rest = extra.split("\n", 1)
    text = text.replace(section + "\n", extra, 1) if section in text else text + extra
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["invert", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_resumed_inversion_equals_uninterrupted(tmp_path, capsys):
    cfg = _config(tmp_path, steps=6)
    # uninterrupted: 6 Adam steps, a full-state checkpoint every 2
    assert main(["invert", str(cfg), "--out", str(tmp_path / "full"), "--no-figures"]) == 0
    # interrupted after the first block (as if killed), then resumed
    assert main(["invert", str(cfg), "--out", str(tmp_path / "part"), "--stop-after", "1", "--no-figures"]) == 130
    assert "rerun with --resume" in capsys.readouterr().err
    assert not (tmp_path / "part" / "posterior.nc").exists()
    assert (tmp_path / "part" / "checkpoints" / "checkpoint_map.pt").exists()
    assert main(["invert", str(cfg), "--out", str(tmp_path / "part"), "--resume", "--no-figures"]) == 0
    a = Posterior.from_netcdf(tmp_path / "full" / "posterior.nc")
    b = Posterior.from_netcdf(tmp_path / "part" / "posterior.nc")
    # the checkpoint holds the whole optimiser state: bit-identical results on the same machine
    assert torch.equal(a.samples["vp"], b.samples["vp"])
    assert a.attrs["loss_history"] == b.attrs["loss_history"] and len(a.attrs["loss_history"]) == 6
    assert a.attrs["loss_history"][-1] < a.attrs["loss_history"][0]


def test_invert_laplace_then_report(tmp_path, capsys):
    cfg = _config(tmp_path, steps=4)
    assert main(["invert", str(cfg), "--method", "laplace", "--out", str(tmp_path / "lap")]) == 0
    post_file = tmp_path / "lap" / "posterior.nc"
    post = Posterior.from_netcdf(post_file)
    assert post.method == "laplace" and post.samples["vp"].shape == (1, 20, 10, 12)
    assert float(post.std("vp").max()) > 0
    for f in ("models.png", "uncertainty.png", "gathers.png", "misfit.png", "summary.txt", "draws.png"):
        assert (tmp_path / "lap" / f).stat().st_size > 0
    assert not (tmp_path / "lap" / "trace.png").exists()  # independent draws: no chains to trace
    # the verdict is printed after the run and appended to summary.txt, with the truth's coverage (simulated data)
    printed = capsys.readouterr().out
    summary = (tmp_path / "lap" / "summary.txt").read_text()
    block = summary[summary.index("verdict: "):].strip()
    assert block in printed and "map_convergence" in block and "coverage" in block
    with xr.open_dataset(post_file, group="posterior") as ds:  # plain xarray reads the posterior group
        assert ds["vp"].dims == ("chain", "draw", "z", "x") and ds["x"].attrs["units"] == "m"
        assert ds["vp"].attrs["units"] == "m/s" and ds["vp"].attrs["long_name"] == "P-wave velocity"
        assert ds["vp_z"].attrs["units"] == "1"  # whitened latent coordinates
    with xr.open_dataset(post_file, group="observed_data") as ds:
        assert ds["obs"].attrs["units"] == "Pa" and ds["time"].attrs["units"] == "s"
    for name in ("posterior.nc", "map.nc"):  # every variable of every group carries units (CF)
        with netCDF4.Dataset(tmp_path / "lap" / name) as nc:
            groups = [nc, *nc.groups.values()]
            no_units = [f"{g.path}/{v}" for g in groups for v, var in g.variables.items()
                        if "units" not in var.ncattrs()]
            assert no_units == [] and len(nc.groups) >= 2
    capsys.readouterr()
    assert main(["report", str(post_file), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "method laplace, 1 chain(s) x 20 draw(s)" in out and "vp[5,6]" in out
    assert (tmp_path / "rep" / "uncertainty.png").exists()
    assert main(["report", str(tmp_path / "nothing.nc")]) == 2  # bad input (issue 15)
    assert "no such result file" in capsys.readouterr().err


@pytest.mark.slow  # ~20 s on an idle 2-core machine, minutes on a loaded one; the notebook test also runs NUTS
def test_invert_nuts_tiny(tmp_path):
    cfg = _config(tmp_path, steps=4)
    assert main(["invert", str(cfg), "--method", "nuts", "--out", str(tmp_path / "nuts")]) == 0
    post = Posterior.from_netcdf(tmp_path / "nuts" / "posterior.nc")
    assert post.method == "nuts" and post.num_chains == 2 and post.num_draws == 20
    assert "diverging" in post.sample_stats
    summary = (tmp_path / "nuts" / "summary.txt").read_text()
    assert "r_hat" in summary  # two chains: ArviZ diagnostics are reported


@pytest.mark.parametrize("method", ["svi", "svgd"])
def test_invert_svi_svgd_tiny(tmp_path, method):
    cfg = _config(tmp_path, steps=4)
    assert main(["invert", str(cfg), "--method", method, "--out", str(tmp_path / method), "--no-figures"]) == 0
    post = Posterior.from_netcdf(tmp_path / method / "posterior.nc")
    assert post.method == method and float(post.std("vp").max()) > 0


def test_help_does_not_import_the_package():
    """`probinv --help` must answer at once (issue 15: 12.7 s): the parser imports neither torch nor the commands."""
    code = ("import sys; from probinv import cli; cli.build_parser().format_help(); "
            "heavy = sorted(m for m in ('torch', 'pyro', 'matplotlib', 'probinv.workflow') if m in sys.modules); "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_train_fno_options_reach_its_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train-fno", "--help"])
    assert info.value.code == 0 and "--checkpoint" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["invert", "c.toml", "--bogus"])
    assert info.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_backend_option_is_checked_before_running(tmp_path, capsys):
    cfg = _config(tmp_path, extra="")
    # --backend overrides [inference].backend; jax with SVI is a configuration problem: status 2, nothing written
    assert main(["invert", str(cfg), "--method", "svi", "--backend", "jax", "--out", str(tmp_path / "o")]) == 2
    assert "backend='jax' runs NUTS only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):  # argparse: not a valid choice
        main(["invert", str(cfg), "--backend", "tf"])
    assert "invalid choice: 'tf'" in capsys.readouterr().err


def test_invert_nuts_with_the_jax_backend(tmp_path):
    pytest.importorskip("numpyro", reason="the jax extra (jax, numpyro) is not installed")
    cfg = _config(tmp_path, steps=4, extra="")
    text = cfg.read_text().replace("num_samples = 20", "num_samples = 6").replace("warmup = 10", "warmup = 4")
    cfg.write_text(text.replace("num_chains = 2", "num_chains = 1").replace("max_tree_depth = 4", "max_tree_depth = 2"))
    assert main(["invert", str(cfg), "--method", "nuts", "--backend", "jax", "--out", str(tmp_path / "j"),
                 "--no-figures"]) == 0
    post = Posterior.from_netcdf(tmp_path / "j" / "posterior.nc")
    assert post.method == "nuts" and post.samples["vp"].shape == (1, 6, 10, 12)
    assert post.samples["vp"].dtype == torch.get_default_dtype()  # the JAX backend samples float32 models too
    lap = Posterior.from_netcdf(tmp_path / "j" / "checkpoints" / "stage_laplace.nc")
    # the JAX chain starts from a Laplace draw and moves a little in 10 transitions: its draws lie within a few
    # Laplace standard deviations of the Laplace mean (8 sigma: a loose bound that a wrong model or unit would break)
    z = (post.mean("vp") - lap.mean("vp")).abs() / lap.std("vp")
    assert float(z.max()) < 8.0 and float(post.std("vp").max()) > 0


@pytest.mark.parametrize("given, expected", [(None, "1000"), ("7", "7")])
def test_the_command_shortens_openmp_spinning_unless_the_user_chose(given, expected):
    """GOMP_SPINCOUNT must be in the environment before torch loads libgomp: importing probinv.cli (no torch) sets
    the default, and a user's own value wins."""
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if given is not None:
        env["GOMP_SPINCOUNT"] = given
    code = "import os, sys, probinv.cli; print(os.environ['GOMP_SPINCOUNT'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [expected, "False"]
