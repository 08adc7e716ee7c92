"""Transformer Attribution, LRP, partial LRP and AttnLRP on every family.

Numbers are checked against Chefer et al.'s LRP ViT written again from their code
(``tests/relevance/chefer_reference.py``) with the same weights loaded into timm, HF ViT,
torchvision and the DINO module; the gradient pass against ordinary autograd on the eager
models; and, on every family with a head, conservation of the relevance that reaches the first
block (Chefer et al.'s rules conserve it through the blocks). lxt is compared in
``tests/relevance/test_lxt.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnexplain.capture import UnsupportedModelError, resolve_adapter
from attnexplain.methods.attnlrp import AttnLRP
from attnexplain.methods.base import ViTAttribution
from attnexplain.methods.lrp import LRP, PartialLRP
from attnexplain.methods.targets import Embedding, target_scores
from attnexplain.methods.transformer_attribution import TransformerAttribution
from attnexplain.relevance import (
    CHEFER_RULES,
    UnsupportedOperationError,
    attnlrp_rules,
    trace_relevance,
)
from tests.conftest import CLASSES, HEADS, HIDDEN, IMAGE, PATCH, build_family
from tests.methods.test_gradient_methods import (
    _hook_count,
    _inputs,
    reference_attention_and_grads,
)
from tests.relevance.chefer_reference import ReferenceViT
from tests.relevance.same_weights import CONVERTERS, DEPTH, DIM, timm_source
from tests.relevance.same_weights import HIDDEN as MLP

METHODS = [TransformerAttribution, LRP, PartialLRP, AttnLRP]
CLS_METHODS = (TransformerAttribution, PartialLRP)


def _hf_classifier(kind: str) -> nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    common = dict(
        image_size=IMAGE, patch_size=PATCH, hidden_size=HIDDEN, num_hidden_layers=3,
        num_attention_heads=HEADS, intermediate_size=2 * HIDDEN,
    )  # fmt: skip
    if kind == "hf_dinov2_head":
        model = tf.Dinov2ForImageClassification(tf.Dinov2Config(num_labels=CLASSES, **common))
    elif kind == "hf_dinov2_registers_head":
        config = tf.Dinov2WithRegistersConfig(num_register_tokens=3, num_labels=CLASSES, **common)
        model = tf.Dinov2WithRegistersForImageClassification(config)
    else:
        text = dict(hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=HEADS,
                    intermediate_size=2 * HIDDEN)  # fmt: skip
        config = tf.CLIPConfig(vision_config=common, text_config=text, num_labels=CLASSES)
        model = tf.CLIPForImageClassification(config)
    with torch.no_grad():  # trained checkpoints have no all-zero tokens or layer scales of 1e-5
        for name, parameter in model.named_parameters():
            if not parameter.any() or "lambda1" in name or "lambda2" in name:
                parameter.normal_(0.0, 0.5)
    return model.eval()


HF_HEADS = ["hf_dinov2_head", "hf_dinov2_registers_head", "hf_clip_head"]
HEAD_FAMILIES = [
    "hf_vit", "hf_deit_distilled", *HF_HEADS, "timm", "timm_registers", "timm_no_class_token",
    "torchvision", "dino_custom",
]  # fmt: skip
_MODELS: dict[str, nn.Module] = {}


def model_of(name: str) -> nn.Module:
    """A shared model of the family (tests must not mutate it)."""
    if name.startswith("timm"):
        pytest.importorskip("timm")
    if name == "torchvision":
        pytest.importorskip("torchvision")
    if name not in _MODELS:
        _MODELS[name] = _hf_classifier(name) if name in HF_HEADS else build_family(name).model
    return _MODELS[name]


def _applies(method: type, name: str) -> bool:
    return not (method in CLS_METHODS and name == "timm_no_class_token")


# --- Chefer et al.'s reference, same weights in four families -----------------------------------


@pytest.fixture(scope="module")
def source() -> nn.Module:
    pytest.importorskip("timm")
    return timm_source()


def _same_weights(source: nn.Module, family: str) -> nn.Module:
    if family == "torchvision":
        pytest.importorskip("torchvision")
    return source if family == "timm" else CONVERTERS[family](source)


def _reference(source: nn.Module, x, targets, method: str, start_layer: int = 0, orig=False):
    reference = ReferenceViT(IMAGE, PATCH, DIM, DEPTH, HEADS, MLP, CLASSES, orig=orig)
    reference.load_state_dict(source.state_dict())
    maps = [reference.explain(x[b : b + 1], t, method, start_layer) for b, t in enumerate(targets)]
    return torch.stack(maps).double()


def _assert_close_to(got: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> None:
    scale = expected.abs().max()
    assert scale > 0
    assert (got.double().reshape(expected.shape) - expected).abs().max() <= tolerance * scale


FAMILIES_WITH_SAME_WEIGHTS = ["timm", "hf_vit", "torchvision", "dino_custom"]


@pytest.mark.parametrize("family", FAMILIES_WITH_SAME_WEIGHTS)
@pytest.mark.parametrize("start_layer", [0, 1])
def test_transformer_attribution_matches_the_reference_code(source, family, start_layer):
    model = _same_weights(source, family)
    x = _inputs()
    for targets in ([1, 3], [4, 0]):
        expected = _reference(source, x, targets, "transformer_attribution", start_layer)
        got = TransformerAttribution(model, start_layer=start_layer).attribute(
            x, target=targets, upsample=False
        )
        _assert_close_to(got, expected)


@pytest.mark.parametrize("family", FAMILIES_WITH_SAME_WEIGHTS)
def test_lrp_and_partial_lrp_match_the_reference_code(source, family):
    model = _same_weights(source, family)
    x = _inputs()
    targets = [2, 3]
    expected = _reference(source, x, targets, "full", orig=True)
    _assert_close_to(LRP(model).attribute(x, target=targets), expected)
    expected = _reference(source, x, targets, "last_layer", orig=True)
    _assert_close_to(PartialLRP(model).attribute(x, target=targets, upsample=False), expected)


def test_transformer_attribution_defaults_to_the_papers_start_layer(source):
    x = _inputs()
    by_default = TransformerAttribution(source).attribute(x, target=[1, 2], upsample=False)
    _assert_close_to(by_default, _reference(source, x, [1, 2], "transformer_attribution", 1))


# --- the engine on every family -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["hf_vit", "hf_deit_distilled", "timm", "timm_registers", "dino_custom", "torchvision"]
)
def test_gradient_pass_and_forward_equal_plain_autograd(name):
    family = build_family(name)
    x = _inputs()
    targets = [1, 3]
    attentions, grads = reference_attention_and_grads(family, x, targets)
    adapter = resolve_adapter(family.model)
    explainer = TransformerAttribution(family.model) if name != "torchvision" else LRP(family.model)
    leaf = x.clone().requires_grad_(True)
    trace = trace_relevance(adapter, CHEFER_RULES, leaf, gradients=True)
    with torch.no_grad():
        plain = adapter.logits(adapter.forward(x))
    torch.testing.assert_close(adapter.logits(trace.output), plain, rtol=1e-4, atol=1e-5)
    scores = target_scores(explainer.adapter, trace.output, targets)
    ours = trace.gradient(scores, trace.attention)
    for layer, (attention, grad, got_a, got_g) in enumerate(
        zip(attentions, grads, trace.attention, ours)
    ):
        torch.testing.assert_close(got_a.detach(), attention, rtol=1e-4, atol=1e-6, msg=str(layer))
        torch.testing.assert_close(got_g, grad, rtol=1e-3, atol=1e-6, msg=str(layer))


@pytest.mark.parametrize("name", HEAD_FAMILIES)
def test_chefer_rules_conserve_the_relevance_reaching_the_first_block(name):
    model = model_of(name)
    adapter = resolve_adapter(model)
    explainer = LRP(model)
    x = _inputs()
    captured = []
    handle = adapter.blocks[0].register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    try:
        trace = trace_relevance(adapter, CHEFER_RULES, x.clone().requires_grad_(True))
    finally:
        handle.remove()
    scores = target_scores(explainer.adapter, trace.output, [1, 3])
    (relevance,) = trace.relevance(scores, [captured[0]])
    torch.testing.assert_close(relevance.flatten(1).sum(1), torch.ones(2), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["timm", "torchvision"])
def test_cp_lrp_conserves_the_logit_down_to_the_pixels_without_biases(name):
    model = copy.deepcopy(model_of(name))
    with torch.no_grad():  # biases, position embedding and CLS token absorb relevance: zero them
        for parameter_name, parameter in model.named_parameters():
            if "bias" in parameter_name or "pos" in parameter_name or "cls" in parameter_name:
                parameter.zero_()
            if parameter_name == "class_token":
                parameter.zero_()
    x = _inputs()
    maps = AttnLRP(model, variant="cp-lrp", epsilon=1e-9).attribute(x, target=[1, 3])
    with torch.no_grad():
        logits = model(x)[torch.arange(2), torch.tensor([1, 3])]
    torch.testing.assert_close(maps.flatten(1).sum(1), logits, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    ("method", "name"),
    [(m, n) for m in METHODS for n in HEAD_FAMILIES if _applies(m, n)],  # refusals: see below
)
def test_every_method_on_every_family(method, name):
    model = model_of(name)
    explainer = method(model)
    x = _inputs()
    maps = explainer.attribute(x, target=[1, 3])
    grid = explainer.attribute(x, target=[1, 3], upsample=False)
    assert maps.shape == (2, 1, 32, 32) and grid.shape == (2, 1, 4, 4)
    if method is PartialLRP and name == "hf_clip_head":
        # Its head pools the patch tokens: the last layer's CLS row carries no relevance.
        assert (maps == 0).all()
        return
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
    if method in (LRP, AttnLRP):  # pixel relevance: each patch's sum, and signed
        torch.testing.assert_close(grid, maps.reshape(2, 1, 4, 8, 4, 8).sum((3, 5)))
        assert (maps < 0).any() and (maps > 0).any()
    else:
        assert (grid >= 0).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "name", ["hf_vit", "hf_deit_distilled", "timm", "torchvision", "hf_dinov2_registers_head"]
)
def test_per_sample_targets_equal_single_calls(method, name):
    explainer = method(model_of(name))
    x = _inputs()
    batched = explainer.attribute(x, target=[1, 3])
    singles = torch.cat([explainer.attribute(x[:1], target=1), explainer.attribute(x[1:], 3)])
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-6 * batched.abs().max().item())
    other = explainer.attribute(x, target=torch.tensor([1, 1]))
    assert not torch.allclose(batched[1], other[1])  # the second sample's target is used


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("name", "size"),
    [("hf_vit", (32, 48)), ("timm", (40, 32)), ("dino_custom", (48, 32)), ("hf_vit", (36, 36))],
)
def test_other_input_sizes(method, name, size):
    explainer = method(model_of(name))
    x = _inputs(size)
    maps = explainer.attribute(x, target=[0, 2])
    grid = explainer.attribute(x, target=[0, 2], upsample=False)
    assert maps.shape == (2, 1, *size)
    assert grid.shape == (2, 1, size[0] // PATCH, size[1] // PATCH)
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
    singles = torch.cat([explainer.attribute(x[:1], target=0), explainer.attribute(x[1:], 2)])
    torch.testing.assert_close(maps, singles, rtol=1e-4, atol=1e-6 * maps.abs().max().item())
    if method in (LRP, AttnLRP) and size == (36, 36):
        assert (maps[..., 32:, :] == 0).all() and (maps[..., :, 32:] == 0).all()  # cropped


def test_attnlrp_starts_from_each_samples_logit():
    model = model_of("timm")
    x = _inputs()
    with torch.no_grad():
        logits = model(x)[torch.arange(2), torch.tensor([1, 3])]
    cp = AttnLRP(model, variant="cp-lrp", epsilon=1e-9)
    adapter = resolve_adapter(model)
    leaf = x.clone().requires_grad_(True)
    trace = trace_relevance(adapter, attnlrp_rules(1e-9, conservative_attention=True), leaf)
    scores = target_scores(cp.adapter, trace.output, [1, 3])
    (unit,) = trace.relevance(scores, [leaf])
    torch.testing.assert_close(
        cp.attribute(x, target=[1, 3]), unit.sum(1, keepdim=True) * logits[:, None, None, None]
    )


# --- the model is left as found -----------------------------------------------------------------


def _blocks(model: nn.Module) -> nn.ModuleList:
    return resolve_adapter(model).blocks


@pytest.mark.parametrize("method", METHODS)
def test_forward_raising_midway_in_torchvision_leaves_no_trace(method):
    # The other families: test_gradient_methods.py, parametrised over these methods too.
    model = build_family("torchvision").model
    model.train()
    explainer = method(model)

    def boom(module, args, output):
        raise RuntimeError("boom in block 1")

    handle = _blocks(model)[1].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom in block 1"):
            explainer.attribute(_inputs(), target=[0, 1])
        assert _hook_count(model) == 1  # only the test's own hook
    finally:
        handle.remove()
    assert not torch._C._is_torch_function_mode_enabled()
    assert all(module.training for module in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert explainer.attribute(_inputs(), target=[0, 1]).shape == (2, 1, 32, 32)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", CLS_METHODS)
def test_models_without_cls_token_are_refused(method):
    with pytest.raises(UnsupportedModelError, match="no CLS token"):
        method(model_of("timm_no_class_token"))


def test_argument_errors():
    model = model_of("hf_vit")
    with pytest.raises(ValueError, match="start_layer=3 is out of range"):
        TransformerAttribution(model, start_layer=3)
    with pytest.raises(ValueError, match="variant must be 'attnlrp' or 'cp-lrp'"):
        AttnLRP(model, variant="lrp")
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        AttnLRP(model, epsilon=0.0)


@pytest.mark.parametrize("method", METHODS)
def test_half_precision_on_the_cpu_is_refused(method):
    with pytest.raises(ValueError, match=r"float16 on the CPU.*model.float\(\)"):
        method(model_of("timm")).attribute(_inputs().half(), target=0)


class _ExpBlock(nn.Module):
    """A block with an op no rule covers (an exponential gate on the tokens)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.inner = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * torch.exp(-x.abs())


