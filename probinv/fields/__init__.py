r"""Random fields and priors on a grid.

Gaussian random fields with von Karman / Matern covariance, sampled exactly by FFT (circulant embedding), and the
prior parameterisations that the Pyro models build on:

* :func:`sample_grf` -- exact samples on a non-periodic grid (circulant embedding of the covariance on a padded grid);
* :class:`WhitenedField` -- ``field = mean + L z`` with ``z ~ N(0, I)`` and ``L`` the covariance square root on the
  grid (Karhunen-Loeve modes), optionally truncated to the leading modes and squashed into bounds;
* :class:`BoxField` -- a flat prior inside ``[lo, hi]`` per pixel;
* :func:`grid_covariance_eigh` -- the Karhunen-Loeve modes themselves (exact up to 128 x 128, leading modes beyond).

Paper 1's random velocity models (Yang et al. 2021) are a set-up built on :func:`sample_grf`:
:func:`probinv.scenarios.paper1_models`.

The package is split along its seams: ``_covariance`` (covariance functions, spectra, circulant-embedding sampling),
``_karhunen_loeve`` (the grid's Karhunen-Loeve basis and its caches), ``_priors`` (the prior modules) and ``_checks``
(the argument checks specific to fields; the generic ones come from :mod:`probinv.validation`). Import from
``probinv.fields``: the private modules may change.

Conventions (DESIGN.md): fields are ``(nz, nx)`` with z first, a batch is ``(batch, nz, nx)``; the grid spacing ``dx``
and the correlation lengths ``a_z``, ``a_x`` are in metres, wavenumbers in rad/m.

Covariance and spectrum
-----------------------
Both families are the same function. With the anisotropic scaled lag
:math:`r = \sqrt{(h_z / a_z)^2 + (h_x / a_x)^2}` the correlation (covariance of a unit-variance field) is

.. math:: \rho(h_z, h_x) = \frac{2^{1-\nu}}{\Gamma(\nu)} \, r^\nu K_\nu(r), \qquad \rho(0, 0) = 1,

where :math:`K_\nu` is the modified Bessel function of the second kind. ``von_karman`` names the smoothness the Hurst
exponent :math:`\kappa` (Sato & Fehler; Frankel & Clayton 1986), ``matern`` names it :math:`\nu` (Matern 1960; Stein
1999): a von Karman field with Hurst :math:`\kappa` **is** a Matern field with :math:`\nu = \kappa`. ``a`` is the scale
inside :math:`K_\nu(r / a)`; the Rasmussen-Williams length (``sqrt(2 nu) r / l``) is :math:`l = a \sqrt{2\nu}`.
Special cases: :math:`\nu = 1/2` gives :math:`\rho = e^{-r}` (exponential), :math:`\nu = 3/2` gives
:math:`(1 + r) e^{-r}`.

The 2D power spectral density, with the Fourier convention
:math:`\rho(\mathbf h) = (2\pi)^{-2} \iint P(\mathbf k) e^{i \mathbf k \cdot \mathbf h} \, dk_z \, dk_x`, is

.. math:: P(k_z, k_x) = \frac{4 \pi \nu \, a_z a_x}{\left(1 + k_z^2 a_z^2 + k_x^2 a_x^2\right)^{\nu + 1}},

normalised so that :math:`(2\pi)^{-2} \iint P \, d\mathbf k = \rho(0) = 1` (the field's variance before scaling by
``std**2``); it has units of m^2 (area, per unit variance). A field sampled at spacing ``dx`` on ``nz x nx`` points has
expected periodogram :math:`E|\sum_j f_j e^{-i \mathbf k \cdot \mathbf x_j}|^2 \, dx^2 / (n_z n_x) \to P(\mathbf k)`
(aliased) on large grids.

References
----------
Dietrich, C. R. & Newsam, G. N. (1997). Fast and exact simulation of stationary Gaussian processes through circulant
embedding of the covariance matrix. SIAM J. Sci. Comput. 18(4), 1088-1107.
Frankel, A. & Clayton, R. W. (1986). Finite difference simulations of seismic scattering. JGR 91(B6), 6465-6489.
"""
from ._covariance import matern_covariance as matern_covariance
from ._covariance import matern_spectrum as matern_spectrum
from ._covariance import sample_grf as sample_grf
from ._covariance import von_karman_covariance as von_karman_covariance
from ._covariance import von_karman_spectrum as von_karman_spectrum
from ._joint import JointVpQPrior as JointVpQPrior
from ._joint import LogQField as LogQField
from ._karhunen_loeve import MAX_EIGH_POINTS as MAX_EIGH_POINTS
from ._karhunen_loeve import grid_covariance_eigh as grid_covariance_eigh
from ._priors import DEFAULT_RETAINED_VARIANCE as DEFAULT_RETAINED_VARIANCE
from ._priors import BoxField as BoxField
from ._priors import WhitenedField as WhitenedField
from ._priors import linear_depth_trend as linear_depth_trend

__all__ = [
    "BoxField",
    "DEFAULT_RETAINED_VARIANCE",
    "JointVpQPrior",
    "LogQField",
    "MAX_EIGH_POINTS",
    "WhitenedField",
    "grid_covariance_eigh",
    "linear_depth_trend",
    "matern_covariance",
    "matern_spectrum",
    "sample_grf",
    "von_karman_covariance",
    "von_karman_spectrum",
]
