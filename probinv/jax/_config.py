"""JAX settings of the backend: float64 on (the backend must reproduce the PyTorch path in float64)."""
from __future__ import annotations

import jax


def enable_x64() -> None:
    """Turn on ``jax_enable_x64`` (idempotent).

    Without it JAX silently computes in float32 whatever the input dtype. It is a process-wide JAX setting: importing
    :mod:`probinv.jax` turns it on; float32 inputs keep running in float32.
    """
    jax.config.update("jax_enable_x64", True)
