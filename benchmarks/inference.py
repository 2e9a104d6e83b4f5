"""Inference benchmark (issue 3): efficiency of NUTS (with / without Laplace preconditioning), SVI and SVGD, and the
calibration of every method (fraction of pixels inside the 50 % and 90 % credible intervals over truths drawn from
the prior).

Problems
--------
linear    6 x 6 field, 20 m cells, Matern nu = 1.5 (a = 60 m, std 100 m/s) whitened prior truncated to 6 modes; forward
          = a fixed random matrix (4 shots x 3 receivers); Gaussian noise sigma = 2 (the exact posterior is known).
acoustic  16 x 16 cells of 20 m, the same prior family (a = 100 m) with 6 modes, bounded to (1500, 2600) m/s;
          transmission geometry (2 sources on the left edge, 10 receivers on the right edge), 5 Hz Ricker, 138 steps
          of 4 ms, PML 5 cells, 2 % noise (relative to the peak amplitude). As in tests/test_inference_acoustic.py.

Metrics
-------
* NUTS: min over latent coordinates of the bulk ESS; ESS per second and per gradient (sampling phase, and all
  gradients including warm-up); gradients per effective sample with and without Laplace preconditioning.
* SVI (AutoNormal / AutoMultivariateNormal) and SVGD: wall time and steps to convergence (ELBO window test / SVGD
  update below tolerance).
* Calibration: over ``--truths-*`` truths z ~ N(0, I) (fields from the prior), new noisy data each, the fraction of
  the grid's pixels inside each method's equal-tailed 50 % and 90 % intervals, averaged over truths (with the
  standard error over truths). A calibrated method gives 0.50 and 0.90; mean-field SVI is expected to under-cover.

Usage::

    GOMP_SPINCOUNT=1000 python benchmarks/inference.py   # full size (59 min on 2 cores, 2 workers)
    python benchmarks/inference.py --quick         # reduced sizes (a few minutes)
    python benchmarks/inference.py --only linear
    python benchmarks/inference.py --acoustic-calibration   # acoustic calibration over 40 truths only

Results: ``benchmarks/results/inference.json`` and ``inference.md`` (atomic writes); finished cases are kept in the
JSON and skipped on a re-run with the same configuration (resume after an interruption), unless ``--fresh``.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv import diagnostics  # noqa: E402
from probinv._files import write_text_atomic  # noqa: E402
from probinv.fields import WhitenedField  # noqa: E402
from probinv.inference import laplace, map, nuts, svgd, svi  # noqa: E402
from probinv.models import AcousticForward, Gaussian, build_model  # noqa: E402
from probinv.physics import ricker  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DT = torch.float64
log = logging.getLogger("benchmarks.inference")


def _write_atomic(path, text):
    write_text_atomic(path, text)


# ---------------------------------------------------------------------------------------------------------- problems
def linear_problem(seed):
    g = torch.Generator().manual_seed(1000)
    prior = WhitenedField((6, 6), 20.0, covariance="matern", nu=1.5, a_z=60.0, a_x=60.0, mean=2500.0, std=100.0,
                          n_modes=6, dtype=DT)
    G = torch.randn(4, 3, 36, generator=g, dtype=DT) * 0.1

    def forward(fields, shots=None):
        gg = G if shots is None else G[shots]
        v = fields["vp"]
        return torch.einsum("srp,...p->...sr", gg, v.reshape(v.shape[:-2] + (-1,)))

    gt = torch.Generator().manual_seed(seed)
    z = torch.randn(6, generator=gt, dtype=DT)
    sigma = 2.0
    data = forward({"vp": prior(z)}) + sigma * torch.randn(4, 3, generator=gt, dtype=DT)
    return build_model({"vp": prior}, forward, data, noise=Gaussian(sigma)), prior(z), z


def acoustic_problem(seed):
    n, dx, dt, nt = 16, 20.0, 0.004, 138
    prior = WhitenedField((n, n), dx, covariance="matern", nu=1.5, a_z=100.0, a_x=100.0, mean=2000.0, std=100.0,
                          n_modes=6, bounds=(1500.0, 2600.0), dtype=DT)
    src = torch.tensor([[[3, 0]], [[7, 0]]])
    rec = torch.tensor([[[j, n - 1] for j in range(10)]] * 2)
    amp = ricker(5.0, nt, dt, dtype=DT).reshape(1, 1, -1).repeat(2, 1, 1)
    fwd = AcousticForward(dx, dt, amp, src, rec, options={"pml_width": 5, "pml_vmax": 2600.0})  # smooth map
    gt = torch.Generator().manual_seed(seed)
    z = torch.randn(6, generator=gt, dtype=DT)
    clean = fwd({"vp": prior(z)})
    sigma = 0.02 * float(clean.abs().max())
    data = clean + sigma * torch.randn(clean.shape, generator=gt, dtype=DT)
    return build_model({"vp": prior}, fwd, data, noise=Gaussian(sigma)), prior(z), z


PROBLEMS = {"linear": linear_problem, "acoustic": acoustic_problem}


# ---------------------------------------------------------------------------------------------------------- cases
# Every case is an independent task (one NUTS chain, the optimisers, one calibration truth) run in a pool of worker
# processes with one thread each: these problems are too small for two threads to help (measured: 0.119 s per
# acoustic gradient with 2 threads, 0.109 s with 1), so two workers use both cores. Chain ``c`` of a NUTS run is
# ``nuts(..., num_chains=1, seed=c)``, the same chain as in one ``nuts(..., num_chains=C, seed=0)`` call.
def _map_laplace(model, cfg, seed=0, **kw):
    m = map(model, optimizer="lbfgs", num_steps=cfg["map_steps"], lr=1.0)
    return m, laplace(model, map_posterior=m, seed=seed, **kw)


def nuts_chain(name, cfg, pre, chain):
    """One NUTS chain on the problem of seed 0, with (``pre="laplace"``) or without Laplace preconditioning."""
    model, _, _ = PROBLEMS[name](0)
    m, lap = _map_laplace(model, cfg)
    post = nuts(model, precondition=pre, laplace_posterior=lap if pre else None,
                init=None if pre else {k: v[0, 0] for k, v in m.samples.items() if k.endswith("_z")},
                num_samples=cfg["nuts_samples"], warmup_steps=cfg["nuts_warmup"], num_chains=1,
                max_tree_depth=cfg["max_tree_depth"], seed=chain)
    st = post.sample_stats
    return {"vp_z": post.samples["vp_z"][0].tolist(), "seconds": post.attrs["seconds"],
            "n_gradients": post.attrs["n_gradients"], "n_gradients_sampling": post.attrs["n_gradients_sampling"],
            "tree_depth": st["tree_depth"][0].double().tolist(), "step_size": float(st["step_size"][0].mean()),
            "divergences": int(st["diverging"].sum())}


def combine_chains(chains):
    """Efficiency metrics of NUTS from its chains (results of :func:`nuts_chain`)."""
    z = np.stack([np.asarray(c["vp_z"]) for c in chains])  # [chain, draw, K]
    ess_min = float(diagnostics.ess(z).min())
    seconds = sum(c["seconds"] for c in chains)
    n_grad = sum(c["n_gradients"] for c in chains)
    n_grad_s = sum(c["n_gradients_sampling"] for c in chains)
    return {"seconds": seconds, "n_gradients": n_grad, "n_gradients_sampling": n_grad_s, "ess_min": ess_min,
            "rhat_max": float(diagnostics.rhat(z).max()) if len(chains) > 1 else float("nan"),
            "ess_per_second": ess_min / seconds, "ess_per_gradient": ess_min / n_grad_s,
            "gradients_per_effective_sample": n_grad / ess_min,
            "mean_tree_depth": float(np.mean([c["tree_depth"] for c in chains])),
            "mean_step_size": float(np.mean([c["step_size"] for c in chains])),
            "divergences": sum(c["divergences"] for c in chains)}


def optimisers(name, cfg):
    """MAP, Laplace, SVI and SVGD time to convergence on the problem of seed 0."""
    model, _, _ = PROBLEMS[name](0)
    out = {}
    t0 = time.perf_counter()
    m = map(model, optimizer="lbfgs", num_steps=cfg["map_steps"], lr=1.0)
    out["map"] = {"seconds": time.perf_counter() - t0, "n_gradients": m.attrs["n_gradients"]}
    t0 = time.perf_counter()
    lap = laplace(model, map_posterior=m)
    out["laplace"] = {"seconds": time.perf_counter() - t0, "solver_passes": lap.attrs["solver_passes"],
                      "eigvals": [float(x) for x in lap.gaussian.eigvals]}
    for guide in ("normal", "multivariate"):
        post = svi(model, guide=guide, laplace_posterior=lap, num_steps=cfg["svi_steps"], lr=0.02,
                   num_particles=cfg["svi_particles"], tol=1e-3, window=50, num_samples=500, seed=0)
        out[f"svi_{guide}"] = {"seconds": post.attrs["seconds"], "n_steps": post.attrs["n_steps"],
                               "converged": post.attrs["converged"], "n_gradients": post.attrs["n_gradients"]}
    post = svgd(model, num_particles=cfg["svgd_particles"], num_steps=cfg["svgd_steps"], lr=0.05,
                laplace_posterior=lap, tol=cfg["svgd_tol"], seed=0)
    out["svgd"] = {"seconds": post.attrs["seconds"], "n_steps": post.attrs["n_steps"],
                   "final_update": post.attrs["update"][-1], "n_gradients": post.attrs["n_gradients"]}
    return out


def calibration_one(name, seed, cfg):
    """Coverage of every method on the truth and data of ``seed``."""
    model, truth, _ = PROBLEMS[name](seed)
    _, lap = _map_laplace(model, cfg, seed=seed, num_samples=2000)
    res = {"laplace": diagnostics.coverage(lap.samples["vp"], truth)}
    post = nuts(model, num_samples=cfg["cal_nuts_samples"], warmup_steps=cfg["cal_nuts_warmup"],
                num_chains=cfg["cal_nuts_chains"], laplace_posterior=lap, seed=seed)
    res["nuts"] = diagnostics.coverage(post.samples["vp"], truth)
    res["nuts_rhat_max"] = float(diagnostics.rhat(post.samples["vp_z"]).max()) if cfg["cal_nuts_chains"] > 1 \
        else None
    post = svi(model, guide="normal", laplace_posterior=lap, num_steps=cfg["svi_steps"], lr=0.02,
               num_particles=cfg["svi_particles"], tol=1e-3, window=50, num_samples=2000, seed=seed)
    res["svi_normal"] = diagnostics.coverage(post.samples["vp"], truth)
    post = svgd(model, num_particles=cfg["svgd_particles"], num_steps=cfg["svgd_steps"], lr=0.05,
                laplace_posterior=lap, tol=cfg["svgd_tol"], seed=seed)
    res["svgd"] = diagnostics.coverage(post.samples["vp"], truth)
    return res


def make_tasks(cfgs, names, skip_efficiency):
    """``{key: (function name, args)}``, longest first (the pool starts them in this order)."""
    tasks = {}
    for pre in ("none", "laplace"):
        for name in names:
            if not skip_efficiency:
                for c in range(cfgs[name]["eff_chains"]):
                    tasks[f"{name}/nuts_{pre}/chain{c}"] = ("nuts_chain", (name, cfgs[name], None if pre == "none"
                                                                           else "laplace", c))
    for name in names:
        for seed in range(cfgs[name]["truths"]):
            tasks[f"{name}/truth{seed}"] = ("calibration_one", (name, 100 + seed, cfgs[name]))
        if not skip_efficiency:
            tasks[f"{name}/optimisers"] = ("optimisers", (name, cfgs[name]))
    return tasks


def run_task(fn, args):
    """Worker entry point: one thread, quiet warnings, the task's wall time recorded."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    t0 = time.perf_counter()
    out = globals()[fn](*args)
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def collect(results, names, cfgs):
    """Efficiency and calibration summaries from the finished tasks."""
    tasks = results["tasks"]
    for name in names:
        eff = {}
        for pre in ("laplace", "none"):
            chains = [tasks.get(f"{name}/nuts_{pre}/chain{c}") for c in range(cfgs[name]["eff_chains"])]
            if all(chains):
                eff[f"nuts_{pre}"] = combine_chains(chains)
        if f"{name}/optimisers" in tasks and len(eff) == 2:
            eff.update({k: v for k, v in tasks[f"{name}/optimisers"].items() if k != "wall_seconds"})
            results["efficiency"][name] = eff
        runs = [tasks[k] for k in sorted(tasks, key=lambda k: (len(k), k)) if k.startswith(f"{name}/truth")]
        if runs:
            results["calibration_runs"][name] = runs
            results["calibration"][name] = summarise_calibration(runs)


