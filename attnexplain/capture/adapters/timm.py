"""timm ``VisionTransformer`` and relatives (``Attention`` modules with a fused ``qkv``).

timm reads its fused-attention setting per module at construction; a non-fused module computes
attention with explicit matmuls and returns no probabilities, so the capture turns ``fused_attn``
on for the duration of the call (the kernel it then calls is the one the capture streams) and
restores each module's own value afterwards. Other input sizes use timm's ``dynamic_img_size``
path, switched on temporarily the same way. SigLIP-style models (``global_pool="map"``) pool
with an ``AttentionPoolLatent`` whose learned latent query is the model's
:attr:`~TimmAdapter.pooling_head`; its ``fused_attn`` is switched on for the call too.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from attnexplain.capture.adapters.base import ModelAdapter, PoolingHead
from attnexplain.capture.errors import UnsupportedModelError


def _set_temporarily(stack: ExitStack, obj: Any, name: str, value: Any) -> None:
    previous = getattr(obj, name)
    stack.callback(setattr, obj, name, previous)
    setattr(obj, name, value)


class TimmAdapter(ModelAdapter):
    """Adapter for timm vision transformers."""

    family = "timm"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return type(model).__module__.startswith("timm.")

    def cls_index(self) -> int | None:
        return 0 if getattr(self.model, "cls_token", None) is not None else None

    def check_input_size(self, height: int, width: int) -> None:
        super().check_input_size(height, width)
        ph, pw = self.patch_size
        if height % ph or width % pw:
            raise ValueError(
                f"input size {height}x{width} is not divisible by the patch size {ph}x{pw}, "
                "which timm's ViT requires; resize or pad the image to a multiple of the patch"
            )

    @property
    def pooling_head(self) -> PoolingHead | None:
        pool = getattr(self.model, "attn_pool", None)
        if not isinstance(getattr(pool, "latent", None), nn.Parameter):
            return None
        # pool="token" reads the first latent query's output, "avg" the mean over all of them.
        queries = slice(0, 1) if getattr(pool, "pool", "token") == "token" else slice(None)
        return PoolingHead(pool, queries)

    def enter(self, stack: ExitStack, inputs: torch.Tensor) -> None:
        pooling = self.pooling_head
        extra = [] if pooling is None else [pooling.attention]
        for module in [*self.attention_modules, *extra]:
            if hasattr(module, "fused_attn"):
                _set_temporarily(stack, module, "fused_attn", True)
        patch_embed = getattr(self.model, "patch_embed", None)
        trained = getattr(patch_embed, "img_size", None)
        needs_dynamic = trained is not None and tuple(inputs.shape[-2:]) != tuple(trained)
        if needs_dynamic and not getattr(self.model, "dynamic_img_size", True):
            from timm.layers import Format

            _set_temporarily(stack, self.model, "dynamic_img_size", True)
            _set_temporarily(stack, patch_embed, "strict_img_size", False)
            _set_temporarily(stack, patch_embed, "flatten", False)
            _set_temporarily(stack, patch_embed, "output_fmt", Format.NHWC)

    def readout(self, tokens: torch.Tensor) -> Any:
        # timm's own tail: forward_features ends with ``norm``; forward_head pools (class token,
        # average, attention pool, distillation pair), applies fc_norm and the head.
        norm = getattr(self.model, "norm", None)
        head = getattr(self.model, "forward_head", None)
        if norm is None or head is None:
            return super().readout(tokens)
        return head(norm(tokens))

    def logits(self, output: Any) -> torch.Tensor:
        if getattr(self.model, "num_classes", 1) == 0:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} was built with num_classes=0 (no head); gradient "
                "methods and targets need a classifier"
            )
        return super().logits(output)

    def embedding(self, output: Any) -> torch.Tensor:
        if getattr(self.model, "num_classes", 0) != 0:
            raise UnsupportedModelError(
                f"{type(self.model).__name__}'s output is its class logits, not its pooled "
                "embedding; for embedding and reference-image targets build it with "
                "num_classes=0 (or call model.reset_classifier(0))"
            )
        return super().embedding(output)
