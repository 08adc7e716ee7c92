"""Self-attention computed once, in query chunks, with the probabilities streamed to a probe.

The kernel stands in for ``F.scaled_dot_product_attention`` inside a captured layer. It returns
the same output (up to float rounding) and hands the probabilities the probe asked for to it
chunk by chunk, so a layer's full ``(B, heads, N, N)`` attention is never materialised unless the
probe keeps it. Scores, softmax and reductions run in fp32 whatever the input dtype (autocast).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from attnexplain.capture.probes import Rows

#: Bytes of fp32 scores per chunk: big enough for efficient matmuls (over a hundred query rows of
#: ViT-B at 896 px), small enough to stay in cache hierarchies and to keep the transient memory
#: (scores, probabilities, a fused copy) far below one layer's ``N × N`` map at large ``N``.
CHUNK_BYTES = 8 * 2**20

Consume = Callable[[torch.Tensor, int], None]


def full_precision(device: torch.device) -> torch.autocast:
    """A region where autocast is off, so fp32 tensors stay fp32 (scores, softmax, reductions)."""
    return torch.autocast(device_type=device.type, enabled=False)


def _additive_mask(attn_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if attn_mask is None:
        return None
    if attn_mask.dtype == torch.bool:
        return torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device).masked_fill(
            ~attn_mask, float("-inf")
        )
    return attn_mask.to(dtype)


def _scores(
    query: torch.Tensor, key_t: torch.Tensor, scale: float, mask: torch.Tensor | None, rows: slice
) -> torch.Tensor:
    scores = torch.matmul(query[:, :, rows].float(), key_t)
    scores = scores.mul_(scale) if not scores.requires_grad else scores * scale
    if mask is not None:
        mask_rows = mask.expand(*scores.shape[:2], query.shape[2], -1)[:, :, rows]
        scores = scores + mask_rows
    return scores


def probed_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    rows: Rows,
    consume: Consume,
    cls_index: int | None,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    requires_grad: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention that also streams its probabilities to ``consume``.

    Args:
        query: ``(B, heads, N, d)``.
        key: ``(B, heads, N, d)``.
        value: ``(B, heads, N, dv)``.
        rows: which query rows ``consume`` needs (:class:`Rows.CLS` computes just that row and
            leaves the output to the fused kernel).
        consume: called as ``consume(probs (B, heads, R, N) fp32, row_start)``.
        cls_index: the CLS token's position (needed for ``Rows.CLS``).
        attn_mask: boolean (True = attend) or additive mask broadcastable to ``(B, heads, N, N)``.
        dropout_p: attention dropout, applied to the output path only (the probe sees the
            probabilities before dropout).
        scale: score scale, ``d ** -0.5`` when ``None``.
        requires_grad: compute full probabilities inside the autograd graph (one chunk).

    Returns:
        ``(B, heads, N, dv)`` attention output in ``query``'s dtype.
    """
    with full_precision(query.device):
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        mask = _additive_mask(attn_mask, torch.float32)
        num_queries = query.shape[2]

        if rows is Rows.CLS and not requires_grad:
            output = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale
            )
            if cls_index is not None:
                with torch.no_grad():
                    row = slice(cls_index, cls_index + 1)
                    scores = _scores(query, key.float().transpose(-2, -1), scale, mask, row)
                    consume(torch.softmax(scores, dim=-1), cls_index)
            return output

        key_t = key.float().transpose(-2, -1)
        value_f = value.float()
        if requires_grad:
            probs = torch.softmax(_scores(query, key_t, scale, mask, slice(None)), dim=-1)
            consume(probs, 0)
            dropped = F.dropout(probs, p=dropout_p) if dropout_p > 0 else probs
            return torch.matmul(dropped, value_f).to(query.dtype)

        batch, heads, _, _ = query.shape
        bytes_per_row = batch * heads * key.shape[2] * 4
        chunk = max(1, min(num_queries, CHUNK_BYTES // bytes_per_row))
        output = query.new_empty(*query.shape[:-1], value.shape[-1])
        for start in range(0, num_queries, chunk):
            block = slice(start, min(start + chunk, num_queries))
            probs = torch.softmax(_scores(query, key_t, scale, mask, block), dim=-1)
            consume(probs, start)
            if dropout_p > 0:
                probs = F.dropout(probs, p=dropout_p)
            output[:, :, block] = torch.matmul(probs, value_f).to(output.dtype)
        return output
