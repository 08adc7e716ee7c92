"""One forward pass with a probe attached: hooks, kernel interception, restore.

:func:`capture_attention` owns every hook and temporary switch it installs and removes them in
``finally`` (an ``ExitStack``), also when the forward raises. Attention is read at the kernel:
inside a captured layer, the call to ``F.scaled_dot_product_attention`` is served by
:func:`~attnexplain.capture.kernel.probed_attention`; a layer that computes attention by hand
must return its probabilities instead (the custom protocol, HF eager attention).

On request (``pooling=True``) the attention of the model's pooling head
(:class:`~attnexplain.capture.adapters.base.PoolingHead`: SigLIP's MAP head, timm's
``AttentionPoolLatent``, OpenCLIP's ``AttentionalPooler``) is read the same way: its learned
queries' attention over the last layer's tokens, computed by the kernel so that gradient methods
can differentiate it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from attnexplain.capture.adapters import ModelAdapter
from attnexplain.capture.errors import UnsupportedModelError
from attnexplain.capture.kernel import full_precision, probed_attention
from attnexplain.capture.layout import TokenLayout
from attnexplain.capture.probes import AttentionProbe, Rows


@dataclass
class CaptureResult:
    """What one captured forward returns.

    Attributes:
        output: the model's own output, unchanged.
        layout: the token layout of this input.
        pooling: ``(B, heads, Q, N)`` fp32 attention of the pooling head's ``Q`` queries over
            the last layer's ``N`` tokens (prefix and patches), inside the autograd graph when the
            probe requires grad; ``None`` unless requested with ``pooling=True``.
    """

    output: Any
    layout: TokenLayout
    pooling: torch.Tensor | None = None


def _expand_grouped_heads(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, enable_gqa: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values repeated per query head, as SDPA's ``enable_gqa`` shares them."""
    if enable_gqa and key.shape[1] != query.shape[1]:
        repeat = query.shape[1] // key.shape[1]
        return key.repeat_interleave(repeat, 1), value.repeat_interleave(repeat, 1)
    return key, value


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in evaluation mode for the block; each ``training`` flag restored after.

    Dropout (attention dropout included) would make maps random from one call to the next, so
    every explanation runs the model as in inference, whatever mode it was left in.
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


