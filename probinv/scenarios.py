"""Named synthetic set-ups: a true model, a starting model and an acquisition geometry, ready to simulate and invert.

Every scenario is a function returning a :class:`Scenario`; :data:`SCENARIOS` maps the names that the CLI and the
configuration files accept (``probinv scenarios`` lists them) to those functions. Settings that a paper does not give
(e.g. paper 1's source frequency) are probinv's choices and are said so in the scenario's ``description``.

All velocities are in m/s, lengths in m, times in s; fields are ``(nz, nx)`` with depth increasing downwards.
Locations are int64 ``(z, x)`` grid indices ``[n_shots, n_per_shot, 2]``; the solvers add their absorbing layers
outside the grid, so any index inside the grid is valid.
"""
from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .fields import sample_grf
from .physics._fd import max_stable_dt_second_order
from .survey import Acquisition as Acquisition  # re-exported: it lived here before probinv.survey
from .validation import check_int

__all__ = [
    "Acquisition",
    "SCENARIOS",
    "Scenario",
    "anomaly",
    "checkerboard",
    "curved_layers",
    "demo",
    "flat_layers",
    "get_scenario",
    "layered",
    "list_scenarios",
    "marmousi2",
    "paper1_anomaly",
    "paper1_models",
    "smooth",
    "stable_dt",
    "surface_acquisition",
]


# ----------------------------------------------------------------------------------------------------------------------
# containers
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Scenario:
    """A synthetic experiment.

    Attributes
    ----------
    name : str
        Registry name.
    description : str
        One paragraph: what it is, where it comes from, which settings are probinv's choices.
    dx : float
        Grid spacing in m.
    true : dict[str, Tensor[nz, nx]]
        The true fields (``"vp"`` in m/s, ...).
    initial : dict[str, Tensor[nz, nx]]
        The starting model of an inversion (same keys).
    acquisition : Acquisition
        Survey geometry and time axis.
    free_surface : bool
        Whether the top boundary is a free surface.
    pml_width : int
        Absorbing layer width in cells used by the scenario's simulations.
    """

    name: str
    description: str
    dx: float
    true: dict[str, torch.Tensor]
    initial: dict[str, torch.Tensor]
    acquisition: Acquisition
    free_surface: bool = False
    pml_width: int = 20
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """Grid size ``(nz, nx)``."""
        return tuple(self.true["vp"].shape[-2:])


# ----------------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------------
def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _grid(nz, nx, dx, dtype, device):
    dtype = dtype or torch.get_default_dtype()
    z = torch.arange(nz, dtype=dtype, device=device)[:, None] * dx
    x = torch.arange(nx, dtype=dtype, device=device)[None, :] * dx
    return z, x


