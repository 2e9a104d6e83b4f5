r"""Laplace (Gaussian) approximation at the MAP point with a low-rank Gauss-Newton Hessian in whitened coordinates."""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping

import torch
from tqdm import tqdm

from .. import distributed
from ..linearisation import Linearisation
from ..validation import check_int
from ._common import check_model, describe_forward, log, resolve_data
from ._map import map as _map_fn
from ._posterior import LowRankGaussian, Posterior

__all__ = ["laplace", "gauss_newton_eig"]


def gauss_newton_eig(matvec, n: int, rank: int, *, oversample: int = 10, dtype=torch.float64, device=None,
                     generator: torch.Generator | None = None, columns=None):
    r"""Leading eigenpairs of a symmetric positive semi-definite ``n x n`` operator given by ``matvec``.

    Randomised range finder (Halko, Martinsson & Tropp 2011, algorithm 5.3): ``Y = H Omega`` with a Gaussian
    ``Omega [n, rank + oversample]``, ``Q = qr(Y)``, eigendecomposition of ``Q^T H Q``; ``2 (rank + oversample)``
    products. When ``rank + oversample >= n`` the operator is assembled exactly from ``n`` products instead.

    ``columns``, optional, is a faster way to the exact operator: a function returning ``H [n, n]`` itself (used
    instead of the ``n`` products of ``matvec`` when ``rank + oversample >= n``).

    Returns ``(eigvals [r], eigvecs [n, r])``, eigenvalues in decreasing order, clipped at 0.
    """
    k = rank + oversample
    if k >= n:
        if columns is not None:
            h = columns()
        else:
            eye = torch.eye(n, dtype=dtype, device=device)
            h = torch.stack([matvec(eye[:, i]) for i in range(n)], dim=1)
        h = 0.5 * (h + h.T)
        lam, vec = torch.linalg.eigh(h)
    else:
        omega = torch.randn((n, k), dtype=dtype, device=device, generator=generator)
        y = torch.stack([matvec(omega[:, i]) for i in range(k)], dim=1)
        q, _ = torch.linalg.qr(y)
        hq = torch.stack([matvec(q[:, i]) for i in range(k)], dim=1)
        t = q.T @ hq
        lam, s = torch.linalg.eigh(0.5 * (t + t.T))
        vec = q @ s
    order = torch.argsort(lam, descending=True)[: min(rank, n)]
    return torch.clamp(lam[order], min=0), vec[:, order]


