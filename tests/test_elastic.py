"""SH and P-SV solvers (probinv.physics.elastic) against analytic solutions, physics and finite differences."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from analytic import green2d_time

from probinv.physics import elastic, psv, ricker, sh
from probinv.physics._fd import max_stable_dt_staggered

DX = 5.0


def _loc(*points):
    """One shot with the given (z, x) points: int64 [1, n, 2]."""
    return torch.tensor([list(points)], dtype=torch.int64)


def _const(nz, nx, value, dtype=torch.float64):
    return torch.full((nz, nx), float(value), dtype=dtype)


def _lag(a: np.ndarray, b: np.ndarray, dt: float) -> float:
    """Delay of ``b`` relative to ``a`` (s) from the cross-correlation peak, refined by a parabola."""
    cc = np.correlate(b, a, mode="full")
    k = int(np.argmax(cc))
    y0, y1, y2 = cc[k - 1], cc[k], cc[k + 1]
    frac = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    return (k + frac - (len(a) - 1)) * dt


# ----------------------------------------------------------------------------------------------------------------
# analytic solutions
# ----------------------------------------------------------------------------------------------------------------
def test_sh_homogeneous_matches_green_function():
    # rho u_tt - mu lap u = f delta  <=>  u_tt / vs^2 - lap u = f delta / mu  =>  u = G(r, t; vs) * f / mu
    nz = nx = 60
    vs0, rho0, dt, nt = 1000.0, 2000.0, 1e-3, 400
    w = ricker(10.0, nt, dt, dtype=torch.float64)
    rec = _loc((30, 40), (30, 50), (20, 30), (38, 38))
    d = sh(_const(nz, nx, vs0), _const(nz, nx, rho0), DX, dt, w[None, None], _loc((30, 30)), rec)
    assert d.shape == (1, 4, nt)
    mu = rho0 * vs0 ** 2
    for i, r in enumerate([50.0, 100.0, 50.0, DX * 8 * 2 ** 0.5]):
        g = green2d_time(w.numpy(), dt, r, vs0) / mu
        err = np.linalg.norm(d[0, i].numpy() - g) / np.linalg.norm(g)
        # 7.4 points per S wavelength at the Ricker's 1 %-amplitude frequency (27 Hz), 4th order: dispersion error
        # measured 0.05-0.09 %; 0.5 % still catches any error in scaling (1/mu, 1/dx^2) or a one-sample shift (~5 %)
        assert err < 5e-3, (r, err)


def test_psv_fluid_pressure_matches_green_function():
    # vs = 0: sigma_xx = sigma_zz = -p, so p_t = -K div v - s, rho v_t = -grad p  =>
    # (1/vp^2) p_tt - lap p = -s_t / vp^2  =>  p = -G(r, t; vp) * s_t / vp^2
    nz = nx = 60
    vp0, dt, nt = 1500.0, 1e-3, 400
    w = ricker(10.0, nt, dt, dtype=torch.float64)
    rec = _loc((30, 40), (30, 50), (20, 30))
    d = psv(_const(nz, nx, vp0), _const(nz, nx, 0.0), _const(nz, nx, 1000.0), DX, dt, w[None, None],
            _loc((30, 30)), rec, source_type="explosive", receiver_component="pressure")
    wd = np.gradient(w.numpy(), dt)
    for i, r in enumerate([50.0, 100.0, 50.0]):
        g = -green2d_time(wd, dt, r, vp0) / vp0 ** 2
        err = np.linalg.norm(d[0, i].numpy() - g) / np.linalg.norm(g)
        # measured 0.08-0.16 % (dispersion at 11 points per wavelength + np.gradient's derivative error)
        assert err < 5e-3, (r, err)


def test_psv_homogeneous_p_and_s_arrival_times():
    # P: explosive source (radiates P only), vz on the vertical axis. S: vertical force, vz on the horizontal axis
    # (the S far field; P is not radiated horizontally by a vertical force). Move-out between two receivers on one
    # ray, from the cross-correlation peak, against the same move-out of the 2D scalar Green's function with speed
    # vp (resp. vs): this cancels the 2D waveform's phase and spreading effects.
    nz = nx = 100
    vp0, vs0, dt, nt = 2000.0, 1000.0, 1e-3, 480
    w = ricker(10.0, nt, dt, dtype=torch.float64)
    model = (_const(nz, nx, vp0), _const(nz, nx, vs0), _const(nz, nx, 2000.0), DX, dt, w[None, None], _loc((40, 50)))
    dp = psv(*model, _loc((60, 50), (80, 50)), source_type="explosive", receiver_component="vz", pml_width=10)
    ds = psv(*model, _loc((40, 70), (40, 90)), source_type="force_z", receiver_component="vz", pml_width=10)
    for d, v, (r1, r2) in ((dp[0].numpy(), vp0, (20.5 * DX, 40.5 * DX)), (ds[0].numpy(), vs0, (20 * DX, 40 * DX))):
        expected = _lag(green2d_time(w.numpy(), dt, r1, v), green2d_time(w.numpy(), dt, r2, v), dt)
        measured = _lag(d[0], d[1], dt)
        assert abs(expected - (r2 - r1) / v) < 2e-3  # the scalar reference itself moves out at about v
        # measured |error| 0.9 ms (P) and 1.5 ms (S: the force's near-field term, between the P and S arrivals,
        # pulls the S correlation peak earlier at these 100-200 m offsets); 2.5 ms is 2.5 % of the S move-out and
        # 5 % of the P move-out, while swapping vp and vs would be off by 50 ms
        assert abs(measured - expected) < 2.5e-3, (v, measured, expected)


# ----------------------------------------------------------------------------------------------------------------
# reciprocity, boundaries
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source_type,component", [("force_z", "vz"), ("force_x", "vx")])
def test_psv_reciprocity_heterogeneous(source_type, component):
    g = torch.Generator().manual_seed(1)
    nz, nx = 30, 34
    vp = 2000 + 300 * torch.rand(nz, nx, generator=g, dtype=torch.float64)
    vs = vp / (1.6 + 0.4 * torch.rand(nz, nx, generator=g, dtype=torch.float64))
    rho = 1800 + 400 * torch.rand(nz, nx, generator=g, dtype=torch.float64)
    dt, nt = 1e-3, 200
    w = ricker(12.0, nt, dt, dtype=torch.float64)[None, None]
    a, b = _loc((8, 7)), _loc((20, 25))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coarse on purpose: reciprocity holds at any resolution
        dab = psv(vp, vs, rho, DX, dt, w, a, b, source_type=source_type, receiver_component=component, pml_width=10)
        dba = psv(vp, vs, rho, DX, dt, w, b, a, source_type=source_type, receiver_component=component, pml_width=10)
    # the discrete operator is symmetric (staggered D+ = -(D-)^T, CPML included): equal to rounding (measured 1e-15)
    assert float((dab - dba).norm() / dab.norm()) < 1e-12


def _pml_ratio(fn, n, src, rec, free_surface, **kw):
    """Energy of (small-grid trace - 3x-grid trace) / energy of the 3x-grid trace, per receiver."""
    dt, nt = 1e-3, 350
    w = ricker(10.0, nt, dt, dtype=torch.float64)[None, None]

    def run(nz, nx, s, r):
        vs = _const(nz, nx, 1000.0)
        rho = _const(nz, nx, 2000.0)
        if fn == "sh":
            return sh(vs, rho, DX, dt, w, s, r, free_surface=free_surface)
        return psv(_const(nz, nx, 2000.0), vs, rho, DX, dt, w, s, r, free_surface=free_surface, **kw)

    small = run(n, n, src, rec)
    shift = torch.tensor([0 if free_surface else n, n])
    big = run(3 * n, 3 * n, src + shift, rec + shift)
    return ((small - big).pow(2).sum(-1) / big.pow(2).sum(-1))[0]


@pytest.mark.parametrize("free_surface", [False, True])
@pytest.mark.parametrize("fn,kw", [("sh", {}), ("psv", dict(source_type="force_z", receiver_component="vz")),
                                   ("psv", dict(source_type="explosive", receiver_component="pressure"))])
def test_cpml_reflection_below_1e_6(fn, kw, free_surface):
    # receivers 3 cells from the right, bottom, corner and left edges; the 3x grid sees no reflection in the window
    n = 40
    sz = 3 if free_surface else n // 2
    rec = _loc((sz, n - 3), (n - 3, n // 2), (n - 3, n - 3), (sz, 2))
    ratio = _pml_ratio(fn, n, _loc((sz, n // 2)), rec, free_surface, **kw)
    # acceptance: reflected / incident energy < 1e-6 with the default 20-cell layer (measured 1e-11 .. 1.1e-7)
    assert bool((ratio < 1e-6).all()), ratio


def test_sh_free_surface_is_exact_mirror_image():
    # u mirrored symmetrically about row 0 = a full space with an image source of the same sign at -z_s
    n, dt, nt = 30, 1e-3, 250
    w = ricker(10.0, nt, dt, dtype=torch.float64)[None, None]
    vs, rho = _const(n, n, 1000.0), _const(n, n, 2000.0)
    rec = _loc((0, 20), (5, 8), (12, 25))
    d_fs = sh(vs, rho, DX, dt, w, _loc((4, 12)), rec, free_surface=True, pml_width=10)
    big_vs, big_rho = _const(2 * n - 1, n, 1000.0), _const(2 * n - 1, n, 2000.0)
    c = n - 1  # the surface row in the doubled grid
    src2 = torch.tensor([[[c + 4, 12], [c - 4, 12]]])
    d_full = sh(big_vs, big_rho, DX, dt, w.expand(1, 2, nt), src2, rec + torch.tensor([c, 0]), pml_width=10)
    # same arithmetic up to the order of additions; reflections off the (identical) side/bottom layers included
    # differ only where the full grid's top layer would act, which the window (250 ms, 150 m) keeps out
    assert float((d_fs - d_full).norm() / d_full.norm()) < 1e-10


@pytest.mark.parametrize("accuracy", [2, 4])
def test_psv_fluid_free_surface_is_pressure_release_mirror(accuracy):
    # in a fluid (vs = 0) the stress-free surface is a pressure-release surface: the image source has the opposite
    # sign. With accuracy 2 the stress-image scheme is exactly that mirror; with accuracy 4 the vacuum velocities above
    # the surface differ from the mirror in the long stencil arms (a few % near the surface, measured below).
    n, dt, nt = 30, 1e-3, 250
    w = ricker(10.0, nt, dt, dtype=torch.float64)[None, None]
    rec = _loc((1, 20), (5, 8), (12, 25))
    kw = dict(source_type="explosive", receiver_component="pressure", pml_width=10, accuracy=accuracy)
    d_fs = psv(_const(n, n, 1500.0), _const(n, n, 0.0), _const(n, n, 1000.0), DX, dt, w, _loc((4, 12)), rec,
               free_surface=True, **kw)
    c = n - 1
    m = 2 * n - 1
    amps = torch.cat([w, -w], dim=1)
    d_full = psv(_const(m, n, 1500.0), _const(m, n, 0.0), _const(m, n, 1000.0), DX, dt, amps,
                 torch.tensor([[[c + 4, 12], [c - 4, 12]]]), rec + torch.tensor([c, 0]), **kw)
    err = float((d_fs - d_full).norm() / d_full.norm())
    assert err < (1e-10 if accuracy == 2 else 5e-2), err


def test_psv_free_surface_rayleigh_wave_speed():
    # Poisson solid (vp = sqrt(3) vs): Rayleigh speed 0.9194 vs. Vertical force at the surface; the surface vz is
    # dominated by the Rayleigh wave; its move-out between two surface receivers 100 m apart gives its speed.
    nz, nx = 40, 110
    vs0 = 1000.0
    vp0 = vs0 * 3 ** 0.5
    dt, nt = 1e-3, 450
    w = ricker(10.0, nt, dt, dtype=torch.float64)[None, None]
    rec = _loc((0, 40), (0, 60))
    d = psv(_const(nz, nx, vp0), _const(nz, nx, vs0), _const(nz, nx, 2000.0), DX, dt, w, _loc((0, 15)), rec,
            source_type="force_z", receiver_component="vz", free_surface=True, pml_width=10)[0].numpy()
    speed = 20 * DX / _lag(d[0], d[1], dt)
    # 1 sample of lag error is 1 % of the 109 ms move-out; the S speed would be 8.8 % off, P 88 %
    assert abs(speed / (0.9194 * vs0) - 1) < 2e-2, speed


# ----------------------------------------------------------------------------------------------------------------
# gradients, batches, checkpointing
# ----------------------------------------------------------------------------------------------------------------
def _fd_check(loss, params: list[torch.Tensor], seed: int = 0):
    """Directional derivative of ``loss`` by AD against a central finite difference along a random direction."""
    g = torch.Generator().manual_seed(seed)
    dirs = [torch.randn(p.shape, generator=g, dtype=p.dtype) * p.detach().abs().mean() * 1e-2 for p in params]
    # the CPML damping is set by the model's maximum speed, a non-differentiable constant of the solver: keep the
    # maximum fixed, or the finite difference would also see the layer change
    for p, d in zip(params, dirs, strict=True):
        d.view(-1)[torch.argmax(p)] = 0.0
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    val = loss(*ps)
    grads = torch.autograd.grad(val, ps)
    ad = sum(float((gr * d).sum()) for gr, d in zip(grads, dirs, strict=True))
    h = 1e-3
    with torch.no_grad():
        lp = float(loss(*[p + h * d for p, d in zip(params, dirs, strict=True)]))
        lm = float(loss(*[p - h * d for p, d in zip(params, dirs, strict=True)]))
    fd = (lp - lm) / (2 * h)
    return ad, fd, grads


def _hetero(nz, nx, seed=3):
    g = torch.Generator().manual_seed(seed)
    vp = 2000 + 200 * torch.rand(nz, nx, generator=g, dtype=torch.float64)
    vs = 1000 + 100 * torch.rand(nz, nx, generator=g, dtype=torch.float64)
    rho = 2000 + 200 * torch.rand(nz, nx, generator=g, dtype=torch.float64)
    return vp, vs, rho


@pytest.mark.parametrize("checkpoint_every", [None, 7])
@pytest.mark.parametrize("free_surface", [False, True])
def test_sh_gradient_matches_finite_difference(checkpoint_every, free_surface):
    nz, nx, dt, nt = 12, 14, 1e-3, 60
    _, vs, rho = _hetero(nz, nx)
    w = ricker(25.0, nt, dt, dtype=torch.float64)[None, None]
    obs = torch.randn(1, 2, nt, dtype=torch.float64) * 1e-3
    scale = []  # fixed at the first call: an O(1) loss whose variation is not lost to rounding

    def loss(vs_, rho_):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = sh(vs_, rho_, DX, dt, w, _loc((3, 4)), _loc((9, 10), (2, 12)), pml_width=4,
                   free_surface=free_surface, checkpoint_every=checkpoint_every)
        scale.append(float(d.detach().abs().max()))
        return (((d - obs * scale[0]) / scale[0]) ** 2).sum()

    ad, fd, _ = _fd_check(loss, [vs, rho])
    # relative perturbation of each parameter 1e-5: central-difference truncation O(1e-10) and rounding
    # ~1e-16 / 1e-5 relative, both << 1e-6
    assert abs(ad - fd) < 1e-6 * abs(fd), (ad, fd)


@pytest.mark.parametrize("checkpoint_every", [None, 7])
@pytest.mark.parametrize("free_surface", [False, True])
@pytest.mark.parametrize("source_type,component", [("explosive", "vz"), ("force_x", "pressure")])
def test_psv_gradient_matches_finite_difference(checkpoint_every, free_surface, source_type, component):
    nz, nx, dt, nt = 12, 14, 5e-4, 60
    vp, vs, rho = _hetero(nz, nx)
    w = ricker(30.0, nt, dt, dtype=torch.float64)[None, None]
    obs = torch.randn(1, 2, nt, dtype=torch.float64) * 1e-3
    scale = []

    def loss(vp_, vs_, rho_):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = psv(vp_, vs_, rho_, DX, dt, w, _loc((3, 4)), _loc((9, 10), (2, 12)), pml_width=4,
                    source_type=source_type, receiver_component=component, free_surface=free_surface,
                    checkpoint_every=checkpoint_every)
        scale.append(float(d.detach().abs().max()))
        return (((d - obs * scale[0]) / scale[0]) ** 2).sum()

    ad, fd, grads = _fd_check(loss, [vp, vs, rho])
    assert all(float(gr.abs().max()) > 0 for gr in grads)  # every parameter influences the data
    assert abs(ad - fd) < 1e-6 * abs(fd), (ad, fd)


def test_checkpointing_gives_the_same_gradient():
    nz, nx, dt, nt = 16, 16, 5e-4, 50
    vp, vs, rho = _hetero(nz, nx)
    w = ricker(30.0, nt, dt, dtype=torch.float64)[None, None]
    grads = []
    for k in (None, 1, 13, 100):
        ps = [p.clone().requires_grad_(True) for p in (vp, vs, rho)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = psv(*ps, DX, dt, w, _loc((3, 4)), _loc((9, 10)), pml_width=4, checkpoint_every=k)
        grads.append(torch.autograd.grad(d.pow(2).sum(), ps))
    for gk in grads[1:]:
        for a, b in zip(grads[0], gk, strict=True):
            # the same arithmetic, recomputed; only the order of the per-block gradient sums differs
            assert float((a - b).norm() / a.norm()) < 1e-12


@pytest.mark.parametrize("free_surface", [False, True])
@pytest.mark.parametrize("fn,kw", [("sh", {}),
                                   ("psv", dict(source_type="explosive", receiver_component="vz")),
                                   ("psv", dict(source_type="force_x", receiver_component="vx")),
                                   ("psv", dict(source_type="force_z", receiver_component="pressure"))])
def test_hand_written_adjoint_equals_plain_autograd(fn, kw, free_surface, monkeypatch):
    # the fast path (one autograd node per block, exact transposed steps) against autograd through every step:
    # data, and the gradients for the models and the source amplitudes (a batch of 2 models, 2 shots, accuracy 8)
    nz, nx, dt, nt = 14, 15, 4e-4, 45
    models = [_hetero(nz, nx, seed) for seed in (4, 5)]
    vp, vs, rho = (torch.stack(f) for f in zip(*models, strict=True))
    w = ricker(30.0, nt, dt, dtype=torch.float64)
    amps = torch.stack([w, -0.7 * w])[:, None]
    src = torch.tensor([[[2, 3]], [[9, 11]]])
    rec = torch.tensor([[[9, 10], [0, 12], [13, 0]], [[3, 3], [5, 14], [0, 1]]])
    obs = torch.randn(2, 2, 3, nt, dtype=torch.float64)
    out = []
    for reference in (False, True):
        monkeypatch.setattr(elastic, "_REFERENCE", reference)
        ps = [p.clone().requires_grad_(True) for p in (vp, vs, rho, amps)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fn == "sh":
                d = sh(ps[1], ps[2], DX, dt, ps[3], src, rec, pml_width=3, accuracy=8, free_surface=free_surface)
                ps = ps[1:]
            else:
                d = psv(*ps[:3], DX, dt, ps[3], src, rec, pml_width=3, accuracy=8, free_surface=free_surface, **kw)
        d = d / d.detach().abs().max()
        out.append((d.detach(), torch.autograd.grad((d * obs).sum(), ps)))
    (d0, g0), (d1, g1) = out
    # the same forward arithmetic up to the order of the stencil sums (in-place fast path): rounding only
    assert float((d0 - d1).norm() / d1.norm()) < 1e-13
    for a, b in zip(g0, g1, strict=True):
        assert float((a - b).norm() / b.norm()) < 1e-12  # exact transpose: equal up to the order of the sums


@pytest.mark.parametrize("fn", ["sh", "psv"])
def test_batch_of_models_equals_separate_calls(fn):
    nz, nx, dt, nt = 20, 22, 5e-4, 80
    models = [_hetero(nz, nx, seed) for seed in (1, 2, 3)]
    w = ricker(25.0, nt, dt, dtype=torch.float64)
    amps = torch.stack([w, 0.5 * w])[:, None]  # two shots
    src = torch.tensor([[[3, 4]], [[10, 15]]])
    rec = torch.tensor([[[9, 10], [2, 12], [0, 0]], [[5, 5], [19, 21], [1, 1]]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fn == "sh":
            call = lambda vp, vs, rho: sh(vs, rho, DX, dt, amps, src, rec, pml_width=5)  # noqa: E731
        else:
            call = lambda vp, vs, rho: psv(vp, vs, rho, DX, dt, amps, src, rec, pml_width=5,  # noqa: E731
                                           source_type="force_z")
        batched = call(*(torch.stack(f) for f in zip(*models, strict=True)))
        separate = torch.stack([call(*m) for m in models])
    assert batched.shape == (3, 2, 3, nt)
    assert torch.allclose(batched, separate, rtol=1e-12, atol=1e-30)


def test_float32_and_wavefield():
    nz, nx, dt, nt = 20, 22, 5e-4, 40
    vp, vs, rho = (f.float() for f in _hetero(nz, nx))
    w = ricker(25.0, nt, dt)[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d, wf = psv(vp, vs, rho, DX, dt, w, _loc((5, 5)), _loc((8, 9), (3, 3)), receiver_component="vx",
                    return_wavefield=True)
        d64 = psv(vp.double(), vs.double(), rho.double(), DX, dt, w.double(), _loc((5, 5)), _loc((8, 9), (3, 3)),
                  receiver_component="vx")
        u, uwf = sh(vs, rho, DX, dt, w, _loc((5, 5)), _loc((8, 9)), return_wavefield=True)
    assert d.dtype == torch.float32 and wf.shape == (1, nt, nz, nx) and uwf.shape == (1, nt, nz, nx)
    # the wavefield snapshots hold exactly what the receivers record
    assert torch.equal(wf[0, :, 8, 9], d[0, 0]) and torch.equal(uwf[0, :, 8, 9], u[0, 0])
    # float32 rounding accumulates over 40 steps to ~1e-6 of the peak
    assert float((d - d64).abs().max()) < 1e-4 * float(d64.abs().max())


# ----------------------------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------------------------
def _args(nz=10, nx=10, nt=20):
    vp, vs, rho = _hetero(nz, nx)
    w = ricker(10.0, nt, 1e-3, dtype=torch.float64)[None, None]
    return vp, vs, rho, w


def test_errors():
    vp, vs, rho, w = _args()
    src, rec = _loc((2, 2)), _loc((5, 5))
    with pytest.raises(ValueError, match=re.escape("vs must be positive everywhere, got minimum 0")):
        sh(vs * 0, rho, DX, 1e-4, w, src, rec)
    with pytest.raises(ValueError, match="rho must be finite everywhere, got 1 NaN/inf"):
        bad = rho.clone()
        bad[1, 1] = float("nan")
        psv(vp, vs, bad, DX, 1e-4, w, src, rec)
    with pytest.raises(ValueError, match="vp must be positive"):
        psv(-vp, vs, rho, DX, 1e-4, w, src, rec)
    with pytest.raises(ValueError, match=r"vp must exceed vs wherever vs > 0 .* at index \(0, 0\)"):
        psv(vs * 0.9, vs, rho, DX, 1e-4, w, src, rec)
    with pytest.raises(ValueError, match=r"vs has shape \(9, 10\) but vp has shape \(10, 10\)"):
        psv(vp, vs[1:], rho, DX, 1e-4, w, src, rec)
    with pytest.raises(ValueError, match=re.escape("receiver_locations[0, 0] = (z=5, x=10) is outside the model grid")):
        psv(vp, vs, rho, DX, 1e-4, w, src, _loc((5, 10)))
    with pytest.raises(ValueError, match=re.escape("source_locations[0, 0] = (z=-1, x=2) is outside")):
        sh(vs, rho, DX, 1e-4, w, _loc((-1, 2)), rec)
    dt_max = max_stable_dt_staggered(float(vp.max()), DX, 4)
    with pytest.raises(ValueError, match=re.escape(f"the largest stable dt is {dt_max:.6g} s")):
        psv(vp, vs, rho, DX, 1.01 * dt_max, w, src, rec)
    with pytest.raises(ValueError, match=re.escape("source_type must be one of ('explosive', 'force_z', 'force_x')")):
        psv(vp, vs, rho, DX, 1e-4, w, src, rec, source_type="force_y")
    with pytest.raises(ValueError, match="receiver_component must be one of"):
        psv(vp, vs, rho, DX, 1e-4, w, src, rec, receiver_component="vy")
    with pytest.raises(ValueError, match="accuracy must be one of"):
        sh(vs, rho, DX, 1e-4, w, src, rec, accuracy=6)
    with pytest.raises(ValueError, match="checkpoint_every must be None or a positive int"):
        sh(vs, rho, DX, 1e-4, w, src, rec, checkpoint_every=0)
    with pytest.raises(ValueError, match="source_locations has 2 sources per shot but source_amplitudes has 1"):
        sh(vs, rho, DX, 1e-4, w, _loc((1, 1), (2, 2)), rec)
    with pytest.raises(ValueError, match="source_amplitudes is torch.float32"):
        sh(vs, rho, DX, 1e-4, w.float(), src, rec)
    with pytest.raises(TypeError, match="source_amplitudes must be a torch.Tensor"):
        sh(vs, rho, DX, 1e-4, w.numpy(), src, rec)
    # Ricker 10 Hz: 1 % of the spectral peak at ~27 Hz; S wavelength there 37 m, i.e. ~1.9 points at dx = 20 m
    w = ricker(10.0, 300, 1e-3, dtype=torch.float64)[None, None]
    with pytest.warns(UserWarning, match=r"only 1\.\d\d grid points per minimum wavelength \(vmin = 100\d"):
        psv(vp, vs, rho, 20.0, 1e-3, w, src, rec)


def test_second_derivatives_are_refused_not_wrong():
    vp, vs, rho, w = _args()
    vs = vs.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = sh(vs, rho, DX, 1e-4, w, _loc((2, 2)), _loc((5, 5)), pml_width=2)
    (g,) = torch.autograd.grad(d.pow(2).sum(), vs, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()
