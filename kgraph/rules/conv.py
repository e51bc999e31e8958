"""Rules for the convolutions Conv1D, Conv2D and Conv3D (both data formats)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kgraph.ir import Node, Tensor
from kgraph.rules.base import take
from kgraph.rules.channelwise import data_format_axis
from kgraph.rules.producer import ProducerRule

__all__ = ["ConvRule"]


class ConvRule(ProducerRule):
    """Conv1D/2D/3D: kernel (*kernel_size, in // groups, filters), bias (filters,).

    Keras keeps this kernel layout in both data formats; only the tensors' channel
    axis moves (1 for channels_first, last for channels_last).
    """

    channels_key = "filters"
    known_weights = ("kernel", "bias")

    def output_axis(self, node: Node, rank: int) -> int:
        return data_format_axis(node, rank)

    def input_axis(self, node: Node, rank: int) -> int:
        return data_format_axis(node, rank)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        if any(k is not None for k in keeps) and node.config.get("groups", 1) != 1:
            raise self.unsupported(
                node, inputs[0], 0, "grouped convolutions (groups > 1) are not supported yet"
            )
        return super().slice_inputs(node, inputs, keeps)

    def delete_channels(self, node: Node, mask: np.ndarray) -> Node:
        if node.config.get("groups", 1) != 1 and not mask[node.outputs[0].mask].all():
            raise self.unsupported(
                node, node.outputs[0], 0, "grouped convolutions (groups > 1) are not supported yet"
            )
        return super().delete_channels(node, mask)

    def slice_input_weights(self, node: Node, keep: np.ndarray) -> Node:
        kernel = node.weight("kernel")
        return node.with_weights(kernel=take(kernel, keep, kernel.ndim - 2))

    def slice_output_weights(self, node: Node, keep: np.ndarray) -> Node:
        kernel = node.weight("kernel")
        updates = {"kernel": take(kernel, keep, kernel.ndim - 1)}
        if node.has_weight("bias"):
            updates["bias"] = take(node.weight("bias"), keep, 0)
        return node.with_weights(**updates)
