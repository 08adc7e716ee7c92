"""The base every attribution method stands on.

:class:`ViTAttribution` subclasses Captum's ``Attribution``: it resolves the model's adapter,
validates inputs and targets, and exposes the logits forward function Captum's metrics call.
:class:`MapAttribution` adds the shared map contract: a method computes ``(B, K, h, w)`` on the
patch grid, the base drops nothing further and upsamples to the input size.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Literal

import torch
import torch.nn.functional as F
from captum.attr import Attribution
from torch import nn

from attnexplain.capture import ModelAdapter, TokenLayout, resolve_adapter
from attnexplain.capture.kernel import full_precision
from attnexplain.methods._checks import check_bool
from attnexplain.methods.targets import TargetLike, class_indices

Interpolation = Literal["bilinear", "nearest", "bicubic"]
#: What ``attribute(inputs, target)`` accepts: see :mod:`attnexplain.methods.targets`.
Target = TargetLike


class ViTAttribution(Attribution, ABC):
    """Base of all methods: a model, its adapter and input validation.

    Args:
        model: the vision transformer (any supported family) or a ``ModelAdapter``.

    Raises:
        TypeError: if ``model`` is not a module.
        UnsupportedModelError: if the model has no attention this library can read.
    """

    def __init__(self, model: nn.Module | ModelAdapter) -> None:
        self.adapter = resolve_adapter(model)
        self.model = self.adapter.model
        super().__init__(self.adapter.logits_forward)

    @classmethod
    def get_name(cls) -> str:
        """Readable name for tables and plots, keeping acronyms whole ("Raw CLS Attention")."""
        return re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", cls.__name__)

    def validate_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Check ``inputs`` is a finite float ``(B, C, H, W)`` batch the model can run on.

        A 1-tuple holding the batch (Captum's convention) is unwrapped.

        Raises:
            TypeError: for a non-tensor or non-float tensor.
            ValueError: for a wrong rank, channel count, empty batch, NaN/inf values, or an
                input size the model cannot run at.
        """
        if isinstance(inputs, tuple) and len(inputs) == 1:
            inputs = inputs[0]  # Captum's metrics pass inputs as a 1-tuple
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(
                f"inputs must be a torch.Tensor (B, C, H, W), got {type(inputs).__name__}"
            )
        if inputs.dim() != 4:
            shape = tuple(inputs.shape)
            if inputs.dim() == 3:
                hint = "add a batch dimension with inputs.unsqueeze(0)"
            elif inputs.dim() > 4 and all(size == 1 for size in shape[1:-3]):
                hint = "drop the extra axes with inputs.reshape(-1, *inputs.shape[-3:])"
            else:
                hint = "pass images as one (B, C, H, W) tensor (video frames: fold time into B)"
            raise ValueError(f"inputs must be a (B, C, H, W) batch, got shape {shape}; {hint}")
        if not inputs.is_floating_point():
            raise TypeError(f"inputs must be a float tensor, got {inputs.dtype}; use .float()")
        if inputs.shape[0] == 0:
            raise ValueError("inputs is an empty batch (B = 0)")
        channels = self.adapter.in_channels
        if inputs.shape[1] != channels:
            raise ValueError(
                f"inputs have {inputs.shape[1]} channels but the model's patch embedding expects "
                f"{channels}"
            )
        if not torch.isfinite(inputs).all():
            raise ValueError("inputs contain NaN or infinite values")
        self.adapter.check_input_size(int(inputs.shape[-2]), int(inputs.shape[-1]))
        return inputs

    def validate_target(self, target: Target, batch: int, logits: torch.Tensor) -> torch.Tensor:
        """Resolve a class target to a ``(B,)`` int64 tensor of class indices.

        Gradient methods score every kind of target (prompts, embeddings, callables) through
        :func:`~attnexplain.methods._gradients.target_score`; this resolves the class ones.

        Args:
            target: an int (or numpy integer) or label name for every sample, one per sample
                (list, tensor or array), or ``None`` for the predicted class.
            batch: the batch size.
            logits: ``(B, classes)`` logits of the batch.

        Raises:
            ValueError: for a wrong length, a class index out of range or an unknown label.
            TypeError: for a target that is not a class.
        """
        if logits.shape[0] != batch:
            raise ValueError(f"logits hold {logits.shape[0]} samples for a batch of {batch}")
        return class_indices(target, self.adapter, logits)

    @abstractmethod
    def attribute(self, inputs: torch.Tensor, target: Target = None, **kwargs) -> torch.Tensor:
        """Compute the attribution of ``inputs``."""


