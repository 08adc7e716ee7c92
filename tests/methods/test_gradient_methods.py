"""Grad-CAM and gradient-weighted rollout against references written out with plain hooks.

The references read activations / attention probabilities the independent way (a forward hook on
the named layer; HF eager ``output_attentions=True``, timm's non-fused path through ``attn_drop``,
the DINO module's returned attention) and differentiate the target logit themselves; the methods
run on the default-loaded models (SDPA / fused attention).
"""

from __future__ import annotations

import copy

import pytest
import torch

from attnexplain.capture import UnsupportedModelError
from attnexplain.methods.attnlrp import AttnLRP
from attnexplain.methods.gradcam import GradCAM
from attnexplain.methods.gradient_rollout import GradientWeightedRollout
from attnexplain.methods.legrad import LeGrad
from attnexplain.methods.lrp import LRP, PartialLRP
from attnexplain.methods.transformer_attribution import TransformerAttribution
from tests.conftest import CLASSES, PATCH

#: The pre-attention LayerNorm of the last block, named by hand per family.
GRADCAM_LAYERS = {
    "hf_vit": "vit.layers.2.layernorm_before",
    "hf_deit_distilled": "deit.layers.2.layernorm_before",
    "timm": "blocks.2.norm1",
    "timm_registers": "blocks.2.norm1",
    "timm_no_class_token": "blocks.2.norm1",
    "torchvision": "encoder.layers.encoder_layer_2.ln_1",
    "dino_custom": "blocks.2.norm1",
}
METHODS = [GradCAM, GradientWeightedRollout, TransformerAttribution, LRP, PartialLRP, AttnLRP]