@pytest.mark.parametrize("method", METHODS)
def test_an_op_without_a_rule_names_itself_and_its_module(method):
    model = build_family("dino_custom").model
    model.blocks[1] = _ExpBlock(model.blocks[1])
    model.train()
    with pytest.raises(
        UnsupportedOperationError, match=r"torch.Tensor.abs .*module 'blocks.1' \(_ExpBlock\)"
    ):
        method(model).attribute(_inputs(), target=0)
    assert _hook_count(model) == 0 and not torch._C._is_torch_function_mode_enabled()
    assert all(module.training for module in model.modules())


@pytest.mark.parametrize("method", METHODS)
def test_degenerate_images_give_finite_maps(method):
    model = model_of("timm")
    for image in (torch.zeros(1, 3, 32, 32), torch.full((1, 3, 32, 32), 0.5)):
        assert torch.isfinite(method(model).attribute(image, target=0)).all()


def test_clip_models_get_their_image_text_adapter_and_clip_classifiers_the_vision_one():
    import transformers as tf

    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                  num_attention_heads=4, intermediate_size=64)  # fmt: skip
    clip = tf.CLIPModel(tf.CLIPConfig(vision_config=vision, text_config=text))
    assert resolve_adapter(clip).has_text_tower
    assert isinstance(TransformerAttribution(model_of("hf_clip_head")), ViTAttribution)


