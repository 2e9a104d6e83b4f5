"""The NumPyro/JAX backend: the acoustic solver, priors, noise models and NUTS compiled end to end with JAX.

Optional: needs the ``jax`` extra (``pip install probinv[jax]``: jax, numpyro). Nothing outside this package imports
JAX, so the rest of probinv works without it. Importing :mod:`probinv.jax` enables float64 in JAX
(``jax_enable_x64``), which the backend needs to reproduce the PyTorch path to rounding error; float32 inputs still
compute in float32.

To run NUTS chains in parallel on CPU, call ``numpyro.set_host_device_count(n)`` (or set
``XLA_FLAGS=--xla_force_host_platform_device_count=n``) *before* JAX initialises its backend, i.e. before the first
JAX computation in the process; :func:`probinv.jax.nuts` uses ``chain_method="parallel"`` when enough devices
exist, ``"sequential"`` otherwise.
"""
from ._acoustic import acoustic as acoustic
from ._config import enable_x64 as enable_x64
from ._fno import fno_apply as fno_apply
from ._fno import fno_params as fno_params
from ._model import AcousticForward as AcousticForward
from ._model import Gaussian as Gaussian
from ._model import GaussianLatentSigma as GaussianLatentSigma
from ._model import NumPyroModel as NumPyroModel
from ._model import WhitenedPrior as WhitenedPrior
from ._model import build_model as build_model
from ._model import from_torch_model as from_torch_model
from ._nuts import nuts as nuts

__all__ = ["AcousticForward", "Gaussian", "GaussianLatentSigma", "NumPyroModel", "WhitenedPrior", "acoustic",
           "build_model", "enable_x64", "fno_apply", "fno_params", "from_torch_model", "nuts"]
