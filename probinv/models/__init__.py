"""Pyro models: latent fields (priors) + a forward operator + a noise model.

The model's latent sites are the fields (through their whitened coordinates for Gaussian-random-field priors); the
likelihood is observed in ``pyro.plate("shots", n_shots, subsample_size=...)``. Any differentiable callable
``forward(fields: dict[str, Tensor]) -> Tensor`` is a forward operator (DESIGN.md section 4); any object with the
methods of :class:`NoiseModel` is a noise model.
"""
from ._approximation_error import CorrectedForward as CorrectedForward
from ._approximation_error import approximation_error as approximation_error
from ._factory import LIKELIHOODS as LIKELIHOODS
from ._factory import PHYSICS as PHYSICS
from ._factory import build_forward as build_forward
from ._factory import build_likelihood as build_likelihood
from ._factory import physics_fields as physics_fields
from ._forward import AcousticForward as AcousticForward
from ._forward_elastic import PSVForward as PSVForward
from ._forward_elastic import SHForward as SHForward
from ._forward_frequency import FrequencyForward as FrequencyForward
from ._forward_frequency import ViscoAcousticForward as ViscoAcousticForward
from ._forward_frequency import ViscoElasticSHForward as ViscoElasticSHForward
from ._forward_frequency import wavelet_spectrum as wavelet_spectrum
from ._joint_model import JointSeismicModel as JointSeismicModel
from ._joint_model import build_joint_model as build_joint_model
from ._likelihoods import Attenuation as Attenuation
from ._likelihoods import Envelope as Envelope
from ._likelihoods import GlobalCorrelation as GlobalCorrelation
from ._likelihoods import TraceL2 as TraceL2
from ._likelihoods import TravelTime as TravelTime
from ._model import Flat as Flat
from ._model import SeismicModel as SeismicModel
from ._model import build_model as build_model
from ._model import prior_kind as prior_kind
from ._noise import CorrelatedGaussian as CorrelatedGaussian
from ._noise import Gaussian as Gaussian
from ._noise import GaussianLatentSigma as GaussianLatentSigma
from ._noise import NoiseModel as NoiseModel
from ._noise import StudentT as StudentT
from ._regularisers import Smoothness as Smoothness
from ._regularisers import TotalVariation as TotalVariation
from ._regularisers import smoothness as smoothness
from ._regularisers import total_variation as total_variation

__all__ = sorted([
    "AcousticForward", "CorrectedForward", "FrequencyForward", "PSVForward", "SHForward", "ViscoAcousticForward",
    "ViscoElasticSHForward", "wavelet_spectrum", "CorrelatedGaussian", "Flat", "Gaussian", "GaussianLatentSigma",
    "JointSeismicModel", "build_joint_model", "Attenuation", "Envelope", "GlobalCorrelation", "TraceL2", "TravelTime",
    "LIKELIHOODS", "PHYSICS", "build_forward", "build_likelihood", "physics_fields",
    "NoiseModel", "SeismicModel", "Smoothness", "StudentT", "TotalVariation", "approximation_error", "build_model",
    "prior_kind", "smoothness", "total_variation",
])
