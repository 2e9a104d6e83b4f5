"""The JAX acoustic solver against the PyTorch one: data and gradients (velocity, source amplitudes) equal to rounding.

Both solvers run the same discrete operator (same stencils, CPML, free-surface mirror, source scaling, time sampling),
so their results differ only by floating-point rounding: relative 1e-10 in float64 (measured ~2e-15 for the data),
1e-5 in float32 (single-precision rounding ~6e-8 per operation, accumulated over 100 steps).
"""
import jax

pytest_jax = __import__("pytest").importorskip("jax")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import probinv.jax as pj  # noqa: E402
from probinv.physics import acoustic, ricker  # noqa: E402

NZ, NX, DX, DT, NT = 12, 16, 10.0, 0.001, 100


def _problem(dtype):
    g = torch.Generator().manual_seed(0)
    v = (1800 + 500 * torch.rand(NZ, NX, generator=g, dtype=torch.float64)).to(dtype)  # heterogeneous
    amp = ricker(12.0, NT, DT, t0=0.05, dtype=dtype).reshape(1, 1, -1).repeat(2, 1, 1)  # whole wavelet in the record
    amp[1] *= 0.5
    src = torch.tensor([[[0, 4]], [[5, 11]]])  # one source on the top row: the free-surface mirror matters
    rec = torch.tensor([[[0, j] for j in range(0, NX, 2)] + [[NZ - 1, 3]]] * 2)
    weights = torch.randn(2, rec.shape[1], NT, generator=g, dtype=torch.float64).to(dtype)
    return v, amp, src, rec, weights


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("free_surface", [False, True])
def test_data_and_gradient_equal_pytorch(dtype, tol, free_surface):
    v, amp, src, rec, wts = _problem(dtype)
    kw = dict(pml_width=6, free_surface=free_surface, accuracy=4)
    # checkpoint blocks of 7 steps (7 does not divide nt): the gradient is unchanged by where the blocks fall
    ck = dict(checkpoint_every=7) if free_surface else {}
    vt, at = v.clone().requires_grad_(True), amp.clone().requires_grad_(True)
    d_t = acoustic(vt, DX, DT, at, src, rec, **kw)
    g_t, ga_t = torch.autograd.grad((d_t * wts).sum(), (vt, at))

    def loss(vv, aa):
        d = pj.acoustic(vv, DX, DT, aa, src, rec, **kw, **ck)
        return (d * jnp.asarray(wts.numpy())).sum(), d

    # the velocity and the source amplitudes, one compilation (the reverse pass is hand-written: both are its outputs)
    (_, d_j), (g_j, ga_j) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(jnp.asarray(v.numpy()),
                                                                                  jnp.asarray(amp.numpy()))
    assert d_j.dtype == jnp.dtype(str(dtype).split(".")[1]) and d_j.shape == tuple(d_t.shape)
    assert float(np.abs(np.asarray(d_j)).max()) > 0 and float(g_t.abs().max()) > 0
    assert _rel(d_j, d_t.detach().numpy()) < tol
    assert _rel(g_j, g_t.numpy()) < tol
    assert _rel(ga_j, ga_t.numpy()) < tol


@pytest.mark.filterwarnings("ignore:only .* grid points per minimum wavelength")  # coarse on purpose: fast
@pytest.mark.parametrize("accuracy", [2, 8])
def test_other_accuracies_equal_pytorch(accuracy):
    v, amp, src, rec, _ = _problem(torch.float64)
    kw = dict(pml_width=5, free_surface=True, accuracy=accuracy)
    d_t = acoustic(v, DX, DT, amp, src, rec, **kw)
    assert _rel(pj.acoustic(v.numpy(), DX, DT, amp.numpy(), src, rec, **kw), d_t.numpy()) < 1e-10


def test_batch_of_models():
    v, amp, src, rec, _ = _problem(torch.float64)
    vb = torch.stack([v, v.flip(-1) * 1.05])
    kw = dict(pml_width=(3, 5, 4, 6), pml_vmax=2600.0)
    d_t = acoustic(vb, DX, DT, amp, src, rec, **kw)
    d_j = pj.acoustic(vb.numpy(), DX, DT, amp.numpy(), src, rec, **kw)
    assert d_j.shape == (2, 2, rec.shape[1], NT)
    assert _rel(d_j, d_t.numpy()) < 1e-10


def test_bad_arguments_are_named():
    v, amp, src, rec, _ = _problem(torch.float64)
    with pytest.raises(ValueError, match="dt = .* is unstable"):
        pj.acoustic(v.numpy(), DX, 0.01, amp.numpy(), src, rec)
    with pytest.raises(ValueError, match=r"receiver_locations\[0, 0\] = \(z=0, x=99\) is outside"):
        pj.acoustic(v.numpy(), DX, DT, amp.numpy(), src, torch.tensor([[[0, 99]], [[0, 1]]]))
    with pytest.raises(ValueError, match="accuracy must be one of"):
        pj.acoustic(v.numpy(), DX, DT, amp.numpy(), src, rec, accuracy=6)
    with pytest.raises(ValueError, match="v must be positive and finite"):
        pj.acoustic(-v.numpy(), DX, DT, amp.numpy(), src, rec)
    with pytest.raises(TypeError, match="v must be a jax/numpy array"):
        pj.acoustic([[1.0]], DX, DT, amp.numpy(), src, rec)
