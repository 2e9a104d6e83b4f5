r"""The FNO as a forward operator of the probabilistic layer (DESIGN section 4).

:class:`FNOOperator` is a differentiable callable ``forward(fields) -> Tensor`` like the solver-based operators:
it reads the velocity field, runs the surrogate once per shot and returns the predicted data at the receivers,
``[n_shots, n_receivers, n_frames]`` (or ``[batch, n_shots, n_receivers, n_frames]`` for a batch of fields), the
"time" axis being the surrogate's frames (``operator.time``, s).

The surrogate's own error is part of the noise model: ``operator.sigma`` (``Tensor[n_frames]``, solver units) is the
per-frame RMS of the surrogate's error over held-out validation models, and :meth:`FNOOperator.noise_std` combines
it with the data noise as independent Gaussians, ``sqrt(sigma_data^2 + sigma_fno^2)``, so that a posterior through
the surrogate is not overconfident where the network is inaccurate.
"""
from __future__ import annotations

import torch

from .fno import FNOSurrogate

__all__ = ["FNOOperator"]


class FNOOperator(torch.nn.Module):
    r"""Forward operator ``fields -> data`` through an :class:`FNOSurrogate`.

    Parameters
    ----------
    surrogate : FNOSurrogate
        The trained network (e.g. :func:`probinv.surrogate.load_pretrained`).
    source_locations : Tensor[n_shots, 2] or [n_shots, 1, 2] (int64)
        One point source per shot, ``(z, x)`` grid indices.
    receiver_locations : Tensor[n_receivers, 2] or [n_shots, n_receivers, 2] (int64), optional
        Receivers (shared by all shots: a per-shot array must repeat the same receivers). Default: every grid node
        in C order (paper 1's FWI setting), which needs ``shape``.
    field : str
        Name of the velocity field in the ``fields`` dict (m/s), default ``"vp"``.
    dx : float, optional
        Grid spacing in m (default the surrogate's training spacing).
    sigma : Tensor[n_frames], optional
        Surrogate error per frame (solver units); default ``surrogate.metadata["residual_std"]`` when present,
        else zeros.
    shape : (nz, nx), optional
        Grid shape, needed only when ``receiver_locations`` is None (to know the nodes).

    Two ways to put the surrogate's error into the likelihood: :meth:`noise_std` (independent per datum, from the
    per-frame validation RMS; cheap, but it ignores the error's correlation in space and time and leaves the posterior
    overconfident), or :func:`probinv.models.approximation_error` with the solver and this operator on prior draws
    (mean and correlated covariance of the error, a :class:`probinv.models.CorrelatedGaussian`; measured in
    ``benchmarks/fno_posterior.py``).
    """

    def __init__(self, surrogate: FNOSurrogate, source_locations: torch.Tensor,
                 receiver_locations: torch.Tensor | None = None, *, field: str = "vp", dx: float | None = None,
                 sigma: torch.Tensor | None = None, shape: tuple[int, int] | None = None):
        super().__init__()
        if not isinstance(surrogate, FNOSurrogate):
            raise TypeError(f"surrogate must be an FNOSurrogate, got {type(surrogate).__name__}")
        src = torch.as_tensor(source_locations)
        if src.ndim == 3 and src.shape[1] == 1:
            src = src[:, 0]
        if src.ndim != 2 or src.shape[-1] != 2 or src.is_floating_point():
            raise ValueError(f"source_locations must be int64 (z, x) indices shaped [n_shots, 2] or [n_shots, 1, 2] "
                             f"(one source per shot), got shape {tuple(src.shape)} dtype {src.dtype}")
        self.surrogate = surrogate
        self.field = field
        self.dx = dx
        self.register_buffer("source_locations", src.to(torch.int64))
        if receiver_locations is None:
            if shape is None:
                raise ValueError("give receiver_locations or the grid shape (nz, nx) for a receiver at every node")
            nz, nx = shape
            zz, xx = torch.meshgrid(torch.arange(nz), torch.arange(nx), indexing="ij")
            rec = torch.stack([zz.flatten(), xx.flatten()], dim=1)
        else:
            rec = torch.as_tensor(receiver_locations)
            if rec.ndim == 3:
                if not bool((rec == rec[:1]).all()):
                    raise ValueError("receiver_locations must be the same for every shot with the FNO operator")
                rec = rec[0]
            if rec.ndim != 2 or rec.shape[-1] != 2 or rec.is_floating_point():
                raise ValueError(f"receiver_locations must be int64 (z, x) indices shaped [n_receivers, 2], got "
                                 f"shape {tuple(rec.shape)} dtype {rec.dtype}")
        self.register_buffer("receiver_locations", rec.to(torch.int64))
        n_frames = surrogate.config["n_frames"]
        if sigma is None:
            rs = getattr(surrogate, "metadata", {}).get("residual_std")
            sigma = torch.tensor(rs, dtype=torch.float64) if rs is not None else torch.zeros(n_frames)
        sigma = torch.as_tensor(sigma).flatten()
        if sigma.numel() != n_frames or bool((sigma < 0).any()):
            raise ValueError(f"sigma must hold {n_frames} non-negative values (one per frame), got {sigma.numel()}")
        self.register_buffer("sigma", sigma.to(surrogate.scale.dtype))
        self.time = torch.tensor(surrogate.config["time"], dtype=torch.float64)

    def noise_std(self, data_sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Total noise std ``sqrt(data_sigma^2 + sigma_fno^2)`` broadcastable to the data ``[..., n_frames]``."""
        data_sigma = torch.as_tensor(data_sigma, dtype=self.sigma.dtype, device=self.sigma.device)
        return torch.sqrt(data_sigma ** 2 + self.sigma ** 2)

    def forward(self, fields: dict) -> torch.Tensor:
        """Predicted data ``[n_shots, n_receivers, n_frames]`` (``[batch, ...]`` for a batch of fields)."""
        if not isinstance(fields, dict) or self.field not in fields:
            raise ValueError(f"fields must be a dict holding {self.field!r} (velocity in m/s), got "
                             f"{sorted(fields) if isinstance(fields, dict) else type(fields).__name__}")
        v = fields[self.field]
        if not isinstance(v, torch.Tensor) or v.ndim not in (2, 3):
            raise ValueError(f"fields[{self.field!r}] must be a Tensor (nz, nx) or (batch, nz, nx), got "
                             f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
        single = v.ndim == 2
        vb = v[None] if single else v
        b, nz, nx = vb.shape
        ns = self.source_locations.shape[0]
        vv = vb[:, None].expand(b, ns, nz, nx).reshape(b * ns, nz, nx)
        src = self.source_locations.to(v.device).repeat(b, 1)
        u = self.surrogate(vv, src, self.dx)  # [b * ns, n_frames, nz, nx]
        rec = self.receiver_locations.to(v.device)
        d = u[:, :, rec[:, 0], rec[:, 1]].transpose(1, 2)  # [b * ns, n_receivers, n_frames]
        d = d.reshape(b, ns, rec.shape[0], -1)
        return d[0] if single else d
