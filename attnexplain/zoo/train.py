"""Train the embedded models from scratch on CPU.

Run ``python -m attnexplain.zoo.train --out attnexplain/zoo``; the defaults are the recipe of the
shipped default weights (see ``MODEL_CARD.md``). It writes ``default.safetensors``,
``config.json`` and ``preprocessor_config.json`` to ``--out`` and prints the held-out test
accuracy.

``--task multilabel`` trains the multi-label variant with the same recipe on the multi-object
scenes of :mod:`attnexplain.data.scenes`: one sigmoid per class (``problem_type=
"multi_label_classification"``), binary cross-entropy on the image's multi-hot class vector
(label smoothing pulls the targets to ``ε / 2`` and ``1 - ε / 2``), validation by mean average
precision. ``python -m attnexplain.zoo.train --task multilabel --out attnexplain/zoo`` writes
``multilabel.safetensors``, ``multilabel.config.json`` and ``multilabel.preprocessor_config.json``
(see ``MODEL_CARD_multilabel.md``).

The training images are generated once into memory as uint8 (the generator quantises to 8 bits,
so the cache is lossless) and augmented by the eight flips / quarter turns of the square, which
leave every class's outline in its class. The attention layers start from a mimetic
initialisation and the position embeddings from a 2-D sine-cosine table (see
:func:`mimetic_attention_init_`): from the default random initialisation the same ViT stays near
chance for the first thousand steps on this data.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.metrics import average_precision_score, f1_score
from transformers import ViTConfig, ViTForImageClassification

from attnexplain.data.scenes import generate_scene
from attnexplain.data.synthetic import CLASS_NAMES, SPLIT_SEED_OFFSETS, generate_sample
from attnexplain.zoo import Preprocess, load_default, model_files

Task = Literal["single", "multilabel"]


def _one_thread() -> None:
    # Generation is numpy work; torch's default of one intra-op thread per core in every worker
    # oversubscribes the cores and made the pool 2.2x slower than a single process.
    torch.set_num_threads(1)


def _uint8(image: torch.Tensor) -> np.ndarray:
    return (image * 255).round().to(torch.uint8).numpy()


def _uint8_sample(seed: int, image_size: int) -> tuple[np.ndarray, int]:
    image, label, _ = generate_sample(seed, image_size)
    return _uint8(image), label


def _uint8_scene(seed: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    scene = generate_scene(seed, image_size)
    present = np.zeros(len(CLASS_NAMES), dtype=np.float32)
    present[[obj.label for obj in scene.objects]] = 1.0
    return _uint8(scene.image), present


def generate_split(
    split: str, size: int, image_size: int, workers: int, task: Task = "single"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``size`` samples of a split as a uint8 image cache.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: number of samples.
        image_size: side of the images in pixels.
        workers: processes used to generate (the result does not depend on it).
        task: ``"single"``: the one-object images of :mod:`attnexplain.data.synthetic`;
            ``"multilabel"``: the scenes of :mod:`attnexplain.data.scenes`.

    Returns:
        ``(images, labels)``: ``(size, 3, H, W)`` uint8, and ``(size,)`` int64 class indices
        (``"single"``) or ``(size, classes)`` float32 multi-hot vectors (``"multilabel"``).
    """
    seeds = range(SPLIT_SEED_OFFSETS[split], SPLIT_SEED_OFFSETS[split] + size)
    make = partial(_uint8_scene if task == "multilabel" else _uint8_sample, image_size=image_size)
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers, _one_thread) as pool:
            samples = pool.map(make, seeds, chunksize=256)
    else:
        samples = [make(seed) for seed in seeds]
    images = torch.from_numpy(np.stack([image for image, _ in samples]))
    if task == "multilabel":
        return images, torch.from_numpy(np.stack([present for _, present in samples]))
    return images, torch.tensor([label for _, label in samples], dtype=torch.int64)


