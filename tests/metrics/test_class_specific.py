"""Class-specific metrics: hand-computed cases, properties (hypothesis), agreement with Quantus."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attnexplain.metrics import (
    AUROC,
    BestHeadJaccard,
    ClassSensitivity,
    EnergyPointingGame,
    Leakage,
    NegativeQueryMass,
    ObjectLocalisation,
    TargetPointingGame,
)
from attnexplain.metrics.class_specific import exclusive_masks, other_object_masks

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)
PAIRED = [ObjectLocalisation(), ObjectLocalisation(AUROC()), Leakage(), TargetPointingGame()]


def _boxes(size: int, *boxes: tuple[int, int, int, int]) -> torch.Tensor:
    masks = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for k, (top, bottom, left, right) in enumerate(boxes):
        masks[k, top:bottom, left:right] = True
    return masks


# Two objects on an 8 x 8 image: class 0 top-left 3 x 3, class 1 bottom-right 2 x 4.
MASKS = _boxes(8, (0, 3, 0, 3), (5, 7, 3, 7))


@st.composite
def scene(draw: st.DrawFn, low: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random maps and 2-3 disjoint non-empty class masks (and background) on a small image."""
    size = draw(st.integers(4, 8))
    classes = draw(st.integers(2, 3))
    labels = draw(arrays(np.int64, (size * size,), elements=st.integers(-1, classes - 1)))
    labels[: classes + 1] = [*range(classes), -1]  # every class and the background have a pixel
    masks = np.stack([labels == c for c in range(classes)]).reshape(-1, size, size)
    value = st.floats(low, 10.0, allow_nan=False, width=32)
    maps = draw(arrays(np.float32, (classes, size, size), elements=value))
    return torch.from_numpy(maps), torch.from_numpy(masks)


# --- hand-computed cases ---------------------------------------------------------------------


def test_oracle_maps_score_perfectly() -> None:
    maps = MASKS.float()
    assert ObjectLocalisation()(maps, MASKS).tolist() == [1.0, 1.0]
    assert Leakage()(maps, MASKS).tolist() == [0.0, 0.0]
    assert ClassSensitivity()(maps, MASKS).tolist() == [1.0, 1.0]
    assert TargetPointingGame()(maps, MASKS).tolist() == [1.0, 1.0]


def test_swapped_maps_score_worst() -> None:
    maps = MASKS.flip(0).float()
    assert ObjectLocalisation()(maps, MASKS).tolist() == [0.0, 0.0]
    assert Leakage()(maps, MASKS).tolist() == [1.0, 1.0]
    assert ClassSensitivity()(maps, MASKS).tolist() == [-1.0, -1.0]
    assert TargetPointingGame()(maps, MASKS).tolist() == [0.0, 0.0]


def test_all_objects_map_leaks_the_other_object_share() -> None:
    # One map on both objects (9 + 8 pixels of equal value) answers both classes.
    union = MASKS.any(dim=0).float().expand(2, 8, 8)
    np.testing.assert_allclose(ObjectLocalisation()(union, MASKS), [9 / 17, 8 / 17])
    np.testing.assert_allclose(Leakage()(union, MASKS), [8 / 17, 9 / 17])
    assert ClassSensitivity()(union, MASKS).tolist() == [0.0, 0.0]
    # Ties over both objects: the hit fraction is the target's share of the tied pixels.
    np.testing.assert_allclose(TargetPointingGame()(union, MASKS), [9 / 17, 8 / 17])


def test_class_sensitivity_by_hand_with_three_classes() -> None:
    masks = _boxes(4, (0, 1, 0, 4), (1, 2, 0, 4), (2, 3, 0, 4))
    maps = torch.zeros(3, 4, 4)
    maps[0, 0] = 1.0  # map 0: all on its object
    maps[1, 0], maps[1, 1] = 1.0, 1.0  # map 1: half on object 0, half on its own
    maps[2, 3] = 1.0  # map 2: on the background
    # shares s[i, j]: s0 = (1, 0, 0), s1 = (.5, .5, 0), s2 = (0, 0, 0).
    # pair(0,1) = ((1 - 0) + (.5 - .5)) / 2 = .5; pair(0,2) = ((1 - 0) + (0 - 0)) / 2 = .5;
    # pair(1,2) = ((.5 - 0) + (0 - 0)) / 2 = .25.
    np.testing.assert_allclose(ClassSensitivity()(maps, masks), [0.5, 0.375, 0.375])


