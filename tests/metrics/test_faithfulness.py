"""Deletion / insertion and the perturbation test on a toy model with a known answer.

The toy model looks only at the top-left 4×4 quadrant of an 8×8 image: the target's logit is
``10 * mean(quadrant) - 5`` against a constant 0, so its probability is
``sigmoid(10 * mean(quadrant) - 5)`` and a faithful map is one concentrated on the quadrant.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnexplain.metrics import (
    DeletionInsertion,
    FaithfulnessMetric,
    PerturbationCurves,
    PerturbationTest,
    gaussian_blur,
)
from attnexplain.metrics.base import Metric

REGION = (slice(0, 4), slice(0, 4))


class ToyModel:
    """Callable forward_fn that counts its calls and keeps what it was given."""

    def __init__(self) -> None:
        self.calls: list[torch.Tensor] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(images.clone())
        evidence = images[:, :, REGION[0], REGION[1]].mean(dim=(1, 2, 3))
        return torch.stack([10 * evidence - 5, torch.zeros_like(evidence)], dim=1)


def probability(region_mean: float) -> float:
    return 1 / (1 + math.exp(-(10 * region_mean - 5)))


def region_map(batch: int = 1, *, inside: float = 1.0, outside: float = 0.0) -> torch.Tensor:
    maps = torch.full((batch, 1, 8, 8), outside)
    maps[:, :, REGION[0], REGION[1]] = inside
    return maps


WHITE = torch.ones(1, 3, 8, 8)
TARGET = torch.tensor([0])


# --- deletion / insertion --------------------------------------------------------------------


class TestDeletionInsertion:
    def test_deletion_curve_of_a_faithful_map(self) -> None:
        result = DeletionInsertion(ToyModel(), patch_size=4)(WHITE, region_map(), TARGET)
        high, low = probability(1.0), probability(0.0)
        assert torch.equal(result.x, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
        assert result.probability[0].tolist() == pytest.approx([high, low, low, low, low])
        # Trapezoid: one quarter from high to low, then flat at low.
        assert result.auc.item() == pytest.approx(0.25 * (high + low) / 2 + 0.75 * low)
        assert result.correct[0].tolist() == [True, False, False, False, False]

    def test_faithful_map_beats_the_reverse_map(self) -> None:
        # A bright quadrant on a dark background, so that blurring it removes evidence too.
        images = region_map(2, inside=0.9, outside=0.1).expand(2, 3, 8, 8)
        target = torch.tensor([0, 0])
        good, reverse = region_map(2), region_map(2, inside=0.0, outside=1.0)
        for baseline in ("black", "blur"):
            deletion = DeletionInsertion(ToyModel(), patch_size=4, baseline=baseline)
            insertion = DeletionInsertion(
                ToyModel(), mode="insertion", patch_size=4, baseline=baseline
            )
            assert (
                deletion(images, good, target).auc < deletion(images, reverse, target).auc
            ).all()
            assert (
                insertion(images, good, target).auc > insertion(images, reverse, target).auc
            ).all()

    def test_insertion_runs_from_baseline_to_image(self) -> None:
        model = ToyModel()
        images = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        DeletionInsertion(model, mode="insertion", patch_size=4, baseline="blur")(
            images, region_map(), TARGET
        )
        first, last = model.calls[0][0], model.calls[-1][-1]
        assert torch.allclose(first, gaussian_blur(images)[0])
        assert torch.equal(last, images[0])
        # Step 1 reveals the most important patch (the quadrant) only.
        step_one = model.calls[0][1]
        assert torch.equal(step_one[:, :4, :4], images[0, :, :4, :4])
        assert torch.allclose(step_one[:, 4:, :], gaussian_blur(images)[0, :, 4:, :])

    def test_deletion_runs_from_image_to_black(self) -> None:
        model = ToyModel()
        DeletionInsertion(model, patch_size=4)(WHITE, region_map(), TARGET)
        assert torch.equal(model.calls[0][0], WHITE[0])
        assert not model.calls[-1][-1].any()

    def test_model_calls_are_batched_across_samples_and_steps(self) -> None:
        model = ToyModel()
        result = DeletionInsertion(model, patch_size=4, batch_size=4)(
            torch.ones(3, 3, 8, 8), region_map(3), torch.zeros(3, dtype=torch.long)
        )
        # 3 samples × 5 points = 15 images in chunks of at most 4.
        assert [len(call) for call in model.calls] == [4, 4, 4, 3]
        assert result.probability.shape == (3, 5) and result.auc.shape == (3,)

    def test_fewer_steps(self) -> None:
        result = DeletionInsertion(ToyModel(), patch_size=4, steps=2)(WHITE, region_map(), TARGET)
        assert torch.equal(result.x, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))

    def test_partial_patches_at_the_edges_are_units(self) -> None:
        images = torch.ones(1, 3, 10, 10)
        result = DeletionInsertion(ToyModel(), patch_size=4)(
            images, torch.rand(1, 1, 10, 10), TARGET
        )
        assert result.probability.shape == (1, 3 * 3 + 1)

    def test_signed_map_order_is_kept(self) -> None:
        # The quadrant is the most negative region, so deletion removes it last.
        model = ToyModel()
        DeletionInsertion(model, patch_size=4)(WHITE, region_map(inside=-1.0), TARGET)
        assert model.calls[0][3][:, :4, :4].all()  # still there after 3 of 4 patches

    def test_steps_cannot_exceed_patches(self) -> None:
        metric = DeletionInsertion(ToyModel(), patch_size=4, steps=5)
        with pytest.raises(ValueError, match=r"steps must be <= the number of patches \(4"):
            metric(WHITE, region_map(), TARGET)

    def test_metadata(self) -> None:
        deletion = DeletionInsertion(ToyModel())
        insertion = DeletionInsertion(ToyModel(), mode="insertion")
        assert (deletion.name, deletion.higher_is_better) == ("deletion", False)
        assert (insertion.name, insertion.higher_is_better) == ("insertion", True)
        assert deletion.category == "faithfulness"
        assert repr(deletion).startswith("DeletionInsertion(mode='deletion', patch_size=16")


# --- perturbation test -----------------------------------------------------------------------


class TestPerturbationTest:
    def test_positive_and_negative_curves(self) -> None:
        # The map ranks the quadrant's 16 pixels (25 %) highest.
        maps = region_map(inside=2.0) + torch.arange(64.0).view(1, 1, 8, 8) / 1000
        positive = PerturbationTest(ToyModel(), fractions=(0.25, 0.5))(WHITE, maps, TARGET)
        negative = PerturbationTest(ToyModel(), fractions=(0.25, 0.5), mode="negative")(
            WHITE, maps, TARGET
        )
        assert torch.equal(positive.x, torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64))
        assert positive.correct[0].tolist() == [True, False, False]
        assert negative.correct[0].tolist() == [True, True, True]
        assert positive.auc.item() == pytest.approx(0.25 * 0.5)  # headline: accuracy
        assert negative.auc.item() == pytest.approx(0.5)
        assert positive.probability_auc < negative.probability_auc

    def test_removes_the_truncated_count_of_top_pixels(self) -> None:
        model = ToyModel()
        maps = torch.randperm(64, generator=torch.Generator().manual_seed(0)).float()
        PerturbationTest(model, fractions=(0.3,))(WHITE, maps.view(1, 1, 8, 8), TARGET)
        removed = ~model.calls[0][1].bool().all(dim=0)
        assert removed.sum() == 19  # int(64 * 0.3) = int(19.2), as the reference code
        assert torch.equal(removed.flatten(), maps >= 64 - 19)  # the top 19 values

    def test_negative_removes_the_lowest_pixels(self) -> None:
        model = ToyModel()
        maps = torch.randperm(64, generator=torch.Generator().manual_seed(0)).float()
        PerturbationTest(model, fractions=(0.5,), mode="negative")(
            WHITE, maps.view(1, 1, 8, 8), TARGET
        )
        removed = ~model.calls[0][1].bool().all(dim=0)
        assert torch.equal(removed.flatten(), maps < 32)

    def test_batched(self) -> None:
        model = ToyModel()
        PerturbationTest(model, batch_size=7)(
            torch.ones(2, 3, 8, 8), region_map(2), torch.zeros(2, dtype=torch.long)
        )
        assert [len(call) for call in model.calls] == [7, 7, 6]  # 2 × (9 + 1) images

    def test_metadata(self) -> None:
        positive, negative = (
            PerturbationTest(ToyModel()),
            PerturbationTest(ToyModel(), mode="negative"),
        )
        assert (positive.name, positive.higher_is_better) == ("perturbation_positive", False)
        assert (negative.name, negative.higher_is_better) == ("perturbation_negative", True)

    @pytest.mark.parametrize(
        ("fractions", "message"),
        [
            ((), "at least one fraction"),
            ((0.5, 0.2), "strictly increasing"),
            ((0.0, 0.5), r"each be in \(0, 1\]"),
            ((0.5, 1.5), r"each be in \(0, 1\]"),
        ],
    )
    def test_fractions_validation(self, fractions: tuple[float, ...], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            PerturbationTest(ToyModel(), fractions=fractions)


# --- shared pieces ---------------------------------------------------------------------------


def test_gaussian_blur_kernel() -> None:
    delta = torch.zeros(1, 1, 21, 21)
    delta[0, 0, 10, 10] = 1.0
    blurred = gaussian_blur(delta)[0, 0]
    assert blurred.sum().item() == pytest.approx(1.0)
    # σ = 5 px: one pixel off-centre the weight falls by exp(-1 / 50); the kernel is 11 wide.
    assert (blurred[10, 11] / blurred[10, 10]).item() == pytest.approx(math.exp(-1 / 50))
    assert blurred[10, 15] > 0 and blurred[10, 16] == 0


def test_gaussian_blur_keeps_a_constant_image() -> None:
    image = torch.full((2, 3, 6, 7), 0.3)
    assert torch.allclose(gaussian_blur(image), image)


def test_result_type_and_categories() -> None:
    result = DeletionInsertion(ToyModel(), patch_size=4)(WHITE, region_map(), TARGET)
    assert isinstance(result, PerturbationCurves)
    assert result.probability.dtype == torch.float64 and result.correct.dtype == torch.bool
    assert issubclass(FaithfulnessMetric, Metric)


# --- validation ------------------------------------------------------------------------------

METRICS = [DeletionInsertion(ToyModel(), patch_size=4), PerturbationTest(ToyModel())]


@pytest.mark.parametrize("metric", METRICS, ids=repr)
class TestValidation:
    def test_images_outside_unit_range(self, metric: FaithfulnessMetric) -> None:
        with pytest.raises(ValueError, match=r"images must be finite and in \[0, 1\]"):
            metric(WHITE * 2 - 0.5, region_map(), TARGET)

    def test_images_must_be_4d(self, metric: FaithfulnessMetric) -> None:
        with pytest.raises(ValueError, match=r"images must be \(B, C, H, W\)"):
            metric(WHITE[0], region_map(), TARGET)

    def test_empty_batch(self, metric: FaithfulnessMetric) -> None:
        with pytest.raises(ValueError, match="empty batch"):
            metric(WHITE[:0], region_map()[:0], TARGET[:0])

    def test_one_map_per_sample(self, metric: FaithfulnessMetric) -> None:
        with pytest.raises(ValueError, match=r"one map per sample"):
            metric(WHITE, region_map().expand(1, 2, 8, 8), TARGET)

    def test_map_size_mismatch(self, metric: FaithfulnessMetric) -> None:
        with pytest.raises(
            ValueError, match=r"attributions shape mismatch: expected \(1, 1, 8, 8\)"
        ):
            metric(WHITE, torch.rand(1, 1, 4, 4), TARGET)

    def test_nan_map(self, metric: FaithfulnessMetric) -> None:
        with pytest.raises(ValueError, match="NaN"):
            metric(WHITE, region_map() / 0.0, TARGET)

    def test_target_shape(self, metric: FaithfulnessMetric) -> None:
        with pytest.raises(ValueError, match=r"target shape mismatch: expected \(1,\), got \(2,\)"):
            metric(WHITE, region_map(), torch.tensor([0, 1]))

    def test_target_dtype(self, metric: FaithfulnessMetric) -> None:
        with pytest.raises(TypeError, match=r"target must be an integer torch\.Tensor"):
            metric(WHITE, region_map(), torch.tensor([0.0]))

    def test_target_out_of_range(self, metric: FaithfulnessMetric) -> None:
        with pytest.raises(ValueError, match=r"target must be in \[0, 2\) for 2 logits"):
            metric(WHITE, region_map(), torch.tensor([2]))


def test_forward_fn_output_is_checked() -> None:
    bad_shape = DeletionInsertion(lambda x: torch.zeros(len(x)), patch_size=4)
    with pytest.raises(ValueError, match=r"forward_fn must return logits of shape \(5, classes\)"):
        bad_shape(WHITE, region_map(), TARGET)
    not_tensor = DeletionInsertion(lambda x: x.tolist(), patch_size=4)
    with pytest.raises(TypeError, match=r"forward_fn must return a torch\.Tensor, got list"):
        not_tensor(WHITE, region_map(), TARGET)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mode": "both"}, ValueError, r"mode must be one of \('deletion', 'insertion'\)"),
        ({"baseline": "grey"}, ValueError, r"baseline must be one of"),
        ({"patch_size": 0}, ValueError, "patch_size must be >= 1, got 0"),
        ({"patch_size": 4.0}, TypeError, "patch_size must be an int, got float"),
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    ],
)
def test_constructor_validation(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        DeletionInsertion(ToyModel(), **kwargs)


def test_forward_fn_must_be_callable() -> None:
    with pytest.raises(TypeError, match="forward_fn must be callable, got str"):
        PerturbationTest("model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be one of"):
        PerturbationTest(ToyModel(), mode="both")  # type: ignore[arg-type]
