"""NUTS and SVI attach the discarded-mode variance of a truncated whitened prior (as Laplace and SVGD do).

A 6 x 6 Matern field truncated to 6 modes and a tiny linear forward: the discarded variance does not depend on the
data (the discarded modes' posterior is their prior), so it is checked against the prior's own diagonal computed
independently from the full (untruncated) eigen-decomposition.
"""
import sys

import pytest
import torch
from tqdm import tqdm

from probinv.demo import run_demo
from probinv.fields import WhitenedField
from probinv.inference import nuts, svi
from probinv.inference._common import progress
from probinv.io import InputError
from probinv.models import Gaussian, build_model

DT = torch.float64


@pytest.fixture(scope="module")
def problem():
    prior = WhitenedField((6, 6), 20.0, covariance="matern", nu=1.5, a_z=60.0, a_x=60.0, mean=2500.0, std=100.0,
                          n_modes=6, dtype=DT)
    G = torch.randn(2, 3, 36, generator=torch.Generator().manual_seed(0), dtype=DT) * 0.1

    def forward(fields, shots=None):
        g = G if shots is None else G[shots]
        v = fields["vp"]
        return torch.einsum("srp,...p->...sr", g, v.reshape(v.shape[:-2] + (-1,)))

    d = forward({"vp": prior.mean_field})
    full = WhitenedField((6, 6), 20.0, covariance="matern", nu=1.5, a_z=60.0, a_x=60.0, mean=2500.0, std=100.0,
                         retained_variance=1.0, dtype=DT)
    discarded = (((full.modes * full.scales) ** 2).sum(-1) - ((prior.modes * prior.scales) ** 2).sum(-1)).reshape(6, 6)
    return build_model({"vp": prior}, forward, d, noise=Gaussian(2.0)), discarded, prior.retained_fraction


@pytest.mark.parametrize("method", ["nuts", "svi"])
def test_nuts_and_svi_attach_the_discarded_variance(problem, method):
    model, discarded, frac = problem
    if method == "nuts":
        post = nuts(model, num_samples=5, warmup_steps=5, num_chains=1, precondition=None, max_tree_depth=3)
    else:
        post = svi(model, guide="multivariate", num_steps=5, num_samples=5, tol=None)
    assert discarded.min() > 0  # the 6 kept modes leave some prior variance out everywhere
    # a property of the prior alone (not of the draws): equal to rounding of the two eigen-decompositions
    torch.testing.assert_close(post.discarded_variance["vp"], discarded, rtol=0, atol=1e-8)
    assert post.attrs["retained_variance"]["vp"] == pytest.approx(frac)
    torch.testing.assert_close(post.std("vp") ** 2, post.std("vp", discarded=False) ** 2 + discarded, rtol=1e-12,
                               atol=1e-8)


def test_progress_bar_is_plain_tqdm_and_hidden_off_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert progress(range(3), False, "x") == range(3)
    bar = progress(range(3), True, "x")
    assert type(bar) is tqdm  # not tqdm.auto's notebook widget
    assert bar.disable  # disable=None: no bar when standard error is not a terminal
    assert list(bar) == [0, 1, 2]


def test_demo_refuses_an_output_folder_that_is_a_file_before_running(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="out"):
        run_demo(blocker, small=True)
    assert blocker.read_text() == "not a folder"  # nothing was written
