"""Finite-difference reference for the calibration table of ``fno_posterior.py``: the Laplace posterior through the
solver itself (no surrogate error at all) on the same truths and noise, so that the FNO posteriors' coverage can be
read against what the Gaussian (Laplace) approximation gives with exact physics.

Run (about 2 minutes per truth on 1 core)::

    OMP_NUM_THREADS=1 python3 benchmarks/fno_posterior_fd_reference.py --truths 10

Writes ``benchmarks/results/fno_posterior_fd_reference.json`` and ``.md``.
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

from probinv import diagnostics  # noqa: E402
from probinv._files import write_text_atomic  # noqa: E402
from probinv.fields import WhitenedField  # noqa: E402
from probinv.inference import laplace, map  # noqa: E402
from probinv.models import Gaussian, build_model  # noqa: E402
from probinv.surrogate import load_pretrained  # noqa: E402
from probinv.surrogate.data import SimulationConfig  # noqa: E402
from fno_posterior import RESULTS, DT, FDFrames, receivers, sources  # noqa: E402

log = logging.getLogger("benchmarks.fno_posterior_fd_reference")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truths", type=int, default=10)
    ap.add_argument("--modes", type=int, default=24)
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--receiver-step", type=int, default=4)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--map-steps", type=int, default=60)
    ap.add_argument("--out", default=os.path.join(RESULTS, "fno_posterior_fd_reference"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    warnings.simplefilter("ignore", UserWarning)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    sur = load_pretrained()  # only for its simulation settings (the solver frames the network was trained on)
    cfg = SimulationConfig.from_dict(sur.config["simulation"]) if "simulation" in sur.config else SimulationConfig()
    prior = WhitenedField((64, 64), cfg.dx, covariance="von_karman", hurst=0.5, a_z=1600.0, a_x=1600.0,
                          mean=3000.0, std=150.0, n_modes=args.modes, bounds=(2400.0, 3600.0), dtype=DT)
    fd = FDFrames(sources(args.sources), receivers(args.receiver_step), cfg)
    # the same sigma_data as fno_posterior.py: noise x the peak of the first truth's clean data
    z_true = torch.randn(args.modes, generator=torch.Generator().manual_seed(args.seed), dtype=DT)
    with torch.no_grad():
        sigma_data = args.noise * float(fd({"vp": prior(z_true)}).abs().max())
    gen_t = torch.Generator().manual_seed(20_000 + args.seed)  # the calibration truths of fno_posterior.py
    runs, t0 = [], time.perf_counter()
    for i in range(args.truths):
        tr = prior(torch.randn(args.modes, generator=gen_t, dtype=DT))
        with torch.no_grad():
            d = fd({"vp": tr})
        d = d + sigma_data * torch.randn(d.shape, generator=gen_t, dtype=DT)
        mod = build_model({"vp": prior}, fd, d, noise=Gaussian(sigma_data))
        mp = map(mod, optimizer="lbfgs", num_steps=args.map_steps, lr=1.0)
        lp = laplace(mod, map_posterior=mp, rank=args.modes, num_samples=2000, seed=i)
        cov = diagnostics.coverage(lp.samples["vp"], tr)
        runs.append({"coverage_50": cov[0.5], "coverage_90": cov[0.9],
                     "rel_l2": float((lp.mean("vp") - tr).norm() / tr.norm())})
        log.info("truth %d/%d: %s", i + 1, args.truths, runs[-1])
    summ = {}
    for q in ("coverage_50", "coverage_90", "rel_l2"):
        vals = np.array([r[q] for r in runs])
        summ[q] = {"mean": float(vals.mean()), "stderr": float(vals.std(ddof=1) / np.sqrt(len(vals)))
                   if len(vals) > 1 else None}
    res = {"command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
           "settings": vars(args), "sigma_data": sigma_data, "seconds": time.perf_counter() - t0, "runs": runs,
           "summary": summ}

    def g(x):
        return f"{x['mean']:.3f}" + (f" ± {x['stderr']:.3f}" if x["stderr"] is not None else "")

    md = "\n".join(["# FD Laplace reference for the FNO posterior calibration", "", f"Command: `{res['command']}`", "",
                    "| forward | truths | truth in 50 % CI | truth in 90 % CI | rel. L2 |", "|---|---|---|---|---|",
                    f"| finite differences | {args.truths} | {g(summ['coverage_50'])} | {g(summ['coverage_90'])} | "
                    f"{g(summ['rel_l2'])} |", ""])
    write_text_atomic(args.out + ".json", json.dumps(res, indent=1))
    write_text_atomic(args.out + ".md", md)
    print(md)
    return res


if __name__ == "__main__":
    main()
