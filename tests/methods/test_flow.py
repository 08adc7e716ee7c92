"""Attention flow against networkx max-flow on the reference code's graph.

``tests.reference.attention_flow`` builds samiraabnar/attention_flow's adjacency (every token of
every layer, float capacities) and solves each (CLS output, patch input) pair with networkx's
Edmonds–Karp; the method builds the pruned integer graph and solves it with scipy's Dinic.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from attnexplain import AttentionFlow
from attnexplain.capture import UnsupportedModelError
from attnexplain.methods.flow import CAPACITY_SCALE, cls_flow_values
from tests import reference
from tests.conftest import PATCH, family_cases, shared_family


def _residual_stack(layers: int, tokens: int, seed: int, temperature: float) -> np.ndarray:
    """Row-stochastic (A + I) / 2-like matrices, peaked by ``temperature``."""
    rng = np.random.default_rng(seed)
    scores = np.exp(rng.standard_normal((layers, tokens, tokens)) * temperature)
    attention = scores / scores.sum(-1, keepdims=True) + np.eye(tokens)
    return attention / attention.sum(-1, keepdims=True)


def _networkx_flows(stack: np.ndarray, source: int, sinks: list[int]) -> np.ndarray:
    layers, tokens, _ = stack.shape
    graph = nx.DiGraph()
    for layer in range(1, layers + 1):
        for i in range(tokens):
            for k in range(tokens):
                graph.add_edge((layer, i), (layer - 1, k), capacity=stack[layer - 1, i, k])
    return np.array([nx.maximum_flow_value(graph, (layers, source), (0, v)) for v in sinks])


@pytest.mark.parametrize("layers", [1, 2, 3, 5])
@pytest.mark.parametrize("tokens", [2, 3, 7])
@pytest.mark.parametrize("temperature", [0.5, 4.0])
def test_solver_equals_networkx_on_small_graphs(layers, tokens, temperature):
    stack = _residual_stack(layers, tokens, seed=layers * 10 + tokens, temperature=temperature)
    for cls in (0, tokens - 1):
        sinks = [v for v in range(tokens) if v != cls] or [cls]
        expected = _networkx_flows(stack, cls, sinks)
        got = cls_flow_values(stack[:-1], stack[-1, cls], sinks)
        edges = max(layers - 2, 0) * tokens**2 + 2 * tokens
        assert np.all(got <= expected + 1e-12)  # rounding capacities down never adds flow
        assert np.all(expected - got < edges / CAPACITY_SCALE)  # the documented bound
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
        assert np.all(got <= 1.0 + 1e-12)


def _check_against_reference(name: str, size: tuple[int, int], head_fusion: str) -> None:
    family = shared_family(name)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(5))
    grid = (size[0] // PATCH, size[1] // PATCH)
    expected = reference.attention_flow(
        family.reference_attentions(x), head_fusion, family.num_prefix_tokens, grid
    )
    got = AttentionFlow(family.model, head_fusion=head_fusion).attribute(x, upsample=False)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-6)
    assert expected.std() > 1e-4  # the flows differ between patches
    assert AttentionFlow(family.model).attribute(x).shape == (2, 1, *size)


@pytest.mark.parametrize(("name", "size"), family_cases([(32, 32)], needs_cls=True))
def test_attention_flow_equals_the_reference_code(name, size):
    _check_against_reference(name, size, "mean")


@pytest.mark.parametrize("name", ["hf_vit", "dino_custom"])
def test_attention_flow_with_max_fusion_on_a_non_square_input(name):
    _check_against_reference(name, (32, 48), "max")


def test_batch_equals_single_calls():
    method = AttentionFlow(shared_family("timm_registers").model)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    batched = method.attribute(x, upsample=False)
    singles = torch.cat([method.attribute(x[i : i + 1], upsample=False) for i in range(3)])
    torch.testing.assert_close(batched, singles, rtol=0, atol=0)
    assert not torch.allclose(batched[0], batched[1])


def test_bad_input_is_refused_and_leaves_the_model_alone(fresh_family):
    with pytest.raises(UnsupportedModelError, match="no CLS token"):
        AttentionFlow(fresh_family("timm_no_class_token").model)
    model = fresh_family("hf_vit").model
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        AttentionFlow(model, head_fusion=None)
    with pytest.raises(ValueError, match="NaN"):
        AttentionFlow(model).attribute(torch.full((1, 3, 32, 32), float("nan")))
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
