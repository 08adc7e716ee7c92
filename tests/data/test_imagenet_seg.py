"""ImageNetSegmentation on a tiny MATLAB v7.3 file with gtsegs_ijcv.mat's reference layout."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnexplain.data.imagenet_seg import ImageNetSegmentation

h5py = pytest.importorskip("h5py")


def test_fixture_is_a_matlab_v73_file(imagenet_seg_fixture) -> None:
    path, _, _ = imagenet_seg_fixture
    assert path.read_bytes()[:10] == b"MATLAB 7.3"
    assert h5py.is_hdf5(path)


def test_reads_images_and_masks_untransposed(imagenet_seg_fixture) -> None:
    path, images, masks = imagenet_seg_fixture
    data = ImageNetSegmentation(path)
    assert len(data) == 3
    for index, (pixels, mask) in enumerate(zip(images, masks, strict=True)):
        sample = data[index]
        assert sample.image_id == f"{index:04d}"
        assert sample.image.dtype == torch.float32
        expected = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(sample.image, expected, rtol=0, atol=1e-7)
        assert sample.mask.dtype == torch.bool
        assert torch.equal(sample.mask, torch.from_numpy(mask > 0))
        assert torch.equal(sample.object_masks, sample.mask[None])
        assert sample.label == -1 and sample.object_labels.tolist() == [-1]
        assert sample.ignore.shape == mask.shape and not sample.ignore.any()


def test_negative_index_and_out_of_range(imagenet_seg_fixture) -> None:
    data = ImageNetSegmentation(imagenet_seg_fixture[0])
    assert data[-1].image_id == "0002"
    with pytest.raises(IndexError, match="out of range"):
        data[3]


def test_survives_pickling_for_dataloader_workers(imagenet_seg_fixture) -> None:
    data = ImageNetSegmentation(imagenet_seg_fixture[0])
    data[0]  # opens the HDF5 handle, which cannot be pickled
    copy = pickle.loads(pickle.dumps(data))
    assert torch.equal(copy[1].mask, data[1].mask)
    data.close()
    copy.close()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"gtsegs_ijcv\.mat"):
        ImageNetSegmentation(tmp_path / "gtsegs_ijcv.mat")


def test_pre_v73_mat_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "old.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file".ljust(128, b" "))
    with pytest.raises(ValueError, match="not an HDF5 file"):
        ImageNetSegmentation(path)


def test_wrong_layout_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.mat"
    with h5py.File(path, "w") as file:
        file.create_dataset("value/img", data=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="has no value/gt"):
        ImageNetSegmentation(path)


def test_missing_h5py_names_the_extra(imagenet_seg_fixture, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"attnexplain\[imagenet-seg\]"):
        ImageNetSegmentation(imagenet_seg_fixture[0])
