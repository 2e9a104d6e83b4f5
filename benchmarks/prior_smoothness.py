"""Which prior family keeps honest intervals on truths the prior does not generate (issue 14): Laplace coverage of
whitened Matern priors of several smoothness / correlation length / std on the truths of
``calibration_misspecified.py``, with each prior's Laplace log evidence (the marginal likelihood that empirical Bayes
would maximise).

For each truth and each prior ``std:a:nu`` (m/s, m, Matern smoothness; 99 % of the variance kept): 40 L-BFGS steps,
Laplace at full rank continued to the mode (``newton_steps=5``), 1000 draws with the discarded variance; the fraction
of pixels inside the 50 % / 90 % intervals, the median posterior std, the rms error of the posterior mean, chi^2 per
datum and :func:`probinv.diagnostics.laplace_log_evidence`.

Usage::

    python benchmarks/prior_smoothness.py                                  # truths 0-5, nu 1.5 / 1.0 / 0.5
    python benchmarks/prior_smoothness.py --truths 0,1,2 --priors 150:80:1.5,150:40:1.5,150:20:1.5,300:40:1.5

Results: ``benchmarks/results/prior_smoothness.json`` and ``.md`` (atomic writes).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import calibration_misspecified as cm  # noqa: E402

from probinv import diagnostics, inference, workflow  # noqa: E402
from probinv._files import write_text_atomic  # noqa: E402
from probinv.config import parse_config, resolve  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
#: std (m/s) : correlation length (m, a sixth of the 16-cell width: the default) : Matern nu
DEFAULT_PRIORS = "150:53.3:1.5,150:53.3:1.0,150:53.3:0.5"


def run(truth_indices, priors) -> list[dict]:
    rows = []
    all_truths = cm.truths(max(truth_indices) + 1)
    with tempfile.TemporaryDirectory() as tmp:
        for i in truth_indices:
            name, spec = all_truths[i]
            cfg = parse_config(cm.config_for(name, spec, i, tmp, before=False))
            setup = resolve(cfg, dtype=torch.float64)
            obs = workflow.load_observed(cfg, setup)
            truth = setup.true["vp"]
            for std, a, nu in priors:
                prior = workflow.build_prior({**dict(cfg.prior), "std": std, "correlation_length": a, "nu": nu},
                                             setup.initial["vp"], setup.dx, dt=setup.acquisition.dt,
                                             accuracy=setup.physics.accuracy, bounds=setup.bounds)
                model = workflow.build_model(setup, obs.data, obs.sigma, prior)
                t0 = time.perf_counter()
                m = inference.map(model, optimizer="lbfgs", num_steps=40, lr=1.0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    lap = inference.laplace(model, map_posterior=m, rank=prior.latent_dim, num_samples=1000, seed=i,
                                            newton_steps=5)
                draws = lap.field_draws("vp")
                cov = cm._cov(draws, truth)
                row = {"truth": name, "std": std, "a": a, "nu": nu, "modes": prior.latent_dim,
                       "log_evidence": diagnostics.laplace_log_evidence(lap, model),
                       "coverage_50": cov["0.5"], "coverage_90": cov["0.9"],
                       "median_std": float(draws.reshape(-1, *truth.shape).std(0).median()),
                       "rms_error": float((lap.mean("vp") - truth).pow(2).mean().sqrt()),
                       "chi2_per_datum": diagnostics.chi2_per_datum(model, {"vp": lap.mean("vp")}),
                       "seconds": time.perf_counter() - t0}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def markdown(results) -> str:
    lines = ["# Prior smoothness on truths not drawn from the prior", "", f"Command: `{results['command']}`  ",
             f"load average at start {results['load_start']}", "",
             "| truth | std (m/s) | a (m) | nu | modes | log evidence | 50 % | 90 % | median std (m/s) "
             "| rms error (m/s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['truth']} | {r['std']:g} | {r['a']:g} | {r['nu']:g} | {r['modes']} | "
                     f"{r['log_evidence']:.1f} | {r['coverage_50']:.2f} | {r['coverage_90']:.2f} | "
                     f"{r['median_std']:.1f} | {r['rms_error']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--truths", default="0,1,2,3,4,5", help="indices of calibration_misspecified.truths")
    ap.add_argument("--priors", default=DEFAULT_PRIORS, help="comma-separated std:a:nu (m/s, m, Matern smoothness)")
    ap.add_argument("--out", default=os.path.join(RESULTS, "prior_smoothness"))
    args = ap.parse_args(argv)
    try:
        idx = [int(t) for t in args.truths.split(",")]
        priors = [tuple(float(x) for x in p.split(":")) for p in args.priors.split(",")]
    except ValueError:
        ap.error(f"--truths must be integers and --priors std:a:nu triples, got {args.truths!r} / {args.priors!r}")
    if any(len(p) != 3 for p in priors):
        ap.error(f"--priors must be std:a:nu triples, got {args.priors!r}")
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    results = {"command": "python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:])),
               "load_start": [round(x, 2) for x in os.getloadavg()]}
    results["rows"] = run(idx, priors)
    write_text_atomic(args.out + ".json", json.dumps(results, indent=1))
    write_text_atomic(args.out + ".md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
