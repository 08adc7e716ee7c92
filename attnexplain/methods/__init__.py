"""Attribution methods: small classes over one Captum-compatible base."""

from attnexplain.methods._gradients import forward_function
from attnexplain.methods.attnlrp import AttnLRP
from attnexplain.methods.base import MapAttribution, ViTAttribution
from attnexplain.methods.distance import MeanAttentionDistance
from attnexplain.methods.flow import AttentionFlow
from attnexplain.methods.gradcam import GradCAM
from attnexplain.methods.gradient_rollout import GradientWeightedRollout
from attnexplain.methods.legrad import LeGrad
from attnexplain.methods.lrp import LRP, PartialLRP
from attnexplain.methods.raw import RawCLSAttention
from attnexplain.methods.rollout import AttentionRollout
from attnexplain.methods.transformer_attribution import TransformerAttribution

__all__ = [
    "LRP",
    "AttentionFlow",
    "AttentionRollout",
    "AttnLRP",
    "GradCAM",
    "GradientWeightedRollout",
    "LeGrad",
    "MapAttribution",
    "MeanAttentionDistance",
    "PartialLRP",
    "RawCLSAttention",
    "TransformerAttribution",
    "ViTAttribution",
    "forward_function",
]
