"""Train the FNO surrogate of paper 1 end to end (data -> training -> shipped checkpoint); resumable.

Steps (each resumes where an earlier, interrupted run stopped):

1. ``--data``: simulate ``--samples`` training samples with :func:`probinv.surrogate.data.generate_dataset`
   (paper 1's generator; appended to the NetCDF file, resumable).
2. Hold out the last ``--val`` samples (200 in paper 1) for validation.
3. Train with :func:`probinv.surrogate.train` (MSE on the ``--target`` representation, Adam, cosine schedule),
   checkpointing to ``--checkpoint`` every ``--checkpoint-every`` steps; ``--max-steps`` / ``--max-hours`` end a
   session early, the next call continues bit-identically.
4. When the schedule is complete (or with ``--export-now``), evaluate on the validation set and write the
   shipped checkpoint ``--export`` (weights in float16, ``metadata``: val_rel_l2, the homogeneous-baseline
   relative L2, the grid, the time axis, the training and data configuration, and the per-frame error sigma).

Reproduce the shipped network (about 5 CPU-hours on 2 cores for the full schedule)::

    OMP_NUM_THREADS=2 probinv train-fno --data fno_data.nc --samples 5000 \\
        --checkpoint fno_train.pt --export probinv/surrogate/pretrained/paper1.pt

A quick smoke run::

    OMP_NUM_THREADS=2 probinv train-fno --data /tmp/small.nc --samples 60 --val 20 --steps 20 \\
        --batch-size 10 --checkpoint /tmp/ck.pt --export /tmp/fno.pt
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time

import torch

from .._version import __version__
from .data import SimulationConfig, generate_dataset, load_dataset
from .train import TrainConfig, build_surrogate, evaluate, load_checkpoint, residual_std, save_checkpoint, train

#: Paper 1's validation relative L2 (Yang et al. 2021), recorded in the checkpoint's metadata for comparison.
PAPER1_VAL_REL_L2 = 0.273


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training pipeline's options to ``ap`` (shared by ``probinv train-fno`` and the benchmark script)."""
    ap.add_argument("--data", required=True, help="NetCDF data file (created or extended)")
    ap.add_argument("--samples", type=int, default=5000, help="total samples, validation included")
    ap.add_argument("--val", type=int, default=200, help="held-out validation samples (the file's last ones)")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--checkpoint", required=True, help="training checkpoint (resumed when present)")
    ap.add_argument("--export", default=None, help="shipped checkpoint written when training is complete")
    ap.add_argument("--export-now", action="store_true", help="export even if the schedule is not complete")
    ap.add_argument("--target", default="residual", choices=["global", "frame", "residual"])
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--modes", type=int, default=12)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=48000, help="total optimiser steps of the schedule")
    ap.add_argument("--batch-size", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--checkpoint-every", type=int, default=200)
    ap.add_argument("--max-steps", type=int, default=None, help="stop this session after this step")
    ap.add_argument("--max-hours", type=float, default=None, help="stop this session after this wall time")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="torch device to train on, e.g. cpu or cuda")
    ap.add_argument("--memory-float16", action="store_true",
                    help="hold the wavefields in float16 in memory (half the RAM; batches are cast to float32)")
    return ap


def run(args: argparse.Namespace, command: str = "probinv train-fno") -> dict:
    """Run the pipeline with parsed options; returns a summary dict (step, val_rel_l2, exported path, ...)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.val >= args.samples:
        raise ValueError(f"--val ({args.val}) must be smaller than --samples ({args.samples})")
    cfg = SimulationConfig()
    generate_dataset(args.data, args.samples, cfg, seed=args.data_seed)
    data = load_dataset(args.data, 0, args.samples,
                        wavefield_dtype=torch.float16 if args.memory_float16 else torch.float32)
    n_train = args.samples - args.val
    tr = {k: data[k][:n_train] for k in ("velocity", "source", "wavefield")}
    va = {k: data[k][n_train:] for k in ("velocity", "source", "wavefield")}
    tr.update(time=data["time"], dx=data["dx"], config=data["config"])
    tc = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     eval_every=args.eval_every, checkpoint_every=args.checkpoint_every)
    if os.path.exists(args.checkpoint):
        sur, ck = load_checkpoint(args.checkpoint, map_location=args.device)
        if ck["train_config"] is not None and ck["train_config"] != dataclasses.asdict(tc):
            raise ValueError(f"{args.checkpoint} was trained with {ck['train_config']}, not {dataclasses.asdict(tc)}: "
                             f"use the same options or another --checkpoint")
    else:
        sur = build_surrogate(tr, target=args.target, seed=args.seed, width=args.width, modes=args.modes,
                              n_layers=args.layers, hidden=args.hidden, device=args.device)
    t = time.perf_counter()
    out = train(sur, tr, va, tc, checkpoint=args.checkpoint,
                max_steps=args.max_steps, max_time=None if args.max_hours is None else 3600 * args.max_hours)
    elapsed = time.perf_counter() - t
    res = {"step": out["step"], "steps_total": args.steps, "session_seconds": elapsed,
           "val_rel_l2": out["val"]["rel_l2"], "baseline_rel_l2": out["val"].get("baseline_rel_l2")}
    if args.export and (out["step"] >= args.steps or args.export_now):
        val = evaluate(sur, va)
        sigma = residual_std(sur, va)
        meta = {"val_rel_l2": val["rel_l2"], "baseline_rel_l2": val.get("baseline_rel_l2"),
                "paper1_val_rel_l2": PAPER1_VAL_REL_L2, "n_val": args.val, "n_train": n_train,
                "grid": sur.config["grid"], "time": sur.config["time"], "time_units": "s",
                "training": {**dataclasses.asdict(tc), "steps_done": out["step"], "target": args.target,
                             "width": args.width, "modes": args.modes, "layers": args.layers,
                             "hidden": args.hidden, "device": args.device},
                "simulation": data["config"], "data_manifest": data["manifest"],
                "residual_std": sigma.tolist(), "probinv_version": __version__,
                "command": command}
        save_checkpoint(args.export, sur, metadata=meta, storage_dtype=torch.float16)
        res["exported"] = args.export
        res["export_mb"] = os.path.getsize(args.export) / 1e6
    logging.getLogger(__name__).info("%s", res)
    return res
