"""The compiled acoustic kernel (probinv.physics._native) against the PyTorch reference path.

Data and gradients of both paths on every option, float32 accuracy, a dot test of the compiled time loop against its
compiled transpose, thread-count independence, the fallback without a compiler (one warning, never an error) and the
build cache.
"""
import os
import re

import pytest
import torch

from probinv.physics import _acoustic_native, _native, acoustic, ricker

F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:only .* grid points per minimum wavelength:UserWarning")

# Tolerance of native == torch in float64: both paths evaluate the same discrete operator (the same coefficients
# from the same set-up) in a different order of additions, so they differ by float64 rounding accumulated over the
# time loop: measured 1e-15 .. 3e-15 for the data and 1e-15 .. 3e-14 for the gradients on the cases below. 1e-12 is
# the requirement and leaves two orders of margin; a wrong transpose term (a CPML or mirror coefficient) is
# off by 1e-3 or more.
RTOL = 1e-12


def _problem(dtype=F64, nt=90, n_shots=2, nz=20, nx=24, batch=None):
    g = torch.Generator().manual_seed(11)
    dx, dt = 5.0, 5e-4
    shape = (nz, nx) if batch is None else (batch, nz, nx)
    v = (1800 + 300 * torch.rand(shape, generator=g, dtype=F64)).to(dtype)
    rho = (1000 + 800 * torch.rand(shape, generator=g, dtype=F64)).to(dtype)
    w = ricker(20.0, nt, dt, t0=0.05, dtype=dtype)
    amp = torch.stack([w * (1 + 0.3 * i) for i in range(n_shots)])[:, None]
    src = torch.tensor([[[min(4, nz - 1), 3 + 7 * i]] for i in range(n_shots)])
    rec = torch.tensor([[[0, k], [nz - 1, k]] for k in range(0, nx, 5)]).reshape(1, -1, 2).repeat(n_shots, 1, 1)
    return v, rho, dx, dt, amp, src, rec


def _run(backend, v, rho, dx, dt, amp, src, rec, weights=None, **opts):
    """Data (and snapshots) and the gradients of a weighted, nonlinear loss w.r.t. v, the sources (and rho)."""
    params = [v.clone().requires_grad_(), amp.clone().requires_grad_()]
    if rho is not None:
        params.append(rho.clone().requires_grad_())
    out = acoustic(params[0], dx, dt, params[1], src, rec, rho=params[2] if rho is not None else None,
                   backend=backend, **opts)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(5)
    # weights drawn in float64 and cast: the same loss in float32 and float64
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=F64).to(o.dtype)).sum() + 0.1 * o.square().sum()
               for o in outs)
    return [o.detach() for o in outs], torch.autograd.grad(loss, params)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


CASES = {
    "default": dict(),
    "free_surface": dict(free_surface=True),
    "accuracy2": dict(accuracy=2, pml_width=(3, 5, 4, 6)),
    "accuracy8_free_surface": dict(accuracy=8, free_surface=True),
    "density": dict(rho=True),
    "density_free_surface_accuracy8": dict(rho=True, free_surface=True, accuracy=8),
    "checkpoint": dict(checkpoint_every=17),
    "checkpoint_density_wavefield": dict(rho=True, checkpoint_every=25, return_wavefield=True, wavefield_every=4),
    "wavefield": dict(return_wavefield=True, wavefield_every=3),
    "no_pml": dict(pml_width=0),
    "one_sided_pml": dict(pml_width=(0, 6, 0, 3), free_surface=True, accuracy=8),
    "shallow_free_surface": dict(nz=3, free_surface=True, accuracy=8, pml_width=4),
    "batch_of_models": dict(batch=3, rho=True, free_surface=True),
    "batch_checkpoint_wavefield": dict(batch=2, checkpoint_every=30, return_wavefield=True, wavefield_every=7),
}