def _inputs(size: tuple[int, int] = (32, 32), batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def _logits(model: torch.nn.Module, x: torch.Tensor, **hf_kwargs) -> torch.Tensor:
    if not hasattr(model, "config"):
        return model(x)
    if tuple(x.shape[-2:]) != (32, 32):
        hf_kwargs["interpolate_pos_encoding"] = True
    return model(pixel_values=x, **hf_kwargs).logits


def _target_score(logits: torch.Tensor, target: list[int]) -> torch.Tensor:
    return logits[torch.arange(len(target)), torch.tensor(target)].sum()


def reference_gradcam(model, layer_name, x, target, prefix, grid) -> torch.Tensor:
    """Selvaraju et al. per sample, from a plain forward hook and ``torch.autograd.grad``."""
    captured = []
    handle = model.get_submodule(layer_name).register_forward_hook(
        lambda module, args, output: captured.append(output)
    )
    try:
        logits = _logits(model, x)
    finally:
        handle.remove()
    (activations,) = captured
    (grads,) = torch.autograd.grad(_target_score(logits, target), activations)
    maps = []
    for b in range(x.shape[0]):
        tokens = activations[b, prefix:].detach().double()  # (patches, D)
        weights = grads[b, prefix:].double().mean(dim=0)  # (D,): mean gradient over patches
        maps.append(torch.relu(tokens @ weights).reshape(grid))
    return torch.stack(maps).unsqueeze(1)


def reference_attention_and_grads(family, x, target):
    """Attention probabilities read the independent way, with their gradients from backward()."""
    model = copy.deepcopy(family.model)  # backward() writes .grad; keep the shared model clean
    if family.name.startswith("hf_"):
        model.set_attn_implementation("eager")
        output = model(pixel_values=x, output_attentions=True)
        attentions, logits = list(output.attentions), output.logits
    elif family.name == "torchvision":
        attentions, logits = torchvision_explicit_forward(model, x)
    else:
        if family.name.startswith("timm"):
            for block in model.blocks:
                block.attn.fused_attn = False
            modules, read = [block.attn.attn_drop for block in model.blocks], lambda out: out
        else:  # dino_custom returns (x, attn) from each attention module
            modules, read = [block.attn for block in model.blocks], lambda out: out[1]
        attentions = []
        handles = [
            m.register_forward_hook(lambda mod, args, out: attentions.append(read(out)))
            for m in modules
        ]
        try:
            logits = model(x)
        finally:
            for handle in handles:
                handle.remove()
    for attention in attentions:
        attention.retain_grad()
    _target_score(logits, target).backward()
    return [a.detach() for a in attentions], [a.grad for a in attentions]


def torchvision_explicit_forward(model, x):
    """torchvision's ViT written out with explicit softmax attention (its MHA returns weights
    that are a view created after use, outside the graph)."""
    tokens = model._process_input(x)
    tokens = torch.cat([model.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)
    hidden = tokens + model.encoder.pos_embedding
    attentions = []
    for block in model.encoder.layers:
        mha = block.self_attention
        y = block.ln_1(hidden)
        batch, num_tokens, dim = y.shape
        heads = mha.num_heads
        q, k, v = (
            t.reshape(batch, num_tokens, heads, dim // heads).transpose(1, 2)
            for t in torch.nn.functional.linear(y, mha.in_proj_weight, mha.in_proj_bias).chunk(
                3, -1
            )
        )
        attention = (q @ k.transpose(-2, -1) / (dim // heads) ** 0.5).softmax(-1)
        attentions.append(attention)
        out = (attention @ v).transpose(1, 2).reshape(batch, num_tokens, dim)
        hidden = hidden + mha.out_proj(out)
        hidden = hidden + block.mlp(block.ln_2(hidden))
    logits = model.heads(model.encoder.ln(hidden)[:, 0])
    return attentions, logits


def reference_gradient_rollout(attentions, grads, start_layer, prefix, grid) -> torch.Tensor:
    """Chefer et al.'s ``generate_relevance`` per sample: R = I; R += mean_h((∇A ⊙ A)^+) @ R."""
    maps = []
    num_tokens = attentions[0].shape[-1]
    for b in range(attentions[0].shape[0]):
        relevance = torch.eye(num_tokens, dtype=torch.float64)
        for attention, grad in zip(attentions[start_layer:], grads[start_layer:]):
            cam = (grad[b].double() * attention[b].double()).clamp(min=0).mean(dim=0)
            relevance = relevance + cam @ relevance
        maps.append(relevance[0, prefix:].reshape(grid))
    return torch.stack(maps).unsqueeze(1)


def _hook_count(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )  # fmt: skip


# --- parity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(GRADCAM_LAYERS), indirect=True)
def test_gradcam_matches_reference_for_every_target(family):
    method = GradCAM(family.model)
    layer_name = GRADCAM_LAYERS[family.name]
    assert method.layer is family.model.get_submodule(layer_name)
    assert method.layer_name == layer_name
    x = _inputs()
    positive = 0
    for target in range(CLASSES):
        targets = [target, target]
        expected = reference_gradcam(
            family.model, layer_name, x, targets, family.num_prefix_tokens, (4, 4)
        )
        got = method.attribute(x, target=targets, upsample=False)
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-9)
        positive += int((expected > 0).sum())
    assert positive > 0  # the default layer's patch gradients are not all zero


@pytest.mark.parametrize("family", ["hf_vit", "dino_custom"], indirect=True)
def test_gradcam_matches_reference_on_a_non_square_input(family):
    x = _inputs((32, 48))
    for targets in ([0, 3], [1, 2]):
        expected = reference_gradcam(
            family.model, GRADCAM_LAYERS[family.name], x, targets, 1, (4, 6)
        )
        got = GradCAM(family.model).attribute(x, target=targets, upsample=False)
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-9)
    assert GradCAM(family.model).attribute(x, target=0).shape == (2, 1, 32, 48)


def test_gradcam_on_a_dinov2_classifier_pooling_patch_tokens():
    import transformers as tf

    torch.manual_seed(0)
    config = tf.Dinov2Config(
        image_size=32, patch_size=PATCH, hidden_size=32, num_hidden_layers=3,
        num_attention_heads=4, intermediate_size=64, num_labels=CLASSES,
    )  # fmt: skip
    model = tf.Dinov2ForImageClassification(config).eval()
    method = GradCAM(model)
    assert method.layer_name == "dinov2.encoder.layer.2.norm1"
    x = _inputs()
    for targets in ([0, 1], [2, 3]):
        expected = reference_gradcam(model, method.layer_name, x, targets, 1, (4, 4))
        got = method.attribute(x, target=targets, upsample=False)
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-9)
        assert (expected > 0).any()


@pytest.mark.parametrize("family", ["timm"], indirect=True)
def test_gradcam_runs_timm_at_another_input_size(family):
    # timm needs the adapter's temporary dynamic_img_size switch, which the capture applies.
    maps = GradCAM(family.model).attribute(_inputs((32, 48)), target=[0, 3], upsample=False)
    assert maps.shape == (2, 1, 4, 6) and torch.isfinite(maps).all() and maps.sum() > 0
    assert not family.model.dynamic_img_size


@pytest.mark.parametrize(
    "family", ["hf_vit", "hf_deit_distilled", "timm", "timm_registers", "dino_custom"],
    indirect=True,
)  # fmt: skip
@pytest.mark.parametrize("start_layer", [0, 1])
def test_gradient_rollout_matches_reference(family, start_layer):
    x = _inputs()
    targets = [1, 3]
    attentions, grads = reference_attention_and_grads(family, x, targets)
    expected = reference_gradient_rollout(
        attentions, grads, start_layer, family.num_prefix_tokens, (4, 4)
    )
    method = GradientWeightedRollout(family.model, start_layer=start_layer)
    got = method.attribute(x, target=targets, upsample=False)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-8)
    assert method.attribute(x, target=targets).shape == (2, 1, 32, 32)


# --- targets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "name"),
    [(GradCAM, "dino_custom"), (GradCAM, "torchvision"), (GradientWeightedRollout, "hf_vit"),
     (GradientWeightedRollout, "timm")],
)  # fmt: skip
def test_per_sample_targets_equal_single_calls(fresh_family, method, name):
    explainer = method(fresh_family(name).model)
    x = _inputs()
    batched = explainer.attribute(x, target=[1, 3])
    singles = torch.cat([explainer.attribute(x[:1], target=1), explainer.attribute(x[1:], 3)])
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-8)
    same_target = explainer.attribute(x, target=torch.tensor([1, 1]))
    assert not torch.allclose(batched[1], same_target[1])  # the second sample's target is used
    assert batched.abs().sum() > 0


