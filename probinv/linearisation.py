"""Jacobian products of differentiable maps: forward mode, double backward, finite differences, and the dot test.

This module sits on floor 2 (it imports only torch and the standard library) so that both :mod:`probinv.models`
(the approximation-error calibration) and :mod:`probinv.inference` (Laplace's Gauss-Newton Hessian) use it without
importing each other.

Fallbacks are honest: only the errors with which PyTorch says "this function has no forward-mode derivative" or "this
backward is not differentiable" switch to the next method (forward mode -> double backward -> central differences).
Any other error (a shape bug, running out of memory) propagates. A switch to finite differences, which are less
accurate, is announced by a :class:`RuntimeWarning` once per process and reason.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch

__all__ = ["Linearisation", "dottest", "jvp", "vjp"]

log = logging.getLogger("probinv.linearisation")

# Messages PyTorch raises for functions that lack forward-mode AD (measured with torch 2.13, see
# tests/test_linearisation.py): an old-style autograd.Function (``forward(ctx, ...)``) under torch.func, a
# new-style one without ``jvp``, a built-in operator without a forward-mode formula (NotImplementedError), and code
# that reads a tensor's memory directly (numpy/SciPy set-up, e.g. the Helmholtz solver), which torch.func's wrapped
# tensors do not allow.
_NO_FORWARD_MODE = (
    "must override the setup_context staticmethod",
    "You must implement the jvp function",
    "Trying to use forward AD with",
    "Cannot access data pointer of Tensor that doesn't have storage",
)
# ... and for a backward that is not itself differentiable: computed outside autograd (numpy, SciPy: the gradient
# does not require grad), or marked ``@once_differentiable`` (the inputs of the second backward are then unused).
_NO_DOUBLE_BACKWARD = (
    "does not require grad and does not have a grad_fn",
    "appears to not have been used in the graph",
    "marked with @once_differentiable",
    "the backward of f is not differentiable",
)

_warned: set = set()
# torch.OutOfMemoryError is the name from torch 2.5 on; earlier versions have only the CUDA one
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class _NotDifferentiableBackward(RuntimeError):
    """The recorded backward of ``f`` does not depend on its cotangent (not differentiable)."""


def _unsupported(err: BaseException, messages: tuple) -> bool:
    """Whether ``err`` says that a derivative mode is not available (and nothing else went wrong)."""
    if isinstance(err, _OUT_OF_MEMORY):
        return False
    if not isinstance(err, (RuntimeError, NotImplementedError)):
        return False
    text = str(err)
    return any(m in text for m in messages)


def _warn_once(reason: str, err: BaseException) -> None:
    """One ``RuntimeWarning`` per process and ``reason``; later occurrences go to the DEBUG log."""
    if reason in _warned:
        log.debug("%s (%s)", reason, err)
        return
    _warned.add(reason)
    warnings.warn(f"{reason}: {err}. Falling back to central finite differences (less accurate; this warning is "
                  f"shown once per process)", RuntimeWarning, stacklevel=3)


def _fd_jvp(f: Callable, x: torch.Tensor, v: torch.Tensor, fd_step: float) -> torch.Tensor:
    """Central difference ``(f(x + h v) - f(x - h v)) / 2h`` with ``h`` scaled to ``x`` and ``v``."""
    h = fd_step * max(1.0, float(x.abs().max())) / max(float(v.abs().max()), 1e-30)
    with torch.no_grad():
        return (f(x + h * v) - f(x - h * v)) / (2 * h)


def _double_backward_jvp(f: Callable, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        y = f(xx)
        u = torch.zeros_like(y, requires_grad=True)
        (g,) = torch.autograd.grad(y, xx, u, create_graph=True)
        if not g.requires_grad:
            raise _NotDifferentiableBackward("the backward of f is not differentiable")
        (jv,) = torch.autograd.grad(g, u, v)
    return jv.detach()


def jvp(f: Callable, x: torch.Tensor, v: torch.Tensor, mode: str = "auto", fd_step: float = 1e-4) -> torch.Tensor:
    """Jacobian-vector product ``J(x) v`` of ``f``.

    Parameters
    ----------
    f : callable
        ``Tensor[*x.shape] -> Tensor[*y.shape]``, differentiable.
    x, v : Tensor
        The point and the direction, same shape.
    mode : {"auto", "forward", "reverse", "fd"}
        ``"forward"``: ``torch.func.jvp`` (forward-mode AD). ``"reverse"``: double backward (the derivative of the
        vector-Jacobian product with respect to its cotangent). ``"fd"``: central differences with step
        ``fd_step * max(1, max|x|) / max|v|``. ``"auto"`` tries them in this order, moving on only when PyTorch
        reports the mode as unsupported for ``f``; the switch to differences warns once.
    fd_step : float
        Relative step of the differences.

    Returns
    -------
    Tensor
        ``J v``, shaped like ``f(x)``.
    """
    if mode not in ("auto", "forward", "reverse", "fd"):
        raise ValueError(f"mode must be 'auto', 'forward', 'reverse' or 'fd', got {mode!r}")
    if mode in ("auto", "forward"):
        try:
            return torch.func.jvp(f, (x,), (v,))[1]
        except (RuntimeError, NotImplementedError) as err:
            if mode == "forward" or not _unsupported(err, _NO_FORWARD_MODE):
                raise
            # exact either way: the double backward gives the same product, so no warning
            log.debug("forward-mode jvp unavailable (%s); using double backward", err)
    if mode in ("auto", "reverse"):
        try:
            return _double_backward_jvp(f, x, v)
        except (RuntimeError, NotImplementedError) as err:
            if mode == "reverse" or not _unsupported(err, _NO_DOUBLE_BACKWARD):
                raise
            _warn_once("double-backward Jacobian-vector products unavailable", err)
    return _fd_jvp(f, x, v, fd_step)


def vjp(f: Callable, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Vector-Jacobian product ``J(x)^T u`` of ``f`` (one forward, one backward); shaped like ``x``."""
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xx), xx, u)
    return g.detach()


