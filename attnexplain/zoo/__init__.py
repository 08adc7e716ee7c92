"""The embedded default model: a small ViT trained on :mod:`attnexplain.data.synthetic`.

Its weights ship inside the package, so examples, the CLI's no-argument run and the tests work
offline. How it was trained and how well it does: ``attnexplain/zoo/MODEL_CARD.md``; how to
retrain it: ``python -m attnexplain.zoo.train --out attnexplain/zoo``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from transformers import PreTrainedModel, ViTConfig, ViTForImageClassification

from attnexplain.data.base import SegmentationSample
from attnexplain.data.synthetic import SyntheticShapes

__all__ = [
    "CLIP_DIR",
    "EMBEDDED_MODELS",
    "ZOO_DIR",
    "Preprocess",
    "default_samples",
    "load_default",
]

ZOO_DIR = Path(__file__).resolve().parent
WEIGHTS_FILE = "default.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"

EMBEDDED_MODELS: dict[str, str] = {
    "default": "six-class softmax ViT trained on one-object images (MODEL_CARD.md)",
    "multilabel": "the same ViT with one sigmoid per class, trained on multi-object scenes "
    "(MODEL_CARD_multilabel.md)",
    "clip": "a small SigLIP-architecture image-text model trained on the multi-object scenes "
    "(clip/MODEL_CARD.md)",
}
"""The models shipped in the package, by name, for :func:`load_default`."""


def model_files(name: str) -> tuple[str, str, str]:
    """File names ``(weights, config, preprocessor config)`` of embedded model ``name``.

    ``"default"`` keeps the Hugging Face names (``config.json``, ...); another model ``NAME``
    uses ``NAME.safetensors``, ``NAME.config.json`` and ``NAME.preprocessor_config.json`` in the
    same folder.
    """
    if name == "default":
        return WEIGHTS_FILE, CONFIG_FILE, PREPROCESSOR_FILE
    return f"{name}.safetensors", f"{name}.config.json", f"{name}.preprocessor_config.json"


# Inputs a little outside [0, 1] come from resampling or rounding; far outside means the image was
# already normalised or is on a 0-255 scale.
_RANGE_TOLERANCE = 1e-3


class Preprocess:
    """Turn images into the model's normalised input batch.

    Accepts a float tensor in ``[0, 1]`` shaped ``(3, H, W)`` or ``(B, 3, H, W)``, a PIL image, or
    a uint8 ``(H, W, 3)`` numpy array; resizes to ``image_size`` (bilinear with antialiasing, only
    if the size differs) and normalises each channel with ``(x - mean) / std``. All three input
    kinds of the same pixels give the same output.

    Args:
        image_size: side of the square input the model expects.
        mean: per-channel mean (3 values) of the training images in ``[0, 1]``.
        std: per-channel standard deviation (3 values).

    Raises:
        ValueError: if ``mean`` or ``std`` does not have 3 values or ``std`` is not positive.

    Examples:
        >>> preprocess = Preprocess(96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        >>> preprocess(torch.rand(3, 128, 128)).shape
        torch.Size([1, 3, 96, 96])
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(
                f"mean and std must have 3 values (RGB), got {len(mean)} and {len(std)}"
            )
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    @classmethod
    def from_json(cls, path: str | Path) -> Preprocess:
        """Read a Hugging Face ``preprocessor_config.json`` (its size, image_mean and image_std).

        Args:
            path: the JSON file.

        Returns:
            The matching :class:`Preprocess`.
        """
        config = json.loads(Path(path).read_text())
        return cls(config["size"]["height"], config["image_mean"], config["image_std"])

    def to_json(self, path: str | Path) -> None:
        """Write the settings as a Hugging Face ``ViTImageProcessor`` config, usable by
        ``transformers.AutoImageProcessor`` as well as by :meth:`from_json`.

        Args:
            path: the JSON file to write.
        """
        config = {
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True,
            "size": {"height": self.image_size, "width": self.image_size},
            "resample": 2,  # PIL bilinear
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
        }
        Path(path).write_text(json.dumps(config, indent=2) + "\n")

    def __repr__(self) -> str:
        return f"Preprocess(image_size={self.image_size}, mean={self.mean}, std={self.std})"

    def __call__(self, image: torch.Tensor | Image.Image | np.ndarray) -> torch.Tensor:
        """Preprocess one image or a batch.

        Args:
            image: ``(3, H, W)`` or ``(B, 3, H, W)`` float tensor in ``[0, 1]``, a PIL image (any
                mode, converted to RGB) or a uint8 ``(H, W, 3)`` numpy array.

        Returns:
            ``(B, 3, image_size, image_size)`` float32, on the input tensor's device (CPU for PIL
            and numpy inputs); ``B = 1`` for a single image.

        Raises:
            TypeError: if ``image`` is none of the accepted types, or a tensor is not floating
                point, or an array is not uint8.
            ValueError: if the shape is not one of those above, or tensor values lie outside
                ``[0, 1]`` (e.g. an already normalised image).
        """
        batch = self._to_batch(image)
        if batch.shape[-2:] != (self.image_size, self.image_size):
            batch = F.interpolate(
                batch,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        mean = torch.tensor(self.mean, dtype=batch.dtype, device=batch.device)
        std = torch.tensor(self.std, dtype=batch.dtype, device=batch.device)
        return (batch - mean[:, None, None]) / std[:, None, None]

    @staticmethod
    def _to_batch(image: torch.Tensor | Image.Image | np.ndarray) -> torch.Tensor:
        """``(B, 3, H, W)`` float32 in ``[0, 1]`` from any accepted input."""
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise TypeError(f"a numpy image must be uint8 (H, W, 3), got dtype {image.dtype}")
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"a numpy image must be (H, W, 3), got shape {image.shape}")
            return torch.from_numpy(image.transpose(2, 0, 1).copy()).float().div(255.0)[None]
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                "image must be a torch.Tensor, a PIL.Image.Image or a numpy.ndarray, "
                f"got {type(image).__name__}"
            )
        if not image.is_floating_point():
            raise TypeError(f"an image tensor must be floating point in [0, 1], got {image.dtype}")
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(
                f"an image tensor must be (3, H, W) or (B, 3, H, W), got shape {tuple(image.shape)}"
            )
        low, high = image.min().item(), image.max().item()
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(
                f"an image tensor must have values in [0, 1], got [{low:.3g}, {high:.3g}]"
            )
        return image.float()


