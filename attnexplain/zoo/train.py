"""Train the embedded default model from scratch on CPU.

Run ``python -m attnexplain.zoo.train --out attnexplain/zoo``; the defaults are the recipe of the
shipped weights (see ``MODEL_CARD.md``). It writes ``default.safetensors``, ``config.json`` and
``preprocessor_config.json`` to ``--out`` and prints the held-out test accuracy.

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

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import ViTConfig, ViTForImageClassification

from attnexplain.data.synthetic import CLASS_NAMES, SPLIT_SEED_OFFSETS, generate_sample
from attnexplain.zoo import CONFIG_FILE, PREPROCESSOR_FILE, WEIGHTS_FILE, Preprocess


def _one_thread() -> None:
    # Generation is numpy work; torch's default of one intra-op thread per core in every worker
    # oversubscribes the cores and made the pool 2.2x slower than a single process.
    torch.set_num_threads(1)


def _uint8_sample(seed: int, image_size: int) -> tuple[np.ndarray, int]:
    image, label, _ = generate_sample(seed, image_size)
    return (image * 255).round().to(torch.uint8).numpy(), label


def generate_split(
    split: str, size: int, image_size: int, workers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``size`` samples of a split as a uint8 image cache.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: number of samples.
        image_size: side of the images in pixels.
        workers: processes used to generate (the result does not depend on it).

    Returns:
        ``(images, labels)``: ``(size, 3, H, W)`` uint8 and ``(size,)`` int64.
    """
    seeds = range(SPLIT_SEED_OFFSETS[split], SPLIT_SEED_OFFSETS[split] + size)
    make = partial(_uint8_sample, image_size=image_size)
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers, _one_thread) as pool:
            samples = pool.map(make, seeds, chunksize=256)
    else:
        samples = [make(seed) for seed in seeds]
    images = torch.from_numpy(np.stack([image for image, _ in samples]))
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
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
) -> ViTForImageClassification:
    """A randomly initialised ViT classifier over :data:`CLASS_NAMES`.

    ``intermediate_size`` is the MLP width, ``4 * hidden_size`` (ViT's ratio) when ``None``.
    """
    config = ViTConfig(
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
def accuracy(
    model: ViTForImageClassification,
    images: torch.Tensor,
    labels: torch.Tensor,
    preprocess: Preprocess,
    batch_size: int = 250,
) -> float:
    """Top-1 accuracy of ``model`` on a uint8 ``(N, 3, H, W)`` cache."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        batch = preprocess(images[start : start + batch_size].float() / 255.0)
        predicted = model(pixel_values=batch).logits.argmax(dim=1)
        correct += int((predicted == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / len(images)


def _save(model: ViTForImageClassification, preprocess: Preprocess, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, out / WEIGHTS_FILE, metadata={"format": "pt"})
    model.config.to_json_file(out / CONFIG_FILE)
    preprocess.to_json(out / PREPROCESSOR_FILE)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the model files")
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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Train, report held-out accuracy and write the model files; see ``--help``."""
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)

    train_images, train_labels = generate_split(
        "train", args.train_size, args.image_size, args.threads
    )
    val_images, val_labels = generate_split("val", args.val_size, args.image_size, args.threads)
    mean, std = channel_statistics(train_images)
    preprocess = Preprocess(args.image_size, mean, std)
    log(f"generated {len(train_images)} train / {len(val_images)} val images; {preprocess}")

    model = build_model(
        args.image_size,
        args.patch_size,
        args.hidden_size,
        args.layers,
        args.heads,
        args.intermediate_size,
    )
    mimetic_attention_init_(model, torch.Generator().manual_seed(args.seed))
    sincos_position_init_(model)
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
    for step in range(args.steps):
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(train_images), generator=generator), 0
        index = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        images = random_dihedral(train_images[index], generator).float() / 255.0
        logits = model(pixel_values=preprocess(images)).logits
        loss = F.cross_entropy(logits, train_labels[index], label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running_loss += loss.item()
        logged_steps += 1
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            val_accuracy = accuracy(model, val_images, val_labels, preprocess)
            log(
                f"step {step + 1}/{args.steps} loss {running_loss / logged_steps:.3f} "
                f"val acc {val_accuracy:.3f}"
            )
            running_loss, logged_steps = 0.0, 0
            # Written at every evaluation so an interrupted run still leaves a usable model.
            _save(model, preprocess, args.out)
    train_seconds = time.perf_counter() - start

    test_images, test_labels = generate_split("test", args.test_size, args.image_size, 1)
    test_accuracy = accuracy(model, test_images, test_labels, preprocess)
    log(f"training wall time {train_seconds / 60:.1f} min; test accuracy {test_accuracy:.4f}")

    _save(model, preprocess, args.out)
    log(f"wrote {WEIGHTS_FILE}, {CONFIG_FILE} and {PREPROCESSOR_FILE} to {args.out}")


if __name__ == "__main__":
    main()
