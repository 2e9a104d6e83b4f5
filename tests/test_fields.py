"""Tests of probinv.fields: covariance/spectrum normalisation, exact FFT sampling, whitened and box priors.

Statistical checks compare estimates with their analytic values within a multiple of the estimate's own standard
error, computed exactly for Gaussian fields (Isserlis' theorem) rather than guessed; the seeds are fixed, so the tests
are deterministic, and 5 standard errors leave room for the few dozen comparisons made per test.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import torch
from covariance_stats import lag_covariance, pooled_estimate, pooled_se

from probinv import fields as F
from probinv.fields import (
    BoxField,
    WhitenedField,
    matern_covariance,
    matern_spectrum,
    sample_grf,
    von_karman_covariance,
    von_karman_spectrum,
)


# ----------------------------------------------------------------------------------------------------------------------
# covariance functions and spectra
# ----------------------------------------------------------------------------------------------------------------------
def test_covariance_closed_forms_and_bessel_formula():
    r = np.array([0.0, 1e-9, 0.3, 1.0, 2.5, 10.0, 60.0])
    # nu = 1/2 and 3/2 have closed forms; independent of the kve-based general branch used for other nu
    np.testing.assert_allclose(von_karman_covariance(r, 0.0, hurst=0.5, a_z=1.0, a_x=1.0), np.exp(-r), rtol=1e-14)
    np.testing.assert_allclose(matern_covariance(0.0, r * 2.0, nu=1.5, a_z=1.0, a_x=2.0), (1 + r) * np.exp(-r),
                               rtol=1e-14)
    # general branch vs the textbook formula with the unscaled Bessel K (r > 0; r = 0 is the limit 1)
    for nu in (0.3, 0.5 + 1e-9, 1.0, 2.2):
        rp = r[r > 1e-3]
        direct = 2 ** (1 - nu) / scipy.special.gamma(nu) * rp ** nu * scipy.special.kv(nu, rp)
        np.testing.assert_allclose(matern_covariance(rp, 0.0, nu=nu, a_z=1.0, a_x=1.0), direct, rtol=1e-9, atol=1e-300)
        assert matern_covariance(0.0, 0.0, nu=nu, a_z=1.0, a_x=1.0) == 1.0
    # anisotropy: r = sqrt((hz/az)^2 + (hx/ax)^2)
    got = von_karman_covariance(torch.tensor([300.0], dtype=torch.float64), 400.0, hurst=0.5, a_z=100.0, a_x=200.0)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    assert got.item() == pytest.approx(math.exp(-math.hypot(3.0, 2.0)), rel=1e-12)


@pytest.mark.parametrize("nu", [0.25, 0.5, 1.5])
def test_spectrum_is_normalised_fourier_transform_of_covariance(nu):
    a = 2.0  # isotropic: rho(r) = (2 pi)^-1 int_0^inf P(k) J0(k r) k dk (Hankel transform of the 2D FT)
    # variance: (2 pi)^-2 int P dk = 1; quad is accurate to ~1e-10 on this smooth integrand
    var = scipy.integrate.quad(lambda k: von_karman_spectrum(torch.tensor(k, dtype=torch.float64), 0.0, hurst=nu,
                                                             a_z=a, a_x=a).item() * k, 0, np.inf)[0] / (2 * np.pi)
    assert var == pytest.approx(1.0, rel=1e-8)
    # lag r > 0 (nu = 1.5: integrand decays as k^-4; J0 oscillations handled by splitting at its zeros)
    if nu == 1.5:
        for r in (0.5, 2.0, 5.0):
            zeros = scipy.special.jn_zeros(0, 400) / r
            pts = np.concatenate([[0.0], zeros])
            def f(k, r=r):
                return (4 * np.pi * nu * a * a / (1 + k * k * a * a) ** (nu + 1)) * scipy.special.j0(k * r) * k
            total = sum(scipy.integrate.quad(f, lo, hi)[0] for lo, hi in zip(pts[:-1], pts[1:], strict=True))
            total /= 2 * np.pi
            assert total == pytest.approx(matern_covariance(r, 0.0, nu=nu, a_z=a, a_x=a), abs=1e-6)
        # anisotropic normalisation (k = q / a per axis gives the same integral): Riemann sum on |k| <= 400, whose
        # truncated tail holds ~ (400 a)^-3 of the mass
        kz = torch.linspace(-400, 400, 2001, dtype=torch.float64)
        kk = kz[1] - kz[0]
        p = matern_spectrum(kz[:, None], kz[None, :], nu=nu, a_z=0.5, a_x=0.25)
        assert float(p.sum() * kk * kk) / (2 * np.pi) ** 2 == pytest.approx(1.0, rel=2e-3)
    # the torch function follows dtype/device and is differentiable
    k = torch.tensor([0.1, 1.0], dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda k: matern_spectrum(k, 0.5 * k, nu=nu, a_z=1.5, a_x=0.7), (k,))


# ----------------------------------------------------------------------------------------------------------------------
# FFT sampling
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("covariance,kw,a_z,a_x", [
    ("von_karman", dict(hurst=0.5), 3.0, 5.0),
    ("matern", dict(nu=1.5), 4.0, 2.5),  # smooth: needs more than the minimal 2x padding
])
def test_sample_grf_has_the_analytic_covariance(covariance, kw, a_z, a_x):
    shape, dx, n = (24, 20), 1.0, 3000
    g = torch.Generator().manual_seed(1)
    f = sample_grf(shape, dx, n=n, covariance=covariance, **kw, a_z=a_z, a_x=a_x, mean=2.0, std=3.0, generator=g,
                   dtype=torch.float64)
    assert f.shape == (n, *shape) and f.dtype == torch.float64
    nu = kw.get("hurst", kw.get("nu"))
    c = lag_covariance(shape, dx, nu, a_z, a_x)
    # lags include the far edges: a periodic field would correlate opposite edges strongly, ours must not
    for hz, hx in [(0, 0), (1, 0), (0, 1), (3, 0), (0, 5), (2, 3), (8, 0), (0, 12), (23, 0), (0, 19), (23, 19)]:
        est = pooled_estimate(f, 2.0, hz, hx) / 9.0
        se = pooled_se(c, shape, hz, hx, n)
        exact = float(c(hz, hx)[0])
        assert abs(est - exact) < 5 * se, (hz, hx, est, exact, se)
    # mean: SE of the sample-and-space average = sqrt(sum_ij C_ij / N^2 / n)
    nz, nx = shape
    dz = np.arange(-(nz - 1), nz)[:, None]
    dxx = np.arange(-(nx - 1), nx)[None, :]
    se_mean = 3.0 * math.sqrt(float(((nz - abs(dz)) * (nx - abs(dxx)) * c(dz, dxx)).sum()) / (nz * nx) ** 2 / n)
    assert abs(float(f.mean()) - 2.0) < 5 * se_mean


def _tapered_periodogram(f, dx):
    nz, nx = f.shape[-2:]
    wz = torch.sin(math.pi * (torch.arange(nz, dtype=f.dtype) + 0.5) / nz) ** 2
    wx = torch.sin(math.pi * (torch.arange(nx, dtype=f.dtype) + 0.5) / nx) ** 2
    w = wz[:, None] * wx[None, :]
    return (torch.fft.fft2(f * w).abs() ** 2).mean(0) * dx * dx / float((w ** 2).sum())


def test_sample_grf_power_spectrum():
    nz = nx = 64
    dx, a, nu, n = 10.0, 40.0, 1.0, 600
    f = sample_grf((nz, nx), dx, n=n, covariance="matern", nu=nu, a_z=a, a_x=a, generator=torch.Generator()
                   .manual_seed(2), dtype=torch.float64)
    per = _tapered_periodogram(f, dx).numpy()
    # exact expected (Hann-tapered) periodogram from the analytic covariance: dx^2 / sum w^2 sum_h (w*w)(h) C(h) e^-ikh
    h = np.arange(-(nz - 1), nz)
    cov = matern_covariance(h[:, None] * dx, h[None, :] * dx, nu=nu, a_z=a, a_x=a)
    w = np.sin(np.pi * (np.arange(nz) + 0.5) / nz) ** 2
    ac = np.correlate(w, w, "full")
    k = 2 * np.pi * np.fft.fftfreq(nz, dx)
    e = np.exp(-1j * np.outer(k, h * dx))
    expected = (e @ (np.outer(ac, ac) * cov) @ e.T).real * dx * dx / (w ** 2).sum() ** 2
    # each periodogram ordinate is about exponential (chi^2_2 / 2, relative sd 1; chi^2_1 on the axes, sd sqrt 2):
    # the average of n has relative SE <= sqrt(2 / n) = 5.8 %; 5 SE bound per frequency, and the mean ratio over the
    # 4096 ordinates (strongly averaged) within 1 %
    ratio = per / expected
    assert np.abs(ratio - 1).max() < 5 * math.sqrt(2 / n)
    assert abs(ratio.mean() - 1) < 0.01
    # shape: the analytic spectrum (aliases summed) matches within 12 % above the taper's resolution k a >= 0.8 (the
    # Hann window smooths the peak below that); measured bias of the expected periodogram vs P here: <= 7 %
    kz, kx = np.meshgrid(k, k, indexing="ij")
    aliased = sum(matern_spectrum(torch.tensor(kz + 2 * np.pi * i / dx), torch.tensor(kx + 2 * np.pi * j / dx), nu=nu,
                                  a_z=a, a_x=a).numpy() for i in range(-4, 5) for j in range(-4, 5))
    kk = np.hypot(kz, kx)
    band = kk * a >= 0.8
    assert np.abs(expected[band] / aliased[band] - 1).max() < 0.12
    # radially binned empirical spectrum vs analytic: log-log slope -(2 nu + 2) = -4 in 2 < k a < 8
    bins = np.geomspace(2 / a, 8 / a, 9)
    centers, emp, ana = [], [], []
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        m = (kk >= lo) & (kk < hi)
        centers.append(np.sqrt(lo * hi))
        emp.append(per[m].mean())
        ana.append(aliased[m].mean())
    np.testing.assert_allclose(emp, ana, rtol=0.12)
    slope = np.polyfit(np.log(centers), np.log(emp), 1)[0]
    slope_ana = np.polyfit(np.log(centers), np.log(ana), 1)[0]
    assert slope == pytest.approx(slope_ana, abs=0.1)
    assert slope_ana == pytest.approx(-4.0, abs=0.35)  # k a = 2 is not yet fully asymptotic: (1 + 4)^-2 vs 4^-2


def test_sample_grf_reproducible_and_mean_tensor():
    kw = dict(hurst=0.5, a_z=30.0, a_x=30.0, std=2.0, dtype=torch.float64)
    a = sample_grf((8, 6), 10.0, n=3, generator=torch.Generator().manual_seed(5), **kw)
    b = sample_grf((8, 6), 10.0, n=3, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a, b)
    background = torch.linspace(1500.0, 3000.0, 8, dtype=torch.float64)[:, None].expand(8, 6)
    c = sample_grf((8, 6), 10.0, n=3, generator=torch.Generator().manual_seed(5), mean=background, **kw)
    torch.testing.assert_close(c - background, a)
    odd = sample_grf((7, 5), 10.0, n=5, hurst=0.5, a_z=30.0, a_x=30.0)  # odd n: one imaginary part unused
    assert odd.shape == (5, 7, 5) and odd.dtype == torch.get_default_dtype()


# ----------------------------------------------------------------------------------------------------------------------
# Karhunen-Loeve modes and WhitenedField
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 5), (5, 8), (7, 7)])
def test_symmetry_split_eigh_equals_dense(shape):
    dx, a_z, a_x, nu = 10.0, 25.0, 40.0, 0.8
    lam, modes = F.grid_covariance_eigh(shape, dx, covariance="matern", nu=nu, a_z=a_z, a_x=a_x)
    nz, nx = shape
    dense = _dense_correlation(shape, dx, nu, a_z, a_x)
    torch.testing.assert_close(lam, torch.linalg.eigvalsh(dense).flip(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(modes.T @ modes, torch.eye(nz * nx, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(modes @ torch.diag(lam) @ modes.T, dense, rtol=0, atol=1e-12)


def _dense_correlation(shape, dx, nu, a_z, a_x):
    nz, nx = shape
    zz, xx = np.meshgrid(np.arange(nz), np.arange(nx), indexing="ij")
    zz, xx = zz.ravel(), xx.ravel()
    return torch.as_tensor(matern_covariance((zz[:, None] - zz[None, :]) * dx, (xx[:, None] - xx[None, :]) * dx,
                                             nu=nu, a_z=a_z, a_x=a_x))


# modes needed for 90 / 95 / 99 % of the prior variance on 64 x 64 at dx = 160 m, a = 1.6 km (documented in
# WhitenedField's docstring)
DIMENSION_REDUCTION = {"von_karman": (dict(hurst=0.5), (326, 1049, 3226)), "matern": (dict(nu=1.5), (16, 27, 79))}


@pytest.mark.parametrize("covariance", ["von_karman", "matern"])
def test_dimension_reduction_on_64x64(covariance):
    kw, counts = DIMENSION_REDUCTION[covariance]
    w = WhitenedField((64, 64), 160.0, covariance=covariance, **kw, a_z=1600.0, a_x=1600.0, mean=3000.0, std=150.0,
                      n_modes=counts[0], dtype=torch.float64)
    assert tuple(w.modes_for_variance(f) for f in (0.90, 0.95, 0.99)) == counts
    # the counts are minimal: one mode fewer holds less than the fraction
    cum = torch.cumsum(w.eigenvalues, 0) / w.eigenvalues.sum()
    for f, k in zip((0.90, 0.95, 0.99), counts, strict=True):
        assert float(cum[k - 2]) < f <= float(cum[k - 1])
    assert w.explained_variance == pytest.approx(float(cum[counts[0] - 1]), rel=1e-12)
    # the trace is exact: N std^2
    assert float(w.eigenvalues.sum()) == pytest.approx(4096 * 150.0 ** 2, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("covariance", ["von_karman", "matern"])
def test_dimension_reduction_against_dense_eigvalsh(covariance):
    kw, counts = DIMENSION_REDUCTION[covariance]
    nu = kw.get("hurst", kw.get("nu"))
    lam = torch.linalg.eigvalsh(_dense_correlation((64, 64), 160.0, nu, 1600.0, 1600.0)).flip(0)
    cum = torch.cumsum(lam, 0) / lam.sum()
    assert tuple(int(torch.searchsorted(cum, f)) + 1 for f in (0.90, 0.95, 0.99)) == counts
    ours, _ = F.grid_covariance_eigh((64, 64), 160.0, covariance=covariance, **kw, a_z=1600.0, a_x=1600.0)
    torch.testing.assert_close(ours, lam.clamp_min(0), rtol=0, atol=1e-10)


def test_leading_modes_and_disk_cache(tmp_path):
    kw = dict(covariance="von_karman", hurst=0.5, a_z=30.0, a_x=45.0)
    lam, full = F.grid_covariance_eigh((9, 10), 10.0, **kw)
    lam5, lead = F.grid_covariance_eigh((9, 10), 10.0, **kw, n_modes=5)
    torch.testing.assert_close(lead, full[:, :5], rtol=0, atol=0)  # same modes, same signs
    assert torch.equal(lam, lam5)
    w1 = WhitenedField((9, 10), 10.0, **kw, n_modes=7, cache_dir=tmp_path, dtype=torch.float64)
    files = list(tmp_path.glob("grid_eigh_9x10_*.pt"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    F._karhunen_loeve._grid_eigh_memo.cache_clear()  # a new process: the modes come from the file
    w2 = WhitenedField((9, 10), 10.0, **kw, n_modes=7, cache_dir=tmp_path, dtype=torch.float64)
    assert torch.equal(w1.modes, w2.modes) and torch.equal(w1.scales, w2.scales)
    torch.testing.assert_close(w1.modes, full[:, :7], rtol=0, atol=0)


@pytest.mark.parametrize("covariance,kw", [("von_karman", dict(hurst=0.5)), ("matern", dict(nu=1.5))])
def test_iterative_leading_modes_match_dense(covariance, kw):
    shape, k = (30, 26), 40
    args = dict(covariance=covariance, **kw, a_z=80.0, a_x=120.0)
    lam, dense = F.grid_covariance_eigh(shape, 10.0, **args, n_modes=k)
    lam_it, modes = F.grid_covariance_eigh(shape, 10.0, **args, n_modes=k, method="iterative")
    assert lam_it.shape == (k,) and modes.shape == (780, k)
    # Ritz values converge to 1e-9 of lambda_1; the ordering of near-degenerate pairs may differ, so compare the
    # spanned subspaces through the projected covariance rather than mode by mode
    torch.testing.assert_close(lam_it, lam[:k], rtol=1e-6, atol=1e-9 * float(lam[0]))
    torch.testing.assert_close(modes.T @ modes, torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-10)
    dense_full = _dense_correlation(shape, 10.0, kw.get("hurst", kw.get("nu")), 80.0, 120.0)
    torch.testing.assert_close(modes.T @ dense_full @ modes, torch.diag(lam_it), rtol=0, atol=1e-6 * float(lam[0]))
    w = WhitenedField(shape, 10.0, **args, n_modes=k, method="iterative", dtype=torch.float64)
    assert w.explained_variance == pytest.approx(float(lam[:k].sum()) / 780, rel=1e-7)
    z = torch.randn(3, k, dtype=torch.float64)
    torch.testing.assert_close(w.inverse(w(z)), z, rtol=0, atol=1e-9)
    assert w.modes_for_variance(w.explained_variance) == k
    with pytest.raises(ValueError, match=re.escape(f"only the {k} leading eigenvalues are known")):
        w.modes_for_variance(0.999)


def test_whitened_full_rank_has_the_analytic_covariance():
    shape, dx, std = (8, 7), 50.0, 120.0
    w = WhitenedField(shape, dx, covariance="von_karman", hurst=0.5, a_z=150.0, a_x=250.0, mean=2500.0, std=std,
                      retained_variance=1.0, dtype=torch.float64)
    assert w.latent_dim == 56 and w.explained_variance == pytest.approx(1.0, abs=1e-14)
    cov = std ** 2 * _dense_correlation(shape, dx, 0.5, 150.0, 250.0)
    L = w.modes * w.scales
    torch.testing.assert_close(L @ L.T, cov, rtol=0, atol=1e-9 * std ** 2)  # exact up to rounding
    # and the samples: entry-wise sample covariance within 5 SE, SE_ij = sqrt((C_ii C_jj + C_ij^2) / n)
    n = 20000
    z = torch.randn(n, w.latent_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    f = w(z).reshape(n, -1) - 2500.0
    emp = f.T @ f / n
    se = torch.sqrt((torch.outer(cov.diagonal(), cov.diagonal()) + cov ** 2) / n)
    assert float(((emp - cov).abs() / se).max()) < 5


def test_whitened_truncation_keeps_explained_variance():
    w = WhitenedField((10, 12), 20.0, covariance="matern", nu=1.5, a_z=60.0, a_x=60.0, std=2.0, n_modes=12,
                      dtype=torch.float64)
    lam = w.eigenvalues
    assert w.explained_variance == pytest.approx(float(lam[:12].sum() / lam.sum()), rel=1e-14)
    assert 0.8 < w.explained_variance < 1.0
    assert float(lam.sum()) == pytest.approx(120 * 4.0, rel=1e-12)  # trace = N std^2
    n = 20000
    f = w.sample(n, generator=torch.Generator().manual_seed(6))
    total = float((f ** 2).mean())  # mean pixel variance (mean 0 known)
    # SE: the total variance sum_k s_k^2 z_k^2 / N has variance 2 sum_k s_k^4 / N^2 / n
    se = math.sqrt(2 * float((w.scales ** 4).sum()) / n) / 120
    assert abs(total - 4.0 * w.explained_variance) < 5 * se
    assert w.modes_for_variance(w.explained_variance) == 12
    assert w.modes_for_variance(1.0) <= 120


def test_whitened_round_trips_and_least_squares():
    w = WhitenedField((9, 8), 10.0, covariance="matern", nu=0.7, a_z=30.0, a_x=20.0, mean=1.0, std=0.5, n_modes=20,
                      dtype=torch.float64)
    z = torch.randn(3, 4, 20, dtype=torch.float64)
    f = w(z)
    assert f.shape == (3, 4, 9, 8)
    torch.testing.assert_close(w.inverse(f), z, rtol=0, atol=1e-10)
    # a field outside the span: inverse is the least-squares fit, so the residual is orthogonal to every kept mode
    g = 1.0 + torch.randn(9, 8, dtype=torch.float64)
    resid = (g - w(w.inverse(g))).reshape(-1)
    assert float((resid @ w.modes).abs().max()) < 1e-10
    # full rank, bounded: exact both ways
    wb = WhitenedField((6, 6), 10.0, covariance="von_karman", hurst=0.5, a_z=30.0, a_x=30.0, mean=3000.0, std=150.0,
                       bounds=(2000.0, 3500.0), retained_variance=1.0, dtype=torch.float64)
    z = torch.randn(5, 36, dtype=torch.float64)
    torch.testing.assert_close(wb.inverse(wb(z)), z, rtol=0, atol=1e-8)


def test_whitened_bounds():
    lo, hi = 1500.0, 4500.0
    mean = torch.linspace(2000.0, 4000.0, 6)[:, None].expand(6, 5)  # mean varying with depth
    w = WhitenedField((6, 5), 100.0, covariance="matern", nu=1.5, a_z=300.0, a_x=300.0, mean=mean, std=400.0,
                      bounds=(lo, hi), n_modes=10, dtype=torch.float64)
    torch.testing.assert_close(w(torch.zeros(10, dtype=torch.float64)), mean.double(), rtol=0, atol=1e-9)
    # slope 1 at the mean: at z = 0 the bounded map's vector-Jacobian products equal the Gaussian map's
    v = torch.randn(6, 5, dtype=torch.float64)
    z0 = torch.zeros(10, dtype=torch.float64, requires_grad=True)
    (gb,) = torch.autograd.grad((w(z0) * v).sum(), z0)
    (gg,) = torch.autograd.grad((w.gaussian(z0) * v).sum(), z0)
    torch.testing.assert_close(gb, gg, rtol=1e-12, atol=1e-9)
    # extreme latents stay inside, finite, and monotone per pixel
    big = torch.linspace(-1e4, 1e4, 201, dtype=torch.float64)[:, None] * torch.ones(10, dtype=torch.float64)
    f = w(big)
    assert bool(torch.isfinite(f).all()) and float(f.min()) >= lo and float(f.max()) <= hi
    assert float(f.min()) < lo + 1 and float(f.max()) > hi - 1
    f32 = WhitenedField((6, 5), 100.0, covariance="matern", nu=1.5, a_z=300.0, a_x=300.0, mean=3000.0, std=400.0,
                        bounds=(lo, hi), n_modes=10)(big.float())
    assert bool(torch.isfinite(f32).all()) and float(f32.min()) >= lo and float(f32.max()) <= hi


def test_whitened_differentiable_and_dtype():
    w = WhitenedField((5, 4), 10.0, covariance="matern", nu=1.5, a_z=20.0, a_x=20.0, mean=3.0, std=1.0, n_modes=6,
                      bounds=(0.0, 10.0), dtype=torch.float64)
    z = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(w, (z,))
    w32 = WhitenedField((5, 4), 10.0, covariance="matern", nu=1.5, a_z=20.0, a_x=20.0, n_modes=6)
    assert w32.modes.dtype == torch.float32 and w32(torch.zeros(6)).dtype == torch.float32
    with pytest.raises(TypeError, match=re.escape("z has dtype torch.float64 but the WhitenedField holds "
                                                  "torch.float32 buffers")):
        w32(torch.zeros(6, dtype=torch.float64))
    w64 = w32.to(torch.float64)
    assert w64(torch.zeros(6, dtype=torch.float64)).dtype == torch.float64
    assert set(dict(w.named_buffers())) >= {"modes", "scales", "mean_field", "eigenvalues", "lo", "hi"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_follows_cuda():
    dev = torch.device("cuda")
    f = sample_grf((16, 16), 10.0, n=3, a_z=40.0, a_x=40.0, device=dev, generator=torch.Generator(dev).manual_seed(0))
    assert f.device.type == "cuda"
    w = WhitenedField((6, 6), 10.0, nu=1.5, a_z=30.0, a_x=30.0, n_modes=5, bounds=(-3.0, 3.0), device=dev)
    z = torch.randn(4, 5, device=dev)
    assert w(z).device.type == "cuda"
    torch.testing.assert_close(w.inverse(w(z)), z, rtol=0, atol=1e-3)
    b = BoxField((3, 3), (1.0, 2.0), device=dev)
    assert b(torch.zeros(3, 3, device=dev)).device.type == "cuda"


# ----------------------------------------------------------------------------------------------------------------------
# BoxField
# ----------------------------------------------------------------------------------------------------------------------
def test_box_field():
    lo = torch.tensor([[1.0, 2.0, 3.0], [1.5, 2.5, 3.5]], dtype=torch.float64)
    b = BoxField((2, 3), (lo, lo + 2.0), dtype=torch.float64)
    assert b.latent_shape == (2, 3)
    u = torch.randn(4, 2, 3, dtype=torch.float64) * 3
    f = b(u)
    assert bool(((f > lo) & (f < lo + 2)).all())
    torch.testing.assert_close(b.inverse(f), u, rtol=0, atol=1e-10)
    extreme = b(torch.full((2, 3), 1e4, dtype=torch.float64))
    torch.testing.assert_close(extreme, lo + 2.0)
    # log|det J| against the autograd Jacobian of the 6 -> 6 map
    u0 = torch.randn(2, 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: b(v.reshape(2, 3)).reshape(-1), u0.reshape(-1))
    assert float(b.log_abs_det_jacobian(u0)) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), rel=1e-12)
    assert b.log_abs_det_jacobian(u).shape == (4,)
    # keyword form, uniform samples (mean (lo + hi)/2, SE 2/sqrt(12 n))
    b2 = BoxField((2, 3), lo=0.0, hi=2.0)
    s = b2.sample(30000, generator=torch.Generator().manual_seed(0))
    assert abs(float(s.mean()) - 1.0) < 5 * 2 / math.sqrt(12 * s.numel())
    torch.testing.assert_close(b2.mean_field, torch.ones(2, 3))


# ----------------------------------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------------------------------
def test_error_messages():
    kw = dict(a_z=10.0, a_x=10.0)
    with pytest.raises(ValueError, match=re.escape("dx must be a positive finite number, got -1.0")):
        sample_grf((4, 4), -1.0, **kw)
    with pytest.raises(ValueError, match=re.escape("a_z must be a positive finite number, got 0.0")):
        sample_grf((4, 4), 1.0, a_z=0.0, a_x=1.0)
    with pytest.raises(ValueError, match=re.escape("std must be a positive finite number, got 0")):
        sample_grf((4, 4), 1.0, std=0, **kw)
    with pytest.raises(ValueError, match=re.escape("hurst must be a positive finite number, got -0.5")):
        sample_grf((4, 4), 1.0, hurst=-0.5, **kw)
    with pytest.raises(ValueError, match=re.escape("covariance='matern' needs the smoothness nu")):
        sample_grf((4, 4), 1.0, covariance="matern", **kw)
    with pytest.raises(ValueError, match=re.escape("covariance='matern' takes nu (got nu=1.5), not hurst (got "
                                                   "hurst=0.3)")):
        WhitenedField((4, 4), 1.0, covariance="matern", nu=1.5, hurst=0.3, **kw)
    with pytest.raises(ValueError, match=re.escape("covariance='von_karman' takes hurst (got hurst=0.5), not nu")):
        sample_grf((4, 4), 1.0, nu=1.5, **kw)
    with pytest.raises(ValueError, match=re.escape("covariance must be one of ('von_karman', 'matern'), got 'gauss'")):
        sample_grf((4, 4), 1.0, covariance="gauss", **kw)
    with pytest.raises(ValueError, match=re.escape("shape must be a pair (nz, nx) of positive integers, got nz = 0")):
        sample_grf((0, 4), 1.0, **kw)
    with pytest.raises(ValueError, match=re.escape("n must be a positive integer number of fields, got 0")):
        sample_grf((4, 4), 1.0, n=0, **kw)
    with pytest.raises(ValueError, match=re.escape("n_modes = 17 is larger than the grid: a 4 x 4 grid has at most "
                                                   "16 modes")):
        WhitenedField((4, 4), 1.0, nu=1.5, n_modes=17, **kw)
    with pytest.raises(ValueError, match=re.escape("bounds must satisfy lo < hi everywhere, got lo=5.0, hi=5.0")):
        WhitenedField((4, 4), 1.0, nu=1.5, mean=5.0, bounds=(5.0, 5.0), **kw)
    with pytest.raises(ValueError, match=re.escape("mean must lie strictly inside bounds (lo, hi) everywhere, "
                                                   "got mean range [6, 6]")):
        WhitenedField((4, 4), 1.0, nu=1.5, mean=6.0, bounds=(1.0, 5.0), **kw)
    w = WhitenedField((4, 4), 1.0, nu=1.5, n_modes=3, **kw)
    with pytest.raises(ValueError, match=re.escape("z must be shaped [..., latent_dim] = [..., 3], got (2, 4)")):
        w(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=re.escape("field must be shaped [..., nz, nx] = [..., 4, 4], got (4, 5)")):
        w.inverse(torch.zeros(4, 5))
    b = BoxField((2, 2), (0.0, 1.0))
    with pytest.raises(ValueError, match=re.escape("u must be shaped [..., nz, nx] = [..., 2, 2], got (3,)")):
        b(torch.zeros(3))
    with pytest.raises(ValueError, match=re.escape("field must lie strictly inside the bounds (lo, hi) to be inverted: "
                                                   "4 of 4 values are outside (field range [1, 1], bounds [0, 1])")):
        b.inverse(torch.ones(2, 2))
    with pytest.raises(ValueError, match=re.escape("BoxField needs bounds=(lo, hi) or both lo= and hi=")):
        BoxField((2, 2))
    with pytest.raises(ValueError, match=re.escape("shape (130, 128) has 16640 points: the dense eigendecomposition "
                                                   "is limited to 16384 points (128 x 128)")):
        WhitenedField((130, 128), 1.0, nu=1.5, method="dense", **kw)
    with pytest.raises(ValueError, match=re.escape("the iterative eigendecomposition of the 130 x 128 grid (16640 "
                                                   "points) needs n_modes between 1 and 4096, got n_modes=None")):
        WhitenedField((130, 128), 1.0, nu=1.5, **kw)
    with pytest.raises(ValueError, match=re.escape("method must be 'auto', 'dense' or 'iterative', got 'lanczos'")):
        WhitenedField((4, 4), 1.0, nu=1.5, method="lanczos", **kw)


def test_public_names_and_generic_checks():
    # the package re-exports its public names explicitly; paper 1's model family is a scenario now
    assert F.__all__ == sorted(F.__all__)
    assert {"BoxField", "WhitenedField", "grid_covariance_eigh", "sample_grf", "matern_covariance"} <= set(F.__all__)
    assert all(getattr(F, name).__module__.startswith("probinv.fields.") for name in F.__all__ if name.islower())
    assert not hasattr(F, "paper1_models")
    assert F.MAX_EIGH_POINTS == 128 * 128
    # positive scalars are checked by probinv.validation: TypeError for a non-number, ValueError for a bad number
    with pytest.raises(TypeError, match=re.escape("dx must be a real number, got str '1'")):
        sample_grf((4, 4), "1", a_z=1.0, a_x=1.0)
    with pytest.raises(TypeError, match=re.escape("std must be a real number, got bool True")):
        WhitenedField((4, 4), 1.0, nu=1.5, a_z=1.0, a_x=1.0, std=True)
    with pytest.raises(ValueError, match=re.escape("a_x must be a positive finite number, got inf")):
        matern_spectrum(1.0, 1.0, nu=1.5, a_z=1.0, a_x=math.inf)
    with pytest.raises(ValueError, match=re.escape("shape must be a pair (nz, nx) of positive integers, got 4")):
        BoxField(4, (0.0, 1.0))


def test_retained_variance_chooses_the_modes_and_discarded_variance_is_the_rest():
    """``retained_variance`` keeps the fewest modes holding the fraction (the count ``modes_for_variance`` gives, and
    the default is 0.99); ``discarded_variance`` is the diagonal of the prior covariance minus the kept part
    (computed here independently from the analytic dense covariance)."""
    shape, dx, std = (8, 7), 50.0, 120.0
    kw = dict(covariance="matern", nu=1.5, a_z=150.0, a_x=150.0, mean=2500.0, std=std, dtype=torch.float64)
    full = WhitenedField(shape, dx, retained_variance=1.0, **kw)
    for frac in (0.9, 0.99):
        w = WhitenedField(shape, dx, retained_variance=frac, **kw)
        assert w.latent_dim == full.modes_for_variance(frac) < 56
        assert frac <= w.retained_fraction < frac + float(full.eigenvalues[w.latent_dim - 1]) / full.total_variance
        cov = std ** 2 * _dense_correlation(shape, dx, 1.5, 150.0, 150.0)
        L = w.modes * w.scales
        expected = (cov - L @ L.T).diagonal().reshape(shape)
        torch.testing.assert_close(w.discarded_variance, expected, rtol=0, atol=1e-9 * std ** 2)  # rounding only
        # the mean discarded variance is the discarded fraction of the trace
        assert float(w.discarded_variance.mean()) == pytest.approx((1 - w.retained_fraction) * std ** 2, rel=1e-9)
    assert WhitenedField(shape, dx, **kw).latent_dim == full.modes_for_variance(0.99)  # the default
    assert float(full.discarded_variance.abs().max()) < 1e-9 * std ** 2
    with pytest.raises(ValueError, match="retained_variance"):
        WhitenedField(shape, dx, retained_variance=1.5, **kw)
    with pytest.raises(ValueError, match="not both"):
        WhitenedField(shape, dx, retained_variance=0.9, n_modes=3, **kw)


def test_discarded_variance_through_the_bounds_is_the_delta_method():
    """With bounds, the field-space discarded variance at a field is the Gaussian one times the squashing slope
    squared; the slope is checked against a central finite difference of ``forward`` (error O(h^2) ~ 1e-8)."""
    kw = dict(covariance="matern", nu=1.5, a_z=150.0, a_x=150.0, mean=2500.0, std=150.0, dtype=torch.float64)
    w = WhitenedField((6, 5), 50.0, retained_variance=0.9, bounds=(2000.0, 3200.0), **kw)
    z = torch.randn(w.latent_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    u = w.gaussian(z)
    f = w(z)
    h = 1e-3
    lo, hi = w.lo, w.hi
    sq = lambda uu: lo + (hi - lo) * torch.sigmoid(w._alpha * (uu - w.mean_field) + w._beta)  # noqa: E731
    slope = (sq(u + h) - sq(u - h)) / (2 * h)
    torch.testing.assert_close(w.discarded_variance_at(f), w.discarded_variance * slope ** 2, rtol=1e-6, atol=0)
    # at the prior mean the slope is 1
    torch.testing.assert_close(w.discarded_variance_at(w.mean_field), w.discarded_variance, rtol=1e-12, atol=0)


def test_linear_depth_trend_recovers_a_linear_model():
    from probinv.fields import linear_depth_trend
    z = torch.arange(10, dtype=torch.float64)[:, None]
    model = 1500.0 + 25.0 * z + torch.zeros(10, 4, dtype=torch.float64)
    torch.testing.assert_close(linear_depth_trend(model), model, rtol=0, atol=1e-9)
    bumpy = model + torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = linear_depth_trend(bumpy)
    # least squares: the residual is orthogonal to 1 and z
    r = (bumpy - t)
    assert abs(float(r.sum())) < 1e-8 and abs(float((r * z).sum())) < 1e-8
    with pytest.raises(ValueError, match="field"):
        linear_depth_trend(torch.zeros(3))
