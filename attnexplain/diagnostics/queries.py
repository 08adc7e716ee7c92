"""Whose attention the artifact score measures: a query row per layer.

The artifact score is the share of one query's attention that lands on chosen tokens. For models
with a CLS token that query is the CLS token's, in every layer (:class:`CLSQuery`). Models
without one pool their tokens with a query of their own (SigLIP's attention-pooling head,
OpenCLIP's ``attn_pool``); such a query plugs in as another :class:`AttentionQuery`: a probe that
captures its rows in the diagnostics' forward, and the rows it kept.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from attnexplain.capture import AttentionProbe, ModelAdapter, Rows, TokenLayout


class AttentionQuery(ABC):
    """A query whose attention over the tokens the diagnostics read, one row per stage.

    Attributes:
        name: short name for reports ("CLS").
    """

    name: str

    @abstractmethod
    def probe(self, adapter: ModelAdapter) -> AttentionProbe:
        """A new probe that captures this query's rows during one forward."""

    @abstractmethod
    def rows(self, probe: AttentionProbe) -> torch.Tensor:
        """The captured rows ``(B, stages, heads, N)`` over all ``N`` tokens (prefix first)."""

    @abstractmethod
    def stage_names(self, adapter: ModelAdapter) -> list[str]:
        """One label per stage of :meth:`rows` ("layer 0", ...)."""


class _CLSRowsProbe(AttentionProbe):
    """The CLS query row of every layer: ``rows[layer]`` is ``(B, heads, N)``."""

    def __init__(self) -> None:
        self.rows_by_layer: dict[int, torch.Tensor] = {}

    def reset(self, num_layers: int) -> None:
        self.rows_by_layer = {}

    def rows(self, layer: int) -> Rows:
        return Rows.CLS

    def consume(self, layer: int, probs: torch.Tensor, row_start: int, layout: TokenLayout) -> None:
        cls = layout.cls_index
        if cls is not None and row_start <= cls < row_start + probs.shape[2]:
            self.rows_by_layer[layer] = probs[:, :, cls - row_start, :].detach().clone()


class CLSQuery(AttentionQuery):
    """The CLS token's attention in every layer (models with a CLS token)."""

    name = "CLS"

    def probe(self, adapter: ModelAdapter) -> AttentionProbe:
        return _CLSRowsProbe()

    def rows(self, probe: AttentionProbe) -> torch.Tensor:
        if not isinstance(probe, _CLSRowsProbe):
            raise TypeError(f"CLSQuery reads its own probe, got {type(probe).__name__}")
        captured = probe.rows_by_layer
        return torch.stack([captured[layer] for layer in sorted(captured)], dim=1)

    def stage_names(self, adapter: ModelAdapter) -> list[str]:
        return [f"layer {layer}" for layer in range(adapter.num_layers)]


def default_query(adapter: ModelAdapter) -> AttentionQuery | None:
    """:class:`CLSQuery` for models with a CLS token, else ``None`` (no query known yet)."""
    return CLSQuery() if adapter.cls_index() is not None else None
