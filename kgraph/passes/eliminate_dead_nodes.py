"""`EliminateDeadNodes`: remove every node that no longer reaches a model output.

Model inputs always stay, so the lowered model keeps its signature.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from kgraph.graph_data import GraphData
from kgraph.passes.base import Pass

__all__ = ["EliminateDeadNodes", "live_nodes"]


def live_nodes(graph: GraphData) -> set[str]:
    """Names of the nodes some model output depends on, plus the model inputs."""
    live: set[str] = set()
    stack = list(graph.output_names)
    while stack:
        name = stack.pop()
        if name not in live:
            live.add(name)
            stack.extend(src for src, _ in graph.producers(name))
    return live | set(graph.input_names)


@attrs.frozen
class EliminateDeadNodes(Pass):
    """Remove nodes whose outputs no model output uses (e.g. a branch a Concatenate dropped)."""

    name: ClassVar[str] = "eliminate-dead-nodes"

    def run(self, graph: GraphData) -> bool:
        live = live_nodes(graph)
        dead = [name for name in graph.topological_order() if name not in live]
        for name in reversed(dead):  # users before the nodes they read
            graph.remove_node(name)
        return bool(dead)
