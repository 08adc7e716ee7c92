"""Tiny random CLIP / SigLIP / OpenCLIP families built from configs, with references by hand.

Each family is a :class:`tests.conftest.Family`: the default-loaded model, its vision tower's
attention read the independent way (HF eager ``output_attentions=True``, timm's non-fused path
through ``attn_drop``, OpenCLIP's ``nn.MultiheadAttention`` asked for its weights or its custom
``Attention`` recomputed from its weights) and, for pooling-head families, the pooling query's
attention recomputed by hand from the head's own parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from attnexplain.zoo.text import word_tokenizer
from tests.conftest import CLASSES, DEPTH, HEADS, HIDDEN, IMAGE, PATCH, Family, _hooked_reference

EMBED = 24  # projection width of the image–text models
CONTEXT = 12  # text context length
WORDS = ("a", "photo", "of", "the", "red", "green", "blue", "star", "disc", "square", "cross",
         "and", "small", "big", "dog", "cat")  # fmt: skip


def attention_by_hand(query: torch.Tensor, key: torch.Tensor, heads: int) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d))`` per head for ``(B, Lq, E)`` queries and ``(B, Lk, E)`` keys."""
    batch, num_queries, embed = query.shape
    head_dim = embed // heads
    q = query.reshape(batch, num_queries, heads, head_dim).transpose(1, 2)
    k = key.reshape(key.shape[0], key.shape[1], heads, head_dim).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-2, -1) / head_dim**0.5, dim=-1)


def mha_pooling_by_hand(mha: nn.MultiheadAttention, query: torch.Tensor, tokens: torch.Tensor):
    """An ``nn.MultiheadAttention`` pooling head written out: ``(probs (B, h, Q, N), output)``."""
    bias_q, bias_k, bias_v = mha.in_proj_bias.chunk(3)
    if mha._qkv_same_embed_dim:
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    query = query.expand(tokens.shape[0], -1, -1)
    query, key = F.linear(query, w_q, bias_q), F.linear(tokens, w_k, bias_k)
    probs = attention_by_hand(query, key, mha.num_heads)
    value = F.linear(tokens, w_v, bias_v)
    batch, length, _ = value.shape
    value = value.reshape(batch, length, mha.num_heads, -1).transpose(1, 2)
    mixed = (probs @ value).transpose(1, 2).reshape(batch, query.shape[1], -1)
    return probs, mha.out_proj(mixed)


def _eager_tower_reference(
    model: nn.Module, tower: Callable[[nn.Module], nn.Module]
) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    def reference(x: torch.Tensor) -> list[torch.Tensor]:
        eager = copy.deepcopy(model)
        eager.set_attn_implementation("eager")
        kwargs = {"output_attentions": True}
        if tuple(x.shape[-2:]) != (IMAGE, IMAGE):
            kwargs["interpolate_pos_encoding"] = True
        with torch.no_grad():
            return list(tower(eager)(pixel_values=x, **kwargs).attentions)

    return reference


def _siglip_pooling_reference(model: nn.Module, tower: Callable[[nn.Module], nn.Module]):
    def reference(x: torch.Tensor) -> torch.Tensor:
        vision = tower(model)
        kwargs = {"interpolate_pos_encoding": True} if tuple(x.shape[-2:]) != (IMAGE, IMAGE) else {}
        with torch.no_grad():
            hidden = vision(pixel_values=x, **kwargs).last_hidden_state  # after post_layernorm
            probs, _ = mha_pooling_by_hand(vision.head.attention, vision.head.probe, hidden)
        return probs[:, :, 0]

    return reference


