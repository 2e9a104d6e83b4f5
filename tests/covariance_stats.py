"""Exact standard errors of pooled covariance estimates of Gaussian random fields (shared by test_fields.py and
test_paper1_models.py)."""
from __future__ import annotations

import math

import numpy as np

from probinv.fields import matern_covariance


def lag_covariance(shape, dx, nu, a_z, a_x):
    """Correlation on all lags ``(-(nz-1)..nz-1, -(nx-1)..nx-1)``, as a function ``c(dz, dx)`` of integer lags."""
    nz, nx = shape
    hz = np.arange(-(nz - 1), nz)
    hx = np.arange(-(nx - 1), nx)
    table = matern_covariance(hz[:, None] * dx, hx[None, :] * dx, nu=nu, a_z=a_z, a_x=a_x)

    def c(dz, dxx):
        dz, dxx = np.broadcast_arrays(np.atleast_1d(dz), np.atleast_1d(dxx))
        out = np.zeros(dz.shape)
        ok = (np.abs(dz) < nz) & (np.abs(dxx) < nx)  # lags beyond the grid never occur (count 0)
        out[ok] = table[dz[ok] + nz - 1, dxx[ok] + nx - 1]
        return out
    return c


def pooled_estimate(fields, mean, hz, hx):
    """Mean over samples and over all pixel pairs at lag (hz, hx) >= 0 of (f_a - mean)(f_b - mean)."""
    d = fields - mean
    nz, nx = d.shape[-2:]
    a = d[:, : nz - hz, : nx - hx]
    b = d[:, hz:, hx:]
    return float((a * b).mean())


def pooled_se(c, shape, hz, hx, n):
    """Exact standard error of :func:`pooled_estimate` for n independent Gaussian fields of correlation c (Isserlis):
    Var = 1/(n m^2) sum_d cnt(d) [c(d)^2 + c(d - h) c(d + h)], d running over differences of pair starts."""
    nz, nx = shape
    mz, mx = nz - hz, nx - hx
    dz = np.arange(-(mz - 1), mz)[:, None]
    dxx = np.arange(-(mx - 1), mx)[None, :]
    cnt = (mz - np.abs(dz)) * (mx - np.abs(dxx))
    terms = c(dz, dxx) ** 2 + c(dz - hz, dxx - hx) * c(dz + hz, dxx + hx)
    m = mz * mx
    return math.sqrt(float((cnt * terms).sum()) / (n * m * m))
