"""Reading and writing models and shot gathers: NetCDF (netCDF4) and SEG-Y (segyio).

NetCDF files follow DESIGN.md section 5: CF-style coordinates ``z``, ``x`` (m), ``time`` (s), ``shot`` and
``receiver``, each with a ``units`` attribute, and the provenance (probinv version, creation time, the configuration
that produced the file) as global attributes. They open with plain ``xarray.open_dataset``. Every write goes to a
temporary file in the destination folder first and is then renamed over the destination (``os.replace``), so a run
killed while writing never leaves a truncated file behind.

Posteriors are written by :meth:`probinv.inference.Posterior.to_netcdf`; this module handles velocity / Q / density
models and shot gathers, and imports SEG-Y shot gathers and velocity models with the geometry taken from the trace
headers.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from ._files import atomic_path as atomic_path  # re-exported: probinv.io.atomic_path
from ._version import __version__

log = logging.getLogger(__name__)

#: Units and long names of the fields probinv knows. Any other field name is accepted with ``units = "1"``
#: unless the caller passes its units.
FIELD_UNITS = {
    "vp": ("m/s", "P-wave velocity"),
    "vs": ("m/s", "S-wave velocity"),
    "v": ("m/s", "acoustic velocity"),
    "rho": ("kg/m^3", "density"),
    "q": ("1", "quality factor Q"),
    "qp": ("1", "P-wave quality factor"),
    "qs": ("1", "S-wave quality factor"),
}

__all__ = [
    "FIELD_UNITS",
    "Gather",
    "InputError",
    "check_output_dir",
    "describe_bad_values",
    "Model",
    "atomic_path",
    "provenance_attrs",
    "read_gather",
    "read_model",
    "read_segy_gather",
    "read_segy_model",
    "write_gather",
    "write_model",
]


class InputError(ValueError):
    """An input file or output location probinv cannot use; the message names it, the value and the fix.

    The ``probinv`` command reports it as one line with exit status 2 (:class:`probinv.config.ConfigError` is one).
    """


# ----------------------------------------------------------------------------------------------------------------------
# data containers
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Model:
    """Gridded subsurface fields on a regular grid.

    Attributes
    ----------
    fields : dict[str, Tensor[nz, nx]]
        Named fields in SI units (``vp``/``vs``/``v`` in m/s, ``rho`` in kg/m^3, ``q`` dimensionless).
    dx : float
        Grid spacing in m, equal in z and x.
    origin : tuple[float, float]
        ``(z0, x0)`` position of cell ``(0, 0)`` in m.
    attrs : dict
        Global attributes read from / written to the file (provenance).
    """

    fields: dict[str, torch.Tensor]
    dx: float
    origin: tuple[float, float] = (0.0, 0.0)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(nz, nx)`` of the grid."""
        return tuple(next(iter(self.fields.values())).shape[-2:])

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell-centre coordinates ``z[nz]``, ``x[nx]`` in m."""
        nz, nx = self.shape
        return self.origin[0] + self.dx * np.arange(nz), self.origin[1] + self.dx * np.arange(nx)


@dataclass
class Gather:
    """Shot gathers with their acquisition geometry.

    Attributes
    ----------
    data : Tensor[n_shots, n_receivers, nt]
        Recorded traces (units given by ``units``).
    dt : float
        Time step in s; sample ``n`` is the value at ``t = t0 + n * dt``.
    source_locations : Tensor[n_shots, n_sources_per_shot, 2] (int64)
        ``(z, x)`` grid indices of the sources.
    receiver_locations : Tensor[n_shots, n_receivers, 2] (int64)
        ``(z, x)`` grid indices of the receivers.
    dx : float
        Grid spacing in m used to turn indices into positions.
    origin : tuple[float, float]
        ``(z0, x0)`` in m of grid index ``(0, 0)``.
    t0 : float
        Time of the first sample in s.
    units : str
        Units of the data (``"Pa"`` for pressure, ``"m/s"`` for particle velocity, ``"1"`` when unknown).
    attrs : dict
        Global attributes (provenance).
    """

    data: torch.Tensor
    dt: float
    source_locations: torch.Tensor
    receiver_locations: torch.Tensor
    dx: float
    origin: tuple[float, float] = (0.0, 0.0)
    t0: float = 0.0
    units: str = "1"
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def time(self) -> np.ndarray:
        """Sample times ``t[nt]`` in s."""
        return self.t0 + self.dt * np.arange(self.data.shape[-1])


# ----------------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------------
def provenance_attrs(config: Mapping[str, Any] | str | None = None, **extra: Any) -> dict[str, Any]:
    """Global attributes recording what produced a file.

    Parameters
    ----------
    config : mapping or str, optional
        The configuration (stored as JSON text under ``probinv_config``).
    **extra
        Further attributes (strings or numbers).
    """
    attrs: dict[str, Any] = {
        "Conventions": "CF-1.8",
        "source": "probinv",
        "probinv_version": __version__,
        "history": f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} written by "
                   f"probinv {__version__}",
    }
    if config is not None:
        attrs["probinv_config"] = config if isinstance(config, str) else json.dumps(config, default=str)
    for k, v in extra.items():
        attrs[k] = v if isinstance(v, (str, int, float, np.number)) else json.dumps(v, default=str)
    return attrs


def _to_numpy(name: str, value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def _check_dx(dx) -> float:
    if isinstance(dx, bool) or not isinstance(dx, (int, float)) or not np.isfinite(dx) or dx <= 0:
        raise ValueError(f"dx must be a positive grid spacing in m, got {dx!r}")
    return float(dx)


def _check_path_exists(path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder, not a file: give the path of a file (NetCDF .nc or "
                                f"SEG-Y .sgy)")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    return path


def _load_netcdf(path: Path) -> xr.Dataset:
    """The whole dataset of a NetCDF file, in memory (the files probinv reads are small).

    An empty, truncated or non-NetCDF file raises :class:`InputError` naming the file, its size and the fix, instead
    of the netCDF4 / HDF5 error (``OSError: [Errno -51] NetCDF: Unknown file format`` and the like).
    """
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            return ds.load()
    except (OSError, RuntimeError, ValueError) as exc:
        size = path.stat().st_size
        what = "is empty (0 bytes)" if size == 0 else f"is not a readable NetCDF file ({size} bytes: truncated?)"
        raise InputError(f"{str(path)!r} {what}: {exc}; write it again (probinv writes NetCDF files with "
                         f"`probinv simulate` / `probinv invert`, or probinv.io.write_model / write_gather)") from None


def describe_bad_values(values, *, dims: tuple[str, ...], positive: bool = False, spacing: Mapping | None = None,
                        units: str = "") -> str | None:
    """None when every value is finite (and > 0 with ``positive``); else a description of the bad values.

    Parameters
    ----------
    values : Tensor or ndarray
        The array to check, its axes named by ``dims``.
    dims : tuple of str
        Axis names, e.g. ``("z", "x")`` or ``("shot", "receiver", "time")``.
    positive : bool
        Also count zero and negative values as bad (velocities).
    spacing : mapping, optional
        ``{dim: (step, unit)}`` for axes whose index has a physical position (e.g. ``{"z": (dx, "m")}``).
    units : str
        Units of the values, for the message.

    Returns
    -------
    str or None
        e.g. ``"3 values that are not finite and > 0 (2 negative, 1 NaN): first at (z, x) index (4, 7) = (40 m,
        70 m): -1900 m/s"``.
    """
    a = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    finite = np.isfinite(a)
    bad = ~finite | (a <= 0) if positive else ~finite
    count = int(bad.sum())
    if count == 0:
        return None
    kinds = {"NaN": int(np.isnan(a).sum()), "infinite": int(np.isinf(a).sum())}
    if positive:
        kinds = {"negative": int((finite & (a < 0)).sum()), "zero": int((a == 0).sum()), **kinds}
    parts = ", ".join(f"{v} {k}" for k, v in kinds.items() if v)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    where = f"({', '.join(dims)}) index {first}"
    spacing = spacing or {}
    if any(d in spacing for d in dims):
        pos = ", ".join(f"{d} = {i * spacing[d][0]:g} {spacing[d][1]}" for d, i in zip(dims, first, strict=True)
                        if d in spacing)
        where += f" ({pos})"
    noun = "finite and > 0" if positive else "finite"
    return (f"{count} of {a.size} values are not {noun} ({parts}); the first at {where} is "
            f"{a[first]:g}{' ' + units if units else ''}")


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Check, before anything runs, that ``path`` can be (or is) a writable folder; creates nothing.

    Raises :class:`InputError` naming the path and the fix when ``path`` is an existing file, when a parent of it is
    a file, or when the folder it would go into is not writable (probed by creating and removing a temporary file,
    which also catches read-only file systems and folders that are read-only even for root).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {str(path)!r} is an existing file, not a folder: pass another --out, or move the "
                         f"file away")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what} {str(path)!r} cannot be created: {str(parent)!r} is a file, not a folder; pass "
                         f"another --out")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probinv-write-test.", dir=parent)
    except OSError as exc:
        where = "" if parent == path else f" (it would be created in {str(parent)!r})"
        raise InputError(f"{what} {str(path)!r} is not writable{where}: {exc.strerror or exc}; pass a writable "
                         f"--out, or change the folder's permissions") from None
    os.close(fd)
    os.remove(probe)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# NetCDF: models
# ----------------------------------------------------------------------------------------------------------------------
def write_model(path: str | os.PathLike, fields: Mapping[str, Any], dx: float, *,
                origin: tuple[float, float] = (0.0, 0.0),
                units: Mapping[str, str] | None = None, config: Mapping[str, Any] | str | None = None,
                attrs: Mapping[str, Any] | None = None) -> Path:
    """Write gridded fields to a NetCDF file (atomically).

    Parameters
    ----------
    path : str or PathLike
        Destination ``.nc`` file; its folder is created if needed.
    fields : mapping of str to Tensor[nz, nx] or ndarray[nz, nx]
        Fields in SI units, e.g. ``{"vp": vp}``; all on the same grid.
    dx : float
        Grid spacing in m.
    origin : (float, float)
        ``(z0, x0)`` in m of cell ``(0, 0)``.
    units : mapping, optional
        Units of fields not listed in :data:`FIELD_UNITS`.
    config, attrs : optional
        Provenance written as global attributes (see :func:`provenance_attrs`).

    Returns
    -------
    Path
        The written file.
    """
    dx = _check_dx(dx)
    if not isinstance(fields, Mapping) or not fields:
        raise ValueError(f"fields must be a non-empty mapping name -> (nz, nx) array, got {fields!r}")
    units = dict(units or {})
    arrays = {}
    shape = None
    for name, value in fields.items():
        a = _to_numpy(f"fields[{name!r}]", value)
        if a.ndim != 2:
            raise ValueError(f"fields[{name!r}] must be shaped (nz, nx), got shape {a.shape}")
        if shape is not None and a.shape != shape:
            raise ValueError(f"fields[{name!r}] has shape {a.shape} but the other fields have {shape}")
        shape = a.shape
        arrays[name] = a
    nz, nx = shape
    z = origin[0] + dx * np.arange(nz)
    x = origin[1] + dx * np.arange(nx)
    data_vars = {}
    for name, a in arrays.items():
        u, long_name = FIELD_UNITS.get(name, (units.get(name, "1"), name))
        u = units.get(name, u)
        data_vars[name] = (("z", "x"), a, {"units": u, "long_name": long_name})
    ds = xr.Dataset(
        data_vars,
        coords={
            "z": ("z", z, {"units": "m", "long_name": "depth", "positive": "down", "axis": "Z"}),
            "x": ("x", x, {"units": "m", "long_name": "horizontal distance", "axis": "X"}),
        },
        attrs={**provenance_attrs(config, **(attrs or {})), "dx": dx, "probinv_kind": "model"},
    )
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    return Path(path)


def _grid_spacing(name: str, coord: np.ndarray) -> float | None:
    if coord.size < 2:
        return None
    d = np.diff(coord.astype(np.float64))
    if not np.allclose(d, d[0], rtol=1e-6, atol=0):
        raise ValueError(f"coordinate {name!r} is not regularly spaced (spacings from {d.min()} to {d.max()} m); "
                         f"probinv needs a regular grid")
    return float(d[0])


def read_model(path: str | os.PathLike, *, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> Model:
    """Read gridded fields from a NetCDF file written by :func:`write_model` (or any file with ``z``, ``x`` in m).

    Parameters
    ----------
    path : str or PathLike
        NetCDF file with every 2D ``(z, x)`` variable taken as a field.
    dtype, device : optional
        Of the returned tensors (default torch's default dtype, CPU).

    Returns
    -------
    Model
    """
    path = _check_path_exists(path)
    with _load_netcdf(path) as ds:
        missing = [c for c in ("z", "x") if c not in ds.coords]
        if missing:
            raise InputError(f"{str(path)!r} is not a model file: it lacks the coordinate(s) {missing} (m)")
        for c in ("z", "x"):
            u = ds[c].attrs.get("units", "m")
            if u not in ("m", "metre", "meter", "metres", "meters"):
                raise ValueError(f"coordinate {c!r} of {str(path)!r} has units {u!r}; probinv needs metres ('m')")
        z, x = ds["z"].values, ds["x"].values
        dz, dxx = _grid_spacing("z", z), _grid_spacing("x", x)
        dx = ds.attrs.get("dx", dxx if dxx is not None else dz)
        if dz is not None and dxx is not None and not np.isclose(dz, dxx, rtol=1e-6):
            raise ValueError(f"{str(path)!r} has dz = {dz} m and dx = {dxx} m; probinv needs equal spacing in z and x")
        fields = {}
        for name, var in ds.data_vars.items():
            if var.dims == ("z", "x"):
                fields[name] = torch.as_tensor(var.values, dtype=dtype or torch.get_default_dtype(), device=device)
            elif var.dims == ("x", "z"):
                fields[name] = torch.as_tensor(var.values.T, dtype=dtype or torch.get_default_dtype(), device=device)
        if not fields:
            raise InputError(f"{str(path)!r} holds no (z, x) variable: it is not a model file")
        return Model(fields=fields, dx=float(dx), origin=(float(z[0]), float(x[0])), attrs=dict(ds.attrs))


# ----------------------------------------------------------------------------------------------------------------------
# NetCDF: gathers
# ----------------------------------------------------------------------------------------------------------------------
def write_gather(path: str | os.PathLike, gather: Gather | None = None, *, data=None, dt: float | None = None,
                 source_locations=None, receiver_locations=None, dx: float | None = None,
                 origin: tuple[float, float] = (0.0, 0.0), t0: float = 0.0, units: str = "1",
                 config: Mapping[str, Any] | str | None = None, attrs: Mapping[str, Any] | None = None) -> Path:
    """Write shot gathers and their geometry to a NetCDF file (atomically).

    Either pass a :class:`Gather` or its parts as keywords.

    The file holds ``data(shot, receiver, time)`` with ``time`` in s, the receiver and source grid indices
    (``receiver_iz``, ``receiver_ix``, ``source_iz``, ``source_ix``) and their positions in m (``receiver_z``,
    ``receiver_x``, ``source_z``, ``source_x``).
    """
    if gather is None:
        if data is None or dt is None or source_locations is None or receiver_locations is None or dx is None:
            raise ValueError("write_gather needs a Gather or all of data, dt, source_locations, receiver_locations, dx")
        gather = Gather(data=data, dt=dt, source_locations=source_locations, receiver_locations=receiver_locations,
                        dx=dx, origin=origin, t0=t0, units=units)
    d = _to_numpy("data", gather.data)
    if d.ndim != 3:
        raise ValueError(f"data must be shaped [n_shots, n_receivers, nt], got shape {d.shape}")
    dx = _check_dx(gather.dx)
    if not (isinstance(gather.dt, (int, float)) and np.isfinite(gather.dt) and gather.dt > 0):
        raise ValueError(f"dt must be a positive time step in s, got {gather.dt!r}")
    src = _to_numpy("source_locations", gather.source_locations).astype(np.int64)
    rec = _to_numpy("receiver_locations", gather.receiver_locations).astype(np.int64)
    n_shots, n_rec, nt = d.shape
    if rec.shape != (n_shots, n_rec, 2):
        raise ValueError(f"receiver_locations must be shaped [{n_shots}, {n_rec}, 2] to match data {d.shape}, "
                         f"got {rec.shape}")
    if src.ndim != 3 or src.shape[0] != n_shots or src.shape[2] != 2:
        raise ValueError(f"source_locations must be shaped [{n_shots}, n_sources_per_shot, 2], got {src.shape}")
    z0, x0 = gather.origin
    time = gather.t0 + gather.dt * np.arange(nt)
    grid = {"units": "1", "comment": "grid index"}
    ds = xr.Dataset(
        {
            "data": (("shot", "receiver", "time"), d, {"units": gather.units, "long_name": "recorded trace"}),
            "receiver_iz": (("shot", "receiver"), rec[..., 0], grid),
            "receiver_ix": (("shot", "receiver"), rec[..., 1], grid),
            "receiver_z": (("shot", "receiver"), z0 + dx * rec[..., 0], {"units": "m", "long_name": "receiver depth"}),
            "receiver_x": (("shot", "receiver"), x0 + dx * rec[..., 1], {"units": "m", "long_name": "receiver x"}),
            "source_iz": (("shot", "source"), src[..., 0], grid),
            "source_ix": (("shot", "source"), src[..., 1], grid),
            "source_z": (("shot", "source"), z0 + dx * src[..., 0], {"units": "m", "long_name": "source depth"}),
            "source_x": (("shot", "source"), x0 + dx * src[..., 1], {"units": "m", "long_name": "source x"}),
        },
        coords={
            "time": ("time", time, {"units": "s", "long_name": "time", "axis": "T"}),
            "shot": ("shot", np.arange(n_shots), {"units": "1", "long_name": "shot index"}),
            "receiver": ("receiver", np.arange(n_rec), {"units": "1", "long_name": "receiver index"}),
        },
        attrs={**provenance_attrs(config, **(attrs or {})), **{k: v for k, v in gather.attrs.items()
                                                               if k not in ("history", "probinv_version")},
               "dx": dx, "dt": float(gather.dt), "origin_z": float(z0), "origin_x": float(x0),
               "probinv_kind": "gather"},
    )
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    return Path(path)


def read_gather(path: str | os.PathLike, *, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> Gather:
    """Read shot gathers written by :func:`write_gather`.

    Returns
    -------
    Gather
        ``data`` as a ``dtype`` tensor on ``device``; locations as int64 tensors on ``device``.
    """
    path = _check_path_exists(path)
    with _load_netcdf(path) as ds:
        need = ["data", "receiver_iz", "receiver_ix", "source_iz", "source_ix"]
        missing = [k for k in need if k not in ds]
        if missing or "time" not in ds.coords:
            raise InputError(f"{str(path)!r} is not a probinv gather file: missing {missing or ['time']}")
        if ds["time"].attrs.get("units", "s") not in ("s", "second", "seconds"):
            raise ValueError(f"time of {str(path)!r} has units {ds['time'].attrs['units']!r}; probinv needs 's'")
        time = ds["time"].values.astype(np.float64)
        dt = float(ds.attrs.get("dt", time[1] - time[0] if time.size > 1 else np.nan))
        data = ds["data"].transpose("shot", "receiver", "time").values
        rec = np.stack([ds["receiver_iz"].values, ds["receiver_ix"].values], -1)
        src = np.stack([ds["source_iz"].values, ds["source_ix"].values], -1)
        return Gather(
            data=torch.as_tensor(data, dtype=dtype or torch.get_default_dtype(), device=device),
            dt=dt,
            source_locations=torch.as_tensor(src, dtype=torch.int64, device=device),
            receiver_locations=torch.as_tensor(rec, dtype=torch.int64, device=device),
            dx=float(ds.attrs["dx"]),
            origin=(float(ds.attrs.get("origin_z", 0.0)), float(ds.attrs.get("origin_x", 0.0))),
            t0=float(time[0]) if time.size else 0.0,
            units=str(ds["data"].attrs.get("units", "1")),
            attrs=dict(ds.attrs),
        )


# ----------------------------------------------------------------------------------------------------------------------
# SEG-Y
# ----------------------------------------------------------------------------------------------------------------------
def _segyio():
    try:
        import segyio  # noqa: PLC0415 (optional: the [segy] extra provides it)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading SEG-Y needs segyio: pip install 'probinv[segy]'") from exc
    return segyio


def _scaled(values: np.ndarray, scalars: np.ndarray) -> np.ndarray:
    """Apply the SEG-Y coordinate scalar: positive multiplies, negative divides, zero means 1."""
    s = scalars.astype(np.float64)
    factor = np.where(s > 0, s, np.where(s < 0, -1.0 / np.where(s == 0, 1, s), 1.0))
    return values.astype(np.float64) * factor


def _to_index(name: str, coord_m: np.ndarray, origin: float, dx: float, tol: float = 1e-3) -> np.ndarray:
    idx = (coord_m - origin) / dx
    rounded = np.rint(idx)
    off = np.abs(idx - rounded)
    if off.size and off.max() > tol:
        k = int(np.argmax(off))
        raise ValueError(f"{name} = {coord_m.flat[k]} m is not on the grid of spacing dx = {dx} m with origin "
                         f"{origin} m (index {idx.flat[k]:.4f}); pass the grid's dx and origin")
    if rounded.size and rounded.min() < 0:
        k = int(np.argmin(rounded))
        raise ValueError(f"{name} = {coord_m.flat[k]} m lies before the grid origin {origin} m; pass a smaller origin")
    return rounded.astype(np.int64)


def read_segy_gather(path: str | os.PathLike, dx: float, *, origin: tuple[float, float] = (0.0, 0.0),
                     elevation_is_depth: bool = True, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> Gather:
    """Import shot gathers from a SEG-Y file, with the geometry from the trace headers.

    Traces are grouped into shots by ``FieldRecord`` (byte 9) in order of first appearance; within a shot they keep
    their file order. Positions come from ``SourceX`` (73), ``GroupX`` (81), ``SourceDepth`` (49) and
    ``ReceiverGroupElevation`` (41), scaled by ``SourceGroupScalar`` (71) and ``ElevationScalar`` (69) as the SEG-Y
    standard says (positive multiplies, negative divides). Depths are taken as positive downwards (probinv's
    ``z``); the receiver elevation field is read as a depth unless ``elevation_is_depth=False``, in which case its
    negative is used. The sample interval comes from the binary header (microseconds), falling back to the trace
    header's ``TRACE_SAMPLE_INTERVAL``.

    Parameters
    ----------
    path : str or PathLike
        SEG-Y file.
    dx : float
        Grid spacing in m onto which positions are mapped (they must fall on grid nodes).
    origin : (float, float)
        ``(z0, x0)`` in m of grid index ``(0, 0)``.
    elevation_is_depth : bool
        How to read ``ReceiverGroupElevation``.
    dtype, device : optional
        Of the returned tensors.

    Returns
    -------
    Gather
        ``data[n_shots, n_receivers, nt]``; every shot must have the same number of receivers.
    """
    segyio = _segyio()
    dx = _check_dx(dx)
    path = _check_path_exists(path)
    tf = segyio.TraceField
    with segyio.open(str(path), "r", ignore_geometry=True) as f:
        n = f.tracecount
        if n == 0:
            raise ValueError(f"{str(path)!r} holds no traces")
        data = np.asarray(f.trace.raw[:], dtype=np.float64).reshape(n, -1)
        h = {k: np.asarray(f.attributes(getattr(tf, k))[:]).astype(np.int64) for k in (
            "FieldRecord", "SourceX", "GroupX", "SourceDepth", "ReceiverGroupElevation", "SourceGroupScalar",
            "ElevationScalar", "TRACE_SAMPLE_INTERVAL")}
        interval_us = int(f.bin[segyio.BinField.Interval]) or int(h["TRACE_SAMPLE_INTERVAL"][0])
    if interval_us <= 0:
        raise ValueError(f"{str(path)!r} has no sample interval in its binary or trace headers")
    dt = interval_us * 1e-6
    sx = _scaled(h["SourceX"], h["SourceGroupScalar"])
    gx = _scaled(h["GroupX"], h["SourceGroupScalar"])
    sz = _scaled(h["SourceDepth"], h["ElevationScalar"])
    gz = _scaled(h["ReceiverGroupElevation"], h["ElevationScalar"])
    if not elevation_is_depth:
        gz = -gz
    records = h["FieldRecord"]
    shots = list(dict.fromkeys(records.tolist()))
    groups = [np.nonzero(records == r)[0] for r in shots]
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"{str(path)!r}: shots have different numbers of receivers ({sorted(sizes)}); probinv needs "
                         f"the same receivers count in every shot")
    src_rows, rec_rows, traces = [], [], []
    for r, g in zip(shots, groups, strict=False):
        if np.unique(sx[g]).size != 1 or np.unique(sz[g]).size != 1:
            raise ValueError(f"{str(path)!r}: traces of FieldRecord {r} have different source positions")
        src_rows.append([[sz[g[0]], sx[g[0]]]])
        rec_rows.append(np.stack([gz[g], gx[g]], -1))
        traces.append(data[g])
    src_m, rec_m = np.asarray(src_rows), np.asarray(rec_rows)
    src = np.stack([_to_index("source depth", src_m[..., 0], origin[0], dx),
                    _to_index("SourceX", src_m[..., 1], origin[1], dx)], -1)
    rec = np.stack([_to_index("receiver depth", rec_m[..., 0], origin[0], dx),
                    _to_index("GroupX", rec_m[..., 1], origin[1], dx)], -1)
    log.info("read %d shots x %d receivers x %d samples (dt = %g s) from %s", len(shots), rec.shape[1],
             data.shape[1], dt, path)
    return Gather(data=torch.as_tensor(np.asarray(traces), dtype=dtype or torch.get_default_dtype(), device=device),
                  dt=dt, source_locations=torch.as_tensor(src, device=device),
                  receiver_locations=torch.as_tensor(rec, device=device), dx=dx, origin=origin,
                  attrs={"segy_file": str(path), "field_records": json.dumps(shots)})


def read_segy_model(path: str | os.PathLike, *, dx: float | None = None, name: str = "vp",
                    depth_sample_scale: float = 1e-3, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None) -> Model:
    """Import a velocity (or any) model stored one vertical column per trace in a SEG-Y file.

    The traces are the columns ``x`` in file order; the samples are depths. The depth step is the sample interval of
    the binary header times ``depth_sample_scale``. The default 1e-3 reads the interval the way most published model
    files write it: the depth step in m stored as if it were a time step in ms, i.e. 4000 "microseconds" for 4 m.
    The horizontal step
    comes from the spacing of ``CDP_X`` (byte 181, scaled by ``SourceGroupScalar``), or from ``GroupX`` when the CDP
    coordinates are absent; pass ``dx`` when the headers carry no coordinates. probinv needs equal spacings in z and
    x: a mismatch raises.

    Parameters
    ----------
    path : str or PathLike
        SEG-Y file with ``nx`` traces of ``nz`` samples.
    dx : float, optional
        Horizontal spacing in m; overrides the headers.
    name : str
        Field name given to the model (``"vp"``, ``"vs"``, ``"rho"``, ``"q"`` ...).
    depth_sample_scale : float
        Metres per unit of the binary header's sample interval.
    dtype, device : optional
        Of the returned tensor.

    Returns
    -------
    Model
        One field ``name`` shaped ``(nz, nx)``.
    """
    segyio = _segyio()
    path = _check_path_exists(path)
    tf = segyio.TraceField
    with segyio.open(str(path), "r", ignore_geometry=True) as f:
        n = f.tracecount
        if n == 0:
            raise ValueError(f"{str(path)!r} holds no traces")
        cols = np.asarray(f.trace.raw[:], dtype=np.float64).reshape(n, -1)
        interval = int(f.bin[segyio.BinField.Interval]) or int(f.header[0][tf.TRACE_SAMPLE_INTERVAL])
        scal = np.asarray(f.attributes(tf.SourceGroupScalar)[:]).astype(np.int64)
        xs = None
        for key in ("CDP_X", "GroupX"):
            c = _scaled(np.asarray(f.attributes(getattr(tf, key))[:]).astype(np.int64), scal)
            if np.any(c != c[0]):
                xs = c
                break
    dz = interval * depth_sample_scale if interval > 0 else None
    x0 = 0.0
    if dx is None:
        if xs is None or n < 2:
            if dz is None:
                raise ValueError(f"{str(path)!r} has no trace coordinates nor sample interval: pass dx (m)")
            dx = dz
        else:
            dx = _grid_spacing("trace x coordinate", xs)
            x0 = float(xs[0])
    dx = _check_dx(abs(dx))
    if dz is not None and not np.isclose(dz, dx, rtol=1e-4):
        raise ValueError(f"{str(path)!r}: depth step {dz} m (sample interval {interval} x depth_sample_scale "
                         f"{depth_sample_scale}) differs from the horizontal step dx = {dx} m; probinv needs equal "
                         f"spacing (pass depth_sample_scale or dx, or resample the model)")
    field_ = torch.as_tensor(cols.T.copy(), dtype=dtype or torch.get_default_dtype(), device=device)
    return Model(fields={name: field_}, dx=dx, origin=(0.0, x0), attrs={"segy_file": str(path)})

