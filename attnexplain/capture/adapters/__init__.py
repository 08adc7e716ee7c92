"""Model adapters: one per family, chosen by :func:`resolve_adapter`."""

from __future__ import annotations

from torch import nn

from attnexplain.capture.adapters.base import (
    SUPPORTED_FAMILIES,
    ModelAdapter,
    PoolingHead,
    find_attention_modules,
    find_blocks,
    find_patch_embedding,
    is_attention_module,
)
from attnexplain.capture.adapters.custom import CustomAdapter
from attnexplain.capture.adapters.hf import HFAdapter
from attnexplain.capture.adapters.hf_clip import HFImageTextAdapter, HFSiglipVisionAdapter
from attnexplain.capture.adapters.image_text import ImageTextAdapter, cosine_logits
from attnexplain.capture.adapters.open_clip import OpenCLIPAdapter, OpenCLIPVisionAdapter
from attnexplain.capture.adapters.timm import TimmAdapter
from attnexplain.capture.adapters.torchvision import TorchvisionAdapter

# Most specific first: the image–text and SigLIP adapters take models HFAdapter would refuse.
_FAMILIES: tuple[type[ModelAdapter], ...] = (
    HFImageTextAdapter,
    HFSiglipVisionAdapter,
    HFAdapter,
    TimmAdapter,
    TorchvisionAdapter,
    OpenCLIPAdapter,
    OpenCLIPVisionAdapter,
)


def resolve_adapter(model: nn.Module | ModelAdapter) -> ModelAdapter:
    """The adapter for ``model``: its family's, else :class:`CustomAdapter`.

    Args:
        model: a model, or an adapter (returned as is).

    Returns:
        The adapter.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        UnsupportedModelError: if the model has no self-attention or no patch stem.
    """
    if isinstance(model, ModelAdapter):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for family in _FAMILIES:
        if family.matches(model):
            return family(model)
    return CustomAdapter(model)


__all__ = [
    "SUPPORTED_FAMILIES",
    "CustomAdapter",
    "HFAdapter",
    "HFImageTextAdapter",
    "HFSiglipVisionAdapter",
    "ImageTextAdapter",
    "ModelAdapter",
    "OpenCLIPAdapter",
    "OpenCLIPVisionAdapter",
    "PoolingHead",
    "TimmAdapter",
    "TorchvisionAdapter",
    "cosine_logits",
    "find_attention_modules",
    "find_blocks",
    "find_patch_embedding",
    "is_attention_module",
    "resolve_adapter",
]