def test_target_pointing_game_tolerance_stops_at_other_objects() -> None:
    masks = _boxes(8, (0, 8, 0, 3), (0, 8, 4, 8))  # a one-column gap at column 3
    maps = torch.zeros(2, 8, 8)
    maps[0, 4, 3] = 1.0  # in the gap, one pixel from both objects
    maps[1, 4, 4] = 1.0  # on object 1, one pixel from object 0
    assert TargetPointingGame(tolerance=0)(maps, masks).tolist() == [0.0, 1.0]
    # Dilated by 2, object 0's region reaches the gap but not object 1's pixels.
    assert TargetPointingGame(tolerance=2)(maps, masks).tolist() == [1.0, 1.0]
    on_other = torch.zeros(2, 8, 8)
    on_other[0, 4, 4] = 1.0  # class 0's maximum on object 1, within the tolerance
    on_other[1] = maps[1]
    assert TargetPointingGame(tolerance=2)(on_other, masks).tolist() == [0.0, 1.0]


def test_overlapping_masks_are_not_leakage() -> None:
    masks = _boxes(4, (0, 2, 0, 4), (1, 3, 0, 4))  # row 1 belongs to both classes
    shared = torch.zeros(2, 4, 4)
    shared[:, 1] = 1.0  # both maps only on the shared row
    assert Leakage()(shared, masks).tolist() == [0.0, 0.0]
    assert ObjectLocalisation()(shared, masks).tolist() == [1.0, 1.0]
    # Shared pixels cannot tell the two maps apart.
    assert ClassSensitivity()(shared, masks).tolist() == [0.0, 0.0]
    assert exclusive_masks(masks)[0].nonzero()[:, 0].unique().tolist() == [0]
    assert other_object_masks(masks)[0].nonzero()[:, 0].unique().tolist() == [2]


def test_negative_query_mass() -> None:
    maps = torch.zeros(3, 8, 8)
    maps[0] = MASKS.any(dim=0).float()  # all on the present objects
    maps[1, 7, 0] = 1.0  # on the background
    maps[2, 0, 0], maps[2, 7, 0] = 3.0, 1.0  # three quarters on an object
    np.testing.assert_allclose(NegativeQueryMass()(maps, MASKS), [1.0, 0.0, 0.75])


def test_ignored_pixels_carry_no_mass() -> None:
    maps = torch.ones(2, 8, 8)
    ignore = ~MASKS.any(dim=0)  # only the objects are scored
    np.testing.assert_allclose(Leakage()(maps, MASKS, ignore), [8 / 17, 9 / 17])
    np.testing.assert_allclose(ObjectLocalisation()(maps, MASKS, ignore), [9 / 17, 8 / 17])


def test_maps_without_positive_mass_score_zero() -> None:
    maps = -torch.ones(2, 8, 8)
    assert Leakage()(maps, MASKS).tolist() == [0.0, 0.0]
    assert ClassSensitivity()(maps, MASKS).tolist() == [0.0, 0.0]
    assert NegativeQueryMass()(maps, MASKS).tolist() == [0.0, 0.0]


# --- bad input --------------------------------------------------------------------------------


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"maps are \(4, 4\) \(H, W\) but masks are \(8, 8\)"):
        Leakage()(torch.ones(2, 4, 4), MASKS)
    with pytest.raises(ValueError, match="3 maps for 2 class masks"):
        Leakage()(torch.ones(3, 8, 8), MASKS)
    with pytest.raises(ValueError, match=r"maps must be \(Q, H, W\)"):
        Leakage()(torch.ones(1, 2, 8, 8), MASKS)
    with pytest.raises(ValueError, match=r"ignore shape mismatch: expected \(8, 8\)"):
        Leakage()(torch.ones(2, 8, 8), MASKS, torch.zeros(4, 4, dtype=torch.bool))


