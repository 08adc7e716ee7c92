"""Token-level capture: the norm of every output token per layer, and which tokens are registers.

:func:`capture_token_norms` hooks the transformer block of each attention layer
(:attr:`~attnexplain.capture.adapters.base.ModelAdapter.blocks`) for one forward and keeps, per
layer, the L2 norm of every token of the block's output, the residual stream after that block:
``(B, N)`` per layer, reduced as each block returns, so no hidden state is held. The attention a
probe asks for is captured in the same forward. The hooks are removed in ``finally``, also when
the forward raises.

:func:`drop_keys` removes chosen tokens from attention rows and renormalises what is left; the
attention methods use it for their ``exclude_tokens`` option.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnexplain.capture.adapters import ModelAdapter
from attnexplain.capture.errors import UnsupportedModelError
from attnexplain.capture.kernel import full_precision
from attnexplain.capture.layout import TokenLayout
from attnexplain.capture.probes import AttentionProbe, CLSRowProbe
from attnexplain.capture.session import capture_attention

#: ``inputs (B, C, H, W) -> (B, N)`` bool, True for tokens to leave out of attention maps.
TokenMask = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TokenNormCapture:
    """What :func:`capture_token_norms` returns.

    Attributes:
        output: the model's own output, unchanged.
        layout: the token layout of this input.
        norms: ``(B, layers, N)`` float32 L2 norm of every token (prefix tokens first) at the
            output of each layer's transformer block.
    """

    output: Any
    layout: TokenLayout
    norms: torch.Tensor


def _token_states(output: Any) -> torch.Tensor | None:
    """The ``(B, N, D)`` hidden states a block returned (the tensor itself or a tuple's first)."""
    if isinstance(output, tuple | list) and output:
        output = output[0]
    return output if isinstance(output, torch.Tensor) and output.dim() == 3 else None


def _check_blocks(adapter: ModelAdapter) -> list[nn.Module]:
    blocks = adapter.blocks
    for index, (block, attention) in enumerate(zip(blocks, adapter.attention_modules)):
        if block is attention:
            raise UnsupportedModelError(
                f"attention layer {index} ({type(attention).__name__}) sits in no transformer "
                "block of its own, so the residual stream after it (the token outputs the "
                "diagnostics read) cannot be found; wrap each attention + MLP pair in one module"
            )
    return blocks


def capture_token_norms(
    adapter: ModelAdapter, inputs: torch.Tensor, probe: AttentionProbe | None = None
) -> TokenNormCapture:
    """Run the model once and record the norm of every token at every block's output.

    Args:
        adapter: the model's adapter.
        inputs: ``(B, C, H, W)`` batch, already validated.
        probe: attention to capture in the same forward; by default the CLS row of the last
            layer, the cheapest request (the token layout is read where attention runs).

    Returns:
        The model's output, the layout and the ``(B, layers, N)`` norms.

    Raises:
        UnsupportedModelError: if an attention layer has no enclosing block, a block's output
            is not ``(B, N, D)`` tokens covering the layout, or a block never ran.
    """
    blocks = _check_blocks(adapter)
    norms: dict[int, torch.Tensor] = {}

    def record(index: int, block: nn.Module, output: Any) -> None:
        states = _token_states(output)
        if states is None or states.shape[0] != inputs.shape[0]:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise UnsupportedModelError(
                f"the block of attention layer {index} ({type(block).__name__}) returned "
                f"{shape}, not (B={inputs.shape[0]}, tokens, dim) hidden states; token norms "
                "need each block to return the residual stream"
            )
        with torch.no_grad(), full_precision(states.device):
            norms[index] = torch.linalg.vector_norm(states.detach().float(), dim=-1)

    with ExitStack() as stack:
        for index, block in enumerate(blocks):
            handle = block.register_forward_hook(
                lambda module, _args, output, index=index: record(index, module, output)
            )
            stack.callback(handle.remove)
        result = capture_attention(adapter, probe or CLSRowProbe(-1), inputs)

    layout = result.layout
    missing = [index for index in range(len(blocks)) if index not in norms]
    if missing:
        raise UnsupportedModelError(
            f"the blocks of attention layers {missing} never ran during the forward"
        )
    for index in range(len(blocks)):
        if norms[index].shape[-1] != layout.num_tokens:
            raise UnsupportedModelError(
                f"the block of attention layer {index} returns {norms[index].shape[-1]} tokens "
                f"but the attention runs over {layout.num_tokens} (prefix + "
                f"{layout.grid[0]}x{layout.grid[1]} patches); token norms need blocks whose "
                "outputs are the attention's tokens"
            )
    stacked = torch.stack([norms[index] for index in range(len(blocks))], dim=1)
    return TokenNormCapture(output=result.output, layout=layout, norms=stacked)


def num_register_tokens(adapter: ModelAdapter) -> int:
    """How many of the prefix tokens are registers (Darcet et al. 2024), read from the model.

    Hugging Face configs give ``num_register_tokens`` (DINOv2 with registers), timm models
    ``num_reg_tokens``; a custom model may set either attribute on itself. Every supported family
    places registers last among the prefix tokens, after CLS (and a distillation token).

    Args:
        adapter: the model's adapter.

    Returns:
        The number of register tokens (0 when the model declares none).
    """
    model = adapter.model
    for owner in (getattr(model, "config", None), model):
        for name in ("num_register_tokens", "num_reg_tokens"):
            value = getattr(owner, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return 0


def register_indices(adapter: ModelAdapter, layout: TokenLayout) -> list[int]:
    """Token positions of the register tokens in this layout (the last prefix tokens).

    Raises:
        UnsupportedModelError: if the model declares more registers than it has prefix tokens.
    """
    count = num_register_tokens(adapter)
    if count > layout.num_prefix_tokens:
        raise UnsupportedModelError(
            f"{type(adapter.model).__name__} declares {count} register tokens but its sequence "
            f"has only {layout.num_prefix_tokens} prefix tokens"
        )
    return list(range(layout.num_prefix_tokens - count, layout.num_prefix_tokens))


def drop_keys(rows: torch.Tensor, excluded: torch.Tensor | None) -> torch.Tensor:
    """Zero the excluded key tokens of attention rows and rescale each row to its former sum.

    The excluded tokens' share is redistributed over the others in proportion to their
    attention: for probabilities, ``A'[q, k] = A[q, k] / sum_{k' kept} A[q, k']`` on kept keys.
    A row whose whole mass was on excluded tokens becomes 0.

    Args:
        rows: ``(B, ..., N)`` attention rows over all ``N`` tokens (not modified).
        excluded: ``(B, N)`` bool, True for the tokens to drop; ``None`` returns ``rows``.

    Returns:
        ``(B, ..., N)`` rows, a new tensor unless ``excluded`` is ``None``.

    Raises:
        ValueError: if ``excluded`` has the wrong shape or dtype, or drops every token of a
            sample.
    """
    if excluded is None:
        return rows
    expected = (rows.shape[0], rows.shape[-1])
    if not isinstance(excluded, torch.Tensor) or excluded.dtype != torch.bool:
        raise ValueError(
            f"exclude_tokens must return a bool tensor (B, N) = {expected}, got "
            f"{excluded.dtype if isinstance(excluded, torch.Tensor) else type(excluded).__name__}"
        )
    if tuple(excluded.shape) != expected:
        raise ValueError(
            f"exclude_tokens must return a (B, N) = {expected} mask over all tokens (prefix "
            f"first), got shape {tuple(excluded.shape)}"
        )
    everything = excluded.all(dim=-1)
    if everything.any():
        raise ValueError(
            f"exclude_tokens drops every token of sample {int(everything.nonzero()[0])}: "
            "nothing is left to renormalise the attention over"
        )
    keep = (~excluded).to(rows.device).view(rows.shape[0], *([1] * (rows.dim() - 2)), -1)
    kept = rows * keep
    total, remaining = rows.sum(dim=-1, keepdim=True), kept.sum(dim=-1, keepdim=True)
    scale = torch.where(remaining > 0, total / remaining.clamp_min(torch.finfo(rows.dtype).tiny), 0)
    return kept * scale
