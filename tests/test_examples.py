"""The shipped example configurations (examples/*.toml, run in the README) parse, resolve and build their model.

Running them takes 30 s to minutes each (their measured times are in the README); here each is checked as far as
the inversion's start: the configuration is valid, the set-up resolves (stable time step, geometry inside the grid),
and the model's priors keep the default 99 % of their variance (the honest-uncertainty default of issue 14).
"""
from pathlib import Path

import pytest
import torch

from probinv import workflow
from probinv.config import load_config, resolve

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_resolves_and_builds_its_model(path):
    cfg = load_config(path)
    setup = resolve(cfg, dtype=torch.float64)
    obs = workflow.load_observed(cfg, setup)
    model = workflow.build_config_model(cfg, obs.setup, obs.data, obs.sigma)
    assert set(model.field_names) == set(setup.fields)
    for name, prior in model.priors.items():
        frac = getattr(prior, "retained_fraction", None)
        assert frac is None or frac >= 0.99, (name, frac)
