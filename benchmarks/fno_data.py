"""FNO training data: generation speed, label accuracy against a 2x finer simulation, homogeneous baseline.

Paper 1's set-up (64 x 64 at 160 m, 1 Hz Ricker, 64 frames to 5 s, 8th-order stencil). Measures

* seconds per sample of :func:`probinv.surrogate.data.generate_dataset` (solver + NetCDF writing),
* the relative L2 difference between the labels and a 2x finer simulation (dx/2, dt/2) for a few samples
  (all nodes, and beyond 2 cells from the source, where the discrete point source's dx-dependence does not enter),
* the relative L2 of the trivial baseline (the homogeneous-medium response at 3000 m/s for the same source), the
  number the trained FNO must beat.

Run::

    OMP_NUM_THREADS=2 python3 benchmarks/fno_data.py --samples 16 --accuracy-samples 2

Writes ``benchmarks/results/fno_data.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv._files import write_text_atomic  # noqa: E402
from probinv.surrogate.data import (  # noqa: E402
    SimulationConfig,
    generate_dataset,
    homogeneous_response,
    label_error,
    load_dataset,
    sample_batch,
)


def _write(out_dir: str, name: str, text: str) -> None:
    write_text_atomic(os.path.join(out_dir, name), text)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=16, help="samples generated for the timing and the baseline")
    ap.add_argument("--accuracy-samples", type=int, default=2, help="samples checked against a 2x finer run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = SimulationConfig()
    res = {"config": cfg.to_dict(), "threads": args.threads, "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "data.nc")
        t = time.perf_counter()
        generate_dataset(path, args.samples, cfg, seed=args.seed, batch_size=8, progress=False)
        res["seconds_per_sample"] = (time.perf_counter() - t) / args.samples
        res["bytes_per_sample"] = os.path.getsize(path) / args.samples
        data = load_dataset(path)
    u0big = homogeneous_response(cfg)
    base = []
    for i, (sz, sx) in enumerate(data["source"].tolist()):
        u0 = u0big[:, 63 - sz:127 - sz, 63 - sx:127 - sx]
        u = data["wavefield"][i]
        base.append(float((u0 - u).norm() / u.norm()))
    res["homogeneous_baseline_rel_l2"] = {"mean": float(np.mean(base)), "per_sample": base}
    res["wavefield_peak"] = float(data["wavefield"].abs().max())
    res["wavefield_std"] = float(data["wavefield"].std())
    v, src = sample_batch(cfg, args.seed, 0, args.accuracy_samples)
    t = time.perf_counter()
    res["label_error"] = label_error(v, src, cfg)
    res["label_error_seconds"] = time.perf_counter() - t
    res["load_average_after"] = os.getloadavg()
    le = res["label_error"]
    lines = ["# FNO training data (paper 1 set-up: 64 x 64 at 160 m, 1 Hz Ricker, 64 frames to 5 s)", "",
             f"load average before/after: {res['load_average_before'][0]:.2f} / {res['load_average_after'][0]:.2f}, "
             f"{args.threads} threads", "",
             "| quantity | value |", "|---|---|",
             f"| generation, s / sample | {res['seconds_per_sample']:.3f} |",
             f"| file size, MB / sample (float32) | {res['bytes_per_sample'] / 1e6:.2f} |",
             f"| wavefield peak / std | {res['wavefield_peak']:.3g} / {res['wavefield_std']:.3g} |",
             f"| homogeneous baseline rel. L2 ({args.samples} samples) | "
             f"{res['homogeneous_baseline_rel_l2']['mean']:.3f} |",
             f"| label vs 2x finer, rel. L2 all nodes | {', '.join(f'{x:.4f}' for x in le['rel_l2'])} |",
             f"| label vs 2x finer, rel. L2 beyond 2 cells of the source | "
             f"{', '.join(f'{x:.4f}' for x in le['rel_l2_far'])} |",
             f"| points per wavelength at 1 Hz / 2.5 Hz (slowest v) | {le['points_per_wavelength_peak']:.1f} / "
             f"{le['points_per_wavelength_2.5f']:.1f} |"]
    _write(args.out, "fno_data.json", json.dumps(res, indent=2))
    _write(args.out, "fno_data.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
