"""Checks at call time: argument types, warnings for maps that come out empty, train mode, models
whose attention cannot be read, and the reference's discard counting."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from attnexplain import (
    AttentionRollout,
    CustomAdapter,
    GradCAM,
    GradientWeightedRollout,
    MeanAttentionDistance,
    RawCLSAttention,
)
from attnexplain.capture import UnsupportedModelError
from tests.conftest import IMAGE
from tests.models.dino_vit import DinoViT

MAP_METHODS = [RawCLSAttention, AttentionRollout, GradCAM, GradientWeightedRollout]


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", MAP_METHODS)
@pytest.mark.parametrize("value", ["no", 0, None])
def test_upsample_must_be_a_bool(family_model, method, value, x):
    with pytest.raises(TypeError, match="upsample must be True or False"):
        method(family_model).attribute(x, upsample=value)


@pytest.mark.parametrize("value", ["yes", 1])
def test_renormalize_must_be_a_bool(family_model, value):
    with pytest.raises(TypeError, match="renormalize must be True or False"):
        MeanAttentionDistance(family_model, renormalize=value)


@pytest.fixture
def family_model(fresh_family) -> nn.Module:
    return fresh_family("hf_vit").model


def test_five_dimensional_input_gets_a_reshape_hint(family_model):
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 3, 32, 32\).*reshape"):
        RawCLSAttention(family_model).attribute(torch.randn(1, 1, 3, IMAGE, IMAGE))
    with pytest.raises(ValueError, match="fold time into B"):
        RawCLSAttention(family_model).attribute(torch.randn(2, 4, 3, IMAGE, IMAGE))


@pytest.mark.parametrize("cls_index", [1, 5, -1])
def test_custom_cls_index_must_point_at_a_prefix_token(cls_index, x):
    model = DinoViT(IMAGE, 8, 32, 2, 4, 5).eval()  # one prefix token: the CLS at 0
    adapter = CustomAdapter(model, cls_index=cls_index)
    with pytest.raises(UnsupportedModelError, match=rf"cls_index={cls_index} .*1 token\(s\)"):
        RawCLSAttention(adapter).attribute(x)
    assert RawCLSAttention(CustomAdapter(model, cls_index=0)).attribute(x).shape == (2, 1, 32, 32)


def test_discard_ratio_that_zeroes_every_patch_warns(family_model, x):
    # N = 17 tokens: 0.999 of N^2 = 288 entries leaves only CLS->CLS in every layer.
    rollout = AttentionRollout(family_model, discard_ratio=0.999)
    with pytest.warns(RuntimeWarning, match=r"discard_ratio=0\.999 zeroed every patch"):
        maps = rollout.attribute(x)
    assert not maps.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert AttentionRollout(family_model, discard_ratio=0.5).attribute(x).any()


def test_gradcam_on_a_layer_without_patch_gradients_warns(family_model, x):
    # The final norm of a CLS-token classifier: only its CLS token reaches the head.
    with pytest.warns(RuntimeWarning, match=r"zero at every patch token of layer 'vit.layernorm'"):
        maps = GradCAM(family_model, layer="vit.layernorm").attribute(x, target=0)
    assert not maps.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GradCAM(family_model).attribute(x, target=0)


class _OpaqueAttention(nn.Module):
    """Hand-written attention that returns only its output: its probabilities cannot be read."""

    def __init__(self, reference: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.scale = reference.num_heads, reference.scale
        self.qkv, self.proj = reference.qkv, reference.proj

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(batch, tokens, dim)), None


def test_gradcam_needs_no_readable_attention(x):
    torch.manual_seed(0)
    readable = DinoViT(IMAGE, 8, 32, 3, 4, 5).eval()
    opaque = copy.deepcopy(readable)
    for block in opaque.blocks:
        block.attn = _OpaqueAttention(block.attn)
    with pytest.raises(UnsupportedModelError, match="neither called"):
        RawCLSAttention(opaque).attribute(x)
    expected = GradCAM(readable).attribute(x, target=[1, 3])
    torch.testing.assert_close(GradCAM(opaque).attribute(x, target=[1, 3]), expected)
    assert expected.any()


def _dropout_vit() -> nn.Module:
    import transformers as tf

    config = tf.ViTConfig(image_size=IMAGE, patch_size=8, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64, num_labels=3,
                          hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)  # fmt: skip
    torch.manual_seed(0)
    return tf.ViTForImageClassification(config)


@pytest.mark.parametrize(
    "method", [RawCLSAttention, AttentionRollout, MeanAttentionDistance, GradCAM,
               GradientWeightedRollout],
)  # fmt: skip
def test_a_model_in_train_mode_is_explained_in_eval_mode_and_left_in_train_mode(method, x):
    model = _dropout_vit().train()
    flags = [m.training for m in model.modules()]
    first = method(model).attribute(x)
    second = method(model).attribute(x)
    assert [m.training for m in model.modules()] == flags
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, method(model.eval()).attribute(x))


def _vit_explain_rollout(attentions: list[torch.Tensor], discard_ratio: float) -> torch.Tensor:
    """jacobgil/vit-explain's ``rollout`` with max head fusion, for one sample, written out here
    (its row normalisation with ``keepdim`` restored: without it, column j is divided by row j's
    sum, vit-explain issue #16)."""
    result = torch.eye(attentions[0].size(-1))
    for attention in attentions:
        fused = attention.max(dim=1)[0]  # (1, N, N)
        flat = fused.view(fused.size(0), -1)
        _, indices = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
        indices = indices[indices != 0]
        flat[0, indices] = 0
        eye = torch.eye(fused.size(-1))
        a = (fused + 1.0 * eye) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        result = torch.matmul(a, result)
    return result[0, 0, 1:]


def test_vit_explain_discard_counting_matches_the_reference(fresh_family):
    family = fresh_family("timm")
    x = torch.randn(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(3))
    attentions = family.reference_attentions(x)
    for ratio in (0.5, 0.9):
        expected = _vit_explain_rollout([a.clone() for a in attentions], ratio).reshape(4, 4)
        parity = AttentionRollout(family.model, head_fusion="max", discard_ratio=ratio,
                                  discard_counting="vit-explain")  # fmt: skip
        torch.testing.assert_close(parity.attribute(x, upsample=False)[0, 0], expected)
    # At 0.9 CLS->CLS ranks among the lowest in some layer here, so the counts differ: the
    # default zeroes one more entry there, which changes the joint attention.
    fused = [a.max(dim=1)[0].flatten(1) for a in attentions]
    count = int(fused[0].shape[1] * 0.9)
    assert any((f.topk(count, largest=False).indices == 0).any() for f in fused)
    default = AttentionRollout(family.model, head_fusion="max", discard_ratio=0.9)
    assert not torch.allclose(default.joint_attention(x)[0], parity.joint_attention(x)[0])


def test_discard_counting_is_validated(family_model):
    with pytest.raises(ValueError, match="discard_counting must be one of"):
        AttentionRollout(family_model, discard_counting="jacobgil")


def test_discard_counting_never_zeroes_the_kept_entry():
    from attnexplain.methods.rollout import discard_lowest

    matrices = torch.arange(1.0, 17.0).reshape(1, 4, 4)  # CLS->CLS (index 0) is the lowest
    for counting, zeroed in (("others", 8), ("vit-explain", 7)):
        out = discard_lowest(matrices.clone(), 0.5, keep_index=0, counting=counting)
        assert out[0, 0, 0] == 1.0
        assert int((out == 0).sum()) == zeroed
