"""Bad input gets a clear error naming the problem and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnexplain import (
    AttentionRollout,
    GradCAM,
    GradientWeightedRollout,
    MeanAttentionDistance,
    RawCLSAttention,
)
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


def _hf_swin():
    import transformers as tf

    config = tf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                           num_heads=[2, 2], window_size=4, num_labels=3)  # fmt: skip
    return tf.SwinForImageClassification(config).eval()


def _timm_swin():
    timm = pytest.importorskip("timm", reason="timm extra not installed")
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=3,
                             img_size=32, window_size=4, embed_dim=16, depths=(1, 1),
                             num_heads=(2, 2)).eval()  # fmt: skip


@pytest.mark.parametrize("build", [_hf_swin, _timm_swin], ids=["hf", "timm"])
@pytest.mark.parametrize(
    "method", [RawCLSAttention, AttentionRollout, MeanAttentionDistance, GradCAM,
               GradientWeightedRollout],
)  # fmt: skip
def test_shifted_window_models_are_refused_at_construction_by_every_method(build, method):
    with pytest.raises(UnsupportedModelError, match="shifted-window") as error:
        method(build())
    # The message must not send the user to another method that would fail the same way.
    assert "none of attnexplain's methods" in str(error.value)
    assert "use MeanAttentionDistance" not in str(error.value)


def test_attention_over_fewer_tokens_than_patches_is_refused_at_run_time():
    """Windowed attention without Swin's shifted-window blocks is caught when it runs."""

    class Windowed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(3, 8, kernel_size=4, stride=4)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.proj(x).flatten(2).transpose(1, 2)  # (B, 64, 8)
            windows = tokens.reshape(-1, 16, 8)  # 4 windows of 16 tokens each
            return self.attn(windows, windows, windows)[0]

    with pytest.raises(UnsupportedModelError, match="windowed or pooled attention"):
        MeanAttentionDistance(Windowed().eval()).attribute(torch.randn(1, 3, 32, 32))


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
