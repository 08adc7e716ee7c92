"""Adebayo et al.'s cascading model-parameter randomisation: does the map depend on the weights?

An explanation that barely changes when the network's weights are replaced by random ones
explains the input (edges, colour), not the model. The test randomises the model block by block
from the output down and tracks how similar each map stays to the original one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from scipy.stats import spearmanr
from torch import nn

ExplainFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def default_layer_order(model: nn.Module) -> list[str]:
    """Blocks of ``model`` from the output to the input, for cascading randomisation.

    Walks the module tree in registration order. A module is a *block* when it is an item of
    an ``nn.ModuleList`` / ``nn.Sequential`` (a transformer layer, a ResNet stage) or holds
    parameters but has no child that does (a ``Linear``, a ``LayerNorm``); other modules are
    opened up. An opened-up module that also owns parameters directly (class tokens, position
    embeddings) is listed after its children in the returned order, so its step randomises what
    is left of its subtree; for the root that name is ``""``. The list is then reversed, which
    is output-to-input for models registered input-to-output (HF, timm, torchvision ViTs).

    Args:
        model: the network.

    Returns:
        Module names (as in ``model.named_modules()``), output side first.

    Examples:
        >>> default_layer_order(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(4, 2)))
        ['2', '0']
    """
    order: list[str] = []

    def visit(module: nn.Module, name: str, is_item: bool) -> None:
        children = [
            (child_name, child)
            for child_name, child in module.named_children()
            if _has_parameters(child)
        ]
        if is_item or not children:
            if _has_parameters(module):
                order.append(name)
            return
        if any(True for _ in module.parameters(recurse=False)):
            order.append(name)
        container = isinstance(module, nn.ModuleList | nn.Sequential)
        for child_name, child in children:
            visit(child, f"{name}.{child_name}" if name else child_name, container)

    visit(model, "", False)
    return order[::-1]


def cascading_randomization(
    model: nn.Module,
    explain_fn: ExplainFn,
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Randomise a copy of ``model`` block by block and compare each map with the original.

    Works on ``copy.deepcopy(model)``: the caller's model, its parameters and gradients are
    never changed. The original maps come from the copy before any randomisation. Then, for each
    name in ``layers`` in turn, every parameter of that module's subtree is re-initialised
    (cumulatively: earlier blocks stay random) and the maps are recomputed. A module with a
    ``reset_parameters`` method gets its PyTorch default initialisation; any other parameter gets
    ``trunc_normal_(std=0.02)`` (the ViT initialisation used by timm and HF). The random draws
    come from ``seed`` inside ``torch.random.fork_rng``, so the caller's global RNG state is left
    as it was.

    Similarity is the Spearman rank correlation (``scipy.stats.spearmanr``) per sample between
    the flattened original and randomised maps, with and without absolute values as in the
    paper. A constant map has no ranking, so its correlation is undefined and recorded as 0.0.

    Source: Adebayo et al. 2018, "Sanity Checks for Saliency Maps" (NeurIPS), Sec. 3.1
    (cascading randomisation from the top layer, Fig. 2; rank correlation, Fig. 4).

    Args:
        model: the network (not modified).
        explain_fn: ``explain_fn(model, images, target) -> (B, 1, H, W)`` maps.
        images: the input batch passed to ``explain_fn``.
        target: ``(B,)`` class ids passed to ``explain_fn``.
        layers: module names to randomise, in order (output side first); ``None`` uses
            :func:`default_layer_order`.
        seed: seed of the re-initialisation.

    Returns:
        One dict per step, ``len(layers) + 1`` in all; the first is the unrandomised model.
        Keys: ``"layer"`` (the name randomised at this step, ``None`` first),
        ``"randomized"`` (tuple of all names randomised so far), ``"spearman"`` and
        ``"spearman_abs"`` (``(B,)`` float64; exactly 1.0 at the first step), ``"maps"``
        (``(B, 1, H, W)`` maps of this step, detached, on the CPU).

    Raises:
        TypeError: if ``explain_fn`` is not callable or does not return a tensor.
        ValueError: if ``layers`` is empty, repeats a name, names a missing module or one
            without parameters; if ``explain_fn`` returns maps of another shape than at the
            first step, an empty batch, or NaN/infinite values.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> def saliency(m, x, t):
        ...     x = x.clone().requires_grad_()
        ...     m(x).gather(1, t[:, None]).sum().backward()
        ...     return x.grad.abs().sum(1, keepdim=True)
        >>> images, target = torch.rand(2, 3, 2, 2), torch.tensor([0, 1])
        >>> steps = cascading_randomization(model, saliency, images, target)
        >>> [step["layer"] for step in steps]
        [None, '1']
    """
    if not callable(explain_fn):
        raise TypeError(f"explain_fn must be callable, got {type(explain_fn).__name__}")
    names = default_layer_order(model) if layers is None else list(layers)
    _check_layers(model, names)
    working = copy.deepcopy(model)
    reference = _explain(
        explain_fn, working, images, target, expected=None, step="the original model"
    )
    flat_reference = reference.flatten(1).double()
    steps: list[dict[str, Any]] = [
        {
            "layer": None,
            "randomized": (),
            "spearman": torch.ones(reference.shape[0], dtype=torch.float64),
            "spearman_abs": torch.ones(reference.shape[0], dtype=torch.float64),
            "maps": reference,
        }
    ]
    devices = sorted({p.device.index for p in working.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for index, name in enumerate(names):
            _reinitialise(working.get_submodule(name))
            step = f"the model with {name!r} randomised"
            maps = _explain(
                explain_fn, working, images, target, expected=reference.shape, step=step
            )
            flat = maps.flatten(1).double()
            steps.append(
                {
                    "layer": name,
                    "randomized": tuple(names[: index + 1]),
                    "spearman": _spearman(flat_reference, flat),
                    "spearman_abs": _spearman(flat_reference.abs(), flat.abs()),
                    "maps": maps,
                }
            )
    return steps


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _check_layers(model: nn.Module, names: list[str]) -> None:
    if not names:
        raise ValueError("layers must name at least one module to randomise, got none")
    modules = dict(model.named_modules())
    for name in names:
        if not isinstance(name, str) or name not in modules:
            known = default_layer_order(model)
            raise ValueError(
                f"layers: no module named {name!r} in the model; "
                f"the default order is {known[:8]}{' ...' if len(known) > 8 else ''}"
            )
        if not _has_parameters(modules[name]):
            raise ValueError(f"layers: module {name!r} has no parameters to randomise")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"layers must not repeat a module, got {repeated} more than once")


def _reinitialise(module: nn.Module) -> None:
    """Re-draw every parameter in ``module``'s subtree (see :func:`cascading_randomization`)."""
    done: set[int] = set()
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
            done.update(id(p) for p in sub.parameters(recurse=False))
    with torch.no_grad():
        for parameter in module.parameters():
            if id(parameter) not in done:
                nn.init.trunc_normal_(parameter, std=0.02)


def _explain(
    explain_fn: ExplainFn,
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    expected: torch.Size | None,
    step: str,
) -> torch.Tensor:
    maps = explain_fn(model, images, target)
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"explain_fn must return a torch.Tensor, got {type(maps).__name__}")
    if expected is None and (maps.dim() < 2 or maps.shape[0] == 0):
        raise ValueError(f"explain_fn must return (B, 1, H, W) maps, got {tuple(maps.shape)}")
    if expected is not None and maps.shape != expected:
        raise ValueError(
            f"explain_fn returned maps of shape {tuple(maps.shape)} for {step}, "
            f"expected {tuple(expected)} as for the original model"
        )
    if not torch.isfinite(maps).all():
        raise ValueError(f"explain_fn returned NaN or infinite maps for {step}")
    return maps.detach().cpu()


def _spearman(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Per-row Spearman correlation of two ``(B, N)`` tensors, ``(B,)`` float64."""
    values = []
    for ref, oth in zip(reference, other):
        if ref.min() == ref.max() or oth.min() == oth.max():
            values.append(0.0)  # a constant map has no ranking to correlate
        else:
            values.append(float(spearmanr(ref.numpy(), oth.numpy()).statistic))
    return torch.tensor(values, dtype=torch.float64)
