"""Each rule on single ops: the formula written out by hand, and conservation where it holds.

The ops run under the interceptor exactly as inside a model; relevance starts at the op's
output (``R = z``, so ``ΣR`` is known) or at a random tensor.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnexplain.relevance import (
    CHEFER_BASELINE_RULES,
    CHEFER_RULES,
    EpsilonDivide,
    UnsupportedOperationError,
    attnlrp_rules,
    chefer_divide,
)
from attnexplain.relevance.interceptor import RelevanceInterceptor
from attnexplain.relevance.ops import Propagation

ATTNLRP = attnlrp_rules(1e-6)
CP_LRP = attnlrp_rules(1e-6, conservative_attention=True)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def propagate(rules, fn, *inputs, relevance=None, where="module 'test' (Test)"):
    """``fn`` under the rules; the relevance of each input for ``relevance`` (default: z)."""
    propagation = Propagation(rules)
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    for leaf in leaves:
        propagation.mark(leaf)
    with RelevanceInterceptor(propagation, lambda: where):
        output = fn(*leaves)
    start = output.detach() if relevance is None else relevance
    grads = torch.autograd.grad(output, leaves, start, allow_unused=True)
    return output, [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]


def per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


# --- divisions ----------------------------------------------------------------------------------


def test_chefer_divide_is_the_reference_safe_divide():
    b = torch.tensor([2.0, -2.0, 0.0, -1e-9, 1e-12])
    a = torch.ones(5)
    got = chefer_divide(a, b)
    expected = torch.tensor([1 / (2 + 1e-9), 1 / (-2 + 1e-9), 0.0, 1 / 1e-9, 1 / (1e-12 + 1e-9)])
    torch.testing.assert_close(got, expected)
    assert torch.isfinite(got).all()


def test_epsilon_divide_moves_away_from_zero_in_its_own_direction():
    divide = EpsilonDivide(0.5)
    got = divide(torch.ones(4), torch.tensor([1.0, -1.0, 0.0, -0.25]))
    torch.testing.assert_close(got, torch.tensor([1 / 1.5, 1 / -1.5, 1 / 0.5, 1 / -0.75]))
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        EpsilonDivide(0.0)


# --- linear layers ------------------------------------------------------------------------------


def test_alpha1_beta0_with_one_denominator_conserves_relevance():
    x, weight, bias = _randn(3, 5, 8), _randn(6, 8, seed=1), _randn(6, seed=2)
    relevance = _randn(3, 5, 6, seed=3).abs()
    _, (r_in,) = propagate(CHEFER_RULES, lambda t: F.linear(t, weight, bias), x,
                           relevance=relevance)  # fmt: skip
    torch.testing.assert_close(per_sample(r_in), per_sample(relevance), rtol=1e-5, atol=1e-6)
    # By hand, one output: contributions x_i w_ij of matching sign, shared in proportion.
    contributions = x[0, 0] * weight[2]
    positive = torch.where(contributions > 0, contributions, 0.0)
    expected = positive / positive.sum() * relevance[0, 0, 2]
    one_output = torch.eye(6)[2].reshape(1, 1, 6) * relevance[0, 0, 2]
    _, (one,) = propagate(
        CHEFER_RULES, lambda t: F.linear(t, weight, bias), x[:1, :1], relevance=one_output
    )
    torch.testing.assert_close(one[0, 0], expected, rtol=1e-5, atol=1e-7)


def test_alpha_beta_by_hand_with_beta_and_an_empty_part():
    from dataclasses import replace

    from attnexplain.relevance import AlphaBeta

    x = _randn(2, 3, 6).abs()
    x[1] = -x[1]
    weight = _randn(4, 6, seed=1)
    weight[0] = -weight[0].abs()  # output 0 of sample 0 has no activating contribution at all
    relevance = _randn(2, 3, 4, seed=2)
    rules = replace(CHEFER_RULES, linear=AlphaBeta(2.0, 1.0))
    _, (got,) = propagate(rules, lambda t: F.linear(t, weight), x, relevance=relevance)
    px, nx, pw, nw = x.clamp(min=0), x.clamp(max=0), weight.clamp(min=0), weight.clamp(max=0)

    def share(w_a, w_b):
        ratio = chefer_divide(relevance, px @ w_a.T + nx @ w_b.T)
        return px * (ratio @ w_a) + nx * (ratio @ w_b)

    expected = 2.0 * share(pw, nw) - 1.0 * share(nw, pw)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(got).all()


def test_alpha1_beta0_with_separate_denominators_gives_each_half_all_of_it():
    weight = _randn(6, 8, seed=1)
    relevance = _randn(3, 5, 6, seed=3).abs()
    positive_x = _randn(3, 5, 8).abs()
    _, (joint,) = propagate(CHEFER_RULES, lambda t: F.linear(t, weight), positive_x,
                            relevance=relevance)  # fmt: skip
    _, (separate,) = propagate(CHEFER_BASELINE_RULES, lambda t: F.linear(t, weight), positive_x,
                               relevance=relevance)  # fmt: skip
    torch.testing.assert_close(separate, joint)  # no negative inputs: one half only
    x = _randn(3, 5, 8)
    _, (mixed,) = propagate(CHEFER_BASELINE_RULES, lambda t: F.linear(t, weight), x,
                            relevance=relevance)  # fmt: skip
    # Each output's R leaves once per non-empty half: twice where both halves contribute.
    halves = (F.linear(x.clamp(min=0), weight.clamp(min=0)) > 0).float() + (
        F.linear(x.clamp(max=0), weight.clamp(max=0)) > 0
    ).float()
    assert (halves == 2).any()
    torch.testing.assert_close(per_sample(mixed), per_sample(relevance * halves), rtol=1e-5,
                               atol=1e-5)  # fmt: skip


def test_epsilon_rule_on_a_linear_layer():
    x, weight, bias = _randn(2, 4, 8), _randn(6, 8, seed=1), _randn(6, seed=2)
    relevance = _randn(2, 4, 6, seed=3)
    z, (r_in,) = propagate(ATTNLRP, lambda t: F.linear(t, weight, bias), x, relevance=relevance)
    stabilised = z.detach() + 1e-6 * torch.where(z.detach() >= 0, 1.0, -1.0)
    expected = torch.einsum("bno,oi,bni->bni", relevance / stabilised, weight, x)
    torch.testing.assert_close(r_in, expected, rtol=1e-5, atol=1e-7)
    # Without a bias the ε-rule conserves relevance (up to ε).
    _, (no_bias,) = propagate(ATTNLRP, lambda t: F.linear(t, weight), x)
    z0 = F.linear(x, weight)
    torch.testing.assert_close(per_sample(no_bias), per_sample(z0), rtol=1e-4, atol=1e-4)


def test_zbox_on_the_patch_embedding_conserves_relevance():
    weight = _randn(4, 3, 4, 4, seed=1)
    x = _randn(2, 3, 8, 12)

    def stem(t):
        return F.conv2d(t, weight, None, stride=4)

    relevance = _randn(2, 4, 2, 3, seed=2).abs()
    propagation = Propagation(CHEFER_RULES)
    leaf = x.clone().requires_grad_(True)
    propagation.mark(leaf)
    propagation.in_stem = True
    with RelevanceInterceptor(propagation, lambda: "stem"):
        output = stem(leaf)
    (r_in,) = torch.autograd.grad(output, leaf, relevance)
    torch.testing.assert_close(per_sample(r_in), per_sample(relevance), rtol=1e-5, atol=1e-5)
    assert torch.isfinite(r_in).all()


# --- additions ----------------------------------------------------------------------------------


def test_renormalised_add_conserves_per_sample_and_gives_constants_their_share():
    x, residual = _randn(3, 5, 4), _randn(3, 5, 4, seed=1)
    relevance = _randn(3, 5, 4, seed=2)
    _, (r_x, r_res) = propagate(CHEFER_RULES, torch.add, x, residual, relevance=relevance)
    torch.testing.assert_close(per_sample(r_x + r_res), per_sample(relevance), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    position = _randn(1, 5, 4, seed=3)
    z, (r_only,) = propagate(CHEFER_RULES, lambda t: t + position, x, relevance=relevance)
    ratio = relevance / (z.detach() + 1e-9)
    share_x, share_p = per_sample(x * ratio), per_sample(position * ratio)
    expected_total = share_x.abs() / (share_x.abs() + share_p.abs()) * per_sample(relevance)
    torch.testing.assert_close(per_sample(r_only), expected_total, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(r_only, x * ratio * (expected_total / share_x)[:, None, None],
                               rtol=1e-4, atol=1e-6)  # fmt: skip


def test_proportional_add_without_renormalisation():
    a, b = _randn(2, 6), _randn(2, 6, seed=1)
    relevance = _randn(2, 6, seed=2)
    for rules in (CHEFER_BASELINE_RULES, ATTNLRP):
        _, (r_a, r_b) = propagate(rules, lambda s, t: s - 2 * t, a, b, relevance=relevance)
        z = a - 2 * b
        torch.testing.assert_close(r_a, a * relevance / z, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(r_b, -2 * b * relevance / z, rtol=1e-3, atol=1e-4)


# --- products and attention ---------------------------------------------------------------------


@pytest.mark.parametrize("rules", [CHEFER_RULES, CHEFER_BASELINE_RULES, ATTNLRP])
def test_matmul_of_two_carriers_gives_each_half(rules):
    q, k = _randn(2, 3, 5, 4), _randn(2, 3, 5, 4, seed=1)
    z, (r_q, r_k) = propagate(rules, lambda s, t: s @ t.transpose(-2, -1), q, k)
    torch.testing.assert_close(per_sample(r_q), per_sample(z) / 2, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(per_sample(r_k), per_sample(z) / 2, rtol=1e-4, atol=1e-4)
    ratio = z.detach() / z.detach()  # R = z: the z-rule gives each operand q_i k_i / z shares
    torch.testing.assert_close(r_q, 0.5 * q * (ratio @ k), rtol=1e-3, atol=1e-4)


def test_matmul_with_a_constant_and_elementwise_products():
    attention = torch.softmax(_randn(2, 5, 5), -1)
    v = _randn(2, 5, 4, seed=1)
    z, (r_v,) = propagate(ATTNLRP, lambda t: attention @ t, v)
    torch.testing.assert_close(per_sample(r_v), per_sample(z), rtol=1e-4, atol=1e-4)
    a, b = _randn(2, 6), _randn(2, 6, seed=2)
    relevance = _randn(2, 6, seed=3)
    for rules in (CHEFER_RULES, ATTNLRP):
        _, (r_a, r_b) = propagate(rules, torch.mul, a, b, relevance=relevance)
        torch.testing.assert_close(r_a, relevance / 2)
        torch.testing.assert_close(r_b, relevance / 2)
        # quick-GELU x * sigmoid(1.702 x): the halves meet again at x.
        _, (r_x,) = propagate(rules, lambda t: t * torch.sigmoid(1.702 * t), a, relevance=relevance)
        torch.testing.assert_close(r_x, relevance)


def test_scaling_by_constants_passes_relevance_on():
    x = _randn(2, 6)
    relevance = _randn(2, 6, seed=1)
    for fn in (lambda t: t * 3.0, lambda t: 2.0 * t, lambda t: t / 4, lambda t: -t,
               lambda t: t * torch.arange(6.0)):  # fmt: skip
        _, (r_x,) = propagate(ATTNLRP, fn, x, relevance=relevance)
        torch.testing.assert_close(r_x, relevance)


def test_softmax_rules():
    scores = _randn(2, 3, 4, 5)
    scores[0, 0, 0, 1] = float("-inf")  # a masked score
    relevance = _randn(2, 3, 4, 5, seed=1)
    probabilities, (taylor,) = propagate(ATTNLRP, lambda s: s.softmax(-1), scores,
                                         relevance=relevance)  # fmt: skip
    finite = torch.where(torch.isneginf(scores), 0.0, scores)
    expected = finite * (relevance - probabilities.detach() * relevance.sum(-1, keepdim=True))
    torch.testing.assert_close(taylor, expected)
    assert torch.isfinite(taylor).all()
    _, (identity,) = propagate(CHEFER_RULES, lambda s: F.softmax(s, dim=-1), scores,
                               relevance=relevance)  # fmt: skip
    torch.testing.assert_close(identity, relevance)
    # CP-LRP: the probabilities are constants, nothing reaches the scores.
    propagation = Propagation(CP_LRP)
    leaf = scores.clone().requires_grad_(True)
    propagation.mark(leaf)
    with RelevanceInterceptor(propagation, lambda: "attention"):
        constant = leaf.softmax(-1)
    assert not constant.requires_grad and not propagation.is_carrier(constant)


def test_layer_norm_rules():
    x, weight, bias = _randn(2, 5, 8), 1 + 0.3 * _randn(8, seed=1), 0.2 * _randn(8, seed=2)
    relevance = _randn(2, 5, 8, seed=3)
    _, (linearised,) = propagate(
        ATTNLRP, lambda t: F.layer_norm(t, (8,), weight, bias, 1e-5), x, relevance=relevance
    )
    # lxt's trick, written out: differentiate the layer with its standard deviation detached.
    leaf = x.clone().requires_grad_(True)
    std = (leaf.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt().detach()
    y_ref = (leaf - leaf.mean(-1, keepdim=True)) / std * weight + bias
    stabilised = y_ref.detach() + 1e-6 * torch.where(y_ref.detach() >= 0, 1.0, -1.0)
    (grad,) = torch.autograd.grad(y_ref, leaf, relevance / stabilised)
    torch.testing.assert_close(linearised, x * grad, rtol=1e-5, atol=1e-6)
    # Without a bias it conserves relevance; Chefer et al. pass it on unchanged.
    y0, (no_bias,) = propagate(ATTNLRP, lambda t: F.layer_norm(t, (8,), weight), x)
    torch.testing.assert_close(per_sample(no_bias), per_sample(y0), rtol=1e-4, atol=1e-4)
    _, (identity,) = propagate(CHEFER_RULES, lambda t: F.layer_norm(t, (8,), weight, bias), x,
                               relevance=relevance)  # fmt: skip
    torch.testing.assert_close(identity, relevance)


def test_activations_pooling_and_moves():
    x = _randn(2, 5, 8)
    relevance = _randn(2, 5, 8, seed=1)
    for fn in (F.gelu, torch.relu, F.silu, torch.tanh):
        for rules in (CHEFER_RULES, ATTNLRP):
            _, (r_x,) = propagate(rules, fn, x, relevance=relevance)
            torch.testing.assert_close(r_x, relevance)
    pooled = _randn(2, 8, seed=2)
    _, (r_mean,) = propagate(CHEFER_RULES, lambda t: t[:, 1:].mean(dim=1), x, relevance=pooled)
    tokens = x[:, 1:]
    expected = tokens * pooled[:, None] / (tokens.sum(1, keepdim=True) + 1e-9)
    torch.testing.assert_close(r_mean[:, 1:], expected, rtol=1e-4, atol=1e-5)
    assert (r_mean[:, 0] == 0).all()

    def moved(t):
        return torch.cat([t[:, :1], t.permute(0, 2, 1).reshape(2, 5, 8)[:, 1:]], 1).mT

    _, (r_moved,) = propagate(ATTNLRP, moved, x, relevance=_randn(2, 8, 5, seed=3))
    reference = x.clone().requires_grad_(True)
    (native,) = torch.autograd.grad(moved(reference), reference, _randn(2, 8, 5, seed=3))
    torch.testing.assert_close(r_moved, native)  # moves carry relevance as gradients do


# --- what has no rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "name"),
    [
        (torch.exp, "torch.exp"),
        (lambda t: t.max(dim=-1).values, "torch.Tensor.max"),
        (lambda t: torch.where(t > 0, t, 0.0), "torch.where"),
        (lambda t: t.clone().add_(1.0), "torch.Tensor.add_"),
        (lambda t: t / t.norm(), "torch.Tensor.norm"),
    ],
)
def test_an_op_without_a_rule_is_refused_with_its_name_and_module(fn, name):
    with pytest.raises(UnsupportedOperationError, match=rf"{name}.*module 'blocks.1' \(Block\)"):
        propagate(CHEFER_RULES, fn, _randn(2, 4), where="module 'blocks.1' (Block)")


def test_queries_and_ops_on_constants_run_unchanged():
    weight = _randn(4, 4, seed=1)

    def fn(t):
        assert t.shape == (2, 4) and t.dim() == 2 and t.dtype == torch.float32
        assert bool(torch.isfinite(t).all())
        scale = torch.exp(weight).sum()  # constants only: no rule needed
        return t * scale

    _, (r_x,) = propagate(ATTNLRP, fn, _randn(2, 4), relevance=torch.ones(2, 4))
    torch.testing.assert_close(r_x, torch.ones(2, 4))
