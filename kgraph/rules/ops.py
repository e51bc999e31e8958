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
from kgraph.rules.base import carry, take
from kgraph.rules.merge import ElementwiseMergeRule

__all__ = ["BINARY_OPS", "UNARY_OPS", "BinaryOpRule"]

UNARY_OPS = {
    "keras.src.ops.numpy": [
        "Abs", "Absolute", "Negative", "Exp", "Expm1", "Log", "Log1p", "Sqrt", "Square",
        "Sign", "Tanh", "Sin", "Cos", "Sinh", "Cosh", "Arctan", "Reciprocal", "Rsqrt",
        "Clip", "Round", "Floor", "Ceil", "NotEqual", "Equal", "Greater", "GreaterEqual",
        "Less", "LessEqual", "LogicalNot", "Copy", "NanToNum",
    ],
    "keras.src.ops.nn": [
        "Relu", "Relu6", "Sigmoid", "Softplus", "Softsign", "Silu", "LogSigmoid",
        "LeakyRelu", "HardSigmoid", "HardSilu", "Elu", "Selu", "Gelu", "Celu",
        "TanhShrink", "HardTanh", "HardShrink", "SoftShrink", "Threshold", "Squareplus",
        "SparsePlus",
    ],
    "keras.src.ops.math": ["Erf", "Erfinv", "Rsqrt"],
    "keras.src.ops.core": ["Cast", "StopGradient"],
}

BINARY_OPS = {
    "keras.src.ops.numpy": [
        "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power",
        "FloorDivide", "Mod",
    ],
}


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
