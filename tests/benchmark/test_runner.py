"""The runner: rows per (image, method), metrics per method kind, resume after a kill."""

from __future__ import annotations

import json

import pytest
import torch

from attnexplain.benchmark import BenchmarkConfig, open_dataset, run_benchmark
from attnexplain.benchmark.registry import (
    BASELINES,
    METHODS,
    MethodContext,
    parse_methods,
    parse_metrics,
)
from attnexplain.benchmark.store import read_rows
from tests.benchmark.helpers import IMAGE, Killed, comparable, tiny_model, tiny_preprocess

IMAGES = 6
METRICS = ("mass_jaccard", "best_head_jaccard", "pointing_game", "deletion_black")
CONFIG = BenchmarkConfig(
    methods=("raw", "raw_heads", "rollout"),
    metrics=METRICS,
    batch_size=2,
    faithfulness_steps=4,
    examples=1,
    progress=False,
)
ALL_METHODS = ["raw", "raw_heads", "rollout", *BASELINES]


@pytest.fixture(scope="module")
def data():
    return open_dataset(f"synthetic:{IMAGES}", IMAGE)


@pytest.fixture(scope="module")
def full_run(model, data, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted run, the reference of the resume tests."""
    return run_benchmark(model, tiny_preprocess(), data, tmp_path_factory.mktemp("full"), CONFIG)


def keys(rows: list[dict]) -> list[tuple[str, str]]:
    return [(row["image_id"], row["method"]) for row in rows]


def test_one_row_per_image_and_method(full_run) -> None:
    rows = full_run.rows
    assert len(keys(rows)) == len(set(keys(rows))) == IMAGES * len(ALL_METHODS)
    assert [row["method"] for row in rows[: len(ALL_METHODS)]] == ALL_METHODS
    assert [row["index"] for row in rows[:: len(ALL_METHODS)]] == list(range(IMAGES))
    on_disk = read_rows([full_run.out_dir / "results.jsonl"])
    assert comparable(on_disk) == comparable(rows)


def test_metrics_follow_the_method_kind(full_run) -> None:
    by_method = {row["method"]: row for row in full_run.rows if row["index"] == 0}
    # Fused maps get every metric; per-head maps only the per-object best-head Jaccard.
    assert set(by_method["raw"]["metrics"]) == set(METRICS)
    assert set(by_method["raw_heads"]["metrics"]) == {"best_head_jaccard"}
    assert "curves" not in by_method["raw_heads"]
    curve = by_method["rollout"]["curves"]["deletion_black"]
    assert curve["x"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len(curve["probability"]) == len(curve["correct"]) == 5
    # A single-object sample: the per-object list has one entry, equal to the image's score.
    objects = by_method["raw_heads"]["objects"]["best_head_jaccard"]
    assert objects == [by_method["raw_heads"]["metrics"]["best_head_jaccard"]]
    # With K = 1 and one object, the best-head Jaccard is the mass Jaccard.
    raw = by_method["raw"]["metrics"]
    assert raw["best_head_jaccard"] == raw["mass_jaccard"]
    for row in full_run.rows:
        assert row["target"] == row["label"]  # synthetic labels are the model's classes
        assert set(row["seconds"]) == {"maps", "localisation", "faithfulness"}


def test_meta_and_examples(full_run) -> None:
    meta = json.loads((full_run.out_dir / "run.json").read_text())
    assert meta["methods"] == ALL_METHODS
    assert meta["metrics"]["deletion_black"] == {
        "name": "deletion_black",
        "category": "faithfulness",
        "higher_is_better": False,
    }
    assert meta["sessions"][0]["rows_written"] == IMAGES * len(ALL_METHODS)
    examples = sorted(p.name for p in (full_run.out_dir / "examples").iterdir())
    assert examples == sorted(f"000000-{m}.npz" for m in ALL_METHODS)


def test_resume_after_kill_loses_and_repeats_nothing(model, data, full_run, tmp_path) -> None:
    def kill_after_second_batch(number: int) -> None:
        if number == 1:
            raise Killed

    with pytest.raises(Killed):
        run_benchmark(
            model, tiny_preprocess(), data, tmp_path, CONFIG, after_batch=kill_after_second_batch
        )
    partial = read_rows([tmp_path / "results.jsonl"])
    assert len(partial) == 2 * CONFIG.batch_size * len(ALL_METHODS)
    killed = json.loads((tmp_path / "run.json").read_text())["sessions"][0]
    assert not killed["finished"] and killed["rows_written"] == len(partial)
    assert killed["wall_seconds"] > 0

    resumed = run_benchmark(model, tiny_preprocess(), data, tmp_path, CONFIG)
    assert comparable(resumed.rows) == comparable(full_run.rows)
    assert resumed.meta["sessions"][-1]["rows_written"] == len(full_run.rows) - len(partial)
    assert [s["finished"] for s in resumed.meta["sessions"]] == [False, True]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == len(full_run.rows)


def test_resume_drops_a_truncated_last_line(model, data, full_run, tmp_path) -> None:
    def kill_at_once(number: int) -> None:
        raise Killed

    with pytest.raises(Killed):
        run_benchmark(model, tiny_preprocess(), data, tmp_path, CONFIG, after_batch=kill_at_once)
    results = tmp_path / "results.jsonl"
    text = results.read_text()
    # A kill in the middle of the write: the last row is cut halfway.
    results.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])
    assert len(read_rows([results])) == CONFIG.batch_size * len(ALL_METHODS) - 1

    resumed = run_benchmark(model, tiny_preprocess(), data, tmp_path, CONFIG)
    assert comparable(resumed.rows) == comparable(full_run.rows)
    lines = results.read_text().splitlines()
    assert len(lines) == len(full_run.rows)
    assert all(json.loads(line) for line in lines)


def test_corrupt_line_inside_the_file_is_an_error(model, data, tmp_path) -> None:
    (tmp_path / "results.jsonl").write_text('{"not": "closed"\n{"image_id": "x"}\n')
    with pytest.raises(ValueError, match="line 1: not a JSON row"):
        run_benchmark(model, tiny_preprocess(), data, tmp_path, CONFIG)


def test_resume_with_other_settings_is_refused(model, data, full_run, tmp_path) -> None:
    run_benchmark(model, tiny_preprocess(), data, tmp_path, CONFIG.__class__(
        **{**CONFIG.__dict__, "limit": 2, "metrics": ("mass_jaccard",)}
    ))  # fmt: skip
    with pytest.raises(ValueError, match=r"other settings \(metrics"):
        run_benchmark(model, tiny_preprocess(), data, tmp_path, CONFIG)


def test_extending_the_limit_adds_only_new_images(model, data, tmp_path) -> None:
    small = BenchmarkConfig(**{**CONFIG.__dict__, "limit": 2})
    first = run_benchmark(model, tiny_preprocess(), data, tmp_path, small)
    second = run_benchmark(model, tiny_preprocess(), data, tmp_path, BenchmarkConfig(
        **{**CONFIG.__dict__, "limit": 4}
    ))  # fmt: skip
    assert len(first.rows) == 2 * len(ALL_METHODS)
    assert len(second.rows) == 4 * len(ALL_METHODS)
    assert second.meta["sessions"][-1]["rows_written"] == 2 * len(ALL_METHODS)


def test_training_flags_are_restored(data, tmp_path) -> None:
    model = tiny_model().train()
    config = BenchmarkConfig(methods=("raw",), metrics=("mass_jaccard",), limit=2, progress=False)
    run_benchmark(model, tiny_preprocess(), data, tmp_path, config)
    assert all(module.training for module in model.modules())


def test_headless_model_gets_localisation_only(data, tmp_path) -> None:
    model = tiny_model(head=False)
    config = BenchmarkConfig(methods=("raw", "raw_heads"), limit=2, batch_size=2, progress=False)
    run = run_benchmark(model, tiny_preprocess(), data, tmp_path / "ok", config)
    assert all(row["target"] is None and "curves" not in row for row in run.rows)
    assert set(run.meta["metrics"]) == set(parse_metrics("localisation", has_head=False))
    with pytest.raises(ValueError, match="no classification head"):
        gradient = BenchmarkConfig(methods=("saliency",), limit=2, progress=False)
        run_benchmark(model, tiny_preprocess(), data, tmp_path / "grad", gradient)
    with pytest.raises(ValueError, match="faithfulness metrics need"):
        faithful = BenchmarkConfig(methods=("raw",), metrics=("insertion_blur",), limit=2)
        run_benchmark(model, tiny_preprocess(), data, tmp_path / "faith", faithful)


def test_labels_outside_the_model_classes_are_refused(data, tmp_path) -> None:
    from transformers import ViTForImageClassification

    from tests.benchmark.helpers import tiny_config

    model = ViTForImageClassification(tiny_config(num_labels=3)).eval()
    config = BenchmarkConfig(methods=("raw",), metrics=("mass_jaccard",), limit=6, progress=False)
    with pytest.raises(ValueError, match="not a class of this 3-class model"):
        run_benchmark(model, tiny_preprocess(), data, tmp_path, config)
    predicted = BenchmarkConfig(**{**config.__dict__, "target": "predicted"})
    run = run_benchmark(model, tiny_preprocess(), data, tmp_path / "predicted", predicted)
    assert all(row["target"] == row["predicted"] for row in run.rows)


def test_images_and_masks_of_other_sizes(voc_fixture, tmp_path) -> None:
    """VOC images are not the model's size: maps go to the mask (or masks to the model)."""
    voc = open_dataset(f"voc:{voc_fixture.root}:trainval", IMAGE)
    model = tiny_model()
    for resolution in ("image", "model"):
        config = BenchmarkConfig(
            methods=("rollout",), metrics=("mass_jaccard", "best_head_jaccard", "auroc"),
            mask_resolution=resolution, progress=False,
        )  # fmt: skip
        run = run_benchmark(model, tiny_preprocess(), voc, tmp_path / resolution, config)
        first = next(r for r in run.rows if r["image_id"] == "2008_000001")
        assert len(first["objects"]["best_head_jaccard"]) == 3  # three annotated instances
        assert all(0.0 <= v <= 1.0 for r in run.rows for v in r["metrics"].values())
        assert all(r["target"] == r["predicted"] for r in run.rows)  # VOC ids are not classes


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        BenchmarkConfig(batch_size=0)
    with pytest.raises(ValueError, match="limit must be a positive int"):
        BenchmarkConfig(limit=0)
    with pytest.raises(ValueError, match="mask_resolution must be"):
        BenchmarkConfig(mask_resolution="patch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method_options names method"):
        BenchmarkConfig(methods=("raw",), method_options={"rollout": {"start_layer": 1}})


def test_method_and_metric_names() -> None:
    assert parse_methods("rollout, raw") == ["rollout", "raw", *BASELINES]
    assert parse_methods(["random"]) == list(BASELINES)
    with pytest.raises(ValueError, match="unknown method.*gradcamm"):
        parse_methods("raw,gradcamm")
    assert parse_metrics("insertion_blur,mass_jaccard", has_head=True) == [
        "mass_jaccard",
        "insertion_blur",
    ]
    with pytest.raises(ValueError, match="unknown metric 'iou'"):
        parse_metrics("iou", has_head=True)


def test_random_baseline_depends_only_on_the_image(model) -> None:
    context = MethodContext(model, tiny_preprocess(), lambda x: x, batch_size=4)
    explain = METHODS["random"].build(context)
    inputs = torch.zeros(3, 3, IMAGE, IMAGE)
    together = explain(inputs, None, ["a", "b", "c"])
    alone = explain(inputs[:1], None, ["b"])
    assert torch.equal(together[1], alone[0])
    assert not torch.equal(together[0], together[1])
