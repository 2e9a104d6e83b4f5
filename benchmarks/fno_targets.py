"""Which target representation lets the FNO learn: a short, equal-budget training run per representation.

For each of ``global`` (one scale), ``frame`` (per-frame RMS) and ``residual`` (field minus the homogeneous-medium
response at the mean velocity, per-frame RMS) the paper-1 network (width 32, 12 modes, 4 layers, 64 frames) is
trained from the same initialisation for the same number of Adam steps on the same samples, and the validation
relative L2 is measured in physical units (the quantity paper 1 reports), next to the homogeneous baseline.

Run (data file from ``benchmarks/train_fno.py`` or generated here; a few minutes on 2 cores)::

    OMP_NUM_THREADS=2 python3 benchmarks/fno_targets.py --data /tmp/fno_small.nc --samples 240 --val 40 --steps 60

Writes ``benchmarks/results/fno_targets.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv._files import write_text_atomic  # noqa: E402
from probinv.surrogate import build_surrogate, evaluate  # noqa: E402
from probinv.surrogate.data import SimulationConfig, generate_dataset, homogeneous_response, load_dataset  # noqa
from probinv.surrogate.train import TrainConfig, train  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--samples", type=int, default=240)
    ap.add_argument("--val", type=int, default=40)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--targets", default="global,frame,residual")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = SimulationConfig()
    generate_dataset(args.data, args.samples, cfg, seed=0, progress=False)
    data = load_dataset(args.data, 0, args.samples)
    n_train = args.samples - args.val
    tr = {k: data[k][:n_train] for k in ("velocity", "source", "wavefield")}
    va = {k: data[k][n_train:] for k in ("velocity", "source", "wavefield")}
    tr.update(time=data["time"], dx=data["dx"], config=data["config"])
    hom = homogeneous_response(cfg)
    tc = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=0, eval_every=0,
                     checkpoint_every=0)
    res = {"n_train": n_train, "n_val": args.val, "train_config": tc.__dict__, "threads": args.threads,
           "load_average_before": os.getloadavg(), "targets": {}}
    for target in args.targets.split(","):
        sur = build_surrogate(tr, target=target, seed=0, homogeneous=hom if target == "residual" else None)
        before = evaluate(sur, va)
        t = time.perf_counter()
        out = train(sur, tr, va, tc, progress=False)
        res["targets"][target] = {"val_rel_l2": out["val"]["rel_l2"], "val_rel_l2_at_init": before["rel_l2"],
                                  "train_loss_last10": sum(h["train_loss"] for h in out["history"][-10:]) / 10,
                                  "seconds": time.perf_counter() - t}
    sur = build_surrogate(tr, target="residual", seed=0, homogeneous=hom)
    res["homogeneous_baseline_rel_l2"] = evaluate(sur, va)["baseline_rel_l2"]
    res["load_average_after"] = os.getloadavg()
    lines = [f"# FNO target representation: {args.steps} Adam steps (batch {args.batch_size}, lr {args.lr}, cosine), "
             f"{n_train} training / {args.val} validation samples", "",
             f"load average before/after {res['load_average_before'][0]:.2f} / {res['load_average_after'][0]:.2f}", "",
             "| target | val rel. L2 at init | val rel. L2 after | train time s |", "|---|---|---|---|"]
    for k, v in res["targets"].items():
        lines.append(f"| {k} | {v['val_rel_l2_at_init']:.3f} | {v['val_rel_l2']:.3f} | {v['seconds']:.0f} |")
    lines.append(f"| (homogeneous-medium baseline) | | {res['homogeneous_baseline_rel_l2']:.3f} | |")
    os.makedirs(args.out, exist_ok=True)
    for name, text in (("fno_targets.json", json.dumps(res, indent=2)), ("fno_targets.md", "\n".join(lines) + "\n")):
        write_text_atomic(os.path.join(args.out, name), text)
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
