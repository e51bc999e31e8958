"""`InsertLayer`: insert a new layer before (or after) an existing one.

As in kerassurgeon, the new layer goes on the input of `layer`; with `after=True`
it goes on its output, feeding everything that read it. A shared `layer` gets
the new layer inserted at every call, as one shared layer.

Example:
    >>> graph.apply(InsertLayer("dense_2", keras.layers.Dropout(0.2)))
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from kgraph.errors import SurgeryError
from kgraph.graph_data import GraphData, LayerRef
from kgraph.passes.base import Pass, optional_tuple
from kgraph.passes.splice import check_new_layer, new_layer_name, new_layer_node, single_input

__all__ = ["InsertLayer"]


@attrs.frozen
class InsertLayer(Pass):
    """Insert `new_layer` (an unused keras Layer) before `layer`, or after it with `after=True`."""

    name: ClassVar[str] = "insert-layer"
    layer: LayerRef
    new_layer: Any = attrs.field(validator=check_new_layer)
    after: bool = False
    calls: tuple[int, ...] | None = attrs.field(default=None, converter=optional_tuple)

    def run(self, graph: GraphData) -> bool:
        targets = graph.find_calls(self.layer, self.calls)
        name = new_layer_name(graph, self.new_layer)
        weights = None  # the first call's, so that every call shares one layer
        for index, target in enumerate(targets):
            node = graph.node(target)
            if self.after:
                if len(node.outputs) != 1:
                    raise SurgeryError(
                        f"cannot insert after {node.describe()}: it has {len(node.outputs)} outputs"
                    )
                src, src_slot = target, 0
            else:
                src, src_slot = single_input(graph, node, "insert a layer before")
            tensor = graph.node(src).outputs[src_slot]
            new = new_layer_node(
                self.new_layer,
                [tensor],
                name=name,
                index=index,
                calls=len(targets),
                weights=weights,
                rules=graph.rules,
            )
            weights = new.weights
            graph.add_node(new)
            if self.after:
                graph.redirect_users(target, 0, new.name, 0)
            else:
                graph.disconnect(target, 0)
                graph.connect(new.name, 0, target, 0)
            graph.connect(src, src_slot, new.name, 0)
        return True
