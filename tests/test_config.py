"""probinv.config: TOML schema, one clear message per problem naming the key and the fix, resolution to tensors."""
import re
import textwrap

import pytest
import torch

from probinv import io
from probinv.config import ConfigError, load_config, parse_config, resolve
from probinv.fields import WhitenedField
from probinv.physics._fd import max_stable_dt_second_order
from probinv.workflow import build_prior


def _write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _problems(raw, **kw):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, **kw)
    return info.value.problems


def test_valid_config_defaults_and_resolution(tmp_path):
    p = _write(tmp_path, """
        [model]
        scenario = "anomaly"
        scenario_options = { nz = 12, nx = 16, dx = 10.0 }
        [acquisition]
        n_shots = 3
        receiver_spacing = 20.0
        [time]
        dt = 0.001
        t_max = 0.2
        [inference]
        method = "svi"
        """)
    cfg = load_config(p)
    assert cfg.time.dt == 0.001 and cfg.inference.method == "svi" and cfg.physics.accuracy == 4
    assert cfg.base_dir == tmp_path
    s = resolve(cfg, dtype=torch.float64)
    assert s.true["vp"].shape == (12, 16) and s.true["vp"].dtype == torch.float64
    assert s.acquisition.nt == 201  # ceil(0.2 / 0.001) + 1 samples: t = 0 ... 0.2 s
    assert s.acquisition.source_locations.shape == (3, 1, 2)
    assert s.acquisition.receiver_locations[0, :, 1].tolist() == list(range(0, 16, 2))  # every 20 m = 2 cells
    assert s.source_amplitudes.shape == (3, 1, 201)
    assert '"method": "svi"' in cfg.to_json()


def test_unknown_keys_and_sections_name_the_fix():
    probs = _problems({"model": {"scenario": "anomaly", "scenaro_options": {}}, "inferense": {}})
    assert "[inferense] is not a known section: did you mean [inference]?" in probs
    assert "[model].scenaro_options is not a known key: did you mean 'scenario_options'?" in probs


@pytest.mark.parametrize("raw, expected", [
    ({"model": {"scenario": "anomaly"}, "time": {"dt": 2}},
     "[time].dt = 2 is 2 s, far too large for a wave simulation: give it in seconds"),
    ({"model": {"scenario": "anomaly"}, "prior": {"bounds": [1.5, 4.5]}},
     "[prior].bounds = [1.5, 4.5] looks like km/s ([1.5, 4.5]); probinv uses m/s (e.g. [1500, 4500])"),
    ({"model": {"scenario": "anomaly"}, "prior": {"bounds": [3000.0, 2000.0]}}, "must satisfy lo < hi"),
    ({"model": {"scenario": "anomaly"}, "inference": {"method": "mcmc"}},
     "[inference].method = 'mcmc' must be one of ['map', 'laplace', 'svi', 'svgd', 'nuts']"),
    ({"model": {"scenario": "anomaly"}, "physics": {"accuracy": 6}}, "[physics].accuracy = 6 must be one of [2, 4, 8]"),
    ({"model": {"scenario": "anomaly"}, "time": {"nt": 1.5}}, "[time].nt = 1.5 must be an integer"),
    ({"model": {"scenario": "anomaly"}, "physics": {"free_surface": 1}},
     "[physics].free_surface = 1 must be true or false"),
    ({"model": {"scenario": "anomoly"}},
     "[model].scenario = 'anomoly' is not a known scenario: did you mean 'anomaly'?"),
    ({"model": {}}, "[model] needs either scenario"),
    ({"model": {"scenario": "anomaly"}, "time": {"nt": 10, "t_max": 0.1}}, "[time].nt and [time].t_max are both set"),
    ({"model": {"scenario": "anomaly"}, "wavelet": {"freq": 15000.0}}, "beyond seismic frequencies"),
    ({"model": {"scenario": "anomaly"}, "prior": {"n_modes": 10, "retained_variance": 0.9}},
     "[prior].n_modes and [prior].retained_variance are both set"),
    ({"model": {"scenario": "anomaly"}, "prior": {"retained_variance": 1.5}},
     "[prior].retained_variance = 1.5 must be in (0, 1]"),
    ({"model": {"scenario": "anomaly"}, "prior": {"retained_variance": 0}},
     "[prior].retained_variance = 0 must be in (0, 1]"),
    ({"model": {"scenario": "anomaly"}, "inference": {"backend": "tf"}},
     "[inference].backend = 'tf' must be one of ['torch', 'jax']"),
    ({"model": {"scenario": "anomaly"}, "inference": {"backend": "jax", "method": "svgd"}},
     "[inference].backend = 'jax' runs NUTS only, got method = 'svgd'"),
])
def test_bad_values(raw, expected):
    probs = _problems(raw)
    assert any(expected in p for p in probs), probs


