"""Rules for Dense and Embedding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kgraph.ir import InputSpace, Node, Tensor
from kgraph.rules.base import carry, take_weight
from kgraph.rules.producer import ProducerRule

__all__ = ["DenseRule", "EmbeddingRule"]


class DenseRule(ProducerRule):
    """Dense: kernel (in, units) and bias (units,); it reads the last input axis.

    When the input's channels sit on another axis (after a Permute, say), Dense
    works position by position along it: the output carries those channels on
    the same axis, and the Dense's own units are not tracked (not deletable). Not
    so when they are a model input's (never deleted; a Permute of channels-first
    data): then the Dense owns its units as usual.
    """

    channels_key = "units"
    known_weights = ("kernel", "bias")

    def _along_other_axis(self, source: Tensor) -> bool:
        return (
            source.axis is not None
            and source.axis != len(source.shape) - 1
            and not isinstance(source.space, InputSpace)
        )

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if self._along_other_axis(inputs[0]):
            return (carry(node.outputs[0], inputs[0]),)
        return super().infer(node, inputs)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        if self._along_other_axis(inputs[0]):
            return node
        return super().slice_inputs(node, inputs, keeps)

    def owned_output(self, node: Node) -> Tensor | None:
        if node.inputs and self._along_other_axis(node.inputs[0]):
            return None
        return super().owned_output(node)

    def slice_input_weights(self, node: Node, keep: np.ndarray) -> Node:
        return node.with_weights(kernel=take_weight(node, "kernel", keep, 0))


class EmbeddingRule(ProducerRule):
    """Embedding: `embeddings` (input_dim, output_dim); its input holds indices, not channels."""

    channels_key = "output_dim"
    known_weights = ("embeddings",)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        for slot, keep in enumerate(keeps):
            if keep is not None:
                raise self.unsupported(node, inputs[slot], slot, "its input holds token indices")
        return node
