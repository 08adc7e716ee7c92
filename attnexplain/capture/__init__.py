"""Capture: find a model's attention, run it once, stream what a method needs.

Nothing above this package knows about model families.
"""

from attnexplain.capture.adapters import (
    SUPPORTED_FAMILIES,
    CustomAdapter,
    HFAdapter,
    HFImageTextAdapter,
    HFSiglipVisionAdapter,
    ImageTextAdapter,
    ModelAdapter,
    OpenCLIPAdapter,
    OpenCLIPVisionAdapter,
    PoolingHead,
    TimmAdapter,
    TorchvisionAdapter,
    resolve_adapter,
)
from attnexplain.capture.errors import UnsupportedModelError
from attnexplain.capture.layout import TokenLayout
from attnexplain.capture.probes import (
    AttentionDistanceProbe,
    AttentionProbe,
    CLSRowProbe,
    CLSRowsProbe,
    FullAttentionProbe,
    FusedAttentionProbe,
    NoAttentionProbe,
    Rows,
    fuse_heads,
    patch_distances,
)
from attnexplain.capture.session import CaptureResult, capture_attention, eval_mode

__all__ = [
    "SUPPORTED_FAMILIES",
    "AttentionDistanceProbe",
    "AttentionProbe",
    "CLSRowProbe",
    "CLSRowsProbe",
    "CaptureResult",
    "CustomAdapter",
    "FullAttentionProbe",
    "FusedAttentionProbe",
    "HFAdapter",
    "HFImageTextAdapter",
    "HFSiglipVisionAdapter",
    "ImageTextAdapter",
    "ModelAdapter",
    "NoAttentionProbe",
    "OpenCLIPAdapter",
    "OpenCLIPVisionAdapter",
    "PoolingHead",
    "Rows",
    "TimmAdapter",
    "TokenLayout",
    "TorchvisionAdapter",
    "UnsupportedModelError",
    "capture_attention",
    "eval_mode",
    "fuse_heads",
    "patch_distances",
    "resolve_adapter",
]
