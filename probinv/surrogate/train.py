r"""Training of the FNO surrogate: MSE on the normalised target, Adam with a cosine schedule, checkpoints.

Training is deterministic for a given seed: the order of the samples in epoch ``e`` is a permutation drawn from a
generator seeded with ``(seed, e)``, so the batch of optimiser step ``s`` depends only on ``(seed, s)``. A checkpoint
holds the network, the optimiser and scheduler states and the step; resuming from it continues bit-identically (on
the same device, dtype and thread count) — training may stop and resume across sessions.

The reported error is paper 1's relative L2 in physical units, per sample
``||u_pred - u|| / ||u||`` over all frames and nodes, averaged over the validation samples.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import os
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import distributed
from .._files import atomic_path
from .._version import __version__
from ..validation import check_choice, check_int, check_scalar
from .data import SimulationConfig, homogeneous_response
from .fno import FNOSurrogate

__all__ = ["TrainConfig", "build_surrogate", "evaluate", "load_checkpoint", "residual_std", "save_checkpoint", "train"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "probinv.surrogate.checkpoint/1"


@dataclasses.dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes
    ----------
    steps : int
        Total optimiser steps of the schedule (paper 1: 300 epochs of 4800 samples at batch 30 = 48 000).
    batch_size : int
        Samples per step (30 in paper 1).
    lr : float
        Peak Adam learning rate.
    schedule : {"cosine", "constant"}
        Learning-rate schedule over ``steps`` (cosine decays to ``lr * min_lr_ratio``).
    min_lr_ratio : float
        Final learning rate of the cosine schedule as a fraction of ``lr``.
    weight_decay : float
        Adam weight decay.
    seed : int
        Seed of the batch order (and of the network initialisation in :func:`probinv.surrogate.build_surrogate`).
    eval_every : int
        Steps between validation evaluations (0: only at the end).
    checkpoint_every : int
        Steps between checkpoints (0: only at the end).
    """

    steps: int = 48000
    batch_size: int = 30
    lr: float = 1e-3
    schedule: str = "cosine"
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.0
    seed: int = 0
    eval_every: int = 500
    checkpoint_every: int = 500

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            check_int(name, getattr(self, name))
        check_scalar("lr", self.lr)
        check_choice("schedule", self.schedule, ("cosine", "constant"))


def build_surrogate(train_data: dict, simulation: dict | None = None, *, target: str = "residual",
                    homogeneous: torch.Tensor | None = None, seed: int = 0, width: int = 32,
                    modes: int | tuple[int, int] = 12, n_layers: int = 4, hidden: int = 128, method: str = "dft",
                    dtype: torch.dtype = torch.float32, device=None) -> FNOSurrogate:
    """A freshly initialised (seeded) :class:`FNOSurrogate` with its target scales fitted on ``train_data``.

    ``train_data`` is a :func:`probinv.surrogate.data.load_dataset` dict (its ``time``, ``dx`` and ``config`` give
    the grid and time axis when present). With ``target="residual"`` the homogeneous reference is computed with
    the solver from ``simulation`` (or ``train_data["config"]``) unless ``homogeneous`` is given.
    """
    _check_data("train_data", train_data)
    simulation = simulation if simulation is not None else train_data.get("config")
    n, n_frames, nz, nx = train_data["wavefield"].shape
    dx = float(train_data.get("dx", simulation["dx"] if simulation else float("nan")))
    time_ = train_data.get("time")
    if time_ is None:
        time_ = SimulationConfig.from_dict(simulation).times
    v = train_data["velocity"]
    v_mean = float(simulation["v_mean"]) if simulation else float(v.mean())
    v_std = float(simulation["v_std"]) if simulation else float(v.std())
    torch.manual_seed(seed)
    sur = FNOSurrogate(n_frames, {"nz": nz, "nx": nx, "dx": dx}, time_, v_mean=v_mean, v_std=v_std, target=target,
                       simulation=simulation, width=width, modes=modes, n_layers=n_layers, hidden=hidden,
                       method=method, dtype=dtype, device=device)
    if target == "residual" and homogeneous is None:
        if simulation is None:
            raise ValueError("target 'residual' needs simulation (the generator config) or homogeneous")
        homogeneous = homogeneous_response(simulation, nz, nx, dx, v_mean, times=time_, dtype=dtype)
    p = next(sur.parameters())
    sur.fit_target(train_data["wavefield"], train_data["source"], None if homogeneous is None else homogeneous.to(p))
    return sur


