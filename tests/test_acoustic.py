"""probinv.physics.acoustic: analytic solutions, convergence order, free surface, gradients, batching, checks."""
import math
import re
import sys
import warnings

import numpy as np
import pytest
import torch
from analytic import green2d_time

from probinv.physics import _checks, acoustic, ricker
from probinv.physics._checks import significant_max_frequency
from probinv.physics.acoustic import _propagate_reference

F64 = torch.float64

# Most gradient/bookkeeping tests use short records that truncate the wavelet (broadband): the sampling warning is
# expected there and tested on its own in test_error_messages (pytest.warns still sees it).
pytestmark = pytest.mark.filterwarnings("ignore:only .* grid points per minimum wavelength:UserWarning")


@pytest.fixture(autouse=True, params=["auto", pytest.param("torch", marks=pytest.mark.slow)])
def backend(request, monkeypatch):
    """Run every test on the default path (the compiled kernel on CPU) and, in the slow suite, on the torch path.

    The default suite also compares the two paths on every option (tests/test_native_acoustic.py).
    """
    monkeypatch.setitem(acoustic.__kwdefaults__, "backend", request.param)
    return request.param


def _loc(*points):
    """One shot with the given (z, x) points: int64 [1, n, 2]."""
    return torch.tensor([list(points)], dtype=torch.int64)


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


# ---------------------------------------------------------------------------------------------------------------------
# physics against analytic solutions


