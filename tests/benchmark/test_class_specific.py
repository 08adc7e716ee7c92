"""Class-specific scoring in the runner: queries per class, negative queries, bad input, resume."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from attnexplain.benchmark import BenchmarkConfig, open_dataset, run_benchmark
from attnexplain.benchmark.registry import CLASS_METRICS, parse_metrics
from attnexplain.data.base import SegmentationSample
from attnexplain.data.objects import class_masks
from attnexplain.methods import GradCAM
from tests.benchmark.helpers import (
    CLASSES,
    IMAGE,
    Killed,
    comparable,
    tiny_model,
    tiny_preprocess,
)
from tests.benchmark.torchrun_worker import IMAGES, MULTI_CONFIG

# The sharded run's settings (raw and Grad-CAM, batches of 3), scored here in one process.
CONFIG = MULTI_CONFIG
METHODS = ["raw", "gradcam", "random", "centre", "all_objects"]


@pytest.fixture(scope="module")
def data():
    return open_dataset(f"synthetic-multi:{IMAGES}", IMAGE)


@pytest.fixture(scope="module")
def full_run(model, data, tmp_path_factory: pytest.TempPathFactory):
    return run_benchmark(model, tiny_preprocess(), data, tmp_path_factory.mktemp("multi"), CONFIG)


def _shares(map_: np.ndarray, region: np.ndarray) -> float:
    positive = np.clip(map_, 0, None)
    return float(positive[region].sum() / positive.sum()) if positive.sum() > 0 else 0.0


def test_multi_object_data_gets_class_metrics_and_the_oracle_by_default(data) -> None:
    assert data.class_specific and data.default_target == "label"
    assert parse_metrics(None, has_head=True, class_specific=True)[-len(CLASS_METRICS) :] == list(
        CLASS_METRICS
    )
    assert not set(CLASS_METRICS) & set(parse_metrics(None, has_head=True))


def test_rows_record_classes_negative_queries_and_per_class_scores(full_run, data) -> None:
    assert full_run.meta["methods"] == METHODS
    for row in full_run.rows:
        sample = data.data[row["index"]]
        grouped = class_masks(sample.object_labels, sample.object_masks)
        assert row["classes"] == grouped.labels.tolist()
        assert row["empty_objects"] == 0
        absent = sorted(set(range(CLASSES)) - set(row["classes"]))
        assert row["negative_class"] == absent[zlib.crc32(row["image_id"].encode()) % len(absent)]
        scored = len(row["classes"]) >= 2
        assert scored == all(name in row["metrics"] for name in CLASS_METRICS)
        assert scored or not any(name in row["metrics"] for name in CLASS_METRICS)
        if scored:
            assert len(row["objects"]["leakage"]) == len(row["classes"])
            mean = np.mean(row["objects"]["object_energy_pointing_game"])
            assert row["metrics"]["object_energy_pointing_game"] == pytest.approx(mean)
    assert sum(len(r["classes"]) >= 2 for r in full_run.rows) >= 3 * len(METHODS)


def test_gradcam_scores_match_maps_computed_directly(full_run, data, model) -> None:
    """Recompute one image's per-class Grad-CAM maps and score them with numpy."""
    row = next(r for r in full_run.rows if r["method"] == "gradcam" and len(r["classes"]) >= 2)
    sample = data.data[row["index"]]
    inputs = tiny_preprocess()(sample.image)
    grouped = class_masks(sample.object_labels, sample.object_masks)
    masks = grouped.masks.numpy()
    maps = [
        GradCAM(model).attribute(inputs, torch.tensor([label]))[0, 0].detach().numpy()
        for label in row["classes"]
    ]
    for k, map_ in enumerate(maps):
        others = masks[[j for j in range(len(masks)) if j != k]].any(axis=0) & ~masks[k]
        assert row["objects"]["object_energy_pointing_game"][k] == pytest.approx(
            _shares(map_, masks[k]), abs=1e-6
        )
        assert row["objects"]["leakage"][k] == pytest.approx(_shares(map_, others), abs=1e-6)
    negative = GradCAM(model).attribute(inputs, torch.tensor([row["negative_class"]]))
    union = masks.any(axis=0)
    assert row["metrics"]["negative_object_mass"] == pytest.approx(
        _shares(negative[0, 0].detach().numpy(), union), abs=1e-6
    )


def test_class_agnostic_maps_have_zero_sensitivity(full_run) -> None:
    # Raw CLS attention, the random map (seeded by the image id) and the oracle do not depend
    # on the class asked about; Grad-CAM does.
    for method in ("raw", "random", "centre", "all_objects"):
        values = [r["metrics"]["class_sensitivity"] for r in full_run.rows
                  if r["method"] == method and "class_sensitivity" in r["metrics"]]  # fmt: skip
        assert values and max(abs(v) for v in values) < 1e-12, method
    gradcam = [r["metrics"]["class_sensitivity"] for r in full_run.rows
               if r["method"] == "gradcam" and "class_sensitivity" in r["metrics"]]  # fmt: skip
    assert max(abs(v) for v in gradcam) > 1e-3


