"""Targets beyond class indices, for every gradient method, against hand-computed wrappers.

The reference for a prompt (or embedding) target is the *same method* run on a wrapper model
whose output is the image–text logit (or cosine similarity) computed by hand from the model's
own towers (``tests/multimodal.py``), with a class-index target: if the target path read the
wrong embedding, tokenised differently, forgot the logit scale or bias, or mixed samples up, the
maps would differ. Methods that cannot run on such a wrapper (LeGrad reads the model's own
readout per layer, the relevance methods trace the wrapper's hand-written score under their
rules) are checked against a callable target computing the same score by hand from the output.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnexplain.capture import HFImageTextAdapter, UnsupportedModelError, resolve_adapter
from attnexplain.methods import (
    LRP,
    AttnLRP,
    GradCAM,
    GradientWeightedRollout,
    LeGrad,
    PartialLRP,
    TransformerAttribution,
)
from attnexplain.methods.targets import (
    ClassIndex,
    Embedding,
    Label,
    Prompt,
    ReferenceImage,
    Score,
    target_scores,
)
from tests.conftest import IMAGE_TEXT_FAMILIES, NO_CLS_FAMILIES, shared_family
from tests.methods.test_gradient_methods import _hook_count
from tests.multimodal import (
    ScoreWrapper,
    hand_image_embedding,
    hand_logits,
    hand_text_embedding,
    wrapper_adapter,
)

#: The methods that run on a hand-computed wrapper model (a custom module without readout).
GRADIENT_METHODS = [GradCAM, GradientWeightedRollout]
#: Every method that scores a target.
TARGET_METHODS = [*GRADIENT_METHODS, LeGrad, TransformerAttribution, LRP, PartialLRP, AttnLRP]
#: Methods that read the CLS row (the others read a pooling query's row, or none).
CLS_METHODS = (TransformerAttribution, PartialLRP)
PROMPTS = ["the red star", "a photo of a blue disc", "a small green cross"]


def _inputs(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _explainer(method, model_or_adapter, reference_adapter):
    """The method, with Grad-CAM on the same layer module for the model and its wrapper."""
    if method is GradCAM:
        return GradCAM(model_or_adapter, layer=GradCAM(reference_adapter).layer)
    return method(model_or_adapter)


def _adapter(family):
    """The family's adapter, told its tokenizer (Hugging Face models built from configs have no
    saved one; OpenCLIP's default BPE tokenizer is found by the adapter itself)."""
    if isinstance(resolve_adapter(family.model), HFImageTextAdapter):
        return HFImageTextAdapter(family.model, tokenizer=family.tokenizer)
    return resolve_adapter(family.model)


def _cases(families: list[str]) -> list[tuple[str, type]]:
    """(family, method) pairs the method supports (CLS methods refuse SigLIP: tested below)."""
    return [
        (name, method)
        for name in families
        for method in TARGET_METHODS
        if not (method in CLS_METHODS and name in NO_CLS_FAMILIES)
    ]


def _embedding_of(output) -> torch.Tensor:
    """The pooled image embedding in an image–text adapter's output (or its readout)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _close(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 noise relative to the map's scale (relevance maps are unscaled)."""
    scale = expected.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale)


