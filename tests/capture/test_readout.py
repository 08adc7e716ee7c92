"""``ModelAdapter.readout``: the model's own tail applied to any block's tokens.

The references are each family's tail written out by hand from its source (final norm, pooling,
head); the last block's tokens must give back the model's own output exactly.
"""

from __future__ import annotations

import pytest
import torch

from attnexplain.capture import CustomAdapter, UnsupportedModelError, resolve_adapter
from tests.conftest import ALL_FAMILIES, DEPTH, shared_family


def _tail(name: str, model: torch.nn.Module, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each family's forward after its last block, by hand."""
    if name == "hf_vit":
        return {"logits": model.classifier(model.vit.layernorm(tokens)[:, 0])}
    if name == "hf_deit_distilled":
        normed = model.deit.layernorm(tokens)
        cls, distillation = (
            model.cls_classifier(normed[:, 0]),
            model.distillation_classifier(normed[:, 1]),
        )
        return {"logits": (cls + distillation) / 2, "cls_logits": cls,
                "distillation_logits": distillation}  # fmt: skip
    if name == "hf_vit_backbone":
        normed = model.layernorm(tokens)
        return {"last_hidden_state": normed, "pooler_output": model.pooler(normed)}
    if name == "hf_dinov2_classifier":  # the CLS token next to the mean of the patch tokens
        normed = model.dinov2.layernorm(tokens)
        pooled = torch.cat([normed[:, 0], normed[:, 1:].mean(dim=1)], dim=1)
        return {"logits": model.classifier(pooled)}
    if name in ("hf_dinov2", "hf_dinov2_registers"):
        normed = model.layernorm(tokens)
        return {"last_hidden_state": normed, "pooler_output": normed[:, 0]}
    if name == "hf_clip":
        pooled = model.post_layernorm(tokens[:, 0])
        return {"last_hidden_state": tokens, "pooler_output": pooled}
    if name == "timm_no_class_token":  # global_pool="avg": fc_norm after the average
        return {"logits": model.head(model.fc_norm(model.norm(tokens).mean(dim=1)))}
    if name.startswith("timm"):
        return {"logits": model.head(model.fc_norm(model.norm(tokens)[:, 0]))}
    if name == "torchvision":
        return {"logits": model.heads(model.encoder.ln(tokens)[:, 0])}
    return {"logits": model.head(model.norm(tokens)[:, 0])}  # dino_custom


def _fields(output) -> dict[str, torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return {"logits": output}
    return {key: value for key, value in output.items() if isinstance(value, torch.Tensor)}


def _dino_readout(model):
    return lambda tokens: model.head(model.norm(tokens)[:, 0])


def _adapter(name: str, model: torch.nn.Module):
    if name == "dino_custom":
        return CustomAdapter(model, readout=_dino_readout(model))
    return resolve_adapter(model)


def _block_outputs(adapter, x: torch.Tensor) -> tuple[list[torch.Tensor], object]:
    outputs: list[torch.Tensor] = []
    handles = [block.register_forward_hook(lambda m, a, o: outputs.append(o))
               for block in adapter.blocks]  # fmt: skip
    try:
        with torch.no_grad():
            output = adapter.forward(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, output


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_readout_of_every_block_is_the_models_own_tail(name):
    family = shared_family(name)
    adapter = _adapter(name, family.model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    outputs, output = _block_outputs(adapter, x)
    assert len(outputs) == DEPTH
    with torch.no_grad():
        for layer, tokens in enumerate(outputs):
            got, expected = _fields(adapter.readout(tokens)), _tail(name, family.model, tokens)
            assert got.keys() == expected.keys(), layer
            for key in expected:
                torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
        last = adapter.readout(outputs[-1])
    assert type(last) is type(output)
    for key, value in _fields(output).items():
        torch.testing.assert_close(_fields(last)[key], value, rtol=1e-5, atol=1e-6)
    assert all("forward" not in vars(block) for block in adapter.blocks)


def test_readout_keeps_the_autograd_graph_to_the_tokens():
    adapter = resolve_adapter(shared_family("hf_deit_distilled").model)
    tokens = torch.randn(2, 17, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(adapter.logits(adapter.readout(tokens))[:, 1].sum(), tokens)
    assert grad[:, :2].abs().sum() > 0  # CLS and distillation tokens feed the heads
    assert torch.count_nonzero(grad[:, 2:]) == 0  # the patch tokens do not


def test_hf_readout_restores_the_blocks_when_the_tail_raises(fresh_family):
    model = fresh_family("hf_vit").model
    adapter = resolve_adapter(model)
    own = object()
    vars(adapter.blocks[0])["forward"] = own  # e.g. an accelerate hook's instance forward
    try:
        with pytest.raises(RuntimeError):
            adapter.readout(torch.randn(2, 17, 7))  # wrong width: the final norm raises
        assert vars(adapter.blocks[0])["forward"] is own
        assert all("forward" not in vars(block) for block in adapter.blocks[1:])
    finally:
        del vars(adapter.blocks[0])["forward"]


def test_custom_models_need_a_readout_callable(fresh_family):
    model = fresh_family("dino_custom").model
    with pytest.raises(UnsupportedModelError, match=r"CustomAdapter\(model, readout=fn\)"):
        resolve_adapter(model).readout(torch.randn(1, 17, 32))
    with pytest.raises(TypeError, match="readout must be a callable"):
        CustomAdapter(model, readout="head")
