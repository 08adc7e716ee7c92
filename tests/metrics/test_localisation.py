"""Localisation metrics: hand-computed cases, agreement with scikit-learn, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    jaccard_score,
    roc_auc_score,
)

from attnexplain.metrics import (
    AUROC,
    AveragePrecision,
    BestHeadJaccard,
    EnergyPointingGame,
    LocalisationMetric,
    MassJaccard,
    MeanIoU,
    PixelAccuracy,
    PointingGame,
    chefer_binarise,
    mass_threshold_mask,
)
from attnexplain.metrics.localisation import dilate

ALL_METRICS = [
    MassJaccard(),
    BestHeadJaccard(),
    PixelAccuracy(),
    MeanIoU(),
    AveragePrecision(),
    AveragePrecision(include_background=True),
    AUROC(),
    PointingGame(),
    PointingGame(tolerance=1),
    EnergyPointingGame(),
]
# Rank-based: the score depends only on the order of the map's values.
RANK_METRICS = [AveragePrecision(), AUROC(), PointingGame(), PointingGame(tolerance=1)]
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)


def _ids(metric: LocalisationMetric) -> str:
    return repr(metric)


# The 4×4 example the hand computations below refer to.
MASK_4x4 = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)[
    None
]
MAP_4x4 = torch.tensor(
    [[4, 3, 0, 0], [2, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.float32
)[None, None]


def _half_mask(height: int = 4, width: int = 4) -> torch.Tensor:
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    mask[0, : height // 2] = True
    return mask


# --- hand-computed cases ---------------------------------------------------------------------


class TestHandComputed:
    def test_mass_jaccard(self) -> None:
        # Mass 10; ascending cumsum/10 ends 0.1, 0.3, 0.6, 1.0: keep > 0.4 is {4, 3} → 2/4.
        assert MassJaccard(mass=0.6)(MAP_4x4, MASK_4x4).item() == 0.5
        # keep > 0.2 adds the 2, all inside the mask → 3/4.
        assert MassJaccard(mass=0.8)(MAP_4x4, MASK_4x4).item() == 0.75
        # mass 1 keeps every positive pixel: {4, 3, 2, 1} vs 4 mask pixels, 3 shared → 3/5.
        assert MassJaccard(mass=1.0)(MAP_4x4, MASK_4x4).item() == pytest.approx(3 / 5)

    def test_chefer_binarisation(self) -> None:
        # min-max → map / 4, mean 10 / 4 / 16 = 0.15625: foreground is the 4, 3, 2 and 1.
        normalised, foreground = chefer_binarise(MAP_4x4.flatten())
        assert normalised.max() == 1.0 and normalised.min() == 0.0
        assert foreground.view(4, 4).nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [2, 2]]

    def test_pixel_accuracy(self) -> None:
        # Wrong at (1, 1) (missed) and (2, 2) (false alarm): 14 / 16.
        assert PixelAccuracy()(MAP_4x4, MASK_4x4).item() == 14 / 16

    def test_mean_iou(self) -> None:
        # Foreground: 3 shared, union 5. Background: 12 predicted, 12 true, 11 shared, union 13.
        expected = (3 / 5 + 11 / 13) / 2
        assert MeanIoU()(MAP_4x4, MASK_4x4).item() == pytest.approx(expected)

    def test_auroc(self) -> None:
        # Positives 4, 3, 2, 0 vs negatives one 1 and eleven 0s: the first three beat all 12,
        # the 0 loses to the 1 and ties eleven times: (36 + 5.5) / 48.
        assert AUROC()(MAP_4x4, MASK_4x4).item() == pytest.approx(41.5 / 48)

    def test_average_precision(self) -> None:
        # Precision 1 up to recall 0.75, then the last positive arrives at rank 16: 4/16.
        assert AveragePrecision()(MAP_4x4, MASK_4x4).item() == pytest.approx(0.75 + 0.25 * 0.25)

    def test_energy_pointing_game(self) -> None:
        assert EnergyPointingGame()(MAP_4x4, MASK_4x4).item() == pytest.approx(0.9)

    @pytest.mark.parametrize(
        ("rows", "expected"), [(slice(0, 2), 1.0), (slice(1, 3), 0.5), (slice(2, 4), 0.0)]
    )
    def test_energy_all_half_none_inside(self, rows: slice, expected: float) -> None:
        attributions = torch.zeros(1, 1, 4, 4)
        attributions[0, 0, rows] = 2.0
        assert EnergyPointingGame()(attributions, _half_mask()).item() == expected

    def test_pointing_game_hit_and_miss(self) -> None:
        assert PointingGame()(MAP_4x4, MASK_4x4).item() == 1.0
        assert PointingGame()(MAP_4x4, ~MASK_4x4).item() == 0.0

    def test_pointing_game_tolerance(self) -> None:
        # The maximum (0, 0) is sqrt(18) ≈ 4.24 px from the mask pixel (3, 3).
        mask = torch.zeros(1, 4, 4, dtype=torch.bool)
        mask[0, 3, 3] = True
        assert PointingGame(tolerance=4)(MAP_4x4, mask).item() == 0.0
        assert PointingGame(tolerance=5)(MAP_4x4, mask).item() == 1.0

    def test_pointing_game_ties_score_the_fraction_that_hits(self) -> None:
        attributions = torch.zeros(1, 1, 4, 4)
        attributions[0, 0, 0, :] = 1.0  # four tied maxima, two of them inside the mask
        mask = torch.zeros(1, 4, 4, dtype=torch.bool)
        mask[0, :, :2] = True
        assert PointingGame()(attributions, mask).item() == 0.5

    def test_dilate_disk(self) -> None:
        mask = torch.zeros(1, 5, 5, dtype=torch.bool)
        mask[0, 2, 2] = True
        assert dilate(mask, 0).sum() == 1
        assert dilate(mask, 1).sum() == 5  # a plus
        assert dilate(mask, 2).sum() == 13  # 1 + 4 + 8: offsets with dx² + dy² <= 4

    def test_best_head_jaccard_picks_the_best_head(self) -> None:
        heads = torch.cat([MAP_4x4, MASK_4x4[:, None].float(), (~MASK_4x4)[:, None].float()], 1)
        scores = BestHeadJaccard(mass=1.0)(heads, MASK_4x4)
        assert scores.item() == 1.0
        per_head = [MassJaccard(mass=1.0)(heads[:, [k]], MASK_4x4).item() for k in range(3)]
        assert per_head == pytest.approx([0.6, 1.0, 0.0])

    def test_mass_jaccard_on_a_plateau_keeps_about_mass(self) -> None:
        # A binary map equal to a 10-pixel mask: keep k with k / 10 > 0.4, i.e. 6 of 10.
        mask = torch.zeros(1, 4, 4, dtype=torch.bool)
        mask.view(-1)[:10] = True
        assert MassJaccard(mass=0.6)(mask[:, None].float(), mask).item() == 0.6

    def test_scores_are_per_sample_float64(self) -> None:
        attributions = torch.cat([MAP_4x4, MAP_4x4.flip(-1)])
        masks = torch.cat([MASK_4x4, MASK_4x4])
        for metric in ALL_METRICS:
            scores = metric(attributions, masks)
            assert scores.shape == (2,) and scores.dtype == torch.float64
            assert scores[0] == metric(MAP_4x4, MASK_4x4)[0]


# --- signed maps -----------------------------------------------------------------------------


def test_mass_based_metrics_clamp_negative_values() -> None:
    signed = MAP_4x4.clone()
    signed[0, 0, 3, :] = -100.0  # strongly negative pixels outside the mask
    assert EnergyPointingGame()(signed, MASK_4x4) == EnergyPointingGame()(MAP_4x4, MASK_4x4)
    assert MassJaccard()(signed, MASK_4x4) == MassJaccard()(MAP_4x4, MASK_4x4)


def test_all_negative_map_has_no_energy_and_no_mass() -> None:
    negative = -torch.rand(1, 1, 4, 4) - 0.1
    assert EnergyPointingGame()(negative, MASK_4x4).item() == 0.0
    assert MassJaccard()(negative, MASK_4x4).item() == 0.0


# --- degenerate cases ------------------------------------------------------------------------

EMPTY = torch.zeros(1, 4, 4, dtype=torch.bool)
FULL = torch.ones(1, 4, 4, dtype=torch.bool)
CONSTANT = torch.full((1, 1, 4, 4), 3.0)
ZERO = torch.zeros(1, 1, 4, 4)


@pytest.mark.parametrize(
    ("metric", "attributions", "mask", "expected"),
    [
        (MassJaccard(), MAP_4x4, EMPTY, 0.0),
        (MassJaccard(), ZERO, EMPTY, 1.0),  # two empty sets agree
        (MassJaccard(), ZERO, MASK_4x4, 0.0),
        (MassJaccard(mass=1.0), MAP_4x4, FULL, 4 / 16),
        (AUROC(), MAP_4x4, EMPTY, 0.5),
        (AUROC(), MAP_4x4, FULL, 0.5),
        (AUROC(), CONSTANT, MASK_4x4, 0.5),
        (AveragePrecision(), MAP_4x4, EMPTY, 0.0),
        (AveragePrecision(), MAP_4x4, FULL, 1.0),
        (AveragePrecision(), CONSTANT, MASK_4x4, 4 / 16),
        (PixelAccuracy(), CONSTANT, MASK_4x4, 12 / 16),  # all background
        (PixelAccuracy(), CONSTANT, EMPTY, 1.0),
        (PixelAccuracy(), CONSTANT, FULL, 0.0),
        (MeanIoU(), CONSTANT, EMPTY, 1.0),  # foreground absent from both: left out
        (MeanIoU(), CONSTANT, FULL, 0.0),
        (MeanIoU(), MAP_4x4, EMPTY, (0 + 12 / 16) / 2),  # false foreground: IoU 0, counted
        (PointingGame(), CONSTANT, MASK_4x4, 4 / 16),  # chance, not a free hit
        (PointingGame(), MAP_4x4, EMPTY, 0.0),
        (PointingGame(), MAP_4x4, FULL, 1.0),
        (EnergyPointingGame(), ZERO, MASK_4x4, 0.0),
        (EnergyPointingGame(), MAP_4x4, EMPTY, 0.0),
        (EnergyPointingGame(), MAP_4x4, FULL, 1.0),
        (EnergyPointingGame(), CONSTANT, MASK_4x4, 4 / 16),
    ],
    ids=lambda value: repr(value) if isinstance(value, LocalisationMetric) else "",
)
def test_degenerate_values(
    metric: LocalisationMetric, attributions: torch.Tensor, mask: torch.Tensor, expected: float
) -> None:
    assert metric(attributions, mask).item() == pytest.approx(expected)


# --- ignore ----------------------------------------------------------------------------------


def test_ignored_pixels_are_removed_before_scoring() -> None:
    attributions = MAP_4x4.clone()
    attributions[0, 0, 3, 3] = 1000.0  # would dominate every metric
    ignore = torch.zeros(1, 4, 4, dtype=torch.bool)
    ignore[0, 3, 3] = True
    for metric in ALL_METRICS:
        expected = metric(
            MAP_4x4.flatten()[:-1].view(1, 1, 1, 15), MASK_4x4.view(1, 1, 16)[..., :-1]
        )
        assert metric(attributions, MASK_4x4, ignore=ignore) == expected, repr(metric)


def test_pointing_game_dilation_crosses_ignored_pixels() -> None:
    attributions = torch.zeros(1, 1, 1, 3)
    attributions[0, 0, 0, 2] = 1.0
    mask = torch.tensor([[[True, False, False]]])
    ignore = torch.tensor([[[False, True, False]]])
    assert PointingGame(tolerance=2)(attributions, mask, ignore=ignore).item() == 1.0


def test_auroc_with_ignore_matches_sklearn_on_kept_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    attributions = torch.rand(1, 1, 8, 8, generator=generator)
    masks = torch.rand(1, 8, 8, generator=generator) > 0.5
    ignore = torch.rand(1, 8, 8, generator=generator) > 0.7
    keep = ~ignore[0]
    expected = roc_auc_score(masks[0][keep].numpy(), attributions[0, 0][keep].numpy())
    assert AUROC()(attributions, masks, ignore=ignore).item() == pytest.approx(expected)


# --- agreement with scikit-learn -------------------------------------------------------------


@pytest.fixture
def random_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    attributions = torch.randn(6, 1, 12, 10, generator=generator)
    # Blobs rather than salt-and-pepper, with both classes present in every sample.
    masks = torch.rand(6, 12, 10, generator=generator) + attributions[:, 0] * 0.5 > 0.8
    masks[:, 0, 0], masks[:, -1, -1] = True, False
    return attributions, masks


def test_auroc_and_ap_agree_with_sklearn(random_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    attributions, masks = random_batch
    auroc, ap = AUROC()(attributions, masks), AveragePrecision()(attributions, masks)
    for i in range(len(masks)):
        y, s = masks[i].flatten().numpy(), attributions[i, 0].flatten().numpy()
        assert auroc[i].item() == pytest.approx(roc_auc_score(y, s))
        assert ap[i].item() == pytest.approx(average_precision_score(y, s))


def test_chefer_metrics_agree_with_sklearn(random_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    attributions, masks = random_batch
    accuracy, miou = PixelAccuracy()(attributions, masks), MeanIoU()(attributions, masks)
    for i in range(len(masks)):
        y = masks[i].flatten().numpy()
        predicted = chefer_binarise(attributions[i, 0].flatten())[1].numpy()
        assert accuracy[i].item() == pytest.approx(accuracy_score(y, predicted))
        expected = jaccard_score(y, predicted, average="macro", labels=[0, 1])
        assert miou[i].item() == pytest.approx(expected)


def test_mass_jaccard_agrees_with_sklearn(random_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    attributions, masks = random_batch
    scores = MassJaccard()(attributions, masks)
    kept = mass_threshold_mask(attributions[:, 0].clamp(min=0))
    for i in range(len(masks)):
        expected = jaccard_score(masks[i].flatten().numpy(), kept[i].flatten().numpy())
        assert scores[i].item() == pytest.approx(expected)


def test_chefer_ap_with_background_pools_both_channels(
    random_batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    attributions, masks = random_batch
    masks = masks.clone()
    masks[1] = False  # no foreground: the background channel still has positives
    scores = AveragePrecision(include_background=True)(attributions, masks)
    for i in range(2):
        normalised = chefer_binarise(attributions[i, 0].flatten())[0].numpy()
        y = masks[i].flatten().numpy()
        pooled = average_precision_score(
            np.concatenate([~y, y]), np.concatenate([1 - normalised, normalised])
        )
        assert scores[i].item() == pytest.approx(pooled)


# --- properties ------------------------------------------------------------------------------


@st.composite
def map_and_mask(draw: st.DrawFn, low: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer-valued maps (so transforms cannot merge distinct values) and any masks."""
    batch, height, width = draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(2, 6))
    maps = draw(arrays(np.int64, (batch, 1, height, width), elements=st.integers(low, 20)))
    masks = draw(arrays(np.bool_, (batch, height, width)))
    return torch.from_numpy(maps).double(), torch.from_numpy(masks)


