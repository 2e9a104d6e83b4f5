"""MAP checkpoints hold the whole optimiser state: the checkpoint interval and an interruption change nothing.

The problem: 10 whitened Matern modes on an 8 x 8 grid, a fixed random linear map to 3 shots x 10 samples followed by a
smooth nonlinearity (so that L-BFGS needs ~20 iterations with several line-search evaluations), float64.
"""
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta

from probinv.fields import WhitenedField
from probinv.inference import map
from probinv.inference._common import init_strategy, init_values
from probinv.models import Gaussian, StudentT, build_model

DT = torch.float64


def _model(noise="gaussian", subsample_size=None):
    prior = WhitenedField((8, 8), 10.0, covariance="matern", nu=1.5, a_z=30.0, a_x=30.0, mean=2000.0, std=100.0,
                          n_modes=10, dtype=DT)
    g = torch.Generator().manual_seed(3)
    a = torch.randn(30, 64, generator=g, dtype=DT) / 64

    def forward(fields):
        lin = (fields["vp"].reshape(*fields["vp"].shape[:-2], 64) / 1000) @ a.T
        out = lin + 0.3 * torch.sin(3 * lin) + 0.05 * lin**3
        return out.reshape(*out.shape[:-1], 3, 10)

    z = torch.randn(10, generator=g, dtype=DT)
    clean = forward({"vp": prior(z)})
    data = clean + 0.01 * torch.randn(clean.shape, generator=g, dtype=DT)
    nm = Gaussian(0.01) if noise == "gaussian" else StudentT(3.0, 0.01)
    return build_model({"vp": prior}, forward, data, noise=nm, subsample_size=subsample_size)


def _same(a, b):
    assert torch.equal(a.samples["vp_z"], b.samples["vp_z"])
    assert torch.equal(a.samples["vp"], b.samples["vp"])
    assert a.attrs["loss"] == b.attrs["loss"]
    assert a.attrs["n_gradients"] == b.attrs["n_gradients"]
    assert a.attrs["n_steps"] == b.attrs["n_steps"]
    assert a.attrs["converged"] == b.attrs["converged"]


def _one_long_lbfgs_step(model, num_steps):
    """The implementation before checkpoints: one ``torch.optim.LBFGS.step`` with ``max_iter = num_steps``."""
    with pyro.get_param_store().scope():
        data = model.data
        guide = AutoDelta(model, init_loc_fn=init_strategy(init_values(model, data, None)))
        elbo, losses = Trace_ELBO(), []
        guide(data, full=True)
        params = list(guide.parameters())
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=num_steps, line_search_fn="strong_wolfe",
                                tolerance_change=1e-12, tolerance_grad=1e-10, history_size=50)

        def closure():
            opt.zero_grad()
            loss = elbo.differentiable_loss(model, guide, data, full=True)
            loss.backward()
            losses.append(float(loss.detach()))
            return loss

        opt.step(closure)
        return guide.median(data)["vp_z"].detach(), losses


@pytest.mark.parametrize("noise", ["gaussian", "studentt"])
@pytest.mark.parametrize("num_steps", [3, 8, 200])
def test_lbfgs_iteration_by_iteration_equals_one_long_step(noise, num_steps):
    """Bit for bit, losses and gradient count included: with 3 and 8 iterations the gradient budget
    (``num_steps * 5 // 4``) cuts the run, with 200 the stopping tests end it."""
    model = _model(noise)
    z, losses = _one_long_lbfgs_step(model, num_steps)
    post = map(model, optimizer="lbfgs", num_steps=num_steps, lr=1.0)
    assert torch.equal(post.samples["vp_z"][0, 0], z)
    assert post.attrs["loss"] == losses and post.attrs["n_gradients"] == len(losses)


@pytest.mark.parametrize("optimizer, kwargs, n, k", [
    ("lbfgs", {"lr": 1.0}, 30, 7),
    ("adam", {"lr": 0.05}, 40, 13),
    ("adam", {"lr": 0.05, "subsample_size": 2}, 40, 13),  # the random shot subsets continue from the saved RNG
])
def test_checkpoint_interval_and_interruption_change_nothing(tmp_path, optimizer, kwargs, n, k):
    model = _model(subsample_size=kwargs.get("subsample_size"))
    torch.manual_seed(0)
    plain = map(model, optimizer=optimizer, num_steps=n, **kwargs)
    for every in (1, 4, 25):
        torch.manual_seed(0)
        post = map(model, optimizer=optimizer, num_steps=n, checkpoint=tmp_path / f"every{every}.pt",
                   checkpoint_every=every, **kwargs)
        _same(post, plain)
    # interrupted after k steps (a run with num_steps=k), then resumed with the full num_steps from the same file;
    # the RNG in between is disturbed on purpose: the resumed run must restore it
    ck = tmp_path / "killed.pt"
    torch.manual_seed(0)
    first = map(model, optimizer=optimizer, num_steps=k, checkpoint=ck, checkpoint_every=5, **kwargs)
    assert first.attrs["n_steps"] == k
    torch.manual_seed(123)
    resumed = map(model, optimizer=optimizer, num_steps=n, checkpoint=ck, checkpoint_every=5, **kwargs)
    _same(resumed, plain)
    # a finished run returns the same result again without a step
    again = map(model, optimizer=optimizer, num_steps=n, checkpoint=ck, checkpoint_every=5, **kwargs)
    _same(again, plain)


def test_checkpoint_of_other_settings_or_another_model_is_refused(tmp_path):
    model = _model()
    ck = tmp_path / "ck.pt"
    map(model, optimizer="adam", num_steps=3, lr=0.05, checkpoint=ck)
    with pytest.raises(ValueError, match="was written with other settings"):
        map(model, optimizer="adam", num_steps=3, lr=0.01, checkpoint=ck)
    with pytest.raises(ValueError, match="was written with other settings"):
        map(model, optimizer="lbfgs", num_steps=3, lr=0.05, checkpoint=ck)
    with pytest.raises(ValueError, match="checkpoint_every must be an int >= 1, got 0"):
        map(model, num_steps=3, checkpoint=ck, checkpoint_every=0)


@pytest.mark.parametrize("optimizer, lr", [("lbfgs", 1.0), ("adam", 0.05)])
def test_a_run_killed_between_checkpoints_resumes_exactly(tmp_path, optimizer, lr):
    """A real interruption (KeyboardInterrupt at step 12, the last checkpoint at step 10) with the same num_steps."""
    model = _model(subsample_size=2 if optimizer == "adam" else None)
    torch.manual_seed(0)
    plain = map(model, optimizer=optimizer, num_steps=30, lr=lr)

    def kill(step, loss, fields):
        if step == 12:
            raise KeyboardInterrupt

    ck = tmp_path / "ck.pt"
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        map(model, optimizer=optimizer, num_steps=30, lr=lr, checkpoint=ck, checkpoint_every=5, callback=kill)
    assert torch.load(ck, weights_only=False)["steps"] == 10
    torch.manual_seed(99)
    _same(map(model, optimizer=optimizer, num_steps=30, lr=lr, checkpoint=ck, checkpoint_every=5), plain)
