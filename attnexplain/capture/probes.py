"""Probes: what a method asks the capture for, reduced while the attention streams.

A probe tells the kernel, per layer, which query rows it needs (:class:`Rows`) and receives those
rows as fp32 probabilities ``(B, heads, R, N)`` in chunks, so that nothing larger than what the
method keeps is ever held in memory:

- :class:`CLSRowsProbe` keeps the CLS query row of the layers it is given (``(B, heads, N)``
  each); :class:`CLSRowProbe` is its one-layer form;
- :class:`FusedAttentionProbe` keeps head-fused matrices ``(B, N, N)`` of the layers it needs;
- :class:`AttentionDistanceProbe` keeps one running sum per head (``(B, heads)`` per layer);
- :class:`FullAttentionProbe` keeps full probabilities ``(B, heads, N, N)``, with their autograd
  graph when gradients are needed.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Literal

import torch

from attnexplain.capture.layout import TokenLayout

HeadFusion = Literal["mean", "max", "min"]

#: Largest distance matrix (bytes, fp32) :class:`AttentionDistanceProbe` keeps across layers.
CACHED_DISTANCE_BYTES = 8 * 2**20


class Rows(enum.Enum):
    """Which query rows of a layer's attention a probe needs."""

    NONE = "none"
    CLS = "cls"
    ALL = "all"


def fuse_heads(probs: torch.Tensor, head_fusion: HeadFusion) -> torch.Tensor:
    """Fuse the head axis of ``(B, heads, ...)`` into ``(B, ...)`` by mean, max or min."""
    if head_fusion == "mean":
        return probs.mean(dim=1)
    if head_fusion == "max":
        return probs.amax(dim=1)
    if head_fusion == "min":
        return probs.amin(dim=1)
    raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")


class AttentionProbe(ABC):
    """Receives the attention probabilities of the layers it asks for.

    Attributes:
        requires_grad: the kernel then computes full probabilities inside the autograd graph.
    """

    requires_grad: bool = False

    def reset(self, num_layers: int) -> None:  # noqa: B027 - optional hook, most probes need none
        """Called once per forward before the first layer, with the model's layer count."""

    @abstractmethod
    def rows(self, layer: int) -> Rows:
        """The query rows needed from ``layer`` (0-based)."""

    @abstractmethod
    def consume(self, layer: int, probs: torch.Tensor, row_start: int, layout: TokenLayout) -> None:
        """Take a chunk of probabilities.

        Args:
            layer: 0-based layer index.
            probs: ``(B, heads, R, N)`` fp32 rows ``row_start : row_start + R`` of the layer's
                attention (keys over all ``N`` tokens).
            row_start: index of the first query row in ``probs``.
            layout: the token layout of this forward.
        """


def _normalise_layers(layers: Iterable[int], num_layers: int) -> set[int]:
    return {layer % num_layers for layer in layers}


class NoAttentionProbe(AttentionProbe):
    """Needs no attention: every layer keeps the model's own kernel (or its own hand-written
    attention). A capture with it only runs the model and reads the token layout."""

    def rows(self, layer: int) -> Rows:
        return Rows.NONE

    def consume(self, layer: int, probs: torch.Tensor, row_start: int, layout: TokenLayout) -> None:
        raise AssertionError("NoAttentionProbe asks for no rows")  # pragma: no cover


class CLSRowsProbe(AttentionProbe):
    """The CLS query's attention over all keys in several layers, one forward for all of them.

    ``rows_by_layer[layer]`` is ``(B, heads, N)`` for every requested layer (0-based, negative
    indices resolved against the model's depth); every other layer keeps the model's fused
    attention kernel, and a requested layer computes its CLS row alone next to it.

    Args:
        layers: the layers to keep (their order does not matter here).
    """

    def __init__(self, layers: Iterable[int]) -> None:
        self.layers = list(layers)
        self.rows_by_layer: dict[int, torch.Tensor] = {}
        self._wanted: set[int] = set()

    def reset(self, num_layers: int) -> None:
        self._wanted = _normalise_layers(self.layers, num_layers)
        self.rows_by_layer = {}

    def rows(self, layer: int) -> Rows:
        return Rows.CLS if layer in self._wanted else Rows.NONE

    def consume(self, layer: int, probs: torch.Tensor, row_start: int, layout: TokenLayout) -> None:
        cls = layout.cls_index
        if cls is not None and row_start <= cls < row_start + probs.shape[2]:
            self.rows_by_layer[layer] = probs[:, :, cls - row_start, :].detach().clone()


