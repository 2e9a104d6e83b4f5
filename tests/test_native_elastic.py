"""The compiled SH and P-SV kernels (probinv.physics._native, elastic.c) against the PyTorch reference path.

Receiver data and the gradients w.r.t. every model field and the source amplitudes on both paths (free surface on
and off, every accuracy, source type and receiver component, several shots, a batch of models, checkpointing),
float32 accuracy, a dot test of the compiled time loop against its compiled transpose, the dispatch and the checks.
"""
import re

import pytest
import torch

from probinv.physics import _elastic_native, _native, psv, ricker, sh

F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:only .* grid points per minimum wavelength:UserWarning")

# Tolerance of native == torch in float64: both paths evaluate the same discrete operators from the same padded
# coefficients in a different order of additions, so they differ by float64 rounding accumulated over the time loop:
# measured 2e-16 .. 4e-15 for data and gradients on the cases below. 1e-12 is the requirement, with two
# orders of margin; a wrong transpose term (a CPML strip, an image row, a receiver half) is off by 1e-2 or more.
RTOL = 1e-12


def _problem(dtype=F64, nt=100, n_shots=2, nz=16, nx=20, batch=None, fluid_top=False):
    g = torch.Generator().manual_seed(3)
    shape = (nz, nx) if batch is None else (batch, nz, nx)
    vs = 500 + 200 * torch.rand(shape, generator=g, dtype=F64)
    vp = vs * (1.8 + 0.3 * torch.rand(shape, generator=g, dtype=F64))
    if fluid_top:
        vs[..., :3, :] = 0.0  # a water layer: mu = 0, the harmonic averages are 0 next to it
    rho = 1500 + 500 * torch.rand(shape, generator=g, dtype=F64)
    dx, dt = 5.0, 1e-3
    w = ricker(15.0, nt, dt, t0=0.08, dtype=F64)
    amp = torch.stack([w * (1 + 0.3 * i) for i in range(n_shots)])[:, None]
    src = torch.tensor([[[min(3, nz - 1), 4 + 6 * i]] for i in range(n_shots)])
    rec = torch.tensor([[[0, k], [nz - 1, k], [5, k]] for k in range(0, nx, 4)]).reshape(1, -1, 2)
    rec = rec.repeat(n_shots, 1, 1)
    return [t.to(dtype) for t in (vp, vs, rho)], dx, dt, amp.to(dtype), src, rec


def _run(kind, backend, fields, dx, dt, amp, src, rec, **opts):
    """Data and the gradients of a weighted, nonlinear loss w.r.t. the model fields and the source amplitudes."""
    params = [f.clone().requires_grad_() for f in (fields[1:] if kind == "sh" else fields)]
    a = amp.clone().requires_grad_()
    fn = sh if kind == "sh" else psv
    out = fn(*params, dx, dt, a, src, rec, backend=backend, **opts)
    gen = torch.Generator().manual_seed(5)
    # weights drawn in float64 and cast: the same loss in float32 and float64
    loss = (out * torch.randn(out.shape, generator=gen, dtype=F64).to(out.dtype)).sum() + 0.1 * out.square().sum()
    return out.detach(), torch.autograd.grad(loss, [*params, a])


def _rel(a, b):
    return float((a - b).norm() / b.norm())


