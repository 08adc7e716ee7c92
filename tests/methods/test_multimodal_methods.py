"""Attention methods on CLIP, SigLIP and OpenCLIP, and the pooling query as the "CLS row".

References read attention the independent way (``tests/multimodal.py``): HF eager attention,
timm's non-fused path, OpenCLIP's ``nn.MultiheadAttention`` asked for its weights; a pooling
head's attention is recomputed by hand from its own parameters, and for gradients the pooling
head's whole forward is written out.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from attnexplain import AttentionRollout, MeanAttentionDistance, RawCLSAttention
from attnexplain.capture import UnsupportedModelError, capture_attention, resolve_adapter
from attnexplain.capture.probes import CLSRowProbe
from attnexplain.methods import GradCAM, GradientWeightedRollout
from attnexplain.methods.targets import Embedding
from tests import reference
from tests.conftest import MULTIMODAL_FAMILIES, PATCH, POOLING_FAMILIES, family_cases, shared_family
from tests.methods.test_gradient_methods import reference_gradcam, reference_gradient_rollout
from tests.multimodal import mha_pooling_by_hand

SIZES = [(32, 32), (32, 48)]
CLS_FAMILIES = ["hf_clip_model", "hf_clip_projection", "open_clip", "open_clip_custom"]


def _inputs(size=(32, 32), batch=2, seed=1) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


# --- CLS-token image–text models: the same maps as any ViT ----------------------------------


@pytest.mark.parametrize(("name", "size"), family_cases(SIZES, families=CLS_FAMILIES))
@pytest.mark.parametrize(("layer", "head_fusion"), [(-1, "mean"), (0, None)])
def test_raw_cls_matches_reference(name, size, layer, head_fusion):
    family = shared_family(name)
    x = _inputs(size)
    grid = (size[0] // PATCH, size[1] // PATCH)
    expected = reference.raw_cls(family.reference_attentions(x), layer, 1, grid, head_fusion)
    got = RawCLSAttention(family.model, layer=layer, head_fusion=head_fusion)
    torch.testing.assert_close(got.attribute(x, upsample=False), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "size"), family_cases(SIZES, families=CLS_FAMILIES))
@pytest.mark.parametrize(("head_fusion", "discard_ratio"), [("mean", 0.0), ("max", 0.5)])
def test_rollout_matches_reference(name, size, head_fusion, discard_ratio):
    family = shared_family(name)
    x = _inputs(size)
    grid = (size[0] // PATCH, size[1] // PATCH)
    expected = reference.rollout(family.reference_attentions(x), head_fusion, discard_ratio, 0, 1,
                                 grid)  # fmt: skip
    method = AttentionRollout(family.model, head_fusion=head_fusion, discard_ratio=discard_ratio)
    got = method.attribute(x, upsample=False)
    torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("name", "size"), family_cases(SIZES, families=MULTIMODAL_FAMILIES))
def test_mean_attention_distance_matches_reference(name, size):
    family = shared_family(name)
    x = _inputs(size)
    grid = (size[0] // PATCH, size[1] // PATCH)
    expected = reference.mean_attention_distance(
        family.reference_attentions(x), family.num_prefix_tokens, grid, PATCH
    )
    got = MeanAttentionDistance(family.model).attribute(x)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)


# --- pooling heads: the pooling query's row ---------------------------------------------------


@pytest.mark.parametrize(("name", "size"), family_cases(SIZES, families=POOLING_FAMILIES))
def test_capture_reads_the_pooling_query_attention(name, size):
    family = shared_family(name)
    x = _inputs(size)
    adapter = resolve_adapter(family.model)
    assert adapter.num_layers == 3  # the pooling head is not an encoder layer
    with torch.no_grad():
        result = capture_attention(adapter, CLSRowProbe(-1), x, pooling=True)
    rows = result.pooling[:, :, adapter.pooling_head.queries].mean(dim=2)
    torch.testing.assert_close(rows, family.reference_pooling(x), rtol=1e-5, atol=1e-6)
    assert result.layout.num_prefix_tokens == family.num_prefix_tokens
    torch.testing.assert_close(rows.sum(dim=-1), torch.ones(2, 4))


@pytest.mark.parametrize(("name", "size"), family_cases(SIZES, families=POOLING_FAMILIES))
@pytest.mark.parametrize("head_fusion", ["mean", None])
def test_raw_attention_of_a_pooling_model_is_the_pooling_query_row(name, size, head_fusion):
    family = shared_family(name)
    x = _inputs(size)
    grid = (size[0] // PATCH, size[1] // PATCH)
    rows = family.reference_pooling(x)[:, :, family.num_prefix_tokens :]
    expected = rows.reshape(2, rows.shape[1], *grid)
    if head_fusion == "mean":
        expected = expected.mean(dim=1, keepdim=True)
    got = RawCLSAttention(family.model, head_fusion=head_fusion).attribute(x, upsample=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "size"), family_cases(SIZES, families=POOLING_FAMILIES))
@pytest.mark.parametrize(
    ("head_fusion", "discard_ratio", "start_layer"), [("mean", 0.0, 0), ("max", 0.5, 1)]
)
def test_rollout_composes_the_pooling_row_with_the_encoder(
    name, size, head_fusion, discard_ratio, start_layer
):
    family = shared_family(name)
    x = _inputs(size)
    grid = (size[0] // PATCH, size[1] // PATCH)
    expected = reference.pooled_rollout(
        family.reference_attentions(x), family.reference_pooling(x), head_fusion, discard_ratio,
        start_layer, family.num_prefix_tokens, grid,
    )  # fmt: skip
    method = AttentionRollout(
        family.model, head_fusion=head_fusion, discard_ratio=discard_ratio, start_layer=start_layer
    )
    torch.testing.assert_close(method.attribute(x, upsample=False), expected.float(), rtol=1e-4,
                               atol=1e-6)  # fmt: skip


def _pooled_forward(family, x, vector):
    """Encoder attentions and the pooling head's attention, both in the graph of the score
    (the head written out by hand), for the HF SigLIP vision model and timm's SigLIP."""
    model = copy.deepcopy(family.model)  # backward() writes .grad; keep the shared model clean
    if family.name == "hf_siglip_vision":
        model.set_attn_implementation("eager")
        output = model(pixel_values=x, output_attentions=True)
        attentions, head = list(output.attentions), model.head
        pooling, mixed = mha_pooling_by_hand(head.attention, head.probe, output.last_hidden_state)
        pooled = (mixed + head.mlp(head.layernorm(mixed)))[:, 0]
        score = F.cosine_similarity(pooled, vector, dim=-1).sum()
    else:  # timm_siglip: non-fused blocks, attention read at attn_drop
        for block in model.blocks:
            block.attn.fused_attn = False
        attentions = []
        handles = [b.attn.attn_drop.register_forward_hook(lambda m, a, o: attentions.append(o))
                   for b in model.blocks]  # fmt: skip
        try:
            tokens = model.forward_features(x)
        finally:
            for handle in handles:
                handle.remove()
        pool = model.attn_pool
        key, value = pool.kv(tokens).chunk(2, dim=-1)
        query = pool.q(pool.latent).expand(x.shape[0], -1, -1)
        batch, _, width = key.shape
        heads = pool.num_heads
        q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
                   for t in (query, key, value))  # fmt: skip
        pooling = torch.softmax(q @ k.transpose(-2, -1) * pool.scale, dim=-1)
        mixed = pool.proj((pooling @ v).transpose(1, 2).reshape(batch, 1, width))
        pooled = (mixed + pool.mlp(pool.norm(mixed)))[:, 0]
        score = model.head(pooled)[:, 1].sum()
    for attention in [*attentions, pooling]:
        attention.retain_grad()
    score.backward()
    return [a.detach() for a in attentions], [a.grad for a in attentions], pooling, pooling.grad