def _mode_check(model, data, latents_of, gauss, noise_params, map_posterior, newton_steps: int):
    """Is the Laplace point a mode? The Newton decrement ``sqrt(g^T H^-1 g)`` of the negative log posterior in the
    whitened coordinates (``H`` the Laplace Hessian: the distance from the point to the mode of the local quadratic,
    in posterior standard deviations). While it exceeds ``MODE_TOLERANCE``, up to ``newton_steps`` Gauss-Newton
    steps ``z <- z - t H^-1 g`` (``t`` halved until the log posterior improves, at most 5 times; ``H`` kept from the
    MAP point) move the point towards the mode. Returns the (moved) Gaussian and the record: decrement, steps taken,
    residual chi^2 per datum, and the MAP's own record; warns (``RuntimeWarning``) when the decrement still exceeds
    the tolerance.
    """
    def objective_and_grad(z):
        with torch.enable_grad():
            zz = z.detach().clone().requires_grad_(True)
            u = -model.log_joint(latents_of(zz), data)
            (g,) = torch.autograd.grad(u, zz)
        return float(u.detach()), g

    def newton(g):
        return g - gauss.eigvecs @ ((gauss.eigvals / (1 + gauss.eigvals)) * (gauss.eigvecs.T @ g))

    z0 = gauss.loc
    u0, g = objective_and_grad(z0)
    hinv_g = newton(g)
    decrement = float(torch.clamp(g @ hinv_g, min=0).sqrt())
    taken, history = 0, [decrement]
    while decrement > MODE_TOLERANCE and taken < newton_steps:
        t = 1.0
        for _ in range(6):
            z1 = z0 - t * hinv_g
            try:
                u1, g1 = objective_and_grad(z1)
            except ValueError:  # the trial point left the operator's domain (e.g. a negative velocity): shorten
                u1 = math.inf
            if u1 < u0:
                break
            t *= 0.5
        else:
            break  # no improvement along the Newton direction: stop (and warn below)
        z0, u0, g, taken = z1, u1, g1, taken + 1
        hinv_g = newton(g)
        decrement = float(torch.clamp(g @ hinv_g, min=0).sqrt())
        history.append(decrement)
    gauss = gauss._replace(loc=z0.detach())
    with torch.no_grad():
        # whiten(pred) - whiten(data): the whitened residual of linear noise models and of the misfit likelihoods,
        # whose whiten(pred) is already the transformed residual against their observed data (as diagnostics does)
        pred = model.predict(model.fields_from_latents(latents_of(z0)))
        resid = model.noise.whiten(pred, noise_params) - model.noise.whiten(data.to(pred), noise_params)
    # effective number of parameters the data determine, sum lambda / (1 + lambda): E[chi^2 at the mode] = 1 - p / N
    out = {"newton_decrement": decrement, "newton_steps": taken, "newton_history": history,
           "chi2_per_datum": float(resid.pow(2).mean()),
           "n_data": int(resid.numel()),
           "effective_parameters": float((gauss.eigvals / (1 + gauss.eigvals)).sum())}
    for key in ("relative_gradient", "loss_change"):
        if map_posterior.attrs.get(key) is not None:
            out[f"map_{key}"] = float(map_posterior.attrs[key])
    if decrement > MODE_TOLERANCE:
        warnings.warn(f"laplace: the MAP point is not a mode: the Newton step to the mode is {decrement:.3g} "
                      f"posterior standard deviations long (tolerance {MODE_TOLERANCE}); the approximation's mean is "
                      "biased and its intervals misplaced. Run MAP longer (map_kwargs num_steps, optimizer='lbfgs') "
                      "or pass a converged map_posterior", RuntimeWarning, stacklevel=3)
    return gauss, out


#: Largest Newton decrement (distance to the mode in posterior std) at which laplace() accepts the MAP point silently.
MODE_TOLERANCE = 0.5


