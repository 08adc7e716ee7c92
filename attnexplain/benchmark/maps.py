"""Every image's maps, kept compactly in the run folder for the explorer page.

A method's maps of one image are a set of **views**, one map per ``(layer, head)``:

- ``layer`` is the attention layer the map was read at (for rollout, the block the product ends
  at), or :data:`METHOD_LAYER` for a method that does not say (gradients, Captum, baselines);
- ``head`` is a head index, or :data:`FUSED_HEAD` for a head-fused map and for every map of a
  method without heads.

What the benchmark scored is marked ``scored``. The attention methods are stored on the patch
grid, at every layer and head the model has (``raw``: fused and per head at every layer,
``raw_heads``: per head at every layer, ``rollout``: the product ending at the last block);
their scored map is the bilinear upsampling of the scored grid view. Every other method is
stored as scored, at the model's input size.

**Storage.** Each map is quantised to 8 bits with its own offset and scale (``value ≈ offset +
code * scale``, error at most ``scale / 2``); a map holding NaN or infinite values keeps codes
``0 … 254`` for its finite pixels and :data:`NONFINITE_CODE` for the others. The run folder
gets ``maps/<index>.npz`` (the image at the model's input size as ``uint8``, its mask and
ignore region at that size) and ``maps/<index>-<method>.npz`` (one :class:`QuantisedViews`),
each written to a temporary file and renamed, before the image's rows are written: a row on
disk implies its maps, and a resumed run rewrites at most the maps of the batch it redoes.

**Where new per-layer APIs plug in.** :func:`view_source` builds the raw CLS views from one
``RawCLSAttention(layer=[...])`` call (:class:`RawLayerViews`: every layer, or the pooled last
layer only for a model without CLS token); a per-block rollout would return one view per end
block from :class:`RolloutViews`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attnexplain.capture import ModelAdapter, resolve_adapter
from attnexplain.capture.probes import fuse_heads
from attnexplain.methods import AttentionRollout, RawCLSAttention

MAPS_DIR = "maps"
#: ``head`` of a head-fused map (and of every map of a method without heads).
FUSED_HEAD = -1
#: ``layer`` of a map whose method does not expose the layer it was read at.
METHOD_LAYER = -1
#: Code of a NaN or infinite pixel in a map that has any (finite pixels then use 0 … 254).
NONFINITE_CODE = 255

#: Views of one batch: ``views(inputs, maps)`` with the model's normalised ``(B, 3, S, S)``
#: ``inputs`` and the method's scored ``(B, K, S, S)`` ``maps`` -> one :class:`MapViews` each.
ViewSource = Callable[[torch.Tensor, torch.Tensor], list["MapViews"]]


@dataclass(frozen=True)
class MapViews:
    """One image's maps of one method: a map per view ``(layer, head)``.

    Attributes:
        maps: ``(V, h, w)`` float maps (any values; non-finite ones are kept as such).
        layers: ``(V,)`` layer of each view (:data:`METHOD_LAYER` when unknown).
        heads: ``(V,)`` head of each view (:data:`FUSED_HEAD` for a fused map).
        scored: ``(V,)`` whether the benchmark scored this view (the method's own output).

    Raises:
        ValueError: if ``maps`` is not ``(V, h, w)`` with ``V >= 1``, the label lengths differ
            from ``V``, a label is below ``-1`` or a ``(layer, head)`` pair repeats.
    """

    maps: np.ndarray
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    scored: tuple[bool, ...]

    def __post_init__(self) -> None:
        maps = np.asarray(self.maps)
        if maps.ndim != 3 or maps.shape[0] < 1 or 0 in maps.shape:
            raise ValueError(f"maps must be (V, h, w) with V >= 1, got shape {maps.shape}")
        count = maps.shape[0]
        for name in ("layers", "heads", "scored"):
            if len(getattr(self, name)) != count:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {count} maps")
        if min(self.layers) < -1 or min(self.heads) < -1:
            raise ValueError(
                f"layers and heads must be >= -1 (-1: the method's layer / fused), got "
                f"layers {list(self.layers)} and heads {list(self.heads)}"
            )
        pairs = list(zip(self.layers, self.heads))
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"(layer, head) pairs repeat: {pairs}")

    @classmethod
    def from_array(cls, maps: np.ndarray | torch.Tensor) -> MapViews:
        """Views of a bare array, all scored.

        ``(h, w)`` is one fused map; ``(K, h, w)`` one fused map (``K = 1``) or ``K`` heads;
        ``(L, K, h, w)`` layers ``0 … L - 1`` times those heads.

        Raises:
            ValueError: for another number of dimensions.
        """
        array = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
        if array.ndim == 2:
            array = array[None]
        if array.ndim == 3:
            array = array[None]
            layers = [METHOD_LAYER]
        elif array.ndim == 4:
            layers = list(range(array.shape[0]))
        else:
            raise ValueError(
                f"a map must be (h, w), (K, h, w) or (layers, K, h, w), got shape {array.shape}"
            )
        heads = [FUSED_HEAD] if array.shape[1] == 1 else list(range(array.shape[1]))
        grid = [(layer, head) for layer in layers for head in heads]
        return cls(
            array.reshape(-1, *array.shape[-2:]),
            tuple(layer for layer, _ in grid),
            tuple(head for _, head in grid),
            (True,) * len(grid),
        )


@dataclass(frozen=True)
class QuantisedViews:
    """:class:`MapViews` quantised to 8 bits per map.

    Attributes:
        codes: ``(V, h, w)`` uint8.
        offset: ``(V,)`` float64, each map's smallest finite value.
        scale: ``(V,)`` float64, the value of one code step (0 for a constant map).
        nonfinite: ``(V,)`` int64, NaN or infinite pixels per map (code :data:`NONFINITE_CODE`).
        layers, heads, scored: ``(V,)`` as in :class:`MapViews`.
    """

    codes: np.ndarray
    offset: np.ndarray
    scale: np.ndarray
    nonfinite: np.ndarray
    layers: np.ndarray
    heads: np.ndarray
    scored: np.ndarray

    def values(self) -> np.ndarray:
        """``(V, h, w)`` float64 maps, NaN where a pixel was not finite."""
        values = self.offset[:, None, None] + self.codes * self.scale[:, None, None]
        invalid = (self.nonfinite[:, None, None] > 0) & (self.codes == NONFINITE_CODE)
        return np.where(invalid, np.nan, values)


_STORED = tuple(f.name for f in fields(QuantisedViews))


def quantise(views: MapViews) -> QuantisedViews:
    """Quantise every map of ``views`` to 8 bits with its own offset and scale.

    Each map's finite values span ``offset … offset + levels * scale`` (``levels = 255``, or 254
    when the map has non-finite pixels); the round trip error is at most ``scale / 2``.

    Returns:
        The :class:`QuantisedViews`.
    """
    maps = np.asarray(views.maps, dtype=np.float64)
    finite = np.isfinite(maps)
    nonfinite = (~finite).sum(axis=(1, 2))
    levels = np.where(nonfinite > 0, NONFINITE_CODE - 1, NONFINITE_CODE)
    has_values = finite.any(axis=(1, 2))
    low = np.where(has_values, np.where(finite, maps, np.inf).min(axis=(1, 2)), 0.0)
    high = np.where(has_values, np.where(finite, maps, -np.inf).max(axis=(1, 2)), 0.0)
    offset, scale = low, (high - low) / levels
    steps = np.divide(
        maps - offset[:, None, None],
        scale[:, None, None],
        out=np.zeros_like(maps),
        where=finite & (scale > 0)[:, None, None],
    )
    codes = np.where(finite, np.rint(steps).clip(0, levels[:, None, None]), NONFINITE_CODE)
    codes = codes.astype(np.uint8)
    return QuantisedViews(
        codes,
        offset,
        scale,
        nonfinite.astype(np.int64),
        np.asarray(views.layers, dtype=np.int64),
        np.asarray(views.heads, dtype=np.int64),
        np.asarray(views.scored, dtype=bool),
    )


# ----------------------------------------------------------------------------------------------
# Views of the benchmark's methods
# ----------------------------------------------------------------------------------------------


def own_views(maps: torch.Tensor) -> list[MapViews]:
    """The method's scored ``(B, K, H, W)`` maps as views (``K = 1`` fused, else heads)."""
    return [MapViews.from_array(sample.float()) for sample in maps]


