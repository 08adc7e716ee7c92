"""Argument checks shared by the attention methods."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from attnexplain.capture import ModelAdapter, PoolingHead, UnsupportedModelError
from attnexplain.capture.probes import HeadFusion, fuse_heads

HEAD_FUSIONS = ("mean", "max", "min")


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` if it is a bool, else raise ``TypeError`` naming the argument.

    ``upsample="no"`` or ``renormalize=0`` would otherwise be read by truthiness and silently do
    the opposite of what was meant.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_head_fusion(head_fusion: object, *, allow_none: bool) -> None:
    """Raise ``ValueError`` unless ``head_fusion`` is a fusion (or ``None`` when allowed)."""
    allowed = (*HEAD_FUSIONS, None) if allow_none else HEAD_FUSIONS
    if head_fusion not in allowed:
        raise ValueError(f"head_fusion must be one of {allowed}, got {head_fusion!r}")


def check_layer(layer: object, adapter: ModelAdapter, name: str = "layer") -> int:
    """Return ``layer`` as a non-negative index, or raise for a non-int or out-of-range one."""
    num_layers = adapter.num_layers
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"{name} must be an int, got {layer!r}")
    if not -num_layers <= layer < num_layers:
        raise ValueError(
            f"{name}={layer} is out of range for a model with {num_layers} attention layers "
            f"(valid: {-num_layers} .. {num_layers - 1})"
        )
    return layer % num_layers


def require_cls_token(adapter: ModelAdapter, method: str) -> int:
    """The CLS index, or ``UnsupportedModelError`` for a model without a CLS token."""
    cls_index = adapter.cls_index()
    if cls_index is None:
        raise UnsupportedModelError(
            f"{method} reads the CLS token's attention, but {type(adapter.model).__name__} has "
            "no CLS token (e.g. timm class_token=False); use MeanAttentionDistance or GradCAM"
        )
    return cls_index


def check_layers(layers: object, adapter: ModelAdapter, name: str = "layer") -> list[int]:
    """Resolve ``"all"`` or a sequence of layers to distinct non-negative indices, in order.

    Raises:
        TypeError: for anything but ``"all"`` or a sequence of ints (another string too).
        ValueError: for an empty sequence, a layer out of range, or a layer given twice (also
            as a negative index and its positive twin).
    """
    if isinstance(layers, str) and layers == "all":
        return list(range(adapter.num_layers))
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise TypeError(f"{name} must be an int, 'all' or a list of ints, got {layers!r}")
    if not layers:
        raise ValueError(f"{name} is an empty list; give at least one layer, or 'all'")
    resolved = [check_layer(layer, adapter, name) for layer in layers]
    repeated = sorted({layer for layer in resolved if resolved.count(layer) > 1})
    if repeated:
        raise ValueError(
            f"{name}={list(layers)!r} names layer(s) {repeated} more than once (negative "
            "indices count from the end); list each layer once"
        )
    return resolved


def readout_cls_index(adapter: ModelAdapter, method: str) -> int | None:
    """Where a rollout-style method reads the output from: the CLS index, or ``None`` when the
    model's output is read through an attention-pooling head (its query row is used instead).

    Raises:
        UnsupportedModelError: for a model with neither (it averages its tokens).
    """
    if adapter.pooling_head is not None:
        return None
    if adapter.cls_index() is None:
        raise UnsupportedModelError(
            f"{method} reads the row the output is read from, but "
            f"{type(adapter.model).__name__} has no CLS token and no attention-pooling head (it "
            "averages its tokens, e.g. timm global_pool='avg', SiglipForImageClassification); "
            "use MeanAttentionDistance or GradCAM"
        )
    return adapter.cls_index()


def pooling_rows(pooling: torch.Tensor, head: PoolingHead) -> torch.Tensor:
    """The pooling head's readout row per head: its readout queries' rows averaged.

    Args:
        pooling: ``(B, heads, Q, N)`` attention of the head's queries.
        head: the pooling head (which queries form the pooled output).

    Returns:
        ``(B, heads, N)``.
    """
    return pooling[:, :, head.queries].mean(dim=2)


def pooling_readout_row(
    pooling: torch.Tensor, head: PoolingHead, head_fusion: HeadFusion
) -> torch.Tensor:
    """The fused readout row of a pooling head, rescaled to sum 1: ``(B, 1, N)``.

    The learned query is not a token of the sequence and has no residual path to it, so
    unlike a layer's rows it gets no identity before it enters a rollout product.
    """
    fused = fuse_heads(pooling_rows(pooling, head), head_fusion)
    return (fused / fused.sum(dim=-1, keepdim=True)).unsqueeze(1)
