"""The Posterior records the forward operator's description (``describe()``) and keeps it through NetCDF."""
import json

import netCDF4
import pytest
import torch

from probinv.fields import WhitenedField
from probinv.inference import Posterior, laplace, map, nuts, svgd, svi
from probinv.models import CorrectedForward, Gaussian, build_model

DT = torch.float64


class StubForward:
    """A linear forward operator with a description of its (made-up) physical settings."""

    def __init__(self):
        self.G = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0), dtype=DT) * 0.1
        self.dt = 0.002

    @property
    def n_shots(self):
        return 2

    def describe(self):
        return {"physics": "stub", "dx": 10.0, "dt": self.dt, "nt": 3, "accuracy": 4, "pml_width": 5,
                "pml_vmax": 3000.0, "free_surface": False}

    def __call__(self, fields, shots=None):
        v = fields["vp"]
        return torch.einsum("srp,...p->...sr", self.G, v.reshape(v.shape[:-2] + (-1,)))


def _model(forward):
    prior = WhitenedField((4, 4), 10.0, covariance="matern", nu=1.5, a_z=20.0, a_x=20.0, mean=2000.0, std=100.0,
                          n_modes=3, dtype=DT)
    data = forward({"vp": prior(torch.zeros(3, dtype=DT))}) + 0.1
    return build_model({"vp": prior}, forward, data, noise=Gaussian(0.5))


def test_every_inference_function_records_the_description_and_netcdf_keeps_it(tmp_path):
    fwd = StubForward()
    model = _model(fwd)
    post_map = map(model, optimizer="lbfgs", num_steps=5, lr=1.0)
    lap = laplace(model, map_posterior=post_map, rank=3, num_samples=4)
    runs = {"map": post_map, "laplace": lap,
            "svi": svi(model, guide="normal", num_steps=3, num_samples=4, tol=None),
            "svgd": svgd(model, num_particles=2, num_steps=2),
            "nuts": nuts(model, num_samples=2, warmup_steps=2, num_chains=1, laplace_posterior=lap)}
    for method, post in runs.items():
        assert json.loads(post.attrs["forward"]) == fwd.describe(), method
    path = tmp_path / "post.nc"
    lap.to_netcdf(path)
    with netCDF4.Dataset(path) as ds:  # a global attribute of its own, readable with ncdump -h
        assert json.loads(ds.forward) == fwd.describe()
    assert json.loads(Posterior.from_netcdf(path).attrs["forward"]) == fwd.describe()


def test_a_plain_callable_records_its_type_name_only():
    fwd = StubForward()

    def plain(fields):
        return fwd(fields)

    post = map(_model(plain), num_steps=2)
    assert json.loads(post.attrs["forward"]) == {"type": "function"}


def test_corrected_forward_wraps_the_inner_description():
    fwd = StubForward()
    corrected = CorrectedForward(fwd, torch.zeros(2, 3, dtype=DT), torch.zeros(0, 2, 3, dtype=DT), None)
    desc = corrected.describe()
    assert desc["type"] == "CorrectedForward" and desc["approximate"] == fwd.describe()
    assert desc["n_features"] == 0 and desc["features"] is None and corrected.n_shots == 2
    json.dumps(desc)
    post = map(_model(corrected), num_steps=2)
    assert json.loads(post.attrs["forward"]) == desc


def test_corrected_forward_without_an_inner_description():
    desc = CorrectedForward(lambda fields: fields["vp"].sum(), torch.zeros(1), torch.zeros(0, 1), None).describe()
    assert desc["approximate"] == {"type": "function"}


def test_a_description_that_is_not_json_fails_before_the_run():
    class Bad(StubForward):
        def describe(self):
            return {"dx": torch.tensor(10.0)}

    with pytest.raises(TypeError, match=r"Bad.describe\(\) must return a JSON-able dict"):
        map(_model(Bad()), num_steps=2)
