"""Rules for the convolution variants: depthwise, separable, transposed and grouped.

Keras keeps one kernel layout per family in both data formats (only the tensors'
channel axis moves):

- DepthwiseConv1D/2D: kernel (*k, in, m), bias (in * m,); output channel `c * m + j`
  is filter j of input channel c. It owns no channels: deleting input channel c
  deletes its m outputs, so the output's mask follows the input's.
- SeparableConv1D/2D: depthwise_kernel (*k, in, m), pointwise_kernel (1..., in * m,
  filters), bias (filters,); owns `filters`.
- Conv1D/2D/3DTranspose: kernel (*k, filters, in) -- the output axis comes first;
  owns `filters`.
- Conv1D/2D/3D with `groups` G: kernel (*k, in / G, filters); output group g (filters
  g * F/G ...) reads only input group g. Deletions must leave every group the same size;
  an input group deleted entirely takes its output group with it.

Example:
    >>> x = keras.Input((16, 16, 8))
    >>> y = keras.layers.Conv2D(8, 1, name="expand")(x)
    >>> y = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(y)
    >>> y = keras.layers.Conv2D(4, 1, name="project")(y)
    >>> smaller = kgraph.lift(keras.Model(x, y)).apply(DeleteChannels("expand", [0])).lower()
    >>> smaller.get_layer("dw").get_weights()[0].shape   # (3, 3, 7, 2); outputs 0, 1 gone
    (3, 3, 7, 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kgraph.ir import Node, Tensor
from kgraph.rules.base import (
    Rule,
    data_slots,
    expect_weights,
    fresh_output,
    kernel_entries,
    positions,
    take_weight,
)
from kgraph.rules.capabilities import ChecksWeights, CountsMacs
from kgraph.rules.channelwise import data_format_axis
from kgraph.rules.conv import depthwise_output, input_channels, reads_channel_axis
from kgraph.rules.producer import ProducerRule

__all__ = [
    "ConvTransposeRule",
    "DepthwiseConvRule",
    "SeparableConvRule",
]


class DepthwiseConvRule(Rule, ChecksWeights):
    """DepthwiseConv1D/2D: kernel (*k, in, depth_multiplier), bias (in * depth_multiplier,).

    Output channel `c * m + j` depends on input channel c only, so the output's
    channels are derived from the input's: deleting input channel c deletes outputs
    `c * m .. c * m + m - 1` (with m = 1 the output simply keeps the input's channels).
    A depthwise conv owns no channels; deleting some of the m outputs of one input
    channel alone cannot be expressed in Keras' layout and is refused.
    """

    known_weights = ("kernel", "bias")

    def multiplier(self, node: Node) -> int:
        return int(node.config.get("depth_multiplier", 1))

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        source, out = inputs[0], node.outputs[0]
        if not reads_channel_axis(node, source):
            return (fresh_output(node, out, data_format_axis(node, len(out.shape))),)
        return (depthwise_output(node, source, out, self.multiplier(node)),)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        first = data_slots(node)[:1]
        for slot, keep in enumerate(keeps):
            if keep is None:
                continue
            if slot not in first:
                raise self.unsupported(
                    node, inputs[slot], slot, "only its first input can lose channels"
                )
            source = inputs[slot]
            expected = data_format_axis(node, len(source.shape))
            if source.axis != expected:
                raise self.unsupported(
                    node,
                    source,
                    slot,
                    f"the deleted channels sit on axis {source.axis}, but its data_format "
                    f"{node.config.get('data_format')!r} reads channels on axis {expected}",
                )
            expect_weights(node, self, *self.known_weights)
            multiplier = node.stored_weight("kernel").shape[-1]
            updates = {"kernel": take_weight(node, "kernel", keep, -2)}
            if node.has_weight("bias"):
                updates["bias"] = take_weight(node, "bias", np.repeat(keep, multiplier), 0)
            node = node.with_weights(**updates)
        return node

    def check(self, node: Node) -> list[str]:
        problems = []
        m = self.multiplier(node)
        channels = input_channels(node)
        if node.has_weight("kernel"):
            kernel = node.weight("kernel")
            if kernel.shape[-1] != m:
                problems.append(f"has kernel {kernel.shape} but depth_multiplier={m}")
            if channels is not None and kernel.shape[-2] != channels:
                problems.append(f"has kernel {kernel.shape} for {channels} input channels")
        if channels is not None and node.has_weight("bias"):
            bias = node.weight("bias")
            if bias.shape[0] != channels * m:
                problems.append(f"has bias {bias.shape} for {channels} x {m} output channels")
        return problems


class SeparableConvRule(ProducerRule):
    """SeparableConv1D/2D: a depthwise kernel (*k, in, m), then a pointwise kernel
    (1..., in * m, filters) and bias (filters,); owns `filters`.

    Input channel c removes depthwise_kernel[..., c, :] and pointwise rows `c * m + j`.
    """

    channels_key = "filters"
    known_weights = ("depthwise_kernel", "pointwise_kernel", "bias")

    def output_weight_axes(self, node: Node) -> dict[str, int]:
        return {n: -1 for n in ("pointwise_kernel", "bias") if node.has_weight(n)}

    def output_axis(self, node: Node, rank: int) -> int:
        return data_format_axis(node, rank)

    def input_axis(self, node: Node, rank: int) -> int:
        return data_format_axis(node, rank)

    def slice_input_weights(self, node: Node, keep: np.ndarray) -> Node:
        rows = np.repeat(keep, node.stored_weight("depthwise_kernel").shape[-1])
        return node.with_weights(
            depthwise_kernel=take_weight(node, "depthwise_kernel", keep, -2),
            pointwise_kernel=take_weight(node, "pointwise_kernel", rows, -2),
        )

    def check(self, node: Node) -> list[str]:
        problems = []
        own = self.owned_output(node)
        if own is not None and node.config.get("filters") != own.channels:
            problems.append(
                f"has filters={node.config.get('filters')} but outputs {own.channels} channels"
            )
        if not (node.has_weight("depthwise_kernel") and node.has_weight("pointwise_kernel")):
            return problems
        depthwise = node.weight("depthwise_kernel")
        pointwise = node.weight("pointwise_kernel")
        channels = input_channels(node)
        if channels is not None and depthwise.shape[-2] != channels:
            problems.append(f"has depthwise_kernel {depthwise.shape} for {channels} channels")
        if pointwise.shape[-2] != depthwise.shape[-2] * depthwise.shape[-1]:
            problems.append(
                f"has pointwise_kernel {pointwise.shape} after depthwise_kernel {depthwise.shape}"
            )
        if own is not None:
            for name in ("pointwise_kernel", "bias"):
                if node.has_weight(name) and node.weight(name).shape[-1] != own.channels:
                    problems.append(
                        f"has {name} {node.weight(name).shape} for {own.channels} filters"
                    )
        return problems


class ConvTransposeRule(ProducerRule, CountsMacs):
    """Conv1D/2D/3DTranspose: kernel (*k, filters, in), bias (filters,); owns `filters`.

    The kernel's last axis reads the input channels and axis -2 makes the filters
    (the reverse of Conv).
    """

    channels_key = "filters"
    known_weights = ("kernel", "bias")

    def output_weight_axes(self, node: Node) -> dict[str, int]:
        return {"kernel": -2, **({"bias": -1} if node.has_weight("bias") else {})}

    def macs(self, node: Node) -> int:
        # each kernel element is used once per *input* position
        return kernel_entries(node) * positions(node.inputs[0]) if node.inputs else 0

    def output_axis(self, node: Node, rank: int) -> int:
        return data_format_axis(node, rank)

    def input_axis(self, node: Node, rank: int) -> int:
        return data_format_axis(node, rank)

    def slice_input_weights(self, node: Node, keep: np.ndarray) -> Node:
        return node.with_weights(kernel=take_weight(node, "kernel", keep, -1))

    def check(self, node: Node) -> list[str]:
        problems = []
        own = self.owned_output(node)
        if own is not None and node.config.get("filters") != own.channels:
            problems.append(
                f"has filters={node.config.get('filters')} but outputs {own.channels} channels"
            )
        if not node.has_weight("kernel"):
            return problems
        kernel = node.weight("kernel")
        channels = input_channels(node)
        if channels is not None and kernel.shape[-1] != channels:
            problems.append(f"has kernel {kernel.shape} for {channels} input channels")
        if own is not None and kernel.shape[-2] != own.channels:
            problems.append(f"has kernel {kernel.shape} for {own.channels} filters")
        if own is not None and node.has_weight("bias"):
            bias = node.weight("bias")
            if bias.shape[0] != own.channels:
                problems.append(f"has bias {bias.shape} for {own.channels} filters")
        return problems
