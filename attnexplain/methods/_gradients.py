"""Pieces shared by the gradient methods, and the forward function for Captum's own methods.

A gradient method runs the model once in evaluation mode, takes the target logits and
differentiates them with :func:`torch.autograd.grad` with respect to the tensors it reads
(activations, attention probabilities) only. Nothing is accumulated into any ``.grad``, parameters'
``requires_grad`` flags are never touched, and every module's ``training`` flag is restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from attnexplain.capture import ModelAdapter, UnsupportedModelError, eval_mode, resolve_adapter
from attnexplain.methods.base import Target, ViTAttribution
from attnexplain.methods.targets import target_scores


def forward_function(model: nn.Module | ModelAdapter) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model as a function of pixels to class logits, for Captum's own methods.

    Every supported family is called the way it expects (Hugging Face ``pixel_values=``, its
    ``ImageClassifierOutput.logits``, timm and torchvision tensors, custom modules), so Captum's
    ``IntegratedGradients``, ``Saliency``, ``Occlusion`` ... run on any of them unchanged.

    Args:
        model: any supported vision transformer (or its adapter).

    Returns:
        ``f(x)`` mapping a ``(B, C, H, W)`` batch to logits ``(B, classes)``; it raises
        ``UnsupportedModelError`` when called on a model without a classification head.

    Raises:
        TypeError: if ``model`` is not a module.
        UnsupportedModelError: if the model has no attention this library can read.

    Examples:
        >>> from captum.attr import IntegratedGradients  # doctest: +SKIP
        >>> ig = IntegratedGradients(forward_function(model))  # doctest: +SKIP
        >>> attributions = ig.attribute(x, target=3)  # (B, C, H, W)  # doctest: +SKIP
    """
    return resolve_adapter(model).logits_forward


@contextmanager
def explaining(model: nn.Module, inputs: torch.Tensor) -> Iterator[torch.Tensor]:
    """Evaluation mode and autograd on for one explanation; every ``training`` flag restored.

    Dropout would make gradient maps random, so the model runs as in inference whatever mode it
    was in. The yielded inputs require grad so the graph exists even when every parameter is
    frozen (``requires_grad=False``), without touching the parameters' flags.

    Args:
        model: the model.
        inputs: ``(B, C, H, W)`` validated batch.

    Yields:
        A detached copy of ``inputs`` that requires grad.
    """
    with eval_mode(model), torch.enable_grad():
        yield inputs.detach().requires_grad_(True)


def target_score(method: ViTAttribution, output: Any, target: Target) -> torch.Tensor:
    """The sum over the batch of each sample's target score.

    In evaluation mode each sample's output depends on that sample only, so the gradient of the
    sum with respect to sample ``b``'s tensors is the gradient of ``b``'s own score: one
    backward pass serves per-sample targets.

    Args:
        method: the method (its adapter reads logits, embeddings and text from ``output``).
        output: the model's output (or a readout of it) inside the autograd graph.
        target: class index or label name, text prompt(s), embedding, reference image or
            callable, per sample or for all; ``None`` for the predicted class (see
            :mod:`attnexplain.methods.targets`).

    Returns:
        A scalar.

    Raises:
        TypeError, ValueError: for an invalid ``target``.
        UnsupportedModelError: when the output has nothing the target can read (no logits,
            no text tower, no pooled embedding).
    """
    return target_scores(method.adapter, output, target).sum()


def gradients(
    score: torch.Tensor, tensors: Sequence[torch.Tensor], what: str
) -> list[torch.Tensor]:
    """``d score / d tensor`` for each tensor, without accumulating into any ``.grad``.

    Args:
        score: scalar in the autograd graph.
        tensors: tensors the score was computed from.
        what: how to name them in an error (``"attention of layers [0, 1]"``).

    Returns:
        One gradient per tensor, same shapes.

    Raises:
        UnsupportedModelError: when the score does not depend on one of the tensors (the tensor
            read from the model is a copy, not the one its output was computed from).
    """
    missing = [index for index, tensor in enumerate(tensors) if not tensor.requires_grad]
    if not missing:
        grads = torch.autograd.grad(score, list(tensors), allow_unused=True)
        missing = [index for index, grad in enumerate(grads) if grad is None]
    if missing:
        raise UnsupportedModelError(
            f"the target logit does not depend on the {what} (entries {missing} got no "
            "gradient): the tensors read from the model are not the ones its output was "
            "computed from, so gradient methods cannot run on this model this way"
        )
    return list(grads)
