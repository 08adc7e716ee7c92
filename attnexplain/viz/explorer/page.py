"""Write the explorer: one self-contained HTML file per page, data inline, no network.

The page is a Jinja2 template with the explorer's CSS and JavaScript inlined and one payload:
base64 of the zlib-deflated bytes ``uint32 header length | JSON header | binary section``. The
binary section holds each map's 8-bit codes once (identical maps, such as a baseline's, are
shared), masks as one byte per pixel, 256-entry colour tables from matplotlib and the images as
JPEG files. The browser unpacks it with ``DecompressionStream``.

**Budget.** A page is kept under ``max_bytes`` (10 MB by default): images are packed into pages
in order by their estimated size, a page that still comes out too large is split again, and
beyond ``max_pages`` pages the images are subsampled evenly; every page says which images it
holds and links to the others.
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jinja2
import numpy as np
from matplotlib import colormaps
from PIL import Image

from attnexplain.benchmark.maps import NONFINITE_CODE, QuantisedViews
from attnexplain.viz.explorer.inputs import ExplorerImage, PreparedImage, finite_or_none, prepare

EXPLORER_FILE = "explorer.html"
#: Largest page written, in bytes.
DEFAULT_MAX_BYTES = 10_000_000
#: Most pages written before images are subsampled.
DEFAULT_MAX_PAGES = 10
#: Colour maps offered on the page (the first is the default).
COLORMAPS = ("viridis", "magma", "inferno", "turbo", "gray")
#: Room left on a page for its navigation links, added after the pages are cut.
_NAVIGATION_BYTES = 8_192
_JPEG_QUALITY = 90
_PAGE_PACKAGE = "attnexplain.viz.explorer"
LayerAxis = Literal["layer", "end block"]


@dataclass(frozen=True)
class MethodInfo:
    """How the page describes a method.

    Attributes:
        kind: e.g. ``"attention"``, ``"gradient"``, ``"baseline"`` (free text).
        description: one line.
        layer_axis: what a view's layer is: the attention ``"layer"`` read, or the
            ``"end block"`` of a rollout product.
    """

    kind: str = ""
    description: str = ""
    layer_axis: LayerAxis = "layer"


def default_method_info(name: str) -> MethodInfo:
    """The benchmark registry's kind and description of ``name`` (empty for other names)."""
    from attnexplain.benchmark.registry import METHODS

    axis: LayerAxis = "end block" if "rollout" in name else "layer"
    spec = METHODS.get(name)
    if spec is None:
        return MethodInfo(layer_axis=axis)
    return MethodInfo(spec.kind, spec.description, axis)


def default_metric_info(name: str) -> dict[str, Any]:
    """Category and direction of a benchmark metric (unknown names: neither)."""
    from attnexplain.benchmark.registry import metric_info

    try:
        info = metric_info(name)
    except ValueError:
        return {"category": "other", "higher_is_better": None}
    return {"category": info.category, "higher_is_better": info.higher_is_better}


class _Binary:
    """The payload's binary section: byte strings appended once each, by content."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._offsets: dict[bytes, int] = {}
        self.size = 0

    def add(self, data: bytes) -> int:
        offset = self._offsets.get(data)
        if offset is None:
            offset = self._offsets[data] = self.size
            self._chunks.append(data)
            self.size += len(data)
        return offset

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)


def _number(value: float) -> float | None:
    """8 significant digits are far below an 8-bit map's step; JSON stays short."""
    finite = finite_or_none(value)
    return None if finite is None else float(f"{finite:.8g}")


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue()


def _views_json(views: QuantisedViews, binary: _Binary) -> list[list[Any]]:
    height, width = views.codes.shape[-2:]
    return [
        [
            int(views.layers[v]),
            int(views.heads[v]),
            binary.add(np.ascontiguousarray(views.codes[v]).tobytes()),
            int(height),
            int(width),
            _number(views.offset[v]),
            _number(views.scale[v]),
            int(views.nonfinite[v]),
            int(bool(views.scored[v])),
        ]
        for v in range(views.codes.shape[0])
    ]


def _image_json(image: PreparedImage, binary: _Binary) -> dict[str, Any]:
    methods: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys([*image.views, *image.scores, *image.curves]):
        methods[name] = {
            "views": _views_json(image.views[name], binary) if name in image.views else [],
            "scores": image.scores.get(name, {}),
            "curves": image.curves.get(name, {}),
        }
    pixels = None
    if image.pixels is not None:
        jpeg = _jpeg(image.pixels)
        pixels = [binary.add(jpeg), len(jpeg), "image/jpeg"]
    masks = {
        name: None if array is None else binary.add(array.astype(np.uint8).tobytes())
        for name, array in (("mask", image.mask), ("ignore", image.ignore))
    }
    return {
        "id": image.image_id,
        "caption": image.caption,
        "size": list(image.size),
        "image": pixels,
        **masks,
        "methods": methods,
    }


