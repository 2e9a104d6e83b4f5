"""probinv.physics.adjoint: the independent adjoint-state gradient equals reverse-mode AD through the solver."""
import ast
import re
from pathlib import Path

import pytest
import torch

from probinv.physics import acoustic, ricker
from probinv.physics import adjoint as adjoint_module
from probinv.physics.adjoint import l2_gradient

F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:only .* grid points per minimum wavelength:UserWarning")

# Tolerance of the AD == adjoint comparisons. adjoint.py is the hand-derived *discrete* adjoint of the same scheme,
# so both sides are the exact gradient of the same discrete misfit, computed by two independent codes in different
# orders: they differ by float64 rounding only (measured 3e-15 .. 9e-15 relative over the cases below). 1e-11 leaves
# three orders of margin for other thread counts and BLAS builds and stays far below what a wrong adjoint gives (a
# transpose that forgets the free-surface mirror is off by 1e-1; a continuous adjoint would be off by the
# discretisation error, ~1e-3 or more on these grids).
RTOL_GRADIENT = 1e-11


@pytest.fixture(autouse=True, params=["auto", pytest.param("torch", marks=pytest.mark.slow)])
def backend(request, monkeypatch):
    """The default path (the compiled kernel on CPU) in the default suite; the torch path too in the slow suite."""
    monkeypatch.setitem(acoustic.__kwdefaults__, "backend", request.param)
    return request.param


def _problem(batch=None):
    torch.manual_seed(3)
    nz, nx, dx, dt, nt = 22, 26, 5.0, 5e-4, 220
    shape = (nz, nx) if batch is None else (batch, nz, nx)
    v = 1800 + 400 * torch.rand(shape, dtype=F64)
    w = ricker(20.0, nt, dt, dtype=F64)
    amp = torch.stack([w, -0.5 * w])[:, None]
    src = torch.tensor([[[3, 4]], [[10, 20]]])
    rec = torch.tensor([[[0, k] for k in range(0, nx, 3)]] * 2)
    observed = acoustic(v * 1.05, dx, dt, amp, src, rec, pml_width=8)  # data of a faster medium
    return v, dx, dt, amp, src, rec, observed