@pytest.mark.parametrize("family", ["dino_custom"], indirect=True)
@pytest.mark.parametrize("method", METHODS)
def test_none_target_is_the_predicted_class(family, method):
    x = _inputs()
    with torch.no_grad():
        predicted = _logits(family.model, x).argmax(dim=-1)
    explainer = method(family.model)
    by_default = explainer.attribute(x)
    torch.testing.assert_close(by_default, explainer.attribute(x, target=predicted), rtol=0, atol=0)
    assert by_default.abs().sum() > 0  # relevance maps are signed


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        (1.5, TypeError, "target must be"),
        (torch.tensor([0.0, 1.0]), TypeError, "integer class indices"),
        (True, TypeError, "target must be"),
        ([1, 2, 3], ValueError, "3 entries for a batch of 2"),
        (CLASSES, ValueError, "out of range"),
        ([0, -1], ValueError, "out of range"),
    ],
)
@pytest.mark.parametrize("family", ["hf_vit"], indirect=True)
def test_bad_targets_are_refused(family, method, target, error, match):
    hf_vit = family.model
    explainer = method(hf_vit)
    with pytest.raises(error, match=match):
        explainer.attribute(_inputs(), target=target)
    assert _hook_count(hf_vit) == 0
    assert all(p.grad is None for p in hf_vit.parameters())


def _timm_backbone() -> torch.nn.Module:
    import timm.models.vision_transformer as tvt

    return tvt.VisionTransformer(
        img_size=32, patch_size=PATCH, embed_dim=32, depth=2, num_heads=4, num_classes=0
    ).eval()


@pytest.mark.parametrize("method", [*METHODS, LeGrad])
@pytest.mark.parametrize("backbone", ["hf_vit_backbone", "hf_dinov2", "timm_num_classes_0"])
@pytest.mark.parametrize("target", [None, 0])
def test_backbone_without_head_is_refused(fresh_family, method, backbone, target):
    if backbone == "timm_num_classes_0":
        pytest.importorskip("timm")
        model, match = _timm_backbone(), "num_classes=0"
    else:
        model, match = fresh_family(backbone).model, "no classification head"
    model.train()
    with pytest.raises(UnsupportedModelError, match=match):
        method(model).attribute(_inputs(), target=target)
    assert _hook_count(model) == 0
    assert all(module.training for module in model.modules())
    assert all(p.grad is None for p in model.parameters())


# --- the model is left as found ---------------------------------------------------------------


def _timm_with_dropout() -> torch.nn.Module:
    import timm.models.vision_transformer as tvt

    torch.manual_seed(0)
    return tvt.VisionTransformer(
        img_size=32, patch_size=PATCH, embed_dim=32, depth=3, num_heads=4, num_classes=CLASSES,
        drop_rate=0.5, proj_drop_rate=0.5, attn_drop_rate=0.5,
    )  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_model_state_is_restored_and_maps_use_eval_semantics(method):
    pytest.importorskip("timm")
    model = _timm_with_dropout()
    model.patch_embed.requires_grad_(False)  # a partly frozen model
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    fused = [block.attn.fused_attn for block in model.blocks]
    state = copy.deepcopy(model.state_dict())
    model.train()
    x = _inputs()
    in_train_mode = method(model).attribute(x, target=[1, 3])
    assert all(module.training for module in model.modules())
    torch.testing.assert_close(method(model).attribute(x, target=[1, 3]), in_train_mode)
    model.eval()
    torch.testing.assert_close(method(model).attribute(x, target=[1, 3]), in_train_mode)
    assert not any(module.training for module in model.modules())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert [block.attn.fused_attn for block in model.blocks] == fused
    assert _hook_count(model) == 0
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["hf_vit", "timm", "dino_custom"])
def test_forward_raising_midway_leaves_no_trace(fresh_family, method, name):
    model = fresh_family(name).model
    model.train()
    blocks = model.vit.layers if name == "hf_vit" else model.blocks
    check_no_trace_after_a_raising_forward(method(model), model, blocks)