def _hf_family(name: str) -> Family:
    import transformers as tf

    vision = dict(image_size=IMAGE, patch_size=PATCH, hidden_size=HIDDEN, num_hidden_layers=DEPTH,
                  num_attention_heads=HEADS, intermediate_size=2 * HIDDEN)  # fmt: skip
    tokenizer = word_tokenizer(WORDS)
    text = dict(vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=2,
                num_attention_heads=HEADS, intermediate_size=2 * HIDDEN,
                max_position_embeddings=CONTEXT, pad_token_id=0, bos_token_id=2,
                eos_token_id=3)  # fmt: skip
    pooling = None
    if name == "hf_clip_model":
        model = tf.CLIPModel(tf.CLIPConfig(vision_config=vision, text_config=text,
                                           projection_dim=EMBED))  # fmt: skip
        tower, prefix = (lambda m: m.vision_model), 1
    elif name == "hf_siglip_model":
        model = tf.SiglipModel(tf.SiglipConfig(vision_config=vision, text_config=text))
        tower, prefix = (lambda m: m.vision_model), 0
        pooling = _siglip_pooling_reference(model, tower)
    elif name == "hf_clip_projection":
        config = tf.CLIPVisionConfig(projection_dim=EMBED, **vision)
        model = tf.CLIPVisionModelWithProjection(config)
        tower, prefix, tokenizer = (lambda m: m.vision_model), 1, None
    elif name == "hf_siglip_vision":
        model = tf.SiglipVisionModel(tf.SiglipVisionConfig(**vision))
        tower, prefix, tokenizer = (lambda m: m), 0, None
        pooling = _siglip_pooling_reference(model, tower)
    elif name == "hf_siglip_classifier":
        config = tf.SiglipConfig(vision_config=vision, text_config=text, num_labels=CLASSES)
        model = tf.SiglipForImageClassification(config)
        tower, prefix, tokenizer = (lambda m: m.vision_model), 0, None
    else:
        raise KeyError(name)
    model.eval()
    return Family(
        name,
        model,
        _eager_tower_reference(model, tower),
        prefix,
        has_head=name == "hf_siglip_classifier",
        has_cls=prefix == 1,
        tokenizer=tokenizer,
        reference_pooling=pooling,
    )


