"""The gap rule on norms whose split is known."""

from __future__ import annotations

import math

import pytest
import torch

from attnexplain.diagnostics import gap_threshold
from attnexplain.diagnostics.thresholds import check_rule


def _bulk(count: int, spread: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.exp(torch.randn(count, generator=generator, dtype=torch.float64) * spread + 3)


@pytest.mark.parametrize("count", [64, 256, 1024])
@pytest.mark.parametrize("seed", range(5))
def test_unimodal_norms_flag_nothing(count, seed):
    threshold, separation = gap_threshold(_bulk(count, 0.3, seed))
    assert threshold == math.inf
    assert 0 < separation < 3


@pytest.mark.parametrize(("outliers", "ratio"), [(1, 10.0), (3, 5.0), (20, 10.0), (100, 4.0)])
def test_separated_outliers_are_flagged_exactly(outliers, ratio):
    norms = _bulk(1024, 0.1)
    planted = torch.randperm(1024, generator=torch.Generator().manual_seed(1))[:outliers]
    norms[planted] *= ratio
    threshold, separation = gap_threshold(norms)
    assert set((norms > threshold).nonzero().flatten().tolist()) == set(planted.tolist())
    assert separation >= 3


def test_the_cut_is_the_geometric_mean_around_the_gap():
    norms = torch.tensor([10.0, 10.5, 11.0, 9.5, 10.2, 9.8, 160.0, 250.0])
    threshold, separation = gap_threshold(norms)
    assert threshold == pytest.approx(math.sqrt(11.0 * 160.0))
    log = torch.log(norms.double())
    spread = 1.4826 * float((log - log.median()).abs().median())
    assert separation == pytest.approx((math.log(160.0) - math.log(11.0)) / spread)


def test_a_majority_is_never_flagged():
    # Two equal halves: the cut would leave more than half above it on one side.
    norms = torch.cat([torch.full((5,), 10.0), torch.full((5,), 1000.0)])
    norms[:5] += torch.arange(5) * 0.1
    threshold, _ = gap_threshold(norms)
    assert (norms > threshold).sum() <= 5


def test_equal_norms_and_tiny_inputs_flag_nothing():
    assert gap_threshold(torch.full((16,), 7.0)) == (math.inf, 0.0)
    assert gap_threshold(torch.tensor([7.0])) == (math.inf, 0.0)


def test_a_narrow_gap_is_rejected_by_min_gap():
    norms = _bulk(256, 0.1)
    norms[0] = norms.max() * 1.5
    threshold, separation = gap_threshold(norms, min_gap=100.0)
    assert threshold == math.inf and 1 < separation < 100
    assert math.isfinite(gap_threshold(norms, min_gap=1.0)[0])


@pytest.mark.parametrize(
    ("threshold", "min_gap", "error", "message"),
    [
        ("otsu", 3.0, ValueError, "threshold must be a positive number or 'gap', got 'otsu'"),
        (-1.0, 3.0, ValueError, "threshold must be a positive finite norm, got -1.0"),
        (math.inf, 3.0, ValueError, "positive finite"),
        (True, 3.0, TypeError, "threshold must be a positive number"),
        ("gap", 0.0, ValueError, "min_gap must be positive"),
        ("gap", "3", TypeError, "min_gap must be a number"),
    ],
)
def test_rule_validation(threshold, min_gap, error, message):
    with pytest.raises(error, match=message):
        check_rule(threshold, min_gap)
