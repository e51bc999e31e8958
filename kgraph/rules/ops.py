"""Rules for raw `keras.ops` operations that sit in a functional graph.

Keras 3 records `x + 3.0` or `keras.ops.relu(x)` between layers as operation
nodes. Element-wise ones keep their input's channels:

- unary operations (relu, sigmoid, exp, ...) pass the mask on;
- binary operations with a constant operand (add, subtract, multiply, divide, ...)
  pass it on and slice a per-channel constant;
- binary operations on two tensors behave like the `Add`/`Multiply` layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from kgraph.errors import UnsupportedLayerError
from kgraph.ir import Node, Slot, Tensor
from kgraph.rules.base import Rule, carry, fresh_output, normalize_axis, take
from kgraph.rules.merge import ElementwiseMergeRule

__all__ = ["BINARY_OPS", "REDUCE_OPS", "UNARY_OPS", "BinaryOpRule", "ReduceOpRule"]

UNARY_OPS = {
    "keras.src.ops.numpy": [
        "Abs",
        "Absolute",
        "Negative",
        "Exp",
        "Expm1",
        "Log",
        "Log1p",
        "Sqrt",
        "Square",
        "Sign",
        "Tanh",
        "Sin",
        "Cos",
        "Sinh",
        "Cosh",
        "Arctan",
        "Reciprocal",
        "Rsqrt",
        "Clip",
        "Round",
        "Floor",
        "Ceil",
        "NotEqual",
        "Equal",
        "Greater",
        "GreaterEqual",
        "Less",
        "LessEqual",
        "LogicalNot",
        "Copy",
        "NanToNum",
    ],
    "keras.src.ops.nn": [
        "Relu",
        "Relu6",
        "Sigmoid",
        "Softplus",
        "Softsign",
        "Silu",
        "LogSigmoid",
        "LeakyRelu",
        "HardSigmoid",
        "HardSilu",
        "Elu",
        "Selu",
        "Gelu",
        "Celu",
        "TanhShrink",
        "HardTanh",
        "HardShrink",
        "SoftShrink",
        "Threshold",
        "Squareplus",
        "SparsePlus",
    ],
    "keras.src.ops.math": ["Erf", "Erfinv", "Rsqrt"],
    "keras.src.ops.core": ["Cast", "StopGradient"],
}

BINARY_OPS = {
    "keras.src.ops.numpy": [
        "Add",
        "Subtract",
        "Multiply",
        "Divide",
        "TrueDivide",
        "Maximum",
        "Minimum",
        "Power",
        "FloorDivide",
        "Mod",
    ],
}


REDUCE_OPS = {
    "keras.src.ops.numpy": [
        "Any",
        "All",
        "Sum",
        "Mean",
        "Max",
        "Min",
        "Prod",
        "Std",
        "Var",
        "Argmax",
        "Argmin",
        "Amax",
        "Amin",
        "Median",
    ],
    "keras.src.ops.math": ["Logsumexp"],
}


class ReduceOpRule(Rule):
    """A reduction over `axis`: channels survive unless the channel axis is reduced.

    Reducing over the channel axis yields a tensor without those channels; the
    deleted ones just stop contributing (function-preserving when they are
    neutral for the reduction, e.g. zeros in a sum or in Masking's `any`).
    """

    any_channel_count = True

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
            return (out if out.space is not None else fresh_output(node, out),)
        axis = source.axis
        if not node.config.get("keepdims"):
            axis -= sum(1 for a in reduced if a < source.axis)
        return (carry(out, source, axis=axis),)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        return node


class BinaryOpRule(ElementwiseMergeRule):
    """An element-wise operation with two operands, either of which may be a constant."""

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if len(inputs) == 1:  # the other operand is a constant
            return (carry(node.outputs[0], inputs[0]),)
        return super().infer(node, inputs)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        if len(inputs) != 1 or keeps[0] is None:
            return node
        tensor, keep = inputs[0], keeps[0]
        rank = len(tensor.shape)
        before = node.inputs[0].channels

        def slice_constant(value: Any) -> Any:
            if isinstance(value, Slot) or np.ndim(value) == 0:
                return value
            array = np.asarray(value)
            index = tensor.axis - (rank - array.ndim)
            if index < 0 or array.shape[index] == 1:
                return value
            if array.shape[index] != before:
                raise UnsupportedLayerError(
                    f"{node.describe()} combines its input with a constant of shape "
                    f"{array.shape} that does not line up with the channel axis"
                )
            return take(array, keep, index)

        from keras import tree

        return attrs.evolve(node, args=tuple(tree.map_structure(slice_constant, list(node.args))))
