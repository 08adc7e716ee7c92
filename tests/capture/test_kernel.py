"""The streaming kernel returns SDPA's output and the exact probabilities, chunk by chunk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnexplain.capture import kernel
from attnexplain.capture.kernel import probed_attention
from attnexplain.capture.probes import Rows


def qkv(dtype=torch.float32, batch=2, heads=3, tokens=17, dim=8):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, heads, tokens, dim, generator=g).to(dtype) for _ in range(3)]


def collect():
    chunks = []
    return chunks, lambda probs, start: chunks.append((start, probs.clone()))


def reference_probs(q, k, scale=None, mask=None):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = q.double() @ k.double().transpose(-2, -1) * scale
    if mask is not None:
        scores = (
            scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        )
    return scores.softmax(-1)


@pytest.mark.parametrize("chunk_bytes", [kernel.CHUNK_BYTES, 2 * 3 * 17 * 4 * 5])
def test_all_rows_match_sdpa_and_reference(monkeypatch, chunk_bytes):
    monkeypatch.setattr(kernel, "CHUNK_BYTES", chunk_bytes)
    q, k, v = qkv()
    chunks, consume = collect()
    out = probed_attention(q, k, v, rows=Rows.ALL, consume=consume, cls_index=0, scale=0.3)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.3))
    probs = torch.cat([c for _, c in chunks], dim=2)
    assert [s for s, _ in chunks] == sorted(s for s, _ in chunks)
    if chunk_bytes < kernel.CHUNK_BYTES:
        assert len(chunks) == 4  # 17 rows in chunks of 5
    torch.testing.assert_close(probs.double(), reference_probs(q, k, 0.3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_masks(kind):
    q, k, v = qkv()
    mask = torch.rand(2, 1, 17, 17, generator=torch.Generator().manual_seed(1)) > 0.3
    mask |= torch.eye(17, dtype=torch.bool)
    if kind == "additive":
        mask = torch.zeros(mask.shape).masked_fill(~mask, -1e4)
    chunks, consume = collect()
    out = probed_attention(q, k, v, rows=Rows.ALL, consume=consume, cls_index=0, attn_mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    torch.testing.assert_close(
        chunks[0][1].double(), reference_probs(q, k, mask=mask), rtol=1e-5, atol=1e-6
    )


def test_cls_row_only_keeps_fused_output():
    q, k, v = qkv()
    chunks, consume = collect()
    out = probed_attention(q, k, v, rows=Rows.CLS, consume=consume, cls_index=0)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    ((start, row),) = chunks
    assert start == 0 and row.shape == (2, 3, 1, 17)
    torch.testing.assert_close(row.double(), reference_probs(q, k)[:, :, :1], rtol=1e-5, atol=1e-6)


def test_low_precision_inputs_give_fp32_probabilities():
    q, k, v = qkv(torch.bfloat16)
    chunks, consume = collect()
    out = probed_attention(q, k, v, rows=Rows.ALL, consume=consume, cls_index=0)
    assert out.dtype == torch.bfloat16 and chunks[0][1].dtype == torch.float32
    torch.testing.assert_close(chunks[0][1].double(), reference_probs(q, k), atol=1e-6, rtol=1e-5)


def test_gradient_path_is_in_graph():
    q, k, v = (t.requires_grad_() for t in qkv())
    chunks = []
    out = probed_attention(
        q, k, v, rows=Rows.ALL, consume=lambda p, s: chunks.append(p), cls_index=0,
        requires_grad=True,
    )  # fmt: skip
    chunks[0].retain_grad()
    out.sum().backward()
    assert chunks[0].grad is not None and q.grad is not None


def test_autocast_bf16_maps_close_to_fp32(fresh_family):
    from attnexplain import AttentionRollout

    model = fresh_family("hf_vit").model
    x = torch.randn(1, 3, 32, 32)
    exact = AttentionRollout(model).attribute(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = AttentionRollout(model).attribute(x)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, exact, atol=2e-3, rtol=5e-2)