def test_oracle_is_the_union_of_the_objects(full_run, data) -> None:
    for row in full_run.rows:
        if row["method"] != "all_objects" or len(row["classes"]) < 2:
            continue
        sample = data.data[row["index"]]
        masks = class_masks(sample.object_labels, sample.object_masks).masks.numpy()
        union, areas = masks.any(axis=0), masks.sum(axis=(1, 2))
        np.testing.assert_allclose(row["objects"]["object_energy_pointing_game"],
                                   areas / union.sum(), atol=1e-9)  # fmt: skip
        assert row["metrics"]["negative_object_mass"] == pytest.approx(1.0)


def test_examples_keep_each_class_map(full_run) -> None:
    with np.load(full_run.out_dir / "examples" / "000001-gradcam.npz") as saved:
        classes = saved["classes"]
        assert saved["class_maps"].shape == (len(classes), IMAGE, IMAGE)
        assert saved["class_masks"].shape == (len(classes), IMAGE, IMAGE)


def test_resume_after_kill(model, data, full_run, tmp_path) -> None:
    def kill_after_first_batch(number: int) -> None:
        if number == 0:
            raise Killed

    with pytest.raises(Killed):
        run_benchmark(
            model, tiny_preprocess(), data, tmp_path, CONFIG, after_batch=kill_after_first_batch
        )
    resumed = run_benchmark(model, tiny_preprocess(), data, tmp_path, CONFIG)
    assert comparable(resumed.rows) == comparable(full_run.rows)


def _sample(
    masks: list[torch.Tensor], labels: list[int], size: int = 64, image_id: str = "x"
) -> SegmentationSample:
    object_masks = torch.stack(masks)
    return SegmentationSample(
        image=torch.rand(3, size, size, generator=torch.Generator().manual_seed(0)),
        label=labels[0],
        mask=object_masks[0],
        object_masks=object_masks,
        object_labels=torch.tensor(labels),
        ignore=torch.zeros(size, size, dtype=torch.bool),
        image_id=image_id,
    )


def _box(top: int, bottom: int, left: int, right: int, size: int = 64) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


LABELLED = BenchmarkConfig(
    methods=("gradcam",), metrics=("class_specific",), target="label", progress=False
)


def test_empty_objects_are_skipped_and_counted(model, tmp_path) -> None:
    # An object occluded to nothing, and a one-pixel object that nearest resizing to the
    # model's 32 px drops: both skipped and counted; two classes remain.
    empty = torch.zeros(64, 64, dtype=torch.bool)
    samples = [_sample([_box(0, 30, 0, 30), _box(34, 64, 34, 64), empty, _box(33, 34, 1, 2)],
                       [0, 1, 2, 3])]  # fmt: skip
    config = BenchmarkConfig(**{**LABELLED.__dict__, "mask_resolution": "model"})
    run = run_benchmark(model, tiny_preprocess(), samples, tmp_path, config)
    row = next(r for r in run.rows if r["method"] == "gradcam")
    assert row["classes"] == [0, 1] and row["empty_objects"] == 2
    assert "class_sensitivity" in row["metrics"]


def test_overlapping_masks_are_scored(model, tmp_path) -> None:
    samples = [_sample([_box(0, 40, 0, 40), _box(20, 64, 20, 64)], [0, 1])]
    # At the model's resolution the oracle map is exactly the union of the (halved) masks.
    config = BenchmarkConfig(**{**LABELLED.__dict__, "mask_resolution": "model"})
    run = run_benchmark(model, tiny_preprocess(), samples, tmp_path, config)
    oracle = next(r for r in run.rows if r["method"] == "all_objects")
    # 20 x 20 and 22 x 22 squares sharing 10 x 10 pixels: the shared pixels are each class's
    # own, never leakage.
    union = 20 * 20 + 22 * 22 - 10 * 10
    own = [20 * 20 / union, 22 * 22 / union]
    np.testing.assert_allclose(oracle["objects"]["object_energy_pointing_game"], own, atol=1e-9)
    np.testing.assert_allclose(oracle["objects"]["leakage"], [1 - own[0], 1 - own[1]], atol=1e-9)
    # Both maps are the same oracle map: no class sensitivity.
    assert oracle["metrics"]["class_sensitivity"] == 0.0


def test_bad_input_is_refused(model, data, tmp_path) -> None:
    with pytest.raises(ValueError, match="labels must be the model's classes"):
        config = BenchmarkConfig(**{**LABELLED.__dict__, "target": "predicted"})
        run_benchmark(model, tiny_preprocess(), data, tmp_path / "predicted", config)
    with pytest.raises(ValueError, match="class-specific metrics explain each present class"):
        headless = BenchmarkConfig(methods=("raw",), metrics=("leakage",), progress=False)
        run_benchmark(tiny_model(head=False), tiny_preprocess(), data, tmp_path / "x", headless)
    outside = [_sample([_box(0, 20, 0, 20), _box(30, 50, 30, 50)], [0, CLASSES + 3])]
    with pytest.raises(ValueError, match=f"class {CLASSES + 3}, not a class of this"):
        run_benchmark(model, tiny_preprocess(), outside, tmp_path / "outside", LABELLED)
    small = _sample([_box(0, 20, 0, 20), _box(30, 50, 30, 50)], [0, 1])
    mismatched = [small._replace(object_masks=small.object_masks[:, :32, :32])]
    with pytest.raises(ValueError, match=r"maps are \(64, 64\) \(H, W\) but masks are \(32, 32\)"):
        run_benchmark(model, tiny_preprocess(), mismatched, tmp_path / "shapes", LABELLED)
