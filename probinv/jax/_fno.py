"""The FNO surrogate's forward pass in JAX, with the weights of a PyTorch :class:`probinv.surrogate.FNOSurrogate`.

:func:`fno_params` is the one converter (PyTorch module -> a dict of arrays); :func:`fno_apply` evaluates the same
network (input encoding, lifting, Fourier layers, projection, residual decoding) on the training grid. The spectral
convolution uses ``rfft2``/``irfft2`` (the PyTorch module's ``"fft"`` method, mathematically the same map as its
default ``"dft"`` GEMMs).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

from ..surrogate import FNOSurrogate
from ._config import enable_x64

enable_x64()

__all__ = ["fno_apply", "fno_params"]


def fno_params(surrogate: FNOSurrogate, dtype=None) -> dict:
    """Convert a :class:`probinv.surrogate.FNOSurrogate` (e.g. ``load_pretrained()``) into JAX arrays.

    Parameters
    ----------
    surrogate : FNOSurrogate
    dtype : optional
        ``jnp.float32`` / ``jnp.float64``; default the surrogate's.

    Returns
    -------
    dict
        ``"lift"``, ``"pointwise"`` (list), ``"proj1"``, ``"proj2"``: ``(weight [out, in], bias [out])``;
        ``"spectral"``: list of complex kernels ``[in, out, 2 modes_z, modes_x]``; ``"scale" [n_frames]``,
        ``"homogeneous" [n_frames, 2 nz - 1, 2 nx - 1]`` and ``"config"`` (the surrogate's configuration).
    """
    if not isinstance(surrogate, FNOSurrogate):
        raise TypeError(f"surrogate must be a probinv.surrogate.FNOSurrogate, got {type(surrogate).__name__}")

    def arr(t):
        a = t.detach().cpu().numpy()
        return jnp.asarray(a if dtype is None else a.astype(dtype))

    net = surrogate.net

    def lin(m):
        return arr(m.weight), arr(m.bias)

    def spec(m):
        w = m.weight.detach().cpu().to(torch.float64).numpy()
        c = w[..., 0] + 1j * w[..., 1]
        cdt = np.complex64 if (dtype or m.weight.detach().cpu().numpy().dtype) == np.float32 else np.complex128
        return jnp.asarray(c.astype(cdt))

    return {"lift": lin(net.lift), "pointwise": [lin(p) for p in net.pointwise], "spectral": [spec(s) for s in
                                                                                              net.spectral],
            "proj1": lin(net.proj1), "proj2": lin(net.proj2), "scale": arr(surrogate.scale),
            "homogeneous": arr(surrogate.homogeneous), "config": dict(surrogate.config)}


def _pointwise(wb, x):
    w, b = wb
    return jnp.einsum("oc,bczx->bozx", w, x) + b[None, :, None, None]


def _spectral(weight, x):
    nz, nx = x.shape[-2:]
    mz2, mx = weight.shape[2], weight.shape[3]
    mz = mz2 // 2
    xf = jnp.fft.rfft2(x)
    xk = jnp.concatenate([xf[:, :, :mz, :mx], xf[:, :, nz - mz:, :mx]], axis=2)
    yk = jnp.einsum("bizx,iozx->bozx", xk, weight.astype(xk.dtype))
    out = jnp.zeros(yk.shape[:2] + (nz, nx // 2 + 1), dtype=yk.dtype)
    out = out.at[:, :, :mz, :mx].set(yk[:, :, :mz]).at[:, :, nz - mz:, :mx].set(yk[:, :, mz:])
    return jnp.fft.irfft2(out, s=(nz, nx))


@jax.jit
def _network(p, feats):
    h = _pointwise(p["lift"], feats)
    for spec, point in zip(p["spectral"], p["pointwise"], strict=True):
        h = jax.nn.relu(_spectral(spec, h) + _pointwise(point, h))
    return _pointwise(p["proj2"], jax.nn.relu(_pointwise(p["proj1"], h)))


def fno_apply(params: dict, v, source_locations) -> jax.Array:
    """Predicted wavefield ``[batch, n_frames, nz, nx]`` of ``v [batch, nz, nx]`` (m/s) on the training grid.

    ``source_locations``: int ``[batch, 2]`` ``(z, x)`` grid indices (concrete), one source per model. Equals
    ``surrogate(v, source_locations)`` of the PyTorch module the parameters came from, to rounding.
    """
    c = params["config"]
    g = c["grid"]
    nz, nx, dx = g["nz"], g["nx"], g["dx"]
    if v.ndim != 3 or tuple(v.shape[-2:]) != (nz, nx):
        raise ValueError(f"v must be shaped [batch, {nz}, {nx}] (the surrogate's training grid), got {tuple(v.shape)}")
    src = np.asarray(source_locations.detach().cpu() if isinstance(source_locations, torch.Tensor)
                     else source_locations).astype(np.int64)
    if src.shape != (v.shape[0], 2) or ((src < 0) | (src >= np.array([nz, nx]))).any():
        raise ValueError(f"source_locations must be int [{v.shape[0]}, 2] grid indices inside {nz} x {nx}, got "
                         f"{src.tolist()}")
    dtype = v.dtype
    z = jnp.arange(nz, dtype=dtype) * dx
    x = jnp.arange(nx, dtype=dtype) * dx
    s = jnp.asarray(src, dtype=dtype) * dx
    dz = z[None, :, None] - s[:, 0, None, None]
    dxx = x[None, None, :] - s[:, 1, None, None]
    r = jnp.sqrt(dz * dz + dxx * dxx)
    extent = nz * dx
    b = v.shape[0]
    feats = jnp.stack([(v - c["v_mean"]) / c["v_std"], jnp.exp(-0.5 * (r / c["source_width"]) ** 2), r / extent,
                       jnp.broadcast_to((z / extent)[None, :, None], (b, nz, nx)),
                       jnp.broadcast_to((x / extent)[None, None, :], (b, nz, nx))], axis=1)
    y = _network({k: params[k] for k in ("lift", "spectral", "pointwise", "proj1", "proj2")}, feats)
    y = y * params["scale"].astype(dtype)[:, None, None]
    if c["target"] == "residual":
        big = params["homogeneous"].astype(dtype)
        u0 = jnp.stack([big[:, nz - 1 - sz:2 * nz - 1 - sz, nx - 1 - sx:2 * nx - 1 - sx] for sz, sx in src.tolist()])
        y = y + u0
    return y
