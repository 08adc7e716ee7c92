"""Load a model by name: the embedded default, a Hugging Face id or folder, or a timm name.

Only the loading code lives here; it never downloads at import time. Offline (no network or
``HF_HUB_OFFLINE=1``) an uncached hub id fails with a message saying how to use a local copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from attnexplain.zoo import EMBEDDED_MODELS, Preprocess, load_default

DEFAULT_MODEL = "default"
TIMM_PREFIXES = ("timm:", "timm/")


class ModelLoadError(RuntimeError):
    """A model spec could not be loaded (unknown, not cached offline, unreadable)."""


def _input_side(size: Any) -> int:
    """The square side from an image processor's ``size`` (int, dict or transformers' SizeDict)."""
    if isinstance(size, int):
        return size
    for key in ("height", "shortest_edge"):
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        if value:
            return int(value)
    raise ModelLoadError(f"cannot read an input size from the image processor's size {size!r}")


def _load_huggingface(spec: str, device: str) -> tuple[nn.Module, Preprocess]:
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageClassification,
    )

    try:
        config = AutoConfig.from_pretrained(spec)
        has_head = any(a.endswith("ForImageClassification") for a in config.architectures or [])
        loader = AutoModelForImageClassification if has_head else AutoModel
        model = loader.from_pretrained(spec, use_safetensors=None)
        processor = AutoImageProcessor.from_pretrained(spec)
    except OSError as error:
        raise ModelLoadError(
            f"could not load Hugging Face model {spec!r}: it is neither a local folder nor in the "
            "local cache, and the hub cannot be reached. Download it where there is network "
            "(`huggingface-cli download ID --local-dir DIR`) and pass --model DIR."
        ) from error
    preprocess = Preprocess(_input_side(processor.size), processor.image_mean, processor.image_std)
    return model.to(device).eval(), preprocess


def _load_timm(name: str, device: str) -> tuple[nn.Module, Preprocess]:
    try:
        import timm
    except ImportError as error:
        raise ModelLoadError(
            "timm models need the extra: pip install 'attnexplain[timm]'"
        ) from error
    try:
        model = timm.create_model(name, pretrained=True)
    except (RuntimeError, OSError) as error:
        raise ModelLoadError(
            f"could not load timm model {name!r} (unknown name, or weights not cached and the "
            "hub unreachable); cache the weights where there is network, or build the model "
            "yourself and pass it to the Python API"
        ) from error
    data = timm.data.resolve_data_config({}, model=model)
    preprocess = Preprocess(int(data["input_size"][-1]), data["mean"], data["std"])
    return model.to(device).eval(), preprocess


def load_model(spec: str = DEFAULT_MODEL, device: str = "cpu") -> tuple[nn.Module, Preprocess]:
    """Load a model and its preprocessing.

    Args:
        spec: ``"default"``, ``"multilabel"`` or ``"clip"`` (the embedded models, see
            :data:`~attnexplain.zoo.EMBEDDED_MODELS`), ``"timm:NAME"`` / ``"timm/NAME"`` (timm,
            pretrained weights from its cache), a local folder with a Hugging Face
            ``config.json``, or a Hugging Face hub id.
        device: where to put the model.

    Returns:
        The model in eval mode and a :class:`~attnexplain.zoo.Preprocess`.

    Raises:
        ModelLoadError: if the model cannot be loaded (with what to do about it).
    """
    if spec in EMBEDDED_MODELS:
        return load_default(spec, device=device)
    if spec.startswith(TIMM_PREFIXES):
        return _load_timm(spec.split(":", 1)[-1] if spec.startswith("timm:") else spec, device)
    path = Path(spec)
    if path.exists() and not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{spec} exists but has no config.json: not a Hugging Face model folder"
        )
    return _load_huggingface(spec, device)