def cached_split(
    split: str, size: int, *, image_size: int, workers: int, task: Task, cache: Path | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`generate_split`, read from or written to ``cache`` when it is given.

    The generator is deterministic, so a cached split equals a regenerated one; the file name
    holds every argument the split depends on.
    """
    if cache is None:
        return generate_split(split, size, image_size, workers, task)
    path = cache / f"{task}-{split}-{size}-{image_size}px.pt"
    if path.is_file():
        images, labels = torch.load(path, weights_only=True)
        return images, labels
    images, labels = generate_split(split, size, image_size, workers, task)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save((images, labels), path)
    return images, labels


def channel_statistics(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of a uint8 ``(N, 3, H, W)`` cache, in ``[0, 1]``.

    Float64 sums accumulated over chunks of images, so memory stays bounded: a float64 copy of
    the 40,000-image training cache would take 8.8 GB.
    """
    sums = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for chunk in images.split(1024):
        values = chunk.double()
        sums += values.sum(dim=(0, 2, 3))
        squares += values.square().sum(dim=(0, 2, 3))
    count = images.numel() // 3
    mean = sums / count
    # Bessel-corrected like torch.std. Both sums are of integers below 2**53 (at most 2.4e13 for
    # the training cache), hence exact; only the final subtraction rounds.
    variance = (squares - count * mean.square()) / (count - 1)
    return (mean / 255.0).tolist(), (variance.sqrt() / 255.0).tolist()


def random_dihedral(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply one of the square's 8 symmetries, drawn per image, to a ``(B, C, H, W)`` batch."""
    turns = torch.randint(0, 4, (images.shape[0],), generator=generator)
    flips = torch.randint(0, 2, (images.shape[0],), generator=generator).bool()
    out = images.clone()
    for k in range(1, 4):
        chosen = turns == k
        out[chosen] = torch.rot90(images[chosen], k, dims=(2, 3))
    out[flips] = out[flips].flip(-1)
    return out


def mimetic_attention_init_(
    model: ViTForImageClassification,
    generator: torch.Generator,
    query_key: tuple[float, float] = (0.7, 0.7),
    value_output: tuple[float, float] = (0.4, 0.4),
) -> None:
    """Mimetic initialisation of every attention layer (Trockman & Kolter, ICML 2023), in place.

    Trained ViTs have ``W_q^T W_k`` close to a positive multiple of the identity in each head
    (tokens attend to similar tokens) and ``W_o W_v`` close to a negative one; starting there
    instead of at random lets a small ViT learn from a small dataset much sooner. Per head,
    ``W_q^T W_k ≈ α Z + β I`` (rank ``d_head``, from an SVD); per layer, ``W_o W_v ≈ α Z − β I``,
    with ``Z`` standard Gaussian scaled by ``1 / sqrt(d)``.

    Args:
        model: a freshly built ViT classifier.
        generator: source of the random ``Z`` matrices.
        query_key: ``(α, β)`` of the query-key product.
        value_output: ``(α, β)`` of the value-output product.
    """
    config = model.config
    width, heads = config.hidden_size, config.num_attention_heads
    head_dim = width // heads
    eye = torch.eye(width)

    def noise() -> torch.Tensor:
        return torch.randn(width, width, generator=generator) / math.sqrt(width)

    with torch.no_grad():
        for layer in model.vit.layers:
            attention = layer.attention
            for head in range(heads):
                u, s, vh = torch.linalg.svd(query_key[0] * noise() + query_key[1] * eye)
                root = s[:head_dim].sqrt()
                rows = slice(head * head_dim, (head + 1) * head_dim)
                attention.q_proj.weight[rows] = (u[:, :head_dim] * root).T
                attention.k_proj.weight[rows] = root[:, None] * vh[:head_dim]
            u, s, vh = torch.linalg.svd(value_output[0] * noise() - value_output[1] * eye)
            # Linear layers act as x @ W.T, so the product the residual stream sees is
            # W_v.T @ W_o.T = (W_o @ W_v).T; W_o @ W_v = M.T is the product set here.
            attention.v_proj.weight.copy_((u * s.sqrt()).T)
            attention.o_proj.weight.copy_(vh.T * s.sqrt())


def sincos_position_init_(model: ViTForImageClassification) -> None:
    """Start the (still learned) position embeddings at MoCo v3's 2-D sine-cosine table.

    A quarter of the channels encodes ``sin`` / ``cos`` of the column and of the row at
    geometrically spaced frequencies; the CLS position starts at zero. Neighbouring patches start
    with similar embeddings, which the mimetic query-key init turns into local attention.

    Args:
        model: a freshly built ViT classifier (square patch grid, hidden size divisible by 4).
    """
    config = model.config
    side = config.image_size // config.patch_size
    quarter = config.hidden_size // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    angle_cols = cols.flatten()[:, None].float() * frequencies
    angle_rows = rows.flatten()[:, None].float() * frequencies
    table = torch.cat([angle_cols.sin(), angle_cols.cos(), angle_rows.sin(), angle_rows.cos()], 1)
    with torch.no_grad():
        embeddings = model.vit.embeddings.position_embeddings
        embeddings[0, 0].zero_()
        embeddings[0, 1:] = table


def build_model(
    image_size: int,
    patch_size: int,
    hidden_size: int,
    layers: int,
    heads: int,
    intermediate_size: int | None = None,
    task: Task = "single",
) -> ViTForImageClassification:
    """A randomly initialised ViT classifier over :data:`CLASS_NAMES`.

    ``intermediate_size`` is the MLP width, ``4 * hidden_size`` (ViT's ratio) when ``None``;
    ``task="multilabel"`` sets ``problem_type="multi_label_classification"`` (one sigmoid per
    class, so the Hugging Face loss is binary cross-entropy).
    """
    config = ViTConfig(
        problem_type="multi_label_classification" if task == "multilabel" else None,
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden_size if intermediate_size is None else intermediate_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=len(CLASS_NAMES),
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={name: i for i, name in enumerate(CLASS_NAMES)},
    )
    return ViTForImageClassification(config)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


@torch.no_grad()
def predict_logits(
    model: ViTForImageClassification,
    images: torch.Tensor,
    preprocess: Preprocess,
    batch_size: int = 250,
) -> torch.Tensor:
    """Logits ``(N, classes)`` of ``model`` (in eval mode, restored after) on a uint8 cache."""
    was_training = model.training
    model.eval()
    logits = [
        model(pixel_values=preprocess(images[start : start + batch_size].float() / 255.0)).logits
        for start in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    return torch.cat(logits)


def accuracy(
    model: ViTForImageClassification,
    images: torch.Tensor,
    labels: torch.Tensor,
    preprocess: Preprocess,
    batch_size: int = 250,
) -> float:
    """Top-1 accuracy of ``model`` on a uint8 ``(N, 3, H, W)`` cache."""
    predicted = predict_logits(model, images, preprocess, batch_size).argmax(dim=1)
    return float((predicted == labels).double().mean())


def multilabel_scores(logits: torch.Tensor, present: torch.Tensor) -> dict[str, float]:
    """Multi-label quality of sigmoid logits against multi-hot targets.

    Args:
        logits: ``(N, C)`` logits (a class is predicted when its sigmoid exceeds 0.5, i.e. its
            logit exceeds 0).
        present: ``(N, C)`` multi-hot targets.

    Returns:
        ``mAP`` (macro mean of the per-class average precision, sklearn's
        ``average_precision_score``), ``macro_f1``, ``exact_match`` (the fraction of images whose
        predicted class set is exactly right), and per class ``ap/<name>`` and ``f1/<name>``.
    """
    truth = present.numpy() > 0.5
    scores = logits.double().numpy()
    predicted = scores > 0
    result = {
        "mAP": float(average_precision_score(truth, scores, average="macro")),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "exact_match": float((predicted == truth).all(axis=1).mean()),
    }
    per_class_ap = average_precision_score(truth, scores, average=None)
    per_class_f1 = f1_score(truth, predicted, average=None, zero_division=0)
    for name, ap, f1 in zip(CLASS_NAMES, per_class_ap, per_class_f1):
        result[f"ap/{name}"], result[f"f1/{name}"] = float(ap), float(f1)
    return result


def _loss(logits: torch.Tensor, labels: torch.Tensor, task: Task, smoothing: float) -> torch.Tensor:
    if task == "multilabel":
        targets = labels * (1.0 - smoothing) + smoothing / 2
        return F.binary_cross_entropy_with_logits(logits, targets)
    return F.cross_entropy(logits, labels, label_smoothing=smoothing)


def _evaluate(
    model: ViTForImageClassification,
    images: torch.Tensor,
    labels: torch.Tensor,
    preprocess: Preprocess,
    task: Task,
) -> str:
    """A log line's summary: accuracy, or mAP / macro F1 / exact match."""
    if task == "multilabel":
        scores = multilabel_scores(predict_logits(model, images, preprocess), labels)
        return (
            f"mAP {scores['mAP']:.3f} macro F1 {scores['macro_f1']:.3f} "
            f"exact match {scores['exact_match']:.3f}"
        )
    return f"acc {accuracy(model, images, labels, preprocess):.3f}"


def _save(model: ViTForImageClassification, preprocess: Preprocess, out: Path, name: str) -> None:
    weights, config, preprocessor = model_files(name)
    out.mkdir(parents=True, exist_ok=True)
    state = {key: tensor.contiguous() for key, tensor in model.state_dict().items()}
    save_file(state, out / weights, metadata={"format": "pt"})
    model.config.to_json_file(out / config)
    preprocess.to_json(out / preprocessor)


def _init_from(model: ViTForImageClassification, name: str) -> None:
    """Copy the weights of embedded model ``name`` into ``model`` (same architecture).

    Raises:
        ValueError: if the architectures differ (the message names the first mismatch).
    """
    source, _ = load_default(name)
    theirs, ours = source.state_dict(), model.state_dict()
    for key, tensor in ours.items():
        if key not in theirs or theirs[key].shape != tensor.shape:
            found = tuple(theirs[key].shape) if key in theirs else "missing"
            raise ValueError(
                f"--init-from {name}: parameter {key} is {tuple(tensor.shape)} here but "
                f"{found} in the embedded model; use its architecture flags"
            )
    model.load_state_dict(theirs)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the model files")
    parser.add_argument(
        "--task",
        choices=("single", "multilabel"),
        default="single",
        help="single: one object per image, softmax; multilabel: the multi-object scenes, "
        "one sigmoid per class",
    )
    parser.add_argument(
        "--name",
        default=None,
        help="file name stem of the written model (default: 'default' for --task single, "
        "'multilabel' for --task multilabel)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--patch-size", type=int, default=12)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--intermediate-size", type=int, default=256, help="MLP width")
    parser.add_argument("--train-size", type=int, default=40_000)
    parser.add_argument("--val-size", type=int, default=1_000)
    parser.add_argument("--test-size", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=7_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--workers", type=int, default=None, help="data generation processes (default: --threads)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="folder keeping the generated uint8 splits between runs (they depend only on the "
        "task, split, size and image size)",
    )
    parser.add_argument(
        "--init-from",
        default=None,
        help="start from the weights of this embedded model (e.g. 'default') instead of the "
        "mimetic / sine-cosine initialisation; the architecture flags must match it",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Train, report held-out accuracy and write the model files; see ``--help``."""
    args = _parse_args(argv)
    stem = args.name or ("multilabel" if args.task == "multilabel" else "default")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)

    workers = args.workers or args.threads
    split = partial(cached_split, cache=args.cache, image_size=args.image_size, task=args.task)
    train_images, train_labels = split("train", args.train_size, workers=workers)
    val_images, val_labels = split("val", args.val_size, workers=workers)
    mean, std = channel_statistics(train_images)
    preprocess = Preprocess(args.image_size, mean, std)
    log(f"{len(train_images)} train / {len(val_images)} val images ready; {preprocess}")

    model = build_model(
        args.image_size,
        args.patch_size,
        args.hidden_size,
        args.layers,
        args.heads,
        args.intermediate_size,
        args.task,
    )
    if args.init_from is None:
        mimetic_attention_init_(model, torch.Generator().manual_seed(args.seed))
        sincos_position_init_(model)
    else:
        _init_from(model, args.init_from)
        log(f"initialised from the embedded {args.init_from!r} model")
    model.train()
    no_decay = ("bias", "layernorm", "cls_token", "position_embeddings")
    decay_params, other_params = [], []
    for name, param in model.named_parameters():
        (other_params if any(key in name for key in no_decay) else decay_params).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay_params, "weight_decay": args.weight_decay},
            {"params": other_params, "weight_decay": 0.0},
        ],
        lr=args.lr,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(warmup_cosine, warmup=args.warmup, total=args.steps)
    )
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(train_images), generator=generator)
    cursor, running_loss, logged_steps = 0, 0.0, 0
    train_start = time.perf_counter()
    for step in range(args.steps):
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(train_images), generator=generator), 0
        index = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        images = random_dihedral(train_images[index], generator).float() / 255.0
        logits = model(pixel_values=preprocess(images)).logits
        loss = _loss(logits, train_labels[index], args.task, args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running_loss += loss.item()
        logged_steps += 1
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            summary = _evaluate(model, val_images, val_labels, preprocess, args.task)
            log(
                f"step {step + 1}/{args.steps} loss {running_loss / logged_steps:.3f} "
                f"val {summary} ({(step + 1) / (time.perf_counter() - train_start):.2f} steps/s)"
            )
            running_loss, logged_steps = 0.0, 0
            # Written at every evaluation so an interrupted run still leaves a usable model.
            _save(model, preprocess, args.out, stem)
    train_seconds = time.perf_counter() - start

    test_images, test_labels = split("test", args.test_size, workers=1)
    summary = _evaluate(model, test_images, test_labels, preprocess, args.task)
    log(f"training wall time {train_seconds / 60:.1f} min; test {summary}")

    _save(model, preprocess, args.out, stem)
    log(f"wrote {', '.join(model_files(stem))} to {args.out}")


if __name__ == "__main__":
    main()
