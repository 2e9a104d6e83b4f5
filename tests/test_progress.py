"""Progress and cost of the posterior stages (issue 15): NUTS and Laplace show progress bars on a terminal (rate, ETA)
and stay silent otherwise; Laplace's exact Gauss-Newton operator comes from batched Jacobian columns that equal the
single products; resuming an SVI run reads its Laplace start back instead of recomputing it.

Everything runs on a 10 x 12 acoustic grid with 2 shots (a few ms per solver call).
"""
import functools
import io as _io
import logging
import math
import re
import sys
import textwrap

import pytest
import torch
from tqdm import tqdm

from probinv import workflow
from probinv.cli import main
from probinv.config import load_config, resolve
from probinv.fields import WhitenedField
from probinv.inference import Posterior, _laplace, _nuts, laplace, map, nuts
from probinv.inference._laplace import _jacobian_columns
from probinv.linearisation import Linearisation
from probinv.models import Gaussian, build_model

TINY = """
[model]
scenario = "anomaly"
scenario_options = { nz = 10, nx = 12, dx = 10.0, n_shots = 2 }
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
method = "svi"
steps = 4
lr = 0.05
num_samples = 20
[output]
directory = "out"
checkpoint_every = 2
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny acoustic problem in float64, its model and a short MAP."""
    folder = tmp_path_factory.mktemp("tiny")
    # 4 modes: the double-backward products are the slow part of this file
    (folder / "c.toml").write_text(textwrap.dedent(TINY).replace("n_modes = 8", "n_modes = 4"))
    cfg = load_config(folder / "c.toml")
    setup = resolve(cfg, dtype=torch.float64)
    obs = workflow.load_observed(cfg, setup)
    prior = workflow.build_prior(cfg.prior, setup.initial["vp"], setup.dx, dt=setup.acquisition.dt,
                                 bounds=setup.bounds)
    model = workflow.build_model(obs.setup, obs.data, obs.sigma, prior)
    return model, map(model, optimizer="lbfgs", num_steps=3, lr=1.0)


class _Terminal(_io.StringIO):
    """A standard error that says it is a terminal (tqdm draws its bars only on one)."""

    def isatty(self):
        return True


def test_batched_jacobian_columns_equal_single_products(tiny):
    model, map_post = tiny
    z0 = map_post.samples["vp_z"][0, -1]
    noise = model.noise.params_from_latents({})

    def f(z):
        return model.noise.whiten(model.predict(model.fields_from_latents({"vp_z": z})), noise)

    lin = Linearisation(f, z0)
    eye = torch.eye(z0.numel(), dtype=z0.dtype)

    class Count:
        n = 0

        def update(self, k):
            self.n += k

    bar = Count()
    batched = _jacobian_columns(lin, eye, bar, chunk=3)  # 4 columns: a batch of 3 and one of 1
    assert bar.n == 4 and lin.passes == 2 + 2
    single = torch.stack([lin.jvp(e) for e in eye])
    # the same double backward, vmapped: equal up to float64 rounding of differently ordered sums
    assert torch.allclose(batched, single, rtol=0, atol=1e-12 * float(single.abs().max()))
    # the Gauss-Newton operator J^T J equals the former assembly from J^T (J e_i) products, and so does laplace's
    h_products = torch.stack([lin.vjp(j) for j in single], 1)
    jac = batched.reshape(4, -1)
    assert torch.allclose(jac @ jac.T, h_products, rtol=0, atol=1e-11 * float(h_products.abs().max()))
    lam = torch.linalg.eigvalsh(0.5 * (h_products + h_products.T)).flip(0)
    post = laplace(model, map_posterior=map_post, rank=4, num_samples=10, seed=0)
    assert torch.allclose(post.gaussian.eigvals, lam, rtol=1e-9, atol=1e-9 * float(lam.max()))
    # 4 whitened modes <= rank + oversample: the exact operator from 1 forward, 1 recorded backward, 1 batched pass
    assert post.attrs["solver_passes"] == 3


