"""ImageNet-segmentation (Guillaumin et al. 2014) as packaged in ``gtsegs_ijcv.mat``.

This is the 4,276-image file Chefer et al. ("Transformer Interpretability Beyond Attention
Visualization", CVPR 2021) use for their segmentation tests. It is a MATLAB v7.3 file, i.e. HDF5
with a 512-byte MATLAB header, holding a struct ``value`` with two cell arrays:

- ``value/img``: ``(N, 1)`` object references; each points to a ``uint8`` dataset stored
  transposed, ``(3, W, H)`` (MATLAB writes column-major).
- ``value/gt``: ``(N, 1)`` object references; each points to a ``(1, 1)`` cell (another reference)
  whose target is a ``(W, H)`` ``uint8`` mask, non-zero on the object.

Referenced datasets live under ``#refs#``. Reading needs ``h5py`` (extra ``imagenet-seg``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnexplain.data.base import SegmentationSample
from attnexplain.data.io import (
    check_index,
    import_optional,
    require_path,
    rgb_tensor,
    sample_from_objects,
)

_EXTRA = "imagenet-seg"
_IMAGES = "value/img"
_MASKS = "value/gt"


class ImageNetSegmentation:
    """The ImageNet-segmentation benchmark: one object mask per image and no class label.

    The file carries no ImageNet class, so every sample has ``label = -1`` (the caller explains
    the model's own prediction, as Chefer et al. do); the single object has label ``-1`` too.

    Args:
        path: the ``gtsegs_ijcv.mat`` file.

    Raises:
        ImportError: if ``h5py`` is missing (install the ``imagenet-seg`` extra).
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not HDF5 (a pre-v7.3 ``.mat``) or lacks ``value/img`` and
            ``value/gt`` of equal length.

    Examples:
        >>> data = ImageNetSegmentation("data/gtsegs_ijcv.mat")  # doctest: +SKIP
        >>> len(data), data[0].mask.shape  # doctest: +SKIP
        (4276, torch.Size([375, 500]))
    """

    def __init__(self, path: str | Path) -> None:
        self._h5py = import_optional("h5py", _EXTRA)
        self.path = require_path(Path(path), "ImageNet-segmentation file (gtsegs_ijcv.mat)")
        if not self._h5py.is_hdf5(self.path):
            raise ValueError(
                f"{self.path} is not an HDF5 file; expected the MATLAB v7.3 gtsegs_ijcv.mat "
                "used by Chefer et al. (re-save older .mat files with save(..., '-v7.3'))"
            )
        with self._h5py.File(self.path, "r") as file:
            missing = [key for key in (_IMAGES, _MASKS) if key not in file]
            if missing:
                raise ValueError(
                    f"{self.path} has no {', '.join(missing)}; expected the layout of "
                    "gtsegs_ijcv.mat: cell arrays value/img and value/gt"
                )
            self._length = file[_IMAGES].size
            if file[_MASKS].size != self._length:
                raise ValueError(
                    f"{self.path}: value/img has {self._length} entries but value/gt has "
                    f"{file[_MASKS].size}; the file is truncated or not gtsegs_ijcv.mat"
                )
        # The handle is opened lazily and owned by one process: an HDF5 handle inherited over
        # fork (DataLoader workers) is not safe to use, so a worker opens its own.
        self._file: Any = None
        self._file_pid: int | None = None

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> SegmentationSample:
        """Load one image and its object mask.

        Returns:
            A :class:`SegmentationSample` with ``image`` ``(3, H, W)``, ``mask`` ``(H, W)``,
            ``object_masks`` ``(1, H, W)``, ``object_labels`` ``[-1]``, ``label`` ``-1``, an
            all-False ``ignore`` and ``image_id`` the zero-padded index (e.g. ``"0042"``).

        Raises:
            IndexError: if ``index`` is out of range.
            ValueError: if the image and mask differ in size.
        """
        index = check_index(index, len(self))
        file = self._open()
        # MATLAB stores column-major: (C, W, H) -> (H, W, C) and (W, H) -> (H, W).
        pixels = self._dereference(file, file[_IMAGES], index)
        pixels = pixels.transpose((2, 1, 0)) if pixels.ndim == 3 else pixels.T
        gt = self._dereference(file, file[_MASKS], index).T
        object_mask = torch.from_numpy(gt > 0)
        return sample_from_objects(
            image=rgb_tensor(pixels.astype(np.uint8, copy=False)),
            object_masks=object_mask[None],
            object_labels=torch.tensor([-1], dtype=torch.int64),
            ignore=torch.zeros_like(object_mask),
            image_id=f"{index:04d}",
        )

    def _open(self) -> Any:
        if self._file is None or self._file_pid != os.getpid():
            self._file = self._h5py.File(self.path, "r")
            self._file_pid = os.getpid()
        return self._file

    def _dereference(self, file: Any, cells: Any, index: int) -> np.ndarray:
        """Follow a cell array entry's references down to the stored array.

        ``value/gt`` entries are cells holding a cell, so references are followed until the
        target holds data rather than references.
        """
        # MATLAB cell arrays are (N, 1) or (1, N); unravelling covers both.
        reference = cells[np.unravel_index(index, cells.shape)]
        target = file[reference]
        while self._h5py.check_dtype(ref=target.dtype) is not None:
            target = file[target[()].flat[0]]
        return np.asarray(target[()])

    def close(self) -> None:
        """Close the HDF5 handle (it reopens on the next access)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict[str, Any]:
        # h5py handles and modules do not pickle (spawned DataLoader workers); reopen there.
        state = self.__dict__.copy()
        state.update(_file=None, _file_pid=None, _h5py=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._h5py = import_optional("h5py", _EXTRA)
