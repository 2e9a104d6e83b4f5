"""ArviZ conversion, r-hat / ESS summaries and calibration (coverage) checks.

ArviZ APIs relied on (feature-detected, one conversion function :func:`to_arviz_dataset`):

* arviz 0.x (Python 3.10/3.11; 0.23.4 is what pip resolves there): ``arviz.from_dict(posterior=..., sample_stats=...,
  observed_data=..., posterior_predictive=..., coords=..., dims=...)`` -> ``InferenceData``; ``arviz.summary``,
  ``arviz.rhat``, ``arviz.ess``.
* arviz 1.x (Python >= 3.12): ``arviz_base.from_dict({"posterior": ..., "sample_stats": ..., ...}, coords=...,
  dims=...)`` -> ``xarray.DataTree``; ``arviz_stats.summary`` / ``arviz.summary``.

Samples are dicts ``{name: array[chain, draw, ...]}``.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

if "MPLBACKEND" not in os.environ and matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
    matplotlib.use("Agg")  # as in plotting.py: library code never opens windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from .io import FIELD_UNITS  # noqa: E402

__all__ = ["MCMC_METHODS", "VERDICT_THRESHOLDS", "Check", "Verdict", "arviz_backend", "chi2_per_datum", "coverage",
           "ess", "illumination", "laplace_log_evidence", "plot_draws", "posterior_point", "predictive_check", "rhat",
           "std_ratio_map", "summary", "to_arviz_dataset", "verdict"]

log = logging.getLogger(__name__)


def _np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _import_arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz  # noqa: PLC0415
    return arviz


def arviz_backend() -> str:
    """``"arviz_base"`` (arviz >= 1.0, DataTree) or ``"arviz"`` (arviz 0.x, InferenceData)."""
    try:
        import arviz_base  # noqa: F401, PLC0415
        return "arviz_base"
    except ImportError:
        return "arviz"


def to_arviz_dataset(posterior: Mapping, *, sample_stats: Mapping | None = None, observed_data: Mapping | None = None,
                     posterior_predictive: Mapping | None = None, coords: Mapping | None = None,
                     dims: Mapping | None = None, attrs: Mapping | None = None, log_likelihood: Mapping | None = None,
                     prior: Mapping | None = None):
    """Build an ArviZ object from dicts of arrays ``[chain, draw, ...]`` (observed data without chain/draw).

    ``log_likelihood`` (``{name: [chain, draw, shot]}``, per-shot pointwise log-likelihood, dims ``shot``) and
    ``prior`` (``{name: [chain, draw, ...]}``, same dims as the posterior) become the groups of those names.
    Returns an ``arviz.InferenceData`` (arviz 0.x) or an ``xarray.DataTree`` (arviz 1.x).
    """
    out = _to_arviz_groups(posterior, sample_stats=sample_stats, observed_data=observed_data,
                           posterior_predictive=posterior_predictive, coords=coords, dims=dims, attrs=attrs,
                           prior=prior)
    if log_likelihood:
        # the pointwise log-likelihood has its own dims (chain, draw, shot): added as a group of its own so that it
        # does not take the observed data's (shot, receiver, time) dims of the same variable name
        ds = xr.Dataset({k: (("chain", "draw", "shot"), _np(v).reshape(_np(v).shape[:2] + (-1,)))
                         for k, v in log_likelihood.items()})
        ds = ds.assign_coords(chain=np.arange(ds.sizes["chain"]), draw=np.arange(ds.sizes["draw"]),
                              shot=np.arange(ds.sizes["shot"]))
        if arviz_backend() == "arviz_base":
            out["log_likelihood"] = xr.DataTree(ds)
        else:
            out.add_groups({"log_likelihood": ds})
    return out


def _to_arviz_groups(posterior: Mapping, *, sample_stats, observed_data, posterior_predictive, coords, dims, attrs,
                     prior):
    groups = {"posterior": {k: _np(v) for k, v in posterior.items()}}
    if prior:
        groups["prior"] = {k: _np(v) for k, v in prior.items()}
    if sample_stats:
        groups["sample_stats"] = {k: _np(v) for k, v in sample_stats.items()}
    if observed_data:
        groups["observed_data"] = {k: _np(v) for k, v in observed_data.items()}
    if posterior_predictive:
        groups["posterior_predictive"] = {k: _np(v) for k, v in posterior_predictive.items()}
    coords = {k: _np(v) for k, v in (coords or {}).items()}
    dims = {k: list(v) for k, v in (dims or {}).items()}
    if arviz_backend() == "arviz_base":
        import arviz_base  # noqa: PLC0415
        tree = arviz_base.from_dict(groups, coords=coords, dims=dims)
        if attrs:
            tree["posterior"].attrs.update(dict(attrs))
        return tree
    az = _import_arviz()
    return az.from_dict(**groups, coords=coords, dims=dims, attrs=dict(attrs or {}))


def summary(data, var_names: Sequence[str] | None = None, **kwargs):
    """``arviz.summary`` (mean, sd, HDI, MCSE, ESS, r-hat) of an ArviZ object, as a pandas DataFrame."""
    az = _import_arviz()
    with warnings.catch_warnings():
        # single-chain / single-draw posteriors (MAP) give NaN r-hat: not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        return az.summary(data, var_names=list(var_names) if var_names else None, **kwargs)


def rhat(samples) -> np.ndarray:
    """Rank-normalised split r-hat (Vehtari et al. 2021) of ``samples[chain, draw, ...]``, shape ``samples[0, 0]``."""
    az = _import_arviz()
    x = _np(samples)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    out = np.array([az.rhat(flat[:, :, i]) for i in range(flat.shape[-1])], dtype=float)
    return out.reshape(x.shape[2:])


def ess(samples, method: str = "bulk") -> np.ndarray:
    """Effective sample size (``"bulk"`` or ``"tail"``) of ``samples[chain, draw, ...]``, shape ``samples[0, 0]``."""
    az = _import_arviz()
    x = _np(samples)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    out = np.array([az.ess(flat[:, :, i], method=method) for i in range(flat.shape[-1])], dtype=float)
    return out.reshape(x.shape[2:])


def coverage(samples, truth, probs: Sequence[float] = (0.5, 0.9)) -> dict:
    """Fraction of the entries of ``truth`` inside the equal-tailed posterior credible intervals.

    Parameters
    ----------
    samples : array or Tensor ``[..., *truth.shape]``
        Posterior draws; every leading axis (chain, draw) is pooled.
    truth : array or Tensor
        The true values (e.g. a velocity model ``(nz, nx)``).
    probs : sequence of float
        Nominal interval probabilities in (0, 1).

    Returns
    -------
    dict
        ``{prob: fraction inside}``. A calibrated posterior gives fraction ~= prob on average over truths drawn from
        the prior (not for a single truth: pixels are correlated).
    """
    x, t = _np(samples), _np(truth)
    x = x.reshape((-1,) + t.shape)
    out = {}
    for p in probs:
        if not 0 < p < 1:
            raise ValueError(f"probs must lie in (0, 1), got {p!r}")
        lo, hi = np.quantile(x, [(1 - p) / 2, (1 + p) / 2], axis=0)
        out[float(p)] = float(np.mean((t >= lo) & (t <= hi)))
    return out


# ----------------------------------------------------------------------------------------------------------------------
# the verdict: whether to trust a posterior
# ----------------------------------------------------------------------------------------------------------------------
#: Thresholds of :func:`verdict` (each is explained where it is used).
VERDICT_THRESHOLDS = {
    "newton_decrement": 0.5,     # the mode lies this many posterior std (Mahalanobis) from the Laplace point
    "relative_gradient": 1e-2,   # |grad U(final)| / |grad U(start)| in the unconstrained latent space
    "loss_change": 1.0,          # nats the loss still fell over the last 10 % of the MAP's record
    "chi2_high": 1.25,           # residual chi^2 per datum above this: noise underestimated or model misfit
    "chi2_low": 0.5,             # below this: noise overestimated (or overfitting)
    "retained_variance": 0.95,   # a prior keeping less of its variance cannot represent the discarded scales
    "rhat": 1.05,                # the worst over every pixel: 1.01 (Vehtari et al. 2021) per scalar is often
                                 # exceeded by chance somewhere among thousands of iid pixels of short chains
    "ess": 100,                  # bulk and tail ESS, all chains together (Vehtari et al. 2021: >= 100 per chain
                                 # is their recommendation for 4 chains; 100 in all is the floor for a 5 % MCSE)
    "coverage_90": 0.8,          # truth inside the 90 % intervals at fewer pixels: over-confident
    "illuminated_db": -10.0,     # pixels whose illumination (diag J^T J) is within this of the field's peak are
                                 # "illuminated" for the informativeness item (information only)
}


@dataclass
class Check:
    """One item of a :class:`Verdict`: ``ok`` is True (passed), False (a warning) or None (information only)."""

    name: str
    ok: bool | None
    value: Any
    message: str

    def __str__(self):
        tag = {True: "ok  ", False: "WARN", None: "info"}[self.ok]
        return f"[{tag}] {self.name}: {self.message}"


@dataclass
class Verdict:
    """Whether to trust a posterior: the checks of :func:`verdict`, with coverage and z-scores when a truth is known.

    Attributes
    ----------
    checks : list of Check
    coverage : dict
        ``{field: {0.5: fraction, 0.9: fraction}}`` of pixels whose truth lies inside the equal-tailed intervals
        (when a truth was given).
    z_scores : dict
        ``{field: Tensor[nz, nx]}``, ``(posterior mean - truth) / posterior std`` (discarded prior variance included).
    std_ratio : dict
        ``{field: float}``, the median over the pixels (of the mask) of posterior std / prior std.
    std_ratio_illuminated : dict
        ``{field: float}``, the same median over the pixels the data illuminate (when an illumination was given).
    """

    checks: list = field(default_factory=list)
    coverage: dict = field(default_factory=dict)
    z_scores: dict = field(default_factory=dict)
    std_ratio: dict = field(default_factory=dict)
    std_ratio_illuminated: dict = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """No failed check."""
        return all(c.ok is not False for c in self.checks)

    @property
    def warnings(self) -> list[str]:
        """The messages of the failed checks."""
        return [f"{c.name}: {c.message}" for c in self.checks if c.ok is False]

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks are {[c.name for c in self.checks]}")

    def __str__(self):
        head = "verdict: clean" if self.clean else f"verdict: {len(self.warnings)} warning(s)"
        return "\n".join([head] + [str(c) for c in self.checks])


def chi2_per_datum(model, fields: Mapping, latents: Mapping | None = None, data=None) -> float:
    """Residual chi^2 per datum ``|C^{-1/2} (data - forward(fields))|^2 / N`` with the model's noise model.

    ``latents`` gives the noise model's own latent sites (e.g. ``sigma``); ``data`` defaults to ``model.data``.
    About 1 when the noise model and the forward model explain the data (``1 - p/N`` at a MAP with ``p``
    well-determined parameters); well above 1: noise underestimated or a model that cannot fit.
    """
    data = model.data if data is None else data
    with torch.no_grad():
        pred = model.predict(dict(fields)).to(data.dtype)
        params = model.noise.params_from_latents(dict(latents or {})) if latents else {}
        # whiten(pred) - whiten(data): the whitened residual of linear noise models (whiten(data - pred) up to the
        # sign) and of the misfit likelihoods, whose whiten(pred) is already the transformed residual (travel-time
        # delays, log amplitude ratios) against their observed data
        w = model.noise.whiten(pred, params) - model.noise.whiten(data.to(pred), params)
    return float(w.pow(2).mean())


def illumination(model, fields: Mapping, latents: Mapping | None = None, *, probes: int = 16,
                 seed: int = 0) -> dict:
    r"""The illumination map of each field: how strongly the data sense each pixel, ``diag(J^T J)``.

    ``J`` is the Jacobian of the whitened predictions ``w = noise.whiten(forward(fields))`` (data over the noise std;
    for the misfit likelihoods the transformed data: delays, log amplitude ratios) with respect to the field at each
    pixel, so ``diag(J^T J)`` is the data's Gauss-Newton information about each pixel on its own (the classic
    illumination map of seismic imaging, weighted by the noise): large near the sources and receivers, falling with
    depth, distance and shadowing. It is independent of the prior and of the inference method. Units: one over the
    field's unit squared (s^2/m^2 for a velocity); a :class:`probinv.fields.LogQField` is differentiated in ``ln Q``
    (its prior's variable). :func:`verdict` calls a pixel *illuminated* when its value is within
    ``VERDICT_THRESHOLDS["illuminated_db"]`` (10 dB) of the field's peak.

    Estimated with ``probes`` Gaussian probes ``e`` of the whitened data (Hutchinson): ``E[(J^T e)_x^2]``, one
    vector-Jacobian product each (about one gradient of the likelihood), relative error ``sqrt(2 / probes)`` per pixel
    (35 % = 1.3 dB for 16).

    Parameters
    ----------
    model : SeismicModel
    fields : dict
        The point (e.g. the MAP) ``{field: Tensor[nz, nx]}``, every field of the model.
    latents : dict, optional
        The noise model's latent sites (e.g. ``sigma``).
    probes : int
        Number of Hutchinson probes (>= 1).
    seed : int
        Seed of the probes.

    Returns
    -------
    dict
        ``{field: Tensor[nz, nx]}`` for every field with a prior (flat fields included).
    """
    if not isinstance(probes, int) or isinstance(probes, bool) or probes < 1:
        raise ValueError(f"probes must be an integer >= 1, got {probes!r}")
    missing = [n for n in model.field_names if n not in fields]
    if missing:
        raise ValueError(f"fields lacks {missing}: give every field of the model (it has {list(model.field_names)})")
    params = model.noise.params_from_latents(dict(latents)) if latents else {}
    names = list(model.field_names)
    logs = {n for n in names if hasattr(model.priors[n], "q_median")}  # differentiated in ln Q
    with torch.enable_grad():
        leaves = {}
        for n in names:
            f = torch.as_tensor(fields[n]).detach()
            leaves[n] = (f.log() if n in logs else f).clone().requires_grad_(True)
        point = {n: leaves[n].exp() if n in logs else leaves[n] for n in names}
        w = model.noise.whiten(model.predict(point), params)
        gen = torch.Generator(device=w.device).manual_seed(seed)
        acc = {n: torch.zeros_like(leaves[n]) for n in names}
        for k in range(probes):
            e = torch.randn(w.shape, generator=gen, dtype=w.dtype, device=w.device)
            grads = torch.autograd.grad(w, [leaves[n] for n in names], grad_outputs=e,
                                        retain_graph=k < probes - 1, allow_unused=True)
            for n, g in zip(names, grads):
                if g is not None:
                    acc[n] += g.detach() ** 2
    return {n: acc[n] / probes for n in names}


def _rhat_ess(posterior) -> tuple[float, float, float, str]:
    """Worst split r-hat, bulk ESS and tail ESS over every scalar of the raw draws (fields and latent sites)."""
    az = _import_arviz()
    ds = xr.Dataset({k: (("chain", "draw") + tuple(f"{k}_{i}" for i in range(v.ndim - 2)), _np(v).astype(float))
                     for k, v in posterior.samples.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = az.rhat(ds, method="rank")
        eb = az.ess(ds, method="bulk")
        et = az.ess(ds, method="tail")
    worst = max(r.data_vars, key=lambda k: float(np.nanmax(r[k].values)))
    rmax = max(float(np.nanmax(r[k].values)) for k in r.data_vars)
    bmin = min(float(np.nanmin(eb[k].values)) for k in eb.data_vars)
    tmin = min(float(np.nanmin(et[k].values)) for k in et.data_vars)
    return rmax, bmin, tmin, worst


def std_ratio_map(posterior, prior, name: str):
    """Posterior / prior standard deviation of field ``name`` per pixel ``[nz, nx]``, or None when ``prior`` has no
    scalar ``std`` (flat and box priors). A log-Q prior (whitened in ln Q) is compared in ln Q: the posterior std of
    ln Q over the prior's.
    """
    if not isinstance(getattr(prior, "std", None), (int, float)):
        return None
    if hasattr(prior, "q_median"):
        draws = posterior.draws(name)
        return draws.clamp_min(torch.finfo(draws.dtype).tiny).log().std(0) / float(prior.std)
    return posterior.std(name) / float(prior.std)


def posterior_point(posterior) -> tuple[dict, dict]:
    """Posterior-mean fields and latent sites ``({field: Tensor}, {site: Tensor})``: a point at which to evaluate
    residuals or the illumination (the MAP itself for a ``map`` result).
    """
    fields = {n: posterior.mean(n) for n in posterior.field_names}
    latents = {k: posterior.mean(k) for k in posterior.samples if k not in posterior.field_names}
    return fields, latents


def verdict(posterior, model=None, truth: Mapping | None = None, *, warn: bool = False, mask=None,
            illumination: Mapping | None = None, thresholds: Mapping | None = None) -> Verdict:
    """Whether to trust ``posterior``: convergence, fit, prior truncation, sampler health and, given a truth, coverage.

    Checks (each failed one is a warning that says what it means and what to change; see ``VERDICT_THRESHOLDS``):

    * ``map_convergence``: the MAP the result rests on (``map`` and ``laplace`` results) is a mode: the Newton
      decrement ``sqrt(g^T H^-1 g)`` of the Laplace Hessian (the distance to the mode in posterior std) <= 0.5, or,
      without a Hessian, the relative gradient norm ``|g| / |g_start|`` <= 1e-2 and the loss fell by <= 1 nat over
      the last 10 % of the record;
    * ``residual_chi2``: chi^2 per datum of the residuals at the MAP (``attrs["chi2_per_datum"]``) or, with
      ``model``, at the posterior mean, divided by its expectation ``1 - p_eff / N`` at a mode (``p_eff`` the
      Laplace Hessian's effective number of parameters, when known): within [0.5, 1.25], widened to 4 sampling
      standard deviations ``sqrt(2 (N - p_eff)) / N`` on small problems;
    * ``predictive`` (information, when the posterior carries replicated data drawn with noise): the fraction of the
      observed data inside the 90 % posterior predictive interval (:func:`predictive_check`);
    * ``prior_truncation``: every whitened prior keeps >= 95 % of its variance, and the discarded part is included;
    * ``sampler`` (NUTS/HMC results, or any result with ``diverging`` statistics): r-hat <= 1.05 (the worst over
      every scalar), bulk and tail ESS >= 100, no divergent transitions (from the raw draws, without the discarded
      variance);
    * with ``truth`` (``{field: Tensor[nz, nx]}``): ``coverage`` (truth inside the 90 % interval at >= 80 % of the
      pixels; the 50 % coverage is reported too), the z-score map in :attr:`Verdict.z_scores`, and, with ``model``,
      ``better_than_prior`` (the posterior mean is closer to the truth than the prior mean);
    * ``informativeness`` (information, with ``model``): median posterior / prior std over the pixels of ``mask``
      (bool ``[nz, nx]``, default all) and, given ``illumination``, over the pixels where the data illuminate the
      field (within ``illuminated_db`` = 10 dB of the peak of :func:`illumination`'s map).

    Parameters
    ----------
    posterior : probinv.inference.Posterior
    model : SeismicModel, optional
        Needed for residuals of methods that do not record them and for prior comparisons.
    truth : dict, optional
        True fields (synthetic runs).
    warn : bool
        Also issue each failed check as a ``UserWarning``.
    mask : Tensor[nz, nx] of bool, optional
        Pixels for the coverage and informativeness; default all.
    illumination : dict, optional
        ``{field: Tensor[nz, nx]}``, the illumination maps of :func:`illumination` (e.g. at the MAP point); the
        informativeness is then reported where the data illuminate the field too
        (:attr:`Verdict.std_ratio_illuminated`).
    thresholds : dict, optional
        Overrides of ``VERDICT_THRESHOLDS``.

    Returns
    -------
    Verdict
    """
    th = dict(VERDICT_THRESHOLDS)
    th.update(thresholds or {})
    unknown = set(th) - set(VERDICT_THRESHOLDS)
    if unknown:
        raise ValueError(f"thresholds has unknown keys {sorted(unknown)}; valid: {sorted(VERDICT_THRESHOLDS)}")
    out = Verdict()
    attrs = posterior.attrs
    add = out.checks.append

    # ---- the MAP is a mode
    nd = attrs.get("newton_decrement")
    rg = attrs.get("map_relative_gradient", attrs.get("relative_gradient"))
    lc = attrs.get("map_loss_change", attrs.get("loss_change"))
    if nd is not None:
        ok = float(nd) <= th["newton_decrement"]
        add(Check("map_convergence", ok, {"newton_decrement": float(nd), "relative_gradient": rg},
                  f"the mode is {float(nd):.3g} posterior std (Newton decrement) from the Laplace point"
                  + ("" if ok else ": the Laplace approximation is not taken at a mode, so its mean is biased and "
                     "its intervals are misplaced; run MAP longer (more steps, optimizer='lbfgs', a smaller tol)")))
    elif rg is not None or lc is not None:
        bad = []
        if rg is not None and float(rg) > th["relative_gradient"]:
            bad.append(f"the gradient is still {float(rg):.2g} of its starting value")
        if lc is not None and float(lc) > th["loss_change"]:
            bad.append(f"the loss fell {float(lc):.3g} nats over the last 10 % of the steps")
        msg = (f"relative gradient {rg if rg is None else format(float(rg), '.2g')}, loss change over the last 10 % "
               f"{lc if lc is None else format(float(lc), '.3g')} nats")
        if bad:
            msg = ("the MAP has not converged (" + "; ".join(bad) + "): the point estimate, and any Laplace / "
                   "preconditioned posterior built on it, is not at a mode; run more steps (or optimizer='lbfgs')")
        add(Check("map_convergence", not bad, {"relative_gradient": rg, "loss_change": lc}, msg))

    # ---- residuals against the noise model
    chi2 = attrs.get("chi2_per_datum")
    if chi2 is None and model is not None and posterior.observed_data is not None:
        fields, latents = posterior_point(posterior)
        chi2 = chi2_per_datum(model, fields, latents, posterior.observed_data)
    if chi2 is not None:
        chi2 = float(chi2)
        n_data = attrs.get("n_data") or (None if posterior.observed_data is None else posterior.observed_data.numel())
        p_eff = float(attrs.get("effective_parameters") or 0.0)
        # at a mode, E[chi^2 per datum] = 1 - p_eff / N (the data fit p_eff parameters) with a sampling sd of
        # sqrt(2 (N - p_eff)) / N: the thresholds widen to 4 such sd on small problems
        expected = 1.0 - p_eff / n_data if n_data and p_eff < n_data else 1.0
        spread = 4.0 * math.sqrt(2.0 * max(n_data - p_eff, 1.0)) / n_data / expected if n_data else 0.0
        hi_th, lo_th = max(th["chi2_high"], 1.0 + spread), min(th["chi2_low"], 1.0 - spread)
        chi2 = chi2 / expected
        if chi2 > hi_th:
            add(Check("residual_chi2", False, chi2,
                      f"chi^2 per datum {chi2:.3g} > {hi_th:.3g}: the residuals are {math.sqrt(chi2):.2f}x the "
                      "assumed noise, so either the noise sigma is underestimated (the posterior is over-confident: "
                      "raise sigma or make it latent, probinv.models.GaussianLatentSigma) or the model cannot fit the "
                      "data (MAP not converged, a prior too truncated or too smooth, a wrong forward operator)"))
        elif chi2 < lo_th:
            add(Check("residual_chi2", False, chi2,
                      f"chi^2 per datum {chi2:.3g} < {lo_th:.3g}: the residuals are {math.sqrt(chi2):.2f}x the "
                      "assumed noise: the noise sigma is overestimated (the posterior is too wide) or the model "
                      "over-fits; lower sigma or make it latent (GaussianLatentSigma)"))
        else:
            add(Check("residual_chi2", True, chi2, f"chi^2 per datum {chi2:.3g} (about 1: the noise model fits)"))

    # ---- posterior predictive check (information: chi^2 above judges the fit)
    rep = getattr(posterior, "posterior_predictive", None)
    if rep is not None and posterior.observed_data is not None and attrs.get("posterior_predictive_noise"):
        ppc = predictive_check(posterior.observed_data, rep, level=0.9)
        add(Check("predictive", None, ppc["coverage"],
                  f"observed data inside the 90 % interval of {ppc['n_draws']} replicated data sets (posterior "
                  f"draws + noise) at {100 * ppc['coverage']:.1f} % of the samples (about 90 % when the model "
                  "describes the data; far less: noise or posterior too narrow)"))

    # ---- prior truncation
    retained = dict(attrs.get("retained_variance") or {})
    if model is not None:
        for name in posterior.field_names:
            frac = getattr(model.priors.get(name), "retained_fraction", None)
            if frac is not None:
                retained.setdefault(name, float(frac))
    for name, frac in retained.items():
        included = name in posterior.discarded_variance or posterior.num_chains * posterior.num_draws < 2
        problems = []
        if frac < th["retained_variance"]:
            problems.append(f"the prior of {name!r} keeps only {100 * frac:.1f} % of its variance: structure on the "
                            "discarded (short) scales cannot be resolved by the data; raise retained_variance "
                            "(WhitenedField, default 0.99)")
        if frac < 1 - 1e-9 and not included:
            problems.append(f"the discarded {100 * (1 - frac):.2g} % of {name!r}'s prior variance is not in the "
                            "posterior's std and intervals: call posterior.add_discarded_variance(model)")
        add(Check("prior_truncation", not problems, frac,
                  "; ".join(problems) if problems else f"{name!r} keeps {100 * frac:.2f} % of its prior variance"
                  + (" (the rest is added to the posterior std)" if frac < 1 - 1e-9 else "")))

    # ---- sampler health (MCMC only: independent draws have no chain to diagnose)
    stats = posterior.sample_stats
    if posterior.method in ("nuts", "hmc", "mcmc") or "diverging" in stats:
        rmax, bmin, tmin, worst = _rhat_ess(posterior)
        ndiv = int(_np(stats["diverging"]).sum()) if "diverging" in stats else 0
        bad = []
        if not rmax <= th["rhat"]:
            bad.append(f"r-hat {rmax:.3g} > {th['rhat']} (worst site {worst!r}): the chains have not mixed")
        if not min(bmin, tmin) >= th["ess"]:
            bad.append(f"bulk / tail ESS {bmin:.0f} / {tmin:.0f} < {th['ess']}: too few effective draws for "
                       "reliable means and intervals")
        if ndiv:
            bad.append(f"{ndiv} divergent transitions: the sampler misses regions of high curvature")
        msg = (f"r-hat {rmax:.3g}, bulk ESS {bmin:.0f}, tail ESS {tmin:.0f}, {ndiv} divergences")
        if bad:
            msg = "; ".join(bad) + ": run longer warm-up and more draws, more chains, precondition with the " \
                                   "Laplace approximation, or a smaller step size (higher target acceptance)"
        add(Check("sampler", not bad, {"rhat": rmax, "ess_bulk": bmin, "ess_tail": tmin, "divergences": ndiv}, msg))

    # ---- against a known truth
    sel = None if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    several = posterior.num_chains * posterior.num_draws > 1
    for name, true in (truth or {}).items():
        if name not in posterior.field_names:
            raise ValueError(f"truth names {name!r}, not a field of the posterior; fields are "
                             f"{list(posterior.field_names)}")
        true = torch.as_tensor(true).to(posterior.samples[name])
        mean = posterior.mean(name)
        if several:
            std = posterior.std(name)
            z = (mean - true) / std.clamp_min(torch.finfo(std.dtype).tiny)
            out.z_scores[name] = z
            draws = posterior.field_draws(name)
            if sel is not None:
                draws, t = draws[:, sel], true[sel]
            else:
                t = true
            cov = coverage(draws, t, probs=(0.5, 0.9))
            out.coverage[name] = cov
            ok = cov[0.9] >= th["coverage_90"]
            msg = (f"truth inside the 50 % / 90 % intervals at {100 * cov[0.5]:.0f} % / {100 * cov[0.9]:.0f} % of "
                   f"the pixels; median |z| {float(z.abs().median()):.2f}")
            if not ok:
                msg += (": the posterior is over-confident (intervals too narrow or misplaced): check the other "
                        "items (noise, MAP convergence, prior truncation); widen the prior (std, retained_variance) "
                        "or estimate the noise (GaussianLatentSigma)")
            add(Check("coverage", ok, cov, msg))
        if model is not None and hasattr(model.priors.get(name), "mean_field"):
            prior = model.priors[name]
            # a log-field prior (LogQField: whitened in ln Q) has its mean in ln Q: compare its median in Q with the
            # posterior median (the mean of a log-normal-like posterior is pulled up by its long upper tail)
            log_field = hasattr(prior, "q_median")
            prior_mean = (prior.q_median if log_field else prior.mean_field).to(true)
            point = posterior.draws(name).median(0).values if log_field and several else mean
            e_post = float((point - true).norm() / true.norm())
            e_prior = float((prior_mean - true).norm() / true.norm())
            ok = e_post < e_prior
            add(Check("better_than_prior", ok, {"posterior_mean": e_post, "prior_mean": e_prior},
                      f"relative L2 error of the posterior {'median' if log_field and several else 'mean'} "
                      f"{e_post:.4f} vs the prior {'median' if log_field else 'mean'} {e_prior:.4f}"
                      + ("" if ok else ": the data did not improve on the prior mean (MAP not converged, data "
                         "uninformative at this noise level, or a prior that cannot represent the truth)")))
    if model is not None and several:
        for name in posterior.field_names:
            ratio = std_ratio_map(posterior, model.priors.get(name), name)
            if ratio is None:
                continue
            r = ratio[sel] if sel is not None else ratio
            out.std_ratio[name] = float(r.median())
            msg = f"median posterior / prior std of {name!r} {out.std_ratio[name]:.2f}"
            lit = (illumination or {}).get(name)
            if lit is not None:
                lit = torch.as_tensor(lit).to(ratio.device)
                lit = lit >= lit.max() * 10.0 ** (th["illuminated_db"] / 10.0)
                if sel is not None:
                    lit = lit & sel.to(lit.device)
                frac = float(lit.to(torch.float64).mean())
                if bool(lit.any()):
                    out.std_ratio_illuminated[name] = float(ratio[lit].median())
                    msg = (f"median posterior / prior std of {name!r} {out.std_ratio_illuminated[name]:.2f} where "
                           f"the data illuminate it ({100 * frac:.0f} % of the pixels, within "
                           f"{-th['illuminated_db']:g} dB of the peak illumination), {out.std_ratio[name]:.2f} over "
                           f"{'the mask' if sel is not None else 'all pixels'}")
                else:
                    msg += "; the data do not sense this field (its illumination is zero)"
            add(Check("informativeness", None, out.std_ratio[name], msg))
    if warn:
        for msg in out.warnings:
            warnings.warn(msg, UserWarning, stacklevel=2)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# hyperparameters by marginal likelihood
# ----------------------------------------------------------------------------------------------------------------------
def laplace_log_evidence(posterior, model) -> float:
    r"""Laplace approximation of the log marginal likelihood ``log p(data | hyperparameters)`` from a Laplace result.

    In the whitened coordinates ``z ~ N(0, I)`` of the posterior's ``gaussian`` (mode ``z*``, Gauss-Newton Hessian
    ``H = I + V diag(lambda) V^T``):

    .. math:: \log p(d) \approx \log p(d \mid z^*) - \tfrac12 |z^*|^2 - \tfrac12 \sum_i \log(1 + \lambda_i)
              + \log p_{reg}(z^*),

    exact for a linear forward operator with Gaussian noise (when the rank covers the misfit Hessian). Use it to
    choose hyperparameters, e.g. the prior std and the correlation length: build one model per candidate, run
    :func:`probinv.inference.laplace` on each (the same data), and keep the largest evidence (empirical Bayes, "type-II
    maximum likelihood"); ``tests/test_verdict.py`` recovers the prior std and the correlation length of a known truth
    this way. Other latent sites (a latent noise sigma, box fields) are held at their values in the posterior, and
    their prior density is not included (the evidence is conditional on them); regulariser terms are included as
    they are (compare models with the same regularisers only).

    Parameters
    ----------
    posterior : Posterior
        A :func:`probinv.inference.laplace` result (``gaussian`` and ``attrs["whitened_sites"]``).
    model : SeismicModel
        The model it was computed for (data: ``posterior.observed_data`` or ``model.data``).

    Returns
    -------
    float
        The log evidence (nats).
    """
    g = getattr(posterior, "gaussian", None)
    sites = posterior.attrs.get("whitened_sites")
    if g is None or not sites:
        raise ValueError("laplace_log_evidence needs a probinv.inference.laplace result (a Posterior with a gaussian "
                         f"and attrs['whitened_sites']); got method {posterior.method!r}")
    data = posterior.observed_data if posterior.observed_data is not None else model.data
    latents = {k: v[0, 0] for k, v in posterior.samples.items() if k not in posterior.field_names}
    i = 0
    for s in sites:
        k = int(posterior.samples[s][0, 0].numel())
        latents[s] = g.loc[i:i + k].reshape(posterior.samples[s].shape[2:])
        i += k
    for name in model.field_names:
        if model.kinds[name] != "whitened":
            latents[model.latent_site(name)] = posterior.samples[name][0, 0]
    with torch.no_grad():
        fields = model.fields_from_latents(latents)
        params = model.noise.params_from_latents(latents)
        loglik = float(model.log_likelihood(fields, data, params).sum())
        reg = float(sum(r(fields) for r in model.regularisers)) if model.regularisers else 0.0
    return loglik - 0.5 * float(g.loc.pow(2).sum()) - 0.5 * float(torch.log1p(g.eigvals).sum()) + reg


def predictive_check(observed, predictive, *, level: float = 0.9) -> dict:
    r"""Posterior predictive check of the data: where the observed data fall among replicated data.

    ``predictive`` are replicated data sets ``d_rep ~ p(d_rep | d)`` (posterior draws pushed through the forward
    operator and the noise model: :meth:`probinv.inference.Posterior.add_posterior_predictive` with ``noise=True``).
    For each datum the probability integral transform ``PIT = (r + 1/2) / (n + 1)``, ``r`` the number of the ``n``
    replicates below the observed value, is uniform on (0, 1) when the model (forward operator, noise, posterior)
    describes the data; a U-shaped PIT histogram says the predictive spread is too narrow (noise underestimated or an
    over-confident posterior), a hump says it is too wide.

    Parameters
    ----------
    observed : Tensor[*data_shape]
        The observed data (e.g. ``[n_shots, n_receivers, nt]``).
    predictive : Tensor[chain, draw, *data_shape] or Tensor[n, *data_shape]
        Replicated data sets.
    level : float
        Central interval of the check.

    Returns
    -------
    dict
        ``coverage``: the fraction of the data whose PIT lies inside the central ``level`` interval (expected
        ``level`` up to the ``1 / (n + 1)`` granularity); ``pit``: Tensor[*data_shape]; ``n_draws``; ``level``.
    """
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    obs = torch.as_tensor(observed)
    rep = torch.as_tensor(predictive).to(obs)
    if obs.is_complex():  # spectra: real and imaginary parts are separate data
        obs, rep = torch.view_as_real(obs), torch.view_as_real(rep)
    if tuple(rep.shape[-obs.ndim:]) != tuple(obs.shape):
        raise ValueError(f"predictive must be [..., {', '.join(map(str, obs.shape))}] (replicates of the observed "
                         f"data), got shape {tuple(rep.shape)}")
    rep = rep.reshape((-1,) + tuple(obs.shape))
    n = rep.shape[0]
    if n < 2:
        raise ValueError(f"predictive needs at least 2 replicated data sets, got {n}")
    below = (rep < obs).sum(0).to(torch.float64)
    pit = (below + 0.5) / (n + 1)
    lo, hi = (1.0 - level) / 2.0, (1.0 + level) / 2.0
    cov = float(((pit > lo) & (pit < hi)).to(torch.float64).mean())
    return {"coverage": cov, "pit": pit, "n_draws": int(n), "level": float(level)}


# ----------------------------------------------------------------------------------------------------------------------
# diagnostic figures that suit the method
# ----------------------------------------------------------------------------------------------------------------------
#: Methods whose draws form Markov chains (trace and rank plots make sense for them only).
MCMC_METHODS = ("nuts", "hmc", "mcmc")


def plot_draws(posterior, name: str = "vp", pixels: Sequence[tuple[int, int]] | None = None, *,
               truth=None, prior_std: float | None = None, bins: int = 30):
    """Diagnostic figure of the draws of field ``name`` at a few pixels, chosen to suit the method.

    * MCMC (``nuts``/``hmc``): per pixel, the trace of each chain and its rank histogram (ArviZ's rank plot idea:
      uniform ranks across chains when they mix), from the raw draws.
    * Independent draws (``laplace``, ``svi``, ``svgd``): no fake "chain"; per pixel, the histogram of the marginal
      (:meth:`Posterior.field_draws`, discarded prior variance included) with the posterior mean and the 90 %
      interval, the prior marginal ``N(prior mean, prior_std^2)`` when ``prior_std`` is given (centred on the
      posterior's own prior mean is not known here, so the curve is centred on the posterior mean: it shows the
      width the data removed), and the truth when given.

    Parameters
    ----------
    posterior : Posterior
    name : str
        A field of the posterior.
    pixels : sequence of (iz, ix), optional
        Grid indices (default: the centre and the quarter points, 3 pixels).
    truth : Tensor[nz, nx], optional
        The true field (synthetic runs).
    prior_std : float, optional
        Prior standard deviation (field units) for the independent-draw panels.
    bins : int
        Histogram bins.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if name not in posterior.field_names:
        raise ValueError(f"name must be a field of the posterior ({list(posterior.field_names)}), got {name!r}")
    nz, nx = posterior.samples[name].shape[-2:]
    pixels = list(pixels or [(nz // 2, nx // 2), (nz // 4, nx // 4), (3 * nz // 4, 3 * nx // 4)])
    mcmc = posterior.method in MCMC_METHODS
    ncol = 2 if mcmc else 1
    fig, axes = plt.subplots(len(pixels), ncol, figsize=(4.5 * ncol + 1, 2.4 * len(pixels)), squeeze=False)
    raw = _np(posterior.samples[name])
    pooled = _np(posterior.field_draws(name))
    unit = FIELD_UNITS.get(name, ("",))[0]
    for row, (iz, ix) in enumerate(pixels):
        label = f"{name}[{iz},{ix}]" + (f" ({unit})" if unit and unit != "1" else "")
        if mcmc:
            x = raw[:, :, iz, ix]
            ranks = np.argsort(np.argsort(x.reshape(-1))).reshape(x.shape)
            for c in range(x.shape[0]):
                axes[row, 0].plot(x[c], lw=0.8, label=f"chain {c}")
                axes[row, 1].hist(ranks[c], bins=min(bins, max(x.shape[1] // 4, 2)), histtype="step",
                                  label=f"chain {c}")
            axes[row, 0].set_ylabel(label)
            axes[row, 0].set_xlabel("draw")
            axes[row, 1].set_xlabel("rank (all chains)")
        else:
            ax = axes[row, 0]
            x = pooled[:, iz, ix]
            ax.hist(x, bins=bins, density=True, alpha=0.6, label=f"{posterior.method} draws")
            lo, hi = np.quantile(x, [0.05, 0.95])
            ax.axvspan(lo, hi, color="C0", alpha=0.1, label="90 % interval")
            ax.axvline(float(x.mean()), color="C0", label="mean")
            if prior_std is not None:
                grid = np.linspace(float(x.mean()) - 3 * prior_std, float(x.mean()) + 3 * prior_std, 200)
                ax.plot(grid, np.exp(-0.5 * ((grid - x.mean()) / prior_std) ** 2) / (prior_std * np.sqrt(2 * np.pi)),
                        color="0.5", ls="--", label="prior width")
            if truth is not None:
                ax.axvline(float(_np(truth)[iz, ix]), color="k", ls=":", label="true")
            ax.set_xlabel(label)
            ax.set_ylabel("density" + (f" (1/({unit}))" if unit and unit != "1" else ""))
        if row == 0:
            for ax in axes[0]:
                ax.legend(fontsize=7)
    fig.suptitle(f"{posterior.method}: " + ("traces and rank histograms (Markov chains)" if mcmc else
                                             "marginals of independent draws"))
    fig.tight_layout()
    return fig
