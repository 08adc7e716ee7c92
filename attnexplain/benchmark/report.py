"""The benchmark report: statistics, tables (Markdown, CSV, JSON) and figures from result rows.

Every function takes the rows :func:`~attnexplain.benchmark.runner.run_benchmark` writes (a
list of dicts, as read from ``results.jsonl``) and, where it helps, the run's ``run.json``
metadata, so the whole report is testable without a model.

**Statistics.** Each (method, metric) cell is the mean over images with the half-width of its
95 % Student-t confidence interval, ``t(0.975, n - 1) * s / sqrt(n)`` (``s`` the sample standard
deviation). Images are the independent units; a t interval is exact for normal scores and
close for the bounded, roughly symmetric means of a few hundred images reported here. With one
image the interval is undefined and left empty. Means are summed in the rows' sorted order, so
a sharded run reports the same digits as a single-process one.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from attnexplain.benchmark.registry import (
    BASELINES,
    KNOWN_METRICS,
    METHODS,
    ORACLES,
    REFERENCE_MAPS,
    metric_info,
)
from attnexplain.benchmark.store import Row
from attnexplain.viz import compare_overlays, curves_plot, save_figure

CONFIDENCE = 0.95
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
REPORT_MD = "report.md"
FIGURES_DIR = "figures"
#: The ``figures`` key of the class-specific figure (embedded in its section, not under Figures).
CLASS_FIGURE = "class maps"
#: Resolution of the class-specific figure: two rows per image of photo-like panels compress
#: poorly (about 0.6 MB for four methods at 100 dpi).
CLASS_FIGURE_DPI = 72
#: Resolution of the example maps figure (one row per example, one column per method).
EXAMPLES_DPI = 60
#: Palette size of the photo-like figures (see :func:`attnexplain.viz.save_figure`).
FIGURE_COLOURS = 256
#: Largest ``|class_sensitivity|`` still read as "the same map for every class" (float32 maps).
AGNOSTIC_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Cell:
    """One (method, metric) statistic.

    Attributes:
        method: method name.
        metric: metric name.
        category: ``"localisation"`` or ``"faithfulness"``.
        higher_is_better: the metric's direction.
        n: number of images.
        mean: mean over images.
        std: sample standard deviation (``None`` for one image).
        ci_low: lower end of the confidence interval (``None`` for one image).
        ci_high: upper end (``None`` for one image).
    """

    method: str
    metric: str
    category: str
    higher_is_better: bool
    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width, or ``None``."""
        return None if self.ci_high is None else (self.ci_high - self.ci_low) / 2  # type: ignore[operator]


def confidence_interval(
    values: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float | None, float | None]:
    """Mean, sample standard deviation and t-interval half-width of ``values``.

    Args:
        values: at least one score.
        confidence: the interval's level in ``(0, 1)``.

    Returns:
        ``(mean, std, half_width)``; ``std`` and ``half_width`` are ``None`` for one value.

    Raises:
        ValueError: for no values or a level outside ``(0, 1)``.

    Examples:
        >>> mean, std, half = confidence_interval([1.0, 2.0, 3.0])
        >>> mean, std, round(half, 3)
        (2.0, 1.0, 2.484)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("no values to summarise")
    mean = float(array.sum() / array.size)
    if array.size == 1:
        return mean, None, None
    std = float(array.std(ddof=1))
    quantile = float(stats.t.ppf(0.5 + confidence / 2, df=array.size - 1))
    return mean, std, quantile * std / math.sqrt(array.size)


def _metric_meta(name: str, meta: Mapping[str, Any] | None) -> tuple[str, bool]:
    known = (meta or {}).get("metrics", {}).get(name)
    if known is not None:
        return known["category"], bool(known["higher_is_better"])
    info = metric_info(name)
    return info.category, info.higher_is_better


def ordered_methods(rows: Iterable[Row], meta: Mapping[str, Any] | None = None) -> list[str]:
    """Methods in the run's order (``meta["methods"]``), else first-seen, baselines last."""
    seen = list(dict.fromkeys(row["method"] for row in rows))
    preferred = [m for m in (meta or {}).get("methods", []) if m in seen]
    rest = [m for m in seen if m not in preferred]
    methods = preferred + rest
    return [m for m in methods if m not in REFERENCE_MAPS] + [
        m for m in methods if m in REFERENCE_MAPS
    ]