@pytest.mark.parametrize("accuracy", [4, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_homogeneous_matches_green_function(accuracy, dtype):
    v0, f, dx, dt, nt = 2000.0, 15.0, 5.0, 5e-4, 600
    w = ricker(f, nt, dt, dtype=dtype)
    fmax = significant_max_frequency(w[None, None], dt)
    assert v0 / (fmax * dx) >= 8  # the acceptance criterion's sampling: >= 8 points per shortest wavelength
    v = torch.full((24, 64), v0, dtype=dtype)
    sz, sx = 12, 6
    offsets = [8, 20, 36, 52]
    d = acoustic(v, dx, dt, w[None, None], _loc((sz, sx)), _loc(*[(sz, sx + o) for o in offsets]),
                 accuracy=accuracy)
    assert d.dtype == dtype and d.shape == (1, len(offsets), nt)
    for i, o in enumerate(offsets):
        g = green2d_time(w.double().numpy(), dt, o * dx, v0)
        err = _rel(d[0, i].double().numpy(), g)
        # amplitude and timing: < 2 % (measured 0.03-0.2 %), the acceptance tolerance
        assert err < 0.02, (o, err)
        # a trace one sample early or late misses by several per cent (phase error 2 pi f dt ~ 5 %): this is what
        # proves that sample n is t = n dt for both the source and the receiver
        assert _rel(d[0, i, 1:].double().numpy(), g[:-1]) > 2 * max(err, 0.01)
        assert _rel(d[0, i, :-1].double().numpy(), g[1:]) > 2 * max(err, 0.01)


@pytest.mark.parametrize("accuracy", [2, 4, 8])
def test_spatial_convergence_order(accuracy):
    # Halve dx twice at a fixed dt; p_h - p_{h/2} ~ C h^k (1 - 2^-k), so log2 of the ratio of successive differences
    # is the order k. The same dt on every grid makes the time-stepping error common to all three runs, so it
    # cancels in the differences and the spatial error dominates. pml_width=0 with a domain large enough that the
    # edge reflections reach the receiver only after the recorded window, so no boundary error enters either.
    length, offset, f, dt, nt = 440.0, 60.0, 15.0, 4e-4, 500
    w = ricker(f, nt, dt, dtype=F64)[None, None]
    traces = []
    for h in (10.0, 5.0, 2.5):
        n = int(length / h) + 1
        c = n // 2
        v = torch.full((n, n), 2000.0, dtype=F64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the coarsest grid has 4.8 points per wavelength, on purpose
            traces.append(acoustic(v, h, dt, w, _loc((c, c)), _loc((c, c + int(offset / h))), accuracy=accuracy,
                                   pml_width=0)[0, 0])
    e1 = float((traces[0] - traces[1]).norm())
    e2 = float((traces[1] - traces[2]).norm())
    slope = math.log2(e1 / e2)
    # measured 2.13 / 3.95 / 7.70: the coarsest level (4.8 points per wavelength) is slightly pre-asymptotic,
    # higher-order error terms h^(k+2) move the slope by a few tenths
    assert abs(slope - accuracy) < 0.5, slope


def test_free_surface_ghost_has_reversed_polarity():
    # p = 0 sits one cell above row 0, so the image of a source at row i is at row -2 - i with opposite sign:
    # (free-surface trace) - (absorbing-top trace) must equal -G(r_image) * f.
    v0, f, dx, dt, nt = 2000.0, 15.0, 5.0, 5e-4, 500
    w = ricker(f, nt, dt, dtype=F64)
    v = torch.full((30, 40), v0, dtype=F64)
    src, rec = (8, 10), (4, 30)
    args = (v, dx, dt, w[None, None], _loc(src), _loc(rec))
    d_fs = acoustic(*args, free_surface=True)
    d_abs = acoustic(*args, free_surface=False)
    ghost = (d_fs - d_abs)[0, 0].numpy()
    r_img = dx * math.hypot(rec[0] - (-2 - src[0]), rec[1] - src[1])
    expected = -green2d_time(w.numpy(), dt, r_img, v0)
    # same accuracy as the direct wave at ~11 points per wavelength, plus the 1e-5 CPML residue
    assert _rel(ghost, expected) < 0.02
    assert float(np.dot(ghost, green2d_time(w.numpy(), dt, r_img, v0))) < 0  # reversed polarity


def test_constant_density_reduces_to_constant_density_solver():
    v = 1800 + 200 * torch.rand(20, 24, dtype=F64)
    w = ricker(20.0, 200, 5e-4, dtype=F64)[None, None]
    args = (v, 5.0, 5e-4, w, _loc((5, 5)), _loc((10, 20), (0, 0)))
    d0 = acoustic(*args)
    d1 = acoustic(*args, rho=torch.full_like(v, 1234.0))
    # grad ln rho = 0 identically, so the two schemes coincide to rounding
    assert torch.allclose(d0, d1, rtol=0, atol=1e-12 * float(d0.abs().max()))


def test_density_interface_reflection_coefficient():
    # A density-only contrast (same v) reflects with R = (Z2 - Z1)/(Z2 + Z1), Z = rho v, at normal incidence.
    # Source and receiver at the same point above a flat interface; the reflection is isolated by subtracting the
    # homogeneous run and compared, in amplitude, with R times the direct wave at the image distance.
    v0, f, dx, dt, nt = 2000.0, 15.0, 5.0, 5e-4, 500
    w = ricker(f, nt, dt, dtype=F64)
    nz, nx = 60, 60
    v = torch.full((nz, nx), v0, dtype=F64)
    rho = torch.full((nz, nx), 1000.0, dtype=F64)
    rho[30:] = 2000.0
    args = (v, dx, dt, w[None, None], _loc((20, 30)), _loc((20, 30)))
    refl = (acoustic(*args, rho=rho) - acoustic(*args, rho=torch.full_like(rho, 1000.0)))[0, 0].numpy()
    # the interface lies between rows 29 and 30: image distance 2 * 9.5 cells
    direct = green2d_time(w.numpy(), dt, 19 * dx, v0)
    r_coef = (2000.0 - 1000.0) / (2000.0 + 1000.0)
    a = float(np.dot(refl, direct) / np.dot(direct, direct))
    # a point source gives a spherical-wave reflection and the non-conservative density term smears the sharp step
    # over the stencil: the fitted amplitude must be within 10 % of the plane-wave coefficient 1/3
    assert abs(a - r_coef) < 0.1 * r_coef, a


# ---------------------------------------------------------------------------------------------------------------------
# gradients


def _setup_small(dtype=F64, n_shots=2, nt=160):
    torch.manual_seed(1)
    nz, nx, dx, dt = 20, 24, 5.0, 5e-4
    v = 1800 + 300 * torch.rand(nz, nx, dtype=dtype)
    rho = 1000 + 800 * torch.rand(nz, nx, dtype=dtype)
    w = ricker(20.0, nt, dt, t0=0.05, dtype=dtype)
    amp = torch.stack([w * (1 + 0.3 * i) for i in range(n_shots)])[:, None]
    src = torch.tensor([[[4, 3 + 7 * i]] for i in range(n_shots)])
    rec = torch.tensor([[[0, k], [nz - 1, k]] for k in range(0, nx, 6)]).reshape(1, -1, 2).repeat(n_shots, 1, 1)
    return v, rho, dx, dt, amp, src, rec


@pytest.mark.parametrize("options", [dict(), dict(checkpoint_every=37), dict(free_surface=True, accuracy=8),
                                     dict(accuracy=2, pml_width=(3, 5, 4, 6))])
def test_gradient_matches_central_finite_differences(options):
    v, _, dx, dt, amp, src, rec = _setup_small()
    weights = torch.randn(src.shape[0], rec.shape[1], amp.shape[-1], dtype=F64)

    opts = {"pml_width": 8, **options}

    def j(vv):
        return (acoustic(vv, dx, dt, amp, src, rec, **opts) * weights).sum()

    vg = v.clone().requires_grad_()
    (g,) = torch.autograd.grad(j(vg), vg)
    for _ in range(2):
        d = torch.randn_like(v)
        eps = 1e-2  # m/s on ~2000 m/s: central-difference truncation ~ eps^2 * J''' ~ 1e-9 relative, rounding ~ 1e-12
        fd = (j(v + eps * d) - j(v - eps * d)) / (2 * eps)
        ad = (g * d).sum()
        assert abs(float(fd - ad)) < 1e-6 * abs(float(ad)), (float(fd), float(ad))


def test_gradient_with_density_and_sources_matches_finite_differences():
    v, rho, dx, dt, amp, src, rec = _setup_small()
    weights = torch.randn(src.shape[0], rec.shape[1], amp.shape[-1], dtype=F64)

    def j(vv, rr, aa):
        return (acoustic(vv, dx, dt, aa, src, rec, rho=rr, pml_width=6, checkpoint_every=50) * weights).sum()

    args = [t.clone().requires_grad_() for t in (v, rho, amp)]
    grads = torch.autograd.grad(j(*args), args)
    for k, eps in zip(range(3), (1e-2, 1e-2, 1e-3), strict=True):
        d = torch.randn_like(args[k])
        plus = [t.detach() + (eps * d if i == k else 0) for i, t in enumerate(args)]
        minus = [t.detach() - (eps * d if i == k else 0) for i, t in enumerate(args)]
        fd = (j(*plus) - j(*minus)) / (2 * eps)
        ad = (grads[k] * d).sum()
        assert abs(float(fd - ad)) < 1e-6 * abs(float(ad)), (k, float(fd), float(ad))


@pytest.mark.parametrize("options", [dict(), dict(rho=True, free_surface=True, accuracy=8)])
def test_fused_node_equals_plain_autograd_reference(options):
    # the custom autograd node (hand-transposed steps) against autograd through ordinary torch operations
    v, rho, dx, dt, amp, src, rec = _setup_small(nt=80)
    r = rho.clone().requires_grad_() if options.get("rho") else None
    opts = {k: o for k, o in options.items() if k != "rho"}
    vg, ag = v.clone().requires_grad_(), amp.clone().requires_grad_()
    params = [vg, ag] + ([r] if r is not None else [])
    d = acoustic(vg, dx, dt, ag, src, rec, rho=r, pml_width=5, **opts)
    d_ref = _propagate_reference(vg, dx, dt, ag, src, rec, rho=r, pml_width=5, **opts)
    assert torch.allclose(d, d_ref, rtol=0, atol=1e-13 * float(d_ref.detach().abs().max()))
    w = torch.randn_like(d)
    g = torch.autograd.grad((d * w).sum(), params)
    g_ref = torch.autograd.grad((d_ref * w).sum(), params)
    for a, b in zip(g, g_ref, strict=True):
        assert float((a - b).norm() / b.norm()) < 1e-12  # same arithmetic in another order: rounding only


def test_checkpointing_gives_the_same_gradient():
    v, rho, dx, dt, amp, src, rec = _setup_small(nt=120)
    outs = []
    for k in (None, 1, 17, 120, 500):
        vg = v.clone().requires_grad_()
        d = acoustic(vg, dx, dt, amp, src, rec, rho=rho, checkpoint_every=k)
        (g,) = torch.autograd.grad(d.square().sum(), vg)
        outs.append((d.detach(), g))
    for d, g in outs[1:]:
        assert torch.allclose(d, outs[0][0], rtol=0, atol=1e-14 * float(outs[0][0].abs().max()))
        assert float((g - outs[0][1]).norm() / outs[0][1].norm()) < 1e-12


# ---------------------------------------------------------------------------------------------------------------------
# batching, dtypes, locations, wavefields


def test_batch_of_models_equals_separate_calls():
    v, rho, dx, dt, amp, src, rec = _setup_small(nt=100)
    vb = torch.stack([v, v * 1.1, v.flip(0)]).requires_grad_()
    d = acoustic(vb, dx, dt, amp, src, rec, rho=rho)
    assert d.shape == (3, *amp.shape[:1], rec.shape[1], amp.shape[-1])
    (gb,) = torch.autograd.grad(d.square().sum(), vb)
    for i in range(3):
        vi = vb[i].detach().clone().requires_grad_()
        di = acoustic(vi, dx, dt, amp, src, rec, rho=rho)
        (gi,) = torch.autograd.grad(di.square().sum(), vi)
        assert torch.allclose(d[i], di, rtol=0, atol=1e-13 * float(di.detach().abs().max()))
        assert torch.allclose(gb[i], gi, rtol=1e-12, atol=1e-14 * float(gi.abs().max()))


def test_batch_with_per_model_geometry():
    v, _, dx, dt, amp, src, rec = _setup_small(nt=80)
    vb = torch.stack([v, v * 0.9])
    src_b = torch.stack([src, src.flip(0)])
    amp_b = torch.stack([amp, 2 * amp])
    d = acoustic(vb, dx, dt, amp_b, src_b, rec)
    for i in range(2):
        assert torch.allclose(d[i], acoustic(vb[i], dx, dt, amp_b[i], src_b[i], rec), rtol=0, atol=1e-12)


def test_float32_agrees_with_float64():
    v, rho, dx, dt, amp, src, rec = _setup_small(nt=150)
    d64 = acoustic(v, dx, dt, amp, src, rec, rho=rho)
    d32 = acoustic(v.float(), dx, dt, amp.float(), src, rec, rho=rho.float())
    assert d32.dtype == torch.float32 and d64.dtype == torch.float64
    # float32 rounding accumulated over 150 steps of a stable scheme: ~1e-6 of the peak
    assert float((d32.double() - d64).abs().max()) < 1e-5 * float(d64.abs().max())


def test_every_grid_index_is_a_valid_location():
    nz, nx = 12, 15
    v = torch.full((nz, nx), 2000.0, dtype=F64)
    w = ricker(25.0, 100, 5e-4, dtype=F64)[None, None]
    corners = [(0, 0), (0, nx - 1), (nz - 1, 0), (nz - 1, nx - 1)]
    for c in corners:
        d = acoustic(v, 5.0, 5e-4, w, _loc(c), _loc(*corners), pml_width=10)
        assert torch.isfinite(d).all() and float(d[0, corners.index(c)].abs().max()) > 0
    for bad in [(-1, 3), (nz, 3), (3, nx), (3, -2)]:
        with pytest.raises(ValueError, match=re.escape("is outside the model grid: valid indices are 0 <= z < 12")):
            acoustic(v, 5.0, 5e-4, w, _loc(bad), _loc((1, 1)))
        with pytest.raises(ValueError, match="receiver_locations.*outside the model grid"):
            acoustic(v, 5.0, 5e-4, w, _loc((1, 1)), _loc(bad))


def test_wavefield_snapshots_match_the_receivers():
    v, rho, dx, dt, amp, src, rec = _setup_small(nt=90)
    d, wf = acoustic(v, dx, dt, amp, src, rec, return_wavefield=True)
    assert wf.shape == (2, 90, *v.shape)
    z, x = rec[..., 0], rec[..., 1]
    for s in range(2):
        assert torch.equal(wf[s][:, z[s], x[s]].T, d[s])
    d4, wf4 = acoustic(v, dx, dt, amp, src, rec, return_wavefield=True, wavefield_every=4, checkpoint_every=7)
    assert wf4.shape == (2, 23, *v.shape) and torch.equal(wf4, wf[:, ::4]) and torch.equal(d4, d)
    # the snapshots are differentiable too (a loss on them only): compare with the reference through the receivers
    vg = v.clone().requires_grad_()
    _, wfg = acoustic(vg, dx, dt, amp, src, rec, return_wavefield=True, wavefield_every=3, checkpoint_every=20)
    (g,) = torch.autograd.grad(wfg[:, :, 5, 7].sum(), vg)
    probe = torch.tensor([[[5, 7]]] * 2)
    vr = v.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(acoustic(vr, dx, dt, amp, src, probe)[..., ::3].sum(), vr)
    assert float((g - g_ref).norm() / g_ref.norm()) < 1e-12


# ---------------------------------------------------------------------------------------------------------------------
# input checks


def test_error_messages():
    v, rho, dx, dt, amp, src, rec = _setup_small(dtype=torch.float32, nt=50)
    call = lambda **kw: acoustic(**{**dict(v=v, dx=dx, dt=dt, source_amplitudes=amp, source_locations=src,  # noqa
                                           receiver_locations=rec), **kw})
    bad = v.clone()
    bad[3, 4] = float("nan")
    with pytest.raises(ValueError, match="v must be finite everywhere, got 1 NaN/inf values"):
        call(v=bad)
    bad = v.clone()
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="v must be positive everywhere, got minimum -1.0"):
        call(v=bad)
    with pytest.raises(ValueError, match="rho must be positive everywhere, got minimum 0"):
        call(rho=torch.zeros_like(v))
    with pytest.raises(ValueError, match=re.escape("rho must have the shape of v (20, 24)")):
        call(rho=rho[:10])
    with pytest.raises(ValueError, match=re.escape("v must be shaped (nz, nx) or (batch, nz, nx), got shape (24,)")):
        call(v=v[0])
    with pytest.raises(ValueError, match="source_locations has 1 shots but source_amplitudes has 2"):
        call(source_locations=src[:1])
    with pytest.raises(ValueError, match="receiver_locations has 3 shots but source_amplitudes has 2"):
        call(receiver_locations=rec[:1].repeat(3, 1, 1))
    with pytest.raises(ValueError, match="source_locations has 2 sources per shot but source_amplitudes has 1"):
        call(source_locations=src.repeat(1, 2, 1))
    with pytest.raises(ValueError, match=re.escape("source_amplitudes must be shaped [n_shots, n_sources_per_shot")):
        call(source_amplitudes=amp[0])
    with pytest.raises(TypeError, match="source_locations must hold integer grid indices"):
        call(source_locations=src.float())
    with pytest.raises(ValueError, match="accuracy must be one of"):
        call(accuracy=6)
    with pytest.raises(ValueError, match="checkpoint_every must be None or a positive int"):
        call(checkpoint_every=0)
    with pytest.raises(ValueError, match="dx must be a positive finite number, got -5.0"):
        call(dx=-5.0)
    # the CFL limit for accuracy 4 in 2D: dt_max = 2 dx / (vmax sqrt(2 * 16/3))
    dt_max = 2 * dx / (float(v.max()) * math.sqrt(2 * 16 / 3))
    with pytest.raises(ValueError, match=re.escape(f"the largest stable dt is {dt_max:.6g} s")):
        call(dt=1.01 * dt_max)
    call(dt=0.99 * dt_max, source_amplitudes=ricker(5.0, 50, 0.99 * dt_max).expand(2, 1, 50))  # stable: no error
    w_hi = ricker(200.0, 50, dt).expand(2, 1, 50)  # 200 Hz on a 5 m grid at 1800 m/s: < 1 point per wavelength
    with pytest.warns(UserWarning, match=r"only 0\.\d\d grid points per minimum wavelength"):
        call(source_amplitudes=w_hi)


def test_sampling_warning_fires_once_per_call_site(monkeypatch):
    # An inversion calls the solver from one line with a new model every time: the warning's text carries the
    # changing vmin, so Python's once-per-location rule alone would repeat it at every call.
    monkeypatch.setattr(_checks, "_WARNED_SITES", set())  # forget the sites of the other backend's run
    v, _, dx, dt, _, src, rec = _setup_small(dtype=torch.float32, nt=50)
    w_hi = ricker(200.0, 50, dt).expand(2, 1, 50)  # < 1 point per wavelength: the warning's condition
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's default action for UserWarning (overrides this file's ignore)
        for k in range(50):
            acoustic(v * (1 + 1e-3 * k), dx, dt, w_hi, src, rec, pml_width=3)  # one call site, vmin changes
        for gradient in ("fused", "autograd"):  # a second call site (reached through a longer path inside physics)
            acoustic(v * 1.01, dx, dt, w_hi, src, rec, pml_width=3, gradient=gradient)
    shown = [w for w in caught if "grid points per minimum wavelength" in str(w.message)]
    assert len(shown) == 2
    # each is attributed to the user's line that called the solver, not to a line inside probinv.physics
    assert [w.filename for w in shown] == [__file__] * 2 and shown[0].lineno != shown[1].lineno
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what pytest.warns sets: every call is shown
        for k in range(3):
            acoustic(v * (1 + 1e-3 * k), dx, dt, w_hi, src, rec, pml_width=3)
    assert sum("grid points per minimum wavelength" in str(w.message) for w in caught) == 3


@pytest.mark.parametrize("options", [dict(free_surface=True, accuracy=8), dict(rho=True, pml_width=(2, 7, 0, 5))])
def test_strip_kernel_equals_full_grid_kernel(options, monkeypatch):
    # the fast kernel (CPML only in the layer strips, in-place buffers) against the plain full-grid kernel;
    # the submodule via sys.modules: the package attribute probinv.physics.acoustic is the function
    module = sys.modules["probinv.physics.acoustic"]
    v, rho, dx, dt, amp, src, rec = _setup_small(nt=90)
    r = rho if options.get("rho") else None
    opts = {k: o for k, o in options.items() if k != "rho"}
    results = []
    for fast in (True, False):
        monkeypatch.setattr(module, "_FAST_KERNEL", fast)
        vg = v.clone().requires_grad_()
        d = acoustic(vg, dx, dt, amp, src, rec, rho=r, checkpoint_every=40, backend="torch", **opts)
        (g,) = torch.autograd.grad(d.square().sum(), vg)
        results.append((d.detach(), g))
    (d1, g1), (d2, g2) = results
    assert float((d1 - d2).abs().max()) < 1e-13 * float(d2.abs().max())
    assert float((g1 - g2).norm() / g2.norm()) < 1e-12


def test_free_surface_on_a_very_shallow_model_uses_the_full_kernel():
    # nz < accuracy: the bottom layer reaches the mirror rows, the torch path runs its full-grid kernel (the
    # compiled kernel needs no special case); gradients still exact on both
    v = torch.full((3, 12), 2000.0, dtype=F64).requires_grad_()
    w = ricker(20.0, 60, 5e-4, dtype=F64)[None, None]
    d = acoustic(v, 5.0, 5e-4, w, _loc((1, 3)), _loc((0, 9)), free_surface=True, accuracy=8, pml_width=4)
    d_ref = _propagate_reference(v, 5.0, 5e-4, w, _loc((1, 3)), _loc((0, 9)), free_surface=True, accuracy=8,
                                 pml_width=4)
    g = torch.autograd.grad(d.square().sum(), v)[0]
    g_ref = torch.autograd.grad(d_ref.square().sum(), v)[0]
    assert torch.allclose(d, d_ref, rtol=0, atol=1e-13 * float(d_ref.detach().abs().max()))
    assert float((g - g_ref).norm() / g_ref.norm()) < 1e-12


def test_pml_vmax_makes_the_forward_map_continuous_across_the_rounding_step():
    # Default CPML strength = model vmax rounded up to 2 digits: scaling a model across 2200 m/s switches the
    # layer from 2200 to 2300 m/s, a jump in the data. With a fixed pml_vmax the map is smooth: a 1e-4 relative
    # change of v then changes the data by O(1e-4) (linear response), far below the jump.
    v = torch.full((20, 20), 2000.0, dtype=torch.float64)
    v[8:12, 8:12] = 2200.0
    amp = ricker(10.0, 200, 0.002, dtype=torch.float64).reshape(1, 1, -1)
    src, rec = torch.tensor([[[2, 10]]]), torch.tensor([[[17, k] for k in range(0, 20, 3)]])

    def run(scale, **kw):
        return acoustic(v * scale, 10.0, 0.002, amp, src, rec, pml_width=5, **kw)

    lo, hi = 2199.99 / 2200, 2200.01 / 2200
    base = run(lo).norm()
    jump = float((run(hi) - run(lo)).norm() / base)
    smooth = float((run(hi, pml_vmax=2600.0) - run(lo, pml_vmax=2600.0)).norm() / base)
    assert smooth < 1e-4 and jump > 10 * smooth
    with pytest.raises(ValueError, match="pml_vmax"):
        run(1.0, pml_vmax=-1.0)
