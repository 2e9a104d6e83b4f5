"""Shot chunking in one process: identical results (float64) and lower peak memory, measured.

The problem is the tiny transmission set-up of ``test_inference_acoustic`` with 5 shots, evaluated in chunks of 2
shots (chunks of 2, 2 and 1: an uneven last chunk is covered). Tolerances: each shot is propagated independently, so
the chunked predictions equal the batched ones bit for bit (tested: max difference 0); the log-likelihood and its
gradient are sums over shots taken in another order, equal to ~1e-16 relative, tested at 1e-12; the Laplace std map
goes through an eigendecomposition of a 6 x 6 Gauss-Newton Hessian, whose rounding lifts the products' 1e-16
differences to ~1e-13 relative (measured), tested at 1e-12.
"""
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pyro
import pytest
import torch

from probinv.fields import WhitenedField
from probinv.inference import laplace
from probinv.inference import map as map_
from probinv.models import AcousticForward, Gaussian, GaussianLatentSigma, build_model
from probinv.physics import ricker

DT = torch.float64
N, DX, STEP, NT, NMODES, SHOTS = 16, 20.0, 0.004, 70, 6, 5
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:only .* grid points per minimum wavelength")


def _forward(chunk_size=None):
    src = torch.tensor([[[1 + 2 * s, 0]] for s in range(SHOTS)])
    rec = torch.tensor([[[j, N - 1] for j in range(0, N, 2)]] * SHOTS)
    amp = ricker(5.0, NT, STEP, dtype=DT).reshape(1, 1, -1).repeat(SHOTS, 1, 1)
    return AcousticForward(DX, STEP, amp, src, rec, options={"pml_width": 5, "pml_vmax": 2600.0},
                           chunk_size=chunk_size)


