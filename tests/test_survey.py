"""The typed survey and the one forward operator of a resolved configuration (issue 13)."""
import json

import pytest
import torch

from probinv import io, scenarios, survey, workflow
from probinv.config import DEFAULT_BOUND_FACTORS, default_bounds, parse_config, resolve
from probinv.models import AcousticForward

RAW = {"model": {"scenario": "anomaly", "scenario_options": {"nz": 10, "nx": 12, "dx": 10.0, "n_shots": 2}},
       "wavelet": {"freq": 6.0}, "physics": {"pml_width": 6}, "time": {"t_max": 0.45},
       "prior": {"n_modes": 8, "correlation_length": 40.0}}


def test_acquisition_lives_on_the_ground_floor():
    assert scenarios.Acquisition is survey.Acquisition  # re-exported for compatibility
    acq = scenarios.get_scenario("anomaly", nz=10, nx=12).acquisition
    assert isinstance(acq, survey.Acquisition)
    assert acq.source_amplitudes().shape == (acq.n_shots, 1, acq.nt)


def test_physics_options_are_checked_and_give_solver_kwargs():
    assert survey.PhysicsOptions().solver_kwargs() == {"accuracy": 4, "pml_width": 20, "free_surface": False}
    assert survey.PhysicsOptions(pml_vmax=3000).solver_kwargs()["pml_vmax"] == 3000.0
    with pytest.raises(ValueError, match="accuracy must be one of 2, 4, 8, got 6"):
        survey.PhysicsOptions(accuracy=6)
    with pytest.raises(ValueError, match="pml_width must be an int >= 0, got -1"):
        survey.PhysicsOptions(pml_width=-1)
    with pytest.raises(ValueError, match="pml_vmax must be a positive finite number"):
        survey.PhysicsOptions(pml_vmax=-5.0)


def test_configuration_is_resolved_once_into_a_typed_setup():
    cfg = parse_config(RAW)  # resolves to check stability; the set-up is kept
    setup = resolve(cfg)
    assert resolve(cfg) is setup
    assert resolve(cfg, dtype=torch.float64) is not setup and resolve(cfg, dtype=torch.float64).dx == setup.dx
    assert isinstance(setup.acquisition, survey.Acquisition) and isinstance(setup.physics, survey.PhysicsOptions)
    # default bounds: the documented factors of the start, the one pml_vmax of every step
    lo, hi = default_bounds(setup.initial["vp"], setup.dx, setup.acquisition.dt, setup.physics.accuracy)
    assert setup.bounds == (lo, hi)
    assert lo == float(f"{DEFAULT_BOUND_FACTORS[0] * float(setup.initial['vp'].min()):.4g}")
    assert setup.physics.pml_vmax == hi
    assert setup.forward.options == {"accuracy": 4, "pml_width": 6, "free_surface": False, "pml_vmax": hi}
    assert torch.equal(setup.forward.source_amplitudes, setup.source_amplitudes)


def test_forward_protocol_and_description():
    setup = resolve(parse_config(RAW))
    fwd = setup.forward
    assert isinstance(fwd, AcousticForward) and fwd.fields == ("vp",) and fwd.n_shots == 2
    d = json.loads(json.dumps(fwd.describe()))  # JSON-able
    acq = setup.acquisition
    expected = {"physics": "acoustic", "dx": 10.0, "dt": acq.dt, "nt": acq.nt, "accuracy": 4, "pml_width": 6,
                "pml_vmax": setup.bounds[1], "free_surface": False, "velocity": "vp", "density": None,
                "n_shots": 2, "n_receivers": acq.n_receivers, "wavelet": "ricker", "freq": 6.0}
    assert {k: d[k] for k in expected} == expected
    assert d["source_locations"] == acq.source_locations.tolist()
    # a density field is read when named
    assert AcousticForward(1.0, 1e-3, fwd.source_amplitudes, acq.source_locations, acq.receiver_locations,
                           density="rho").fields == ("vp", "rho")
    # defaults of the solver are stated too
    bare = AcousticForward(1.0, 1e-3, fwd.source_amplitudes, acq.source_locations, acq.receiver_locations).describe()
    assert bare["pml_width"] == 20 and bare["accuracy"] == 4 and bare["pml_vmax"] is None


def test_one_operator_simulates_inverts_and_reports(tmp_path):
    cfg = parse_config({**RAW, "inference": {"steps": 2, "lr": 0.05}})
    setup = resolve(cfg)
    sim = workflow.simulate(setup, relative=0.01)
    with torch.no_grad():
        assert torch.equal(sim.clean, setup.forward(setup.true))
    res = workflow.run(cfg, tmp_path, figures=False, save_inputs=True, progress=False)
    model = workflow.build_model(setup, sim.observed, 1.0, workflow.build_prior(
        cfg.prior, setup.initial["vp"], setup.dx, dt=setup.acquisition.dt, bounds=setup.bounds))
    assert model.forward is setup.forward and res.setup is setup
    described = json.dumps(setup.forward.describe())
    assert res.posterior.attrs["forward"] == described
    assert io.read_gather(tmp_path / "observed.nc").attrs["forward"] == described
