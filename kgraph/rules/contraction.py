"""Rules for layers that contract axes: Dot and EinsumDense.

- `DotRule`: a contracted channel axis must lose the same channels on both inputs;
  a channel axis that is not contracted moves to its place in the output.
- `EinsumDenseRule`: owns the channels of its last kernel-made output letter
  ("abc,cd->abd": `d`); absorbs input channels on a letter the kernel contracts.

Example:
    >>> x = keras.Input((4, 6))
    >>> y = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 5), name="e")(x)
    >>> smaller = kgraph.lift(keras.Model(x, y)).apply(DeleteChannels("e", [0])).lower()
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs
import numpy as np

from kgraph.errors import MaskConflictError, UnsupportedLayerError
from kgraph.ir import Node, Tensor
from kgraph.rules.base import (
    Rule,
    carry,
    data_slots,
    expect_weights,
    fresh_output,
    take_weight,
)
from kgraph.rules.capabilities import HasCouplings
from kgraph.rules.producer import ProducerRule

__all__ = ["DotRule", "EinsumDenseRule"]


class DotRule(Rule, HasCouplings):
    """Dot: batched dot product of two inputs along `axes`.

    A contracted channel axis must keep the same channels on both inputs (else
    `MaskConflictError`); the output then has no channel axis from them. A channel
    axis that is not contracted survives: input 0's axis `a` lands on output axis
    `a - (a > a0)`, input 1's axis `b` on `rank0 - 1 + b - 1 - (b > a1)`. When both
    inputs keep a channel axis, the output tracks input 0's, and deleting input 1's
    is refused (a tensor carries one channel axis).
    """

    def axes(self, node: Node, ranks: Sequence[int]) -> tuple[int, int]:
        """The contracted axes of both inputs, non-negative (as `Dot` computes them)."""
        axes = node.config.get("axes", -1)
        if isinstance(axes, int):
            axes = [axes % r if axes < 0 else axes for r in ranks]
        else:
            axes = [a % r if a < 0 else a for a, r in zip(axes, ranks)]
        return int(axes[0]), int(axes[1])

    def _operands(self, node: Node, inputs: Sequence[Tensor]) -> tuple[list[int], list[Tensor]]:
        slots = data_slots(node)
        return slots, [inputs[s] for s in slots]

    def carried(self, node: Node, inputs: Sequence[Tensor]) -> tuple[int, int] | None:
        """(slot, output axis) of the input whose channels the output carries, if any."""
        slots, (x, y) = self._operands(node, inputs)
        a0, a1 = self.axes(node, (len(x.shape), len(y.shape)))
        if x.mask is not None and x.axis != a0:
            return slots[0], x.axis - int(x.axis > a0)
        if y.mask is not None and y.axis != a1:
            return slots[1], len(x.shape) - 1 + y.axis - 1 - int(y.axis > a1)
        return None

    def couplings(self, node: Node, inputs: Sequence[Tensor]) -> list[list[Tensor]]:
        _, (x, y) = self._operands(node, inputs)
        a0, a1 = self.axes(node, (len(x.shape), len(y.shape)))
        if x.mask is not None and y.mask is not None and x.axis == a0 and y.axis == a1:
            return [[x, y]]
        return []

    def _check_contracted(self, node: Node, inputs: Sequence[Tensor]) -> None:
        slots, (x, y) = self._operands(node, inputs)
        a0, a1 = self.axes(node, (len(x.shape), len(y.shape)))
        on_x = x.mask is not None and x.axis == a0
        on_y = y.mask is not None and y.axis == a1
        if on_x and on_y:
            if x.mask.size == y.mask.size and np.array_equal(x.mask, y.mask):
                return
            why = "but " + "; ".join(
                f"input {s} (channels of {t.origin!r}) keeps {int(t.mask.sum())}/"
                f"{t.mask.size}, deleted {np.flatnonzero(~t.mask).tolist()}"
                for s, t in zip(slots, (x, y))
            )
        elif on_x or on_y:
            tracked, other, axis = (x, y, a1) if on_x else (y, x, a0)
            if other.shape[axis] is None or other.shape[axis] == tracked.channels:
                return
            why = (
                f"but the channels of {tracked.origin!r} keep {tracked.channels} while "
                f"the other input's axis {axis} has {other.shape[axis]} entries kgraph cannot "
                "delete"
            )
        else:
            return
        raise MaskConflictError(
            f"{node.describe()} contracts axis {a0} of input {slots[0]} with axis {a1} of input "
            f"{slots[1]}, so both must keep the same channels there, {why}. Delete the same "
            "channels from both (in one apply() call)"
        )

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        self._check_contracted(node, inputs)
        out = node.outputs[0]
        carried = self.carried(node, inputs)
        if carried is None:
            return (out if out.space is not None else fresh_output(node, out),)
        slot, axis = carried
        return (carry(out, inputs[slot], axis=axis),)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        slots, (x, y) = self._operands(node, inputs)
        a0, a1 = self.axes(node, (len(x.shape), len(y.shape)))
        carried = self.carried(node, inputs)
        for slot, contracted in ((slots[0], a0), (slots[1], a1)):
            tensor = inputs[slot]
            if keeps[slot] is None or tensor.axis == contracted:
                continue
            if carried is None or carried[0] != slot:
                raise self.unsupported(
                    node,
                    tensor,
                    slot,
                    "both inputs keep a channel axis in the output, and kgraph tracks one "
                    "channel axis per tensor (here the first input's); delete channels of "
                    "the other input only where Dot contracts them",
                )
        return node


@attrs.frozen
class Equation:
    """An EinsumDense equation split into its input, kernel and output letters.

    `ellipsis` is "left" ("...ab,bc->...ac"), "right" ("ab...,bc->ac...") or None.

    Example:
        >>> Equation.parse("abc,cd->abd").owned
        'd'
    """

    source: str
    inputs: str
    kernel: str
    output: str
    ellipsis: str | None

    @classmethod
    def parse(cls, equation: str) -> Equation | None:
        match = re.fullmatch(r"(\.\.\.)?(\w+)(\.\.\.)?,(\w+)->(\.\.\.)?(\w+)(\.\.\.)?", equation)
        if match is None:
            return None
        lead_in, inputs, trail_in, kernel, lead_out, output, trail_out = match.groups()
        if bool(lead_in) != bool(lead_out) or bool(trail_in) != bool(trail_out):
            return None
        if lead_in and trail_in:
            return None
        ellipsis = "left" if lead_in else "right" if trail_in else None
        return cls(equation, inputs, kernel, output, ellipsis)

    @property
    def owned(self) -> str | None:
        """The last output letter made by the kernel alone: the layer's own channels."""
        made = [c for c in self.output if c in self.kernel and c not in self.inputs]
        return made[-1] if made else None

    def output_axis(self, letter: str, rank: int) -> int:
        index = self.output.index(letter)
        return rank - len(self.output) + index if self.ellipsis == "left" else index

    def input_letter(self, axis: int, rank: int) -> str | None:
        """The letter of input axis `axis` (None when it is inside the ellipsis)."""
        index = axis - (rank - len(self.inputs)) if self.ellipsis == "left" else axis
        return self.inputs[index] if 0 <= index < len(self.inputs) else None

    def partial_index(self, letter: str) -> int:
        """Index of `letter` in the layer's `output_shape` (the batch axis left out)."""
        index = self.output.index(letter)
        return index if self.ellipsis == "left" else index - 1

    def bias_axis(self, letter: str, bias_axes: str | None) -> int | None:
        """Axis of the bias running along `letter` (None when the bias has none)."""
        if not bias_axes or letter not in bias_axes:
            return None
        first = min(self.output.find(c) for c in bias_axes)
        return self.output.index(letter) - first


