"""Exceptions raised by the capture layer."""

from __future__ import annotations


class UnsupportedModelError(TypeError):
    """The model has no self-attention this library can read (or reads it in a way it can't)."""
