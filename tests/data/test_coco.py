"""COCOInstances on a tiny COCO-layout fixture, and on the real CC-BY sample when it is present."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnexplain.data.coco import COCOInstances

pytest.importorskip("pycocotools")

# The repository is checked out with shared/ beside it (locally and in CI).
SHARED_SAMPLE = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "coco2017-ccby-sample"
)


def test_objects_crowd_and_largest_label(coco_fixture) -> None:
    data = COCOInstances(coco_fixture.root, coco_fixture.ann_file)
    # Image 2 has only a crowd region and image 3 no annotation: both skipped.
    assert data.coco_image_ids == [1, 4]
    assert len(data) == 2
    sample = data[0]
    assert sample.image_id == "000000000001"
    assert sample.image.shape == (3, 30, 40) and sample.image.dtype == torch.float32
    assert 0.0 <= sample.image.min() and sample.image.max() <= 1.0

    # Polygon person, RLE car, tiny polygon car; the crowd person is not an object.
    assert sample.object_masks.shape == (3, 30, 40) and sample.object_masks.dtype == torch.bool
    assert sample.object_labels.tolist() == [1, 3, 3]
    polygon = sample.object_masks[0]
    assert polygon[5:13, 4:18].all() and abs(int(polygon.sum()) - 216) < 40
    assert not polygon[20:, :].any() and not polygon[:, 25:].any()
    assert torch.equal(sample.object_masks[1], torch.from_numpy(coco_fixture.masks[11] > 0))
    assert sample.object_masks[2].any()

    assert sample.label == 1 and data.category_names[sample.label] == "person"
    assert torch.equal(sample.mask, polygon)
    assert torch.equal(sample.ignore, torch.from_numpy(coco_fixture.masks[12] > 0))


def test_min_area_moves_small_objects_to_ignore(coco_fixture) -> None:
    sample = COCOInstances(coco_fixture.root, coco_fixture.ann_file, min_area=5)[0]
    assert sample.object_labels.tolist() == [1, 3]
    assert sample.ignore[10:12, 36:38].all()  # the 2x2 car
    assert sample.ignore[0:3, 30:40].all()  # the crowd


def test_category_filter(coco_fixture) -> None:
    cars = COCOInstances(coco_fixture.root, coco_fixture.ann_file, category_ids=[3])
    assert cars.coco_image_ids == [1, 4]
    sample = cars[0]
    assert sample.object_labels.tolist() == [3, 3]
    assert sample.label == 3
    assert torch.equal(sample.mask, sample.object_masks.any(dim=0))
    assert not sample.ignore.any()  # the crowd belongs to another category: background
    assert torch.equal(cars[1].mask, torch.from_numpy(coco_fixture.masks[40] > 0))

    people = COCOInstances(coco_fixture.root, coco_fixture.ann_file, category_ids=[1])
    assert people.coco_image_ids == [1]


def test_per_object_records(coco_fixture) -> None:
    data = COCOInstances(coco_fixture.root, coco_fixture.ann_file)
    objects = data.objects(0)
    sample = data[0]
    # One record per scored instance, crowd excluded, in object_masks order.
    assert [o.label for o in objects] == [1, 3, 3]
    assert [o.class_name for o in objects] == ["person", "car", "car"]
    assert all(o.colour_name is None for o in objects)
    for obj, mask in zip(objects, sample.object_masks):
        assert torch.equal(obj.mask, mask)
    assert data.class_name(3) == "car"
    with pytest.raises(KeyError):
        data.class_name(999)


def test_unknown_category(coco_fixture) -> None:
    with pytest.raises(ValueError, match=r"category_ids \[2\] are not in"):
        COCOInstances(coco_fixture.root, coco_fixture.ann_file, category_ids=[1, 2])


def test_negative_min_area(coco_fixture) -> None:
    with pytest.raises(ValueError, match="min_area must be >= 0"):
        COCOInstances(coco_fixture.root, coco_fixture.ann_file, min_area=-1)


def test_missing_paths(coco_fixture, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="COCO image folder not found"):
        COCOInstances(tmp_path / "train2017", coco_fixture.ann_file)
    with pytest.raises(FileNotFoundError, match="COCO annotation file not found"):
        COCOInstances(coco_fixture.root, tmp_path / "instances_train2017.json")


def test_root_of_the_wrong_split(coco_fixture, tmp_path: Path) -> None:
    other = tmp_path / "train2017"
    other.mkdir()
    with pytest.raises(FileNotFoundError, match=r"expected .*train2017/000000000001\.jpg"):
        COCOInstances(other, coco_fixture.ann_file)


def test_image_size_mismatch(coco_fixture) -> None:
    content = json.loads(coco_fixture.ann_file.read_text())
    content["images"][3]["height"] = 21
    coco_fixture.ann_file.write_text(json.dumps(content))
    data = COCOInstances(coco_fixture.root, coco_fixture.ann_file)
    with pytest.raises(ValueError, match=r"\(21, 24\) \(H, W\) but its image is \(20, 24\)"):
        data[1]


def test_missing_pycocotools_names_the_extra(coco_fixture, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(ImportError, match=r"attnexplain\[coco\]"):
        COCOInstances(coco_fixture.root, coco_fixture.ann_file)


@pytest.mark.skipif(
    not SHARED_SAMPLE.is_dir(), reason=f"real COCO sample not found at {SHARED_SAMPLE}"
)
@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_real_coco_sample(split: str) -> None:
    ann_file = SHARED_SAMPLE / "annotations" / f"instances_{split}.json"
    data = COCOInstances(SHARED_SAMPLE / split, ann_file)
    content = json.loads(ann_file.read_text())
    with_objects = {a["image_id"] for a in content["annotations"] if not a["iscrowd"]}
    assert sorted(data.coco_image_ids) == sorted(with_objects)

    crowd_images = {a["image_id"] for a in content["annotations"] if a["iscrowd"]}
    sizes = {image["id"]: (image["height"], image["width"]) for image in content["images"]}
    # A few images, at least one with a crowd region, keep the test fast.
    indices = [0, 1, next(i for i, id_ in enumerate(data.coco_image_ids) if id_ in crowd_images)]
    for index in indices:
        sample = data[index]
        size = sizes[data.coco_image_ids[index]]
        assert sample.image.shape == (3, *size)
        assert sample.object_masks.shape[1:] == size and sample.ignore.shape == size
        assert (sample.object_masks.flatten(1).sum(dim=1) > 0).all()
        assert sample.mask.any() and sample.label in sample.object_labels.tolist()
        if data.coco_image_ids[index] in crowd_images:
            assert sample.ignore.any()
        assert np.isfinite(sample.image.numpy()).all()
