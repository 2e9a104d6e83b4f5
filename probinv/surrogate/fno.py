r"""Fourier neural operator for the 2D acoustic wavefield (Yang et al., 2021, after Li et al., 2021).

Architecture (paper 1, Fig. 1): a pointwise lifting ``P`` of the input channels to width ``w``; four Fourier layers
``v <- relu(K v + W v + b)`` (``K`` the truncated spectral convolution on the lifted channels, ``W`` a pointwise
linear map); a pointwise projection ``Q`` (``w -> hidden -> n_frames``, ReLU between) to the ``N`` output frames.

Every operation is pointwise or spectral, so the same weights evaluate any grid of the same physical domain
(trained on 64 x 64, evaluated on 128 x 128). All tensors are contiguous ``NCHW`` ``[batch, channels, nz, nx]``:
channels-last or strided layouts made the CPU spectral convolution two orders of magnitude slower in torch 2.x.

Input encoding (:func:`encode_inputs`, 5 channels): normalised velocity ``(v - v_mean) / v_std``, a Gaussian source
bump of physical width ``source_width`` (m), the source distance ``r / L``, and the coordinates ``z / L``, ``x / L``
(``L`` the domain extent of the training grid), all in physical units so that a finer grid of the same domain gives
the same functions.
"""
from __future__ import annotations

import torch

from ..validation import check_choice, check_int
from .data import homogeneous_response
from .spectral import SpectralConv2d

__all__ = ["FNO2d", "FNOSurrogate", "N_INPUT_CHANNELS", "TARGET_MODES", "encode_inputs"]

N_INPUT_CHANNELS = 5


def encode_inputs(v: torch.Tensor, source_locations: torch.Tensor, dx: float, *, v_mean: float, v_std: float,
                  extent: float, source_width: float) -> torch.Tensor:
    r"""Input channels of the FNO for velocity models and point sources.

    Parameters
    ----------
    v : Tensor[batch, nz, nx]
        Velocity in m/s.
    source_locations : Tensor[batch, 2] (int64)
        Source grid indices ``(z, x)``, one source per model.
    dx : float
        Grid spacing in m (equal in z and x).
    v_mean, v_std : float
        Velocity normalisation in m/s (the training family's mean and standard deviation).
    extent : float
        Length scale ``L`` in m for distances and coordinates (the training domain's side).
    source_width : float
        Standard deviation in m of the Gaussian source bump.

    Returns
    -------
    Tensor[batch, 5, nz, nx]
        ``[(v - v_mean)/v_std, exp(-r^2 / (2 s^2)), r / L, z / L, x / L]``, dtype and device of ``v``.
    """
    b, nz, nx = v.shape
    dtype, device = v.dtype, v.device
    z = torch.arange(nz, dtype=dtype, device=device) * dx
    x = torch.arange(nx, dtype=dtype, device=device) * dx
    src = source_locations.to(device=device, dtype=dtype) * dx  # [B, 2] metres
    dz = z[None, :, None] - src[:, 0, None, None]
    dxx = x[None, None, :] - src[:, 1, None, None]
    r = torch.sqrt(dz * dz + dxx * dxx)  # [B, nz, nx]
    bump = torch.exp(-0.5 * (r / source_width) ** 2)
    zz = (z / extent)[None, :, None].expand(b, nz, nx)
    xx = (x / extent)[None, None, :].expand(b, nz, nx)
    return torch.stack([(v - v_mean) / v_std, bump, r / extent, zz, xx], dim=1).contiguous()