@pytest.mark.parametrize("case", list(CASES))
def test_native_equals_torch_in_float64(case):
    opts = dict(CASES[case])
    use_rho = opts.pop("rho", False)
    shape = {k: opts.pop(k) for k in ("nz", "batch") if k in opts}
    v, rho, dx, dt, amp, src, rec = _problem(**shape)
    opts.setdefault("pml_width", 6)
    outs_n, grads_n = _run("native", v, rho if use_rho else None, dx, dt, amp, src, rec, **opts)
    outs_t, grads_t = _run("torch", v, rho if use_rho else None, dx, dt, amp, src, rec, **opts)
    for a, b in zip(outs_n, outs_t, strict=True):
        assert a.shape == b.shape and _rel(a, b) < RTOL
    for a, b in zip(grads_n, grads_t, strict=True):
        assert _rel(a, b) < RTOL


def test_native_float32_is_as_accurate_as_torch_float32():
    v, rho, dx, dt, amp, src, rec = _problem(nt=150)
    (d64,), g64 = _run("native", v, rho, dx, dt, amp, src, rec, pml_width=6)
    errors = {}
    for backend in ("native", "torch"):
        (d32,), g32 = _run(backend, v.float(), rho.float(), dx, dt, amp.float(), src, rec, pml_width=6)
        assert d32.dtype == torch.float32
        errors[backend] = (_rel(d32.double(), d64), max(_rel(a.double(), b) for a, b in zip(g32, g64, strict=True)))
    # float32 rounding (6e-8) accumulated over 150 steps of a stable scheme: measured 1e-6 (data) and 1e-6 .. 5e-6
    # (gradients) on both paths. The native path must stay at that level: below 3e-5 (5x the largest measured) and
    # within 10x of the torch path's own error.
    for k in range(2):
        assert errors["native"][k] < 3e-5 and errors["native"][k] < 10 * errors["torch"][k], errors


@pytest.mark.parametrize("options", [dict(), dict(free_surface=True, accuracy=8, checkpoint_every=13),
                                     dict(rho=True, accuracy=2, return_wavefield=True, wavefield_every=5)])
def test_dot_test_of_the_compiled_loop_against_its_transpose(options):
    # For a fixed model the map A: source amplitudes -> (data, snapshots) is linear; its transpose is the compiled
    # backward. <A u, w> = <u, A^T w> to float64 rounding (measured 6e-18 .. 1e-16 of ||A u|| ||w||; tolerance
    # 1e-13) if and only if backward is the exact transpose of forward (every CPML, mirror and density term).
    opts = dict(options)
    rho = _problem()[1] if opts.pop("rho", False) else None
    v, _, dx, dt, amp, src, rec = _problem(nt=70)
    gen = torch.Generator().manual_seed(2)
    u = torch.randn(amp.shape, generator=gen, dtype=F64).requires_grad_()
    out = acoustic(v, dx, dt, u, src, rec, rho=rho, pml_width=5, backend="native", **opts)
    outs = out if isinstance(out, tuple) else (out,)
    ws = [torch.randn(o.shape, generator=gen, dtype=F64) for o in outs]
    lhs = sum((o * w).sum() for o, w in zip(outs, ws, strict=True))
    (atw,) = torch.autograd.grad(lhs, u)
    rhs = (u.detach() * atw).sum()
    lhs = lhs.detach()
    # scale of the rounding: |<A u, w>| <= ||A u|| ||w|| (the sums cancel, so |lhs| itself can be much smaller)
    scale = sum(float(o.detach().norm() * w.norm()) for o, w in zip(outs, ws, strict=True))
    assert abs(float(lhs - rhs)) < 1e-13 * scale, (float(lhs), float(rhs), scale)


def test_thread_count_does_not_change_the_result():
    # threads split the (model, shot) pairs; each pair's arithmetic is the same whatever the thread count: bitwise
    v, rho, dx, dt, amp, src, rec = _problem(n_shots=3)
    results = []
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(_run("native", v, rho, dx, dt, amp, src, rec, pml_width=6))
    finally:
        torch.set_num_threads(before)
    (d1,), g1 = results[0]
    (d2,), g2 = results[1]
    assert torch.equal(d1, d2) and all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))


def test_default_backend_on_cpu_is_native(monkeypatch):
    calls = []
    original = _acoustic_native.propagate

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_acoustic_native, "propagate", counting)
    v, _, dx, dt, amp, src, rec = _problem(nt=20)
    d_auto = acoustic(v, dx, dt, amp, src, rec, pml_width=4)
    assert len(calls) == 1
    d_torch = acoustic(v, dx, dt, amp, src, rec, pml_width=4, backend="torch")
    acoustic(v, dx, dt, amp, src, rec, pml_width=4, gradient="autograd")  # the autograd reference is torch only
    assert len(calls) == 1 and _rel(d_auto, d_torch) < RTOL


