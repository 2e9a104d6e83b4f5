"""Every bad input a new user meets gives exit status 2 and one message naming the file or key, the value and the fix,
without a traceback and without leaving anything behind (issue 15).

The configurations are tiny (10 x 12 cells, 2 shots) and every case fails before any wave is simulated, so the whole
file runs in seconds.
"""
import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from probinv import io
from probinv.cli import main
from probinv.config import check_geometry, load_config, resolve
from probinv.inference import Posterior

NZ, NX, DX = 10, 12, 10.0

SCENARIO = f"""
[model]
scenario = "anomaly"
scenario_options = {{ nz = {NZ}, nx = {NX}, dx = {DX}, n_shots = 2 }}
"""

MODEL_FILE = """
[model]
file = "{file}"
[acquisition]
n_shots = 2
"""

COMMON = """
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
steps = 2
[output]
directory = "out"
"""


def _write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _run(argv, capsys):
    """Exit status and standard error of ``probinv argv`` (standard output must hold no traceback either)."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, err


def _listing(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _observed(tmp_path, name="obs.nc", edit=None):
    """A gather file shaped as the SCENARIO configuration expects (random data: nothing is simulated)."""
    setup = resolve(load_config(_write(tmp_path, SCENARIO + COMMON, "gather.toml")))
    acq = setup.acquisition
    data = torch.randn(acq.n_shots, acq.n_receivers, acq.nt, generator=torch.Generator().manual_seed(0))
    rec = acq.receiver_locations.clone()
    if edit is not None:
        edit(data, rec)
    io.write_gather(tmp_path / name, data=data, dt=acq.dt, source_locations=acq.source_locations,
                    receiver_locations=rec, dx=setup.dx)
    return acq


# ----------------------------------------------------------------------------------------------------------------------
# model files
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, kind", [(-1900.0, "1 negative"), (0.0, "1 zero"), (math.nan, "1 NaN"),
                                         (math.inf, "1 infinite")])
def test_bad_velocity_in_a_model_file(tmp_path, capsys, value, kind):
    vp = torch.full((NZ, NX), 2000.0)
    vp[3, 4] = value
    io.write_model(tmp_path / "bad.nc", {"vp": vp}, DX)
    cfg = _write(tmp_path, MODEL_FILE.format(file="bad.nc") + COMMON)
    before = _listing(tmp_path)
    status, err = _run(["simulate", cfg, "--out", tmp_path / "sim"], capsys)
    assert status == 2
    # the key, the file, how many values, which kind, the first grid index and its position in metres, the value
    assert re.search(re.escape(f"[model].file = 'bad.nc': field 'vp': 1 of {NZ * NX} values are not finite and > 0 "
                               f"({kind}); the first at (z, x) index (3, 4) (z = 30 m, x = 40 m) is {value:g} m/s; "
                               "velocities must be finite and > 0 m/s: correct the file"), err)
    assert "cells per minimum wavelength" not in err  # not the misleading message of issue 15
    assert _listing(tmp_path) == before


# ----------------------------------------------------------------------------------------------------------------------
# observed data
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, kind", [(math.nan, "NaN"), (-math.inf, "infinite")])
def test_bad_samples_in_the_observed_data(tmp_path, capsys, value, kind):
    def spoil(data, rec):
        data[1, 3, 20] = value
        data[1, 5, 7] = value

    acq = _observed(tmp_path, "bad_obs.nc", spoil)
    cfg = _write(tmp_path, SCENARIO + COMMON + '[data]\nobserved = "bad_obs.nc"\n')
    before = _listing(tmp_path)
    status, err = _run(["invert", cfg, "--out", tmp_path / "inv"], capsys)
    assert status == 2
    n = acq.n_shots * acq.n_receivers * acq.nt
    # shot 1, receiver 3, time index 20 comes before receiver 5 in C order: the first bad sample
    assert re.search(re.escape(f"[data].observed = 'bad_obs.nc': data 2 of {n} values are not finite (2 {kind}); the "
                               f"first at (shot, receiver, time) index (1, 3, 20) (time = {20 * acq.dt:g} s) is "
                               f"{value:g}; replace the bad samples"), err)
    assert _listing(tmp_path) == before


def test_receivers_outside_the_grid_sideways(tmp_path, capsys):
    def widen(data, rec):
        rec[0, -1, 1] = NX + 3  # the last receiver of shot 0, 3 cells past the right edge

    _observed(tmp_path, "wide.nc", widen)
    cfg = _write(tmp_path, SCENARIO + COMMON + '[data]\nobserved = "wide.nc"\n')
    before = _listing(tmp_path)
    status, err = _run(["invert", cfg, "--out", tmp_path / "inv"], capsys)
    assert status == 2
    assert re.search(re.escape(f"[data].observed = 'wide.nc': 1 receiver location(s) lie outside the grid: the first, "
                               f"receiver {NX - 1} of shot 0, has lateral index ix = {NX + 3} ({(NX + 3) * DX:g} m) "
                               f"but the grid has {NX} cells (ix 0 to {NX - 1}, 0 to {(NX - 1) * DX:g} m)"), err)
    assert _listing(tmp_path) == before


# ----------------------------------------------------------------------------------------------------------------------
# empty and truncated NetCDF files, a file that is not a posterior
# ----------------------------------------------------------------------------------------------------------------------
def _spoil_netcdf(path: Path, how: str) -> None:
    if how == "empty":
        path.write_bytes(b"")
    else:  # truncated: the first half of a valid file, as a copy interrupted half-way leaves it
        b = path.read_bytes()
        path.write_bytes(b[: len(b) // 2])


@pytest.mark.parametrize("how, state", [("empty", "is empty (0 bytes)"),
                                        ("truncated", "is not a readable NetCDF file (")])
@pytest.mark.parametrize("role", ["model", "observed", "report"])
def test_empty_or_truncated_netcdf(tmp_path, capsys, how, state, role):
    if role == "model":
        io.write_model(tmp_path / "m.nc", {"vp": torch.full((NZ, NX), 2000.0)}, DX)
        _spoil_netcdf(tmp_path / "m.nc", how)
        argv = ["simulate", _write(tmp_path, MODEL_FILE.format(file="m.nc") + COMMON), "--out", tmp_path / "o"]
        key = "[model].file = 'm.nc': "
    elif role == "observed":
        _observed(tmp_path, "m.nc")
        _spoil_netcdf(tmp_path / "m.nc", how)
        argv = ["invert", _write(tmp_path, SCENARIO + COMMON + '[data]\nobserved = "m.nc"\n'), "--out", tmp_path / "o"]
        key = "[data].observed = 'm.nc': "
    else:
        io.write_model(tmp_path / "m.nc", {"vp": torch.full((NZ, NX), 2000.0)}, DX)
        _spoil_netcdf(tmp_path / "m.nc", how)
        argv = ["report", tmp_path / "m.nc"]
        key = "result "
    before = _listing(tmp_path)
    status, err = _run(argv, capsys)
    assert status == 2
    assert re.search(re.escape(f"{key}'{tmp_path / 'm.nc'}' {state}"), err), err
    assert ("write it again" in err) if role != "report" else ("give a posterior written by `probinv invert`" in err)
    assert len(err.strip().splitlines()) <= 3  # one message (a configuration error is a header + its problem line)
    assert _listing(tmp_path) == before


def test_report_on_a_file_that_is_not_a_posterior(tmp_path, capsys):
    io.write_model(tmp_path / "true_model.nc", {"vp": torch.full((NZ, NX), 2000.0)}, DX)
    before = _listing(tmp_path)
    status, err = _run(["report", tmp_path / "true_model.nc"], capsys)
    assert status == 2
    assert re.search(re.escape(f"result '{tmp_path / 'true_model.nc'}' is a model file (probinv.io.write_model): it "
                               "lacks the group 'posterior' and the attribute(s) ['method', 'field_names', "
                               "'attrs_json'] of a posterior file"), err)
    assert "posterior written by `probinv invert` or `probinv demo`, e.g. probinv-demo/posterior.nc" in err
    assert "KeyError" not in err
    assert _listing(tmp_path) == before


# ----------------------------------------------------------------------------------------------------------------------
# output folders and paths of the wrong kind
# ----------------------------------------------------------------------------------------------------------------------
def _read_only_target(tmp_path) -> Path:
    """An output folder that cannot be created: inside a read-only folder, or, for root (whom permissions do not
    stop), inside /sys (a read-only file system for everyone on Linux)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        (ro / ".probe").touch()
    except PermissionError:
        return ro / "out"
    (ro / ".probe").unlink()
    assert Path("/sys").is_dir(), "running as root without /sys: no folder is read-only for this test"
    return Path("/sys/probinv-test-out")


