"""One relevance forward of a model, and the backward passes over its graph.

:func:`trace_relevance` runs the model's *own* forward (no copy, no ``relprop`` methods) with
every op put under its rule by :class:`~attnexplain.relevance.interceptor.RelevanceInterceptor`.
The returned :class:`RelevanceTrace` holds the output, the token layout and each attention
layer's probabilities; :meth:`RelevanceTrace.relevance` then propagates a starting relevance from
per-sample scores to any tensors of the forward with one ``torch.autograd.grad`` call, and
:meth:`RelevanceTrace.gradient` computes ordinary gradients over the same graph. Every hook,
switch and the mode are undone in ``finally`` (an ``ExitStack``), also when the forward raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnexplain.capture import ModelAdapter, TokenLayout, UnsupportedModelError
from attnexplain.relevance.interceptor import RelevanceInterceptor
from attnexplain.relevance.ops import Propagation
from attnexplain.relevance.rule_sets import RuleSet


@dataclass
class RelevanceTrace:
    """What one relevance forward returns.

    Attributes:
        output: the model's output (its values are the ordinary forward's).
        layout: the token layout of this input.
        attention: per attention layer, its probabilities ``(B, heads, N, N)`` in the graph
            (detached constants under CP-LRP's rules).
        inputs: the input batch the relevance ends at, ``(B, C, H, W)``.
    """

    output: Any
    layout: TokenLayout
    attention: list[torch.Tensor]
    inputs: torch.Tensor
    propagation: Propagation

    def relevance(
        self,
        scores: torch.Tensor,
        wrt: Sequence[torch.Tensor],
        start: torch.Tensor | None = None,
        *,
        retain_graph: bool = False,
    ) -> list[torch.Tensor]:
        """Propagate relevance from the scores down to ``wrt`` with the trace's rules.

        Args:
            scores: ``(B,)`` each sample's score, computed from :attr:`output`.
            wrt: tensors of the forward (the inputs, attention probabilities ...).
            start: ``(B,)`` each score's starting relevance; ones (a one-hot start) if ``None``.
            retain_graph: keep the graph for another pass.

        Returns:
            The relevance arriving at each tensor, its shape (zeros where none arrives).
        """
        self.propagation.passes.gradient = False
        return self._backward(scores, wrt, start, retain_graph)

    def gradient(
        self, scores: torch.Tensor, wrt: Sequence[torch.Tensor], *, retain_graph: bool = False
    ) -> list[torch.Tensor]:
        """Ordinary gradients of ``scores.sum()`` with respect to ``wrt`` over the same graph.

        Raises:
            RuntimeError: when the trace was made with ``gradients=False``.
        """
        self.propagation.passes.gradient = True
        try:
            return self._backward(scores, wrt, None, retain_graph)
        finally:
            self.propagation.passes.gradient = False

    def _backward(self, scores, wrt, start, retain_graph) -> list[torch.Tensor]:
        start = torch.ones_like(scores) if start is None else start.to(scores)
        results = torch.autograd.grad(
            scores, list(wrt), grad_outputs=start.detach(), retain_graph=retain_graph,
            allow_unused=True,
        )  # fmt: skip
        return [
            torch.zeros_like(tensor) if result is None else result
            for tensor, result in zip(wrt, results)
        ]


def _install_hooks(stack: ExitStack, adapter: ModelAdapter, p: Propagation, grids: list) -> None:
    handles = []

    def leave_module(_module: nn.Module, _args: Any, _output: Any) -> None:
        p.module_names.pop()

    for name, module in adapter.model.named_modules():

        def enter_module(_module: nn.Module, _args: Any, name: str = name) -> None:
            p.module_names.append(f"module {name or '<root>'!r} ({type(_module).__name__})")

        handles.append(module.register_forward_pre_hook(enter_module))
        handles.append(module.register_forward_hook(leave_module, always_call=True))

    def enter_stem(_module: nn.Module, _args: Any) -> None:
        p.in_stem = True

    def leave_stem(_module: nn.Module, _args: Any, output: Any) -> None:
        p.in_stem = False
        if isinstance(output, torch.Tensor) and not grids:
            grids.append((int(output.shape[-2]), int(output.shape[-1])))

    handles.append(adapter.patch_embedding.register_forward_pre_hook(enter_stem))
    handles.append(adapter.patch_embedding.register_forward_hook(leave_stem, always_call=True))
    for index, module in enumerate(adapter.attention_modules):

        def enter_layer(_module: nn.Module, _args: Any, index: int = index) -> None:
            p.layer = index

        def leave_layer(_module: nn.Module, _args: Any, _output: Any) -> None:
            p.layer = None

        handles.append(module.register_forward_pre_hook(enter_layer))
        handles.append(module.register_forward_hook(leave_layer, always_call=True))
    stack.callback(lambda: [handle.remove() for handle in handles])


def trace_relevance(
    adapter: ModelAdapter, rules: RuleSet, inputs: torch.Tensor, *, gradients: bool = False
) -> RelevanceTrace:
    """Run the model once with every op under ``rules``.

    Args:
        adapter: the model's adapter (its temporary switches, e.g. timm's fused attention and
            dynamic input size, are applied for the call).
        rules: the rule set.
        inputs: ``(B, C, H, W)`` validated batch that requires grad (relevance ends here).
        gradients: also keep each op's own graph, so :meth:`RelevanceTrace.gradient` works.

    Returns:
        The trace.

    Raises:
        UnsupportedOperationError: when the forward runs an op no rule covers (naming it and
            the module it ran in).
        UnsupportedModelError: when an attention layer showed no probabilities, or they do not
            cover the patch grid.
    """
    propagation = Propagation(rules, keep_gradients=gradients)
    propagation.mark(inputs)
    grids: list[tuple[int, int]] = []

    def describe_module() -> str:
        names = propagation.module_names
        return names[-1] if names else "the model's forward, outside its submodules"

    with ExitStack() as stack:
        adapter.enter(stack, inputs)
        _install_hooks(stack, adapter, propagation, grids)
        stack.enter_context(RelevanceInterceptor(propagation, describe_module))
        output = adapter.forward(inputs)
    missing = [i for i in range(adapter.num_layers) if i not in propagation.attention]
    if missing or not grids:
        raise UnsupportedModelError(
            f"no attention probabilities were seen in layers {missing} of "
            f"{type(adapter.model).__name__} (is it a ViT encoder whose attention modules "
            "compute a softmax or call F.scaled_dot_product_attention?)"
        )
    attention = [propagation.attention[i] for i in range(adapter.num_layers)]
    grid = grids[0]
    num_tokens = int(attention[0].shape[-1])
    if num_tokens < grid[0] * grid[1]:
        raise UnsupportedModelError(
            f"attention over {num_tokens} tokens does not cover the {grid[0]}x{grid[1]} patch "
            "grid: windowed or pooled attention is not supported"
        )
    layout = TokenLayout(
        num_prefix_tokens=num_tokens - grid[0] * grid[1],
        patch_size=adapter.patch_size,
        grid=grid,
        cls_index=adapter.cls_index(),
        input_size=(int(inputs.shape[-2]), int(inputs.shape[-1])),
    )
    return RelevanceTrace(output, layout, attention, inputs, propagation)
