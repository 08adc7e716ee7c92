"""Token norms per block: equal to each family's own hidden states; hooks gone afterwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnexplain.capture import FullAttentionProbe, UnsupportedModelError, resolve_adapter
from attnexplain.capture.tokens import (
    capture_token_norms,
    drop_keys,
    num_register_tokens,
    register_indices,
)
from tests.capture.test_session import hook_count, snapshot
from tests.conftest import ALL_FAMILIES, shared_family
from tests.diagnostics.helpers import family_blocks, planted, reference_norms
from tests.models.dino_vit import Attention

# Other input sizes where the families' own forward takes them as is (HF interpolates).
CASES = [(name, (32, 32)) for name in [*ALL_FAMILIES, "hf_clip_model", "hf_siglip_model",
                                         "open_clip", "open_clip_attn_pool"]] + [
    (name, (32, 48)) for name in ("hf_vit", "hf_dinov2_registers", "dino_custom")
]  # fmt: skip


@pytest.mark.parametrize(("name", "size"), CASES)
def test_norms_match_each_familys_hidden_states(name, size):
    family = shared_family(name)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(3))
    prefix = family.num_prefix_tokens
    with planted(family, [[prefix + 2], [prefix + 4, prefix + 7]]):
        expected = reference_norms(family, x)
        captured = capture_token_norms(resolve_adapter(family.model), x)
    assert (
        captured.norms.shape == expected.shape == (2, 3, prefix + (size[0] // 8) * (size[1] // 8))
    )
    assert captured.norms.dtype == torch.float32
    torch.testing.assert_close(captured.norms.double(), expected, rtol=1e-5, atol=1e-4)
    assert captured.layout.num_prefix_tokens == prefix


def test_the_probe_rides_along_in_the_same_forward(fresh_family):
    family = fresh_family("hf_vit")
    calls = []
    family_blocks(family)[0].register_forward_hook(lambda *_: calls.append(1))
    probe = FullAttentionProbe(layers=[1])
    x = torch.randn(1, 3, 32, 32)
    captured = capture_token_norms(resolve_adapter(family.model), x, probe)
    assert len(calls) == 1
    torch.testing.assert_close(probe.attentions[1], family.reference_attentions(x)[1])
    assert captured.norms.shape == (1, 3, 17)


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("name", ["hf_vit", "hf_dinov2_registers", "timm", "torchvision",
                                  "dino_custom"])  # fmt: skip
def test_hooks_removed_after_success_and_after_a_raising_forward(fresh_family, name):
    family = fresh_family(name)
    model = family.model
    adapter = resolve_adapter(model)
    before = snapshot(model)
    capture_token_norms(adapter, torch.randn(1, 3, 32, 32))
    assert snapshot(model)[4] == before[4] == 0

    def explode(*_):
        raise Boom("raised in block 1, after block 0's norms were taken")

    family_blocks(family)[1].register_forward_hook(explode)
    with pytest.raises(Boom):
        capture_token_norms(adapter, torch.randn(1, 3, 32, 32))
    assert hook_count(model) == 1  # only the raising hook itself
    assert torch._C._len_torch_function_stack() == 0


class _FlatViT(nn.Module):
    """Attention layers listed directly in a ModuleList: no block holds the residual stream."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, kernel_size=8, stride=8)
        self.attentions = nn.ModuleList([Attention(16, 2) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        for attention in self.attentions:
            tokens = tokens + attention(tokens)[0]
        return tokens.mean(1)


class _DictBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = Attention(16, 2)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"hidden": tokens + self.attn(tokens)[0]}


class _DictViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, kernel_size=8, stride=8)
        self.blocks = nn.ModuleList([_DictBlock(), _DictBlock()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens)["hidden"]
        return tokens.mean(1)


def test_attention_without_a_block_is_refused():
    adapter = resolve_adapter(_FlatViT())
    with pytest.raises(UnsupportedModelError, match="sits in no transformer block"):
        capture_token_norms(adapter, torch.randn(1, 3, 32, 32))


def test_block_returning_no_hidden_states_is_refused_and_hooks_removed():
    model = _DictViT()
    with pytest.raises(UnsupportedModelError, match=r"returned <class 'dict'>, not \(B=1"):
        capture_token_norms(resolve_adapter(model), torch.randn(1, 3, 32, 32))
    assert hook_count(model) == 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [("hf_vit", []), ("hf_deit_distilled", []), ("hf_dinov2_registers", [1, 2, 3]),
     ("timm_registers", [1, 2]), ("timm_no_class_token", []), ("torchvision", []),
     ("dino_custom", [])],
)  # fmt: skip
def test_register_positions(name, expected):
    family = shared_family(name)
    adapter = resolve_adapter(family.model)
    layout = capture_token_norms(adapter, torch.randn(1, 3, 32, 32)).layout
    assert register_indices(adapter, layout) == expected
    assert num_register_tokens(adapter) == len(expected)


def test_declaring_more_registers_than_prefix_tokens_is_refused(fresh_family):
    family = fresh_family("dino_custom")
    family.model.num_register_tokens = 4
    adapter = resolve_adapter(family.model)
    layout = capture_token_norms(adapter, torch.randn(1, 3, 32, 32)).layout
    with pytest.raises(UnsupportedModelError, match="declares 4 register tokens but"):
        register_indices(adapter, layout)


def test_drop_keys_redistributes_in_proportion():
    rows = torch.tensor([[[0.5, 0.25, 0.125, 0.125]], [[0.1, 0.2, 0.3, 0.4]]])  # (2, 1, 4)
    excluded = torch.tensor([[False, True, False, False], [True, False, False, True]])
    out = drop_keys(rows, excluded)
    expected = torch.tensor([[[0.5 / 0.75, 0.0, 0.125 / 0.75, 0.125 / 0.75]],
                             [[0.0, 0.2 / 0.5, 0.3 / 0.5, 0.0]]])  # fmt: skip
    torch.testing.assert_close(out, expected)
    assert rows[0, 0, 1] == 0.25  # the input is left alone
    assert drop_keys(rows, None) is rows


def test_drop_keys_keeps_each_rows_sum_and_zeroes_rows_with_no_kept_mass():
    rows = torch.tensor([[[2.0, 1.0, 1.0], [0.0, 3.0, 0.0]]])  # e.g. max-fused rows
    out = drop_keys(rows, torch.tensor([[False, True, False]]))
    torch.testing.assert_close(out, torch.tensor([[[8 / 3, 0.0, 4 / 3], [0.0, 0.0, 0.0]]]))


@pytest.mark.parametrize(
    ("excluded", "error", "message"),
    [
        (torch.ones(1, 3, dtype=torch.bool), ValueError, "drops every token of sample 0"),
        (torch.zeros(1, 4, dtype=torch.bool), ValueError, r"\(B, N\) = \(1, 3\) mask"),
        (torch.zeros(1, 3), ValueError, "must return a bool tensor"),
    ],
)
def test_drop_keys_rejects_bad_masks(excluded, error, message):
    with pytest.raises(error, match=message):
        drop_keys(torch.rand(1, 2, 3), excluded)


def test_the_references_leave_the_shared_models_without_hooks():
    family = shared_family("hf_vit")
    reference_norms(family, torch.randn(1, 3, 32, 32))
    assert hook_count(family.model) == 0
