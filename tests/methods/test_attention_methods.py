"""Parity of the attention methods with the founding formulas, on every family."""

from __future__ import annotations

import pytest
import torch

from attnexplain import AttentionRollout, MeanAttentionDistance, RawCLSAttention
from attnexplain.methods.rollout import residual_normalise
from tests import reference
from tests.conftest import PATCH, family_cases, shared_family

SIZES = [(32, 32), (32, 48)]


def _inputs(size: tuple[int, int], batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("name", "size"), family_cases(SIZES, needs_cls=True))
@pytest.mark.parametrize(
    ("layer", "head_fusion"), [(-1, "mean"), (-1, None), (0, "max"), (1, "min")]
)
def test_raw_cls_matches_reference(name, size, head_fusion, layer):
    family = shared_family(name)
    x = _inputs(size)
    grid = (size[0] // PATCH, size[1] // PATCH)
    expected = reference.raw_cls(
        family.reference_attentions(x), layer, family.num_prefix_tokens, grid, head_fusion
    )
    method = RawCLSAttention(family.model, layer=layer, head_fusion=head_fusion)
    got = method.attribute(x, upsample=False)
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-6)
    assert method.attribute(x).shape == (2, expected.shape[1], *size)


@pytest.mark.parametrize(("name", "size"), family_cases(SIZES, needs_cls=True))
@pytest.mark.parametrize(
    ("head_fusion", "discard_ratio", "start_layer"),
    [("mean", 0.0, 0), ("max", 0.0, 0), ("min", 0.0, 0), ("mean", 0.5, 0), ("max", 0.9, 1)],
)
def test_rollout_matches_reference(name, size, head_fusion, discard_ratio, start_layer):
    family = shared_family(name)
    x = _inputs(size)
    grid = (size[0] // PATCH, size[1] // PATCH)
    expected = reference.rollout(
        family.reference_attentions(x), head_fusion, discard_ratio, start_layer,
        family.num_prefix_tokens, grid,
    )  # fmt: skip
    method = AttentionRollout(
        family.model, head_fusion=head_fusion, discard_ratio=discard_ratio, start_layer=start_layer
    )
    got = method.attribute(x, upsample=False)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("name", "size"), family_cases(SIZES))
@pytest.mark.parametrize("renormalize", [False, True])
def test_mean_attention_distance_matches_reference(name, size, renormalize):
    family = shared_family(name)
    x = _inputs(size)
    grid = (size[0] // PATCH, size[1] // PATCH)
    expected = reference.mean_attention_distance(
        family.reference_attentions(x), family.num_prefix_tokens, grid, PATCH, renormalize
    )
    got = MeanAttentionDistance(family.model, renormalize=renormalize).attribute(x)
    assert got.shape == (2, 3, 4)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_residual_normalise_of_a_row_block_equals_those_rows_of_the_full_matrix() -> None:
    # The last layer's CLS row alone goes through the same step as whole matrices.
    attention = torch.rand(2, 7, 7).softmax(dim=-1)
    full = residual_normalise(attention.clone())
    torch.testing.assert_close(
        residual_normalise(attention[:, 2:4].clone(), first_row=2), full[:, 2:4]
    )
    torch.testing.assert_close(full.sum(dim=-1), torch.ones(2, 7))


@pytest.mark.parametrize(("name", "size"), family_cases([(32, 32)], needs_cls=True))
def test_rollout_joint_attention_cls_row_equals_map(name, size):
    family = shared_family(name)
    x = _inputs((32, 32))
    method = AttentionRollout(family.model, discard_ratio=0.3)
    joint, layout = method.joint_attention(x)
    assert joint.shape == (2, layout.num_tokens, layout.num_tokens)
    row = joint[:, 0, layout.num_prefix_tokens :].reshape(2, 1, *layout.grid)
    torch.testing.assert_close(row, method.attribute(x, upsample=False), rtol=1e-5, atol=1e-7)


BATCH_CASES = [
    pytest.param(name, factory, id=f"{name}-{method}")
    for method, factory, needs_cls in [
        ("raw", lambda m: RawCLSAttention(m, head_fusion=None), True),
        ("rollout", lambda m: AttentionRollout(m, discard_ratio=0.5), True),
        ("mad", lambda m: MeanAttentionDistance(m), False),
    ]
    for name, _ in family_cases([(32, 32)], needs_cls=needs_cls)
]


@pytest.mark.parametrize(("name", "method_factory"), BATCH_CASES)
def test_batch_equals_single_calls(name, method_factory):
    method = method_factory(shared_family(name).model)
    x = _inputs((32, 32))
    batched = method.attribute(x)
    singles = torch.cat([method.attribute(x[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(batched[0], batched[1])


def test_non_square_patch_14_hf_vit():
    import transformers as tf

    torch.manual_seed(0)
    config = tf.ViTConfig(image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64, num_labels=3)  # fmt: skip
    model = tf.ViTForImageClassification(config).eval()
    eager = tf.ViTForImageClassification(config).eval()
    eager.load_state_dict(model.state_dict())
    eager.set_attn_implementation("eager")
    x = _inputs((28, 42), batch=1)
    with torch.no_grad():
        attentions = eager(x, output_attentions=True, interpolate_pos_encoding=True).attentions
    grid = (2, 3)
    torch.testing.assert_close(
        AttentionRollout(model).attribute(x, upsample=False).double(),
        reference.rollout(attentions, "mean", 0.0, 0, 1, grid),
        rtol=1e-5,
        atol=1e-7,
    )
    torch.testing.assert_close(
        MeanAttentionDistance(model).attribute(x).double(),
        reference.mean_attention_distance(attentions, 1, grid, 14),
        rtol=1e-5,
        atol=1e-5,
    )
    assert RawCLSAttention(model).attribute(x).shape == (1, 1, 28, 42)


def test_default_and_eager_models_give_identical_maps():
    import transformers as tf

    torch.manual_seed(0)
    config = tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3,
                          num_attention_heads=4, intermediate_size=64)  # fmt: skip
    default = tf.ViTModel(config).eval()
    assert default.config._attn_implementation == "sdpa"
    eager = tf.ViTModel(config).eval()
    eager.load_state_dict(default.state_dict())
    eager.set_attn_implementation("eager")
    x = _inputs((32, 32))
    for method in (RawCLSAttention, AttentionRollout, MeanAttentionDistance):
        torch.testing.assert_close(method(default).attribute(x), method(eager).attribute(x))


def test_timm_fused_and_unfused_give_identical_maps(fresh_family):
    fused = fresh_family("timm").model
    unfused = fresh_family("timm").model
    for block in unfused.blocks:
        block.attn.fused_attn = False
    x = _inputs((32, 32))
    torch.testing.assert_close(
        AttentionRollout(fused).attribute(x), AttentionRollout(unfused).attribute(x)
    )
    assert all(not block.attn.fused_attn for block in unfused.blocks)


def test_upsample_covers_input_and_pads_cropped_pixels():
    import transformers as tf

    torch.manual_seed(0)
    config = tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64)  # fmt: skip
    model = tf.ViTModel(config).eval()
    maps = RawCLSAttention(model).attribute(_inputs((36, 35)))
    assert maps.shape == (2, 1, 36, 35)
    assert torch.all(maps[..., 32:, :] == 0) and torch.all(maps[..., :, 32:] == 0)
    assert torch.all(maps[..., :32, :32] > 0)
