"""attnexplain: explain Vision Transformers behind Captum's interface."""

from attnexplain.capture import (
    CustomAdapter,
    ModelAdapter,
    TokenLayout,
    UnsupportedModelError,
    resolve_adapter,
)
from attnexplain.methods import (
    LRP,
    AttentionFlow,
    AttentionRollout,
    AttnLRP,
    GradCAM,
    GradientWeightedRollout,
    LeGrad,
    MeanAttentionDistance,
    PartialLRP,
    RawCLSAttention,
    TransformerAttribution,
    forward_function,
)

__version__ = "0.1.0"

__all__ = [
    "LRP",
    "AttentionFlow",
    "AttentionRollout",
    "AttnLRP",
    "CustomAdapter",
    "GradCAM",
    "GradientWeightedRollout",
    "LeGrad",
    "MeanAttentionDistance",
    "ModelAdapter",
    "PartialLRP",
    "RawCLSAttention",
    "TokenLayout",
    "TransformerAttribution",
    "UnsupportedModelError",
    "forward_function",
    "resolve_adapter",
]
