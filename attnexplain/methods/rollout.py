"""Attention rollout (Abnar & Zuidema 2020)."""

from __future__ import annotations

import torch
from torch import nn

from attnexplain.capture import FusedAttentionProbe, ModelAdapter, TokenLayout, capture_attention
from attnexplain.capture.kernel import full_precision
from attnexplain.capture.probes import HeadFusion
from attnexplain.methods._checks import (
    check_head_fusion,
    check_layer,
    pooling_readout_row,
    readout_cls_index,
)
from attnexplain.methods.base import Interpolation, MapAttribution, Target, patch_tokens_to_grid


def discard_lowest(matrices: torch.Tensor, ratio: float, keep_index: int | None) -> torch.Tensor:
    """Zero the lowest ``ratio`` fraction of each sample's matrix, in place.

    Args:
        matrices: ``(B, N, N)`` head-fused attention.
        ratio: fraction of the ``N * N`` entries to zero, per sample.
        keep_index: a diagonal entry never discarded (the CLS→CLS one), or ``None``.

    Returns:
        ``matrices``.
    """
    batch, num_tokens, _ = matrices.shape
    count = int(num_tokens * num_tokens * ratio)
    if count == 0:
        return matrices
    flat = matrices.view(batch, -1)
    ranked = flat.clone()
    if keep_index is not None:
        ranked[:, keep_index * num_tokens + keep_index] = float("inf")
    lowest = ranked.topk(count, dim=-1, largest=False).indices
    flat.scatter_(1, lowest, 0.0)
    return matrices


def residual_normalise(matrices: torch.Tensor, first_row: int = 0) -> torch.Tensor:
    """``(A + I)`` with every row rescaled to sum 1, in place.

    Args:
        matrices: ``(B, R, N)`` rows ``first_row … first_row + R - 1`` of ``A`` (all ``N`` of
            them by default).
        first_row: token index of the first row, where the identity's entries start.

    Returns:
        ``matrices``, ``(B, R, N)``.
    """
    matrices.diagonal(offset=first_row, dim1=-2, dim2=-1).add_(1.0)
    return matrices.div_(matrices.sum(dim=-1, keepdim=True))


