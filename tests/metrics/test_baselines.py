"""Random and centre-prior baseline maps."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from attnexplain.metrics import EnergyPointingGame, centre_gaussian_map, random_map


def test_random_map_shape_range_and_seed() -> None:
    maps = random_map(2, 5, 7, generator=torch.Generator().manual_seed(0))
    assert maps.shape == (2, 1, 5, 7) and maps.dtype == torch.float32
    assert (maps >= 0).all() and (maps < 1).all()
    again = random_map(2, 5, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(maps, again)
    assert not torch.equal(maps[0], maps[1])


def test_centre_gaussian_peak_symmetry_and_sigma() -> None:
    maps = centre_gaussian_map(3, 9, 15, sigma_fraction=0.25)
    assert maps.shape == (3, 1, 9, 15) and maps.dtype == torch.float32
    assert torch.equal(maps[0], maps[2])
    assert maps[0, 0, 4, 7].item() == 1.0 and maps.max().item() == 1.0
    assert torch.equal(maps, maps.flip(-1)) and torch.equal(maps, maps.flip(-2))
    # σ = 0.25 × min(9, 15) = 2.25 px; the pixel 2 columns right of the centre (4, 7).
    assert maps[0, 0, 4, 9].item() == pytest.approx(math.exp(-(2**2) / (2 * 2.25**2)))


def test_centre_gaussian_even_size_has_centre_between_pixels() -> None:
    maps = centre_gaussian_map(1, 4, 4)
    centre = maps[0, 0, 1:3, 1:3]
    assert torch.allclose(centre, centre[0, 0].expand(2, 2))
    assert maps.max().item() < 1.0


def test_centre_prior_beats_noise_on_a_centred_object() -> None:
    mask = torch.zeros(4, 16, 16, dtype=torch.bool)
    mask[:, 5:11, 5:11] = True
    metric = EnergyPointingGame()
    noise = metric(random_map(4, 16, 16, generator=torch.Generator().manual_seed(0)), mask)
    prior = metric(centre_gaussian_map(4, 16, 16), mask)
    assert (prior > noise).all()


@pytest.mark.parametrize("make", [random_map, centre_gaussian_map])
@pytest.mark.parametrize(
    ("sizes", "error", "message"),
    [
        ((0, 4, 4), ValueError, "batch must be >= 1, got 0"),
        ((1, 0, 4), ValueError, "height must be >= 1, got 0"),
        ((1, 4, 2.5), TypeError, "width must be an int, got float"),
    ],
)
def test_size_validation(
    make: Callable[..., torch.Tensor],
    sizes: tuple[int, int, float],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        make(*sizes)


@pytest.mark.parametrize("sigma_fraction", [0.0, -1.0, math.nan])
def test_sigma_fraction_validation(sigma_fraction: float) -> None:
    with pytest.raises(ValueError, match="sigma_fraction must be > 0"):
        centre_gaussian_map(1, 4, 4, sigma_fraction=sigma_fraction)
