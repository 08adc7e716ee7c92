"""The capture leaves the model exactly as it found it, also when the forward raises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnexplain import AttentionRollout, MeanAttentionDistance, RawCLSAttention
from attnexplain.capture import FullAttentionProbe, capture_attention, resolve_adapter
from tests.conftest import FIXED_SIZE_FAMILIES

METHODS = {
    "raw": lambda m: RawCLSAttention(m, head_fusion=None),
    "rollout": lambda m: AttentionRollout(m, discard_ratio=0.2),
    "mad": lambda m: MeanAttentionDistance(m),
}
FAMILIES = ["hf_vit", "hf_dinov2_registers", "timm", "torchvision", "dino_custom",
            "hf_clip_model", "hf_siglip_model", "open_clip_attn_pool"]  # fmt: skip


def _size(name: str) -> tuple[int, int]:
    """A non-square size where the model interpolates its position embedding."""
    return (32, 32) if name in FIXED_SIZE_FAMILIES else (32, 48)


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(getattr(m, "_forward_hooks_with_kwargs", {}))
        for m in model.modules()
    )  # fmt: skip


def flags(model: nn.Module) -> dict:
    state = {}
    for name, module in model.named_modules():
        for attribute in ("training", "fused_attn", "dynamic_img_size", "strict_img_size",
                          "flatten", "output_fmt"):  # fmt: skip
            if hasattr(module, attribute):
                state[f"{name}.{attribute}"] = getattr(module, attribute)
    if hasattr(model, "config"):
        state["attn_implementation"] = model.config._attn_implementation
    state["mha_fastpath"] = torch.backends.mha.get_fastpath_enabled()
    return state


def snapshot(model: nn.Module) -> tuple:
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: p.grad for n, p in model.named_parameters()},
        flags(model),
        hook_count(model),
    )


def assert_unchanged(model: nn.Module, before: tuple) -> None:
    state, requires_grad, grads, flag_state, hooks = before
    after = snapshot(model)
    assert after[0].keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(after[0][key], value), key
    assert after[1] == requires_grad
    assert all(g is None for g in after[2].values()) and all(g is None for g in grads.values())
    assert after[3] == flag_state
    assert after[4] == hooks
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("name", FAMILIES)
def test_model_restored_after_success(fresh_family, name, method):
    model = fresh_family(name).model.train()
    before = snapshot(model)
    size = _size(name)
    METHODS[method](model).attribute(torch.randn(1, 3, *size))
    assert_unchanged(model, before)
    assert model.training


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("name", FAMILIES)
def test_model_restored_after_exception_inside_forward(fresh_family, name, method):
    model = fresh_family(name).model.eval()
    adapter = resolve_adapter(model)
    target = adapter.attention_modules[1]

    def explode(*_):
        raise Boom("raised inside the forward, after layer 0's attention")

    user_hook = target.register_forward_hook(explode)
    before = snapshot(model)
    size = _size(name)
    with pytest.raises(Boom):
        METHODS[method](model).attribute(torch.randn(1, 3, *size))
    assert_unchanged(model, before)
    user_hook.remove()
    assert hook_count(model) == 0


def test_timm_switches_restored_after_exception(fresh_family):
    model = fresh_family("timm").model
    for block in model.blocks:
        block.attn.fused_attn = False
    model.blocks[2].register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(Boom("x")))
    before = flags(model)
    with pytest.raises(Boom):
        AttentionRollout(model).attribute(torch.randn(1, 3, 40, 48))
    assert flags(model) == before
    assert not model.dynamic_img_size and model.patch_embed.strict_img_size


def test_full_probe_keeps_graph_for_gradients(fresh_family):
    model = fresh_family("hf_vit").model
    probe = FullAttentionProbe(requires_grad=True)
    adapter = resolve_adapter(model)
    x = torch.randn(1, 3, 32, 32)
    result = capture_attention(adapter, probe, x)
    adapter.logits(result.output)[0, 1].backward()
    assert all(probe.attentions[layer].grad is not None for layer in range(3))
    model.zero_grad(set_to_none=True)


def test_layout_reports_prefix_tokens_and_grid(family):
    size = (32, 32) if family.name == "torchvision" else (32, 48)
    probe = FullAttentionProbe(layers=[0])
    with torch.no_grad():
        layout = capture_attention(
            resolve_adapter(family.model), probe, torch.randn(1, 3, *size)
        ).layout
    assert layout.num_prefix_tokens == family.num_prefix_tokens
    assert layout.grid == (size[0] // 8, size[1] // 8)
    assert layout.patch_size == (8, 8)
    assert layout.cls_index == (0 if family.has_cls else None)
