"""Bayesian approximation-error model: the statistics of an approximate forward operator's error over the prior."""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Iterable, Mapping

import torch

from ._noise import CorrelatedGaussian, _check_positive

__all__ = ["approximation_error"]

log = logging.getLogger("probinv.models")


def approximation_error(accurate: Callable, approximate: Callable, fields: Iterable[Mapping[str, torch.Tensor]], *,
                        sigma: float | torch.Tensor, rank: int | None = None) -> CorrelatedGaussian:
    r"""Estimate the noise model of an approximate forward operator (Kaipio & Somersalo 2007, "enhanced error model").

    The error ``e(m) = accurate(m) - approximate(m)`` is evaluated on ``N`` models ``m`` (draws from the prior); its
    sample mean becomes the offset ``loc`` and its sample covariance, truncated to the ``rank`` leading principal
    components per shot, the low-rank factor; the variance the kept components miss is added to the diagonal with the
    measurement noise, so every datum keeps its full marginal error variance. Use the result as the ``noise`` of
    :func:`probinv.models.build_model` with ``approximate`` as the forward operator: the likelihood then accounts for
    the surrogate's error *and* its correlation in time and space, which an independent per-sample error does not.

    Parameters
    ----------
    accurate, approximate : callable
        Forward operators ``fields -> data [n_shots, *trace]`` (e.g. the finite-difference solver and an
        :class:`probinv.surrogate.FNOOperator`) with the same acquisition.
    fields : iterable of dict
        ``N >= 2`` models ``{name: Tensor[nz, nx]}``, drawn from the prior the inversion uses. The estimate of a rank
        ``r`` covariance needs ``N`` well above ``r``; ``N`` of 100-300 is typical.
    sigma : float or Tensor
        Measurement-noise standard deviation (data units), broadcastable to the data.
    rank : int, optional
        Kept principal components per shot (default ``N - 1``, all of them).

    Returns
    -------
    CorrelatedGaussian
        With ``loc [n_shots, *trace]``, ``cov_factor [n_shots, D, rank]`` and ``cov_diag [n_shots, *trace]``; its
        ``attrs``-like summary is logged (fraction of error variance kept).
    """
    _check_positive("sigma", sigma)
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be a positive int or None, got {rank!r}")
    errors = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for i, f in enumerate(fields):
            if not isinstance(f, Mapping):
                raise TypeError(f"fields must yield dicts of field tensors, item {i} is {type(f).__name__}")
            a, b = accurate(f), approximate(f)
            if a.shape != b.shape:
                raise ValueError(f"accurate and approximate disagree on the data shape: {tuple(a.shape)} vs "
                                 f"{tuple(b.shape)}")
            errors.append((a - b.to(a.dtype)).detach())
            if (i + 1) % 10 == 0:
                log.info("approximation error: %d models, %.1f s", i + 1, time.perf_counter() - t0)
    n = len(errors)
    if n < 2:
        raise ValueError(f"fields must hold at least 2 models to estimate a covariance, got {n}")
    e = torch.stack(errors)  # [N, S, *trace]
    s = e.shape[1]
    mean = e.mean(0)
    x = (e - mean).reshape(n, s, -1).permute(1, 2, 0) / math.sqrt(n - 1)  # [S, D, N]: X X^T = sample covariance
    u, sv, _ = torch.linalg.svd(x, full_matrices=False)
    r = min(n - 1 if rank is None else rank, sv.shape[-1])
    w = u[..., :r] * sv[:, None, :r]  # [S, D, r]
    missed = ((x**2).sum(-1) - (w**2).sum(-1)).clamp_min(0)  # variance outside the kept components, [S, D]
    sig = torch.as_tensor(sigma, dtype=e.dtype, device=e.device)
    diag = sig**2 + missed.reshape(mean.shape)
    kept = float((sv[:, :r] ** 2).sum() / (sv**2).sum().clamp_min(1e-300))
    log.info("approximation error from %d models: rank %d keeps %.1f %% of the error variance; error RMS %.3g, mean "
             "RMS %.3g", n, r, 100 * kept, float(x.pow(2).sum(-1).mean().sqrt()), float(mean.pow(2).mean().sqrt()))
    return CorrelatedGaussian(cov_factor=w, cov_diag=diag, loc=mean)
