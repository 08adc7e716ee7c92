"""``attnexplain benchmark``: a run end to end, and one-line errors with status 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from attnexplain.benchmark.cli import add_parser, main
from tests.benchmark.helpers import save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-vit"))


def test_run_writes_rows_and_report(model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main([
        "--model", str(model_dir), "--dataset", "synthetic:4", "--methods", "raw,gradcam",
        "--metrics", "mass_jaccard,insertion_blur", "--limit", "3", "--batch-size", "2",
        "--steps", "2", "--out", str(out), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 4  # raw, gradcam, random, centre
    assert {r["method"] for r in rows} == {"raw", "gradcam", "random", "centre"}
    assert set(rows[0]["metrics"]) == {"mass_jaccard", "insertion_blur"}
    meta = json.loads((out / "run.json").read_text())
    assert meta["model"] == str(model_dir) and meta["dataset"] == "synthetic:4"
    report = (out / "report.md").read_text()
    assert "| gradcam |" in report and "Wall time" in report


def test_default_methods_skip_gradients_for_headless_models(tmp_path: Path, capsys) -> None:
    folder = save_tiny_model(tmp_path / "backbone", head=False)
    out = tmp_path / "run"
    code = main([
        "--model", str(folder), "--dataset", "synthetic:2", "--out", str(out), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["methods"] == ["raw", "raw_heads", "rollout", "random", "centre"]
    assert all(info["category"] == "localisation" for info in meta["metrics"].values())
    # Never silently: what was left out, and why, on stderr, in run.json and in the report.
    left_out = {"gradcam", "grad_rollout", "deletion_black", "insertion_blur"}
    assert left_out <= set(meta["dropped"])
    assert "no classification head" in meta["dropped"]["gradcam"]
    err = capsys.readouterr().err
    assert "note: gradcam not run: the model has no classification head" in err
    report = (out / "report.md").read_text()
    assert "**Not run**" in report and "- `grad_rollout`: the model has no classification" in report


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--methods", "raw,nope"], "unknown method(s) nope"),
        (["--dataset", "pascal:/data"], "bad dataset spec 'pascal:/data'"),
        (["--dataset", "voc:/nowhere/voc"], "VOC root folder not found: /nowhere/voc"),
        (["--dataset", "synthetic:zero"], "synthetic:N needs a positive image count"),
        (["--metrics", "accuracy"], "unknown metric 'accuracy'"),
        (["--device", "gpu7"], "--device 'gpu7' is not a torch device"),
        (["--model", "/nowhere/model"], "model folder not found: /nowhere/model"),
        (["--limit", "0"], "argument --limit: expected a positive integer, got 0"),
        (["--recipe", "nope"], "unknown recipe 'nope'; choose from dino-voc"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    arguments: list[str], message: str, tmp_path: Path, capsys
) -> None:
    argv = ["--out", str(tmp_path / "run"), "--no-progress", "--dataset", "synthetic:2", *arguments]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("attnexplain benchmark: error: ")
    assert message in err


def test_missing_out_is_a_one_line_error(capsys) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "the following arguments are required: --out" in err


def test_add_parser_registers_the_subcommand(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="attnexplain")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["benchmark", "--out", str(tmp_path), "--methods", "raw"])
    assert args.command == "benchmark" and args.methods == "raw" and args.model == "default"
    assert args.handler.__name__ == "run"
