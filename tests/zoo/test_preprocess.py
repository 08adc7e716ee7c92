"""``Preprocess`` against the model's own Hugging Face image processor, and its input checks.

The reference is ``AutoImageProcessor`` loaded from a folder the processor was saved to (as a hub
checkpoint holds it); the images are real non-square photos (the COCO sample, when present) and
generated non-square ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

from attnexplain.zoo import Preprocess
from attnexplain.zoo.preprocess import shortest_edge_size

ROOT = Path(__file__).resolve().parents[2]
#: The shared COCO sample: next to the main checkout (../shared) or to the worktrees (../../shared).
COCO = (
    next((p for p in (ROOT.parent / "shared", ROOT.parents[1] / "shared") if p.is_dir()), ROOT)
    / "data/coco2017-ccby-sample"
)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

PROCESSORS = {
    # ViT: straight to 224 x 224 (squash), bilinear.
    "vit": lambda: tf.ViTImageProcessor(size={"height": 224, "width": 224}),
    # DeiT: 256 x 256, then the centre 224 x 224, bicubic.
    "deit": lambda: tf.DeiTImageProcessor(
        size={"height": 256, "width": 256}, crop_size={"height": 224, "width": 224}
    ),
    # DINOv2 (BiT's processor): shortest edge 256, centre crop 224, bicubic, ImageNet statistics.
    "dinov2": lambda: tf.BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        resample=3,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    ),
    # CLIP: shortest edge 224, centre crop 224.
    "clip": lambda: tf.CLIPImageProcessor(),
}


def _photos() -> list[Image.Image]:
    """Non-square photos (scikit-image's, the COCO sample's where present) and a noise image."""
    from skimage import data

    embedded = [Image.fromarray(getattr(data, name)()) for name in ("coffee", "chelsea", "rocket")]
    files = sorted(COCO.glob("val2017/*.jpg"))[:3]
    coco = [Image.open(f).convert("RGB") for f in files]
    noise = np.random.default_rng(0).integers(0, 256, (97, 130, 3), dtype=np.uint8)
    return [*embedded, *coco, Image.fromarray(noise)]


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return _photos()


def _auto_processor(tmp_path: Path, processor):
    processor.save_pretrained(tmp_path)
    return tf.AutoImageProcessor.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", list(PROCESSORS))
def test_equals_the_processors_pixel_values_on_non_square_photos(name, photos, tmp_path) -> None:
    auto = _auto_processor(tmp_path, PROCESSORS[name]())
    preprocess = Preprocess.from_processor(auto)
    assert preprocess.image_size == 224
    for photo in photos:
        expected = auto(images=photo, return_tensors="pt").pixel_values
        for image in (photo, np.asarray(photo), torch.from_numpy(np.array(photo)).permute(2, 0, 1)):
            torch.testing.assert_close(preprocess(image), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "steps"), [("vit", 1.0), ("dinov2", 6.0)])
def test_float_images_are_close_to_the_8_bit_path(name, steps, photos, tmp_path) -> None:
    # Bilinear: within one 8-bit step (the 8-bit kernel rounds). Bicubic: torch's 8-bit kernel
    # clips between its horizontal and vertical passes, so pixels at sharp edges of photos
    # differ by a few steps (noise images, left out here, by up to 21); the mean stays small.
    auto = _auto_processor(tmp_path, PROCESSORS[name]())
    preprocess = Preprocess.from_processor(auto)
    step = 1 / 255 / min(auto.image_std)
    for photo in photos[:-1]:
        as_float = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 255
        difference = preprocess(as_float) - auto(images=photo, return_tensors="pt").pixel_values
        assert difference.abs().max() <= steps * step + 1e-6
        assert difference.abs().mean() <= 0.4 * step


def test_dinov2_patch_14_maps_cover_the_whole_input(photos, tmp_path) -> None:
    # The old square 256-px resize gave DINOv2 (patch 14) an 18-patch grid over 252 px and a
    # 4-px zero strip at the border of every upsampled map; the crop gives 16 x 14 = 224.
    from attnexplain.methods import AttentionRollout
    from attnexplain.zoo.hub import load_model

    torch.manual_seed(0)
    config = tf.Dinov2Config(
        image_size=224, patch_size=14, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64,
    )  # fmt: skip
    tf.Dinov2Model(config).save_pretrained(tmp_path)
    PROCESSORS["dinov2"]().save_pretrained(tmp_path)
    model, preprocess = load_model(str(tmp_path))
    inputs = preprocess(photos[0])
    assert inputs.shape == (1, 3, 224, 224)
    maps = AttentionRollout(model).attribute(inputs)
    assert maps.shape == (1, 1, 224, 224)
    assert (maps[..., -4:, :] > 0).all() and (maps[..., :, -4:] > 0).all()


def test_config_round_trips_through_auto_image_processor(photos, tmp_path) -> None:
    for case, preprocess in enumerate([
        Preprocess(96, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)),
        Preprocess(64, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3), resize=72, resample="bicubic"),
        Preprocess(64, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3), resize=(80, 70)),
    ]):  # fmt: skip
        folder = tmp_path / str(case)
        folder.mkdir()
        preprocess.to_json(folder / "preprocessor_config.json")
        auto = tf.AutoImageProcessor.from_pretrained(folder)
        loaded = Preprocess.from_json(folder / "preprocessor_config.json")
        assert repr(loaded) == repr(preprocess)
        expected = auto(images=photos[-1], return_tensors="pt").pixel_values
        torch.testing.assert_close(preprocess(photos[-1]), expected, rtol=0, atol=1e-6)


def test_shortest_edge_truncates_the_long_side_like_transformers() -> None:
    from transformers.image_transforms import get_resize_output_image_size

    for height, width in [(301, 451), (517, 233), (224, 224), (97, 130)]:
        image = np.zeros((3, height, width), dtype=np.uint8)
        expected = get_resize_output_image_size(image, 256, default_to_square=False)
        assert shortest_edge_size(height, width, 256) == tuple(expected)


def test_rescale_and_normalize_flags_are_folded_into_mean_and_std(photos) -> None:
    photo = photos[-1]
    config = {"size": {"height": 32, "width": 32}, "do_rescale": False, "image_mean": 127.5,
              "image_std": 127.5}  # fmt: skip
    processor = tf.ViTImageProcessor(**config)
    torch.testing.assert_close(
        Preprocess.from_processor(processor)(photo),
        processor(images=photo, return_tensors="pt").pixel_values,
        rtol=0,
        atol=1e-5,
    )
    plain = Preprocess.from_config({"size": {"height": 32, "width": 32}, "do_normalize": False})
    assert plain.mean == (0.0, 0.0, 0.0) and plain.std == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"size": {"shortest_edge": 224}}, "inputs of varying size"),
        ({"size": {"height": 224, "width": 160}}, "is not square"),
        ({"size": {"shortest_edge": 800, "longest_edge": 1333}}, "longest_edge"),
        ({"do_resize": False}, "inputs of varying size"),
    ],
)
def test_processors_without_a_fixed_square_input_are_refused(config, message) -> None:
    with pytest.raises(ValueError, match=message):
        Preprocess.from_config(config)


def test_unreproducible_resampling_warns_and_uses_bicubic() -> None:
    with pytest.warns(UserWarning, match="lanczos, which torch cannot reproduce"):
        preprocess = Preprocess.from_config({"size": {"height": 32, "width": 32}, "resample": 1})
    assert preprocess.resample == "bicubic"


@pytest.fixture
def preprocess() -> Preprocess:
    return Preprocess(96, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))


def test_pil_numpy_and_uint8_tensor_inputs_give_the_same_batch(preprocess) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (80, 70, 3), dtype=np.uint8)
    from_numpy = preprocess(pixels)
    assert from_numpy.shape == (1, 3, 96, 96) and from_numpy.dtype == torch.float32
    torch.testing.assert_close(preprocess(Image.fromarray(pixels)), from_numpy, rtol=0, atol=0)
    uint8 = torch.from_numpy(pixels).permute(2, 0, 1)
    torch.testing.assert_close(preprocess(uint8), from_numpy, rtol=0, atol=0)
    # At the model's size nothing is resampled: float and 8-bit inputs agree exactly.
    exact = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    as_float = torch.from_numpy(exact).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(preprocess(as_float), preprocess(exact), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        preprocess(as_float[None].repeat(2, 1, 1, 1))[1], preprocess(exact)[0]
    )


def test_transparency_is_composited_on_white_like_the_processors(preprocess) -> None:
    clear = Image.new("RGBA", (96, 96), (10, 20, 30, 0))
    white = (1.0 - torch.tensor(preprocess.mean)) / torch.tensor(preprocess.std)
    torch.testing.assert_close(preprocess(clear)[0, :, 0, 0], white)


def test_normalises_with_mean_and_std(preprocess) -> None:
    out = preprocess(torch.full((3, 96, 96), 0.5))
    expected = torch.tensor([(0.5 - 0.5) / 0.25, (0.5 - 0.4) / 0.2, (0.5 - 0.3) / 0.3])
    torch.testing.assert_close(out[0, :, 0, 0], expected)
    images = torch.rand(2, 3, 40, 50)
    normalised = preprocess.normalize(images)  # no resize: for images already at model size
    assert normalised.shape == (2, 3, 40, 50)
    torch.testing.assert_close(normalised[:, 1], (images[:, 1] - 0.4) / 0.2)


@pytest.mark.parametrize("size", [0, -3, True, 2.5, "96"])
def test_image_size_must_be_a_positive_int(size) -> None:
    with pytest.raises(ValueError, match=f"image_size must be a positive int, got {size!r}"):
        Preprocess(size, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))


def test_rejects_wrong_settings() -> None:
    with pytest.raises(ValueError, match="std must be positive"):
        Preprocess(96, mean=(0.5, 0.5, 0.5), std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="mean and std must have 3 values"):
        Preprocess(96, mean=(0.5,), std=(0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="resize must be a positive int or a pair, got 0"):
        Preprocess(96, mean=(0.5,) * 3, std=(0.2,) * 3, resize=0)
    with pytest.raises(ValueError, match="resample must be"):
        Preprocess(96, mean=(0.5,) * 3, std=(0.2,) * 3, resample="lanczos")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (torch.full((3, 96, 96), 255.0), ValueError, r"values in \[0, 1\], got \[255, 255\]"),
        (
            torch.zeros(3, 96, 96, dtype=torch.int32),
            TypeError,
            "float in .0, 1. or uint8, got torch.int32",
        ),
        (np.zeros((96, 96, 3), dtype=np.float32), TypeError, "uint8"),
        (
            np.zeros((3, 96, 96), dtype=np.uint8),
            ValueError,
            r"\(H, W, 3\), got shape \(3, 96, 96\)",
        ),
        # The shape reported is the one passed, not the batch it became.
        (torch.zeros(1, 96, 96), ValueError, r"got shape \(1, 96, 96\)$"),
        (torch.zeros(96, 96, 3), ValueError, r"got shape \(96, 96, 3\); channels last\?"),
        (torch.zeros(2, 1, 3, 96, 96), ValueError, r"got shape \(2, 1, 3, 96, 96\)"),
        ([[0.0]], TypeError, "image must be"),
    ],
)
def test_rejects_wrong_inputs_naming_what_was_passed(preprocess, image, error, message) -> None:
    with pytest.raises(error, match=message):
        preprocess(image)
