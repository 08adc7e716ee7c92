"""Raw CLS attention of one layer (DINO's attention maps)."""

from __future__ import annotations

import torch
from torch import nn

from attnexplain.capture import CLSRowProbe, ModelAdapter, TokenLayout, capture_attention
from attnexplain.capture.probes import HeadFusion, fuse_heads
from attnexplain.capture.tokens import TokenMask, drop_keys
from attnexplain.methods._checks import check_head_fusion, check_layer, require_cls_token
from attnexplain.methods.base import Interpolation, MapAttribution, Target, patch_tokens_to_grid


class RawCLSAttention(MapAttribution):
    r"""The CLS query's attention over the patch keys of one layer.

    Caron et al. 2021, *Emerging Properties in Self-Supervised Vision Transformers* (DINO),
    ``visualize_attention.py``: for layer :math:`l` with probabilities
    :math:`A^{(l)} \in \mathbb{R}^{B \times H \times N \times N}`, the map of head :math:`h` is
    :math:`A^{(l)}_{h,\,\mathrm{cls},\,p}` for every patch token :math:`p`, laid out on the patch
    grid. Only that row is computed for the chosen layer; every other layer keeps the model's
    fused attention kernel.

    Args:
        model: any supported vision transformer (or its adapter).
        layer: attention layer, negative counts from the end (default: the last).
        head_fusion: ``"mean" | "max" | "min"`` fuse the heads into one map; ``None`` keeps them.
        interpolation: resize mode for ``upsample=True``.
        exclude_tokens: a diagnostic aid, off by default: ``inputs -> (B, N)`` bool mask of
            tokens to ignore (e.g. ``ArtifactDiagnostics(model).high_norm_tokens``); their
            attention is redistributed over the other tokens (``drop_keys``).

    Shapes:
        ``attribute(x)`` on ``(B, C, H, W)`` returns ``(B, heads, H, W)`` with
        ``head_fusion=None``, else ``(B, 1, H, W)``; ``(…, h, w)`` with ``upsample=False``.

    Raises:
        ValueError: for a bad ``layer`` or ``head_fusion``.
        UnsupportedModelError: for a model without a CLS token.

    Examples:
        >>> maps = RawCLSAttention(model, head_fusion=None).attribute(x)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter,
        *,
        layer: int = -1,
        head_fusion: HeadFusion | None = "mean",
        interpolation: Interpolation = "bilinear",
        exclude_tokens: TokenMask | None = None,
    ) -> None:
        super().__init__(model, interpolation=interpolation)
        check_head_fusion(head_fusion, allow_none=True)
        self.exclude_tokens = exclude_tokens
        self.layer = check_layer(layer, self.adapter)
        self.head_fusion = head_fusion
        require_cls_token(self.adapter, type(self).__name__)

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        probe = CLSRowProbe(self.layer)
        with torch.no_grad():
            layout = capture_attention(self.adapter, probe, inputs).layout
        excluded = None if self.exclude_tokens is None else self.exclude_tokens(inputs)
        maps = patch_tokens_to_grid(drop_keys(probe.row, excluded), layout)  # (B, heads, h, w)
        if self.head_fusion is not None:
            maps = fuse_heads(maps, self.head_fusion).unsqueeze(1)
        return maps, layout
