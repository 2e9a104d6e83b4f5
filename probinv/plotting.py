"""Figures: models with physical axes (km) and colour bars in m/s, gathers, posterior maps, ArviZ plots, misfits.

Every function draws into the axes it is given (or a new figure) and returns the matplotlib ``Figure``; nothing
calls ``plt.show``. Use :func:`save_figure` to write a PNG atomically. Import this module only where figures are made:
it imports matplotlib (with the non-interactive Agg backend when no backend has been chosen yet).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

if "MPLBACKEND" not in os.environ and matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
    matplotlib.use("Agg")  # library code never opens windows; users may still choose a backend before importing us
import arviz as az  # noqa: E402 (after the backend choice: ArviZ imports pyplot)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from ._files import atomic_path  # noqa: E402

__all__ = [
    "plot_arviz",
    "plot_gather",
    "plot_gather_comparison",
    "plot_illumination",
    "plot_misfit",
    "plot_model",
    "plot_models",
    "plot_posterior_maps",
    "plot_predictive_check",
    "save_figure",
]

_FIELD_LABEL = {"vp": ("$v_P$", "m/s"), "vs": ("$v_S$", "m/s"), "v": ("$v$", "m/s"), "rho": (r"$\rho$", "kg/m$^3$"),
                "q": ("$Q$", ""), "qp": ("$Q_P$", ""), "qs": ("$Q_S$", "")}


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _check_2d(name, a):
    a = _np(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2D (nz, nx) array, got shape {a.shape}")
    return a


def _axes(ax, ncols=1, width=4.2, height=3.2):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False, constrained_layout=True)
    return fig, ax[0, 0] if ncols == 1 else ax[0]


def plot_model(field, dx: float, *, ax=None, title: str | None = None, name: str = "vp", units: str | None = None,
               cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
               origin: tuple[float, float] = (0.0, 0.0), sources=None, receivers=None, colorbar: bool = True):
    """Image of one ``(nz, nx)`` field with depth and distance in km and a colour bar in the field's units.

    Parameters
    ----------
    field : Tensor or ndarray (nz, nx)
        Values in SI units (m/s for velocities).
    dx : float
        Grid spacing in m.
    ax : matplotlib Axes, optional
        Where to draw; default a new figure.
    name, units : str
        Field name (``"vp"``, ``"vs"``, ``"rho"``, ``"q"``...) used for the colour-bar label; ``units`` overrides.
    sources, receivers : Tensor [n, 2] or [n_shots, n, 2], optional
        ``(z, x)`` grid indices drawn as red stars / white triangles.
    """
    a = _check_2d("field", field)
    if not (isinstance(dx, (int, float)) and dx > 0):
        raise ValueError(f"dx must be a positive grid spacing in m, got {dx!r}")
    fig, ax = _axes(ax)
    nz, nx = a.shape
    z0, x0 = origin
    extent = [(x0 - dx / 2) / 1e3, (x0 + (nx - 0.5) * dx) / 1e3, (z0 + (nz - 0.5) * dx) / 1e3, (z0 - dx / 2) / 1e3]
    im = ax.imshow(a, extent=extent, cmap=cmap, vmin=vmin, vmax=vmax, aspect="equal", interpolation="nearest")
    ax.set_xlabel("x (km)")
    ax.set_ylabel("depth (km)")
    if title:
        ax.set_title(title)
    for locs, style in ((sources, dict(marker="*", c="red", s=60)), (receivers, dict(marker="v", c="w", s=12))):
        if locs is not None:
            p = _np(locs).reshape(-1, 2)
            p = np.unique(p, axis=0)
            ax.scatter((x0 + p[:, 1] * dx) / 1e3, (z0 + p[:, 0] * dx) / 1e3, edgecolors="k", linewidths=0.4,
                       clip_on=False, zorder=3, **style)
    if colorbar:
        sym, u = _FIELD_LABEL.get(name, (name, ""))
        u = units if units is not None else u
        fig.colorbar(im, ax=ax, shrink=0.85, label=f"{sym} ({u})" if u else sym)
    return fig


def plot_models(fields: Mapping[str, object], dx: float, *, name: str = "vp", same_scale: bool = True,
                ncols: int | None = None, **kwargs):
    """Several fields side by side (e.g. true / initial / MAP), sharing one colour scale when ``same_scale``."""
    arrays = {k: _check_2d(f"fields[{k!r}]", v) for k, v in fields.items()}
    if not arrays:
        raise ValueError("fields must hold at least one (nz, nx) array")
    n = len(arrays)
    ncols = ncols or n
    nrows = int(np.ceil(n / ncols))
    nz, nx = next(iter(arrays.values())).shape
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols * max(nx / nz, 0.6), 2.9 * nrows + 0.3),
                             squeeze=False, constrained_layout=True)
    lo = kwargs.pop("vmin", min(float(a.min()) for a in arrays.values()) if same_scale else None)
    hi = kwargs.pop("vmax", max(float(a.max()) for a in arrays.values()) if same_scale else None)
    for ax, (title, a) in zip(axes.flat, arrays.items(), strict=False):
        plot_model(a, dx, ax=ax, title=title, name=name, vmin=lo, vmax=hi, **kwargs)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig


def plot_posterior_maps(mean, std, dx: float, *, lower=None, upper=None, true=None, name: str = "vp",
                        level: float = 0.9, **kwargs):
    """Posterior mean, standard deviation and credible-interval width side by side (plus the truth when given).

    Parameters
    ----------
    mean, std : (nz, nx)
        Posterior mean and standard deviation (m/s for velocities).
    lower, upper : (nz, nx), optional
        Bounds of the central ``level`` credible interval; its width ``upper - lower`` is drawn when given.
    true : (nz, nx), optional
        True model, drawn first on the mean's colour scale.
    """
    m, s = _check_2d("mean", mean), _check_2d("std", std)
    if m.shape != s.shape:
        raise ValueError(f"mean and std must have the same shape, got {m.shape} and {s.shape}")
    panels = []
    if true is not None:
        panels.append(("true", _check_2d("true", true), "viridis"))
    panels.append(("posterior mean", m, "viridis"))
    panels.append(("posterior std", s, "magma"))
    if lower is not None and upper is not None:
        panels.append((f"{int(round(100 * level))} % interval width", _check_2d("upper", upper)
                       - _check_2d("lower", lower), "magma"))
    nz, nx = m.shape
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) * max(nx / nz, 0.6), 3.1), squeeze=False,
                             constrained_layout=True)
    lo = min(float(p[1].min()) for p in panels if p[2] == "viridis")
    hi = max(float(p[1].max()) for p in panels if p[2] == "viridis")
    for ax, (title, a, cmap) in zip(axes[0], panels, strict=False):
        scale = dict(vmin=lo, vmax=hi) if cmap == "viridis" else dict(vmin=0.0)
        plot_model(a, dx, ax=ax, title=title, name=name, cmap=cmap, **scale, **kwargs)
    return fig


def plot_illumination(illumination, dx: float, *, std_ratio=None, threshold_db: float = -10.0, name: str = "vp",
                      sources=None, receivers=None):
    """Where the data illuminate a field: its illumination map in dB below the peak (and the posterior / prior std).

    Parameters
    ----------
    illumination : (nz, nx)
        ``diag(J^T J)`` of :func:`probinv.diagnostics.illumination` (any positive scale: drawn as
        ``10 log10(map / max)``, clipped at -40 dB).
    dx : float
        Grid spacing in m.
    std_ratio : (nz, nx), optional
        Posterior / prior standard deviation, drawn beside it (0 to 1.2) with the same contour.
    threshold_db : float
        The contour drawn on both panels: the verdict's "illuminated" pixels lie inside it.
    """
    lit = _check_2d("illumination", illumination)
    if not (isinstance(threshold_db, (int, float)) and threshold_db < 0):
        raise ValueError(f"threshold_db must be a negative number of dB, got {threshold_db!r}")
    peak = float(lit.max())
    db = 10.0 * np.log10(np.maximum(lit / peak, 1e-4)) if peak > 0 else np.full(lit.shape, -40.0)
    panels = [("illumination (dB below the peak)", db, "cividis", dict(vmin=-40.0, vmax=0.0), "dB")]
    if std_ratio is not None:
        r = _check_2d("std_ratio", std_ratio)
        if r.shape != lit.shape:
            raise ValueError(f"std_ratio must have the illumination's shape {lit.shape}, got {r.shape}")
        panels.append(("posterior / prior std", r, "magma", dict(vmin=0.0, vmax=1.2), "1"))
    nz, nx = lit.shape
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels) * max(nx / nz, 0.6), 3.1), squeeze=False,
                             constrained_layout=True)
    xs = (np.arange(nx) * dx) / 1e3
    zs = (np.arange(nz) * dx) / 1e3
    for ax, (title, a, cmap, scale, units) in zip(axes[0], panels, strict=True):
        plot_model(a, dx, ax=ax, title=title, name=name, units=units, cmap=cmap, sources=sources,
                   receivers=receivers, **scale)
        if peak > 0 and (db >= threshold_db).any() and (db < threshold_db).any():
            ax.contour(xs, zs, db, levels=[threshold_db], colors="w", linewidths=1.0)
    fig.suptitle(f"{name}: inside the white line the data illuminate the model (within {-threshold_db:g} dB)")
    return fig


def plot_gather(data, dt: float, *, ax=None, title: str | None = None, receiver_x=None, clip: float = 0.98,
                t0: float = 0.0, cmap: str = "gray"):
    """One shot gather ``[n_receivers, nt]`` as an image.

    Receivers across (km when ``receiver_x`` in m is given), time down (s); the colour scale is symmetric, clipped
    at the ``clip`` quantile of ``|data|``.
    """
    d = _check_2d("data", data)
    fig, ax = _axes(ax, width=3.6, height=3.6)
    nrec, nt = d.shape
    v = float(np.quantile(np.abs(d), clip)) or 1.0
    if receiver_x is not None:
        rx = _np(receiver_x).astype(float) / 1e3
        left, right, xlabel = rx[0], rx[-1], "receiver x (km)"
    else:
        left, right, xlabel = 0, nrec - 1, "receiver"
    ax.imshow(d.T, aspect="auto", cmap=cmap, vmin=-v, vmax=v, extent=[left, right, t0 + (nt - 1) * dt, t0],
              interpolation="nearest")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("time (s)")
    if title:
        ax.set_title(title)
    return fig


def plot_gather_comparison(observed, predicted, dt: float, *, shot: int = 0, receiver_x=None,
                           traces: Sequence[int] | None = None, titles=("observed", "predicted"),
                           source_x: float | None = None):
    """Observed and predicted gathers of one shot, their difference on the same scale, and a few overlaid traces.

    ``observed``, ``predicted``: ``[n_shots, n_receivers, nt]`` (or one shot ``[n_receivers, nt]``). The figure is
    titled with the shot's index (and its source position ``source_x`` in m, when given); the legend of the traces
    sits above their panel, clear of the top trace.
    """
    o, p = _np(observed), _np(predicted)
    if o.shape != p.shape:
        raise ValueError(f"observed and predicted must have the same shape, got {o.shape} and {p.shape}")
    if o.ndim == 3:
        if not 0 <= shot < o.shape[0]:
            raise ValueError(f"shot must be in [0, {o.shape[0]}), got {shot}")
        o, p = o[shot], p[shot]
    nrec, nt = o.shape
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), constrained_layout=True)
    v = float(np.quantile(np.abs(o), 0.98)) or 1.0
    for ax, d, t in zip(axes[:3], (o, p, o - p), (*titles, "difference (same scale)"), strict=True):
        plot_gather(d, dt, ax=ax, title=t, receiver_x=receiver_x)
        ax.images[0].set_clim(-v, v)
    t = np.arange(nt) * dt
    traces = list(traces) if traces is not None else sorted({0, nrec // 2, nrec - 1})
    scale = 0.5 / (np.abs(o).max() or 1.0)
    for k, r in enumerate(traces):
        axes[3].plot(t, k + scale * o[r], "k", lw=1, label=titles[0] if k == 0 else None)
        axes[3].plot(t, k + scale * p[r], "r--", lw=1, label=titles[1] if k == 0 else None)
    axes[3].set_yticks(range(len(traces)), [f"rec {r}" for r in traces])
    axes[3].set_xlabel("time (s)")
    # above the panel: inside it, the legend covered the top trace (issue 15)
    axes[3].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    where = f" (source at x = {source_x:g} m)" if source_x is not None else ""
    fig.suptitle(f"shot {shot}{where}: {titles[0]} and {titles[1]} data")
    return fig


def plot_predictive_check(observed, predictive, dt: float, *, shot: int = 0, level: float = 0.9,
                          traces: Sequence[int] | None = None, receiver_x=None, pit=None, coverage=None):
    """Posterior predictive check: observed traces of one shot inside the replicated data's ``level`` band (both minus
    the replicates' median, each trace scaled to its band), and the histogram of the probability integral transform
    (PIT) of every datum against the uniform it should follow.

    ``observed``: ``[n_shots, n_receivers, nt]`` (or one shot ``[n_receivers, nt]``); ``predictive``: replicated data
    ``[..., n_shots, n_receivers, nt]`` (posterior draws + noise); ``pit`` / ``coverage``: from
    :func:`probinv.diagnostics.predictive_check` (shown in the histogram and the title).
    """
    o = _np(observed)
    p = _np(predictive)
    if p.shape[-o.ndim:] != o.shape:
        raise ValueError(f"predictive must be [..., {', '.join(map(str, o.shape))}], got shape {p.shape}")
    p = p.reshape((-1,) + o.shape)
    if o.ndim == 3:
        if not 0 <= shot < o.shape[0]:
            raise ValueError(f"shot must be in [0, {o.shape[0]}), got {shot}")
        o1, p1 = o[shot], p[:, shot]
    else:
        o1, p1 = o, p
    nrec, nt = o1.shape
    t = np.arange(nt) * dt
    traces = list(traces) if traces is not None else sorted({0, nrec // 2, nrec - 1})
    # residual view: the band and the observed trace minus the replicates' median (a band of noise width is
    # invisible on the traces themselves), each trace scaled to its own band
    med = np.median(p1, axis=0)
    lo, hi = np.quantile(p1, [(1 - level) / 2, (1 + level) / 2], axis=0) - med
    res = o1 - med
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True,
                             gridspec_kw={"width_ratios": [2.2, 1.0]})
    for k, r in enumerate(traces):
        scale = 0.4 / (max(np.abs(res[r]).max(), np.abs(hi[r]).max(), np.abs(lo[r]).max()) or 1.0)
        axes[0].fill_between(t, k + scale * lo[r], k + scale * hi[r], color="tab:blue", alpha=0.35, lw=0,
                             label=f"{100 * level:.0f} % predictive band" if k == 0 else None)
        axes[0].plot(t, k + scale * res[r], "k", lw=0.6, label="observed" if k == 0 else None)
    rx = _np(receiver_x) if receiver_x is not None else None
    axes[0].set_yticks(range(len(traces)),
                       [f"rec {r}" + (f" (x {rx[r]:g} m)" if rx is not None else "") for r in traces])
    axes[0].set_xlabel("time (s); observed and replicated data minus the replicates' median, each trace scaled")
    axes[0].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    if pit is not None:
        # the PIT takes the n + 1 values (r + 1/2) / (n + 1): group whole ranks (equal bins would hold unequal
        # numbers of them, a false bump) and divide each group's count by its width
        n = p.shape[0]
        ranks = np.rint(_np(pit).ravel() * (n + 1) - 0.5).astype(int)
        edges = np.unique(np.rint(np.linspace(0, n + 1, min(10, n + 1) + 1)).astype(int))
        counts = np.histogram(ranks, bins=edges)[0]
        widths = np.diff(edges) / (n + 1)
        axes[1].bar(edges[:-1] / (n + 1), counts / ranks.size / widths, width=widths, align="edge",
                    color="tab:blue", alpha=0.7)
        axes[1].axhline(1.0, color="k", ls="--", lw=1, label="calibrated (uniform)")
        axes[1].set_xlabel("PIT of the observed data")
        axes[1].set_ylabel("density")
        axes[1].legend(fontsize=8, loc="lower center")
    else:
        axes[1].axis("off")
    cov = "" if coverage is None else f"; observed data inside the {100 * level:.0f} % band at {100 * coverage:.0f} %"
    fig.suptitle(f"posterior predictive check (shot {shot}, {p.shape[0]} replicated data sets{cov})")
    return fig


def plot_misfit(history: Mapping[str, Sequence[float]] | Sequence[float], *, ax=None, log: bool = True,
                xlabel: str = "iteration", ylabel: str = "loss"):
    """Misfit / loss curves: one line per named history (e.g. ``{"MAP": losses, "SVI": elbo_losses}``)."""
    if not isinstance(history, Mapping):
        history = {"loss": history}
    fig, ax = _axes(ax, width=4.5, height=3.0)
    for label, h in history.items():
        h = _np(h).astype(float).ravel()
        if h.size == 0:
            raise ValueError(f"history[{label!r}] is empty")
        ax.plot(np.arange(h.size), h, label=label)
    if log and all(np.all(_np(h).astype(float) > 0) for h in history.values()):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(history) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    return fig


def plot_arviz(idata, kind: str = "trace", *, var_name: str = "vp", pixels: Sequence[tuple[int, int]] | None = None):
    """ArviZ ``trace``, ``rank`` or ``pair`` plot of selected pixels ``(iz, ix)`` of one posterior variable.

    ``idata`` is an ``arviz.InferenceData`` whose posterior variable ``var_name`` has dims ``(chain, draw, z, x)``
    (as :meth:`probinv.inference.Posterior.to_arviz` returns). Default pixels: the centre and two off-centre ones.
    """
    valid = {"trace": az.plot_trace, "rank": az.plot_rank, "pair": az.plot_pair}
    if kind not in valid:
        raise ValueError(f"kind must be one of {sorted(valid)}, got {kind!r}")
    post = idata.posterior
    if var_name not in post:
        raise ValueError(f"var_name {var_name!r} is not a posterior variable; available: {sorted(post.data_vars)}")
    da = post[var_name]
    nz, nx = da.sizes["z"], da.sizes["x"]
    if pixels is None:
        pixels = [(nz // 2, nx // 2), (nz // 4, nx // 4), (3 * nz // 4, 3 * nx // 4)]
    sub = {}
    for iz, ix in pixels:
        if not (0 <= iz < nz and 0 <= ix < nx):
            raise ValueError(f"pixel ({iz}, {ix}) is outside the (nz, nx) = ({nz}, {nx}) grid")
        z_m, x_m = float(da["z"][iz]), float(da["x"][ix])
        sub[f"{var_name} at z = {z_m:g} m, x = {x_m:g} m"] = da.isel(z=iz, x=ix, drop=True)
    ds = xr.Dataset(sub)
    units = da.attrs.get("units", "m/s" if var_name in ("vp", "vs", "v") else "")
    label = f"{var_name} ({units})" if units else var_name
    if kind == "pair":
        axes = az.plot_pair(ds, kind="scatter", marginals=True, scatter_kwargs={"alpha": 0.4})
        fig = np.ravel(axes)[0].figure
        return fig
    if kind == "trace":
        axes = np.atleast_2d(az.plot_trace(ds, compact=False))
        fig = axes[0, 0].figure
        fig.set_size_inches(11, 2.4 * axes.shape[0] + 0.6)
        for row, name in zip(axes, sub, strict=True):
            row[0].set_title(f"{name}: posterior density", fontsize=10)
            row[0].set_xlabel(label)
            row[1].set_title(f"{name}: draws", fontsize=10)
            row[1].set_xlabel("draw")
            row[1].set_ylabel(label)
    else:
        axes = np.atleast_1d(az.plot_rank(ds))
        fig = np.ravel(axes)[0].figure
        for ax, name in zip(np.ravel(axes), sub, strict=False):
            ax.set_title(f"{name}: rank of the draws", fontsize=10)
            ax.set_xlabel("rank (all chains)")
    # titles with units overlapped the tick labels of the panel above (issue 15): let matplotlib lay them out
    fig.set_layout_engine("constrained")
    return fig


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) atomically, then close it; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