CONFIG = {
    "linear": dict(map_steps=100, nuts_samples=1000, nuts_warmup=300, svi_steps=3000, svi_particles=16,
                   svgd_particles=50, svgd_steps=1000, svgd_tol=1e-4, cal_nuts_samples=500, cal_nuts_warmup=200,
                   cal_nuts_chains=2, truths=20, eff_chains=2, max_tree_depth=8),
    "acoustic": dict(map_steps=40, nuts_samples=150, nuts_warmup=100, svi_steps=600, svi_particles=4,
                     svgd_particles=16, svgd_steps=150, svgd_tol=1e-3, cal_nuts_samples=150, cal_nuts_warmup=60,
                     cal_nuts_chains=1, truths=10, eff_chains=2, max_tree_depth=7),
}
QUICK = {
    "linear": dict(nuts_samples=300, nuts_warmup=100, svi_steps=1000, svgd_steps=300, cal_nuts_samples=200,
                   cal_nuts_warmup=100, truths=20),
    "acoustic": dict(nuts_samples=40, nuts_warmup=30, svi_steps=50, svgd_particles=8, svgd_steps=20,
                     cal_nuts_samples=60, cal_nuts_warmup=40, truths=0, eff_chains=1, max_tree_depth=5),
}


def summarise_calibration(runs):
    methods = [k for k, v in runs[0].items() if isinstance(v, dict)]
    out = {}
    for meth in methods:
        for p in ("0.5", "0.9"):
            vals = np.array([r[meth][p] if p in r[meth] else r[meth][float(p)] for r in runs])
            out.setdefault(meth, {})[p] = {"mean": float(vals.mean()),
                                           "stderr": float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1
                                           else None}
    return out


