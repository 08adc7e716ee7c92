"""The report from hand-made rows: statistics, tables, files and figures (no model involved)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from attnexplain.benchmark.report import (
    Example,
    baseline_check,
    class_maps_figure,
    class_specific_section,
    class_specific_verdict,
    combine_rows,
    compare_runs,
    confidence_interval,
    example_grid,
    layer_figure,
    layer_table,
    markdown_report,
    markdown_table,
    metric_bars,
    summarise,
    timing,
    write_report,
)

matplotlib.use("Agg")

X = [0.0, 0.5, 1.0]


def row(index: int, method: str, jaccard: float, deletion: float | None = None) -> dict:
    metrics = {"mass_jaccard": jaccard}
    result = {
        "index": index,
        "image_id": f"img-{index}",
        "method": method,
        "metrics": metrics,
        "seconds": {"maps": 0.5, "localisation": 0.25, "faithfulness": 1.0},
    }
    if deletion is not None:
        metrics["deletion_black"] = deletion
        result["curves"] = {
            "deletion_black": {"x": X, "probability": [1.0, deletion, 0.0], "correct": [1, 1, 0]}
        }
    return result


@pytest.fixture
def rows() -> list[dict]:
    """Three images; rollout localises best, random worst; deletion: rollout lowest."""
    made = []
    for i in range(3):
        made += [
            row(i, "rollout", [0.5, 0.6, 0.7][i], [0.2, 0.3, 0.4][i]),
            row(i, "raw", 0.25, 0.5),
            row(i, "random", [0.1, 0.2, 0.3][i], [0.6, 0.6, 0.6][i]),
            row(i, "centre", [0.3, 0.5, 0.4][i], [0.4, 0.5, 0.6][i]),
        ]
    return made


META = {
    "model": "tiny",
    "dataset": "synthetic:3",
    "methods": ["raw", "rollout", "random", "centre"],
    "sessions": [
        {
            "wall_seconds": 12.0,
            "world_size": 1,
            "finished": True,
            "machine": {"processor": "x86_64", "cpu_count": 2, "torch_threads": 1},
        }
    ],
}


def test_confidence_interval_is_student_t() -> None:
    mean, std, half = confidence_interval([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.3027; s = 1; n = 3.
    assert (mean, std) == (2.0, 1.0)
    assert half == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    assert confidence_interval([0.5]) == (0.5, None, None)
    with pytest.raises(ValueError, match="no values"):
        confidence_interval([])
    with pytest.raises(ValueError, match="confidence must be in"):
        confidence_interval([1.0, 2.0], confidence=1.0)


def test_summarise_orders_and_aggregates(rows) -> None:
    cells = summarise(rows, META)
    assert [(c.metric, c.method) for c in cells][:4] == [
        ("mass_jaccard", "raw"),
        ("mass_jaccard", "rollout"),
        ("mass_jaccard", "random"),
        ("mass_jaccard", "centre"),
    ]
    rollout = next(c for c in cells if (c.method, c.metric) == ("rollout", "mass_jaccard"))
    assert rollout.n == 3 and rollout.mean == pytest.approx(0.6)
    assert rollout.half_width == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-6)
    raw = next(c for c in cells if (c.method, c.metric) == ("raw", "mass_jaccard"))
    assert raw.std == 0.0 and raw.ci_low == raw.ci_high == 0.25
    deletion = next(c for c in cells if c.metric == "deletion_black")
    assert deletion.category == "faithfulness" and not deletion.higher_is_better


def test_baseline_check_respects_direction(rows) -> None:
    checks = {(c["method"], c["metric"]): c for c in baseline_check(summarise(rows, META))}
    assert set(checks) == {("raw", "mass_jaccard"), ("rollout", "mass_jaccard")}
    assert checks["rollout", "mass_jaccard"]["beats_random"]
    assert checks["rollout", "mass_jaccard"]["beats_centre"]
    assert checks["raw", "mass_jaccard"]["beats_random"]
    assert not checks["raw", "mass_jaccard"]["beats_centre"]  # 0.25 < 0.4


def test_markdown_table_marks_best_and_baselines(rows) -> None:
    table = markdown_table(summarise(rows, META), "faithfulness")
    lines = table.splitlines()
    assert lines[0] == "| method | deletion_black ↓ |"
    assert lines[2].startswith("| raw | 0.500 ± 0.000")
    assert lines[3].startswith("| rollout | **0.300** ± 0.248")  # lowest deletion is best
    assert lines[4].startswith("| random *(baseline)* |")
    assert markdown_table(summarise(rows, META), "randomisation") == ""


def test_missing_cells_show_a_dash(rows) -> None:
    rows = [*rows, {**row(0, "raw_heads", 0.9), "metrics": {"best_head_jaccard": 0.9}}]
    table = markdown_table(summarise(rows, META), "localisation")
    raw_heads = next(line for line in table.splitlines() if line.startswith("| raw_heads"))
    assert raw_heads == "| raw_heads | – | **0.900** |"


def test_timing_sums_phases(rows) -> None:
    assert timing(rows)["raw"] == {
        "maps": 1.5,
        "localisation": 0.75,
        "faithfulness": 3.0,
        "total": 5.25,
        "images": 3,
    }


def test_markdown_report_has_every_section(rows) -> None:
    text = markdown_report(rows, META, figures={"Bars": "figures/bars.png"}, notes="A note.")
    for needle in (
        "# Benchmark: tiny on synthetic:3",
        "A note.",
        "## Localisation",
        "## Faithfulness",
        "## Against the baselines",
        "Wall time: **12.0 s** over 1 session(s).",
        "2 CPU cores",
        "| raw | 1.5 s | 0.8 s | 3.0 s | 5.2 s | 500.0 |",
        "![Bars](figures/bars.png)",
    ):
        assert needle in text, needle


def test_write_report_files(rows, tmp_path: Path) -> None:
    examples = [
        Example(
            "img-0",
            np.random.default_rng(0).random((3, 16, 16)),
            np.pad(np.ones((8, 8), bool), 4),
            {
                "rollout": np.random.default_rng(1).random((1, 16, 16)),
                "raw_heads": np.random.default_rng(2).random((4, 16, 16)),
            },
        )
    ]
    report = write_report(tmp_path, rows, META, examples=examples)
    assert report == tmp_path / "report.md"
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figures == [
        "curve_deletion_black.png",
        "examples.png",
        "faithfulness_bars.png",
        "localisation_bars.png",
    ]
    for name in figures:
        assert f"figures/{name}" in report.read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    cells = summarise(rows, META)
    assert [c["mean"] for c in summary["cells"]] == [c.mean for c in cells]
    with (tmp_path / "summary.csv").open() as file:
        lines = list(csv.DictReader(file))
    assert [(r["method"], r["metric"]) for r in lines] == [(c.method, c.metric) for c in cells]
    assert float(lines[1]["mean"]) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="rows is empty"):
        write_report(tmp_path, [], META)


def test_figures(rows) -> None:
    fig = metric_bars(summarise(rows, META))
    assert [ax.get_title() for ax in fig.axes] == [
        "mass_jaccard (higher is better)",
        "deletion_black (lower is better)",
    ]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [
        "raw",
        "rollout",
        "random",
        "centre",
    ]
    image, mask = np.zeros((3, 8, 8)), np.zeros((8, 8), bool)
    per_head_only = [Example("a", image, mask, {"raw_heads": np.zeros((4, 8, 8))})]
    with pytest.raises(ValueError, match="no method has a single"):
        example_grid(per_head_only)


def test_compare_runs(rows, tmp_path: Path) -> None:
    for name in ("model-a", "model-b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "run.json").write_text(json.dumps({**META, "model": name}))
    table = compare_runs([tmp_path / "model-a", tmp_path / "model-b"], "rollout", ["mass_jaccard"])
    assert table.splitlines()[2] == "| model-a | 3 | 0.600 ± 0.248 |"
    assert table.splitlines()[3].startswith("| model-b | 3 |")


def test_combine_rows_joins_passes(rows) -> None:
    localisation = [{**r, "metrics": {"mass_jaccard": r["metrics"]["mass_jaccard"]}} for r in rows]
    localisation = [{k: v for k, v in r.items() if k != "curves"} for r in localisation]
    faithfulness = [
        {**r, "metrics": {"deletion_black": r["metrics"]["deletion_black"]}} for r in rows
    ]
    combined = combine_rows(localisation, faithfulness)
    assert [r["metrics"] for r in combined] == [r["metrics"] for r in rows]
    assert combined[0]["curves"] == rows[0]["curves"]
    assert combined[0]["seconds"] == {"maps": 1.0, "localisation": 0.5, "faithfulness": 2.0}
    assert localisation[0]["metrics"] == {"mass_jaccard": 0.5}  # inputs untouched
    changed = [{**r, "metrics": {"mass_jaccard": 0.0}} for r in rows]
    with pytest.raises(ValueError, match="disagree on mass_jaccard"):
        combine_rows(localisation, changed)


LAYER_SCORES = {  # three images x three layers; raw is best at layer 2, rollout at layer 1
    "raw": [[0.1, 0.2, 0.6], [0.3, 0.2, 0.4], [0.2, 0.2, 0.5]],
    "rollout": [[0.4, 0.9, 0.5], [0.4, 0.7, 0.5], [0.4, 0.8, 0.5]],
}


def test_layer_table_and_figure_hold_the_means_by_layer() -> None:
    table = layer_table(LAYER_SCORES, "mass_jaccard").splitlines()
    assert table[0] == "| mass_jaccard | layer 0 | layer 1 | layer 2 |"
    half = confidence_interval([0.1, 0.3, 0.2])[2]
    assert table[2].startswith(f"| raw | 0.200 ± {half:.3f} | 0.200 ± 0.000 | **0.500** ±")
    assert table[3].split(" | ")[2].startswith("**0.800**")
    fig = layer_figure(LAYER_SCORES, "mass_jaccard")
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["raw", "rollout"]
    np.testing.assert_allclose(lines[1].get_ydata(), [0.4, 0.8, 0.5])
    with pytest.raises(ValueError, match=r"\(images, layers\)"):
        layer_figure({"raw": [0.1, 0.2]}, "mass_jaccard")


def test_write_report_adds_the_per_layer_figure(rows, tmp_path: Path) -> None:
    report = write_report(tmp_path, rows, META, layer_scores=LAYER_SCORES).read_text()
    assert (tmp_path / "figures" / "layers_mass_jaccard.png").is_file()
    assert "Localisation by layer (mass_jaccard, mean, 95% CI)" in report
    assert "figures/layers_mass_jaccard.png" in report


# --- class-specific section ------------------------------------------------------------------


def class_row(index: int, method: str, sensitivity: float, leakage: float) -> dict:
    return {
        "index": index,
        "image_id": f"img-{index}",
        "method": method,
        "classes": [0, 1],
        "metrics": {"class_sensitivity": sensitivity, "leakage": leakage},
        "seconds": {"maps": 0.1, "localisation": 0.1, "faithfulness": 0.0},
    }


@pytest.fixture
def class_rows() -> list[dict]:
    """gradcam separates classes, grad_rollout is not significant, raw is identical per class."""
    made = []
    for i in range(4):
        made += [
            class_row(i, "gradcam", [0.3, 0.4, 0.35, 0.45][i], 0.1),
            class_row(i, "grad_rollout", [0.2, -0.3, 0.1, -0.1][i], 0.3),
            class_row(i, "raw", 0.0, 0.4),
            class_row(i, "rollout", [1e-8, -2e-8, 0.0, 3e-9][i], 0.35),  # float rounding
            class_row(i, "all_objects", 0.0, 0.45),
            class_row(i, "random", 0.0, 0.2),
        ]
    return made


CLASS_META = {"methods": ["gradcam", "grad_rollout", "raw", "rollout", "random", "all_objects"]}


def test_class_specific_verdict(class_rows) -> None:
    cells = summarise(class_rows, CLASS_META)
    assert class_specific_verdict(class_rows, cells) == {
        "gradcam": "class-specific",
        "grad_rollout": "not shown",
        "raw": "class-agnostic",
        "rollout": "class-agnostic",
        "random": "class-agnostic",
        "all_objects": "class-agnostic",
    }


def test_class_specific_section(class_rows) -> None:
    text = class_specific_section(class_rows, CLASS_META, figure="figures/class_maps.png")
    lines = text.splitlines()
    assert lines[0] == "## Class-specific (images with two or more objects)"
    assert "4 images with two or more labelled objects" in text
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| method | leakage ↓ | class_sensitivity ↑ |"
    # References last, the oracle marked as such; the lowest leakage of all is bold.
    assert [line.split(" |")[0] for line in table[1:]] == [
        "| gradcam", "| grad_rollout", "| raw", "| rollout", "| random *(baseline)*",
        "| all_objects *(oracle)*",
    ]  # fmt: skip
    assert table[1].startswith("| gradcam | **0.100**")
    assert "- class-specific (confidence interval above 0): `gradcam`." in text
    assert "interval contains 0 or below): `grad_rollout`." in text
    assert "the same map for every class on every image: `raw`, `rollout`." in text
    assert "![Each method's map" in text and "(figures/class_maps.png)" in text
    assert class_specific_section([row(0, "raw", 0.5)], META) == ""


def _class_example(image_id: str, classes: list[int]) -> Example:
    rng = np.random.default_rng(len(classes))
    masks = np.zeros((len(classes), 16, 16), bool)
    for k in range(len(classes)):
        masks[k, 4 * k : 4 * k + 4, 2:10] = True
    return Example(
        image_id, rng.random((3, 16, 16)), masks[0], {"gradcam": rng.random((1, 16, 16))},
        classes=np.array(classes), class_masks=masks,
        class_maps={"gradcam": rng.random((len(classes), 16, 16)),
                    "raw": np.repeat(rng.random((1, 16, 16)), len(classes), axis=0)},
    )  # fmt: skip


def test_class_maps_figure_draws_two_rows_per_two_class_image() -> None:
    examples = [_class_example("a", [0, 1, 2]), _class_example("b", [3, 5]), _class_example(
        "c", [1, 4])]  # fmt: skip
    fig = class_maps_figure(examples, ["gradcam", "raw"], class_names="abcdef", images=2)
    assert len(fig.axes) == 4 * 3  # images b and c, two classes each, image + 2 methods
    titles = [ax.get_title() for ax in fig.axes[::3]]
    assert titles == ["b\nmap for: d", "b\nmap for: f", "c\nmap for: b", "c\nmap for: e"]
    with pytest.raises(ValueError, match="no example has two classes"):
        class_maps_figure([_class_example("a", [0, 1, 2])])


def test_write_report_with_class_specific_rows(class_rows, tmp_path: Path) -> None:
    examples = [_class_example("img-0", [0, 1])]
    report = write_report(tmp_path, class_rows, CLASS_META, examples=examples)
    text = report.read_text()
    assert (tmp_path / "figures" / "class_maps.png").is_file()
    section = text.index("## Class-specific")
    assert text.index("(figures/class_maps.png)") > section
    assert "**class maps**" not in text  # embedded in its section, not listed under Figures
