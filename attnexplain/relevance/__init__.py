"""Relevance propagation over a model's own forward: op interception and LRP rules.

:func:`trace_relevance` runs one forward with every op a ViT runs put under the rule a
:class:`RuleSet` gives it; relevance then comes out of one ``torch.autograd.grad`` call
(:meth:`RelevanceTrace.relevance`). The rule sets are those of the published methods:
:data:`CHEFER_RULES` (Transformer Attribution), :data:`CHEFER_BASELINE_RULES` (its "LRP" and
"partial LRP" baselines) and :func:`attnlrp_rules` (AttnLRP, CP-LRP).
"""

from attnexplain.relevance.interceptor import UnsupportedOperationError
from attnexplain.relevance.rule_sets import (
    CHEFER_BASELINE_RULES,
    CHEFER_RULES,
    RuleSet,
    attnlrp_rules,
)
from attnexplain.relevance.rules import (
    AlphaBeta,
    Constant,
    EpsilonDivide,
    Identity,
    LinearisedLayerNorm,
    RenormalisedAdd,
    Rule,
    TaylorSoftmax,
    Uniform,
    ZBox,
    ZRule,
    chefer_divide,
)
from attnexplain.relevance.trace import RelevanceTrace, trace_relevance

__all__ = [
    "CHEFER_BASELINE_RULES",
    "CHEFER_RULES",
    "AlphaBeta",
    "Constant",
    "EpsilonDivide",
    "Identity",
    "LinearisedLayerNorm",
    "RelevanceTrace",
    "RenormalisedAdd",
    "Rule",
    "RuleSet",
    "TaylorSoftmax",
    "Uniform",
    "UnsupportedOperationError",
    "ZBox",
    "ZRule",
    "attnlrp_rules",
    "chefer_divide",
    "trace_relevance",
]
