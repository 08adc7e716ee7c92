"""Hugging Face CLIP and SigLIP: vision towers with a pooling head, and whole image–text models.

- :class:`HFSiglipVisionAdapter`: ``SiglipVisionModel`` (no CLS token; its pooled output is read
  by a multi-head attention pooling head, whose learned query's attention is the model's
  "CLS row", see :class:`~attnexplain.capture.adapters.base.PoolingHead`) and
  ``SiglipForImageClassification`` (a linear classifier on the *mean* of the tokens: its pooling
  head runs but feeds nothing, so it has no row to read).
- :class:`HFImageTextAdapter`: ``CLIPModel`` and ``SiglipModel`` as whole models. The capture
  runs the vision tower only (``get_image_features``: the output is the image embedding); text
  prompts are embedded by the text tower (``get_text_features``) without gradients when a target
  asks, and scored with the model's own logit, ``exp(logit_scale) · cos`` (+ ``logit_bias`` for
  SigLIP's sigmoid loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from attnexplain.capture.adapters.base import PoolingHead
from attnexplain.capture.adapters.hf import HFAdapter, has_class_token
from attnexplain.capture.adapters.image_text import ImageTextAdapter, check_context_length


def _is_pretrained(model: nn.Module) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return False
    return isinstance(model, PreTrainedModel)


def _vision_tower(model: nn.Module) -> nn.Module:
    """The module holding ``embeddings``, ``encoder`` and ``post_layernorm``."""
    return getattr(model, "vision_model", model)


def _map_head(tower: nn.Module) -> nn.Module | None:
    """SigLIP's multi-head attention pooling head: a learned ``probe`` read by an MHA."""
    head = getattr(tower, "head", None)
    if isinstance(getattr(head, "probe", None), nn.Parameter) and isinstance(
        getattr(head, "attention", None), nn.MultiheadAttention
    ):
        return head
    return None


class HFSiglipVisionAdapter(HFAdapter):
    """SigLIP vision encoders: ``SiglipVisionModel``, ``SiglipForImageClassification``.

    Recognised by structure: a Hugging Face vision tower with a final ``post_layernorm`` and no
    class token. The pooling head's ``nn.MultiheadAttention`` is not one of the encoder's
    attention layers; for ``SiglipVisionModel`` it is the :attr:`pooling_head`.
    """

    family = "huggingface-siglip"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        if not _is_pretrained(model) or hasattr(model, "text_model"):
            return False
        tower = _vision_tower(model)
        return (
            isinstance(getattr(tower, "post_layernorm", None), nn.LayerNorm)
            and hasattr(tower, "encoder")
            and not has_class_token(tower)
        )

    def _find_attention_modules(self) -> list[nn.Module]:
        found = super()._find_attention_modules()
        head = _map_head(_vision_tower(self.model))
        inside = set() if head is None else {id(m) for m in head.modules()}
        return [module for module in found if id(module) not in inside]

    @property
    def pooling_head(self) -> PoolingHead | None:
        head = _map_head(_vision_tower(self.model))
        # A classifier on the mean of the tokens (SiglipForImageClassification) leaves the
        # pooling head's output unused: it is not the row the logits are read from.
        if head is None or hasattr(self.model, "classifier"):
            return None
        return PoolingHead(head.attention)

    def readout(self, tokens: torch.Tensor) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

        tower = _vision_tower(self.model)
        hidden = tower.post_layernorm(tokens)
        classifier = getattr(self.model, "classifier", None)
        if classifier is not None:
            return ImageClassifierOutput(logits=classifier(hidden.mean(dim=1)))
        head = _map_head(tower)
        pooled = None if head is None else head(hidden)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)


