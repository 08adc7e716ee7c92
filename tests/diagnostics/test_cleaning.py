"""Cleaned maps: raw attention and rollout with the high-norm tokens left out, vs naive references.

The references below are written from the definition (zero the excluded keys, rescale each row
to its former sum), per sample and layer with explicit loops, on the families' reference
attentions.
"""

from __future__ import annotations

import pytest
import torch

from attnexplain import AttentionRollout, RawCLSAttention
from attnexplain.diagnostics import ArtifactDiagnostics
from tests.conftest import shared_family
from tests.diagnostics.helpers import planted, reference_attentions

FAMILIES = ["hf_vit", "hf_dinov2_registers", "timm_registers", "torchvision", "dino_custom"]
PLANTED_PATCHES = [[5], [0, 13]]


def _renormalised_without(row: torch.Tensor, excluded: list[int]) -> torch.Tensor:
    """One attention row ``(N,)``, the excluded keys zeroed and the rest rescaled (float64)."""
    row = row.double().clone()
    total = float(row.sum())
    for token in excluded:
        row[token] = 0.0
    return row * (total / float(row.sum()))


def _raw_reference(attentions, excluded, prefix):
    last = attentions[-1]
    batch, heads = last.shape[:2]
    maps = torch.zeros(batch, heads, last.shape[-1] - prefix, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            maps[b, h] = _renormalised_without(last[b, h, 0], excluded[b])[prefix:]
    return maps.reshape(batch, heads, 4, 4)


def _rollout_reference(attentions, excluded, prefix):
    result = []
    for b in range(attentions[0].shape[0]):
        joint = None
        for attention in attentions:
            fused = attention[b].double().mean(dim=0)
            cleaned = torch.stack([_renormalised_without(r, excluded[b]) for r in fused])
            step = cleaned + torch.eye(fused.shape[0], dtype=torch.float64)
            step = step / step.sum(dim=-1, keepdim=True)
            joint = step if joint is None else step @ joint
        result.append(joint[0, prefix:].reshape(4, 4))
    return torch.stack(result).unsqueeze(1)


@pytest.mark.parametrize("name", FAMILIES)
def test_cleaned_raw_attention_and_rollout_match_the_references(name):
    family = shared_family(name)
    prefix = family.num_prefix_tokens
    tokens = [[prefix + p for p in image] for image in PLANTED_PATCHES]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with planted(family, tokens):
        detector = ArtifactDiagnostics(family.model).high_norm_tokens
        raw = RawCLSAttention(family.model, head_fusion=None, exclude_tokens=detector)
        rollout = AttentionRollout(family.model, exclude_tokens=detector)
        raw_maps = raw.attribute(x, upsample=False)
        rollout_maps = rollout.attribute(x, upsample=False)
        attentions = reference_attentions(family, x)
    torch.testing.assert_close(
        raw_maps.double(), _raw_reference(attentions, tokens, prefix), rtol=1e-4, atol=1e-6
    )
    torch.testing.assert_close(
        rollout_maps.double(), _rollout_reference(attentions, tokens, prefix), rtol=1e-4,
        atol=1e-6,
    )  # fmt: skip
    for b, image in enumerate(PLANTED_PATCHES):  # the excluded positions are 0 in both maps
        assert raw_maps[b].flatten(1)[:, image].abs().max() == 0
        assert rollout_maps[b].flatten(1)[:, image].abs().max() == 0


def test_without_exclusion_the_maps_are_unchanged():
    model = shared_family("hf_vit").model
    x = torch.randn(2, 3, 32, 32)
    nothing = lambda inputs: torch.zeros(inputs.shape[0], 17, dtype=torch.bool)  # noqa: E731
    torch.testing.assert_close(
        RawCLSAttention(model, exclude_tokens=nothing).attribute(x),
        RawCLSAttention(model).attribute(x),
    )
    torch.testing.assert_close(
        AttentionRollout(model, exclude_tokens=nothing).attribute(x),
        AttentionRollout(model).attribute(x),
    )


def test_a_mask_of_the_wrong_shape_is_refused():
    model = shared_family("hf_vit").model
    wrong = lambda inputs: torch.zeros(inputs.shape[0], 16, dtype=torch.bool)  # noqa: E731
    with pytest.raises(ValueError, match=r"\(B, N\) = \(1, 17\) mask over all tokens"):
        RawCLSAttention(model, exclude_tokens=wrong).attribute(torch.randn(1, 3, 32, 32))
