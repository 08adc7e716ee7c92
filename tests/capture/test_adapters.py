"""Structure the adapters read from a model: the transformer block of each attention layer."""

from __future__ import annotations

import torch
from torch import nn

from attnexplain.capture import resolve_adapter
from attnexplain.capture.adapters import find_blocks
from tests.conftest import IMAGE


def test_each_block_holds_exactly_its_attention_and_outputs_the_token_stream(family):
    adapter = resolve_adapter(family.model)
    blocks = adapter.blocks
    assert len(blocks) == adapter.num_layers
    for index, block in enumerate(blocks):
        inside = {id(m) for m in block.modules()}
        owned = [i for i, a in enumerate(adapter.attention_modules) if id(a) in inside]
        assert owned == [index]
        assert block is not family.model and not isinstance(block, nn.ModuleList)
    outputs = []
    handles = [b.register_forward_hook(lambda m, a, o: outputs.append(o)) for b in blocks]
    try:
        with torch.no_grad():
            adapter.forward(torch.rand(2, 3, IMAGE, IMAGE))
    finally:
        for handle in handles:
            handle.remove()
    tokens = [o[0] if isinstance(o, tuple) else o for o in outputs]
    num_tokens = family.num_prefix_tokens + (IMAGE // 8) ** 2
    # torchvision's encoder runs (B, N, D) batch-first like the others.
    assert [tuple(t.shape[:2]) for t in tokens] == [(2, num_tokens)] * len(blocks)


def test_a_single_layer_model_keeps_its_block_not_the_whole_model():
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(4, 12)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(4)
            self.attn = Attention()

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([Block()])

    model = Model()
    assert find_blocks(model, [model.blocks[0].attn]) == [model.blocks[0]]
