"""Attribution methods: small classes over one Captum-compatible base."""

from attnexplain.methods.base import MapAttribution, ViTAttribution
from attnexplain.methods.distance import MeanAttentionDistance
from attnexplain.methods.raw import RawCLSAttention
from attnexplain.methods.rollout import AttentionRollout

__all__ = [
    "AttentionRollout",
    "MapAttribution",
    "MeanAttentionDistance",
    "RawCLSAttention",
    "ViTAttribution",
]