@pytest.mark.parametrize("method", METHODS)
def test_eager_and_sdpa_loaded_models_give_the_same_maps(method):
    sdpa = model_of("hf_vit")
    eager = copy.deepcopy(sdpa)
    eager.set_attn_implementation("eager")  # softmax and matmuls written in the model itself
    x = _inputs()
    torch.testing.assert_close(
        method(eager).attribute(x, target=[1, 3]), method(sdpa).attribute(x, target=[1, 3])
    )


@pytest.mark.parametrize("method", METHODS)
def test_the_graph_is_freed_when_the_call_returns_without_the_garbage_collector(method):
    import gc

    from attnexplain.relevance.ops import OpCall

    explainer = method(model_of("timm"))
    explainer.attribute(_inputs(), target=[1, 3])
    gc.collect()
    gc.disable()  # no reference cycle may keep a forward's graph (and its activations) alive
    try:
        explainer.attribute(_inputs(), target=[1, 3])
        alive = sum(issubclass(type(o), OpCall) for o in gc.get_objects())
    finally:
        gc.enable()
    assert alive == 0


# --- pooling heads (nn.MultiheadAttention with a learned query) --------------------------------


def _write_out_pooling(mha: nn.MultiheadAttention) -> None:
    """Make a batch-first ``nn.MultiheadAttention`` pooling call run as ``F.linear`` and
    ``F.scaled_dot_product_attention`` (the relevance rules' SDPA path), same weights; the
    module stays in place, so the adapter finds the same structure."""
    if mha._qkv_same_embed_dim:
        weights = mha.in_proj_weight.chunk(3)
    else:
        weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)

    def forward(query, key, value, **_):
        q, k, v = (
            F.linear(t, w, b).unflatten(-1, (mha.num_heads, -1)).transpose(1, 2)
            for t, w, b in zip((query, key, value), weights, mha.in_proj_bias.chunk(3))
        )
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return mha.out_proj(mixed), None

    mha.forward = forward