class Linearisation:
    """Jacobian products of ``f`` at ``x`` sharing one forward evaluation.

    ``mode="reverse"`` (or ``"auto"``): one forward ``y = f(x)`` and one differentiable backward ``g(u) = J^T u``
    are recorded; then ``J v = d(g . v)/du`` (double backward, exact, works through custom autograd Functions whose
    backward is made of differentiable torch operations) and ``J^T w`` reuse them without re-running the solver.
    ``mode="fd"``: central differences for ``J v`` (two forwards each), reverse mode for ``J^T w``.
    ``auto`` falls back to ``fd``, with a one-time ``RuntimeWarning``, only when PyTorch reports that the backward of
    ``f`` is not differentiable (found when the backward is recorded, or at the first ``jvp`` when the backward's
    graph does not reach the cotangent); any other error propagates.

    Parameters
    ----------
    f : callable
        ``Tensor[*x.shape] -> Tensor[*y.shape]``.
    x : Tensor
        The linearisation point.
    mode : {"auto", "reverse", "fd"}
    fd_step : float
        Relative step of the finite differences (``mode="fd"``).

    Attributes
    ----------
    passes : int
        Solver passes so far (forwards, backwards and backward-of-backwards), for cost accounting.
    mode : str
        The mode in use (``"reverse"`` or ``"fd"``).
    """

    def __init__(self, f: Callable, x: torch.Tensor, mode: str = "auto", fd_step: float = 1e-4):
        if mode not in ("auto", "reverse", "fd"):
            raise ValueError(f"mode must be 'auto', 'reverse' or 'fd', got {mode!r}")
        self.f, self.x, self.fd_step, self._requested = f, x.detach(), fd_step, mode
        self.passes = 0
        self.mode = "fd" if mode == "fd" else "reverse"
        with torch.enable_grad():
            self._xx = self.x.clone().requires_grad_(True)
            self._y = f(self._xx)
            self.passes += 1
            if self.mode == "reverse":
                try:
                    self._u = torch.zeros_like(self._y, requires_grad=True)
                    (self._g,) = torch.autograd.grad(self._y, self._xx, self._u, create_graph=True)
                    self.passes += 1
                    if not self._g.requires_grad:
                        raise _NotDifferentiableBackward("the backward of f is not differentiable")
                except (RuntimeError, NotImplementedError) as err:
                    if mode == "reverse" or not _unsupported(err, _NO_DOUBLE_BACKWARD):
                        raise
                    _warn_once("double-backward Jacobian products unavailable", err)
                    self.mode = "fd"

    @property
    def value(self) -> torch.Tensor:
        """``f(x)`` (detached)."""
        return self._y.detach()

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """``J v`` for ``v`` shaped like ``x``; shaped like ``f(x)``."""
        if self.mode == "reverse":
            try:
                (jv,) = torch.autograd.grad(self._g, self._u, v.to(self._g.dtype), retain_graph=True)
            except (RuntimeError, NotImplementedError) as err:
                # a backward computed partly outside autograd (e.g. numpy adjoint after differentiable torch
                # operations) records a graph for J^T u that does not reach u: found here, at the first product
                if self._requested == "reverse" or not _unsupported(err, _NO_DOUBLE_BACKWARD):
                    raise
                _warn_once("double-backward Jacobian products unavailable", err)
                self.mode = "fd"
            else:
                self.passes += 1
                return jv.detach()
        self.passes += 2
        return _fd_jvp(self.f, self.x, v, self.fd_step)

    def vjp(self, w: torch.Tensor) -> torch.Tensor:
        """``J^T w`` for ``w`` shaped like ``f(x)``; shaped like ``x``."""
        (g,) = torch.autograd.grad(self._y, self._xx, w, retain_graph=True)
        self.passes += 1
        return g.detach()


def dottest(lin: Linearisation, v: torch.Tensor, w: torch.Tensor) -> tuple[float, float]:
    """Run the adjoint (dot) test of a linearisation: return ``(<J v, w>, <v, J^T w>)``.

    For an exact pair of Jacobian products the two agree to rounding (about ``1e-15`` relative in float64 for a
    well-conditioned operator); a mismatch exposes a wrong adjoint. Compare them with
    ``abs(lhs - rhs) <= rtol * max(abs(lhs), abs(rhs))``.

    Parameters
    ----------
    lin : Linearisation
        Anything with ``jvp(v)`` and ``vjp(w)``.
    v : Tensor
        A model-space vector, shaped like the linearisation point.
    w : Tensor
        A data-space vector, shaped like ``f(x)``.

    Returns
    -------
    (float, float)
        ``<J v, w>`` and ``<v, J^T w>``.
    """
    jv = lin.jvp(v)
    if jv.shape != w.shape:
        raise ValueError(f"w must be shaped like f(x) {tuple(jv.shape)}, got {tuple(w.shape)}")
    jtw = lin.vjp(w)
    if jtw.shape != v.shape:
        raise ValueError(f"v must be shaped like x {tuple(jtw.shape)}, got {tuple(v.shape)}")
    lhs = float((jv * w).sum())
    rhs = float((v * jtw).sum())
    return lhs, rhs
