"""Scale-out helpers on :mod:`torch.distributed` (gloo on CPU, NCCL on GPU), launched by ``torchrun``.

One inversion runs unchanged on one process or on ``N`` ranks: :class:`probinv.models.SeismicModel` shards the shots
of its likelihood over the ranks of an initialised process group (each rank propagates a contiguous block of the
shots, :func:`shard`) and sums the log-likelihood with :func:`all_reduce_sum`; the gradient reaches every rank whole
through :func:`replicate` (identity forward, all-reduce backward: the "f / g" pair of tensor-parallel training). Every
rank then holds the same loss and the same gradient, so the optimisers and samplers, which are run by every rank with
the same seeds, take the same steps. Without a process group (or with one rank) nothing changes.

Rules for a program run under ``torchrun``: every rank calls the inference functions with the same arguments and
seeds (the collectives inside must match); only the main rank (:func:`is_main`) writes result files.

This module imports only torch (floor 1), so that every floor may use it.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

__all__ = ["all_gather_object", "all_reduce_sum", "barrier", "init_from_env", "is_active", "is_main", "local",
           "rank", "replicate", "shard", "sharding", "world_size"]

_LOCAL = {"depth": 0}  # > 0 inside local(): the likelihood is not sharded (chain-parallel sampling, one rank's work)


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Rank of this process in the default process group (0 without one)."""
    return dist.get_rank() if _initialised() else 0


def world_size() -> int:
    """Number of ranks in the default process group (1 without one)."""
    return dist.get_world_size() if _initialised() else 1


def is_main() -> bool:
    """Whether this process is rank 0 (the one that writes files); True without a process group."""
    return rank() == 0


def is_active() -> bool:
    """Whether a process group with more than one rank is initialised."""
    return world_size() > 1


def sharding() -> bool:
    """Whether the likelihood is sharded over the ranks now: a process group of > 1 ranks, outside :func:`local`."""
    return is_active() and _LOCAL["depth"] == 0


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Within this block each rank evaluates the whole likelihood itself (no collectives): for work that differs
    between ranks, e.g. one NUTS chain per rank.
    """
    _LOCAL["depth"] += 1
    try:
        yield
    finally:
        _LOCAL["depth"] -= 1


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the default process group from ``torchrun``'s environment, when there is one.

    Reads ``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (``env://``). Does nothing (and returns
    False) when ``WORLD_SIZE`` is unset or 1, or when a group is already initialised (returns True then).

    Parameters
    ----------
    backend : {"gloo", "nccl"}, optional
        Default: ``"nccl"`` when CUDA is available (each rank then uses the GPU ``LOCAL_RANK``), else ``"gloo"``.

    Returns
    -------
    bool
        Whether a process group of more than one rank is now active.
    """
    if _initialised():
        return is_active()
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, init_method="env://")
    return is_active()


def shard(n: int, rank_: int | None = None, world: int | None = None) -> range:
    """The contiguous block of ``range(n)`` that rank ``rank_`` of ``world`` owns (default: this process's).

    Blocks differ in length by at most one, the first ``n % world`` ranks taking one more; a rank may own none
    (``n < world``). Contiguous blocks keep a rank's shots together (one batched solver call per chunk).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int (number of items to shard), got {n!r}")
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    if not 0 <= r < w:
        raise ValueError(f"rank must lie in [0, {w}), got {r}")
    q, extra = divmod(n, w)
    start = r * q + min(r, extra)
    return range(start, start + q + (1 if r < extra else 0))


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    out = t.detach().clone().contiguous()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


class _ReduceSum(torch.autograd.Function):
    """Forward: sum over ranks; backward: identity (every rank holds the same downstream gradient)."""

    @staticmethod
    def forward(ctx, t):
        return _all_reduce(t)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _Replicate(torch.autograd.Function):
    """Forward: identity; backward: sum over ranks (each rank's gradient is that of its own shard only)."""

    @staticmethod
    def forward(ctx, *tensors):
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        return tuple(_all_reduce(g) for g in grads)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over the ranks (differentiable: the gradient passes through unchanged); ``t`` without a group."""
    if not is_active():
        return t
    if t.requires_grad and torch.is_grad_enabled():
        return _ReduceSum.apply(t)
    return _all_reduce(t)


def replicate(*tensors: torch.Tensor) -> tuple:
    """The tensors unchanged, with a backward that sums their gradients over the ranks.

    Put the replicated inputs of a sharded computation (the fields, the noise parameters) through it, and its partial
    results through :func:`all_reduce_sum`: every rank then receives the gradient of the whole sum. Every rank must
    run the backward (the collective inside must match); returns the inputs themselves without a group.
    """
    if not is_active() or not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
        return tuple(tensors)
    return _Replicate.apply(*tensors)


def barrier() -> None:
    """Wait for every rank (nothing without a group)."""
    if is_active():
        dist.barrier()


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects; tensors are best moved to the CPU first);
    ``[obj]`` without a group.
    """
    if not is_active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
