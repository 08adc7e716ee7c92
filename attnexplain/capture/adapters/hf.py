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
from collections.abc import Sequence
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


#: Parameter names of a class token in Hugging Face vision embeddings (ViT/DeiT/DINOv2, CLIP).
_CLASS_TOKEN_NAMES = ("cls_token", "class_embedding")


def has_class_token(module: nn.Module) -> bool:
    """Whether ``module`` holds a learned class token (by parameter name); SigLIP has none."""
    names = (name.rsplit(".", 1)[-1] for name, _ in module.named_parameters())
    return any(name in _CLASS_TOKEN_NAMES for name in names)


#: Children that make a model multi-modal: a text or language tower beside the vision one.
_OTHER_TOWERS = ("text_model", "text_encoder", "language_model", "qformer")


class HFAdapter(ModelAdapter):
    """Adapter for ``transformers.PreTrainedModel`` vision encoders and classifiers.

    Vision-only models configured like image–text ones (a ``vision_config``, e.g.
    ``CLIPForImageClassification``) are vision encoders like any other; models with a text
    or language tower are refused unless an image–text adapter takes them.
    """

    family = "huggingface"

    def __init__(self, model: nn.Module) -> None:
        config = getattr(model, "config", None)
        towers = [
            name for name in _OTHER_TOWERS if isinstance(getattr(model, name, None), nn.Module)
        ]
        if towers:
            raise UnsupportedModelError(
                f"{type(model).__name__} is a multi-modal model (it has a {towers[0]}) that "
                "attnexplain does not support (image–text models it does: CLIPModel, "
                "SiglipModel, OpenCLIP); pass its vision tower instead (e.g. model.vision_model)"
            )
        super().__init__(model)
        self._accepts_interpolate = (
            "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
        )
        vision_config = getattr(config, "vision_config", None)
        self._trained_size = _as_pair(getattr(vision_config or config, "image_size", None))
        self._cls_index = 0 if has_class_token(model) else None

    def cls_index(self) -> int | None:
        return self._cls_index

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            from transformers import PreTrainedModel
        except ImportError:
            return False
        return isinstance(model, PreTrainedModel)

    def size_kwargs(self, inputs: torch.Tensor) -> dict[str, Any]:
        """Keyword arguments that let the model run at ``inputs``' size."""
        if self._accepts_interpolate and tuple(inputs.shape[-2:]) != self._trained_size:
            # The model's own switch for other input sizes: bicubic position-embedding resampling.
            return {"interpolate_pos_encoding": True}
        return {}

    def forward(self, inputs: torch.Tensor) -> Any:
        return self.model(pixel_values=inputs, **self.size_kwargs(inputs))

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

    def label_names(self) -> Sequence[str] | None:
        id2label = getattr(getattr(self.model, "config", None), "id2label", None)
        if not id2label:
            return None
        return [id2label[index] for index in sorted(id2label)]

    def embedding(self, output: Any) -> torch.Tensor:
        """``image_embeds`` (CLIP projections), else ``pooler_output``, else the CLS token of
        ``last_hidden_state`` (after the model's final norm where it applies one)."""
        for name in ("image_embeds", "pooler_output"):
            value = getattr(output, name, None)
            if value is not None:
                return value
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is not None and self.cls_index() is not None:
            return hidden[:, self.cls_index()]
        raise UnsupportedModelError(
            f"{type(self.model).__name__}'s output has no pooled embedding (image_embeds, "
            "pooler_output or a CLS token in last_hidden_state); embedding and reference-image "
            "targets need an encoder, e.g. the classifier's backbone (model.vit, model.dinov2)"
        )