def test_read_only_output_folder(tmp_path, capsys):
    cfg = _write(tmp_path, SCENARIO + COMMON)
    target = _read_only_target(tmp_path)
    try:
        status, err = _run(["simulate", cfg, "--out", target], capsys)
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert status == 2
    assert re.search(re.escape(f"output folder '{target}' is not writable"), err)
    assert "pass a writable --out, or change the folder's permissions" in err
    assert not target.exists() and not any(p.name.startswith(".probinv") for p in target.parent.iterdir())


@pytest.mark.parametrize("command", ["simulate", "invert", "demo", "report"])
def test_out_is_an_existing_file(tmp_path, capsys, command):
    cfg = _write(tmp_path, SCENARIO + COMMON)
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    if command == "report":  # a small but genuine posterior file
        post = Posterior({"vp": 2000.0 + torch.randn(1, 5, NZ, NX)}, field_names=["vp"], method="laplace", dx=DX)
        post.to_netcdf(tmp_path / "posterior.nc")
        argv = ["report", tmp_path / "posterior.nc", "--out", target]
        expected = f"report folder '{target}' is an existing file, not a folder: pass another --out, or move the file"
    else:
        argv = [command] + ([] if command == "demo" else [cfg]) + ["--out", target]
        expected = f"output folder '{target}' is an existing file, not a folder: pass another --out, or move the file"
    before = _listing(tmp_path)
    status, err = _run(argv, capsys)
    assert status == 2
    assert re.search(re.escape(expected), err), err
    assert _listing(tmp_path) == before and target.read_text() == "keep me\n"


