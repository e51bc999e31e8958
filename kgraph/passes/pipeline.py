"""The pipeline behind `Graph.apply`: the given passes, then the finalizing ones.

After the passes a user asks for, `PropagateMasks` carries the masks forward and
slices weights, and `EliminateDeadNodes` removes what no output reads, so the
graph `run_pipeline` returns is always consistent. The driver itself is
`kgraph.passes.base.run_passes`.

Example:
    >>> seen = []
    >>> result = run_pipeline(graph, [DeleteChannels("conv1", [0])],
    ...                       after_pass=lambda step, name, g: seen.append(name))
    >>> seen
    ['input', 'delete-channels', 'propagate-masks', 'eliminate-dead-nodes']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kgraph.graph_data import GraphData
from kgraph.passes.base import Pass, PassResult, run_passes
from kgraph.passes.eliminate_dead_nodes import EliminateDeadNodes
from kgraph.passes.propagate_masks import PropagateMasks

__all__ = ["FINALIZE", "run_pipeline"]

FINALIZE: tuple[Pass, ...] = (PropagateMasks(), EliminateDeadNodes())


def run_pipeline(graph: GraphData, passes: Sequence[Pass], **options: Any) -> PassResult:
    """`run_passes(graph, passes, finalize=FINALIZE, **options)`."""
    return run_passes(graph, passes, finalize=FINALIZE, **options)
