"""The torch-function mode that puts every op of a forward under its relevance rule.

While a relevance forward runs, :class:`RelevanceInterceptor` sees every torch function call.
Calls that touch no relevance-carrying tensor (parameters, position-embedding interpolation,
shape arithmetic) run unchanged. The others are

- ops with a rule: run through :func:`~attnexplain.relevance.ops.apply` with the rule the rule
  set gives their kind (``F.linear``, ``F.conv2d``, add / sub, mul / div, matmul, softmax,
  ``F.layer_norm``, activations, mean / sum);
- attention kernels, written out as those ops so the probabilities exist and get their rule:
  ``F.scaled_dot_product_attention`` (HF SDPA, timm fused attention) and
  ``F.multi_head_attention_forward`` (``nn.MultiheadAttention``: the mode is suspended inside
  that Python function, so its own ops could not be seen);
- ops that only move values (view, reshape, permute, index, cat, split, clone, expand, casts,
  eval dropout): run as they are, their outputs tagged as carriers;
- queries (shape, dtype, ``dim()``, comparisons returning booleans): run as they are;
- anything else: :class:`UnsupportedOperationError`, naming the op and the module it ran in,
  rather than a map computed with the op's ordinary gradient.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from attnexplain.capture import UnsupportedModelError
from attnexplain.relevance.ops import (
    AddCall,
    ConvCall,
    LayerNormCall,
    LinearCall,
    MatmulCall,
    OpCall,
    Propagation,
    SoftmaxCall,
    apply,
    identity_op,
)

_T = torch._C.TensorBase


class UnsupportedOperationError(UnsupportedModelError):
    """The model ran an op on relevance-carrying tensors that no relevance rule covers."""


#: Ops that only move, copy or re-type values: their own backward moves relevance correctly.
PASSTHROUGH: frozenset[Callable[..., Any]] = frozenset({
    _T.view, _T.view_as, _T.reshape, _T.reshape_as, _T.permute, _T.transpose, _T.flatten,
    torch.Tensor.unflatten, _T.squeeze, _T.unsqueeze, _T.expand, _T.expand_as, _T.contiguous,
    _T.clone, _T.to, _T.type, _T.type_as, _T.float, _T.double, _T.half, _T.bfloat16, _T.narrow,
    _T.select, _T.__getitem__, torch.Tensor.split, _T.split, _T.split_with_sizes, _T.chunk,
    _T.unbind, _T.movedim, _T.moveaxis, _T.t, _T.repeat, _T.repeat_interleave, _T.flip,
    _T.roll, _T.index_select, _T.requires_grad_, torch.cat, torch.concat, torch.concatenate,
    torch.stack, torch.flatten, torch.transpose, torch.permute, torch.reshape, torch.squeeze,
    torch.unsqueeze, torch.split, torch.chunk, torch.unbind, torch.narrow, torch.movedim,
    torch.index_select, torch.select, torch.t, torch.repeat_interleave, torch.flip, torch.roll,
})  # fmt: skip
#: Tensor properties that are views (``x.mT``): matched by their descriptor.
PASSTHROUGH_PROPERTIES = frozenset(_T.__dict__[name] for name in ("mT", "T", "H", "mH"))
#: Ops whose result is a new constant however it was shaped after a carrier.
CONSTANT_RESULTS: frozenset[Callable[..., Any]] = frozenset({
    _T.new_zeros, _T.new_ones, _T.new_empty, _T.new_full, _T.new_tensor, _T.detach,
    torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like,
    torch.randn_like,
})  # fmt: skip
ACTIVATIONS: frozenset[Callable[..., Any]] = frozenset({
    F.gelu, F.relu, torch.relu, _T.relu, F.silu, torch.sigmoid, _T.sigmoid, F.sigmoid,
    torch.tanh, _T.tanh, F.tanh, F.softplus, F.elu, F.leaky_relu, F.hardswish, F.mish,
})  # fmt: skip
REDUCTIONS: frozenset[Callable[..., Any]] = frozenset({_T.mean, torch.mean, _T.sum, torch.sum})
_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


def op_name(func: Callable[..., Any]) -> str:
    """A readable name for a torch function (``torch.Tensor.add``, ``torch.nn.functional.gelu``)."""
    owner = getattr(func, "__self__", None)
    if owner is not None and hasattr(owner, "__objclass__"):
        return f"torch.Tensor.{owner.__name__}"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    if qualname.startswith("TensorBase."):
        return "torch.Tensor." + qualname.removeprefix("TensorBase.")
    if qualname.startswith("Tensor."):
        return "torch." + qualname
    if qualname.startswith("_VariableFunctionsClass."):
        return "torch." + qualname.removeprefix("_VariableFunctionsClass.")
    module = getattr(func, "__module__", None) or "torch"
    module = "torch.nn.functional" if module == "torch._C._nn" else module
    return f"{module}.{qualname}"


def _has_floating_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_floating_point()
    if isinstance(value, tuple | list):
        return any(_has_floating_tensor(item) for item in value)
    return False


#: The ops with rules, mapped to the interceptor's method that serves them (names, not bound
#: methods: the mode keeps no reference to itself, so the graph it builds is freed at once).
_HANDLERS: dict[Callable[..., Any], str] = {
    F.linear: "_linear",
    F.conv2d: "_conv2d",
    _T.add: "_add",
    torch.add: "_add",
    _T.sub: "_sub",
    torch.sub: "_sub",
    torch.Tensor.__rsub__: "_rsub",
    torch.rsub: "_rsub",
    _T.mul: "_mul",
    torch.mul: "_mul",
    _T.div: "_div",
    torch.div: "_div",
    _T.neg: "_neg",
    torch.neg: "_neg",
    _T.matmul: "_matmul",
    torch.matmul: "_matmul",
    _T.bmm: "_matmul",
    torch.bmm: "_matmul",
    _T.softmax: "_softmax",
    torch.softmax: "_softmax",
    F.softmax: "_softmax",
    F.layer_norm: "_layer_norm",
    F.rms_norm: "_rms_norm",
    F.dropout: "_dropout",
    F.pad: "_pad",
    F.scaled_dot_product_attention: "_attention",
    F.multi_head_attention_forward: "_multi_head_attention",
}


class RelevanceInterceptor(TorchFunctionMode):
    """Routes each op of the forward that touches a carrier to its rule.

    Args:
        propagation: the state of this relevance forward.
        describe_module: the module being run, for error messages.
    """

    def __init__(self, propagation: Propagation, describe_module: Callable[[], str]) -> None:
        super().__init__()
        self.p = propagation
        self.describe_module = describe_module

    # -- dispatch ------------------------------------------------------------------------------

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._touches_carrier(args) and not self._touches_carrier(kwargs.values()):
            return func(*args, **kwargs)
        handler = _HANDLERS.get(func)
        if handler is not None:
            return getattr(self, handler)(func, *args, **kwargs)
        if func in ACTIVATIONS:
            return self._elementwise(self.p.rules.activation, func, args, kwargs)
        if func in REDUCTIONS:
            return self._elementwise(self.p.rules.reduction, func, args, kwargs)
        if func in PASSTHROUGH or getattr(func, "__self__", None) in PASSTHROUGH_PROPERTIES:
            output = func(*args, **kwargs)
            return self.p.mark(output) if self._first_carries(args) else output
        if func in CONSTANT_RESULTS:
            return func(*args, **kwargs)
        output = func(*args, **kwargs)
        name = op_name(func)
        in_place = name.endswith("_") or name.endswith("__setitem__")
        if output is None or in_place or _has_floating_tensor(output):
            raise self._no_rule(name)
        return output  # a query: shape, dtype, a boolean test

    def _touches_carrier(self, values: Any) -> bool:
        for value in values:
            if isinstance(value, tuple | list):
                if self._touches_carrier(value):
                    return True
            elif self.p.is_carrier(value):
                return True
        return False

    def _first_carries(self, args: tuple) -> bool:
        first = args[0] if args else None
        return self._touches_carrier(first if isinstance(first, tuple | list) else (first,))

    def _no_rule(self, what: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(
            f"{what} has no relevance rule in the {self.p.rules.name!r} rule set; it ran on "
            f"relevance-carrying tensors in {self.describe_module()}. The relevance methods "
            "cover the ops ViTs run (linear, patch conv, add, mul, matmul, attention, softmax, "
            "layer norm, activations, mean, reshapes and indexing); rewrite the module with "
            "those ops or explain it with a gradient method (GradCAM, GradientWeightedRollout)"
        )

    def _constant_only(self, what: str, *values: Any) -> None:
        if self._touches_carrier(values):
            raise self._no_rule(what)

    # -- ops with rules ------------------------------------------------------------------------

    def _linear(self, func, input, weight, bias=None):
        self._constant_only("torch.nn.functional.linear with a relevance-carrying weight",
                            weight, bias)  # fmt: skip
        return apply(self.p, LinearCall(self.p, self.p.rules.linear, weight, bias), [input])

    def _conv2d(self, func, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        self._constant_only("torch.nn.functional.conv2d with a relevance-carrying weight",
                            weight, bias)  # fmt: skip
        if padding == "valid":
            padding = 0
        if isinstance(padding, str):
            raise self._no_rule(f"torch.nn.functional.conv2d with padding={padding!r}")
        rule = self.p.rules.stem if self.p.in_stem else self.p.rules.conv
        call = ConvCall(self.p, rule, weight, bias, stride, padding, dilation, groups)
        return apply(self.p, call, [input])

    def _sum_of(self, operands: list[Any], coefficients: list[float], kwargs: dict) -> Any:
        if kwargs.get("out") is not None:
            raise self._no_rule("an addition with out=")
        call = AddCall(self.p, self.p.rules.add, operands, coefficients)
        return apply(self.p, call, [operands[k] for k in call.carrier_terms])

    def _add(self, func, input, other, *, alpha=1, **kwargs):
        return self._sum_of([input, other], [1.0, alpha], kwargs)

    def _sub(self, func, input, other, *, alpha=1, **kwargs):
        return self._sum_of([input, other], [1.0, -alpha], kwargs)

    def _rsub(self, func, input, other, alpha=1, **kwargs):
        return self._sum_of([input, other], [-alpha, 1.0], kwargs)

    def _mul(self, func, input, other, **kwargs):
        if kwargs.get("out") is not None:
            raise self._no_rule("a multiplication with out=")
        if self.p.is_carrier(input) and self.p.is_carrier(other):
            call = OpCall(self.p, self.p.rules.product, torch.mul)
            return apply(self.p, call, [input, other])
        carrier, factor = (input, other) if self.p.is_carrier(input) else (other, input)
        return identity_op(self.p, lambda x: torch.mul(x, factor), carrier)

    def _div(self, func, input, other, *, rounding_mode=None, **kwargs):
        if self.p.is_carrier(other) or rounding_mode is not None or kwargs.get("out") is not None:
            raise self._no_rule(f"{op_name(func)} by a relevance-carrying tensor or rounded")
        return identity_op(self.p, lambda x: torch.div(x, other), input)

    def _neg(self, func, input):
        return identity_op(self.p, torch.neg, input)

    def _matmul(self, func, input, other, **kwargs):
        if kwargs.get("out") is not None:
            raise self._no_rule("a matrix product with out=")
        both = self.p.is_carrier(input) and self.p.is_carrier(other)
        rule = self.p.rules.bilinear if both else self.p.rules.constant_matmul
        call = MatmulCall(self.p, rule, input, other)
        return apply(self.p, call, [t for t in (input, other) if self.p.is_carrier(t)])

    def _softmax(self, func, input, dim=None, *args, dtype=None, **kwargs):
        if dtype is None and args and isinstance(args[-1], torch.dtype):
            dtype = args[-1]  # Tensor.softmax(dim, dtype)
        if dim is None:
            raise self._no_rule("softmax without an explicit dim")
        call = SoftmaxCall(self.p, self.p.rules.softmax, dim, dtype)
        probabilities = apply(self.p, call, [input])
        if self.p.layer is not None:
            self.p.attention[self.p.layer] = probabilities
        return probabilities

    def _layer_norm(self, func, input, normalized_shape, weight=None, bias=None, eps=1e-5):
        self._constant_only("layer_norm with relevance-carrying weights", weight, bias)
        call = LayerNormCall(self.p, self.p.rules.norm, tuple(normalized_shape), weight, bias, eps)
        return apply(self.p, call, [input])

    def _rms_norm(self, func, input, normalized_shape, weight=None, eps=None):
        # Identity in every rule set: lxt's rms_norm_identity, Chefer et al.'s pass-through norm.
        self._constant_only("rms_norm with relevance-carrying weights", weight)
        return identity_op(self.p, lambda x: F.rms_norm(x, normalized_shape, weight, eps), input)

    def _elementwise(self, rule, func, args, kwargs):
        input, *rest = args
        self._constant_only(f"{op_name(func)} with more than one relevance-carrying tensor", rest)
        call = OpCall(self.p, rule, lambda x: func(x, *rest, **kwargs))
        return apply(self.p, call, [input])

    def _dropout(self, func, input, p=0.5, training=True, inplace=False):
        if training and p > 0:
            raise self._no_rule("dropout in training mode")
        return input

    def _pad(self, func, input, pad, mode="constant", value=None):
        if mode != "constant" or value:
            raise self._no_rule(f"torch.nn.functional.pad with mode={mode!r}, value={value!r}")
        return self.p.mark(F.pad(input, pad, mode=mode, value=value))

    # -- attention kernels, written out --------------------------------------------------------

    def _attention(
        self, func, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
        scale=None, enable_gqa=False,
    ):  # fmt: skip
        if attn_mask is not None or is_causal or dropout_p > 0:
            raise self._no_rule(
                "scaled_dot_product_attention with a mask, causal attention or dropout"
            )
        with self:  # the written-out ops go through this mode's rules again
            if enable_gqa and key.shape[-3] != query.shape[-3]:
                repeat = query.shape[-3] // key.shape[-3]
                key = key.repeat_interleave(repeat, -3)
                value = value.repeat_interleave(repeat, -3)
            scale = query.shape[-1] ** -0.5 if scale is None else scale
            scores = torch.matmul(query, key.transpose(-2, -1)) * scale
            return torch.matmul(scores.softmax(-1), value)

    def _multi_head_attention(self, func, *args, **kwargs):
        bound = _MHA_SIGNATURE.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        separate = a["use_separate_proj_weight"]
        plain = (
            a["key"] is a["value"] and (separate or a["in_proj_weight"] is not None)
            and a["bias_k"] is None and a["bias_v"] is None
            and not a["add_zero_attn"] and a["key_padding_mask"] is None
            and a["attn_mask"] is None and not a["is_causal"]
            and not (a["training"] and a["dropout_p"] > 0)
        )  # fmt: skip
        if not plain:
            raise self._no_rule(
                "nn.MultiheadAttention other than plain self- or pooling attention (masks, "
                "different keys and values, bias_k / bias_v, zero attention or training dropout)"
            )
        queries, batch, embed_dim = a["query"].shape
        heads = a["num_heads"]
        bias = a["in_proj_bias"]

        def split_heads(part: torch.Tensor) -> torch.Tensor:
            return part.reshape(part.shape[0], batch, heads, embed_dim // heads).permute(1, 2, 0, 3)

        with self:
            if a["query"] is a["key"] and not separate:
                query, key, value = F.linear(a["query"], a["in_proj_weight"], bias).chunk(3, -1)
            else:  # a pooling query (SigLIP's probe, OpenCLIP's attentional pooler) over tokens
                weights = (
                    (a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"])
                    if separate
                    else a["in_proj_weight"].chunk(3)
                )
                biases = (None, None, None) if bias is None else bias.chunk(3)
                query, key, value = (
                    F.linear(tokens, weight, part_bias)
                    for tokens, weight, part_bias in zip(
                        (a["query"], a["key"], a["key"]), weights, biases
                    )
                )
            query, key, value = (split_heads(part) for part in (query, key, value))
            output = F.scaled_dot_product_attention(query, key, value)
            output = output.permute(2, 0, 1, 3).reshape(queries, batch, embed_dim)
            output = F.linear(output, a["out_proj_weight"], a["out_proj_bias"])
        return output, None
