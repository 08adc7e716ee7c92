"""attnexplain: explain Vision Transformers behind Captum's interface."""

from attnexplain.capture import (
    CustomAdapter,
    ModelAdapter,
    TokenLayout,
    UnsupportedModelError,
    resolve_adapter,
)
from attnexplain.methods import AttentionRollout, MeanAttentionDistance, RawCLSAttention

__version__ = "0.1.0"

__all__ = [
    "AttentionRollout",
    "CustomAdapter",
    "MeanAttentionDistance",
    "ModelAdapter",
    "RawCLSAttention",
    "TokenLayout",
    "UnsupportedModelError",
    "resolve_adapter",
]
