"""Tiny random models of every supported family, built from configs, with reference attentions.

Each family fixture yields a :class:`Family`: the default-loaded model (SDPA / fused attention, as
users load it) and an independent way to read its full attention probabilities — HF's eager
``output_attentions=True`` on an eager copy, timm's non-fused path through ``attn_drop``,
torchvision's ``need_weights=True``, the DINO module's returned attention — that the methods
are checked against.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from tests.models.dino_vit import DinoViT

# One thread: tiny models gain nothing from more, and pytest-xdist already runs a worker per core.
torch.set_num_threads(1)

IMAGE = 32
PATCH = 8
HIDDEN = 32
DEPTH = 3
HEADS = 4
CLASSES = 5


@dataclass
class Family:
    name: str
    model: nn.Module
    reference_attentions: Callable[[torch.Tensor], list[torch.Tensor]]
    num_prefix_tokens: int
    has_head: bool = True
    has_cls: bool = True
    #: Image–text families: the text tower's tokenizer.
    tokenizer: Any = None
    #: Pooling-head families: ``x -> (B, heads, N)`` the pooling query's attention over the last
    #: layer's tokens, computed by hand from the head's weights (readout queries averaged).
    reference_pooling: Callable[[torch.Tensor], torch.Tensor] | None = None


def _hf_reference(model: nn.Module) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    def reference(x: torch.Tensor) -> list[torch.Tensor]:
        eager = copy.deepcopy(model)
        eager.set_attn_implementation("eager")
        kwargs = {"output_attentions": True}
        if tuple(x.shape[-2:]) != (IMAGE, IMAGE) and "interpolate_pos_encoding" in (
            inspect.signature(eager.forward).parameters
        ):
            kwargs["interpolate_pos_encoding"] = True
        with torch.no_grad():
            return list(eager(pixel_values=x, **kwargs).attentions)

    return reference


def _hooked_reference(
    model: nn.Module, modules: list[nn.Module], read: Callable
) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    def reference(x: torch.Tensor) -> list[torch.Tensor]:
        found: list[torch.Tensor] = []
        handles = [m.register_forward_hook(lambda mod, a, kw, o: found.append(read(mod, a, kw, o)),
                                           with_kwargs=True) for m in modules]  # fmt: skip
        try:
            with torch.no_grad():
                model(x)
        finally:
            for handle in handles:
                handle.remove()
        return found

    return reference


def _randomise_zero_parameters(model: nn.Module) -> nn.Module:
    """Trained checkpoints have no all-zero tokens; zero-initialised CLS / distillation / register
    tokens would tie attention values and make discard orderings ambiguous."""
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.5)
    return model


def build_family(name: str) -> Family:
    family = _build_family(name)
    _randomise_zero_parameters(family.model)
    return family


def _build_family(name: str) -> Family:
    if name in MULTIMODAL_FAMILIES:
        from tests.multimodal import build_multimodal_family

        return build_multimodal_family(name)
    torch.manual_seed(0)
    if name.startswith("hf_"):
        import transformers as tf

        common = dict(
            image_size=IMAGE, patch_size=PATCH, hidden_size=HIDDEN, num_hidden_layers=DEPTH,
            num_attention_heads=HEADS, intermediate_size=2 * HIDDEN,
        )  # fmt: skip
        if name == "hf_vit":
            model = tf.ViTForImageClassification(tf.ViTConfig(num_labels=CLASSES, **common))
            prefix, head = 1, True
        elif name == "hf_vit_backbone":
            model, prefix, head = tf.ViTModel(tf.ViTConfig(**common)), 1, False
        elif name == "hf_deit_distilled":
            model = tf.DeiTForImageClassificationWithTeacher(
                tf.DeiTConfig(num_labels=CLASSES, **common)
            )
            prefix, head = 2, True
        elif name == "hf_dinov2":
            model, prefix, head = tf.Dinov2Model(tf.Dinov2Config(**common)), 1, False
        elif name == "hf_dinov2_registers":
            config = tf.Dinov2WithRegistersConfig(num_register_tokens=3, **common)
            model, prefix, head = tf.Dinov2WithRegistersModel(config), 4, False
        elif name == "hf_clip":
            model, prefix, head = tf.CLIPVisionModel(tf.CLIPVisionConfig(**common)), 1, False
        else:
            raise KeyError(name)
        model.eval()
        return Family(name, model, _hf_reference(model), prefix, head)
    if name.startswith("timm"):
        import timm.models.vision_transformer as tvt

        kwargs = dict(img_size=IMAGE, patch_size=PATCH, embed_dim=HIDDEN, depth=DEPTH,
                      num_heads=HEADS, num_classes=CLASSES)  # fmt: skip
        if name == "timm_registers":
            kwargs["reg_tokens"] = 2
        if name == "timm_no_class_token":
            kwargs.update(class_token=False, global_pool="avg")
        model = tvt.VisionTransformer(**kwargs).eval()
        # The reference runs other input sizes through timm's own dynamic_img_size path.
        reference_model = tvt.VisionTransformer(dynamic_img_size=True, **kwargs).eval()
        attention = [b.attn for b in reference_model.blocks]
        for module in attention:
            module.fused_attn = False
        hooked = _hooked_reference(
            reference_model, [m.attn_drop for m in attention], lambda m, a, kw, o: o
        )

        def reference(x: torch.Tensor) -> list[torch.Tensor]:
            reference_model.load_state_dict(model.state_dict())
            return hooked(x)

        prefix = model.num_prefix_tokens
        return Family(name, model, reference, prefix, True, name != "timm_no_class_token")
    if name == "torchvision":
        from torchvision.models import VisionTransformer

        model = VisionTransformer(image_size=IMAGE, patch_size=PATCH, num_layers=DEPTH,
                                  num_heads=HEADS, hidden_dim=HIDDEN, mlp_dim=2 * HIDDEN,
                                  num_classes=CLASSES).eval()  # fmt: skip
        layers = [layer.self_attention for layer in model.encoder.layers]

        def read(module: nn.MultiheadAttention, args, kwargs, output):
            query = args[0]
            return module.forward(query, query, query, need_weights=True,
                                  average_attn_weights=False)[1]  # fmt: skip

        return Family(name, model, _hooked_reference(model, layers, read), 1)
    if name == "dino_custom":
        model = DinoViT(IMAGE, PATCH, HIDDEN, DEPTH, HEADS, CLASSES).eval()
        blocks = [block.attn for block in model.blocks]
        return Family(name, model, _hooked_reference(model, blocks, lambda m, a, kw, o: o[1]), 1)
    raise KeyError(name)


HF_FAMILIES = [
    "hf_vit", "hf_vit_backbone", "hf_deit_distilled", "hf_dinov2", "hf_dinov2_registers", "hf_clip",
]  # fmt: skip
TIMM_FAMILIES = ["timm", "timm_registers", "timm_no_class_token"]
ALL_FAMILIES = [*HF_FAMILIES, *TIMM_FAMILIES, "torchvision", "dino_custom"]
# CLIP / SigLIP / OpenCLIP families, kept out of ALL_FAMILIES while the method tests that
# parametrise over it are written for class logits (built in tests/multimodal.py).
IMAGE_TEXT_FAMILIES = ["hf_clip_model", "hf_siglip_model", "open_clip", "open_clip_custom",
                       "open_clip_attn_pool"]  # fmt: skip
MULTIMODAL_FAMILIES = [*IMAGE_TEXT_FAMILIES, "hf_clip_projection", "hf_siglip_vision",
                       "hf_siglip_classifier", "timm_siglip"]  # fmt: skip
#: Families whose output is read through an attention-pooling head.
POOLING_FAMILIES = ["hf_siglip_model", "open_clip_attn_pool", "hf_siglip_vision", "timm_siglip"]

_CACHE: dict[str, Family] = {}


def _skip_if_missing(name: str) -> None:
    if name.startswith("timm"):
        pytest.importorskip("timm", reason="timm extra not installed")
    if name.startswith("open_clip"):
        pytest.importorskip("open_clip", reason="openclip extra not installed")
    if name == "torchvision":
        pytest.importorskip("torchvision", reason="torchvision extra not installed")


NO_CLS_FAMILIES = {
    "timm_no_class_token", "hf_siglip_model", "hf_siglip_vision", "hf_siglip_classifier",
    "timm_siglip",
}  # fmt: skip
# Their position embedding cannot be resized.
FIXED_SIZE_FAMILIES = {"torchvision", "open_clip", "open_clip_custom", "open_clip_attn_pool"}


def shared_family(name: str) -> Family:
    """The family's model, built once per session (tests must not mutate it)."""
    _skip_if_missing(name)
    if name not in _CACHE:
        _CACHE[name] = build_family(name)
    return _CACHE[name]


def family_cases(
    sizes: list[tuple[int, int]], *, needs_cls: bool = False, families: list[str] | None = None
) -> list[tuple[str, tuple[int, int]]]:
    """(family, input size) pairs a method applies to: CLS methods skip models without CLS, and
    fixed-size models run at their own size only (both refusals are tested in test_errors);
    ``families`` defaults to :data:`ALL_FAMILIES`."""
    return [
        (name, size)
        for name in (ALL_FAMILIES if families is None else families)
        if not (needs_cls and name in NO_CLS_FAMILIES)
        for size in sizes
        if name not in FIXED_SIZE_FAMILIES or size == (IMAGE, IMAGE)
    ]


@pytest.fixture(params=ALL_FAMILIES)
def family(request: pytest.FixtureRequest) -> Family:
    """Every family (shared model)."""
    return shared_family(request.param)


@pytest.fixture
def fresh_family(request: pytest.FixtureRequest) -> Callable[[str], Family]:
    """Build a new family instance (for tests that mutate or break the model)."""

    def make(name: str) -> Family:
        _skip_if_missing(name)
        return build_family(name)

    return make
