"""Pieces every dataset loader shares: reading pixels, checking sizes, assembling the sample.

Each loader in :mod:`attnexplain.data` only knows its own on-disk layout; turning pixels into the
``(3, H, W)`` float tensor, index PNGs into arrays and per-object masks into a
:class:`~attnexplain.data.base.SegmentationSample` happens here, once.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image

from attnexplain.data.base import SegmentationSample


def import_optional(module: str, extra: str) -> ModuleType:
    """Import a dependency that only one loader needs, or say which extra installs it.

    Args:
        module: the import name, e.g. ``"h5py"``.
        extra: the ``attnexplain`` extra that provides it, e.g. ``"imagenet-seg"``.

    Returns:
        The imported module.

    Raises:
        ImportError: if the module is not installed; the message names the extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{module} is required to read this dataset; install it with "
            f"`pip install 'attnexplain[{extra}]'` (or `pip install {module}`)"
        ) from error


def require_path(path: Path, what: str) -> Path:
    """Check that a file or folder a loader needs exists.

    Args:
        path: the expected location.
        what: a short description for the message, e.g. ``"VOC image set file"``.

    Returns:
        ``path`` unchanged.

    Raises:
        FileNotFoundError: naming ``what`` and the path that was expected.
    """
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: expected {path}")
    return path


def check_index(index: int, length: int) -> int:
    """Turn a possibly negative index into ``[0, length)``.

    Args:
        index: the index passed to ``__getitem__``.
        length: the dataset's length.

    Returns:
        The non-negative index.

    Raises:
        IndexError: if ``index`` is out of range (this is what stops ``for sample in dataset``).
    """
    if not -length <= index < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} samples")
    return index % length


def rgb_tensor(pixels: np.ndarray) -> torch.Tensor:
    """Convert ``uint8`` pixels to the float image tensor of :class:`SegmentationSample`.

    Args:
        pixels: ``(H, W, 3)`` RGB or ``(H, W)`` grayscale ``uint8`` array.

    Returns:
        ``(3, H, W)`` float32 tensor in ``[0, 1]``; grayscale is repeated over the 3 channels.

    Raises:
        ValueError: if the array is not ``uint8`` or not one of the two shapes.
    """
    if pixels.dtype != np.uint8:
        raise ValueError(f"image pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"image pixels must be (H, W, 3) or (H, W), got shape {pixels.shape}")
    # One copy into a fresh float array: also frees the result from read-only PIL buffers.
    planar = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
    return torch.from_numpy(planar).div_(255.0)


def load_rgb(path: Path) -> torch.Tensor:
    """Read an image file as RGB.

    EXIF orientation is deliberately not applied: dataset annotations are drawn on the pixels as
    stored, so rotating the image would misalign it with its masks.

    Args:
        path: any image file PIL reads (JPEG, PNG, ...); grayscale and CMYK become RGB.

    Returns:
        ``(3, H, W)`` float32 tensor in ``[0, 1]``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    require_path(path, "image file")
    with Image.open(path) as image:
        return rgb_tensor(np.asarray(image.convert("RGB")))


def load_index_png(path: Path) -> np.ndarray:
    """Read a label PNG whose pixel values are indices (VOC's palette PNGs).

    Args:
        path: a palette (``"P"``) or grayscale (``"L"``) PNG.

    Returns:
        ``(H, W)`` uint8 array of indices; the palette colours are not applied.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the PNG holds colours (e.g. RGB) instead of indices.
    """
    require_path(path, "label PNG")
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(
                f"{path} is a {image.mode!r} image; label PNGs must store indices in palette "
                "('P') or grayscale ('L') mode, as the dataset ships them (were they re-saved "
                "as colour images?)"
            )
        return np.asarray(image, dtype=np.uint8).copy()


def check_same_size(image: torch.Tensor, size: tuple[int, int], source: object) -> None:
    """Check that an annotation covers exactly the image's pixels.

    Args:
        image: ``(3, H, W)`` image tensor.
        size: ``(H, W)`` of the annotation.
        source: where the annotation came from (a path or an id), for the message.

    Raises:
        ValueError: if the sizes differ.
    """
    image_size = tuple(image.shape[-2:])
    if image_size != tuple(size):
        raise ValueError(
            f"annotation {source} is {tuple(size)} (H, W) but its image is {image_size}; "
            "masks must be at the image's own resolution"
        )


def sample_from_objects(
    image: torch.Tensor,
    object_masks: torch.Tensor,
    object_labels: torch.Tensor,
    ignore: torch.Tensor,
    image_id: str,
) -> SegmentationSample:
    """Build a sample whose target is the class of its largest object.

    ``label`` is the class of the object with the most pixels (ties go to the first object), and
    ``mask`` is the union of every object of that class: a map that points at a second object of
    the target class is not penalised.

    Args:
        image: ``(3, H, W)`` float32 in ``[0, 1]``.
        object_masks: ``(K, H, W)`` bool, ``K >= 1``.
        object_labels: ``(K,)`` int64 class of each object.
        ignore: ``(H, W)`` bool, pixels excluded from scoring.
        image_id: stable identifier of the image.

    Returns:
        The assembled :class:`SegmentationSample`.

    Raises:
        ValueError: if there is no object, or the shapes disagree.
    """
    if object_masks.dim() != 3 or object_masks.shape[0] == 0:
        raise ValueError(
            f"image {image_id!r} needs at least one object mask (K, H, W), "
            f"got shape {tuple(object_masks.shape)}"
        )
    if object_labels.shape != object_masks.shape[:1]:
        raise ValueError(
            f"image {image_id!r}: {object_masks.shape[0]} object masks but "
            f"{tuple(object_labels.shape)} labels"
        )
    check_same_size(image, tuple(object_masks.shape[-2:]), image_id)
    check_same_size(image, tuple(ignore.shape), image_id)
    areas = object_masks.flatten(1).sum(dim=1)
    label = int(object_labels[int(torch.argmax(areas))])
    mask = object_masks[object_labels == label].any(dim=0)
    return SegmentationSample(
        image=image,
        label=label,
        mask=mask,
        object_masks=object_masks,
        object_labels=object_labels,
        ignore=ignore,
        image_id=image_id,
    )
