"""Hugging Face transformers: ViT, DeiT, DINO, DINOv2 (+ registers), CLIP vision and kin.

Default-loaded models use SDPA (``output_attentions=True`` then returns an empty tuple in
transformers 5); the capture replaces that kernel call, and eager-loaded models return their
probabilities from the attention module, so both give the same maps.

Each class applies its final norm, pooling and head inside its own ``forward`` (DeiT averages two
heads, DINOv2 concatenates the CLS token with the patch mean, CLIP normalises the pooled CLS
token), so :meth:`HFAdapter.readout` runs that ``forward`` with every transformer block answering
the given tokens instead of computing, on a blank image of the trained size whose embedding is
computed and discarded (a patch projection: a small fraction of one block).
"""

from __future__ import annotations

import inspect
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from attnexplain.capture.adapters.base import ModelAdapter
from attnexplain.capture.errors import UnsupportedModelError


def _as_pair(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def _answering(stack: ExitStack, module: nn.Module, value: Any) -> None:
    """Until ``stack`` closes, calling ``module`` returns ``value`` without running it."""
    previous = module.__dict__.get("forward")  # e.g. an accelerate hook's own forward
    module.forward = lambda *args, **kwargs: value  # an instance attribute shadows the class's
    if previous is None:
        stack.callback(module.__dict__.pop, "forward", None)
    else:
        stack.callback(setattr, module, "forward", previous)


class HFAdapter(ModelAdapter):
    """Adapter for ``transformers.PreTrainedModel`` vision encoders and classifiers."""

    family = "huggingface"

    def __init__(self, model: nn.Module) -> None:
        config = getattr(model, "config", None)
        # A config with a vision_config belongs to a multi-modal model, unless the model holds
        # only the vision tower (CLIPForImageClassification: vision_model + classifier).
        has_text_tower = any("text" in name for name, _ in model.named_children())
        if getattr(config, "vision_config", None) is not None and has_text_tower:
            raise UnsupportedModelError(
                f"{type(model).__name__} is a multi-modal model; pass its vision tower instead "
                "(e.g. model.vision_model or CLIPVisionModel.from_pretrained(...))"
            )
        super().__init__(model)
        self._accepts_interpolate = (
            "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
        )
        self._trained_size = _as_pair(getattr(config, "image_size", None))

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            from transformers import PreTrainedModel
        except ImportError:
            return False
        return isinstance(model, PreTrainedModel)

    def forward(self, inputs: torch.Tensor) -> Any:
        kwargs: dict[str, Any] = {}
        if self._accepts_interpolate and tuple(inputs.shape[-2:]) != self._trained_size:
            # The model's own switch for other input sizes: bicubic position-embedding resampling.
            kwargs["interpolate_pos_encoding"] = True
        return self.model(pixel_values=inputs, **kwargs)

    def readout(self, tokens: torch.Tensor) -> Any:
        size = self._trained_size or self.patch_size
        weight = self.patch_embedding.weight
        blank = torch.zeros(tokens.shape[0], self.in_channels, *size, dtype=weight.dtype,
                            device=tokens.device)  # fmt: skip
        with ExitStack() as stack:
            for block in self.blocks:
                _answering(stack, block, tokens)
            return self.forward(blank)

    def logits(self, output: Any) -> torch.Tensor:
        logits = getattr(output, "logits", None)
        if logits is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} has no classification head (its output has no "
                "logits); gradient methods and targets need e.g. ViTForImageClassification"
            )
        return logits