def test_backend_is_checked():
    v, _, dx, dt, amp, src, rec = _problem(nt=20)
    with pytest.raises(ValueError, match=re.escape("backend must be one of 'auto', 'native', 'torch', got 'gpu'")):
        acoustic(v, dx, dt, amp, src, rec, backend="gpu")


def _fresh_loader(monkeypatch, tmp_path):
    """Forget the loaded libraries and the warning, and build into an empty cache folder."""
    monkeypatch.setattr(_native, "_loaded", {})
    monkeypatch.setattr(_native, "_warned", False)
    monkeypatch.setenv("PROBINV_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("PROBINV_NATIVE", raising=False)


def test_failed_compilation_falls_back_to_torch_with_one_warning(monkeypatch, tmp_path):
    _fresh_loader(monkeypatch, tmp_path)
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setattr(_native, "_compiler", lambda: "/bin/false")
    v, _, dx, dt, amp, src, rec = _problem(nt=30)
    with pytest.warns(RuntimeWarning) as caught:
        d1 = acoustic(v, dx, dt, amp, src, rec, pml_width=4)
        d2 = acoustic(v, dx, dt, amp, src, rec, pml_width=4, backend="native")
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "compiled solver kernels are unavailable" in messages[0]
    assert "compilation failed" in messages[0]
    d_ref = acoustic(v, dx, dt, amp, src, rec, pml_width=4, backend="torch")
    assert torch.equal(d1, d_ref) and torch.equal(d2, d_ref)
    assert not list(tmp_path.iterdir())  # no partial library left behind


def test_no_compiler_falls_back_with_one_warning(monkeypatch, tmp_path):
    _fresh_loader(monkeypatch, tmp_path)
    monkeypatch.setattr(_native, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="no C compiler found"):
        assert _native.load("acoustic") is None
    assert _native.load("acoustic") is None  # cached: no second warning (pytest.warns would not fail on one,
    assert _native._warned  # so check the flag that suppresses it)


def test_build_is_cached_and_atomic(monkeypatch, tmp_path):
    # the build machinery on a tiny source (the real kernels take ~10 s to compile; they are built once per cache)
    sources, cache = tmp_path / "src", tmp_path / "cache"
    sources.mkdir()
    (sources / "tiny.c").write_text("int probinv_tiny(int x) { return 2 * x; }\n")
    _fresh_loader(monkeypatch, cache)
    monkeypatch.setattr(_native, "_HERE", sources)
    monkeypatch.setitem(_native._SOURCES, "tiny", ("tiny.c",))
    path = _native._build("tiny")
    assert path.parent == cache and re.fullmatch(r"tiny-[0-9a-f]{20}\.so", path.name)
    assert [p.name for p in cache.iterdir()] == [path.name]  # the temporary file was renamed, none left over
    mtime = os.stat(path).st_mtime_ns
    assert _native._build("tiny") == path and os.stat(path).st_mtime_ns == mtime  # found, not rebuilt
    assert _native.load("tiny").probinv_tiny(21) == 42
    (sources / "tiny.c").write_text("int probinv_tiny(int x) { return 3 * x; }\n")
    assert _native._build("tiny") != path  # a changed source gets a new key: never a stale library


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_checkpointed_backward_can_run_twice_on_one_graph(backend):
    # Laplace's repeated vector-Jacobian products call backward on one retained graph (retain_graph=True): the
    # checkpointed paths once freed each block's start state after its first use, so a second pass failed. Both
    # passes and the uncheckpointed gradient agree to float64 rounding (same operations; 1e-12).
    v, rho, dx, dt, amp, src, rec = _problem(nt=60)
    vv = v.clone().requires_grad_()
    grads = []
    for every in (None, 13):
        out = acoustic(vv, dx, dt, amp, src, rec, pml_width=5, free_surface=True, backend=backend,
                       checkpoint_every=every)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
        grads += [torch.autograd.grad(out, vv, w, retain_graph=True)[0] for _ in range(2)]
    for g in grads[1:]:
        assert float((g - grads[0]).norm() / grads[0].norm()) < 1e-12
