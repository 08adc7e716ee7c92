"""The embedded image–text model: its training pieces, a tiny run, and the shipped weights."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, SiglipModel

from attnexplain.data.scenes import SyntheticScenes, generate_scene
from attnexplain.data.synthetic import CLASS_NAMES
from attnexplain.methods.targets import Prompt, target_scores
from attnexplain.zoo import CLIP_DIR, load_default
from attnexplain.zoo.text import word_tokenizer
from attnexplain.zoo.train_clip import (
    COLOUR_NAMES,
    QUERIES,
    WORDS,
    build_model,
    generate_scene_split,
    loss,
    main,
    query_labels,
    query_texts,
    retrieval_scores,
    vision_from_default,
)
from benchmarks.prompt_localisation import evaluate, scene_queries


@pytest.fixture(scope="module")
def clip():
    return load_default("clip")


# --- training pieces -----------------------------------------------------------------------


def test_queries_cover_every_phrase_class_and_colour_once():
    phrases = [query.phrase for query in QUERIES]
    assert len(phrases) == len(set(phrases)) == 6 * 10 + 6 + 10
    assert phrases[CLASS_NAMES.index("star") * 10 + COLOUR_NAMES.index("red")] == "red star"
    assert query_texts("the {p}")[60:62] == ["the disc", "the square"]
    assert "an orange disc" in query_texts("{a} {p}")
    tokenizer = word_tokenizer(WORDS)
    for template in ("{a} {p}", "the {p}", "a photo of {a} {p}"):  # every word is known
        ids = tokenizer(query_texts(template))["input_ids"]
        assert all(tokenizer.unk_token_id not in row and len(row) <= 12 for row in ids)


def test_query_labels_say_which_queries_are_true_of_a_scene():
    scene = generate_scene(2 * 10**9 + 1)  # a pink triangle, a red square and a yellow cross
    objects = [(o.label, COLOUR_NAMES.index(o.colour_name)) for o in scene.objects]
    labels = query_labels(objects)
    true = {QUERIES[i].phrase for i in labels.nonzero()[:, 0].tolist()}
    assert true == {"pink triangle", "red square", "yellow cross", "triangle", "square", "cross",
                    "pink object", "red object", "yellow object"}  # fmt: skip
    images, cached = generate_scene_split("test", 2, 96, workers=1)
    assert cached[1] == objects and images.dtype == torch.uint8
    torch.testing.assert_close(images[1].float() / 255, scene.image, rtol=0, atol=1e-7)


def test_loss_is_the_sigmoid_loss_plus_one_softmax_per_kind_of_query():
    logits = torch.randn(3, len(QUERIES), generator=torch.Generator().manual_seed(0))
    labels = torch.stack([query_labels([(0, 1)]), query_labels([(2, 3), (4, 5)]),
                          query_labels([(1, 0), (3, 9), (5, 2)])]).float()  # fmt: skip
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    for start, stop in ((0, 60), (60, 66), (66, 76)):
        log_p = logits[:, start:stop].log_softmax(dim=1)
        truth = labels[:, start:stop]
        expected = expected - ((truth / truth.sum(1, keepdim=True)) * log_p).sum(1).mean()
    torch.testing.assert_close(loss(logits, labels), expected)


def test_the_vision_tower_computes_the_default_vit_layer_by_layer():
    vision, preprocess = load_default()
    model = build_model(vision, text_width=32, text_layers=1)
    vision_from_default(model, vision)
    x = preprocess(torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        ours = model.vision_model.embeddings(x)
        patches = vision.vit.embeddings.patch_embeddings(x)
        theirs = patches + vision.vit.embeddings.position_embeddings[:, 1:]
        torch.testing.assert_close(ours, theirs)
        tokens = torch.randn(2, 64, 128, generator=torch.Generator().manual_seed(1))
        for old, new in zip(vision.vit.layers, model.vision_model.encoder.layers):
            expected, got = old(tokens), new(tokens, attention_mask=None)
            expected = expected[0] if isinstance(expected, tuple) else expected
            got = got[0] if isinstance(got, tuple) else got
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            model.vision_model.post_layernorm(tokens), vision.vit.layernorm(tokens)
        )


def test_a_tiny_run_writes_a_loadable_model_folder(tmp_path):
    main(["--out", str(tmp_path), "--train-size", "8", "--val-size", "4", "--test-size", "4",
          "--steps", "2", "--batch-size", "4", "--eval-every", "2", "--workers", "1",
          "--text-width", "32", "--text-layers", "1"])  # fmt: skip
    model = SiglipModel.from_pretrained(tmp_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert (
        tokenizer("the red star")["input_ids"] == word_tokenizer(WORDS)("the red star")["input_ids"]
    )
    assert (tmp_path / "preprocessor_config.json").is_file()
    assert model.config.vision_config.hidden_size == 128


# --- the shipped weights ---------------------------------------------------------------------


def test_load_clip_is_an_eval_mode_siglip_with_its_tokenizer(clip):
    model, preprocess = clip
    assert isinstance(model, SiglipModel) and not model.training
    assert preprocess.image_size == model.config.vision_config.image_size == 96
    assert (CLIP_DIR / "tokenizer.json").is_file() and (CLIP_DIR / "MODEL_CARD.md").is_file()
    # A plain string is a prompt: the adapter finds the tokenizer saved with the model.
    x = preprocess(SyntheticScenes("test", size=2)[1].image)
    from attnexplain.capture import resolve_adapter

    adapter = resolve_adapter(model)
    with torch.no_grad():
        output = adapter.forward(x)
        plain = target_scores(adapter, output, "the red square")
        tokenizer = AutoTokenizer.from_pretrained(CLIP_DIR)
        explicit = target_scores(adapter, output, Prompt("the red square", tokenizer))
    torch.testing.assert_close(plain, explicit)
    with pytest.raises(ValueError, match="unknown embedded model 'siglip'"):
        load_default("siglip")


def test_shipped_clip_tells_which_queries_are_true(clip):
    # The model card gives these on 1,000 test scenes; 120 scenes leave room for sampling noise
    # and fail for untrained or mismatched weights (all-negative decisions score 0.65 / 0.79).
    model, preprocess = clip
    images, objects = generate_scene_split("test", 120, preprocess.image_size, workers=1)
    scores = retrieval_scores(model, images, objects, preprocess)
    assert scores["class"] > 0.8 and scores["colour"] > 0.9, scores
    assert scores["recall"] > 0.5, scores


def test_shipped_clip_points_at_the_queried_object(clip):
    # The model card's localisation claim (on 738 queries: gradient rollout points at the queried
    # object for 84.7 %, at another object for 7.3 %; mass share 72.2 % against 40.7 % chance) on
    # 40 queries; a map that ignores the prompt scores the chance share exactly.
    model, preprocess = clip
    items = scene_queries(SyntheticScenes("test", size=100), 16)
    results = evaluate(model, preprocess, items, methods=["gradient rollout", "pooling attention"])
    rollout, pooling = results["gradient rollout"], results["pooling attention"]
    assert rollout["queried"] > 0.6 and rollout["other"] < 0.2, results
    assert rollout["queried"] > pooling["queried"] + 0.2, results
    assert rollout["mass share"] > results["chance"]["mass share"] + 0.15, results
    assert abs(pooling["mass share"] - results["chance"]["mass share"]) < 1e-4, results
