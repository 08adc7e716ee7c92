"""Train the embedded image–text model (``load_default("clip")``) on CPU.

Run ``python -m attnexplain.zoo.train_clip --out attnexplain/zoo/clip``; the defaults are the
recipe of the shipped weights (see ``attnexplain/zoo/clip/MODEL_CARD.md``). It writes a Hugging
Face model folder (``config.json``, ``model.safetensors``, the tokenizer files and
``preprocessor_config.json``) and prints the held-out retrieval scores.

The model is a ``SiglipModel``: its vision tower starts from the embedded default ViT (same
width, depth, patch and preprocessing; the CLS token is dropped, SigLIP has none, and its
attention-pooling head is new), its text tower is new. The data are the multi-object scenes of
:mod:`attnexplain.data.scenes`: 1-3 objects of distinct classes and distinct named colours. Every
training step scores each image against every *query* of the closed vocabulary (the 60 object
phrases "red star", the 6 class names, the 10 colours, each in a template drawn per step) with
SigLIP's sigmoid loss, whose per-pair labels say whether the query is true of the image: several
queries are true of one image, and a query naming a colour of one object and the class of another
("blue star" on a red star beside a blue square) is false, so the model must bind colour to shape.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from transformers import SiglipConfig, SiglipModel, ViTForImageClassification

from attnexplain.data.scenes import PALETTE, generate_scene
from attnexplain.data.synthetic import CLASS_NAMES, SPLIT_SEED_OFFSETS
from attnexplain.zoo import Preprocess, load_default
from attnexplain.zoo.text import SPECIAL_TOKENS, word_tokenizer
from attnexplain.zoo.train import _one_thread, random_dihedral, warmup_cosine

__all__ = [
    "COLOUR_NAMES",
    "QUERIES",
    "Query",
    "build_model",
    "generate_scene_split",
    "query_labels",
    "query_texts",
    "retrieval_scores",
    "vision_from_default",
]

COLOUR_NAMES: tuple[str, ...] = tuple(PALETTE)
#: Words of the closed vocabulary, after the special tokens.
WORDS: tuple[str, ...] = ("a", "an", "the", "photo", "of", "object", *COLOUR_NAMES, *CLASS_NAMES)
#: Templates a query is phrased in; one is drawn per training step ("{a}" is "a" / "an").
TEMPLATES: tuple[str, ...] = ("{a} {p}", "the {p}", "a photo of {a} {p}")
#: Initial logit bias: about 8 % of (scene, query) pairs are true, log(0.08 / 0.92) = -2.4.
INITIAL_BIAS = -2.5
CONTEXT = 12  # text positions: the longest templated query has 8 tokens with BOS / EOS


class Query(NamedTuple):
    """A query of the closed vocabulary: a class, a colour, or both (indices, ``None`` if not)."""

    shape: int | None
    colour: int | None

    @property
    def phrase(self) -> str:
        """``"red star"``, ``"star"`` or ``"red object"``."""
        if self.colour is None:
            return CLASS_NAMES[self.shape]  # type: ignore[index]
        shape = "object" if self.shape is None else CLASS_NAMES[self.shape]
        return f"{COLOUR_NAMES[self.colour]} {shape}"


#: The 76 queries: every colour-class phrase (index ``class * 10 + colour``), then the six
#: classes, then the ten colours.
QUERIES: tuple[Query, ...] = (
    *(Query(shape, colour) for shape in range(len(CLASS_NAMES)) for colour in range(10)),
    *(Query(shape, None) for shape in range(len(CLASS_NAMES))),
    *(Query(None, colour) for colour in range(len(COLOUR_NAMES))),
)


def query_texts(template: str) -> list[str]:
    """Every query phrased with ``template`` (e.g. ``"the {p}"``)."""
    texts = []
    for query in QUERIES:
        phrase = query.phrase
        texts.append(template.format(a="an" if phrase[0] in "aeiou" else "a", p=phrase))
    return texts


def query_labels(objects: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Which queries are true of a scene holding ``objects`` ``(class, colour)``: ``(76,)``."""
    labels = torch.zeros(len(QUERIES), dtype=torch.bool)
    for index, (shape, colour) in enumerate(QUERIES):
        labels[index] = any(
            (shape is None or shape == s) and (colour is None or colour == c) for s, c in objects
        )
    return labels


