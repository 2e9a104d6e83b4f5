"""probinv: probabilistic seismic inversion with differentiable wave solvers and neural-operator surrogates.

Subpackages
-----------
physics      differentiable forward solvers (time-domain acoustic/SH/P-SV, frequency-domain Helmholtz)
surrogate    Fourier neural operator surrogate (network, data, training, pretrained weights)
models       Pyro models: latent fields + likelihood around any forward operator
inference    MAP (= FWI), Laplace, SVI, SVGD, NUTS drivers returning a ``Posterior``

Conventions (see DESIGN.md): SI units, fields shaped ``(nz, nx)`` with z first and depth increasing downwards.
"""
from ._version import __version__ as __version__

__all__ = ["__version__"]
