"""probinv.physics.adjoint: the hand-written adjoint-state gradient equals reverse-mode AD through the solver."""
import re

import pytest
import torch

from probinv.physics import acoustic, ricker
from probinv.physics.adjoint import l2_gradient

F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:only .* grid points per minimum wavelength:UserWarning")


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


@pytest.mark.parametrize("gradient", ["fused", "autograd"])
@pytest.mark.parametrize("options", [dict(), dict(free_surface=True, accuracy=8), dict(accuracy=2, pml_width=3)])
def test_adjoint_gradient_equals_autodiff(options, gradient):
    v, dx, dt, amp, src, rec, observed = _problem()
    opts = {"pml_width": 8, **options}
    loss, grad = l2_gradient(v, dx, dt, amp, src, rec, observed, **opts)
    vg = v.clone().requires_grad_()
    # gradient="autograd" is plain PyTorch AD through every operation of the loop (no hand-derived code at all)
    loss_ad = 0.5 * (acoustic(vg, dx, dt, amp, src, rec, gradient=gradient, **opts) - observed).square().sum()
    (grad_ad,) = torch.autograd.grad(loss_ad, vg)
    loss_ad = loss_ad.detach()
    assert float(loss) > 0 and abs(float(loss - loss_ad)) <= 1e-12 * float(loss_ad)
    # both are the exact discrete gradient, computed in different orders: rounding only (paper 2: ~1e-10)
    assert float((grad - grad_ad).norm() / grad_ad.norm()) < 1e-9
    assert grad.shape == v.shape and grad.dtype == F64 and not grad.requires_grad


def test_adjoint_gradient_batch_of_models():
    v, dx, dt, amp, src, rec, _ = _problem(batch=2)
    observed = torch.zeros(2, 2, rec.shape[1], amp.shape[-1], dtype=F64)
    loss, grad = l2_gradient(v, dx, dt, amp, src, rec, observed, pml_width=6)
    vg = v.clone().requires_grad_()
    (grad_ad,) = torch.autograd.grad(0.5 * acoustic(vg, dx, dt, amp, src, rec, pml_width=6).square().sum(), vg)
    assert float((grad - grad_ad).norm() / grad_ad.norm()) < 1e-9


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
    for g, (d, wf) in zip(grads[1:], outs[1:]):
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
