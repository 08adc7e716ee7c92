"""attnexplain: explain Vision Transformers behind Captum's interface.

The public names below are imported on first use (a module ``__getattr__``), so that
``import attnexplain`` and the command line's ``--help`` do not pay for torch, transformers and
Captum until a name that needs them is touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attnexplain._lazy import lazy_exports

__version__ = "0.1.0"

_METHODS = (
    "LRP",
    "AttentionFlow",
    "AttentionRollout",
    "AttnLRP",
    "GradCAM",
    "GradientWeightedRollout",
    "LeGrad",
    "MeanAttentionDistance",
    "PartialLRP",
    "RawCLSAttention",
    "TransformerAttribution",
    "forward_function",
)
_CAPTURE = (
    "CustomAdapter",
    "ModelAdapter",
    "TokenLayout",
    "UnsupportedModelError",
    "resolve_adapter",
)
_TARGETS = ("Embedding", "Label", "Prompt", "ReferenceImage", "Score")

#: Public name -> the module that defines it.
_EXPORTS = {
    **{name: "attnexplain.capture" for name in _CAPTURE},
    **{name: "attnexplain.methods" for name in _METHODS},
    **{name: "attnexplain.methods.targets" for name in _TARGETS},
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # static analysers see the names without the lazy table
    from attnexplain.capture import (  # noqa: F401
        CustomAdapter,
        ModelAdapter,
        TokenLayout,
        UnsupportedModelError,
        resolve_adapter,
    )
    from attnexplain.methods import (  # noqa: F401
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
    from attnexplain.methods.targets import (  # noqa: F401
        Embedding,
        Label,
        Prompt,
        ReferenceImage,
        Score,
    )

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
