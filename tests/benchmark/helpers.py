"""Tiny models for the benchmark tests: built from configs, saved like hub checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, ViTModel

from attnexplain.zoo import Preprocess

IMAGE = 32
PATCH = 8
CLASSES = 6  # the synthetic data's classes, so labels are valid targets


class Killed(RuntimeError):
    """Stands for a kill: raised from a run's after-batch hook."""


def tiny_config(**overrides: object) -> ViTConfig:
    """A 2-layer, 4-head ViT on 32 px images with 8 px patches."""
    settings = dict(
        image_size=IMAGE, patch_size=PATCH, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=CLASSES,
    )  # fmt: skip
    settings.update(overrides)
    return ViTConfig(**settings)


def tiny_model(head: bool = True, seed: int = 0) -> torch.nn.Module:
    """A random tiny ViT (with a classification head or a bare backbone), in eval mode."""
    torch.manual_seed(seed)
    model = ViTForImageClassification(tiny_config()) if head else ViTModel(tiny_config())
    with torch.no_grad():
        # Zero-initialised tokens tie attention values; trained checkpoints have none.
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.5)
    return model.eval()


def tiny_preprocess() -> Preprocess:
    return Preprocess(IMAGE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def save_tiny_model(folder: Path, head: bool = True) -> Path:
    """Save a tiny model and its ``ViTImageProcessor`` as a hub checkpoint folder would hold."""
    tiny_model(head).save_pretrained(folder)
    preprocess = tiny_preprocess()
    processor = ViTImageProcessor(
        size={"height": IMAGE, "width": IMAGE},
        image_mean=list(preprocess.mean),
        image_std=list(preprocess.std),
    )
    processor.save_pretrained(folder)
    return folder


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def comparable(rows: list[dict]) -> list[dict]:
    """Rows without what legitimately differs between two runs (timings)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
