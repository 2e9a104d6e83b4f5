"""Smoke tests of the FNO benchmark scripts (tiny iteration counts; the full runs are in the README)."""
import importlib.util
import json
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "..", "benchmarks", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fno_fwi_benchmark_runs_and_writes_results(tmp_path):
    res = _load("fno").main(["--parts", "fwi", "--iterations", "3", "--fd-iterations", "2", "--threads", "2",
                             "--out", str(tmp_path)])
    f = res["fwi"]
    # Adam from the homogeneous start on noise-free data: the first steps lower the data misfit of every run
    for key in ("fno", "fno_on_fno_data", "finite_difference"):
        assert f[key]["loss_last"] < f[key]["loss_first"], key
    assert f["finite_difference"]["iterations"] == 2 and f["fno"]["iterations"] == 3
    assert f["fno_rel_l2_at_fd_iterations"] == dict(f["fno"]["history"])[2]
    assert f["fd_over_fno_time"] > 0
    with open(tmp_path / "fno.json") as fh:
        assert json.load(fh)["fwi"]["fno"]["iterations"] == 3
    assert "finite differences (2 it.)" in (tmp_path / "fno.md").read_text()


@pytest.mark.slow
def test_fno_posterior_benchmark_quick(tmp_path):
    # one thread: OpenMP threads spin-wait and crawl when another process holds a core
    res = _load("fno_posterior").main(["--quick", "--threads", "1", "--out", str(tmp_path / "fp")])
    s = res["settings"]
    # an error term that leaves the forward map's Jacobian alone widens the Laplace posterior (it only adds noise
    # variance); the conditional model also changes the Jacobian (the correction B z), so no such order holds for it
    for key in ("marginal", "independent"):
        assert res[f"fno_laplace_{key}"]["std_median"] > res["fno_laplace_ignored"]["std_median"]
    # --quick: 40 draws; the rank is cross-validated on 32 of them (1, 2, 4, 8, 16 or 31)
    for key in ("conditional", "marginal"):
        info = res["error_model"][key]
        assert info["samples"] == 40 and info["rank"] in (1, 2, 4, 8, 16, 31)
    assert 0 < res["error_model"]["conditional"]["explained_by_features"] < 1
    assert set(res["calibration"]) >= {"calibrated", "conditional", "marginal", "independent", "ignored"}
    # the calibration holds out round(0.2 * 40) = 8 draws; it only ever widens the conditional model
    cal = res["error_model"]["calibrated"]
    assert len(cal["sensitivity_chi2"]) == 8 and cal["inflation"] >= 1 and cal["rank"] == res["error_model"][
        "conditional"]["rank"]
    assert s["sigma_fno_median"] > 0 and s["n_data"] == 4 * 256 * 64
    # 20 warm-up + 20 draws are too few for r-hat (a chain may not move); only the bookkeeping is checked here
    assert res["fno_nuts"]["n_gradients"] >= 2 * 40 and len(res["maps"]["nuts_std"]) == 64
    assert (tmp_path / "fp.md").exists() and (tmp_path / "fp_nuts.pt").exists()
