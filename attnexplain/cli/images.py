"""Images the subcommands take: files, folders or the embedded samples, read and batched.

``collect_sources`` checks every argument (exists, is an image PIL can read) before a model is
loaded, so a typo fails in a second; images are opened one batch at a time, so a folder of
thousands does not sit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnexplain.cli.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Embedded samples used when no image is given.
DEFAULT_SAMPLES = 4


# -- inputs -------------------------------------------------------------------------------------


@dataclass
class ImageSource:
    """An image to explain: a file, or an embedded sample (``image`` set)."""

    label: str  # the path as given, or the sample's id
    path: Path | None = None
    image: Any = None


def collect_sources(arguments: Sequence[str]) -> list[ImageSource]:
    """Files and the image files of folders, checked to exist; embedded samples if none."""
    if not arguments:
        from attnexplain.zoo import default_samples

        return [ImageSource(s.image_id, image=s.image) for s in default_samples(DEFAULT_SAMPLES)]
    sources = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UsageError(
                    f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            sources += [ImageSource(str(file), path=file) for file in files]
        elif path.is_file():
            sources.append(ImageSource(argument, path=path))
        else:
            raise UsageError(f"image not found: {path}")
    for source in sources:
        identify(source.path)  # unreadable files fail before the model is loaded
    return sources


def identify(path: Path | None) -> None:
    """Check that ``path`` is an image PIL can read (its header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            pass
    except (UnidentifiedImageError, OSError) as error:
        raise UsageError(f"cannot read image {path}: {error}") from None


def open_image(source: ImageSource) -> Any:
    if source.path is None:
        return source.image
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source.path) as opened:
            opened.load()
            return opened.copy()
    except (UnidentifiedImageError, OSError) as error:
        raise UsageError(f"cannot read image {source.path}: {error}") from None


def batches(
    sources: Sequence[ImageSource], preprocess: Any, size: int
) -> Iterator[tuple[list[int], Any]]:
    """``(indices, inputs)``: images in input order, batched ``size`` at a time by input shape."""
    import torch

    pending: dict[tuple[int, ...], list[tuple[int, Any]]] = {}
    for index, source in enumerate(sources):
        inputs = preprocess(open_image(source))
        group = pending.setdefault(tuple(inputs.shape[1:]), [])
        group.append((index, inputs))
        if len(group) == size:
            yield [i for i, _ in group], torch.cat([x for _, x in group])
            group.clear()
    for group in pending.values():
        if group:
            yield [i for i, _ in group], torch.cat([x for _, x in group])


def display_images(inputs: Any, preprocess: Any) -> Any:
    """The model's input batch un-normalised for display: ``(B, 3, H, W)`` in ``[0, 1]``, CPU.

    Args:
        inputs: ``(B, 3, H, W)`` normalised by ``preprocess``.
        preprocess: the :class:`~attnexplain.zoo.Preprocess` that made ``inputs``.

    Returns:
        The images the model saw (after its resize and crop), on the CPU.
    """
    import torch

    mean = torch.tensor(preprocess.mean)[:, None, None]
    std = torch.tensor(preprocess.std)[:, None, None]
    return (inputs.detach().cpu() * std + mean).clamp(0, 1)
