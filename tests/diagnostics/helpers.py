"""Models with planted high-norm tokens, and independent readings of their token norms.

A planted token is a position whose hidden state is multiplied by ``scale`` at the output of one
middle block (a forward hook on the family's own block module, found by path, not by the
library): a high-norm token by construction, carried by the residual stream to the output, as
the artifacts of Darcet et al. appear mid-network.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from tests.conftest import Family

PLANT_LAYER = 1
PLANT_SCALE = 50.0


def family_blocks(family: Family) -> list[nn.Module]:
    """The transformer blocks, by each family's own attribute path."""
    model = family.model
    if family.name.startswith("open_clip"):
        return list(model.visual.transformer.resblocks)
    if family.name in ("hf_clip_model", "hf_siglip_model"):  # the vision tower's, not the text's
        return list(model.vision_model.encoder.layers)
    if family.name.startswith("hf_"):  # the encoder's ModuleList: "layer" or "layers" by version
        lists = [
            module
            for name, module in model.named_modules()
            if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1].startswith("layer")
        ]
        return list(lists[0])
    if family.name.startswith("timm") or family.name == "dino_custom":
        return list(model.blocks)
    if family.name == "torchvision":
        return list(model.encoder.layers)
    raise KeyError(family.name)


@contextmanager
def planted(
    family: Family, tokens: Sequence[Sequence[int]], *, layer: int = PLANT_LAYER,
    scale: float = PLANT_SCALE,
) -> Iterator[None]:  # fmt: skip
    """Scale the hidden states of ``tokens[b]`` (token indices, prefix first) of sample ``b``."""

    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for sample, indices in enumerate(tokens):
            output[sample, list(indices)] *= scale
        return output

    # prepend: the planting is part of the model, seen by every other hook (HF records its
    # hidden states with forward hooks of its own).
    handle = family_blocks(family)[layer].register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


def reference_hidden_states(family: Family, x: torch.Tensor) -> list[torch.Tensor]:
    """Each block's output ``(B, N, D)``, read the family's own way (no library code)."""
    model = family.model
    with torch.no_grad():
        if family.name.startswith("open_clip"):  # (B, N, D) block outputs, by forward hooks
            states: list[torch.Tensor] = []
            handles = [block.register_forward_hook(lambda _m, _a, out: states.append(out))
                       for block in family_blocks(family)]  # fmt: skip
            try:
                model.visual(x)
            finally:
                for handle in handles:
                    handle.remove()
            return states
        if family.name in ("hf_clip_model", "hf_siglip_model"):
            output = copy.deepcopy(model).vision_model(pixel_values=x, output_hidden_states=True)
            return list(output.hidden_states[1:])
        if family.name.startswith("hf_"):
            # A copy (with the planting hook): transformers records hidden states with hooks it
            # leaves on the model, and the shared models must stay hook-free.
            resize = {"interpolate_pos_encoding": True} if x.shape[-2:] != (32, 32) else {}
            output = copy.deepcopy(model)(pixel_values=x, output_hidden_states=True, **resize)
            return list(output.hidden_states[1:])
        if family.name == "torchvision":
            tokens = model._process_input(x)
            tokens = torch.cat([model.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)
            tokens = model.encoder.dropout(tokens + model.encoder.pos_embedding)
        elif family.name.startswith("timm"):
            tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
        else:
            tokens = model.prepare_tokens(x)
        states = []
        for block in family_blocks(family):
            tokens = block(tokens)
            states.append(tokens)
        return states


def reference_norms(family: Family, x: torch.Tensor) -> torch.Tensor:
    """``(B, layers, N)`` L2 norms of :func:`reference_hidden_states`, in float64."""
    states = reference_hidden_states(family, x)
    return torch.stack([state.double().norm(dim=-1) for state in states], dim=1)


def reference_attentions(family: Family, x: torch.Tensor) -> list[torch.Tensor]:
    """Full attention probabilities per layer of the model as it runs now (planting included).

    The conftest references already run the planted model (HF deep-copies it with its hooks;
    torchvision and the DINO module hook the model itself); timm's runs a separate model, so
    here an unfused deep copy of this one is read through ``attn_drop`` the same way.
    """
    if not family.name.startswith("timm"):
        return family.reference_attentions(x)
    unfused = copy.deepcopy(family.model)
    found: list[torch.Tensor] = []
    handles = []
    for block in unfused.blocks:
        block.attn.fused_attn = False
        handles.append(block.attn.attn_drop.register_forward_hook(
            lambda _m, _a, output: found.append(output)))  # fmt: skip
    with torch.no_grad():
        unfused(x)
    for handle in handles:
        handle.remove()
    return found
