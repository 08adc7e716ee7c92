"""The ops a ViT runs, each as an autograd ``Function`` whose backward is its relevance rule.

An :class:`OpCall` records one op of the forward: the op as a function of its
relevance-carrying inputs (*carriers*; weights, biases and other constants are bound into it),
the carriers' values and the output. :func:`apply` runs it through :class:`_RuleFunction`, whose
backward is either the rule the :class:`Propagation`'s rule set gives the op (the relevance
pass) or the op's ordinary vector-Jacobian product (the gradient pass, from the op's own autograd
graph kept in the forward when the method asks for gradients). Both passes therefore run over
the graph of *one* forward.

The ``Propagation`` is the state of one relevance forward: the rule set, which tensors carry
relevance (tagged by identity, weakly), the module being run and the attention probabilities
seen per attention layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

from attnexplain.relevance.rule_sets import RuleSet
from attnexplain.relevance.rules import Identity, Rule

Fn = Callable[..., torch.Tensor]


class PassState:
    """Which backward pass runs: the ops' backwards read it (it holds no tensors, so the graph
    and the :class:`Propagation` that records it never form a reference cycle)."""

    def __init__(self) -> None:
        self.gradient = False


class Propagation:
    """The state of one relevance forward (and of the backward passes over its graph).

    Args:
        rules: the rule set.
        keep_gradients: keep each op's own autograd graph so a gradient pass can run too.

    Attributes:
        passes: which backward pass runs (``passes.gradient``: every op's ordinary gradient).
        attention: per attention layer, the last softmax output computed inside it.
        module_names: the names of the modules being run, innermost last.
        layer: index of the attention layer being run, ``None`` outside.
        in_stem: whether the patch embedding is being run.
    """

    def __init__(self, rules: RuleSet, *, keep_gradients: bool = False) -> None:
        self.rules = rules
        self.keep_gradients = keep_gradients
        self.passes = PassState()
        self.attention: dict[int, torch.Tensor] = {}
        self.module_names: list[str] = []
        self.layer: int | None = None
        self.in_stem = False
        self._carriers: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def is_carrier(self, value: Any) -> bool:
        """Whether ``value`` is a tensor that carries relevance (computed from the input)."""
        return isinstance(value, torch.Tensor) and value in self._carriers

    def mark(self, value: Any) -> Any:
        """Tag every floating tensor in ``value`` (a tensor, or a tuple / list of them)."""
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                self._carriers[value] = True
        elif isinstance(value, tuple | list):
            for item in value:
                self.mark(item)
        return value


class OpCall:
    """One op of the forward, as the rules and the gradient pass see it.

    Args:
        propagation: the forward it belongs to (read at construction only).
        rule: the rule of its relevance pass.
        fn: the op as a function of its carriers, constants bound (subclasses override
            :meth:`compute` instead).

    Attributes:
        inputs: the carriers' values (detached), in ``fn``'s argument order.
        output: the op's output value (detached).
    """

    def __init__(self, propagation: Propagation, rule: Rule, fn: Fn | None = None) -> None:
        self.passes = propagation.passes
        self.keep_graph = propagation.keep_gradients
        self.rule = rule
        self.fn = fn
        self.inputs: tuple[torch.Tensor, ...] = ()
        self.output: torch.Tensor
        self._graph: tuple[tuple[torch.Tensor, ...], torch.Tensor] | None = None

    def compute(self, *carriers: torch.Tensor) -> torch.Tensor:
        """The op's output for these carriers."""
        return self.fn(*carriers)  # type: ignore[misc]

    def forward(self, carriers: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run the op (keeping its own graph when gradients are wanted); record its values."""
        if self.keep_graph:
            with torch.enable_grad():
                leaves = tuple(c.detach().requires_grad_(True) for c in carriers)
                output = self.compute(*leaves)
            self._graph = (leaves, output)
            output = output.detach()
        else:
            output = self.compute(*carriers)
        self.inputs = tuple(c.detach() for c in carriers)
        self.output = output.detach()
        return output

    def gradient(self, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """The op's ordinary vector-Jacobian product, from the graph kept in the forward.

        Raises:
            RuntimeError: when the forward kept no graph (``keep_gradients=False``).
        """
        if self._graph is None:
            raise RuntimeError(
                "this relevance forward kept no gradient graph; trace it with gradients=True"
            )
        leaves, output = self._graph
        self._graph = None
        return torch.autograd.grad(output, leaves, grad, allow_unused=True)

    def input_vjp(self, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """``∂<grad, op(x)>/∂x`` for each carrier, at the recorded inputs (recomputed)."""
        with torch.enable_grad():
            leaves = tuple(x.detach().requires_grad_(True) for x in self.inputs)
            output = self.compute(*leaves)
            return torch.autograd.grad(output, leaves, grad, allow_unused=True)


class AffineCall(OpCall):
    """A linear map or convolution of one carrier, with a weight the rules may substitute."""

    def __init__(
        self, propagation: Propagation, rule: Rule, weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> None:  # fmt: skip
        self.weight = weight
        self.bias = bias
        super().__init__(propagation, rule)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return self.affine(x, self.weight, self.bias)

    def affine(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The op with ``weight`` in place of its own (and no bias unless given)."""
        raise NotImplementedError

    def affine_vjp(self, grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``∂<grad, affine(x, weight)>/∂x`` (the transposed map)."""
        raise NotImplementedError

    def input_vjp(self, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (self.affine_vjp(grad, self.weight),)

    def output_without_bias(self) -> torch.Tensor:
        """The recorded output minus the bias: ``affine(x, W)``."""
        raise NotImplementedError


class LinearCall(AffineCall):
    """``F.linear(x, W, b)``."""

    def affine(self, x, weight, bias=None):
        return F.linear(x, weight, bias)

    def affine_vjp(self, grad, weight):
        return grad.matmul(weight)

    def output_without_bias(self):
        return self.output if self.bias is None else self.output - self.bias


class ConvCall(AffineCall):
    """``F.conv2d(x, W, b, stride, padding, dilation, groups)``."""

    def __init__(self, propagation, rule, weight, bias, stride, padding, dilation, groups):
        self.settings = {"stride": stride, "padding": padding, "dilation": dilation,
                         "groups": groups}  # fmt: skip
        super().__init__(propagation, rule, weight, bias)

    def affine(self, x, weight, bias=None):
        return F.conv2d(x, weight, bias, **self.settings)

    def affine_vjp(self, grad, weight):
        return torch.nn.grad.conv2d_input(self.inputs[0].shape, weight, grad, **self.settings)

    def output_without_bias(self):
        return self.output if self.bias is None else self.output - self.bias[:, None, None]


class AddCall(OpCall):
    """``Σ c_k t_k`` over terms ``t_k`` (carriers or constants) with coefficients ``c_k``.

    Attributes:
        terms: every term times its coefficient, broadcast to the output's shape (constants too,
            for rules that weigh the carriers against them).
        carrier_terms: the term index of each carrier.
    """

    def __init__(
        self, propagation: Propagation, rule: Rule, operands: Sequence[Any],
        coefficients: Sequence[float],
    ) -> None:  # fmt: skip
        self.operands = list(operands)
        self.coefficients = list(coefficients)
        self.carrier_terms = [k for k, o in enumerate(operands) if propagation.is_carrier(o)]
        super().__init__(propagation, rule)
        self.terms: list[torch.Tensor] = []

    def compute(self, *carriers: torch.Tensor) -> torch.Tensor:
        values = list(self.operands)
        for k, carrier in zip(self.carrier_terms, carriers):
            values[k] = carrier
        total = values[0] * self.coefficients[0]
        for value, coefficient in zip(values[1:], self.coefficients[1:]):
            total = total + value * coefficient
        return total

    def forward(self, carriers: Sequence[torch.Tensor]) -> torch.Tensor:
        output = super().forward(carriers)
        values = list(self.operands)
        for k, carrier in zip(self.carrier_terms, self.inputs):
            values[k] = carrier
        self.terms = [
            torch.as_tensor(v, dtype=output.dtype, device=output.device).mul(c).expand_as(output)
            for v, c in zip(values, self.coefficients)
        ]
        return output

    def input_vjp(self, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return tuple(
            (grad * self.coefficients[k]).sum_to_size(x.shape)
            for k, x in zip(self.carrier_terms, self.inputs)
        )


class MatmulCall(OpCall):
    """``torch.matmul(a, b)`` with both operands carriers, or one (the other a constant)."""

    def __init__(
        self, propagation: Propagation, rule: Rule, left: torch.Tensor, right: torch.Tensor
    ) -> None:
        self.left_carries = propagation.is_carrier(left)
        self.right_carries = propagation.is_carrier(right)
        self.left, self.right = left.detach(), right.detach()
        super().__init__(propagation, rule)

    def compute(self, *carriers: torch.Tensor) -> torch.Tensor:
        values = iter(carriers)
        left = next(values) if self.left_carries else self.left
        right = next(values) if self.right_carries else self.right
        return torch.matmul(left, right)

    def input_vjp(self, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        values = iter(self.inputs)
        left = next(values) if self.left_carries else self.left
        right = next(values) if self.right_carries else self.right
        if left.dim() < 2 or right.dim() < 2:
            return super().input_vjp(grad)
        grads = []
        if self.left_carries:
            grads.append(grad.matmul(right.mT).sum_to_size(left.shape))
        if self.right_carries:
            grads.append(left.mT.matmul(grad).sum_to_size(right.shape))
        return tuple(grads)


class SoftmaxCall(OpCall):
    """``softmax(x, dim)``."""

    def __init__(self, propagation: Propagation, rule: Rule, dim: int, dtype: Any) -> None:
        self.dim = dim
        super().__init__(propagation, rule, lambda x: torch.softmax(x, dim, dtype=dtype))


class LayerNormCall(OpCall):
    """``F.layer_norm(x, normalized_shape, weight, bias, eps)``."""

    def __init__(self, propagation, rule, normalized_shape, weight, bias, eps) -> None:
        self.normalized_ndim = len(normalized_shape)
        self.weight, self.eps = weight, eps
        super().__init__(
            propagation, rule, lambda x: F.layer_norm(x, normalized_shape, weight, bias, eps)
        )


class _RuleFunction(torch.autograd.Function):
    """Runs an :class:`OpCall` forward; its backward is the relevance rule or the gradient."""

    @staticmethod
    def forward(ctx: Any, call: OpCall, *carriers: torch.Tensor) -> torch.Tensor:
        ctx.call = call
        return call.forward(carriers)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        call: OpCall = ctx.call
        if call.passes.gradient:
            return (None, *call.gradient(grad))
        return (None, *call.rule.relevance(call, grad))


def apply(propagation: Propagation, call: OpCall, carriers: Sequence[torch.Tensor]) -> torch.Tensor:
    """Run ``call`` on its carriers inside the relevance graph; the output carries relevance.

    A rule that treats the output as a constant (:class:`~attnexplain.relevance.rules.Constant`)
    gets the op's plain, detached output instead, which carries nothing.
    """
    if call.rule.detaches:
        with torch.no_grad():
            return call.compute(*carriers).detach()
    return propagation.mark(_RuleFunction.apply(call, *carriers))


def identity_op(propagation: Propagation, fn: Fn, carrier: torch.Tensor) -> torch.Tensor:
    """``fn(carrier)`` with the identity rule (scaling by a constant, a cast)."""
    return apply(propagation, OpCall(propagation, Identity(), fn), [carrier])
