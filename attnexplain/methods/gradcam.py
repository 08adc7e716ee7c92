"""Grad-CAM on the token activations of a vision transformer (Selvaraju et al. 2017)."""

from __future__ import annotations

import difflib
import warnings
from typing import Any

import torch
from torch import nn

from attnexplain.capture import (
    ModelAdapter,
    NoAttentionProbe,
    TokenLayout,
    UnsupportedModelError,
    capture_attention,
)
from attnexplain.methods._gradients import explaining, gradients, target_score
from attnexplain.methods.base import Interpolation, MapAttribution, Target, patch_tokens_to_grid

#: Normalisation layers a pre-norm block applies before its attention.
_NORMS = (nn.LayerNorm, nn.RMSNorm)


def default_gradcam_layer(adapter: ModelAdapter) -> tuple[str, nn.Module]:
    """The first normalisation layer of the block holding the last attention module.

    The block is the smallest ancestor of the last attention module that holds a ``LayerNorm``
    (or ``RMSNorm``) outside the attention itself and no other attention module; its first such
    norm in registration order is the pre-attention norm in every supported family (HF
    ``layernorm_before`` / ``norm1`` / ``layer_norm1``, timm ``norm1``, torchvision ``ln_1``).

    Args:
        adapter: the model's adapter.

    Returns:
        The layer's dotted name in the model and the layer.

    Raises:
        UnsupportedModelError: when no such norm exists (pass ``layer=`` explicitly).
    """
    model = adapter.model
    attention = adapter.attention_modules[-1]
    other_attention = {id(m) for m in adapter.attention_modules if m is not attention}
    inside_attention = {id(m) for m in attention.modules()}
    path = next(name for name, module in model.named_modules() if module is attention).split(".")
    for depth in range(len(path) - 1, -1, -1):
        block_name = ".".join(path[:depth])
        block = model.get_submodule(block_name)
        if any(id(module) in other_attention for module in block.modules()):
            break  # past the block: this ancestor holds the whole encoder
        for name, module in block.named_modules(prefix=block_name):
            if isinstance(module, _NORMS) and id(module) not in inside_attention:
                return name, module
    raise UnsupportedModelError(
        f"found no LayerNorm in the block of the last attention module of "
        f"{type(model).__name__}; pass GradCAM(model, layer=...) with the name of a module "
        "whose output is the (B, tokens, dim) activations"
    )


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """A submodule of ``model`` given by dotted name or by the module itself.

    Returns:
        The layer's dotted name and the layer.

    Raises:
        ValueError: for a name that is not a submodule, or a module not inside ``model``.
        TypeError: for anything but a string or a module.
    """
    names = {id(module): name for name, module in model.named_modules()}
    if isinstance(layer, str):
        try:
            return layer, model.get_submodule(layer)
        except AttributeError:
            close = difflib.get_close_matches(layer, list(names.values()), n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ValueError(
                f"layer={layer!r} is not a submodule of {type(model).__name__}{hint}; list the "
                "valid names with [name for name, _ in model.named_modules()]"
            ) from None
    if isinstance(layer, nn.Module):
        if id(layer) not in names:
            raise ValueError(
                f"layer ({type(layer).__name__}) is not a submodule of {type(model).__name__}; "
                "pass one of model.modules() or its name from model.named_modules()"
            )
        return names[id(layer)], layer
    raise TypeError(
        f"layer must be a module name (str), an nn.Module or None, got {type(layer).__name__}"
    )


def _first_tensor(output: Any) -> Any:
    """A module's output tensor: the first element of a tuple output (HF layers)."""
    return output[0] if isinstance(output, tuple | list) and output else output


class GradCAM(MapAttribution):
    r"""Grad-CAM on the token activations of one layer.

    Selvaraju et al. 2017, *Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization*, with the token-to-grid reshape used for ViTs (jacobgil/pytorch-grad-cam's
    ``reshape_transform``, with the prefix tokens and grid read from the model). For the layer's
    output activations :math:`A \in \mathbb{R}^{B \times N \times D}` and the gradient
    :math:`G = \partial y_t / \partial A` of each sample's target logit :math:`y_t`: drop the
    prefix tokens and lay the patch tokens on the grid, :math:`A, G \to (B, D, h, w)`; weigh each
    channel by its mean gradient :math:`w_c = \frac{1}{hw}\sum_{ij} G_{c,ij}`; the map is
    :math:`\mathrm{ReLU}(\sum_c w_c A_c)`, unscaled.

    The formula is implemented here with one forward hook rather than with Captum's
    ``LayerGradCam``, which averages gradients over every axis after the first, i.e. over the
    channels of ``(B, N, D)`` tokens instead of over the patches.

    **Default layer**: the first ``LayerNorm`` of the last transformer block (the block holding
    the last attention module; see :func:`default_gradcam_layer`). The block *outputs* are no
    use for CLS-token classifiers: only the CLS token feeds the head and the final norm acts per
    token, so the gradient at every patch token of the last block's output is exactly zero. The
    pre-attention norm's patch tokens reach the CLS token through the last attention, so their
    gradients are informative; classifiers that also pool patch tokens (DINOv2, timm
    ``global_pool="avg"``) work with the same choice.

    The model runs in evaluation mode (restored afterwards), and only the activations are
    differentiated: no parameter ``.grad`` is ever written. The hook lives for one call.

    Args:
        model: any supported vision transformer with a classification head (or its adapter).
        layer: the module whose output ``(B, N, D)`` is explained, as a dotted name from
            ``model.named_modules()`` or the module itself; ``None`` for the default above. A
            tuple output's first element is used.
        interpolation: resize mode for ``upsample=True``.

    Shapes:
        ``attribute(x, target)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)`` (``(B, 1, h, w)``
        with ``upsample=False``).

    Raises:
        ValueError: for a ``layer`` name or module not in the model; at ``attribute``, for a
            layer whose output is not ``(B, N, D)`` tokens, and for invalid targets.
        TypeError: for a ``layer`` of another type.
        UnsupportedModelError: at ``attribute``, for a model without a classification head.

    Examples:
        >>> cam = GradCAM(model).attribute(x, target=[3, 7])  # (2, 1, H, W)  # doctest: +SKIP
        >>> cam = GradCAM(model, layer="blocks.10.norm1").attribute(x)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter,
        *,
        layer: str | nn.Module | None = None,
        interpolation: Interpolation = "bilinear",
    ) -> None:
        super().__init__(model, interpolation=interpolation)
        if layer is None:
            self.layer_name, self.layer = default_gradcam_layer(self.adapter)
        else:
            self.layer_name, self.layer = resolve_layer(self.model, layer)

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        outputs: list[Any] = []
        with explaining(self.model, inputs) as x:
            handle = self.layer.register_forward_hook(lambda _m, _a, out: outputs.append(out))
            try:
                # The capture applies the family's temporary switches (e.g. timm's dynamic input
                # size) and reads the token layout; it reads no attention, so models whose
                # attention cannot be read at all still get Grad-CAM.
                result = capture_attention(self.adapter, NoAttentionProbe(), x)
            finally:
                handle.remove()
            score = target_score(self, result.output, target)
            tokens = self._tokens(outputs, result.layout, inputs.shape[0])
            (grad,) = gradients(score, [tokens], f"output of layer {self.layer_name!r}")
        # (B, N, D) -> (B, D, N) -> (B, D, h, w): channels first, as patch_tokens_to_grid wants.
        activations = patch_tokens_to_grid(tokens.detach().float().transpose(1, 2), result.layout)
        grad = patch_tokens_to_grid(grad.float().transpose(1, 2), result.layout)
        if not grad.flatten(1).any(dim=1).all():
            warnings.warn(
                f"the target's gradient is zero at every patch token of layer "
                f"{self.layer_name!r} for some images, so their Grad-CAM maps are all zeros: "
                "its patch tokens do not reach the output (e.g. the final norm of a CLS-token "
                "classifier). Choose a layer inside a transformer block, such as the default.",
                RuntimeWarning,
                stacklevel=3,
            )
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, D, 1, 1)
        return torch.relu((weights * activations).sum(dim=1, keepdim=True)), result.layout

    def _tokens(self, outputs: list[Any], layout: TokenLayout, batch: int) -> torch.Tensor:
        """The layer's single ``(B, N, D)`` output, checked against the token layout."""
        if len(outputs) != 1:
            raise ValueError(
                f"layer {self.layer_name!r} ran {len(outputs)} times in one forward; Grad-CAM "
                "needs a layer that runs exactly once"
            )
        tokens = _first_tensor(outputs[0])
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        expected = (batch, layout.num_tokens)
        if (
            not isinstance(tokens, torch.Tensor)
            or tokens.dim() != 3
            or tokens.shape[:2] != expected
        ):
            raise ValueError(
                f"layer {self.layer_name!r} outputs {shape}; Grad-CAM needs token activations "
                f"(B, N, D) = ({batch}, {layout.num_tokens}, D) with N = "
                f"{layout.num_prefix_tokens} prefix + {layout.num_patches} patch tokens; choose "
                "a layer inside a transformer block, e.g. its first LayerNorm"
            )
        return tokens