def markdown(results):
    lines = ["# Inference benchmark", "", f"Command: `{results['command']}`  ", f"Machine: {results['machine']}  ",
             f"torch {results['torch']}, pyro {results['pyro']}, float64, {results['threads']} thread(s)", ""]
    for name in ("linear", "acoustic"):
        eff = results.get("efficiency", {}).get(name)
        if eff:
            lines += [f"## {name}: efficiency", "",
                      "| method | seconds | gradients | min bulk ESS | ESS/s | ESS/gradient (sampling) | "
                      "gradients per effective sample | r-hat max | mean tree depth | step size |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for key, label in (("nuts_laplace", "NUTS, Laplace-preconditioned"), ("nuts_none", "NUTS, plain")):
                r = eff[key]
                lines.append(f"| {label} | {r['seconds']:.1f} | {r['n_gradients']} | {r['ess_min']:.0f} | "
                             f"{r['ess_per_second']:.2f} | {r['ess_per_gradient']:.4f} | "
                             f"{r['gradients_per_effective_sample']:.1f} | {r['rhat_max']:.3f} | "
                             f"{r['mean_tree_depth']:.2f} | {r['mean_step_size']:.3g} |")
            lines += ["", "| method | seconds | steps | converged | gradients |", "|---|---|---|---|---|",
                      f"| MAP (L-BFGS) | {eff['map']['seconds']:.2f} | - | - | {eff['map']['n_gradients']} |",
                      f"| Laplace (after MAP) | {eff['laplace']['seconds']:.2f} | - | - | "
                      f"{eff['laplace']['solver_passes']} solver passes |"]
            for key in ("svi_normal", "svi_multivariate"):
                r = eff[key]
                lines.append(f"| SVI {key[4:]} | {r['seconds']:.1f} | {r['n_steps']} | {r['converged']} | "
                             f"{r['n_gradients']} |")
            r = eff["svgd"]
            lines += [f"| SVGD | {r['seconds']:.1f} | {r['n_steps']} | update {r['final_update']:.2g} | "
                      f"{r['n_gradients']} |", ""]
        cal = results.get("calibration", {}).get(name)
        if cal:
            n = len(results["calibration_runs"][name])
            lines += [f"## {name}: calibration over {n} truths drawn from the prior", "",
                      "| method | inside 50 % interval | inside 90 % interval |", "|---|---|---|"]
            for meth, v in cal.items():
                def fmt(x):
                    return f"{x['mean']:.3f}" + (f" ± {x['stderr']:.3f}" if x["stderr"] is not None else "")
                lines.append(f"| {meth} | {fmt(v['0.5'])} | {fmt(v['0.9'])} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes")
    ap.add_argument("--only", choices=["linear", "acoustic"], action="append")
    ap.add_argument("--truths-linear", type=int)
    ap.add_argument("--truths-acoustic", type=int)
    ap.add_argument("--skip-efficiency", action="store_true")
    ap.add_argument("--acoustic-calibration", action="store_true",
                    help="the acoustic calibration alone over 40 truths (standard error <= 5 points: the per-truth "
                         "coverage spread of ~0.3 / sqrt(40)); same as --only acoustic --skip-efficiency "
                         "--truths-acoustic 40 (about an hour on 2 cores)")
    ap.add_argument("--workers", type=int, default=2,
                    help="worker processes, one thread each (default 2: one per core of the reference machine)")
    ap.add_argument("--fresh", action="store_true", help="ignore earlier results")
    ap.add_argument("--out", default=os.path.join(RESULTS, "inference"))
    args = ap.parse_args(argv)
    if args.acoustic_calibration:
        args.only, args.skip_efficiency = ["acoustic"], True
        args.truths_acoustic = args.truths_acoustic if args.truths_acoustic is not None else 40
    if args.workers < 1:
        ap.error(f"--workers must be >= 1, got {args.workers}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    warnings.simplefilter("ignore", UserWarning)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    cfgs = {k: dict(v) for k, v in CONFIG.items()}
    if args.quick:
        for k, v in QUICK.items():
            cfgs[k].update(v)
    if args.truths_linear is not None:
        cfgs["linear"]["truths"] = args.truths_linear
    if args.truths_acoustic is not None:
        cfgs["acoustic"]["truths"] = args.truths_acoustic
    names = args.only or ["linear", "acoustic"]
    path_json = args.out + ".json"
    results = {}
    if os.path.exists(path_json) and not args.fresh:
        with open(path_json) as f:
            results = json.load(f)
        if results.get("config") != cfgs or "tasks" not in results:
            log.info("configuration changed: starting afresh")
            results = {}
    import platform  # noqa: PLC0415

    import pyro  # noqa: PLC0415
    results.update({"config": cfgs, "command": "python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:])),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "torch": torch.__version__, "pyro": pyro.__version__, "threads": 1, "workers": args.workers})
    for key in ("tasks", "efficiency", "calibration_runs", "calibration"):
        results.setdefault(key, {})

    def save():
        collect(results, names, cfgs)
        _write_atomic(path_json, json.dumps(results, indent=1))
        _write_atomic(args.out + ".md", markdown(results))

    todo = {k: v for k, v in make_tasks(cfgs, names, args.skip_efficiency).items() if k not in results["tasks"]}
    log.info("%d tasks to run (%d already done), %d workers; load average %s", len(todo), len(results["tasks"]),
             args.workers, os.getloadavg())
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_task, fn, fargs): key for key, (fn, fargs) in todo.items()}
        for fut in as_completed(futures):
            key = futures[fut]
            results["tasks"][key] = fut.result()
            log.info("done %s in %.0f s (%d/%d); load average %s", key, results["tasks"][key]["wall_seconds"],
                     len(results["tasks"]), len(results["tasks"]) + sum(not f.done() for f in futures),
                     os.getloadavg())
            save()
    results["wall_seconds_this_run"] = time.perf_counter() - t0
    results["load_average_end"] = os.getloadavg()
    save()
    print(markdown(results))


if __name__ == "__main__":
    main()