class RawLayerViews:
    """Raw CLS attention of every layer, per head (and head-fused when ``fused``).

    Called on inputs ``(B, C, H, W)`` it returns one :class:`MapViews` per image, with
    ``L * (heads + 1)`` maps ``(h, w)`` on the patch grid (``L * heads`` without ``fused``); ``L``
    is every layer, or 1 for a model without CLS token (its pooling query reads the last layer).

    Args:
        model: the model or its adapter.
        options: the benchmark method's options (``layer`` picks the scored layer,
            ``head_fusion`` the fusion of the scored map; ``interpolation`` is irrelevant on the
            grid); none: the last layer and the head mean.
        fused: whether the scored map is the head-fused one (``raw``, with fused views at every
            layer) or the heads (``raw_heads``).

    Raises:
        ValueError, TypeError: for options ``RawCLSAttention`` rejects.
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter,
        options: Mapping[str, Any] | None = None,
        *,
        fused: bool = True,
    ) -> None:
        options = options or {}
        self.adapter = resolve_adapter(model)
        self.fusion = options.get("head_fusion", "mean") if fused else None
        self.scored_layer = RawCLSAttention(self.adapter, layer=options.get("layer", -1)).layer
        last = self.adapter.num_layers - 1
        # A model without CLS token (SigLIP) has a row at its pooled last layer only.
        self.layer_indices = (
            list(range(self.adapter.num_layers)) if self.adapter.cls_index() is not None else [last]
        )
        self.per_layer = RawCLSAttention(self.adapter, layer=self.layer_indices, head_fusion=None)

    def __call__(self, inputs: torch.Tensor, maps: torch.Tensor | None = None) -> list[MapViews]:
        per_layer = self.per_layer.attribute(inputs, upsample=False)  # (B, L, heads, h, w)
        batch, _, num_heads = per_layer.shape[:3]
        grid = [(layer, head) for layer in self.layer_indices for head in range(num_heads)]
        if self.fusion is not None:
            fused = fuse_heads(per_layer.transpose(1, 2), self.fusion)[:, :, None]
            per_layer = torch.cat([fused, per_layer], dim=2)
            grid = [
                (layer, head)
                for layer in self.layer_indices
                for head in (FUSED_HEAD, *range(num_heads))
            ]
        flat = per_layer.reshape(batch, len(grid), *per_layer.shape[-2:]).cpu().numpy()
        scored_head = (lambda head: head == FUSED_HEAD) if self.fusion else (lambda head: True)
        scored = tuple(layer == self.scored_layer and scored_head(head) for layer, head in grid)
        layers = tuple(layer for layer, _ in grid)
        heads = tuple(head for _, head in grid)
        return [MapViews(sample, layers, heads, scored) for sample in flat]


class RolloutViews:
    """Attention rollout on the patch grid, the product ending at the last block.

    Called on inputs ``(B, C, H, W)`` it returns one :class:`MapViews` per image with one
    ``(h, w)`` map. A per-block rollout would return one view per end block here.

    Args:
        model: the model or its adapter.
        options: the benchmark method's ``AttentionRollout`` options (none: its defaults).
    """

    def __init__(
        self, model: nn.Module | ModelAdapter, options: Mapping[str, Any] | None = None
    ) -> None:
        self.rollout = AttentionRollout(model, **(options or {}))

    def __call__(self, inputs: torch.Tensor, maps: torch.Tensor | None = None) -> list[MapViews]:
        grid = self.rollout.attribute(inputs, upsample=False).cpu().numpy()  # (B, 1, h, w)
        last = self.rollout.adapter.num_layers - 1
        return [MapViews(sample, (last,), (FUSED_HEAD,), (True,)) for sample in grid]


#: Methods stored on the patch grid at every layer / head, and how their views are built.
GRID_VIEWS: dict[str, Callable[[nn.Module, Mapping[str, Any]], ViewSource]] = {
    "raw": lambda model, options: RawLayerViews(model, options, fused=True),
    "raw_heads": lambda model, options: RawLayerViews(model, options, fused=False),
    "rollout": RolloutViews,
}


def view_source(name: str, model: nn.Module, options: Mapping[str, Any]) -> ViewSource:
    """How the views of the benchmark method ``name`` are built.

    Args:
        name: a method of :data:`~attnexplain.benchmark.registry.METHODS`.
        model: the model.
        options: the method's options in the run.

    Returns:
        ``views(inputs, maps) -> list[MapViews]``: grid views for :data:`GRID_VIEWS`' methods
        (``maps`` unused), the scored maps themselves for the others.
    """
    if name in GRID_VIEWS:
        return GRID_VIEWS[name](model, options)
    return lambda inputs, maps: own_views(maps)


# ----------------------------------------------------------------------------------------------
# The run folder
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredSample:
    """An image as the run saw it.

    Attributes:
        image_id: the sample's id.
        image: ``(H, W, 3)`` uint8 at the model's input size.
        mask: ``(H, W)`` bool, the object mask the maps were scored against, resized (nearest).
        ignore: ``(H, W)`` bool pixels left out of the scores.
    """

    image_id: str
    image: np.ndarray
    mask: np.ndarray
    ignore: np.ndarray


def sample_path(folder: Path, index: int) -> Path:
    """``maps/<index>.npz``."""
    return folder / f"{index:06d}.npz"


def views_path(folder: Path, index: int, method: str) -> Path:
    """``maps/<index>-<method>.npz``."""
    return folder / f"{index:06d}-{method}.npz"


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (a temporary file renamed over it)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)


def save_sample(
    folder: Path,
    index: int,
    image_id: str,
    image: torch.Tensor,
    mask: torch.Tensor,
    ignore: torch.Tensor,
) -> Path:
    """Store one image (``(3, H, W)`` in ``[0, 1]``) with its ``(H, W)`` mask and ignore region.

    Returns:
        The file written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    path = sample_path(folder, index)
    _save_npz(
        path,
        {
            "image_id": np.array(str(image_id)),
            "image": pixels.permute(1, 2, 0).cpu().numpy(),
            "mask": mask.bool().cpu().numpy(),
            "ignore": ignore.bool().cpu().numpy(),
        },
    )
    return path