def test_wrong_types_are_refused() -> None:
    with pytest.raises(TypeError, match="maps must be a floating-point tensor"):
        Leakage()(MASKS, MASKS)
    with pytest.raises(TypeError, match="masks must be a bool tensor"):
        Leakage()(torch.ones(2, 8, 8), MASKS.float())
    with pytest.raises(TypeError, match="ignore must be a bool tensor"):
        Leakage()(torch.ones(2, 8, 8), MASKS, torch.zeros(8, 8))
    with pytest.raises(TypeError, match="single-map LocalisationMetric"):
        ObjectLocalisation(BestHeadJaccard())  # type: ignore[arg-type]


def test_empty_masks_nan_maps_and_too_few_classes_are_refused() -> None:
    empty = MASKS.clone()
    empty[1] = False
    with pytest.raises(ValueError, match=r"class mask\(s\) \[1\] have no .*class_masks skips"):
        Leakage()(torch.ones(2, 8, 8), empty)
    with pytest.raises(ValueError, match="NaN or infinite"):
        Leakage()(torch.full((2, 8, 8), float("nan")), MASKS)
    with pytest.raises(ValueError, match="ClassSensitivity needs at least 2 present class"):
        ClassSensitivity()(torch.ones(1, 8, 8), MASKS[:1])
    with pytest.raises(ValueError, match="ignore covers every pixel"):
        Leakage()(torch.ones(2, 8, 8), MASKS, torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        TargetPointingGame(-1)


# --- properties -------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(case=scene())
def test_one_map_for_every_class_has_zero_sensitivity(case) -> None:
    maps, masks = case
    same = maps[:1].expand_as(maps)
    np.testing.assert_allclose(ClassSensitivity()(same, masks), 0.0, atol=1e-12)


@PROPERTY_SETTINGS
@given(case=scene())
def test_sensitivity_is_bounded_and_negates_when_two_maps_swap(case) -> None:
    maps, masks = case
    masks, maps = masks[:2], maps[:2]
    score = ClassSensitivity()(maps, masks)
    assert ((score >= -1 - 1e-12) & (score <= 1 + 1e-12)).all()
    np.testing.assert_allclose(ClassSensitivity()(maps.flip(0), masks), -score, atol=1e-12)


@PROPERTY_SETTINGS
@given(case=scene(low=-10.0))
def test_own_share_leakage_and_background_sum_to_one(case) -> None:
    maps, masks = case
    own = ObjectLocalisation()(maps, masks)
    leak = Leakage()(maps, masks)
    background = NegativeQueryMass()(maps, ~masks.any(dim=0, keepdim=True))
    has_mass = (maps.clamp(min=0).flatten(1).sum(dim=1) > 0).double()
    np.testing.assert_allclose(own + leak + background, has_mass, atol=1e-9)


@PROPERTY_SETTINGS
@given(case=scene(), scale=st.floats(0.01, 100.0), ranks=st.booleans())
def test_scores_do_not_depend_on_the_maps_scale(case, scale: float, ranks: bool) -> None:
    maps, masks = case
    metrics = [ObjectLocalisation(), Leakage(), ClassSensitivity(), TargetPointingGame()]
    # In float64 the scaling itself does not round; cubing keeps the order of non-negative
    # values exactly (exp would tie tiny ones).
    scaled = maps.double() * scale if not ranks else maps.double() ** 3 * scale
    for metric in metrics if not ranks else [TargetPointingGame(), ObjectLocalisation(AUROC())]:
        np.testing.assert_allclose(metric(scaled, masks), metric(maps, masks), atol=1e-9)


@PROPERTY_SETTINGS
@given(case=scene())
def test_object_localisation_is_the_metric_on_each_class_mask(case) -> None:
    maps, masks = case
    for metric in (EnergyPointingGame(), AUROC()):
        expected = metric(maps[:, None], masks)
        np.testing.assert_allclose(ObjectLocalisation(metric)(maps, masks), expected)


@pytest.mark.parametrize("metric", PAIRED, ids=repr)
def test_metadata(metric) -> None:
    assert metric.category == "class_specific"
    assert isinstance(metric.higher_is_better, bool)
    assert metric.name in {
        "object_energy_pointing_game", "object_auroc", "leakage", "object_pointing_game"
    }  # fmt: skip


# --- agreement with Quantus -------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantus():
    module = pytest.importorskip("quantus")
    import warnings

    warnings.filterwarnings("ignore", module="quantus")
    return module


def _quantus_scores(metric, maps: np.ndarray, masks: np.ndarray, **call) -> np.ndarray:
    """A Quantus localisation metric on ``(N, H, W)`` maps and masks (one channel)."""
    count = len(maps)
    scores = metric(
        model=call.pop("model", None),
        x_batch=np.zeros((count, 3, *maps.shape[1:]), np.float32),
        y_batch=np.zeros(count, dtype=int),
        a_batch=maps[:, None].astype(np.float32),
        s_batch=None if masks is None else masks[:, None].astype(np.float32),
        **call,
    )
    return np.asarray(scores, dtype=np.float64)


def _random_scene(seed: int, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(-1, 3, (size, size), generator=generator)
    labels.view(-1)[:3] = torch.arange(3)
    masks = torch.stack([labels == c for c in range(3)])
    return torch.rand(3, size, size, generator=generator), masks


def test_target_pointing_game_matches_quantus(quantus) -> None:
    # Quantus's PointingGame on each class's own mask; continuous maps have a unique maximum.
    for seed in range(20):
        maps, masks = _random_scene(seed)
        ours = TargetPointingGame()(maps, masks).numpy()
        theirs = _quantus_scores(
            quantus.PointingGame(disable_warnings=True), maps.numpy(), masks.numpy()
        )
        np.testing.assert_array_equal(ours, theirs)


def test_object_localisation_and_leakage_match_relevance_mass_accuracy(quantus) -> None:
    # RelevanceMassAccuracy = mass inside the mask / total mass (non-negative maps).
    metric = quantus.RelevanceMassAccuracy(normalise=False, disable_warnings=True)
    for seed in range(10):
        maps, masks = _random_scene(seed)
        own = _quantus_scores(metric, maps.numpy(), masks.numpy())
        np.testing.assert_allclose(ObjectLocalisation()(maps, masks), own, rtol=1e-5)
        others = other_object_masks(masks).numpy()
        np.testing.assert_allclose(
            Leakage()(maps, masks), _quantus_scores(metric, maps.numpy(), others), rtol=1e-5
        )


def test_object_localisation_on_mosaics_matches_focus(quantus) -> None:
    """Quantus's Focus (Arias-Duart et al. 2022) is a class-specific localisation metric.

    On a 2 x 2 mosaic of images, Focus is the share of positive relevance in the quadrants of
    the target class: our object localisation with the target quadrants as the class's mask.
    """
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    focus = quantus.Focus(disable_warnings=True)
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 16, 16, generator=generator) - 0.3  # signed: Focus clips at 0
    quadrants = [(0, 0), (0, 1), (1, 0), (1, 1)]
    layouts = [(1, 0, 0, 1), (0, 1, 1, 0), (1, 1, 0, 0), (0, 0, 1, 1), (1, 0, 1, 0), (0, 1, 0, 1)]
    theirs = _quantus_scores(focus, maps.numpy(), None, model=model, custom_batch=np.array(layouts))
    for k, layout in enumerate(layouts):
        target = torch.zeros(2, 16, 16, dtype=torch.bool)
        for (row, col), is_target in zip(quadrants, layout):
            target[0 if is_target else 1, 8 * row : 8 * row + 8, 8 * col : 8 * col + 8] = True
        ours = ObjectLocalisation()(maps[k : k + 1].expand(2, 16, 16), target)[0]
        # Focus adds 1e-9 to the denominator.
        assert abs(float(ours) - theirs[k]) < 1e-6
