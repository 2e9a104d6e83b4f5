"""Fourier neural operator surrogate of the 2D acoustic wavefield (paper 1: Yang et al., 2021).

Network (:class:`FNO2d`, :class:`FNOSurrogate`), fast spectral convolution (:func:`spectral_conv2d`), training data
(:mod:`probinv.surrogate.data`), training with checkpoints (:mod:`probinv.surrogate.train`), the end-to-end training
pipeline (:func:`train_fno`, also ``probinv train-fno``), the forward-operator wrapper (:class:`FNOOperator`) and
:func:`load_pretrained`. The package ships paper 1's trained network, ``pretrained/paper1.pt`` (64 x 64 nodes at
160 m, 64 frames to 5 s; ``load_pretrained()``), with its validation error and training record in its metadata.
"""
from __future__ import annotations

import os

from .data import SimulationConfig as SimulationConfig
from .data import generate_dataset as generate_dataset
from .data import load_dataset as load_dataset
from .fno import FNO2d as FNO2d
from .fno import FNOSurrogate as FNOSurrogate
from .operator import FNOOperator as FNOOperator
from .pipeline import train_fno as train_fno
from .spectral import SpectralConv2d as SpectralConv2d
from .spectral import spectral_conv2d as spectral_conv2d
from .train import TrainConfig as TrainConfig
from .train import build_surrogate as build_surrogate
from .train import evaluate as evaluate
from .train import load_checkpoint as load_checkpoint
from .train import train as train

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")


def load_pretrained(name: str = "paper1", *, path: str | None = None, map_location=None) -> FNOSurrogate:
    """The shipped, trained surrogate with its ``metadata`` dict.

    Parameters
    ----------
    name : str
        Checkpoint name in ``probinv/surrogate/pretrained/`` (``<name>.pt``).
    path : str, optional
        Load this checkpoint file instead (e.g. one written by ``benchmarks/train_fno.py``).
    map_location : optional
        Passed to ``torch.load`` (device to put the weights on).

    Returns
    -------
    FNOSurrogate
        In eval mode; ``.metadata`` holds at least ``val_rel_l2``, ``grid``, ``time`` and ``training``.

    Raises
    ------
    FileNotFoundError
        When the checkpoint is not there. The package ships ``paper1``; train another with ``probinv train-fno
        --data data.nc --checkpoint fno.pt --export fno_export.pt`` (or :func:`train_fno`), then
        ``load_pretrained(path="fno_export.pt")``.
    """
    file = path if path is not None else os.path.join(PRETRAINED_DIR, f"{name}.pt")
    if not os.path.exists(file):
        available = sorted(f[:-3] for f in os.listdir(PRETRAINED_DIR) if f.endswith(".pt")) \
            if os.path.isdir(PRETRAINED_DIR) else []
        raise FileNotFoundError(
            f"no pretrained FNO checkpoint at {file} (available: {available or 'none'}). Train one with `probinv "
            f"train-fno --data fno_data.nc --checkpoint fno_train.pt --export fno.pt` (several CPU-hours for paper 1's "
            f"accuracy), then call probinv.surrogate.load_pretrained(path='fno.pt')")
    sur, _ = load_checkpoint(file, map_location=map_location)
    if path is None:
        sur.checkpoint_info["name"] = name
    return sur.eval()


__all__ = ["FNO2d", "FNOOperator", "FNOSurrogate", "PRETRAINED_DIR", "SimulationConfig", "SpectralConv2d",
           "TrainConfig", "build_surrogate", "evaluate", "generate_dataset", "load_checkpoint", "load_dataset",
           "load_pretrained", "spectral_conv2d", "train", "train_fno"]
