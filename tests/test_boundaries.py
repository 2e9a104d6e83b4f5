"""CPML and free-surface bookkeeping (probinv.physics.boundaries), measured through the acoustic solver."""
import re

import pytest
import torch

from probinv.physics import acoustic, cpml_profile, ricker
from probinv.physics.boundaries import pad_model, pml_widths

F64 = torch.float64


def _reflected_energy(receiver, source, free_surface, n=36):
    """Energy of (trace near the edge of an n x n model) - (same trace on a 3n x 3n model), over the latter's.

    On the large model the same source/receiver sit in the middle third (or against the free surface at the top),
    so its boundaries are too far to reflect anything back within the record: the difference is what the 20-cell
    CPML of the small model reflects.
    """
    dx, dt, nt = 5.0, 5e-4, 460
    w = ricker(15.0, nt, dt, dtype=F64)[None, None]
    big = 3 * n
    oz, ox = (0 if free_surface else n), n
    small = acoustic(torch.full((n, n), 2000.0, dtype=F64), dx, dt, w, torch.tensor([[source]]),
                     torch.tensor([[receiver]]), free_surface=free_surface, pml_width=20)
    ref = acoustic(torch.full((big, big), 2000.0, dtype=F64), dx, dt, w,
                   torch.tensor([[[source[0] + oz, source[1] + ox]]]),
                   torch.tensor([[[receiver[0] + oz, receiver[1] + ox]]]), free_surface=free_surface, pml_width=20)
    return float((small - ref).square().sum() / ref.square().sum())


@pytest.mark.parametrize("side", ["top", "bottom", "left", "right"])
def test_cpml_reflects_less_than_1e6_of_the_energy(side):
    n = 36
    receiver = {"top": (1, n // 2), "bottom": (n - 2, n // 2), "left": (n // 2, 1), "right": (n // 2, n - 2)}[side]
    ratio = _reflected_energy(receiver, (n // 2, n // 2), False, n)
    # acceptance: < 1e-6 with 20 cells; measured ~2e-10 (deepwave's CPML measures 2e-10 in the same test)
    assert ratio < 1e-6, ratio


@pytest.mark.parametrize("side", ["bottom", "right"])
def test_cpml_with_free_surface(side):
    n = 36
    receiver = {"bottom": (n - 2, n // 2), "right": (4, n - 2)}[side]
    ratio = _reflected_energy(receiver, (4, n // 2), True, n)
    assert ratio < 1e-6, ratio


def test_cpml_profile_interior_and_layers():
    n, w0, w1 = 50, 10, 15
    p = cpml_profile(n, (w0, w1), 5.0, 5e-4, 3000.0, 10.0, dtype=F64)
    interior = slice(w0, n - w1)
    assert torch.all(p.a[interior] == 0) and torch.all(p.b[interior] == 1)
    # inside the layers the memory variable decays (0 < b < 1) and is driven with a < 0 (a = d/(d+alpha) (b - 1))
    layers = torch.cat([p.a[:w0], p.a[n - w1:]]), torch.cat([p.b[:w0], p.b[n - w1:]])
    assert torch.all(layers[0] < 0) and torch.all((layers[1] > 0) & (layers[1] < 1))
    # damping grows towards the outer edge: b decreases monotonically outwards
    assert torch.all(p.b[:w0].diff() > 0) and torch.all(p.b[n - w1:].diff() < 0)
    assert p.a.dtype == F64 and p.a.shape == (n,)


def test_pml_widths_and_padding():
    assert pml_widths(7, False) == (7, 7, 7, 7)
    assert pml_widths((1, 2, 3, 4), True) == (0, 2, 3, 4)
    with pytest.raises(ValueError, match=re.escape("pml_width must be >= 0 cells, got -1")):
        pml_widths(-1, False)
    with pytest.raises(ValueError, match="pml_width must be an int or 4 ints"):
        pml_widths((1, 2, 3), False)
    with pytest.raises(TypeError, match="pml_width must be an int or 4 ints"):
        pml_widths(True, False)
    x = torch.arange(6.0).reshape(2, 3)
    y = pad_model(x, pml_widths((1, 2, 1, 0), False))
    assert y.shape == (5, 4)
    assert torch.equal(y[1:3, 1:], x) and torch.equal(y[0, 1:], x[0]) and torch.equal(y[4, 1:], x[1])
    assert torch.equal(y[:, 0], y[:, 1])  # edges repeated into the layer