def _lr_factor(config: TrainConfig):
    if config.schedule == "constant":
        return lambda step: 1.0
    lo = config.min_lr_ratio
    return lambda step: lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Sample indices of optimiser step ``step`` (drop-last epochs, permutation seeded by ``(seed, epoch)``)."""
    per_epoch = max(1, n // batch_size)
    epoch, i = divmod(step, per_epoch)
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0] >> 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(state)))
    return perm[i * batch_size:(i + 1) * batch_size] if n >= batch_size else perm


def _check_data(name: str, data: dict) -> None:
    if not isinstance(data, dict) or not {"velocity", "source", "wavefield"} <= set(data):
        raise ValueError(f"{name} must be a dict with 'velocity', 'source' and 'wavefield' tensors "
                         f"(see probinv.surrogate.data.load_dataset), got {type(data).__name__}")
    n = data["velocity"].shape[0]
    if data["source"].shape[0] != n or data["wavefield"].shape[0] != n or n == 0:
        raise ValueError(f"{name} has inconsistent or zero sample counts: velocity {tuple(data['velocity'].shape)}, "
                         f"source {tuple(data['source'].shape)}, wavefield {tuple(data['wavefield'].shape)}")


@torch.no_grad()
def evaluate(surrogate: FNOSurrogate, data: dict, batch_size: int = 16) -> dict:
    """Relative L2 of the surrogate (and of the homogeneous-medium baseline) on ``data``.

    Returns
    -------
    dict
        ``rel_l2`` (mean over samples), ``rel_l2_per_sample`` (list), ``baseline_rel_l2`` (the homogeneous-medium
        reference alone; only for the ``"residual"`` target) and ``mse`` on the normalised target.
    """
    _check_data("data", data)
    p = next(surrogate.parameters())
    rel, base, mse = [], [], []
    for i in range(0, data["velocity"].shape[0], batch_size):
        v = data["velocity"][i:i + batch_size].to(p)
        s = data["source"][i:i + batch_size].to(p.device)
        u = data["wavefield"][i:i + batch_size].to(p)
        y = surrogate.net(surrogate.features(v, s))
        t = surrogate.encode_target(u, s)
        mse.append(float(((y - t) ** 2).mean()) * v.shape[0])
        pred = surrogate.decode(y, s)
        norm = u.flatten(1).norm(dim=1)
        rel += ((pred - u).flatten(1).norm(dim=1) / norm).tolist()
        if surrogate.config["target"] == "residual":
            u0 = surrogate.decode(torch.zeros_like(y), s)
            base += ((u0 - u).flatten(1).norm(dim=1) / norm).tolist()
    out = {"rel_l2": float(np.mean(rel)), "rel_l2_per_sample": rel, "mse": sum(mse) / len(rel)}
    if base:
        out["baseline_rel_l2"] = float(np.mean(base))
    return out


@torch.no_grad()
def residual_std(surrogate: FNOSurrogate, data: dict, batch_size: int = 16) -> torch.Tensor:
    """Per-frame RMS of the surrogate's error ``u_pred - u`` over ``data`` (solver units), ``Tensor[n_frames]``.

    This is the surrogate's own error sigma used by :class:`probinv.surrogate.FNOOperator` in the noise model.
    """
    _check_data("data", data)
    p = next(surrogate.parameters())
    acc = torch.zeros(surrogate.config["n_frames"], dtype=torch.float64)
    count = 0
    for i in range(0, data["velocity"].shape[0], batch_size):
        v = data["velocity"][i:i + batch_size].to(p)
        s = data["source"][i:i + batch_size].to(p.device)
        u = data["wavefield"][i:i + batch_size].to(p)
        acc += ((surrogate(v, s) - u) ** 2).sum(dim=(0, 2, 3)).double().cpu()
        count += v.shape[0] * u.shape[-1] * u.shape[-2]
    return (acc / count).sqrt()


def save_checkpoint(path: str, surrogate: FNOSurrogate, *, optimizer=None, scheduler=None, step: int = 0,
                    train_config: TrainConfig | None = None, history=None, metadata: dict | None = None,
                    storage_dtype: torch.dtype | None = None) -> str:
    """Write a checkpoint atomically (temporary file + ``os.replace``).

    ``storage_dtype=torch.float16`` stores the weights in half precision (half the file; for shipping a network:
    :func:`load_checkpoint` restores the original dtype, the rounding, ~5e-4 relative, is far below the FNO's error).
    """
    model = surrogate.state_dict()
    if storage_dtype is not None:
        model = {k: (t.to(storage_dtype) if t.is_floating_point() else t) for k, t in model.items()}
    state = {"format": CHECKPOINT_FORMAT, "probinv_version": __version__, "surrogate_config": surrogate.config,
             "dtype": str(surrogate.scale.dtype).replace("torch.", ""), "model": model, "step": int(step),
             "train_config": None if train_config is None else dataclasses.asdict(train_config),
             "optimizer": None if optimizer is None else optimizer.state_dict(),
             "scheduler": None if scheduler is None else scheduler.state_dict(),
             "history": list(history or []), "metadata": dict(metadata or {})}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str, map_location=None) -> tuple[FNOSurrogate, dict]:
    """Rebuild the surrogate from a checkpoint; returns ``(surrogate, checkpoint_dict)``.

    The surrogate's ``metadata`` is the checkpoint's, and its ``checkpoint_info`` records the file (absolute
    ``path``, ``sha256`` of its bytes, training ``step``) so that a forward operator can say which weights it runs.
    """
    with open(path, "rb") as fh:
        raw = fh.read()
    ck = torch.load(io.BytesIO(raw), map_location=map_location or "cpu", weights_only=False)
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a probinv surrogate checkpoint (format {CHECKPOINT_FORMAT!r})")
    cfg = dict(ck["surrogate_config"])
    grid, n_frames, time_ = cfg.pop("grid"), cfg.pop("n_frames"), cfg.pop("time")
    dtype = getattr(torch, ck.get("dtype", "float32"))
    sur = FNOSurrogate(n_frames, grid, torch.tensor(time_), dtype=dtype, **cfg)
    sur.load_state_dict(ck["model"])
    sur.metadata = ck.get("metadata", {})
    sur.checkpoint_info = {"path": os.path.abspath(path), "sha256": hashlib.sha256(raw).hexdigest(),
                           "step": int(ck.get("step", 0))}
    return sur, ck


def train(surrogate: FNOSurrogate, train_data: dict, val_data: dict, config: TrainConfig | None = None, *,
          checkpoint: str | None = None, resume: bool = True, max_steps: int | None = None,
          max_time: float | None = None, progress: bool = True) -> dict:
    """Train ``surrogate`` (whose target scales are already fitted, see :meth:`FNOSurrogate.fit_target`).

    Parameters
    ----------
    surrogate : FNOSurrogate
        The network (on the device and dtype to train with); updated in place.
    train_data, val_data : dict
        ``velocity [n, nz, nx]``, ``source [n, 2]``, ``wavefield [n, n_frames, nz, nx]`` (CPU tensors are moved to
        the surrogate's device batch by batch).
    config : TrainConfig, optional
        Optimisation settings (default ``TrainConfig()``).
    checkpoint : str, optional
        Checkpoint file: written every ``config.checkpoint_every`` steps and at the end; with ``resume=True`` an
        existing one is loaded first and training continues from its step.
    max_steps : int, optional
        Stop after this step (the schedule still spans ``config.steps``): train in sessions.
    max_time : float, optional
        Stop (with a checkpoint) after this many seconds.
    progress : bool
        tqdm progress bar.

    Under ``torchrun`` (a process group of > 1 ranks, :mod:`probinv.distributed`) training is data-parallel: every
    rank draws the same batch indices and takes its own contiguous slice of each batch; the gradients are summed over
    the ranks (each rank's loss weighted by its share of the batch, so the step equals the one-process step to
    rounding; DistributedDataParallel's gradient all-reduce, done explicitly, which also covers the network's complex
    spectral weights) and the reported loss is the batch's. Only rank 0 writes the checkpoint; every rank must call
    this with the same arguments and start from the same weights (same seed).

    Returns
    -------
    dict
        ``step``, ``history`` (list of dicts: step, train_loss, lr, and val_rel_l2 where evaluated) and ``val``
        (the last :func:`evaluate` result).
    """
    config = TrainConfig() if config is None else config
    _check_data("train_data", train_data)
    _check_data("val_data", val_data)
    p = next(surrogate.parameters())
    opt = torch.optim.Adam(surrogate.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(config))
    step, history = 0, []
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        ck = torch.load(checkpoint, map_location=p.device, weights_only=False)
        surrogate.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, history = int(ck["step"]), list(ck["history"])
        log.info("resumed %s at step %d", checkpoint, step)
    stop = config.steps if max_steps is None else min(config.steps, int(max_steps))
    n = train_data["velocity"].shape[0]
    t_start = time.perf_counter()
    val = None

    def save():
        if checkpoint is not None and distributed.is_main():
            save_checkpoint(checkpoint, surrogate, optimizer=opt, scheduler=sched, step=step, train_config=config,
                            history=history)

    bar = tqdm(total=stop, initial=step, disable=not progress, desc="FNO training", unit="step")
    surrogate.train()
    parallel = distributed.sharding()
    while step < stop:
        idx = _batch_indices(n, config.batch_size, config.seed, step)
        n_batch = int(idx.shape[0])
        if parallel:  # this rank's slice of the batch
            mine = distributed.shard(n_batch)
            idx = idx[mine.start:mine.stop]
        v = train_data["velocity"][idx].to(p)
        s = train_data["source"][idx].to(p.device)
        target = surrogate.encode_target(train_data["wavefield"][idx].to(p), s)
        opt.zero_grad(set_to_none=True)
        if parallel:
            # the batch's mean squared error = sum over ranks of (slice mean x slice share)
            share = int(idx.shape[0]) / n_batch
            local = (torch.nn.functional.mse_loss(surrogate.net(surrogate.features(v, s)), target) * share
                     if idx.numel() else sum(q.sum() * 0.0 for q in surrogate.net.parameters()))
            local.backward()
            for q in surrogate.parameters():
                if q.grad is not None:  # the same parameters on every rank (the same network and graph)
                    q.grad = distributed.all_reduce_sum(q.grad)
            loss = distributed.all_reduce_sum(local.detach())
        else:
            loss = torch.nn.functional.mse_loss(surrogate.net(surrogate.features(v, s)), target)
            loss.backward()
        opt.step()
        sched.step()
        step += 1
        rec = {"step": step, "train_loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"]}
        if config.eval_every and step % config.eval_every == 0:
            surrogate.eval()
            val = evaluate(surrogate, val_data)
            surrogate.train()
            rec["val_rel_l2"] = val["rel_l2"]
            log.info("step %d: train loss %.4g, validation relative L2 %.4f", step, rec["train_loss"], val["rel_l2"])
        history.append(rec)
        bar.update(1)
        bar.set_postfix(loss=f"{rec['train_loss']:.4g}")
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            save()
        if max_time is not None and time.perf_counter() - t_start > max_time:
            log.info("stopping at step %d after %.0f s (max_time)", step, max_time)
            break
    bar.close()
    surrogate.eval()
    if val is None or history and "val_rel_l2" not in history[-1]:
        val = evaluate(surrogate, val_data)
        if history:
            history[-1]["val_rel_l2"] = val["rel_l2"]
    save()
    return {"step": step, "history": history, "val": val}
