"""The adapter interface: everything the capture layer needs to know about one model family."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnexplain.capture.errors import UnsupportedModelError

#: Names of the projection layers that mark a module as a self-attention module.
_QKV_NAME_SETS = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))

SUPPORTED_FAMILIES = (
    "Hugging Face ViT, DeiT (incl. distilled), DINO, DINOv2 (incl. registers), CLIP vision, "
    "SigLIP vision, CLIPModel and SiglipModel; timm VisionTransformer (incl. SigLIP's "
    "attention pooling); torchvision VisionTransformer; OpenCLIP VisionTransformer and CLIP "
    "models; custom modules following the protocol in attnexplain.capture.adapters.custom"
)


def is_attention_module(module: nn.Module) -> bool:
    """Whether ``module`` is a self-attention module, judged by its structure.

    Matches ``nn.MultiheadAttention``, modules with ``q_proj/k_proj/v_proj`` or ``query/key/value``
    linear children, modules with a fused ``qkv`` linear, modules laid out like
    ``nn.MultiheadAttention`` (an ``in_proj_weight`` parameter and an ``out_proj`` linear, e.g.
    OpenCLIP's ``Attention``), and any module carrying the attribute
    ``attnexplain_attention = True``.
    """
    if getattr(module, "attnexplain_attention", False) or isinstance(module, nn.MultiheadAttention):
        return True
    children = dict(module.named_children())
    if isinstance(children.get("qkv"), nn.Linear):
        return True
    if isinstance(getattr(module, "in_proj_weight", None), nn.Parameter) and isinstance(
        children.get("out_proj"), nn.Linear
    ):
        return True
    return any(
        all(isinstance(children.get(name), nn.Linear) for name in names) for names in _QKV_NAME_SETS
    )


def find_attention_modules(model: nn.Module) -> list[nn.Module]:
    """Self-attention modules of ``model`` in registration (= forward) order, innermost only."""
    found = [m for m in model.modules() if is_attention_module(m)]
    nested = {id(inner) for outer in found for inner in outer.modules() if inner is not outer}
    return [m for m in found if id(m) not in nested]


def find_patch_embedding(model: nn.Module) -> nn.Conv2d | None:
    """The first ``Conv2d`` whose kernel equals its stride (> 1): the ViT patch stem."""
    for module in model.modules():
        if (
            isinstance(module, nn.Conv2d)
            and tuple(module.kernel_size) == tuple(module.stride)
            and max(module.kernel_size) > 1
        ):
            return module
    return None


def find_shifted_window_block(model: nn.Module) -> nn.Module | None:
    """The first Swin-style shifted-window block of ``model``, or ``None``.

    Such a block (HF ``SwinLayer`` / ``Swinv2Layer``, timm ``SwinTransformerBlock``) carries both a
    ``window_size`` and a ``shift_size``: its attention runs inside local windows, and the blocks
    between stages merge patches, so no token attends over the whole patch grid. Global-attention
    models with a ``window_size`` for their relative position bias (BEiT) have no ``shift_size``.
    """
    for module in model.modules():
        if hasattr(module, "window_size") and hasattr(module, "shift_size"):
            return module
    return None


def find_blocks(model: nn.Module, attention_modules: list[nn.Module]) -> list[nn.Module]:
    """The transformer block holding each attention module, in the same order.

    A block is the largest ancestor of an attention module that holds no other attention
    module and is neither the model itself nor a container (``ModuleList`` / ``Sequential``):
    HF ``ViTLayer`` / ``Dinov2Layer`` / ``CLIPEncoderLayer``, timm ``Block``, torchvision
    ``EncoderBlock``. Its output is the residual stream after that block.

    Args:
        model: the model.
        attention_modules: its attention modules in forward order.

    Returns:
        One module per attention module (the attention module itself when no ancestor
        qualifies).
    """
    parents = {id(child): parent for parent in model.modules() for child in parent.children()}
    owner = {id(inner): index for index, outer in enumerate(attention_modules)
             for inner in outer.modules()}  # fmt: skip
    containers = (nn.ModuleList, nn.Sequential, nn.ModuleDict)
    blocks = []
    for index, attention in enumerate(attention_modules):
        block = attention
        parent = parents.get(id(block))
        while (
            parent is not None
            and parent is not model
            and not isinstance(parent, containers)
            and all(owner.get(id(m), index) == index for m in parent.modules())
        ):
            block, parent = parent, parents.get(id(parent))
        blocks.append(block)
    return blocks


def _leading_matrix(output: Any) -> torch.Tensor | None:
    """The output (or its first element) when it is a ``(B, K)`` tensor, else ``None``."""
    if isinstance(output, tuple | list):
        output = output[0]
    return output if isinstance(output, torch.Tensor) and output.dim() == 2 else None


@dataclass(frozen=True)
class PoolingHead:
    """An attention-pooling head: learned queries that read the encoder's tokens.

    SigLIP's multi-head attention pooling (MAP) head, timm's ``AttentionPoolLatent`` and
    OpenCLIP's ``AttentionalPooler`` form the model's pooled output from the attention of learned
    queries (not tokens of the sequence) over the last layer's tokens. Their attention rows are
    what a CLS row is for a CLS-token model: the row the output is read from.

    Attributes:
        attention: the module computing the queries' attention (it calls
            ``F.scaled_dot_product_attention`` or ``F.multi_head_attention_forward``).
        queries: which of its queries form the pooled output; their rows are averaged.
    """

    attention: nn.Module
    queries: slice = field(default_factory=lambda: slice(0, 1))


class ModelAdapter:
    """How to run one model family and read its token layout.

    Subclasses override only what differs from a plain ViT: ``matches`` (which models they take),
    the temporary switches they need, how the model is called and where its logits are. What a
    target scores (:mod:`attnexplain.methods.targets`) is read from the model's output through
    :meth:`logits`, :meth:`label_names`, :meth:`embedding`, and for image–text models
    :meth:`encode_text` and :meth:`image_text_logits`.

    Args:
        model: the model to adapt.

    Raises:
        UnsupportedModelError: when the model has no self-attention or no patch stem, or uses
            shifted-window (Swin-style) attention.
    """

    family = "custom"

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        windowed = find_shifted_window_block(model)
        if windowed is not None:
            raise UnsupportedModelError(
                f"{type(model).__name__} uses shifted-window attention "
                f"({type(windowed).__name__}, Swin-style): no token attends over the whole patch "
                "grid, so none of attnexplain's methods (attention maps, rollout, distances, "
                "Grad-CAM on tokens) apply. For Swin, use a CNN-style Grad-CAM on a stage's "
                "feature map, e.g. pytorch-grad-cam with a reshape_transform."
            )
        self.attention_modules = self._find_attention_modules()
        if not self.attention_modules:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no self-attention layers: searched for "
                "nn.MultiheadAttention and modules with q_proj/k_proj/v_proj, query/key/value or "
                f"qkv linear layers. Supported: {SUPPORTED_FAMILIES}."
            )
        self.patch_embedding = self._find_patch_embedding()
        if self.patch_embedding is None:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no patch embedding: searched for a Conv2d whose "
                f"kernel equals its stride. Supported: {SUPPORTED_FAMILIES}."
            )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this adapter is the one for ``model``."""
        return True

    def _find_attention_modules(self) -> list[nn.Module]:
        return find_attention_modules(self.model)

    def _find_patch_embedding(self) -> nn.Conv2d | None:
        return find_patch_embedding(self.model)

    @property
    def blocks(self) -> list[nn.Module]:
        """The transformer block of each attention layer (see :func:`find_blocks`)."""
        return find_blocks(self.model, self.attention_modules)

    @property
    def num_layers(self) -> int:
        """Number of self-attention layers."""
        return len(self.attention_modules)

    @property
    def patch_size(self) -> tuple[int, int]:
        """``(ph, pw)`` of the patch stem."""
        return tuple(self.patch_embedding.stride)  # type: ignore[return-value]

    @property
    def in_channels(self) -> int:
        """Channels the patch stem expects."""
        return self.patch_embedding.in_channels

    def cls_index(self) -> int | None:
        """Position of the CLS token, ``None`` when the model has none."""
        return 0

    @property
    def pooling_head(self) -> PoolingHead | None:
        """The attention-pooling head the output is read through, ``None`` when there is none.

        Its attention module is not one of :attr:`attention_modules` (its queries are not
        tokens of the sequence); the capture reads it on request.
        """
        return None

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` when the model cannot run at ``(height, width)``."""
        ph, pw = self.patch_size
        if height < ph or width < pw:
            raise ValueError(
                f"input size {height}x{width} is smaller than one patch ({ph}x{pw}); "
                "resize the image up"
            )

    def enter(self, stack: ExitStack, inputs: torch.Tensor) -> None:
        """Apply temporary switches for this forward; register their undo on ``stack``."""

    def forward(self, inputs: torch.Tensor) -> Any:
        """Call the model on a ``(B, C, H, W)`` batch."""
        return self.model(inputs)

    def readout(self, tokens: torch.Tensor) -> Any:
        """The model's output had ``tokens`` (B, N, D), the residual stream after any block, been
        the last block's output: the model's own final norm, pooling and head (or projection)
        applied to them. Returns the same kind of object ``forward`` returns, so ``logits(...)``
        (and targets) read it unchanged.

        Raises:
            UnsupportedModelError: when this adapter does not know the model's readout (custom
                modules: pass ``CustomAdapter(model, readout=...)``).
        """
        raise UnsupportedModelError(
            f"{type(self).__name__} does not know how {type(self.model).__name__} reads its "
            "output from the tokens (final norm, pooling, head); wrap the model in "
            "CustomAdapter(model, readout=fn), fn(tokens (B, N, D)) returning what model(x) "
            "returns, e.g. lambda tokens: model.head(model.norm(tokens)[:, 0])"
        )

    def logits_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Run the model and return its class logits ``(B, classes)``: a Captum forward function.

        Raises:
            UnsupportedModelError: when the model has no classification head.
        """
        with ExitStack() as stack:
            self.enter(stack, inputs)  # e.g. timm's dynamic input size
            return self.logits(self.forward(inputs))

    def logits(self, output: Any) -> torch.Tensor:
        """Class logits ``(B, classes)`` from the model's output.

        Raises:
            UnsupportedModelError: when the model has no classification head.
        """
        matrix = _leading_matrix(output)
        if matrix is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} returned no (B, classes) logits; gradient methods "
                "and targets need a classification head"
            )
        return matrix

    def label_names(self) -> Sequence[str] | None:
        """Class names by index (e.g. Hugging Face ``config.id2label``), ``None`` when unknown."""
        return None

    def embedding(self, output: Any) -> torch.Tensor:
        """The pooled image embedding ``(B, D)`` in the model's output.

        By default the output itself (or its first element) when it is a ``(B, D)`` tensor: what
        a backbone without head returns.

        Raises:
            UnsupportedModelError: when the output holds no pooled embedding.
        """
        matrix = _leading_matrix(output)
        if matrix is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} returned no (B, D) pooled embedding; embedding and "
                "reference-image targets need a backbone whose output is its pooled embedding"
            )
        return matrix

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings ``(B, D)`` of a batch, without gradients (reference images).

        Args:
            images: ``(B, C, H, W)`` batch, preprocessed like the inputs.

        Returns:
            ``(B, D)`` detached embeddings.
        """
        with torch.no_grad(), ExitStack() as stack:
            self.enter(stack, images)
            return self.embedding(self.forward(images)).detach()

    @property
    def has_text_tower(self) -> bool:
        """Whether :meth:`encode_text` works: the model is an image–text model."""
        return False

    def encode_text(self, prompts: Sequence[str], tokenizer: Any = None) -> torch.Tensor:
        """Text embeddings ``(T, D)`` of ``prompts``, without gradients.

        Args:
            prompts: the texts.
            tokenizer: the model's tokenizer, ``None`` for the one the adapter finds itself.

        Raises:
            UnsupportedModelError: for a model without a text tower.
            ValueError: for a prompt longer than the text model's context.
        """
        raise self._no_text_tower()

    def image_text_logits(self, output: Any, text_embeddings: torch.Tensor) -> torch.Tensor:
        """The model's own image–text logits ``(B, T)``.

        Args:
            output: the model's output (see :meth:`forward`).
            text_embeddings: ``(T, D)`` from :meth:`encode_text`.

        Raises:
            UnsupportedModelError: for a model without a text tower.
        """
        raise self._no_text_tower()

    def _no_text_tower(self) -> UnsupportedModelError:
        return UnsupportedModelError(
            f"{type(self.model).__name__} has no text tower, so a text prompt cannot be scored: "
            "prompts need an image–text model (Hugging Face CLIPModel or SiglipModel, an "
            "OpenCLIP model); explain this model with a class index or label name, or an "
            "Embedding / ReferenceImage target"
        )
