"""`verify`: check the IR's invariants, like torch.fx's `lint`.

Structure: acyclic; every input slot of a node filled exactly once, matching its
call template; edges read existing output slots; calls of one layer share a class.
Consistency (skipped while passes are still pending): every node was computed
for the tensors its producers output now; masks match shapes; each rule's
`check` finds the node's weights and config in line with its channels.
"""

from __future__ import annotations

import networkx as nx

from kgraph.errors import VerificationError
from kgraph.graph_data import GraphData
from kgraph.ir import Node, same_layer, slots_in
from kgraph.rules.capabilities import problems as rule_problems

__all__ = ["verify"]


def _structure(graph: GraphData) -> list[str]:
    problems = []
    g = graph.nx
    if not nx.is_directed_acyclic_graph(g):
        problems.append(f"the graph has a cycle: {nx.find_cycle(g)}")
    classes: dict[str, type | None] = {}
    for name in g.nodes:
        node = graph.node(name)
        if node.name != name:
            problems.append(f"node key {name!r} holds a record named {node.name!r}")
        slots = sorted(key for _, _, key in g.in_edges(name, keys=True))
        expected = {"input": 0, "output": 1}.get(node.kind)
        if expected is None:
            expected = len(slots_in((node.args, dict(node.kwargs))))
        if slots != list(range(expected)):
            problems.append(f"{node.describe()} has input slots {slots}, its call needs {expected}")
        for src, slot in graph.producers(name):
            if slot >= len(graph.node(src).outputs):
                problems.append(
                    f"{node.describe()} reads output {slot} of {src!r}, which has fewer"
                )
        if (
            node.kind in ("layer", "op")
            and classes.setdefault(node.layer, node.cls) is not node.cls
        ):
            problems.append(f"calls of layer {node.layer!r} have different classes")
    return problems


def _consistency(graph: GraphData) -> list[str]:
    problems = []
    shared: dict[str, Node] = {}
    for name in graph.nx.nodes:
        node = graph.node(name)
        current = graph.input_tensors(name)
        if len(current) != len(node.inputs) or not all(
            a.same_as(b) for a, b in zip(current, node.inputs)
        ):
            problems.append(f"{node.describe()} was computed for other input tensors than it reads")
        for tensor in node.outputs:
            if tensor.mask is not None and int(tensor.mask.sum()) != tensor.shape[tensor.axis]:
                problems.append(
                    f"{node.describe()} outputs {tensor} whose mask does not match its shape"
                )
        first = shared.setdefault(node.layer, node)
        if node.kind in ("layer", "op") and first is not node and not same_layer(first, node):
            problems.append(
                f"calls {first.name!r} and {node.name!r} of shared layer {node.layer!r} "
                "disagree on config or weights"
            )
        if node.kind == "output" and node.inputs and node.inputs[0].empty:
            problems.append(f"{node.describe()} has no channels left")
        if node.kind in ("layer", "op"):
            problems += [
                f"{node.describe()} {p}" for p in rule_problems(graph.rules.rule_for(node), node)
            ]
    return problems


def verify(graph: GraphData, *, structure_only: bool = False) -> None:
    """Raise `VerificationError` listing every broken invariant, with the printed graph."""
    problems = _structure(graph)
    if not structure_only and not problems:
        problems += _consistency(graph)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise VerificationError(f"graph {graph.name!r} is inconsistent:\n{listing}\n\n{graph}")
