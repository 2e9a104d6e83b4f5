"""TOML configuration of a simulation / inversion: schema, validation and resolution into tensors.

A configuration names a model (a built-in scenario or a file), the acquisition, the wavelet and time axis, the
physics, the noise model, the prior, the inference settings and the output folder. :func:`load_config` validates it
completely before anything runs: every unknown key, missing file, value out of range, value that looks like it is in
the wrong units, or unstable time step is reported in one :class:`ConfigError` whose message lists each problem with
the key (``[section].key``) and how to fix it.

Example
-------
.. code-block:: toml

    [model]
    scenario = "anomaly"                # or: file = "true_vp.nc" (NetCDF from probinv.io, or SEG-Y)
    scenario_options = { nz = 30, nx = 40, dx = 10.0 }

    [acquisition]
    n_shots = 4

    [wavelet]
    freq = 9.0                          # Hz, Ricker peak

    [time]
    dt = 0.0015                         # s
    t_max = 0.55                        # s (or nt = 368)

    [physics]
    accuracy = 4
    pml_width = 20

    [noise]
    relative = 0.02                     # sigma = 2 % of the clean data's RMS
    seed = 0

    [prior]
    type = "whitened"                   # Matern prior on the velocity, whitened latent variables
    correlation_length = 80.0           # m
    std = 150.0                         # m/s
    retained_variance = 0.99            # modes kept: those holding 99 % of the prior variance (or n_modes = 40)
    bounds = [1500.0, 3000.0]           # m/s

    [inference]
    method = "map"                      # map | laplace | svi | svgd | nuts
    steps = 200
    lr = 0.02

    [output]
    directory = "probinv-out"
    checkpoint_every = 25
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import io
from .fields import DEFAULT_RETAINED_VARIANCE
from .models import AcousticForward
from .physics._fd import max_stable_dt_second_order, second_derivative_symbol_max
from .scenarios import SCENARIOS, get_scenario, smooth, surface_acquisition
from .survey import Acquisition, PhysicsOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # the tomli backport (a dependency on Python 3.10) is tomllib under another name

__all__ = [
    "Config",
    "ConfigError",
    "DEFAULT_BOUND_FACTORS",
    "SCHEMA",
    "Setup",
    "check_geometry",
    "default_bounds",
    "default_config",
    "load_config",
    "parse_config",
    "resolve",
    "to_toml",
]

METHODS = ("map", "laplace", "svi", "svgd", "nuts")

#: Where NUTS runs (``[inference].backend``): PyTorch/Pyro, or NumPyro/JAX (the ``jax`` extra).
BACKENDS = ("torch", "jax")

#: Default prior bounds as factors of the starting model's minimum and maximum velocity (see :func:`default_bounds`).
DEFAULT_BOUND_FACTORS = (0.6, 1.4)
#: Fraction of the largest stable velocity (of the time step) that caps the default upper bound.
STABLE_FRACTION = 0.98


class ConfigError(io.InputError):
    """An invalid configuration; ``.problems`` lists one ``"[section].key ...: fix"`` line per problem.

    A :class:`probinv.io.InputError` (so a ``ValueError``): the ``probinv`` command exits with status 2.
    """

    def __init__(self, problems: list[str], source: str = "configuration"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {source} ({len(self.problems)} problem{'s' if len(problems) > 1 else ''}):\n{lines}")


# ----------------------------------------------------------------------------------------------------------------------
# schema
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Key:
    """One configuration key: its type(s), default, an optional range check and its documentation (with units)."""

    types: tuple
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None


def _positive(v):
    return None if v > 0 else "must be > 0"


def _fraction(v):
    return None if 0 < v <= 1 else "must be in (0, 1]"


def _nonneg(v):
    return None if v >= 0 else "must be >= 0"


def _between(lo, hi, unit=""):
    def check(v):
        return None if lo <= v <= hi else f"must be between {lo} and {hi}{unit}"
    return check


def _one_of(*valid):
    def check(v):
        if v in valid:
            return None
        close = difflib.get_close_matches(str(v), [str(x) for x in valid], n=1)
        return f"must be one of {list(valid)}" + (f" (did you mean {close[0]!r}?)" if close else "")
    return check


def _dt_check(v):
    if v <= 0:
        return "must be > 0 (seconds)"
    if v >= 0.1:
        return f"is {v} s, far too large for a wave simulation: give it in seconds (e.g. 0.001 for 1 ms)"
    return None


def _freq_check(v):
    if v <= 0:
        return "must be > 0 (Hz)"
    if v > 1000:
        return f"is {v} Hz, beyond seismic frequencies: give the Ricker peak frequency in Hz (e.g. 10.0)"
    return None


def _velocity_pair(v):
    if len(v) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return "must be a pair [lo, hi] of velocities in m/s"
    lo, hi = v
    if lo >= hi:
        return f"must satisfy lo < hi, got [{lo}, {hi}]"
    if hi < 100:
        return f"looks like km/s ([{lo}, {hi}]); probinv uses m/s (e.g. [{lo * 1000:g}, {hi * 1000:g}])"
    if lo <= 0:
        return "must be positive velocities in m/s"
    return None


def _std_check(v):
    if v <= 0:
        return "must be > 0 (m/s)"
    if v < 1:
        return f"is {v}: looks like km/s; probinv uses m/s (e.g. {v * 1000:g})"
    return None


_NUM = (int, float)
SCHEMA: dict[str, dict[str, Key]] = {
    "model": {
        "scenario": Key((str,), None, "name of a built-in scenario (`probinv scenarios` lists them)"),
        "scenario_options": Key((dict,), {}, "keyword arguments of the scenario function (nz, nx, dx, seed, ...)"),
        "file": Key((str,), None, "true/reference model file: NetCDF written by probinv.io.write_model, or SEG-Y"),
        "field": Key((str,), "vp", "name of the velocity field in the model file"),
        "dx": Key(_NUM, None, "grid spacing in m of a SEG-Y model without trace coordinates", _positive),
        "initial_file": Key((str,), None, "starting model file (NetCDF or SEG-Y); default: the scenario's start"),
        "initial_smoothing": Key(_NUM, 6.0, "Gaussian blur (cells) of the model file giving the start when no "
                                            "initial_file is given", _nonneg),
    },
    "data": {
        "observed": Key((str,), None, "observed gathers (NetCDF from probinv.io.write_gather or `probinv simulate`, "
                                      "or SEG-Y); default: simulated from the true model with [noise]"),
    },
    "acquisition": {
        "n_shots": Key((int,), None, "number of surface shots (overrides the scenario's)", _positive),
        "source_depth": Key(_NUM, None, "source depth in m (overrides the scenario's)", _nonneg),
        "receiver_depth": Key(_NUM, None, "receiver depth in m (overrides the scenario's)", _nonneg),
        "receiver_spacing": Key(_NUM, None, "receiver spacing in m (a multiple of dx)", _positive),
    },
    "wavelet": {
        "type": Key((str,), "ricker", "source wavelet", _one_of("ricker")),
        "freq": Key(_NUM, None, "Ricker peak frequency in Hz (default: the scenario's)", _freq_check),
    },
    "time": {
        "dt": Key(_NUM, None, "time step in s (default: the scenario's, stable)", _dt_check),
        "nt": Key((int,), None, "number of time samples", _positive),
        "t_max": Key(_NUM, None, "record length in s (alternative to nt)", _positive),
    },
    "physics": {
        "solver": Key((str,), "acoustic", "wave equation", _one_of("acoustic")),
        "accuracy": Key((int,), 4, "spatial order of the finite differences", _one_of(2, 4, 8)),
        "pml_width": Key((int,), 20, "absorbing layer width in cells", _between(0, 200, " cells")),
        "free_surface": Key((bool,), None, "free surface on top (default: the scenario's)"),
    },
    "noise": {
        "relative": Key(_NUM, 0.01, "noise standard deviation as a fraction of the clean data's RMS",
                        _between(0.0, 10.0)),
        "sigma": Key(_NUM, None, "absolute noise standard deviation (data units); overrides relative", _positive),
        "seed": Key((int,), 0, "seed of the noise realisation"),
    },
    "prior": {
        "type": Key((str,), "whitened", "whitened (smooth Gaussian random field) | box (flat within bounds)",
                    _one_of("whitened", "box")),
        "covariance": Key((str,), "matern", "covariance of the whitened prior", _one_of("matern", "von_karman")),
        "nu": Key(_NUM, 0.5, "Matern smoothness (default 0.5: the exponential covariance, von Karman with Hurst 0.5, "
                  "rough enough for layer boundaries and faults; 1.5 gives smooth fields that are over-confident "
                  "about sharp structure, see benchmarks/calibration_misspecified.py)", _positive),
        "hurst": Key(_NUM, 0.5, "von Karman Hurst exponent", _between(0.0, 1.0)),
        "correlation_length": Key(_NUM, None, "correlation length in m (default: a sixth of the model's width)",
                                  _positive),
        "std": Key(_NUM, 150.0, "prior standard deviation in m/s", _std_check),
        "n_modes": Key((int,), None, "number of Karhunen-Loeve modes kept (exclusive with retained_variance)",
                       _positive),
        "retained_variance": Key(_NUM, None, "fraction in (0, 1] of the prior variance the kept modes hold "
                                 f"(default {DEFAULT_RETAINED_VARIANCE} when n_modes is not set)", _fraction),
        "bounds": Key((list,), None, "[lo, hi] velocity bounds in m/s (default: "
                      f"{DEFAULT_BOUND_FACTORS[0]} x min, {DEFAULT_BOUND_FACTORS[1]} x max of the start, the upper one "
                      f"capped at {STABLE_FRACTION:.0%} of the largest velocity [time].dt keeps stable)",
                      _velocity_pair),
    },
    "inference": {
        "method": Key((str,), "map", "map | laplace | svi | svgd | nuts", _one_of(*METHODS)),
        "optimizer": Key((str,), "adam", "MAP optimiser: adam (the papers' FWI) or lbfgs (fewer gradients)",
                         _one_of("adam", "lbfgs")),
        "steps": Key((int,), 200, "optimisation steps (map: Adam steps or L-BFGS iterations; svi, svgd)", _positive),
        "lr": Key(_NUM, 0.02, "learning rate (map with adam, svi, svgd; L-BFGS uses 1)", _positive),
        "rank": Key((int,), None, "Laplace rank (default: the latent dimension, at most 100)", _positive),
        "num_samples": Key((int,), 200, "posterior samples (laplace, nuts)", _positive),
        "warmup": Key((int,), 100, "NUTS warm-up steps", _nonneg),
        "num_chains": Key((int,), 2, "NUTS chains", _positive),
        "max_tree_depth": Key((int,), 8, "NUTS maximum tree depth (at most 2^depth gradients per draw)",
                              _between(1, 12)),
        "n_particles": Key((int,), 16, "SVGD particles", _positive),
        "seed": Key((int,), 0, "random seed of the inference"),
        "backend": Key((str,), "torch", "where NUTS runs: torch (Pyro) | jax (NumPyro, the jax extra; NUTS only)",
                       _one_of(*BACKENDS)),
    },
    "output": {
        "directory": Key((str,), "probinv-out", "output folder (relative to the configuration file)"),
        "checkpoint_every": Key((int,), 25, "steps between checkpoints (0 = never)", _nonneg),
    },
}


# ----------------------------------------------------------------------------------------------------------------------
# config object
# ----------------------------------------------------------------------------------------------------------------------
class Section(Mapping):
    """Read-only mapping of one section's keys, also readable as attributes (``cfg.time.dt``)."""

    def __init__(self, name: str, values: dict):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, key):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"[{self._name}] has no key {key!r}") from None

    def __setattr__(self, key, value):
        raise AttributeError("configuration sections are read-only")

    def __getitem__(self, key):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __repr__(self):
        return f"[{self._name}] {self._values}"


