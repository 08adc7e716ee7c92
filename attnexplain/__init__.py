"""attnexplain: explain Vision Transformers behind Captum's interface."""

from attnexplain.capture import (
    CustomAdapter,
    ModelAdapter,
    TokenLayout,
    UnsupportedModelError,
    resolve_adapter,
)
from attnexplain.methods import (
    AttentionFlow,
    AttentionRollout,
    GradCAM,
    GradientWeightedRollout,
    LeGrad,
    MeanAttentionDistance,
    RawCLSAttention,
    forward_function,
)

__version__ = "0.1.0"

__all__ = [
    "AttentionFlow",
    "AttentionRollout",
    "CustomAdapter",
    "GradCAM",
    "GradientWeightedRollout",
    "LeGrad",
    "MeanAttentionDistance",
    "ModelAdapter",
    "RawCLSAttention",
    "TokenLayout",
    "UnsupportedModelError",
    "forward_function",
    "resolve_adapter",
]