def laplace(model, data: torch.Tensor | None = None, *, map_posterior: Posterior | None = None, rank: int = 50,
            oversample: int = 10, num_samples: int = 1000, jvp_mode: str = "auto", seed: int | None = 0,
            posterior_predictive: bool = False, map_kwargs: Mapping | None = None, newton_steps: int = 5,
            progress_bar: bool = False) -> Posterior:
    r"""Laplace approximation at the MAP point, in the whitened latent space of the Gaussian-random-field priors.

    With whitened latents :math:`z \sim N(0, I)` and a Gaussian (or Gauss-Newton-weighted) likelihood, the Hessian of
    the negative log posterior at the MAP point :math:`z^*` is approximated by (with :math:`\Sigma^{-1/2}` the noise
    model's ``whiten``, :class:`probinv.models.NoiseModel`)

    .. math:: H = I + J^T \Sigma^{-1} J + H_{reg}, \qquad J = \partial d_{pred} / \partial z,

    whose misfit part (the prior-preconditioned data-misfit Hessian) is replaced by its ``rank`` leading eigenpairs
    :math:`V \Lambda V^T` (randomised range finder from Jacobian-vector / vector-Jacobian products: 2 solver passes per
    probe, or exact when ``rank + oversample`` exceeds the latent dimension). The posterior covariance is the
    low-rank update of the prior (Bui-Thanh et al. 2013, Flath et al. 2011)

    .. math:: C = (I + V \Lambda V^T)^{-1} = I - V \operatorname{diag}(\lambda_i / (1 + \lambda_i)) V^T .

    For a linear forward operator and Gaussian noise this is the exact posterior. Latent sites that are not whitened
    Gaussian fields (a latent noise sigma, box or flat fields) are held at their MAP values.

    Parameters
    ----------
    model : SeismicModel
    data : Tensor, optional
        Observed data; default ``model.data``.
    map_posterior : Posterior, optional
        Result of :func:`probinv.inference.map`; computed with ``map_kwargs`` (default: L-BFGS, 200 iterations)
        when omitted.
    rank : int
        Number of eigenpairs kept.
    oversample : int
        Extra random probes of the randomised method.
    num_samples : int
        Draws stored in the returned Posterior (one chain).
    jvp_mode : {"auto", "reverse", "fd"}
        How Jacobian-vector products are computed: double backward through one recorded forward/backward (exact;
        one solver forward + one backward, then one backward-of-backward and one backward per product) or central
        differences (``auto`` falls back to them, with a one-time ``RuntimeWarning``, only when PyTorch reports that
        the forward operator's backward is not differentiable; any other error propagates). See
        :class:`probinv.linearisation.Linearisation`.
    seed : int, optional
        Seed of the probes and draws.
    posterior_predictive : bool
        Also store noise-free predicted data for (up to 100 of) the draws.
    newton_steps : int
        Laplace only at a mode: when the Newton decrement at the MAP point exceeds 0.5 (the mode is more than half a
        posterior std away), up to this many damped Gauss-Newton steps with the computed Hessian move the point
        towards the mode (one gradient each, plus one per step halving); 0 only checks. A ``RuntimeWarning`` says
        when the point is still not a mode.
    progress_bar : bool
        A progress bar (tqdm, on standard error, only on a terminal) over the Jacobian products, with rate and ETA.

    Returns
    -------
    Posterior
        ``method="laplace"``, ``gaussian`` holds the :class:`LowRankGaussian` in the whitened coordinates of the
        concatenated whitened sites (order ``attrs["whitened_sites"]``). The discarded prior variance of truncated
        priors is attached (:meth:`Posterior.add_discarded_variance`). ``attrs["newton_decrement"]`` says whether
        the point is a mode (``sqrt(g^T H^-1 g)``, one extra gradient; a ``RuntimeWarning`` above 0.5), with
        ``chi2_per_datum`` and the MAP's ``map_relative_gradient`` / ``map_loss_change`` for
        :func:`probinv.diagnostics.verdict`.
    """
    model = check_model(model)
    data = resolve_data(model, data)
    forward = describe_forward(model.forward)  # before the work: a bad description fails fast
    check_int("rank", rank)
    check_int("oversample", oversample, minimum=0)
    check_int("newton_steps", newton_steps, minimum=0)
    check_int("num_samples", num_samples)
    if jvp_mode not in ("auto", "reverse", "fd"):
        raise ValueError(f"jvp_mode must be 'auto', 'reverse' or 'fd', got {jvp_mode!r}")
    whitened = [n for n in model.field_names if model.kinds[n] == "whitened"]
    if not whitened:
        raise ValueError("laplace needs at least one whitened Gaussian-random-field prior (probinv.fields."
                         f"WhitenedField); the priors here are {dict(model.kinds)}")
    t0 = time.perf_counter()
    if map_posterior is None:
        kw = {"optimizer": "lbfgs", "num_steps": 200, "lr": 1.0}
        kw.update(map_kwargs or {})
        map_posterior = _map_fn(model, data, **kw)
    point = {k: v[0, -1] for k, v in map_posterior.samples.items()}
    sites = [model.latent_site(n) for n in whitened]
    sizes = [int(point[s].numel()) for s in sites]
    z0 = torch.cat([point[s].reshape(-1) for s in sites]).to(data.dtype)
    fixed = {k: v for k, v in point.items() if k not in sites and k not in model.field_names}
    for name in model.field_names:
        if model.kinds[name] != "whitened":
            fixed[model.latent_site(name)] = point[name]
    noise_params = model.noise.params_from_latents(fixed)

    def whiten(residual):
        # the noise model's C^{-1/2} (NoiseModel.whiten): its squared norm is the Gauss-Newton weighting
        return model.noise.whiten(residual, noise_params)

    def latents_of(z):
        vals, i = dict(fixed), 0
        for s, k in zip(sites, sizes, strict=False):
            vals[s] = z[i:i + k].reshape(point[s].shape)
            i += k
        return vals

    def reg_logdensity(z):
        fields = model.fields_from_latents(latents_of(z))
        return sum(reg(fields) for reg in model.regularisers)

    lin = _GaussNewton(model, lambda z: model.fields_from_latents(latents_of(z)), whiten, data, z0, jvp_mode)
    n = z0.numel()
    exact = rank + oversample >= n
    # the randomised range finder makes 2 (rank + oversample) products J^T J v (two passes over its probes); the exact
    # operator needs the n columns of J only (H = J^T J: no J^T products)
    bar = tqdm(total=n if exact else 2 * (rank + oversample), desc="Laplace: Jacobian products", unit="product",
               leave=False, disable=None if progress_bar else True)

    def reg_hessian_vp(v):
        with torch.enable_grad():
            zz = z0.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(-reg_logdensity(zz), zz, create_graph=True)
            (hv,) = torch.autograd.grad(g, zz, v)
        return hv.detach()

    def matvec(v):
        out = lin.product(v.to(z0.dtype))
        if model.regularisers:
            out = out + reg_hessian_vp(v)
        bar.update(1)
        return out

    def columns():
        eye = torch.eye(n, dtype=z0.dtype, device=z0.device)
        jac = _jacobian_columns(lin.single, eye, bar)  # [n, *data]
        jac = jac.reshape(n, -1).to(torch.float64)  # the Gram matrix sums ~1e5 products: accumulate in float64
        h = (jac @ jac.T).to(z0.dtype)
        if model.regularisers:
            h = h + torch.stack([reg_hessian_vp(eye[:, i]) for i in range(n)], dim=1)
        return h

    gen = None
    if seed is not None:
        gen = torch.Generator(device=z0.device).manual_seed(int(seed))
    with bar:
        lam, vec = gauss_newton_eig(matvec, n, rank, oversample=oversample, dtype=z0.dtype, device=z0.device,
                                    generator=gen, columns=columns if lin.single is not None else None)
    gauss = LowRankGaussian(z0.detach(), vec.detach(), lam.detach())
    gauss, at_mode = _mode_check(model, data, latents_of, gauss, noise_params, map_posterior, newton_steps)
    zs = gauss.sample(num_samples, generator=gen)
    latents = {k: v.expand((num_samples,) + tuple(v.shape)) for k, v in fixed.items()}
    i = 0
    for s, k in zip(sites, sizes, strict=False):
        latents[s] = zs[:, i:i + k].reshape((num_samples,) + tuple(point[s].shape))
        i += k
    with torch.no_grad():
        fields = model.fields_from_latents(latents)
    samples = {k: v[None] for k, v in {**latents, **fields}.items()}
    seconds = time.perf_counter() - t0
    log.info("Laplace: rank %d, %d solver passes, %.2f s", len(lam), lin.passes, seconds)
    post = Posterior(samples, field_names=model.field_names, method="laplace", dx=model.dx, observed_data=data,
                     gaussian=gauss, dt=getattr(model.forward, "dt", None),
                     attrs={"rank": int(len(lam)), "whitened_sites": sites, "solver_passes": lin.passes,
                            "seconds": seconds, "map_n_gradients": map_posterior.attrs.get("n_gradients"),
                            "forward": forward, **at_mode})
    post.add_discarded_variance(model)
    if posterior_predictive:
        post.add_posterior_predictive(model, max_draws=100)
    return post


