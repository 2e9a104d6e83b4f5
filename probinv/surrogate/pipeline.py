r"""Train the FNO surrogate of paper 1 end to end (data -> training -> shipped checkpoint); resumable.

Steps (each resumes where an earlier, interrupted run stopped):

1. ``--data``: simulate ``--samples`` training samples with :func:`probinv.surrogate.data.generate_dataset`
   (paper 1's generator unless the generator options below change it; appended to the NetCDF file, resumable).
2. Hold out the last ``--val`` samples (200 in paper 1) for validation.
3. Train with :func:`probinv.surrogate.train` (MSE on the ``--target`` representation, Adam, cosine schedule),
   checkpointing to ``--checkpoint`` every ``--checkpoint-every`` steps; ``--max-steps`` / ``--max-hours`` end a
   session early, the next call continues bit-identically.
4. When the schedule is complete (or with ``--export-now``), evaluate on the validation set and write the
   shipped checkpoint ``--export`` (weights in float16, ``metadata``: val_rel_l2, the homogeneous-baseline
   relative L2, the grid, the time axis, the training and data configuration, and the per-frame error sigma).

The library function is :func:`train_fno` (same options as keyword arguments); ``probinv train-fno`` and
``benchmarks/train_fno.py`` call it. Reproduce the shipped network (about 5 CPU-hours on 2 cores for the full
schedule)::

    OMP_NUM_THREADS=2 probinv train-fno --data fno_data.nc --samples 5000 \
        --checkpoint fno_train.pt --export probinv/surrogate/pretrained/paper1.pt

A quick smoke run::

    OMP_NUM_THREADS=2 probinv train-fno --data /tmp/small.nc --samples 60 --val 20 --steps 20 \
        --batch-size 10 --checkpoint /tmp/ck.pt --export /tmp/fno.pt
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time

import torch

from .. import distributed
from .._version import __version__
from ..validation import check_choice, check_int, check_scalar
from .data import SimulationConfig, generate_dataset, load_dataset
from .fno import TARGET_MODES
from .train import TrainConfig, build_surrogate, evaluate, load_checkpoint, residual_std, save_checkpoint, train

__all__ = ["PAPER1_VAL_REL_L2", "add_arguments", "run", "train_fno", "train_fno_kwargs"]

#: Paper 1's validation relative L2 (Yang et al. 2021), recorded in the checkpoint's metadata for comparison.
PAPER1_VAL_REL_L2 = 0.273


def train_fno(data: str, checkpoint: str, *, samples: int = 5000, val: int = 200, data_seed: int = 0,
              simulation: SimulationConfig | dict | None = None, data_batch_size: int = 8, storage: str = "float32",
              export: str | None = None, export_now: bool = False, target: str = "residual", width: int = 32,
              modes: int = 12, layers: int = 4, hidden: int = 128, steps: int = 48000, batch_size: int = 30,
              lr: float = 1e-3, seed: int = 0, eval_every: int = 1000, checkpoint_every: int = 200,
              max_steps: int | None = None, max_hours: float | None = None, threads: int | None = None,
              device: str = "cpu", memory_float16: bool = False, progress: bool = True,
              command: str | None = None) -> dict:
    """Generate the training data, train the FNO surrogate and export it; every step resumes an interrupted run.

    Parameters
    ----------
    data : str
        NetCDF training-data file, created or extended to ``samples`` samples
        (:func:`probinv.surrogate.data.generate_dataset`; its manifest must match the generator options).
    checkpoint : str
        Training checkpoint, written every ``checkpoint_every`` steps; resumed when it exists (it must have been
        written with the same optimisation options).
    samples : int
        Total samples in the file, validation included (paper 1: 5000).
    val : int
        Held-out validation samples, the file's last ones (paper 1: 200); ``1 <= val < samples``.
    data_seed : int
        Seed of the generator: sample ``i`` depends only on ``(data_seed, i // data_batch_size)``.
    simulation : SimulationConfig or dict, optional
        Generator configuration (grid, time axis, wavelet, solver options, velocity family; SI units). Default
        paper 1's (:class:`probinv.surrogate.data.SimulationConfig`: 64 x 64 nodes at 160 m, 64 frames to 5 s).
    data_batch_size : int
        Models simulated per generator batch (8; part of the data file's manifest).
    storage : {"float32", "compressed"}
        Wavefield storage in the data file.
    export : str, optional
        Shipped checkpoint written when the schedule is complete (weights in float16, with ``metadata``:
        ``val_rel_l2``, ``baseline_rel_l2``, ``grid``, ``time`` (s), ``training``, ``simulation``, ``data_manifest``,
        ``residual_std`` (per-frame error sigma, solver units), ``probinv_version`` and ``command``).
    export_now : bool
        Export even if the schedule is not complete.
    target : {"global", "frame", "residual"}
        Target representation the network learns (see :class:`probinv.surrogate.FNOSurrogate`).
    width, modes, layers, hidden : int
        Network: lifted channel width, kept Fourier modes per axis, Fourier layers, projection width.
    steps : int
        Total optimiser steps of the schedule.
    batch_size : int
        Samples per optimiser step.
    lr : float
        Peak Adam learning rate (cosine schedule).
    seed : int
        Seed of the network initialisation and the batch order.
    eval_every, checkpoint_every : int
        Steps between validation evaluations and between checkpoints (0: only at the end).
    max_steps : int, optional
        End this session after this step (the schedule still spans ``steps``).
    max_hours : float, optional
        End this session (with a checkpoint) after this wall time in hours.
    threads : int, optional
        ``torch.set_num_threads`` for this process.
    device : str
        Torch device to train on (``"cpu"``, ``"cuda"``).
    memory_float16 : bool
        Hold the wavefields in float16 in memory (half the RAM; batches are cast to float32).
    progress : bool
        tqdm progress bars for the data generation and the training.
    command : str, optional
        The command line recorded in the exported metadata (default: this call, written as Python).

    Returns
    -------
    dict
        ``step`` (steps done), ``steps_total``, ``session_seconds`` (s), ``val_rel_l2`` and ``baseline_rel_l2``
        (validation relative L2 of the network and of the homogeneous-medium reference), and after an export
        ``exported`` (path) and ``export_mb``.
    """
    samples = check_int("samples", samples, minimum=2)
    val = check_int("val", val, minimum=1)
    if val >= samples:
        raise ValueError(f"val ({val}) must be smaller than samples ({samples}): no sample would be left to train on")
    check_choice("target", target, TARGET_MODES)
    if max_hours is not None:
        check_scalar("max_hours", max_hours)
    if command is None:
        kwargs = {"samples": samples, "val": val, "data_seed": data_seed, "simulation": simulation,
                  "data_batch_size": data_batch_size, "storage": storage, "export": export, "export_now": export_now,
                  "target": target, "width": width, "modes": modes, "layers": layers, "hidden": hidden,
                  "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "eval_every": eval_every,
                  "checkpoint_every": checkpoint_every, "max_steps": max_steps, "max_hours": max_hours,
                  "device": device, "memory_float16": memory_float16}
        command = (f"probinv.surrogate.train_fno({data!r}, {checkpoint!r}, "
                   + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")")
    if threads:
        torch.set_num_threads(threads)
    cfg = SimulationConfig() if simulation is None else (
        simulation if isinstance(simulation, SimulationConfig) else SimulationConfig.from_dict(simulation))
    generate_dataset(data, samples, cfg, seed=data_seed, batch_size=data_batch_size, storage=storage,
                     progress=progress)
    loaded = load_dataset(data, 0, samples, wavefield_dtype=torch.float16 if memory_float16 else torch.float32)
    n_train = samples - val
    tr = {k: loaded[k][:n_train] for k in ("velocity", "source", "wavefield")}
    va = {k: loaded[k][n_train:] for k in ("velocity", "source", "wavefield")}
    tr.update(time=loaded["time"], dx=loaded["dx"], config=loaded["config"])
    tc = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, eval_every=eval_every,
                     checkpoint_every=checkpoint_every)
    if os.path.exists(checkpoint):
        sur, ck = load_checkpoint(checkpoint, map_location=device)
        if ck["train_config"] is not None and ck["train_config"] != dataclasses.asdict(tc):
            raise ValueError(f"{checkpoint} was trained with {ck['train_config']}, not {dataclasses.asdict(tc)}: "
                             f"use the same options or another checkpoint file")
    else:
        sur = build_surrogate(tr, target=target, seed=seed, width=width, modes=modes, n_layers=layers,
                              hidden=hidden, device=device)
    t = time.perf_counter()
    out = train(sur, tr, va, tc, checkpoint=checkpoint, max_steps=max_steps,
                max_time=None if max_hours is None else 3600 * max_hours, progress=progress)
    elapsed = time.perf_counter() - t
    res = {"step": out["step"], "steps_total": steps, "session_seconds": elapsed,
           "val_rel_l2": out["val"]["rel_l2"], "baseline_rel_l2": out["val"].get("baseline_rel_l2")}
    if export and (out["step"] >= steps or export_now) and distributed.is_main():  # under torchrun: rank 0 writes
        val_res = evaluate(sur, va)
        sigma = residual_std(sur, va)
        meta = {"val_rel_l2": val_res["rel_l2"], "baseline_rel_l2": val_res.get("baseline_rel_l2"),
                "paper1_val_rel_l2": PAPER1_VAL_REL_L2, "n_val": val, "n_train": n_train,
                "grid": sur.config["grid"], "time": sur.config["time"], "time_units": "s",
                "training": {**dataclasses.asdict(tc), "steps_done": out["step"], "target": target,
                             "width": width, "modes": modes, "layers": layers, "hidden": hidden, "device": device},
                "simulation": loaded["config"], "data_manifest": loaded["manifest"],
                "residual_std": sigma.tolist(), "probinv_version": __version__, "command": command}
        save_checkpoint(export, sur, metadata=meta, storage_dtype=torch.float16)
        res["exported"] = export
        res["export_mb"] = os.path.getsize(export) / 1e6
    logging.getLogger(__name__).info("%s", res)
    return res


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add :func:`train_fno`'s options to ``ap`` (``probinv train-fno`` and ``benchmarks/train_fno.py``)."""
    ap.add_argument("--data", required=True, help="NetCDF data file (created or extended)")
    ap.add_argument("--samples", type=int, default=5000, help="total samples, validation included")
    ap.add_argument("--val", type=int, default=200, help="held-out validation samples (the file's last ones)")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--checkpoint", required=True, help="training checkpoint (resumed when present)")
    ap.add_argument("--export", default=None, help="shipped checkpoint written when training is complete")
    ap.add_argument("--export-now", action="store_true", help="export even if the schedule is not complete")
    ap.add_argument("--target", default="residual", choices=list(TARGET_MODES))
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
    g = ap.add_argument_group("training-data generator (default: paper 1's set-up; SI units)")
    g.add_argument("--data-batch-size", type=int, default=8, help="models per generator batch (default 8)")
    g.add_argument("--storage", default="float32", choices=["float32", "compressed"],
                   help="wavefield storage in the data file (default float32)")
    units = {"dx": " m", "dt": " s", "freq": " Hz", "t0": " s", "v_mean": " m/s", "v_std": " m/s",
             "corr_length": " m"}
    for f in dataclasses.fields(SimulationConfig):
        kind = int if f.type in ("int", int) else float
        default = "1.5 / freq" if f.name == "t0" else f"{f.default}{units.get(f.name, '')}"
        g.add_argument("--" + f.name.replace("_", "-"), dest="sim_" + f.name, metavar=f.name.upper(), type=kind,
                       default=None, help=f"default {default} (SimulationConfig.{f.name})")
    return ap


def train_fno_kwargs(args: argparse.Namespace) -> dict:
    """:func:`train_fno`'s keyword arguments from options parsed with :func:`add_arguments`."""
    names = ("data", "checkpoint", "samples", "val", "data_seed", "data_batch_size", "storage", "export",
             "export_now", "target", "width", "modes", "layers", "hidden", "steps", "batch_size", "lr", "seed",
             "eval_every", "checkpoint_every", "max_steps", "max_hours", "threads", "device", "memory_float16")
    kwargs = {name: getattr(args, name) for name in names}
    overrides = {f.name: getattr(args, "sim_" + f.name) for f in dataclasses.fields(SimulationConfig)
                 if getattr(args, "sim_" + f.name) is not None}
    kwargs["simulation"] = SimulationConfig(**overrides) if overrides else None
    return kwargs


def run(args: argparse.Namespace, command: str = "probinv train-fno") -> dict:
    """Run :func:`train_fno` with options parsed by :func:`add_arguments`; returns its summary dict.

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1), it first joins the process group
    (:func:`probinv.distributed.init_from_env`): the data are then generated sharded by rank and the network trained
    data-parallel; only rank 0 writes the checkpoint and the exported network.
    """
    distributed.init_from_env()
    # checked here as well so that the message names the command-line options
    if args.val >= args.samples:
        raise ValueError(f"--val ({args.val}) must be smaller than --samples ({args.samples})")
    return train_fno(**train_fno_kwargs(args), command=command)
