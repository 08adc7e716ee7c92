"""The results file and ``run.json`` of a run folder: corrupt or foreign content is an error that
names the file and what to do, and nothing already written is changed or lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnexplain.benchmark.runner import BenchmarkConfig, read_meta, run_benchmark
from attnexplain.benchmark.store import RowWriter, read_rows
from tests.benchmark.helpers import tiny_model, tiny_preprocess

ROW = {"image_id": "a", "method": "raw", "index": 0, "metrics": {"mass_jaccard": 0.5}}
GOOD = (json.dumps(ROW) + "\n").encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", r"line 1: not a JSON row \(binary data\)"),
        (GOOD + b"\xff\xfe\x00garbage", r"line 2: not a JSON row and not a row cut short"),
        (GOOD + b"[1, 2]\n", r"line 2: not a benchmark row \(a JSON list, not an object\)"),
        (b'{"image_id": "a", "method": "raw"}\n', r"line 1: not a benchmark row \(no 'index', "),
        (b'{"image_id": "a", "method": "raw", "index": "0", "metrics": {}}\n', r"'index' is '0'"),
        (b'{"not": "closed"\n', r"line 1: not a JSON row"),
    ],
)
def test_corrupt_results_are_an_error_and_are_left_as_they_are(tmp_path, content, message) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        read_rows([path])
    assert str(path) in str(error.value) and "choose another --out folder" in str(error.value)
    with pytest.raises(ValueError, match=message):
        RowWriter(path)  # before: a binary file without a newline was truncated to nothing
    assert path.read_bytes() == content


def test_a_row_cut_short_by_a_kill_is_dropped_and_overwritten(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(GOOD + GOOD[: len(GOOD) // 2])
    assert read_rows([path]) == [ROW]
    with RowWriter(path) as writer:
        writer.write_batch([{**ROW, "image_id": "b"}])
    assert [r["image_id"] for r in read_rows([path])] == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", r"run.json is not valid JSON"),
        (b"\x00\x01\x02", r"run.json is not valid JSON"),
        (b"[1, 2, 3]", r"run.json holds a JSON list, not a run record"),
        (b'{"fingerprint": [1], "sessions": []}', r"field 'fingerprint' is a list, expected"),
        (b'{"sessions": {"a": 1}}', r"field 'sessions' is a dict, expected a JSON array"),
    ],
)
def test_corrupt_run_json_is_an_error_and_nothing_is_touched(tmp_path, content, message) -> None:
    from attnexplain.data.synthetic import SyntheticShapes

    (tmp_path / "run.json").write_bytes(content)
    (tmp_path / "results.jsonl").write_bytes(GOOD)
    with pytest.raises(ValueError, match=message) as error:
        read_meta(tmp_path)
    assert "move it away" in str(error.value) and str(tmp_path / "run.json") in str(error.value)
    config = BenchmarkConfig(methods=("raw",), metrics=("mass_jaccard",), limit=1, progress=False)
    data = SyntheticShapes("test", 2, 32)
    with pytest.raises(ValueError, match=message):
        run_benchmark(tiny_model(), tiny_preprocess(), data, tmp_path, config)
    assert (tmp_path / "run.json").read_bytes() == content
    assert (tmp_path / "results.jsonl").read_bytes() == GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl", "run.json"]


def test_corrupt_results_stop_the_run_before_run_json_changes(tmp_path: Path) -> None:
    from attnexplain.data.synthetic import SyntheticShapes

    config = BenchmarkConfig(methods=("raw",), metrics=("mass_jaccard",), limit=1, progress=False)
    data = SyntheticShapes("test", 2, 32)
    run_benchmark(tiny_model(), tiny_preprocess(), data, tmp_path, config)
    meta = (tmp_path / "run.json").read_bytes()
    results = tmp_path / "results.jsonl"
    damaged = results.read_bytes() + b"\x00\xff binary tail\n"
    results.write_bytes(damaged)
    with pytest.raises(ValueError, match="not a JSON row"):
        run_benchmark(tiny_model(), tiny_preprocess(), data, tmp_path, config)
    assert (tmp_path / "run.json").read_bytes() == meta and results.read_bytes() == damaged
