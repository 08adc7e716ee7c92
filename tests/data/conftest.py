"""Tiny datasets written in each real on-disk format, so every loader is tested without downloads.

Each fixture returns the folder or file plus the arrays it wrote, so tests compare what a loader
reads against what is on disk, and check hand-chosen facts (labels, counts) on top.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def voc_palette() -> list[int]:
    """VOC's 256-colour palette (the ``bitget`` colormap of the devkit's ``labelcolormap.m``)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        value = index
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette += [r, g, b]
    return palette


def save_palette_png(indices: np.ndarray, path: Path) -> None:
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(voc_palette())
    image.save(path)


def random_rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@dataclass
class VOCFixture:
    """A VOC2012 folder and the index arrays written into it, by image id."""

    root: Path
    objects: dict[str, np.ndarray] = field(default_factory=dict)
    classes: dict[str, np.ndarray] = field(default_factory=dict)
    splits: dict[str, list[str]] = field(default_factory=dict)


@pytest.fixture
def voc_fixture(tmp_path: Path) -> VOCFixture:
    """``VOCdevkit/VOC2012`` with three images.

    - ``2008_000001`` (24x32): a large person (instance 1, with a void border), a small dog
      (instance 2, one seam pixel labelled person in SegmentationClass) and a small person
      (instance 3). Expected: labels [15, 12, 15], label 15, mask = instances 1 and 3.
    - ``2008_000002`` (20x16): one aeroplane.
    - ``2008_000003`` (16x16): one cat, in train only.
    """
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    fixture = VOCFixture(root=root)

    objects = np.zeros((24, 32), np.uint8)
    classes = np.zeros((24, 32), np.uint8)
    objects[2:14, 2:18], classes[2:14, 2:18] = 1, 15
    objects[1, 2:18] = classes[1, 2:18] = 255  # void border above the person
    objects[16:20, 20:26], classes[16:20, 20:26] = 2, 12
    classes[16, 20] = 15  # rasterisation seam: the majority class (12) must win
    objects[18:22, 4:8], classes[18:22, 4:8] = 3, 15
    fixture.objects["2008_000001"], fixture.classes["2008_000001"] = objects, classes

    objects = np.zeros((20, 16), np.uint8)
    objects[5:15, 3:12] = 1
    fixture.objects["2008_000002"], fixture.classes["2008_000002"] = objects, objects * 1

    objects = np.zeros((16, 16), np.uint8)
    objects[4:12, 4:12] = 1
    fixture.objects["2008_000003"], fixture.classes["2008_000003"] = objects, objects * 8

    for seed, (image_id, objects) in enumerate(fixture.objects.items()):
        Image.fromarray(random_rgb(*objects.shape, seed)).save(
            root / "JPEGImages" / f"{image_id}.jpg", quality=95
        )
        save_palette_png(objects, root / "SegmentationObject" / f"{image_id}.png")
        save_palette_png(fixture.classes[image_id], root / "SegmentationClass" / f"{image_id}.png")

    fixture.splits = {
        "train": ["2008_000003"],
        "val": ["2008_000001", "2008_000002"],
        "trainval": ["2008_000001", "2008_000002", "2008_000003"],
    }
    for split, ids in fixture.splits.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return fixture


def write_matlab_v73(path: Path, images: list[np.ndarray], masks: list[np.ndarray]) -> None:
    """Write ``gtsegs_ijcv.mat``'s structure as MATLAB v7.3 does.

    HDF5 with a 512-byte MATLAB header; ``value/img`` and ``value/gt`` are ``(N, 1)`` reference
    arrays into ``#refs#``; images stored ``(C, W, H)``, each gt a cell holding a ``(W, H)`` array.
    """
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=512) as file:
        refs = file.create_group("#refs#")
        value = file.create_group("value")
        value.attrs["MATLAB_class"] = np.bytes_("struct")
        image_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        mask_refs = np.empty((len(masks), 1), dtype=h5py.ref_dtype)
        for i, (pixels, mask) in enumerate(zip(images, masks, strict=True)):
            image_data = refs.create_dataset(f"img{i}", data=pixels.T)  # (H, W, C) -> (C, W, H)
            mask_data = refs.create_dataset(f"gt{i}", data=mask.T)
            cell = refs.create_dataset(f"cell{i}", data=np.array([[mask_data.ref]], h5py.ref_dtype))
            for dataset, matlab_class in ((image_data, "uint8"), (mask_data, "uint8")):
                dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class)
            cell.attrs["MATLAB_class"] = np.bytes_("cell")
            image_refs[i, 0], mask_refs[i, 0] = image_data.ref, cell.ref
        for name, data in (("img", image_refs), ("gt", mask_refs)):
            value.create_dataset(name, data=data).attrs["MATLAB_class"] = np.bytes_("cell")
    # MATLAB's header: 116 bytes of text, 8 bytes of subsystem offset, version 0x0200, "IM".
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 ."
    with path.open("r+b") as raw:
        raw.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02" + b"IM")


