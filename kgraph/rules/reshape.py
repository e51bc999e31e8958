"""Rules for layers that move or merge axes ("map" rules).

Flatten (and a Reshape that flattens) turns a channel mask into a mask over the
flattened features; Reshape/Permute/RepeatVector/global pooling move the channel
axis to a new position. A Reshape that mixes channels with other axes is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np

from kgraph.ir import Derivation, DerivedSpace, Node, Tensor, seal
from kgraph.rules.base import Rule, carry, fresh_output, lifted_shape
from kgraph.rules.channelwise import PassThroughRule, data_format_axis

__all__ = [
    "FlattenRule",
    "GlobalPoolingRule",
    "PermuteRule",
    "RepeatVectorRule",
    "ReshapeRule",
    "expand_mask",
]


def expand_mask(tensor: Tensor) -> np.ndarray | None:
    """The mask broadcast over the tensor's lifted non-batch shape (None if unknown)."""
    if tensor.mask is None:
        return None
    shape = lifted_shape(tensor)[1:]
    if any(d is None for d in shape):
        return None
    index = [None] * len(shape)
    index[tensor.axis - 1] = slice(None)
    return np.broadcast_to(tensor.mask[tuple(index)], shape)


def _flat_output(node: Node, out: Tensor, source: Tensor, flat: np.ndarray | None) -> Tensor:
    if flat is None:
        return fresh_output(node, out) if out.space is None else out
    space = DerivedSpace(Derivation.FLATTEN, node.name, source.space)
    mask = seal(np.array(flat).reshape(-1))
    return attrs.evolve(out, shape=(out.shape[0], int(mask.sum())), axis=1, mask=mask, space=space)


def _follows(out: Tensor, source: Tensor) -> bool:
    """True when `out`'s channels are derived from `source`'s."""
    return out.space is not None and out.space.derives_from(source.space)


class _MapRule(Rule):
    """Shared behaviour: a changed input is fine whenever `infer` maps its channels."""

    any_channel_count = True

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        if keeps[0] is not None and not _follows(self.infer(node, inputs)[0], inputs[0]):
            raise self.unsupported(
                node, inputs[0], 0, "it moves the channels into axes kgraph cannot track"
            )
        return node


class FlattenRule(_MapRule):
    """Flatten: the mask follows each channel to its positions in the flat output."""

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        source, out = inputs[0], node.outputs[0]
        if len(source.shape) <= 2:
            return (carry(out, source, axis=1 if source.axis is not None else None),)
        full = expand_mask(source)
        if full is not None and node.config.get("data_format") == "channels_first":
            full = np.moveaxis(full, 0, -1)  # Keras flattens channels_first as channels_last
        return (_flat_output(node, out, source, full),)


class ReshapeRule(_MapRule):
    """Reshape: the channel axis survives when the reshape only adds or removes unit axes."""

    any_channel_count = False  # its target_shape counts the channels

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        source, out = inputs[0], node.outputs[0]
        if source.mask is None:
            return (out if out.space is not None else fresh_output(node, out),)
        axis = _surviving_axis(source.axis, node.inputs[0], out)
        if axis is not None:
            return (carry(out, source, axis=axis),)
        if len(out.shape) == 2:
            return (_flat_output(node, out, source, expand_mask(source)),)
        return (out if out.space is not None else fresh_output(node, out),)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        node = super().slice_inputs(node, inputs, keeps)
        if keeps[0] is None:
            return node
        source = inputs[0]
        axis = _surviving_axis(source.axis, node.inputs[0], node.outputs[0])
        target = list(node.config["target_shape"])
        if axis is not None:
            position, size = axis - 1, source.channels
        else:  # flattening reshape
            position, size = 0, math.prod(source.shape[1:])
        if target[position] != -1:
            target[position] = size
        return node.with_config(target_shape=tuple(target))


def _surviving_axis(axis: int | None, source: Tensor, out: Tensor) -> int | None:
    """Output axis that holds input `axis` unchanged, if reshaping `source` to `out` keeps it."""
    if axis is None:
        return None
    src = list(source.shape[1:])
    dst = list(out.shape[1:])
    a = axis - 1
    if any(d is None for d in src + dst):
        return None
    before, after = math.prod(src[:a]), math.prod(src[a + 1 :])
    candidates = [
        k + 1
        for k in range(len(dst))
        if dst[k] == src[a] and math.prod(dst[:k]) == before and math.prod(dst[k + 1 :]) == after
    ]
    if out.axis in candidates:  # sizes of 1 make several fit: the channels stay where they were
        return out.axis
    return candidates[0] if candidates else None


class PermuteRule(_MapRule):
    """Permute: the channel axis moves to where `dims` puts it."""

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        source = inputs[0]
        if source.axis is None:
            return (carry(node.outputs[0], source),)
        dims = list(node.config["dims"])
        return (carry(node.outputs[0], source, axis=dims.index(source.axis) + 1),)


class RepeatVectorRule(_MapRule):
    """RepeatVector: (batch, C) -> (batch, n, C); the channels move to axis 2."""

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        source = inputs[0]
        return (carry(node.outputs[0], source, axis=None if source.axis is None else 2),)


class GlobalPoolingRule(PassThroughRule):
    """Global pooling: spatial axes vanish (or stay as 1s with keepdims); channels stay."""

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        source, out = inputs[0], node.outputs[0]
        if source.axis != data_format_axis(node, len(source.shape)):
            return (out if out.space is not None else fresh_output(node, out),)
        axis = source.axis if node.config.get("keepdims") else 1
        return (carry(out, source, axis=axis),)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        source = inputs[0]
        if keeps[0] is not None and source.axis != data_format_axis(node, len(source.shape)):
            raise self.unsupported(node, source, 0, "the channels sit on a pooled axis")
        return node