@dataclass(frozen=True)
class Config:
    """A validated configuration: one :class:`Section` per schema section, plus where it came from."""

    sections: dict[str, Section]
    base_dir: Path = field(default_factory=Path.cwd)
    source: str = "configuration"
    # the set-ups resolve() built from this configuration, by (dtype, device): a configuration is resolved once
    _setups: dict = field(default_factory=dict, repr=False, compare=False)

    def __getattr__(self, name):
        """A section as an attribute (``cfg.time``)."""
        sections = object.__getattribute__(self, "sections")
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    def to_dict(self) -> dict:
        """Plain nested dict (for provenance attributes and JSON)."""
        return {s: dict(sec) for s, sec in self.sections.items()}

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict` (keys sorted; the provenance attribute of result files)."""
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    def path(self, value: str | None) -> Path | None:
        """A path from the configuration, resolved against the configuration file's folder."""
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p


def default_config(**overrides: Mapping[str, Any]) -> dict:
    """The schema's defaults as a nested dict, updated by ``section={key: value}`` overrides."""
    d = {s: {k: spec.default for k, spec in keys.items()} for s, keys in SCHEMA.items()}
    for s, vals in overrides.items():
        d[s].update(vals)
    return d


def _type_name(types):
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "an array",
             dict: "a table"}
    if set(types) == {int, float}:
        return "a number"
    return " or ".join(names.get(t, t.__name__) for t in types)


def parse_config(raw: Mapping[str, Any], *, base_dir: str | Path | None = None, source: str = "configuration",
                 check_files: bool = True, check_stability: bool = True) -> Config:
    """Validate a configuration given as a nested mapping (e.g. parsed TOML) and fill in the defaults.

    Raises
    ------
    ConfigError
        Listing every problem found (unknown sections/keys with the closest valid name, wrong types, values out of
        range or in the wrong units, missing files, contradictory keys, unstable time step).
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    problems: list[str] = []
    values: dict[str, dict] = {}
    for sec in raw:
        if sec not in SCHEMA:
            close = difflib.get_close_matches(sec, SCHEMA, n=1)
            hint = f"did you mean [{close[0]}]?" if close else f"valid sections are {sorted(SCHEMA)}"
            problems.append(f"[{sec}] is not a known section: {hint}")
        elif not isinstance(raw[sec], Mapping):
            problems.append(f"[{sec}] must be a table of keys, got {raw[sec]!r}")
    for sec, keys in SCHEMA.items():
        given = raw.get(sec, {}) if isinstance(raw.get(sec, {}), Mapping) else {}
        out = {}
        for k, v in given.items():
            if k not in keys:
                close = difflib.get_close_matches(k, keys, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"valid keys are {sorted(keys)}"
                problems.append(f"[{sec}].{k} is not a known key: {hint}")
                continue
            spec = keys[k]
            ok = isinstance(v, spec.types) and not (isinstance(v, bool) and bool not in spec.types)
            if not ok:
                problems.append(f"[{sec}].{k} = {v!r} must be {_type_name(spec.types)} ({spec.doc})")
                continue
            if spec.check is not None:
                msg = spec.check(v)
                if msg:
                    problems.append(f"[{sec}].{k} = {v!r} {msg} ({spec.doc})")
                    continue
            out[k] = float(v) if float in spec.types and isinstance(v, int) and int not in spec.types else v
        values[sec] = {k: out.get(k, spec.default) for k, spec in keys.items()}

    m = values["model"]
    if m["scenario"] is None and m["file"] is None:
        problems.append("[model] needs either scenario = \"<name>\" (see `probinv scenarios`) or file = \"<path>\"")
    if m["scenario"] is not None and m["file"] is not None:
        problems.append("[model].scenario and [model].file are both set: keep one of them")
    if m["scenario"] is not None:
        if m["scenario"] not in SCENARIOS:
            close = difflib.get_close_matches(m["scenario"], SCENARIOS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid names are {sorted(SCENARIOS)}"
            problems.append(f"[model].scenario = {m['scenario']!r} is not a known scenario: {hint}")
    if check_files:
        for sec, k in (("model", "file"), ("model", "initial_file"), ("data", "observed")):
            v = values[sec][k]
            if v is not None:
                p = Path(v).expanduser()
                p = p if p.is_absolute() else base / p
                if p.is_dir():
                    problems.append(f"[{sec}].{k} = {v!r} is a folder ({str(p)!r}), not a file: give the path of "
                                    f"the file inside it")
                elif not p.is_file():
                    problems.append(f"[{sec}].{k} = {v!r}: no such file ({str(p)!r}; relative paths are resolved "
                                    f"against the configuration file's folder)")
    if values["inference"]["backend"] == "jax" and values["inference"]["method"] in ("svi", "svgd"):
        problems.append(f"[inference].backend = 'jax' runs NUTS only, got method = "
                        f"{values['inference']['method']!r}: use backend = 'torch' or method = 'nuts'")
    if values["prior"]["n_modes"] is not None and values["prior"]["retained_variance"] is not None:
        problems.append("[prior].n_modes and [prior].retained_variance are both set: keep one of them")
    if values["time"]["nt"] is not None and values["time"]["t_max"] is not None:
        problems.append("[time].nt and [time].t_max are both set: keep one of them")
    if problems:
        raise ConfigError(problems, source)
    cfg = Config({s: Section(s, v) for s, v in values.items()}, base, source)
    if check_stability:
        resolve(cfg)  # the checks need the models; the set-up is kept, so that resolve(cfg) later returns it
    return cfg


def load_config(path: str | Path, **kwargs) -> Config:
    """Read and validate a TOML configuration file (see the module docstring for an example).

    Relative paths inside it are resolved against the file's folder.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError([f"configuration file {str(path)!r} is a folder, not a file: give the TOML file inside it "
                           f"(e.g. {str(path / 'config.toml')!r})"], "configuration")
    if not path.is_file():
        raise ConfigError([f"configuration file {str(path)!r} does not exist"], "configuration")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path.name} is not valid TOML: {exc}"], f"configuration {str(path)!r}") from None
    return parse_config(raw, base_dir=path.parent, source=f"configuration {str(path)!r}", **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# resolution into tensors
# ----------------------------------------------------------------------------------------------------------------------
def default_bounds(initial: torch.Tensor, dx: float, dt: float, accuracy: int) -> tuple[float, float]:
    """Default velocity bounds (m/s) of the prior, rounded to 4 digits.

    :data:`DEFAULT_BOUND_FACTORS` (0.6 x / 1.4 x) of the starting model's ``(nz, nx)`` range, the upper one capped at
    :data:`STABLE_FRACTION` (98 %) of the largest velocity the time step ``dt`` (s) keeps stable on the grid ``dx``
    (m) with the stencil ``accuracy``, so that no proposal can make the solver blow up.
    """
    v_stable = 2.0 / (dt * math.sqrt(2 * second_derivative_symbol_max(accuracy) / dx ** 2))
    lo = DEFAULT_BOUND_FACTORS[0] * float(initial.min())
    hi = min(DEFAULT_BOUND_FACTORS[1] * float(initial.max()), STABLE_FRACTION * v_stable)
    return float(f"{lo:.4g}"), float(f"{hi:.4g}")


def prior_bounds(prior: Mapping[str, Any], initial: torch.Tensor, dx: float, dt: float,
                 accuracy: int) -> tuple[float, float]:
    """The ``[prior].bounds`` (m/s) of a configuration section, or :func:`default_bounds` when it gives none."""
    b = prior.get("bounds")
    return (float(b[0]), float(b[1])) if b else default_bounds(initial, dx, dt, accuracy)


@dataclass(frozen=True)
class Setup:
    """A configuration resolved into tensors (SI units): what a simulation, an inversion and a report need.

    Built once per configuration by :func:`resolve`; every step uses the same object, in particular the same
    forward operator.

    Attributes
    ----------
    true : dict[str, Tensor[nz, nx]]
        The true model of a scenario or the model file (for field data, the reference model that fixes the grid).
    initial : dict[str, Tensor[nz, nx]]
        Starting model.
    dx : float
        Grid spacing in m.
    acquisition : probinv.survey.Acquisition
        Sources, receivers, dt (s), nt, Ricker peak frequency (Hz).
    source_amplitudes : Tensor[n_shots, 1, nt]
        Ricker wavelets of the shots.
    physics : probinv.survey.PhysicsOptions
        Solver settings; ``pml_vmax`` is fixed at ``bounds[1]``.
    bounds : tuple[float, float]
        Velocity bounds of the prior in m/s (``[prior].bounds`` or :func:`default_bounds`).
    forward : probinv.models.AcousticForward
        The one forward operator of the set-up: it simulates the observed data, the inversion's model calls it and
        the report's predicted gathers come from it.
    """

    true: dict[str, torch.Tensor]
    initial: dict[str, torch.Tensor]
    dx: float
    acquisition: Acquisition
    source_amplitudes: torch.Tensor
    physics: PhysicsOptions
    bounds: tuple[float, float]
    forward: AcousticForward

    @classmethod
    def build(cls, true: dict[str, torch.Tensor], initial: dict[str, torch.Tensor], dx: float,
              acquisition: Acquisition, physics: PhysicsOptions, bounds: tuple[float, float]) -> Setup:
        """Assemble a set-up: the source wavelets and the forward operator from the survey (dtype of ``true``)."""
        vp = true["vp"]
        forward = AcousticForward.from_survey(acquisition, dx, physics, dtype=vp.dtype, device=vp.device)
        return cls(true=true, initial=initial, dx=float(dx), acquisition=acquisition,
                   source_amplitudes=forward.source_amplitudes, physics=physics,
                   bounds=(float(bounds[0]), float(bounds[1])), forward=forward)

    def with_geometry(self, source_locations: torch.Tensor, receiver_locations: torch.Tensor) -> Setup:
        """The same set-up with other source / receiver locations (e.g. those of an observed data file)."""
        acq = dataclasses.replace(self.acquisition, source_locations=source_locations,
                                  receiver_locations=receiver_locations)
        return Setup.build(self.true, self.initial, self.dx, acq, self.physics, self.bounds)


def _load_model_file(cfg: Config, value: str, what: str, dtype):
    p = cfg.path(value)
    try:
        if p.suffix.lower() in (".sgy", ".segy"):
            m = io.read_segy_model(p, dx=cfg.model.dx, name=cfg.model.field, dtype=dtype)
        else:
            m = io.read_model(p, dtype=dtype)
    except (io.InputError, OSError) as exc:  # unreadable, empty or truncated file, a folder: name the key
        raise ConfigError([f"[model].{what} = {value!r}: {exc}"], cfg.source) from None
    if cfg.model.field not in m.fields:
        raise ConfigError([f"[model].{what} = {value!r} has no field {cfg.model.field!r} (it has "
                           f"{sorted(m.fields)}): set [model].field"], cfg.source)
    # a velocity that is not finite and positive would otherwise surface later as a baffling stability or
    # sampling message (issue 15: "-7.60 cells per minimum wavelength")
    bad = io.describe_bad_values(m.fields[cfg.model.field], dims=("z", "x"), positive=True,
                                 spacing={"z": (m.dx, "m"), "x": (m.dx, "m")}, units="m/s")
    if bad:
        raise ConfigError([f"[model].{what} = {value!r}: field {cfg.model.field!r}: {bad}; velocities must be "
                           f"finite and > 0 m/s: correct the file"], cfg.source)
    return m


def resolve(cfg: Config, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Setup:
    """The one resolution of a configuration: models, survey, solver settings, prior bounds and forward operator.

    Checks the time step's stability and the grid's sampling of the wavelet (:class:`ConfigError` otherwise). The
    result is kept in ``cfg`` per (dtype, device), so that :func:`parse_config` (which resolves to check) and every
    later step share one :class:`Setup`.
    """
    dtype = dtype or torch.get_default_dtype()
    key = (dtype, str(torch.device(device)) if device is not None else None)
    if key not in cfg._setups:
        cfg._setups[key] = _resolve(cfg, dtype, device)
    return cfg._setups[key]


def _resolve(cfg: Config, dtype: torch.dtype, device) -> Setup:
    m = cfg.model
    free_surface = False
    if m.scenario is not None:
        try:
            sc = get_scenario(m.scenario, dtype=dtype, device=device, **dict(m.scenario_options))
        except TypeError as exc:
            raise ConfigError([f"[model].scenario_options: {exc}; see the scenario's keyword arguments with "
                               f"`probinv scenarios --verbose`"], cfg.source) from None
        except ValueError as exc:
            raise ConfigError([f"[model].scenario_options: {exc}"], cfg.source) from None
        true, initial, dx, acq, free_surface = sc.true, sc.initial, sc.dx, sc.acquisition, sc.free_surface
    else:
        model = _load_model_file(cfg, m.file, "file", dtype)
        dx = model.dx
        vp = model.fields[m.field].to(device)
        true = {"vp": vp}
        if m.initial_file is not None:
            initial = {"vp": _load_model_file(cfg, m.initial_file, "initial_file", dtype).fields[m.field].to(device)}
        else:
            initial = {"vp": smooth(vp, m.initial_smoothing)}
        nz, nx = vp.shape
        acq = surface_acquisition(nz, nx, dx, float(vp.min()), float(vp.max()), n_shots=cfg.acquisition.n_shots or 4,
                                  freq=cfg.wavelet.freq or float(f"{float(vp.min()) / (20 * dx):.3g}"), device=device)
    nz, nx = true["vp"].shape
    a = cfg.acquisition
    problems = []

    def to_index(key, metres):
        idx = metres / dx
        if abs(idx - round(idx)) > 1e-6:
            problems.append(f"[acquisition].{key} = {metres} m is not a multiple of dx = {dx} m")
        return int(round(idx))

    src, rec = acq.source_locations, acq.receiver_locations
    if a.n_shots is not None and a.n_shots != acq.n_shots:
        xs = torch.round(torch.linspace(1, nx - 2, a.n_shots)).long() if a.n_shots > 1 else torch.tensor([nx // 2])
        src = torch.stack([torch.full_like(xs, int(src[0, 0, 0])), xs], -1)[:, None].to(src.device)
        rec = rec[:1].expand(a.n_shots, -1, -1).contiguous()
    if a.source_depth is not None:
        src = src.clone()
        src[..., 0] = to_index("source_depth", a.source_depth)
    if a.receiver_spacing is not None:
        step = to_index("receiver_spacing", a.receiver_spacing)
        rx = torch.arange(0, nx, max(step, 1), device=rec.device)
        rec = torch.stack([torch.full_like(rx, int(rec[0, 0, 0])), rx], -1)[None].expand(src.shape[0], -1, -1)
    if a.receiver_depth is not None:
        rec = rec.clone()
        rec[..., 0] = to_index("receiver_depth", a.receiver_depth)
    for key, loc in (("source_depth", src), ("receiver_depth", rec)):
        if int(loc[..., 0].max()) >= nz:
            problems.append(f"[acquisition].{key} = {float(loc[..., 0].max()) * dx} m is below the model bottom "
                            f"({(nz - 1) * dx} m)")
    if not problems:
        problems += check_geometry(src, rec, nz, nx, dx, "[acquisition]")
    t = cfg.time
    dt = t.dt if t.dt is not None else acq.dt
    if t.nt is not None:
        nt = t.nt
    elif t.t_max is not None:
        nt = int(math.ceil(t.t_max / dt)) + 1
    else:
        nt = int(math.ceil((acq.nt - 1) * acq.dt / dt)) + 1
    freq = cfg.wavelet.freq if cfg.wavelet.freq is not None else acq.freq
    if problems:
        raise ConfigError(problems, cfg.source)
    acq = Acquisition(src, rec, float(dt), int(nt), float(freq))
    _check_stability(cfg, true["vp"], initial["vp"], float(dx), acq)
    bounds = prior_bounds(cfg.prior, initial["vp"], float(dx), acq.dt, cfg.physics.accuracy)
    # the absorbing layer's strength is fixed at the prior's upper bound: the inversion may visit any velocity up to
    # it, and with each model's own (rounded) maximum the forward map would jump whenever a sample's maximum crosses a
    # multiple of 100 m/s (which stalls NUTS and L-BFGS); the simulation and the report use the same operator
    physics = PhysicsOptions(accuracy=cfg.physics.accuracy, pml_width=cfg.physics.pml_width,
                             free_surface=cfg.physics.free_surface if cfg.physics.free_surface is not None
                             else free_surface, pml_vmax=bounds[1])
    return Setup.build(true, initial, float(dx), acq, physics, bounds)


def check_geometry(source_locations: torch.Tensor, receiver_locations: torch.Tensor, nz: int, nx: int, dx: float,
                   where: str) -> list[str]:
    """Problems (one line each) of sources / receivers outside the ``nz x nx`` grid, in depth or sideways.

    Parameters
    ----------
    source_locations, receiver_locations : Tensor[n_shots, n, 2]
        Grid indices ``(iz, ix)``.
    nz, nx : int
        Grid size.
    dx : float
        Grid spacing (m), for the message.
    where : str
        What the locations come from (a configuration key or file), for the message.
    """
    problems = []
    for what, loc in (("source", source_locations), ("receiver", receiver_locations)):
        for axis, size, name in ((0, nz, "depth index iz"), (1, nx, "lateral index ix")):
            idx = loc[..., axis]
            outside = (idx < 0) | (idx >= size)
            if bool(outside.any()):
                shot, k = (int(i) for i in torch.nonzero(outside)[0])
                v = int(idx[shot, k])
                problems.append(f"{where}: {int(outside.sum())} {what} location(s) lie outside the grid: the first, "
                                f"{what} {k} of shot {shot}, has {name} = {v} ({v * dx:g} m) but the grid has "
                                f"{size} cells ({name.split()[-1]} 0 to {size - 1}, 0 to {(size - 1) * dx:g} m); "
                                f"move the {what}s onto the model or use a wider model")
    return problems


def _check_stability(cfg: Config, true_vp: torch.Tensor, initial_vp: torch.Tensor, dx: float,
                     acq: Acquisition) -> None:
    """Refuse a time step above the CFL limit of the model's maximum velocity (before anything runs)."""
    vmax = max(float(true_vp.max()), float(initial_vp.max()))
    if cfg.prior.bounds is not None:
        vmax = max(vmax, float(cfg.prior.bounds[1]))  # the inversion may visit velocities up to the upper bound
    dt_max = max_stable_dt_second_order(vmax, dx, cfg.physics.accuracy)
    dt = acq.dt
    if dt > dt_max:
        key = "[time].dt" if cfg.time.dt is not None else "the scenario's dt (no [time].dt given)"
        raise ConfigError([f"{key} = {dt:.6g} s is unstable: with vmax = {vmax:g} m/s (model and prior bounds), "
                           f"dx = {dx:g} m and accuracy {cfg.physics.accuracy} the largest stable time step is "
                           f"{dt_max:.6g} s; set [time].dt <= {dt_max:.3g}"], cfg.source)
    fmax = 2.5 * acq.freq
    vmin = min(float(true_vp.min()), float(initial_vp.min()))
    ppw = vmin / (fmax * dx)
    if ppw < 3:
        raise ConfigError([f"[wavelet].freq = {acq.freq:g} Hz is too high for the grid: "
                           f"{ppw:.2f} cells per minimum wavelength (vmin = {vmin:g} m/s, dx = {dx:g} m, "
                           f"band up to 2.5 x freq); set [wavelet].freq <= {vmin / (3 * 2.5 * dx):.3g}"],
                          cfg.source)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if not (isinstance(v, float) and not math.isfinite(v)) else ("nan" if v != v else
                                                                                     ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} to TOML")


def to_toml(config: Config | Mapping[str, Mapping[str, Any]], *, skip_none: bool = True) -> str:
    """TOML text of a configuration (sections of scalars, arrays and inline tables); ``load_config`` reads it back.

    Keys whose value is None (TOML has no null) are left out, so the schema default applies on reading.
    """
    d = config.to_dict() if isinstance(config, Config) else config
    lines = []
    for sec, keys in d.items():
        lines.append(f"[{sec}]")
        for k, v in keys.items():
            if v is None and skip_none:
                continue
            if isinstance(v, Mapping) and not v:
                continue
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)
