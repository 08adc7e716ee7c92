"""attnexplain: explain Vision Transformers behind Captum's interface.

The public names below are imported on first use (a module ``__getattr__``), so that
``import attnexplain`` and the command line's ``--help`` do not pay for torch, transformers and
Captum until a name that needs them is touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attnexplain._lazy import lazy_exports

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "CustomAdapter": "attnexplain.capture",
    "ModelAdapter": "attnexplain.capture",
    "TokenLayout": "attnexplain.capture",
    "UnsupportedModelError": "attnexplain.capture",
    "resolve_adapter": "attnexplain.capture",
    "AttentionRollout": "attnexplain.methods",
    "GradCAM": "attnexplain.methods",
    "GradientWeightedRollout": "attnexplain.methods",
    "MeanAttentionDistance": "attnexplain.methods",
    "RawCLSAttention": "attnexplain.methods",
    "forward_function": "attnexplain.methods",
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
        AttentionRollout,
        GradCAM,
        GradientWeightedRollout,
        MeanAttentionDistance,
        RawCLSAttention,
        forward_function,
    )

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
