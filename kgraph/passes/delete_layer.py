"""`DeleteLayer`: remove a layer, connecting its input straight to its consumers.

Example:
    >>> graph.apply(DeleteLayer("dropout"))
"""

from __future__ import annotations

import logging
from typing import ClassVar

import attrs

from kgraph.errors import SurgeryError
from kgraph.graph_data import GraphData, LayerRef
from kgraph.passes.base import Pass, optional_tuple
from kgraph.passes.splice import single_input
from kgraph.rules.merge import input_views, with_input_view

__all__ = ["DeleteLayer"]

log = logging.getLogger(__name__)


@attrs.frozen
class DeleteLayer(Pass):
    """Delete every call of `layer`; each needs a single input and a single output."""

    name: ClassVar[str] = "delete-layer"
    layer: LayerRef
    calls: tuple[int, ...] | None = attrs.field(default=None, converter=optional_tuple)

    def run(self, graph: GraphData) -> bool:
        for node_name in graph.find_calls(self.layer, self.calls):
            node = graph.node(node_name)
            src, src_slot = single_input(graph, node, "delete")
            if len(node.outputs) != 1:
                raise SurgeryError(
                    f"cannot delete {node.describe()}: it has {len(node.outputs)} outputs"
                )
            # A call reading a bypassed Concatenate passes its view on to its users.
            view = input_views(node).get(0)
            if view is not None:
                for dst, dst_slot, _ in graph.users(node_name, 0):
                    graph.set_node(with_input_view(graph.node(dst), dst_slot, view))
            outputs = [d for d, _, _ in graph.users(node_name, 0) if graph.node(d).kind == "output"]
            before, after = node.outputs[0].shape, graph.node(src).outputs[src_slot].shape
            shape = "its shape" if after == before else f"shape {after} instead of {before}"
            for output in outputs:
                log.warning(
                    "deleting %s makes %s return its input (%s)",
                    node.describe(),
                    graph.describe(output),
                    shape,
                )
            graph.redirect_users(node_name, 0, src, src_slot)
            graph.remove_node(node_name)
        return True
