"""Custom modules: the protocol a hand-written ViT follows to be explained.

A model works without any adapter code when

1. its self-attention modules are recognisable: ``nn.MultiheadAttention``, a fused ``qkv``
   linear, ``q_proj/k_proj/v_proj`` or ``query/key/value`` linears, or an attribute
   ``attnexplain_attention = True`` on the module;
2. each of them either computes attention with ``F.scaled_dot_product_attention`` (streamed by
   the capture), or returns its probabilities ``(B, heads, N, N)`` as an element of a tuple output
   (like the DINO reference ``Attention.forward`` returning ``(x, attn)``);
3. its patch stem is a ``Conv2d`` with kernel equal to stride, and prefix tokens (CLS, registers)
   come before the patch tokens, the CLS token first (pass ``cls_index=None`` if there is none);
4. calling ``model(x)`` runs it on a ``(B, C, H, W)`` batch; for gradient methods the output is
   the logits ``(B, classes)`` (or a tuple whose first element is);
5. for methods that read the output from intermediate layers (LeGrad), the caller says how the
   model turns its last block's tokens into that output: ``CustomAdapter(model, readout=fn)``.

:class:`CustomAdapter` lets the caller name the attention modules, the CLS position and the
readout explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from attnexplain.capture.adapters.base import ModelAdapter


class CustomAdapter(ModelAdapter):
    """Adapter for a user module following the protocol above.

    Args:
        model: the module.
        attention_modules: its self-attention modules in forward order (found by structure when
            ``None``).
        cls_index: position of the CLS token, ``None`` when the model has none.
        readout: ``fn(tokens) -> output``: what ``model(x)`` would return had ``tokens``
            ``(B, N, D)`` been its last block's output (its final norm, pooling and head), e.g.
            ``lambda tokens: model.head(model.norm(tokens)[:, 0])``; needed by LeGrad only.

    Raises:
        TypeError: for a ``readout`` that is not callable.
        UnsupportedModelError: when no attention module or no patch stem is found.
    """

    family = "custom"

    def __init__(
        self,
        model: nn.Module,
        *,
        attention_modules: Sequence[nn.Module] | None = None,
        cls_index: int | None = 0,
        readout: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        if readout is not None and not callable(readout):
            raise TypeError(f"readout must be a callable fn(tokens) -> output, got {readout!r}")
        self._explicit_modules = None if attention_modules is None else list(attention_modules)
        self._cls_index = cls_index
        self._readout = readout
        super().__init__(model)

    def _find_attention_modules(self) -> list[nn.Module]:
        if self._explicit_modules is not None:
            return self._explicit_modules
        return super()._find_attention_modules()

    def cls_index(self) -> int | None:
        return self._cls_index

    def readout(self, tokens: torch.Tensor) -> Any:
        if self._readout is None:
            return super().readout(tokens)
        return self._readout(tokens)