def test_adjoint_module_imports_nothing_private_from_the_solver():
    # independence: no private name of the acoustic implementation (its stencils, kernels, set-up) may be reused
    tree = ast.parse(Path(adjoint_module.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            assert "acoustic" not in module and "_fd" not in module, module
            assert not [a.name for a in node.names if a.name.startswith("_") and a.name != "annotations"], module
        if isinstance(node, ast.Import):
            assert not [a.name for a in node.names if "acoustic" in a.name]


@pytest.mark.parametrize("accuracy", [2, 4, 8])
@pytest.mark.parametrize("axis, mirror", [(-1, False), (-2, False), (-2, True)])
@pytest.mark.parametrize("derivative", [1, 2])
def test_stencil_transposes_pass_the_dot_test(accuracy, axis, mirror, derivative):
    gen = torch.Generator().manual_seed(1)
    weights = adjoint_module._central_weights(accuracy, derivative)
    u = torch.randn(2, 3, 9, 11, dtype=F64, generator=gen)
    g = torch.randn(2, 3, 9, 11, dtype=F64, generator=gen)
    lhs = (adjoint_module._apply(u, weights, axis, mirror) * g).sum()
    rhs = (u * adjoint_module._apply_t(g, weights, axis, mirror)).sum()
    assert abs(float(lhs - rhs)) <= 1e-13 * float(lhs.abs() + rhs.abs())


def test_central_weights_are_the_classical_ones():
    assert adjoint_module._central_weights(4, 2) == [-1 / 12, 4 / 3, -5 / 2, 4 / 3, -1 / 12]
    assert adjoint_module._central_weights(4, 1) == [1 / 12, -2 / 3, 0.0, 2 / 3, -1 / 12]
    assert adjoint_module._central_weights(8, 2)[4:] == [-205 / 72, 8 / 5, -1 / 5, 8 / 315, -1 / 560]


@pytest.mark.parametrize("gradient", ["fused", "autograd"])
@pytest.mark.parametrize("options", [dict(), dict(free_surface=True, accuracy=8), dict(accuracy=2, pml_width=3),
                                     dict(pml_vmax=2600.0), dict(free_surface=True, pml_width=(0, 5, 2, 7))])
def test_adjoint_gradient_equals_autodiff(options, gradient):
    v, dx, dt, amp, src, rec, observed = _problem()
    opts = {"pml_width": 8, **options}
    loss, grad = l2_gradient(v, dx, dt, amp, src, rec, observed, **opts)
    vg = v.clone().requires_grad_()
    # gradient="autograd" is plain PyTorch AD through every operation of the loop (no hand-derived code at all)
    loss_ad = 0.5 * (acoustic(vg, dx, dt, amp, src, rec, gradient=gradient, **opts) - observed).square().sum()
    (grad_ad,) = torch.autograd.grad(loss_ad, vg)
    loss_ad = loss_ad.detach()
    # the two forwards are independent codes of one scheme: the misfits agree to rounding too
    assert float(loss) > 0 and abs(float(loss - loss_ad)) <= 1e-12 * float(loss_ad)
    assert float((grad - grad_ad).norm() / grad_ad.norm()) < RTOL_GRADIENT
    assert grad.shape == v.shape and grad.dtype == F64 and not grad.requires_grad


def test_adjoint_gradient_batch_of_models():
    v, dx, dt, amp, src, rec, _ = _problem(batch=2)
    observed = torch.zeros(2, 2, rec.shape[1], amp.shape[-1], dtype=F64)
    loss, grad = l2_gradient(v, dx, dt, amp, src, rec, observed, pml_width=6)
    vg = v.clone().requires_grad_()
    (grad_ad,) = torch.autograd.grad(0.5 * acoustic(vg, dx, dt, amp, src, rec, pml_width=6).square().sum(), vg)
    assert float((grad - grad_ad).norm() / grad_ad.norm()) < RTOL_GRADIENT


def test_observed_shape_is_checked():
    v, dx, dt, amp, src, rec, observed = _problem()
    with pytest.raises(ValueError, match=re.escape("observed must be shaped like the predicted data (2, 9, 220), "
                                                   "got (2, 9, 219)")):
        l2_gradient(v, dx, dt, amp, src, rec, observed[..., 1:])


def test_autograd_path_equals_fused_path_with_checkpointing_and_wavefield():
    v, dx, dt, amp, src, rec, observed = _problem()
    grads, outs = [], []
    for kw in (dict(gradient="fused"), dict(gradient="autograd"), dict(gradient="autograd", checkpoint_every=50)):
        vg = v.clone().requires_grad_()
        data, wf = acoustic(vg, dx, dt, amp, src, rec, pml_width=8, return_wavefield=True, wavefield_every=20, **kw)
        (g,) = torch.autograd.grad(0.5 * (data - observed).square().sum() + wf.square().sum(), vg)
        grads.append(g)
        outs.append((data.detach(), wf.detach()))
    for g, (d, wf) in zip(grads[1:], outs[1:], strict=True):
        # same discrete scheme evaluated in the same order; only the backward's summation order differs
        assert torch.allclose(d, outs[0][0], rtol=0, atol=1e-13 * float(outs[0][0].abs().max()))
        assert torch.allclose(wf, outs[0][1], rtol=0, atol=1e-13 * float(outs[0][1].abs().max()))
        assert float((g - grads[0]).norm() / grads[0].norm()) < 1e-12


def test_gradient_option_is_checked():
    v, dx, dt, amp, src, rec, _ = _problem()
    with pytest.raises(ValueError, match=re.escape("gradient must be 'fused' or 'autograd', got 'adjoint'")):
        acoustic(v, dx, dt, amp, src, rec, gradient="adjoint")


def test_double_backward_of_the_fused_node_equals_plain_autograd():
    """Hessian-vector products (create_graph=True through the fused node) equal those of plain autograd."""
    v, dx, dt, amp, src, rec, observed = _problem()
    u = torch.randn(v.shape, dtype=F64, generator=torch.Generator().manual_seed(5))
    hvps = []
    for gradient in ("fused", "autograd"):
        vg = v.clone().requires_grad_()
        loss = 0.5 * (acoustic(vg, dx, dt, amp, src, rec, pml_width=8, gradient=gradient) - observed).square().sum()
        (g,) = torch.autograd.grad(loss, vg, create_graph=True)
        (hvp,) = torch.autograd.grad((g * u).sum(), vg)
        hvps.append(hvp)
    # the same exact second derivative evaluated through two graphs: rounding only
    assert float((hvps[0] - hvps[1]).norm() / hvps[1].norm()) < 1e-10