CASES = {
    "sh": ("sh", dict()),
    "sh_free_surface": ("sh", dict(free_surface=True)),
    "sh_accuracy8_free_surface_checkpoint": ("sh", dict(accuracy=8, free_surface=True, checkpoint_every=17)),
    "sh_accuracy2_uneven_pml": ("sh", dict(accuracy=2, pml_width=(3, 5, 4, 6))),
    "sh_batch_of_models": ("sh", dict(batch=2, free_surface=True)),
    "psv": ("psv", dict()),
    "psv_free_surface": ("psv", dict(free_surface=True)),
    "psv_force_z_pressure_accuracy8_free_surface": ("psv", dict(free_surface=True, accuracy=8, source_type="force_z",
                                                                receiver_component="pressure")),
    "psv_force_x_vx_checkpoint": ("psv", dict(source_type="force_x", receiver_component="vx", checkpoint_every=17)),
    "psv_accuracy2_free_surface_vx": ("psv", dict(accuracy=2, free_surface=True, receiver_component="vx")),
    "psv_fluid_layer_free_surface": ("psv", dict(fluid_top=True, free_surface=True, pml_width=(0, 4, 3, 5))),
    "psv_batch_three_shots": ("psv", dict(batch=2, n_shots=3, free_surface=True, receiver_component="pressure")),
    "psv_no_pml": ("psv", dict(pml_width=0, free_surface=True)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_native_equals_torch_in_float64(case):
    kind, opts = CASES[case]
    opts = dict(opts)
    shape = {k: opts.pop(k) for k in ("batch", "n_shots", "fluid_top") if k in opts}
    opts.setdefault("pml_width", 5)
    problem = _problem(**shape)
    d_n, g_n = _run(kind, "native", *problem, **opts)
    d_t, g_t = _run(kind, "torch", *problem, **opts)
    assert d_n.shape == d_t.shape and _rel(d_n, d_t) < RTOL
    for a, b in zip(g_n, g_t, strict=True):
        assert a.shape == b.shape and _rel(a, b) < RTOL


@pytest.mark.parametrize("kind", ["sh", "psv"])
def test_native_float32_is_as_accurate_as_torch_float32(kind):
    fields, dx, dt, amp, src, rec = _problem(nt=150)
    opts = dict(pml_width=5, free_surface=True)
    d64, g64 = _run(kind, "native", fields, dx, dt, amp, src, rec, **opts)
    errors = {}
    for backend in ("native", "torch"):
        d32, g32 = _run(kind, backend, [f.float() for f in fields], dx, dt, amp.float(), src, rec, **opts)
        assert d32.dtype == torch.float32
        errors[backend] = (_rel(d32.double(), d64), max(_rel(a.double(), b) for a, b in zip(g32, g64, strict=True)))
    # float32 rounding (6e-8) accumulated over 150 steps of a stable scheme: measured 2e-7 .. 3e-7 (data) and 1e-6
    # (gradients) on both paths. The native path must stay at that level: below 2e-5 and within 10x of the torch
    # path's own float32 error.
    for k in range(2):
        assert errors["native"][k] < 2e-5 and errors["native"][k] < 10 * errors["torch"][k], errors


@pytest.mark.parametrize("kind, options", [("sh", dict(free_surface=True, accuracy=8)),
                                           ("psv", dict(free_surface=True, checkpoint_every=13)),
                                           ("psv", dict(source_type="force_x", receiver_component="pressure"))])
def test_dot_test_of_the_compiled_loop_against_its_transpose(kind, options):
    # For a fixed model the map A: source amplitudes -> receiver data is linear; its transpose is the compiled
    # backward. <A u, w> = <u, A^T w> to float64 rounding (measured 2e-17 .. 3e-17 of ||A u|| ||w||; tolerance
    # 1e-13) if and only if backward is the exact transpose of forward (every CPML strip, image row, source and
    # receiver term).
    fields, dx, dt, amp, src, rec = _problem(nt=80)
    gen = torch.Generator().manual_seed(2)
    u = torch.randn(amp.shape, generator=gen, dtype=F64).requires_grad_()
    fn = sh if kind == "sh" else psv
    out = fn(*(fields[1:] if kind == "sh" else fields), dx, dt, u, src, rec, pml_width=5, backend="native",
             **options)
    w = torch.randn(out.shape, generator=gen, dtype=F64)
    lhs = (out * w).sum()
    (atw,) = torch.autograd.grad(lhs, u)
    rhs = (u.detach() * atw).sum()
    scale = float(out.detach().norm() * w.norm())
    assert abs(float(lhs.detach() - rhs)) < 1e-13 * scale, (float(lhs), float(rhs), scale)


def test_thread_count_does_not_change_the_result():
    # threads split the (model, shot) pairs; each pair's arithmetic is the same whatever the thread count: bitwise
    problem = _problem(n_shots=3)
    results = []
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(_run("psv", "native", *problem, pml_width=5, free_surface=True))
    finally:
        torch.set_num_threads(before)
    (d1, g1), (d2, g2) = results
    assert torch.equal(d1, d2) and all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))


def test_forward_without_gradient_equals_the_differentiable_forward():
    fields, dx, dt, amp, src, rec = _problem()
    with torch.no_grad():
        d_nograd = psv(*fields, dx, dt, amp, src, rec, pml_width=5, free_surface=True)
    d_grad, _ = _run("psv", "native", fields, dx, dt, amp, src, rec, pml_width=5, free_surface=True)
    assert torch.equal(d_nograd, d_grad)  # the same kernel with and without storing the fields for backward


