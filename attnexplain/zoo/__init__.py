"""The embedded default model: a small ViT trained on :mod:`attnexplain.data.synthetic`.

Its weights ship inside the package, so examples, the CLI's no-argument run and the tests work
offline. How it was trained and how well it does: ``attnexplain/zoo/MODEL_CARD.md``; how to
retrain it: ``python -m attnexplain.zoo.train --out attnexplain/zoo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from attnexplain.zoo.preprocess import Preprocess

if TYPE_CHECKING:
    import torch
    from transformers import ViTForImageClassification

    from attnexplain.data.base import SegmentationSample

__all__ = ["ZOO_DIR", "Preprocess", "default_samples", "load_default"]

ZOO_DIR = Path(__file__).resolve().parent
WEIGHTS_FILE = "default.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"


def load_default(
    device: str | torch.device = "cpu",
) -> tuple[ViTForImageClassification, Preprocess]:
    """Load the embedded model and its preprocessing from the package files (no network).

    Args:
        device: where to put the model.

    Returns:
        ``(model, preprocess)``: the ``ViTForImageClassification`` in eval mode, whose logits are
        ``(B, 6)`` over :data:`attnexplain.data.synthetic.CLASS_NAMES`, and the
        :class:`Preprocess` it was trained with.

    Examples:
        >>> model, preprocess = load_default()
        >>> sample = default_samples(1)[0]
        >>> model(pixel_values=preprocess(sample.image)).logits.shape
        torch.Size([1, 6])
    """
    from safetensors.torch import load_file
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig.from_json_file(ZOO_DIR / CONFIG_FILE)
    model = ViTForImageClassification(config)
    model.load_state_dict(load_file(ZOO_DIR / WEIGHTS_FILE))
    model.to(device).eval()
    return model, Preprocess.from_json(ZOO_DIR / PREPROCESSOR_FILE)


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
    from attnexplain.data.synthetic import SyntheticShapes

    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    image_size = Preprocess.from_json(ZOO_DIR / PREPROCESSOR_FILE).image_size
    dataset = SyntheticShapes("test", size=n, image_size=image_size)
    return [dataset[i] for i in range(n)]
