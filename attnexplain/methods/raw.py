"""Raw CLS attention of one layer or several (DINO's attention maps)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from attnexplain.capture import CLSRowsProbe, ModelAdapter, TokenLayout, capture_attention
from attnexplain.capture.probes import HeadFusion, fuse_heads
from attnexplain.capture.tokens import TokenMask, drop_keys
from attnexplain.methods._checks import (
    check_head_fusion,
    check_layer,
    check_layers,
    pooling_rows,
    readout_cls_index,
)
from attnexplain.methods.base import Interpolation, MapAttribution, Target, patch_tokens_to_grid

#: One layer (an int, negative counts from the end), every layer, or a list of layers.
LayerSelection = int | Literal["all"] | Sequence[int]


class RawCLSAttention(MapAttribution):
    r"""The CLS query's attention over the patch keys of one layer, or of several at once.

    Caron et al. 2021, *Emerging Properties in Self-Supervised Vision Transformers* (DINO),
    ``visualize_attention.py``: for layer :math:`l` with probabilities
    :math:`A^{(l)} \in \mathbb{R}^{B \times H \times N \times N}`, the map of head :math:`h` is
    :math:`A^{(l)}_{h,\,\mathrm{cls},\,p}` for every patch token :math:`p`, laid out on the patch
    grid. Only that row is computed for the chosen layers; every other layer keeps the model's
    fused attention kernel, and several layers come from one forward.

    **Pooling heads** (SigLIP, timm ``global_pool="map"``, OpenCLIP's attentional pooler): the
    output is read by the learned query of an attention-pooling head, not by a CLS token, so at
    the last layer (the one the head reads) the map is that query's attention
    :math:`P_{h,\,p}` over the last layer's patch tokens (averaged over the queries forming the
    pooled output, :class:`~attnexplain.capture.PoolingHead`). Earlier layers show the CLS row
    where the model has a CLS token; SigLIP has none, so only the last layer has a row.

    Args:
        model: any supported vision transformer (or its adapter).
        layer: attention layer, negative counts from the end (default: the last); ``"all"`` or a
            list of layers for maps per layer, in the order given.
        head_fusion: ``"mean" | "max" | "min"`` fuse the heads into one map; ``None`` keeps them.
        interpolation: resize mode for ``upsample=True``.
        exclude_tokens: a diagnostic aid, off by default: ``inputs -> (B, N)`` bool mask of
            tokens to ignore (e.g. ``ArtifactDiagnostics(model).high_norm_tokens``); their
            attention is redistributed over the other tokens (``drop_keys``), in every layer.

    Shapes:
        ``attribute(x)`` on ``(B, C, H, W)`` returns ``(B, heads, H, W)`` with
        ``head_fusion=None``, else ``(B, 1, H, W)``; with ``layer="all"`` or a list of ``L``
        layers ``(B, L, heads, H, W)`` / ``(B, L, 1, H, W)``; ``(…, h, w)`` with
        ``upsample=False``.

    Raises:
        TypeError: for a ``layer`` that is not an int, ``"all"`` or a list of ints.
        ValueError: for a layer out of range, an empty list or a layer listed twice, or a bad
            ``head_fusion``; for a layer other than the last of a model whose only row is its
            pooling head's.
        UnsupportedModelError: for a model without a CLS token or pooling head.

    Examples:
        >>> maps = RawCLSAttention(model, head_fusion=None).attribute(x)  # doctest: +SKIP
        >>> per_layer = RawCLSAttention(model, layer="all")  # doctest: +SKIP
        >>> per_layer.attribute(x).shape  # (B, layers, 1, H, W)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter,
        *,
        layer: LayerSelection = -1,
        head_fusion: HeadFusion | None = "mean",
        interpolation: Interpolation = "bilinear",
        exclude_tokens: TokenMask | None = None,
    ) -> None:
        super().__init__(model, interpolation=interpolation)
        check_head_fusion(head_fusion, allow_none=True)
        self.exclude_tokens = exclude_tokens
        self.per_layer = isinstance(layer, str | Sequence)
        self.layers = check_layers(layer, self.adapter) if self.per_layer else None
        self.layer = None if self.per_layer else check_layer(layer, self.adapter)
        self.head_fusion = head_fusion
        head = self.adapter.pooling_head
        last = self.adapter.num_layers - 1
        layers = self.layers if self.per_layer else [self.layer]
        self.pooled = head is not None and last in layers
        if self.adapter.cls_index() is None and (
            head is None or any(layer != last for layer in layers)
        ):
            if head is not None:
                raise ValueError(
                    f"layer={layer!r} has no query row: {type(self.model).__name__} has no CLS "
                    "token, and its pooling head reads the last layer only; leave layer at -1"
                )
            readout_cls_index(self.adapter, type(self).__name__)  # raises: no row to read

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        last = self.adapter.num_layers - 1
        layers = self.layers if self.per_layer else [self.layer]
        cls_layers = [layer for layer in layers if not (self.pooled and layer == last)]
        probe = CLSRowsProbe(cls_layers)  # reads nothing more when the pooling head gives the row
        with torch.no_grad():
            result = capture_attention(self.adapter, probe, inputs, pooling=self.pooled)
        layout = result.layout
        by_layer = dict(probe.rows_by_layer)
        if self.pooled:
            by_layer[last] = pooling_rows(result.pooling, self.adapter.pooling_head)
        rows = torch.stack([by_layer[layer] for layer in layers], dim=1)
        excluded = None if self.exclude_tokens is None else self.exclude_tokens(inputs)
        rows = drop_keys(rows, excluded)  # (B, L, heads, N)
        count, heads = rows.shape[1:3]
        maps = patch_tokens_to_grid(rows.flatten(1, 2), layout).unflatten(1, (count, heads))
        if self.head_fusion is not None:  # (B, L, heads, h, w) -> (B, L, 1, h, w)
            maps = fuse_heads(maps.transpose(1, 2), self.head_fusion).unsqueeze(2)
        return (maps if self.per_layer else maps[:, 0]), layout
