"""Rules for layers that keep their input's channels ("pass" rules).

- `PassThroughRule`: element-wise layers without weights (activations, dropout).
- `SpatialRule`: layers that work on the spatial axes of a `data_format` tensor
  (pooling, padding, cropping, upsampling); the mask must sit on the channel axis.
- `PerChannelRule`: layers with one weight entry per channel (BatchNormalization).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from kgraph.ir import Node, Tensor
from kgraph.rules.base import (
    Rule,
    WeightlessRule,
    carry,
    expect_weights,
    normalize_axis,
    take_weight,
)
from kgraph.rules.capabilities import ChecksWeights

__all__ = ["PassThroughRule", "PerChannelRule", "SpatialRule", "data_format_axis"]


def data_format_axis(node: Node, rank: int) -> int:
    """The channel axis of a `rank`-dimensional input under the node's data_format."""
    return 1 if node.config.get("data_format") == "channels_first" else rank - 1


class PassThroughRule(WeightlessRule):
    """Output 0 carries input 0's channels; nothing to slice (ReLU, Dropout, ...)."""

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        return (carry(node.outputs[0], inputs[0]),)


class SpatialRule(PassThroughRule):
    """Pooling, padding, cropping, upsampling: only spatial axes change.

    A channel mask must sit on the axis the layer's `data_format` calls channels,
    otherwise deleting would remove spatial positions.
    """

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        source = inputs[0]
        if source.axis is not None and source.axis != data_format_axis(node, len(source.shape)):
            return Rule.infer(self, node, inputs)  # another axis: opaque, new channels
        return (carry(node.outputs[0], source),)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        source = inputs[0]
        expected = data_format_axis(node, len(source.shape))
        if keeps[0] is not None and source.axis != expected:
            raise self.unsupported(
                node,
                source,
                0,
                f"the channels sit on axis {source.axis} but its data_format "
                f"{node.config.get('data_format')!r} treats axis {expected} as channels",
            )
        return node


class PerChannelRule(Rule, ChecksWeights):
    """Layers with weights holding one entry per channel along their `axis`.

    Attributes:
        per_channel: names of the weights sliced along their axis 0.
        axis_key: the config key holding the layer's channel axis (None: last axis).
    """

    per_channel: ClassVar[tuple[str, ...]] = ()
    axis_key: ClassVar[str | None] = "axis"

    def layer_axis(self, node: Node, rank: int) -> int:
        axis = node.config.get(self.axis_key, -1) if self.axis_key else -1
        if isinstance(axis, (list, tuple)):
            axis = axis[0] if len(axis) == 1 else None
        return -1 if axis is None else normalize_axis(int(axis), rank)

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        return (carry(node.outputs[0], inputs[0]),)

    def check(self, node: Node) -> list[str]:
        source = node.inputs[0] if node.inputs else None
        if source is None or source.axis is None:
            return []
        if self.layer_axis(node, len(source.shape)) != source.axis:
            return []
        return [
            f"has weight {name} of shape {w.shape} for {source.channels} channels"
            for name, w in zip(node.weight_names, node.weights)
            if name in self.per_channel and w.shape[0] != source.channels
        ]

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        keep, source = keeps[0], inputs[0]
        if keep is None:
            return node
        expect_weights(node, self, *self.per_channel)
        if self.layer_axis(node, len(source.shape)) != source.axis:
            # The layer's parameters run along another axis: the deleted channels
            # are just more positions for it, nothing to slice.
            return node
        updates = {name: take_weight(node, name, keep, 0) for name in node.weight_names}
        return node.with_weights(**updates)