@pytest.fixture
def imagenet_seg_fixture(tmp_path: Path) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    """A 3-image ``gtsegs_ijcv.mat`` of non-square sizes (so a missed transpose shows)."""
    sizes = [(12, 20), (18, 10), (16, 16)]
    images = [random_rgb(h, w, seed) for seed, (h, w) in enumerate(sizes)]
    masks = []
    for h, w in sizes:
        mask = np.zeros((h, w), np.uint8)
        mask[2 : h // 2, 1 : w - 3] = 1
        masks.append(mask)
    path = tmp_path / "gtsegs_ijcv.mat"
    write_matlab_v73(path, images, masks)
    return path, images, masks


def uncompressed_rle(mask: np.ndarray) -> dict[str, list[int]]:
    """COCO's crowd RLE: column-major run lengths, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"counts": counts, "size": list(mask.shape)}


@dataclass
class COCOFixture:
    """A COCO image folder, its instances JSON, and the masks each annotation should decode to."""

    root: Path
    ann_file: Path
    masks: dict[int, np.ndarray]


@pytest.fixture
def coco_fixture(tmp_path: Path) -> COCOFixture:
    """COCO's layout with four images, in ``val2017/`` and ``annotations/instances_val2017.json``.

    - image 1 (30x40): person polygon (ann 10, area 216), car compressed RLE (ann 11, area 60),
      person crowd uncompressed RLE (ann 12), tiny car polygon (ann 13, area 4).
    - image 2: only a crowd region -> skipped. image 3: no annotation -> skipped.
    - image 4 (20x24): one car, compressed RLE (ann 40).
    """
    mask_utils = pytest.importorskip("pycocotools.mask")
    root = tmp_path / "val2017"
    (tmp_path / "annotations").mkdir()
    root.mkdir()
    sizes = {1: (30, 40), 2: (16, 16), 3: (16, 16), 4: (20, 24)}
    images = []
    for image_id, (h, w) in sizes.items():
        file_name = f"{image_id:012d}.jpg"
        Image.fromarray(random_rgb(h, w, image_id)).save(root / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})

    def rectangle(size: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
        mask = np.zeros(size, np.uint8)
        mask[rows, cols] = 1
        return mask

    def compressed_rle(mask: np.ndarray) -> dict[str, object]:
        rle = mask_utils.encode(np.asfortranarray(mask))
        return {"counts": rle["counts"].decode("ascii"), "size": rle["size"]}

    masks = {
        11: rectangle(sizes[1], slice(20, 26), slice(25, 35)),
        12: rectangle(sizes[1], slice(0, 3), slice(30, 40)),
        20: rectangle(sizes[2], slice(0, 8), slice(0, 8)),
        40: rectangle(sizes[4], slice(5, 15), slice(3, 20)),
    }

    def annotation(
        ann_id: int, image_id: int, category: int, segmentation: object, area: float, crowd: int = 0
    ) -> dict[str, object]:
        return {"id": ann_id, "image_id": image_id, "category_id": category, "area": area,
                "segmentation": segmentation, "iscrowd": crowd, "bbox": [0, 0, 1, 1]}  # fmt: skip

    polygon = [[2.0, 3.0, 20.0, 3.0, 20.0, 15.0, 2.0, 15.0]]  # 18 x 12 rectangle
    tiny = [[36.0, 10.0, 38.0, 10.0, 38.0, 12.0, 36.0, 12.0]]  # 2 x 2
    annotations = [
        annotation(10, 1, 1, polygon, area=216.0),
        annotation(11, 1, 3, compressed_rle(masks[11]), area=60.0),
        annotation(12, 1, 1, uncompressed_rle(masks[12]), area=30.0, crowd=1),
        annotation(13, 1, 3, tiny, area=4.0),
        annotation(20, 2, 1, uncompressed_rle(masks[20]), area=64.0, crowd=1),
        annotation(40, 4, 3, compressed_rle(masks[40]), area=170.0),
    ]
    categories = [
        {"id": 1, "name": "person", "supercategory": "person"},
        {"id": 3, "name": "car", "supercategory": "vehicle"},
        {"id": 5, "name": "airplane", "supercategory": "vehicle"},
    ]
    ann_file = tmp_path / "annotations" / "instances_val2017.json"
    ann_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return COCOFixture(root=root, ann_file=ann_file, masks=masks)