def test_report_out_inside_a_file(tmp_path, capsys):
    """``--out`` below an existing file (``results.txt/report``): the folder cannot be created."""
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    assert io.check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"  # creates nothing
    assert not (tmp_path / "new").exists()
    with pytest.raises(io.InputError, match=re.escape(f"output folder '{target / 'report'}' cannot be created: "
                                                      f"'{target}' is a file, not a folder")):
        io.check_output_dir(target / "report")


@pytest.mark.parametrize("role", ["config", "model", "observed", "report"])
def test_a_folder_where_a_file_is_expected(tmp_path, capsys, role):
    (tmp_path / "models").mkdir()
    if role == "config":
        argv, expected = ["simulate", tmp_path / "models"], (f"configuration file '{tmp_path / 'models'}' is a folder, "
                                                             "not a file: give the TOML file inside it")
    elif role == "model":
        argv = ["simulate", _write(tmp_path, MODEL_FILE.format(file="models") + COMMON)]
        expected = f"[model].file = 'models' is a folder ('{tmp_path / 'models'}'), not a file"
    elif role == "observed":
        argv = ["invert", _write(tmp_path, SCENARIO + COMMON + '[data]\nobserved = "models"\n')]
        expected = f"[data].observed = 'models' is a folder ('{tmp_path / 'models'}'), not a file"
    else:
        argv, expected = ["report", tmp_path / "models"], f"result '{tmp_path / 'models'}' is a folder, not a file"
    before = _listing(tmp_path)
    status, err = _run(argv, capsys)
    assert status == 2
    assert re.search(re.escape(expected), err), err
    assert "no such file" not in err
    assert _listing(tmp_path) == before


def test_sources_outside_the_grid_are_listed_per_axis():
    """:func:`probinv.config.check_geometry` checks both axes and both ends (the configuration can only move sources
    down; a data file can put them anywhere)."""
    src = torch.tensor([[[0, 5]], [[0, -1]]])
    rec = torch.tensor([[[NZ, 2], [0, 3]], [[1, 2], [0, 3]]])
    problems = check_geometry(src, rec, NZ, NX, DX, "test.nc")
    assert problems == [
        f"test.nc: 1 source location(s) lie outside the grid: the first, source 0 of shot 1, has lateral index ix = -1 "
        f"(-10 m) but the grid has {NX} cells (ix 0 to {NX - 1}, 0 to {(NX - 1) * DX:g} m); move the sources onto the "
        f"model or use a wider model",
        f"test.nc: 1 receiver location(s) lie outside the grid: the first, receiver 0 of shot 0, has depth index iz = "
        f"{NZ} ({NZ * DX:g} m) but the grid has {NZ} cells (iz 0 to {NZ - 1}, 0 to {(NZ - 1) * DX:g} m); move the "
        f"receivers onto the model or use a wider model"]
    assert check_geometry(src[:1], rec[:, 1:], NZ, NX, DX, "x") == []


def test_describe_bad_values_counts_each_kind():
    a = np.array([[1.0, -2.0, 0.0], [np.nan, np.inf, 3.0]])
    # 4 bad values: -2, 0, nan, inf; the first in C order is (0, 1)
    assert io.describe_bad_values(a, dims=("z", "x"), positive=True, spacing={"z": (5.0, "m"), "x": (5.0, "m")},
                                  units="m/s") == ("4 of 6 values are not finite and > 0 (1 negative, 1 zero, 1 NaN, "
                                                   "1 infinite); the first at (z, x) index (0, 1) (z = 0 m, x = 5 m) "
                                                   "is -2 m/s")
    assert io.describe_bad_values(a, dims=("z", "x")) == ("2 of 6 values are not finite (1 NaN, 1 infinite); the "
                                                          "first at (z, x) index (1, 0) is nan")
    assert io.describe_bad_values(np.ones((2, 2)), dims=("z", "x"), positive=True) is None
