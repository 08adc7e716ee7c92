"""The explorer of a benchmark run folder: its rows, its stored maps, its settings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attnexplain.benchmark.maps import MAPS_DIR, MapViews, load_maps
from attnexplain.benchmark.registry import BASELINES
from attnexplain.benchmark.store import Row, read_rows, result_files
from attnexplain.viz.explorer.inputs import ExplorerImage
from attnexplain.viz.explorer.page import EXPLORER_FILE, write_explorer


def _caption(row: Row | None) -> str:
    if row is None:
        return ""
    parts = [f"label {row['label']}"] if row.get("label", -1) not in (None, -1) else []
    if row.get("target") is not None:
        parts.append(f"explains class {row['target']}")
    if row.get("predicted") is not None:
        parts.append(f"predicted {row['predicted']}")
    return " · ".join(parts)


def _example_images(run_dir: Path) -> dict[str, ExplorerImage]:
    """Images of an older run that kept maps only for its example figure (``examples/``)."""
    from attnexplain.benchmark.report import load_examples

    return {
        example.image_id: ExplorerImage(
            example.image_id,
            example.image,
            {method: MapViews.from_array(maps) for method, maps in example.maps.items()},
            mask=example.mask,
        )
        for example in load_examples(run_dir)
    }


def run_images(run_dir: str | Path) -> tuple[list[ExplorerImage], list[str], dict[str, Any]]:
    """Read a run folder into explorer images.

    Args:
        run_dir: a folder :func:`~attnexplain.benchmark.runner.run_benchmark` wrote.

    Returns:
        ``(images, notes, meta)``: the images in dataset order, notes on what is missing, and
        ``run.json``'s contents (empty if absent).

    Raises:
        FileNotFoundError: if ``run_dir`` is not a folder.
        ValueError: if it holds neither result rows nor maps.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder not found: {folder}")
    meta_path = folder / "run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    rows = read_rows(result_files(folder))
    stored = load_maps(folder)
    notes: list[str] = []
    examples: dict[str, ExplorerImage] = {}
    if not stored.samples and not stored.views:
        examples = _example_images(folder)
        notes.append(
            f"this run stored no maps ({MAPS_DIR}/ is missing or empty: an older run, or "
            "save_maps=False); "
            + (
                f"maps are shown for the {len(examples)} example images only"
                if examples
                else "only its scores and curves are shown"
            )
        )
    if not rows and not stored.samples and not stored.views and not examples:
        raise ValueError(
            f"{folder} holds no result rows (results.jsonl) and no maps ({MAPS_DIR}/): nothing to "
            "show; run the benchmark into it first"
        )
    if not rows:
        notes.append("this run has no result rows yet: maps without scores")
    by_index: dict[int, dict[str, Row]] = {}
    for row in rows:
        by_index.setdefault(int(row["index"]), {})[str(row["method"])] = row
    indices = sorted({*by_index, *stored.samples, *(index for index, _ in stored.views)})
    images = []
    for index in indices:
        method_rows = by_index.get(index, {})
        first = next(iter(method_rows.values()), None)
        sample = stored.samples.get(index)
        image_id = sample.image_id if sample else str(first["image_id"]) if first else str(index)
        example = examples.get(image_id)
        views: Mapping[str, Any] = {m: v for (i, m), v in stored.views.items() if i == index}
        images.append(
            ExplorerImage(
                image_id,
                sample.image if sample else example.image if example else None,
                views or (example.maps if example else {}),
                mask=sample.mask if sample else example.mask if example else None,
                ignore=sample.ignore if sample else None,
                scores={m: row.get("metrics", {}) for m, row in method_rows.items()},
                curves={m: row.get("curves", {}) for m, row in method_rows.items()},
                caption=_caption(first),
            )
        )
    return images, notes, meta


def _method_order(images: list[ExplorerImage], meta: Mapping[str, Any]) -> list[str]:
    seen = dict.fromkeys(m for image in images for m in [*image.maps, *image.scores])
    order = [m for m in meta.get("methods", []) if m in seen] + [
        m for m in seen if m not in meta.get("methods", [])
    ]
    return [m for m in order if m not in BASELINES] + [m for m in order if m in BASELINES]


def write_run_explorer(
    run_dir: str | Path, path: str | Path | None = None, **options: Any
) -> list[Path]:
    """Write the explorer of a benchmark run folder (``<run_dir>/explorer.html`` by default).

    Args:
        run_dir: the run folder (``results.jsonl``, ``run.json``, ``maps/``).
        path: where the first page goes; default ``run_dir / "explorer.html"``.
        **options: passed to :func:`~attnexplain.viz.explorer.write_explorer` (``max_bytes``,
            ``max_pages``, ``title``, ...).

    Returns:
        The pages written.

    Raises:
        FileNotFoundError: if ``run_dir`` is not a folder.
        ValueError: if it holds neither rows nor maps, or for the reasons of
            :func:`~attnexplain.viz.explorer.write_explorer`.
    """
    images, notes, meta = run_images(run_dir)
    methods = _method_order(images, meta)
    without_maps = [m for m in methods if not any(m in image.maps for image in images)]
    if without_maps and any(image.maps for image in images):
        notes.append(f"no maps were stored for {', '.join(without_maps)}")
    model = meta.get("model", "model")
    settings = [f"{model} on {meta.get('dataset', 'a dataset')}", f"{len(images)} images"]
    target = meta.get("fingerprint", {}).get("target")
    if target:
        settings.append(f"explaining the {target} class")
    options.setdefault("title", f"attnexplain explorer: {model}")
    options.setdefault("subtitle", " · ".join(settings))
    return write_explorer(
        Path(run_dir) / EXPLORER_FILE if path is None else path,
        images,
        methods=methods,
        metric_info=meta.get("metrics"),
        notes=[*notes, *options.pop("notes", ())],
        **options,
    )
