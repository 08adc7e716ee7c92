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
    from transformers import PreTrainedModel

    from attnexplain.data.base import SegmentationSample

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
        from transformers.utils import logging

        # transformers checks the token ids of its *default* text config (CLIP's, against a
        # 32000-token vocabulary) and logs two lines before reading ours (ids 2 and 3 of 26):
        # noise, like the loading bar, that would break the CLI's one-line errors.
        verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
        logging.set_verbosity_error()
        logging.disable_progress_bar()
        try:
            model = SiglipModel.from_pretrained(CLIP_DIR).to(device).eval()
        finally:
            logging.set_verbosity(verbosity)
            if bar:
                logging.enable_progress_bar()
        return model, Preprocess.from_json(CLIP_DIR / PREPROCESSOR_FILE)
    from safetensors.torch import load_file
    from transformers import ViTConfig, ViTForImageClassification

    weights, config_file, preprocessor = model_files(name)
    config = ViTConfig.from_json_file(ZOO_DIR / config_file)
    model = ViTForImageClassification(config)
    model.load_state_dict(load_file(ZOO_DIR / weights))
    model.to(device).eval()
    return model, Preprocess.from_json(ZOO_DIR / preprocessor)


def _is_device(name: object) -> bool:
    import torch

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
    from attnexplain.data.synthetic import SyntheticShapes

    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    image_size = Preprocess.from_json(ZOO_DIR / PREPROCESSOR_FILE).image_size
    dataset = SyntheticShapes("test", size=n, image_size=image_size)
    return [dataset[i] for i in range(n)]