def smooth(field_: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a ``(nz, nx)`` field with standard deviation ``sigma`` in cells (edge values extended).

    Used to make starting models ("a heavy Gaussian blur of the true model", as paper 2 does). Runs on the field's
    device and dtype.
    """
    if sigma <= 0:
        return field_.clone()
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=field_.dtype, device=field_.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    f = field_[None, None]
    # replicate (not reflect) padding: reflect needs the pad to be smaller than the grid, which tiny grids break
    f = torch.nn.functional.pad(f, (r, r, r, r), mode="replicate")
    f = torch.nn.functional.conv2d(f, k.view(1, 1, 1, -1))
    f = torch.nn.functional.conv2d(f, k.view(1, 1, -1, 1))
    return f[0, 0]


def stable_dt(vmax: float, dx: float, *, accuracy: int = 4, cfl: float = 0.6) -> float:
    """A time step ``cfl`` times the largest stable one of the acoustic leapfrog scheme, rounded down to 3 digits."""
    dt = cfl * max_stable_dt_second_order(vmax, dx, accuracy)
    e = math.floor(math.log10(dt))
    return float(f"{math.floor(dt / 10 ** (e - 2)) * 10 ** (e - 2):.3g}")


def surface_acquisition(nz: int, nx: int, dx: float, vmin: float, vmax: float, *, n_shots: int, freq: float,
                        t_max: float | None = None, dt: float | None = None, source_depth: int = 1,
                        receiver_depth: int = 1, receiver_step: int = 1, margin: int = 1,
                        device: torch.device | str | None = None) -> Acquisition:
    """Sources spread evenly along a line at ``source_depth`` and a receiver at every ``receiver_step``-th column.

    Parameters
    ----------
    nz, nx : int
        Grid size.
    dx : float
        Grid spacing in m.
    vmin, vmax : float
        Velocity range in m/s: ``vmax`` sets the stable ``dt``, ``vmin`` the default record length.
    n_shots : int
        Number of shots, at ``x`` indices evenly spread between ``margin`` and ``nx - 1 - margin``.
    freq : float
        Ricker peak frequency in Hz.
    t_max : float, optional
        Record length in s. Default: time for a wave at ``vmin`` to go down to the bottom and back over the diagonal,
        plus the wavelet's delay ``1.5 / freq``.
    dt : float, optional
        Time step in s; default :func:`stable_dt`.
    """
    check_int("n_shots", n_shots)
    _check_positive("freq", freq)
    if dt is None:
        dt = stable_dt(vmax, dx)
    if t_max is None:
        t_max = math.hypot(nx * dx, 2 * nz * dx) / vmin + 1.5 / freq
    nt = int(math.ceil(t_max / dt)) + 1
    if n_shots == 1:
        xs = torch.tensor([nx // 2])
    else:
        xs = torch.round(torch.linspace(margin, nx - 1 - margin, n_shots)).long()
    src = torch.stack([torch.full_like(xs, source_depth), xs], -1)[:, None, :]
    rx = torch.arange(0, nx, receiver_step)
    rec = torch.stack([torch.full_like(rx, receiver_depth), rx], -1)
    rec = rec[None].expand(n_shots, -1, -1).contiguous()
    return Acquisition(src.to(device), rec.to(device), float(dt), nt, float(freq))


# ----------------------------------------------------------------------------------------------------------------------
# scenarios
# ----------------------------------------------------------------------------------------------------------------------
def anomaly(nz: int = 30, nx: int = 40, dx: float = 10.0, *, v_top: float = 1800.0, gradient: float = 1.5,
            contrast: float = 0.1, radius: float | None = None, center: tuple[float, float] | None = None,
            n_shots: int = 4, freq: float | None = None, dtype=None, device=None) -> Scenario:
    """A linear-gradient background ``v = v_top + gradient * z`` with a smooth circular anomaly.

    ``contrast`` is the anomaly's relative amplitude (+0.1 = 10 % faster), ``radius`` (m, default a sixth of the
    smaller side) its radius, with a tanh edge one cell wide; ``center`` its ``(z, x)`` in m (default the middle).
    The starting model is the background.
    """
    nz, nx = check_int("nz", nz, 4), check_int("nx", nx, 4)
    dx = _check_positive("dx", dx)
    z, x = _grid(nz, nx, dx, dtype, device)
    bg = v_top + gradient * z + 0 * x
    radius = radius if radius is not None else min(nz, nx) * dx / 6
    cz, cx = center if center is not None else ((nz - 1) * dx / 2, (nx - 1) * dx / 2)
    r = torch.sqrt((z - cz) ** 2 + (x - cx) ** 2)
    blob = 0.5 * (1 - torch.tanh((r - radius) / dx))
    vp = bg * (1 + contrast * blob)
    vmin, vmax = float(vp.min()), float(vp.max())
    freq = freq if freq is not None else _default_freq(vmin, dx)
    acq = surface_acquisition(nz, nx, dx, vmin, vmax, n_shots=n_shots, freq=freq, device=device)
    return Scenario("anomaly", anomaly.__doc__.split("\n\n")[0].strip(), dx, {"vp": vp}, {"vp": bg.clone()}, acq)


def _default_freq(vmin: float, dx: float, ppw: float = 8.0) -> float:
    """Peak frequency whose significant band (up to 2.5 f) keeps ``ppw`` points per minimum wavelength."""
    return float(f"{vmin / (ppw * dx * 2.5):.3g}")


def layered(nz: int = 30, nx: int = 40, dx: float = 10.0, *, velocities=(1800.0, 2200.0, 2500.0, 2900.0),
            interfaces=None, n_shots: int = 4, freq: float | None = None, smoothing: float = 4.0,
            dtype=None, device=None) -> Scenario:
    """Flat layers of constant velocity; the starting model is a Gaussian blur (``smoothing`` cells) of the truth.

    ``interfaces`` are the depths (m) of the layer tops below the first layer (default evenly spaced).
    """
    nz, nx = check_int("nz", nz, 4), check_int("nx", nx, 4)
    dx = _check_positive("dx", dx)
    velocities = [float(v) for v in velocities]
    if interfaces is None:
        interfaces = [nz * dx * (i + 1) / len(velocities) for i in range(len(velocities) - 1)]
    if len(interfaces) != len(velocities) - 1:
        raise ValueError(f"interfaces must hold len(velocities) - 1 = {len(velocities) - 1} depths, got {interfaces}")
    z, x = _grid(nz, nx, dx, dtype, device)
    vp = torch.full_like(z + 0 * x, velocities[0])
    for d, v in zip(interfaces, velocities[1:], strict=False):
        vp = torch.where(z + 0 * x >= d, torch.full_like(vp, v), vp)
    freq = freq if freq is not None else _default_freq(min(velocities), dx)
    acq = surface_acquisition(nz, nx, dx, min(velocities), max(velocities), n_shots=n_shots, freq=freq, device=device)
    return Scenario("layered", layered.__doc__.split("\n\n")[0].strip(), dx, {"vp": vp}, {"vp": smooth(vp, smoothing)},
                    acq)


def checkerboard(nz: int = 30, nx: int = 40, dx: float = 10.0, *, v_top: float = 1800.0, gradient: float = 1.5,
                 amplitude: float = 0.05, cell: int = 8, n_shots: int = 4, freq: float | None = None,
                 dtype=None, device=None) -> Scenario:
    """Checkerboard test: ``background * (1 +- amplitude)`` in squares of ``cell`` cells; start = background.

    Smooth (sinusoidal) squares, so that the perturbation has no sharper edge than the grid can carry.
    """
    nz, nx = check_int("nz", nz, 4), check_int("nx", nx, 4)
    cell = check_int("cell", cell, 2)
    dx = _check_positive("dx", dx)
    z, x = _grid(nz, nx, dx, dtype, device)
    bg = v_top + gradient * z + 0 * x
    pattern = torch.sin(math.pi * z / (cell * dx)) * torch.sin(math.pi * x / (cell * dx))
    vp = bg * (1 + amplitude * pattern)
    vmin, vmax = float(vp.min()), float(vp.max())
    freq = freq if freq is not None else _default_freq(vmin, dx)
    acq = surface_acquisition(nz, nx, dx, vmin, vmax, n_shots=n_shots, freq=freq, device=device)
    return Scenario("checkerboard", checkerboard.__doc__.split("\n\n")[0].strip(), dx, {"vp": vp},
                    {"vp": bg.clone()}, acq)


def _openfwi_acquisition(nz, nx, dx, device, n_shots=5):
    # OpenFWI (Deng et al. 2022) acoustic set-up: 5 surface sources, a receiver at every column, 1 ms, 1000 samples,
    # 15 Hz Ricker (paper 2, Table 11).
    src_x = torch.round(torch.linspace(0, nx - 1, n_shots)).long()
    src = torch.stack([torch.zeros_like(src_x), src_x], -1)[:, None]
    rx = torch.arange(nx)
    rec = torch.stack([torch.zeros_like(rx), rx], -1)[None].expand(n_shots, -1, -1).contiguous()
    return Acquisition(src.to(device), rec.to(device), 1e-3, 1000, 15.0)


def flat_layers(seed: int = 0, *, nz: int = 70, nx: int = 70, dx: float = 10.0, n_layers: int | None = None,
                vmin: float = 1500.0, vmax: float = 4500.0, increasing: bool = True, dtype=None,
                device=None) -> Scenario:
    """OpenFWI FlatVel-style model: 2-5 flat layers with random thicknesses and velocities in [vmin, vmax].

    ``increasing=True`` sorts the velocities with depth as in FlatVel-A; ``False`` keeps them random as in the B
    family. Acquisition as OpenFWI (70 x 70 at 10 m, 5 surface shots, 70 receivers, 1 ms x 1000, 15 Hz). The start
    is a heavy Gaussian blur (10 cells) of the truth, as in paper 2.
    """
    rng = np.random.default_rng(seed)
    n_layers = n_layers or int(rng.integers(2, 6))
    tops = np.sort(rng.choice(np.arange(3, nz - 3), size=n_layers - 1, replace=False))
    v = rng.uniform(vmin, vmax, size=n_layers)
    if increasing:
        v = np.sort(v)
    prof = np.empty(nz)
    bounds = [0, *tops.tolist(), nz]
    for i in range(n_layers):
        prof[bounds[i]:bounds[i + 1]] = v[i]
    vp = torch.as_tensor(np.repeat(prof[:, None], nx, 1), dtype=dtype or torch.get_default_dtype(), device=device)
    return Scenario("flat_layers", flat_layers.__doc__.split("\n\n")[0].strip(), dx, {"vp": vp},
                    {"vp": smooth(vp, 10.0)}, _openfwi_acquisition(nz, nx, dx, device), metadata={"seed": seed})


def curved_layers(seed: int = 0, *, nz: int = 70, nx: int = 70, dx: float = 10.0, n_layers: int | None = None,
                  vmin: float = 1500.0, vmax: float = 4500.0, increasing: bool = True, dtype=None,
                  device=None) -> Scenario:
    """OpenFWI CurveVel-style model: 2-5 layers whose interfaces are random sinusoids, velocities in [vmin, vmax].

    Same acquisition and starting-model recipe as :func:`flat_layers`.
    """
    rng = np.random.default_rng(seed)
    n_layers = n_layers or int(rng.integers(2, 6))
    tops = np.sort(rng.choice(np.arange(6, nz - 6), size=n_layers - 1, replace=False)).astype(float)
    v = rng.uniform(vmin, vmax, size=n_layers)
    if increasing:
        v = np.sort(v)
    xs = np.arange(nx)
    amp = rng.uniform(2, 6)
    wavelength = rng.uniform(0.5, 1.5) * nx
    phase = rng.uniform(0, 2 * np.pi)
    bend = amp * np.sin(2 * np.pi * xs / wavelength + phase)
    zz = np.arange(nz)[:, None]
    vp = np.full((nz, nx), v[0])
    for t, vi in zip(tops, v[1:], strict=False):
        vp = np.where(zz >= t + bend[None, :], vi, vp)
    vp = torch.as_tensor(vp, dtype=dtype or torch.get_default_dtype(), device=device)
    return Scenario("curved_layers", curved_layers.__doc__.split("\n\n")[0].strip(), dx, {"vp": vp},
                    {"vp": smooth(vp, 10.0)}, _openfwi_acquisition(nz, nx, dx, device), metadata={"seed": seed})


def paper1_anomaly(*, n: int = 64, dx: float = 160.0, background: float = 3000.0, contrast: float = 0.05,
                   size: int | None = None, n_shots: int = 20, freq: float = 1.0, t_max: float = 4.0,
                   receiver_step: int = 1, dtype=None, device=None) -> Scenario:
    """Paper 1's generalisation test: a square 5 % anomaly in a 3 km/s homogeneous medium, 64 x 64 at 160 m.

    Yang et al. (2021) place 20 sources inside the model and a receiver at every grid node; the source positions,
    frequency, record length and anomaly size are not given in the text: probinv uses a 4 x 5 regular grid of sources,
    a 1 Hz Ricker (>= 8 points per wavelength at 2.5 Hz), 4 s, and an anomaly ``n // 8`` cells wide. Start: the
    homogeneous background.
    """
    size = size or max(1, n // 8)
    dtype = dtype or torch.get_default_dtype()
    bg = torch.full((n, n), background, dtype=dtype, device=device)
    vp = bg.clone()
    lo = n // 2 - size // 2
    vp[lo:lo + size, lo:lo + size] *= 1 + contrast
    rows, cols = (4, 5) if n_shots == 20 else (1, n_shots)
    sz = torch.round(torch.linspace(n / (rows + 1), n - n / (rows + 1), rows)).long()
    sx = torch.round(torch.linspace(n / (cols + 1), n - n / (cols + 1), cols)).long()
    src = torch.cartesian_prod(sz, sx)[:, None, :]
    zz, xx = torch.meshgrid(torch.arange(0, n, receiver_step), torch.arange(0, n, receiver_step), indexing="ij")
    rec = torch.stack([zz.flatten(), xx.flatten()], -1)[None].expand(src.shape[0], -1, -1).contiguous()
    dt = stable_dt(background * (1 + contrast), dx)
    acq = Acquisition(src.to(device), rec.to(device), dt, int(math.ceil(t_max / dt)) + 1, freq)
    return Scenario("paper1_anomaly", paper1_anomaly.__doc__.split("\n\n")[0].strip(), dx, {"vp": vp}, {"vp": bg}, acq)


def _data_dir(data_dir) -> Path | None:
    for cand in (data_dir, os.environ.get("PROBINV_DATA")):
        if cand:
            return Path(cand)
    return None


def marmousi2(*, data_dir: str | os.PathLike | None = None, dx: float = 80.0, nx: int = 100, n_shots: int = 10,
              dtype=None, device=None) -> Scenario:
    """Paper 2's acoustic benchmark: Marmousi2 resampled to 44 x 100 at 80 m, 3 Hz, dt 6 ms, 1500 samples.

    Needs ``marmousi2.npz`` (Martin, Wiley & Marfurt 2006, DENISE copy, CC BY-NC-SA 4.0) in ``data_dir`` or
    ``$PROBINV_DATA``: probinv does not redistribute it. The model (174 x 500 at 20 m) is block-averaged 4 x 4 to 80 m
    (43 rows: 3.48 km / 80 m; the paper quotes 44) and its first ``nx`` columns kept. Free surface on top as in the
    paper; sources (``n_shots``, probinv's choice) and receivers (every column) one cell below it. Start: a heavy
    Gaussian blur (6 cells) of the truth.
    """
    d = _data_dir(data_dir)
    path = d / "marmousi2.npz" if d else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"the marmousi2 scenario needs marmousi2.npz; none found at {str(path)!r}: pass "
                                f"data_dir or set PROBINV_DATA to the folder holding it, or use a synthetic scenario")
    vp = np.load(path)["vp"].astype(np.float64)
    f = int(round(dx / 20.0))
    nz_c, nx_c = vp.shape[0] // f, vp.shape[1] // f
    vp = vp[:nz_c * f, :nx_c * f].reshape(nz_c, f, nx_c, f).mean((1, 3))[:, :nx]
    vp_t = torch.as_tensor(vp, dtype=dtype or torch.get_default_dtype(), device=device)
    nz = vp_t.shape[0]
    acq = surface_acquisition(nz, vp_t.shape[1], dx, float(vp.min()), float(vp.max()), n_shots=n_shots, freq=3.0,
                              dt=0.006, t_max=0.006 * 1499, device=device)
    return Scenario("marmousi2", marmousi2.__doc__.split("\n\n")[0].strip(), dx, {"vp": vp_t},
                    {"vp": smooth(vp_t, 6.0)}, acq, free_surface=True)


def demo(*, size: str = "full", dtype=None, device=None) -> Scenario:
    """The ``probinv demo`` survey: a smooth gradient background with a circular anomaly over a faster layer.

    ``size="full"`` is 24 x 36 cells at 20 m with 4 surface shots; ``size="small"`` (the test suite's reduced mode)
    16 x 24 cells with 3 shots. The Ricker peak (10 / 14 Hz) keeps >= 8 points per wavelength over its band; the
    start is the smooth background.
    """
    if size not in ("full", "small"):
        raise ValueError(f"size must be 'full' or 'small', got {size!r}")
    nz, nx, dx, n_shots = (24, 36, 20.0, 4) if size == "full" else (16, 24, 20.0, 3)
    z, x = _grid(nz, nx, dx, dtype, device)
    bg = 2000.0 + 1.0 * z + 0 * x
    layer_top = 0.78 * nz * dx
    layer = 0.5 * (1 + torch.tanh((z + 0 * x - layer_top) / (2 * dx)))  # edges 2 cells wide: a smooth truth
    true_bg = bg + 300.0 * layer
    r = torch.sqrt((z - 0.42 * nz * dx) ** 2 + (x - 0.5 * (nx - 1) * dx) ** 2)
    blob = 0.5 * (1 - torch.tanh((r - 0.16 * nz * dx) / (2 * dx)))
    vp = true_bg * (1 + 0.12 * blob)
    vmin, vmax = float(vp.min()), float(vp.max())
    freq = _default_freq(vmin, dx)
    acq = surface_acquisition(nz, nx, dx, vmin, vmax, n_shots=n_shots, freq=freq, device=device)
    return Scenario("demo", demo.__doc__.split("\n\n")[0].strip(), dx, {"vp": vp}, {"vp": bg.clone()}, acq,
                    metadata={"size": size})


#: Registry of the named scenarios: name -> function returning a :class:`Scenario` (keyword arguments allowed).
SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "anomaly": anomaly,
    "checkerboard": checkerboard,
    "curved_layers": curved_layers,
    "demo": demo,
    "flat_layers": flat_layers,
    "layered": layered,
    "marmousi2": marmousi2,
    "paper1_anomaly": paper1_anomaly,
}


def list_scenarios() -> dict[str, str]:
    """Name -> one-line description of every registered scenario."""
    return {name: (fn.__doc__ or "").strip().split("\n")[0] for name, fn in sorted(SCENARIOS.items())}


def get_scenario(name: str, **kwargs) -> Scenario:
    """Build the scenario ``name`` with keyword arguments passed to its function (see :data:`SCENARIOS`)."""
    if name not in SCENARIOS:
        close = difflib.get_close_matches(name, SCENARIOS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown scenario {name!r}{hint}; valid names are {sorted(SCENARIOS)}")
    return SCENARIOS[name](**kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# paper 1's random velocity model family (moved here from probinv.fields: a set-up, not a field type)
# ----------------------------------------------------------------------------------------------------------------------

def paper1_models(n: int, *, seed: int | None = None, generator: torch.Generator | None = None,
                  dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                  refine: int = 1) -> torch.Tensor:
    r"""Random velocity models of paper 1 (Yang et al. 2021), drawn with :func:`probinv.fields.sample_grf`.

    Paper 1 is "Seismic wave propagation and inversion with neural operators" (Yang, Gao, Castellanos, Ross,
    Azizzadenesheli & Clayton 2021, The Seismic Record 1(3), 126-134). Its family: von Karman, Hurst
    :math:`\kappa = 0.5`, :math:`a_x = a_z = 1.6` km, mean 3000 m/s, std 150 m/s, on a 64 x 64 grid at dx = 160 m
    (10.24 km square).

    The paper also lists :math:`\varepsilon = 0.1`. In the random-media literature (Sato & Fehler; Frankel & Clayton
    1986) :math:`\varepsilon` is the fractional RMS fluctuation :math:`\sigma_v / \bar v`, which with
    :math:`\bar v` = 3 km/s would mean 300 m/s, contradicting the :math:`\sigma = 0.15` km/s (:math:`\sigma/\mu = 0.05`)
    listed next to it; the paper does not define :math:`\varepsilon` further. We follow the explicit
    :math:`\mu = 3` km/s, :math:`\sigma = 0.15` km/s (so the fractional fluctuation is 0.05), which is also what
    PAPERS.md fixes; for the :math:`\varepsilon`-as-fractional-RMS reading call
    ``probinv.fields.sample_grf((64, 64), 160.0, hurst=0.5, a_z=1600.0, a_x=1600.0, mean=3000.0, std=300.0)``.

    With :math:`\kappa = 0.5` the correlation is exponential, :math:`\rho(r) = e^{-r/a}`: 0.37 at 1.6 km (10 cells).

    Parameters
    ----------
    n : int
        Number of models.
    seed : int, optional
        Seed for a fresh generator (reproducible); mutually exclusive with ``generator``.
    generator : torch.Generator, optional
        Random generator on ``device``.
    dtype, device : optional
        Of the result.
    refine : int
        Grid refinement: ``refine = 2`` gives 128 x 128 at 80 m, the same 10.24 km domain and covariance (the paper's
        evaluation at 2x resolution, its Fig. 4d-f).

    Returns
    -------
    Tensor[n, 64 * refine, 64 * refine]
        Velocities in m/s.
    """
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator to paper1_models, not both")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        dev = torch.device("cpu") if device is None else torch.device(device)
        generator = torch.Generator(device=dev)
        generator.manual_seed(int(seed))
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 1:
        raise ValueError(f"refine must be a positive integer (1: 64 x 64 at 160 m, 2: 128 x 128 at 80 m), "
                         f"got {refine!r}")
    return sample_grf((64 * int(refine), 64 * int(refine)), 160.0 / int(refine), n=n, covariance="von_karman",
                      hurst=0.5, a_z=1600.0, a_x=1600.0, mean=3000.0, std=150.0, generator=generator, dtype=dtype,
                      device=device)


# ----------------------------------------------------------------------------------------------------------------------
# paper 2's Table 1 set-ups (issue 16)
# ----------------------------------------------------------------------------------------------------------------------
#: Time-domain settings of paper 2's Table 9: (nt, dt in s, Ricker peak frequency in Hz).
PAPER2_TIME = {"acoustic": (1500, 0.006, 3.0), "sh": (4000, 0.004, 0.5), "psv": (1500, 0.004, 3.0)}
#: Smallest S speed (m/s) given to the water cells of Marmousi2 for the SH and P-SV rows (probinv's choice: the SH
#: solver needs vs > 0, and the P-SV inversion of vs needs a positive start).
PAPER2_VS_WATER = 400.0


def _shared_data_above() -> Path | None:
    """The nearest ``shared/data`` folder holding marmousi2.npz above this package (a development checkout's
    layout), or None.
    """
    here = Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "shared" / "data" / "marmousi2.npz").is_file():
            return folder / "shared" / "data"
    return None


def paper2_marmousi(physics: str = "acoustic", *, data_dir: str | os.PathLike | None = None, n_shots: int = 16,
                    blur: float = 5.0, sources: str = "spread", dtype=None, device=None) -> Scenario:
    """Paper 2's time-domain Table 1 rows: Marmousi2 (vp, vs, rho) at 44 x 100, 80 m, free surface, Table 9 settings.

    Columns 0-399 of the 20 m model, padded from 174 to 176 rows (edge rows repeated) and block-averaged 4 x 4 to
    44 x 100 at 80 m. ``physics`` picks the time axis and wavelet of Table 9 (acoustic nt 1500, dt 6 ms, 3 Hz; SH nt
    4000, dt 4 ms, 0.5 Hz; P-SV nt 1500, dt 4 ms, 3 Hz); the Ricker peaks at ``1.5 / freq`` (0.5 s at 3 Hz).
    ``n_shots`` sources on row 0 (16), receivers on every cell of row 0, free surface,
    PML 20 on the other sides. Start: Gaussian blur (``blur`` cells, 5 by default) of every true field. Water cells
    (vs = 0) get vs = 400 m/s (:data:`PAPER2_VS_WATER`), probinv's choice; ``metadata["water"]`` is the bool
    (44, 100) mask of the cells lying wholly in the water (rows 0-4). ``sources``: ``"spread"`` (default) puts the
    sources at ``round(linspace(0, 99, n_shots))`` (the first and last columns included), ``"centred"`` at the centres
    of ``n_shots`` equal segments of the 100 columns (3, 9, 15, ..., 96 for 16). Needs ``marmousi2.npz`` in
    ``data_dir``, ``$PROBINV_DATA`` or the nearest ``shared/data`` folder above the package.
    """
    if physics not in PAPER2_TIME:
        raise ValueError(f"physics must be one of {sorted(PAPER2_TIME)}, got {physics!r}")
    if sources not in ("spread", "centred"):
        raise ValueError(f"sources must be 'spread' or 'centred', got {sources!r}")
    d = _data_dir(data_dir) or _shared_data_above()
    path = d / "marmousi2.npz" if d else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"paper2_marmousi needs marmousi2.npz; none found at {str(path)!r}: pass data_dir or "
                                f"set PROBINV_DATA")
    raw = np.load(path)
    true = {}
    for name in ("vp", "vs", "rho"):
        a = raw[name].astype(np.float64)[:, :400]
        a = np.concatenate([a, np.repeat(a[-1:], 176 - a.shape[0], axis=0)], axis=0)
        if name == "vs":  # the cells whose 4 x 4 blocks lie wholly in the water
            water = torch.as_tensor((a == 0).reshape(44, 4, 100, 4).all(axis=(1, 3)), device=device)
        a = a.reshape(44, 4, 100, 4).mean((1, 3))
        true[name] = torch.as_tensor(a, dtype=dtype or torch.get_default_dtype(), device=device)
    true["vs"] = true["vs"].clamp_min(PAPER2_VS_WATER)
    nt, dt, freq = PAPER2_TIME[physics]
    if sources == "spread":
        xs = torch.round(torch.linspace(0, 99, n_shots)).long()
    else:
        xs = ((torch.arange(n_shots) + 0.5) * 100 / n_shots).long()
    src = torch.stack([torch.zeros_like(xs), xs], -1)[:, None, :]
    rx = torch.arange(100)
    rec = torch.stack([torch.zeros_like(rx), rx], -1)[None].expand(n_shots, -1, -1).contiguous()
    acq = Acquisition(src.to(device), rec.to(device), dt, nt, freq)
    initial = {k: smooth(v, blur) for k, v in true.items()}
    return Scenario(f"paper2_marmousi_{physics}", paper2_marmousi.__doc__.split("\n\n")[0].strip(), 80.0, true,
                    initial, acq, free_surface=True, pml_width=20,
                    metadata={"physics": physics, "blur": blur, "water": water, "sources": sources})


def q_anomaly(wave: str = "acoustic", *, nz: int = 30, nx: int = 50, n_shots: int = 10, v_blur: float = 1.0,
              q_blur: float = 6.0, dtype=None, device=None) -> Scenario:
    """Paper 2's frequency-domain Table 1 rows (Table 10): a Q-anomaly model, 30 x 50 cells, 24 frequencies.

    Paper 2's "Q anomaly model" is not published; this one is probinv's: a velocity increasing linearly with depth
    (vp 2000 -> 3000 m/s, or vs 1100 -> 1700 m/s for ``wave="sh"``) with a 10 % faster lens, and Q = 100 in the
    background with two Gaussian low-Q anomalies (Q = 20 and Q = 40, radius ~4 cells) at mid depth. Grid spacing
    100 m (visco-acoustic) or 60 m (visco-elastic SH); frequencies 0.25-6 Hz in steps of 0.25 Hz
    (``metadata["frequencies"]``); ``n_shots`` sources and receivers on every cell of row 0; free surface. Start:
    the velocity slightly blurred (``v_blur`` cells), Q heavily blurred (``q_blur`` cells).
    """
    if wave not in ("acoustic", "sh"):
        raise ValueError(f"wave must be 'acoustic' or 'sh', got {wave!r}")
    dx = 100.0 if wave == "acoustic" else 60.0
    z, x = _grid(nz, nx, 1.0, dtype, device)
    v0, v1 = (2000.0, 3000.0) if wave == "acoustic" else (1100.0, 1700.0)
    v = v0 + (v1 - v0) * z / (nz - 1)
    lens = torch.exp(-(((z - 0.7 * nz) / 3.0) ** 2 + ((x - 0.5 * nx) / 8.0) ** 2))
    v = v * (1 + 0.1 * lens)
    a1 = torch.exp(-(((z - 0.45 * nz) ** 2 + (x - 0.3 * nx) ** 2) / (2 * 4.0 ** 2)))
    a2 = torch.exp(-(((z - 0.45 * nz) ** 2 + (x - 0.7 * nx) ** 2) / (2 * 4.0 ** 2)))
    logq = math.log(100.0) + math.log(20.0 / 100.0) * a1 + math.log(40.0 / 100.0) * a2
    q = torch.exp(logq)
    name = "vp" if wave == "acoustic" else "vs"
    xs = torch.round(torch.linspace(2, nx - 3, n_shots)).long()
    src = torch.stack([torch.zeros_like(xs), xs], -1)[:, None, :]
    rx = torch.arange(nx)
    rec = torch.stack([torch.zeros_like(rx), rx], -1)[None].expand(n_shots, -1, -1).contiguous()
    freqs = [0.25 * k for k in range(1, 25)]
    acq = Acquisition(src.to(device), rec.to(device), 0.004, 2000, 3.0)
    return Scenario(f"q_anomaly_{wave}", q_anomaly.__doc__.split("\n\n")[0].strip(), dx, {name: v, "q": q},
                    {name: smooth(v, v_blur), "q": smooth(q, q_blur)}, acq, free_surface=True, pml_width=20,
                    metadata={"wave": wave, "frequencies": freqs})


SCENARIOS["paper2_marmousi"] = paper2_marmousi
SCENARIOS["q_anomaly"] = q_anomaly
