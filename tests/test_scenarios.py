"""probinv.scenarios: every named set-up is consistent, stable and inside its grid."""
import math
import os
import re

import pytest
import torch

from probinv import scenarios
from probinv.physics._fd import max_stable_dt_second_order

DATA = "/work/shared/data"
# the Marmousi2 set-ups read ../shared/data (not shipped with the package): tested below with and without the file
NAMES = [n for n in scenarios.SCENARIOS if n not in ("marmousi2", "paper2_marmousi")]


@pytest.mark.parametrize("name", NAMES)
def test_scenario_is_consistent(name):
    sc = scenarios.get_scenario(name)
    nz, nx = sc.shape
    acq = sc.acquisition
    assert set(sc.true) == set(sc.initial) and sc.initial["vp"].shape == (nz, nx)
    for loc in (acq.source_locations, acq.receiver_locations):
        assert loc.dtype == torch.int64 and loc.ndim == 3 and loc.shape[-1] == 2
        assert int(loc[..., 0].min()) >= 0 and int(loc[..., 0].max()) < nz
        assert int(loc[..., 1].min()) >= 0 and int(loc[..., 1].max()) < nx
    assert acq.receiver_locations.shape[0] == acq.n_shots
    # time step stable for the true model's maximum velocity with the default 4th-order stencil
    vmax = float(sc.true["vp"].max())
    assert acq.dt <= max_stable_dt_second_order(vmax, sc.dx, 4)
    src = acq.source_amplitudes(dtype=torch.float64)
    assert src.shape == (acq.n_shots, 1, acq.nt) and src.dtype == torch.float64
    assert 1000 <= float(sc.true["vp"].min()) and vmax <= 6000  # m/s, not km/s
    assert name in scenarios.list_scenarios()


def test_anomaly_values():
    sc = scenarios.anomaly(nz=20, nx=20, dx=5.0, v_top=2000.0, gradient=0.0, contrast=0.1, dtype=torch.float64)
    # homogeneous 2000 m/s background; the anomaly centre is 10 % faster (tanh edge: 0.5 (1 - tanh(-r/dx)) -> 1)
    assert torch.allclose(sc.initial["vp"], torch.full((20, 20), 2000.0, dtype=torch.float64))
    assert float(sc.true["vp"].max()) == pytest.approx(2200.0, rel=1e-3)
    assert float(sc.true["vp"][0, 0]) == pytest.approx(2000.0, rel=1e-6)


def test_layered_and_smoothing():
    sc = scenarios.layered(nz=20, nx=10, velocities=(1500.0, 2500.0), interfaces=[100.0], dtype=torch.float64)
    vp = sc.true["vp"]
    assert torch.all(vp[:10] == 1500.0) and torch.all(vp[10:] == 2500.0)
    # a normalised Gaussian blur preserves constants and stays within the range of its input
    sm = sc.initial["vp"]
    assert float(sm.min()) >= 1500.0 - 1e-9 and float(sm.max()) <= 2500.0 + 1e-9
    assert torch.allclose(scenarios.smooth(torch.full((7, 9), 3.0, dtype=torch.float64), 2.0),
                          torch.full((7, 9), 3.0, dtype=torch.float64))


def test_openfwi_style_families_are_seeded():
    a, b = scenarios.flat_layers(3), scenarios.flat_layers(3)
    assert torch.equal(a.true["vp"], b.true["vp"])
    assert not torch.equal(a.true["vp"], scenarios.flat_layers(4).true["vp"])
    vp = a.true["vp"]
    assert torch.all(vp == vp[:, :1])  # flat: every column equal
    c = scenarios.curved_layers(1).true["vp"]
    assert not torch.all(c == c[:, :1])  # curved interfaces
    assert a.acquisition.nt == 1000 and a.acquisition.dt == 1e-3 and a.acquisition.freq == 15.0


def test_demo_sizes_and_errors():
    full, small = scenarios.demo(), scenarios.demo(size="small")
    assert small.shape[0] * small.shape[1] < full.shape[0] * full.shape[1]
    with pytest.raises(ValueError, match=re.escape("size must be 'full' or 'small', got 'tiny'")):
        scenarios.demo(size="tiny")
    with pytest.raises(ValueError, match=re.escape("unknown scenario 'anomally' (did you mean 'anomaly'?)")):
        scenarios.get_scenario("anomally")
    with pytest.raises(ValueError, match=re.escape("nz must be an int >= 4, got 2")):
        scenarios.anomaly(nz=2)


def test_dtype_and_paper1():
    sc = scenarios.paper1_anomaly(dtype=torch.float64, receiver_step=8)
    assert sc.true["vp"].dtype == torch.float64 and sc.shape == (64, 64) and sc.dx == 160.0
    assert sc.acquisition.n_shots == 20 and sc.acquisition.n_receivers == 64
    assert float(sc.true["vp"].max()) == pytest.approx(3150.0)


def test_paper2_marmousi_needs_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs marmousi2.npz"):
        scenarios.paper2_marmousi(data_dir=tmp_path)


def test_marmousi2_needs_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs marmousi2.npz"):
        scenarios.marmousi2(data_dir=tmp_path)
    if os.path.isfile(os.path.join(DATA, "marmousi2.npz")):  # benchmark data present on the developers' machines
        sc = scenarios.marmousi2(data_dir=DATA)
        assert sc.shape == (43, 100) and sc.free_surface
        assert sc.acquisition.dt == 0.006 and sc.acquisition.nt == 1500
        assert math.isclose(float(sc.true["vp"].min()), 1500.0, rel_tol=1e-3)
