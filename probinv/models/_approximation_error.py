"""Bayesian approximation-error model: the statistics of an approximate forward operator's error over the prior."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping

import torch

from ..linearisation import Linearisation
from ..validation import check_int, check_positive
from ._model import _accepts_shots
from ._noise import CorrelatedGaussian

__all__ = ["CorrectedForward", "approximation_error"]

log = logging.getLogger("probinv.models")


def approximation_error(accurate: Callable, approximate: Callable, fields: Iterable[Mapping[str, torch.Tensor]], *,
                        sigma: float | torch.Tensor, rank: int | None = None, holdout: float = 0.2, seed: int = 0,
                        features: Callable | None = None, calibrate: Callable | None = None):
    r"""Correct an approximate forward operator and model its remaining error (Kaipio & Somersalo 2007).

    The error ``e(m) = accurate(m) - approximate(m)`` is evaluated on ``N`` models ``m`` (draws from the prior).
    Without ``features`` (the "enhanced error model") its sample mean becomes an offset added to ``approximate``; with
    ``features`` (a map ``fields -> Tensor[k]``, e.g. the whitened coordinates ``prior.inverse(fields["vp"])``, the
    "full" model) the error is regressed on them by least squares, ``e ~ c + B f(m)``, and the corrected operator is
    ``approximate(m) + c + B f(m)``: the part of the error that moves with the model is removed instead of being
    treated as noise independent of the model, which otherwise biases the posterior. The remaining error's sample
    covariance, truncated to the ``rank`` leading principal components per shot, becomes the low-rank factor of a
    :class:`CorrelatedGaussian`; the variance the kept components miss is added to its diagonal with the measurement
    noise, so every datum keeps its full marginal error variance. The truncation matters: with ``N`` models the sample
    covariance has rank ``N - 1``, and keeping all of it would declare the error to be zero outside the span of ``N``
    samples (in a data space of 10^4-10^5 values), which makes the posterior overconfident again. With ``rank=None``
    the rank is chosen by cross-validation: fits on the first ``1 - holdout`` of the models, for ranks 1, 2, 4, ...,
    are scored by the Gaussian log-density of the held-out models' errors (plus a draw of the measurement noise), and
    the best rank is refitted on all models. Build the model with the returned operator and noise model: the
    likelihood then accounts for the surrogate's error *and* its correlation in time and space, which an independent
    per-sample error does not.

    A Gaussian that fits the error's variance datum by datum can still be overconfident where it matters: the part of
    the error the model cannot explain may look like a change of the model (a surrogate's travel-time error is shaped
    like the sensitivity to velocity), and then it shifts the posterior by more than the posterior width. With
    ``calibrate`` (the inverse of ``features``, ``f -> fields``) this is measured and corrected on the held-out
    models: with the regression and the covariance fitted on the other models, each held-out model's residual ``r``
    (error plus a draw of the measurement noise) is whitened, ``M r`` with ``M^T M = C^{-1}``, and projected onto the
    ``k`` whitened sensitivities ``M J``, ``J = d forward / d f`` at that model. The projection's squared norm is
    ``chi2_k`` under the noise model; for a linearised inversion it is exactly the squared Mahalanobis length of the
    error's shift of the posterior mean. The whole covariance (factor and diagonal) is multiplied by
    ``alpha = max(1, mean(|P M r|^2) / k)``, so that on held-out models the shift is as large as the posterior width
    says, never narrower than fitted. Cost: ``k`` Jacobian-vector products of ``approximate`` (double backward) per
    held-out model.

    Parameters
    ----------
    accurate, approximate : callable
        Forward operators ``fields -> data [n_shots, *trace]`` (e.g. the finite-difference solver and an
        :class:`probinv.surrogate.FNOOperator`) with the same acquisition.
    fields : iterable of dict
        ``N >= 2`` models ``{name: Tensor[nz, nx]}``, drawn from the prior the inversion uses. The estimate of a rank
        ``r`` covariance needs ``N`` well above ``r``; ``N`` of 100-300 is typical.
    sigma : float or Tensor
        Measurement-noise standard deviation (data units), broadcastable to the data.
    rank : int, optional
        Kept principal components per shot (at most ``N - 1``); default: chosen by cross-validation (``N >= 4``;
        ``N - 1`` below that).
    holdout : float
        Fraction of the models held out for the rank selection (0 < holdout < 1).
    seed : int
        Seed of the measurement-noise draw added to the held-out errors.
    features : callable, optional
        ``fields -> Tensor[k]`` (differentiable; batched fields give ``[..., k]``) to regress the error on; ``N``
        must exceed ``k + 1``.
    calibrate : callable, optional
        ``Tensor[k] -> fields``, the inverse of ``features`` (e.g. ``lambda z: {"vp": prior(z)}``, differentiable):
        scale the covariance by the held-out sensitivity chi2 described above (needs ``features`` and ``N >= k + 4``
        so that the held-out models leave ``k + 2`` for the fit).

    Returns
    -------
    forward : CorrectedForward
        ``approximate`` plus the error's mean (and regression on ``features``); use it as the model's forward operator.
    noise : CorrelatedGaussian
        The remaining error plus the measurement noise: ``cov_factor [n_shots, D, rank]``, ``cov_diag
        [n_shots, *trace]``, and ``info`` (``samples``, ``rank``, ``kept_variance``: the fraction of the sample error
        variance in the factor, ``holdout_scores``: held-out log-density by rank, ``explained_by_features``: fraction
        of the error's variance the regression removes, ``seconds``: time of the forward runs; with ``calibrate``
        also ``inflation``: alpha, ``sensitivity_chi2``: ``|P M r|^2 / k`` per held-out model,
        ``calibration_seconds``).
    """
    check_positive("sigma", sigma)
    if rank is not None:
        rank = check_int("rank", rank)
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout!r}")
    if features is not None and not callable(features):
        raise TypeError(f"features must be callable(fields) -> Tensor[k], got {type(features).__name__}")
    if calibrate is not None and not callable(calibrate):
        raise TypeError(f"calibrate must be callable(Tensor[k]) -> fields, got {type(calibrate).__name__}")
    if calibrate is not None and features is None:
        raise ValueError("calibrate needs features (it is their inverse: the sensitivities are d forward / d features)")
    errors, feats = [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for i, f in enumerate(fields):
            if not isinstance(f, Mapping):
                raise TypeError(f"fields must yield dicts of field tensors, item {i} is {type(f).__name__}")
            a, b = accurate(f), approximate(f)
            if a.shape != b.shape:
                raise ValueError(f"accurate and approximate disagree on the data shape: {tuple(a.shape)} vs "
                                 f"{tuple(b.shape)}")
            errors.append((a - b.to(a.dtype)).detach())
            if features is not None:
                feats.append(torch.as_tensor(features(f)).detach().reshape(-1).to(a.dtype))
            if (i + 1) % 10 == 0:
                log.info("approximation error: %d models, %.1f s", i + 1, time.perf_counter() - t0)
    n = len(errors)
    if n < 2:
        raise ValueError(f"fields must hold at least 2 models to estimate a covariance, got {n}")
    e = torch.stack(errors)  # [N, S, *trace]
    sig = torch.as_tensor(sigma, dtype=e.dtype, device=e.device)
    info = {"samples": n, "seconds": time.perf_counter() - t0}
    flat = e.reshape(n, -1)
    if features is None:
        design = torch.ones(n, 1, dtype=e.dtype, device=e.device)
    else:
        design = torch.cat([torch.ones(n, 1, dtype=e.dtype, device=e.device), torch.stack(feats).to(e.device)], 1)
        if n <= design.shape[1]:
            raise ValueError(f"fields must hold more models ({n}) than features + 1 ({design.shape[1]}) to regress on")
    coef = torch.linalg.lstsq(design, flat).solution  # [1 + k, S * D]
    resid = (flat - design @ coef).reshape(e.shape)
    centred = flat - flat.mean(0)
    info["explained_by_features"] = 1 - float((resid**2).sum() / (centred**2).sum().clamp_min(1e-300))
    e = resid
    if rank is None and n >= 4:
        rank, info["holdout_scores"] = _select_rank(e, sig, holdout, seed)
    elif rank is None:
        rank = n - 1
    noise, kept = _fit(e, sig, rank)
    info.update(rank=int(noise.cov_factor.shape[-1]), kept_variance=kept)
    if calibrate is not None:
        t1 = time.perf_counter()
        alpha, chi2 = _sensitivity_inflation(approximate, calibrate, design, flat, e.shape, sig, rank, holdout, seed)
        info.update(inflation=alpha, sensitivity_chi2=chi2, calibration_seconds=time.perf_counter() - t1)
        log.info("approximation error: held-out sensitivity chi2/k median %.2f, mean %.2f -> covariance x %.2f",
                 float(torch.tensor(chi2).median()), sum(chi2) / len(chi2), alpha)
        noise = CorrelatedGaussian(cov_factor=noise.cov_factor * math.sqrt(alpha), cov_diag=noise.cov_diag * alpha)
    log.info("approximation error from %d models: the regression removes %.1f %% of the error variance; rank %d keeps "
             "%.1f %% of the rest", n, 100 * info["explained_by_features"], info["rank"], 100 * kept)
    shape = tuple(e.shape[1:])
    forward = CorrectedForward(approximate, coef[0].reshape(shape), coef[1:].reshape((-1,) + shape), features)
    return forward, CorrelatedGaussian(cov_factor=noise.cov_factor, cov_diag=noise.cov_diag, info=info)


class CorrectedForward:
    """``approximate(fields) + offset + sum_j features(fields)_j coef[j]``: an approximate forward operator corrected by
    the mean of its error and the part of it linear in ``features`` (see :func:`approximation_error`).

    ``offset [n_shots, *trace]`` and ``coef [k, n_shots, *trace]`` in data units; ``forward(fields, shots=idx)`` is
    supported when ``approximate`` accepts ``shots``.
    """

    def __init__(self, approximate: Callable, offset: torch.Tensor, coef: torch.Tensor, features: Callable | None):
        self.approximate, self.offset, self.coef, self.features = approximate, offset, coef, features
        self.dt = getattr(approximate, "dt", None)

    @property
    def n_shots(self) -> int:
        """Number of shots (the first axis of the data)."""
        return int(self.offset.shape[0])

    def describe(self) -> dict:
        """The description of the approximate operator inside (its ``describe()``, or its type name), with the
        correction's shape: JSON-able, recorded in a Posterior's ``attrs["forward"]``.
        """
        inner = getattr(self.approximate, "describe", None)
        return {"type": "CorrectedForward",
                "approximate": inner() if callable(inner) else {"type": type(self.approximate).__name__},
                "offset_shape": list(self.offset.shape), "n_features": int(self.coef.shape[0]),
                "features": None if self.features is None else getattr(self.features, "__name__",
                                                                       type(self.features).__name__)}

    def __call__(self, fields: Mapping[str, torch.Tensor], shots: torch.Tensor | None = None) -> torch.Tensor:
        if shots is not None and not _accepts_shots(self.approximate):
            raise ValueError("this forward operator's approximate operator does not take shots=; build the model "
                             "without subsample_size")
        pred = self.approximate(fields) if shots is None else self.approximate(fields, shots=shots)
        offset, coef = self.offset.to(pred), self.coef.to(pred)
        if shots is not None:
            offset, coef = offset.index_select(0, shots.to(offset.device)), coef.index_select(1, shots.to(coef.device))
        out = pred + offset
        if self.features is not None and coef.shape[0]:
            f = torch.as_tensor(self.features(fields)).to(pred)  # [..., k]
            out = out + (f @ coef.reshape(coef.shape[0], -1)).reshape(f.shape[:-1] + tuple(coef.shape[1:]))
        return out


def _svd(e: torch.Tensor):
    """Mean, scaled centred errors ``X [S, D, N]`` (``X X^T`` = sample covariance) and their thin SVD."""
    n, s = e.shape[0], e.shape[1]
    mean = e.mean(0)
    x = (e - mean).reshape(n, s, -1).permute(1, 2, 0) / math.sqrt(n - 1)
    u, sv, _ = torch.linalg.svd(x, full_matrices=False)
    return mean, x, u, sv


def _fit(e: torch.Tensor, sig: torch.Tensor, rank: int, svd=None):
    """Mean, rank-``rank`` principal factor and diagonal (noise + missed variance) of errors ``e [N, S, *trace]``."""
    n = e.shape[0]
    mean, x, u, sv = _svd(e) if svd is None else svd
    r = min(rank, n - 1, sv.shape[-1])
    w = u[..., :r] * sv[:, None, :r]  # [S, D, r]
    missed = ((x**2).sum(-1) - (w**2).sum(-1)).clamp_min(0)  # variance outside the kept components, [S, D]
    diag = sig**2 + missed.reshape(mean.shape)
    kept = float((sv[:, :r] ** 2).sum() / (sv**2).sum().clamp_min(1e-300))
    return CorrelatedGaussian(cov_factor=w, cov_diag=diag, loc=mean), kept


def _select_rank(e: torch.Tensor, sig: torch.Tensor, holdout: float, seed: int):
    """The rank whose fit on the first models best predicts the held-out ones (mean Gaussian log-density of the
    held-out errors plus a fixed draw of the measurement noise: the residuals the likelihood will see).
    """
    n = e.shape[0]
    n_test = _split(n, holdout)
    train, test = e[: n - n_test], e[n - n_test:]
    gen = torch.Generator(device=e.device).manual_seed(seed)
    test = test + sig * torch.randn(test.shape, generator=gen, dtype=e.dtype, device=e.device)
    ranks, r = [], 1
    while r < train.shape[0] - 1:
        ranks.append(r)
        r *= 2
    ranks.append(train.shape[0] - 1)
    scores = {}
    svd = _svd(train)
    for r in ranks:
        noise, _ = _fit(train, sig, r, svd)
        zero = torch.zeros_like(test[0])
        lp = noise.distribution(zero, {}, None, zero.ndim).log_prob(test)  # [n_test, S]
        scores[r] = float(lp.sum(-1).mean())
    best = max(scores, key=scores.get)
    log.info("approximation error: held-out log-density by rank %s -> rank %d",
             {k: round(v, 1) for k, v in scores.items()}, best)
    return best, scores


def _split(n: int, holdout: float) -> int:
    """Number of held-out models (the last ones), leaving at least 3 for the fit."""
    return min(max(1, round(holdout * n)), n - 3)


def _jacobian(f: Callable, x: torch.Tensor) -> torch.Tensor:
    """``d f / d x`` at ``x [k]`` as ``[numel(f(x)), k]``: ``k`` Jacobian-vector products through the double backward
    of :class:`probinv.linearisation.Linearisation` (one forward and one differentiable backward shared).
    """
    lin = Linearisation(lambda xx: f(xx).reshape(-1), x, mode="reverse")
    return torch.stack([lin.jvp(v) for v in torch.eye(x.numel(), dtype=x.dtype, device=x.device)], -1)


def _sensitivity_inflation(approximate, calibrate, design, flat, shape, sig, rank, holdout, seed):
    """Held-out chi2 of the residuals projected on the whitened sensitivities (see :func:`approximation_error`):
    the covariance scale ``alpha >= 1`` and the per-model ``chi2 / k``.
    """
    n, k = design.shape[0], design.shape[1] - 1
    n_test = _split(n, holdout)
    n_fit = n - n_test
    if n_fit <= k + 1:
        raise ValueError(f"calibrate needs more models: {n} leave {n_fit} for the fit after holding out {n_test}, "
                         f"at least features + 2 = {k + 2} are needed")
    coef = torch.linalg.lstsq(design[:n_fit], flat[:n_fit]).solution
    resid = flat - design @ coef
    noise, _ = _fit(resid[:n_fit].reshape((n_fit,) + tuple(shape[1:])), sig, rank)
    like = torch.zeros(shape[1:], dtype=flat.dtype, device=flat.device)
    whiten = noise.whitener(like)
    gen = torch.Generator(device=flat.device).manual_seed(seed + 1)
    chi2 = []
    for i in range(n_fit, n):
        z = design[i, 1:]

        def corrected(zz):
            out = torch.as_tensor(approximate(calibrate(zz))).to(flat.dtype)
            return out.reshape(-1) + zz @ coef[1:]

        jac = _jacobian(corrected, z)  # [D_total, k]
        r = resid[i] + (sig * torch.randn(shape[1:], generator=gen, dtype=flat.dtype, device=flat.device)).reshape(-1)
        mj = whiten(jac.T.reshape((k,) + tuple(shape[1:]))).reshape(k, -1).T
        q, _ = torch.linalg.qr(mj)
        proj = q.T @ whiten(r.reshape(shape[1:])).reshape(-1)
        chi2.append(float(proj.square().sum()) / k)
        log.info("approximation error: sensitivity chi2/k of held-out model %d/%d: %.2f", i - n_fit + 1, n_test,
                 chi2[-1])
    return max(1.0, sum(chi2) / len(chi2)), chi2
