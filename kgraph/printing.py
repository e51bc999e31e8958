"""Text form of the IR: one line per node in topological order.

Example output:
    graph lenet(%input: (None, 28, 28, 1)) {
      %conv1 = Conv2D[filters 32→24, 3x3, relu](%input) : (None, 26, 26, 24)  24/32 kept
      %flatten = Flatten(%conv1) : (None, 16224)  16224/21632 kept
      %dense = Dense[units 10](%flatten) : (None, 10)
      return %dense
    }
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kgraph.graph_data import GraphData
from kgraph.ir import Node, Slot, Tensor, mask_summary
from kgraph.view import node_label, reference, shapes

__all__ = ["format_graph", "format_node"]


def _value(value: Any) -> str:
    if isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and not isinstance(value, (int, float))
    ):
        return f"array{tuple(value.shape)}"
    return repr(value)


def _arguments(graph: GraphData, node: Node) -> str:
    refs = [reference(graph, src, slot) for src, slot in graph.producers(node.name)]

    def show(value: Any) -> str:
        if isinstance(value, Slot):
            return refs[value.index]
        if isinstance(value, (list, tuple)):
            return ", ".join(show(v) for v in value)
        return _value(value)

    parts = [show(a) for a in node.args]
    parts += [f"{k}={show(v)}" for k, v in node.kwargs.items() if v is not None and k != "training"]
    return ", ".join(parts)


def _type(outputs: tuple[Tensor, ...]) -> str:
    kept = [mask_summary(t.mask) for t in outputs if t.mask is not None and not t.mask.all()]
    return shapes(outputs) + (f"  {kept[0]} kept" if kept else "")


def format_node(graph: GraphData, node: Node) -> str:
    """One line for `node`: `%name = Class[config](%inputs) : shape  kept`."""
    call = f"{node_label(graph, node)}({_arguments(graph, node)})"
    return f"%{node.name} = {call} : {_type(node.outputs)}"


def format_graph(graph: GraphData) -> str:
    """The whole graph as text, inputs in the header and outputs in `return`."""
    inputs = ", ".join(f"%{n}: {graph.node(n).outputs[0].shape}" for n in graph.input_names)
    lines = [f"graph {graph.name}({inputs}) {{"]
    for node in graph.nodes():
        if node.kind in ("layer", "op"):
            lines.append("  " + format_node(graph, node))
    returns = [reference(graph, *graph.producers(n)[0]) for n in graph.output_names]
    lines.append(f"  return {', '.join(returns)}")
    lines.append("}")
    return "\n".join(lines)
