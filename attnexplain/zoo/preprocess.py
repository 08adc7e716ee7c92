"""Turn images into a model's normalised input batch, the way its own image processor does.

:class:`Preprocess` reproduces the pipeline of Hugging Face's image processors (their default
torchvision backend, which ``AutoImageProcessor`` returns when torchvision is installed): resize
(to a fixed size, or the shortest edge keeping the aspect ratio), centre crop, rescale to
``[0, 1]`` and normalise per channel. Images given as 8-bit pixels (PIL, uint8 arrays and
tensors) are resized in 8 bits, as the processor does, so the batch equals the processor's
``pixel_values``; float images in ``[0, 1]`` are resized in float.
"""

from __future__ import annotations

import json
import platform
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

Resample = Literal["nearest", "bilinear", "bicubic"]

#: PIL resampling codes (what ``preprocessor_config.json`` stores) -> interpolation mode.
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
#: Codes torch cannot reproduce (lanczos, box, hamming): bicubic is the nearest kernel it has.
_APPROXIMATED = {1: "lanczos", 4: "box", 5: "hamming"}

# Inputs a little outside [0, 1] come from resampling or rounding; far outside means the image was
# already normalised or is on a 0-255 scale.
_RANGE_TOLERANCE = 1e-3

ImageInput = torch.Tensor | Image.Image | np.ndarray


def _side_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``(h, w)`` from an int or a pair, each a positive int."""
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair, got {value!r}")
    return int(pair[0]), int(pair[1])


def shortest_edge_size(height: int, width: int, edge: int) -> tuple[int, int]:
    """The ``(h, w)`` a resize of the shortest edge to ``edge`` gives, keeping the aspect ratio.

    The long side is truncated, as Hugging Face's ``get_resize_output_image_size`` and
    torchvision's ``Resize(int)`` do.
    """
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(edge * long / short)
    return (new_long, edge) if width <= height else (edge, new_long)


def _native_uint8(resample: str, device: torch.device) -> bool:
    """Whether torchvision resizes uint8 images without a float round trip (its CPU kernels)."""
    if resample == "nearest":
        return True
    if device.type != "cpu":
        return False
    if resample == "bicubic":
        return True
    capability = torch.backends.cpu.get_cpu_capability()
    return capability in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")


def _interpolate(batch: torch.Tensor, size: tuple[int, int], resample: str) -> torch.Tensor:
    """Resize ``(B, 3, H, W)`` to ``size`` like torchvision's ``resize`` (antialiased)."""
    if tuple(batch.shape[-2:]) == size:
        return batch
    if resample == "nearest":
        # PIL's NEAREST maps to torchvision's NEAREST_EXACT in the processors.
        return F.interpolate(batch, size=size, mode="nearest-exact")
    if batch.dtype != torch.uint8:
        resized = F.interpolate(
            batch, size=size, mode=resample, align_corners=False, antialias=True
        )
        # Bicubic overshoots at sharp edges; the 8-bit path clips to the pixel range, so does this.
        return resized.clamp_(0.0, 1.0) if resample == "bicubic" else resized
    if _native_uint8(resample, batch.device):
        return F.interpolate(batch, size=size, mode=resample, align_corners=False, antialias=True)
    resized = F.interpolate(
        batch.float(), size=size, mode=resample, align_corners=False, antialias=True
    )
    if resample == "bicubic":
        resized = resized.clamp_(0, 255)
    return resized.round_().to(torch.uint8)


