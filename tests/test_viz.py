"""Tests of attnexplain.viz: headless (Agg), exact drawn data, shapes, errors, no mutation."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere: the tests must run headless

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import visualization
from matplotlib.figure import Figure
from PIL import Image

from attnexplain.metrics.threshold import mass_threshold_mask
from attnexplain.viz import (
    compare_overlays,
    curves_plot,
    head_grid,
    image_to_captum,
    mad_plot,
    mass_threshold_overlay,
    save_figure,
    to_captum,
)

H, W, GRID = 32, 48, (4, 6)  # a non-square image and its patch grid for patch size 8


@pytest.fixture
def image() -> torch.Tensor:
    return torch.rand(3, H, W, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def heads() -> torch.Tensor:
    """Four heads on the patch grid, scaled like real rollout values (~1e-3)."""
    return torch.rand(4, *GRID, generator=torch.Generator().manual_seed(1)) * 1e-3


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """Every test must leave pyplot's figure registry as it found it (no global state leaks)."""
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def normalised(maps: torch.Tensor) -> np.ndarray:
    """The test's own min-max oracle, per map over the last two dims."""
    maps = maps.double()
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    return ((maps - low) / (high - low)).numpy()


def upsampled(maps: torch.Tensor) -> torch.Tensor:
    return F.interpolate(maps.double()[None], size=(H, W), mode="bilinear", align_corners=False)[0]


def overlay_data(fig: Figure, panel: int) -> np.ndarray:
    return np.asarray(fig.axes[panel].images[1].get_array())


# ---------------------------------------------------------------------------------------------
# Captum bridge
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(H, W), (1, H, W), (1, 1, H, W)])
def test_to_captum_layout_keeps_values(shape):
    attribution = torch.randn(shape)
    out = to_captum(attribution)
    assert out.shape == (H, W, 1)
    np.testing.assert_allclose(out[..., 0], attribution.reshape(H, W).numpy(), rtol=1e-6)


def test_to_captum_upsamples_a_patch_grid_to_size():
    grid = torch.rand(1, *GRID)
    out = to_captum(grid, size=(H, W))
    assert out.shape == (H, W, 1)
    np.testing.assert_allclose(out[..., 0], upsampled(grid)[0].numpy())


@pytest.mark.parametrize("shape", [(4, H, W), (1, 4, H, W)])
def test_to_captum_rejects_several_maps(shape):
    with pytest.raises(ValueError, match=r"attribution must hold a single map.*select a head"):
        to_captum(torch.rand(shape))


def test_to_captum_rejects_a_batch():
    with pytest.raises(ValueError, match=r"attribution must hold one image's maps"):
        to_captum(torch.rand(2, 1, H, W))


def test_image_to_captum_accepts_both_layouts(image):
    channels_last = image_to_captum(image)
    assert channels_last.shape == (H, W, 3)
    np.testing.assert_allclose(channels_last, image.permute(1, 2, 0).numpy(), rtol=1e-6)
    as_uint8 = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_allclose(image_to_captum(as_uint8), as_uint8 / 255.0)
    np.testing.assert_allclose(image_to_captum(image[None]), channels_last)


def test_captum_blended_heat_map_draws(image, heads):
    fig, ax = visualization.visualize_image_attr(
        to_captum(heads[0], size=(H, W)),
        image_to_captum(image),
        method="blended_heat_map",
        sign="positive",
        use_pyplot=False,
    )
    assert isinstance(fig, Figure)
    assert len(ax.images) == 2  # the greyscale image and the heat map


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.rand(4, H, W), r"image must be \(3, H, W\) or \(H, W, 3\).*\(4, 32, 48\)"),
        (torch.rand(H, W), r"image must be .*\(32, 48\)"),
        (torch.rand(3, H, W) * 2 - 0.5, r"float image must hold values in \[0, 1\]"),
        (torch.full((3, H, W), float("nan")), r"image contains NaN"),
    ],
)
def test_bad_images_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        image_to_captum(bad)


# ---------------------------------------------------------------------------------------------
# Image figures
# ---------------------------------------------------------------------------------------------


def test_head_grid_draws_each_normalised_head_upsampled(image, heads):
    fig = head_grid(image, heads)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1 + len(heads)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), image.permute(1, 2, 0).numpy())
    expected = normalised(upsampled(heads))
    for k in range(len(heads)):
        drawn = overlay_data(fig, k + 1)
        assert drawn.shape == (H, W)  # upsampled from the patch grid
        np.testing.assert_allclose(drawn, expected[k], atol=1e-12)
    assert [ax.get_title() for ax in fig.axes] == ["image", "head 0", "head 1", "head 2", "head 3"]