class _GaussNewton:
    r"""The misfit part :math:`J^T \Sigma^{-1} J v` of the Gauss-Newton Hessian, summed over shot chunks and ranks.

    Without chunking or sharding (``model.chunk_size`` None, no process group) one :class:`Linearisation` of the
    whitened prediction of all shots is recorded once and every product reuses it. Otherwise the shots of this rank
    (:func:`probinv.distributed.shard` of all shots when the model shards) are split into chunks of
    ``model.chunk_size``; with several chunks each product records each chunk's linearisation anew and drops it
    (only one chunk's double-backward graph alive: memory follows the chunk, for one forward and one backward more
    per chunk and product), with one chunk it is recorded once. The ranks' products are summed with an all-reduce.
    The whitening is applied to the chunk embedded in zero full-data residuals, which equals whitening the chunk for
    any noise model whose whitening acts shot by shot (the shots are independent in the model's plate).
    """

    def __init__(self, model, fields_of, whiten, data, z0, mode):
        self.model, self.fields_of, self.whiten, self.data = model, fields_of, whiten, data
        self.z0, self.mode = z0, mode
        self.sharded = model.shard and distributed.sharding()
        n = int(data.shape[0])
        block = distributed.shard(n) if self.sharded else range(n)
        size = len(block) if model.chunk_size is None else model.chunk_size
        self.chunks = [torch.arange(a, min(a + size, block.stop), device=data.device)
                       for a in range(block.start, block.stop, max(size, 1))]
        self._passes, self._kept = 0, None
        if not self.sharded and model.chunk_size is None:  # the single-process path, as before
            self._kept = [Linearisation(lambda z: whiten(model.predict(fields_of(z))), z0, mode=mode)]
        elif len(self.chunks) == 1:
            self._kept = [self._linearise(self.chunks[0])]

    def _linearise(self, idx):
        model, data = self.model, self.data

        def whitened_chunk(z):
            pred = model.predict(self.fields_of(z), idx)
            full = torch.zeros(data.shape, dtype=pred.dtype, device=pred.device).index_copy(0, idx, pred)
            return self.whiten(full).index_select(0, idx)

        return Linearisation(whitened_chunk, self.z0, mode=self.mode)

    @property
    def single(self) -> Linearisation | None:
        """The one recorded linearisation of all shots (single process, no chunks), else None: the exact operator
        is then assembled from its batched Jacobian columns (:func:`_jacobian_columns`).
        """
        if self.sharded or self._kept is None or len(self._kept) != 1 or self.model.chunk_size is not None:
            return None
        return self._kept[0]

    @property
    def passes(self) -> int:
        """Solver passes of this rank so far."""
        return self._passes + sum(lin.passes for lin in (self._kept or []))

    def product(self, v):
        if self._kept is not None:
            out = sum(lin.vjp(lin.jvp(v)) for lin in self._kept)
        else:
            out = torch.zeros_like(self.z0)
            for idx in self.chunks:
                lin = self._linearise(idx)
                out = out + lin.vjp(lin.jvp(v))
                self._passes += lin.passes
                del lin
        if not self.chunks:  # a rank without shots contributes zero
            out = torch.zeros_like(self.z0)
        return distributed.all_reduce_sum(out) if self.sharded else out


