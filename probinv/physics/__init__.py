"""Differentiable forward solvers: pure functions of tensors (no Pyro inside).

Conventions (DESIGN.md section 2): SI units; fields ``(nz, nx)`` or ``(batch, nz, nx)``, z first and depth increasing
downwards; locations are int64 ``(z, x)`` grid indices ``[n_shots, n_per_shot, 2]``; sample ``n`` is ``t = n * dt``.
"""
from . import adjoint as adjoint
from .acoustic import acoustic as acoustic
from .boundaries import cpml_profile as cpml_profile
from .elastic import psv as psv
from .elastic import sh as sh
from .wavelets import ricker as ricker

__all__ = ["acoustic", "adjoint", "cpml_profile", "psv", "ricker", "sh"]