def patch_tokens_to_grid(tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Drop prefix tokens and lay patch tokens out on the grid.

    Args:
        tokens: ``(B, K, N)`` values per token (``N`` = prefix + patches).
        layout: the token layout.

    Returns:
        ``(B, K, h, w)``.
    """
    patches = tokens[..., layout.num_prefix_tokens :]
    return patches.reshape(*tokens.shape[:2], *layout.grid)


def upsample_to_input(
    maps: torch.Tensor, layout: TokenLayout, interpolation: Interpolation = "bilinear"
) -> torch.Tensor:
    """Resize patch-grid maps to the input size.

    The grid covers ``(h * ph, w * pw)`` pixels; rows or columns the patch stem cropped (input not
    divisible by the patch) get 0, since the model never saw them.

    Args:
        maps: ``(B, K, h, w)``, or ``(B, L, K, h, w)`` (maps per layer).
        layout: the token layout of the input.
        interpolation: ``torch.nn.functional.interpolate`` mode.

    Returns:
        ``(B, K, H, W)`` (``(B, L, K, H, W)``).
    """
    covered = layout.covered_size
    kwargs = {} if interpolation == "nearest" else {"align_corners": False}
    leading = maps.shape[:-2]
    flat = maps.reshape(leading[0], -1, *maps.shape[-2:])
    resized = F.interpolate(flat, size=covered, mode=interpolation, **kwargs)
    pad_h = layout.input_size[0] - covered[0]
    pad_w = layout.input_size[1] - covered[1]
    if pad_h or pad_w:
        resized = F.pad(resized, (0, pad_w, 0, pad_h))
    return resized.reshape(*leading, *resized.shape[-2:])


class MapAttribution(ViTAttribution):
    """A method returning maps ``(B, K, H, W)`` (or ``(B, K, h, w)`` with ``upsample=False``).

    Subclasses implement :meth:`patch_maps`; this class validates and upsamples.

    Args:
        model: the vision transformer or its adapter.
        interpolation: how patch-grid maps are resized to the input.
    """

    def __init__(
        self, model: nn.Module | ModelAdapter, *, interpolation: Interpolation = "bilinear"
    ) -> None:
        super().__init__(model)
        if interpolation not in ("bilinear", "nearest", "bicubic"):
            raise ValueError(
                f"interpolation must be 'bilinear', 'nearest' or 'bicubic', got {interpolation!r}"
            )
        self.interpolation = interpolation

    @abstractmethod
    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        """``(B, K, h, w)`` maps on the patch grid and the layout they were read with."""

    def attribute(
        self, inputs: torch.Tensor, target: Target = None, *, upsample: bool = True
    ) -> torch.Tensor:
        """Attribution maps for a batch.

        Args:
            inputs: ``(B, C, H, W)`` float batch, preprocessed as the model expects (or a 1-tuple
                of it, Captum's convention: the result is then a 1-tuple too).
            target: class index per sample (int, sequence or tensor) or ``None`` for the
                predicted class; attention methods ignore it (their maps are class-agnostic).
            upsample: return maps at ``(H, W)`` (default) or on the patch grid ``(h, w)``.

        Returns:
            ``(B, K, H, W)`` or ``(B, K, h, w)`` float32 maps, unscaled.

        Raises:
            TypeError, ValueError: for invalid inputs or targets (see :meth:`validate_inputs`),
                or an ``upsample`` that is not a bool.
            UnsupportedModelError: when the model's attention cannot be read.
        """
        check_bool(upsample, "upsample")
        maps, layout = self.patch_maps(self.validate_inputs(inputs), target)
        with full_precision(maps.device):
            maps = maps.float()
            if upsample:
                maps = upsample_to_input(maps, layout, self.interpolation)
        return (maps,) if isinstance(inputs, tuple) else maps
