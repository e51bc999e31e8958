"""Rules for raw `keras.ops` operations that sit in a functional graph.

Keras 3 records `x + 3.0` or `keras.ops.relu(x)` between layers as operation
nodes. Element-wise ones keep their input's channels:

- unary operations (relu, sigmoid, exp, ...) pass the mask on;
- element-wise operations with constant operands (add, multiply, greater, clip,
  ...) pass it on and slice a per-channel constant (`x * np.array([...])`);
  operands that are tensors must keep the same channels, like the `Add` layer;
- reductions (sum, mean, max, any, ...) keep the channels unless they reduce the
  channel axis.

Example:
    >>> x = keras.layers.Dense(4)(inputs)
    >>> y = keras.ops.relu(x + 3.0) * np.array([1.0, 2.0, 3.0, 4.0])  # two op nodes
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from kgraph.errors import UnsupportedLayerError
from kgraph.ir import Node, Slot, Tensor
from kgraph.rules.base import WeightlessRule, carry, fresh_output, normalize_axis, take
from kgraph.rules.merge import ElementwiseMergeRule

__all__ = ["ELEMENTWISE_OPS", "REDUCE_OPS", "UNARY_OPS", "ElementwiseOpRule", "ReduceOpRule"]

UNARY_OPS = {
    "keras.src.ops.numpy": (
        "Abs Absolute Negative Exp Expm1 Log Log1p Sqrt Square Sign Tanh Sin Cos Sinh Cosh "
        "Arctan Reciprocal Round Floor Ceil LogicalNot Copy NanToNum"
    ).split(),
    "keras.src.ops.nn": (
        "Relu Relu6 Sigmoid Softplus Softsign Silu LogSigmoid LeakyRelu HardSigmoid HardSilu "
        "Elu Selu Gelu Celu TanhShrink HardTanh HardShrink SoftShrink Threshold Squareplus "
        "SparsePlus"
    ).split(),
    "keras.src.ops.math": ["Erf", "Erfinv", "Rsqrt"],
    "keras.src.ops.core": ["Cast", "StopGradient"],
}

ELEMENTWISE_OPS = {
    "keras.src.ops.numpy": (
        "Add Subtract Multiply Divide TrueDivide Maximum Minimum Power FloorDivide Mod "
        "NotEqual Equal Greater GreaterEqual Less LessEqual LogicalAnd LogicalOr"
    ).split(),
}

REDUCE_OPS = {
    "keras.src.ops.numpy": (
        "Any All Sum Mean Max Min Prod Std Var Argmax Argmin Amax Amin Median"
    ).split(),
    "keras.src.ops.math": ["Logsumexp"],
}


class ReduceOpRule(WeightlessRule):
    """A reduction over `axis`: channels survive unless the channel axis is reduced.

    Reducing over the channel axis yields a tensor without those channels; the
    deleted ones just stop contributing. That preserves the function only where
    they are neutral for the reduction (zeros in a sum or in Masking's `any`);
    a mean, max or product over channels changes.
    """

    def _reduced(self, node: Node, rank: int) -> set[int]:
        axis = node.config.get("axis")
        if axis is None:
            return set(range(rank))
        axes = axis if isinstance(axis, (list, tuple)) else [axis]
        return {normalize_axis(int(a), rank) for a in axes}

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        source, out = inputs[0], node.outputs[0]
        reduced = self._reduced(node, len(source.shape))
        if source.axis is None or source.axis in reduced:
            if out.space is not None:
                return (out,)
            # keepdims over the channel axis: one new channel where the channels were
            keep_axis = (
                source.axis if source.axis is not None and node.config.get("keepdims") else -1
            )
            return (fresh_output(node, out, axis=keep_axis),)
        axis = source.axis
        if not node.config.get("keepdims"):
            axis -= sum(1 for a in reduced if a < source.axis)
        return (carry(out, source, axis=axis),)


def slice_constant(value: Any, tensor: Tensor, keep: np.ndarray, before: int, node: Node) -> Any:
    """A constant operand, broadcast against `tensor`, with the deleted channels removed."""
    if isinstance(value, Slot) or value is None or np.ndim(value) == 0:
        return value
    array = np.asarray(value)
    index = tensor.axis - (len(tensor.shape) - array.ndim)
    if index < 0 or array.shape[index] == 1:
        return value
    if array.shape[index] != before:
        raise UnsupportedLayerError(
            f"{node.describe()} combines its input with a constant of shape {array.shape} "
            "that does not line up with the channel axis"
        )
    return take(array, keep, index)


class ElementwiseOpRule(ElementwiseMergeRule):
    """An element-wise operation: tensor operands must agree, constant operands are sliced.

    Attributes:
        config_operands: config entries that are operands (Clip's `x_min`, `x_max`).
    """

    config_operands: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config_operands: tuple[str, ...] = ()) -> None:
        self.config_operands = config_operands

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if len(inputs) > 1:
            return super().infer(node, inputs)
        source, out = inputs[0], node.outputs[0]
        if source.axis is not None and _widened(node, source):
            # a constant broadcasts the input's single channel: new channels
            return (out if out.space is not None else fresh_output(node, out),)
        return (carry(out, source, axis=None if source.axis is None else _out_axis(out, source)),)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        if len(inputs) != 1 or keeps[0] is None:
            return node
        tensor, keep, before = inputs[0], keeps[0], node.inputs[0].channels

        def sliced(value: Any) -> Any:
            return slice_constant(value, tensor, keep, before, node)

        from keras import tree

        args = tuple(tree.map_structure(sliced, list(node.args)))
        config = {k: sliced(node.config[k]) for k in self.config_operands if k in node.config}
        return attrs.evolve(node, args=args).with_config(**config)


def _out_axis(out: Tensor, source: Tensor) -> int:
    return len(out.shape) - (len(source.shape) - source.axis)


def _widened(node: Node, source: Tensor) -> bool:
    """True when the output has more channels than the input (a constant broadcast them)."""
    before, out = node.inputs[0], node.outputs[0]
    axis = _out_axis(out, source)
    return axis >= 0 and before.shape[source.axis] != out.shape[axis]
