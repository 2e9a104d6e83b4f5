r"""The FNO as a forward operator of the probabilistic layer (DESIGN sections 1 and 4).

:class:`FNOOperator` follows the forward-operator protocol of the solver-based operators: ``fields`` (the field names
it reads, ``("vp",)``), ``n_shots``, ``operator(fields, shots=None) -> data`` (differentiable) and ``describe()`` (a
JSON-able record of the network, its checkpoint and the set-up it was trained for, for a result file's attributes).
It reads the velocity field, runs the surrogate once per shot and returns the predicted data at the receivers,
``[n_shots, n_receivers, n_frames]`` (or ``[batch, n_shots, n_receivers, n_frames]`` for a batch of fields), the
"time" axis being the surrogate's frames (``operator.time``, s).

The surrogate's own error is part of the noise model: ``operator.sigma`` (``Tensor[n_frames]``, solver units) is the
per-frame RMS of the surrogate's error over held-out validation models, and :meth:`FNOOperator.noise_std` combines
it with the data noise as independent Gaussians, ``sqrt(sigma_data^2 + sigma_fno^2)``, so that a posterior through
the surrogate is not overconfident where the network is inaccurate.
"""
from __future__ import annotations

import torch

from ..validation import check_shape
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

    Calling it as ``operator(fields, shots=idx)`` (``idx`` an int64 tensor of shot indices) runs only those shots
    and returns ``[n_sub, n_receivers, n_frames]`` (``[batch, n_sub, n_receivers, n_frames]`` for a batch of
    fields), as the Pyro model's shot plate with ``subsample_size`` asks.

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
        self.shape = None if shape is None else check_shape(shape)
        self.register_buffer("source_locations", src.to(torch.int64))
        self._every_node = receiver_locations is None  # a receiver at every node, in C order
        if receiver_locations is None:
            if shape is None:
                raise ValueError("give receiver_locations or the grid shape (nz, nx) for a receiver at every node")
            nz, nx = self.shape
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

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the fields the operator reads (the velocity, m/s)."""
        return (self.field,)

    @property
    def n_shots(self) -> int:
        """Number of shots (one point source each)."""
        return int(self.source_locations.shape[0])

    def noise_std(self, data_sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Total noise std ``sqrt(data_sigma^2 + sigma_fno^2)`` broadcastable to the data ``[..., n_frames]``."""
        data_sigma = torch.as_tensor(data_sigma, dtype=self.sigma.dtype, device=self.sigma.device)
        return torch.sqrt(data_sigma ** 2 + self.sigma ** 2)

    def forward(self, fields: dict, shots: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted data ``[n_shots, n_receivers, n_frames]`` (``[batch, ...]`` for a batch of fields).

        ``shots`` (int64 indices, optional) selects a subset of the shots: ``[n_sub, n_receivers, n_frames]``.
        """
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
        src = self.source_locations.to(v.device)
        if shots is not None:
            shots = torch.as_tensor(shots, device=v.device)
            if shots.ndim != 1 or shots.is_floating_point():
                raise ValueError(f"shots must be a 1-D int64 tensor of shot indices, got shape {tuple(shots.shape)} "
                                 f"dtype {shots.dtype}")
            src = src[shots]
        ns = src.shape[0]
        vv = vb[:, None].expand(b, ns, nz, nx).reshape(b * ns, nz, nx)
        u = self.surrogate(vv, src.repeat(b, 1), self.dx)  # [b * ns, n_frames, nz, nx]
        rec = self.receiver_locations.to(v.device)
        d = u[:, :, rec[:, 0], rec[:, 1]].transpose(1, 2)  # [b * ns, n_receivers, n_frames]
        d = d.reshape(b, ns, rec.shape[0], -1)
        return d[0] if single else d

    def describe(self) -> dict:
        """Every setting that says which surrogate produced the data, JSON-able (for a result file's attributes).

        Returns
        -------
        dict
            ``physics`` (``"fno"``), ``fields``, ``n_shots``, ``n_receivers``; the data's time axis: ``nt`` (frames),
            ``dt`` (s between frames) and ``time`` (frame times in s; frame ``k`` is at ``time[k]``, not
            ``k * dt``); ``dx`` (m, the spacing the operator evaluates on), ``shape`` (``[nz, nx]`` or None);
            ``source_locations`` / ``receiver_locations`` (``(z, x)`` grid indices; receivers None with
            ``receivers = "every node"`` when every node is recorded); the emulated solver's ``accuracy``,
            ``pml_width``, ``free_surface`` and ``wavelet``; ``network`` (architecture: width, modes, layers,
            hidden width, spectral method, target, parameter count); ``normalisation`` (``v_mean``, ``v_std``
            (m/s), ``source_width``, ``extent`` (m), per-frame ``output_scale``); ``training`` (grid, simulation
            configuration, the source/receiver layout it was trained for, validation error, optimisation
            settings); ``checkpoint`` (name, path, sha256, step where loaded from a file); ``error_std`` (the
            per-frame surrogate error sigma used by :meth:`noise_std`, solver units).
        """
        sur = self.surrogate
        c = sur.config
        sim = dict(c.get("simulation") or {})
        meta = getattr(sur, "metadata", {})
        time = [float(t) for t in c["time"]]
        if sim:
            frame_dt = float(sim["frame_every"]) * float(sim["dt"])
        else:
            frame_dt = time[1] - time[0] if len(time) > 1 else time[0]
        every_node = getattr(self, "_every_node", False)  # absent on an operator pickled by an older probinv
        freq = sim.get("freq")
        wavelet = None if freq is None else {
            "type": "ricker", "freq": float(freq),
            "t0": float(sim["t0"]) if sim.get("t0") is not None else 1.5 / float(freq)}
        # a surrogate pickled whole by an older probinv has no checkpoint_info
        checkpoint = dict(getattr(sur, "checkpoint_info", {}))
        if "probinv_version" in meta:
            checkpoint["probinv_version"] = meta["probinv_version"]
        return {
            "physics": "fno",
            "fields": list(self.fields),
            "n_shots": self.n_shots,
            "n_receivers": int(self.receiver_locations.shape[0]),
            "nt": int(c["n_frames"]),
            "dt": frame_dt,
            "time": time,
            "time_units": "s",
            "dx": float(self.dx if self.dx is not None else c["grid"]["dx"]),
            "shape": None if self.shape is None else list(self.shape),
            "source_locations": self.source_locations.tolist(),
            "receiver_locations": None if every_node else self.receiver_locations.tolist(),
            "receivers": "every node" if every_node else "listed",
            "accuracy": sim.get("accuracy"),
            "pml_width": sim.get("pml_width"),
            "free_surface": False,
            "wavelet": wavelet,
            "network": {"class": "FNO2d", "width": c["width"], "modes": list(c["modes"]), "layers": c["n_layers"],
                        "hidden": c["hidden"], "method": c["method"], "target": c["target"],
                        "n_frames": int(c["n_frames"]), "n_parameters": sur.net.n_parameters(),
                        "dtype": str(sur.scale.dtype).replace("torch.", "")},
            "normalisation": {"v_mean": c["v_mean"], "v_std": c["v_std"], "source_width": c["source_width"],
                              "extent": c["grid"]["nz"] * c["grid"]["dx"],
                              "output_scale": [float(s) for s in sur.scale.tolist()]},
            "training": {"grid": dict(c["grid"]), "simulation": sim or None,
                         "layout": {"sources": "one Ricker point source per model at a uniformly random grid node",
                                    "receivers": "every grid node"},
                         "val_rel_l2": meta.get("val_rel_l2"), "baseline_rel_l2": meta.get("baseline_rel_l2"),
                         "n_train": meta.get("n_train"), "n_val": meta.get("n_val"),
                         "settings": meta.get("training")},
            "checkpoint": checkpoint or None,
            "error_std": [float(s) for s in self.sigma.tolist()],
        }
