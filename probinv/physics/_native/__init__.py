"""Compiled kernels of the time-domain solvers: C sources shipped in the package, built on first use, loaded by ctypes.

Why this route: ``pip install -e .`` stays a pure-Python install (nothing is built against torch in an isolated build
environment, no toolchain is downloaded); the kernels need only the system C compiler, which every Linux/macOS
machine that builds Python packages has. The first call compiles ``<name>.c`` with ``cc -O3 -shared -fPIC
-pthread`` (plus ``-march=native``, see :data:`CFLAGS`) into a per-user cache directory, under a file name keyed by a
hash of the sources, the compiler and its version, the flags and the CPU; later calls (and later processes) load the
cached library. The library is written to a temporary file and renamed into place
(:func:`probinv._files.atomic_path`), so concurrent first uses never see a partial file. The kernels start POSIX
threads per call (no OpenMP: a thread pool that outlives the call hangs forked children, e.g. multiprocessing pools).

If no compiler is found or compilation fails, :func:`load` returns ``None`` and the solvers use their PyTorch
reference path; one :class:`RuntimeWarning` per process says why. ``PROBINV_NATIVE=0`` disables the compiled
kernels; ``PROBINV_CACHE_DIR`` moves the cache; ``CC`` picks the compiler.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

from ..._files import atomic_path

#: ``-march=native`` lets gcc use the host's vector width (AVX2/AVX-512: ~1.3-2x on the stencil loops). It is safe
#: because the cache key contains the CPU's model and feature flags: a home directory shared by different machines
#: gets one library per kind of CPU, never an illegal instruction. ``-ffp-contract=fast`` lets gcc fuse multiply-adds
#: (one instruction instead of two per stencil tap; the reference path does not fuse, so both paths differ by rounding
#: only: 1e-15 relative in float64, far inside the tests' 1e-12).
CFLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-fPIC", "-shared", "-std=c11", "-pthread")

_SOURCES = {"acoustic": ("acoustic.c", "acoustic_impl.h", "pool.h"),
            "elastic": ("elastic.c", "elastic_impl.h", "pool.h")}
#: Sources built as several objects in parallel (``-DPROBINV_PART=1..n``, one floating type each), then linked:
#: halves the first-use build time (~10 s with -O3 -march=native) on a machine with two free cores.
_PARTS = {"acoustic": 2, "elastic": 2}
_HERE = Path(__file__).resolve().parent
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}
_warned = False


def cache_dir() -> Path:
    """Folder of the compiled libraries: ``$PROBINV_CACHE_DIR``, else ``$XDG_CACHE_HOME/probinv/native``, else
    ``~/.cache/probinv/native`` (the system temporary folder if the home directory is not writable).
    """
    env = os.environ.get("PROBINV_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "probinv" / "native"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass  # cache folder not creatable (read-only home): the per-user temp folder below serves instead
    return Path(tempfile.gettempdir()) / f"probinv-native-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _cpu_fingerprint() -> str:
    """Model name and feature flags of the CPU (what ``-march=native`` compiles for)."""
    info = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    info += line
                if line.strip() == "":
                    break  # the first processor describes them all
    except OSError:
        pass  # no /proc/cpuinfo (not Linux): the cache key goes without a CPU tag
    return info


def _compiler() -> str | None:
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _build(name: str) -> Path:
    """Compile ``name`` (or find it in the cache); returns the library's path or raises RuntimeError."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"the C compiler {cc} does not run: {exc}") from None
    sources = b"".join((_HERE / f).read_bytes() for f in _SOURCES[name])
    errors = []
    for flags in (CFLAGS, tuple(f for f in CFLAGS if f != "-march=native")):
        key = hashlib.sha256(b"\0".join([sources, cc.encode(), version.encode(), " ".join(flags).encode(),
                                         _cpu_fingerprint().encode()])).hexdigest()[:20]
        target = cache_dir() / f"{name}-{key}.so"
        if target.exists():
            return target
        try:
            _log.info("probinv: compiling the %s kernel into %s (once per machine and source version)", name, target)
            with atomic_path(target) as tmp:
                _compile(cc, flags, _HERE / _SOURCES[name][0], tmp, _PARTS.get(name, 1))
            return target
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            errors.append(f"{' '.join(flags)}: {exc}")
    raise RuntimeError("compilation failed: " + " | ".join(errors))


def _check(procs) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(err.strip()[-2000:] or f"exit status {proc.returncode}")


def _compile(cc: str, flags: tuple, source: Path, out: Path, parts: int) -> None:
    """Compile ``source`` into the shared library ``out`` (``parts`` objects built concurrently, then linked)."""
    if parts == 1:
        _check([subprocess.Popen([cc, *flags, "-I", str(source.parent), "-o", str(out), str(source)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)])
        return
    obj_flags = [f for f in flags if f != "-shared"]
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        objs = [os.path.join(tmp, f"part{i}.o") for i in range(1, parts + 1)]
        _check([subprocess.Popen([cc, *obj_flags, f"-DPROBINV_PART={i}", "-I", str(source.parent), "-c", "-o", obj,
                                  str(source)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for i, obj in enumerate(objs, start=1)])
        _check([subprocess.Popen([cc, *flags, "-o", str(out), *objs], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)])


def load(name: str) -> ctypes.CDLL | None:
    """The compiled library ``name`` (built on first use), or ``None`` (then one RuntimeWarning per process)."""
    global _warned
    with _lock:
        if name in _loaded:
            return _loaded[name]
        lib = None
        if os.environ.get("PROBINV_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
            _loaded[name] = None
            return None
        try:
            lib = ctypes.CDLL(str(_build(name)))
        except (RuntimeError, OSError) as exc:
            if not _warned:
                warnings.warn(f"probinv: the compiled solver kernels are unavailable ({exc}); using the slower "
                              "PyTorch reference path", RuntimeWarning, stacklevel=3)
                _warned = True
        _loaded[name] = lib
        return lib
