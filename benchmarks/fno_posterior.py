"""Bayesian inversion through the trained FNO surrogate (issue 6, "the surrogate as a likelihood").

Problem (64 x 64 cells of 160 m, paper 1's grid):

* prior: paper 1's von Karman family (kappa 0.5, a = 1.6 km, mean 3000 m/s, std 150 m/s) in the whitened
  parameterisation truncated to ``--modes`` leading modes, bounded to (2400, 3600) m/s;
* truth: a draw from that prior (seed ``--seed``), so it is representable;
* acquisition: ``--sources`` point sources on paper 1's FWI lattice, receivers on a regular grid every
  ``--receiver-step`` nodes, the surrogate's 64 frames (0.25 s apart... see ``operator.time``);
* data: the finite-difference solver (the physics the network was trained on), plus Gaussian noise of
  ``--noise`` x the peak amplitude;
* likelihood through the FNO (:class:`probinv.surrogate.FNOOperator`) with the surrogate's error, four ways:

  - ``calibrated`` (default): ``conditional`` below, with the covariance scaled by the held-out chi2 of the
    residuals along the whitened sensitivities (``approximation_error(..., calibrate=...)``): the remaining error
    looks like a change of the model, and without it the posterior is overconfident;
  - ``conditional`` (the "full" Bayesian approximation-error model of Kaipio & Somersalo):
    :func:`probinv.models.approximation_error` runs the solver and the FNO on ``--error-samples`` fresh prior draws
    and regresses the error on the draws' latent coordinates; the fitted part (mean + linear in the model) corrects
    the FNO's prediction, and the covariance of the remainder (all 4 shots jointly, so the correlation between shots
    is kept too; low rank, cross-validated) is added to the measurement noise as a
    :class:`probinv.models.CorrelatedGaussian`;
  - ``marginal`` (the "enhanced error model"): the same without the regression: mean offset + error covariance;
  - ``independent``: noise std ``sqrt(sigma_data^2 + sigma_fno(t)^2)`` with ``sigma_fno`` the per-frame RMS error of
    the network over its 200 held-out validation models (stored in the checkpoint), independent between data.

Runs: MAP (L-BFGS) + Laplace through the FNO with each error model and without any (fraction of pixels whose 50 % /
90 % intervals hold the truth, for this truth and averaged over ``--calibration-truths`` further ones); SVI
(AutoMultivariateNormal, from the Laplace solution) and NUTS (Laplace-preconditioned, 2 chains, ArviZ r-hat / ESS)
with ``--error-model``; the same MAP through the finite-difference solver (the reference).

Run (34 minutes on 1 core at load 1)::

    OMP_NUM_THREADS=1 python3 benchmarks/fno_posterior.py --threads 1

Writes ``benchmarks/results/fno_posterior.json`` (numbers, mean / std maps) and ``fno_posterior.md``; NUTS chains
checkpoint to ``benchmarks/results/fno_posterior_nuts.pt`` (a re-run resumes).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fno import fd_data, fwi_sources  # noqa: E402  (benchmarks/fno.py: the same solver frames and source lattice)

from probinv import diagnostics  # noqa: E402
from probinv._files import write_text_atomic  # noqa: E402
from probinv.fields import WhitenedField  # noqa: E402
from probinv.inference import laplace, map, nuts, svi  # noqa: E402
from probinv.models import CorrectedForward, Gaussian, approximation_error, build_model  # noqa: E402
from probinv.surrogate import FNOOperator, load_pretrained  # noqa: E402
from probinv.surrogate.data import SimulationConfig  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
log = logging.getLogger("benchmarks.fno_posterior")
DT = torch.float64  # inference in float64; the network runs in its own float32


def sources(n: int) -> torch.Tensor:
    """``n`` sources spread over paper 1's 4 x 5 FWI lattice, ``Tensor[n, 2]`` (z, x)."""
    lattice = fwi_sources()
    pick = torch.linspace(0, len(lattice) - 1, n).round().long()
    return lattice[pick]


