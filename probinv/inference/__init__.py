"""Inference drivers returning a :class:`Posterior`: ``map`` (= FWI), ``laplace``, ``svi``, ``svgd``, ``nuts``
(``nuts_parallel``: one chain per rank under ``torchrun``).

``probinv.inference.map`` shadows the builtin ``map`` inside this package only (DESIGN.md section 4).
"""
from ._laplace import gauss_newton_eig as gauss_newton_eig
from ._laplace import laplace as laplace
from ._map import map as map  # noqa: A004 (the contract's name)
from ._nuts import nuts as nuts
from ._parallel import nuts_parallel as nuts_parallel
from ._posterior import LowRankGaussian as LowRankGaussian
from ._posterior import Posterior as Posterior
from ._svgd import svgd as svgd
from ._svi import svi as svi

__all__ = sorted(["LowRankGaussian", "Posterior", "gauss_newton_eig", "laplace", "map", "nuts", "nuts_parallel", "svgd",
                  "svi"])
