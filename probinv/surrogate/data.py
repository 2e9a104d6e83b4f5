r"""Training data for the FNO surrogate: paper 1's generator with probinv's own acoustic solver.

Each sample is a random velocity model of paper 1's family (von Karman covariance, Hurst 0.5, correlation length
1.6 km, mean 3000 m/s, std 150 m/s, on 64 x 64 nodes at 160 m; drawn with :func:`probinv.fields.sample_grf`), a
Ricker point source at a uniformly random grid node, and the pressure wavefield of
:func:`probinv.physics.acoustic` (8th-order stencil, CPML outside the grid) at every node for ``n_frames`` frames.

Defaults (:class:`SimulationConfig`): 1 Hz Ricker (peak at ``t0 = 1.5 s``), ``dt = 1/64 s``, 320 steps, a frame
every 5 steps (``t_k = 5 (k + 1) dt``, ``k = 0..63``, 0.078 s to 5.0 s).

Label accuracy
--------------
Points per wavelength: at the Ricker's peak frequency (1 Hz) ``3000 / (1 * 160) = 18.75``; at 2.5x the peak
(where the Ricker spectrum is down to ~3 % of its peak) and the slowest velocities of the family (~2500 m/s) about
6.2. (The solver's own warning uses the frequency where the spectrum falls to 1 % of its peak, 2.73 Hz, and may
report ~5.7 for the slowest models.) Measured against a 2x finer simulation (:func:`label_error`: ``dx / 2``,
``dt / 2``, bilinearly refined velocity, the same physical source) on two paper-1 samples: relative L2 difference
0.022 over all nodes, 0.0038 beyond two cells from the source (the discrete point source's near field depends on
``dx``; it is a property of the discretised source rather than a propagation error). Both are an order of
magnitude below paper 1's FNO error (0.273). Reproduce with ``python3 benchmarks/fno_data.py``.

Files
-----
:func:`generate_dataset` writes a NetCDF4 file as it goes: dimensions ``sample`` (unlimited), ``time`` (the
frames), ``z``, ``x``; variables ``velocity [sample, z, x]`` (m/s), ``source [sample, 2]`` (grid indices),
``wavefield [sample, time, z, x]`` (chunked one sample at a time), coordinates ``z``, ``x`` (m) and ``time`` (s); global
attributes ``manifest`` (JSON of the generator configuration, seed, probinv version) and ``n_written`` (samples
completely written). Re-running the same call resumes after ``n_written``; sample ``i`` depends only on
``(seed, i // batch_size)``, so an interrupted and resumed file equals an uninterrupted one. The training pipeline
(:func:`probinv.surrogate.pipeline.train_fno`, ``probinv train-fno``) generates its data with it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import netCDF4
import numpy as np
import torch
from tqdm.auto import tqdm

from .. import distributed
from .._files import atomic_path
from .._version import __version__
from ..fields import sample_grf
from ..physics import acoustic, ricker
from ..validation import check_choice, check_int

__all__ = ["SimulationConfig", "generate_dataset", "homogeneous_response", "label_error", "load_dataset",
           "random_sources", "sample_batch", "simulate_wavefields"]

@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """Parameters of paper 1's training simulations (SI units).

    Attributes
    ----------
    nz, nx : int
        Grid nodes (64 x 64).
    dx : float
        Grid spacing in m (160).
    dt : float
        Time step in s (1/64).
    n_frames : int
        Output frames (64).
    frame_every : int
        Time steps between frames (5): frame ``k`` is step ``(k + 1) * frame_every``.
    freq : float
        Ricker peak frequency in Hz (1).
    t0 : float or None
        Ricker peak time in s (default ``1.5 / freq``).
    accuracy : int
        Spatial order of the solver (8).
    pml_width : int
        CPML thickness in nodes, outside the grid (20).
    v_mean, v_std : float
        Velocity mean and standard deviation in m/s (3000, 150).
    hurst : float
        Von Karman Hurst exponent kappa (0.5).
    corr_length : float
        Von Karman correlation length ``a_z = a_x`` in m (1600).
    """

    nz: int = 64
    nx: int = 64
    dx: float = 160.0
    dt: float = 1.0 / 64
    n_frames: int = 64
    frame_every: int = 5
    freq: float = 1.0
    t0: float | None = None
    accuracy: int = 8
    pml_width: int = 20
    v_mean: float = 3000.0
    v_std: float = 150.0
    hurst: float = 0.5
    corr_length: float = 1600.0

    def __post_init__(self):
        for name in ("nz", "nx", "n_frames", "frame_every", "pml_width"):
            check_int(name, getattr(self, name))
        for name in ("dx", "dt", "freq", "v_mean", "v_std", "hurst", "corr_length"):
            val = getattr(self, name)
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0):
                raise ValueError(f"{name} must be a positive finite number, got {val!r}")

    @property
    def nt(self) -> int:
        """Time steps simulated (the last frame's step + 1)."""
        return self.n_frames * self.frame_every + 1

    @property
    def times(self) -> torch.Tensor:
        """Frame times in s, ``Tensor[n_frames]`` (float64)."""
        return torch.arange(1, self.n_frames + 1, dtype=torch.float64) * self.frame_every * self.dt

    def to_dict(self) -> dict:
        """The configuration as a JSON-able dict (the ``manifest["config"]`` of a data file)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SimulationConfig:
        """The configuration from :meth:`to_dict`'s dict (unknown keys are ignored)."""
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def _as_config(config) -> SimulationConfig:
    if isinstance(config, SimulationConfig):
        return config
    if isinstance(config, dict):
        return SimulationConfig.from_dict(config)
    raise TypeError(f"config must be a SimulationConfig or a dict, got {type(config).__name__}")


def _refinement(config: SimulationConfig, dx: float) -> int:
    """Time-step refinement ``k`` (``dt / k``) keeping the CFL number of the training grid on a grid of ``dx``."""
    return max(1, math.ceil(config.dx / dx - 1e-9))


def simulate_wavefields(v: torch.Tensor, source_locations: torch.Tensor, config=SimulationConfig(), *,
                        dx: float | None = None, times=None) -> torch.Tensor:
    r"""Pressure wavefields at every node for one Ricker point source per model.

    Parameters
    ----------
    v : Tensor[batch, nz, nx]
        Velocity in m/s (any grid; the frames are those of ``config``).
    source_locations : Tensor[batch, 2] (int64)
        Source ``(z, x)`` grid index per model.
    config : SimulationConfig or dict
        Wavelet, time axis, solver options.
    dx : float, optional
        Grid spacing in m (default ``config.dx``). For a finer grid the time step is divided by
        ``k = ceil(config.dx / dx)`` and the frames stay at the same times.
    times : sequence of float, optional
        Frame times in s (default ``config.times``); each must be a multiple of ``config.dt``.

    Returns
    -------
    Tensor[batch, n_frames, nz, nx]
        Pressure (solver units: the response to ``(1/v^2) p_tt - lap p = f(t) delta``, ``f`` the unit-peak
        Ricker), dtype and device of ``v``.
    """
    config = _as_config(config)
    if not isinstance(v, torch.Tensor) or v.ndim != 3:
        raise ValueError(f"v must be a Tensor[batch, nz, nx] in m/s, got "
                         f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
    if source_locations.shape != (v.shape[0], 2):
        raise ValueError(f"source_locations must be shaped [{v.shape[0]}, 2], got {tuple(source_locations.shape)}")
    dx = config.dx if dx is None else float(dx)
    k = _refinement(config, dx)
    dt = config.dt / k
    tt = config.times if times is None else torch.as_tensor(times, dtype=torch.float64)
    steps = torch.round(tt / dt).to(torch.int64)
    if bool((steps * dt - tt).abs().max() > 1e-6 * config.dt):
        raise ValueError(f"frame times must be multiples of dt = {dt} s, got {tt.tolist()}")
    every = int(steps.min()) if bool((steps % int(steps.min()) == 0).all()) else 1
    nt = int(steps.max()) + 1
    wav = ricker(config.freq, nt, dt, config.t0, dtype=v.dtype, device=v.device)
    amp = wav.reshape(1, 1, nt)
    locs = source_locations.to(device=v.device, dtype=torch.int64)
    pml = config.pml_width * max(1, round(config.dx / dx))  # same physical thickness on finer grids
    out = []
    # One model per call: in the solver version this was written against, a batch of 4 models took 50-90x the
    # time of 4 single-model calls on 2 CPU cores (measured), so models are looped here.
    for i in range(v.shape[0]):
        loc = locs[i].reshape(1, 1, 2)
        _, snaps = acoustic(v[i], dx, dt, amp, loc, loc, pml_width=pml, accuracy=config.accuracy,
                            return_wavefield=True, wavefield_every=every)
        out.append(snaps[0, (steps // every)])  # snapshot j is step j * every
    return torch.stack(out).contiguous()


def random_sources(n: int, nz: int, nx: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` uniformly random ``(z, x)`` grid nodes, ``Tensor[n, 2]`` int64."""
    flat = torch.randint(0, nz * nx, (n,), generator=generator)
    return torch.stack([flat // nx, flat % nx], dim=1)


def _batch_seed(seed: int, batch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(batch)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def sample_batch(config: SimulationConfig, seed: int, batch: int, batch_size: int,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity models ``[batch_size, nz, nx]`` (m/s) and sources ``[batch_size, 2]`` of batch number ``batch``."""
    g = torch.Generator().manual_seed(_batch_seed(seed, batch))
    v = sample_grf((config.nz, config.nx), config.dx, n=batch_size, covariance="von_karman", hurst=config.hurst,
                   a_z=config.corr_length, a_x=config.corr_length, mean=config.v_mean, std=config.v_std,
                   generator=g, dtype=torch.float64).to(dtype)
    return v, random_sources(batch_size, config.nz, config.nx, g)


def homogeneous_response(config=SimulationConfig(), nz: int | None = None, nx: int | None = None,
                         dx: float | None = None, v_mean: float | None = None, *, times=None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Wavefield of a homogeneous medium for a source at the centre of a ``(2 nz - 1) x (2 nx - 1)`` grid.

    Cropping ``[:, nz-1-sz : 2nz-1-sz, nx-1-sx : 2nx-1-sx]`` gives the homogeneous response on an ``nz x nx``
    grid with the source at ``(sz, sx)`` (up to the CPML's residual reflections), for every source from one run.

    Returns
    -------
    Tensor[n_frames, 2 nz - 1, 2 nx - 1]
    """
    config = _as_config(config)
    nz = config.nz if nz is None else int(nz)
    nx = config.nx if nx is None else int(nx)
    v0 = config.v_mean if v_mean is None else float(v_mean)
    v = torch.full((1, 2 * nz - 1, 2 * nx - 1), v0, dtype=torch.float64)
    src = torch.tensor([[nz - 1, nx - 1]])
    return simulate_wavefields(v, src, config, dx=dx, times=times)[0].to(dtype)


def label_error(v: torch.Tensor, source_locations: torch.Tensor, config=SimulationConfig(),
                exclude_radius: float = 2.0) -> dict:
    r"""Relative L2 difference between the labels and a 2x finer simulation of the same models.

    The fine run uses ``dx / 2``, ``dt / 2``, the velocity bilinearly refined onto the ``(2nz - 1) x (2nx - 1)``
    nodes (coarse node ``i`` is fine node ``2 i``) and the source at the same physical point; it is compared on the
    coarse nodes. Near the source the discrete point source itself depends on ``dx`` (the 2D Green's function is
    log-singular there), so the error is also reported without the nodes within ``exclude_radius`` coarse cells of
    the source.

    Returns
    -------
    dict
        ``rel_l2`` (all nodes) and ``rel_l2_far`` (beyond ``exclude_radius``), one float per model, and
        ``points_per_wavelength`` at the peak frequency and at 2.5x the peak frequency for the slowest velocity.
    """
    config = _as_config(config)
    v = v.to(torch.float64)
    coarse = simulate_wavefields(v, source_locations, config)
    fine_v = torch.nn.functional.interpolate(v[:, None], size=(2 * v.shape[1] - 1, 2 * v.shape[2] - 1),
                                             mode="bilinear", align_corners=True)[:, 0]
    fine = simulate_wavefields(fine_v, 2 * source_locations, config, dx=config.dx / 2)[:, :, ::2, ::2]
    z = torch.arange(v.shape[1], dtype=torch.float64)[:, None]
    x = torch.arange(v.shape[2], dtype=torch.float64)[None, :]
    rel, rel_far = [], []
    for i, (sz, sx) in enumerate(source_locations.tolist()):
        far = ((z - sz) ** 2 + (x - sx) ** 2).sqrt() > exclude_radius
        d, f = coarse[i] - fine[i], fine[i]
        rel.append(float(d.norm() / f.norm()))
        rel_far.append(float((d * far).norm() / (f * far).norm()))
    vmin = float(v.min())
    return {"rel_l2": rel, "rel_l2_far": rel_far,
            "points_per_wavelength_peak": vmin / (config.freq * config.dx),
            "points_per_wavelength_2.5f": vmin / (2.5 * config.freq * config.dx)}


def _create(path: str, config: SimulationConfig, manifest: dict, storage: str) -> None:
    with atomic_path(path) as tmp, netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
        ds.createDimension("sample", None)
        ds.createDimension("time", config.n_frames)  # the frames; time(time) is their CF coordinate
        ds.createDimension("z", config.nz)
        ds.createDimension("x", config.nx)
        ds.createDimension("loc", 2)
        for name, n in (("z", config.nz), ("x", config.nx)):
            c = ds.createVariable(name, "f8", (name,))
            c[:] = np.arange(n) * config.dx
            c.units = "m"
        t = ds.createVariable("time", "f8", ("time",))
        t[:] = config.times.numpy()
        t.units = "s"
        vel = ds.createVariable("velocity", "f4", ("sample", "z", "x"), chunksizes=(1, config.nz, config.nx))
        vel.units = "m/s"
        src = ds.createVariable("source", "i4", ("sample", "loc"))
        src.long_name = "source grid index (z, x)"
        packing = {} if storage == "float32" else {"zlib": True, "complevel": 1, "significant_digits": 4}
        wf = ds.createVariable("wavefield", "f4", ("sample", "time", "z", "x"),
                               chunksizes=(1, config.n_frames, config.nz, config.nx), **packing)
        wf.long_name = "pressure, response to (1/v^2) p_tt - lap p = ricker(t) delta(x - x_s)"
        ds.Conventions = "CF-1.8"
        ds.title = "probinv FNO training data (paper 1 generator)"
        ds.probinv_version = __version__
        ds.manifest = json.dumps(manifest, sort_keys=True)
        ds.n_written = np.int64(0)


def generate_dataset(path: str, n_samples: int, config=SimulationConfig(), *, seed: int = 0, batch_size: int = 8,
                     storage: str = "float32", progress: bool = True, shard: bool = True) -> str:
    """Simulate ``n_samples`` training samples into the NetCDF file ``path``, resuming a partial file.

    Parameters
    ----------
    path : str
        Output ``.nc`` file. If it exists with the same manifest, generation continues after its ``n_written``
        samples; a different manifest raises ``ValueError``.
    n_samples : int
        Total number of samples wanted in the file.
    config : SimulationConfig or dict
        Generator parameters (paper 1's by default).
    seed : int
        Seed: sample ``i`` depends only on ``(seed, i // batch_size)``.
    batch_size : int
        Models simulated together (one solver call).
    storage : {"float32", "compressed"}
        Wavefield on disk: plain float32, or quantised to 4 significant digits (relative rounding <= 5e-4, far
        below the label error) and zlib-compressed, about half the size.
    progress : bool
        Show a tqdm progress bar.
    shard : bool
        Under ``torchrun`` (a process group of > 1 ranks, :mod:`probinv.distributed`), each rank simulates its own
        contiguous block of batches into ``<path>.part<rank>of<world>`` (resumable like the whole file), and rank 0
        then merges the parts into ``path`` and deletes them: the file equals a one-process run's. Every rank must
        call it; it returns when ``path`` is complete.

    Returns
    -------
    str
        ``path``.
    """
    config = _as_config(config)
    n_samples = check_int("n_samples", n_samples)
    batch_size = check_int("batch_size", batch_size)
    check_choice("storage", storage, ("float32", "compressed"))
    manifest = {"generator": "probinv.surrogate.data.generate_dataset", "config": config.to_dict(),
                "seed": int(seed), "batch_size": batch_size, "storage": storage,
                "fields": "probinv.fields.sample_grf(von_karman)", "solver": "probinv.physics.acoustic"}
    if not (shard and distributed.sharding()):
        _fill(path, config, manifest, storage, seed, batch_size, 0, n_samples, progress)
        return path
    if os.path.exists(path):  # a finished merge (resume after it): nothing to do
        with netCDF4.Dataset(path, "r") as ds:
            done = json.loads(ds.manifest) == manifest and int(ds.n_written) >= n_samples
        if done:
            distributed.barrier()
            return path
    batches = distributed.shard(-(-n_samples // batch_size))
    lo, hi = batches.start * batch_size, min(batches.stop * batch_size, n_samples)
    part = f"{path}.part{distributed.rank()}of{distributed.world_size()}"
    _fill(part, config, {**manifest, "part": [lo, hi]}, storage, seed, batch_size, lo, hi, progress)
    distributed.barrier()
    if distributed.is_main():
        parts = [f"{path}.part{r}of{distributed.world_size()}" for r in range(distributed.world_size())]
        _create(path, config, manifest, storage)
        with netCDF4.Dataset(path, "a") as ds:
            first = 0
            for name in parts:
                with netCDF4.Dataset(name, "r") as src:
                    n = int(src.n_written)
                    for i in range(0, n, 64):  # a few samples at a time: parts may be large
                        j = min(i + 64, n)
                        for var in ("velocity", "source", "wavefield"):
                            ds[var][first + i:first + j] = src[var][i:j]
                first += n
            ds.n_written = np.int64(first)  # only now is the merged file complete
        for name in parts:
            os.remove(name)
    distributed.barrier()
    return path


def _fill(path, config, manifest, storage, seed, batch_size, lo, hi, progress):
    """Simulate samples ``lo:hi`` (``lo`` a multiple of ``batch_size``) into ``path`` (record ``i`` = sample
    ``lo + i``), resuming after its ``n_written`` records.
    """
    if not os.path.exists(path):
        _create(path, config, manifest, storage)
    with netCDF4.Dataset(path, "a") as ds:
        old = json.loads(ds.manifest)
        if old != manifest:
            raise ValueError(f"{path} was generated with another configuration ({old}); use a new file name or "
                             f"the same parameters ({manifest})")
        start = lo + int(ds.n_written)
        if (start - lo) % batch_size and start < hi:
            start -= (start - lo) % batch_size  # a final partial batch of an earlier, smaller request: redo it
        bar = tqdm(total=hi - lo, initial=start - lo, disable=not progress, desc="FNO data", unit="sample")
        for first in range(start, hi, batch_size):
            b = first // batch_size
            nb = min(batch_size, hi - first)
            v, src = sample_batch(config, seed, b, batch_size)
            v, src = v[:nb], src[:nb]
            with torch.no_grad():
                u = simulate_wavefields(v, src, config)
            r = first - lo
            ds["velocity"][r:r + nb] = v.numpy()
            ds["source"][r:r + nb] = src.numpy().astype(np.int32)
            ds["wavefield"][r:r + nb] = u.numpy()
            ds.n_written = np.int64(r + nb)  # only now are these samples complete
            ds.sync()
            bar.update(nb)
        bar.close()


def load_dataset(path: str, start: int = 0, stop: int | None = None, dtype: torch.dtype = torch.float32,
                 wavefield_dtype: torch.dtype | None = None) -> dict:
    """Read samples ``start:stop`` of a file written by :func:`generate_dataset`.

    ``wavefield_dtype=torch.float16`` keeps the wavefields in half precision in memory (2.6 GB instead of 5.2 GB
    for paper 1's 5000 samples; read in chunks, so the float32 copy never exists whole); the training loop casts
    each batch to the network's dtype.

    Returns
    -------
    dict
        ``velocity [n, nz, nx]`` (m/s), ``source [n, 2]`` (int64), ``wavefield [n, n_frames, nz, nx]``,
        ``time [n_frames]`` (s), ``dx`` (m), ``config`` (dict) and ``manifest`` (dict).
    """
    with netCDF4.Dataset(path, "r") as ds:
        n = int(ds.n_written)
        stop = n if stop is None else min(int(stop), n)
        if not 0 <= start <= stop:
            raise ValueError(f"start = {start} must be in [0, {stop}] ({n} complete samples in {path})")
        manifest = json.loads(ds.manifest)
        out = {"velocity": torch.from_numpy(np.asarray(ds["velocity"][start:stop], dtype=np.float32)).to(dtype),
               "source": torch.from_numpy(np.asarray(ds["source"][start:stop], dtype=np.int64)),
               "wavefield": torch.cat([torch.from_numpy(np.asarray(ds["wavefield"][i:min(i + 256, stop)],
                                                                   dtype=np.float32)).to(wavefield_dtype or dtype)
                                       for i in range(start, stop, 256)] or [torch.zeros(
                                           0, len(ds.dimensions["time"]), len(ds.dimensions["z"]),
                                           len(ds.dimensions["x"]), dtype=wavefield_dtype or dtype)]),
               "time": torch.from_numpy(np.asarray(ds["time"][:], dtype=np.float64)),
               "dx": float(manifest["config"]["dx"]), "config": manifest["config"], "manifest": manifest}
    return out

