"""`ReplaceLayer`: put a new layer in the place of an existing one.

The new layer reads the same inputs and feeds the same consumers; keyword
arguments of the old call that the new layer accepts (e.g. `training`) are kept.

Example:
    >>> graph.apply(ReplaceLayer("dense_2", keras.layers.Dense(32, name="dense_2")))
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import keras

from kgraph.errors import SurgeryError
from kgraph.graph_data import GraphData, LayerRef
from kgraph.ir import Node
from kgraph.passes.base import Pass, optional_tuple
from kgraph.passes.splice import (
    accepted_kwargs,
    check_new_layer,
    new_layer_name,
    new_layer_node,
)

__all__ = ["ReplaceLayer"]


@attrs.frozen
class ReplaceLayer(Pass):
    """Replace every call of `layer` with a call of `new_layer` (an unused keras Layer)."""

    name: ClassVar[str] = "replace-layer"
    layer: LayerRef
    new_layer: Any = attrs.field(validator=check_new_layer)
    calls: tuple[int, ...] | None = attrs.field(default=None, converter=optional_tuple)

    def run(self, graph: GraphData) -> bool:
        targets = set(graph.find_calls(self.layer, self.calls))
        old_nodes = [graph.node(n) for n in graph.topological_order() if n in targets]
        if any(node.kind not in ("layer", "op") for node in old_nodes):
            raise SurgeryError(f"cannot replace {old_nodes[0].describe()}: it is a model input")
        for node in old_nodes:
            _check_takes_a_list(self.new_layer, node)
        wiring = [(n, graph.producers(n.name), graph.users(n.name)) for n in old_nodes]
        for node, _, users in wiring:  # its users are connected to the new layer below
            for dst, dst_slot, _ in users:
                graph.disconnect(dst, dst_slot)
            graph.remove_node(node.name)
        name = new_layer_name(graph, self.new_layer)
        renamed: dict[str, str] = {}
        weights = None  # the first call's, so that every call shares one layer
        for index, (node, producers, _) in enumerate(wiring):
            # A call may read another call of the same layer: it is already replaced.
            sources = [(renamed.get(src, src), slot) for src, slot in producers]
            inputs = [graph.node(src).outputs[slot] for src, slot in sources]
            new = new_layer_node(
                self.new_layer,
                inputs,
                name=name,
                index=index,
                calls=len(wiring),
                args=node.args,
                kwargs=accepted_kwargs(self.new_layer, dict(node.kwargs)),
                weights=weights,
                rules=graph.rules,
            )
            weights = new.weights
            graph.add_node(new)
            renamed[node.name] = new.name
            for slot, (src, src_slot) in enumerate(sources):
                graph.connect(src, src_slot, new.name, slot)
        for node, _, users in wiring:
            new = graph.node(renamed[node.name])
            for dst, dst_slot, out_slot in users:
                if dst in targets:
                    continue  # another call of the replaced layer: wired above
                if out_slot >= len(new.outputs):
                    raise SurgeryError(
                        f"{dst!r} reads output {out_slot} of {node.describe()}, but the new "
                        f"layer {name!r} has only {len(new.outputs)} outputs"
                    )
                graph.connect(new.name, out_slot, dst, dst_slot)
        return True


# Keras layers that take a list of tensors as their one input.
_LIST_LAYERS = (
    keras.layers.Concatenate,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Dot,
    keras.layers.Attention,
    keras.layers.AdditiveAttention,
)


def _check_takes_a_list(new_layer: Any, node: Node) -> None:
    """Refuse a built-in Keras layer of one tensor in place of a call given a list of
    tensors (a merge): Keras maps such a layer over the list when it builds the model
    but stacks the list into one tensor when it runs it, so the model would break."""
    first = node.args[0] if node.args else None
    if not isinstance(first, (list, tuple)) or len(first) < 2:
        return
    if not type(new_layer).__module__.startswith("keras.") or isinstance(new_layer, _LIST_LAYERS):
        return  # a merge, or a user's layer, which may take a list
    raise SurgeryError(
        f"{node.describe()} takes a list of {len(first)} tensors, but "
        f"{type(new_layer).__name__} {new_layer.name!r} takes one tensor; replace it with a "
        "layer that merges a list (Add, Concatenate, ...), or insert the new layer after it"
    )