def test_head_grid_at_image_resolution_and_layouts(image):
    maps = torch.rand(1, 3, H, W)  # what attribute() returns for one image
    fig = head_grid(image, maps, ncols=2, titles=["a", "b", "c"])
    assert len(fig.axes) == 4
    assert fig.axes[1].get_subplotspec().get_geometry()[:2] == (2, 2)
    np.testing.assert_allclose(overlay_data(fig, 3), normalised(maps[0])[2], atol=1e-12)
    assert fig.axes[3].get_title() == "c"


def test_head_grid_drops_spare_cells_and_handles_many_heads(image):
    fig = head_grid(image, torch.rand(12, *GRID))
    assert len(fig.axes) == 13  # a 4 x 4 grid minus three removed spare cells


def test_head_grid_draws_into_given_axes(image, heads):
    fig = Figure()
    axes = fig.subplots(1, 5)
    assert head_grid(image, heads, axes=axes) is fig
    with pytest.raises(ValueError, match=r"axes must hold 5 Axes.*got 3"):
        head_grid(image, heads, axes=axes[:3])


def test_constant_map_is_drawn_as_zeros(image):
    fig = head_grid(image, torch.full((1, *GRID), 0.25))
    np.testing.assert_array_equal(overlay_data(fig, 1), np.zeros((H, W)))


def test_numpy_uint8_channels_last_image(image, heads):
    array = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    fig = head_grid(array, heads.numpy())
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), array / 255.0)


@pytest.mark.parametrize(
    ("maps", "message"),
    [
        (torch.rand(2, 2, *GRID), r"maps must hold one image's maps.*\(2, 2, 4, 6\)"),
        (torch.rand(1, 2, 3, 4, 6), r"maps must be \(K, H, W\).*\(1, 2, 3, 4, 6\)"),
        (torch.rand(2, W, H), r"maps spatial size \(48, 32\) is larger than the image \(32, 48\)"),
        (torch.rand(2, 6, 4), r"maps spatial size \(6, 4\) does not match the image"),
        (torch.full((2, *GRID), float("inf")), r"maps contains NaN or infinite"),
    ],
)
def test_head_grid_rejects_bad_maps(image, maps, message):
    with pytest.raises(ValueError, match=message):
        head_grid(image, maps)


def test_head_grid_rejects_bad_titles_and_alpha(image, heads):
    with pytest.raises(ValueError, match=r"titles must have one entry per map \(4\), got 2"):
        head_grid(image, heads, titles=["a", "b"])
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        head_grid(image, heads, alpha=1.5)


def test_mass_threshold_overlay_on_patch_grid_matches_dino(image, heads):
    fig = mass_threshold_overlay(image, heads, mass=0.6, fill_alpha=0.5)
    assert len(fig.axes) == 1 + len(heads)
    grid_mask = mass_threshold_mask(heads, 0.6).numpy()
    # DINO thresholds on the patch grid and upsamples by the patch size with nearest neighbours.
    expected = np.kron(grid_mask, np.ones((8, 8), dtype=bool))
    for k in range(len(heads)):
        fill = overlay_data(fig, k + 1)
        assert fill.shape == (H, W, 4)
        np.testing.assert_array_equal(fill[..., 3] > 0, expected[k])
        np.testing.assert_allclose(fill[..., 3][expected[k]], 0.5)
        assert fig.axes[k + 1].collections, "the mask's contour is drawn"


def test_mass_threshold_overlay_at_image_resolution_and_fused(image):
    maps = torch.rand(3, H, W, generator=torch.Generator().manual_seed(2))
    fig = mass_threshold_overlay(image, maps, mass=0.3, fuse="mean")
    assert len(fig.axes) == 2
    expected = mass_threshold_mask(maps.double().mean(0), 0.3).numpy()
    np.testing.assert_array_equal(overlay_data(fig, 1)[..., 3] > 0, expected)
    assert fig.axes[1].get_title() == "mean of 3 maps"


def test_mass_threshold_overlay_full_mask_draws_no_contour(image):
    fig = mass_threshold_overlay(image, torch.ones(1, *GRID), mass=1.0)
    assert (overlay_data(fig, 1)[..., 3] > 0).all()
    assert not fig.axes[1].collections


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"maps": -torch.rand(2, *GRID)}, r"maps must be non-negative"),
        ({"mass": 0.0}, r"mass must be in \(0, 1\]"),
        ({"fuse": "sum"}, r"fuse must be 'none', 'mean' or 'max', got 'sum'"),
        ({"titles": ["only one"]}, r"titles must have one entry per map \(4\)"),
    ],
)
def test_mass_threshold_overlay_rejects(image, heads, kwargs, message):
    kwargs = {"maps": heads, **kwargs}
    with pytest.raises(ValueError, match=message):
        mass_threshold_overlay(image, **kwargs)