def test_default_backend_on_cpu_is_native(monkeypatch):
    calls = []
    original = _elastic_native.propagate

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(_elastic_native, "propagate", counting)
    (vp, vs, rho), dx, dt, amp, src, rec = _problem(nt=20)
    d_sh = sh(vs, rho, dx, dt, amp, src, rec, pml_width=4)
    d_psv = psv(vp, vs, rho, dx, dt, amp, src, rec, pml_width=4)
    assert calls == ["sh", "psv"]
    sh(vs, rho, dx, dt, amp, src, rec, pml_width=4, backend="torch")
    _, wave = sh(vs, rho, dx, dt, amp, src, rec, pml_width=4, return_wavefield=True)  # the reference path
    assert calls == ["sh", "psv"] and wave.shape == (2, 20, 16, 20)
    assert _rel(d_sh, sh(vs, rho, dx, dt, amp, src, rec, pml_width=4, backend="torch")) < RTOL
    assert _rel(d_psv, psv(vp, vs, rho, dx, dt, amp, src, rec, pml_width=4, backend="torch")) < RTOL


def test_backend_is_checked():
    (vp, vs, rho), dx, dt, amp, src, rec = _problem(nt=20)
    with pytest.raises(ValueError, match=re.escape("backend must be one of 'auto', 'native', 'torch', got 'gpu'")):
        sh(vs, rho, dx, dt, amp, src, rec, backend="gpu")
    with pytest.raises(ValueError, match="backend='native' runs CPU float32/float64 tensors only"):
        psv(vp.half(), vs.half(), rho.half(), dx, dt, amp.half(), src, rec, backend="native")


def test_second_derivatives_are_refused():
    (vp, vs, rho), dx, dt, amp, src, rec = _problem(nt=20)
    vs = vs.clone().requires_grad_()
    out = sh(vs, rho, dx, dt, amp, src, rec, pml_width=4, backend="native")
    (g,) = torch.autograd.grad(out.square().sum(), vs, create_graph=True)
    # as on the torch path: the hand-written adjoint is differentiable once, a second derivative raises
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


def test_no_compiler_falls_back_to_torch_with_one_warning(monkeypatch, tmp_path):
    # forget the loaded libraries and the warning, build into an empty cache, and find no compiler
    monkeypatch.setattr(_native, "_loaded", {})
    monkeypatch.setattr(_native, "_warned", False)
    monkeypatch.setenv("PROBINV_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("PROBINV_NATIVE", raising=False)
    monkeypatch.setattr(_native, "_compiler", lambda: None)
    (vp, vs, rho), dx, dt, amp, src, rec = _problem(nt=20)
    with pytest.warns(RuntimeWarning) as caught:
        d_sh = sh(vs, rho, dx, dt, amp, src, rec, pml_width=4)
        d_psv = psv(vp, vs, rho, dx, dt, amp, src, rec, pml_width=4, backend="native")
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "no C compiler found" in messages[0]
    assert torch.equal(d_sh, sh(vs, rho, dx, dt, amp, src, rec, pml_width=4, backend="torch"))
    assert torch.equal(d_psv, psv(vp, vs, rho, dx, dt, amp, src, rec, pml_width=4, backend="torch"))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["sh", "psv"])
def test_checkpointed_backward_can_run_twice_on_one_graph(kind):
    # Laplace's repeated vector-Jacobian products call backward on one retained graph (retain_graph=True): the
    # checkpointed path must recompute every block from an intact start state each time (it once ran the block in
    # place on the saved start, then freed it: a second pass read a null pointer and crashed). The two passes and
    # the uncheckpointed gradient agree to float64 rounding (same operations; 1e-12 as RTOL above).
    fields, dx, dt, amp, src, rec = _problem(nt=60)
    fn = sh if kind == "sh" else psv
    params = [f.clone().requires_grad_() for f in (fields[1:] if kind == "sh" else fields)]
    grads = []
    for every in (None, 13):
        out = fn(*params, dx, dt, amp, src, rec, pml_width=5, free_surface=True, backend="native",
                 checkpoint_every=every)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
        grads += [torch.autograd.grad(out, params[0], w, retain_graph=True)[0] for _ in range(2)]
    for g in grads[1:]:
        assert _rel(g, grads[0]) < RTOL
