"""OpenCLIP (``open_clip_torch``): its ``VisionTransformer``, and whole CLIP models.

- :class:`OpenCLIPVisionAdapter`: ``open_clip.transformer.VisionTransformer`` (a model's
  ``.visual``). Its blocks are ``ResidualAttentionBlock`` (``nn.MultiheadAttention``, served by
  the capture's kernel like torchvision's) or ``CustomResidualAttentionBlock`` (OpenCLIP's own
  ``Attention``, which calls ``F.scaled_dot_product_attention``; its ``use_fsdpa`` switch is
  turned on for the call). A class token is always prepended. The pooled output is the CLS token
  (``pool_type="tok"``), the patch mean (``"avg"``), or the output of an attentional pooler
  (``attentional_pool=True``, CoCa), whose learned queries are the model's
  :attr:`~OpenCLIPVisionAdapter.pooling_head`. The position embedding has a fixed size, so the
  model runs at its ``image_size`` only (square or not).
- :class:`OpenCLIPAdapter`: ``open_clip.CLIP`` / ``CustomTextCLIP`` / ``CoCa`` (anything with
  ``visual``, ``encode_image``, ``encode_text`` and ``logit_scale``). The output is
  ``encode_image(x)`` (the unnormalised image embedding); prompts are tokenised with the model's
  tokenizer (OpenAI's BPE ``SimpleTokenizer`` by default) and embedded by ``encode_text``
  without gradients; the logit is ``exp(logit_scale) · cos`` (+ ``logit_bias`` for SigLIP-style
  models). A ``visual`` that wraps a timm trunk (``TimmModel``, e.g. OpenCLIP's SigLIP models)
  is explained through :class:`~attnexplain.capture.adapters.timm.TimmAdapter` on the trunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from attnexplain.capture.adapters.base import ModelAdapter, PoolingHead, find_attention_modules
from attnexplain.capture.adapters.image_text import ImageTextAdapter, check_context_length
from attnexplain.capture.adapters.timm import TimmAdapter, _set_temporarily
from attnexplain.capture.errors import UnsupportedModelError

#: Vocabulary size of OpenAI's CLIP BPE (``open_clip.SimpleTokenizer``).
_SIMPLE_TOKENIZER_VOCAB = 49408


def _from_open_clip(model: nn.Module) -> bool:
    return type(model).__module__.startswith("open_clip.")


class OpenCLIPVisionAdapter(ModelAdapter):
    """Adapter for ``open_clip.transformer.VisionTransformer``.

    Raises:
        UnsupportedModelError: for scaled-cosine attention (it computes its softmax by hand and
            returns only its output) or a cascaded attentional pooler (it pools the pooler's own
            tokens, not the encoder's).
    """

    family = "open_clip"

    def __init__(self, model: nn.Module) -> None:
        if getattr(model, "attn_pool_type", "") == "cascade":
            raise UnsupportedModelError(
                "OpenCLIP's attentional_pool='cascade' pools the pooler's own tokens; only "
                "poolers that read the encoder's tokens can be explained"
            )
        super().__init__(model)
        for module in self.attention_modules:
            if getattr(module, "logit_scale", None) is not None:
                raise UnsupportedModelError(
                    f"{type(module).__name__} uses scaled cosine attention, which computes its "
                    "softmax by hand and returns only its output; build the model with "
                    "scaled_cosine_attn=False"
                )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return (
            _from_open_clip(model)
            and isinstance(getattr(model, "class_embedding", None), nn.Parameter)
            and isinstance(getattr(model, "conv1", None), nn.Conv2d)
            and hasattr(model, "transformer")
        )

    def _poolers(self) -> list[nn.Module]:
        return [
            pool
            for pool in (
                getattr(self.model, "attn_pool", None),
                getattr(self.model, "attn_pool_contrastive", None),
            )
            if pool is not None
        ]

    def _find_attention_modules(self) -> list[nn.Module]:
        inside = {id(m) for pool in self._poolers() for m in pool.modules()}
        return [m for m in find_attention_modules(self.model) if id(m) not in inside]

    @property
    def pooling_head(self) -> PoolingHead | None:
        contrastive = getattr(self.model, "attn_pool_contrastive", None)
        if contrastive is not None:  # 'parallel': the contrastive pooler's single query
            return PoolingHead(contrastive.attn)
        pool = getattr(self.model, "attn_pool", None)
        if pool is None:
            return None
        # After the pooler, pool_type 'tok' takes its first query's output, 'avg' the mean of
        # the others (open_clip VisionTransformer._global_pool), 'none' all of them.
        queries = {"tok": slice(0, 1), "avg": slice(1, None)}.get(self.model.pool_type, slice(None))
        return PoolingHead(pool.attn, queries)

    def check_input_size(self, height: int, width: int) -> None:
        super().check_input_size(height, width)
        size = tuple(self.model.image_size)
        if (height, width) != size:
            raise ValueError(
                f"OpenCLIP's VisionTransformer runs only at its image_size {size[0]}x{size[1]} "
                f"(its position embedding has a fixed size), got {height}x{width}; resize the "
                f"input to {size[0]}x{size[1]}"
            )

    def enter(self, stack: ExitStack, inputs: torch.Tensor) -> None:
        for module in self.attention_modules:
            if hasattr(module, "use_fsdpa"):
                _set_temporarily(stack, module, "use_fsdpa", True)

    def readout(self, tokens: torch.Tensor) -> Any:
        # The model's own pooling (norm, CLS / mean / attentional pooler) and projection.
        pooled, pooled_tokens = self.model._pool(tokens)
        if self.model.proj is not None:
            pooled = pooled @ self.model.proj
        return (pooled, pooled_tokens) if self.model.output_tokens else pooled


class OpenCLIPAdapter(ImageTextAdapter):
    """Adapter for OpenCLIP image–text models (``open_clip.CLIP`` and kin).

    Args:
        model: the model.
        tokenizer: an OpenCLIP tokenizer (``open_clip.get_tokenizer(name)``); ``None`` uses
            OpenAI's BPE ``SimpleTokenizer`` at the model's context length, which is the
            tokenizer of every model whose vocabulary has its 49,408 entries.

    Raises:
        UnsupportedModelError: when the visual tower is neither an OpenCLIP ``VisionTransformer``
            nor a timm ViT trunk.
    """

    family = "open_clip"

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        visual = model.visual
        trunk = getattr(visual, "trunk", None)
        if OpenCLIPVisionAdapter.matches(visual):
            vision: ModelAdapter = OpenCLIPVisionAdapter(visual)
        elif trunk is not None and TimmAdapter.matches(trunk):
            vision = TimmAdapter(trunk)
        else:
            raise UnsupportedModelError(
                f"the visual tower of this OpenCLIP model ({type(visual).__name__}) is not a "
                "vision transformer attnexplain can read (OpenCLIP VisionTransformer or a timm "
                "ViT trunk); ResNet towers have no attention to explain"
            )
        super().__init__(model, vision, tokenizer)

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return (
            _from_open_clip(model)
            and isinstance(getattr(model, "visual", None), nn.Module)
            and callable(getattr(model, "encode_text", None))
            and isinstance(getattr(model, "logit_scale", None), nn.Parameter)
        )

    def forward(self, inputs: torch.Tensor) -> Any:
        return self.model.encode_image(inputs, normalize=False)

    def readout(self, tokens: torch.Tensor) -> Any:
        visual = self.model.visual
        if isinstance(self.vision, TimmAdapter):  # open_clip TimmModel: trunk, then its head
            return visual.head(self.vision.readout(tokens))
        return self.vision.readout(tokens)

    def logit_scale_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.logit_scale, getattr(self.model, "logit_bias", None)

    def encode_text(self, prompts: Sequence[str], tokenizer: Any = None) -> torch.Tensor:
        tokenizer = tokenizer if tokenizer is not None else self._default_tokenizer()
        lengths = _token_counts(tokenizer, prompts)
        if lengths is not None:
            check_context_length(self.model, prompts, lengths, int(self.model.context_length))
        device = self.model.logit_scale.device
        tokens = tokenizer(list(prompts)).to(device)
        with torch.no_grad():
            return self.model.encode_text(tokens, normalize=False)

    def _default_tokenizer(self) -> Any:
        if self.tokenizer is None:
            vocabulary = getattr(self.model, "vocab_size", None)
            if vocabulary != _SIMPLE_TOKENIZER_VOCAB:
                raise ValueError(
                    f"this OpenCLIP model's vocabulary has {vocabulary} entries, not the "
                    f"{_SIMPLE_TOKENIZER_VOCAB} of OpenAI's BPE tokenizer: pass "
                    "its tokenizer, e.g. Prompt('a dog', tokenizer=open_clip.get_tokenizer(NAME))"
                )
            from open_clip.tokenizer import SimpleTokenizer

            self.tokenizer = SimpleTokenizer(context_length=int(self.model.context_length))
        return self.tokenizer


def _token_counts(tokenizer: Any, prompts: Sequence[str]) -> list[int] | None:
    """Tokens per prompt with the start/end tokens, for the tokenizers that can count them:
    OpenCLIP's ``SimpleTokenizer`` and its wrapper of a Hugging Face tokenizer."""
    from open_clip.tokenizer import SimpleTokenizer

    if isinstance(tokenizer, SimpleTokenizer):
        return [len(tokenizer.encode(prompt)) + 2 for prompt in prompts]
    wrapped = getattr(tokenizer, "tokenizer", None)
    if callable(wrapped):
        return [len(ids) for ids in wrapped(list(prompts))["input_ids"]]
    return None
