"""Writing figures to disk."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

#: File suffix -> matplotlib format.
_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Write ``fig`` as a PNG or JPEG (creating parent folders) and close it.

    Args:
        fig: the Figure to save (any of this module's, or one from pyplot).
        path: destination ending in ``.png``, ``.jpg`` or ``.jpeg`` (no suffix: ``.png``).
        dpi: resolution in dots per inch.

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Raises:
        ValueError: if ``path`` has another suffix or ``dpi`` is not positive.

    Examples:
        >>> import tempfile, torch
        >>> fig = head_grid(torch.rand(3, 32, 32), torch.rand(2, 4, 4))
        >>> save_figure(fig, tempfile.mkdtemp() + "/heads.png").suffix
        '.png'
    """
    target = Path(path)
    if target.suffix == "":
        target = target.with_suffix(".png")
    image_format = _FORMATS.get(target.suffix.lower())
    if image_format is None:
        raise ValueError(f"path must end in .png, .jpg or .jpeg, got {str(path)!r}")
    if dpi <= 0:
        raise ValueError(f"dpi must be positive, got {dpi}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(target, format=image_format, dpi=dpi)
    finally:
        # Only figures made through pyplot are registered with it; ours are not, and importing
        # pyplot for them would pick a backend as a side effect.
        if fig.canvas.manager is not None:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return target
