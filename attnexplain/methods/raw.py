"""Raw CLS attention of one layer (DINO's attention maps)."""

from __future__ import annotations

import torch
from torch import nn

from attnexplain.capture import CLSRowProbe, ModelAdapter, TokenLayout, capture_attention
from attnexplain.capture.probes import HeadFusion, fuse_heads
from attnexplain.methods._checks import (
    check_head_fusion,
    check_layer,
    pooling_rows,
    readout_cls_index,
)
from attnexplain.methods.base import Interpolation, MapAttribution, Target, patch_tokens_to_grid


class RawCLSAttention(MapAttribution):
    r"""The CLS query's attention over the patch keys of one layer.

    Caron et al. 2021, *Emerging Properties in Self-Supervised Vision Transformers* (DINO),
    ``visualize_attention.py``: for layer :math:`l` with probabilities
    :math:`A^{(l)} \in \mathbb{R}^{B \times H \times N \times N}`, the map of head :math:`h` is
    :math:`A^{(l)}_{h,\,\mathrm{cls},\,p}` for every patch token :math:`p`, laid out on the patch
    grid. Only that row is computed for the chosen layer; every other layer keeps the model's
    fused attention kernel.

    **Pooling heads** (SigLIP, timm ``global_pool="map"``, OpenCLIP's attentional pooler): the
    output is read by the learned query of an attention-pooling head, not by a CLS token, so at
    the last layer (the one the head reads) the map is that query's attention
    :math:`P_{h,\,p}` over the last layer's patch tokens (averaged over the queries forming the
    pooled output, :class:`~attnexplain.capture.PoolingHead`). Earlier layers show the CLS row
    where the model has a CLS token; SigLIP has none, so only the last layer has a row.

    Args:
        model: any supported vision transformer (or its adapter).
        layer: attention layer, negative counts from the end (default: the last).
        head_fusion: ``"mean" | "max" | "min"`` fuse the heads into one map; ``None`` keeps them.
        interpolation: resize mode for ``upsample=True``.

    Shapes:
        ``attribute(x)`` on ``(B, C, H, W)`` returns ``(B, heads, H, W)`` with
        ``head_fusion=None``, else ``(B, 1, H, W)``; ``(…, h, w)`` with ``upsample=False``.

    Raises:
        ValueError: for a bad ``layer`` or ``head_fusion``; for a layer other than the last of a
            model whose only row is its pooling head's.
        UnsupportedModelError: for a model without a CLS token or pooling head.

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
    ) -> None:
        super().__init__(model, interpolation=interpolation)
        check_head_fusion(head_fusion, allow_none=True)
        self.layer = check_layer(layer, self.adapter)
        self.head_fusion = head_fusion
        head = self.adapter.pooling_head
        self.pooled = head is not None and self.layer == self.adapter.num_layers - 1
        if not self.pooled and self.adapter.cls_index() is None:
            if head is not None:
                raise ValueError(
                    f"layer={layer} has no query row: {type(self.model).__name__} has no CLS "
                    "token, and its pooling head reads the last layer; leave layer at -1"
                )
            readout_cls_index(self.adapter, type(self).__name__)  # raises: no row to read

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        probe = CLSRowProbe(self.layer)  # reads nothing more when the pooling head gives the row
        with torch.no_grad():
            result = capture_attention(self.adapter, probe, inputs, pooling=self.pooled)
        layout = result.layout
        rows = pooling_rows(result.pooling, self.adapter.pooling_head) if self.pooled else probe.row
        maps = patch_tokens_to_grid(rows, layout)  # (B, heads, h, w)
        if self.head_fusion is not None:
            maps = fuse_heads(maps, self.head_fusion).unsqueeze(1)
        return maps, layout
