"""Rules for SimpleRNN, GRU and LSTM: units laid out gate by gate.

Keras stores the gates of a recurrent cell side by side on the last weight axis:
kernel (in, gates * units), recurrent_kernel (units, gates * units), bias
(gates * units,) or, for GRU with reset_after, (2, gates * units). Deleting unit j
deletes column `g * units + j` of every gate g and row j of the recurrent kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kgraph.errors import MaskConflictError
from kgraph.ir import Node, Tensor, slots_in
from kgraph.rules.base import kernel_entries, positions, take_weight
from kgraph.rules.capabilities import CountsMacs, HasCouplings
from kgraph.rules.producer import ProducerRule

__all__ = ["ConvLSTMRule", "RecurrentRule"]


class RecurrentRule(ProducerRule, CountsMacs, HasCouplings):
    """SimpleRNN (1 gate), GRU (3 gates), LSTM (4 gates)."""

    channels_key = "units"
    known_weights = ("kernel", "recurrent_kernel", "bias")

    def __init__(self, gates: int = 1) -> None:
        self.gates = gates  # SimpleRNN 1, GRU 3, LSTM 4

    def output_width(self, node: Node, channels: int) -> int:
        return self.gates * channels

    def macs(self, node: Node) -> int:
        """Kernels (input and recurrent) once per step and position (ConvLSTM: H x W)."""
        return kernel_entries(node) * positions(node.inputs[0]) if node.inputs else 0

    def slice_input_weights(self, node: Node, keep: np.ndarray) -> Node:
        return node.with_weights(kernel=take_weight(node, "kernel", keep, -2))

    def slice_output_weights(self, node: Node, keep: np.ndarray) -> Node:
        gate_keep = np.tile(keep, self.gates)
        recurrent = take_weight(node, "recurrent_kernel", gate_keep, -1).take(keep, -2)
        updates = {
            "kernel": take_weight(node, "kernel", gate_keep, -1),
            "recurrent_kernel": recurrent,
        }
        if node.has_weight("bias"):
            updates["bias"] = take_weight(node, "bias", gate_keep, -1)
        return node.with_weights(**updates)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        states = set(_state_slots(node))
        # Initial states hold units, not features: no weight reads them, and
        # `infer` checks that they keep the layer's own units.
        data_keeps = [None if slot in states else keep for slot, keep in enumerate(keeps)]
        return super().slice_inputs(node, inputs, data_keeps)

    def couplings(self, node: Node, inputs: Sequence[Tensor]) -> list[list[Tensor]]:
        states = [inputs[s] for s in _state_slots(node) if inputs[s].mask is not None]
        return [[node.outputs[0], *states]] if states and node.outputs[0].mask is not None else []

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        outputs = super().infer(node, inputs)
        own = outputs[0]
        for slot in _state_slots(node):
            state = inputs[slot]
            if state.mask is None or own.mask is None:
                continue
            if state.mask.size != own.mask.size or not np.array_equal(state.mask, own.mask):
                raise MaskConflictError(
                    f"{node.describe()} keeps units {_kept(own)} but its initial state "
                    f"(input {slot}, from {state.origin!r}) keeps {_kept(state)}; delete "
                    "the same units from the layer and from the one producing its state"
                )
        return outputs


class ConvLSTMRule(RecurrentRule):
    """ConvLSTM1D/2D/3D: an LSTM whose kernels are convolutions.

    kernel (*k, in, 4 * filters), recurrent_kernel (*k, filters, 4 * filters), bias
    (4 * filters); inputs (batch, time, *spatial, channels) or, channels_first,
    (batch, time, channels, *spatial).
    """

    channels_key = "filters"

    def __init__(self) -> None:
        super().__init__(gates=4)

    def _axis(self, node: Node, rank: int) -> int:
        if node.config.get("data_format") != "channels_first":
            return rank - 1
        return rank - len(node.config["kernel_size"]) - 1

    def output_axis(self, node: Node, rank: int) -> int:
        return self._axis(node, rank)

    def input_axis(self, node: Node, rank: int) -> int:
        return self._axis(node, rank)


def _kept(tensor: Tensor) -> str:
    deleted = np.flatnonzero(~tensor.mask).tolist()
    return f"{int(tensor.mask.sum())}/{tensor.mask.size} (deleted {deleted})"


def _state_slots(node: Node) -> list[int]:
    return slots_in(node.kwargs.get("initial_state"))
