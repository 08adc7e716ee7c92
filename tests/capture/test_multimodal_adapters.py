"""What the CLIP / SigLIP / OpenCLIP adapters read from a model, against the model itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnexplain.capture import (
    HFAdapter,
    HFImageTextAdapter,
    HFSiglipVisionAdapter,
    OpenCLIPAdapter,
    TimmAdapter,
    resolve_adapter,
)
from attnexplain.methods import RawCLSAttention
from attnexplain.methods.targets import target_scores
from tests.conftest import IMAGE_TEXT_FAMILIES, MULTIMODAL_FAMILIES, POOLING_FAMILIES
from tests.multimodal import EMBED, hand_image_embedding, hand_logits, hand_text_embedding

ADAPTERS = {
    "hf_clip_model": HFImageTextAdapter, "hf_siglip_model": HFImageTextAdapter,
    "open_clip": OpenCLIPAdapter, "open_clip_custom": OpenCLIPAdapter,
    "open_clip_attn_pool": OpenCLIPAdapter, "hf_clip_projection": HFAdapter,
    "hf_siglip_vision": HFSiglipVisionAdapter, "hf_siglip_classifier": HFSiglipVisionAdapter,
    "timm_siglip": TimmAdapter,
}  # fmt: skip
#: Adapters written in this branch whose readout the test checks (the others' come with LeGrad).
READOUT_FAMILIES = ["hf_clip_model", "hf_siglip_model", "open_clip", "open_clip_custom",
                    "open_clip_attn_pool", "hf_siglip_vision", "hf_siglip_classifier"]  # fmt: skip


def _inputs(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _vision_tower(model: nn.Module) -> nn.Module:
    return getattr(model, "visual", None) or getattr(model, "vision_model", model)


@pytest.mark.parametrize("family", MULTIMODAL_FAMILIES, indirect=True)
def test_adapter_reads_the_vision_tower_only(family):
    adapter = resolve_adapter(family.model)
    assert type(adapter) is ADAPTERS[family.name]
    tower = {id(m) for m in _vision_tower(family.model).modules()}
    assert adapter.num_layers == 3
    assert all(id(module) in tower for module in adapter.attention_modules)
    assert id(adapter.patch_embedding) in tower
    assert adapter.cls_index() == (0 if family.has_cls else None)
    assert (adapter.pooling_head is not None) == (family.name in POOLING_FAMILIES)
    if adapter.pooling_head is not None:
        pooling = {id(m) for m in adapter.pooling_head.attention.modules()}
        assert not any(id(m) in pooling for m in adapter.attention_modules)
    assert adapter.has_text_tower == (family.name in IMAGE_TEXT_FAMILIES)


@pytest.mark.parametrize("family", READOUT_FAMILIES, indirect=True)
def test_readout_of_the_last_block_output_is_the_model_output(family):
    adapter = resolve_adapter(family.model)
    captured = []
    handle = adapter.blocks[-1].register_forward_hook(lambda m, a, o: captured.append(o))
    x = _inputs()
    try:
        with torch.no_grad():
            output = adapter.forward(x)
    finally:
        handle.remove()
    tokens = captured[0][0] if isinstance(captured[0], tuple) else captured[0]
    with torch.no_grad():
        readout = adapter.readout(tokens)
    read = adapter.logits if family.has_head else adapter.embedding
    torch.testing.assert_close(read(readout), read(output), rtol=1e-5, atol=1e-6)
    assert type(readout) is type(output) or isinstance(output, torch.Tensor)


@pytest.mark.parametrize("family", IMAGE_TEXT_FAMILIES, indirect=True)
def test_image_text_logits_are_the_model_own(family):
    adapter = resolve_adapter(family.model)
    x = _inputs()
    prompts = ["the red star", "a dog", "a photo of a small blue square"]
    with torch.no_grad():
        output = adapter.forward(x)
        torch.testing.assert_close(adapter.embedding(output), hand_image_embedding(family, x))
        text = adapter.encode_text(prompts, family.tokenizer)
        torch.testing.assert_close(text, hand_text_embedding(family, prompts))
        expected = hand_logits(family, hand_image_embedding(family, x), text)
        torch.testing.assert_close(adapter.image_text_logits(output, text), expected)
    assert text.shape == (3, EMBED if family.name != "hf_siglip_model" else 32)


def test_open_clip_with_a_timm_trunk_is_explained_through_the_trunk():
    open_clip = pytest.importorskip("open_clip")
    import timm.models.vision_transformer as tvt

    torch.manual_seed(0)
    # OpenCLIP's SigLIP configs (e.g. ViT-B-16-SigLIP): a timm trunk pooled by its attention
    # pool, no extra projection.
    vision = dict(timm_model_name="vit_tiny_patch16_224", timm_pool="map", timm_proj="none",
                  image_size=32)  # fmt: skip
    text = dict(context_length=12, vocab_size=49408, width=32, heads=4, layers=1)
    model = open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text).eval()
    # A tiny trunk of the same kind (no class token, attention pooling).
    model.visual.trunk = tvt.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=0,
        class_token=False, global_pool="map",
    ).eval()  # fmt: skip
    adapter = resolve_adapter(model)
    assert isinstance(adapter, OpenCLIPAdapter) and isinstance(adapter.vision, TimmAdapter)
    assert adapter.attention_modules == [block.attn for block in model.visual.trunk.blocks]
    assert adapter.pooling_head.attention is model.visual.trunk.attn_pool
    x = _inputs()
    tokenizer = open_clip.SimpleTokenizer(context_length=12)
    with torch.no_grad():
        image = model.encode_image(x)
        expected = model.logit_scale.exp() * torch.nn.functional.cosine_similarity(
            image, model.encode_text(tokenizer(["a dog"])), dim=-1
        )
        torch.testing.assert_close(target_scores(adapter, adapter.forward(x), "a dog"), expected)
    maps = RawCLSAttention(model).attribute(x, upsample=False)
    torch.testing.assert_close(
        maps, RawCLSAttention(model.visual.trunk).attribute(x, upsample=False)
    )
    assert maps.shape == (2, 1, 4, 4)