@PROPERTY_SETTINGS
@given(case=map_and_mask(), exponent=st.integers(-4, 4))
def test_invariant_to_positive_scaling(
    case: tuple[torch.Tensor, torch.Tensor], exponent: int
) -> None:
    # Powers of two scale floats exactly, so mass and mean thresholds cannot flip on rounding.
    attributions, masks = case
    for metric in ALL_METRICS:
        assert torch.equal(metric(attributions * 2.0**exponent, masks), metric(attributions, masks))


@PROPERTY_SETTINGS
@given(case=map_and_mask(low=-20), scale=st.floats(0.1, 100.0), shift=st.floats(-50.0, 50.0))
def test_rank_metrics_invariant_to_monotone_transforms(
    case: tuple[torch.Tensor, torch.Tensor], scale: float, shift: float
) -> None:
    attributions, masks = case
    transformed = torch.exp(attributions / 8.0) * scale + shift  # strictly increasing
    for metric in RANK_METRICS:
        assert torch.allclose(metric(transformed, masks), metric(attributions, masks))


@PROPERTY_SETTINGS
@given(case=map_and_mask())
def test_mask_scored_against_itself(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, masks = case
    attributions = masks[:, None].double()
    present = masks.flatten(1).any(1).double()
    partial = present * (~masks).flatten(1).any(1).double()  # both classes present
    assert torch.equal(MassJaccard(mass=1.0)(attributions, masks), torch.ones(len(masks)).double())
    assert torch.equal(EnergyPointingGame()(attributions, masks), present)
    assert torch.equal(PointingGame()(attributions, masks), present)
    assert torch.equal(AveragePrecision()(attributions, masks), present)
    assert torch.equal(AUROC()(attributions, masks), torch.where(partial > 0, 1.0, 0.5).double())
    assert torch.equal(PixelAccuracy()(attributions, masks)[partial > 0], partial[partial > 0])
    assert torch.equal(MeanIoU()(attributions, masks)[partial > 0], partial[partial > 0])


@PROPERTY_SETTINGS
@given(case=map_and_mask(low=-20), fill=st.booleans())
def test_empty_and_full_masks_give_finite_scores_in_unit_range(
    case: tuple[torch.Tensor, torch.Tensor], fill: bool
) -> None:
    attributions, masks = case
    masks = torch.full_like(masks, fill)
    for metric in ALL_METRICS:
        scores = metric(attributions, masks)
        assert torch.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()


@PROPERTY_SETTINGS
@given(case=map_and_mask(low=-20))
def test_best_head_is_max_over_heads(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    attributions, masks = case
    heads = torch.cat([attributions, attributions.flip(-1), -attributions], dim=1)
    per_head = torch.stack([MassJaccard()(heads[:, [k]], masks) for k in range(3)], dim=1)
    assert torch.equal(BestHeadJaccard()(heads, masks), per_head.max(dim=1).values)


# --- validation ------------------------------------------------------------------------------


class TestValidation:
    def test_several_maps_need_a_per_head_metric(self) -> None:
        with pytest.raises(ValueError, match=r"one map per sample.*K = 3"):
            MassJaccard()(torch.rand(1, 3, 4, 4), MASK_4x4)

    def test_mask_shape_mismatch(self) -> None:
        with pytest.raises(ValueError, match=r"masks shape mismatch: expected \(1, 4, 4\)"):
            AUROC()(MAP_4x4, torch.zeros(1, 4, 5, dtype=torch.bool))

    def test_ignore_shape_mismatch(self) -> None:
        with pytest.raises(ValueError, match=r"ignore shape mismatch"):
            AUROC()(MAP_4x4, MASK_4x4, ignore=torch.zeros(2, 4, 4, dtype=torch.bool))

    def test_mask_must_be_bool(self) -> None:
        with pytest.raises(TypeError, match=r"masks must be a bool tensor, got dtype torch.int64"):
            AUROC()(MAP_4x4, MASK_4x4.long())

    def test_attributions_must_be_float_tensor(self) -> None:
        with pytest.raises(TypeError, match=r"attributions must be a floating-point tensor"):
            AUROC()(MAP_4x4.long(), MASK_4x4)
        with pytest.raises(TypeError, match=r"attributions must be a torch.Tensor"):
            AUROC()(MAP_4x4.numpy(), MASK_4x4)

    def test_attributions_must_be_4d(self) -> None:
        with pytest.raises(ValueError, match=r"\(B, K, H, W\), got shape \(1, 4, 4\)"):
            AUROC()(MAP_4x4[0], MASK_4x4)

    def test_nan_in_map(self) -> None:
        with pytest.raises(ValueError, match="NaN or infinite"):
            EnergyPointingGame()(MAP_4x4 / 0.0, MASK_4x4)

    def test_empty_batch(self) -> None:
        with pytest.raises(ValueError, match="empty batch"):
            EnergyPointingGame()(torch.zeros(0, 1, 4, 4), torch.zeros(0, 4, 4, dtype=torch.bool))

    def test_everything_ignored(self) -> None:
        ignore = torch.ones(2, 4, 4, dtype=torch.bool)
        ignore[0, 0, 0] = False
        with pytest.raises(ValueError, match=r"ignore covers every pixel of sample\(s\) \[1\]"):
            AUROC()(MAP_4x4.expand(2, -1, -1, -1), MASK_4x4.expand(2, -1, -1), ignore=ignore)

    @pytest.mark.parametrize("mass", [0.0, -0.1, 1.5, math.nan])
    def test_mass_range(self, mass: float) -> None:
        with pytest.raises(ValueError, match=r"mass must be in \(0, 1\]"):
            MassJaccard(mass=mass)
        with pytest.raises(ValueError, match=r"mass must be in \(0, 1\]"):
            BestHeadJaccard(mass=mass)

    def test_tolerance(self) -> None:
        with pytest.raises(ValueError, match="tolerance must be >= 0 pixels, got -1"):
            PointingGame(tolerance=-1)
        with pytest.raises(TypeError, match="tolerance must be an int"):
            PointingGame(tolerance=1.5)  # type: ignore[arg-type]


def test_metadata() -> None:
    names = [metric.name for metric in ALL_METRICS]
    assert len(set(names)) == len(names) - 2  # AP and the pointing game appear twice
    for metric in ALL_METRICS:
        assert metric.category == "localisation"
        assert metric.higher_is_better is True
    assert repr(PointingGame(tolerance=15)) == "PointingGame(tolerance=15)"
    assert repr(MassJaccard()) == "MassJaccard(mass=0.6)"