# --- prompts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", IMAGE_TEXT_FAMILIES, indirect=True)
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_prompt_targets_equal_the_hand_computed_logit_wrapper(family, method):
    text = hand_text_embedding(family, PROMPTS)
    unit = F.normalize(text, dim=-1)
    # Per sample: one prompt for the first image, an ensemble of the other two for the second.
    columns = torch.stack([text[0], (unit[1] + unit[2]) / 2])
    wrapper = ScoreWrapper(family, lambda image: hand_logits(family, image, columns))
    reference = wrapper_adapter(wrapper)
    x = _inputs()
    expected = _explainer(method, reference, reference).attribute(x, target=[0, 1])

    tokenizer = family.tokenizer
    target = [Prompt(PROMPTS[0], tokenizer), Prompt(PROMPTS[1:], tokenizer)]
    got = _explainer(method, family.model, reference).attribute(x, target=target)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)
    assert expected.abs().sum() > 0

    # Plain strings are prompts for an image–text model; each sample reads its own.
    plain = _explainer(method, _adapter(family), reference).attribute(x, target=PROMPTS[:2])
    single = _explainer(method, _adapter(family), reference).attribute(x, target=PROMPTS[0])
    torch.testing.assert_close(plain[0], single[0], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(plain[1], single[1])


@pytest.mark.parametrize(("name", "method"), _cases(IMAGE_TEXT_FAMILIES))
def test_prompts_per_sample_equal_a_hand_computed_score_and_single_calls(name, method):
    family = shared_family(name)
    tokenizer = family.tokenizer
    text = hand_text_embedding(family, PROMPTS)
    unit = F.normalize(text, dim=-1)
    columns = torch.stack([text[0], (unit[1] + unit[2]) / 2])  # a prompt, then an ensemble

    def by_hand(output) -> torch.Tensor:  # sample b's logit against column b
        return hand_logits(family, _embedding_of(output), columns).diagonal()

    explainer = method(_adapter(family))
    x = _inputs()
    target = [Prompt(PROMPTS[0], tokenizer), Prompt(PROMPTS[1:], tokenizer)]
    got = explainer.attribute(x, target=target)
    _close(got, explainer.attribute(x, target=by_hand))
    singles = [explainer.attribute(x[i : i + 1], target=target[i]) for i in range(2)]
    _close(got, torch.cat(singles))
    same = explainer.attribute(x, target=[target[0], target[0]])
    assert not torch.allclose(got[1], same[1])  # the second sample's prompt is used


@pytest.mark.parametrize("name", ["hf_siglip_model"])
@pytest.mark.parametrize("method", CLS_METHODS)
def test_cls_relevance_methods_refuse_siglip_prompts_saying_why(name, method):
    with pytest.raises(UnsupportedModelError, match="but SiglipModel has no CLS token.*GradCAM"):
        method(shared_family(name).model)


@pytest.mark.parametrize("family", ["hf_siglip_model"], indirect=True)
def test_prompt_target_equals_the_model_own_logits_per_image(family):
    # The score read by the target is the model's own forward logit (SigLIP: with its bias).
    adapter = _adapter(family)
    x = _inputs()
    encoded = family.tokenizer(PROMPTS, padding="max_length", max_length=12, return_tensors="pt")
    with torch.no_grad():
        own = family.model(pixel_values=x, input_ids=encoded["input_ids"]).logits_per_image
        output = adapter.forward(x)
        for index, prompt in enumerate(PROMPTS):
            scores = target_scores(adapter, output, Prompt(prompt))
            torch.testing.assert_close(scores, own[:, index], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["hf_clip_model"], indirect=True)
def test_text_is_embedded_once_per_call_for_every_distinct_prompt(family, monkeypatch):
    adapter = _adapter(family)
    calls = []
    encode = adapter.encode_text
    monkeypatch.setattr(
        adapter, "encode_text", lambda texts, tokenizer=None: calls.append(list(texts)) or
        encode(texts, tokenizer)
    )  # fmt: skip
    target = [PROMPTS[0], PROMPTS[0], Prompt([PROMPTS[0], PROMPTS[1]])]
    GradCAM(adapter).attribute(_inputs(3), target=target)
    assert calls == [[PROMPTS[0], PROMPTS[1]]]


# --- embeddings, reference images, callables ---------------------------------------------------

EMBEDDING_FAMILIES = ["hf_clip_model", "hf_siglip_model", "open_clip_attn_pool", "hf_siglip_vision",
                      "hf_clip_projection", "hf_dinov2"]  # fmt: skip


@pytest.mark.parametrize("family", EMBEDDING_FAMILIES, indirect=True)
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_embedding_target_equals_the_cosine_wrapper(family, method):
    x = _inputs()
    with torch.no_grad():
        width = hand_image_embedding(family, x).shape[-1]
    vectors = torch.randn(2, width, generator=torch.Generator().manual_seed(0))  # one per sample
    wrapper = ScoreWrapper(
        family, lambda image: F.cosine_similarity(image, vectors, dim=-1, eps=0)[:, None]
    )
    reference = wrapper_adapter(wrapper)
    expected = _explainer(method, reference, reference).attribute(x, target=0)
    got = _explainer(method, family.model, reference).attribute(x, target=Embedding(vectors))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)
    assert expected.abs().sum() > 0


@pytest.mark.parametrize(
    ("name", "method"),
    [case for case in _cases(["hf_siglip_vision", "open_clip_attn_pool", "hf_dinov2"])
     if case[1] not in GRADIENT_METHODS],
)  # fmt: skip
def test_embedding_target_equals_a_hand_computed_cosine(name, method):
    family = shared_family(name)
    x = _inputs()
    with torch.no_grad():
        width = hand_image_embedding(family, x).shape[-1]
    vectors = torch.randn(2, width, generator=torch.Generator().manual_seed(0))  # one per sample
    explainer = method(family.model)
    got = explainer.attribute(x, target=Embedding(vectors))

    def by_hand(output) -> torch.Tensor:
        return F.cosine_similarity(_embedding_of(output), vectors, dim=-1, eps=0)

    _close(got, explainer.attribute(x, target=by_hand))
    singles = [explainer.attribute(x[i : i + 1], Embedding(vectors[i])) for i in range(2)]
    _close(got, torch.cat(singles))


