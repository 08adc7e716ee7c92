"""Per-object records and per-class grouping, the interface of class-specific evaluation."""

from __future__ import annotations

import pytest
import torch

from attnexplain.data.objects import AnnotatedObject, class_masks, objects_of
from attnexplain.data.synthetic import CLASS_NAMES, SyntheticShapes


def _masks(*boxes: tuple[int, int, int, int], size: int = 8) -> torch.Tensor:
    masks = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for k, (top, bottom, left, right) in enumerate(boxes):
        masks[k, top:bottom, left:right] = True
    return masks


def test_class_masks_unite_objects_of_one_class_and_sort_the_classes() -> None:
    masks = _masks((0, 2, 0, 2), (4, 6, 4, 6), (0, 2, 6, 8))
    grouped = class_masks(torch.tensor([7, 3, 7]), masks)
    assert grouped.labels.tolist() == [3, 7]
    assert torch.equal(grouped.masks[0], masks[1])
    assert torch.equal(grouped.masks[1], masks[0] | masks[2])
    assert grouped.empty == 0


def test_class_masks_skip_and_count_objects_without_visible_pixels() -> None:
    masks = _masks((0, 2, 0, 2), (0, 0, 0, 0), (3, 5, 3, 5), (0, 0, 0, 0))
    grouped = class_masks(torch.tensor([1, 2, 3, 1]), masks)
    assert grouped.labels.tolist() == [1, 3]  # class 2's only object is empty: gone
    assert grouped.empty == 2
    nothing = class_masks(torch.tensor([4]), _masks((0, 0, 0, 0)))
    assert nothing.labels.tolist() == [] and nothing.masks.shape == (0, 8, 8) and nothing.empty == 1


def test_class_masks_keep_overlapping_classes_as_given() -> None:
    masks = _masks((0, 4, 0, 4), (2, 6, 2, 6))
    grouped = class_masks(torch.tensor([0, 1]), masks)
    assert torch.equal(grouped.masks, masks)
    assert (grouped.masks[0] & grouped.masks[1]).sum() == 4


def test_class_masks_reject_bad_shapes_and_types() -> None:
    masks = _masks((0, 2, 0, 2), (2, 4, 2, 4))
    with pytest.raises(ValueError, match="2 object masks but 3 labels"):
        class_masks(torch.tensor([0, 1, 2]), masks)
    with pytest.raises(ValueError, match=r"must be \(K, H, W\).*\(8, 8\)"):
        class_masks(torch.tensor([0]), masks[0])
    with pytest.raises(TypeError, match="object_masks must be a bool tensor"):
        class_masks(torch.tensor([0, 1]), masks.float())
    with pytest.raises(TypeError, match="object_labels must be integers"):
        class_masks(torch.tensor([0.0, 1.0]), masks)


def test_objects_of_a_sample_and_phrases() -> None:
    dataset = SyntheticShapes("test", size=3)
    sample = dataset[2]
    (obj,) = dataset.objects(2)
    assert obj.label == sample.label and obj.class_name == CLASS_NAMES[sample.label]
    assert torch.equal(obj.mask, sample.mask) and obj.colour_name is None
    assert obj.phrase == obj.class_name
    named = objects_of(sample, dataset.class_name, ("green",))
    assert named[0].phrase == f"green {obj.class_name}"
    with pytest.raises(ValueError, match="colour_names has 2 entries for 1 objects"):
        objects_of(sample, dataset.class_name, ("green", "red"))
    assert AnnotatedObject(0, "disc", sample.mask, "red").phrase == "red disc"
