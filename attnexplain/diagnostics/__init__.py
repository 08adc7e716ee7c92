"""Diagnostics: what to check before trusting an attention map (high-norm artifact tokens).

Pure functions of what the capture read, like the metrics: token norms per layer, the high-norm
tokens of each image, and the share of the CLS attention they (and the registers) take.
"""

from attnexplain.diagnostics.artifacts import NORM_DEFINITION, ArtifactDiagnostics, ArtifactReport
from attnexplain.diagnostics.queries import AttentionQuery, CLSQuery, default_query
from attnexplain.diagnostics.thresholds import DEFAULT_MIN_GAP, ThresholdRule, gap_threshold

__all__ = [
    "DEFAULT_MIN_GAP",
    "NORM_DEFINITION",
    "ArtifactDiagnostics",
    "ArtifactReport",
    "AttentionQuery",
    "CLSQuery",
    "ThresholdRule",
    "default_query",
    "gap_threshold",
]