def save_views(folder: Path, index: int, method: str, views: MapViews) -> Path:
    """Quantise ``views`` and store them as ``maps/<index>-<method>.npz``.

    Returns:
        The file written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    quantised = quantise(views)
    path = views_path(folder, index, method)
    _save_npz(path, {name: getattr(quantised, name) for name in _STORED})
    return path


def load_views(path: Path) -> QuantisedViews:
    """Read one ``maps/<index>-<method>.npz``.

    Raises:
        ValueError: if the file lacks one of the :class:`QuantisedViews` arrays.
    """
    with np.load(path) as data:
        missing = [name for name in _STORED if name not in data.files]
        if missing:
            raise ValueError(f"{path} is not a map file of this version: no {', '.join(missing)}")
        return QuantisedViews(**{name: data[name] for name in _STORED})


def load_sample(path: Path) -> StoredSample:
    """Read one ``maps/<index>.npz``."""
    with np.load(path) as data:
        return StoredSample(str(data["image_id"]), data["image"], data["mask"], data["ignore"])


@dataclass(frozen=True)
class StoredMaps:
    """Everything a run folder's ``maps/`` holds.

    Attributes:
        samples: dataset index -> :class:`StoredSample`.
        views: ``(index, method)`` -> :class:`QuantisedViews`.
    """

    samples: dict[int, StoredSample]
    views: dict[tuple[int, str], QuantisedViews]


def load_maps(run_dir: str | Path) -> StoredMaps:
    """Read ``run_dir/maps`` (empty when the folder is missing).

    Raises:
        ValueError: for a file name that is not ``<index>.npz`` or ``<index>-<method>.npz``.
    """
    folder = Path(run_dir) / MAPS_DIR
    samples: dict[int, StoredSample] = {}
    views: dict[tuple[int, str], QuantisedViews] = {}
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        index, _, method = path.stem.partition("-")
        if not index.isdigit():
            raise ValueError(f"{path}: not a map file (expected <index>.npz or <index>-<method>)")
        if method:
            views[int(index), method] = load_views(path)
        else:
            samples[int(index)] = load_sample(path)
    return StoredMaps(samples, views)


def store_batch(
    folder: Path, indices: Sequence[int], method: str, views: Iterable[MapViews]
) -> None:
    """Store one batch's views of ``method``: image ``indices[j]`` gets ``views[j]``."""
    for index, sample_views in zip(indices, views, strict=True):
        save_views(folder, int(index), method, sample_views)
