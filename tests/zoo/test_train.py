"""The embedded model's training script: data cache, augmentation, initialisation, a tiny run."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import ViTConfig, ViTForImageClassification

from attnexplain.data.synthetic import CLASS_NAMES, generate_sample
from attnexplain.zoo import CONFIG_FILE, PREPROCESSOR_FILE, WEIGHTS_FILE, Preprocess, model_files
from attnexplain.zoo.train import (
    build_model,
    cached_split,
    channel_statistics,
    generate_split,
    main,
    mimetic_attention_init_,
    multilabel_scores,
    random_dihedral,
    sincos_position_init_,
    warmup_cosine,
)

WIDTH, HEADS = 32, 4


@pytest.fixture
def model():
    return build_model(image_size=32, patch_size=8, hidden_size=WIDTH, layers=2, heads=HEADS)


def test_channel_statistics_match_the_direct_formula_across_chunks() -> None:
    # 2,500 images span three chunks of the streaming sums, the last one partial.
    images = torch.randint(0, 256, (2500, 3, 4, 5), dtype=torch.uint8)
    images[:, 1] //= 4  # channels with different statistics
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).double() / 255.0
    mean, std = channel_statistics(images)
    np.testing.assert_allclose(mean, pixels.mean(dim=1).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, pixels.std(dim=1).numpy(), rtol=0, atol=1e-12)


def test_uint8_cache_is_the_generator_output_losslessly() -> None:
    images, labels = generate_split("val", 3, image_size=32, workers=1)
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 32, 32)
    for index in range(3):
        image, label, _ = generate_sample(10**9 + index, 32)
        assert labels[index] == label
        torch.testing.assert_close(images[index].float() / 255.0, image, rtol=0, atol=1e-7)


def test_random_dihedral_applies_one_of_the_eight_symmetries_per_image() -> None:
    images = torch.arange(6 * 16, dtype=torch.float32).reshape(6, 1, 4, 4)
    out = random_dihedral(images, torch.Generator().manual_seed(0))
    for image, result in zip(images, out):
        candidates = [torch.rot90(image, k, dims=(1, 2)) for k in range(4)]
        candidates += [c.flip(-1) for c in candidates]
        assert sum(torch.equal(result, c) for c in candidates) == 1


def test_warmup_cosine_rises_then_decays_to_zero() -> None:
    factors = [warmup_cosine(step, warmup=10, total=110) for step in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert warmup_cosine(60, warmup=10, total=110) == pytest.approx(0.5)
    assert warmup_cosine(110, warmup=10, total=110) == pytest.approx(0.0)


def test_mimetic_init_sets_the_query_key_and_value_output_products(model) -> None:
    mimetic_attention_init_(model, torch.Generator().manual_seed(3))
    # Redraw the same Gaussian matrices in the same order: per layer, HEADS for the query-key
    # products, then one for the value-output product.
    generator = torch.Generator().manual_seed(3)
    head_dim = WIDTH // HEADS
    eye = torch.eye(WIDTH)
    for layer in model.vit.layers:
        attention = layer.attention
        for head in range(HEADS):
            target = 0.7 * torch.randn(WIDTH, WIDTH, generator=generator) / math.sqrt(WIDTH)
            target += 0.7 * eye
            rows = slice(head * head_dim, (head + 1) * head_dim)
            product = attention.q_proj.weight[rows].T @ attention.k_proj.weight[rows]
            # Eckart-Young: the best rank-d_head approximation misses exactly the tail
            # singular values.
            tail = torch.linalg.svdvals(target)[head_dim:]
            assert torch.linalg.matrix_rank(product) == head_dim
            torch.testing.assert_close(
                torch.linalg.matrix_norm(target - product), tail.norm(), rtol=1e-4, atol=1e-5
            )
            # Tokens attend to similar tokens: the diagonal stands out.
            off_diagonal = product - torch.diag(torch.diagonal(product))
            assert torch.diagonal(product).mean() > 2 * off_diagonal.abs().mean()
        target = 0.4 * torch.randn(WIDTH, WIDTH, generator=generator) / math.sqrt(WIDTH)
        target -= 0.4 * eye
        product = attention.o_proj.weight @ attention.v_proj.weight
        torch.testing.assert_close(product, target.T, rtol=1e-4, atol=1e-5)


def test_sincos_position_init_matches_the_2d_table(model) -> None:
    sincos_position_init_(model)
    table = model.vit.embeddings.position_embeddings[0].detach().numpy()
    assert not table[0].any()  # CLS
    quarter = WIDTH // 4
    frequencies = 1.0 / 10000 ** (np.arange(quarter) / quarter)
    side = 32 // 8
    for row in range(side):
        for col in range(side):
            expected = np.concatenate([
                np.sin(col * frequencies), np.cos(col * frequencies),
                np.sin(row * frequencies), np.cos(row * frequencies),
            ])  # fmt: skip
            np.testing.assert_allclose(table[1 + row * side + col], expected, atol=1e-6)


def test_a_tiny_run_writes_loadable_model_files(tmp_path, capsys) -> None:
    main([
        "--out", str(tmp_path), "--image-size", "32", "--patch-size", "8", "--hidden-size", "32",
        "--layers", "1", "--heads", "2", "--intermediate-size", "48", "--train-size", "24",
        "--val-size", "12",
        "--test-size", "12", "--steps", "3", "--batch-size", "8", "--warmup", "1",
        "--eval-every", "2", "--threads", "1",
    ])  # fmt: skip
    log = capsys.readouterr().out
    assert "step 2/3" in log and "step 3/3" in log and "test acc" in log

    config = ViTConfig.from_json_file(tmp_path / CONFIG_FILE)
    assert config.id2label == dict(enumerate(CLASS_NAMES)) and config.patch_size == 8
    assert config.num_attention_heads == 2 and config.intermediate_size == 48
    model = ViTForImageClassification(config)
    missing, unexpected = model.load_state_dict(load_file(tmp_path / WEIGHTS_FILE), strict=False)
    assert not missing and not unexpected
    preprocess = Preprocess.from_json(tmp_path / PREPROCESSOR_FILE)
    assert preprocess.image_size == 32
    with torch.no_grad():
        logits = model(pixel_values=preprocess(torch.rand(2, 3, 32, 32))).logits
    assert logits.shape == (2, len(CLASS_NAMES)) and torch.isfinite(logits).all()


def test_multilabel_scores_match_sklearn_by_hand() -> None:
    # Two classes of CLASS_NAMES only matter here; the rest are all-negative and always right.
    present = torch.zeros(4, len(CLASS_NAMES))
    present[[0, 1], 0] = 1.0
    present[[1, 2], 1] = 1.0
    logits = torch.full((4, len(CLASS_NAMES)), -3.0)
    logits[:, 0] = torch.tensor([2.0, 1.0, 0.5, -1.0])  # ranks both positives first: AP 1
    logits[:, 1] = torch.tensor([1.0, 0.5, -0.5, 2.0])  # a negative ranked first
    for k in range(2, len(CLASS_NAMES)):
        present[3, k] = 1.0  # one positive per remaining class, ranked first: AP 1
        logits[3, k] = 1.0
    scores = multilabel_scores(logits, present)
    # square ranks image 3 (negative), 0 (negative), 1 (positive), 2 (positive): precision at
    # the positives 1/3 and 2/4, each half of the recall -> AP = (1/3 + 1/2) / 2.
    assert scores["ap/disc"] == pytest.approx(1.0)
    assert scores["ap/square"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert scores["mAP"] == pytest.approx((5 + (1 / 3 + 1 / 2) / 2) / 6)
    # Predicted (logit > 0) disc: images 0, 1, 2 -> tp 2, fp 1, fn 0 -> F1 = 0.8.
    assert scores["f1/disc"] == pytest.approx(0.8)
    # square: predicted 0, 1, 3; true 1, 2 -> tp 1, fp 2, fn 1 -> F1 = 2 / (2 + 2 + 1) = 0.4.
    assert scores["f1/square"] == pytest.approx(0.4)
    # Exact match: only image 1 ({disc, square}) is predicted exactly.
    assert scores["exact_match"] == pytest.approx(1 / 4)


def test_multilabel_cache_is_the_scenes_class_sets() -> None:
    from attnexplain.data.scenes import generate_scene

    images, present = generate_split("val", 3, image_size=32, workers=1, task="multilabel")
    assert present.dtype == torch.float32 and present.shape == (3, len(CLASS_NAMES))
    for index in range(3):
        scene = generate_scene(10**9 + index, 32)
        assert present[index].nonzero().flatten().tolist() == sorted(o.label for o in scene.objects)
        torch.testing.assert_close(images[index].float() / 255.0, scene.image, rtol=0, atol=1e-7)


TINY = [
    "--image-size", "32", "--patch-size", "8", "--hidden-size", "32", "--layers", "1",
    "--heads", "2", "--intermediate-size", "48", "--train-size", "24", "--val-size", "12",
    "--test-size", "12", "--steps", "3", "--batch-size", "8", "--warmup", "1",
    "--eval-every", "2", "--threads", "1",
]  # fmt: skip


def test_a_tiny_multilabel_run_writes_a_sigmoid_model(tmp_path, capsys) -> None:
    main(["--task", "multilabel", "--out", str(tmp_path), *TINY])
    log = capsys.readouterr().out
    assert "val mAP" in log and "test mAP" in log and "steps/s" in log
    weights, config_file, preprocessor = model_files("multilabel")
    assert weights == "multilabel.safetensors"
    config = ViTConfig.from_json_file(tmp_path / config_file)
    assert config.problem_type == "multi_label_classification"
    model = ViTForImageClassification(config)
    model.load_state_dict(load_file(tmp_path / weights))
    assert Preprocess.from_json(tmp_path / preprocessor).image_size == 32


def test_init_from_needs_the_embedded_architecture(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"--init-from default: parameter .* is \(.*\) here but"):
        main(["--task", "multilabel", "--out", str(tmp_path), "--init-from", "default", *TINY])


def test_cached_split_is_the_generated_split(tmp_path) -> None:
    settings = {"image_size": 32, "workers": 1, "task": "multilabel", "cache": tmp_path}
    first = cached_split("val", 4, **settings)
    (path,) = tmp_path.iterdir()
    assert path.name == "multilabel-val-4-32px.pt"
    second = cached_split("val", 4, **settings)  # read back
    fresh = generate_split("val", 4, 32, 1, "multilabel")
    for a, b, c in zip(first, second, fresh):
        assert torch.equal(a, b) and torch.equal(a, c)