def _uint8_scene(seed: int, image_size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    scene = generate_scene(seed, image_size)
    objects = [(obj.label, COLOUR_NAMES.index(obj.colour_name)) for obj in scene.objects]
    return (scene.image * 255).round().to(torch.uint8).numpy(), objects


def generate_scene_split(
    split: str, size: int, image_size: int, workers: int
) -> tuple[torch.Tensor, list[list[tuple[int, int]]]]:
    """The first ``size`` scenes of a split as a uint8 cache and their objects.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: number of scenes.
        image_size: side in pixels.
        workers: processes used to generate (the result does not depend on it).

    Returns:
        ``(images, objects)``: ``(size, 3, H, W)`` uint8, and per scene its ``(class, colour)``
        pairs in painting order.
    """
    seeds = range(SPLIT_SEED_OFFSETS[split], SPLIT_SEED_OFFSETS[split] + size)
    make = partial(_uint8_scene, image_size=image_size)
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers, _one_thread) as pool:
            scenes = pool.map(make, seeds, chunksize=128)
    else:
        scenes = [make(seed) for seed in seeds]
    return torch.from_numpy(np.stack([image for image, _ in scenes])), [o for _, o in scenes]


def build_model(
    vision: ViTForImageClassification, text_width: int, text_layers: int
) -> SiglipModel:
    """A ``SiglipModel`` whose vision tower has ``vision``'s shape, and a new text tower.

    Args:
        vision: the ViT whose width, depth, heads, MLP, patch, input size, activation and norm
            epsilon the vision tower takes.
        text_width: width of the text transformer (its output is projected to the vision width).
        text_layers: depth of the text transformer.
    """
    source = vision.config
    tokenizer = word_tokenizer(WORDS)
    vision_config = dict(
        image_size=source.image_size, patch_size=source.patch_size,
        hidden_size=source.hidden_size, num_hidden_layers=source.num_hidden_layers,
        num_attention_heads=source.num_attention_heads,
        intermediate_size=source.intermediate_size, hidden_act=source.hidden_act,
        layer_norm_eps=source.layer_norm_eps,
    )  # fmt: skip
    text_config = dict(
        vocab_size=len(tokenizer), hidden_size=text_width, num_hidden_layers=text_layers,
        num_attention_heads=4, intermediate_size=2 * text_width, max_position_embeddings=CONTEXT,
        projection_size=source.hidden_size, hidden_act=source.hidden_act,
        pad_token_id=SPECIAL_TOKENS.index("[PAD]"), bos_token_id=SPECIAL_TOKENS.index("[BOS]"),
        eos_token_id=SPECIAL_TOKENS.index("[EOS]"),
    )  # fmt: skip
    model = SiglipModel(SiglipConfig(vision_config=vision_config, text_config=text_config))
    with torch.no_grad():  # SigLIP's initial temperature; the bias at the queries' prior odds
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(INITIAL_BIAS)
    return model


def vision_from_default(model: SiglipModel, vision: ViTForImageClassification) -> None:
    """Copy a ViT's encoder into ``model``'s vision tower, in place.

    The two share every weight but the CLS token, which SigLIP does not have: its position
    embedding is dropped with it, and the final norm becomes SigLIP's ``post_layernorm``. The
    pooling head stays new.
    """
    source = vision.vit
    tower = model.vision_model
    with torch.no_grad():
        patch = source.embeddings.patch_embeddings.projection
        tower.embeddings.patch_embedding.weight.copy_(patch.weight)
        tower.embeddings.patch_embedding.bias.copy_(patch.bias)
        positions = source.embeddings.position_embeddings[0, 1:]  # without the CLS position
        tower.embeddings.position_embedding.weight.copy_(positions)
        for old, new in zip(source.layers, tower.encoder.layers):
            pairs = [
                (old.layernorm_before, new.layer_norm1), (old.layernorm_after, new.layer_norm2),
                (old.attention.q_proj, new.self_attn.q_proj),
                (old.attention.k_proj, new.self_attn.k_proj),
                (old.attention.v_proj, new.self_attn.v_proj),
                (old.attention.o_proj, new.self_attn.out_proj),
                (old.mlp.fc1, new.mlp.fc1), (old.mlp.fc2, new.mlp.fc2),
            ]  # fmt: skip
            for a, b in pairs:
                b.weight.copy_(a.weight)
                b.bias.copy_(a.bias)
        tower.post_layernorm.weight.copy_(source.layernorm.weight)
        tower.post_layernorm.bias.copy_(source.layernorm.bias)


