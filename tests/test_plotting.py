"""probinv.plotting: figures carry physical axes (km) and units, and are written atomically as PNG files."""
import re

import arviz as az
import numpy as np
import pytest
import torch

from probinv import plotting

# arviz 0.23 calls a matplotlib API deprecated in matplotlib 3.11; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Passing a dict or None as alias_mapping")


def _png_ok(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_model_axes_in_km_and_colorbar_in_m_per_s(tmp_path):
    vp = torch.linspace(1500, 3000, 20 * 30).reshape(20, 30)
    src = torch.tensor([[[1, 5]], [[1, 25]]])
    rec = torch.tensor([[[1, i] for i in range(30)]])
    fig = plotting.plot_model(vp, 50.0, title="true", sources=src, receivers=rec)
    ax, cax = fig.axes[0], fig.axes[1]
    assert ax.get_xlabel() == "x (km)" and ax.get_ylabel() == "depth (km)"
    # 30 cells of 50 m: cell centres 0 ... 1.45 km, so the image spans -0.025 ... 1.475 km; depth increases downwards
    np.testing.assert_allclose(ax.images[0].get_extent(), [-0.025, 1.475, 0.975, -0.025])
    assert cax.get_ylabel() == "$v_P$ (m/s)"
    p = plotting.save_figure(fig, tmp_path / "sub" / "vp.png")
    assert _png_ok(p)
    with pytest.raises(ValueError, match=re.escape("field must be a 2D (nz, nx) array, got shape (2, 3, 4)")):
        plotting.plot_model(np.zeros((2, 3, 4)), 10.0)
    with pytest.raises(ValueError, match="dx must be a positive grid spacing in m, got 0"):
        plotting.plot_model(np.zeros((3, 4)), 0)


def test_models_share_scale_and_posterior_maps(tmp_path):
    a, b = np.full((10, 12), 2000.0), np.full((10, 12), 2500.0)
    fig = plotting.plot_models({"true": a, "initial": b}, 10.0)
    clims = [ax.images[0].get_clim() for ax in fig.axes if ax.images]
    assert clims == [(2000.0, 2500.0)] * 2
    fig = plotting.plot_posterior_maps(a, np.full((10, 12), 30.0), 10.0, lower=a - 50, upper=a + 50, true=b)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["true", "posterior mean", "posterior std", "90 % interval width"]
    width = [ax for ax in fig.axes if ax.get_title() == "90 % interval width"][0].images[0].get_array()
    np.testing.assert_allclose(width, 100.0)
    assert _png_ok(plotting.save_figure(fig, tmp_path / "post.png"))


def test_gathers_and_misfit(tmp_path):
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((2, 8, 50))
    fig = plotting.plot_gather_comparison(obs, 0.9 * obs, 0.002, shot=1, receiver_x=np.arange(8) * 10.0)
    diff = fig.axes[2].images[0].get_array()
    np.testing.assert_allclose(diff, 0.1 * obs[1].T)  # the difference panel shows observed - predicted
    assert fig.axes[0].get_ylabel() == "time (s)" and fig.axes[0].get_xlabel() == "receiver x (km)"
    with pytest.raises(ValueError, match=re.escape("shot must be in [0, 2), got 5")):
        plotting.plot_gather_comparison(obs, obs, 0.002, shot=5)
    fig = plotting.plot_misfit({"MAP": [3.0, 2.0, 1.0], "SVI": [4.0, 1.0]})
    assert fig.axes[0].get_yscale() == "log" and len(fig.axes[0].lines) == 2
    assert _png_ok(plotting.save_figure(fig, tmp_path / "misfit.png"))


@pytest.mark.parametrize("kind", ["trace", "rank", "pair"])
def test_arviz_plots(kind, tmp_path):
    rng = np.random.default_rng(1)
    idata = az.from_dict(posterior={"vp": rng.normal(2000, 10, (2, 50, 6, 8))},
                         dims={"vp": ["z", "x"]}, coords={"z": np.arange(6) * 10.0, "x": np.arange(8) * 10.0})
    fig = plotting.plot_arviz(idata, kind, pixels=[(1, 1), (3, 4)])
    assert _png_ok(plotting.save_figure(fig, tmp_path / f"{kind}.png"))
    with pytest.raises(ValueError, match=re.escape("pixel (9, 0) is outside the (nz, nx) = (6, 8) grid")):
        plotting.plot_arviz(idata, kind, pixels=[(9, 0)])


def test_trace_titles_clear_of_tick_labels_and_with_units():
    """issue 15: each row's titles overlapped the tick labels of the row above, and no axis said m/s."""
    rng = np.random.default_rng(2)
    idata = az.from_dict(posterior={"vp": rng.normal(2000, 10, (2, 400, 6, 8))},
                         dims={"vp": ["z", "x"]}, coords={"z": np.arange(6) * 20.0, "x": np.arange(8) * 20.0})
    fig = plotting.plot_arviz(idata, "trace", pixels=[(3, 4), (1, 2), (1, 6)])
    axes = np.array(fig.axes).reshape(3, 2)
    assert axes[0, 0].get_title() == "vp at z = 60 m, x = 80 m: posterior density"
    assert axes[1, 1].get_title() == "vp at z = 20 m, x = 40 m: draws"
    assert all(ax.get_xlabel() == "vp (m/s)" for ax in axes[:, 0])
    assert all(ax.get_xlabel() == "draw" and ax.get_ylabel() == "vp (m/s)" for ax in axes[:, 1])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for row in range(1, 3):
        for col in range(2):
            title = axes[row, col].title.get_window_extent(renderer)
            above = axes[row - 1, col]
            labels = [t.get_window_extent(renderer) for t in above.get_xticklabels() if t.get_text()]
            labels.append(above.xaxis.label.get_window_extent(renderer))
            assert not any(title.overlaps(b) for b in labels), (row, col)


def test_gather_comparison_names_the_shot_and_keeps_the_legend_off_the_traces():
    obs = np.random.default_rng(3).standard_normal((2, 8, 50))
    fig = plotting.plot_gather_comparison(obs, 0.9 * obs, 0.002, shot=1, receiver_x=np.arange(8) * 10.0,
                                          source_x=35.0)
    assert fig.get_suptitle() == "shot 1 (source at x = 35 m): observed and predicted data"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[3]
    legend = ax.get_legend().get_window_extent(renderer)
    # the legend lies above the trace panel (it used to cover the top trace inside it), and below the title
    assert legend.y0 >= ax.get_window_extent(renderer).y1 - 1
    assert not legend.overlaps(fig._suptitle.get_window_extent(renderer))
    assert plotting.plot_gather_comparison(obs, obs, 0.002).get_suptitle().startswith("shot 0: ")


def test_illumination_map_in_db_with_the_verdicts_contour(tmp_path):
    lit = torch.logspace(0, -3, 12)[:, None].expand(12, 16).clone()  # 0 to -30 dB with depth
    ratio = torch.linspace(0.1, 1.0, 12)[:, None].expand(12, 16).clone()
    fig = plotting.plot_illumination(lit * 7.3, 10.0, std_ratio=ratio)
    img = fig.axes[0].images[0].get_array()
    # drawn relative to the peak, in dB: 0 at the top row, -30 at the bottom (the scale factor 7.3 drops out)
    np.testing.assert_allclose(img[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(img[-1], -30.0, atol=1e-4)
    assert len(fig.axes[0].collections) >= 1  # the -10 dB contour
    plotting.save_figure(fig, tmp_path / "lit.png")
    with pytest.raises(ValueError, match="std_ratio must have the illumination's shape"):
        plotting.plot_illumination(lit, 10.0, std_ratio=ratio[:5])
    with pytest.raises(ValueError, match="threshold_db must be a negative"):
        plotting.plot_illumination(lit, 10.0, threshold_db=10)
