"""VOCSegmentation on a tiny VOC2012 tree written with real palette PNGs and JPEGs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnexplain.data.voc import CLASS_NAMES, VOCSegmentation


def test_val_sample_has_instances_classes_and_void(voc_fixture) -> None:
    data = VOCSegmentation(voc_fixture.root, split="val")
    assert len(data) == 2
    sample = data[0]
    objects = voc_fixture.objects["2008_000001"]

    assert sample.image_id == "2008_000001"
    assert sample.image.shape == (3, 24, 32) and sample.image.dtype == torch.float32
    with Image.open(voc_fixture.root / "JPEGImages" / "2008_000001.jpg") as jpeg:
        expected = torch.from_numpy(np.array(jpeg.convert("RGB"))).permute(2, 0, 1) / 255
    torch.testing.assert_close(sample.image, expected)

    assert sample.object_masks.dtype == torch.bool
    for mask, instance in zip(sample.object_masks, (1, 2, 3), strict=True):
        assert torch.equal(mask, torch.from_numpy(objects == instance))
    # Instance 2 has one seam pixel of class 15: the majority class (dog) wins.
    assert sample.object_labels.tolist() == [15, 12, 15]
    assert sample.object_labels.dtype == torch.int64
    # The largest instance is a person; the mask holds both persons, not the dog.
    assert CLASS_NAMES[sample.label] == "person"
    assert torch.equal(sample.mask, torch.from_numpy((objects == 1) | (objects == 3)))
    assert torch.equal(sample.ignore, torch.from_numpy(objects == 255))
    assert sample.ignore.sum() == 16


def test_single_object_image(voc_fixture) -> None:
    sample = VOCSegmentation(voc_fixture.root)[-1]
    assert sample.image_id == "2008_000002"
    assert sample.label == 1 and CLASS_NAMES[1] == "aeroplane"
    assert sample.object_masks.shape == (1, 20, 16)
    assert torch.equal(sample.mask, sample.object_masks[0])
    assert not sample.ignore.any()


@pytest.mark.parametrize("level", ["VOC2012", "VOCdevkit", "parent"])
def test_root_may_be_voc2012_or_a_parent(voc_fixture, level: str) -> None:
    root = {
        "VOC2012": voc_fixture.root,
        "VOCdevkit": voc_fixture.root.parent,
        "parent": voc_fixture.root.parent.parent,
    }[level]
    data = VOCSegmentation(str(root))
    assert data.root == voc_fixture.root
    assert data.image_ids == voc_fixture.splits["val"]


@pytest.mark.parametrize("split", ["train", "val", "trainval"])
def test_splits_read_their_image_set(voc_fixture, split: str) -> None:
    data = VOCSegmentation(voc_fixture.root, split=split)
    assert [sample.image_id for sample in data] == voc_fixture.splits[split]


def test_image_set_file_overrides_split(voc_fixture, tmp_path: Path) -> None:
    subset = tmp_path / "subset.txt"
    subset.write_text("2008_000003\n2008_000001\n")
    data = VOCSegmentation(voc_fixture.root, image_set_file=subset)
    assert data.image_ids == ["2008_000003", "2008_000001"]
    assert data[0].label == 8  # cat


def test_index_out_of_range(voc_fixture) -> None:
    data = VOCSegmentation(voc_fixture.root)
    with pytest.raises(IndexError, match="out of range"):
        data[2]


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="VOC root folder not found"):
        VOCSegmentation(tmp_path / "nowhere")


def test_root_without_jpeg_images(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no JPEGImages/ folder"):
        VOCSegmentation(tmp_path)


def test_missing_subfolder(voc_fixture) -> None:
    shutil.rmtree(voc_fixture.root / "SegmentationObject")
    with pytest.raises(FileNotFoundError, match="SegmentationObject"):
        VOCSegmentation(voc_fixture.root)


def test_unknown_split(voc_fixture) -> None:
    with pytest.raises(ValueError, match="unknown VOC split 'test'"):
        VOCSegmentation(voc_fixture.root, split="test")  # type: ignore[arg-type]


def test_missing_image_set_file(voc_fixture) -> None:
    (voc_fixture.root / "ImageSets" / "Segmentation" / "train.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"train\.txt"):
        VOCSegmentation(voc_fixture.root, split="train")


def test_listed_image_without_mask(voc_fixture) -> None:
    (voc_fixture.root / "SegmentationClass" / "2008_000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"SegmentationClass/2008_000002\.png"):
        VOCSegmentation(voc_fixture.root)


def test_colour_mask_is_rejected(voc_fixture) -> None:
    path = voc_fixture.root / "SegmentationObject" / "2008_000001.png"
    with Image.open(path) as image:
        image.convert("RGB").save(path)
    with pytest.raises(ValueError, match="'RGB' image; label PNGs must store indices"):
        VOCSegmentation(voc_fixture.root)[0]


def test_mask_size_mismatch(voc_fixture) -> None:
    path = voc_fixture.root / "SegmentationClass" / "2008_000002.png"
    with Image.open(path) as image:
        image.resize((8, 8)).save(path)
    with pytest.raises(ValueError, match=r"is \(8, 8\) \(H, W\) but its image is \(20, 16\)"):
        VOCSegmentation(voc_fixture.root)[1]


def test_fixture_masks_are_palette_pngs(voc_fixture) -> None:
    for folder in ("SegmentationObject", "SegmentationClass"):
        with Image.open(voc_fixture.root / folder / "2008_000001.png") as png:
            assert png.mode == "P"
            assert png.getpalette()[15 * 3 : 16 * 3] == [192, 128, 128]  # person's colour


def test_class_names() -> None:
    assert len(CLASS_NAMES) == 21
    assert CLASS_NAMES[0] == "background" and CLASS_NAMES[20] == "tvmonitor"