def _text_ids(tokenizer, template: str) -> torch.Tensor:
    return tokenizer(
        query_texts(template), padding="max_length", max_length=CONTEXT, return_tensors="pt"
    )["input_ids"]


def _logits(model: SiglipModel, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    image = F.normalize(model.vision_model(pixel_values=pixels).pooler_output, dim=-1)
    text = F.normalize(model.text_model(input_ids=ids).pooler_output, dim=-1)
    return image @ text.T * model.logit_scale.exp() + model.logit_bias


@torch.no_grad()
def retrieval_scores(
    model: SiglipModel,
    images: torch.Tensor,
    objects: Sequence[Sequence[tuple[int, int]]],
    preprocess: Preprocess,
    template: str = "the {p}",
    batch_size: int = 250,
) -> dict[str, float]:
    """How well the model tells which queries are true of each held-out scene.

    Args:
        model: the model.
        images: ``(N, 3, H, W)`` uint8 scenes.
        objects: each scene's ``(class, colour)`` pairs.
        preprocess: the model's preprocessing.
        template: how the queries are phrased.
        batch_size: images per forward.

    Returns:
        ``class`` / ``colour``: share of right sigmoid decisions (logit > 0) on the six class
        queries ("the star") / the ten colour queries ("the red object"); ``recall``: share of
        the scenes' object phrases among their ``K`` best-scored object phrases (``K`` objects in
        the scene); ``binding``: share of (object, swapped phrase) pairs, in scenes of 2-3
        objects, where the object's true phrase ("red star") outscores the phrase taking another
        object's colour ("blue star").
    """
    was_training = model.training
    model.eval()
    tokenizer = word_tokenizer(WORDS)
    ids = _text_ids(tokenizer, template)
    logits = torch.cat([
        _logits(model, preprocess(images[start : start + batch_size].float() / 255.0), ids)
        for start in range(0, len(images), batch_size)
    ])  # fmt: skip
    model.train(was_training)
    decisions = (logits > 0) == torch.stack([query_labels(scene) for scene in objects])
    phrases = len(CLASS_NAMES) * len(COLOUR_NAMES)
    found, wins, pairs = 0, 0, 0
    for row, scene in zip(logits, objects):
        true = {shape * 10 + colour for shape, colour in scene}
        found += len(true & set(row[:phrases].topk(len(scene)).indices.tolist()))
        for shape, colour in scene:
            for _, other in scene:
                if other != colour:
                    wins += int(row[shape * 10 + colour] > row[shape * 10 + other])
                    pairs += 1
    return {
        "class": decisions[:, phrases : phrases + len(CLASS_NAMES)].float().mean().item(),
        "colour": decisions[:, phrases + len(CLASS_NAMES) :].float().mean().item(),
        "recall": found / sum(len(scene) for scene in objects),
        "binding": wins / max(pairs, 1),
    }


#: The queries of one kind, ranked against each other by the softmax terms of :func:`loss`.
QUERY_GROUPS = (
    slice(0, len(CLASS_NAMES) * len(COLOUR_NAMES)),  # colour-class phrases
    slice(len(CLASS_NAMES) * len(COLOUR_NAMES), len(CLASS_NAMES) * (len(COLOUR_NAMES) + 1)),
    slice(len(CLASS_NAMES) * (len(COLOUR_NAMES) + 1), len(QUERIES)),  # colours
)


def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SigLIP's sigmoid loss on every (image, query) pair, plus one softmax cross-entropy per
    kind of query whose target is uniform over the image's true queries of that kind.

    The sigmoid terms decide each query on its own (the score the explanations read); the
    softmax terms rank the phrases, classes and colours of an image against each other, which
    learned about twice as fast in short runs (see the model card).

    Args:
        logits: ``(B, 76)`` image–query logits.
        labels: ``(B, 76)`` 0/1 truth of each query.

    Returns:
        The scalar loss.
    """
    total = F.binary_cross_entropy_with_logits(logits, labels)
    for group in QUERY_GROUPS:
        truth = labels[:, group]
        total = total + F.cross_entropy(logits[:, group], truth / truth.sum(dim=1, keepdim=True))
    return total


def _cached_split(
    cache: Path | None, size: int, image_size: int, workers: int
) -> tuple[torch.Tensor, list[list[tuple[int, int]]]]:
    """The training scenes, read from ``cache`` when it holds them (generation is a pure
    function of the seeds, so a cache is the same data), else generated (and cached)."""
    if cache is not None and cache.is_file():
        images, objects = torch.load(cache, weights_only=True)
        if len(objects) == size and images.shape[-1] == image_size:
            return images, [[tuple(pair) for pair in scene] for scene in objects]
    images, objects = generate_scene_split("train", size, image_size, workers)
    if cache is not None:
        torch.save((images, objects), cache)
    return images, objects


def _save(model: SiglipModel, preprocess: Preprocess, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    word_tokenizer(WORDS).save_pretrained(out)
    preprocess.to_json(out / "preprocessor_config.json")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the model files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-width", type=int, default=64)
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=8_000)
    parser.add_argument("--val-size", type=int, default=300)
    parser.add_argument("--test-size", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=1_200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak lr of the new parameters")
    parser.add_argument("--lr-copied", type=float, default=3e-4, help="... of the copied encoder")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument(
        "--cache", type=Path, help="file keeping the generated training scenes between runs"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--workers", type=int, default=2, help="processes generating scenes")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Train, report held-out retrieval and write the model folder; see ``--help``."""
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)

    vision, preprocess = load_default()
    image_size = preprocess.image_size
    train_images, train_objects = _cached_split(
        args.cache, args.train_size, image_size, args.workers
    )
    val_images, val_objects = generate_scene_split("val", args.val_size, image_size, args.workers)
    train_labels = torch.stack([query_labels(scene) for scene in train_objects]).float()
    log(f"generated {len(train_images)} train / {len(val_images)} val scenes")

    model = build_model(vision, args.text_width, args.text_layers)
    vision_from_default(model, vision)
    model.train()
    tokenizer = word_tokenizer(WORDS)
    template_ids = [_text_ids(tokenizer, template) for template in TEMPLATES]
    no_decay = ("bias", "norm", "position_embedding", "probe", "logit_")
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        # The encoder copied from the default ViT learns slower than what is new.
        copied = name.startswith("vision_model.") and ".head." not in name
        groups.setdefault((copied, any(key in name for key in no_decay)), []).append(param)
    optimizer = torch.optim.AdamW(
        [
            {
                "params": params,
                "lr": args.lr_copied if copied else args.lr,
                "weight_decay": 0.0 if exempt else args.weight_decay,
            }
            for (copied, exempt), params in groups.items()
        ]
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
        ids = template_ids[int(torch.randint(len(TEMPLATES), (1,), generator=generator))]
        logits = _logits(model, preprocess(images), ids)
        value = loss(logits, train_labels[index])
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running_loss += value.item()
        logged_steps += 1
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            scores = retrieval_scores(model, val_images, val_objects, preprocess)
            log(
                f"step {step + 1}/{args.steps} loss {running_loss / logged_steps:.4f} val "
                + " ".join(f"{key} {value:.3f}" for key, value in scores.items())
            )
            running_loss, logged_steps = 0.0, 0
            _save(model, preprocess, args.out)  # an interrupted run still leaves a model
    train_seconds = time.perf_counter() - start

    test_images, test_objects = generate_scene_split("test", args.test_size, image_size, 1)
    for template in TEMPLATES:
        scores = retrieval_scores(model, test_images, test_objects, preprocess, template)
        log(f"test {template!r}: " + " ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    log(f"training wall time {train_seconds / 60:.1f} min")
    model.eval()
    _save(model, preprocess, args.out)
    log(f"wrote the model folder to {args.out}")


if __name__ == "__main__":
    main()