def test_compare_overlays_titles_and_data(image, heads):
    maps = {
        "raw": heads[0],  # (h, w) on the patch grid
        "rollout": heads[1:2],  # (1, h, w)
        "Grad-CAM": upsampled(heads[2:3])[None],  # (1, 1, H, W) at image resolution
    }
    fig = compare_overlays(image, maps)
    assert [ax.get_title() for ax in fig.axes] == ["image", "raw", "rollout", "Grad-CAM"]
    expected = normalised(upsampled(heads[:3]))
    for k in range(3):
        np.testing.assert_allclose(overlay_data(fig, k + 1), expected[k], atol=1e-12)


def test_compare_overlays_rejects(image, heads):
    with pytest.raises(ValueError, match=r"maps\['raw'\] must hold a single map.*fuse"):
        compare_overlays(image, {"raw": heads})
    with pytest.raises(ValueError, match=r"maps\['raw'\] spatial size \(6, 4\) does not match"):
        compare_overlays(image, {"raw": torch.rand(6, 4)})
    with pytest.raises(ValueError, match=r"maps must hold at least one"):
        compare_overlays(image, {})


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def test_mad_plot_one_point_per_head_and_layer():
    distances = torch.rand(5, 3, 4, generator=torch.Generator().manual_seed(3)) * 100
    fig = mad_plot(distances, patch_size=16)
    (ax,) = fig.axes
    assert len(ax.collections) == 4  # one scatter per head
    mean = distances.double().mean(0).numpy()
    for h, points in enumerate(ax.collections):
        np.testing.assert_allclose(points.get_offsets(), np.c_[np.arange(3), mean[:, h]])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"head {h}" for h in range(4)]
    assert "pixels" in ax.get_ylabel()
    assert ax.lines[0].get_ydata()[0] == 16  # the one-patch reference line


@pytest.mark.parametrize("heads", [6, 16, 24])
def test_mad_plot_gives_every_head_its_own_colour(heads):
    fig = mad_plot(np.ones((2, heads)))
    colours = [tuple(points.get_facecolor()[0].round(4)) for points in fig.axes[0].collections]
    assert len(set(colours)) == heads


def test_mad_plot_into_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert mad_plot(np.full((2, 6), 10.0), ax=ax) is fig
    assert len(ax.collections) == 6 and not ax.lines


@pytest.mark.parametrize(
    ("distances", "kwargs", "message"),
    [
        (torch.rand(12), {}, r"distances must be \(layers, heads\).*got shape \(12,\)"),
        (-torch.rand(3, 4), {}, r"distances must be finite and non-negative"),
        (torch.rand(3, 4), {"patch_size": 0}, r"patch_size must be positive, got 0"),
    ],
)
def test_mad_plot_rejects(distances, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mad_plot(distances, **kwargs)


def test_curves_plot_lines_auc_and_bands():
    falling = np.linspace(1.0, 0.0, 11)  # AUC 0.5 on [0, 1]
    batch = torch.rand(8, 21, generator=torch.Generator().manual_seed(4))
    fig = curves_plot({"rollout": falling, "random": batch}, kind="deletion")
    (ax,) = fig.axes
    assert len(ax.lines) == 2
    assert ax.lines[0].get_label() == "rollout (AUC 0.500)"
    assert ax.lines[1].get_label().startswith("random (AUC ")
    assert " ± " in ax.lines[1].get_label()
    np.testing.assert_allclose(ax.lines[1].get_ydata(), batch.double().mean(0).numpy())
    assert len(ax.collections) == 1  # only the batched curve has a confidence band
    assert "lower AUC is better" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        line.get_label() for line in ax.lines
    ]


def test_curves_plot_custom_x_and_no_band():
    x = np.array([0.0, 0.5, 2.0])
    fig = curves_plot({"m": np.ones((3, 3))}, x=x, kind="insertion", ci=None)
    ax = fig.axes[0]
    assert ax.lines[0].get_label() == "m (AUC 2.000)"
    assert not ax.collections
    assert "inserted" in ax.get_xlabel()


