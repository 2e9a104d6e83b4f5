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

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fno_posterior import (  # noqa: E402
    DT,
    RESULTS,
    FDFrames,
    add_problem_arguments,
    calibration_truths,
    laplace_coverage,
    mean_se,
    receivers,
    setup,
    sources,
    summarise,
)

from probinv._files import write_text_atomic  # noqa: E402
from probinv.models import Gaussian, build_model  # noqa: E402

log = logging.getLogger("benchmarks.fno_posterior_fd_reference")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truths", type=int, default=10)
    add_problem_arguments(ap)
    ap.add_argument("--out", default=os.path.join(RESULTS, "fno_posterior_fd_reference"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    warnings.simplefilter("ignore", UserWarning)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    _, cfg, prior = setup(args.modes)  # the network only for its simulation settings
    fd = FDFrames(sources(args.sources), receivers(args.receiver_step), cfg)
    # the same sigma_data as fno_posterior.py: noise x the peak of the first truth's clean data
    z_true = torch.randn(args.modes, generator=torch.Generator().manual_seed(args.seed), dtype=DT)
    with torch.no_grad():
        sigma_data = args.noise * float(fd({"vp": prior(z_true)}).abs().max())
    runs, t0 = [], time.perf_counter()
    for i, (tr, d) in enumerate(calibration_truths(prior, fd, sigma_data, args.truths, args.seed)):
        mod = build_model({"vp": prior}, fd, d, noise=Gaussian(sigma_data))
        runs.append(laplace_coverage(mod, tr, args.map_steps, args.modes, seed=i))
        log.info("truth %d/%d: %s", i + 1, args.truths, runs[-1])
    summ = summarise(runs)
    res = {"command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
           "settings": vars(args), "sigma_data": sigma_data, "seconds": time.perf_counter() - t0, "runs": runs,
           "summary": summ}

    md = "\n".join(["# FD Laplace reference for the FNO posterior calibration", "", f"Command: `{res['command']}`", "",
                    "| forward | truths | truth in 50 % CI | truth in 90 % CI | rel. L2 |", "|---|---|---|---|---|",
                    f"| finite differences | {args.truths} | {mean_se(summ['coverage_50'])} | "
                    f"{mean_se(summ['coverage_90'])} | {mean_se(summ['rel_l2'])} |", ""])
    write_text_atomic(args.out + ".json", json.dumps(res, indent=1))
    write_text_atomic(args.out + ".md", md)
    print(md)
    return res


if __name__ == "__main__":
    main()
