"""Physics-specific checks and warnings of the solvers: time-step stability, spatial sampling, source spectrum.

The generic argument checks (scalars, fields, locations ...) live in :mod:`probinv.validation`.
"""
from __future__ import annotations

import os
import sys
import warnings

import torch

#: Frames whose code lives in this directory belong to the solvers; the first frame outside it is the call site.
_PHYSICS_DIR = os.path.dirname(__file__)

#: ``(filename, lineno)`` of the call sites that have shown a once-per-call-site warning in this process.
_WARNED_SITES: set[tuple[str, int]] = set()


def check_dt(dt: float, dt_max: float, what: str) -> None:
    """Raise ``ValueError`` when ``dt`` (s) exceeds the largest stable time step ``dt_max`` (s) of the scheme."""
    if dt > dt_max:
        raise ValueError(f"dt = {dt:.6g} s is unstable for {what}: the largest stable dt is {dt_max:.6g} s "
                         f"(reduce dt or coarsen nothing else: the limit scales with dx / vmax)")


def _filter_action(text: str, category: type[Warning], module: str, lineno: int) -> str:
    """Return the action of the first entry of :data:`warnings.filters` that matches (as :mod:`warnings` does)."""
    for action, msg, cat, mod, ln in warnings.filters:
        if ((msg is None or msg.match(text)) and issubclass(category, cat) and (mod is None or mod.match(module))
                and (ln == 0 or ln == lineno)):
            return action
    return warnings.defaultaction


def warn_once_per_call_site(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn once per call site of the solvers, however the numbers in ``message`` change from call to call.

    The call site is the first frame outside :mod:`probinv.physics` (the user's line that called the solver); the
    warning is attributed to it. Python's own once-per-location rule keys on the message text, which here carries
    the changing model values, so an inversion calling the solver from one line would warn at every forward call.
    Filters are honoured: ``"ignore"`` shows nothing (and does not count as shown), ``"always"`` and ``"error"``
    (``pytest.warns``, ``-W error``) see every call.
    """
    frame = sys._getframe(1)
    stacklevel = 2  # warnings.warn(stacklevel=2) from here points at sys._getframe(1)
    while frame.f_back is not None and os.path.dirname(frame.f_code.co_filename) == _PHYSICS_DIR:
        frame = frame.f_back
        stacklevel += 1
    site = (frame.f_code.co_filename, frame.f_lineno)
    action = _filter_action(message, category, frame.f_globals.get("__name__", "<string>"), frame.f_lineno)
    if action == "ignore":
        return
    if action not in ("always", "error"):
        if site in _WARNED_SITES:
            return
        _WARNED_SITES.add(site)
    warnings.warn(message, category, stacklevel=stacklevel)


def warn_points_per_wavelength(vmin: float, dx: float, fmax: float, minimum: float) -> float:
    """Warn (once per call site) when the grid has fewer than ``minimum`` points per shortest wavelength.

    The shortest wavelength is ``vmin / fmax`` (m/s over Hz); returns the number of points per wavelength.
    """
    ppw = vmin / (fmax * dx)
    if ppw < minimum:
        warn_once_per_call_site(f"only {ppw:.2f} grid points per minimum wavelength (vmin = {vmin:g} m/s, "
                                f"fmax = {fmax:g} Hz, dx = {dx:g} m); at least {minimum:g} are needed for accurate "
                                f"results: reduce dx or the source frequency")
    return ppw


def significant_max_frequency(source_amplitudes: torch.Tensor, dt: float, threshold: float = 0.01) -> float:
    """Highest frequency (Hz) where the mean amplitude spectrum of the sources exceeds ``threshold`` of its peak."""
    x = source_amplitudes.detach().reshape(-1, source_amplitudes.shape[-1]).to(torch.float64)
    nt = x.shape[-1]
    nfft = max(2 * nt, 64)
    spec = torch.fft.rfft(x, n=nfft).abs().mean(0)
    if float(spec.max()) == 0:
        return 0.0
    above = torch.nonzero(spec >= threshold * spec.max()).flatten()
    return float(above.max()) / (nfft * dt)