def _jacobian_columns(lin: Linearisation, vs: torch.Tensor, bar, chunk: int = 16) -> torch.Tensor:
    """``J v`` for each row ``v`` of ``vs [m, n]``: ``[m, *data]``, ``chunk`` products per batched double backward.

    One batched pass (``is_grads_batched``, vmap over the recorded backward) costs about 3 single products on the demo
    (measured: 8 products in 0.85 s against 0.27 s each) and gives the same numbers. Operators whose recorded
    backward has no batching rule, and finite-difference linearisations, get one product per column.
    """
    out = []
    batched = lin.mode == "reverse"
    for i in range(0, vs.shape[0], chunk):
        block = vs[i:i + chunk]
        if batched:
            try:
                # Linearisation records g(u) = J^T u once; J v = d(g . v)/du for the whole block in one pass
                (jv,) = torch.autograd.grad(lin._g, lin._u, block.to(lin._g.dtype), retain_graph=True,
                                            is_grads_batched=True)
                lin.passes += 1
                out.append(jv.detach())
                bar.update(block.shape[0])
                continue
            except RuntimeError as err:  # no batching rule for an operation of the recorded backward
                log.debug("batched Jacobian products unavailable (%s); one product per column", err)
                batched = False
        for v in block:
            out.append(lin.jvp(v)[None])
            bar.update(1)
    return torch.cat(out)
