"""The embedded synthetic dataset: determinism, disjoint splits, exact masks, sample contract."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from attnexplain.data.base import SegmentationSample
from attnexplain.data.synthetic import (
    CLASS_NAMES,
    SPLIT_SEED_OFFSETS,
    SyntheticShapes,
    generate_sample,
    shape_mask,
)


def test_same_seed_gives_bit_identical_sample() -> None:
    image_a, label_a, mask_a = generate_sample(12345)
    image_b, label_b, mask_b = generate_sample(12345)
    assert torch.equal(image_a, image_b)
    assert label_a == label_b
    assert torch.equal(mask_a, mask_b)


def test_different_seeds_give_different_images() -> None:
    assert not torch.equal(generate_sample(6)[0], generate_sample(12)[0])


@pytest.mark.parametrize("image_size", [64, 96, 128])
def test_generate_sample_types_and_ranges(image_size: int) -> None:
    image, label, mask = generate_sample(7, image_size)
    assert image.shape == (3, image_size, image_size) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    # Quantised to 8 bits, so a uint8 cache of the images is lossless.
    assert torch.equal((image * 255).round() / 255, image)
    assert isinstance(label, int) and 0 <= label < len(CLASS_NAMES)
    assert mask.shape == (image_size, image_size) and mask.dtype == torch.bool


def test_every_class_appears_and_masks_are_non_empty() -> None:
    samples = [generate_sample(seed) for seed in range(24)]
    assert len(CLASS_NAMES) >= 6
    assert {label for _, label, _ in samples} == set(range(len(CLASS_NAMES)))
    for _, _, mask in samples:
        # The whole object lies inside the frame, at 25-35 % of the side as circumradius.
        assert 200 < int(mask.sum()) < 0.4 * mask.numel()
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


@pytest.mark.parametrize(
    ("kind", "expected_area"),
    [
        # Axis-aligned square of side 2 * 10 / sqrt(2) ~= 14.14 centred on a pixel centre: the
        # pixel centres inside are 15 per side (offsets -7..7).
        ("square", 15 * 15),
        ("disc", np.pi * 20**2),
        ("ring", np.pi * (20**2 - 10**2)),
    ],
)
def test_shape_mask_area_matches_geometry(kind: str, expected_area: float) -> None:
    radius = 10.0 if kind == "square" else 20.0
    angle = np.pi / 4 if kind == "square" else 0.0  # the square's corners sit on the diagonals
    mask = shape_mask(kind, (48.0, 48.0), radius, angle, 96, inner_ratio=0.5)
    assert abs(int(mask.sum()) - expected_area) <= 0.03 * expected_area


def test_ring_has_a_hole_and_star_is_not_convex() -> None:
    ring = shape_mask("ring", (48.0, 48.0), 20.0, 0.0, 96, inner_ratio=0.5)
    assert not ring[48, 48] and ring[48, 48 + 15]
    star = shape_mask("star", (48.0, 48.0), 30.0, 0.0, 96)
    # Between two points of the star, at 80 % of the radius, lies background.
    assert star[48 - 24, 48] and not star[48 + 24, 48]


def test_shape_mask_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        shape_mask("hexagon", (48.0, 48.0), 20.0, 0.0, 96)


def test_mask_is_exactly_the_painted_object() -> None:
    # A solid-filled object in a noise-free image is one flat colour over exactly its mask: find
    # such a sample and check that the pixels just outside the mask do not share that colour.
    for seed in range(200):
        image, _, mask = generate_sample(seed)
        pixels = image[:, mask]
        if (pixels.max(dim=1).values - pixels.min(dim=1).values).max() == 0:
            break
    else:
        pytest.fail("no noise-free solid object in the first 200 seeds")
    colour = pixels[:, :1]
    touching = torch.zeros_like(mask)
    touching[1:-1, 1:-1] = ~mask[1:-1, 1:-1] & (
        mask[:-2, 1:-1] | mask[2:, 1:-1] | mask[1:-1, :-2] | mask[1:-1, 2:]
    )
    differs = (image[:, touching] != colour).any(dim=0)
    assert differs.float().mean() > 0.95


def test_generate_sample_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="seed"):
        generate_sample(-1)
    with pytest.raises(ValueError, match="image_size"):
        generate_sample(0, image_size=16)


def test_split_seed_ranges_are_disjoint() -> None:
    offsets = sorted(SPLIT_SEED_OFFSETS.values())
    assert all(b - a >= 10**9 for a, b in itertools.pairwise(offsets))
    train, val, test = (SyntheticShapes(split, size=4) for split in ("train", "val", "test"))
    seeds = [{ds.seed(i) for i in range(len(ds))} for ds in (train, val, test)]
    assert not (seeds[0] & seeds[1] or seeds[0] & seeds[2] or seeds[1] & seeds[2])
    assert not torch.equal(train[0].image, test[0].image)


def test_dataset_yields_segmentation_samples() -> None:
    dataset = SyntheticShapes("test", size=50, image_size=64)
    assert len(dataset) == 50
    sample = dataset[42]
    assert isinstance(sample, SegmentationSample)
    assert sample.image_id == "synthetic-test-000042"
    image, label, mask = generate_sample(SPLIT_SEED_OFFSETS["test"] + 42, 64)
    assert torch.equal(sample.image, image) and sample.label == label
    assert torch.equal(sample.mask, mask)
    assert sample.object_masks.shape == (1, 64, 64) and sample.object_masks.dtype == torch.bool
    assert torch.equal(sample.object_masks[0], sample.mask)
    assert sample.object_labels.dtype == torch.int64
    assert sample.object_labels.tolist() == [sample.label]
    assert sample.ignore.shape == (64, 64) and sample.ignore.dtype == torch.bool
    assert not sample.ignore.any()
    assert dataset[-8].image_id == "synthetic-test-000042"


def test_dataset_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        SyntheticShapes("training", size=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        SyntheticShapes("train", size=-1)
    with pytest.raises(IndexError, match="index"):
        SyntheticShapes("val", size=4)[4]