def _first_tensor_argument(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for value in (*args, kwargs.get("hidden_states")):
        if isinstance(value, torch.Tensor):
            return value
    return None


class _ForwardState:
    """Per-forward bookkeeping shared by the hooks and the kernel interceptor."""

    def __init__(self, adapter: ModelAdapter, probe: AttentionProbe, inputs: torch.Tensor) -> None:
        self.adapter = adapter
        self.probe = probe
        self.batch = inputs.shape[0]
        self.input_size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
        self.grid: tuple[int, int] | None = None
        self.block_tokens: int | None = None  # tokens entering the first block
        self.layout: TokenLayout | None = None
        self.current_layer: int | None = None
        self.delivered: set[int] = set()
        self.in_pooling = False
        self.pooling: torch.Tensor | None = None

    def layout_for(self, batch: int, num_tokens: int) -> TokenLayout:
        """The layout, read when the first attention runs over ``num_tokens`` keys."""
        if self.layout is not None:
            return self.layout
        if self.grid is None:
            raise UnsupportedModelError(
                "the attention ran before the patch embedding; the token layout cannot be read"
            )
        num_patches = self.grid[0] * self.grid[1]
        if batch != self.batch or num_tokens < num_patches:
            raise UnsupportedModelError(
                f"attention over {num_tokens} tokens in batches of {batch} does not cover the "
                f"{self.grid[0]}x{self.grid[1]} patch grid of a batch of {self.batch}: windowed "
                "or pooled attention (e.g. Swin) is not supported, only global self-attention"
            )
        self.layout = self._make_layout(num_tokens)
        return self.layout

    def final_layout(self) -> TokenLayout | None:
        """After the forward: the layout, also when no attention was captured (from the tokens
        that entered the first block), ``None`` when neither was seen."""
        if self.layout is None and self.grid is not None and self.block_tokens is not None:
            if self.block_tokens >= self.grid[0] * self.grid[1]:
                self.layout = self._make_layout(self.block_tokens)
        return self.layout

    def _make_layout(self, num_tokens: int) -> TokenLayout:
        assert self.grid is not None
        num_prefix = num_tokens - self.grid[0] * self.grid[1]
        cls_index = self.adapter.cls_index()
        if cls_index is not None and not 0 <= cls_index < num_prefix:
            raise UnsupportedModelError(
                f"cls_index={cls_index} does not point at a prefix token: "
                f"{type(self.adapter.model).__name__} has {num_prefix} token(s) before its "
                f"{self.grid[0]}x{self.grid[1]} patch tokens"
                + (f" (valid: 0 .. {num_prefix - 1})" if num_prefix else "")
                + "; pass the CLS position among them, or cls_index=None if it has none"
            )
        return TokenLayout(
            num_prefix_tokens=num_prefix,
            patch_size=self.adapter.patch_size,
            grid=self.grid,
            cls_index=cls_index,
            input_size=self.input_size,
        )

    def consumer(self, layer: int, layout: TokenLayout):
        return lambda probs, row_start: self.probe.consume(layer, probs, row_start, layout)

    def attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        layer = self.current_layer
        rows = self.probe.rows(layer)  # type: ignore[arg-type]
        if rows is Rows.NONE or query.dim() != 4:
            return F.scaled_dot_product_attention(
                query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                is_causal=is_causal, scale=scale, enable_gqa=enable_gqa,
            )  # fmt: skip
        if is_causal:
            raise UnsupportedModelError(
                f"layer {layer} uses causal attention; only bidirectional vision self-attention "
                "can be explained"
            )
        key, value = _expand_grouped_heads(query, key, value, enable_gqa)
        layout = self.layout_for(query.shape[0], key.shape[-2])
        self.delivered.add(layer)  # type: ignore[arg-type]
        return probed_attention(
            query, key, value,
            rows=rows, consume=self.consumer(layer, layout), cls_index=layout.cls_index,  # type: ignore[arg-type]
            attn_mask=attn_mask, dropout_p=dropout_p, scale=scale,
            requires_grad=self.probe.requires_grad and torch.is_grad_enabled(),
        )  # fmt: skip

    def attend_pooling(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        """The pooling head's attention: every query row kept (there are few)."""
        if is_causal or query.dim() != 4:
            raise UnsupportedModelError(
                "the pooling head's attention is causal or not (B, heads, Q, d); only "
                "bidirectional attention pooling can be explained"
            )
        key, value = _expand_grouped_heads(query, key, value, enable_gqa)
        self.layout_for(query.shape[0], key.shape[-2])
        chunks: list[torch.Tensor] = []
        output = probed_attention(
            query, key, value,
            rows=Rows.ALL, consume=lambda probs, _start: chunks.append(probs), cls_index=None,
            attn_mask=attn_mask, dropout_p=dropout_p, scale=scale,
            requires_grad=self.probe.requires_grad and torch.is_grad_enabled(),
        )  # fmt: skip
        self.pooling = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=2)
        return output

    def take_returned_probabilities(self, layer: int, output: Any) -> None:
        """The custom protocol: a layer that computed attention by hand returns it."""
        rows = self.probe.rows(layer)
        if rows is Rows.NONE or layer in self.delivered:
            return
        candidates = output if isinstance(output, tuple | list) else (output,)
        for item in candidates:
            if (
                isinstance(item, torch.Tensor)
                and item.dim() == 4
                and item.shape[0] == self.batch
                and item.shape[-1] == item.shape[-2]
            ):
                layout = self.layout_for(item.shape[0], item.shape[-1])
                probs = item.float()
                with full_precision(probs.device):
                    if rows is Rows.CLS and layout.cls_index is not None:
                        cls = layout.cls_index
                        self.probe.consume(layer, probs[:, :, cls : cls + 1], cls, layout)
                    elif rows is Rows.ALL:
                        self.probe.consume(layer, probs, 0, layout)
                self.delivered.add(layer)
                return
        raise UnsupportedModelError(
            f"attention layer {layer} ({type(self.adapter.attention_modules[layer]).__name__}) "
            "neither called F.scaled_dot_product_attention nor returned its probabilities "
            "(B, heads, N, N); see the custom-model protocol in attnexplain.capture.adapters.custom"
        )


class _KernelInterceptor(TorchFunctionMode):
    """Routes ``F.scaled_dot_product_attention`` calls made inside a captured layer."""

    def __init__(self, state: _ForwardState) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.state.in_pooling:
            if func is F.scaled_dot_product_attention:
                return self.state.attend_pooling(*args, **kwargs)
            if func is F.multi_head_attention_forward:
                bound = _MHA_SIGNATURE.bind(*args, **kwargs)
                bound.apply_defaults()
                if not _is_plain_attention(bound.arguments):
                    raise UnsupportedModelError(
                        "the pooling head's nn.MultiheadAttention uses masks, bias_k/bias_v or "
                        "add_zero_attn, which the capture does not serve"
                    )
                return _multi_head_attention_via_kernel(self.state.attend_pooling, bound.arguments)
            return func(*args, **kwargs)
        layer = self.state.current_layer
        if layer is not None:
            if func is F.scaled_dot_product_attention:
                return self.state.attend(*args, **kwargs)
            if func is F.multi_head_attention_forward and (
                self.state.probe.rows(layer) is not Rows.NONE
            ):
                # The mode is suspended inside this Python-level function, so its SDPA call
                # cannot be intercepted: run plain self-attention through the kernel ourselves;
                # anything else asks for per-head weights, which the layer's hook then reads.
                bound = _MHA_SIGNATURE.bind(*args, **kwargs)
                bound.apply_defaults()
                arguments = bound.arguments
                if _is_plain_attention(arguments) and (
                    arguments["query"] is arguments["key"] is arguments["value"]
                ):
                    return _multi_head_attention_via_kernel(self.state.attend, arguments)
                kwargs = {**kwargs, "need_weights": True, "average_attn_weights": False}
        return func(*args, **kwargs)


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


def _is_plain_attention(arguments: dict[str, Any]) -> bool:
    """No masks, no extra key/value biases: attention the kernel computes exactly."""
    return (
        (arguments["use_separate_proj_weight"] or arguments["in_proj_weight"] is not None)
        and arguments["bias_k"] is None
        and arguments["bias_v"] is None
        and not arguments["add_zero_attn"]
        and arguments["key_padding_mask"] is None
        and arguments["attn_mask"] is None
        and not arguments["is_causal"]
    )


def _multi_head_attention_via_kernel(
    attend: Callable[..., torch.Tensor], arguments: dict[str, Any]
) -> tuple[torch.Tensor, None]:
    """``F.multi_head_attention_forward`` on sequence-first ``(L, B, E)`` inputs, through the
    kernel: self-attention (one packed in-projection) or attention of ``L`` queries over the
    ``S`` tokens of ``key`` / ``value`` (a pooling head's learned queries)."""
    query, key, value = arguments["query"], arguments["key"], arguments["value"]
    num_queries, batch, embed_dim = query.shape
    heads = arguments["num_heads"]
    head_dim = embed_dim // heads
    bias = arguments["in_proj_bias"]
    if query is key is value and not arguments["use_separate_proj_weight"]:
        projected = F.linear(query, arguments["in_proj_weight"], bias).chunk(3, dim=-1)
    else:
        if arguments["use_separate_proj_weight"]:
            weights = (arguments[f"{name}_proj_weight"] for name in ("q", "k", "v"))
        else:
            weights = arguments["in_proj_weight"].chunk(3)
        biases = (None, None, None) if bias is None else bias.chunk(3)
        projected = [
            F.linear(inputs, weight, part)
            for inputs, weight, part in zip((query, key, value), weights, biases)
        ]
    q, k, v = (
        part.reshape(part.shape[0], batch * heads, head_dim)
        .transpose(0, 1)
        .reshape(batch, heads, part.shape[0], head_dim)
        for part in projected
    )
    dropout_p = arguments["dropout_p"] if arguments["training"] else 0.0
    output = attend(q, k, v, dropout_p=dropout_p)  # (B, heads, L, d)
    output = output.permute(2, 0, 1, 3).reshape(num_queries, batch, embed_dim)
    output = F.linear(output, arguments["out_proj_weight"], arguments["out_proj_bias"])
    return output, None


def _install_hooks(stack: ExitStack, state: _ForwardState, pooling: bool) -> None:
    adapter = state.adapter

    def on_patch_embedding(_module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        if state.grid is None:
            state.grid = (int(output.shape[-2]), int(output.shape[-1]))

    def on_first_block(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        tokens = _first_tensor_argument(args, kwargs)
        if state.block_tokens is None and tokens is not None and tokens.dim() == 3:
            state.block_tokens = int(tokens.shape[1])

    handles = [
        adapter.patch_embedding.register_forward_hook(on_patch_embedding),
        adapter.blocks[0].register_forward_pre_hook(on_first_block, with_kwargs=True),
    ]
    for index, module in enumerate(adapter.attention_modules):

        def enter_layer(_module: nn.Module, _args: Any, index: int = index) -> None:
            state.current_layer = index

        def leave_layer(_module: nn.Module, _args: Any, output: Any, index: int = index) -> None:
            state.current_layer = None
            state.take_returned_probabilities(index, output)

        handles.append(module.register_forward_pre_hook(enter_layer))
        handles.append(module.register_forward_hook(leave_layer))
    if pooling:

        def enter_pooling(_module: nn.Module, _args: Any) -> None:
            state.in_pooling = True

        def leave_pooling(_module: nn.Module, _args: Any, _output: Any) -> None:
            state.in_pooling = False

        attention = adapter.pooling_head.attention  # type: ignore[union-attr]
        handles.append(attention.register_forward_pre_hook(enter_pooling))
        handles.append(attention.register_forward_hook(leave_pooling))
    stack.callback(lambda: [handle.remove() for handle in handles])


@contextmanager
def _captured(
    adapter: ModelAdapter, probe: AttentionProbe, inputs: torch.Tensor, pooling: bool
) -> Iterator[_ForwardState]:
    state = _ForwardState(adapter, probe, inputs)
    probe.reset(adapter.num_layers)
    with ExitStack() as stack:
        stack.enter_context(eval_mode(adapter.model))
        adapter.enter(stack, inputs)
        _install_hooks(stack, state, pooling)
        stack.enter_context(_KernelInterceptor(state))
        yield state


def capture_attention(
    adapter: ModelAdapter, probe: AttentionProbe, inputs: torch.Tensor, *, pooling: bool = False
) -> CaptureResult:
    """Run the model once on ``inputs`` and feed ``probe`` the attention it asks for.

    The model runs in evaluation mode (dropout off) and every module's ``training`` flag is
    restored afterwards, so maps are deterministic whatever mode the model was left in.

    Args:
        adapter: the model's adapter (see :func:`~attnexplain.capture.adapters.resolve_adapter`).
        probe: what to keep of each layer's attention.
        inputs: ``(B, C, H, W)`` batch, already validated.
        pooling: also read the pooling head's attention (``CaptureResult.pooling``), in the
            autograd graph when ``probe.requires_grad``.

    Returns:
        The model's output, the token layout of this input and, on request, the pooling head's
        attention.

    Raises:
        UnsupportedModelError: if a layer the probe needs delivered no attention, the
            attention does not cover the patch grid (windowed attention), the adapter's CLS
            index is not a prefix token of this input, or ``pooling`` is asked of a model
            without a pooling head (or one whose attention was not observed).
    """
    if pooling and adapter.pooling_head is None:
        raise UnsupportedModelError(
            f"{type(adapter.model).__name__} has no attention-pooling head to read"
        )
    with _captured(adapter, probe, inputs, pooling) as state:
        output = adapter.forward(inputs)
    missing = [
        layer
        for layer in range(adapter.num_layers)
        if probe.rows(layer) is not Rows.NONE and layer not in state.delivered
    ]
    layout = state.final_layout()
    if missing or layout is None:
        raise UnsupportedModelError(
            f"no attention was observed in layers {missing}: the model's attention modules "
            "were not called during the forward (is the model a ViT encoder?)"
        )
    if pooling and state.pooling is None:
        raise UnsupportedModelError(
            f"the pooling head's attention ({type(adapter.pooling_head.attention).__name__}) "  # type: ignore[union-attr]
            "neither called F.scaled_dot_product_attention nor nn.MultiheadAttention's "
            "F.multi_head_attention_forward during the forward"
        )
    return CaptureResult(output=output, layout=layout, pooling=state.pooling)