def summarise(
    rows: Sequence[Row], meta: Mapping[str, Any] | None = None, confidence: float = CONFIDENCE
) -> list[Cell]:
    """Mean and confidence interval of every (method, metric) present in ``rows``.

    Args:
        rows: result rows (``method`` and a ``metrics`` dict each).
        meta: the run's metadata (metric directions, method order); optional.
        confidence: the interval's level.

    Returns:
        Cells ordered by metric (localisation first), then method (baselines last).
    """
    values: dict[tuple[str, str], list[float]] = {}
    for row in sorted(rows, key=lambda r: (int(r.get("index", 0)), str(r["image_id"]))):
        for metric, value in row["metrics"].items():
            values.setdefault((row["method"], metric), []).append(float(value))
    metrics = list(dict.fromkeys(metric for _, metric in values))
    categories = {m: _metric_meta(m, meta) for m in metrics}
    # The registry's order (localisation first), not the alphabetical order of JSON keys.
    known = {name: i for i, name in enumerate(KNOWN_METRICS)}
    metrics.sort(key=lambda m: (categories[m][0] != "localisation", known.get(m, len(known)), m))
    cells = []
    for metric in metrics:
        category, higher = categories[metric]
        for method in ordered_methods(rows, meta):
            scores = values.get((method, metric))
            if not scores:
                continue
            mean, std, half = confidence_interval(scores, confidence)
            low, high = (None, None) if half is None else (mean - half, mean + half)
            cells.append(Cell(method, metric, category, higher, len(scores), mean, std, low, high))
    return cells


def combine_rows(*row_sets: Sequence[Row]) -> list[Row]:
    """Join the rows of runs that scored the same images with different metrics.

    Rows with the same ``(image_id, method)`` are merged: their ``metrics``, ``objects`` and
    ``curves`` are united and their ``seconds`` added per phase; other fields come from the first.

    Returns:
        One row per key, in first-seen order.

    Raises:
        ValueError: if two runs disagree on a metric's value for the same key.
    """
    combined: dict[tuple[str, str], Row] = {}
    for rows in row_sets:
        for row in rows:
            key = (str(row["image_id"]), str(row["method"]))
            if key not in combined:
                combined[key] = {
                    **row,
                    **{f: dict(row.get(f, {})) for f in ("metrics", "objects", "curves")},
                    "seconds": dict(row.get("seconds", {})),
                }
                continue
            target = combined[key]
            for name, value in row["metrics"].items():
                if target["metrics"].setdefault(name, value) != value:
                    raise ValueError(f"{key}: two runs disagree on {name}")
            target["objects"].update(row.get("objects", {}))
            target["curves"].update(row.get("curves", {}))
            for phase, seconds in row.get("seconds", {}).items():
                target["seconds"][phase] = target["seconds"].get(phase, 0.0) + seconds
    return list(combined.values())


