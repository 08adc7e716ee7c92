"""What ``attnexplain explain`` writes: one function per kind of output.

Per image ``NAME`` (``STEM``, or ``STEM_prompt-N`` / ``STEM_reference`` per query, see
:mod:`attnexplain.cli.targets`): the figure ``NAME.png`` (or ``.jpg``), the raw maps
``NAME.safetensors`` (one ``(K, H, W)`` float32 tensor per method, the formula's values at the
model's input size; with ``--per-layer`` also ``layers/raw``, the head-mean raw CLS attention of
every layer, and ``layers/rollout``, the rollout ending at every layer, both ``(L, H, W)``) and
``NAME.json``, the settings that made them (model, input size, target or prompt or reference,
each method's kind and options, the layers of the per-layer maps). With ``--per-layer`` also
``NAME_layers.png``, those maps as a layer grid. Over all images: the mean-attention-distance
plot and its values, and with ``--html`` the explorer page ``explorer.html``. A new kind of
output is one more function here, called from :func:`attnexplain.cli.explain.run_explain`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from attnexplain.cli.targets import Query

#: Output stem of the mean-attention-distance plot (no image may take it).
DISTANCE_STEM = "mean_attention_distance"
#: Prefix of the per-layer maps' keys in ``NAME.safetensors`` (``layers/raw``, ``layers/rollout``).
LAYER_KEY = "layers/{}"
#: What each per-layer key holds, for the figure's row titles.
LAYER_ROWS = {"raw": "raw CLS attention of each layer", "rollout": "rollout ending at each layer"}


@dataclass
class Explained:
    """One image's maps, ready to be written.

    Attributes:
        name: the output stem (unique in the run, see :func:`output_names`).
        source: the image file, or the embedded sample's id.
        image: ``(3, S, S)`` in ``[0, 1]``: the model's input, un-normalised.
        maps: method name -> ``(K, S, S)`` map.
        target: the class the gradient methods explain (``None`` for a headless model or a
            prompt / reference query).
        predicted: the model's top-1 class (``None`` for a headless model).
        labels: class index -> name, where the model has names.
        query: the prompt or reference the gradient methods explain (the class query if none).
        layer_maps: ``--per-layer``'s maps, ``"raw"`` / ``"rollout"`` -> ``(L, S, S)``.
        layer_indices: the layer of each of those maps, per key.
        views: ``--html``: method -> its :class:`~attnexplain.benchmark.maps.MapViews`.
    """

    name: str
    source: str
    image: torch.Tensor
    maps: dict[str, torch.Tensor]
    target: int | None = None
    predicted: int | None = None
    labels: Mapping[int, str] = field(default_factory=dict)
    query: Query = field(default_factory=Query)
    layer_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    layer_indices: Mapping[str, Sequence[int]] = field(default_factory=dict)
    views: Mapping[str, Any] = field(default_factory=dict)

    def describe(self, index: int | None) -> str | None:
        """``"3 (star)"`` for class ``index``, ``None`` for none."""
        if index is None:
            return None
        name = self.labels.get(index)
        return f"{index} ({name})" if name else str(index)

    def explains(self) -> str | None:
        """What the gradient methods explain, in words (``None`` when nothing is named)."""
        if self.query.describe() is not None:
            return self.query.describe()
        return None if self.target is None else f"class {self.describe(self.target)}"


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
    if item.explains() is not None:
        title += f" · gradient methods explain {item.explains()}"
        if item.predicted is not None and item.predicted != item.target:
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


def write_layer_figure(out: Path, item: Explained, suffix: str = ".png") -> Path:
    """``--per-layer``'s figure ``NAME_layers.png``: a layer grid row per per-layer map.

    Args:
        out: the output folder.
        item: the image and its ``layer_maps`` (each ``(L, S, S)``, the same ``L``).
        suffix: ``.png`` or ``.jpg``.

    Returns:
        The path written.
    """
    from attnexplain.viz import save_figure
    from attnexplain.viz.layers import layer_grid

    keys = list(item.layer_maps)
    figure = layer_grid(
        [item.image] * len(keys),
        torch.stack([item.layer_maps[key] for key in keys]),
        layers=list(item.layer_indices[keys[0]]),
    )
    rows = "; ".join(f"row {i + 1}: {LAYER_ROWS.get(key, key)}" for i, key in enumerate(keys))
    figure.suptitle(f"{item.name} · {rows}", fontsize="medium")
    return save_figure(figure, out / f"{item.name}_layers{suffix}", dpi=100)


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
    every = {**item.maps, **{LAYER_KEY.format(k): m for k, m in item.layer_maps.items()}}
    tensors = {name: m.detach().float().cpu().contiguous() for name, m in every.items()}
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
        "prompt": item.query.prompt,
        "reference": item.query.reference,
    }
    if item.layer_maps:
        record["layers"] = {LAYER_KEY.format(k): list(v) for k, v in item.layer_indices.items()}
    return [maps_path, _write_json(out / f"{item.name}.json", record)]


def explorer_image(item: Explained) -> Any:
    """The explorer page's entry for ``item`` (its ``views``, quantised to 8 bits now so that
    a long run does not keep float maps until the page is written)."""
    from attnexplain.benchmark.maps import quantise
    from attnexplain.viz.explorer import ExplorerImage

    caption = f"explains {item.explains()}" if item.explains() else ""
    if item.predicted is not None:
        caption += f"{' · ' if caption else ''}predicted {item.describe(item.predicted)}"
    pixels = (item.image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    views = {name: quantise(v) for name, v in item.views.items()}
    return ExplorerImage(item.name, pixels, views, caption=caption)


def write_explorer_page(
    out: Path, images: Sequence[Any], methods: Sequence[str], model: str
) -> list[Path]:
    """The explorer page of the run, ``explorer.html`` (``explorer-2.html`` ... when it is cut
    into pages, see :func:`~attnexplain.viz.explorer.write_explorer`).

    Args:
        out: the output folder.
        images: :func:`explorer_image` of every written image, in order.
        methods: the methods run, in the order shown.
        model: the ``--model`` spec, for the title.

    Returns:
        The pages written.
    """
    from attnexplain.viz.explorer import EXPLORER_FILE, write_explorer

    return write_explorer(
        out / EXPLORER_FILE,
        images,
        title=f"attnexplain explain: {model}",
        subtitle=f"{len(images)} images · {', '.join(methods)}",
        methods=methods,
    )


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
