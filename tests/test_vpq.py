"""Smoke test of the joint vp-Q posterior benchmark (quick mode; the full run is in benchmarks/vpq_posterior.py)."""
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


@pytest.mark.filterwarnings("ignore:only .* grid points per minimum wavelength")
def test_vpq_posterior_quick(tmp_path):
    res = _load("vpq_posterior").main(["--quick", "--truths", "1", "--nuts-truths", "0", "--out", str(tmp_path)])
    s = res["single"]
    # 2 shots x 3 receivers x 2 frequencies at 2 % noise inform both fields: the Laplace std (2000 draws of the
    # exact Gaussian, std SE 1.6 %) is below the prior's; NUTS's 20 draws resolve it only for the better known vp
    assert 0.0 < s["laplace_median_std_over_prior_vp"] < 0.9
    assert 0.0 < s["laplace_median_std_over_prior_q"] < 0.9
    assert 0.0 < s["nuts_median_std_over_prior_vp"] < 0.9
    for meth in ("laplace", "nuts"):
        for name in ("vp", "q"):
            cov = s[f"{meth}_coverage"][name]
            assert 0.0 <= cov[0.5] <= cov[0.9] <= 1.0
    # Laplace and NUTS agree on this nearly linear problem within a factor 2 even with 10 draws per chain
    assert 0.5 < s["laplace_over_nuts_std_median_vp"] < 2.0
    assert 0.5 < s["laplace_over_nuts_std_median_q"] < 2.0
    saved = json.loads((tmp_path / "vpq_posterior.json").read_text())
    assert saved["calibration"]["laplace_vp_50"]["n_truths"] == 1
    assert "Calibration" in (tmp_path / "vpq_posterior.md").read_text()
    assert (tmp_path / "vpq_posterior.png").stat().st_size > 0
