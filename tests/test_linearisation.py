"""Jacobian products of probinv.linearisation: the dot test (PyLops style) on the three forward operators, agreement
with finite differences, and honest fallbacks (only PyTorch's 'unsupported' errors, warned once)."""
import ast
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from probinv import linearisation
from probinv.linearisation import Linearisation, dottest, jvp
from probinv.physics import acoustic, helmholtz, ricker
from probinv.surrogate import FNOOperator, FNOSurrogate

DT = torch.float64
RTOL_DOT = 1e-12
# the grids are coarse on purpose (fast); the dispersion warning is beside the point of an adjoint test
pytestmark = pytest.mark.filterwarnings("ignore:only .* grid points per minimum wavelength:UserWarning")


def _rel(lhs, rhs):
    return abs(lhs - rhs) / max(abs(lhs), abs(rhs))


def _random(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _heterogeneous(nz, nx, seed=0):
    """A smooth heterogeneous velocity model (m/s): a gradient with depth plus a Gaussian anomaly and random bumps."""
    z = torch.arange(nz, dtype=DT)[:, None]
    x = torch.arange(nx, dtype=DT)[None, :]
    v = 1800 + 20 * z + 250 * torch.exp(-((z - nz / 2) ** 2 + (x - nx / 2) ** 2) / 8)
    return v + 30 * _random((nz, nx), seed).clamp(-2, 2)


# ------------------------------------------------------------------------------------------------ the three operators
def _acoustic_map():
    nz, nx, dx, dt, nt = 14, 16, 10.0, 0.001, 120
    amp = ricker(25.0, nt, dt, dtype=DT).reshape(1, 1, -1).repeat(2, 1, 1)
    src = torch.tensor([[[2, 3]], [[2, 12]]])
    rec = torch.tensor([[[1, j] for j in range(1, 15, 2)]] * 2)

    def f(v):  # velocity (m/s) -> receiver data [2, 7, 120]; pml_vmax fixed: the CPML profile is a constant
        return acoustic(v, dx, dt, amp, src, rec, pml_width=4, pml_vmax=3000.0, accuracy=4)

    return f, _heterogeneous(nz, nx)


def _helmholtz_map():
    nz, nx, dx = 10, 12, 10.0
    src = torch.tensor([[[2, 3]], [[2, 8]]])
    rec = torch.tensor([[[1, j] for j in range(0, 12, 2)]] * 2)
    freqs = [20.0, 35.0]

    def f(v):  # vp (m/s) -> [real; imag] of the complex data [2, 6, 2], stacked as a real vector
        d = helmholtz(v, 60.0, dx, freqs, src, rec, omega_ref=2 * np.pi * 25.0, pml_width=4, method="dense")
        return torch.cat([d.real.reshape(-1), d.imag.reshape(-1)])

    return f, _heterogeneous(nz, nx, seed=1)


def _fno_map():
    nz, nx, nf = 12, 12, 5
    torch.manual_seed(0)
    sur = FNOSurrogate(nf, {"nz": nz, "nx": nx, "dx": 10.0}, torch.arange(1, nf + 1) * 0.01, v_mean=2000.0,
                       v_std=150.0, target="frame", width=6, modes=3, n_layers=2, hidden=8, dtype=DT)
    op = FNOOperator(sur, torch.tensor([[3, 3], [3, 8]]), torch.tensor([[1, j] for j in range(0, 12, 3)]))

    def f(v):  # vp (m/s) -> predicted data [2 shots, 4 receivers, 5 frames]
        return op({"vp": v})

    return f, _heterogeneous(nz, nx, seed=2)


OPERATORS = {"acoustic": _acoustic_map, "helmholtz": _helmholtz_map, "fno": _fno_map}


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_dot_test(name):
    """<J v, w> = <v, J^T w> to 1e-12 relative in float64 with random v, w (three pairs)."""
    f, v0 = OPERATORS[name]()
    lin = Linearisation(f, v0, mode="reverse")
    for seed in range(3):
        v = _random(v0.shape, 10 + seed)
        w = _random(lin.value.shape, 20 + seed)
        lhs, rhs = dottest(lin, v, w)
        assert lhs != 0
        assert _rel(lhs, rhs) < RTOL_DOT, (name, lhs, rhs)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_jvp_equals_central_differences(name):
    """``J v`` against ``(f(x + h v) - f(x - h v)) / 2h``, ``v`` a perturbation of 1 m/s rms.

    Tolerance: the central difference's truncation error is ``h^2 |f'''| / 6``. With ``h = 0.1`` (0.1 m/s
    against a 2000 m/s model) the measured relative differences are 6e-8 (acoustic), 5e-8 (Helmholtz) and 2e-11
    (FNO), and they fall 100-fold when ``h`` falls 10-fold (6.4e-6, 6.4e-8, 6.4e-10 for the acoustic solver at
    ``h = 1, 0.1, 0.01``): truncation, as expected; rounding, ``eps |f| / h`` ~ 1e-14, is negligible. 1e-6 leaves
    a margin of 15 over the largest and is far below the O(1) error of a wrong product."""
    f, v0 = OPERATORS[name]()
    lin = Linearisation(f, v0, mode="reverse")
    v = _random(v0.shape, 5)
    # the Helmholtz solver's absorbing layer follows max(v), a constant for AD but not for differences: leave the
    # (unique, well separated) maximum alone so that max(v0 +- h v) = max(v0)
    v.view(-1)[v0.argmax()] = 0
    h = 0.1
    with torch.no_grad():
        fd = (f(v0 + h * v) - f(v0 - h * v)) / (2 * h)
    jv = lin.jvp(v)
    assert float((jv - fd).norm() / jv.norm()) < 1e-6
    # the generic function agrees with the shared linearisation (auto: forward mode or double backward)
    assert torch.allclose(jvp(f, v0, v), jv, rtol=1e-10, atol=1e-12 * float(jv.abs().max()))


# ------------------------------------------------------------------------------------------------ honest fallbacks
class _NumpySquare(torch.autograd.Function):
    """x^2 with a backward computed in numpy: differentiable once, not twice (like the sparse Helmholtz solver)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.from_numpy(x.detach().numpy() ** 2)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return torch.from_numpy(2 * x.detach().numpy() * g.detach().numpy())


class _OldStyleSquare(torch.autograd.Function):
    """x^2 with a differentiable backward but no forward-mode support (no setup_context / jvp)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _BadBackward(torch.autograd.Function):
    """A backward with a shape bug: the error must not be hidden by a finite-difference fallback."""

    @staticmethod
    def forward(ctx, x):
        return x**2

    @staticmethod
    def backward(ctx, g):
        return torch.ones(g.numel() + 1, dtype=g.dtype)


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(linearisation, "_warned", set())


def test_fallback_to_differences_warns_once_per_reason(fresh_warnings):
    x, v = _random(4, 0), _random(4, 1)
    with pytest.warns(RuntimeWarning, match="double-backward Jacobian products unavailable"):
        lin = Linearisation(_NumpySquare.apply, x)
    assert lin.mode == "fd"
    torch.testing.assert_close(lin.jvp(v), 2 * x * v, rtol=1e-7, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Linearisation(_NumpySquare.apply, x)  # the same reason again: no second warning
    with pytest.warns(RuntimeWarning, match="double-backward Jacobian-vector products unavailable"):
        jvp(_NumpySquare.apply, x, v)  # another reason (the function jvp): its own warning, once
    with pytest.raises(RuntimeError):
        Linearisation(_NumpySquare.apply, x, mode="reverse")


def test_the_sparse_helmholtz_adjoint_is_not_differentiable_so_auto_warns_and_uses_differences(fresh_warnings):
    """The SciPy-based adjoint of ``method="sparse"`` gives a gradient outside autograd: a real case of fallback."""
    src, rec = torch.tensor([[[2, 3]]]), torch.tensor([[[1, 6]]])

    def f(v, method="sparse"):
        d = helmholtz(v, 60.0, 10.0, [20.0], src, rec, omega_ref=2 * np.pi * 25.0, pml_width=4, method=method)
        return torch.cat([d.real.reshape(-1), d.imag.reshape(-1)])

    def dense(v):  # the same map through plain autograd: the reference
        return f(v, method="dense")

    v0, v = _heterogeneous(8, 8), _random((8, 8), 3)
    v.view(-1)[v0.argmax()] = 0  # keep max(v), which sets the absorbing layer, fixed (see above)
    lin = Linearisation(f, v0)  # the gradient's graph exists (through v -> coefficients) but misses the cotangent
    with pytest.warns(RuntimeWarning, match="double-backward Jacobian products unavailable"):
        jv = lin.jvp(v)
    assert lin.mode == "fd"
    reference = Linearisation(dense, v0, mode="reverse").jvp(v)
    assert float((jv - reference).norm() / reference.norm()) < 1e-5
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        Linearisation(f, v0, mode="reverse").jvp(v)


def test_missing_forward_mode_falls_back_to_double_backward_without_warning(fresh_warnings):
    x, v = _random(4, 0), _random(4, 1)
    with pytest.raises(RuntimeError, match="setup_context"):
        jvp(_OldStyleSquare.apply, x, v, mode="forward")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = jvp(_OldStyleSquare.apply, x, v)  # exact: double backward
    torch.testing.assert_close(out, 2 * x * v, rtol=1e-15, atol=0)


def test_other_errors_propagate(fresh_warnings):
    x, v = _random(4, 0), _random(4, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no fallback warning on the way
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
            jvp(lambda t: t @ torch.ones(5, 5, dtype=DT), x, v)
        with pytest.raises(RuntimeError, match="invalid gradient"):
            Linearisation(_BadBackward.apply, x)
        with pytest.raises(RuntimeError, match="invalid gradient"):
            jvp(_BadBackward.apply, x, v, mode="reverse")

        def out_of_memory(t):
            raise linearisation._OUT_OF_MEMORY("does not require grad and does not have a grad_fn (simulated OOM)")

        with pytest.raises(linearisation._OUT_OF_MEMORY):
            jvp(out_of_memory, x, v)


def test_dottest_checks_shapes():
    lin = Linearisation(lambda t: torch.stack([t.sum(), (t**2).sum()]), _random(3, 0))
    with pytest.raises(ValueError, match="w must be shaped like f"):
        dottest(lin, _random(3, 1), _random(3, 2))


def test_the_jacobian_helpers_sit_below_models_and_inference():
    """probinv.linearisation imports only torch and the standard library; nothing in models imports inference."""
    root = Path(linearisation.__file__).parent

    def imported(path):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                yield "." * node.level + (node.module or "")
            elif isinstance(node, ast.Import):
                yield from (a.name for a in node.names)

    own = set(imported(root / "linearisation.py"))
    assert {m.split(".")[0] for m in own} <= {"__future__", "logging", "warnings", "collections", "torch"}, own
    for path in sorted((root / "models").glob("*.py")):
        assert not [m for m in imported(path) if "inference" in m], path.name
