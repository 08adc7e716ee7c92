"""Pieces shared by the relevance methods: one traced forward, and pixel maps.

A relevance method runs the model once in evaluation mode under a rule set
(:func:`~attnexplain.relevance.trace_relevance`), scores each sample's target from the model's
output (:func:`~attnexplain.methods.targets.target_scores`) and propagates relevance from
those scores. Nothing is accumulated into any ``.grad``; every hook and switch lives for the
call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from attnexplain.capture import TokenLayout
from attnexplain.methods._gradients import explaining
from attnexplain.methods.base import Target, ViTAttribution
from attnexplain.methods.targets import target_scores
from attnexplain.relevance import RelevanceTrace, RuleSet, trace_relevance

#: How a relevance pass starts: 1 at each sample's target (Chefer et al.'s one-hot vector) or
#: the target's score itself (Gradient × Input from a unit gradient, as lxt does).
Start = Literal["one_hot", "score"]


def check_precision(inputs: torch.Tensor, method: str) -> None:
    """Refuse half-precision inputs on the CPU.

    Raises:
        ValueError: for float16 / bfloat16 inputs on the CPU.
    """
    if inputs.device.type == "cpu" and inputs.dtype in (torch.float16, torch.bfloat16):
        raise ValueError(
            f"{method} propagates relevance through divisions by activations, which "
            f"{inputs.dtype} on the CPU cannot carry; run the model and inputs in float32 "
            "(model.float(), inputs.float())"
        )


def traced_relevance(
    method: ViTAttribution,
    rules: RuleSet,
    inputs: torch.Tensor,
    target: Target,
    layers: Sequence[int] | None,
    *,
    start: Start = "one_hot",
    gradients_too: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, RelevanceTrace]:
    """One traced forward, then the relevance (and optionally the gradient) of the targets.

    Args:
        method: the method (its adapter runs the model, it validates the target).
        rules: the rule set.
        inputs: ``(B, C, H, W)`` validated batch.
        target: class per sample or ``None`` for the predicted class.
        layers: the attention layers whose probabilities the relevance is wanted at, or
            ``None`` for the input pixels.
        start: the starting relevance.
        gradients_too: also return the ordinary gradients of the target scores.

    Returns:
        The relevance of each requested tensor, their gradients (or ``None``), and the trace.
    """
    check_precision(inputs, type(method).__name__)
    with explaining(method.model, inputs) as x:
        trace = trace_relevance(method.adapter, rules, x, gradients=gradients_too)
        scores = target_scores(method.adapter, trace.output, target)
        tensors = [trace.inputs] if layers is None else [trace.attention[i] for i in layers]
        grads = trace.gradient(scores, tensors, retain_graph=True) if gradients_too else None
        relevance = trace.relevance(scores, tensors, scores.detach() if start == "score" else None)
    return relevance, grads, trace


def pixel_map(relevance: torch.Tensor, layout: TokenLayout, upsample: bool) -> torch.Tensor:
    """Sum pixel relevance over the channels, or over each patch.

    Args:
        relevance: ``(B, C, H, W)`` relevance of the input pixels.
        layout: the input's token layout.
        upsample: keep pixels (``(B, 1, H, W)``) or sum each patch (``(B, 1, h, w)``, which keeps
            the total: pixels the stem cropped carry no relevance).

    Returns:
        The float32 map.
    """
    maps = relevance.detach().float().sum(dim=1, keepdim=True)
    if upsample:
        return maps
    (h, w), (ph, pw) = layout.grid, layout.patch_size
    covered = maps[..., : h * ph, : w * pw]
    return covered.reshape(maps.shape[0], 1, h, ph, w, pw).sum(dim=(3, 5))


class PixelRelevance(ViTAttribution):
    """A method whose map is the relevance of the input pixels, summed over the channels.

    Subclasses set :attr:`rules` and :attr:`start` in their constructor.

    Shapes:
        ``attribute(x, target)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)``; with
        ``upsample=False`` each patch's relevance summed, ``(B, 1, h, w)``.
    """

    rules: RuleSet
    start: Start = "one_hot"

    def attribute(
        self, inputs: torch.Tensor, target: Target = None, *, upsample: bool = True
    ) -> torch.Tensor:
        """Pixel relevance maps of a batch (arguments as :meth:`MapAttribution.attribute`).

        Returns:
            ``(B, 1, H, W)`` signed float32 relevance per pixel, unscaled, or each patch's sum
            ``(B, 1, h, w)`` with ``upsample=False``.

        Raises:
            TypeError, ValueError: for invalid inputs or targets, half precision on the CPU.
            UnsupportedModelError: for a model without a classification head, or one running an
                op no relevance rule covers (the message names it and its module).
        """
        batch = self.validate_inputs(inputs)
        (relevance,), _, trace = traced_relevance(
            self, self.rules, batch, target, None, start=self.start
        )
        maps = pixel_map(relevance, trace.layout, upsample)
        return (maps,) if isinstance(inputs, tuple) else maps