def _centre_crop(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre ``size`` crop of ``(B, 3, H, W)``, zero-padded where the image is smaller.

    Offsets are truncated (``int((H - h) / 2)``), as Hugging Face's processors compute them.
    """
    height, width = batch.shape[-2:]
    crop_h, crop_w = size
    if crop_h > height or crop_w > width:
        pad_w, pad_h = max(crop_w - width, 0), max(crop_h - height, 0)
        batch = F.pad(batch, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2))
        height, width = batch.shape[-2:]
    top, left = int((height - crop_h) / 2.0), int((width - crop_w) / 2.0)
    return batch[..., top : top + crop_h, left : left + crop_w]


def _pil_to_uint8(image: Image.Image) -> np.ndarray:
    """``(H, W, 3)`` uint8; transparency is composited onto white, as the processors do."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _size_fields(size: Any) -> dict[str, int]:
    """The set fields of a processor's ``size`` / ``crop_size`` (dict or transformers' SizeDict)."""
    if size is None:
        return {}
    if isinstance(size, int):
        return {"height": size, "width": size}
    keys = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")
    read = size.get if isinstance(size, Mapping) else lambda key: getattr(size, key, None)
    return {key: int(read(key)) for key in keys if read(key)}


class Preprocess:
    """Turn images into the model's normalised input batch, as its image processor does.

    The steps, each as Hugging Face's processors compute them:

    1. **resize**: ``resize=None`` resizes straight to ``image_size x image_size`` (ViT's
       processor); an int resizes the shortest edge to it, keeping the aspect ratio (CLIP,
       DINOv2, timm); a ``(height, width)`` pair resizes to that size (DeiT). Antialiased.
    2. **centre crop** to ``image_size`` (zero padding where the image is smaller), when
       ``resize`` is given.
    3. **normalise**: ``(x - mean) / std`` per channel, with ``x`` in ``[0, 1]``.

    Accepts a float tensor in ``[0, 1]`` shaped ``(3, H, W)`` or ``(B, 3, H, W)``, a uint8
    tensor of the same shapes (0-255), a PIL image, or a uint8 ``(H, W, 3)`` numpy array. 8-bit
    inputs are resized in 8 bits, which makes the batch equal to the processor's
    ``pixel_values``. Float inputs are resized in float: within one 8-bit step of the 8-bit
    path for bilinear; for bicubic, whose 8-bit kernel clips between its two passes, pixels at
    sharp edges differ by a few steps.

    Args:
        image_size: side of the square input the model expects (after the crop).
        mean: per-channel mean (3 values) of the training images in ``[0, 1]``.
        std: per-channel standard deviation (3 values).
        resize: the resize before the crop (see above); ``None``: straight to ``image_size``.
        resample: interpolation of the resize.

    Raises:
        ValueError: if ``image_size`` or ``resize`` is not positive, ``mean`` or ``std`` does
            not have 3 values, ``std`` is not positive, or ``resample`` is unknown.

    Examples:
        >>> preprocess = Preprocess(96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        >>> preprocess(torch.rand(3, 128, 128)).shape
        torch.Size([1, 3, 96, 96])
        >>> dinov2 = Preprocess(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), resize=256,
        ...                     resample="bicubic")
        >>> dinov2(torch.rand(3, 300, 400)).shape  # 256 x 341, then the centre 224 x 224
        torch.Size([1, 3, 224, 224])
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        resize: int | tuple[int, int] | None = None,
        resample: Resample = "bilinear",
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        if image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size}")
        if resize is not None:
            if isinstance(resize, bool) or (isinstance(resize, int | np.integer) and resize < 1):
                raise ValueError(f"resize must be a positive int or a pair, got {resize!r}")
            if not isinstance(resize, int | np.integer):
                resize = _side_pair(resize, "resize")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(
                f"mean and std must have 3 values (RGB), got {len(mean)} and {len(std)}"
            )
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {tuple(std)}")
        if resample not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(
                f"resample must be 'nearest', 'bilinear' or 'bicubic', got {resample!r}"
            )
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.resize = resize if resize is None or isinstance(resize, tuple) else int(resize)
        self.resample: Resample = resample

    # -- construction from processor settings ---------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Preprocess:
        """Build from the fields of a Hugging Face image processor config.

        Reads ``do_resize``, ``size`` (``height``/``width`` or ``shortest_edge``),
        ``do_center_crop``, ``crop_size``, ``resample``, ``do_rescale``, ``rescale_factor``,
        ``do_normalize``, ``image_mean`` and ``image_std``, with the processors' defaults.

        Args:
            config: the ``preprocessor_config.json`` contents, or a processor's attributes.

        Returns:
            The matching :class:`Preprocess`.

        Raises:
            ValueError: for settings without a fixed square model input (no resize, a
                shortest-edge resize without a crop, a non-square crop, ``longest_edge`` or
                ``max_height`` sizes).
        """
        size, crop = _size_fields(config.get("size")), _size_fields(config.get("crop_size"))
        do_resize = config.get("do_resize", True) and bool(size)
        do_crop = bool(config.get("do_center_crop", False)) and bool(crop)
        unsupported = {"longest_edge", "max_height", "max_width"} & set(size)
        if unsupported:
            raise ValueError(
                f"image processor size {size} ({', '.join(sorted(unsupported))}) gives inputs "
                "of varying size; attnexplain needs a fixed square input size"
            )
        if do_crop:
            side = _square(crop, "crop_size")
        elif do_resize and "height" in size:
            side = _square(size, "size")
        else:
            raise ValueError(
                f"image processor (do_resize={config.get('do_resize', True)}, size={size}, "
                f"do_center_crop={config.get('do_center_crop', False)}) gives inputs of varying "
                "size; attnexplain needs a fixed square input size"
            )
        resize: int | tuple[int, int] | None = None
        if do_resize and "shortest_edge" in size:
            resize = size["shortest_edge"]
        elif do_resize and do_crop:
            resize = (size["height"], size["width"])
        # (x * factor - mean) / std on 8-bit x equals (x / 255 - mean') / std' on [0, 1].
        factor = (
            float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0
        )
        scale = 1.0 if abs(factor - 1 / 255) < 1e-12 else 255.0 * factor
        mean = _channels(config.get("image_mean", 0.0), "image_mean")
        std = _channels(config.get("image_std", 1.0), "image_std")
        if not config.get("do_normalize", True):
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return cls(
            side,
            [m / scale for m in mean],
            [s / scale for s in std],
            resize=resize,
            resample=_resample(config.get("resample", 2)),
        )

    @classmethod
    def from_processor(cls, processor: Any) -> Preprocess:
        """Build from a loaded Hugging Face image processor (``AutoImageProcessor``).

        Raises:
            ValueError: as :meth:`from_config`.
        """
        fields = (
            "do_resize", "size", "do_center_crop", "crop_size", "resample", "do_rescale",
            "rescale_factor", "do_normalize", "image_mean", "image_std",
        )  # fmt: skip
        config = {
            f: getattr(processor, f) for f in fields if getattr(processor, f, None) is not None
        }
        return cls.from_config(config)

    @classmethod
    def from_json(cls, path: str | Path) -> Preprocess:
        """Read a Hugging Face ``preprocessor_config.json`` (see :meth:`from_config`).

        Args:
            path: the JSON file.

        Returns:
            The matching :class:`Preprocess`.
        """
        return cls.from_config(json.loads(Path(path).read_text()))

    def to_config(self) -> dict[str, Any]:
        """The settings as a Hugging Face image processor config that ``AutoImageProcessor``
        loads to the same pipeline (``ViTImageProcessor`` without a resize before the crop,
        ``BitImageProcessor`` for a shortest-edge resize, ``DeiTImageProcessor`` for a pair)."""
        config: dict[str, Any] = {
            "do_resize": True,
            "resample": {"nearest": 0, "bilinear": 2, "bicubic": 3}[self.resample],
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
        }
        square = {"height": self.image_size, "width": self.image_size}
        if self.resize is None:
            return {"image_processor_type": "ViTImageProcessor", "size": square, **config}
        if isinstance(self.resize, int):
            kind, size = "BitImageProcessor", {"shortest_edge": self.resize}
            config["do_convert_rgb"] = True
        else:
            kind, size = "DeiTImageProcessor", {"height": self.resize[0], "width": self.resize[1]}
        crop = {"do_center_crop": True, "crop_size": square}
        return {"image_processor_type": kind, "size": size, **crop, **config}

    def to_json(self, path: str | Path) -> None:
        """Write :meth:`to_config` as ``preprocessor_config.json``, readable by
        ``transformers.AutoImageProcessor`` as well as by :meth:`from_json`.

        Args:
            path: the JSON file to write.
        """
        Path(path).write_text(json.dumps(self.to_config(), indent=2) + "\n")

    def __repr__(self) -> str:
        extra = "" if self.resize is None else f", resize={self.resize}"
        if self.resample != "bilinear":
            extra += f", resample={self.resample!r}"
        return f"Preprocess(image_size={self.image_size}, mean={self.mean}, std={self.std}{extra})"

    # -- the pipeline ---------------------------------------------------------------------------

    def __call__(self, image: ImageInput) -> torch.Tensor:
        """Preprocess one image or a batch.

        Args:
            image: ``(3, H, W)`` or ``(B, 3, H, W)`` tensor (float in ``[0, 1]``, or uint8), a
                PIL image (any mode, converted to RGB) or a uint8 ``(H, W, 3)`` numpy array.

        Returns:
            ``(B, 3, image_size, image_size)`` float32, on the input tensor's device (CPU for PIL
            and numpy inputs); ``B = 1`` for a single image.

        Raises:
            TypeError: if ``image`` is none of the accepted types, or a tensor is neither
                floating point nor uint8, or an array is not uint8.
            ValueError: if the shape is not one of those above (the message gives the shape
                passed), or float values lie outside ``[0, 1]`` (e.g. an already normalised
                image).
        """
        batch = self._to_batch(image)
        side = (self.image_size, self.image_size)
        if self.resize is None:
            batch = _interpolate(batch, side, self.resample)
        else:
            height, width = batch.shape[-2:]
            size = (
                shortest_edge_size(int(height), int(width), self.resize)
                if isinstance(self.resize, int)
                else self.resize
            )
            batch = _centre_crop(_interpolate(batch, size, self.resample), side)
        if batch.dtype == torch.uint8:
            # Hugging Face folds the 1/255 rescale into mean and std; the same arithmetic gives
            # the same float32 values.
            return self._normalise(batch.float(), scale=255.0)
        return self._normalise(batch, scale=1.0)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Only the last step: ``(x - mean) / std`` of ``(B, 3, H, W)`` images in ``[0, 1]``.

        For images already at the model's input size, e.g. the benchmark's, which resizes whole
        images to ``image_size`` so that the maps cover the same pixels as the masks.

        Raises:
            TypeError: for a non-float tensor.
            ValueError: for a shape other than ``(B, 3, H, W)``.
        """
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError("images must be a float tensor (B, 3, H, W) in [0, 1]")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        return self._normalise(images, scale=1.0)

    def _normalise(self, batch: torch.Tensor, scale: float) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=batch.dtype, device=batch.device) * scale
        std = torch.tensor(self.std, dtype=batch.dtype, device=batch.device) * scale
        return (batch - mean[:, None, None]) / std[:, None, None]

    @staticmethod
    def _to_batch(image: ImageInput) -> torch.Tensor:
        """``(B, 3, H, W)``: uint8 for 8-bit inputs, float32 in ``[0, 1]`` for float ones."""
        if isinstance(image, Image.Image):
            image = _pil_to_uint8(image)
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise TypeError(
                    f"a numpy image must be uint8 (H, W, 3), got dtype {image.dtype}; for floats "
                    "in [0, 1] pass torch.from_numpy(image).permute(2, 0, 1)"
                )
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"a numpy image must be (H, W, 3), got shape {image.shape}")
            return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                "image must be a torch.Tensor, a PIL.Image.Image or a numpy.ndarray, "
                f"got {type(image).__name__}"
            )
        shape = tuple(image.shape)
        if not image.is_floating_point() and image.dtype != torch.uint8:
            raise TypeError(
                f"an image tensor must be float in [0, 1] or uint8, got {image.dtype}; "
                "use image.float() / 255 for 0-255 values"
            )
        batch = image[None] if image.dim() == 3 else image
        if batch.dim() != 4 or batch.shape[1] != 3:
            hint = ""
            if image.dim() in (3, 4) and image.shape[-1] == 3:
                hint = "; channels last? use image.permute(2, 0, 1) (or (0, 3, 1, 2) for a batch)"
            raise ValueError(
                f"an image tensor must be (3, H, W) or (B, 3, H, W), got shape {shape}{hint}"
            )
        if batch.dtype == torch.uint8:
            return batch
        low, high = batch.min().item(), batch.max().item()
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(
                f"an image tensor must have values in [0, 1], got [{low:.3g}, {high:.3g}]"
            )
        return batch.float()


def _square(size: dict[str, int], name: str) -> int:
    if size.get("height") != size.get("width"):
        raise ValueError(
            f"image processor {name} {size} is not square; attnexplain needs a square input"
        )
    return size["height"]


def _channels(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"image processor {name} must have 3 values, got {value!r}")
    return values[0], values[1], values[2]


def _resample(code: Any) -> Resample:
    """Interpolation mode from a PIL code, a PIL ``Resampling`` or an ``InterpolationMode``."""
    value = getattr(code, "value", code)
    if isinstance(value, str):  # torchvision InterpolationMode values
        value = {"nearest": 0, "nearest-exact": 0, "bilinear": 2, "bicubic": 3}.get(value, value)
    if value in _PIL_RESAMPLE:
        return _PIL_RESAMPLE[value]  # type: ignore[return-value]
    name = _APPROXIMATED.get(value, repr(value))
    warnings.warn(
        f"the image processor resamples with {name}, which torch cannot reproduce; bicubic is "
        "used instead (maps are computed on slightly different pixels)",
        stacklevel=3,
    )
    return "bicubic"