class HFImageTextAdapter(ImageTextAdapter):
    """``CLIPModel`` / ``SiglipModel``: the vision tower explained, the text tower scoring prompts.

    The output (:meth:`forward`) is the model's ``get_image_features`` (the image embedding,
    projected for CLIP); :meth:`encode_text` embeds prompts with ``get_text_features``. Both
    towers run as the model's own methods: nothing is patched.

    Args:
        model: the image–text model.
        tokenizer: its tokenizer; ``None`` loads the one saved with the model
            (``AutoTokenizer.from_pretrained(model.name_or_path)``) when a prompt is first
            scored. A :class:`~attnexplain.methods.targets.Prompt` may carry its own.

    Raises:
        UnsupportedModelError: when the vision tower has no attention or patch stem.
    """

    family = "huggingface-image-text"

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        tower = model.vision_model
        vision_type = HFSiglipVisionAdapter if HFSiglipVisionAdapter.matches(tower) else HFAdapter
        super().__init__(model, vision_type(tower), tokenizer)

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return (
            _is_pretrained(model)
            and isinstance(getattr(model, "vision_model", None), nn.Module)
            and isinstance(getattr(model, "text_model", None), nn.Module)
            and callable(getattr(model, "get_image_features", None))
            and callable(getattr(model, "get_text_features", None))
            and isinstance(getattr(model, "logit_scale", None), nn.Parameter)
        )

    def forward(self, inputs: torch.Tensor) -> Any:
        return self.model.get_image_features(pixel_values=inputs, **self.vision.size_kwargs(inputs))

    def readout(self, tokens: torch.Tensor) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        tower = self.model.vision_model
        if self.pooling_head is not None:  # SigLIP: norm every token, pool with the MAP head
            hidden = tower.post_layernorm(tokens)
            embeds = _map_head(tower)(hidden)
        else:  # CLIP: norm the CLS token, project it
            hidden = tokens
            embeds = self.model.visual_projection(tower.post_layernorm(tokens[:, self.cls_index()]))
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=embeds)

    def embedding(self, output: Any) -> torch.Tensor:
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def logit_scale_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.logit_scale, getattr(self.model, "logit_bias", None)

    def encode_text(self, prompts: Sequence[str], tokenizer: Any = None) -> torch.Tensor:
        tokenizer = tokenizer if tokenizer is not None else self._saved_tokenizer()
        limit = int(self.model.config.text_config.max_position_embeddings)
        lengths = [len(ids) for ids in tokenizer(list(prompts))["input_ids"]]
        check_context_length(self.model, prompts, lengths, limit)
        # SigLIP's text tower pools its last position, so prompts are padded to the context and
        # read without attention mask, the way it was trained (its processor passes input_ids
        # only); CLIP's pools the end-of-text token, padded to the longest prompt and masked.
        siglip_text = isinstance(getattr(self.model.text_model, "head", None), nn.Linear)
        if siglip_text:
            encoded = tokenizer(
                list(prompts), padding="max_length", max_length=limit, return_tensors="pt"
            )
            names = ("input_ids",)
        else:
            encoded = tokenizer(list(prompts), padding=True, return_tensors="pt")
            names = ("input_ids", "attention_mask")
        device = self.model.logit_scale.device
        inputs = {name: encoded[name].to(device) for name in names if name in encoded}
        with torch.no_grad():
            features = self.model.get_text_features(**inputs)
        return features if isinstance(features, torch.Tensor) else features.pooler_output

    def _saved_tokenizer(self) -> Any:
        if self.tokenizer is None:
            name = getattr(self.model, "name_or_path", "") or ""
            if not name:
                raise ValueError(
                    f"{type(self.model).__name__} was not loaded from a folder or hub id, so "
                    "attnexplain cannot find its tokenizer: pass it, e.g. "
                    "Prompt('a photo of a dog', tokenizer=AutoTokenizer.from_pretrained(...))"
                )
            from transformers import AutoTokenizer

            try:
                self.tokenizer = AutoTokenizer.from_pretrained(name)
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"no tokenizer could be loaded from {name!r} ({error}); pass it, e.g. "
                    "Prompt('a photo of a dog', tokenizer=AutoTokenizer.from_pretrained(...))"
                ) from error
        return self.tokenizer
