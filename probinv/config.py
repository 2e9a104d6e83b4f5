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

Physics, fields and likelihoods
-------------------------------
``[physics].name`` chooses the physics and so the latent fields (:func:`latent_fields`): ``acoustic`` (vp; the
default), ``sh`` (vs), ``psv`` (vp, vs; ``receiver_component`` vz | vx | pressure, ``source_type``), and the
frequency-domain ``viscoacoustic`` (vp, q) and ``viscoelastic_sh`` (vs, q) (``frequencies`` in Hz, or ``fmin`` /
``fmax`` / ``n_frequencies``). A density field is sampled when ``[prior.rho]`` is given (acoustic, sh, psv);
otherwise sh and psv use the constant ``[physics].rho`` (kg/m^3). Each field has its prior section with the keys of
``[prior]`` in its units (``[prior]`` itself stays the vp prior): ``[prior.vs]`` (m/s), ``[prior.rho]`` (kg/m^3) and
``[prior.q]``, a whitened field of ln Q (``std`` of ln Q, ``bounds`` in Q) whose ``velocity_correlation`` couples it
to the velocity (the joint vp-Q prior). Fields a scenario or model file lacks are derived (:func:`derive_fields`).
``[likelihood].name``: ``gaussian`` (sigma from ``[noise]``), ``student_t`` (``df``), ``travel_time`` (``sigma`` in
s, optional ``max_lag`` in s), ``attenuation`` (``sigma`` of log-amplitude ratios), and the tempered
``global_correlation``, ``envelope``, ``trace_l2`` (``temperature``, a modelling choice, not a noise level).

.. code-block:: toml

    [physics]
    name = "viscoacoustic"
    frequencies = [1.0, 1.5, 2.0, 2.5, 3.0]   # Hz

    [prior.vp]
    std = 100.0                               # m/s
    n_modes = 12

    [prior.q]
    std = 0.5                                 # of ln Q
    bounds = [5.0, 500.0]
    n_modes = 12
    velocity_correlation = 0.0                # joint vp-Q prior: the correlation of vp and ln Q

    [likelihood]
    name = "attenuation"
    sigma = 0.05                              # natural-log amplitude ratio
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
from .models import LIKELIHOODS, PHYSICS, AcousticForward, build_forward, physics_fields
from .physics._fd import max_stable_dt_second_order, max_stable_dt_staggered, second_derivative_symbol_max
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
    "DEFAULT_Q_BOUND_FACTORS",
    "FIELD_PRIOR_SCHEMA",
    "LIKELIHOOD_PHYSICS",
    "PRIOR_FIELDS",
    "SCHEMA",
    "Setup",
    "check_geometry",
    "default_bounds",
    "default_config",
    "derive_fields",
    "field_prior",
    "jax_backend_problem",
    "latent_fields",
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
#: Default Q bounds as factors of the starting Q's minimum and maximum (Q spans decades: wide, in log terms symmetric).
DEFAULT_Q_BOUND_FACTORS = (0.2, 5.0)
#: Fields that may have their own prior section ``[prior.<name>]``.
PRIOR_FIELDS = ("vp", "vs", "rho", "q")
#: Frequency-domain physics (data: spectra ``[n_shots, n_receivers, n_freqs, 2]``); the others are time-domain.
FREQUENCY_PHYSICS = ("viscoacoustic", "viscoelastic_sh")
#: Likelihood name -> the physics whose data it can score: travel times and envelopes need time series, the
#: attenuation likelihood needs spectra; the others take either.
LIKELIHOOD_PHYSICS = {
    "gaussian": PHYSICS, "student_t": PHYSICS, "global_correlation": PHYSICS, "trace_l2": PHYSICS,
    "travel_time": tuple(p for p in PHYSICS if p not in FREQUENCY_PHYSICS),
    "envelope": tuple(p for p in PHYSICS if p not in FREQUENCY_PHYSICS),
    "attenuation": FREQUENCY_PHYSICS,
}
#: The keys of ``[likelihood]`` each likelihood needs (required) and accepts: a Gaussian likelihood takes its sigma
#: from ``[noise]``; the tempered ones (global_correlation, envelope, trace_l2) have a temperature, not a sigma.
LIKELIHOOD_KEYS = {
    "gaussian": ((), ()), "student_t": (("df",), ("df",)), "travel_time": (("sigma",), ("sigma", "max_lag")),
    "attenuation": (("sigma",), ("sigma",)), "global_correlation": (("temperature",), ("temperature",)),
    "envelope": (("temperature",), ("temperature",)), "trace_l2": ((), ("temperature",)),
}


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


def _frequency_list(v):
    if not v or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return "must be a non-empty array of frequencies in Hz"
    if any(x <= 0 for x in v):
        return "must hold positive frequencies in Hz"
    if any(x > 1000 for x in v):
        return "holds values beyond seismic frequencies: give them in Hz (e.g. [2.0, 4.0, 6.0])"
    if len(set(v)) != len(v):
        return "must not repeat a frequency"
    return None


def _hz_check(v):
    if v <= 0:
        return "must be > 0 (Hz)"
    if v > 1000:
        return f"is {v} Hz, beyond seismic frequencies: give it in Hz"
    return None


def _density_check(v):
    if v <= 0:
        return "must be > 0 (kg/m^3)"
    if v < 10:
        return f"is {v}: looks like g/cm^3; probinv uses kg/m^3 (e.g. {v * 1000:g})"
    return None


