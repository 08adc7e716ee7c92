"""DINO's attention-mass threshold, shared by the Jaccard metrics and the mask drawings."""

from __future__ import annotations

import torch


def mass_threshold_mask(maps: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """Keep the smallest set of top-valued pixels that holds ``mass`` of each map's total.

    This is DINO's ``visualize_attention.py`` rule (sort ascending, normalise, cumulative sum,
    keep ``cumsum > 1 - mass``), applied independently to every map in the leading dimensions.

    Args:
        maps: ``(..., H, W)`` non-negative maps (attention or any attribution clipped at 0).
        mass: fraction of the total mass to keep, in ``(0, 1]``.

    Returns:
        ``(..., H, W)`` bool mask. A map whose total is 0 gives an all-False mask.

    Raises:
        ValueError: if ``mass`` is outside ``(0, 1]``, ``maps`` has fewer than 2 dims or holds
            NaNs or negative values.
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    if maps.dim() < 2:
        raise ValueError(f"maps must be (..., H, W), got shape {tuple(maps.shape)}")
    if torch.isnan(maps).any():
        raise ValueError("maps contain NaN values; check the attribution that produced them")
    if (maps < 0).any():
        raise ValueError("maps must be non-negative; clip signed attributions with .clamp(min=0)")
    shape = maps.shape
    flat = maps.reshape(-1, shape[-2] * shape[-1]).double()
    values, order = torch.sort(flat, dim=1)
    total = values.sum(dim=1, keepdim=True)
    cumulative = torch.cumsum(values, dim=1) / total.clamp_min(torch.finfo(torch.float64).tiny)
    keep_sorted = (cumulative > 1.0 - mass) & (total > 0)
    keep = torch.empty_like(keep_sorted)
    keep.scatter_(1, order, keep_sorted)
    return keep.reshape(shape)
