"""Rules for layers that combine several tensors.

- `ElementwiseMergeRule`: Add, Subtract, Multiply, Average, Maximum, Minimum (and
  `keras.ops` binary operations on two tensors). All inputs must keep the same
  channels, otherwise `MaskConflictError` names the branches.
- `ConcatenateRule`: masks are concatenated along the channel axis; an input whose
  channels were all deleted is dropped from the call, as kerassurgeon does. The
  output keeps the lifted coordinates (a `ConcatSpace` of its parts), a dropped
  part staying in them with every channel deleted
  (`node.meta["dropped_parts"]`), so the users' masks stay comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from kgraph.errors import MaskConflictError
from kgraph.ir import ChannelSpace, ConcatSpace, MergeSpace, Node, Tensor, mask_summary, seal
from kgraph.rules.base import WeightlessRule, carry, data_slots, fresh_output, normalize_axis
from kgraph.rules.capabilities import CanDropInputs, HasCouplings

__all__ = [
    "DROPPED_PARTS",
    "INPUT_VIEWS",
    "ConcatenateRule",
    "ElementwiseMergeRule",
    "agreeing_inputs",
    "check_same_channels",
    "in_view",
    "input_views",
    "seen_inputs",
    "with_input_view",
]


DROPPED_PARTS = "dropped_parts"  # meta: ((lifted position, space, width), ...) of a Concatenate
# meta: ((slot, concat space), ...): the node read a Concatenate bypassed since on `slot`,
# and still sees that input in the Concatenate's coordinates
INPUT_VIEWS = "input_views"


def in_view(tensor: Tensor, space: ConcatSpace) -> Tensor:
    """`tensor` in the coordinates `space` of a Concatenate it is (nested) part of.

    The other parts are deleted channels there. `tensor` itself when it is not a part.
    """
    if tensor.mask is None or tensor.space == space or tensor.space is None:
        return tensor
    found = space.offset_of(tensor.space)
    if found is None or found[1] != tensor.mask.size:
        return tensor
    mask = np.zeros(space.width, dtype=bool)
    mask[found[0] : found[0] + found[1]] = tensor.mask
    return attrs.evolve(tensor, mask=seal(mask), space=space)


def input_views(node: Node) -> dict[int, ConcatSpace]:
    """The Concatenate coordinates `node` sees its inputs in, by slot (see `INPUT_VIEWS`)."""
    return dict(node.meta.get(INPUT_VIEWS, ()))


def with_input_view(node: Node, slot: int, space: ConcatSpace) -> Node:
    """`node` seeing input `slot` in the Concatenate coordinates `space` from now on.

    A view the slot already has is kept: it is of an outer Concatenate, whose
    coordinates contain `space`.
    """
    views = input_views(node)
    views.setdefault(slot, space)
    meta = {**node.meta, INPUT_VIEWS: tuple(sorted(views.items(), key=lambda v: v[0]))}
    return attrs.evolve(node, meta=meta)


def seen_inputs(node: Node, inputs: Sequence[Tensor]) -> list[Tensor]:
    """`inputs` in the coordinates `node` was built for (see `INPUT_VIEWS`)."""
    views = input_views(node)
    if not views:
        return list(inputs)
    return [in_view(t, views[s]) if s in views else t for s, t in enumerate(inputs)]


def _from_end(tensor: Tensor) -> int | None:
    return None if tensor.axis is None else len(tensor.shape) - tensor.axis


def _describe_masks(tensors: Sequence[tuple[int, Tensor]]) -> str:
    parts = []
    for slot, t in tensors:
        deleted = [] if t.mask is None else np.flatnonzero(~t.mask).tolist()
        shown = deleted if len(deleted) <= 8 else [*deleted[:8], "..."]
        parts.append(
            f"input {slot} (channels of {t.origin!r}) keeps {mask_summary(t.mask)}"
            + (f", deleted {shown}" if deleted else "")
        )
    return "; ".join(parts)


def check_same_channels(node: Node, tensors: Sequence[tuple[int, Tensor]]) -> Tensor | None:
    """The input whose channels all inputs share; `MaskConflictError` if they differ.

    Inputs with a single channel broadcast and do not count.
    """
    tracked = [(s, t) for s, t in tensors if t.mask is not None]
    wide = [(s, t) for s, t in tracked if t.mask.size > 1] or tracked
    if not wide:
        return None
    _, first = wide[0]
    for _, t in wide[1:]:
        if (
            t.mask.size != first.mask.size
            or _from_end(t) != _from_end(first)
            or not np.array_equal(t.mask, first.mask)
        ):
            raise MaskConflictError(
                f"{node.describe()} combines inputs element-wise, so they must keep the same "
                f"channels, but {_describe_masks(wide)}. Delete the same channels from every "
                "branch (in one apply() call)"
            )
    return first


def agreeing_inputs(node: Node, inputs: Sequence[Tensor]) -> list[list[Tensor]]:
    """The coupling of inputs combined element by element (single channels broadcast)."""
    tracked = [inputs[s] for s in data_slots(node) if inputs[s].mask is not None]
    wide = [t for t in tracked if t.mask.size > 1]
    return [wide] if len(wide) > 1 else []


class ElementwiseMergeRule(WeightlessRule, HasCouplings):
    """Inputs combined element by element: the output keeps the inputs' common channels."""

    def couplings(self, node: Node, inputs: Sequence[Tensor]) -> list[list[Tensor]]:
        return agreeing_inputs(node, seen_inputs(node, inputs))

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        slots = data_slots(node)
        tensors = [(s, inputs[s]) for s in slots]
        first = check_same_channels(node, tensors)
        out = node.outputs[0]
        if first is None:
            return (out if out.space is not None else fresh_output(node, out),)
        spaces = {t.space for _, t in tensors if t.mask is not None and t.mask.size > 1}
        space = (
            first.space
            if len(spaces) == 1
            else MergeSpace(node.name, tuple(t.space for _, t in tensors))
        )
        axis = len(out.shape) - _from_end(first)
        return (attrs.evolve(carry(out, first, axis=axis), space=space),)