class EinsumDenseRule(ProducerRule):
    """EinsumDense whose channels are a plain output letter of the kernel.

    Owns the last output letter that only the kernel has ("abc,cd->abd": `d`):
    deleting those channels slices that kernel axis, the bias along it and the
    `output_shape` entry. An input whose channel axis carries a letter that the
    kernel contracts ("abc,cd->abd": `c`) is absorbed by slicing the kernel along
    it. Any other change (channels on a letter kept in the output, or inside `...`,
    weights such as LoRA or quantisation) is refused.
    """

    known_weights = ("kernel", "bias")

    def equation(self, node: Node) -> Equation:
        parsed = Equation.parse(str(node.config.get("equation", "")).replace(" ", ""))
        if parsed is None:
            raise UnsupportedLayerError(
                f"{node.describe()} has equation {node.config.get('equation')!r}, which "
                "EinsumDenseRule cannot read; register a rule for it with kgraph.register_rule"
            )
        return parsed

    def output_axis(self, node: Node, rank: int) -> int:
        parsed = Equation.parse(str(node.config.get("equation", "")).replace(" ", ""))
        if parsed is None or parsed.owned is None:
            return rank - 1
        return parsed.output_axis(parsed.owned, rank)

    def output_weight_axes(self, node: Node) -> dict[str, int]:
        eq = self.equation(node)
        axes = {"kernel": eq.kernel.index(eq.owned)}
        bias = eq.bias_axis(eq.owned, node.config.get("bias_axes"))
        if bias is not None and node.has_weight("bias"):
            axes["bias"] = bias
        return axes

    def owned_output(self, node: Node) -> Tensor | None:
        parsed = Equation.parse(str(node.config.get("equation", "")).replace(" ", ""))
        if parsed is None or parsed.owned is None:
            return None
        own = super().owned_output(node)
        if own is None or own.axis != parsed.output_axis(parsed.owned, len(own.shape)):
            return None
        return own

    def check(self, node: Node) -> list[str]:
        own = self.owned_output(node)
        if own is None:
            return []
        eq = self.equation(node)
        problems = []
        size = node.config["output_shape"][eq.partial_index(eq.owned)]
        if size is not None and size != own.channels:
            problems.append(f"has output_shape {node.config['output_shape']} for {own.channels}")
        kernel = node.weight("kernel")
        if kernel.shape[eq.kernel.index(eq.owned)] != own.channels:
            problems.append(f"has kernel of shape {kernel.shape} for {own.channels} channels")
        axis = eq.bias_axis(eq.owned, node.config.get("bias_axes"))
        if axis is not None and node.weight("bias").shape[axis] != own.channels:
            problems.append(
                f"has bias of shape {node.weight('bias').shape} for {own.channels} channels"
            )
        return problems

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        data = data_slots(node)
        for slot, keep in enumerate(keeps):
            if keep is None:
                continue
            tensor = inputs[slot]
            if slot not in data[:1]:
                raise self.unsupported(node, tensor, slot, "only its first input can lose channels")
            eq = self.equation(node)
            letter = eq.input_letter(tensor.axis, len(tensor.shape))
            if letter is None or letter not in eq.kernel or letter in eq.output:
                where = "inside '...'" if letter is None else f"letter {letter!r}"
                raise self.unsupported(
                    node,
                    tensor,
                    slot,
                    f"its equation {eq.source!r} does not contract the input's channel axis "
                    f"{tensor.axis} ({where}); only channels on a letter that the kernel "
                    "contracts (in the input and the kernel, not the output) can be absorbed",
                )
            expect_weights(node, self, *self.known_weights)
            axis = eq.kernel.index(letter)
            node = node.with_weights(kernel=take_weight(node, "kernel", keep, axis))
        return node

    def delete_channels(self, node: Node, mask: np.ndarray) -> Node:
        old = node.outputs[0]
        keep = mask[old.mask]
        if keep.all():
            return node
        expect_weights(node, self, *self.known_weights)
        eq = self.equation(node)
        shape = list(node.config["output_shape"])
        shape[eq.partial_index(eq.owned)] = int(mask.sum())
        node = self.slice_output_weights(node, keep).with_config(output_shape=tuple(shape))
        return attrs.evolve(node, outputs=(old.with_mask(mask), *node.outputs[1:]))
