r"""Metrics that compare a recovered model with a reference (true) model.

* :func:`relative_l2` — :math:`\|m - m_{ref}\|_2 / \|m_{ref}\|_2` (paper 1's model misfit).
* :func:`ssim` and :func:`ms_ssim` — structural similarity (paper 2's figures and tables), computed by the maintained
  ``pytorch-msssim`` package (differentiable, device-following) with the conventions of Wang et al. (2004): an 11 x 11
  Gaussian window of standard deviation 1.5 px, ``K1 = 0.01``, ``K2 = 0.03``, statistics over the "valid" window
  positions. With those conventions :func:`ssim` equals
  ``skimage.metrics.structural_similarity(a, b, data_range=..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)`` (tested to 1e-3).

``data_range`` (the dynamic range of the values, e.g. m/s) matters for SSIM: by default it is the reference model's
``max - min`` (over the whole input), which makes the score independent of the unit; pass it explicitly to compare
scores between studies (paper 2 does not state its choice).

Models are ``(nz, nx)`` or ``(batch, nz, nx)`` tensors; batched inputs give one value per model.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim as _ssim

# pytorch-msssim's public ms_ssim insists on 5 scales (grids > 160 px); its per-scale kernel is reused for fewer
from pytorch_msssim.ssim import _fspecial_gauss_1d
from pytorch_msssim.ssim import _ssim as _ssim_and_cs

#: MS-SSIM scale weights of Wang, Simoncelli & Bovik (2003).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_models(model, reference, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    for arg, x in (("model", model), ("reference", reference)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor shaped (nz, nx) or (batch, nz, nx), "
                            f"got {type(x).__name__}")
        if x.ndim not in (2, 3):
            raise ValueError(f"{name}: {arg} must be shaped (nz, nx) or (batch, nz, nx), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: {arg} must have a floating dtype, got {x.dtype}")
    if model.shape[-2:] != reference.shape[-2:]:
        raise ValueError(f"{name}: model and reference must have the same grid, got {tuple(model.shape)} and "
                         f"{tuple(reference.shape)}")
    if model.ndim == 3 and reference.ndim == 3 and model.shape[0] != reference.shape[0]:
        raise ValueError(f"{name}: model and reference batches differ: {model.shape[0]} and {reference.shape[0]}")
    return model, reference


def relative_l2(model: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    r"""Relative L2 model error :math:`\|m - m_{ref}\|_2 / \|m_{ref}\|_2` over the grid.

    Parameters
    ----------
    model, reference : Tensor
        ``(nz, nx)`` or ``(batch, nz, nx)`` (a 2-D reference broadcasts over a batch of models).

    Returns
    -------
    Tensor
        Scalar, or ``[batch]``; dimensionless.
    """
    model, reference = _check_models(model, reference, "relative_l2")
    num = torch.linalg.vector_norm(model - reference, dim=(-2, -1))
    den = torch.linalg.vector_norm(reference, dim=(-2, -1))
    if bool((den == 0).any()):
        raise ValueError("relative_l2: reference has zero norm; the relative error is undefined")
    return num / den


def _prepare(model, reference, data_range, name):
    model, reference = _check_models(model, reference, name)
    batched = model.ndim == 3 or reference.ndim == 3
    m = model if model.ndim == 3 else model[None]
    r = reference if reference.ndim == 3 else reference[None]
    m, r = torch.broadcast_tensors(m, r)
    if data_range is None:
        data_range = float(reference.detach().max() - reference.detach().min())
        if data_range == 0:
            raise ValueError(f"{name}: reference is constant, so data_range cannot be inferred; pass data_range")
    elif isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0:
        raise ValueError(f"{name}: data_range must be a positive number (the value range, e.g. vmax - vmin in m/s), "
                         f"got {data_range!r}")
    return m[:, None], r[:, None], float(data_range), batched


def _check_window(win_size, shape, name):
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"{name}: win_size must be an odd integer >= 3, got {win_size!r}")
    if min(shape) < win_size:
        raise ValueError(f"{name}: the grid {tuple(shape)} is smaller than the {win_size} x {win_size} window; "
                         f"pass a smaller odd win_size")


def ssim(model: torch.Tensor, reference: torch.Tensor, data_range: float | None = None, *,
         win_size: int = 11) -> torch.Tensor:
    r"""Structural similarity index (Wang et al. 2004) between a model and a reference, in [-1, 1].

    Parameters
    ----------
    model, reference : Tensor
        ``(nz, nx)`` or ``(batch, nz, nx)``.
    data_range : float, optional
        Dynamic range of the values (same unit as the models); default ``reference.max() - reference.min()``.
    win_size : int
        Side of the Gaussian window (odd; sigma = 1.5 px). 11 is the standard (and scikit-image's with
        ``gaussian_weights=True``).

    Returns
    -------
    Tensor
        Scalar, or ``[batch]``; differentiable.
    """
    m, r, dr, batched = _prepare(model, reference, data_range, "ssim")
    _check_window(win_size, m.shape[-2:], "ssim")
    out = _ssim(m, r, data_range=dr, size_average=False, win_size=win_size)
    return out if batched else out[0]


def ms_ssim(model: torch.Tensor, reference: torch.Tensor, data_range: float | None = None, *,
            win_size: int = 11, weights=None) -> torch.Tensor:
    r"""Multi-scale SSIM (Wang, Simoncelli & Bovik 2003) between a model and a reference.

    The standard definition uses 5 scales (4 halvings), which needs grids larger than ``(win_size - 1) * 2^4``
    (161 px for the 11-px window). Seismic models are often smaller (paper 2's Marmousi2 is 44 x 100), so when
    ``weights`` is not given the number of scales is reduced to the largest ``L <= 5`` with
    ``min(nz, nx) > (win_size - 1) * 2^(L - 1)``, using the first ``L`` standard weights renormalised to sum to 1
    (a ``UserWarning`` says so). Pass ``weights`` (and a smaller ``win_size``) to control this yourself.

    Parameters
    ----------
    model, reference : Tensor
        ``(nz, nx)`` or ``(batch, nz, nx)``.
    data_range : float, optional
        As in :func:`ssim`.
    win_size : int
        Gaussian window side (odd).
    weights : sequence of float, optional
        Per-scale exponents (their number is the number of scales).

    Returns
    -------
    Tensor
        Scalar, or ``[batch]``.
    """
    m, r, dr, batched = _prepare(model, reference, data_range, "ms_ssim")
    _check_window(win_size, m.shape[-2:], "ms_ssim")
    smallest = min(m.shape[-2:])
    if weights is None:
        levels = 5
        while levels > 1 and smallest <= (win_size - 1) * 2 ** (levels - 1):
            levels -= 1
        w = list(MS_SSIM_WEIGHTS[:levels])
        if levels < 5:
            warnings.warn(f"ms_ssim: a {tuple(m.shape[-2:])} grid supports {levels} scale(s) with a {win_size}-px "
                          f"window (5 need min(nz, nx) > {(win_size - 1) * 16}); using the first {levels} standard "
                          f"weights renormalised", UserWarning, stacklevel=2)
        total = sum(w)
        w = [x / total for x in w]
    else:
        w = [float(x) for x in weights]
        if not w or any(x < 0 for x in w):
            raise ValueError(f"ms_ssim: weights must be a non-empty sequence of non-negative numbers, got {weights!r}")
        if smallest <= (win_size - 1) * 2 ** (len(w) - 1):
            raise ValueError(f"ms_ssim: {len(w)} scales need min(nz, nx) > {(win_size - 1) * 2 ** (len(w) - 1)} "
                             f"with win_size={win_size}, got a {tuple(m.shape[-2:])} grid")
    out = _multiscale(m, r, dr, win_size, w)
    return out if batched else out[0]


def _multiscale(x: torch.Tensor, y: torch.Tensor, data_range: float, win_size: int, weights: list) -> torch.Tensor:
    """MS-SSIM of ``[batch, 1, H, W]`` images with ``len(weights)`` scales: the loop of ``pytorch_msssim.ms_ssim``
    (contrast-structure terms at every scale but the last, full SSIM at the last, each clipped at 0 and raised to
    its weight, 2 x 2 average pooling between scales), without its 5-scale size requirement.
    """
    win = _fspecial_gauss_1d(win_size, 1.5).to(dtype=x.dtype, device=x.device)
    win = win.repeat([x.shape[1]] + [1] * (x.ndim - 1))
    w = torch.tensor(weights, dtype=x.dtype, device=x.device)
    terms = []
    for level in range(len(weights)):
        s, cs = _ssim_and_cs(x, y, win=win, data_range=data_range, size_average=False, K=(0.01, 0.03))
        if level < len(weights) - 1:
            terms.append(torch.relu(cs))
            padding = [n % 2 for n in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    terms.append(torch.relu(s))
    stacked = torch.stack(terms, dim=0)                         # [levels, batch, channel]
    return torch.prod(stacked ** w.view(-1, 1, 1), dim=0).mean(1)


__all__ = ["MS_SSIM_WEIGHTS", "ms_ssim", "relative_l2", "ssim"]