def _correlation(v):
    return None if -1 < v < 1 else "must lie strictly between -1 and 1"


def _seconds_sigma(v):
    if v <= 0:
        return "must be > 0"
    return None


def _pair(unit, example, *, small=None):
    """Check of a ``[lo, hi]`` pair of positive values in ``unit``; ``small`` = (limit, hint) for a wrong-unit guess."""
    def check(v):
        if len(v) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            return f"must be a pair [lo, hi] in {unit} (e.g. {example})"
        lo, hi = v
        if lo >= hi:
            return f"must satisfy lo < hi, got [{lo}, {hi}]"
        if lo <= 0:
            return f"must be positive values in {unit}"
        if small is not None and hi < small[0]:
            return small[1].format(lo=lo, hi=hi)
        return None
    return check


def _std_in(unit, example, *, small=None, large=None):
    """Check of a prior standard deviation in ``unit``; ``small``/``large`` = (limit, hint) for wrong-unit guesses."""
    def check(v):
        if v <= 0:
            return f"must be > 0 ({unit})"
        if small is not None and v < small[0]:
            return small[1].format(v=v)
        if large is not None and v > large[0]:
            return large[1].format(v=v)
        return None
    return check


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
        "name": Key((str,), "acoustic", "the physics: acoustic (vp) | sh (vs) | psv (vp, vs) | viscoacoustic (vp, "
                    "q; frequency domain) | viscoelastic_sh (vs, q; frequency domain)", _one_of(*PHYSICS)),
        "frequencies": Key((list,), None, "frequencies in Hz of the frequency-domain physics (default: the "
                           "scenario's, else n_frequencies = 6 from 0.5 to 2 x the Ricker peak)", _frequency_list),
        "fmin": Key(_NUM, None, "lowest frequency in Hz (with fmax and n_frequencies, instead of frequencies)",
                    _hz_check),
        "fmax": Key(_NUM, None, "highest frequency in Hz (with fmin and n_frequencies)", _hz_check),
        "n_frequencies": Key((int,), None, "number of frequencies evenly spaced from fmin to fmax", _positive),
        "receiver_component": Key((str,), None, "P-SV receivers: vz (default) | vx (particle velocity, m/s) | "
                                  "pressure (Pa)",
                                  _one_of("vz", "vx", "pressure")),
        "source_type": Key((str,), None, "P-SV source: explosive (default) | force_z | force_x",
                           _one_of("explosive", "force_z", "force_x")),
        "rho": Key(_NUM, None, "constant density in kg/m^3 of sh and psv when no [prior.rho] makes it a field "
                   "(default 2000)",
                   _density_check),
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
    "likelihood": {
        "name": Key((str,), "gaussian", "gaussian (sigma from [noise]) | student_t | travel_time | attenuation | "
                    "global_correlation | envelope | trace_l2", _one_of(*LIKELIHOODS)),
        "sigma": Key(_NUM, None, "standard deviation of the transformed datum: travel_time in s (a delay), "
                     "attenuation dimensionless (a natural-log amplitude ratio; 0.1 = 10 %)", _seconds_sigma),
        "max_lag": Key(_NUM, None, "travel_time: the largest delay searched, in s (default: the whole correlation); "
                       "about half the dominant period keeps each trace's delay on its own arrival", _positive),
        "temperature": Key(_NUM, None, "temperature T of the tempered likelihoods exp(-J / T) (global_correlation, "
                           "envelope, trace_l2; default 1 for trace_l2): a modelling choice, not a noise level",
                           _positive),
        "df": Key(_NUM, None, "degrees of freedom of student_t (its scale is the [noise] sigma)", _positive),
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


def _field_prior_schema(name: str) -> dict[str, Key]:
    """The keys of ``[prior.<name>]``: those of ``[prior]`` with the field's units (Q: std and bounds of ln Q / Q)."""
    keys = dict(SCHEMA["prior"])
    if name == "vs":
        keys["std"] = Key(_NUM, 100.0, "prior standard deviation in m/s", _std_check)
        keys["bounds"] = dataclasses.replace(keys["bounds"], doc="[lo, hi] S-velocity bounds in m/s (default: "
                                             f"{DEFAULT_BOUND_FACTORS[0]} x min, {DEFAULT_BOUND_FACTORS[1]} x max of "
                                             "the start, capped at a stable velocity)")
    elif name == "rho":
        keys["std"] = Key(_NUM, 100.0, "prior standard deviation in kg/m^3",
                          _std_in("kg/m^3", 100, small=(1, "is {v}: looks like g/cm^3; probinv uses kg/m^3")))
        keys["bounds"] = Key((list,), None, f"[lo, hi] density bounds in kg/m^3 (default {DEFAULT_BOUND_FACTORS[0]} x "
                             f"min, {DEFAULT_BOUND_FACTORS[1]} x max of the start)",
                             _pair("kg/m^3", "[1500.0, 2800.0]",
                                   small=(10, "looks like g/cm^3 ([{lo}, {hi}]); probinv uses kg/m^3")))
    elif name == "q":
        keys["type"] = Key((str,), "whitened", "whitened (smooth Gaussian random field of ln Q) | box (flat within "
                           "bounds)", _one_of("whitened", "box"))
        keys["std"] = Key(_NUM, 0.5, "prior standard deviation of ln Q (dimensionless; ln 10 = 2.3 is a decade)",
                          _std_in("of ln Q", 0.5, large=(5, "is {v}: the standard deviation is that of ln Q, not of "
                                                              "Q (e.g. 0.5: Q within a factor 2.7 at 2 sigma)")))
        keys["bounds"] = Key((list,), None, f"[lo, hi] Q bounds (dimensionless; default {DEFAULT_Q_BOUND_FACTORS[0]} "
                             f"x min, {DEFAULT_Q_BOUND_FACTORS[1]} x max of the starting Q)",
                             _pair("Q", "[5.0, 1000.0]"))
        keys["velocity_correlation"] = Key(_NUM, 0.0, "correlation coefficient of the whitened coordinates of ln Q and "
                                           "of the velocity (vp or vs): the joint vp-Q prior; needs the same "
                                           "covariance, correlation_length and modes in both sections", _correlation)
    return keys


#: The keys of each ``[prior.<field>]`` section (same names and checks as ``[prior]``, in the field's units).
FIELD_PRIOR_SCHEMA: dict[str, dict[str, Key]] = {name: _field_prior_schema(name) for name in PRIOR_FIELDS}


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


def _check_keys(sec: str, given: Mapping, keys: Mapping[str, Key], problems: list[str]) -> dict:
    """The values of one section (defaults filled in); each unknown key, wrong type or bad value adds a problem."""
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
    return {k: out.get(k, spec.default) for k, spec in keys.items()}


def _split_field_priors(raw: Mapping[str, Any], problems: list[str]) -> tuple[dict, dict[str, Mapping]]:
    """``raw`` without its field-prior tables, and those tables by field name.

    A field prior is written ``[prior.vp]`` in TOML (``raw["prior"]["vp"]``, a table inside ``[prior]``) or, in a
    plain dict such as :meth:`Config.to_dict`, as the section ``"prior.vp"``.
    """
    raw = dict(raw)
    tables: dict[str, Mapping] = {}
    valid = ", ".join(f"[prior.{n}]" for n in PRIOR_FIELDS)

    def add(name, table):
        if name not in PRIOR_FIELDS:
            close = difflib.get_close_matches(name, PRIOR_FIELDS, n=1)
            hint = f" (did you mean [prior.{close[0]}]?)" if close else ""
            problems.append(f"[prior.{name}] is not a known field prior{hint}: valid field priors are {valid}")
        elif not isinstance(table, Mapping):
            problems.append(f"[prior.{name}] must be a table of keys, got {table!r}")
        elif name in tables:
            problems.append(f"[prior.{name}] is given twice")
        else:
            tables[name] = table

    prior = raw.get("prior")
    if isinstance(prior, Mapping):
        raw["prior"] = {k: v for k, v in prior.items() if not isinstance(v, Mapping)}
        for k, v in prior.items():
            if isinstance(v, Mapping):
                add(k, v)
    for sec in [k for k in raw if isinstance(k, str) and k.startswith("prior.")]:
        add(sec[len("prior."):], raw.pop(sec))
    return raw, tables


def _prior_values(values: Mapping[str, Mapping], name: str) -> Mapping:
    """The effective prior keys of field ``name``: ``[prior.<name>]``, else ``[prior]`` for vp, else the defaults."""
    if f"prior.{name}" in values:
        return values[f"prior.{name}"]
    if name == "vp":
        return values["prior"]
    return {k: spec.default for k, spec in FIELD_PRIOR_SCHEMA[name].items()}


def _physics_problems(values: Mapping[str, Mapping], legacy_prior: set, field_sections: set,
                      physics_given: set) -> list[str]:
    """Problems of the physics, its fields' priors and the likelihood taken together (one line each)."""
    problems = []
    ph = values["physics"]
    name = ph["name"]
    if name not in PHYSICS:  # already reported as a bad value of [physics].name
        return problems
    required, optional = physics_fields(name)
    readable = required + optional
    reads = f"{list(required)}" + (f" (and optionally {list(optional)})" if optional else "")
    for f in sorted(field_sections):
        if f not in readable:
            problems.append(f"[prior.{f}] is given but physics {name!r} reads the fields {reads}: remove "
                            f"[prior.{f}] or choose another [physics].name")
    if legacy_prior:
        if "vp" not in readable:
            problems.append(f"[prior] (keys {sorted(legacy_prior)}) is the vp prior, but physics {name!r} has no vp "
                            f"(it reads {reads}): put these keys under [prior.{required[0]}]")
        elif "vp" in field_sections:
            problems.append("[prior] and [prior.vp] both set the vp prior: keep one of them (move the keys of "
                            "[prior] into [prior.vp])")
    freq = name in FREQUENCY_PHYSICS
    fkeys = [k for k in ("frequencies", "fmin", "fmax", "n_frequencies") if ph[k] is not None]
    if fkeys and not freq:
        problems.append(f"[physics].{fkeys[0]} is used by the frequency-domain physics {list(FREQUENCY_PHYSICS)} "
                        f"only, not by {name!r}: remove it")
    trio = {k: ph[k] for k in ("fmin", "fmax", "n_frequencies")}
    if freq and ph["frequencies"] is not None and any(v is not None for v in trio.values()):
        problems.append("[physics].frequencies and fmin / fmax / n_frequencies are both set: keep one of them")
    elif freq and any(v is not None for v in trio.values()):
        missing = [k for k, v in trio.items() if v is None]
        if missing:
            problems.append(f"[physics].fmin, fmax and n_frequencies go together: {missing} missing")
        elif trio["fmin"] >= trio["fmax"] and trio["n_frequencies"] > 1:
            problems.append(f"[physics].fmin = {trio['fmin']!r} Hz must be below fmax = {trio['fmax']!r} Hz")
    for k in ("receiver_component", "source_type"):
        if ph[k] is not None and name != "psv":
            problems.append(f"[physics].{k} = {ph[k]!r} applies to physics 'psv' only, not {name!r}: remove it")
    if ph["rho"] is not None:
        if name not in ("sh", "psv"):
            problems.append(f"[physics].rho = {ph['rho']!r} (a constant density) applies to physics 'sh' and 'psv' "
                            f"only, not {name!r}: remove it")
        elif "rho" in field_sections:
            problems.append("[physics].rho (a constant density) and [prior.rho] (a density field) are both set: "
                            "keep one of them")
    if freq and values["data"]["observed"] is not None:
        problems.append(f"[data].observed: observed files hold time gathers, but physics {name!r} works on "
                        f"frequency-domain data (simulated from the true model): remove [data].observed or use a "
                        f"time-domain physics")
    lk = values["likelihood"]
    ln = lk["name"]
    if ln in LIKELIHOOD_PHYSICS:
        if name not in LIKELIHOOD_PHYSICS[ln]:
            why = ("it compares the log spectral amplitudes of frequency-domain data" if ln == "attenuation"
                   else "it needs time series (traces in time), and this physics gives spectra")
            fits = [x for x in LIKELIHOODS if name in LIKELIHOOD_PHYSICS[x]]
            problems.append(f"[likelihood].name = {ln!r} does not fit [physics].name = {name!r}: {why}; with {name!r} "
                            f"use one of {fits}")
        needed, accepted = LIKELIHOOD_KEYS[ln]
        for k in ("sigma", "temperature", "df", "max_lag"):
            if lk[k] is None or k in accepted:
                continue
            if k == "sigma" and ln == "gaussian":
                why = "the Gaussian likelihood takes its sigma from [noise] (relative or sigma): move it there"
            elif k == "sigma" and "temperature" in accepted:
                why = (f"{ln!r} is a tempered likelihood exp(-J / T): it has a temperature, not a noise sigma; set "
                       f"[likelihood].temperature instead")
            else:
                takes = list(accepted) or "none of the [likelihood] keys"
                why = f"likelihood {ln!r} does not use it (it takes {takes})"
            problems.append(f"[likelihood].{k} = {lk[k]!r}: {why}")
        hints = {"sigma": {"travel_time": "the standard deviation of a trace's delay in s, e.g. sigma = 0.004",
                           "attenuation": "the standard deviation of ln|observed| - ln|predicted|, e.g. sigma = 0.1"},
                 "temperature": "T of exp(-J / T), a modelling choice (see the likelihood's documentation)",
                 "df": "degrees of freedom, e.g. df = 4"}
        for k in needed:
            if lk[k] is None:
                hint = hints[k][ln] if isinstance(hints[k], dict) else hints[k]
                problems.append(f"[likelihood].{k} is required by likelihood {ln!r}: {hint}")
        if ln == "travel_time" and lk["sigma"] is not None and lk["sigma"] >= 1.0:
            problems.append(f"[likelihood].sigma = {lk['sigma']!r} s is the standard deviation of a delay in seconds: "
                            f"far too large (e.g. 0.004 for 4 ms)")
    jax_problem = jax_backend_problem(name, values["likelihood"]["name"], tuple(field_sections))
    if values["inference"]["backend"] == "jax" and jax_problem:
        problems.append(f"[inference].backend = 'jax': {jax_problem}")
    q = values.get("prior.q")
    if q is not None and q["velocity_correlation"] != 0 and "q" in required:
        vname = required[0]
        vel = _prior_values(values, vname)
        same = ("type", "covariance", "nu", "hurst", "correlation_length", "n_modes", "retained_variance")
        diff = [k for k in same if q[k] != vel[k]]
        if diff or q["type"] != "whitened":
            problems.append(f"[prior.q].velocity_correlation = {q['velocity_correlation']!r} couples the whitened "
                            f"coordinates of {vname} and ln Q, which needs the same Karhunen-Loeve modes: whitened "
                            f"priors with equal {list(same[1:])}; [prior.{vname}] and [prior.q] differ in "
                            f"{diff or ['type']}")
    return problems


def jax_backend_problem(physics: str, likelihood: str, field_priors: tuple = ()) -> str | None:
    """Why the NumPyro/JAX backend cannot run a configuration (None when it can): it has the acoustic vp physics
    with a Gaussian likelihood only.
    """
    if physics != "acoustic" or likelihood != "gaussian" or set(field_priors) - {"vp"}:
        return (f"the JAX backend runs the acoustic physics (vp only) with the Gaussian likelihood, not physics "
                f"{physics!r}, likelihood {likelihood!r}, fields {sorted(set(field_priors) | {'vp'})}: use backend = "
                f"'torch'")
    return None


def latent_fields(cfg: Config) -> tuple[str, ...]:
    """The fields an inversion of ``cfg`` samples: the physics' fields, plus ``rho`` when ``[prior.rho]`` is given."""
    required, optional = physics_fields(cfg.physics.name)
    return tuple(required) + tuple(f for f in optional if f"prior.{f}" in cfg.sections)


def field_prior(cfg: Config, name: str) -> Mapping[str, Any]:
    """The prior keys of field ``name``: ``[prior.<name>]``, else ``[prior]`` for vp, else the schema defaults."""
    if name not in PRIOR_FIELDS:
        raise ValueError(f"name must be one of {list(PRIOR_FIELDS)}, got {name!r}")
    return _prior_values(cfg.sections, name)


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
    raw, field_raw = _split_field_priors(raw, problems)
    for sec in raw:
        if sec not in SCHEMA:
            close = difflib.get_close_matches(sec, SCHEMA, n=1)
            hint = f"did you mean [{close[0]}]?" if close else f"valid sections are {sorted(SCHEMA)}"
            problems.append(f"[{sec}] is not a known section: {hint}")
        elif not isinstance(raw[sec], Mapping):
            problems.append(f"[{sec}] must be a table of keys, got {raw[sec]!r}")
    for sec, keys in SCHEMA.items():
        given = raw.get(sec, {}) if isinstance(raw.get(sec, {}), Mapping) else {}
        values[sec] = _check_keys(sec, given, keys, problems)
    for name, given in field_raw.items():
        values[f"prior.{name}"] = _check_keys(f"prior.{name}", given, FIELD_PRIOR_SCHEMA[name], problems)

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
    for sec in ["prior"] + [f"prior.{n}" for n in field_raw]:
        if values[sec]["n_modes"] is not None and values[sec]["retained_variance"] is not None:
            problems.append(f"[{sec}].n_modes and [{sec}].retained_variance are both set: keep one of them")
    # the [prior] keys set to other values than their defaults (to_toml writes every default: a round trip of a
    # configuration with [prior.vp] or without vp must not read them as a second vp prior)
    given_prior = raw.get("prior") if isinstance(raw.get("prior"), Mapping) else {}
    legacy_prior = {k for k in given_prior if k in SCHEMA["prior"] and values["prior"][k] != SCHEMA["prior"][k].default}
    problems += _physics_problems(values, legacy_prior, set(field_raw),
                                  set(raw.get("physics") or {}) if isinstance(raw.get("physics"), Mapping) else set())
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
        The true model of a scenario or the model file (for field data, the reference model that fixes the grid):
        one entry per latent field of the physics (:func:`latent_fields`; missing ones derived, :func:`derive_fields`).
    initial : dict[str, Tensor[nz, nx]]
        Starting model (same keys).
    dx : float
        Grid spacing in m.
    acquisition : probinv.survey.Acquisition
        Sources, receivers, dt (s), nt, Ricker peak frequency (Hz).
    source_amplitudes : Tensor[n_shots, 1, nt]
        Ricker wavelets of the shots (their spectrum is the source of the frequency-domain physics).
    physics : probinv.survey.PhysicsOptions
        Solver settings; for the acoustic physics ``pml_vmax`` is fixed at ``bounds[1]``.
    bounds : tuple[float, float]
        Bounds of the prior of the physics' first velocity (vp, or vs for sh / viscoelastic_sh) in m/s
        (``[prior].bounds`` / ``[prior.<field>].bounds`` or :func:`default_bounds`).
    forward : forward operator
        The one forward operator of the set-up (:func:`probinv.models.build_forward`): it simulates the observed data,
        the inversion's model calls it and the report's predicted gathers come from it.
    physics_name : str
        ``[physics].name`` (acoustic, sh, psv, viscoacoustic, viscoelastic_sh).
    field_bounds : dict[str, tuple[float, float]]
        Prior bounds of every latent field (m/s, kg/m^3; Q dimensionless).
    forward_options : dict
        The keywords of :func:`probinv.models.build_forward` beyond the survey (density, frequencies, ...).
    """

    true: dict[str, torch.Tensor]
    initial: dict[str, torch.Tensor]
    dx: float
    acquisition: Acquisition
    source_amplitudes: torch.Tensor
    physics: PhysicsOptions
    bounds: tuple[float, float]
    forward: Any
    physics_name: str = "acoustic"
    field_bounds: dict = field(default_factory=dict)
    forward_options: dict = field(default_factory=dict)

    @classmethod
    def build(cls, true: dict[str, torch.Tensor], initial: dict[str, torch.Tensor], dx: float,
              acquisition: Acquisition, physics: PhysicsOptions, bounds: tuple[float, float], *,
              physics_name: str = "acoustic", field_bounds: dict | None = None,
              forward_options: dict | None = None) -> Setup:
        """Assemble a set-up: the source wavelets and the forward operator from the survey (dtype of ``true``)."""
        ref = true["vp"] if "vp" in true else next(iter(true.values()))
        options = dict(forward_options or {})
        if physics_name == "acoustic" and not options:
            forward = AcousticForward.from_survey(acquisition, dx, physics, dtype=ref.dtype, device=ref.device)
        else:
            forward = build_forward(physics_name, acquisition, dx, physics, dtype=ref.dtype, device=ref.device,
                                    **options)
        amplitudes = getattr(forward, "source_amplitudes", None)
        if amplitudes is None:  # frequency domain: the spectrum of these wavelets is the source
            amplitudes = acquisition.source_amplitudes(dtype=ref.dtype, device=ref.device)
        fb = dict(field_bounds) if field_bounds else {next(iter(true)): (float(bounds[0]), float(bounds[1]))}
        return cls(true=true, initial=initial, dx=float(dx), acquisition=acquisition, source_amplitudes=amplitudes,
                   physics=physics, bounds=(float(bounds[0]), float(bounds[1])), forward=forward,
                   physics_name=physics_name, field_bounds=fb, forward_options=options)

    @property
    def fields(self) -> tuple[str, ...]:
        """The latent fields, in the order of :func:`latent_fields` (the first is the physics' velocity)."""
        return tuple(self.true)

    @property
    def frequency_domain(self) -> bool:
        """Whether the data are spectra ``[n_shots, n_receivers, n_freqs, 2]`` (else time series)."""
        return self.physics_name in FREQUENCY_PHYSICS

    @property
    def data_units(self) -> str:
        """Units of the data: Pa (acoustic pressure), m (SH displacement), m/s or Pa (P-SV particle velocity or
        pressure), Pa s and m s (spectra of pressure and SH displacement: time units times s).
        """
        if self.physics_name == "psv":
            return "Pa" if self.forward_options.get("receiver_component") == "pressure" else "m/s"
        return {"acoustic": "Pa", "sh": "m", "viscoacoustic": "Pa s", "viscoelastic_sh": "m s"}[self.physics_name]

    def with_geometry(self, source_locations: torch.Tensor, receiver_locations: torch.Tensor) -> Setup:
        """The same set-up with other source / receiver locations (e.g. those of an observed data file)."""
        acq = dataclasses.replace(self.acquisition, source_locations=source_locations,
                                  receiver_locations=receiver_locations)
        return Setup.build(self.true, self.initial, self.dx, acq, self.physics, self.bounds,
                           physics_name=self.physics_name, field_bounds=self.field_bounds,
                           forward_options=self.forward_options)


#: Relations that complete a model lacking a field the physics needs (probinv's choices, documented in
#: :func:`derive_fields`): vs = vp / sqrt(3) (a Poisson solid), Gardner's density, and Q from Li's empirical relation.
VS_OVER_VP = 1.0 / math.sqrt(3.0)
GARDNER = (310.0, 0.25)
Q_FROM_VP = (3.516, 2.2)


def derive_fields(fields: Mapping[str, torch.Tensor], names) -> dict[str, torch.Tensor]:
    """The fields ``names`` of a model, derived from its velocity where the model lacks them.

    A scenario gives vp (some also vs, rho, q; :func:`probinv.scenarios.q_anomaly` vs and q for SH); a model file
    gives the variables it holds. Missing fields are derived, as probinv's choice:

    * ``vs = vp / sqrt(3)`` (a Poisson solid, Poisson's ratio 0.25), ``vp = sqrt(3) vs`` the other way;
    * ``rho = 310 vp^0.25`` kg/m^3 with vp in m/s (Gardner et al. 1974);
    * ``Q = 3.516 (vp / 1000 m/s)^2.2`` (Li's empirical relation of Q and the P velocity in km/s, used by e.g.
      Hao & Greenhalgh; 16 at 2 km/s, 40 at 3 km/s), from vp (or sqrt(3) vs).

    Parameters
    ----------
    fields : mapping of str to Tensor[nz, nx]
        What the model gives (m/s, kg/m^3, Q dimensionless).
    names : sequence of str
        The fields wanted (``"vp"``, ``"vs"``, ``"rho"``, ``"q"``).

    Returns
    -------
    dict[str, Tensor[nz, nx]]
        ``{name: field}`` for ``names``, in that order.
    """
    out = dict(fields)

    def vp():
        if "vp" in out:
            return out["vp"]
        if "vs" in out:
            return out["vs"] / VS_OVER_VP
        raise ValueError(f"fields must hold vp or vs to derive the others, got {sorted(fields)}")

    for n in names:
        if n in out:
            continue
        if n == "vp":
            out["vp"] = vp()
        elif n == "vs":
            out["vs"] = vp() * VS_OVER_VP
        elif n == "rho":
            out["rho"] = GARDNER[0] * vp() ** GARDNER[1]
        elif n == "q":
            out["q"] = Q_FROM_VP[0] * (vp() / 1000.0) ** Q_FROM_VP[1]
        else:
            raise ValueError(f"cannot derive field {n!r}: valid names are {list(PRIOR_FIELDS)}")
    return {n: out[n] for n in names}


def _load_model_file(cfg: Config, value: str, what: str, dtype):
    p = cfg.path(value)
    try:
        if p.suffix.lower() in (".sgy", ".segy"):
            m = io.read_segy_model(p, dx=cfg.model.dx, name=cfg.model.field, dtype=dtype)
        else:
            m = io.read_model(p, dtype=dtype)
    except (io.InputError, OSError) as exc:  # unreadable, empty or truncated file, a folder: name the key
        raise ConfigError([f"[model].{what} = {value!r}: {exc}"], cfg.source) from None
    required = physics_fields(cfg.physics.name)[0]
    # a physics without vp (sh, viscoelastic_sh) may take its velocity from a vs variable instead
    if cfg.model.field not in m.fields and not ("vp" not in required and required[0] in m.fields):
        raise ConfigError([f"[model].{what} = {value!r} has no field {cfg.model.field!r} (it has "
                           f"{sorted(m.fields)}): set [model].field"], cfg.source)
    # a velocity that is not finite and positive would otherwise surface later as a baffling stability or
    # sampling message (issue 15: "-7.60 cells per minimum wavelength")
    for name in [cfg.model.field] + [f for f in PRIOR_FIELDS if f != cfg.model.field]:
        if name not in m.fields:
            continue
        units = io.FIELD_UNITS.get(name, ("1",))[0]
        bad = io.describe_bad_values(m.fields[name], dims=("z", "x"), positive=True,
                                     spacing={"z": (m.dx, "m"), "x": (m.dx, "m")}, units=units)
        if bad:
            kind = "velocities must be finite and > 0 m/s" if units == "m/s" else f"{name} must be finite and > 0"
            raise ConfigError([f"[model].{what} = {value!r}: field {name!r}: {bad}; {kind}: correct the file"],
                              cfg.source)
    return m


def _file_fields(cfg: Config, model, device) -> dict[str, torch.Tensor]:
    """The fields of a model file: ``[model].field`` as vp, and the variables named vs, rho and q when present."""
    out = {}
    if cfg.model.field in model.fields:
        out["vp"] = model.fields[cfg.model.field].to(device)
    for name in ("vs", "rho", "q"):
        if name in model.fields and name != cfg.model.field:
            out[name] = model.fields[name].to(device)
    if "vp" not in out and "vs" in model.fields:
        out["vs"] = model.fields["vs"].to(device)
    return out


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
    name = cfg.physics.name
    latent = latent_fields(cfg)
    free_surface = False
    scenario_frequencies = None
    if m.scenario is not None:
        options = dict(m.scenario_options)
        # paper 2's set-ups follow the physics unless their option says otherwise: Table 9's time axis and wavelet
        # per physics (paper2_marmousi), the visco-acoustic or visco-elastic SH Q-anomaly model (q_anomaly)
        if m.scenario == "paper2_marmousi" and name in ("acoustic", "sh", "psv"):
            options.setdefault("physics", name)
        if m.scenario == "q_anomaly":
            options.setdefault("wave", "sh" if name in ("sh", "viscoelastic_sh") else "acoustic")
        try:
            sc = get_scenario(m.scenario, dtype=dtype, device=device, **options)
        except TypeError as exc:
            raise ConfigError([f"[model].scenario_options: {exc}; see the scenario's keyword arguments with "
                               f"`probinv scenarios --verbose`"], cfg.source) from None
        except ValueError as exc:
            raise ConfigError([f"[model].scenario_options: {exc}"], cfg.source) from None
        true, initial, dx, acq, free_surface = sc.true, sc.initial, sc.dx, sc.acquisition, sc.free_surface
        scenario_frequencies = sc.metadata.get("frequencies")
    else:
        model = _load_model_file(cfg, m.file, "file", dtype)
        dx = model.dx
        true = _file_fields(cfg, model, device)
        if m.initial_file is not None:
            initial = _file_fields(cfg, _load_model_file(cfg, m.initial_file, "initial_file", dtype), device)
        else:
            initial = {k: smooth(v, m.initial_smoothing) for k, v in true.items()}
        vel = true["vp"] if "vp" in true else true["vs"]
        nz, nx = vel.shape
        acq = surface_acquisition(nz, nx, dx, float(vel.min()), float(vel.max()), n_shots=cfg.acquisition.n_shots or 4,
                                  freq=cfg.wavelet.freq or float(f"{float(vel.min()) / (20 * dx):.3g}"), device=device)
    # every latent field of the physics, derived from the velocity where the model lacks it (acoustic: vp as given)
    true, initial = derive_fields(true, latent), derive_fields(initial, latent)
    nz, nx = next(iter(true.values())).shape
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
    fs = cfg.physics.free_surface if cfg.physics.free_surface is not None else free_surface
    if name == "acoustic":
        _check_stability(cfg, true["vp"], initial["vp"], float(dx), acq)
        bounds = prior_bounds(field_prior(cfg, "vp"), initial["vp"], float(dx), acq.dt, cfg.physics.accuracy)
        field_bounds = {"vp": bounds}
        if "rho" in latent:
            field_bounds["rho"] = _field_bounds(cfg, "rho", initial["rho"], float(dx), acq)
        # the absorbing layer's strength is fixed at the prior's upper bound: the inversion may visit any velocity up
        # to it, and with each model's own (rounded) maximum the forward map would jump whenever a sample's maximum
        # crosses a multiple of 100 m/s (which stalls NUTS and L-BFGS); the simulation and the report use the same
        # operator
        physics = PhysicsOptions(accuracy=cfg.physics.accuracy, pml_width=cfg.physics.pml_width, free_surface=fs,
                                 pml_vmax=bounds[1])
        options = {"density": True} if "rho" in latent else {}
        return Setup.build(true, initial, float(dx), acq, physics, bounds, physics_name=name,
                           field_bounds=field_bounds, forward_options=options)
    options: dict[str, Any] = {}
    if name in FREQUENCY_PHYSICS:
        options["frequencies"] = _frequencies(cfg, scenario_frequencies, acq.freq)
    else:
        options["density"] = "rho" in latent
        if "rho" not in latent:
            options["rho"] = float(cfg.physics.rho if cfg.physics.rho is not None else 2000.0)
        if name == "psv":
            options["receiver_component"] = cfg.physics.receiver_component or "vz"
            options["source_type"] = cfg.physics.source_type or "explosive"
    field_bounds = {f: _field_bounds(cfg, f, initial[f], float(dx), acq) for f in latent}
    _check_other_stability(cfg, true, initial, float(dx), acq, field_bounds, options.get("frequencies"))
    physics = PhysicsOptions(accuracy=cfg.physics.accuracy, pml_width=cfg.physics.pml_width, free_surface=fs)
    return Setup.build(true, initial, float(dx), acq, physics, field_bounds[latent[0]], physics_name=name,
                       field_bounds=field_bounds, forward_options=options)


def _frequencies(cfg: Config, scenario_frequencies, freq: float) -> list[float]:
    """The frequencies (Hz) of a frequency-domain physics: ``[physics].frequencies``, else fmin / fmax /
    n_frequencies, else the scenario's, else 6 evenly spaced from 0.5 to 2 times the Ricker peak ``freq``.
    """
    ph = cfg.physics
    if ph.frequencies is not None:
        return [float(f) for f in ph.frequencies]
    if ph.fmin is not None:
        return [float(f"{float(f):.6g}") for f in torch.linspace(ph.fmin, ph.fmax, ph.n_frequencies,
                                                                  dtype=torch.float64)]
    if scenario_frequencies is not None:
        return [float(f) for f in scenario_frequencies]
    return [float(f"{float(f):.6g}") for f in torch.linspace(0.5 * freq, 2.0 * freq, 6, dtype=torch.float64)]


def _field_bounds(cfg: Config, name: str, initial: torch.Tensor, dx: float, acq: Acquisition) -> tuple[float, float]:
    """``[prior.<name>].bounds``, or the default bounds of field ``name`` around its start.

    Velocities: :data:`DEFAULT_BOUND_FACTORS` of the start's range, the upper one capped (time-domain physics) at
    :data:`STABLE_FRACTION` of the largest velocity the time step keeps stable (the acoustic or the staggered
    elastic scheme); density: the same factors; Q: :data:`DEFAULT_Q_BOUND_FACTORS`.
    """
    b = field_prior(cfg, name).get("bounds")
    if b:
        return float(b[0]), float(b[1])
    lo_f, hi_f = DEFAULT_Q_BOUND_FACTORS if name == "q" else DEFAULT_BOUND_FACTORS
    lo, hi = lo_f * float(initial.min()), hi_f * float(initial.max())
    phys = cfg.physics.name
    if name in ("vp", "vs") and phys not in FREQUENCY_PHYSICS:
        if phys == "acoustic":
            v_stable = 2.0 / (acq.dt * math.sqrt(2 * second_derivative_symbol_max(cfg.physics.accuracy) / dx ** 2))
        else:  # max_stable_dt_staggered is inversely proportional to the velocity
            v_stable = max_stable_dt_staggered(1.0, dx, cfg.physics.accuracy) / acq.dt
        hi = min(hi, STABLE_FRACTION * v_stable)
    return float(f"{lo:.4g}"), float(f"{hi:.4g}")


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
    bounds = field_prior(cfg, "vp").get("bounds")
    if bounds is not None:
        vmax = max(vmax, float(bounds[1]))  # the inversion may visit velocities up to the upper bound
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


def _check_other_stability(cfg: Config, true: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor],
                           dx: float, acq: Acquisition, bounds: Mapping[str, tuple], frequencies) -> None:
    """:func:`_check_stability` for the elastic (staggered scheme) and frequency-domain physics.

    Time domain: the time step must be stable for the fastest velocity (vp for P-SV, vs for SH; models and prior
    upper bounds) and the wavelet's band (up to 2.5 x the peak) needs 3 cells per minimum wavelength (slowest
    velocity). Frequency domain: 3 cells per wavelength at the highest frequency.
    """
    name = cfg.physics.name
    vels = [f for f in ("vp", "vs") if f in true]
    vmin = min(min(float(true[f].min()), float(initial[f].min())) for f in vels)
    if name in FREQUENCY_PHYSICS:
        fmax = max(frequencies)
        ppw = vmin / (fmax * dx)
        if ppw < 3:
            key = "[physics].frequencies" if cfg.physics.frequencies is not None or cfg.physics.fmax is not None \
                else "the default frequencies"
            raise ConfigError([f"{key}: the highest, {fmax:g} Hz, is too high for the grid: {ppw:.2f} cells per "
                               f"minimum wavelength (vmin = {vmin:g} m/s, dx = {dx:g} m); keep frequencies <= "
                               f"{vmin / (3 * dx):.3g} Hz"], cfg.source)
        return
    fast = "vp" if "vp" in true else "vs"
    vmax = max(float(true[fast].max()), float(initial[fast].max()), float(bounds[fast][1]))
    dt_max = max_stable_dt_staggered(vmax, dx, cfg.physics.accuracy)
    if acq.dt > dt_max:
        key = "[time].dt" if cfg.time.dt is not None else "the scenario's dt (no [time].dt given)"
        raise ConfigError([f"{key} = {acq.dt:.6g} s is unstable for physics {name!r}: with {fast} max = {vmax:g} "
                           f"m/s (model and prior bounds), dx = {dx:g} m and accuracy {cfg.physics.accuracy} the "
                           f"largest stable time step is {dt_max:.6g} s; set [time].dt <= {dt_max:.3g}"], cfg.source)
    ppw = vmin / (2.5 * acq.freq * dx)
    if ppw < 3:
        raise ConfigError([f"[wavelet].freq = {acq.freq:g} Hz is too high for the grid with physics {name!r}: "
                           f"{ppw:.2f} cells per minimum wavelength (vmin = {vmin:g} m/s, dx = {dx:g} m, band up to "
                           f"2.5 x freq); set [wavelet].freq <= {vmin / (3 * 2.5 * dx):.3g}"], cfg.source)


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
