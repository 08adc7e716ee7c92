"""Attention rollout (Abnar & Zuidema 2020)."""

from __future__ import annotations

import warnings
from typing import Literal, get_args

import torch
from torch import nn

from attnexplain.capture import FusedAttentionProbe, ModelAdapter, TokenLayout, capture_attention
from attnexplain.capture.kernel import full_precision
from attnexplain.capture.probes import HeadFusion
from attnexplain.capture.tokens import TokenMask, drop_keys
from attnexplain.methods._checks import check_head_fusion, check_layer, require_cls_token
from attnexplain.methods.base import Interpolation, MapAttribution, Target, patch_tokens_to_grid

DiscardCounting = Literal["others", "vit-explain"]


def discard_lowest(
    matrices: torch.Tensor,
    ratio: float,
    keep_index: int | None,
    counting: DiscardCounting = "others",
) -> torch.Tensor:
    """Zero the lowest ``ratio`` fraction of each sample's matrix, in place.

    ``k = int(N * N * ratio)`` entries are ranked per sample. With ``counting="others"`` the ``k``
    lowest entries other than the kept one are zeroed; with ``"vit-explain"`` the ``k`` lowest
    are counted *with* the kept entry, which is then spared (``k - 1`` zeroed when it ranks among
    them), as ``jacobgil/vit-explain`` does for its single sample.

    Args:
        matrices: ``(B, N, N)`` head-fused attention.
        ratio: fraction of the ``N * N`` entries to zero, per sample.
        keep_index: a diagonal entry never discarded (the CLS→CLS one), or ``None``.
        counting: how the kept entry counts, see above.

    Returns:
        ``matrices``.
    """
    batch, num_tokens, _ = matrices.shape
    count = int(num_tokens * num_tokens * ratio)
    if count == 0:
        return matrices
    flat = matrices.view(batch, -1)
    kept = None if keep_index is None else keep_index * num_tokens + keep_index
    if counting == "others" and kept is not None:
        ranked = flat.clone()
        ranked[:, kept] = float("inf")
    else:
        ranked = flat
    lowest = ranked.topk(count, dim=-1, largest=False).indices
    kept_values = None if kept is None else flat[:, kept].clone()
    flat.scatter_(1, lowest, 0.0)
    if kept_values is not None:
        flat[:, kept] = kept_values
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

    ``discard_counting="vit-explain"`` reproduces ``jacobgil/vit-explain``'s count for
    bit-parity with it: its ``k = int(N * N * discard_ratio)`` lowest entries include CLS→CLS,
    which it then spares, so ``k - 1`` are zeroed when CLS→CLS ranks among them; the default
    zeroes ``k`` entries other than CLS→CLS.

    Args:
        model: any supported vision transformer (or its adapter).
        head_fusion: ``"mean" | "max" | "min"``.
        discard_ratio: fraction in ``[0, 1)`` of the lowest fused entries zeroed per layer.
        discard_counting: ``"others"`` or ``"vit-explain"``, see above.
        start_layer: first layer of the product (negative counts from the end).
        interpolation: resize mode for ``upsample=True``.
        exclude_tokens: a diagnostic aid, off by default: ``inputs -> (B, N)`` bool mask of
            tokens to ignore as keys in every layer (e.g.
            ``ArtifactDiagnostics(model).high_norm_tokens``); each fused row's share on them is
            redistributed over the other tokens before the residual step (``drop_keys``).

    Shapes:
        ``attribute(x)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)`` (``(B, 1, h, w)`` with
        ``upsample=False``).

    Raises:
        ValueError: for a bad ``head_fusion``, ``discard_ratio``, ``discard_counting`` or
            ``start_layer``.
        UnsupportedModelError: for a model without a CLS token.

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
        discard_counting: DiscardCounting = "others",
        start_layer: int = 0,
        interpolation: Interpolation = "bilinear",
        exclude_tokens: TokenMask | None = None,
    ) -> None:
        super().__init__(model, interpolation=interpolation)
        check_head_fusion(head_fusion, allow_none=False)
        if discard_counting not in get_args(DiscardCounting):
            raise ValueError(
                f"discard_counting must be one of {get_args(DiscardCounting)}, "
                f"got {discard_counting!r}"
            )
        self.discard_counting = discard_counting
        if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, int | float):
            raise TypeError(f"discard_ratio must be a float, got {discard_ratio!r}")
        if not 0.0 <= discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
        self.head_fusion = head_fusion
        self.discard_ratio = float(discard_ratio)
        self.start_layer = check_layer(start_layer, self.adapter, "start_layer")
        self.cls_index = require_cls_token(self.adapter, type(self).__name__)
        self.exclude_tokens = exclude_tokens

    def _layer_matrices(
        self, inputs: torch.Tensor, last_layer_cls_row: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, TokenLayout]:
        """Per-layer ``(B, N, N)`` matrices :math:`\\hat A^{(l)}`, from ``start_layer`` on.

        With ``last_layer_cls_row=True`` and no ``discard_ratio`` (whose ranking needs the whole
        matrix), the last layer is captured as its CLS row of :math:`\\hat A^{(L-1)}` only,
        ``(B, 1, N)``, returned second (``None`` otherwise) and left out of the list.
        """
        last_layer_cls_row = last_layer_cls_row and self.discard_ratio == 0.0
        probe = FusedAttentionProbe(self.head_fusion, self.start_layer, last_layer_cls_row)
        with torch.no_grad():
            layout = capture_attention(self.adapter, probe, inputs).layout
        if self.exclude_tokens is not None:  # the diagnostic aid: before discard and residual
            excluded = self.exclude_tokens(inputs)
            probe.matrices = {k: drop_keys(m, excluded) for k, m in probe.matrices.items()}
            if probe.cls_row is not None:
                probe.cls_row = drop_keys(probe.cls_row, excluded)

        keep = self.cls_index
        counting = self.discard_counting
        matrices = [
            residual_normalise(
                discard_lowest(probe.matrices.pop(layer), self.discard_ratio, keep, counting)
            )
            for layer in range(self.start_layer, self.adapter.num_layers)
            if layer in probe.matrices
        ]
        cls_row = probe.cls_row
        if cls_row is not None:
            cls_row = residual_normalise(cls_row, first_row=keep)
        return matrices, cls_row, layout

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        matrices, row, layout = self._layer_matrices(inputs, last_layer_cls_row=True)
        with full_precision(inputs.device):
            if row is None:
                row = torch.zeros_like(matrices[-1][:, :1, :])  # (B, 1, N)
                row[..., self.cls_index] = 1.0
            for matrix in reversed(matrices):
                row = torch.bmm(row, matrix)
        maps = patch_tokens_to_grid(row, layout)
        if self.discard_ratio > 0 and not maps.flatten(1).any(dim=1).all():
            warnings.warn(
                f"discard_ratio={self.discard_ratio} zeroed every patch's share of the CLS "
                "token's joint attention for some images: their rollout maps are all zeros. "
                "Use a smaller discard_ratio.",
                RuntimeWarning,
                stacklevel=3,
            )
        return maps, layout

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
