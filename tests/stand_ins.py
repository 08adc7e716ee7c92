"""Stand-ins for what the tests cannot download: tiny random models built from configs, saved the
way hub checkpoints hold them, and a private Hugging Face cache that serves them under hub ids.

A checkpoint folder is what ``save_pretrained`` (transformers) or ``timm.models.save_for_hf``
(timm) writes; :func:`add_to_cache` files it under a hub id in a cache folder laid out like
huggingface_hub's (``models--ORG--NAME/refs/main`` and ``snapshots/<commit>/``), so that with
``HF_HUB_CACHE`` pointing there and ``HF_HUB_OFFLINE=1``, ``from_pretrained("ORG/NAME")``,
``timm.create_model(NAME, pretrained=True)`` and ``attnexplain --model ORG/NAME`` load it.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _tiny(**overrides: object) -> dict:
    settings = dict(
        image_size=224, patch_size=16, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64,
    )  # fmt: skip
    settings.update(overrides)
    return settings


def _randomise_zero_parameters(model: torch.nn.Module) -> torch.nn.Module:
    """Zero-initialised tokens tie attention values; trained checkpoints have none."""
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.5)
    return model.eval()


def hf_folder(folder: Path, kind: str, seed: int = 0) -> Path:
    """Save a tiny transformers checkpoint of ``kind`` with its image processor into ``folder``.

    Kinds: ``vit`` (``ViTForImageClassification``, 10 classes, ViT's processor), ``vit_backbone``
    (``ViTModel``, DINO's layout), ``vit_patch8`` (``ViTModel``, patch 8), ``deit`` (ViT classifier
    with DeiT's 256 -> 224 processor), ``deit_teacher`` (``DeiTForImageClassificationWithTeacher``),
    ``dinov2`` (``Dinov2Model``, patch 14, BiT's shortest-edge processor).

    Returns:
        ``folder``.
    """
    import transformers as tf

    torch.manual_seed(seed)
    vit_processor = tf.ViTImageProcessor(size={"height": 224, "width": 224})
    deit_processor = tf.DeiTImageProcessor(
        size={"height": 256, "width": 256}, crop_size={"height": 224, "width": 224},
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
    )  # fmt: skip
    if kind == "vit":
        model = tf.ViTForImageClassification(tf.ViTConfig(num_labels=10, **_tiny()))
        processor = vit_processor
    elif kind == "vit_backbone":
        model, processor = tf.ViTModel(tf.ViTConfig(**_tiny())), vit_processor
    elif kind == "vit_patch8":
        model, processor = tf.ViTModel(tf.ViTConfig(**_tiny(patch_size=8))), vit_processor
    elif kind == "deit":
        model = tf.ViTForImageClassification(tf.ViTConfig(num_labels=10, **_tiny()))
        processor = deit_processor
    elif kind == "deit_teacher":
        config = tf.DeiTConfig(num_labels=10, **_tiny())
        model, processor = tf.DeiTForImageClassificationWithTeacher(config), deit_processor
    elif kind == "dinov2":
        model = tf.Dinov2Model(tf.Dinov2Config(**_tiny(patch_size=14)))
        processor = tf.BitImageProcessor(
            size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, resample=3,
            image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
        )  # fmt: skip
    else:
        raise KeyError(kind)
    _randomise_zero_parameters(model).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def timm_folder(folder: Path, architecture: str, seed: int = 0, **model_args: object) -> Path:
    """Save a random timm ``architecture`` (with ``model_args``) by ``save_for_hf`` (safetensors).

    Returns:
        ``folder``.
    """
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = _randomise_zero_parameters(timm.create_model(architecture, **model_args))
    save_for_hf(model, str(folder), model_args=model_args or None, safe_serialization=True)
    return folder


def add_to_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """File the checkpoint ``folder`` in the Hugging Face cache ``cache`` as ``repo_id``.

    Returns:
        The snapshot folder.
    """
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