def _method_ranges(images: Sequence[PreparedImage]) -> dict[str, list[float]]:
    """Per method, the smallest and largest finite value of any of its maps (all pages)."""
    ranges: dict[str, list[float]] = {}
    for image in images:
        for name, views in image.views.items():
            finite = views.nonfinite < views.codes.shape[-1] * views.codes.shape[-2]
            if not finite.any():
                continue
            levels = np.where(views.nonfinite > 0, NONFINITE_CODE - 1, NONFINITE_CODE)
            low = float(views.offset[finite].min())
            high = float((views.offset + views.scale * levels)[finite].max())
            known = ranges.setdefault(name, [low, high])
            known[0], known[1] = min(known[0], low), max(known[1], high)
    return ranges


@dataclass(frozen=True)
class _Page:
    """What one page shows: its images (positions in the full list) and its place."""

    images: list[int]
    number: int
    count: int


class _Writer:
    """Everything the pages share; renders one page's HTML on demand."""

    def __init__(
        self,
        images: list[PreparedImage],
        title: str,
        subtitle: str,
        methods: list[str],
        method_info: Mapping[str, MethodInfo],
        metric_info: Mapping[str, Mapping[str, Any]],
        notes: list[str],
    ) -> None:
        self.images = images
        self.title = title
        self.subtitle = subtitle
        self.notes = notes
        ranges = _method_ranges(images)
        self.methods = [
            {
                "name": name,
                "kind": method_info[name].kind,
                "description": method_info[name].description,
                "layer_axis": method_info[name].layer_axis,
                "range": [_number(v) for v in ranges[name]] if name in ranges else None,
            }
            for name in methods
        ]
        self.metrics = {name: dict(info) for name, info in metric_info.items()}
        self.colormaps = {
            name: (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
            for name in COLORMAPS
        }
        environment = jinja2.Environment(
            loader=jinja2.PackageLoader(_PAGE_PACKAGE, "templates"),
            autoescape=jinja2.select_autoescape(["html", "j2"]),
            undefined=jinja2.StrictUndefined,
        )
        self.template = environment.get_template("explorer.html.j2")
        static = resources.files(_PAGE_PACKAGE) / "static"
        self.css = (static / "explorer.css").read_text(encoding="utf-8")
        self.js = (static / "explorer.js").read_text(encoding="utf-8")
        if "</script" in self.js.lower() or "</style" in self.css.lower():
            raise RuntimeError("the explorer's script or style closes its own tag")

    def estimate(self, position: int) -> int:
        """Bytes one image adds to a page (compressed alone, so never below its share)."""
        binary = _Binary()
        record = json.dumps(_image_json(self.images[position], binary)).encode()
        compressed = len(zlib.compress(record + binary.getvalue(), 6))
        return math.ceil(compressed * 4 / 3) + 64

    def render(self, page: _Page, links: list[dict[str, Any]], notes: list[str]) -> str:
        binary = _Binary()
        tables = {name: binary.add(table.tobytes()) for name, table in self.colormaps.items()}
        header = {
            "version": 1,
            "notes": [*self.notes, *notes],
            "page": {"number": page.number, "count": page.count, "links": links},
            "colormaps": tables,
            "methods": self.methods,
            "metrics": self.metrics,
            "images": [_image_json(self.images[i], binary) for i in page.images],
        }
        text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
        raw = struct.pack("<I", len(text)) + text + binary.getvalue()
        payload = base64.b64encode(zlib.compress(raw, 9)).decode("ascii")
        from attnexplain import __version__

        return self.template.render(
            title=self.title,
            subtitle=self.subtitle,
            image_count=len(page.images),
            css=self.css,
            js=self.js,
            payload=payload,
            version=__version__,
        )


def _pack(sizes: Sequence[int], budget: int) -> list[list[int]]:
    """Cut positions ``0 … n - 1`` into consecutive groups whose sizes sum to ``budget`` at most."""
    groups: list[list[int]] = [[]]
    total = 0
    for position, size in enumerate(sizes):
        if groups[-1] and total + size > budget:
            groups.append([])
            total = 0
        groups[-1].append(position)
        total += size
    return groups


def _page_path(path: Path, number: int) -> Path:
    return path if number == 1 else path.with_name(f"{path.stem}-{number}{path.suffix}")


def write_explorer(
    path: str | Path,
    images: Sequence[ExplorerImage],
    *,
    title: str = "attnexplain explorer",
    subtitle: str = "",
    methods: Sequence[str] | None = None,
    method_info: Mapping[str, MethodInfo] | None = None,
    metric_info: Mapping[str, Mapping[str, Any]] | None = None,
    notes: Sequence[str] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> list[Path]:
    """Write the explorer page(s) for ``images``.

    Args:
        path: the first page, ending in ``.html``; further pages are ``<stem>-2.html``, …
        images: the images with their maps, scores and curves (:class:`ExplorerImage`).
        title: the page's heading.
        subtitle: one line under it (model, dataset, settings).
        methods: method order on the page; default: first seen, every method of any image.
        method_info: per method, its :class:`MethodInfo`; default: the benchmark registry's.
        metric_info: per metric, ``{"category": str, "higher_is_better": bool}``; default:
            the benchmark registry's.
        notes: lines shown at the top of every page (what is missing, how data was chosen).
        max_bytes: the largest page, in bytes.
        max_pages: beyond this many pages the images are subsampled evenly (and the pages say
            so).

    Returns:
        The pages written, first page first.

    Raises:
        TypeError: for an entry of ``images`` that is not an :class:`ExplorerImage`, or input
            arrays of the wrong type.
        ValueError: for no images, repeated image ids, arrays of the wrong shape, a bad
            ``path`` suffix, ``max_pages < 1``, or an image too large for ``max_bytes`` alone.
        OSError: if the folder of ``path`` cannot be created or the page cannot be written.

    Examples:
        >>> import numpy as np, tempfile
        >>> image = ExplorerImage("a", np.zeros((32, 32, 3), np.uint8),
        ...                       maps={"raw": np.random.rand(4, 4)})
        >>> [p.name for p in write_explorer(tempfile.mkdtemp() + "/explorer.html", [image])]
        ['explorer.html']
    """
    target = Path(path)
    if target.suffix.lower() != ".html":
        raise ValueError(f"path must end in .html, got {str(path)!r}")
    if max_pages < 1:
        raise ValueError(f"max_pages must be >= 1, got {max_pages}")
    if max_bytes <= _NAVIGATION_BYTES:
        raise ValueError(f"max_bytes must exceed {_NAVIGATION_BYTES}, got {max_bytes}")
    prepared = [prepare(image) for image in images]
    if not prepared:
        raise ValueError("images is empty: nothing to show; pass at least one ExplorerImage")
    ids = [image.image_id for image in prepared]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"image ids repeat: {', '.join(repeated[:5])}; ids must be unique")
    if methods is None:
        methods = list(
            dict.fromkeys(m for image in prepared for m in [*image.views, *image.scores])
        )
    methods = list(methods)
    info = {name: (method_info or {}).get(name) or default_method_info(name) for name in methods}
    metric_names = dict.fromkeys(
        metric for image in prepared for values in image.scores.values() for metric in values
    )
    metrics = {
        name: (metric_info or {}).get(name) or default_metric_info(name) for name in metric_names
    }
    writer = _Writer(prepared, title, subtitle, methods, info, metrics, list(notes))
    budget = max_bytes - _NAVIGATION_BYTES
    base = len(writer.render(_Page([], 1, 1), [], []).encode("utf-8"))
    sizes = [writer.estimate(i) for i in range(len(prepared))]
    too_large = [ids[i] for i, size in enumerate(sizes) if base + size > budget]
    if too_large:
        raise ValueError(
            f"image {too_large[0]!r} alone needs more than max_bytes={max_bytes} bytes; raise "
            "max_bytes or store fewer views of it"
        )
    positions = list(range(len(prepared)))
    groups = _pack(sizes, budget - base)
    subsample_note: list[str] = []
    if len(groups) > max_pages:
        step = math.ceil(len(groups) / max_pages)
        positions = positions[::step]
        kept = _pack([sizes[i] for i in positions], budget - base)
        groups = [[positions[i] for i in group] for group in kept]
        subsample_note = [
            f"showing {len(positions)} of {len(prepared)} images (one in {step}), to stay "
            f"within {max_pages} pages of {max_bytes / 1e6:.3g} MB"
        ]
    target.parent.mkdir(parents=True, exist_ok=True)
    pages = _render_pages(writer, groups, positions, target, max_bytes, subsample_note)
    for page_path, html in pages:
        page_path.write_text(html, encoding="utf-8")
    return [page_path for page_path, _ in pages]


def _render_pages(
    writer: _Writer,
    groups: list[list[int]],
    positions: list[int],
    target: Path,
    max_bytes: int,
    notes: list[str],
) -> list[tuple[Path, str]]:
    """Every page's path and HTML; a page over ``max_bytes`` (the estimate missed) is halved."""
    while True:
        pages = []
        count = len(groups)
        for number, group in enumerate(groups, start=1):
            links = [
                {
                    "href": _page_path(target, n).name,
                    "label": f"page {n}: images {_image_range(g, positions)}",
                    "current": n == number,
                }
                for n, g in enumerate(groups, start=1)
            ]
            notes_here = list(notes)
            if count > 1:
                notes_here.append(
                    f"page {number} of {count}: images {_image_range(group, positions)} of "
                    f"{len(positions)}; the other pages are linked above"
                )
            page = _Page(group, number, count)
            pages.append(
                (
                    _page_path(target, number),
                    writer.render(page, links if count > 1 else [], notes_here),
                )
            )
        oversized = [
            k
            for k, (_, html) in enumerate(pages)
            if len(html.encode("utf-8")) > max_bytes and len(groups[k]) > 1
        ]
        if not oversized:
            return pages
        for k in reversed(oversized):
            half = len(groups[k]) // 2
            groups[k : k + 1] = [groups[k][:half], groups[k][half:]]


def _image_range(group: Sequence[int], positions: Sequence[int]) -> str:
    order = {position: rank for rank, position in enumerate(positions, start=1)}
    return f"{order[group[0]]}–{order[group[-1]]}"
