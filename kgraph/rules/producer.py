"""`ProducerRule`: the shared shape of rules for layers that own their output channels.

A producer (Dense, Conv, RNN, Embedding) "absorbs" masks on its input by slicing
the weights that read those channels, and outputs channels of its own (units,
filters) that `DeleteChannels` can remove. Subclasses say how to slice each side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import attrs
import numpy as np

from kgraph.ir import Node, Tensor
from kgraph.rules.base import Rule, data_slots, expect_weights, fresh_output, take_weight
from kgraph.rules.capabilities import ChecksWeights, HasChannelNorms

__all__ = ["ProducerRule"]

_BLOCK = 1 << 18  # entries per block when summing a large weight


def _column_powers(weight: np.ndarray, order: int) -> np.ndarray:
    """Sum over all but the last axis of |weight| ** order, in float64.

    Block by block through one reused buffer, so that a large kernel (VGG16's fc1
    holds 103M entries) is never copied whole: each block is summed in its own
    precision (float32 at least), and the block sums are added up in float64.
    """
    matrix = weight.reshape(-1, weight.shape[-1])
    rows = max(1, _BLOCK // max(1, matrix.shape[1]))
    dtype = np.result_type(matrix.dtype, np.float32) if order in (1, 2) else np.float64
    buffer = np.empty((min(rows, matrix.shape[0]), matrix.shape[1]), dtype=dtype)
    total = np.zeros(matrix.shape[1])
    for start in range(0, matrix.shape[0], rows):
        block = matrix[start : start + rows]
        powers = buffer[: len(block)]
        if order == 1:
            np.abs(block, out=powers)
        elif order == 2:
            np.square(block, out=powers)
        else:
            np.power(np.abs(block, out=powers), order, out=powers)
        total += powers.sum(axis=0)
    return total


class ProducerRule(Rule, HasChannelNorms, ChecksWeights):
    """Base for layers whose output channels are their own.

    Attributes:
        channels_key: the config key counting the output channels ("units", "filters").
        known_weights: weight names the subclass knows how to slice.
    """

    owns_channels: ClassVar[bool] = True
    channels_key: ClassVar[str] = "units"
    known_weights: ClassVar[tuple[str, ...]] = ()

    # -- subclass hooks -------------------------------------------------------------

    def output_axis(self, node: Node, rank: int) -> int:
        """The channel axis of the outputs (the last by default)."""
        return rank - 1

    def input_axis(self, node: Node, rank: int) -> int:
        """The axis of input 0 that the weights read (the last by default)."""
        return rank - 1

    def slice_input_weights(self, node: Node, keep: np.ndarray) -> Node:
        """Drop the weights reading the deleted input channels (`keep`: current ones)."""
        raise NotImplementedError

    def slice_output_weights(self, node: Node, keep: np.ndarray) -> Node:
        """Drop the weights producing the deleted output channels: by default, slice
        each weight of `output_weight_axes` on its axis (one entry per channel)."""
        return node.with_weights(
            **{
                name: take_weight(node, name, keep, axis)
                for name, axis in self.output_weight_axes(node).items()
            }
        )

    def output_width(self, node: Node, channels: int) -> int:
        """Size of the last axis of the kernel for `channels` outputs."""
        return channels

    def output_weight_axes(self, node: Node) -> dict[str, int]:
        """Weight name -> the axis holding the output channels (gates side by side)."""
        return {name: -1 for name in self.known_weights if node.has_weight(name)}

    # -- Rule -----------------------------------------------------------------------

    def channel_norms(self, node: Node, order: int) -> np.ndarray | None:
        own = self.owned_output(node)
        if own is None:
            return None
        total = np.zeros(own.channels)
        for name, axis in self.output_weight_axes(node).items():
            weight = np.moveaxis(np.asarray(node.weight(name)), axis, -1)
            if own.channels == 0 or weight.shape[-1] % own.channels:
                return None
            # columns are gate-major (g * channels + c): sum the gates of each channel
            total += _column_powers(weight, order).reshape(-1, own.channels).sum(axis=0)
        return total ** (1.0 / order)

    def check(self, node: Node) -> list[str]:
        own = self.owned_output(node)
        if own is None:
            return []
        problems = []
        if node.config.get(self.channels_key) != own.channels:
            problems.append(
                f"has {self.channels_key}={node.config.get(self.channels_key)} "
                f"but outputs {own.channels} channels"
            )
        width = self.output_width(node, own.channels)
        for name, weight in zip(node.weight_names, node.weights):
            if name in self.known_weights and weight.ndim and weight.shape[-1] != width:
                problems.append(
                    f"has weight {name} of shape {weight.shape} for {own.channels} channels"
                )
        return problems

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        outputs = []
        own = None
        for out in node.outputs:
            if own is None:
                own = out if out.space is not None else self._fresh(node, out)
                outputs.append(own)
            else:  # RNN states: the same channels as output 0
                axis = self.output_axis(node, len(out.shape))
                outputs.append(attrs.evolve(out, axis=axis).with_mask(own.mask, own.space))
        return tuple(outputs)

    def _fresh(self, node: Node, out: Tensor) -> Tensor:
        return fresh_output(node, out, self.output_axis(node, len(out.shape)))

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        data = data_slots(node)
        for slot, keep in enumerate(keeps):
            if keep is None:
                continue
            if slot not in data[:1]:
                raise self.unsupported(
                    node, inputs[slot], slot, "only its first input can lose channels"
                )
            expected = self.input_axis(node, len(inputs[slot].shape))
            if inputs[slot].axis != expected:
                raise self.unsupported(
                    node,
                    inputs[slot],
                    slot,
                    f"the deleted channels sit on axis {inputs[slot].axis}, "
                    f"but it reads channels on axis {expected}",
                )
            expect_weights(node, self, *self.known_weights)
            node = self.slice_input_weights(node, keep)
        return node

    def delete_channels(self, node: Node, mask: np.ndarray) -> Node:
        old = node.outputs[0]
        keep = mask[old.mask]
        if keep.all():
            return node
        expect_weights(node, self, *self.known_weights)
        node = self.slice_output_weights(node, keep)
        node = node.with_config(**{self.channels_key: int(mask.sum())})
        outputs = tuple(out.with_mask(mask) for out in node.outputs)  # RNN states too
        return attrs.evolve(node, outputs=outputs)
