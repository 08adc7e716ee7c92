"""Checks every subcommand makes before loading a model: the device and the output folder.

Both fail with a :class:`~attnexplain.cli.errors.UsageError` (one line, exit status 2) that names
the value, the cause and what to pass instead, before any model is loaded or file written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from attnexplain.cli.errors import UsageError

if TYPE_CHECKING:
    import torch


def _accelerator_count(kind: str) -> int:
    """How many devices of type ``kind`` this torch build can use here (0: none)."""
    import torch

    if kind == "mps":
        return int(torch.backends.mps.is_available())
    backend = getattr(torch, kind, None)
    is_available = getattr(backend, "is_available", None)
    if is_available is None or not is_available():
        return 0
    count = getattr(backend, "device_count", None)
    return int(count()) if count is not None else 1


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """The torch device ``name`` names, checked to exist on this machine.

    Under ``torchrun`` a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per process).

    Args:
        name: what the user passed (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``xpu`` ...).
        flag: the option's name, for the message.

    Returns:
        The :class:`torch.device`.

    Raises:
        UsageError: if ``name`` is not a device type torch knows, is ``meta`` (no data, nothing
            can run), or names a device this machine does not have.
    """
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(
            f"{flag} {name!r} is not a torch device; use cpu, cuda, cuda:N, mps or xpu"
        ) from None
    if device.type == "cpu":
        return device
    if device.type == "meta":
        raise UsageError(
            f"{flag} {name}: meta tensors hold no data, so no model can run on them; "
            "use --device cpu (or a GPU)"
        )
    count = _accelerator_count(device.type)
    if count == 0:
        reason = f"no {device.type} device is available on this machine"
        if device.type == "cuda":
            reason = (
                "this torch build has no CUDA support"
                if torch.version.cuda is None
                else "no CUDA device is visible (check CUDA_VISIBLE_DEVICES and the driver)"
            )
        raise UsageError(f"{flag} {name}: {reason}; use --device cpu")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if device.index is not None and device.index >= count:
        raise UsageError(
            f"{flag} {name}: this machine has {count} {device.type} device(s) "
            f"({device.type}:0 to {device.type}:{count - 1}), {device} is not one of them"
        )
    return device


def prepare_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create the output folder ``path`` if needed and check that files can be written in it.

    A probe file is created and removed, so read-only mounts and folders without write
    permission are found before any work is done (``os.access`` misses both for root and on
    some network file systems).

    Args:
        path: the folder.
        flag: the option's name, for the message.

    Returns:
        The folder as a :class:`~pathlib.Path`.

    Raises:
        UsageError: if ``path`` is an existing file, or the folder cannot be created or written
            (the message gives the system's reason, e.g. "Read-only file system").
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out} is a file, not a folder; pass a folder (it is created)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".attnexplain-write-check-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(
            f"{flag} {out}: cannot write there ({reason}); pass a folder you can write to"
        ) from None
    return out
