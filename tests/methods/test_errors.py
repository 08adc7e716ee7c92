"""Bad input gets a clear error naming the problem and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnexplain import AttentionRollout, MeanAttentionDistance, RawCLSAttention
from attnexplain.capture import UnsupportedModelError


@pytest.fixture
def hf_vit(fresh_family):
    return fresh_family("hf_vit").model


@pytest.mark.parametrize("method", [RawCLSAttention, AttentionRollout, MeanAttentionDistance])
def test_input_validation(hf_vit, method):
    explainer = method(hf_vit)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        explainer.attribute([[0.0]])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*unsqueeze"):
        explainer.attribute(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="float tensor"):
        explainer.attribute(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="expects 3"):
        explainer.attribute(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="NaN"):
        explainer.attribute(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ValueError, match="empty batch"):
        explainer.attribute(torch.randn(0, 3, 32, 32))
    with pytest.raises(ValueError, match="smaller than one patch"):
        explainer.attribute(torch.randn(1, 3, 4, 32))


def test_size_not_divisible_where_model_cannot_interpolate(fresh_family):
    with pytest.raises(ValueError, match="not divisible by the patch size 8x8"):
        AttentionRollout(fresh_family("timm").model).attribute(torch.randn(1, 3, 36, 32))
    with pytest.raises(ValueError, match="runs only at its image_size 32x32"):
        RawCLSAttention(fresh_family("torchvision").model).attribute(torch.randn(1, 3, 40, 40))


def test_bad_layer_head_fusion_and_discard_ratio(hf_vit):
    with pytest.raises(ValueError, match=r"layer=3 is out of range .* 3 attention layers"):
        RawCLSAttention(hf_vit, layer=3)
    with pytest.raises(ValueError, match=r"layer=-4 is out of range"):
        RawCLSAttention(hf_vit, layer=-4)
    with pytest.raises(TypeError, match="layer must be an int"):
        RawCLSAttention(hf_vit, layer="last")
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        RawCLSAttention(hf_vit, head_fusion="median")
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        AttentionRollout(hf_vit, head_fusion=None)
    for ratio in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"discard_ratio must be in \[0, 1\)"):
            AttentionRollout(hf_vit, discard_ratio=ratio)
    with pytest.raises(ValueError, match="start_layer=5 is out of range"):
        AttentionRollout(hf_vit, start_layer=5)
    with pytest.raises(ValueError, match="interpolation must be"):
        RawCLSAttention(hf_vit, interpolation="area")


def test_models_without_attention_are_refused():
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(
        UnsupportedModelError, match=r"no self-attention layers: searched for .*Supported"
    ):
        AttentionRollout(cnn)
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        AttentionRollout("vit-base")


def test_windowed_attention_is_refused():
    import transformers as tf

    config = tf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                           num_heads=[2, 2], window_size=4)  # fmt: skip
    swin = tf.SwinModel(config).eval()
    with pytest.raises(UnsupportedModelError, match="windowed or pooled attention"):
        MeanAttentionDistance(swin).attribute(torch.randn(1, 3, 32, 32))


def test_cls_methods_refuse_models_without_cls_token(fresh_family):
    model = fresh_family("timm_no_class_token").model
    for method in (RawCLSAttention, AttentionRollout):
        with pytest.raises(UnsupportedModelError, match="has no CLS token"):
            method(model)
    assert MeanAttentionDistance(model).attribute(torch.randn(1, 3, 32, 32)).shape == (1, 3, 4)


def test_unsupported_multimodal_model_is_refused_with_a_pointer_to_the_vision_tower():
    # CLIPModel and SiglipModel are explained whole (tests/methods/test_targets.py); a model
    # with another kind of text tower is refused.
    import transformers as tf

    config = tf.BlipConfig(
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                           num_attention_heads=4, intermediate_size=64),
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64, vocab_size=100),
    )  # fmt: skip
    with pytest.raises(UnsupportedModelError, match=r"has a text_encoder.*model\.vision_model"):
        RawCLSAttention(tf.BlipForImageTextRetrieval(config))
