"""``probinv demo``: a complete Bayesian FWI on a built-in synthetic survey, in a few minutes on a laptop CPU.

The survey (:func:`probinv.scenarios.demo`): a smooth velocity gradient with a circular fast anomaly over a faster
layer, sources and receivers along the surface. The demo simulates noisy observed data, runs MAP (= FWI) from the
smooth background under a whitened Matern prior, then the Laplace approximation at the MAP point (Gauss-Newton
Hessian in the whitened space: the exact posterior of the linearised problem) and, with ``nuts=True``, a short NUTS
run preconditioned by it. It writes into ``out_dir``:

- ``posterior.nc`` (the posterior: samples, sample statistics, observed data; ``Posterior.from_netcdf`` reads it),
  ``map.nc``, ``observed.nc`` (gathers), ``true_model.nc`` and ``initial_model.nc``;
- ``models.png`` (true / initial / MAP / posterior mean), ``uncertainty.png`` (mean / std / 90 % interval width),
  ``gathers.png`` (observed vs predicted by the MAP model), ``misfit.png``, ``trace.png``, ``rank.png``;
- ``summary.txt`` / ``summary.csv`` (ArviZ summary of selected pixels), ``config.toml`` (the demo's configuration:
  ``probinv invert config.toml`` reruns it into ``rerun/`` and gets the same MAP) and ``checkpoints/`` (MAP and
  posterior stages, as ``probinv invert`` writes them).

The demo is a built-in configuration (:func:`demo_config`) run by :func:`probinv.workflow.run`, the code of
``probinv invert``: one orchestration, one forward operator for the simulated data, the inversion and the report.

The reduced mode (``small=True`` or the environment variable ``PROBINV_DEMO_SMALL=1``) runs a smaller grid with
fewer steps; the test suite runs it.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from . import io
from ._files import write_text_atomic
from .config import parse_config, resolve, to_toml
from .workflow import run

log = logging.getLogger(__name__)

__all__ = ["demo_config", "run_demo"]

#: Environment variable selecting the reduced demo (any of 1, true, yes, on).
SMALL_ENV = "PROBINV_DEMO_SMALL"


def _env_small() -> bool:
    return os.environ.get(SMALL_ENV, "").strip().lower() in ("1", "true", "yes", "on")


#: MAP (L-BFGS) iterations of the demo (reduced, full): Laplace continues to the mode by Gauss-Newton steps
#: (``inference.laplace(newton_steps=...)``), so the MAP only has to come close.
STEPS = {True: 25, False: 40}

#: Fraction of the prior variance the demo's prior keeps (its modes; the rest is added to the posterior std).
RETAINED_VARIANCE = 0.99


def demo_config(small: bool = False, *, method: str = "laplace") -> dict:
    """The demo's configuration as a nested dict (the schema of :mod:`probinv.config`).

    ``[output].directory = "rerun"`` makes ``probinv invert config.toml`` in the demo's folder rerun it into
    ``rerun/`` with the same MAP (MAP checkpoints hold the whole optimiser state, so ``checkpoint_every`` does not
    change the result).
    """
    length = 80.0 if small else 100.0
    return {
        "model": {"scenario": "demo", "scenario_options": {"size": "small" if small else "full"}},
        "physics": {"accuracy": 4, "pml_width": 10},
        "noise": {"relative": 0.02, "seed": 0},
        "prior": {"type": "whitened", "covariance": "matern", "nu": 1.5,
                  "correlation_length": length, "std": 200.0,
                  "retained_variance": RETAINED_VARIANCE},
        "inference": {"method": method, "optimizer": "lbfgs", "steps": STEPS[small], "lr": 1.0,
                      "num_samples": 100 if small else 400, "warmup": 30 if small else 100, "num_chains": 2,
                      "seed": 0},
        "output": {"directory": "rerun", "checkpoint_every": 25},
    }


def run_demo(out_dir: str | os.PathLike = "probinv-demo", *, small: bool | None = None, nuts: bool = False,
             dtype: torch.dtype = torch.float32, progress: bool = True) -> dict[str, Path]:
    """Run the demo and write its results into ``out_dir``; returns ``{what: path}`` of every file written.

    The demo is its configuration (:func:`demo_config`) run by :func:`probinv.workflow.run`, the code of
    ``probinv invert``; its ``config.toml`` repeats it.

    Parameters
    ----------
    out_dir : path
        Output folder (created).
    small : bool, optional
        Reduced mode; default from ``$PROBINV_DEMO_SMALL``.
    nuts : bool
        After Laplace, also run a short NUTS preconditioned by it (adds about a minute in full mode).
    dtype : torch.dtype
        Floating dtype of the computation (``probinv invert config.toml`` uses torch's default, float32).
    progress : bool
        Log progress (INFO level on the ``probinv`` logger; the CLI prints it).
    """
    small = _env_small() if small is None else bool(small)
    t_start = time.perf_counter()
    # fail before minutes of work when the folder cannot be written (a file in the way, read-only parent)
    out = io.check_output_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    method = "nuts" if nuts else "laplace"
    cfg = parse_config(demo_config(small, method=method))
    setup = resolve(cfg, dtype=dtype)
    acq = setup.acquisition
    nz, nx = setup.true["vp"].shape
    say = log.info if progress else log.debug
    say(f"probinv demo ({'reduced' if small else 'full'} mode): {nz} x {nx} cells at {setup.dx:g} m, "
        f"{acq.n_shots} shots x {acq.n_receivers} receivers, {acq.nt} samples at {acq.dt:g} s, "
        f"{acq.freq:g} Hz Ricker")

    files: dict[str, Path] = {"config": out / "config.toml"}
    write_text_atomic(files["config"], "# configuration of this demo run: `probinv invert config.toml --method "
                                       f"{method}` reruns it into rerun/ (same MAP)\n" + to_toml(cfg))
    res = run(cfg, out, save_inputs=True, dtype=dtype, progress=progress, log_fn=say)
    files.update(res.files)
    post = res.posterior

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    true_vp, init_vp, map_vp = setup.true["vp"], setup.initial["vp"], res.inversion.map.mean("vp")
    std = post.std("vp")
    err = (post.mean("vp") - true_vp).abs()
    msg = (f"model error (relative L2): initial {rel(init_vp, true_vp):.4f} -> MAP {rel(map_vp, true_vp):.4f} -> "
           f"posterior mean {rel(post.mean('vp'), true_vp):.4f}; posterior std {float(std.min()):.1f}-"
           f"{float(std.max()):.1f} m/s; |mean - true| <= 2 std at "
           f"{100 * float((err <= 2 * std).to(torch.float64).mean()):.0f} % of the pixels")
    say(msg)
    # the verdict (diagnostics.verdict): convergence, fit, prior truncation, sampler and, the truth being known here,
    # the coverage of the 50 % / 90 % intervals; and how informative the posterior is against the 200 m/s prior std
    verdict = res.verdict if res.verdict is not None else post.verdict(truth={"vp": true_vp})
    ratio = float((std / float(cfg.prior["std"])).median())
    lit = verdict.std_ratio_illuminated.get("vp")
    cov = verdict.coverage.get("vp", {})
    verdict_text = (f"{verdict}\nmedian posterior / prior std {ratio:.3f}"
                    + ("" if lit is None else f" ({lit:.3f} where the data illuminate)")
                    + (f"; truth inside the 50 % / 90 % intervals at {100 * cov[0.5]:.1f} % / {100 * cov[0.9]:.1f} % "
                       "of the pixels" if cov else ""))
    say(verdict_text)
    summary = out / "summary.txt"
    write_text_atomic(summary, summary.read_text() + "\n" + msg + "\n" + verdict_text + "\n"
                      + f"wall time {time.perf_counter() - t_start:.1f} s\n")
    say(f"done in {time.perf_counter() - t_start:.1f} s")
    return files