class CLSRowProbe(CLSRowsProbe):
    """The CLS query's attention over all keys in one layer: ``row`` is ``(B, heads, N)``."""

    def __init__(self, layer: int) -> None:
        super().__init__([layer])
        self.layer = layer

    @property
    def row(self) -> torch.Tensor | None:
        """``(B, heads, N)``, or ``None`` before a forward delivered the layer."""
        return next(iter(self.rows_by_layer.values()), None)


class FusedAttentionProbe(AttentionProbe):
    """Head-fused attention matrices ``(B, N, N)`` of the layers ``start_layer … end_layer``.

    With ``last_layer_cls_row=True`` the last of those layers gives only its fused CLS row, kept
    in ``cls_row`` as ``(B, 1, N)``, and runs on the model's fused attention kernel: a product
    multiplied into the CLS row needs no more of it, and one ``N × N`` matrix fewer is held.
    Layers after ``end_layer`` (the model's last by default) are not read at all.
    """

    def __init__(
        self,
        head_fusion: HeadFusion,
        start_layer: int = 0,
        last_layer_cls_row: bool = False,
        end_layer: int = -1,
    ) -> None:
        fuse_heads(torch.zeros(1, 1, 1), head_fusion)  # validates head_fusion early
        self.head_fusion = head_fusion
        self.start_layer = start_layer
        self.end_layer = end_layer
        self.last_layer_cls_row = last_layer_cls_row
        self.matrices: dict[int, torch.Tensor] = {}
        self.cls_row: torch.Tensor | None = None
        self._start = 0
        self._last = -1

    def reset(self, num_layers: int) -> None:
        self._start = self.start_layer % num_layers
        self._last = self.end_layer % num_layers
        self.matrices = {}
        self.cls_row = None

    def rows(self, layer: int) -> Rows:
        if not self._start <= layer <= self._last:
            return Rows.NONE
        return Rows.CLS if self.last_layer_cls_row and layer == self._last else Rows.ALL

    def consume(self, layer: int, probs: torch.Tensor, row_start: int, layout: TokenLayout) -> None:
        if self.rows(layer) is Rows.CLS:
            self.cls_row = fuse_heads(probs, self.head_fusion)
            return
        batch, _, num_rows, num_keys = probs.shape
        matrix = self.matrices.get(layer)
        if matrix is None:
            matrix = probs.new_empty(batch, num_keys, num_keys)
            self.matrices[layer] = matrix
        matrix[:, row_start : row_start + num_rows] = fuse_heads(probs, self.head_fusion)


