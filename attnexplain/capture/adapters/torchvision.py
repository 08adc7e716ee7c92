"""torchvision ``VisionTransformer``.

Its encoder calls ``nn.MultiheadAttention`` with ``need_weights=False`` (SDPA, or PyTorch's native
fast path in inference; the fast path is skipped whenever a torch-function mode is active). While
a probe needs a layer, the capture serves that layer's ``F.multi_head_attention_forward`` (plain
self-attention: packed in-projection, no masks) with its streaming kernel, computing q/k/v and
the output projection from the module's own weights; other configurations fall back to asking
PyTorch for per-head weights, read from the module's output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnexplain.capture.adapters.base import ModelAdapter


class TorchvisionAdapter(ModelAdapter):
    """Adapter for ``torchvision.models.VisionTransformer``."""

    family = "torchvision"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return type(model).__module__.startswith("torchvision.models")

    def check_input_size(self, height: int, width: int) -> None:
        super().check_input_size(height, width)
        size = getattr(self.model, "image_size", None)
        if size is not None and (height, width) != (size, size):
            raise ValueError(
                f"torchvision's VisionTransformer runs only at its image_size {size}x{size} "
                f"(its position embedding cannot be interpolated), got {height}x{width}; "
                f"resize the input to {size}x{size}"
            )

    def readout(self, tokens: torch.Tensor) -> Any:
        # VisionTransformer.forward after its encoder blocks: the encoder's final LayerNorm, the
        # class token, the heads.
        return self.model.heads(self.model.encoder.ln(tokens)[:, 0])
