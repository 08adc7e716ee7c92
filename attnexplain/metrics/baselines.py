"""Reference maps every explanation should beat: uniform noise and a centre prior.

They have the attribution shape ``(B, 1, H, W)`` so any metric scores them like a method. The
centre prior matters because objects in photo datasets sit near the middle: a map that only
learned "look at the centre" already localises well (Judd et al. 2009, "Learning to predict
where humans look", ICCV, Sec. 4; Bylinskii et al. 2019, TPAMI, use it as a saliency baseline).
"""

from __future__ import annotations

from typing import Any

import torch


def _check_size(batch: Any, height: Any, width: Any) -> None:
    for name, value in (("batch", batch), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def random_map(
    batch: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Independent uniform noise in ``[0, 1)`` per pixel: the chance-level explanation.

    Args:
        batch: number of maps ``B``.
        height: map height ``H`` in pixels.
        width: map width ``W`` in pixels.
        generator: random generator for reproducible maps (on ``device``); the global one if
            ``None``.
        device: where to create the maps.

    Returns:
        ``(B, 1, H, W)`` float32 maps.

    Raises:
        TypeError: if a size is not an int.
        ValueError: if a size is < 1.

    Examples:
        >>> random_map(2, 4, 4, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 1, 4, 4])
    """
    _check_size(batch, height, width)
    return torch.rand((batch, 1, height, width), generator=generator, device=device)


def centre_gaussian_map(
    batch: int,
    height: int,
    width: int,
    sigma_fraction: float = 0.25,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """An isotropic Gaussian centred in the image, identical for every sample.

    ``exp(-((y - cy)² + (x - cx)²) / (2 σ²))`` with the centre ``((H - 1) / 2, (W - 1) / 2)`` in
    pixel-centre coordinates and ``σ = sigma_fraction * min(H, W)``; the peak is 1 (reached
    exactly when ``H`` and ``W`` are odd).

    Args:
        batch: number of maps ``B``.
        height: map height ``H`` in pixels.
        width: map width ``W`` in pixels.
        sigma_fraction: σ as a fraction of the shorter side, ``> 0``.
        device: where to create the maps.

    Returns:
        ``(B, 1, H, W)`` float32 maps.

    Raises:
        TypeError: if a size is not an int.
        ValueError: if a size is < 1 or ``sigma_fraction <= 0``.

    Examples:
        >>> centre_gaussian_map(1, 3, 3)[0, 0, 1, 1].item()
        1.0
    """
    _check_size(batch, height, width)
    if not sigma_fraction > 0:
        raise ValueError(f"sigma_fraction must be > 0, got {sigma_fraction}")
    sigma = sigma_fraction * min(height, width)
    ys = torch.arange(height, dtype=torch.float64, device=device) - (height - 1) / 2
    xs = torch.arange(width, dtype=torch.float64, device=device) - (width - 1) / 2
    squared = ys[:, None] ** 2 + xs[None, :] ** 2
    gaussian = torch.exp(-squared / (2 * sigma**2)).float()
    return gaussian.expand(batch, 1, height, width).clone()
