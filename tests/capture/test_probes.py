"""Probes: distance rows, the distance reduction with and without its cache, the fused CLS row,
the rows each probe asks for."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from attnexplain.capture import probes
from attnexplain.capture.layout import TokenLayout
from attnexplain.capture.probes import (
    AttentionDistanceProbe,
    CLSRowProbe,
    CLSRowsProbe,
    FusedAttentionProbe,
    Rows,
    token_distances,
)

# Two prefix tokens (CLS + distillation), a 3 x 4 grid of 8 x 6 px patches.
LAYOUT = TokenLayout(
    num_prefix_tokens=2, patch_size=(8, 6), grid=(3, 4), cls_index=0, input_size=(24, 24)
)


def reference_distances(layout: TokenLayout) -> torch.Tensor:
    """``(N, N)`` by the definition, one pair at a time; zero wherever a prefix token is."""
    prefix, (height, width) = layout.num_prefix_tokens, layout.grid
    out = torch.zeros(layout.num_tokens, layout.num_tokens, dtype=torch.float64)
    cells = list(itertools.product(range(height), range(width)))
    for (q, (qy, qx)), (k, (ky, kx)) in itertools.product(enumerate(cells), repeat=2):
        dy, dx = (qy - ky) * layout.patch_size[0], (qx - kx) * layout.patch_size[1]
        out[prefix + q, prefix + k] = math.hypot(dy, dx)
    return out


@pytest.mark.parametrize("rows", [slice(None), slice(0, 2), slice(1, 9), slice(5, 14)])
def test_token_distances_match_the_definition(rows: slice) -> None:
    expected = reference_distances(LAYOUT)[rows].float()
    torch.testing.assert_close(token_distances(LAYOUT, rows, torch.device("cpu")), expected)


def random_attention(batch: int = 2, heads: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(batch, heads, LAYOUT.num_tokens, LAYOUT.num_tokens, generator=generator)
    return scores.softmax(dim=-1)


def stream(probe: AttentionDistanceProbe, probs: torch.Tensor, chunk: int) -> torch.Tensor:
    probe.reset(num_layers=1)
    for start in range(0, probs.shape[2], chunk):
        probe.consume(0, probs[:, :, start : start + chunk], start, LAYOUT)
    return probe.sums[0]


@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("cached", [True, False])
def test_distance_sums_are_the_same_streamed_cached_or_not(
    renormalize: bool, cached: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not cached:
        monkeypatch.setattr(probes, "CACHED_DISTANCE_BYTES", 0)
    probs = random_attention().double()
    prefix = LAYOUT.num_prefix_tokens
    weights = probs[:, :, prefix:, prefix:]
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    distances = reference_distances(LAYOUT)[prefix:, prefix:]
    expected = (weights * distances).sum(dim=(2, 3)).float()
    for chunk in (1, 5, LAYOUT.num_tokens):
        got = stream(AttentionDistanceProbe(renormalize), probs.float(), chunk)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_fused_probe_keeps_only_the_last_layers_cls_row() -> None:
    probe = FusedAttentionProbe("max", start_layer=1, last_layer_cls_row=True)
    probe.reset(num_layers=3)
    assert [probe.rows(layer) for layer in range(3)] == [Rows.NONE, Rows.ALL, Rows.CLS]
    probs = random_attention()
    probe.consume(1, probs, 0, LAYOUT)
    probe.consume(2, probs[:, :, :1], 0, LAYOUT)
    assert set(probe.matrices) == {1}
    torch.testing.assert_close(probe.matrices[1], probs.amax(dim=1))
    torch.testing.assert_close(probe.cls_row, probs[:, :, :1].amax(dim=1))


def test_fused_probe_stops_at_its_end_layer() -> None:
    probe = FusedAttentionProbe("mean", start_layer=1, last_layer_cls_row=True, end_layer=-2)
    probe.reset(num_layers=4)
    assert [probe.rows(layer) for layer in range(4)] == [Rows.NONE, Rows.ALL, Rows.CLS, Rows.NONE]
    whole = FusedAttentionProbe("mean", start_layer=0, end_layer=1)
    whole.reset(num_layers=4)
    assert [whole.rows(layer) for layer in range(4)] == [Rows.ALL, Rows.ALL, Rows.NONE, Rows.NONE]


def test_cls_rows_probe_asks_only_for_cls_rows_and_keeps_each_layer() -> None:
    probe = CLSRowsProbe([2, -4])
    probe.reset(num_layers=4)
    assert [probe.rows(layer) for layer in range(4)] == [Rows.CLS, Rows.NONE, Rows.CLS, Rows.NONE]
    probs = random_attention()
    probe.consume(0, probs[:, :, :1], 0, LAYOUT)
    probe.consume(2, probs[:, :, 1:], 1, LAYOUT)  # a chunk without the CLS row is not kept
    assert set(probe.rows_by_layer) == {0}
    torch.testing.assert_close(probe.rows_by_layer[0], probs[:, :, 0])
    single = CLSRowProbe(-1)
    single.reset(num_layers=4)
    assert single.row is None and single.rows(3) is Rows.CLS
    single.consume(3, probs, 0, LAYOUT)
    torch.testing.assert_close(single.row, probs[:, :, 0])