def timing(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """Seconds spent per method (summed over images and processes), by phase.

    Returns:
        ``{method: {"maps", "localisation", "faithfulness", "total", "images"}}``.
    """
    table: dict[str, dict[str, float]] = {}
    for row in rows:
        entry = table.setdefault(
            row["method"],
            {"maps": 0.0, "localisation": 0.0, "faithfulness": 0.0, "total": 0.0, "images": 0},
        )
        for phase, seconds in row.get("seconds", {}).items():
            entry[phase] += seconds
            entry["total"] += seconds
        entry["images"] += 1
    return table


def baseline_check(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Whether each non-baseline method beats ``random`` and ``centre`` on each localisation metric.

    "Beats" compares means in the metric's direction (confidence intervals are in the tables).

    Returns:
        One dict per (method, metric): ``method``, ``metric``, ``value``, ``random``,
        ``centre``, ``beats_random``, ``beats_centre``.
    """
    by_key = {(c.method, c.metric): c for c in cells}
    checks = []
    for cell in cells:
        if cell.method in REFERENCE_MAPS or cell.category != "localisation":
            continue
        entry: dict[str, Any] = {"method": cell.method, "metric": cell.metric, "value": cell.mean}
        for baseline in BASELINES:
            other = by_key.get((baseline, cell.metric))
            entry[baseline] = None if other is None else other.mean
            if other is None:
                entry[f"beats_{baseline}"] = None
            elif cell.higher_is_better:
                entry[f"beats_{baseline}"] = cell.mean > other.mean
            else:
                entry[f"beats_{baseline}"] = cell.mean < other.mean
        checks.append(entry)
    return checks


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def _method_label(method: str) -> str:
    if method in BASELINES:
        return f"{method} *(baseline)*"
    return f"{method} *(oracle)*" if method in ORACLES else method


def _format(cell: Cell, best: bool) -> str:
    text = f"{cell.mean:.3f}"
    if best:
        text = f"**{text}**"
    half = cell.half_width
    return text if half is None else f"{text} ± {half:.3f}"


def markdown_table(
    cells: Sequence[Cell], category: str | None = None, methods: Sequence[str] | None = None
) -> str:
    """A Markdown table: one row per method, one column per metric, ``mean ± half-width``.

    The best mean of each column (in the metric's direction) is bold; baselines are marked.

    Args:
        cells: from :func:`summarise`.
        category: keep only metrics of this category.
        methods: row order (default: first appearance, baselines last).

    Returns:
        The table, or an empty string when no cell is left.
    """
    chosen = [c for c in cells if category is None or c.category == category]
    if not chosen:
        return ""
    metrics = list(dict.fromkeys(c.metric for c in chosen))
    present = list(dict.fromkeys(c.method for c in chosen))
    if methods is None:
        methods = [m for m in present if m not in REFERENCE_MAPS]
        methods += [m for m in present if m in REFERENCE_MAPS]
    else:
        methods = [m for m in methods if m in present]
    by_key = {(c.method, c.metric): c for c in chosen}
    best = {}
    for metric in metrics:
        column = [c for c in chosen if c.metric == metric]
        pick = max if column[0].higher_is_better else min
        best[metric] = pick(column, key=lambda c: c.mean).method
    arrows = {m: "↑" if by_key[next(k for k in by_key if k[1] == m)].higher_is_better else "↓"
              for m in metrics}  # fmt: skip
    lines = [
        "| method | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for method in methods:
        label = _method_label(method)
        row = [
            _format(by_key[(method, m)], best[m] == method) if (method, m) in by_key else "–"
            for m in metrics
        ]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_csv(cells: Sequence[Cell], path: str | Path) -> Path:
    """Write the cells as CSV (one line per method and metric). Returns the path."""
    target = Path(path)
    fields = [*Cell.__dataclass_fields__, "half_width"]
    with target.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        for cell in cells:
            writer.writerow({**asdict(cell), "half_width": cell.half_width})
    return target


def summary_document(cells: Sequence[Cell], meta: Mapping[str, Any] | None = None) -> dict:
    """The JSON report: settings and every cell (no timings, so runs compare exactly)."""
    meta = meta or {}
    return {
        "model": meta.get("model"),
        "dataset": meta.get("dataset"),
        "confidence": CONFIDENCE,
        "interval": "student-t",
        "cells": [{**asdict(c), "half_width": c.half_width} for c in cells],
    }


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------


def metric_bars(cells: Sequence[Cell], *, ncols: int = 4) -> Figure:
    """One bar chart per metric: the mean of each method with its confidence interval.

    Args:
        cells: from :func:`summarise`.
        ncols: charts per row.

    Returns:
        The Figure, one Axes per metric (baselines drawn grey and hatched).

    Raises:
        ValueError: if ``cells`` is empty.
    """
    if not cells:
        raise ValueError("cells is empty: nothing to plot")
    metrics = list(dict.fromkeys(c.metric for c in cells))
    ncols = min(ncols, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for spare in axes[len(metrics) :]:
        fig.delaxes(spare)
    for ax, metric in zip(axes, metrics):
        column = [c for c in cells if c.metric == metric]
        positions = np.arange(len(column))
        errors = [c.half_width or 0.0 for c in column]
        colours = ["0.6" if c.method in REFERENCE_MAPS else f"C{i}" for i, c in enumerate(column)]
        bars = ax.bar(positions, [c.mean for c in column], yerr=errors, color=colours, capsize=3)
        for bar, cell in zip(bars, column):
            if cell.method in REFERENCE_MAPS:
                bar.set_hatch("//")
        ax.set_xticks(positions, [c.method for c in column], rotation=45, ha="right")
        arrow = "higher" if column[0].higher_is_better else "lower"
        ax.set_title(f"{metric} ({arrow} is better)", fontsize="small")
    return fig


def _layer_statistics(values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per layer of ``(images, layers)`` scores: the mean, the CI half-width (0 for one image)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"layer scores must be (images, layers), got shape {array.shape}")
    stats_ = [confidence_interval(array[:, k].tolist()) for k in range(array.shape[1])]
    means = np.array([mean for mean, _, _ in stats_])
    halves = np.array([half or 0.0 for _, _, half in stats_])
    return np.arange(array.shape[1]), means, halves


def layer_figure(scores: Mapping[str, Any], metric: str) -> Figure:
    """A metric by layer: each method's mean over images with its confidence band.

    Args:
        scores: method -> ``(images, layers)`` per-image scores (e.g. the mass Jaccard of each
            layer's raw CLS attention and of the rollout ending at that layer).
        metric: the metric's name, for the axis.

    Returns:
        The Figure, one Axes with one line (and band) per method.

    Raises:
        ValueError: for empty scores or scores that are not ``(images, layers)``.
    """
    if not scores:
        raise ValueError("scores is empty: nothing to plot")
    fig = Figure(figsize=(6.0, 3.4), layout="constrained")
    ax = fig.subplots()
    for method, values in scores.items():
        layers, means, halves = _layer_statistics(values)
        ax.plot(layers, means, marker="o", label=method)
        ax.fill_between(layers, means - halves, means + halves, alpha=0.2)
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"{metric} (mean, {CONFIDENCE:.0%} CI)")
    ax.legend(fontsize="small")
    return fig


def layer_table(scores: Mapping[str, Any], metric: str) -> str:
    """The same as :func:`layer_figure` as a Markdown table: one row per method, one column per
    layer, each cell ``mean ± half-width``, the best layer of each method bold."""
    columns = None
    lines = []
    for method, values in scores.items():
        layers, means, halves = _layer_statistics(values)
        columns = layers if columns is None else columns
        best = int(np.argmax(means))
        cells = [
            (f"**{m:.3f}**" if k == best else f"{m:.3f}") + f" ± {h:.3f}"
            for k, (m, h) in enumerate(zip(means, halves))
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    header = f"| {metric} | " + " | ".join(f"layer {k}" for k in columns) + " |"
    return "\n".join([header, "|---|" + "---:|" * len(columns), *lines])


def _curve_kind(metric: str) -> str:
    return metric.split("_")[0] if metric.startswith(("deletion", "insertion")) else "perturbation"


def curve_figure(rows: Sequence[Row], metric: str, methods: Sequence[str] | None = None) -> Figure:
    """Mean perturbation curves of one faithfulness metric, one line per method.

    Deletion / insertion plot the target's probability; the perturbation tests plot top-1
    correctness (their mean is the accuracy curve whose area the metric reports).

    Args:
        rows: result rows carrying ``curves[metric]``.
        metric: e.g. ``"deletion_black"``.
        methods: which methods, in order (default: every method with that curve).

    Returns:
        The Figure of :func:`attnexplain.viz.curves_plot`.

    Raises:
        ValueError: if no row carries the curve.
    """
    field = "correct" if metric.startswith("perturbation") else "probability"
    curves: dict[str, list[list[float]]] = {}
    x = None
    for row in rows:
        curve = row.get("curves", {}).get(metric)
        if curve is None:
            continue
        curves.setdefault(row["method"], []).append(curve[field])
        x = curve["x"]
    if not curves:
        raise ValueError(f"no row has a {metric!r} curve")
    order = [m for m in (methods or ordered_methods(rows)) if m in curves]
    fig = curves_plot(
        {m: np.asarray(curves[m], dtype=np.float64) for m in order},
        x=np.asarray(x),
        kind=_curve_kind(metric),  # type: ignore[arg-type]
    )
    fig.axes[0].set_title(f"{metric} — " + fig.axes[0].get_title(), fontsize="small")
    return fig


@dataclass
class Example:
    """One image's maps for the example grid.

    Attributes:
        image_id: the sample's id.
        image: ``(3, S, S)`` float in ``[0, 1]``.
        mask: ``(S, S)`` bool.
        maps: method -> ``(K, S, S)`` map.
        classes: ``(C,)`` the present classes, when the run scored class-specific metrics.
        class_masks: ``(C, S, S)`` bool, their masks.
        class_maps: method -> ``(C, S, S)``, its map for each present class.
    """

    image_id: str
    image: np.ndarray
    mask: np.ndarray
    maps: dict[str, np.ndarray]
    classes: np.ndarray | None = None
    class_masks: np.ndarray | None = None
    class_maps: dict[str, np.ndarray] = field(default_factory=dict)


def load_examples(run_dir: str | Path) -> list[Example]:
    """Read the example maps a run saved under ``examples/`` (sorted by dataset index)."""
    grouped: dict[str, Example] = {}
    for path in sorted((Path(run_dir) / "examples").glob("*.npz")):
        index, _, method = path.stem.partition("-")
        with np.load(path) as data:
            example = grouped.setdefault(
                index, Example(str(data["image_id"]), data["image"], data["mask"], {})
            )
            example.maps[method] = data["map"]
            if "class_maps" in data:
                example.classes, example.class_masks = data["classes"], data["class_masks"]
                example.class_maps[method] = data["class_maps"]
    return [grouped[key] for key in sorted(grouped)]


def example_grid(examples: Sequence[Example], methods: Sequence[str] | None = None) -> Figure:
    """Images (object outlined) and each method's map, one row per image.

    Per-head maps (``K > 1``) are left out: their heads have no single map to show.

    Args:
        examples: from :func:`load_examples`.
        methods: columns, in order (default: the fused methods of the first example).

    Returns:
        The Figure, ``len(examples)`` rows of ``1 + methods`` panels.

    Raises:
        ValueError: if ``examples`` is empty or no fused map is left.
    """
    if not examples:
        raise ValueError("examples is empty: nothing to draw")
    if methods is None:
        methods = list(examples[0].maps)
    methods = [m for m in methods if all(e.maps.get(m, np.zeros((2,))).shape[0] == 1
                                         for e in examples)]  # fmt: skip
    if not methods:
        raise ValueError("no method has a single (fused) map for every example")
    fig = Figure(figsize=(1.7 * (len(methods) + 1), 1.8 * len(examples)), layout="constrained")
    axes = fig.subplots(len(examples), len(methods) + 1, squeeze=False)
    for row, example in zip(axes, examples):
        compare_overlays(example.image, {m: example.maps[m][0] for m in methods}, axes=row)
        if example.mask.any() and not example.mask.all():
            row[0].contour(example.mask.astype(float), levels=[0.5], colors=["lime"], linewidths=1)
        row[0].set_title(example.image_id, fontsize="x-small")
    return fig


# ----------------------------------------------------------------------------------------------
# Class-specific section
# ----------------------------------------------------------------------------------------------


def class_maps_figure(
    examples: Sequence[Example],
    methods: Sequence[str] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    images: int = 3,
) -> Figure:
    """For a few two-class images, each method's map for each of the two classes.

    Two rows per image, one per class: the image with that class's object outlined, then every
    method's map *for that class*. A class-agnostic method draws the same map in both rows.

    Args:
        examples: from :func:`load_examples` of a run with class-specific metrics.
        methods: columns, in order (default: those with class maps in the first example).
        class_names: class id -> name, for the row titles.
        images: the most images drawn (the first ones with exactly two classes).

    Returns:
        The Figure, ``2 * images`` rows of ``1 + methods`` panels.

    Raises:
        ValueError: if no example has two classes with class maps for every method.
    """
    chosen = [e for e in examples if e.classes is not None and len(e.classes) == 2]
    if methods is None:
        methods = list(chosen[0].class_maps) if chosen else []
    chosen = [e for e in chosen if all(m in e.class_maps for m in methods)][:images]
    if not chosen or not methods:
        raise ValueError("no example has two classes with class maps for every method")
    rows = 2 * len(chosen)
    fig = Figure(figsize=(1.5 * (len(methods) + 1), 1.6 * rows), layout="constrained")
    axes = fig.subplots(rows, len(methods) + 1, squeeze=False)
    for number, example in enumerate(chosen):
        for k, label in enumerate(example.classes):  # type: ignore[arg-type]
            row = axes[2 * number + k]
            compare_overlays(
                example.image, {m: example.class_maps[m][k] for m in methods}, axes=row
            )
            mask = example.class_masks[k].astype(float)  # type: ignore[index]
            row[0].contour(mask, levels=[0.5], colors=["lime"], linewidths=1)
            name = class_names[int(label)] if class_names is not None else f"class {int(label)}"
            row[0].set_title(f"{example.image_id}\nmap for: {name}", fontsize="x-small")
            if number or k:
                for ax in row[1:]:
                    ax.set_title("")
    return fig


def _class_methods(
    examples: Sequence[Example], rows: Sequence[Row], meta: Mapping[str, Any] | None
) -> list[str]:
    """The run's methods (not the reference maps), in report order, with class maps."""
    present = {m for e in examples for m in e.class_maps}
    return [m for m in ordered_methods(rows, meta) if m in present and m not in REFERENCE_MAPS]


def class_specific_verdict(rows: Sequence[Row], cells: Sequence[Cell]) -> dict[str, str]:
    """Which methods are class-specific in fact, from their ``class_sensitivity``.

    - ``"class-agnostic"``: the sensitivity is 0 on every image up to float rounding (below
      :data:`AGNOSTIC_TOLERANCE`), i.e. the method gave every class of an image the same map
      (maps of one image made in differently composed batches may differ in the last bits);
    - ``"class-specific"``: the lower end of its confidence interval is above 0;
    - ``"not shown"``: otherwise (the interval contains 0, or the mean is negative).

    Returns:
        method -> verdict, for the methods and baselines with a ``class_sensitivity`` cell.
    """
    values: dict[str, list[float]] = {}
    for row in rows:
        if "class_sensitivity" in row["metrics"]:
            values.setdefault(row["method"], []).append(row["metrics"]["class_sensitivity"])
    verdicts = {}
    for cell in cells:
        if cell.metric != "class_sensitivity":
            continue
        if max(abs(v) for v in values[cell.method]) < AGNOSTIC_TOLERANCE:
            verdicts[cell.method] = "class-agnostic"
        elif cell.ci_low is not None and cell.ci_low > 0:
            verdicts[cell.method] = "class-specific"
        else:
            verdicts[cell.method] = "not shown"
    return verdicts


def class_specific_section(
    rows: Sequence[Row],
    meta: Mapping[str, Any] | None = None,
    *,
    figure: str | None = None,
    heading: str = "## Class-specific (images with two or more objects)",
    intro: str = "",
) -> str:
    """The class-specific part of a report: table, verdict per method and figure.

    Args:
        rows: result rows of a run with class-specific metrics.
        meta: its ``run.json``.
        figure: relative path of :func:`class_maps_figure`'s image, embedded when given.
        heading: the section's heading line.
        intro: Markdown placed under the heading.

    Returns:
        The Markdown text, or ``""`` when the rows hold no class-specific metric.
    """
    cells = [c for c in summarise(rows, meta) if c.category == "class_specific"]
    if not cells:
        return ""
    methods = ordered_methods(rows, meta)
    scored = {row["image_id"] for row in rows if "class_sensitivity" in row["metrics"]}
    verdicts = class_specific_verdict(rows, cells)
    groups: dict[str, list[str]] = {}
    for method in methods:
        if method in verdicts and method not in REFERENCE_MAPS:
            groups.setdefault(verdicts[method], []).append(f"`{method}`")
    parts = [heading]
    if intro:
        parts.append(intro.strip())
    parts.append(
        f"{len(scored)} images with two or more labelled objects. Every method is asked once "
        "per present class and once for one absent class (the negative query); a method that "
        "returns one map whatever the class answers every class with it. Per image, "
        "`object_*` score the map for each class against *that* class's mask (the other objects "
        "count as background), `leakage` is the share of its mass on the other objects, "
        "`class_sensitivity` is (target-mask mass − other-mask mass) of each class's map, "
        "differenced between the two maps of a pair and averaged (0 for identical maps, 1 when "
        "each map lies on its own object), and `negative_object_mass` is the share of the "
        "absent class's map on the objects that are present. `all_objects` is the oracle map "
        "of every object's mask, the best a class-agnostic map can do."
    )
    parts.append(markdown_table(cells, "class_specific", methods))
    lines = ["**Which methods are class-specific in fact** (by `class_sensitivity`):", ""]
    texts = {
        "class-specific": "class-specific (confidence interval above 0)",
        "not shown": "not shown to be class-specific (interval contains 0 or below)",
        "class-agnostic": "class-agnostic: the same map for every class on every image",
    }
    for verdict, text in texts.items():
        if verdict in groups:
            lines.append(f"- {text}: {', '.join(groups[verdict])}.")
    parts.append("\n".join(lines))
    if figure:
        caption = "Each method's map for each of the two classes of a few two-object images"
        parts.append(f"**{caption}**\n\n![{caption}]({figure})")
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------------
# The whole report
# ----------------------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _timing_table(rows: Sequence[Row], methods: Sequence[str]) -> str:
    table = timing(rows)
    lines = [
        "| method | maps | localisation | faithfulness | total | ms / image (maps) |",
        "|---|---|---|---|---|---|",
    ]
    for method in methods:
        t = table[method]
        per_image = 1000 * t["maps"] / max(t["images"], 1)
        lines.append(
            f"| {method} | {_seconds(t['maps'])} | {_seconds(t['localisation'])} | "
            f"{_seconds(t['faithfulness'])} | {_seconds(t['total'])} | {per_image:.1f} |"
        )
    return "\n".join(lines)


def _sessions_text(meta: Mapping[str, Any]) -> str:
    sessions = meta.get("sessions", [])
    if not sessions:
        return "No session recorded."
    wall = sum(s["wall_seconds"] for s in sessions)
    stopped = sum(not s.get("finished", True) for s in sessions)
    resumed = f", {stopped} of them interrupted and resumed" if stopped else ""
    lines = [f"Wall time: **{_seconds(wall)}** over {len(sessions)} session(s){resumed}."]
    machine = sessions[-1].get("machine", {})
    if machine:
        lines.append(
            f"Machine: {machine.get('processor')} · {machine.get('cpu_count')} CPU cores · "
            f"{machine.get('torch_threads')} torch threads · device {machine.get('device')}"
            + (f" ({machine['accelerator']})" if machine.get("accelerator") else "")
            + f" · {sessions[-1].get('world_size', 1)} process(es) · "
            f"{machine.get('platform')} · Python {machine.get('python')} · "
            f"torch {machine.get('torch')}."
        )
    return "\n\n".join(lines)


def _check_table(checks: Sequence[Mapping[str, Any]]) -> str:
    if not checks:
        return ""
    mark = {True: "yes", False: "**no**", None: "–"}
    lines = [
        "| method | metric | value | random | centre | beats random | beats centre |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        baseline_values = ["–" if c[b] is None else f"{c[b]:.3f}" for b in ("random", "centre")]
        lines.append(
            f"| {c['method']} | {c['metric']} | {c['value']:.3f} | "
            + " | ".join(baseline_values)
            + f" | {mark[c['beats_random']]} | {mark[c['beats_centre']]} |"
        )
    return "\n".join(lines)


def markdown_report(
    rows: Sequence[Row],
    meta: Mapping[str, Any] | None = None,
    *,
    figures: Mapping[str, str] | None = None,
    title: str | None = None,
    notes: str = "",
    sections: Sequence[str] = (),
) -> str:
    """The report as Markdown: tables per category, baseline check, time, machine, figures.

    Args:
        rows: result rows.
        meta: ``run.json`` contents (model, dataset, metric metadata, sessions).
        figures: caption -> relative path of figures to embed.
        title: the heading (default from the model and dataset).
        notes: extra Markdown placed under the heading.
        sections: extra Markdown sections placed after the tables (e.g. another run's
            :func:`class_specific_section`).

    Returns:
        The Markdown text.
    """
    meta = meta or {}
    cells = summarise(rows, meta)
    methods = ordered_methods(rows, meta)
    images = len({row["image_id"] for row in rows})
    heading = title or f"Benchmark: {meta.get('model', 'model')} on {meta.get('dataset', 'data')}"
    parts = [f"# {heading}"]
    if notes:
        parts.append(notes.strip())
    parts.append(
        f"{images} images · methods: {', '.join(methods)}. Each cell is the mean over images "
        f"± the half-width of its {CONFIDENCE:.0%} Student-t confidence interval; the best mean "
        "per column is bold; ↑/↓ say which direction is better."
    )
    descriptions = [f"- `{m}`: {METHODS[m].description}" for m in methods if m in METHODS]
    if descriptions:
        parts.append("\n".join(descriptions))
    for category, text in (
        ("localisation", "## Localisation"),
        ("faithfulness", "## Faithfulness"),
    ):
        table = markdown_table(cells, category, methods)
        if table:
            parts += [text, table]
    class_section = class_specific_section(rows, meta, figure=(figures or {}).get(CLASS_FIGURE))
    if class_section:
        parts.append(class_section)
    parts += [section.strip() for section in sections if section.strip()]
    checks = _check_table(baseline_check(cells))
    if checks:
        parts += ["## Against the baselines (localisation means)", checks]
    parts += ["## Time and machine", _sessions_text(meta), _timing_table(rows, methods)]
    listed = {k: v for k, v in (figures or {}).items() if k != CLASS_FIGURE}
    if listed:
        parts.append("## Figures")
        parts += [f"**{caption}**\n\n![{caption}]({path})" for caption, path in listed.items()]
    return "\n\n".join(parts) + "\n"


def write_report(
    out_dir: str | Path,
    rows: Sequence[Row],
    meta: Mapping[str, Any] | None = None,
    *,
    examples: Sequence[Example] = (),
    title: str | None = None,
    notes: str = "",
    layer_scores: Mapping[str, Any] | None = None,
    layer_metric: str = "mass_jaccard",
    sections: Sequence[str] = (),
) -> Path:
    """Write ``report.md``, ``summary.csv``, ``summary.json`` and ``figures/*.png``.

    Args:
        out_dir: where to write (created if missing).
        rows: result rows.
        meta: ``run.json`` contents.
        examples: maps for the example grid (:func:`load_examples`); none, no grid.
        title: the report's heading.
        notes: extra Markdown under the heading.
        layer_scores: method -> ``(images, layers)`` scores of ``layer_metric`` per layer, drawn
            by :func:`layer_figure`; none, no figure.
        layer_metric: the metric of ``layer_scores``.
        sections: extra Markdown sections after the tables (see :func:`markdown_report`).

    Returns:
        The path of ``report.md``.

    Raises:
        ValueError: if ``rows`` is empty.
    """
    if not rows:
        raise ValueError("rows is empty: nothing to report")
    out = Path(out_dir)
    (out / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    cells = summarise(rows, meta)
    write_csv(cells, out / SUMMARY_CSV)
    (out / SUMMARY_JSON).write_text(json.dumps(summary_document(cells, meta), indent=2) + "\n")
    figures: dict[str, str] = {}
    for category in ("localisation", "faithfulness"):
        chosen = [c for c in cells if c.category == category]
        if chosen:
            path = f"{FIGURES_DIR}/{category}_bars.png"
            save_figure(metric_bars(chosen), out / path)
            figures[f"{category.capitalize()} (mean, {CONFIDENCE:.0%} CI)"] = path
    curve_metrics = dict.fromkeys(m for row in rows for m in row.get("curves", {}))
    for metric in curve_metrics:
        path = f"{FIGURES_DIR}/curve_{metric}.png"
        save_figure(curve_figure(rows, metric, ordered_methods(rows, meta)), out / path)
        figures[f"{metric} curves"] = path
    if examples:
        path = f"{FIGURES_DIR}/examples.png"
        # Photo-like panels compress poorly: 1.7 MB for 13 methods at 100 dpi in full colour,
        # 0.25 MB at 60 dpi with a 256-colour palette.
        figure = example_grid(examples, ordered_methods(rows, meta))
        save_figure(figure, out / path, dpi=EXAMPLES_DPI, colours=FIGURE_COLOURS)
        figures["Example maps"] = path
    if layer_scores:
        path = f"{FIGURES_DIR}/layers_{layer_metric}.png"
        save_figure(layer_figure(layer_scores, layer_metric), out / path)
        figures[f"Localisation by layer ({layer_metric}, mean, {CONFIDENCE:.0%} CI)"] = path
    if any(e.classes is not None and len(e.classes) == 2 for e in examples):
        path = f"{FIGURES_DIR}/class_maps.png"
        figure = class_maps_figure(examples, _class_methods(examples, rows, meta))
        save_figure(figure, out / path, dpi=CLASS_FIGURE_DPI, colours=FIGURE_COLOURS)
        figures[CLASS_FIGURE] = path
    report = out / REPORT_MD
    report.write_text(
        markdown_report(rows, meta, figures=figures, title=title, notes=notes, sections=sections)
    )
    return report


def compare_runs(run_dirs: Sequence[str | Path], method: str, metrics: Sequence[str]) -> str:
    """A Markdown table comparing runs (e.g. models) on one method: one row per run.

    Args:
        run_dirs: run folders (each with ``results.jsonl`` and ``run.json``).
        method: the method whose scores are compared.
        metrics: the metric columns.

    Returns:
        The table, each cell ``mean ± half-width`` (``–`` when a run lacks it).
    """
    from attnexplain.benchmark.store import read_rows

    lines = [
        "| model | images | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for run_dir in run_dirs:
        folder = Path(run_dir)
        meta_path = folder / "run.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        rows = [r for r in read_rows([folder / "results.jsonl"]) if r["method"] == method]
        by_metric = {c.metric: c for c in summarise(rows, meta)}
        row = [_format(by_metric[m], False) if m in by_metric else "–" for m in metrics]
        name = meta.get("model", folder.name)
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(row) + " |")
    return "\n".join(lines)
