"""Maps for every layer from one forward, against the founding code's per-block figure.

Seed 003 (jeonsworld/ViT-pytorch) draws each block's ``aug_att_mat[i]`` CLS row (head-mean
attention plus the identity, rows renormalised) and multiplies them into ``joint_attentions[i]``;
``tests.reference.founding_layer_maps`` writes that code out. The methods run on the
default-loaded models; the references read attention the independent way (conftest).
"""

from __future__ import annotations

import pytest
import torch

from attnexplain import AttentionRollout, RawCLSAttention
from attnexplain.capture import UnsupportedModelError
from tests import reference
from tests.conftest import DEPTH, PATCH, family_cases, shared_family

SIZES = [(32, 32), (32, 48)]


def _inputs(size: tuple[int, int] = (32, 32), batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(3))


def _grid(size: tuple[int, int]) -> tuple[int, int]:
    return size[0] // PATCH, size[1] // PATCH


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize(("name", "size"), family_cases(SIZES, needs_cls=True))
def test_layer_maps_equal_the_founding_per_block_and_cumulative_maps(name, size):
    family = shared_family(name)
    x = _inputs(size)
    per_block, cumulative = reference.founding_layer_maps(
        family.reference_attentions(x), family.num_prefix_tokens, _grid(size)
    )
    maps = AttentionRollout(family.model).layer_maps(x, upsample=False)
    assert maps.layers == tuple(range(DEPTH))
    torch.testing.assert_close(maps.per_block.double(), per_block, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(maps.cumulative.double(), cumulative, rtol=1e-5, atol=1e-7)
    upsampled = AttentionRollout(family.model).layer_maps(x)
    assert upsampled.cumulative.shape == upsampled.per_block.shape == (2, DEPTH, *size)


@pytest.mark.parametrize(("name", "size"), family_cases([(32, 32)], needs_cls=True))
@pytest.mark.parametrize("end_layer", [0, 1, -1])
def test_end_layer_is_the_founding_joint_attention_up_to_that_block(name, size, end_layer):
    family = shared_family(name)
    x = _inputs(size)
    _, cumulative = reference.founding_layer_maps(
        family.reference_attentions(x), family.num_prefix_tokens, _grid(size)
    )
    got = AttentionRollout(family.model, end_layer=end_layer).attribute(x, upsample=False)
    torch.testing.assert_close(got.double(), cumulative[:, end_layer, None], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["hf_vit", "timm_registers", "dino_custom"])
def test_start_end_and_discard_match_the_rollout_reference_on_the_truncated_stack(name):
    family = shared_family(name)
    x = _inputs()
    attentions = family.reference_attentions(x)
    prefix = family.num_prefix_tokens
    for start, end, ratio in [(1, 1, 0.0), (0, 1, 0.5), (1, 2, 0.9)]:
        expected = reference.rollout(attentions[: end + 1], "max", ratio, start, prefix, (4, 4))
        method = AttentionRollout(
            family.model, head_fusion="max", discard_ratio=ratio, start_layer=start, end_layer=end
        )
        torch.testing.assert_close(
            method.attribute(x, upsample=False).double(), expected, rtol=1e-5, atol=1e-7
        )
        maps = method.layer_maps(x, upsample=False)
        assert maps.layers == tuple(range(start, end + 1))
        torch.testing.assert_close(maps.cumulative[:, -1:], method.attribute(x, upsample=False))
        for k, layer in enumerate(maps.layers):  # each cumulative map is a shorter product
            stack = attentions[: layer + 1]
            shorter = reference.rollout(stack, "max", ratio, start, prefix, (4, 4))
            torch.testing.assert_close(
                maps.cumulative[:, k : k + 1].double(), shorter, rtol=1e-5, atol=1e-7
            )
        joint, layout = method.joint_attention(x)
        row = joint[:, 0, prefix:].reshape(2, 1, *layout.grid)
        torch.testing.assert_close(row, method.attribute(x, upsample=False), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("name", "size"), family_cases(SIZES, needs_cls=True))
@pytest.mark.parametrize("head_fusion", [None, "mean", "max"])
def test_raw_cls_attention_of_every_layer(name, size, head_fusion):
    family = shared_family(name)
    x = _inputs(size)
    attentions = family.reference_attentions(x)
    expected = torch.stack(
        [reference.raw_cls(attentions, layer, family.num_prefix_tokens, _grid(size), head_fusion)
         for layer in range(DEPTH)], dim=1,
    )  # fmt: skip
    method = RawCLSAttention(family.model, layer="all", head_fusion=head_fusion)
    got = method.attribute(x, upsample=False)
    assert got.shape == (2, DEPTH, 4 if head_fusion is None else 1, *_grid(size))
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-6)
    assert method.attribute(x).shape == (2, DEPTH, got.shape[2], *size)
    chosen = RawCLSAttention(family.model, layer=[2, -3], head_fusion=head_fusion)
    torch.testing.assert_close(chosen.attribute(x, upsample=False), got[:, [2, 0]])


def test_founding_per_block_maps_are_raw_mean_attention_halved():
    # Softmax rows sum to 1, so (A + I) rows sum to 2: off the CLS entry the founding per-block
    # map is the head-mean raw CLS attention divided by 2 (up to rounding).
    model = shared_family("hf_vit").model
    x = _inputs()
    raw = RawCLSAttention(model, layer="all").attribute(x, upsample=False)[:, :, 0]
    per_block = AttentionRollout(model).layer_maps(x, upsample=False).per_block
    torch.testing.assert_close(per_block, raw / 2, rtol=1e-5, atol=1e-7)


def test_every_layer_comes_from_one_forward(fresh_family):
    model = fresh_family("hf_vit").model
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1),
                                             with_kwargs=True)  # fmt: skip
    try:
        RawCLSAttention(model, layer="all").attribute(_inputs())
        assert len(calls) == 1
        AttentionRollout(model).layer_maps(_inputs())
        assert len(calls) == 2
    finally:
        handle.remove()
    assert _hook_count(model) == 0


def test_bad_layer_choices_are_refused_and_leave_the_model_alone(fresh_family):
    model = fresh_family("hf_vit").model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"end_layer=0 \(layer 0\) comes before start_layer=1"):
        AttentionRollout(model, start_layer=1, end_layer=0)
    with pytest.raises(ValueError, match=r"end_layer=3 is out of range .* 3 attention layers"):
        AttentionRollout(model, end_layer=3)
    with pytest.raises(TypeError, match="end_layer must be an int"):
        AttentionRollout(model, end_layer="all")
    with pytest.raises(ValueError, match=r"names layer\(s\) \[1\] more than once"):
        RawCLSAttention(model, layer=[1, -2])
    with pytest.raises(ValueError, match="empty list"):
        RawCLSAttention(model, layer=[])
    with pytest.raises(ValueError, match=r"layer=5 is out of range"):
        RawCLSAttention(model, layer=[0, 5])
    with pytest.raises(TypeError, match="'all' or a list of ints"):
        RawCLSAttention(model, layer="every")
    with pytest.raises(TypeError, match="layer must be an int"):
        RawCLSAttention(model, layer=[0, 1.0])
    assert _hook_count(model) == 0
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_per_layer_maps_need_a_cls_token(fresh_family):
    model = fresh_family("timm_no_class_token").model
    with pytest.raises(UnsupportedModelError, match="no CLS token"):
        RawCLSAttention(model, layer="all")
    with pytest.raises(UnsupportedModelError, match="no CLS token"):
        AttentionRollout(model, end_layer=1)
