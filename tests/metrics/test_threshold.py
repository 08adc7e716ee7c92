"""DINO's mass threshold: hand-computed cases, its defining property, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnexplain.metrics import mass_threshold_mask


def test_hand_computed() -> None:
    # Mass 10; ascending cumsum / 10 ends 0.1, 0.3, 0.6, 1.0: keep > 0.4 is {4, 3}.
    maps = torch.tensor([[4.0, 3.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    kept = mass_threshold_mask(maps, mass=0.6)
    assert kept.nonzero().tolist() == [[0, 0], [0, 1]]


def test_mass_one_keeps_every_positive_pixel() -> None:
    maps = torch.tensor([[0.0, 1e-6, 2.0], [0.0, 3.0, 0.5]])
    assert torch.equal(mass_threshold_mask(maps, mass=1.0), maps > 0)


def test_zero_map_keeps_nothing() -> None:
    assert not mass_threshold_mask(torch.zeros(2, 3, 3)).any()


def test_leading_dimensions_are_independent_maps() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 3, 5, 4, generator=generator)
    kept = mass_threshold_mask(maps)
    assert kept.shape == maps.shape and kept.dtype == torch.bool
    for i in range(2):
        for j in range(3):
            assert torch.equal(kept[i, j], mass_threshold_mask(maps[i, j]))


@settings(max_examples=50, deadline=None)
@given(
    size=st.integers(1, 30),
    mass=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**16),
)
def test_smallest_top_set_holding_the_mass(size: int, mass: float, seed: int) -> None:
    # Distinct values (a shuffled 1..N) so the kept set is unique.
    values = torch.from_numpy(np.random.default_rng(seed).permutation(size) + 1.0)
    kept = mass_threshold_mask(values.view(1, -1), mass=mass).view(-1)
    total = values.sum()
    # It is a top set: every kept value exceeds every dropped one.
    if kept.any() and (~kept).any():
        assert values[kept].min() > values[~kept].max()
    # It holds the mass, and dropping its smallest member would not.
    assert values[kept].sum() >= mass * total - 1e-9
    assert values[kept].sum() - values[kept].min() < mass * total + 1e-9


@pytest.mark.parametrize("mass", [0.0, -0.5, 1.01, math.nan])
def test_mass_out_of_range(mass: float) -> None:
    with pytest.raises(ValueError, match=r"mass must be in \(0, 1\]"):
        mass_threshold_mask(torch.ones(2, 2), mass=mass)


def test_needs_two_dimensions() -> None:
    with pytest.raises(ValueError, match=r"maps must be \(\.\.\., H, W\), got shape \(4,\)"):
        mass_threshold_mask(torch.ones(4))


def test_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        mass_threshold_mask(torch.tensor([[1.0, math.nan]]))


def test_rejects_negative_values() -> None:
    with pytest.raises(ValueError, match=r"non-negative.*clamp\(min=0\)"):
        mass_threshold_mask(torch.tensor([[1.0, -0.5]]))