@pytest.mark.parametrize("family", ["hf_siglip_vision", "timm_siglip"], indirect=True)
@pytest.mark.parametrize("start_layer", [0, 1])
def test_gradient_rollout_starts_from_the_gradient_weighted_pooling_row(family, start_layer):
    x = _inputs()
    vector = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    attentions, grads, pooling, pooling_grad = _pooled_forward(family, x, vector)
    maps = []
    for b in range(2):
        row = (pooling_grad[b].double() * pooling[b].detach().double()).clamp(min=0).mean(dim=0)
        relevance = torch.eye(16, dtype=torch.float64)  # Chefer's R for the encoder
        for attention, grad in zip(attentions[start_layer:], grads[start_layer:]):
            cam = (grad[b].double() * attention[b].double()).clamp(min=0).mean(dim=0)
            relevance = relevance + cam @ relevance
        maps.append((row[0] @ relevance).reshape(4, 4))
    expected = torch.stack(maps).unsqueeze(1)
    target = Embedding(vector) if family.name == "hf_siglip_vision" else 1
    method = GradientWeightedRollout(family.model, start_layer=start_layer)
    got = method.attribute(x, target=target, upsample=False)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-8)
    assert expected.abs().sum() > 0


@pytest.mark.parametrize("family", ["hf_siglip_classifier", "timm_siglip"], indirect=True)
def test_gradcam_on_siglip_classifiers_matches_reference(family):
    adapter = resolve_adapter(family.model)
    method = GradCAM(family.model)
    assert method.layer is adapter.blocks[-1].layer_norm1 if family.name.startswith("hf") else (
        method.layer is family.model.blocks[2].norm1
    )  # fmt: skip
    x = _inputs()
    expected = reference_gradcam(family.model, method.layer_name, x, [1, 3], 0, (4, 4))
    got = method.attribute(x, target=[1, 3], upsample=False)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-9)
    assert (expected > 0).any()


