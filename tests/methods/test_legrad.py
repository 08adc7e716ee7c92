"""LeGrad against torchcam 0.5's LeGrad and against a reference written from the paper.

The paper's reference (:func:`reference_legrad`) reads every layer's attention probabilities and
output tokens the independent way (HF eager ``output_attentions`` / ``output_hidden_states``,
timm's non-fused path through ``attn_drop``, the DINO module's returned attention, torchvision
written out with explicit softmax attention), scores each layer's tokens with the family's tail
written by hand (``tests.capture.test_readout._tail``) and differentiates with
``torch.autograd.grad``; the method runs on the default-loaded models (SDPA / fused attention).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from attnexplain import CustomAdapter, LeGrad
from attnexplain.capture import UnsupportedModelError
from tests.capture.test_readout import _dino_readout, _tail
from tests.conftest import DEPTH, PATCH, family_cases, shared_family
from tests.methods.test_gradient_methods import (
    _hook_count,
    _inputs,
    _timm_with_dropout,
    check_no_trace_after_a_raising_forward,
    torchvision_explicit_forward,
)

WITH_HEAD = ["hf_vit", "hf_deit_distilled", "timm", "timm_registers", "timm_no_class_token",
             "torchvision", "dino_custom"]  # fmt: skip


def _explainer(name: str, model: torch.nn.Module, **options) -> LeGrad:
    if name == "dino_custom":
        return LeGrad(CustomAdapter(model, readout=_dino_readout(model)), **options)
    return LeGrad(model, **options)


def reference_attentions_and_tokens(name, model, x):
    """Every layer's attention ``(B, H, N, N)`` and output tokens ``(B, N, D)``, in the graph."""
    if name.startswith("hf_"):
        model.set_attn_implementation("eager")
        kwargs = {"interpolate_pos_encoding": True} if x.shape[-1] != 32 else {}
        output = model(pixel_values=x, output_attentions=True, output_hidden_states=True, **kwargs)
        return list(output.attentions), list(output.hidden_states[1:])
    attentions, tokens, handles = [], [], []
    if name == "torchvision":
        # Its explicit forward calls each block's parts; a block's output is the input of its
        # ln_2 (after attention) plus its MLP's output.
        middles = []
        for block in model.encoder.layers:
            handles.append(block.ln_2.register_forward_hook(lambda m, a, o: middles.append(a[0])))
            handles.append(block.mlp.register_forward_hook(
                lambda m, a, o: tokens.append(middles[len(tokens)] + o)))  # fmt: skip
        try:
            attentions, _ = torchvision_explicit_forward(model, x)
        finally:
            for handle in handles:
                handle.remove()
        return attentions, tokens
    if name.startswith("timm"):
        for block in model.blocks:
            block.attn.fused_attn = False
        modules, read = [block.attn.attn_drop for block in model.blocks], lambda out: out
        if x.shape[-1] != 32:
            model.dynamic_img_size = True
            model.patch_embed.strict_img_size, model.patch_embed.flatten = False, False
            model.patch_embed.output_fmt = "NHWC"
    else:  # dino_custom returns (x, attn) from each attention module
        modules, read = [block.attn for block in model.blocks], lambda out: out[1]
    handles = [m.register_forward_hook(lambda mod, a, out: attentions.append(read(out)))
               for m in modules]  # fmt: skip
    handles += [b.register_forward_hook(lambda mod, a, out: tokens.append(out))
                for b in model.blocks]  # fmt: skip
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return attentions, tokens


def reference_legrad(family, x, target, start_layer=0):
    """The paper's Sec. 3: per layer, ReLU(d s^l / d A^l) averaged over heads and queries, the
    layers averaged, CLS (prefix) keys dropped."""
    model = copy.deepcopy(family.model)
    attentions, tokens = reference_attentions_and_tokens(family.name, model, x)
    assert len(attentions) == len(tokens) == DEPTH
    index = torch.arange(len(target))
    total = 0.0
    for layer in range(start_layer, DEPTH):
        score = _tail(family.name, model, tokens[layer])["logits"][index, target].sum()
        (grad,) = torch.autograd.grad(score, attentions[layer], retain_graph=True)
        total = total + grad.double().clamp(min=0).mean(dim=1).mean(dim=1)  # (B, N)
    relevance = total / (DEPTH - start_layer)
    grid = (x.shape[-2] // PATCH, x.shape[-1] // PATCH)
    return relevance[:, family.num_prefix_tokens :].reshape(len(target), 1, *grid)


# --- parity -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size"),
    [case for case in family_cases([(32, 32), (32, 48)]) if case[0] in WITH_HEAD],
)
def test_legrad_matches_the_paper_reference(name, size):
    family = shared_family(name)
    x = _inputs(size)
    for targets, start_layer in (([1, 3], 0), ([4, 0], 1)):
        expected = reference_legrad(family, x, torch.tensor(targets), start_layer)
        got = _explainer(name, family.model, start_layer=start_layer).attribute(
            x, target=targets, upsample=False
        )
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-9)
        assert (expected > 0).any()
    assert _explainer(name, family.model).attribute(x, target=0).shape == (2, 1, *size)


def test_legrad_on_a_dinov2_classifier_pooling_patch_tokens():
    import transformers as tf

    torch.manual_seed(0)
    config = tf.Dinov2Config(
        image_size=32, patch_size=PATCH, hidden_size=32, num_hidden_layers=DEPTH,
        num_attention_heads=4, intermediate_size=64, num_labels=5,
    )  # fmt: skip
    family = SimpleNamespace(
        name="hf_dinov2_classifier",
        model=tf.Dinov2ForImageClassification(config).eval(),
        num_prefix_tokens=1,
    )
    x = _inputs()
    expected = reference_legrad(family, x, torch.tensor([1, 3]))
    got = LeGrad(family.model).attribute(x, target=[1, 3], upsample=False)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-9)
    assert (expected[:, :, 1:] > 0).any()


