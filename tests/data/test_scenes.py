"""Multi-object scenes: determinism, splits, exact visible masks, colour names, sample contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnexplain.data.base import SegmentationSample
from attnexplain.data.objects import AnnotatedObject
from attnexplain.data.scenes import (
    CLASS_NAMES,
    MIN_VISIBLE,
    PALETTE,
    RADIUS_RANGES,
    Scene,
    SyntheticScenes,
    _place_objects,
    _visible_masks,
    generate_scene,
)
from attnexplain.data.synthetic import MIN_CONTRAST, SPLIT_SEED_OFFSETS, generate_sample

SCENES = [generate_scene(seed) for seed in range(60)]


def test_same_seed_gives_bit_identical_scene() -> None:
    first, second = generate_scene(1234), generate_scene(1234)
    assert torch.equal(first.image, second.image)
    assert [(o.label, o.colour_name) for o in first.objects] == [
        (o.label, o.colour_name) for o in second.objects
    ]
    assert all(torch.equal(a.mask, b.mask) for a, b in zip(first.objects, second.objects))


def test_scenes_and_single_object_images_use_independent_streams() -> None:
    # The same seed must not give the same background as the single-object data.
    scene, (image, _, _) = generate_scene(5), generate_sample(5)
    assert (scene.image - image).abs().mean() > 0.05


@pytest.mark.parametrize("image_size", [48, 96, 128])
def test_image_types_and_ranges(image_size: int) -> None:
    scene = generate_scene(11, image_size)
    assert scene.image.shape == (3, image_size, image_size)
    assert scene.image.dtype == torch.float32
    assert 0.0 <= scene.image.min() and scene.image.max() <= 1.0
    assert torch.equal((scene.image * 255).round() / 255, scene.image)  # 8-bit quantised
    for obj in scene.objects:
        assert obj.mask.shape == (image_size, image_size) and obj.mask.dtype == torch.bool


def test_one_to_three_objects_of_distinct_classes_and_colours() -> None:
    counts = {len(scene.objects) for scene in SCENES}
    assert counts == {1, 2, 3}
    assert {o.label for scene in SCENES for o in scene.objects} == set(range(len(CLASS_NAMES)))
    for scene in SCENES:
        labels = [o.label for o in scene.objects]
        colours = [o.colour_name for o in scene.objects]
        assert len(set(labels)) == len(labels)
        assert len(set(colours)) == len(colours)
        assert all(c in PALETTE for c in colours)
        assert all(o.class_name == CLASS_NAMES[o.label] for o in scene.objects)


def test_visible_masks_are_non_empty_disjoint_and_inside_the_frame() -> None:
    for scene in SCENES:
        masks = torch.stack([o.mask for o in scene.objects])
        assert masks.flatten(1).any(dim=1).all()
        assert int(masks.sum(dim=0).max()) == 1
        union = masks.any(dim=0)
        assert not (union[0].any() or union[-1].any() or union[:, 0].any() or union[:, -1].any())


def test_some_scenes_have_occluded_objects() -> None:
    # Full masks are drawn again from the generator's own placement to measure occlusion.
    occluded = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        classes = rng.choice(len(CLASS_NAMES), size=3, replace=False)
        full = _place_objects(rng, classes, 96)
        visible = _visible_masks(full)
        fractions = [v.sum() / m.sum() for v, m in zip(visible, full)]
        assert min(fractions) >= MIN_VISIBLE
        assert np.array_equal(visible[-1], full[-1])  # the last painted is never occluded
        occluded += min(fractions) < 1.0
    assert occluded >= 10


def test_visible_masks_remove_what_is_painted_later() -> None:
    back = np.zeros((4, 4), bool)
    back[:, :3] = True
    front = np.zeros((4, 4), bool)
    front[:, 2:] = True
    visible_back, visible_front = _visible_masks([back, front])
    assert visible_back[:, :2].all() and not visible_back[:, 2:].any()
    assert np.array_equal(visible_front, front)


def test_object_radius_follows_the_object_count() -> None:
    for scene in SCENES:
        _, high = RADIUS_RANGES[len(scene.objects)]
        for obj in scene.objects:
            # The visible area is at most the disc of the largest radius.
            assert int(obj.mask.sum()) <= np.pi * (high * 96) ** 2


def _touching(mask: torch.Tensor) -> torch.Tensor:
    """Pixels outside ``mask`` with a 4-neighbour inside it."""
    touching = torch.zeros_like(mask)
    touching[1:-1, 1:-1] = ~mask[1:-1, 1:-1] & (
        mask[:-2, 1:-1] | mask[2:, 1:-1] | mask[1:-1, :-2] | mask[1:-1, 2:]
    )
    return touching


def test_masks_are_exactly_the_visible_painted_pixels() -> None:
    # In noise-free scenes, a solid object is one flat colour over exactly its visible mask.
    checked = 0
    for seed in range(400):
        scene = generate_scene(seed)
        for obj in scene.objects:
            pixels = scene.image[:, obj.mask]
            if (pixels.max(dim=1).values - pixels.min(dim=1).values).max() > 0:
                continue
            differs = (scene.image[:, _touching(obj.mask)] != pixels[:, :1]).any(dim=0)
            assert differs.float().mean() > 0.95
            checked += 1
        if checked >= 15:
            break
    assert checked >= 15


def test_colour_names_describe_solid_objects() -> None:
    palette = torch.tensor(list(PALETTE.values()))
    names = list(PALETTE)
    checked = 0
    for scene in SCENES:
        for obj in scene.objects:
            pixels = scene.image[:, obj.mask]
            spread = (pixels.max(dim=1).values - pixels.min(dim=1).values).max()
            if spread > 0.2:  # gradients, stripes, textures or strong noise
                continue
            mean = pixels.mean(dim=1)
            assert names[int(torch.cdist(mean[None], palette).argmin())] == obj.colour_name
            checked += 1
    assert checked >= 20


def test_objects_contrast_with_the_background() -> None:
    # The palette colour is chosen against what lies under the object when it is painted, so the
    # object stands out from the pixels around it in nearly every case.
    low_contrast = 0
    for scene in SCENES:
        for obj in scene.objects:
            ring = _touching(obj.mask)
            inside = scene.image[:, obj.mask].mean(dim=1)
            outside = scene.image[:, ring].mean(dim=1)
            low_contrast += float(torch.linalg.norm(inside - outside)) < MIN_CONTRAST / 2
    assert low_contrast <= 0.1 * sum(len(s.objects) for s in SCENES)


def test_caption_articles_and_order() -> None:
    objects = (
        AnnotatedObject(3, "star", torch.ones(2, 2, dtype=torch.bool), "orange"),
        AnnotatedObject(0, "disc", torch.ones(2, 2, dtype=torch.bool), "red"),
        AnnotatedObject(5, "ring", torch.ones(2, 2, dtype=torch.bool), "blue"),
    )
    image = torch.zeros(3, 2, 2)
    assert Scene(image, objects[:1]).caption == "an orange star"
    assert Scene(image, objects[:2]).caption == "an orange star and a red disc"
    assert Scene(image, objects).caption == "an orange star, a red disc and a blue ring"


def test_dataset_yields_segmentation_samples() -> None:
    dataset = SyntheticScenes("test", size=50, image_size=64)
    sample = dataset[42]
    assert isinstance(sample, SegmentationSample)
    assert sample.image_id == "scenes-test-000042" == dataset.image_id(42)
    scene = generate_scene(SPLIT_SEED_OFFSETS["test"] + 42, 64)
    assert torch.equal(sample.image, scene.image)
    assert sample.object_labels.dtype == torch.int64
    assert sample.object_labels.tolist() == [o.label for o in scene.objects]
    for mask, obj in zip(sample.object_masks, scene.objects):
        assert torch.equal(mask, obj.mask)
    areas = [int(o.mask.sum()) for o in scene.objects]
    largest = scene.objects[int(np.argmax(areas))]
    assert sample.label == largest.label and torch.equal(sample.mask, largest.mask)
    assert sample.ignore.shape == (64, 64) and not sample.ignore.any()
    assert dataset[-8].image_id == "scenes-test-000042"


def test_dataset_objects_and_class_names() -> None:
    dataset = SyntheticScenes("val", size=10)
    for index in range(10):
        objects = dataset.objects(index)
        sample = dataset[index]
        assert [o.label for o in objects] == sample.object_labels.tolist()
        assert all(o.colour_name in PALETTE for o in objects)
        assert all(dataset.class_name(o.label) == o.class_name for o in objects)
        assert [o.phrase for o in objects] == [f"{o.colour_name} {o.class_name}" for o in objects]


def test_splits_are_disjoint_and_differ() -> None:
    train, test = SyntheticScenes("train", 3), SyntheticScenes("test", 3)
    assert {train.seed(i) for i in range(3)}.isdisjoint(test.seed(i) for i in range(3))
    assert not torch.equal(train[0].image, test[0].image)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="seed must be non-negative"):
        generate_scene(-1)
    with pytest.raises(ValueError, match="image_size must be at least 32"):
        generate_scene(0, image_size=16)
    with pytest.raises(ValueError, match="split must be one of"):
        SyntheticScenes("training", 4)  # type: ignore[arg-type]
    with pytest.raises(IndexError, match="index must be in"):
        SyntheticScenes("test", 4)[4]