class _Toy:
    """A linear forward operator (random 2 x 3 x 16 matrix on a 4 x 4 field): instant, for the progress bars."""

    def __init__(self):
        self.g = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def __call__(self, fields, shots=None):
        v = fields["vp"]
        return torch.einsum("srp,...p->...sr", self.g, v.reshape(v.shape[:-2] + (-1,)))


@pytest.fixture(scope="module")
def toy():
    prior = WhitenedField((4, 4), 20.0, covariance="matern", nu=1.5, a_z=40.0, a_x=40.0, mean=2500.0, std=100.0,
                          n_modes=6, dtype=torch.float64)
    fwd = _Toy()
    data = fwd({"vp": prior(torch.zeros(6, dtype=torch.float64))}) + 1.0
    model = build_model({"vp": prior}, fwd, data, noise=Gaussian(1.0))
    return model, map(model, optimizer="lbfgs", num_steps=20, lr=1.0)


def test_progress_bars_on_a_terminal_only(toy, monkeypatch):
    model, map_post = toy
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    for module in (_laplace, _nuts):  # draw every update: the toy problem takes milliseconds, tqdm's default 0.1 s
        monkeypatch.setattr(module, "tqdm", functools.partial(tqdm, mininterval=0))
    lap = laplace(model, map_posterior=map_post, rank=6, num_samples=10, progress_bar=True)
    text = term.getvalue()
    assert "Laplace: Jacobian products" in text and "6/6" in text and re.search(r"product/s|s/product", text)
    nuts(model, laplace_posterior=lap, num_samples=3, warmup_steps=2, num_chains=1, max_tree_depth=3,
         progress_bar=True)
    text = term.getvalue()
    # the bar of the chain: count, rate, ETA (tqdm's "<" remaining time), phase, step size, divergences
    assert "NUTS chain 1/1" in text and "5/5" in text and re.search(r"draw/s|s/draw", text)
    assert re.search(r"<\d\d:\d\d", text) and "sampling, step size" in text and "divergences" in text
    # not a terminal (a log file, a pipe, captured output): no bar even when asked for
    pipe = _io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    # a CLI test run earlier in the session leaves the "probinv" logger writing to its own (closed) stream
    monkeypatch.setattr(logging.getLogger("probinv"), "handlers", [])
    laplace(model, map_posterior=map_post, rank=2, oversample=1, num_samples=10, progress_bar=True)  # randomised
    nuts(model, laplace_posterior=lap, num_samples=2, warmup_steps=1, num_chains=1, max_tree_depth=3,
         progress_bar=True)
    assert pipe.getvalue() == ""


def test_svi_resume_does_not_redo_its_laplace_start(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text(textwrap.dedent(TINY))
    out = tmp_path / "svi"
    calls = []
    real = workflow.inference.laplace

    def counting(*args, **kwargs):
        calls.append(kwargs.get("rank"))
        return real(*args, **kwargs)

    monkeypatch.setattr(workflow.inference, "laplace", counting)
    assert main(["invert", str(cfg), "--out", str(out), "--no-figures"]) == 0
    assert len(calls) == 1 and (out / "checkpoints" / "stage_laplace.nc").exists()
    first = Posterior.from_netcdf(out / "posterior.nc")
    capsys.readouterr()
    assert main(["invert", str(cfg), "--out", str(out), "--no-figures", "--resume"]) == 0
    assert len(calls) == 1  # no second Laplace approximation
    assert "the Laplace approximation from its stage checkpoint" in capsys.readouterr().err
    again = Posterior.from_netcdf(out / "posterior.nc")
    # the resumed SVI starts from the very same (exactly round-tripped) Laplace approximation and its own checkpoint
    assert torch.equal(first.samples["vp"], again.samples["vp"])
    # other Laplace settings (more draws; SVI's own settings unchanged): the stage file does not match, recomputed
    cfg.write_text(textwrap.dedent(TINY).replace("num_samples = 20", "num_samples = 21"))
    assert main(["invert", str(cfg), "--out", str(out), "--no-figures", "--resume"]) == 0
    assert len(calls) == 2 and "recomputing it" in capsys.readouterr().err
    assert math.isfinite(float(Posterior.from_netcdf(out / "posterior.nc").std("vp").max()))
