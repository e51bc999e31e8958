"""`ReplaceLayer`: put a new layer in the place of an existing one.

The new layer reads the same inputs and feeds the same consumers; keyword
arguments of the old call that the new layer accepts (e.g. `training`) are kept.

Example:
    >>> graph.apply(ReplaceLayer("dense_2", keras.layers.Dense(32, name="dense_2")))
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from kgraph.errors import SurgeryError
from kgraph.graph_data import GraphData, LayerRef
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
