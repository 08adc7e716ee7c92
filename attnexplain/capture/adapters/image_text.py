"""The shape every image–text adapter shares: a vision tower explained, a text tower scoring.

An image–text model (CLIP, SigLIP) is explained through its vision tower: the attention
modules, patch stem, CLS token, pooling head, input-size rule and temporary switches are those
of the tower's own adapter. The model's output (:meth:`ImageTextAdapter.forward`) is the image
embedding; text prompts are embedded by the text tower without gradients when a target asks,
and scored with the model's own logit (:func:`cosine_logits`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import ExitStack
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnexplain.capture.adapters.base import ModelAdapter, PoolingHead
from attnexplain.capture.errors import UnsupportedModelError


def cosine_logits(
    image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, logit_bias: Any = None
) -> torch.Tensor:
    """CLIP's image–text logits: ``exp(logit_scale) · cos(image, text)`` (+ SigLIP's bias).

    Args:
        image: ``(B, D)`` image embeddings.
        text: ``(T, D)`` text embeddings.
        logit_scale: the model's log temperature (a scalar or one-element tensor).
        logit_bias: SigLIP's bias (its sigmoid logit), or ``None``.

    Returns:
        ``(B, T)`` logits.
    """
    text = text.to(device=image.device, dtype=image.dtype)
    logits = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T * logit_scale.exp()
    return logits if logit_bias is None else logits + logit_bias


class ImageTextAdapter(ModelAdapter, ABC):
    """An image–text model, explained through the adapter of its vision tower.

    Subclasses give the tower's adapter, run the image side (:meth:`forward`), embed text
    (:meth:`encode_text`) and name the model's logit scale and bias.

    Args:
        model: the whole image–text model.
        vision: the adapter of its vision tower.
        tokenizer: the text tower's tokenizer, ``None`` for the one the subclass finds.
    """

    def __init__(self, model: nn.Module, vision: ModelAdapter, tokenizer: Any = None) -> None:
        self.vision = vision
        self.tokenizer = tokenizer
        super().__init__(model)

    def _find_attention_modules(self) -> list[nn.Module]:
        return self.vision.attention_modules

    def _find_patch_embedding(self) -> nn.Conv2d | None:
        return self.vision.patch_embedding

    def cls_index(self) -> int | None:
        return self.vision.cls_index()

    @property
    def pooling_head(self) -> PoolingHead | None:
        return self.vision.pooling_head

    def check_input_size(self, height: int, width: int) -> None:
        self.vision.check_input_size(height, width)

    def enter(self, stack: ExitStack, inputs: torch.Tensor) -> None:
        self.vision.enter(stack, inputs)

    def logits(self, output: Any) -> torch.Tensor:
        raise UnsupportedModelError(
            f"{type(self.model).__name__} has no class logits: explain it with a text prompt "
            "(target='a photo of a dog', or Prompt([...]) for an ensemble) or an Embedding / "
            "ReferenceImage target"
        )

    @property
    def has_text_tower(self) -> bool:
        return True

    @abstractmethod
    def logit_scale_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The model's log temperature and its logit bias (``None`` without one)."""

    def image_text_logits(self, output: Any, text_embeddings: torch.Tensor) -> torch.Tensor:
        scale, bias = self.logit_scale_and_bias()
        return cosine_logits(self.embedding(output), text_embeddings, scale, bias)


def check_context_length(model: nn.Module, prompts: Any, lengths: Any, limit: int) -> None:
    """Refuse a prompt longer than the text tower's context (never truncated silently).

    Args:
        model: the model (named in the message).
        prompts: the prompts.
        lengths: their token counts, special tokens included.
        limit: the text tower's context length.

    Raises:
        ValueError: naming the first prompt over the limit.
    """
    for prompt, length in zip(prompts, lengths):
        if length > limit:
            raise ValueError(
                f"prompt {prompt!r} is {length} tokens, over {type(model).__name__}'s text "
                f"context of {limit}; shorten it (the text model cannot read more, and "
                "attnexplain does not truncate prompts silently)"
            )