@pytest.fixture(scope="module")
def problem():
    prior = WhitenedField((N, N), DX, covariance="matern", nu=1.5, a_z=100.0, a_x=100.0, mean=2000.0, std=100.0,
                          n_modes=NMODES, bounds=(1500.0, 2600.0), dtype=DT)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(NMODES, generator=g, dtype=DT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean = _forward()({"vp": prior(z)})
    sigma = 0.01 * float(clean.abs().max())
    data = clean + sigma * torch.randn(clean.shape, generator=g, dtype=DT)
    return {"prior": prior, "z": z, "data": data, "sigma": sigma}


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_chunked_forward_equals_batched_with_gradient(problem):
    v = problem["prior"](problem["z"]).detach().requires_grad_(True)
    w = torch.randn(problem["data"].shape, dtype=DT, generator=torch.Generator().manual_seed(1))
    outs = []
    for fwd in (_forward(), _forward(chunk_size=2)):
        pred = fwd({"vp": v})
        (grad,) = torch.autograd.grad((pred * w).sum(), v)
        outs.append((pred.detach(), grad))
    assert torch.equal(outs[0][0], outs[1][0])  # shots are independent: the same numbers
    assert _rel(outs[1][1], outs[0][1]) < 1e-12


@pytest.mark.parametrize("latent_sigma", [False, True])
def test_chunked_log_density_and_gradient_equal_unchunked(problem, latent_sigma):
    noise = GaussianLatentSigma(scale=problem["sigma"]) if latent_sigma else Gaussian(problem["sigma"])
    latents = {"vp_z": problem["z"].clone().requires_grad_(True)}
    if latent_sigma:
        latents["sigma"] = torch.tensor(2 * problem["sigma"], dtype=DT, requires_grad=True)
    results = []
    for chunk in (None, 2):
        model = build_model({"vp": problem["prior"]}, _forward(), problem["data"], noise=noise, chunk_size=chunk)
        lj = model.log_joint(latents)
        g_lj = torch.autograd.grad(lj, list(latents.values()))
        # the Pyro model's observation site (what MAP, SVI and SVGD differentiate)
        trace = pyro.poutine.trace(pyro.poutine.condition(model, data=latents)).get_trace(problem["data"])
        lp = trace.log_prob_sum()
        g_lp = torch.autograd.grad(lp, list(latents.values()))
        ll = model.log_likelihood(model.fields_from_latents(latents), noise_params=noise.params_from_latents(latents))
        results.append((lj.detach(), g_lj, lp.detach(), g_lp, ll.detach()))
    (lj0, g0, lp0, gp0, ll0), (lj1, g1, lp1, gp1, ll1) = results
    assert float(abs(lj1 - lj0) / abs(lj0)) < 1e-12
    assert float(abs(lp1 - lp0) / abs(lp0)) < 1e-12
    assert float(abs(ll1 - ll0) / abs(ll0)) < 1e-12
    assert float(abs(lp0 - lj0) / abs(lj0)) < 1e-12  # the trace and the direct log joint agree
    for a, b in zip(g1 + gp1, g0 + gp0, strict=True):
        assert _rel(a, b) < 1e-12


def test_chunked_laplace_std_map_equals_unchunked(problem):
    noise = Gaussian(problem["sigma"])
    models = [build_model({"vp": problem["prior"]}, _forward(), problem["data"], noise=noise, chunk_size=c)
              for c in (None, 2)]
    mp = map_(models[0], optimizer="lbfgs", num_steps=2, lr=1.0, init={"vp_z": problem["z"]})
    # rank + oversample >= 6 latent modes: the Hessian is assembled exactly, no random probes involved
    laps = [laplace(m, map_posterior=mp, rank=NMODES, num_samples=200, seed=3) for m in models]
    # the std map of the velocity (m/s, over the same seeded draws) and the latent std
    assert _rel(laps[1].std("vp"), laps[0].std("vp")) < 1e-12
    assert _rel(laps[1].gaussian.std(), laps[0].gaussian.std()) < 1e-12
    assert _rel(laps[1].gaussian.eigvals, laps[0].gaussian.eigvals) < 1e-12
    # more solver passes: each product re-records each chunk's linearisation (memory bounded by the chunk)
    assert laps[1].attrs["solver_passes"] > laps[0].attrs["solver_passes"]


_MEMORY = textwrap.dedent("""
    import sys, warnings
    import torch
    from torch.utils.checkpoint import checkpoint
    from probinv.models import AcousticForward, Flat, Gaussian, build_model
    from probinv.physics import ricker
    warnings.simplefilter("ignore")
    chunk = None if sys.argv[1] == "none" else int(sys.argv[1])
    S, N, NT = int(sys.argv[2]), 32, 150
    src = torch.tensor([[[1, 1 + (s * (N - 3)) // (S - 1)]] for s in range(S)])
    rec = torch.tensor([[[1, j] for j in range(0, N, 2)]] * S)
    amp = ricker(8.0, NT, 0.002, dtype=torch.float64).reshape(1, 1, -1).repeat(S, 1, 1)
    fwd = AcousticForward(10.0, 0.002, amp, src, rec, options={"pml_width": 8, "pml_vmax": 2500.0})
    v = torch.full((N, N), 2000.0, dtype=torch.float64)
    with torch.no_grad():
        data = fwd({"vp": v * 1.01})
    model = build_model({"vp": Flat((N, N))}, fwd, data, noise=Gaussian(1.0), chunk_size=chunk)
    x = v.clone().requires_grad_(True)
    # warm-up: a one-shot gradient loads what the first backward loads, below either run's peak
    one = AcousticForward(10.0, 0.002, amp[:1], src[:1], rec[:1], options={"pml_width": 8, "pml_vmax": 2500.0})
    torch.autograd.grad(one({"vp": x}).sum(), x)
    # and a checkpointed one: torch.utils.checkpoint's first use loads ~70 MiB of code, once per process
    torch.autograd.grad(checkpoint(lambda t: 2 * t, x, use_reentrant=False).sum(), x)
    def status(key):  # kB
        return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    base = status("VmRSS:")
    (g,) = torch.autograd.grad(model.log_likelihood({"vp": x}, data), x)
    print((status("VmHWM:") - base) / 1024.0, repr(g.abs().sum().item()))
""")


# glibc's fixed mmap threshold: every tensor above 64 KiB is its own mapping, returned to the system when freed, so
# the resident size follows the live tensors (with the default, adaptive threshold freed blocks stay resident and
# the peak depends on the allocation history)
_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def peak_rss_growth(chunk, shots=12):
    """Peak resident memory growth (MiB) of one log-likelihood gradient in a fresh process, and the gradient's sum."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **_MALLOC}
    out = subprocess.run([sys.executable, "-c", _MEMORY, str(chunk), str(shots)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env=env, check=True)
    mib, gsum = out.stdout.split()
    return float(mib), float(gsum)


def test_chunking_lowers_peak_memory():
    """Peak RSS growth (``VmHWM`` after resetting it through ``/proc/self/clear_refs``; ``ru_maxrss`` would carry the
    parent's peak into the child) of one log-likelihood gradient over 12 shots on a 32 x 32 grid (48 x 48 with the
    absorbing layer), 150 steps, float64, after warm-up gradients. Measured: 35.9 MiB unchunked (~3 MiB of wavefield
    history per shot), 9.5 MiB in chunks of 2 shots, and 10.0 MiB in chunks of 2 for 24 shots (one chunk's history,
    whatever the survey; benchmarks/scaling.py goes to 256 shots). RSS of a fresh subprocess is the measure because
    torch's CPU tensors bypass ``tracemalloc`` and saved-tensor hooks do not see the tensors a checkpoint recomputes
    during backward; glibc's fixed mmap threshold makes freed tensors leave the resident set. The bound (chunked <
    0.5 x unchunked) leaves room for allocator noise. The gradients agree to rounding.
    """
    full, g_full = peak_rss_growth("none", 12)
    chunked, g_chunked = peak_rss_growth(2, 12)
    assert g_chunked == pytest.approx(g_full, rel=1e-12)
    assert chunked < 0.5 * full, (chunked, full)
