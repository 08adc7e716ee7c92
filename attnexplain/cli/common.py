"""The flags every subcommand that runs a model shares, declared once.

``explain`` and ``diagnose`` take images, ``benchmark`` a dataset; all three take the model, the
device, the output folder, the batch size and ``--no-progress`` with the same spelling, meaning
and help text.
"""

from __future__ import annotations

import argparse

from attnexplain.cli.errors import positive_int

MODEL_HELP = (
    "'default' (embedded classifier), 'clip' (embedded image-text model), 'multilabel', a "
    "Hugging Face id or folder, a timm folder, or timm:NAME"
)


def add_run_arguments(
    parser: argparse.ArgumentParser,
    *,
    out: str | None,
    out_help: str = "output folder (created)",
    batch_size: int = 8,
    images: bool = True,
) -> None:
    """Add the shared flags to ``parser``.

    Args:
        parser: a subcommand's parser.
        out: the default of ``--out``; ``None`` makes ``--out`` required.
        out_help: ``--out``'s help text.
        batch_size: the default of ``--batch-size``.
        images: whether to add the ``images`` positional (files or folders, default: the
            embedded samples).
    """
    add = parser.add_argument
    if images:
        add("images", nargs="*", help="image files or folders (default: embedded samples)")
    add("--model", default="default", help=MODEL_HELP)
    add("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1, mps")
    if out is None:
        add("--out", required=True, help=out_help)
    else:
        add("--out", default=out, help=out_help)
    add("--batch-size", type=positive_int, default=batch_size, help="images per model call")
    add("--no-progress", action="store_true", help="no progress bar")
