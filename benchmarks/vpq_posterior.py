"""Joint vp-Q posterior of a visco-acoustic frequency-domain problem: MAP, Laplace and NUTS (issue 16).

Problem (full size)
-------------------
20 x 30 cells of 25 m (500 m x 750 m). Crosswell transmission: 3 sources on column 1 (rows 3, 10, 17), 10
receivers on column 28 (every other row). Visco-acoustic Helmholtz operator (:class:`probinv.models.FrequencyForward`,
Kolsky-Futterman Q, reference frequency the highest one), 6 frequencies 2-7 Hz, sources the DFT spectrum of a 5 Hz
Ricker (``dt`` 2 ms, 1000 samples), PML 6 cells on every side (thin for 2 Hz: some reflections, but data and
inversion share the operator, so the posterior and its calibration are exact for it; it keeps a gradient at ~0.1 s),
data = real and imaginary parts.
Priors: vp a whitened Matern (nu = 1.5, a = 150 m) field, mean 2000 m/s, std 100 m/s, bounds (1500, 2600) m/s;
ln Q the same covariance, median Q = 50, log-std 0.4 (Q within a factor 2.2 either way at 2 sigma), bounds (5, 1000);
each truncated to ``--modes`` Karhunen-Loeve modes (the latent space NUTS samples); joint coupling ``--rho`` (0).
Noise: Gaussian, sigma = ``--noise`` (2 %) of the RMS of the clean data.

Runs
----
* One truth from the prior: MAP (L-BFGS), Laplace (full rank), NUTS (Laplace-preconditioned, 2 chains): std maps of
  vp and Q, the map of the vp-Q posterior correlation (pixelwise, vp against ln Q, from the draws), r-hat (max over
  the latent coordinates), Laplace/NUTS std ratio (median over pixels), the median posterior/prior std ratio of vp
  and of Q (how much the data teach about each).
* Calibration: ``--truths`` truths z ~ N(0, I), new noisy data each: fraction of pixels inside the equal-tailed
  50 % / 90 % intervals of vp and of Q, for Laplace and (``--nuts-truths`` of them, one chain each: NUTS costs
  ~0.1 s a gradient here) NUTS, mean over truths with the standard error over truths.

Usage::

    python benchmarks/vpq_posterior.py            # full size
    python benchmarks/vpq_posterior.py --quick    # a smoke run of a few seconds (tested in the default suite)

Results: ``benchmarks/results/vpq_posterior.json``, ``.md`` and ``vpq_posterior.png`` (atomic writes).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv._files import write_text_atomic  # noqa: E402
from probinv.diagnostics import coverage, rhat  # noqa: E402
from probinv.fields import JointVpQPrior, LogQField, WhitenedField  # noqa: E402
from probinv.inference import laplace, nuts  # noqa: E402
from probinv.models import Gaussian, ViscoAcousticForward, build_joint_model  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
D = torch.float64

FULL = dict(nz=20, nx=30, dx=25.0, freqs=[2.0, 3.0, 4.0, 5.0, 6.0, 7.0], n_shots=3, rec_every=2, pml=6, modes=16,
            a=150.0, ricker=5.0, samples=200, warmup=200, chains=2, truths=20, nuts_truths=3, cal_samples=150,
            cal_warmup=150, cal_chains=1, map_steps=100)
QUICK = dict(nz=6, nx=8, dx=25.0, freqs=[6.0, 9.0], n_shots=2, rec_every=2, pml=4, modes=3, a=60.0,
             ricker=5.0, samples=10, warmup=10, chains=2, truths=2, nuts_truths=1, cal_samples=10, cal_warmup=10,
             cal_chains=1, map_steps=15)


def problem(cfg, rho=0.0, noise=0.02):
    """Priors, forward operator and the settings of one configuration."""
    nz, nx, dx = cfg["nz"], cfg["nx"], cfg["dx"]
    kw = dict(covariance="matern", nu=1.5, a_z=cfg["a"], a_x=cfg["a"], n_modes=cfg["modes"], dtype=D)
    vp = WhitenedField((nz, nx), dx, mean=2000.0, std=100.0, bounds=(1500.0, 2600.0), **kw)
    q = LogQField((nz, nx), dx, q_median=50.0, log_std=0.4, bounds=(5.0, 1000.0), **kw)
    joint = JointVpQPrior(vp, q, rho)
    rows = np.linspace(3, nz - 3, cfg["n_shots"]).round().astype(int)
    src = torch.tensor([[[int(r), 1]] for r in rows])
    rec_rows = list(range(0, nz, cfg["rec_every"]))
    rec = torch.tensor([[[r, nx - 2] for r in rec_rows]] * len(rows))
    fwd = ViscoAcousticForward(dx, cfg["freqs"], src, rec, freq=cfg["ricker"], dt=2e-3, nt=1000,
                               options={"pml_width": cfg["pml"]})
    return joint, fwd


def simulate(joint, fwd, z_v, z_q, noise, gen):
    fields = joint.fields(z_v, z_q)
    with torch.no_grad():
        clean = fwd(fields)
    sigma = noise * float(clean.square().mean().sqrt())
    data = clean + sigma * torch.randn(clean.shape, dtype=D, generator=gen)
    return fields, data, sigma


def _draws(post, name):
    return post.samples[name].reshape((-1,) + tuple(post.samples[name].shape[-2:]))


def _corr_map(vp, q):
    a = vp - vp.mean(0)
    b = torch.log(q) - torch.log(q).mean(0)
    return (a * b).mean(0) / (a.std(0, unbiased=False) * b.std(0, unbiased=False)).clamp_min(1e-30)


def infer(joint, fwd, data, sigma, cfg, *, seed, run_nuts=True, samples=None, warmup=None, chains=None):
    model = build_joint_model(joint, fwd, data, noise=Gaussian(sigma))
    t0 = time.perf_counter()
    lap = laplace(model, rank=2 * cfg["modes"], num_samples=2000, seed=seed,
                  map_kwargs={"optimizer": "lbfgs", "num_steps": cfg["map_steps"], "lr": 1.0})
    t_lap = time.perf_counter() - t0
    out = {"laplace": lap, "t_laplace": t_lap}
    if run_nuts:
        t0 = time.perf_counter()
        out["nuts"] = nuts(model, num_samples=samples or cfg["samples"], warmup_steps=warmup or cfg["warmup"],
                           num_chains=chains or cfg["chains"], laplace_posterior=lap, seed=seed)
        out["t_nuts"] = time.perf_counter() - t0
    return out


def single(cfg, rho, noise, seed=0):
    joint, fwd = problem(cfg, rho, noise)
    gen = torch.Generator().manual_seed(seed)
    z_v = torch.randn(joint.vp.latent_dim, dtype=D, generator=gen)
    z_q = torch.randn(joint.q.latent_dim, dtype=D, generator=gen)
    truth, data, sigma = simulate(joint, fwd, z_v, z_q, noise, gen)
    res = infer(joint, fwd, data, sigma, cfg, seed=seed)
    lap, nu = res["laplace"], res["nuts"]
    prior = joint.sample(4000, generator=torch.Generator().manual_seed(99))
    prior_std = {"vp": prior["vp"].std(0), "q": prior["q"].std(0)}
    out = {"seconds_laplace": res["t_laplace"], "seconds_nuts": res["t_nuts"],
           "n_gradients_nuts": nu.attrs.get("n_gradients"), "sigma": sigma}
    maps = {"true_vp": truth["vp"], "true_q": truth["q"]}
    for meth, post in (("laplace", lap), ("nuts", nu)):
        vp, q = _draws(post, "vp"), _draws(post, "q")
        maps[f"{meth}_mean_vp"], maps[f"{meth}_mean_q"] = vp.mean(0), q.mean(0)
        maps[f"{meth}_std_vp"], maps[f"{meth}_std_q"] = vp.std(0), q.std(0)
        maps[f"{meth}_corr"] = _corr_map(vp, q)
        for name in ("vp", "q"):
            out[f"{meth}_median_std_{name}"] = float(maps[f"{meth}_std_{name}"].median())
            out[f"{meth}_median_std_over_prior_{name}"] = float((maps[f"{meth}_std_{name}"] /
                                                                 prior_std[name]).median())
            out[f"{meth}_median_rel_std_{name}"] = float((maps[f"{meth}_std_{name}"] /
                                                          maps[f"{meth}_mean_{name}"]).median())
        out[f"{meth}_median_abs_corr"] = float(maps[f"{meth}_corr"].abs().median())
        out[f"{meth}_coverage"] = {name: coverage(_draws(post, name), truth[name]) for name in ("vp", "q")}
    for name in ("vp", "q"):
        ratio = maps[f"laplace_std_{name}"] / maps[f"nuts_std_{name}"]
        out[f"laplace_over_nuts_std_median_{name}"] = float(ratio.median())
    latent = torch.cat([nu.samples["vp_z"], nu.samples["q_z"]], dim=-1)
    out["rhat_max"] = float(np.nanmax(rhat(latent)))
    out["rhat_max_fields"] = max(float(np.nanmax(rhat(nu.samples[n]))) for n in ("vp", "q"))
    out["divergences"] = int(np.asarray(nu.sample_stats["diverging"]).sum()) if hasattr(nu, "sample_stats") else None
    return out, {k: v.detach().cpu().numpy() for k, v in maps.items()}


def calibration(cfg, rho, noise, n_truths, n_nuts, seed0=1000):
    """Coverage over ``n_truths`` prior truths (seeds ``seed0 + i``); the first ``n_nuts`` of them also run NUTS."""
    joint, fwd = problem(cfg, rho, noise)
    runs = []
    for i in range(n_truths):
        t_truth = time.perf_counter()
        gen = torch.Generator().manual_seed(seed0 + i)
        z_v = torch.randn(joint.vp.latent_dim, dtype=D, generator=gen)
        z_q = torch.randn(joint.q.latent_dim, dtype=D, generator=gen)
        truth, data, sigma = simulate(joint, fwd, z_v, z_q, noise, gen)
        res = infer(joint, fwd, data, sigma, cfg, seed=seed0 + i, run_nuts=i < n_nuts, samples=cfg["cal_samples"],
                    warmup=cfg["cal_warmup"], chains=cfg["cal_chains"])
        run = {}
        for meth in ("laplace", "nuts"):
            if meth in res:
                run[meth] = {name: coverage(_draws(res[meth], name), truth[name]) for name in ("vp", "q")}
                # the latent coordinates too: the whitened z is what Laplace approximates by a Gaussian, so a shortfall
                # in z (not only in the bounded fields) points at the Gaussian approximation rather than the transform
                for name, z in (("vp_z", z_v), ("q_z", z_q)):
                    if name in res[meth].samples:
                        run[meth][name] = coverage(res[meth].samples[name].reshape(-1, z.numel()), z)
        run["seed"] = seed0 + i
        run["seconds"] = time.perf_counter() - t_truth
        runs.append(run)
        print(f"  truth {i + 1}/{n_truths}: {json.dumps(run)}", flush=True)
    summary = {}
    for meth in ("laplace", "nuts"):
        for name in ("vp", "q", "vp_z", "q_z"):
            for p in (0.5, 0.9):
                vals = np.array([r[meth][name][p] for r in runs if meth in r and name in r[meth]])
                if len(vals):
                    se = float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")
                    summary[f"{meth}_{name}_{int(p * 100)}"] = {"mean": float(vals.mean()), "se": se,
                                                                "n_truths": int(len(vals))}
    return summary, runs


def figure(maps, path):
    import matplotlib  # noqa: PLC0415  (optional: plotting extra)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    keys = [("true_vp", "true vp (m/s)"), ("nuts_mean_vp", "NUTS mean vp"), ("laplace_std_vp", "Laplace std vp"),
            ("nuts_std_vp", "NUTS std vp"), ("true_q", "true Q"), ("nuts_mean_q", "NUTS mean Q"),
            ("laplace_std_q", "Laplace std Q"), ("nuts_std_q", "NUTS std Q"), ("nuts_corr", "NUTS corr(vp, ln Q)")]
    fig, axes = plt.subplots(3, 3, figsize=(12, 8))
    for ax, (k, title) in zip(axes.ravel(), keys, strict=False):
        im = ax.imshow(maps[k], cmap="RdBu_r" if "corr" in k else "viridis",
                       vmin=-1 if "corr" in k else None, vmax=1 if "corr" in k else None)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)
    plt.close(fig)


def markdown(res):
    s = res["single"]
    lines = ["# Joint vp-Q posterior (visco-acoustic, frequency domain)", "",
             f"Command: `{res['command']}`  ", f"Machine: {res['machine']}; wall time {res['seconds']:.0f} s", "",
             f"Grid {res['config']['nz']} x {res['config']['nx']}, {len(res['config']['freqs'])} frequencies, "
             f"{res['config']['n_shots']} shots, {res['config']['modes']} modes per field, rho = {res['rho']}", ""]
    lines += _single_lines(s) if s else ["(single-truth run skipped: --calibration-only)"]
    return _calibration_lines(res, lines)


def _single_lines(s):
    lines = ["| quantity | vp | Q |", "|---|---|---|"]
    for meth in ("laplace", "nuts"):
        lines.append(f"| {meth} median std | {s[f'{meth}_median_std_vp']:.3g} m/s | {s[f'{meth}_median_std_q']:.3g} |")
        lines.append(f"| {meth} median std / mean | {s[f'{meth}_median_rel_std_vp']:.3f} | "
                     f"{s[f'{meth}_median_rel_std_q']:.3f} |")
        lines.append(f"| {meth} median posterior / prior std | {s[f'{meth}_median_std_over_prior_vp']:.3f} | "
                     f"{s[f'{meth}_median_std_over_prior_q']:.3f} |")
    lines.append(f"| Laplace / NUTS std (median) | {s['laplace_over_nuts_std_median_vp']:.3f} | "
                 f"{s['laplace_over_nuts_std_median_q']:.3f} |")
    lines += ["", f"NUTS r-hat max (latent) {s['rhat_max']:.4f}, (fields) {s['rhat_max_fields']:.4f}; "
              f"median |corr(vp, ln Q)| NUTS {s['nuts_median_abs_corr']:.3f}, "
              f"Laplace {s['laplace_median_abs_corr']:.3f}"]
    return lines


def _calibration_lines(res, lines):
    lines += ["", "## Calibration (fraction of pixels inside the interval, mean +- s.e. over truths)", "",
              "| method | field | 50 % | 90 % | truths |", "|---|---|---|---|---|"]
    cal = res["calibration"]
    for meth in ("laplace", "nuts"):
        for name in ("vp", "q", "vp_z", "q_z"):
            a, b = cal.get(f"{meth}_{name}_50"), cal.get(f"{meth}_{name}_90")
            if a:
                lines.append(f"| {meth} | {name} | {a['mean']:.3f} +- {a['se']:.3f} | {b['mean']:.3f} +- "
                             f"{b['se']:.3f} | {a['n_truths']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--rho", type=float, default=0.0, help="prior correlation of the whitened vp and ln Q fields")
    ap.add_argument("--noise", type=float, default=0.02, help="noise std relative to the clean data RMS")
    ap.add_argument("--truths", type=int, default=None, help="calibration truths (Laplace)")
    ap.add_argument("--nuts-truths", type=int, default=None, help="calibration truths that also run NUTS")
    ap.add_argument("--modes", type=int, default=None, help="Karhunen-Loeve modes per field")
    ap.add_argument("--samples", type=int, default=None, help="NUTS draws per chain (single truth)")
    ap.add_argument("--warmup", type=int, default=None, help="NUTS warm-up steps per chain (single truth)")
    ap.add_argument("--cal-samples", type=int, default=None, help="NUTS draws per calibration truth (default 150)")
    ap.add_argument("--cal-warmup", type=int, default=None, help="NUTS warm-up steps per calibration truth (150)")
    ap.add_argument("--seed0", type=int, default=1000, help="seed of the first calibration truth (truth i: seed0 + i)")
    ap.add_argument("--calibration-only", action="store_true", help="skip the single-truth MAP / Laplace / NUTS run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = dict(QUICK if args.quick else FULL)
    if args.modes:
        cfg["modes"] = args.modes
    if args.samples:
        cfg["samples"] = args.samples
    if args.warmup:
        cfg["warmup"] = args.warmup
    if args.cal_samples:
        cfg["cal_samples"] = args.cal_samples
    if args.cal_warmup:
        cfg["cal_warmup"] = args.cal_warmup
    n_truths = cfg["truths"] if args.truths is None else args.truths
    n_nuts = min(n_truths, cfg["nuts_truths"] if args.nuts_truths is None else args.nuts_truths)
    t0 = time.perf_counter()
    single_res, maps = (None, None) if args.calibration_only else single(cfg, args.rho, args.noise)
    print(json.dumps(single_res, indent=1), flush=True)
    cal, runs = calibration(cfg, args.rho, args.noise, n_truths, n_nuts, seed0=args.seed0)
    res = {"command": "python benchmarks/vpq_posterior.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                      f"{args.threads} thread(s)",
           "config": cfg, "seed0": args.seed0, "rho": args.rho, "noise": args.noise, "single": single_res,
           "calibration": cal,
           "calibration_runs": runs, "seconds": time.perf_counter() - t0}
    os.makedirs(args.out, exist_ok=True)
    write_text_atomic(os.path.join(args.out, "vpq_posterior.json"), json.dumps(res, indent=1, default=float))
    write_text_atomic(os.path.join(args.out, "vpq_posterior.md"), markdown(res))
    if maps is not None:
        figure(maps, os.path.join(args.out, "vpq_posterior.png"))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