def receivers(step: int, n: int = 64) -> torch.Tensor:
    """Receivers every ``step`` nodes in z and x, ``Tensor[n_rec, 2]`` (z, x)."""
    g = torch.arange(step // 2, n, step)
    return torch.stack(torch.meshgrid(g, g, indexing="ij"), dim=-1).reshape(-1, 2)


class FDFrames:
    """The finite-difference solver sampled like the surrogate: ``fields -> [n_shots, n_rec, n_frames]``."""

    def __init__(self, src: torch.Tensor, rec: torch.Tensor, cfg: SimulationConfig):
        self.src, self.rec, self.cfg = src, rec, cfg

    def __call__(self, fields: dict) -> torch.Tensor:
        frames = fd_data(fields["vp"], self.src, self.cfg)  # [n_shots, n_frames, nz, nx]
        return frames[:, :, self.rec[:, 0], self.rec[:, 1]].transpose(1, 2)


class Joint:
    """Wrap a forward operator so that all shots form one record ``[1, n_shots * n_rec, n_frames]`` (the error
    covariance then spans the shots, which share the model and hence the surrogate's error)."""

    def __init__(self, op):
        self.op = op

    def __call__(self, fields: dict) -> torch.Tensor:
        d = self.op(fields)
        return d.reshape(d.shape[:-3] + (1, d.shape[-3] * d.shape[-2], d.shape[-1]))


class Memo:
    """Remember an operator's output per velocity tensor (by identity; the tensor is kept alive with its output so
    that its id cannot be reused) while the error models are estimated. Inputs that require grad (the calibration's
    Jacobians) are not cached."""

    def __init__(self, op):
        self.op, self.cache = op, {}

    def __call__(self, fields: dict) -> torch.Tensor:
        v = fields["vp"]
        if v.requires_grad:
            return self.op(fields)
        hit = self.cache.get(id(v))
        if hit is None or hit[0] is not v:
            hit = self.cache[id(v)] = (v, self.op(fields))
        return hit[1]


class Latent:
    """The inverse of :class:`Features`: ``z -> {"vp": prior(z)}``."""

    def __init__(self, prior):
        self.prior = prior

    def __call__(self, z: torch.Tensor) -> dict:
        return {"vp": self.prior(z)}


class Features:
    """The whitened coordinates of a velocity field, ``prior.inverse(fields["vp"])`` (``[..., n_modes]``)."""

    def __init__(self, prior):
        self.prior = prior

    def __call__(self, fields: dict) -> torch.Tensor:
        return self.prior.inverse(fields["vp"])


LABELS = {"calibrated": "error regressed on the model + correlated remainder, sensitivity-calibrated",
          "conditional": "error regressed on the model + correlated remainder",
          "marginal": "mean + correlated error", "independent": "independent per-frame error std",
          "ignored": "surrogate error ignored"}


class FNOFrames:
    """:class:`FNOOperator` in float64 for the inference layer (the network runs in float32)."""

    def __init__(self, op: FNOOperator):
        self.op = op

    def __call__(self, fields: dict) -> torch.Tensor:
        return self.op({"vp": fields["vp"].float()}).to(fields["vp"].dtype)


def setup(modes: int, checkpoint: str | None = None):
    """The FNO (shipped, or ``checkpoint``), its simulation settings and the whitened, bounded von Karman prior."""
    sur = load_pretrained(path=checkpoint) if checkpoint else load_pretrained()
    for p in sur.parameters():
        p.requires_grad_(False)
    cfg = SimulationConfig.from_dict(sur.config["simulation"]) if "simulation" in sur.config else SimulationConfig()
    prior = WhitenedField((64, 64), cfg.dx, covariance="von_karman", hurst=0.5, a_z=1600.0, a_x=1600.0,
                          mean=3000.0, std=150.0, n_modes=modes, bounds=(2400.0, 3600.0), dtype=DT)
    return sur, cfg, prior


def calibration_truths(prior, fd, sigma_data: float, n: int, seed: int):
    """The ``n`` calibration truths drawn from the prior and their noisy solver data, ``(truth, data)`` pairs (the
    same sequence for every script that passes the same ``seed``)."""
    gen = torch.Generator().manual_seed(20_000 + seed)
    for _ in range(n):
        truth = prior(torch.randn(prior.latent_dim, generator=gen, dtype=DT))
        with torch.no_grad():
            d = fd({"vp": truth})
        yield truth, d + sigma_data * torch.randn(d.shape, generator=gen, dtype=DT)


def laplace_coverage(model, truth, map_steps: int, rank: int, seed: int) -> dict:
    """MAP + Laplace of ``model``: the fraction of pixels of ``truth`` in the 50 % / 90 % intervals, and the rel. L2."""
    mp = map(model, optimizer="lbfgs", num_steps=map_steps, lr=1.0)
    lp = laplace(model, map_posterior=mp, rank=rank, num_samples=2000, seed=seed)
    cov = diagnostics.coverage(lp.samples["vp"], truth)
    return {"coverage_50": cov[0.5], "coverage_90": cov[0.9],
            "rel_l2": float((lp.mean("vp") - truth).norm() / truth.norm())}


def summarise(runs: list) -> dict:
    """Mean and standard error over truths of each ``laplace_coverage`` entry."""
    out = {}
    for q in ("coverage_50", "coverage_90", "rel_l2"):
        vals = np.array([r[q] for r in runs])
        out[q] = {"mean": float(vals.mean()),
                  "stderr": float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else None}
    return out


def mean_se(x: dict) -> str:
    return f"{x['mean']:.3f}" + (f" ± {x['stderr']:.3f}" if x["stderr"] is not None else "")


def _stats(post, truth) -> dict:
    mean, std = post.mean("vp"), post.std("vp")
    cov = diagnostics.coverage(post.samples["vp"], truth)
    return {"rel_l2_mean_vs_truth": float((mean - truth).norm() / truth.norm()),
            "std_median": float(std.median()), "std_min": float(std.min()), "std_max": float(std.max()),
            "coverage_50": cov[0.5], "coverage_90": cov[0.9]}


def add_problem_arguments(ap: argparse.ArgumentParser) -> None:
    """The options that define the problem (prior, acquisition, noise, truth) and its MAP, shared with
    ``fno_posterior_fd_reference.py`` so that both scripts invert the same truths."""
    ap.add_argument("--modes", type=int, default=24, help="kept prior modes (latent dimension)")
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--receiver-step", type=int, default=4)
    ap.add_argument("--noise", type=float, default=0.01, help="data noise std relative to the peak amplitude")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--map-steps", type=int, default=60)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="FNO checkpoint (default: the shipped one)")
    add_problem_arguments(ap)
    ap.add_argument("--nuts-samples", type=int, default=300)
    ap.add_argument("--nuts-warmup", type=int, default=150)
    ap.add_argument("--nuts-chains", type=int, default=2)
    ap.add_argument("--max-tree-depth", type=int, default=6)
    ap.add_argument("--svi-steps", type=int, default=400)
    ap.add_argument("--error-model", choices=["calibrated", "conditional", "marginal", "independent"],
                    default="calibrated",
                    help="surrogate-error model used by SVI and NUTS")
    ap.add_argument("--error-samples", type=int, default=400, help="prior draws for the error models")
    ap.add_argument("--error-rank", type=int, default=None,
                    help="rank of the error covariance (default: cross-validated)")
    ap.add_argument("--calibration-truths", type=int, default=20,
                    help="further truths drawn from the prior for the Laplace coverage of each error model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny sampler settings (a smoke run)")
    ap.add_argument("--out", default=os.path.join(RESULTS, "fno_posterior"))
    args = ap.parse_args(argv)
    if args.quick:
        args.nuts_samples, args.nuts_warmup, args.svi_steps, args.map_steps = 20, 20, 20, 10
        args.error_samples = min(args.error_samples, 40)  # > 24 modes + 1 for the regression
        args.calibration_truths = min(args.calibration_truths, 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    warnings.simplefilter("ignore", UserWarning)
    torch.set_num_threads(args.threads)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    t_all = time.perf_counter()

    sur, cfg, prior = setup(args.modes, args.checkpoint)
    z_true = torch.randn(args.modes, generator=torch.Generator().manual_seed(args.seed), dtype=DT)
    truth = prior(z_true)
    src, rec = sources(args.sources), receivers(args.receiver_step)
    fd = FDFrames(src, rec, cfg)
    op = FNOOperator(sur, src, rec)
    fno = FNOFrames(op)
    with torch.no_grad():
        clean = fd({"vp": truth})
        fno_clean = fno({"vp": truth})
    sigma_data = args.noise * float(clean.abs().max())
    data = clean + sigma_data * torch.randn(clean.shape, generator=torch.Generator().manual_seed(args.seed + 1),
                                            dtype=DT)
    sigma_total = op.noise_std(sigma_data).to(DT)  # [n_frames], broadcasts over [shot, receiver, frame]
    res = {"command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
           "settings": {**vars(args), "explained_prior_variance": prior.explained_variance,
                        "n_data": clean.numel(), "sigma_data": sigma_data,
                        "sigma_fno_median": float(op.sigma.median()), "sigma_fno_max": float(op.sigma.max()),
                        "fno_vs_solver_rel_l2_on_truth": float((fno_clean - clean).norm() / clean.norm())},
           "load_average_before": os.getloadavg(), "truth": truth.tolist()}
    log.info("settings: %s", res["settings"])

    t = time.perf_counter()
    gen = torch.Generator().manual_seed(10_000 + args.seed)  # independent of the truth's draw
    draws = [{"vp": prior(torch.randn(args.modes, generator=gen, dtype=DT))} for _ in range(args.error_samples)]
    acc, app = Memo(Joint(fd)), Memo(Joint(fno))  # both error models from the same runs
    features = Features(prior)
    fwd_c, noise_c = approximation_error(acc, app, draws, sigma=sigma_data, rank=args.error_rank, features=features)
    _, noise_k = approximation_error(acc, app, draws, sigma=sigma_data, rank=args.error_rank, features=features,
                                     calibrate=Latent(prior))
    fwd_m, noise_m = approximation_error(acc, app, draws, sigma=sigma_data, rank=args.error_rank)
    del acc, app
    fwd_c = CorrectedForward(Joint(fno), fwd_c.offset, fwd_c.coef, features)  # the real operator, not the memo
    fwd_m = CorrectedForward(Joint(fno), fwd_m.offset, fwd_m.coef, None)
    res["error_model"] = {"seconds": time.perf_counter() - t, "conditional": noise_c.info, "marginal": noise_m.info,
                          "calibrated": noise_k.info,
                          "error_mean_rms": float(fwd_m.offset.pow(2).mean().sqrt())}
    log.info("error models: %s", res["error_model"])
    joint_data = data.reshape(1, -1, data.shape[-1])
    variants = {"calibrated": (fwd_c, noise_k, True), "conditional": (fwd_c, noise_c, True),
                "marginal": (fwd_m, noise_m, True), "independent": (fno, Gaussian(sigma_total), False),
                "ignored": (fno, Gaussian(sigma_data), False)}
    models = {k: build_model({"vp": prior}, f_, joint_data if j else data, noise=n_) for k, (f_, n_, j) in
              variants.items()}
    model_fno = models[args.error_model]
    model_fd = build_model({"vp": prior}, fd, data, noise=Gaussian(sigma_data))

    t = time.perf_counter()
    m_fd = map(model_fd, optimizer="lbfgs", num_steps=args.map_steps, lr=1.0)
    fd_map = m_fd.mean("vp")
    res["fd_map"] = {"seconds": time.perf_counter() - t, "n_gradients": m_fd.attrs["n_gradients"],
                     "rel_l2_vs_truth": float((fd_map - truth).norm() / truth.norm())}
    log.info("FD MAP: %s", res["fd_map"])

    t = time.perf_counter()
    m = map(model_fno, optimizer="lbfgs", num_steps=args.map_steps, lr=1.0)
    lap = laplace(model_fno, map_posterior=m, rank=args.modes, num_samples=2000)
    res["fno_map"] = {"seconds": time.perf_counter() - t, "n_gradients": m.attrs["n_gradients"],
                      "rel_l2_vs_truth": float((m.mean("vp") - truth).norm() / truth.norm()),
                      "rel_l2_vs_fd_map": float((m.mean("vp") - fd_map).norm() / fd_map.norm())}
    res["fno_laplace"] = {**_stats(lap, truth), "eigvals": [float(x) for x in lap.gaussian.eigvals]}
    for key, mod in models.items():
        if key != args.error_model:
            m_o = map(mod, optimizer="lbfgs", num_steps=args.map_steps, lr=1.0)
            res[f"fno_laplace_{key}"] = _stats(laplace(mod, map_posterior=m_o, rank=args.modes, num_samples=2000),
                                               truth)
    res[f"fno_laplace_{args.error_model}"] = res["fno_laplace"]
    log.info("FNO MAP %s; Laplace %s", res["fno_map"], {k: res[f"fno_laplace_{k}"] for k in models})

    t = time.perf_counter()
    post_svi = svi(model_fno, guide="multivariate", laplace_posterior=lap, num_steps=args.svi_steps, lr=0.02,
                   num_particles=4, tol=1e-3, window=50, num_samples=2000)
    res["fno_svi"] = {**_stats(post_svi, truth), "seconds": time.perf_counter() - t,
                      "n_steps": post_svi.attrs["n_steps"], "converged": post_svi.attrs["converged"]}
    log.info("FNO SVI: %s", res["fno_svi"])

    post = nuts(model_fno, num_samples=args.nuts_samples, warmup_steps=args.nuts_warmup,
                num_chains=args.nuts_chains, laplace_posterior=lap, max_tree_depth=args.max_tree_depth, seed=0,
                checkpoint=args.out + "_nuts.pt")
    mean, std = post.mean("vp"), post.std("vp")
    idata = post.to_arviz()
    import arviz as az

    rhat_vp = np.asarray(az.rhat(idata, var_names=["vp"])["vp"])
    rhat_z = diagnostics.rhat(post.samples["vp_z"])
    ess_z = diagnostics.ess(post.samples["vp_z"])
    near = (mean - fd_map).abs() <= 2 * std
    res["fno_nuts"] = {**_stats(post, truth), "seconds": post.attrs["seconds"],
                       "n_gradients": post.attrs["n_gradients"],
                       "rhat_max_vp": float(np.nanmax(rhat_vp)), "rhat_max_z": float(rhat_z.max()),
                       "ess_min_z": float(ess_z.min()),
                       "divergences": int(post.sample_stats["diverging"].sum()),
                       "mean_tree_depth": float(post.sample_stats["tree_depth"].double().mean()),
                       "rel_l2_mean_vs_fd_map": float((mean - fd_map).norm() / fd_map.norm()),
                       "fraction_fd_map_within_2std": float(near.double().mean()),
                       "svi_over_nuts_std_median": float((post_svi.std("vp") / std).median()),
                       "laplace_over_nuts_std_median": float((lap.std("vp") / std).median())}
    res["maps"] = {"fd_map": fd_map.tolist(), "nuts_mean": mean.tolist(), "nuts_std": std.tolist(),
                   "svi_mean": post_svi.mean("vp").tolist(), "svi_std": post_svi.std("vp").tolist()}
    log.info("FNO NUTS: %s", res["fno_nuts"])

    # calibration: coverage of the Laplace posterior (Laplace ~ NUTS here, see the std ratios) over further truths
    # drawn from the prior, with the same error models (estimated once, as a user would) and noise level
    runs = {k: [] for k in variants}
    t = time.perf_counter()
    for i, (tr, d) in enumerate(calibration_truths(prior, fd, sigma_data, args.calibration_truths, args.seed)):
        for key, (fwd_i, noise_i, joint) in variants.items():
            mod = build_model({"vp": prior}, fwd_i, d.reshape(1, -1, d.shape[-1]) if joint else d, noise=noise_i)
            runs[key].append(laplace_coverage(mod, tr, args.map_steps, args.modes, seed=i))
        log.info("calibration truth %d/%d: %s", i + 1, args.calibration_truths, {k: v[-1] for k, v in runs.items()})
    res["calibration"] = {"truths": args.calibration_truths, "seconds": time.perf_counter() - t, "runs": runs}
    for key, rr in runs.items():
        if rr:
            res["calibration"][key] = summarise(rr)
    res["seconds_total"] = time.perf_counter() - t_all
    res["load_average_after"] = os.getloadavg()

    s, n = res["settings"], res["fno_nuts"]
    rows = [("FD MAP (reference)", res["fd_map"]["rel_l2_vs_truth"], None, None, None, res["fd_map"]["seconds"]),
            ("FNO MAP", res["fno_map"]["rel_l2_vs_truth"], None, None, None, res["fno_map"]["seconds"])]
    main_label = LABELS[args.error_model]
    for label, key in ([(f"FNO Laplace, {LABELS[k]}", f"fno_laplace_{k}") for k in models] +
                       [(f"FNO SVI (full-rank Gaussian), {main_label}", "fno_svi"),
                        (f"FNO NUTS, {main_label}", "fno_nuts")]):
        r = res[key]
        rows.append((label, r["rel_l2_mean_vs_truth"], r["std_median"], r["coverage_50"], r["coverage_90"],
                     r.get("seconds")))

    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    lines = ["# Posterior through the FNO surrogate (64 x 64, 160 m)", "",
             f"Command: `{res['command']}`  ",
             f"{args.modes} von Karman modes ({100 * s['explained_prior_variance']:.0f} % of the prior variance), "
             f"{args.sources} sources, {len(rec)} receivers, {s['n_data']} data; sigma_data {s['sigma_data']:.3g}, "
             f"FNO error sigma median {s['sigma_fno_median']:.3g} (max {s['sigma_fno_max']:.3g}); FNO vs solver "
             f"rel. L2 on the true model {s['fno_vs_solver_rel_l2_on_truth']:.3f}. Error models from "
             f"{args.error_samples} prior draws ({res['error_model']['seconds']:.0f} s): the regression on the latent "
             f"coordinates removes {100 * res['error_model']['conditional']['explained_by_features']:.0f} % of the "
             f"error variance; cross-validated rank {res['error_model']['conditional']['rank']} (conditional) and "
             f"{res['error_model']['marginal']['rank']} (marginal); the sensitivity calibration scales the covariance "
             f"by {res['error_model']['calibrated']['inflation']:.2f} (held-out chi2 / k median "
             f"{np.median(res['error_model']['calibrated']['sensitivity_chi2']):.2f}). Load "
             f"{res['load_average_before'][0]:.2f} / {res['load_average_after'][0]:.2f}.", "",
             "| method | rel. L2 (mean vs truth) | median std (m/s) | truth in 50 % CI | truth in 90 % CI | s |",
             "|---|---|---|---|---|---|"]
    for label, e, sd, c5, c9, sec in rows:
        lines.append(f"| {label} | {e:.4f} | {f(sd, '.1f')} | {f(c5, '.2f')} | {f(c9, '.2f')} | {f(sec, '.0f')} |")
    lines += ["", f"NUTS ({args.nuts_chains} chains x {args.nuts_samples} draws, {args.nuts_warmup} warm-up): "
              f"r-hat max {n['rhat_max_vp']:.3f} (pixels), {n['rhat_max_z']:.3f} (latent); "
              f"min bulk ESS {n['ess_min_z']:.0f}; "
              f"{n['divergences']} divergences; mean tree depth {n['mean_tree_depth']:.2f}; {n['n_gradients']} "
              f"gradients.  ",
              f"FNO posterior mean vs FD MAP: rel. L2 {n['rel_l2_mean_vs_fd_map']:.4f}; the FD MAP lies within 2 "
              f"posterior std of the FNO mean at {100 * n['fraction_fd_map_within_2std']:.0f} % of the pixels.  ",
              f"Median std ratio SVI / NUTS {n['svi_over_nuts_std_median']:.2f}, Laplace / NUTS "
              f"{n['laplace_over_nuts_std_median']:.2f}.", ""]
    cal = res["calibration"]
    if cal["truths"]:
        lines += [f"Laplace calibration over {cal['truths']} further truths drawn from the prior (mean ± standard "
                  f"error over truths; {cal['seconds']:.0f} s):", "",
                  "| surrogate error model | truth in 50 % CI | truth in 90 % CI | rel. L2 (mean vs truth) |",
                  "|---|---|---|---|"]
        for key, label in LABELS.items():
            c = cal[key]
            lines.append(f"| {label} | {mean_se(c['coverage_50'])} | {mean_se(c['coverage_90'])} | "
                         f"{mean_se(c['rel_l2'])} |")
        lines.append("")
    write_text_atomic(args.out + ".json", json.dumps(res, indent=1))
    write_text_atomic(args.out + ".md", "\n".join(lines))
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