@pytest.mark.parametrize(
    ("curves", "kwargs", "message"),
    [
        ({}, {}, r"curves must hold at least one"),
        ({"a": np.ones((2, 3, 4))}, {}, r"curves\['a'\] must be \(steps,\) or \(B, steps\)"),
        ({"a": np.array([1.0, np.nan])}, {}, r"curves\['a'\] contains NaN"),
        ({"a": np.ones(5)}, {"x": np.linspace(0, 1, 4)}, r"x has 4 positions but curves\['a'\]"),
        ({"a": np.ones(3)}, {"x": np.array([0.0, 1.0, 0.5])}, r"x must be a strictly increasing"),
        ({"a": np.ones(3)}, {"kind": "other"}, r"kind must be one of"),
        ({"a": np.ones(3)}, {"ci": 1.0}, r"ci must be in \(0, 1\)"),
    ],
)
def test_curves_plot_rejects(curves, kwargs, message):
    with pytest.raises(ValueError, match=message):
        curves_plot(curves, **kwargs)


# ---------------------------------------------------------------------------------------------
# Inputs are never modified
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "draw",
    [
        lambda image, maps: head_grid(image, maps),
        lambda image, maps: mass_threshold_overlay(image, maps, fuse="max"),
        lambda image, maps: compare_overlays(image, {"a": maps[0], "b": maps[1:2]}),
        lambda image, maps: to_captum(maps[0], size=(H, W)) + image_to_captum(image)[..., :1],
    ],
    ids=["head_grid", "mass_threshold_overlay", "compare_overlays", "captum"],
)
def test_inputs_are_not_mutated(image, heads, draw):
    image_np = image.permute(1, 2, 0).numpy().copy()  # numpy inputs too
    maps = heads.clone().requires_grad_(True)  # and tensors that track gradients
    for img in (image, image_np):
        before_img = img.copy() if isinstance(img, np.ndarray) else img.clone()
        draw(img, maps)
        if isinstance(img, np.ndarray):
            np.testing.assert_array_equal(img, before_img)
        else:
            assert torch.equal(img, before_img)
    assert torch.equal(maps.detach(), heads)
    assert maps.grad is None


def test_plots_do_not_mutate_inputs():
    distances = torch.rand(2, 3, 4)
    curve = torch.rand(5, 9)
    before_d, before_c = distances.clone(), curve.clone()
    mad_plot(distances)
    curves_plot({"m": curve})
    assert torch.equal(distances, before_d) and torch.equal(curve, before_c)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def test_save_figure_writes_a_valid_png(tmp_path, image, heads):
    fig = head_grid(image, heads)
    path = save_figure(fig, tmp_path / "nested" / "dir" / "heads.png", dpi=40)
    assert path == tmp_path / "nested" / "dir" / "heads.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as png:
        png.verify()
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size[0] > png.size[1] > 0


def test_save_figure_adds_suffix_and_closes_pyplot_figures(tmp_path):
    fig, ax = plt.subplots()  # a pyplot-managed figure must be closed by save_figure
    ax.plot([0, 1])
    path = save_figure(fig, tmp_path / "curve")
    assert path.suffix == ".png" and path.is_file()
    assert not plt.fignum_exists(fig.number)


def test_save_figure_writes_jpeg(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = save_figure(fig, tmp_path / "curve.jpg")
    with Image.open(path) as jpeg:
        assert jpeg.format == "JPEG" and jpeg.mode == "RGB"


def test_save_figure_with_a_palette_is_smaller_and_close_to_full_colour(tmp_path, image, heads):
    full = save_figure(head_grid(image, heads), tmp_path / "full.png", dpi=60)
    small = save_figure(head_grid(image, heads), tmp_path / "small.png", dpi=60, colours=256)
    with Image.open(full) as a, Image.open(small) as b:
        assert b.mode == "P" and a.size == b.size
        pixels_full = np.asarray(a.convert("RGB"), dtype=np.float64)
        pixels_small = np.asarray(b.convert("RGB"), dtype=np.float64)
    assert len(np.unique(pixels_small.reshape(-1, 3), axis=0)) <= 256
    # Random-noise photo: the hardest case for a palette; a wrong channel order gives ~80.
    assert np.abs(pixels_full - pixels_small).mean() < 8.0  # of 255
    assert small.stat().st_size < full.stat().st_size


@pytest.mark.parametrize(("path", "colours"), [("a.png", 1), ("a.png", 257), ("a.jpg", 256)])
def test_save_figure_rejects_a_bad_palette(tmp_path, path, colours):
    with pytest.raises(ValueError, match="colours must be 2 to 256 and the path a .png"):
        save_figure(Figure(), tmp_path / path, colours=colours)


def test_save_figure_rejects_other_formats(tmp_path):
    with pytest.raises(ValueError, match=r"path must end in .png, .jpg or .jpeg, got '.*out.pdf'"):
        save_figure(Figure(), tmp_path / "out.pdf")
