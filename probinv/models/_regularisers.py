"""Extra log-density terms (``pyro.factor``) so that regularised FWI is the MAP of a model too.

A regulariser is a callable ``reg(fields) -> Tensor`` returning a log-density term (<= 0 for penalties) with the
fields' batch shape. Its ``name`` becomes the ``pyro.factor`` site name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["TotalVariation", "Smoothness", "total_variation", "smoothness"]


def _check_weight(weight) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
    return float(weight)


def total_variation(field: torch.Tensor, dx: float = 1.0, eps: float = 1e-3) -> torch.Tensor:
    r"""Smoothed isotropic total variation of ``field[..., nz, nx]``.

    .. math:: TV(m) = \sum_{i,j} \sqrt{(\partial_z m)^2 + (\partial_x m)^2 + \epsilon^2}\, dx^2

    with one-sided differences divided by ``dx`` (m) on the ``(nz-1, nx-1)`` interior cells; ``eps`` (field units
    per metre) keeps it twice differentiable. Returns a tensor of the batch shape ``field.shape[:-2]``.
    """
    dz = (field[..., 1:, :-1] - field[..., :-1, :-1]) / dx
    dxx = (field[..., :-1, 1:] - field[..., :-1, :-1]) / dx
    return torch.sqrt(dz**2 + dxx**2 + eps**2).sum((-2, -1)) * dx * dx


def smoothness(field: torch.Tensor, dx: float = 1.0) -> torch.Tensor:
    r"""Squared-gradient (Tikhonov first-order) roughness of ``field[..., nz, nx]``:
    :math:`\sum (\partial_z m)^2 + (\partial_x m)^2\, dx^2`, batch shape ``field.shape[:-2]``.
    """
    dz = (field[..., 1:, :] - field[..., :-1, :]) / dx
    dxx = (field[..., :, 1:] - field[..., :, :-1]) / dx
    return (dz**2).sum((-2, -1)) * dx * dx + (dxx**2).sum((-2, -1)) * dx * dx


@dataclass(frozen=True)
class TotalVariation:
    """Log-density term ``-weight * TV(fields[field])`` (see :func:`total_variation`).

    Parameters
    ----------
    field : str
        Name of the field it acts on (e.g. ``"vp"``).
    weight : float
        Weight (>= 0) in units of 1 / (field unit * m).
    dx : float
        Grid spacing (m).
    eps : float
        Smoothing of the TV kink (field units per metre).
    """

    field: str
    weight: float
    dx: float = 1.0
    eps: float = 1e-3

    def __post_init__(self):
        _check_weight(self.weight)

    @property
    def name(self) -> str:
        return f"tv_{self.field}"

    def __call__(self, fields: dict) -> torch.Tensor:
        return -self.weight * total_variation(fields[self.field], self.dx, self.eps)


@dataclass(frozen=True)
class Smoothness:
    """Log-density term ``-weight * smoothness(fields[field])`` (Gaussian smoothness prior, see :func:`smoothness`)."""

    field: str
    weight: float
    dx: float = 1.0

    def __post_init__(self):
        _check_weight(self.weight)

    @property
    def name(self) -> str:
        return f"smooth_{self.field}"

    def __call__(self, fields: dict) -> torch.Tensor:
        return -self.weight * smoothness(fields[self.field], self.dx)