@pytest.mark.parametrize("family", ["hf_dinov2", "open_clip"], indirect=True)
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_reference_image_is_the_embedding_of_that_image(family, method):
    x, reference_image = _inputs(), _inputs(1, seed=9)[0]
    with torch.no_grad():
        vector = hand_image_embedding(family, reference_image[None])[0]
    wrapper = ScoreWrapper(
        family, lambda image: F.cosine_similarity(image, vector[None], dim=-1, eps=0)[:, None]
    )
    reference = wrapper_adapter(wrapper)
    expected = _explainer(method, reference, reference).attribute(x, target=0)
    got = _explainer(method, family.model, reference).attribute(
        x, target=ReferenceImage(reference_image)
    )
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("family", ["hf_vit"], indirect=True)
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_callable_target_scores_the_output(family, method):
    model = family.model

    def margin(output):
        return output.logits[:, 1] - output.logits[:, 0]

    class Margin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            logits = self.model(pixel_values=x).logits
            return (logits[:, 1] - logits[:, 0])[:, None]

    wrapper = Margin()
    x = _inputs()
    layer = GradCAM(model).layer
    make = (lambda m: GradCAM(m, layer=layer)) if method is GradCAM else method
    expected = make(wrapper).attribute(x, target=0)
    torch.testing.assert_close(make(model).attribute(x, target=margin), expected)
    torch.testing.assert_close(make(model).attribute(x, target=Score(margin)), expected)


@pytest.mark.parametrize("family", ["hf_clip_model"], indirect=True)
def test_a_batch_mixes_every_kind_of_target_per_sample(family):
    adapter = _adapter(family)
    x = _inputs(3)
    with torch.no_grad():
        output = adapter.forward(x)
        image = hand_image_embedding(family, x)
        text = hand_text_embedding(family, PROMPTS[:1])
    vector = torch.randn(image.shape[-1], generator=torch.Generator().manual_seed(2))
    target = [PROMPTS[0], Embedding(vector), lambda out: out.pooler_output.sum(dim=-1)]
    with torch.no_grad():
        got = target_scores(adapter, output, target)
    expected = torch.stack([
        hand_logits(family, image[:1], text)[0, 0],
        F.cosine_similarity(image[1], vector, dim=0),
        image[2].sum(),
    ])  # fmt: skip
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# --- class indices and label names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "method"),
    [("timm_siglip", method) for method in TARGET_METHODS if method not in CLS_METHODS]
    + [("hf_siglip_classifier", method) for method in (GradCAM, LeGrad, LRP, AttnLRP)],
)
def test_per_sample_classes_on_siglip_classifiers_equal_single_calls(name, method):
    # The row-reading methods refuse the mean-pooled classifier: test_multimodal_methods.py.
    explainer = method(shared_family(name).model)
    x = _inputs()
    batched = explainer.attribute(x, target=torch.tensor([1, 3]))
    singles = torch.cat([explainer.attribute(x[:1], target=1), explainer.attribute(x[1:], 3)])
    _close(batched, singles)
    assert not torch.allclose(batched[1], explainer.attribute(x, target=[1, 1])[1])


def test_label_names_and_numpy_integers_are_class_indices():
    from attnexplain.zoo import default_samples, load_default

    model, preprocess = load_default()
    x = preprocess(torch.stack([sample.image for sample in default_samples(2)]))
    method = GradCAM(model)
    expected = method.attribute(x, target=[3, 1])
    for target in (["star", "square"], [Label("star"), 1], np.array([3, 1]), [np.int64(3), 1]):
        torch.testing.assert_close(method.attribute(x, target=target), expected)
    torch.testing.assert_close(method.attribute(x, target="star"), method.attribute(x, 3))
    assert method.validate_target(np.int64(2), 2, torch.zeros(2, 6)).tolist() == [2, 2]
    assert method.validate_target("cross", 2, torch.zeros(2, 6)).tolist() == [4, 4]


