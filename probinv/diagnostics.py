"""ArviZ conversion, r-hat / ESS summaries and calibration (coverage) checks.

ArviZ APIs relied on (feature-detected, one conversion function :func:`to_arviz_dataset`):

* arviz 0.x (Python 3.10/3.11; 0.23.4 is what pip resolves there): ``arviz.from_dict(posterior=..., sample_stats=...,
  observed_data=..., posterior_predictive=..., coords=..., dims=...)`` -> ``InferenceData``; ``arviz.summary``,
  ``arviz.rhat``, ``arviz.ess``.
* arviz 1.x (Python >= 3.12): ``arviz_base.from_dict({"posterior": ..., "sample_stats": ..., ...}, coords=...,
  dims=...)`` -> ``xarray.DataTree``; ``arviz_stats.summary`` / ``arviz.summary``.

Samples are dicts ``{name: array[chain, draw, ...]}``.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = ["arviz_backend", "coverage", "ess", "rhat", "summary", "to_arviz_dataset"]

log = logging.getLogger(__name__)


def _np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _import_arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz  # noqa: PLC0415
    return arviz


def arviz_backend() -> str:
    """``"arviz_base"`` (arviz >= 1.0, DataTree) or ``"arviz"`` (arviz 0.x, InferenceData)."""
    try:
        import arviz_base  # noqa: F401, PLC0415
        return "arviz_base"
    except ImportError:
        return "arviz"


def to_arviz_dataset(posterior: Mapping, *, sample_stats: Mapping | None = None, observed_data: Mapping | None = None,
                     posterior_predictive: Mapping | None = None, coords: Mapping | None = None,
                     dims: Mapping | None = None, attrs: Mapping | None = None):
    """Build an ArviZ object from dicts of arrays ``[chain, draw, ...]`` (observed data without chain/draw).

    Returns an ``arviz.InferenceData`` (arviz 0.x) or an ``xarray.DataTree`` (arviz 1.x).
    """
    groups = {"posterior": {k: _np(v) for k, v in posterior.items()}}
    if sample_stats:
        groups["sample_stats"] = {k: _np(v) for k, v in sample_stats.items()}
    if observed_data:
        groups["observed_data"] = {k: _np(v) for k, v in observed_data.items()}
    if posterior_predictive:
        groups["posterior_predictive"] = {k: _np(v) for k, v in posterior_predictive.items()}
    coords = {k: _np(v) for k, v in (coords or {}).items()}
    dims = {k: list(v) for k, v in (dims or {}).items()}
    if arviz_backend() == "arviz_base":
        import arviz_base  # noqa: PLC0415
        tree = arviz_base.from_dict(groups, coords=coords, dims=dims)
        if attrs:
            tree["posterior"].attrs.update(dict(attrs))
        return tree
    az = _import_arviz()
    return az.from_dict(**groups, coords=coords, dims=dims, attrs=dict(attrs or {}))


def summary(data, var_names: Sequence[str] | None = None, **kwargs):
    """``arviz.summary`` (mean, sd, HDI, MCSE, ESS, r-hat) of an ArviZ object, as a pandas DataFrame."""
    az = _import_arviz()
    with warnings.catch_warnings():
        # single-chain / single-draw posteriors (MAP) give NaN r-hat: not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        return az.summary(data, var_names=list(var_names) if var_names else None, **kwargs)


def rhat(samples) -> np.ndarray:
    """Rank-normalised split r-hat (Vehtari et al. 2021) of ``samples[chain, draw, ...]``, shape ``samples[0, 0]``."""
    az = _import_arviz()
    x = _np(samples)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    out = np.array([az.rhat(flat[:, :, i]) for i in range(flat.shape[-1])], dtype=float)
    return out.reshape(x.shape[2:])


def ess(samples, method: str = "bulk") -> np.ndarray:
    """Effective sample size (``"bulk"`` or ``"tail"``) of ``samples[chain, draw, ...]``, shape ``samples[0, 0]``."""
    az = _import_arviz()
    x = _np(samples)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    out = np.array([az.ess(flat[:, :, i], method=method) for i in range(flat.shape[-1])], dtype=float)
    return out.reshape(x.shape[2:])


def coverage(samples, truth, probs: Sequence[float] = (0.5, 0.9)) -> dict:
    """Fraction of the entries of ``truth`` inside the equal-tailed posterior credible intervals.

    Parameters
    ----------
    samples : array or Tensor ``[..., *truth.shape]``
        Posterior draws; every leading axis (chain, draw) is pooled.
    truth : array or Tensor
        The true values (e.g. a velocity model ``(nz, nx)``).
    probs : sequence of float
        Nominal interval probabilities in (0, 1).

    Returns
    -------
    dict
        ``{prob: fraction inside}``. A calibrated posterior gives fraction ~= prob on average over truths drawn from
        the prior (not for a single truth: pixels are correlated).
    """
    x, t = _np(samples), _np(truth)
    x = x.reshape((-1,) + t.shape)
    out = {}
    for p in probs:
        if not 0 < p < 1:
            raise ValueError(f"probs must lie in (0, 1), got {p!r}")
        lo, hi = np.quantile(x, [(1 - p) / 2, (1 + p) / 2], axis=0)
        out[float(p)] = float(np.mean((t >= lo) & (t <= hi)))
    return out
