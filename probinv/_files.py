"""Atomic file writes shared by every module that writes results (NetCDF, checkpoints, caches)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; on success rename it over ``path``, on error remove it.

    The rename (``os.replace``) is atomic on POSIX and Windows when both paths are on the same file system, which a
    sibling temporary file guarantees: readers see either the old file or the complete new one, never a partial one.
    The finished file gets the ordinary permissions of a new file (``0o666`` minus the umask), not the private
    ``0o600`` of :func:`tempfile.mkstemp`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`), creating the folder if needed."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