# --- the model is left as found ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "method"), _cases(["hf_clip_model", "hf_siglip_model", "open_clip_attn_pool"])
)
def test_both_towers_are_left_exactly_as_before(fresh_family, name, method):
    family = fresh_family(name)
    model = family.model
    text_tower = model.text_model if hasattr(model, "text_model") else model.transformer
    text_tower.requires_grad_(False)  # a frozen text tower
    requires_grad = {key: p.requires_grad for key, p in model.named_parameters()}
    state = copy.deepcopy(model.state_dict())
    model.train()
    x = _inputs()
    target = [Prompt(PROMPTS[0], family.tokenizer), Prompt(PROMPTS[1], family.tokenizer)]
    maps = method(model).attribute(x, target=target)
    model.eval()
    torch.testing.assert_close(method(model).attribute(x, target=target), maps)  # eval semantics
    model.train()

    blocks = resolve_adapter(model).blocks

    def boom(module, args, output):
        raise RuntimeError("boom in block 1")

    handle = blocks[1].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom in block 1"):
            method(model).attribute(x, target=target)
    finally:
        handle.remove()
    assert _hook_count(model) == 0
    assert all(module.training for module in model.modules())
    assert {key: p.requires_grad for key, p in model.named_parameters()} == requires_grad
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_prompt_for_a_model_without_text_tower_is_refused(fresh_family, method):
    model = fresh_family("hf_vit").model
    with pytest.raises(UnsupportedModelError, match="has no text tower.*CLIPModel"):
        method(model).attribute(_inputs(), target=Prompt("a dog"))
    with pytest.raises(ValueError, match=r"'a dog' is not a label of ViTForImageClassification"):
        method(model).attribute(_inputs(), target="a dog")
    with pytest.raises(ValueError, match="carries no label names: pass the class index"):
        method(fresh_family("dino_custom").model).attribute(_inputs(), target="a dog")
    assert _hook_count(model) == 0


@pytest.mark.parametrize("family", ["hf_clip_model", "open_clip"], indirect=True)
def test_bad_image_text_targets_are_refused(family):
    method = GradCAM(_adapter(family))
    x = _inputs()
    long = " ".join(["red"] * 20)
    with pytest.raises(ValueError, match=r"is 22 tokens, over .* text context of 12; shorten"):
        method.attribute(x, target=long)
    with pytest.raises(ValueError, match="Prompt needs at least one text"):
        Prompt([])
    with pytest.raises(ValueError, match="must not be empty"):
        Prompt(["a dog", "  "])
    with pytest.raises(TypeError, match="a prompt must be a str"):
        Prompt(["a dog", 3])
    with pytest.raises(ValueError, match="target has 3 entries for a batch of 2"):
        method.attribute(x, target=PROMPTS)
    with pytest.raises(TypeError, match="for a prompt ensemble use Prompt"):
        method.attribute(x, target=[["a dog", "a cat"], "a dog"])
    with pytest.raises(ValueError, match="target is an empty list"):
        method.attribute(x, target=[])
    with pytest.raises(UnsupportedModelError, match="has no class logits: explain it with a text"):
        method.attribute(x)
    with pytest.raises(ValueError, match=r"width 7 but .* pooled image embedding has width 24"):
        method.attribute(x, target=Embedding(torch.ones(7)))
    with pytest.raises(ValueError, match="3 rows for a batch of 2"):
        method.attribute(x, target=Embedding(torch.ones(3, 24)))
    with pytest.raises(TypeError, match="must be a float tensor"):
        Embedding(torch.ones(24, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        Embedding(torch.full((24,), float("nan")))
    with pytest.raises(ValueError, match="has 1 channels but the model's patch embedding"):
        method.attribute(x, target=ReferenceImage(torch.rand(1, 32, 32)))


@pytest.mark.parametrize("family", ["hf_vit"], indirect=True)
def test_bad_score_callables_and_class_targets_are_refused(family):
    method = GradientWeightedRollout(family.model)
    x = _inputs()
    with pytest.raises(ValueError, match=r"returned shape \(2, 5\); it must return one scalar"):
        method.attribute(x, target=lambda output: output.logits)
    with pytest.raises(ValueError, match=r"returned shape \(\)"):
        method.attribute(x, target=lambda output: output.logits.sum())
    with pytest.raises(TypeError, match="returned list; it must return a float tensor"):
        method.attribute(x, target=lambda output: [1.0, 2.0])
    with pytest.raises(TypeError, match="needs a callable"):
        Score(3)
    with pytest.raises(TypeError, match="integer class indices.*Embedding"):
        method.attribute(x, target=np.array([0.5, 1.0]))
    with pytest.raises(TypeError, match="a class index must be an int"):
        ClassIndex(1.0)
    with pytest.raises(ValueError, match=r"target \[5, 7\] out of range .* 5 classes"):
        method.attribute(x, target=[5, 7])


@pytest.mark.parametrize("family", ["hf_clip_model"], indirect=True)
def test_a_hugging_face_model_without_saved_tokenizer_asks_for_one(family):
    with pytest.raises(ValueError, match=r"cannot find its tokenizer: pass it, e.g. Prompt\("):
        GradCAM(family.model).attribute(_inputs(), target="the red star")
