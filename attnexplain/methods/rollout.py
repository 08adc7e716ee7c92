"""Attention rollout (Abnar & Zuidema 2020), for the whole model or up to any layer."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from attnexplain.capture import (
    FusedAttentionProbe,
    ModelAdapter,
    TokenLayout,
    UnsupportedModelError,
    capture_attention,
)
from attnexplain.capture.kernel import full_precision
from attnexplain.capture.probes import HeadFusion
from attnexplain.capture.tokens import TokenMask, drop_keys
from attnexplain.methods._checks import (
    check_head_fusion,
    check_layer,
    pooling_readout_row,
    readout_cls_index,
)
from attnexplain.methods.base import (
    Interpolation,
    MapAttribution,
    Target,
    patch_tokens_to_grid,
    upsample_to_input,
)

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


def residual_attention(
    adapter: ModelAdapter,
    inputs: torch.Tensor,
    *,
    head_fusion: HeadFusion,
    discard_ratio: float,
    layers: tuple[int, int],
    cls_index: int | None,
    discard_counting: DiscardCounting = "others",
    excluded: torch.Tensor | None = None,
    whole_last_layer: bool = False,
    pooled: bool = False,
) -> tuple[list[torch.Tensor], torch.Tensor, TokenLayout]:
    r"""One capture of the rollout graph: :math:`\hat A^{(l)}` for ``first ≤ l ≤ last``.

    :math:`\hat A^{(l)} = (\bar A^{(l)} + I) / \mathrm{rowsum}` with
    :math:`\bar A^{(l)}` the head-fused attention, its lowest ``discard_ratio`` entries zeroed
    (never CLS→CLS). The last layer's CLS row is all a rollout or a flow out of the CLS token
    needs of it; unless ``whole_last_layer`` or ``discard_ratio`` (whose ranking needs the whole
    matrix) asks for more, only that row is captured, next to the layer's fused kernel.

    Args:
        adapter: the model's adapter.
        inputs: ``(B, C, H, W)`` validated batch.
        head_fusion: how heads are fused.
        discard_ratio: fraction in ``[0, 1)`` of each sample's lowest fused entries zeroed.
        layers: ``(first, last)`` non-negative layer indices, ``first <= last``.
        cls_index: position of the CLS token (``None`` without one; only with ``pooled``).
        discard_counting: how CLS→CLS counts among the discarded entries (:func:`discard_lowest`).
        excluded: ``(B, N)`` bool tokens dropped as keys (``drop_keys``) before discard and
            residual, or ``None``.
        whole_last_layer: also return the last layer's whole matrix.
        pooled: the output is read by the adapter's pooling head (``last`` is the model's last
            layer): the top row is its query's fused row :math:`r` over the last layer's tokens
            (rescaled to sum 1, no identity: the query is no token of the sequence), and every
            :math:`\hat A` down to ``first`` is returned.

    Returns:
        ``[Â^(first), …, Â^(last-1)]`` as ``(B, N, N)`` matrices (``Â^(last)`` too with
        ``whole_last_layer`` or ``pooled``), the CLS row of :math:`\hat A^{(\mathrm{last})}`
        (or :math:`r`) as ``(B, 1, N)``, and the layout.
    """
    first, last = layers
    cls_row_only = discard_ratio == 0.0 and not whole_last_layer and not pooled
    probe = FusedAttentionProbe(head_fusion, first, cls_row_only, end_layer=last)
    with torch.no_grad():
        result = capture_attention(adapter, probe, inputs, pooling=pooled)
    layout = result.layout
    if excluded is not None:  # the diagnostic aid: before discard and residual
        probe.matrices = {k: drop_keys(m, excluded) for k, m in probe.matrices.items()}
        if probe.cls_row is not None:
            probe.cls_row = drop_keys(probe.cls_row, excluded)
    matrices = [
        residual_normalise(
            discard_lowest(probe.matrices.pop(layer), discard_ratio, cls_index, discard_counting)
        )
        for layer in range(first, last + 1)
        if layer in probe.matrices
    ]
    if pooled:
        assert adapter.pooling_head is not None and result.pooling is not None
        top_row = pooling_readout_row(result.pooling, adapter.pooling_head, head_fusion)
        return matrices, drop_keys(top_row, excluded), layout
    if cls_row_only:
        return matrices, residual_normalise(probe.cls_row, first_row=cls_index), layout
    top_row = matrices[-1][:, cls_index : cls_index + 1]
    return (matrices if whole_last_layer else matrices[:-1]), top_row, layout


def rows_down(
    matrices: list[torch.Tensor], top_row: torch.Tensor, cls_index: int, *, every_layer: bool
) -> torch.Tensor:
    r"""CLS rows of the rollout products, multiplied from the top layer down (:math:`O(N^2)` each).

    Args:
        matrices: ``[Â^(s), …, Â^(e-1)]``, each ``(B, N, N)``.
        top_row: the CLS row of :math:`\hat A^{(e)}`, ``(B, 1, N)``.
        cls_index: position of the CLS token.
        every_layer: also the products ending at every lower layer.

    Returns:
        ``(B, 1, N)``: the CLS row of :math:`\hat A^{(e)} \cdots \hat A^{(s)}`; with
        ``every_layer``, ``(B, e - s + 1, N)`` whose row ``k`` is the CLS row of
        :math:`\hat A^{(s+k)} \cdots \hat A^{(s)}` (jeonsworld's ``joint_attentions[k]``).
    """
    rows = top_row
    with full_precision(top_row.device):
        for matrix in reversed(matrices):
            rows = torch.bmm(rows, matrix)
            if every_layer:  # the product ending at this layer starts here
                rows = torch.cat([rows, matrix[:, cls_index : cls_index + 1]], dim=1)
    return rows.flip(1) if every_layer else rows


@dataclass(frozen=True)
class LayerMaps:
    r"""Rollout maps for every layer of ``start_layer … end_layer``, from one capture.

    Attributes:
        layers: the layer index of each map, ascending.
        cumulative: ``(B, L, H, W)`` (or ``(B, L, h, w)``): map ``k`` is the rollout of layers
            ``start_layer … layers[k]`` (the founding code's ``joint_attentions[k]`` CLS row).
        per_block: ``(B, L, H, W)`` (or ``(B, L, h, w)``): map ``k`` is layer ``layers[k]``'s
            own :math:`\hat A` CLS row (the founding code's ``aug_att_mat[k]`` maps).
    """

    layers: tuple[int, ...]
    cumulative: torch.Tensor
    per_block: torch.Tensor


class AttentionRollout(MapAttribution):
    r"""Attention rollout: attention propagated through the layers with the residual path.

    Abnar & Zuidema 2020, *Quantifying Attention Flow in Transformers*; the reference code the
    founding documents use (jeonsworld/ViT-pytorch, jacobgil/vit-explain). Per layer :math:`l`:
    fuse heads, :math:`\bar A^{(l)} = \mathrm{fuse}_h A^{(l)}_h`; optionally zero the lowest
    ``discard_ratio`` of each sample's entries (never CLS→CLS); add the identity and renormalise
    rows, :math:`\hat A^{(l)} = (\bar A^{(l)} + I) / \mathrm{rowsum}`; the joint attention is
    :math:`\hat A^{(L-1)} \cdots \hat A^{(s)}` for ``start_layer`` :math:`s`, and the map is its
    CLS row over the patch tokens, unscaled.

    With ``end_layer`` :math:`e` the product stops there, :math:`\hat A^{(e)} \cdots \hat
    A^{(s)}`, and later layers are not read; :meth:`layer_maps` gives the product ending at every
    layer and each layer's own :math:`\hat A` CLS row from one capture (the founding document's
    per-block figure), without copying or truncating the model.

    Only the head-fused matrices are kept, and the CLS row is multiplied through them from the
    last layer down (:math:`O(L N^2)`); without ``discard_ratio`` the last layer contributes
    just its CLS row, computed alone while the layer keeps its fused attention kernel.
    :meth:`joint_attention` forms the full product.

    ``discard_counting="vit-explain"`` reproduces ``jacobgil/vit-explain``'s count for
    bit-parity with it: its ``k = int(N * N * discard_ratio)`` lowest entries include CLS→CLS,
    which it then spares, so ``k - 1`` are zeroed when CLS→CLS ranks among them; the default
    zeroes ``k`` entries other than CLS→CLS.

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
        discard_counting: ``"others"`` or ``"vit-explain"``, see above.
        start_layer: first layer of the product (negative counts from the end).
        end_layer: last layer of the product (negative counts from the end; default the last).
        interpolation: resize mode for ``upsample=True``.
        exclude_tokens: a diagnostic aid, off by default: ``inputs -> (B, N)`` bool mask of
            tokens to ignore as keys in every layer (e.g.
            ``ArtifactDiagnostics(model).high_norm_tokens``); each fused row's share on them is
            redistributed over the other tokens before the residual step (``drop_keys``).

    Shapes:
        ``attribute(x)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)`` (``(B, 1, h, w)`` with
        ``upsample=False``).

    Raises:
        ValueError: for a bad ``head_fusion``, ``discard_ratio`` or ``discard_counting``, a
            layer out of range, ``end_layer`` before ``start_layer``, or an ``end_layer`` other
            than the last on a model read through a pooling head.
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
        discard_counting: DiscardCounting = "others",
        start_layer: int = 0,
        end_layer: int = -1,
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
        self.end_layer = check_layer(end_layer, self.adapter, "end_layer")
        if self.end_layer < self.start_layer:
            raise ValueError(
                f"end_layer={end_layer} (layer {self.end_layer}) comes before start_layer="
                f"{start_layer} (layer {self.start_layer}); the product runs from start_layer "
                "up to end_layer"
            )
        self.cls_index = readout_cls_index(self.adapter, type(self).__name__)
        if self.cls_index is None and self.end_layer != self.adapter.num_layers - 1:
            raise ValueError(
                f"end_layer={end_layer}: {type(self.model).__name__} is read through its pooling "
                "head, whose query attends over the last layer only; leave end_layer at -1"
            )
        self.exclude_tokens = exclude_tokens

    def _graph(
        self, inputs: torch.Tensor, whole_last_layer: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor, TokenLayout]:
        return residual_attention(
            self.adapter, inputs, head_fusion=self.head_fusion, discard_ratio=self.discard_ratio,
            layers=(self.start_layer, self.end_layer), cls_index=self.adapter.cls_index(),
            pooled=self.cls_index is None,
            discard_counting=self.discard_counting, whole_last_layer=whole_last_layer,
            excluded=None if self.exclude_tokens is None else self.exclude_tokens(inputs),
        )  # fmt: skip

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        matrices, top_row, layout = self._graph(inputs)
        row = rows_down(matrices, top_row, self.cls_index, every_layer=False)
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

    def layer_maps(self, inputs: torch.Tensor, *, upsample: bool = True) -> LayerMaps:
        """The rollout ending at every layer and each layer's own map, from one capture.

        Args:
            inputs: ``(B, C, H, W)`` batch.
            upsample: maps at ``(H, W)`` (default) or on the patch grid ``(h, w)``.

        Returns:
            :class:`LayerMaps` with ``L = end_layer - start_layer + 1`` maps per sample.

        Raises:
            TypeError, ValueError: for invalid inputs.

        Examples:
            >>> maps = AttentionRollout(model).layer_maps(x)  # doctest: +SKIP
            >>> maps.cumulative.shape  # (B, layers, H, W)  # doctest: +SKIP
        """
        inputs = self.validate_inputs(inputs)
        if self.cls_index is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} has no CLS token: a rollout ending below the last "
                "layer has no row to read (its pooling head attends over the last layer only); "
                "use attribute() for the pooled rollout"
            )
        matrices, top_row, layout = self._graph(inputs)
        cumulative = rows_down(matrices, top_row, self.cls_index, every_layer=True)
        cls = self.cls_index
        per_block = torch.cat([*(matrix[:, cls : cls + 1] for matrix in matrices), top_row], 1)
        maps = [patch_tokens_to_grid(rows, layout).float() for rows in (cumulative, per_block)]
        if upsample:
            with full_precision(inputs.device):
                maps = [upsample_to_input(m, layout, self.interpolation) for m in maps]
        layers = tuple(range(self.start_layer, self.end_layer + 1))
        return LayerMaps(layers=layers, cumulative=maps[0], per_block=maps[1])

    def joint_attention(self, inputs: torch.Tensor) -> tuple[torch.Tensor, TokenLayout]:
        """The full joint attention :math:`\\hat A^{(e)} \\cdots \\hat A^{(s)}`.

        Args:
            inputs: ``(B, C, H, W)`` batch.

        Returns:
            ``(B, N, N)`` joint attention over all tokens (prefix first) and the layout.
        """
        inputs = self.validate_inputs(inputs)
        matrices, _, layout = self._graph(inputs, whole_last_layer=True)
        joint = matrices[0]
        with full_precision(inputs.device):
            for matrix in matrices[1:]:
                joint = torch.bmm(matrix, joint)
        return joint, layout