def check_no_trace_after_a_raising_forward(explainer, model, blocks) -> None:
    """A forward that raises in block 1 leaves no hook, mode or gradient behind (train mode in)."""

    def boom(module, args, output):
        raise RuntimeError("boom in block 1")

    handle = blocks[1].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom in block 1"):
            explainer.attribute(_inputs(), target=[0, 1])
        assert _hook_count(model) == 1  # only the test's own hook
    finally:
        handle.remove()
    assert _hook_count(model) == 0
    assert all(module.training for module in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert explainer.attribute(_inputs(), target=[0, 1]).shape == (2, 1, 32, 32)


@pytest.mark.parametrize("method", METHODS)
def test_frozen_model_under_no_grad_gives_the_same_maps(fresh_family, method):
    model = fresh_family("dino_custom").model
    x = _inputs()
    expected = method(model).attribute(x, target=[1, 3])
    model.requires_grad_(False)
    with torch.no_grad():
        got = method(model).attribute(x, target=[1, 3])
    torch.testing.assert_close(got, expected)
    assert not any(p.requires_grad for p in model.parameters())


# --- Grad-CAM layer choice and method-specific errors -----------------------------------------


def test_gradcam_layer_by_name_or_module(fresh_family):
    model = fresh_family("timm").model
    x = _inputs()
    by_default = GradCAM(model).attribute(x, target=0)
    torch.testing.assert_close(GradCAM(model, layer="blocks.2.norm1").attribute(x, 0), by_default)
    torch.testing.assert_close(
        GradCAM(model, layer=model.blocks[2].norm1).attribute(x, 0), by_default
    )
    earlier = GradCAM(model, layer="blocks.1.norm1")
    assert earlier.layer_name == "blocks.1.norm1"
    torch.testing.assert_close(
        earlier.attribute(x, 0, upsample=False).double(),
        reference_gradcam(model, "blocks.1.norm1", x, [0, 0], 1, (4, 4)),
        rtol=1e-4,
        atol=1e-9,
    )


def test_gradcam_bad_layers_are_refused(fresh_family):
    model = fresh_family("timm").model
    with pytest.raises(ValueError, match=r"did you mean .*blocks.2.norm1.*named_modules"):
        GradCAM(model, layer="blocks.2.norm")
    with pytest.raises(ValueError, match="is not a submodule of VisionTransformer"):
        GradCAM(model, layer=torch.nn.LayerNorm(32))
    with pytest.raises(TypeError, match="layer must be a module name"):
        GradCAM(model, layer=2)
    with pytest.raises(ValueError, match=r"outputs \(2, 5\); Grad-CAM needs token activations"):
        GradCAM(model, layer="head").attribute(_inputs(), target=0)
    assert _hook_count(model) == 0


def test_gradient_rollout_argument_errors(fresh_family):
    with pytest.raises(UnsupportedModelError, match="no CLS token"):
        GradientWeightedRollout(fresh_family("timm_no_class_token").model)
    model = fresh_family("hf_vit").model
    with pytest.raises(ValueError, match="start_layer=3 is out of range"):
        GradientWeightedRollout(model, start_layer=3)
    with pytest.raises(TypeError, match="start_layer must be an int"):
        GradientWeightedRollout(model, start_layer=1.0)


def test_gradient_rollout_on_torchvision_matches_explicit_forward(fresh_family):
    family = fresh_family("torchvision")
    x = _inputs()
    with torch.no_grad():
        _, logits = torchvision_explicit_forward(family.model, x)
        torch.testing.assert_close(logits, family.model(x), rtol=1e-4, atol=1e-5)
    attentions, grads = reference_attention_and_grads(family, x, [1, 3])
    expected = reference_gradient_rollout(attentions, grads, 0, 1, (4, 4))
    got = GradientWeightedRollout(family.model).attribute(x, target=[1, 3], upsample=False)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-8)
    assert _hook_count(family.model) == 0
    assert all(p.grad is None for p in family.model.parameters())