class AttentionRollout(MapAttribution):
    r"""Attention rollout: attention propagated through the layers with the residual path.

    Abnar & Zuidema 2020, *Quantifying Attention Flow in Transformers*; the reference code the
    founding documents use (jeonsworld/ViT-pytorch, jacobgil/vit-explain). Per layer :math:`l`:
    fuse heads, :math:`\bar A^{(l)} = \mathrm{fuse}_h A^{(l)}_h`; optionally zero the lowest
    ``discard_ratio`` of each sample's entries (never CLS→CLS); add the identity and renormalise
    rows, :math:`\hat A^{(l)} = (\bar A^{(l)} + I) / \mathrm{rowsum}`; the joint attention is
    :math:`\hat A^{(L-1)} \cdots \hat A^{(s)}` for ``start_layer`` :math:`s`, and the map is its
    CLS row over the patch tokens, unscaled.

    Only the head-fused matrices are kept, and the CLS row is multiplied through them from the
    last layer down (:math:`O(L N^2)`); without ``discard_ratio`` the last layer contributes
    just its CLS row, computed alone while the layer keeps its fused attention kernel.
    :meth:`joint_attention` forms the full product.

    **Pooling heads** (SigLIP, timm ``global_pool="map"``, OpenCLIP's attentional pooler): the
    output is read by a pooling head's learned query instead of a CLS token, so the map is that
    query's row composed with the encoder's joint attention,
    :math:`r\,\hat A^{(L-1)} \cdots \hat A^{(s)}` restricted to the patches, with
    :math:`r = \mathrm{fuse}_h P_h / \mathrm{sum}` the head-fused attention of the query over
    the last layer's tokens (averaged over the queries forming the pooled output; rescaled to
    sum 1, a no-op for mean fusion). The query is not a token of the sequence and has no
    residual path to it, so :math:`r` gets no identity, and ``discard_ratio`` applies to the
    encoder layers only.

    Args:
        model: any supported vision transformer (or its adapter).
        head_fusion: ``"mean" | "max" | "min"``.
        discard_ratio: fraction in ``[0, 1)`` of the lowest fused entries zeroed per layer.
        start_layer: first layer of the product (negative counts from the end).
        interpolation: resize mode for ``upsample=True``.

    Shapes:
        ``attribute(x)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)`` (``(B, 1, h, w)`` with
        ``upsample=False``).

    Raises:
        ValueError: for a bad ``head_fusion``, ``discard_ratio`` or ``start_layer``.
        UnsupportedModelError: for a model without a CLS token or pooling head.

    Examples:
        >>> rollout = AttentionRollout(model, discard_ratio=0.9)  # doctest: +SKIP
        >>> maps = rollout.attribute(x)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter,
        *,
        head_fusion: HeadFusion = "mean",
        discard_ratio: float = 0.0,
        start_layer: int = 0,
        interpolation: Interpolation = "bilinear",
    ) -> None:
        super().__init__(model, interpolation=interpolation)
        check_head_fusion(head_fusion, allow_none=False)
        if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, int | float):
            raise TypeError(f"discard_ratio must be a float, got {discard_ratio!r}")
        if not 0.0 <= discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
        self.head_fusion = head_fusion
        self.discard_ratio = float(discard_ratio)
        self.start_layer = check_layer(start_layer, self.adapter, "start_layer")
        self.cls_index = readout_cls_index(self.adapter, type(self).__name__)

    def _layer_matrices(
        self, inputs: torch.Tensor, readout_row: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, TokenLayout]:
        """Per-layer ``(B, N, N)`` matrices :math:`\\hat A^{(l)}`, from ``start_layer`` on.

        With ``readout_row=True`` the row the output is read from comes second, ``(B, 1, N)``:
        for a model read through a pooling head, its readout row :math:`r` (every layer in the
        list); for a CLS model without ``discard_ratio`` (whose ranking needs the whole
        matrix), the last layer's CLS row of :math:`\\hat A^{(L-1)}`, captured alone and left
        out of the list. Otherwise the second value is ``None``.
        """
        pooled = self.cls_index is None
        last_layer_cls_row = readout_row and self.discard_ratio == 0.0 and not pooled
        probe = FusedAttentionProbe(self.head_fusion, self.start_layer, last_layer_cls_row)
        with torch.no_grad():
            result = capture_attention(self.adapter, probe, inputs, pooling=pooled and readout_row)
        keep = self.adapter.cls_index()
        matrices = [
            residual_normalise(discard_lowest(probe.matrices.pop(layer), self.discard_ratio, keep))
            for layer in range(self.start_layer, self.adapter.num_layers)
            if layer in probe.matrices
        ]
        row = probe.cls_row
        if row is not None:
            row = residual_normalise(row, first_row=keep)
        if result.pooling is not None:
            row = pooling_readout_row(result.pooling, self.adapter.pooling_head, self.head_fusion)
        return matrices, row, result.layout

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        matrices, row, layout = self._layer_matrices(inputs, readout_row=True)
        with full_precision(inputs.device):
            if row is None:
                row = torch.zeros_like(matrices[-1][:, :1, :])  # (B, 1, N)
                row[..., self.cls_index] = 1.0
            for matrix in reversed(matrices):
                row = torch.bmm(row, matrix)
        return patch_tokens_to_grid(row, layout), layout

    def joint_attention(self, inputs: torch.Tensor) -> tuple[torch.Tensor, TokenLayout]:
        """The full joint attention :math:`\\hat A^{(L-1)} \\cdots \\hat A^{(s)}`.

        Args:
            inputs: ``(B, C, H, W)`` batch.

        Returns:
            ``(B, N, N)`` joint attention over all tokens (prefix first) and the layout.
        """
        inputs = self.validate_inputs(inputs)
        matrices, _, layout = self._layer_matrices(inputs)
        joint = matrices[0]
        with full_precision(inputs.device):
            for matrix in matrices[1:]:
                joint = torch.bmm(matrix, joint)
        return joint, layout
