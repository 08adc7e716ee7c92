"""The per-layer grid (``attnexplain.viz.layer_grid``): headless, exact drawn data, errors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere: the tests must run headless

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from attnexplain import AttentionRollout, RawCLSAttention
from attnexplain.viz import layer_grid, save_figure
from tests.conftest import shared_family
from tests.test_viz import normalised

H, W, GRID, LAYERS = 32, 48, (4, 6), 3


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def maps() -> torch.Tensor:
    """Three layers per image on the patch grid, scaled like real attention (~1e-2)."""
    return torch.rand(2, LAYERS, *GRID, generator=torch.Generator().manual_seed(1)) * 1e-2


def _upsampled(maps: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(
        maps.double(), size=(H, W), mode="bilinear", align_corners=False
    )


def test_one_row_per_image_one_column_per_layer_with_each_map_normalised(images, maps):
    before = (images.clone(), maps.clone())
    fig = layer_grid(images, maps, layers=[4, 5, 6])
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * (LAYERS + 1)
    assert [ax.get_title() for ax in fig.axes[: LAYERS + 1]] == ["image", "layer 4", "layer 5",
                                                                 "layer 6"]  # fmt: skip
    expected = normalised(_upsampled(maps))
    for b in range(2):
        np.testing.assert_allclose(
            np.asarray(fig.axes[b * (LAYERS + 1)].images[0].get_array()),
            images[b].permute(1, 2, 0).double().numpy(),
        )
        for k in range(LAYERS):
            drawn = np.asarray(fig.axes[b * (LAYERS + 1) + 1 + k].images[-1].get_array())
            np.testing.assert_allclose(drawn, expected[b, k], atol=1e-12)
    torch.testing.assert_close(images, before[0], rtol=0, atol=0)
    torch.testing.assert_close(maps, before[1], rtol=0, atol=0)


def test_heat_maps_alone_and_the_accepted_layouts(images, maps):
    alone = layer_grid(images, maps.unsqueeze(2), overlay=False)  # (B, L, 1, h, w)
    panel = alone.axes[1]
    assert len(panel.images) == 1 and panel.images[0].get_cmap().name == "inferno"
    np.testing.assert_allclose(np.asarray(panel.images[0].get_array()),
                               normalised(_upsampled(maps))[0, 0], atol=1e-12)  # fmt: skip
    one = layer_grid(images[0], maps[0])  # one image, (L, h, w)
    assert len(one.axes) == LAYERS + 1
    listed = layer_grid(list(images), _upsampled(maps).numpy())  # a list, image-size maps
    assert len(listed.axes) == 2 * (LAYERS + 1)


def test_draws_into_given_axes(images, maps):
    fig = Figure()
    axes = fig.subplots(2, LAYERS + 1)
    assert layer_grid(images, maps, axes=axes) is fig


@pytest.mark.parametrize(
    ("bad_maps", "kwargs", "message"),
    [
        (torch.rand(2, LAYERS, 4, *GRID), {}, r"4 maps per layer .* fuse the heads"),
        (torch.rand(3, LAYERS, *GRID), {}, r"B = 2 images, got shape \(3, 3, 4, 6\)"),
        (torch.rand(2, LAYERS, 6, 4), {}, "does not match the image"),
        (torch.rand(2, LAYERS, *GRID), {"layers": [0, 1]}, "each of the 3 maps, got 2"),
        (torch.rand(2, LAYERS, *GRID), {"alpha": 2.0}, r"alpha must be in \[0, 1\]"),
        (torch.rand(2, LAYERS, *GRID), {"axes": [None] * 3}, "axes must hold 8 Axes"),
    ],
)
def test_bad_input_is_refused(images, bad_maps, kwargs, message):
    with pytest.raises(ValueError, match=message):
        layer_grid(images, bad_maps, **kwargs)
    with pytest.raises(TypeError, match="torch.Tensor or numpy.ndarray"):
        layer_grid(images, [[0.0]])


def test_methods_per_layer_output_saves_headless(tmp_path):
    model = shared_family("hf_vit").model
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    raw = RawCLSAttention(model, layer="all").attribute(x)  # (B, L, 1, H, W)
    per_block = AttentionRollout(model).layer_maps(x).per_block
    for maps in (raw, per_block):
        path = save_figure(layer_grid(x, maps), tmp_path / "layers.png")
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size[0] > png.size[1]
    assert plt.get_fignums() == []