def patch_distances(layout: TokenLayout, rows: slice, device: torch.device) -> torch.Tensor:
    """Pixel distance between the patches in ``rows`` and every patch (ViT paper, MAD).

    ``patch_size * ||(row_i - row_j, col_i - col_j)||`` for square patches; for non-square ones
    each axis is scaled by its own patch side.

    Args:
        layout: token layout giving the grid and the patch size.
        rows: slice of patch indices (row-major over the grid) for the query patches.
        device: where to build the matrix.

    Returns:
        ``(len(rows), h * w)`` float32 distances in pixels.
    """
    _, width = layout.grid
    index = torch.arange(layout.num_patches, device=device)
    scale = torch.tensor(layout.patch_size, dtype=torch.float32, device=device)
    coords = torch.stack([index // width, index % width], dim=1).float() * scale
    # Exact Euclidean distances: the matmul shortcut loses digits to cancellation.
    return torch.cdist(coords[rows], coords, compute_mode="donot_use_mm_for_euclid_dist")


def token_distances(layout: TokenLayout, rows: slice, device: torch.device) -> torch.Tensor:
    """Rows of :func:`patch_distances` over the whole token sequence, zero at prefix tokens.

    Weighting attention rows by this matrix drops the prefix tokens on both axes without slicing
    (and copying) the probabilities.

    Args:
        layout: token layout of the forward.
        rows: slice of token indices (prefix tokens first) for the query rows.
        device: where to build the matrix.

    Returns:
        ``(len(rows), N)`` float32 distances in pixels, ``N = layout.num_tokens``.
    """
    prefix = layout.num_prefix_tokens
    first, last, _ = rows.indices(layout.num_tokens)
    distances = torch.zeros(max(last - first, 0), layout.num_tokens, device=device)
    patch_rows = slice(max(first, prefix) - prefix, max(last, prefix) - prefix)
    if patch_rows.stop > patch_rows.start:
        distances[max(first, prefix) - first :, prefix:] = patch_distances(
            layout, patch_rows, device
        )
    return distances


class AttentionDistanceProbe(AttentionProbe):
    """Running sums of ``Σ_k a_qk · d_qk`` over patch queries, per layer and head.

    ``sums[layer]`` is ``(B, heads)``; divide by the number of patches for the mean distance.
    Prefix tokens are dropped on both axes; with ``renormalize`` each patch-to-patch row is
    rescaled to sum to 1 first. Each chunk is reduced by one matrix-vector product against the
    chunk's distance rows (:func:`token_distances`), a single read of the probabilities. The
    whole distance matrix is kept across layers only while it is small (at most
    :data:`CACHED_DISTANCE_BYTES`); beyond that its rows are rebuilt per chunk, so the probe
    never holds ``N × N`` values.
    """

    def __init__(self, renormalize: bool = False) -> None:
        self.renormalize = renormalize
        self.sums: dict[int, torch.Tensor] = {}
        self._cached: tuple[TokenLayout, torch.device, torch.Tensor] | None = None

    def reset(self, num_layers: int) -> None:
        self.sums = {}

    def rows(self, layer: int) -> Rows:
        return Rows.ALL

    def _distance_rows(
        self, layout: TokenLayout, rows: slice, device: torch.device
    ) -> torch.Tensor:
        if layout.num_tokens**2 * 4 > CACHED_DISTANCE_BYTES:
            return token_distances(layout, rows, device)
        if self._cached is None or self._cached[:2] != (layout, device):
            self._cached = (layout, device, token_distances(layout, slice(None), device))
        return self._cached[2][rows]

    def consume(self, layer: int, probs: torch.Tensor, row_start: int, layout: TokenLayout) -> None:
        batch, heads, num_rows, num_keys = probs.shape
        rows = slice(row_start, row_start + num_rows)
        distances = self._distance_rows(layout, rows, probs.device)
        if self.renormalize:
            weighted = (probs * distances).sum(dim=-1)
            patch_mass = probs[..., layout.num_prefix_tokens :].sum(dim=-1).clamp_min(1e-12)
            contribution = (weighted / patch_mass).sum(dim=-1)
        else:
            flat = probs.reshape(batch * heads, num_rows * num_keys)
            contribution = (flat @ distances.reshape(-1)).view(batch, heads)
        self.sums[layer] = self.sums.get(layer, 0) + contribution


class FullAttentionProbe(AttentionProbe):
    """Full probabilities ``(B, heads, N, N)`` of the chosen layers (all by default).

    With ``requires_grad=True`` the stored tensors are the ones the model's output was computed
    from, so their ``.grad`` is filled by a backward pass (gradient-weighted methods).
    """

    def __init__(self, layers: Iterable[int] | None = None, requires_grad: bool = False) -> None:
        self.layers = None if layers is None else list(layers)
        self.requires_grad = requires_grad
        self.attentions: dict[int, torch.Tensor] = {}
        self._wanted: set[int] | None = None

    def reset(self, num_layers: int) -> None:
        self._wanted = None if self.layers is None else _normalise_layers(self.layers, num_layers)
        self.attentions = {}

    def rows(self, layer: int) -> Rows:
        return Rows.ALL if self._wanted is None or layer in self._wanted else Rows.NONE

    def consume(self, layer: int, probs: torch.Tensor, row_start: int, layout: TokenLayout) -> None:
        if row_start == 0 and probs.shape[2] == probs.shape[3]:
            if self.requires_grad and probs.requires_grad:
                probs.retain_grad()
            self.attentions[layer] = probs
            return
        full = self.attentions.get(layer)
        if full is None:
            batch, heads, _, num_keys = probs.shape
            full = probs.new_empty(batch, heads, num_keys, num_keys)
            self.attentions[layer] = full
        full[:, :, row_start : row_start + probs.shape[2]] = probs
