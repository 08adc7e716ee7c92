"""One set of ViT weights in every family's layout (timm, HF ViT, torchvision, the DINO module).

The timm model is the source: Chefer et al.'s ViT uses timm's names, so the reference in
``chefer_reference.py`` loads its ``state_dict`` directly; the converters below move the same
tensors into the other families' parameter names (q/k/v split for HF, packed for torchvision).
"""

from __future__ import annotations

import torch
from torch import nn

from tests.models.dino_vit import DinoViT

IMAGE, PATCH, DIM, DEPTH, HEADS, HIDDEN, CLASSES = 32, 8, 32, 3, 4, 64, 5


def timm_source(seed: int = 0) -> nn.Module:
    """A timm ViT with every parameter random (LayerNorm weights around 1, biases non-zero)."""
    import timm.models.vision_transformer as tvt

    torch.manual_seed(seed)
    model = tvt.VisionTransformer(
        img_size=IMAGE, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
        mlp_ratio=HIDDEN / DIM, num_classes=CLASSES,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * torch.randn_like(parameter))
            elif name.endswith("bias") or name in ("cls_token", "pos_embed"):
                parameter.copy_(0.1 * torch.randn_like(parameter))
            else:
                parameter.copy_(torch.randn_like(parameter) / parameter.shape[-1] ** 0.5)
    return model


def _blocks(state: dict[str, torch.Tensor]):
    for i in range(DEPTH):
        yield i, {k.removeprefix(f"blocks.{i}."): v for k, v in state.items()
                  if k.startswith(f"blocks.{i}.")}  # fmt: skip


def _copy(state: dict, prefix: str, block: dict, pairs: dict[str, str]) -> None:
    """``state[prefix + ours.weight / .bias] = block[theirs.weight / .bias]`` for each pair."""
    for ours, theirs in pairs.items():
        for kind in ("weight", "bias"):
            state[prefix + f"{ours}.{kind}"] = block[f"{theirs}.{kind}"]


def to_hf_vit(source: nn.Module) -> nn.Module:
    import transformers as tf

    config = tf.ViTConfig(
        image_size=IMAGE, patch_size=PATCH, hidden_size=DIM, num_hidden_layers=DEPTH,
        num_attention_heads=HEADS, intermediate_size=HIDDEN, num_labels=CLASSES,
        layer_norm_eps=1e-6, qkv_bias=True,
    )  # fmt: skip
    model = tf.ViTForImageClassification(config).eval()
    s = source.state_dict()
    state = {
        "vit.embeddings.cls_token": s["cls_token"],
        "vit.embeddings.position_embeddings": s["pos_embed"],
        "vit.embeddings.patch_embeddings.projection.weight": s["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": s["patch_embed.proj.bias"],
        "vit.layernorm.weight": s["norm.weight"], "vit.layernorm.bias": s["norm.bias"],
        "classifier.weight": s["head.weight"], "classifier.bias": s["head.bias"],
    }  # fmt: skip
    for i, b in _blocks(s):
        p = f"vit.layers.{i}."
        weights, biases = b["attn.qkv.weight"].chunk(3), b["attn.qkv.bias"].chunk(3)
        for part, weight, bias in zip(("q_proj", "k_proj", "v_proj"), weights, biases):
            state[p + f"attention.{part}.weight"] = weight
            state[p + f"attention.{part}.bias"] = bias
        pairs = {
            "attention.o_proj": "attn.proj", "layernorm_before": "norm1",
            "layernorm_after": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
        }  # fmt: skip
        _copy(state, p, b, pairs)
    model.load_state_dict(state)
    return model


def to_torchvision(source: nn.Module) -> nn.Module:
    from torchvision.models import VisionTransformer

    model = VisionTransformer(
        image_size=IMAGE, patch_size=PATCH, num_layers=DEPTH, num_heads=HEADS, hidden_dim=DIM,
        mlp_dim=HIDDEN, num_classes=CLASSES,
    ).eval()  # fmt: skip
    s = source.state_dict()
    state = {
        "class_token": s["cls_token"], "encoder.pos_embedding": s["pos_embed"],
        "conv_proj.weight": s["patch_embed.proj.weight"],
        "conv_proj.bias": s["patch_embed.proj.bias"],
        "encoder.ln.weight": s["norm.weight"], "encoder.ln.bias": s["norm.bias"],
        "heads.head.weight": s["head.weight"], "heads.head.bias": s["head.bias"],
    }  # fmt: skip
    for i, b in _blocks(s):
        p = f"encoder.layers.encoder_layer_{i}."
        state[p + "self_attention.in_proj_weight"] = b["attn.qkv.weight"]
        state[p + "self_attention.in_proj_bias"] = b["attn.qkv.bias"]
        pairs = {"self_attention.out_proj": "attn.proj", "ln_1": "norm1", "ln_2": "norm2",
                 "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}  # fmt: skip
        _copy(state, p, b, pairs)
    model.load_state_dict(state)
    return model


def to_dino(source: nn.Module) -> nn.Module:
    model = DinoViT(IMAGE, PATCH, DIM, DEPTH, HEADS, CLASSES).eval()
    renames = {"patch_embed.proj.": "proj.", ".mlp.fc1.": ".mlp.0.", ".mlp.fc2.": ".mlp.2."}
    state = {}
    for key, value in source.state_dict().items():
        for old, new in renames.items():
            key = key.replace(old, new)
        state[key] = value
    model.load_state_dict(state)
    return model


CONVERTERS = {"hf_vit": to_hf_vit, "torchvision": to_torchvision, "dino_custom": to_dino}
