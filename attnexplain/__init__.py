"""attnexplain: explain Vision Transformers behind Captum's interface.

The public names below are imported on first use (a module ``__getattr__``), so that
``import attnexplain`` and the command line's ``--help`` do not pay for torch, transformers and
Captum until a name that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # static analysers and IDEs see the names without the lazy table
    from attnexplain.capture import (
        CustomAdapter as CustomAdapter,
    )
    from attnexplain.capture import (
        ModelAdapter as ModelAdapter,
    )
    from attnexplain.capture import (
        TokenLayout as TokenLayout,
    )
    from attnexplain.capture import (
        UnsupportedModelError as UnsupportedModelError,
    )
    from attnexplain.capture import (
        resolve_adapter as resolve_adapter,
    )
    from attnexplain.methods import (
        AttentionRollout as AttentionRollout,
    )
    from attnexplain.methods import (
        GradCAM as GradCAM,
    )
    from attnexplain.methods import (
        GradientWeightedRollout as GradientWeightedRollout,
    )
    from attnexplain.methods import (
        MeanAttentionDistance as MeanAttentionDistance,
    )
    from attnexplain.methods import (
        RawCLSAttention as RawCLSAttention,
    )
    from attnexplain.methods import (
        forward_function as forward_function,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'attnexplain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