POOLING_ATTENTION = {
    "hf_siglip_vision": "head.attention",
    "open_clip_attn_pool": "visual.attn_pool.attn",
}


@pytest.mark.parametrize("method", [LRP, AttnLRP])
@pytest.mark.parametrize("name", list(POOLING_ATTENTION))
def test_pooling_attention_gets_the_relevance_of_its_written_out_form(method, name):
    family = build_family(name)
    written = copy.deepcopy(family.model)
    _write_out_pooling(written.get_submodule(POOLING_ATTENTION[name]))
    x = _inputs()
    embeddings = []
    for model in (family.model, written):
        adapter = resolve_adapter(model)
        with torch.no_grad():
            embeddings.append(adapter.embedding(adapter.forward(x)))
    torch.testing.assert_close(embeddings[0], embeddings[1], rtol=1e-5, atol=1e-6)
    vectors = torch.randn(2, embeddings[0].shape[-1], generator=torch.Generator().manual_seed(0))
    expected = method(written).attribute(x, target=Embedding(vectors))
    got = method(family.model).attribute(x, target=Embedding(vectors))
    _assert_close_to(got, expected, tolerance=1e-4)


@pytest.mark.parametrize("method", [LRP, AttnLRP])
def test_siglip_classifier_relevance_ignores_its_unused_pooling_head(method):
    # SiglipForImageClassification averages the tokens; its vision tower's pooling head still
    # runs (on relevance-carrying tokens) but feeds nothing, so removing it changes no map.
    model = build_family("hf_siglip_classifier").model
    headless = copy.deepcopy(model)
    headless.vision_model.use_head = False
    del headless.vision_model.head
    x = _inputs()
    expected = method(headless).attribute(x, target=[1, 3])
    _assert_close_to(method(model).attribute(x, target=[1, 3]), expected, tolerance=1e-6)
    singles = torch.cat([method(model).attribute(x[:1], 1), method(model).attribute(x[1:], 3)])
    _assert_close_to(singles, expected, tolerance=1e-4)