def _open_clip_family(name: str) -> Family:
    import open_clip

    extra = {
        "open_clip": {},
        "open_clip_custom": {"block_type": "custom", "qk_norm": True},
        "open_clip_attn_pool": {"attentional_pool": True, "attn_pooler_queries": 3,
                                "attn_pooler_heads": HEADS},
    }[name]  # fmt: skip
    vision = dict(image_size=IMAGE, patch_size=PATCH, width=HIDDEN, layers=DEPTH,
                  head_width=HIDDEN // HEADS, mlp_ratio=2.0, **extra)  # fmt: skip
    text = dict(context_length=CONTEXT, vocab_size=49408, width=HIDDEN, heads=HEADS, layers=1)
    model = open_clip.CLIP(embed_dim=EMBED, vision_cfg=vision, text_cfg=text).eval()
    visual = model.visual
    attention = [block.attn for block in visual.transformer.resblocks]

    def read(module, args, kwargs, output):
        tokens = args[0]
        if isinstance(module, nn.MultiheadAttention):
            return module.forward(tokens, tokens, tokens, need_weights=True,
                                  average_attn_weights=False)[1]  # fmt: skip
        q, k, _ = F.linear(tokens, module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1)
        batch, length, _ = q.shape
        q, k = (t.reshape(batch, length, module.num_heads, -1).transpose(1, 2) for t in (q, k))
        q, k = module.ln_q(q), module.ln_k(k)
        return torch.softmax(q @ k.transpose(-2, -1) * module.scale, dim=-1)

    pooling = None
    if visual.attn_pool is not None:
        pool = visual.attn_pool

        def pooling(x: torch.Tensor) -> torch.Tensor:
            (tokens,) = _hooked_reference(visual, [pool], lambda m, a, kw, o: a[0])(x)
            with torch.no_grad():
                query = pool.ln_q(pool.query)[None]
                probs, _ = mha_pooling_by_hand(pool.attn, query, pool.ln_k(tokens))
            return probs[:, :, 0]  # pool_type 'tok': the first query's output is pooled

    return Family(name, model, _hooked_reference(visual, attention, read), 1, has_head=False,
                  tokenizer=open_clip.SimpleTokenizer(context_length=CONTEXT),
                  reference_pooling=pooling)  # fmt: skip


def _timm_siglip_family() -> Family:
    import timm.models.vision_transformer as tvt

    kwargs = dict(img_size=IMAGE, patch_size=PATCH, embed_dim=HIDDEN, depth=DEPTH, num_heads=HEADS,
                  num_classes=CLASSES, class_token=False, global_pool="map")  # fmt: skip
    model = tvt.VisionTransformer(**kwargs).eval()
    reference_model = tvt.VisionTransformer(dynamic_img_size=True, **kwargs).eval()
    for block in reference_model.blocks:
        block.attn.fused_attn = False
    reference_model.attn_pool.fused_attn = False
    hooked = _hooked_reference(
        reference_model, [b.attn.attn_drop for b in reference_model.blocks], lambda m, a, kw, o: o
    )

    def reference(x: torch.Tensor) -> list[torch.Tensor]:
        reference_model.load_state_dict(model.state_dict())
        return hooked(x)

    def pooling(x: torch.Tensor) -> torch.Tensor:
        reference_model.load_state_dict(model.state_dict())
        pool = reference_model.attn_pool
        (tokens,) = _hooked_reference(reference_model, [pool], lambda m, a, kw, o: a[0])(x)
        with torch.no_grad():
            query = pool.q(pool.latent)
            key, _ = pool.kv(tokens).chunk(2, dim=-1)
            return attention_by_hand(query, key, pool.num_heads)[:, :, 0]

    return Family("timm_siglip", model, reference, 0, has_cls=False, reference_pooling=pooling)


def build_multimodal_family(name: str) -> Family:
    """The family ``name`` of :data:`tests.conftest.MULTIMODAL_FAMILIES`."""
    torch.manual_seed(0)
    if name.startswith("hf_"):
        return _hf_family(name)
    if name.startswith("open_clip"):
        return _open_clip_family(name)
    if name == "timm_siglip":
        return _timm_siglip_family()
    raise KeyError(name)


# --- the quantities targets score, computed by hand from each model's own towers ---------------


def hand_image_embedding(family: Family, x: torch.Tensor) -> torch.Tensor:
    """The pooled image embedding ``(B, D)`` the way each library's docs compute it."""
    model, name = family.model, family.name
    if name == "hf_clip_model":
        return model.visual_projection(model.vision_model(pixel_values=x).pooler_output)
    if name in ("hf_siglip_model",):
        return model.vision_model(pixel_values=x).pooler_output
    if name == "hf_siglip_vision":
        return model(pixel_values=x).pooler_output
    if name == "hf_clip_projection":
        return model(pixel_values=x).image_embeds
    if name.startswith("open_clip"):
        return model.visual(x)
    if name == "hf_dinov2":
        return model(pixel_values=x).pooler_output
    raise KeyError(name)


def hand_text_embedding(family: Family, texts: list[str]) -> torch.Tensor:
    """The text embeddings ``(T, D)`` of ``texts``, tokenised the way each library trains."""
    model, tokenizer = family.model, family.tokenizer
    with torch.no_grad():
        if family.name == "hf_clip_model":
            encoded = tokenizer(texts, padding=True, return_tensors="pt")
            pooled = model.text_model(**encoded).pooler_output
            return model.text_projection(pooled)
        if family.name == "hf_siglip_model":
            encoded = tokenizer(
                texts, padding="max_length", max_length=CONTEXT, return_tensors="pt"
            )
            return model.text_model(input_ids=encoded["input_ids"]).pooler_output
        return model.encode_text(tokenizer(texts))


def hand_logits(family: Family, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``exp(logit_scale) · cos(image, text)`` (+ SigLIP's bias): ``(B, T)``."""
    model = family.model
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    logits = image @ text.T * model.logit_scale.exp()
    bias = getattr(model, "logit_bias", None)
    return logits if bias is None else logits + bias


class ScoreWrapper(nn.Module):
    """A model whose output ``(B, K)`` is ``score(image_embedding(x))`` computed by hand; it
    holds the family's model so the same attention and layers are explained."""

    def __init__(self, family: Family, score: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = family.model
        self.family = family
        self.score = score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(hand_image_embedding(self.family, x))


def wrapper_adapter(wrapper: ScoreWrapper):
    """The wrapper explained through the custom-model protocol, with the family's attention
    layers named by hand and its pooling head given explicitly."""
    from attnexplain.capture import CustomAdapter, PoolingHead

    model, name = wrapper.model, wrapper.family.name
    pooling = None
    if name.startswith("open_clip"):
        attention = [block.attn for block in model.visual.transformer.resblocks]
        if model.visual.attn_pool is not None:
            pooling = model.visual.attn_pool.attn
    else:
        tower = model.vision_model if hasattr(model, "vision_model") else model
        layers = tower.encoder.layer if name == "hf_dinov2" else tower.encoder.layers
        attention = [
            layer.attention if name == "hf_dinov2" else layer.self_attn for layer in layers
        ]
        head = getattr(tower, "head", None)
        pooling = None if head is None else head.attention

    class WrapperAdapter(CustomAdapter):
        @property
        def pooling_head(self):
            return None if pooling is None else PoolingHead(pooling)

    cls_index = 0 if wrapper.family.has_cls else None
    return WrapperAdapter(wrapper, attention_modules=attention, cls_index=cls_index)
