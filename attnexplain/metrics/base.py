"""What every metric object shares: its metadata and the checks on the tensors it is given.

Metrics follow Quantus's habit of carrying their own metadata so a benchmark can sort and
report them without a lookup table: ``name`` (a column name), ``higher_is_better`` and
``category``. Each category has one calling convention, documented on its base class
(:class:`~attnexplain.metrics.localisation.LocalisationMetric`,
:class:`~attnexplain.metrics.faithfulness.FaithfulnessMetric`).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Literal

import torch

Category = Literal["localisation", "faithfulness", "randomisation", "class_specific"]


class Metric(abc.ABC):
    """Base of every metric object.

    Attributes:
        name: short snake_case identifier, used as the benchmark's column name.
        higher_is_better: whether a larger score means a better explanation.
        category: the family of the metric (Quantus's taxonomy).
    """

    # Plain attributes rather than ClassVars: a metric whose mode changes its meaning (deletion
    # vs insertion) sets them per instance.
    name: str
    higher_is_better: bool
    category: ClassVar[Category]

    @abc.abstractmethod
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Score a batch; the signature is fixed per category by the category's base class."""

    def _params(self) -> dict[str, Any]:
        """Constructor arguments shown by ``repr``; subclasses with arguments override it."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self._params().items())
        return f"{type(self).__name__}({args})"


def check_maps(maps: Any, name: str = "attributions", *, single: bool = True) -> torch.Tensor:
    """Validate a batch of attribution maps ``(B, K, H, W)``.

    Args:
        maps: the value to check.
        name: the argument's name, quoted in error messages.
        single: require ``K == 1`` (a fused map); ``False`` accepts any ``K >= 1`` (per-head maps).

    Returns:
        ``maps`` unchanged.

    Raises:
        TypeError: if ``maps`` is not a floating-point tensor.
        ValueError: if it is not 4-D, the batch is empty, ``K != 1`` when ``single``, a spatial
            size is 0, or it holds NaN or infinite values.
    """
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(maps).__name__}")
    if not maps.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {maps.dtype}")
    if maps.dim() != 4:
        raise ValueError(f"{name} must be (B, K, H, W), got shape {tuple(maps.shape)}")
    if maps.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B = 0); nothing to score")
    if single and maps.shape[1] != 1:
        raise ValueError(
            f"{name} must hold one map per sample, (B, 1, H, W), got K = {maps.shape[1]} "
            f"in shape {tuple(maps.shape)}; fuse the heads first or use a per-head metric"
        )
    if maps.shape[1] == 0 or maps.shape[2] == 0 or maps.shape[3] == 0:
        raise ValueError(f"{name} has an empty dimension: shape {tuple(maps.shape)}")
    if not torch.isfinite(maps).all():
        raise ValueError(
            f"{name} contains NaN or infinite values; check the attribution that produced them"
        )
    return maps


def check_pixel_mask(mask: Any, name: str, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """Validate a boolean pixel mask ``(B, H, W)`` against the maps it goes with.

    Args:
        mask: the value to check.
        name: the argument's name, quoted in error messages.
        batch: expected ``B``.
        size: expected ``(H, W)``.

    Returns:
        ``mask`` unchanged.

    Raises:
        TypeError: if ``mask`` is not a bool tensor.
        ValueError: if its shape is not ``(batch, *size)``.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    expected = (batch, *size)
    if tuple(mask.shape) != expected:
        raise ValueError(f"{name} shape mismatch: expected {expected}, got {tuple(mask.shape)}")
    return mask