class Pointwise(torch.nn.Module):
    r"""Pointwise (1 x 1) linear map of the channels of an NCHW tensor, as one batched GEMM.

    Same maths as ``Conv2d(in, out, 1)`` (and the same initialisation), but ``W @ x.view(B, C, nz * nx)``: on CPU
    in torch 2.13 the mkldnn 1 x 1 convolution and its backward took over half of an FNO training step; GEMMs
    cost about a third of that (``benchmarks/fno_speed.py``).
    """

    def __init__(self, in_channels: int, out_channels: int, *, dtype=None, device=None):
        super().__init__()
        conv = torch.nn.Conv2d(in_channels, out_channels, 1, dtype=dtype, device=device)  # its default init
        self.weight = torch.nn.Parameter(conv.weight.detach()[:, :, 0, 0].clone())
        self.bias = torch.nn.Parameter(conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, nz, nx = x.shape
        y = torch.baddbmm(self.bias[None, :, None].expand(b, -1, nz * nx), self.weight.expand(b, -1, -1),
                          x.reshape(b, c, nz * nx))
        return y.view(b, -1, nz, nx)


class FNO2d(torch.nn.Module):
    r"""FNO mapping input channels ``[batch, in_channels, nz, nx]`` to ``[batch, out_channels, nz, nx]``.

    Parameters
    ----------
    in_channels : int
        Input channels (5 for :func:`encode_inputs`).
    out_channels : int
        Output channels (the ``N`` wavefield frames).
    width : int
        Lifted channel width ``w`` (paper 1 / Li et al.: 32 here by default).
    modes : int or (int, int)
        Kept Fourier modes ``(m_z, m_x)`` per layer (``|k_z| < m_z``, ``0 <= k_x < m_x``).
    n_layers : int
        Number of Fourier layers (4 in paper 1).
    hidden : int
        Hidden width of the projection ``Q`` (128 in the reference FNO).
    method : {"dft", "fft"}
        Spectral convolution implementation (see :func:`probinv.surrogate.spectral.spectral_conv2d`).
    dtype, device : optional
        Of the parameters.
    """

    def __init__(self, in_channels: int = N_INPUT_CHANNELS, out_channels: int = 64, *, width: int = 32,
                 modes: int | tuple[int, int] = 12, n_layers: int = 4, hidden: int = 128, method: str = "dft",
                 dtype: torch.dtype | None = None, device=None):
        super().__init__()
        in_channels, out_channels = check_int("in_channels", in_channels), check_int("out_channels", out_channels)
        width, n_layers = check_int("width", width), check_int("n_layers", n_layers)
        hidden = check_int("hidden", hidden)
        mz, mx = (modes, modes) if isinstance(modes, int) else tuple(modes)
        kw = dict(dtype=dtype, device=device)
        self.config = dict(in_channels=in_channels, out_channels=out_channels, width=width, modes=(mz, mx),
                           n_layers=n_layers, hidden=hidden, method=method)
        self.lift = Pointwise(in_channels, width, **kw)
        self.spectral = torch.nn.ModuleList(
            [SpectralConv2d(width, width, mz, mx, method=method, **kw) for _ in range(n_layers)])
        self.pointwise = torch.nn.ModuleList([Pointwise(width, width, **kw) for _ in range(n_layers)])
        self.proj1 = Pointwise(width, hidden, **kw)
        self.proj2 = Pointwise(hidden, out_channels, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[batch, in_channels, nz, nx]`` -> ``[batch, out_channels, nz, nx]`` (contiguous NCHW)."""
        if x.ndim != 4 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"x must be shaped [batch, {self.config['in_channels']}, nz, nx], got {tuple(x.shape)}")
        h = self.lift(x.contiguous())
        for spec, point in zip(self.spectral, self.pointwise):
            # ReLU after every Fourier layer, as in paper 1 (Li et al. leave the last one linear)
            h = torch.relu(spec(h) + point(h))
        return self.proj2(torch.relu(self.proj1(h)))

    def n_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())


TARGET_MODES = ("global", "frame", "residual")


class FNOSurrogate(torch.nn.Module):
    r"""The wavefield surrogate: input encoding, :class:`FNO2d`, and the target representation.

    ``surrogate(v, source_locations)`` returns the predicted pressure wavefield ``[batch, n_frames, nz, nx]`` in the
    solver's units for velocity models ``v [batch, nz, nx]`` (m/s) and one point source per model
    (``source_locations [batch, 2]``, int64 ``(z, x)`` grid indices) — the same quantity as
    :func:`probinv.surrogate.data.simulate_wavefields`.

    Target representation (what the network learns, ``target``):

    ``"global"``
        ``u / s``, one scale for the whole data set. The source spike (peak ~25x the global std) dominates the MSE.
    ``"frame"``
        ``u / s_k``, one RMS scale per frame ``k``: late, weak frames weigh as much as early ones.
    ``"residual"`` (default)
        ``(u - u_0) / s_k``, with ``u_0`` the response of the homogeneous medium at the mean velocity for the same
        source (computed once by the solver on a doubled grid, shifted to the source) and ``s_k`` the per-frame RMS
        of the residual. The spike and the direct wave are removed before the loss sees them, and the network
        output 0 is already the homogeneous-medium baseline. ``u_0`` on another grid (e.g. 128 x 128) is computed
        by the solver on first use and cached.

    Why ``"residual"`` (``benchmarks/fno_targets.py``: the paper-1 network, 200 training / 40 validation samples,
    40 Adam steps, the same initialisation): validation relative L2 (physical units) went 1.00 -> 0.969 with
    ``"global"``, 1.00 -> 0.968 with ``"frame"``, and stayed at 0.262 with ``"residual"``, which starts at the
    homogeneous-medium baseline (0.262 on these samples). With the spike or the direct wave in the target the network
    spends its first steps learning what the solver gives for free; how far it improves on the baseline is for the
    long training to show.

    Parameters
    ----------
    n_frames : int
        Output frames ``N``.
    grid : dict
        ``{"nz", "nx", "dx"}`` of the training grid (m).
    time : Tensor[n_frames]
        Frame times in s.
    v_mean, v_std : float
        Velocity normalisation (m/s), and ``v_mean`` is the homogeneous reference of ``"residual"``.
    target : {"global", "frame", "residual"}
        Target representation (above).
    simulation : dict, optional
        The generator configuration (:class:`probinv.surrogate.data.SimulationConfig` as a dict); needed by
        ``"residual"`` to compute ``u_0`` on other grids.
    width, modes, n_layers, hidden, method
        Passed to :class:`FNO2d`.
    source_width : float, optional
        Width in m of the Gaussian source channel (default one training grid spacing).
    """

    def __init__(self, n_frames: int, grid: dict, time: torch.Tensor, *, v_mean: float, v_std: float,
                 target: str = "residual", simulation: dict | None = None, width: int = 32,
                 modes: int | tuple[int, int] = 12, n_layers: int = 4, hidden: int = 128, method: str = "dft",
                 source_width: float | None = None, dtype: torch.dtype | None = None, device=None):
        super().__init__()
        check_choice("target", target, TARGET_MODES)
        if not (v_std > 0 and v_mean > 0):
            raise ValueError(f"v_mean and v_std must be positive velocities in m/s, got {v_mean!r}, {v_std!r}")
        nz, nx, dx = int(grid["nz"]), int(grid["nx"]), float(grid["dx"])
        time = torch.as_tensor(time, dtype=torch.float64).flatten()
        if time.numel() != n_frames:
            raise ValueError(f"time has {time.numel()} frame times but n_frames = {n_frames}")
        self.config = dict(n_frames=n_frames, grid=dict(nz=nz, nx=nx, dx=dx), time=time.tolist(),
                           v_mean=float(v_mean), v_std=float(v_std), target=target, simulation=simulation,
                           width=width, modes=list((modes, modes) if isinstance(modes, int) else modes),
                           n_layers=n_layers, hidden=hidden, method=method,
                           source_width=float(source_width if source_width is not None else dx))
        kw = dict(dtype=dtype, device=device)
        self.net = FNO2d(N_INPUT_CHANNELS, n_frames, width=width, modes=modes, n_layers=n_layers, hidden=hidden,
                         method=method, **kw)
        f = dtype if dtype is not None else torch.get_default_dtype()
        self.register_buffer("scale", torch.ones(n_frames, dtype=f, device=device))
        # homogeneous response for a source at the centre of a (2nz-1, 2nx-1) grid; empty unless "residual"
        self.register_buffer("homogeneous", torch.zeros(n_frames, 2 * nz - 1, 2 * nx - 1, dtype=f, device=device)
                             if target == "residual" else torch.zeros(0, dtype=f, device=device))
        self._u0_cache: dict = {}
        self.metadata: dict = {}  # filled by load_checkpoint / load_pretrained (val_rel_l2, grid, time, training)
        # where the weights came from (load_checkpoint: path, sha256, step; load_pretrained: name); {} if built here
        self.checkpoint_info: dict = {}

    # -- target representation ---------------------------------------------------------------------------------
    def reference(self, source_locations: torch.Tensor, nz: int, nx: int, dx: float,
                  dtype: torch.dtype, device) -> torch.Tensor:
        """Homogeneous-medium wavefield ``u_0 [batch, n_frames, nz, nx]`` for the sources (zeros unless residual)."""
        b = source_locations.shape[0]
        if self.config["target"] != "residual":
            return torch.zeros(b, self.config["n_frames"], nz, nx, dtype=dtype, device=device)
        g = self.config["grid"]
        if (nz, nx) == (g["nz"], g["nx"]) and abs(dx - g["dx"]) <= 1e-9 * dx:
            big = self.homogeneous
        else:
            key = (nz, nx, float(dx))
            if key not in self._u0_cache:
                if self.config["simulation"] is None:
                    raise ValueError("this surrogate has no simulation config, so it cannot compute the "
                                     f"homogeneous reference on a {nz} x {nx} grid with dx = {dx} m")
                self._u0_cache[key] = homogeneous_response(self.config["simulation"], nz, nx, dx,
                                                           self.config["v_mean"], times=self.config["time"])
            big = self._u0_cache[key]
        big = big.to(dtype=dtype, device=device)
        src = source_locations.to(torch.int64).cpu()
        out = [big[:, nz - 1 - int(sz):2 * nz - 1 - int(sz), nx - 1 - int(sx):2 * nx - 1 - int(sx)]
               for sz, sx in src.tolist()]
        return torch.stack(out)

    def encode_target(self, u: torch.Tensor, source_locations: torch.Tensor, dx: float | None = None) -> torch.Tensor:
        """Physical wavefield ``[batch, n_frames, nz, nx]`` -> the normalised network target."""
        dx = self.config["grid"]["dx"] if dx is None else float(dx)
        u0 = self.reference(source_locations, u.shape[-2], u.shape[-1], dx, u.dtype, u.device)
        return (u - u0) / self.scale.to(u.dtype)[:, None, None]

    def decode(self, y: torch.Tensor, source_locations: torch.Tensor, dx: float | None = None) -> torch.Tensor:
        """Network output -> physical wavefield ``[batch, n_frames, nz, nx]``."""
        dx = self.config["grid"]["dx"] if dx is None else float(dx)
        u0 = self.reference(source_locations, y.shape[-2], y.shape[-1], dx, y.dtype, y.device)
        return y * self.scale.to(y.dtype)[:, None, None] + u0

    def fit_target(self, u: torch.Tensor, source_locations: torch.Tensor,
                   homogeneous: torch.Tensor | None = None) -> None:
        """Set the scales (and the homogeneous reference) from training wavefields ``u [n, n_frames, nz, nx]``.

        ``homogeneous`` is the ``[n_frames, 2nz-1, 2nx-1]`` reference for ``"residual"``
        (:func:`probinv.surrogate.data.homogeneous_response` on the doubled grid).
        """
        if self.config["target"] == "residual":
            if homogeneous is None or tuple(homogeneous.shape) != tuple(self.homogeneous.shape):
                raise ValueError(f"target 'residual' needs homogeneous shaped {tuple(self.homogeneous.shape)}, got "
                                 f"{None if homogeneous is None else tuple(homogeneous.shape)}")
            self.homogeneous.copy_(homogeneous)
        with torch.no_grad():
            self.scale.fill_(1.0)
            acc = torch.zeros(self.config["n_frames"], dtype=torch.float64, device=self.scale.device)
            for i in range(0, u.shape[0], 16):
                r = self.encode_target(u[i:i + 16].to(self.scale), source_locations[i:i + 16].to(self.scale.device))
                acc += r.double().pow(2).sum(dim=(0, 2, 3))
            ms = acc / (u.shape[0] * u.shape[-2] * u.shape[-1])
            s = (ms.mean() if self.config["target"] == "global" else ms).sqrt().expand(self.config["n_frames"])
            s = s.to(self.scale.dtype)
            # a frame with no energy (before the wavelet starts) keeps scale 1 instead of dividing by ~0
            s = torch.where(s > 1e-6 * s.max(), s, s.max())
            self.scale.copy_(s)

    # -- evaluation ---------------------------------------------------------------------------------------------
    def features(self, v: torch.Tensor, source_locations: torch.Tensor, dx: float | None = None) -> torch.Tensor:
        """Input channels ``[batch, 5, nz, nx]`` (see :func:`encode_inputs`)."""
        c = self.config
        dx = c["grid"]["dx"] if dx is None else float(dx)
        return encode_inputs(v, source_locations, dx, v_mean=c["v_mean"], v_std=c["v_std"],
                             extent=c["grid"]["nz"] * c["grid"]["dx"], source_width=c["source_width"])

    def forward(self, v: torch.Tensor, source_locations: torch.Tensor, dx: float | None = None) -> torch.Tensor:
        """Predicted wavefield ``[batch, n_frames, nz, nx]`` for ``v [batch, nz, nx]`` (m/s), sources ``[batch, 2]``.

        ``dx`` (m) defaults to the training spacing; give it for another grid of the same domain (grid-free).
        """
        if not isinstance(v, torch.Tensor) or v.ndim != 3:
            raise ValueError(f"v must be a Tensor[batch, nz, nx] in m/s, got "
                             f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
        if (not isinstance(source_locations, torch.Tensor) or source_locations.shape != (v.shape[0], 2)
                or source_locations.is_floating_point()):
            raise ValueError(f"source_locations must be an int64 Tensor[{v.shape[0]}, 2] of (z, x) grid indices, "
                             f"got {getattr(source_locations, 'shape', type(source_locations).__name__)}")
        p = self.scale
        if v.dtype != p.dtype:
            raise TypeError(f"v has dtype {v.dtype} but the surrogate's weights are {p.dtype}: convert one of them "
                            f"(e.g. surrogate.double() for float64 gradients)")
        nz, nx = v.shape[-2:]
        if bool(((source_locations < 0) | (source_locations >= torch.tensor([nz, nx], device=source_locations.device)))
                .any()):
            raise ValueError(f"source_locations must lie inside the {nz} x {nx} grid, got "
                             f"{source_locations.tolist()}")
        y = self.net(self.features(v, source_locations, dx))
        return self.decode(y, source_locations, dx)