class ConcatenateRule(WeightlessRule, HasCouplings, CanDropInputs):
    """Concatenate on any axis: on the channel axis masks are joined, elsewhere they must agree."""

    def concat_axis(self, node: Node) -> int:
        return normalize_axis(int(node.config.get("axis", -1)), len(node.outputs[0].shape))

    def couplings(self, node: Node, inputs: Sequence[Tensor]) -> list[list[Tensor]]:
        inputs = seen_inputs(node, inputs)
        tensors = [inputs[s] for s in data_slots(node)]
        if all(t.axis == self.concat_axis(node) for t in tensors):
            return []  # joined side by side: independent
        return agreeing_inputs(node, inputs)

    def can_drop(self, node: Node, tensor: Tensor) -> bool:
        """An input without channels can leave the call when it joins on the channel axis."""
        return tensor.axis == self.concat_axis(node)

    def drop_inputs(self, node: Node, slots: Sequence[int]) -> Node:
        """`node` remembering the parts on input `slots` (about to leave the call).

        Their channels stay in the output's coordinates, all deleted.
        """
        space = node.outputs[0].space
        if not isinstance(space, ConcatSpace):
            return node
        parts = space.pieces()
        dropped = dict(_dropped(node))
        live = [p for p in range(len(parts)) if p not in dropped]
        slot_of = data_slots(node)
        for slot in slots:
            position = live[slot_of.index(slot)]
            dropped[position] = parts[position]
        recorded = tuple((p, *dropped[p]) for p in sorted(dropped))
        return attrs.evolve(node, meta={**node.meta, DROPPED_PARTS: recorded})

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        axis = self.concat_axis(node)
        slots = data_slots(node)
        tensors = [inputs[s] for s in slots]
        out = node.outputs[0]
        if not all(t.axis == axis for t in tensors):
            first = check_same_channels(node, list(zip(slots, tensors)))
            if first is None:
                return (out if out.space is not None else fresh_output(node, out),)
            return (carry(out, first, axis=len(out.shape) - _from_end(first)),)
        dropped = dict(_dropped(node))
        live = iter(tensors)
        spaces, masks = [], []
        for position in range(len(tensors) + len(dropped)):
            if position in dropped:
                part, width = dropped[position]
                spaces.append(part)
                masks.append(np.zeros(width, dtype=bool))
            else:
                t = next(live)
                spaces.append(t.space)
                masks.append(t.mask)
        mask = seal(np.concatenate(masks))
        widths = tuple(m.size for m in masks)
        space = ConcatSpace(node.name, tuple(spaces), widths)
        shape = list(out.shape)
        shape[axis] = int(mask.sum())
        return (attrs.evolve(out, shape=tuple(shape), axis=axis, mask=mask, space=space),)


def _dropped(node: Node) -> list[tuple[int, tuple[ChannelSpace | None, int]]]:
    """(lifted position, (space, width)) of the parts a Concatenate dropped."""
    return [(p, (space, width)) for p, space, width in node.meta.get(DROPPED_PARTS, ())]
