"""`PropagateMasks`: carry channel masks forward and slice every weight that reads them.

Walking the graph in topological order, each node whose input tensors changed is
handed to its rule: the rule slices the weights reading deleted channels and says
which tensors the node outputs now. Inputs whose channels were all deleted are
dropped by a Concatenate (which disappears when one input remains) and make any
other single-input layer vanish with them, as kerassurgeon does; an empty tensor
reaching a model output is an error.

Neither changes the coordinates of channels: a Concatenate keeps a dropped part (all
deleted) in its output's coordinates, and the users of a bypassed one keep seeing
their input in those coordinates (`INPUT_VIEWS`), in this apply() and later ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import attrs
import numpy as np

from kgraph.errors import ChannelError, KGraphError, SurgeryError
from kgraph.graph_data import GraphData
from kgraph.ir import Node, Tensor, remove_slot, seal
from kgraph.passes.base import Pass
from kgraph.rules.base import data_slots
from kgraph.rules.capabilities import can_drop, drop_inputs
from kgraph.rules.merge import (
    INPUT_VIEWS,
    input_views,
    seen_inputs,
    with_input_view,
)
from kgraph.rules.registry import RuleSet

__all__ = ["PropagateMasks", "relative_keep", "update_node"]


def relative_keep(node: Node, slot: int, old: Tensor, new: Tensor) -> np.ndarray | None:
    """Which of the channels `node` was built for (on input `slot`) survive in `new`.

    Returns a boolean array over the current channels of `old`, or None when
    nothing was deleted. A tensor in other coordinates (after a splice) is
    accepted when it has, or had before deletions, as many channels as before.
    """
    if old.space is None or old is new:
        return None
    if old.mask is None or new.mask is None:
        if old.channels == new.channels or (old.mask is None and new.mask is None):
            return None
    elif old.space == new.space:
        if (new.mask & ~old.mask).any():
            raise KGraphError(
                f"input {slot} of {node.describe()} regained deleted channels; "
                "channels cannot be restored once deleted"
            )
        keep = new.mask[old.mask]
        return None if keep.all() else keep
    elif old.channels == new.channels:
        return None  # new coordinates, same channels: nothing to slice
    elif old.channels == new.mask.size:
        return new.mask  # new coordinates for the same channels, some deleted since
    raise ChannelError(
        f"input {slot} of {node.describe()} now carries {new.channels} channels where it was "
        f"built for {old.channels}: the layer feeding it was deleted, inserted or replaced "
        "by one with another number of channels"
    )


def update_node(node: Node, inputs: Sequence[Tensor], rules: RuleSet) -> Node:
    """`node` re-sliced for `inputs`, with its outputs inferred by its rule.

    The rule (from `rules`) sees the inputs in the coordinates the node was built for
    (`seen_inputs`).
    """
    rule = rules.rule_for(node)
    olds, news = seen_inputs(node, node.inputs), seen_inputs(node, inputs)
    keeps = []
    for slot, (old, new) in enumerate(zip(olds, news)):
        try:
            keeps.append(relative_keep(node, slot, old, new))
        except ChannelError:
            if not rule.any_channel_count:
                raise
            keeps.append(None)  # the first layer that cares will say so
    if any(k is not None for k in keeps):
        node = rule.slice_inputs(node, news, keeps)
    try:
        outputs = tuple(rule.infer(node, news))
    except KGraphError:
        raise
    except (IndexError, ValueError) as error:
        before = [len(t.shape) for t in olds]
        now = [len(t.shape) for t in news]
        if before == now:
            raise
        # A layer before it that changed the rank was deleted or replaced, and this
        # rule reads shapes it cannot map (Dense and the like re-infer; most cannot).
        raise SurgeryError(
            f"{node.describe()} was built for inputs of rank {before} and now gets rank "
            f"{now} (a layer before it that changed the rank was deleted or replaced); "
            "kgraph cannot carry it to the new rank. Delete or replace it too, or keep the rank"
        ) from error
    if len(outputs) == len(node.outputs):  # unchanged records stay: their users need no update
        outputs = tuple(old if old.same_as(new) else new for old, new in zip(node.outputs, outputs))
    return attrs.evolve(node, inputs=tuple(inputs), outputs=outputs)


def _vanish(node: Node, inputs: Sequence[Tensor]) -> Node:
    """`node` whose only input lost every channel: its outputs lose theirs too."""
    outputs = []
    for out in node.outputs:
        if out.mask is None:
            raise ChannelError(
                f"every channel reaching {node.describe()} was deleted, and its output has no "
                "channel axis kgraph can remove; keep at least one channel"
            )
        outputs.append(out.with_mask(seal(np.zeros_like(out.mask))))
    return attrs.evolve(node, inputs=tuple(inputs), outputs=tuple(outputs))


def _drop_inputs(graph: GraphData, node: Node, slots: Sequence[int]) -> Node:
    """Remove input `slots` of `node` from the graph and from its call template."""
    node = drop_inputs(graph.rules.rule_for(node), node, slots)
    for slot in sorted(slots, reverse=True):
        count = len(node.inputs)
        graph.disconnect(node.name, slot)
        for later in range(slot + 1, count):
            src, src_slot = graph.disconnect(node.name, later)
            graph.connect(src, src_slot, node.name, later - 1)
        node = attrs.evolve(
            node,
            args=remove_slot(node.args, slot),
            kwargs=remove_slot(dict(node.kwargs), slot),
            inputs=node.inputs[:slot] + node.inputs[slot + 1 :],
        )
        views = input_views(node)
        if views:
            kept = tuple((s - (s > slot), v) for s, v in sorted(views.items()) if s != slot)
            node = attrs.evolve(node, meta={**node.meta, INPUT_VIEWS: kept})
    return node


def _bypass(graph: GraphData, node: Node) -> None:
    """Remove `node` (a Concatenate left with one input): its users read that input.

    They keep seeing it in the Concatenate's coordinates (`INPUT_VIEWS`).
    """
    ((src, src_slot),) = graph.producers(node.name)
    space = node.outputs[0].space
    for dst, dst_slot, _ in graph.users(node.name, 0):
        graph.set_node(with_input_view(graph.node(dst), dst_slot, space))
    graph.redirect_users(node.name, 0, src, src_slot)
    graph.remove_node(node.name)


def _empty_root(graph: GraphData, name: str) -> str:
    """The node whose own channels were all deleted, walking up through empty tensors."""
    while True:
        empty = [src for src, slot in graph.producers(name) if graph.node(src).outputs[slot].empty]
        if not empty:
            return name
        name = empty[0]


@attrs.frozen
class PropagateMasks(Pass):
    """Carry channel masks forward from every change and slice the weights they reach."""

    name: ClassVar[str] = "propagate-masks"

    def run(self, graph: GraphData) -> bool:
        changed, drops = self._sweep(graph)
        while drops:
            # Inputs without channels leave their Concatenate only now, after the
            # consumers were sliced in the Concatenate's old coordinates.
            for name, slots in drops:
                node = _drop_inputs(graph, graph.node(name), slots)
                graph.set_node(node)
                if len(data_slots(node)) == 1:  # one input left: bypass the Concatenate
                    _bypass(graph, node)
            _, drops = self._sweep(graph)
        return changed

    def _sweep(self, graph: GraphData) -> tuple[bool, list[tuple[str, list[int]]]]:
        changed: bool = False
        drops: list[tuple[str, list[int]]] = []
        for name in graph.topological_order():
            node = graph.node(name)
            if node.kind == "input":
                continue
            inputs = graph.input_tensors(name)
            if len(inputs) == len(node.inputs) and all(a is b for a, b in zip(inputs, node.inputs)):
                continue
            changed = True
            if node.kind == "output":
                if inputs[0].empty:
                    raise ChannelError(
                        f"every channel of {_empty_root(graph, name)!r} would be deleted, but it "
                        f"is the only path to {graph.describe(name)}; keep at least one channel"
                    )
                graph.set_node(attrs.evolve(node, inputs=tuple(inputs)))
                continue
            empty = [s for s in data_slots(node) if inputs[s].empty]
            if empty and len(empty) == len(data_slots(node)):
                graph.set_node(_vanish(node, inputs))
                continue
            if empty:
                self._check_droppable(graph, node, inputs, empty)
                drops.append((name, empty))
            graph.set_node(update_node(node, inputs, graph.rules))
        return changed, drops

    def _check_droppable(
        self, graph: GraphData, node: Node, inputs: list[Tensor], empty: list[int]
    ) -> None:
        rule = graph.rules.rule_for(node)
        if all(can_drop(rule, node, inputs[s]) for s in empty):
            return
        roots = sorted({_empty_root(graph, graph.producers(node.name)[s][0]) for s in empty})
        others = [repr(inputs[s].origin) for s in data_slots(node) if s not in empty]
        raise ChannelError(
            f"every channel of {', '.join(map(repr, roots))} would be deleted, but "
            f"{node.describe()} still combines it with other inputs ({', '.join(others)}); "
            "only a Concatenate can drop a branch. Keep at least one channel"
        )