#: The embedded image–text model's Hugging Face folder (``load_default("clip")``).
CLIP_DIR = ZOO_DIR / "clip"


def load_default(
    name: str = "default",
    device: str | torch.device = "cpu",
) -> tuple[PreTrainedModel, Preprocess]:
    """Load an embedded model and its preprocessing from the package files (no network).

    Args:
        name: ``"default"`` (softmax over the six classes, trained on one-object images),
            ``"multilabel"`` (one sigmoid per class, trained on the multi-object scenes of
            :mod:`attnexplain.data.scenes`) or ``"clip"`` (a small SigLIP-architecture
            image–text model trained on those scenes, which answers queries such as "the red
            star"; its tokenizer is saved with it, so text prompts are plain strings); see
            :data:`EMBEDDED_MODELS` and each model's card.
        device: where to put the model.

    Returns:
        ``(model, preprocess)``: for ``"default"`` and ``"multilabel"`` the
        ``ViTForImageClassification`` in eval mode, whose logits are ``(B, 6)`` over
        :data:`attnexplain.data.synthetic.CLASS_NAMES`; for ``"clip"`` the ``SiglipModel`` in
        eval mode; and the :class:`Preprocess` the model was trained with.

    Raises:
        ValueError: if ``name`` is not an embedded model.

    Examples:
        >>> model, preprocess = load_default()
        >>> sample = default_samples(1)[0]
        >>> model(pixel_values=preprocess(sample.image)).logits.shape
        torch.Size([1, 6])
    """
    if name not in EMBEDDED_MODELS:
        hint = " (the device is the second argument: device=...)" if _is_device(name) else ""
        raise ValueError(
            f"unknown embedded model {name!r}{hint}; choose from {', '.join(EMBEDDED_MODELS)}"
        )
    if name == "clip":
        from transformers import SiglipModel

        model = SiglipModel.from_pretrained(CLIP_DIR).to(device).eval()
        return model, Preprocess.from_json(CLIP_DIR / PREPROCESSOR_FILE)
    weights, config_file, preprocessor = model_files(name)
    config = ViTConfig.from_json_file(ZOO_DIR / config_file)
    model = ViTForImageClassification(config)
    model.load_state_dict(load_file(ZOO_DIR / weights))
    model.to(device).eval()
    return model, Preprocess.from_json(ZOO_DIR / preprocessor)


def _is_device(name: object) -> bool:
    try:
        torch.device(name)  # type: ignore[arg-type]
    except (RuntimeError, TypeError):
        return False
    return True


def default_samples(n: int = 4) -> list[SegmentationSample]:
    """The first ``n`` samples of the synthetic test split, at the default model's input size.

    Args:
        n: how many samples.

    Returns:
        ``n`` :class:`~attnexplain.data.base.SegmentationSample` (images ``(3, H, W)`` in
        ``[0, 1]``, not normalised), ids ``"synthetic-test-000000"`` onwards.

    Raises:
        ValueError: if ``n`` is not positive.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    image_size = Preprocess.from_json(ZOO_DIR / PREPROCESSOR_FILE).image_size
    dataset = SyntheticShapes("test", size=n, image_size=image_size)
    return [dataset[i] for i in range(n)]
