"""A Pyro model whose velocity and Q fields share their latent coordinates (the joint vp-Q prior with rho != 0).

:class:`~probinv.models.SeismicModel` maps each latent site to its own field. The joint prior
:class:`probinv.fields.JointVpQPrior` needs Q to see the velocity's whitened coordinates too,
``z_Q = rho z_v + sqrt(1 - rho^2) z_Q'``. :class:`JointSeismicModel` keeps the two independent standard-normal
sites ``"<vp>_z"`` and ``"<q>_z"`` (= ``z_Q'``), so the prior density, the whitened Laplace coordinates and the
samplers are those of :class:`SeismicModel` unchanged; only the map from latents to fields differs (it overrides
:meth:`fields_from_latents` and the sampling of the fields). With ``rho = 0`` it equals a plain ``SeismicModel``.
"""
from __future__ import annotations

from collections.abc import Mapping

import pyro
import pyro.distributions as dist
import torch

from ..fields import JointVpQPrior
from ._model import SeismicModel, _device_of, _dtype_of

__all__ = ["JointSeismicModel", "build_joint_model"]


class JointSeismicModel(SeismicModel):
    """:class:`SeismicModel` with the velocity and Q of a :class:`probinv.fields.JointVpQPrior` coupled.

    Build it with :func:`build_joint_model`. Attribute ``joint`` holds the joint prior.
    """

    def __init__(self, joint: JointVpQPrior, forward, data=None, *, other_priors=None, **kwargs):
        if not isinstance(joint, JointVpQPrior):
            raise TypeError(f"joint must be a probinv.fields.JointVpQPrior, got {type(joint).__name__}")
        priors = dict(joint.priors)
        for name in other_priors or {}:
            if name in priors:
                raise ValueError(f"other_priors must not repeat the joint prior's field {name!r}")
        priors.update(other_priors or {})
        super().__init__(priors, forward, data, **kwargs)
        self.joint = joint

    def _coupled(self, fields: dict, latents: Mapping) -> dict:
        v_name, q_name = self.joint.names
        z_v, z_q = latents[self.latent_site(v_name)], latents[self.latent_site(q_name)]
        fields[q_name] = self.joint.q(self.joint.q_latent(z_v, z_q))
        return fields

    def fields_from_latents(self, latents: Mapping[str, torch.Tensor]) -> dict:
        """Fields of the latent site values, with Q coupled to the velocity's coordinates."""
        return self._coupled(super().fields_from_latents(latents), latents)

    def latents_of(self, fields: Mapping[str, torch.Tensor]) -> dict:
        """Latent sites ``{"<vp>_z", "<q>_z"}`` of a velocity and a Q field (inverse of the coupled map), e.g. for
        ``init=`` of the inference functions (which would invert the Q field without the coupling).
        """
        v_name, q_name = self.joint.names
        z_v = self.joint.vp.inverse(fields[v_name])
        z_c = self.joint.q.inverse(fields[q_name])
        z_q = (z_c - self.joint.rho * z_v) / (1.0 - self.joint.rho ** 2) ** 0.5
        return {self.latent_site(v_name): z_v, self.latent_site(q_name): z_q}

    def _sample_fields(self, like):
        v_name, q_name = self.joint.names
        rest = {k: p for k, p in self.priors.items() if k not in (v_name, q_name)}
        fields, z = {}, {}
        for name in (v_name, q_name):
            prior = self.priors[name]
            dtype, device = _dtype_of(prior, like), _device_of(prior, like)
            zeros = torch.zeros(int(prior.latent_dim), dtype=dtype, device=device)
            z[name] = pyro.sample(self.latent_site(name), dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
        fields[v_name] = pyro.deterministic(v_name, self.joint.vp(z[v_name]), event_dim=2)
        fields[q_name] = pyro.deterministic(q_name, self.joint.q(self.joint.q_latent(z[v_name], z[q_name])),
                                            event_dim=2)
        if rest:
            # the other fields go through SeismicModel's own sampling, restricted to them
            saved = self.priors, self.kinds
            self.priors = rest
            self.kinds = {k: saved[1][k] for k in rest}
            try:
                fields.update(super()._sample_fields(like))
            finally:
                self.priors, self.kinds = saved
        return fields


def build_joint_model(joint: JointVpQPrior, forward, data: torch.Tensor | None = None, *, noise,
                      other_priors: Mapping | None = None, **kwargs) -> SeismicModel:
    """The Pyro model of a joint vp-Q prior around ``forward`` (``noise``, ``subsample_size``, ``regularisers``,
    ``dx``, ``vectorized`` as :func:`probinv.models.build_model`).

    With ``joint.rho == 0`` this is ``build_model(joint.priors, ...)``; otherwise a :class:`JointSeismicModel`.
    ``other_priors`` adds further fields (e.g. a density).
    """
    if not isinstance(joint, JointVpQPrior):
        raise TypeError(f"joint must be a probinv.fields.JointVpQPrior, got {type(joint).__name__}")
    if joint.rho == 0.0:
        priors = dict(joint.priors)
        priors.update(other_priors or {})
        return SeismicModel(priors, forward, data, noise=noise, **kwargs)
    return JointSeismicModel(joint, forward, data, other_priors=other_priors, noise=noise, **kwargs)