def _torchcam_legrad(model, x, targets, projection=None, normalized=False):
    torchcam_methods = pytest.importorskip("torchcam.methods", reason="torchcam extra missing")
    options = {} if projection is None else {"score_projection": projection}
    with torchcam_methods.LeGrad(model, list(model.encoder.layers), **options) as extractor:
        scores = model(x)
        (cam,) = extractor(class_idx=targets, scores=scores, normalized=normalized)
    return cam.unsqueeze(1)


def test_legrad_matches_torchcam_with_the_models_own_readout(fresh_family):
    model = fresh_family("torchvision").model
    x = _inputs()
    own = lambda tokens: model.heads(model.encoder.ln(tokens)[:, 0])  # noqa: E731
    for targets in ([1, 3], [0, 0]):
        expected = _torchcam_legrad(model, x, targets, projection=own)
        got = LeGrad(model).attribute(x, target=targets, upsample=False)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-9)
        # torchcam's normalized=True is the paper's final min-max step, per image.
        flat = got.flatten(1)
        scaled = (flat - flat.amin(1, keepdim=True)) / flat.amax(1, keepdim=True).sub(
            flat.amin(1, keepdim=True)
        )
        normalised = _torchcam_legrad(model, x, targets, projection=own, normalized=True)
        torch.testing.assert_close(scaled.view_as(got), normalised, rtol=1e-4, atol=1e-6)
    assert _hook_count(model) == 0


def test_legrad_matches_torchcams_default_mean_pooled_readout(fresh_family):
    # torchcam (like the OpenCLIP reference code) reads every layer through the mean of all its
    # tokens; the same readout passed to a CustomAdapter gives the same maps.
    model = fresh_family("torchvision").model
    x = _inputs()
    mean_pooled = lambda tokens: model.heads(model.encoder.ln(tokens.mean(dim=1)))  # noqa: E731
    expected = _torchcam_legrad(model, x, [2, 4])
    got = LeGrad(CustomAdapter(model, readout=mean_pooled)).attribute(x, [2, 4], upsample=False)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-9)
    assert not torch.allclose(got, LeGrad(model).attribute(x, [2, 4], upsample=False))


# --- targets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hf_deit_distilled", "timm", "torchvision"])
def test_per_sample_targets_equal_single_calls(name):
    explainer = _explainer(name, shared_family(name).model)
    x = _inputs()
    batched = explainer.attribute(x, target=[1, 3])
    singles = torch.cat([explainer.attribute(x[:1], target=1), explainer.attribute(x[1:], 3)])
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-9)
    assert not torch.allclose(batched[1], explainer.attribute(x, target=[1, 1])[1])


def test_none_target_is_the_models_prediction_for_every_layer():
    family = shared_family("hf_vit")
    x = _inputs()
    with torch.no_grad():
        predicted = family.model(pixel_values=x).logits.argmax(dim=-1)
    explainer = LeGrad(family.model)
    by_default = explainer.attribute(x, upsample=False)
    torch.testing.assert_close(by_default, explainer.attribute(x, predicted, upsample=False))
    torch.testing.assert_close(by_default.double(), reference_legrad(family, x, predicted))


# --- errors and the model left as found -------------------------------------------------------


# Headless backbones: test_gradient_methods.test_backbone_without_head_is_refused.


def test_custom_model_without_readout_is_refused(fresh_family):
    model = fresh_family("dino_custom").model
    with pytest.raises(UnsupportedModelError, match=r"CustomAdapter\(model, readout=fn\)"):
        LeGrad(model).attribute(_inputs(), target=0)
    assert _hook_count(model) == 0
    with pytest.raises(ValueError, match="start_layer=3 is out of range"):
        LeGrad(model, start_layer=3)


def test_model_state_is_restored_and_maps_use_eval_semantics():
    pytest.importorskip("timm")
    model = _timm_with_dropout()
    model.patch_embed.requires_grad_(False)
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    state = copy.deepcopy(model.state_dict())
    model.train()
    x = _inputs()
    in_train_mode = LeGrad(model).attribute(x, target=[1, 3])
    assert all(module.training for module in model.modules())
    model.eval()
    torch.testing.assert_close(LeGrad(model).attribute(x, target=[1, 3]), in_train_mode)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(block.attn.fused_attn for block in model.blocks)
    assert _hook_count(model) == 0
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["hf_vit", "timm", "torchvision"])
def test_forward_raising_midway_leaves_no_trace(fresh_family, name):
    model = fresh_family(name).model
    model.train()
    explainer = LeGrad(model)
    check_no_trace_after_a_raising_forward(explainer, model, explainer.adapter.blocks)
    assert all("forward" not in vars(block) for block in explainer.adapter.blocks)


def test_frozen_model_under_no_grad_gives_the_same_maps(fresh_family):
    model = fresh_family("hf_vit").model
    x = _inputs()
    expected = LeGrad(model).attribute(x, target=[1, 3])
    model.requires_grad_(False)
    with torch.no_grad():
        got = LeGrad(model).attribute(x, target=[1, 3])
    torch.testing.assert_close(got, expected)
    assert not any(p.requires_grad for p in model.parameters())