def test_siglip_classifier_is_vision_only_and_refused_where_there_is_no_row():
    family = shared_family("hf_siglip_classifier")
    # Mean-pooled logits: no CLS token, and its pooling head feeds nothing.
    assert resolve_adapter(family.model).pooling_head is None
    for method in (RawCLSAttention, AttentionRollout, GradientWeightedRollout):
        with pytest.raises(UnsupportedModelError, match="no CLS token and no attention-pooling"):
            method(family.model)
    assert GradCAM(family.model).attribute(_inputs(), target=0).shape == (2, 1, 32, 32)
    assert MeanAttentionDistance(family.model).attribute(_inputs()).shape == (2, 3, 4)


def test_pooling_models_have_a_row_at_the_last_layer_only():
    model = shared_family("hf_siglip_vision").model
    with pytest.raises(ValueError, match="layer=0 has no query row.*leave layer at -1"):
        RawCLSAttention(model, layer=0)
    last = RawCLSAttention(model, layer=2).attribute(_inputs())
    torch.testing.assert_close(last, RawCLSAttention(model).attribute(_inputs()))
    # A CLS-token model with a pooling head (OpenCLIP's attentional pooler) keeps its CLS rows
    # in earlier layers.
    family = shared_family("open_clip_attn_pool")
    x = _inputs()
    expected = reference.raw_cls(family.reference_attentions(x), 0, 1, (4, 4), "mean")
    got = RawCLSAttention(family.model, layer=0).attribute(x, upsample=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["hf_siglip_vision", "timm_siglip", "open_clip_attn_pool"])
def test_pooling_capture_is_undone_when_the_head_raises(fresh_family, name):
    model = fresh_family(name).model
    adapter = resolve_adapter(model)
    attention = adapter.pooling_head.attention

    def boom(module, args):
        raise RuntimeError("boom in the pooling head")

    if name == "timm_siglip":
        attention.fused_attn = False  # switched on for the call, so its restore is visible
    handle = attention.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom in the pooling head"):
            AttentionRollout(model).attribute(_inputs())
        assert len(attention._forward_pre_hooks) == 1 and not attention._forward_hooks
    finally:
        handle.remove()
    assert getattr(attention, "fused_attn", False) is False
    assert RawCLSAttention(model).attribute(_inputs()).shape == (2, 1, 32, 32)


def test_open_clip_runs_at_its_image_size_only():
    with pytest.raises(ValueError, match="runs only at its image_size 32x32"):
        RawCLSAttention(shared_family("open_clip").model).attribute(_inputs((32, 48)))


def test_open_clip_scaled_cosine_attention_and_unknown_vocabularies_are_refused():
    open_clip = pytest.importorskip("open_clip")
    text = dict(context_length=8, vocab_size=100, width=32, heads=4, layers=1)

    def build(**extra):
        vision = dict(image_size=32, patch_size=8, width=32, layers=1, head_width=8, **extra)
        return open_clip.CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text)

    with pytest.raises(UnsupportedModelError, match="scaled cosine attention"):
        AttentionRollout(build(scaled_cosine_attn=True))
    with pytest.raises(ValueError, match="vocabulary has 100 entries.*open_clip.get_tokenizer"):
        GradCAM(build()).attribute(_inputs(), target="a dog")


def test_gradient_rollout_with_an_embedding_target_on_clip_vision_with_projection():
    family = shared_family("hf_clip_projection")
    x = _inputs()
    eager = copy.deepcopy(family.model)
    eager.set_attn_implementation("eager")
    output = eager(pixel_values=x, output_attentions=True)
    attentions = list(output.attentions)
    for attention in attentions:
        attention.retain_grad()
    vector = torch.randn(2, 24, generator=torch.Generator().manual_seed(0))
    F.cosine_similarity(output.image_embeds, vector, dim=-1).sum().backward()
    expected = reference_gradient_rollout(
        [a.detach() for a in attentions], [a.grad for a in attentions], 0, 1, (4, 4)
    )
    got = GradientWeightedRollout(family.model).attribute(x, Embedding(vector), upsample=False)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-8)
