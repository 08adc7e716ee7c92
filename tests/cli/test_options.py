"""``explain`` builds its methods from the benchmark registry and routes each option to the
methods whose constructor takes it; the run folder's corrupt files are one-line errors."""

from __future__ import annotations

import inspect
import json
from typing import Literal

import pytest
import torch
from safetensors.torch import load_file

from attnexplain.benchmark.registry import METHODS, MethodSpec
from attnexplain.cli import main
from attnexplain.cli.errors import UsageError
from attnexplain.cli.options import convert, route_options
from attnexplain.cli.outputs import output_names
from tests.benchmark.helpers import save_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A tiny ViT classifier folder (6 classes, 4 heads, 32 px)."""
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("backbone"), head=False))


def test_every_explaining_method_of_the_registry_names_its_class() -> None:
    # explain reads a method's options from its class's constructor: an entry without
    # ``attribution=`` would be offered without options.
    for name, spec in METHODS.items():
        if spec.kind in ("attention", "gradient"):
            assert spec.attribution is not None, name
            assert set(spec.fixed) <= set(inspect.signature(spec.attribution).parameters), name


def test_options_come_from_the_constructor_without_model_and_fixed_arguments() -> None:
    assert set(METHODS["rollout"].options()) == {
        "head_fusion", "discard_ratio", "discard_counting", "start_layer", "end_layer",
        "interpolation", "exclude_tokens",
    }  # fmt: skip
    assert "head_fusion" in METHODS["raw"].options()
    assert "head_fusion" not in METHODS["raw_heads"].options()  # its factory fixes it
    assert METHODS["saliency"].options() == {}


@pytest.mark.parametrize(
    ("text", "hint", "expected"),
    [
        ("2", int, 2),
        ("-1", int, -1),
        ("0.9", float, 0.9),
        ("1", float, 1.0),
        ("max", Literal["mean", "max", "min"] | None, "max"),
        ("none", Literal["mean", "max", "min"] | None, None),
        ("blocks.3.norm1", str | torch.nn.Module | None, "blocks.3.norm1"),
    ],
)
def test_values_are_converted_to_what_the_parameter_takes(text, hint, expected) -> None:
    value = convert(text, hint)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "hint", "message"),
    [
        ("2", str | torch.nn.Module | None, "takes a name or none"),  # a number is not a name
        ("banana", Literal["mean", "max", "min"], "takes 'mean' or 'max' or 'min'"),
        ("0.5", int, "takes an integer"),
        ("none", float, "takes a number"),
    ],
)
def test_values_a_parameter_cannot_take_are_refused(text, hint, message) -> None:
    with pytest.raises(ValueError, match=message):
        convert(text, hint)


def test_an_option_goes_only_to_the_methods_that_take_it() -> None:
    options, notes = route_options(
        {"layer": ("--layer", "2"), "discard_ratio": ("--discard-ratio", "0.5")},
        ["raw", "rollout", "gradcam"],
    )
    assert options == {"raw": {"layer": 2}, "rollout": {"discard_ratio": 0.5}, "gradcam": {}}
    assert notes == ["--layer 2 is not passed on: gradcam's layer takes a name or none"]


@pytest.mark.parametrize(
    ("values", "methods", "message"),
    [
        ({"discard_ratio": ("--discard-ratio", "0.5")}, ["raw", "gradcam"],
         "--discard-ratio: none of the chosen methods (raw, gradcam) takes discard_ratio; "
         "methods that do: rollout"),
        ({"head_fusion": ("--head-fusion", "banana")}, ["raw", "rollout"],
         "--head-fusion 'banana': raw's head_fusion takes 'mean' or 'max' or 'min' or none; "
         "rollout's head_fusion takes 'mean' or 'max' or 'min'"),
    ],
)  # fmt: skip
def test_an_option_no_chosen_method_can_take_is_an_error(values, methods, message) -> None:
    with pytest.raises(UsageError) as error:
        route_options(values, methods)
    assert str(error.value) == message


def test_a_new_registry_entry_appears_in_explain_without_cli_edits(
    tiny, tmp_path, capsys, monkeypatch
) -> None:
    from attnexplain.benchmark import registry
    from attnexplain.methods import AttentionRollout

    def build(context, **options):
        return registry._attribution(AttentionRollout(context.model, **options))

    spec = MethodSpec("new_rollout", "attention", build, "a method added later",
                      attribution=AttentionRollout)  # fmt: skip
    monkeypatch.setitem(registry.METHODS, "new_rollout", spec)
    argv = [
        "explain",
        "--methods",
        "new_rollout",
        "--discard-ratio",
        "0.25",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--model",
        tiny,
    ]
    assert main(argv) == 0, capsys.readouterr().err  # fmt: skip
    settings = json.loads((tmp_path / "synthetic-test-000000.json").read_text())
    assert settings["methods"]["new_rollout"]["options"]["discard_ratio"] == 0.25
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["explain", "--list-methods"])
    assert "new_rollout" in capsys.readouterr().out


def test_head_fusion_none_gives_one_map_per_head(tiny, tmp_path, capsys) -> None:
    argv = ["explain", "--methods", "raw", "--head-fusion", "none", "--out", str(tmp_path / "o"),
            "--no-progress", "--model", tiny]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    maps = load_file(tmp_path / "o" / "synthetic-test-000000.safetensors")
    assert maps["raw"].shape == (4, 32, 32)  # the tiny model's 4 heads


def test_gradient_methods_on_a_headless_model(backbone, tmp_path, capsys) -> None:
    out = tmp_path / "o"
    argv = ["explain", "--model", backbone, "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "note: gradcam not run: the model has no classification head" in err
    assert set(load_file(out / "synthetic-test-000000.safetensors")) == {
        "raw",
        "raw_heads",
        "rollout",
    }
    assert main([*argv, "--methods", "gradcam"]) == 2
    assert "gradcam differentiate a class logit" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("7", "--target 7: the model has 6 classes (0 to 5)"),
        ("LABEL_9", "--target 'LABEL_9' is not a label of this model (did you mean"),
    ],
)
def test_bad_targets_are_one_line(target, message, tiny, tmp_path, capsys) -> None:
    argv = ["explain", "--target", target, "--out", str(tmp_path / "o"), "--no-progress",
            "--model", tiny]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_output_names_are_distinct() -> None:
    assert output_names(["a/x.png", "b/x.jpg"]) == ["a_x", "b_x"]
    assert output_names(["d/x.png", "d/x.jpg", "y.png"]) == ["x_png", "x_jpg", "y"]
    assert output_names(["/t/a/c/x.png", "/t/b/c/x.png"]) == ["a_c_x", "b_c_x"]
    assert output_names(["x.png", "x.png"]) == ["x", "x-2"]
    assert output_names(["mean_attention_distance.png"], reserved=["mean_attention_distance"]) == [
        "mean_attention_distance-2"
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("results.jsonl", b"\x00\x01\x02 binary", "results.jsonl, line 1: not a JSON row"),
        ("results.jsonl", b'{"a": 1}\n', "results.jsonl, line 1: not a benchmark row"),
        ("run.json", b"{broken", "run.json is not valid JSON"),
    ],
)
def test_a_corrupt_run_folder_is_a_one_line_error(name, content, message, tiny, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_bytes(content)
    argv = ["benchmark", "--dataset", "synthetic:2", "--methods", "raw", "--metrics",
            "mass_jaccard", "--out", str(out), "--no-progress",
            "--model", tiny]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(out / name) in err
    assert (out / name).read_bytes() == content
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_help_lists_options_without_the_registry(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = capsys.readouterr().out
    for flag in ("--layer", "--head-fusion", "--discard-ratio", "--start-layer", "--target",
                 "--format", "--list-methods"):  # fmt: skip
        assert flag in text