def test_missing_file_resolved_against_config_folder(tmp_path):
    p = _write(tmp_path, """
        [model]
        file = "nowhere.nc"
        [data]
        observed = "obs.nc"
        """)
    with pytest.raises(ConfigError, match=re.escape("[model].file = 'nowhere.nc': no such file")) as info:
        load_config(p)
    assert len(info.value.problems) == 2 and "[data].observed = 'obs.nc': no such file" in info.value.problems[1]


def test_unstable_dt_reports_limit():
    raw = {"model": {"scenario": "anomaly", "scenario_options": {"nz": 10, "nx": 10, "dx": 10.0}},
           "time": {"dt": 0.004}}
    sc_vmax = float(resolve(parse_config({"model": raw["model"]}, check_stability=False)).true["vp"].max())
    limit = max_stable_dt_second_order(sc_vmax, 10.0, 4)
    with pytest.raises(ConfigError, match=re.escape("[time].dt = 0.004 s is unstable")) as info:
        parse_config(raw)
    assert f"{limit:.6g} s" in str(info.value)
    # the prior's upper bound counts too: the inversion may visit it
    raw_ok = {"model": raw["model"], "time": {"dt": 0.9 * limit}}
    parse_config(raw_ok)
    with pytest.raises(ConfigError, match="unstable"):
        parse_config({**raw_ok, "prior": {"bounds": [1000.0, 2 * sc_vmax]}})


def test_model_file_and_bad_toml(tmp_path):
    vp = torch.full((10, 12), 2000.0, dtype=torch.float64)
    io.write_model(tmp_path / "vp.nc", {"vp": vp}, dx=10.0)
    p = _write(tmp_path, """
        [model]
        file = "vp.nc"
        initial_smoothing = 2.0
        [wavelet]
        freq = 12.0
        [time]
        dt = 0.001
        nt = 100
        """)
    s = resolve(load_config(p), dtype=torch.float64)
    assert torch.equal(s.true["vp"], vp) and torch.allclose(s.initial["vp"], vp) and s.dx == 10.0
    assert s.acquisition.freq == 12.0 and s.acquisition.nt == 100
    bad = _write(tmp_path, "[model\nscenario = 1", "bad.toml")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


@pytest.mark.parametrize("prior, expected", [({}, 0.99), ({"retained_variance": 0.9}, 0.9), ({"n_modes": 7}, None)])
def test_prior_modes_from_retained_variance_or_n_modes(prior, expected):
    cfg = parse_config({"model": {"scenario": "anomaly", "scenario_options": {"nz": 12, "nx": 16, "dx": 10.0}},
                        "time": {"dt": 0.001, "nt": 50}, "prior": prior})
    s = resolve(cfg, dtype=torch.float64)
    w = build_prior(cfg.prior, s.initial["vp"], s.dx, dt=s.acquisition.dt, bounds=s.bounds)
    if expected is None:
        assert w.latent_dim == 7
        return
    # independent count: the smallest K whose leading eigenvalues hold the fraction of the full prior's variance
    length = 16 * 10.0 / 6  # build_prior's defaults: a sixth of the model's width, Matern nu 0.5
    full = WhitenedField((12, 16), s.dx, covariance="matern", nu=0.5, a_z=length, a_x=length, retained_variance=1.0,
                         dtype=torch.float64)
    lam = torch.sort(full.scales ** 2, descending=True).values
    cum = torch.cumsum(lam, 0) / lam.sum()
    k = int((cum < expected - 1e-12).sum()) + 1
    assert w.latent_dim == k < 12 * 16
    assert w.retained_fraction >= expected
