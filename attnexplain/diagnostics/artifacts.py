r"""High-norm artifact tokens and how much attention they take (Darcet et al. 2024).

*Vision Transformers Need Registers* (ICLR 2024) found that large ViTs recycle a few
low-information patch tokens as global stores: their output norms are far above the others'
and they soak up the CLS attention, the bright specks of raw attention maps.
:class:`ArtifactDiagnostics` measures this in one forward:

- the L2 norm of every token at every block's output, :math:`\lVert x^{(l)}_t \rVert_2`
  (the residual stream after block :math:`l`; the last block's output is the model's output
  before its final norm layer);
- the high-norm patch tokens of each image at one layer (the last by default, the paper's
  "output" tokens), by a fixed threshold or the data-driven gap rule
  (:mod:`attnexplain.diagnostics.thresholds`); prefix tokens (CLS, registers) are never flagged;
- the artifact score of each layer :math:`l` and head :math:`h`, the share of the query's
  attention on the flagged tokens :math:`S`, :math:`\sum_{t \in S} A^{(l)}_{h,\,q,\,t}`, and the
  register share, the same sum over the register tokens (query :math:`q`: CLS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from attnexplain.capture import ModelAdapter, TokenLayout
from attnexplain.capture.tokens import capture_token_norms, register_indices
from attnexplain.diagnostics.queries import AttentionQuery, default_query
from attnexplain.diagnostics.thresholds import (
    DEFAULT_MIN_GAP,
    ThresholdRule,
    check_rule,
    gap_threshold,
)
from attnexplain.methods._checks import check_layer
from attnexplain.methods.base import Interpolation, MapAttribution, Target, patch_tokens_to_grid

#: What the norms are, for reports.
NORM_DEFINITION = (
    "L2 norm over channels of each token at the output of each transformer block (the residual "
    "stream; the last block's output is the model output before its final norm layer)"
)


@dataclass
class ArtifactReport:
    """What :meth:`ArtifactDiagnostics.diagnose` found for a batch.

    Attributes:
        norms: ``(B, layers, N)`` float32 token norms at each block's output (prefix first).
        layout: the token layout of the batch.
        layer: the layer (0-based) whose norms the detection used.
        threshold_rule: the fixed threshold, or ``"gap"``.
        thresholds: ``(B,)`` float64 cut-off used per image (``inf``: nothing flagged).
        separations: ``(B,)`` float64 width of the gap rule's gap in robust standard
            deviations of the log norms (``nan`` for a fixed threshold).
        high_norm: ``(B, N)`` bool, the flagged tokens (patch tokens only).
        registers: token positions of the register tokens.
        query: the name of the query whose attention was measured, ``None`` when the model has
            none the diagnostics know (no CLS token).
        query_rows: ``(B, stages, heads, N)`` float32 attention of that query, or ``None``.
        stage_names: one label per stage of ``query_rows``.
    """

    norms: torch.Tensor
    layout: TokenLayout
    layer: int
    threshold_rule: ThresholdRule
    thresholds: torch.Tensor
    separations: torch.Tensor
    high_norm: torch.Tensor
    registers: list[int]
    query: str | None
    query_rows: torch.Tensor | None
    stage_names: list[str]

    @property
    def artifact_share(self) -> torch.Tensor | None:
        """``(B, stages, heads)`` share of the query's attention on the high-norm tokens."""
        if self.query_rows is None:
            return None
        return torch.einsum("bshn,bn->bsh", self.query_rows, self.high_norm.float())

    @property
    def register_share(self) -> torch.Tensor | None:
        """``(B, stages, heads)`` share of the query's attention on the registers (``None``
        without registers or query)."""
        if self.query_rows is None or not self.registers:
            return None
        return self.query_rows[..., self.registers].sum(dim=-1)

    @classmethod
    def concatenate(cls, reports: Sequence[ArtifactReport]) -> ArtifactReport:
        """One report for the images of several, in order (e.g. a dataset diagnosed in chunks).

        Raises:
            ValueError: if ``reports`` is empty or the reports differ in layout, layer, rule,
                registers or query.
        """
        if not reports:
            raise ValueError("reports must hold at least one report")
        first = reports[0]
        same = ("layout", "layer", "threshold_rule", "registers", "query", "stage_names")
        for index, report in enumerate(reports):
            for name in same:
                if getattr(report, name) != getattr(first, name):
                    raise ValueError(
                        f"reports[{index}] differs from reports[0] in {name}: "
                        f"{getattr(report, name)!r} vs {getattr(first, name)!r}"
                    )
        rows = None if first.query_rows is None else torch.cat([r.query_rows for r in reports])
        return cls(
            norms=torch.cat([r.norms for r in reports]),
            layout=first.layout,
            layer=first.layer,
            threshold_rule=first.threshold_rule,
            thresholds=torch.cat([r.thresholds for r in reports]),
            separations=torch.cat([r.separations for r in reports]),
            high_norm=torch.cat([r.high_norm for r in reports]),
            registers=first.registers,
            query=first.query,
            query_rows=rows,
            stage_names=first.stage_names,
        )

    def positions(self, index: int) -> list[tuple[int, int]]:
        """``(row, col)`` on the patch grid of image ``index``'s high-norm tokens."""
        prefix, width = self.layout.num_prefix_tokens, self.layout.grid[1]
        tokens = self.high_norm[index].nonzero().flatten().tolist()
        return [divmod(token - prefix, width) for token in tokens]

    def attention_maps(self, stage: int = -1) -> torch.Tensor:
        """The query's attention over the patches at one stage, per head: ``(B, heads, h, w)``.

        Raises:
            ValueError: when no query was measured (model without CLS token).
        """
        if self.query_rows is None:
            raise ValueError(
                "no attention was measured: the model has no CLS token and no pooling query "
                "was given (ArtifactDiagnostics(query=...))"
            )
        return patch_tokens_to_grid(self.query_rows[:, stage], self.layout)

    def norm_maps(self, layer: int | None = None) -> torch.Tensor:
        """Patch-token norms on the grid at ``layer`` (the detection layer by default):
        ``(B, 1, h, w)``."""
        chosen = (self.layer if layer is None else layer) % self.norms.shape[1]
        return patch_tokens_to_grid(self.norms[:, chosen : chosen + 1], self.layout)

    def summary(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """A JSON-serialisable summary (plain floats, ints, lists and ``None``).

        Args:
            names: one name per image (default ``"0"``, ``"1"``, ...).

        Returns:
            ``{"layer", "threshold_rule", "norm", "query", "registers", "stages",
            "images": [...]}``; each image gives its threshold, the flagged tokens (token index,
            grid row and column, norm), norm statistics, the CLS and register norms and, when a
            query was measured, ``artifact_share`` / ``register_share`` as ``stages × heads``
            lists and the share a uniform attention would give the flagged tokens.

        Raises:
            ValueError: if ``names`` does not have one entry per image.
        """
        batch = self.norms.shape[0]
        names = [str(i) for i in range(batch)] if names is None else list(names)
        if len(names) != batch:
            raise ValueError(f"names must have one entry per image ({batch}), got {len(names)}")
        artifact, register = self.artifact_share, self.register_share
        images = [self._image_summary(i, name, artifact, register) for i, name in enumerate(names)]
        return {
            "layer": self.layer,
            "threshold_rule": self.threshold_rule,
            "norm": NORM_DEFINITION,
            "query": self.query,
            "registers": list(self.registers),
            "stages": self.stage_names if self.query_rows is not None else [],
            "images": images,
        }

    def _image_summary(
        self,
        index: int,
        name: str,
        artifact: torch.Tensor | None,
        register: torch.Tensor | None,
    ) -> dict[str, Any]:
        layout = self.layout
        norms = self.norms[index, self.layer].double()
        patches = norms[layout.num_prefix_tokens :]
        flagged = self.high_norm[index].nonzero().flatten().tolist()
        threshold, separation = float(self.thresholds[index]), float(self.separations[index])
        cls = layout.cls_index
        return {
            "name": name,
            "input_size": list(layout.input_size),
            "grid": list(layout.grid),
            "threshold": threshold if math.isfinite(threshold) else None,
            "gap_separation": separation if math.isfinite(separation) else None,
            "high_norm_tokens": [
                {"token": token, "row": row, "col": col, "norm": float(norms[token])}
                for token, (row, col) in zip(flagged, self.positions(index))
            ],
            "fraction_flagged": len(flagged) / layout.num_patches,
            "patch_norm_median": float(patches.median()),
            "patch_norm_max": float(patches.max()),
            "cls_norm": float(norms[cls]) if cls is not None else None,
            "register_norms": [float(norms[token]) for token in self.registers],
            "uniform_share": len(flagged) / layout.num_tokens,
            "artifact_share": None if artifact is None else artifact[index].tolist(),
            "register_share": None if register is None else register[index].tolist(),
        }


def _as_batch(inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A ``(B, C, H, W)`` batch from a tensor or a sequence of ``(C, H, W)`` / ``(1, C, H, W)``."""
    if isinstance(inputs, torch.Tensor) or (isinstance(inputs, tuple) and len(inputs) == 1):
        return inputs  # type: ignore[return-value]
    if not isinstance(inputs, Sequence) or not inputs:
        raise TypeError(
            "inputs must be a (B, C, H, W) tensor or a non-empty sequence of (C, H, W) images, "
            f"got {type(inputs).__name__}"
        )
    images = []
    for index, image in enumerate(inputs):
        if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4):
            raise TypeError(f"inputs[{index}] must be a (C, H, W) or (1, C, H, W) tensor")
        images.append(image if image.dim() == 4 else image.unsqueeze(0))
    sizes = [tuple(image.shape[-2:]) for image in images]
    for index, size in enumerate(sizes):
        if size != sizes[0]:
            raise ValueError(
                f"images of different sizes in one batch: inputs[0] is {sizes[0][0]}x"
                f"{sizes[0][1]} but inputs[{index}] is {size[0]}x{size[1]}; resize them to one "
                "size or diagnose them one at a time"
            )
    return torch.cat(images)


class ArtifactDiagnostics(MapAttribution):
    """Find high-norm artifact tokens and measure the attention they take (Darcet et al. 2024).

    :meth:`diagnose` gives the full :class:`ArtifactReport`; :meth:`high_norm_tokens` is the
    mask alone, usable as the ``exclude_tokens`` option of the attention methods; and, as an
    attribution, :meth:`attribute` returns the map of token norms at the detection layer (the
    paper's Fig. 3, left).

    Args:
        model: any supported vision transformer (or its adapter).
        threshold: a fixed norm (the paper: 150 for DINOv2 ViT-g/14 without registers) or
            ``"gap"``, the data-driven split per image.
        layer: the layer whose output norms are thresholded (default: the last).
        min_gap: the gap rule's smallest accepted gap, in robust standard deviations.
        query: whose attention the artifact score measures: ``"auto"`` (the CLS token's, none
            for models without one), an :class:`~attnexplain.diagnostics.queries.AttentionQuery`
            (e.g. a pooling query), or ``None`` to skip the scores.
        interpolation: resize mode of :meth:`attribute`'s norm map.

    Shapes:
        ``attribute(x)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)`` norms (``(B, 1, h, w)``
        with ``upsample=False``); ``high_norm_tokens(x)`` returns ``(B, N)`` bool.

    Raises:
        TypeError, ValueError: for a bad ``threshold``, ``min_gap``, ``layer`` or ``query``.
        UnsupportedModelError: when the model's token outputs cannot be read.

    Examples:
        >>> diagnostics = ArtifactDiagnostics(model)  # doctest: +SKIP
        >>> report = diagnostics.diagnose(x)  # doctest: +SKIP
        >>> report.positions(0), report.artifact_share[0, -1]  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter,
        *,
        threshold: ThresholdRule = "gap",
        layer: int = -1,
        min_gap: float = DEFAULT_MIN_GAP,
        query: AttentionQuery | Literal["auto"] | None = "auto",
        interpolation: Interpolation = "bilinear",
    ) -> None:
        super().__init__(model, interpolation=interpolation)
        check_rule(threshold, min_gap)
        if query is not None and query != "auto" and not isinstance(query, AttentionQuery):
            raise TypeError(f"query must be 'auto', None or an AttentionQuery, got {query!r}")
        self.threshold = threshold if isinstance(threshold, str) else float(threshold)
        self.min_gap = float(min_gap)
        self.layer = check_layer(layer, self.adapter)
        self.query = default_query(self.adapter) if query == "auto" else query

    def _detect(self, norms: torch.Tensor, layout: TokenLayout) -> tuple[torch.Tensor, ...]:
        """Flagged tokens ``(B, N)``, thresholds ``(B,)`` and separations ``(B,)``."""
        patches = norms[:, self.layer, layout.num_prefix_tokens :]
        batch = patches.shape[0]
        if self.threshold == "gap":
            found = [gap_threshold(row, self.min_gap) for row in patches]
            thresholds = torch.tensor([t for t, _ in found], dtype=torch.float64)
            separations = torch.tensor([s for _, s in found], dtype=torch.float64)
        else:
            thresholds = torch.full((batch,), self.threshold, dtype=torch.float64)
            separations = torch.full((batch,), math.nan, dtype=torch.float64)
        flagged = patches.double().cpu() > thresholds[:, None]
        everything = flagged.all(dim=-1)
        if everything.any():
            index = int(everything.nonzero()[0])
            raise ValueError(
                f"threshold {self.threshold:g} flags every patch token of image {index} "
                f"(its norms at layer {self.layer} range from {float(patches[index].min()):.4g}"
                f" to {float(patches[index].max()):.4g}): high-norm tokens are a minority by "
                "definition; choose a threshold from the norm histogram or use threshold='gap'"
            )
        high_norm = torch.zeros(norms.shape[0], norms.shape[-1], dtype=torch.bool)
        high_norm[:, layout.num_prefix_tokens :] = flagged
        return high_norm.to(norms.device), thresholds, separations

    def diagnose(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> ArtifactReport:
        """Token norms, high-norm tokens and artifact scores of a batch, in one forward.

        Args:
            inputs: ``(B, C, H, W)`` float batch preprocessed as the model expects, or a
                sequence of ``(C, H, W)`` images of one size.

        Returns:
            The :class:`ArtifactReport`.

        Raises:
            TypeError, ValueError: for invalid inputs, images of different sizes, or a fixed
                threshold that flags every patch token of an image.
            UnsupportedModelError: when the model's token outputs cannot be read.
        """
        inputs = self.validate_inputs(_as_batch(inputs))
        probe = None if self.query is None else self.query.probe(self.adapter)
        with torch.no_grad():
            captured = capture_token_norms(self.adapter, inputs, probe)
        layout = captured.layout
        high_norm, thresholds, separations = self._detect(captured.norms, layout)
        rows = None if self.query is None else self.query.rows(probe)  # type: ignore[arg-type]
        return ArtifactReport(
            norms=captured.norms,
            layout=layout,
            layer=self.layer,
            threshold_rule=self.threshold,
            thresholds=thresholds,
            separations=separations,
            high_norm=high_norm,
            registers=register_indices(self.adapter, layout),
            query=None if self.query is None else self.query.name,
            query_rows=rows,
            stage_names=[] if self.query is None else self.query.stage_names(self.adapter),
        )

    def high_norm_tokens(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The flagged tokens of a batch, ``(B, N)`` bool over all tokens (prefix first).

        Pass this method as ``exclude_tokens=`` to
        :class:`~attnexplain.methods.RawCLSAttention` or
        :class:`~attnexplain.methods.AttentionRollout` for a cleaned map (one extra forward).

        Raises:
            TypeError, ValueError: for invalid inputs, images of different sizes, or a fixed
                threshold that flags every patch token of an image (as :meth:`diagnose`).
            UnsupportedModelError: when the model's token outputs cannot be read.
        """
        inputs = self.validate_inputs(_as_batch(inputs))
        with torch.no_grad():
            captured = capture_token_norms(self.adapter, inputs)
        return self._detect(captured.norms, captured.layout)[0]

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        with torch.no_grad():
            captured = capture_token_norms(self.adapter, inputs)
        norms = captured.norms[:, self.layer : self.layer + 1]
        return patch_tokens_to_grid(norms, captured.layout), captured.layout
