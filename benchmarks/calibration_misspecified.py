"""Calibration when the truth is NOT drawn from the prior (issue 14): layered, checkerboard and anomaly models and
crops of OpenFWI / Marmousi / Overthrust models, inverted with the default prior and noise treatment.

Every truth is a 12 x 16 grid of 20 m cells with 2 surface shots (the configuration schema of ``probinv invert``:
scenario truths from :mod:`probinv.scenarios`, data-file truths through ``[model].file`` with the start a Gaussian
blur of 3 cells), 2 % noise, a whitened prior centred on the start. For each truth:

* ``before``: a Matern (nu 1.5, a = 80 m, std 150 m/s) prior truncated to 20 modes, Laplace at the 20-iteration
  L-BFGS point as it is (no Newton steps), coverage of the kept-mode draws (no discarded variance): the behaviour
  before this issue;
* ``after``: probinv's default prior (an empty ``[prior]`` section: Matern nu 0.5, i.e. exponential covariance,
  a = a sixth of the model's width, std 150 m/s, the modes holding 99 % of the variance), 40 L-BFGS iterations and
  Laplace continued to the mode (``newton_steps=5``), coverage of :meth:`Posterior.field_draws` (the discarded
  variance included);
* ``nuts`` and ``svi`` (multivariate Gaussian) after the ``after`` Laplace, with the discarded variance attached.

Coverage = fraction of the pixels whose truth lies in the equal-tailed 50 % / 90 % interval, averaged over truths
with its standard error over truths. Target: 90 % intervals cover 80-97 %.

Usage::

    python benchmarks/calibration_misspecified.py --quick        # 3 truths, Laplace only (a few minutes)
    python benchmarks/calibration_misspecified.py                # 20 truths, every method
    python benchmarks/calibration_misspecified.py --max-minutes 15
    python benchmarks/calibration_misspecified.py --methods svi                  # Laplace and SVI on 20 truths
    python benchmarks/calibration_misspecified.py --indices 0-4 --out part1      # a share of the truths (resumable)
    python benchmarks/calibration_misspecified.py --merge part1.json part2.json  # one table of several shares

Results: ``benchmarks/results/calibration_misspecified.json`` and ``.md`` (atomic writes).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv import inference, io, workflow  # noqa: E402
from probinv._files import write_text_atomic  # noqa: E402
from probinv.config import parse_config, resolve  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
DATA = os.environ.get("PROBINV_DATA", DATA if os.path.isdir(DATA) else "/work/shared/data")
NZ, NX, DX = 12, 16, 20.0
log = logging.getLogger("benchmarks.calibration_misspecified")


def _crop(arr: np.ndarray, i: int, stride: int) -> np.ndarray:
    """A (NZ * stride) x (NX * stride) window of ``arr`` block-averaged to NZ x NX, rescaled to 1800-2600 m/s (the
    survey's band), placed ``i`` windows along x."""
    h, w = NZ * stride, NX * stride
    x0 = min(i * w, arr.shape[1] - w)
    win = arr[:h, x0:x0 + w].reshape(NZ, stride, NX, stride).mean(axis=(1, 3))
    lo, hi = float(win.min()), float(win.max())
    return 1800.0 + 800.0 * (win - lo) / max(hi - lo, 1e-6)


def truths(n: int) -> list[tuple[str, dict]]:
    """``n`` truths: scenario ones and data-file crops (when ``DATA`` exists), cycling through the families."""
    size = {"nz": NZ, "nx": NX, "dx": DX, "n_shots": 2}
    scen = [("layered", {**size, "velocities": (1800.0, 2100.0, 2400.0)}),
            ("layered", {**size, "velocities": (1900.0, 2300.0, 2150.0, 2500.0)}),
            ("checkerboard", {**size, "cell": 4, "amplitude": 0.05}),
            ("checkerboard", {**size, "cell": 6, "amplitude": 0.08}),
            ("anomaly", {**size, "contrast": 0.1}),
            ("anomaly", {**size, "contrast": -0.08, "radius": 50.0})]
    files = []
    if os.path.isdir(DATA):
        for name, key, stride in (("openfwi_flatvel_a", "vp", 4), ("openfwi_curvevel_a", "vp", 4),
                                  ("openfwi_flatfault_a", "vp", 4), ("marmousi2", "vp", 3), ("overthrust", "vp", 2)):
            path = os.path.join(DATA, name + ".npz")
            if os.path.exists(path):
                arr = np.load(path)[key]
                for j in range(2):
                    a = arr[j] if arr.ndim == 3 else arr[20 if name == "marmousi2" else 0:]  # below the water
                    files.append((f"{name}_{j}", _crop(np.asarray(a, dtype=np.float64), j, stride)))
    # alternate the families (scenario, data crop, scenario, ...) so that any prefix mixes them (--quick: 3 truths)
    pool = [x for pair in zip(scen, files[::2] + files[1::2]) for x in pair] if files else list(scen)
    pool += [f for f in files if f not in pool] if files else []
    out = [pool[k % len(pool)] for k in range(n)]
    return [(f"{name}#{i}", spec) for i, (name, spec) in enumerate(out)]


def config_for(name: str, spec, seed: int, tmp: str, before: bool) -> dict:
    """``before``: the prior of this issue's "before" (Matern nu 1.5, a = 80 m, 20 modes); else ``[prior]`` empty:
    probinv's defaults (whitened Matern nu 0.5, a = a sixth of the width, std 150 m/s, 99 % of the variance)."""
    prior = ({"type": "whitened", "covariance": "matern", "nu": 1.5, "correlation_length": 80.0, "std": 150.0,
              "n_modes": 20} if before else {})
    base = {"noise": {"relative": 0.02, "seed": seed}, "physics": {"pml_width": 6}, "prior": prior,
            "time": {"t_max": 0.5}}
    if isinstance(spec, dict):
        return {**base, "model": {"scenario": name.split("#")[0], "scenario_options": spec}}
    path = os.path.join(tmp, f"{name.replace('#', '_')}.nc")
    io.write_model(path, {"vp": torch.as_tensor(spec)}, DX)
    return {**base, "model": {"file": path, "initial_smoothing": 3.0}, "acquisition": {"n_shots": 2}}


def run_one(name, spec, seed, quick: bool, methods=("nuts", "svi")) -> dict:
    res = {"truth": name}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("before", "after"):
            cfg = parse_config(config_for(name, spec, seed, tmp, before=label == "before"))
            setup = resolve(cfg, dtype=torch.float64)
            obs = workflow.load_observed(cfg, setup)
            prior = workflow.build_prior(cfg.prior, setup.initial["vp"], setup.dx, dt=setup.acquisition.dt,
                                         accuracy=setup.physics.accuracy, bounds=setup.bounds)
            model = workflow.build_model(setup, obs.data, obs.sigma, prior)
            truth = setup.true["vp"]
            t0 = time.perf_counter()
            m = inference.map(model, optimizer="lbfgs", num_steps=20 if label == "before" else 40, lr=1.0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                lap = inference.laplace(model, map_posterior=m, rank=prior.latent_dim, num_samples=1000, seed=seed,
                                        newton_steps=0 if label == "before" else 5)
            draws = lap.samples["vp"] if label == "before" else lap.field_draws("vp")
            res[f"laplace_{label}"] = _cov(draws, truth)
            res[f"laplace_{label}"]["seconds"] = time.perf_counter() - t0
            res[f"laplace_{label}"]["modes"] = prior.latent_dim
            if label == "after":
                v = lap.verdict(model=model, truth={"vp": truth})
                res["verdict_warnings"] = v.warnings
                res["std_ratio"] = float((lap.std("vp") / 150.0).median())
            if quick:
                continue
            for meth in methods:
                if meth == "nuts":
                    post = inference.nuts(model, num_samples=150, warmup_steps=100, num_chains=2,
                                          laplace_posterior=lap, seed=seed, max_tree_depth=6)
                else:
                    post = inference.svi(model, guide="multivariate", laplace_posterior=lap, num_steps=300,
                                         lr=0.01, num_samples=1000, seed=seed)
                if label == "after":
                    if not post.discarded_variance:
                        post.add_discarded_variance(model)
                    res[f"{meth}_{label}"] = _cov(post.field_draws("vp"), truth)
                else:
                    res[f"{meth}_{label}"] = _cov(post.samples["vp"], truth)
    return res


def _cov(draws, truth) -> dict:
    x = draws.reshape((-1,) + tuple(truth.shape)).double().numpy()
    t = truth.double().numpy()
    out = {}
    for p in (0.5, 0.9):
        lo, hi = np.quantile(x, [(1 - p) / 2, (1 + p) / 2], axis=0)
        out[str(p)] = float(np.mean((t >= lo) & (t <= hi)))
    return out


def summarise(runs) -> dict:
    keys = sorted({k for r in runs for k, v in r.items() if isinstance(v, dict)})
    out = {}
    for k in keys:
        for p in ("0.5", "0.9"):
            vals = np.array([r[k][p] for r in runs if k in r])
            out.setdefault(k, {})[p] = {"mean": float(vals.mean()), "n": int(len(vals)),
                                        "stderr": float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1
                                        else None}
    return out


def markdown(results) -> str:
    lines = ["# Calibration on truths not drawn from the prior", "", f"Command: `{results['command']}`  ",
             f"{results['n_truths']} truths ({', '.join(sorted({r['truth'].split('#')[0] for r in results['runs']}))}"
             f"); wall time {results['seconds']:.0f} s; load average at start {results['load_start']}", "",
             "| method | truths | 50 % interval coverage | 90 % interval coverage |", "|---|---|---|---|"]
    for k, v in results["summary"].items():
        def fmt(d):
            return f"{100 * d['mean']:.1f} %" + (f" +- {100 * d['stderr']:.1f}" if d["stderr"] is not None else "")
        lines.append(f"| {k} | {v['0.5']['n']} | {fmt(v['0.5'])} | {fmt(v['0.9'])} |")
    lines += ["", "Median posterior / prior std (after, Laplace): "
              + f"{np.median([r['std_ratio'] for r in results['runs']]):.3f}", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 truths, Laplace before / after only")
    ap.add_argument("--truths", type=int, help="number of truths (default 20; 3 with --quick)")
    ap.add_argument("--methods", default="nuts,svi",
                    help="samplers run after Laplace on every truth (comma-separated subset of nuts,svi; '' none)")
    ap.add_argument("--indices", default=None,
                    help="run only these truth indices (e.g. 0-9 or 1,3,5): split the truths over processes, then "
                         "--merge their JSON files")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="combine result files (disjoint --indices runs, or one --methods svi and one --methods nuts "
                         "run: the same truth's results are merged) into --out (no computation)")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop starting new truths after this long")
    ap.add_argument("--out", default=os.path.join(RESULTS, "calibration_misspecified"))
    args = ap.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    command = "python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:]))
    if args.merge:
        parts = [json.load(open(f)) for f in args.merge]
        by_truth: dict = {}
        for part in parts:  # runs of the same truth (e.g. one file with svi, one with nuts) are combined
            for r in part["runs"]:
                by_truth.setdefault(r["truth"], {}).update(r)
        runs = sorted(by_truth.values(), key=lambda r: int(r["truth"].split("#")[1]))
        results = {"command": command + "  (merging: " + "; ".join(p["command"] for p in parts) + ")", "runs": runs,
                   "load_start": [p["load_start"] for p in parts], "n_truths": len(runs),
                   "seconds": max(p.get("seconds", 0.0) for p in parts), "summary": summarise(runs)}
        write_text_atomic(args.out + ".json", json.dumps(results, indent=1))
        write_text_atomic(args.out + ".md", markdown(results))
        print(markdown(results))
        return
    n = args.truths if args.truths is not None else (3 if args.quick else 20)
    if n < 1:
        ap.error(f"--truths must be >= 1, got {n}")
    methods = tuple(m for m in args.methods.split(",") if m)
    if set(methods) - {"nuts", "svi"}:
        ap.error(f"--methods must be a subset of nuts,svi, got {args.methods!r}")
    wanted = None
    if args.indices:
        wanted = set()
        for part in args.indices.split(","):
            lo, _, hi = part.partition("-")
            wanted.update(range(int(lo), int(hi or lo) + 1))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    warnings.simplefilter("ignore", UserWarning)
    torch.set_num_threads(1)
    results = {"command": command, "runs": [], "load_start": [round(x, 2) for x in os.getloadavg()]}
    if os.path.exists(args.out + ".json"):  # resume: truths already done are kept and skipped
        old = json.load(open(args.out + ".json"))
        results["runs"] = old.get("runs", [])
    done = {r["truth"] for r in results["runs"]}
    t0 = time.perf_counter()
    for i, (name, spec) in enumerate(truths(n)):
        if (wanted is not None and i not in wanted) or name in done:
            continue
        if args.max_minutes is not None and time.perf_counter() - t0 > 60 * args.max_minutes:
            log.info("time limit reached after %d truths", len(results["runs"]))
            break
        r = run_one(name, spec, seed=i, quick=args.quick, methods=() if args.quick else methods)
        results["runs"].append(r)
        log.info("%s: %s", name, {k: v for k, v in r.items() if isinstance(v, dict)})
        results.update(n_truths=len(results["runs"]), seconds=time.perf_counter() - t0,
                       summary=summarise(results["runs"]))
        write_text_atomic(args.out + ".json", json.dumps(results, indent=1))
        write_text_atomic(args.out + ".md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
