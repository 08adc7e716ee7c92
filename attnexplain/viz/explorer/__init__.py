"""The explorer: one self-contained HTML page to browse image × method × layer × head.

Open it from disk, attach it to a supplement, send it to a colleague: scripts, styles and data
are inline, nothing is fetched. A user picks an image (thumbnails, ← / →) and a method, and for
the attention methods the layer and head (or the fused map), or for rollout the block it ends
at; sets the overlay's opacity, colour map and scale (per-image min–max or the method's raw
values); slides DINO's mass threshold to see the kept region and its Jaccard with the mask;
reads the image's benchmark scores and deletion / insertion curves; and switches to all
methods side by side.

- :func:`write_run_explorer` writes ``explorer.html`` for a benchmark run folder (its rows and
  the maps the runner stores under ``maps/``, see :mod:`attnexplain.benchmark.maps`).
- :func:`write_explorer` writes it for in-memory images (:class:`ExplorerImage`), e.g. the
  ``explain`` command's.

Examples:
    >>> import numpy as np, tempfile
    >>> from attnexplain.viz.explorer import ExplorerImage, write_explorer
    >>> heads = np.random.rand(4, 8, 6, 6)  # 4 layers x 8 heads on a 6 x 6 patch grid
    >>> image = ExplorerImage("cat", np.random.rand(48, 48, 3), maps={"raw": heads})
    >>> pages = write_explorer(tempfile.mkdtemp() + "/explorer.html", [image])
    >>> pages[0].stat().st_size < 1_000_000
    True
"""

from attnexplain.viz.explorer.inputs import ExplorerImage
from attnexplain.viz.explorer.page import (
    COLORMAPS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PAGES,
    EXPLORER_FILE,
    MethodInfo,
    write_explorer,
)
from attnexplain.viz.explorer.run import run_images, write_run_explorer

__all__ = [
    "COLORMAPS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PAGES",
    "EXPLORER_FILE",
    "ExplorerImage",
    "MethodInfo",
    "run_images",
    "write_explorer",
    "write_run_explorer",
]
