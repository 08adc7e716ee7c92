"""What ``attnexplain explain`` writes: one function per kind of output.

Per image ``NAME``: the figure ``NAME.png`` (or ``.jpg``), the raw maps ``NAME.safetensors``
(one ``(K, H, W)`` float32 tensor per method, the formula's values at the model's input size)
and ``NAME.json``, the settings that made them (model, input size, target, each method's kind and
options). Over all images: the mean-attention-distance plot and its values. A new kind of output
is one more function here, called from :func:`attnexplain.cli.explain.run_explain`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

#: Output stem of the mean-attention-distance plot (no image may take it).
DISTANCE_STEM = "mean_attention_distance"


@dataclass
class Explained:
    """One image's maps, ready to be written.

    Attributes:
        name: the output stem (unique in the run, see :func:`output_names`).
        source: the image file, or the embedded sample's id.
        image: ``(3, S, S)`` in ``[0, 1]``: the model's input, un-normalised.
        maps: method name -> ``(K, S, S)`` map.
        target: the class the gradient methods explain (``None`` for a headless model).
        predicted: the model's top-1 class (``None`` for a headless model).
        labels: class index -> name, where the model has names.
    """

    name: str
    source: str
    image: torch.Tensor
    maps: dict[str, torch.Tensor]
    target: int | None = None
    predicted: int | None = None
    labels: Mapping[int, str] = field(default_factory=dict)

    def describe(self, index: int | None) -> str | None:
        """``"3 (star)"`` for class ``index``, ``None`` for none."""
        if index is None:
            return None
        name = self.labels.get(index)
        return f"{index} ({name})" if name else str(index)


def _distinct(paths: Sequence[Path]) -> list[str]:
    """Names for paths that share a stem: parent folders first, then the extension."""
    parents = [
        [part for part in p.parent.parts if part not in (p.anchor, ".", "..")] for p in paths
    ]
    for depth in range(1, max(len(folders) for folders in parents) + 1):
        names = ["_".join([*folders[-depth:], p.stem]) for folders, p in zip(parents, paths)]
        if len(set(names)) == len(names):
            return names
    with_suffix = [f"{p.stem}_{p.suffix.lstrip('.')}" if p.suffix else p.stem for p in paths]
    return with_suffix if len(set(with_suffix)) == len(paths) else [p.stem for p in paths]


def output_names(sources: Sequence[Path | str], reserved: Iterable[str] = ()) -> list[str]:
    """A distinct output stem per source: its stem, made distinct where stems clash.

    ``a/x.png`` and ``b/x.jpg`` become ``a_x`` and ``b_x`` (the nearest parent folders that
    tell them apart); ``x.png`` and ``x.jpg`` in one folder become ``x_png`` and ``x_jpg``; what
    still clashes (the same file twice, or a ``reserved`` stem) gets ``-2``, ``-3``, ...

    Args:
        sources: image paths (or ids) in input order.
        reserved: stems taken by other outputs.

    Returns:
        One stem per source, in order.
    """
    paths = [Path(source) for source in sources]
    names = [path.stem for path in paths]
    for stem in {n for n in names if names.count(n) > 1}:
        indices = [i for i, name in enumerate(names) if name == stem]
        for i, name in zip(indices, _distinct([paths[i] for i in indices])):
            names[i] = name
    taken = set(reserved)
    unique = []
    for name in names:
        candidate, number = name, 1
        while candidate in taken:
            number += 1
            candidate = f"{name}-{number}"
        taken.add(candidate)
        unique.append(candidate)
    return unique


def write_figure(out: Path, item: Explained, suffix: str = ".png") -> Path:
    """The image's figure: a head-grid row per method with several maps (``K > 1``, e.g. one
    per head), then one row of overlays of the single maps.

    Args:
        out: the output folder.
        item: the image and its maps.
        suffix: ``.png`` or ``.jpg``.

    Returns:
        The path written.
    """
    from attnexplain.viz import compare_overlays, head_grid, save_figure

    heads = [name for name, m in item.maps.items() if len(m) > 1]
    fused = {name: m for name, m in item.maps.items() if name not in heads}
    columns = max([len(fused) + 1, *(len(item.maps[n]) + 1 for n in heads), 3])
    rows = len(heads) + bool(fused)
    figure = Figure(figsize=(2.2 * columns, 2.6 * rows + 0.4), layout="constrained")
    title = item.name
    if item.target is not None:
        title += f" · gradient methods explain class {item.describe(item.target)}"
        if item.predicted != item.target:
            title += f" (predicted {item.describe(item.predicted)})"
    figure.suptitle(title)
    subfigures = figure.subfigures(rows, 1, squeeze=False)[:, 0]
    for row, name in enumerate(heads):
        subfigures[row].suptitle(f"{name}: {len(item.maps[name])} maps (one per head)")
        axes = subfigures[row].subplots(1, len(item.maps[name]) + 1)
        head_grid(item.image, item.maps[name], axes=axes)
    if fused:
        compare_overlays(item.image, fused, axes=subfigures[-1].subplots(1, len(fused) + 1))
    # 100 dpi keeps every panel above the model's input resolution at a third of 150 dpi's cost.
    return save_figure(figure, out / f"{item.name}{suffix}", dpi=100)


def _write_json(path: Path, record: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def write_maps(out: Path, item: Explained, settings: Mapping[str, Any]) -> list[Path]:
    """The raw maps (``NAME.safetensors``) and their settings (``NAME.json``).

    Args:
        out: the output folder.
        item: the image and its maps.
        settings: the run's settings (model, input size, methods and their options).

    Returns:
        The two paths written.
    """
    from safetensors.torch import save_file

    maps_path = out / f"{item.name}.safetensors"
    tensors = {name: m.detach().float().cpu().contiguous() for name, m in item.maps.items()}
    save_file(tensors, maps_path, metadata={"format": "attnexplain.explain", "image": item.source})
    record = {
        **settings,
        "image": item.source,
        "maps_file": maps_path.name,
        "shapes": {name: list(m.shape) for name, m in tensors.items()},
        "target": item.target,
        "target_label": item.labels.get(item.target) if item.target is not None else None,
        "predicted": item.predicted,
        "predicted_label": item.labels.get(item.predicted) if item.predicted is not None else None,
    }
    return [maps_path, _write_json(out / f"{item.name}.json", record)]


def write_distances(
    out: Path,
    distances: torch.Tensor,
    sources: Sequence[str],
    patch_size: int,
    settings: Mapping[str, Any],
    suffix: str = ".png",
) -> list[Path]:
    """The mean-attention-distance plot over all images, its values and their settings.

    Args:
        out: the output folder.
        distances: ``(N, layers, heads)`` in pixels, one row per image.
        sources: the images, in the order of ``distances``.
        patch_size: the model's patch side in pixels (the plot's unit line).
        settings: the run's settings.
        suffix: ``.png`` or ``.jpg``.

    Returns:
        The figure, the values (``.safetensors``) and the settings (``.json``).
    """
    from safetensors.torch import save_file

    from attnexplain.viz import mad_plot, save_figure

    figure = save_figure(
        mad_plot(distances, patch_size=patch_size), out / f"{DISTANCE_STEM}{suffix}"
    )
    values = out / f"{DISTANCE_STEM}.safetensors"
    save_file({"distances": distances.float().contiguous()}, values)
    record = {**settings, "images": list(sources), "maps_file": values.name, "unit": "pixels"}
    return [figure, values, _write_json(out / f"{DISTANCE_STEM}.json", record)]
