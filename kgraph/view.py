"""The view model shared by the text printer and the dumps: what a node and an edge
look like to a person (label, input references, shapes, kept channels, status).

Example:
    >>> views = node_views(pruned_graph)
    >>> [(v.name, v.status) for v in views if v.status != "unchanged"]
    [('conv1', 'changed'), ('conv2', 'changed')]
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from kgraph.graph_data import GraphData
from kgraph.ir import Node, Tensor, mask_summary

__all__ = [
    "EdgeView",
    "NodeView",
    "attributes",
    "edge_views",
    "node_label",
    "node_views",
    "reference",
    "shapes",
]

_SHOWN = (
    "kernel_size",
    "pool_size",
    "size",
    "cropping",
    "padding",
    "rate",
    "axis",
    "target_shape",
    "dims",
    "n",
)


def attributes(graph: GraphData, node: Node) -> str:
    """`[filters 32→24, 3x3, relu]`: the node's own channels and key config."""
    items = []
    rule = graph.rules.rule_for(node)
    key = rule.channels_key
    if (
        rule.owns_channels
        and key in node.config
        and node.outputs
        and node.outputs[0].mask is not None
    ):
        lifted, now = node.outputs[0].mask.size, node.config[key]
        items.append(f"{key} {lifted}→{now}" if lifted != now else f"{key} {now}")
    for name in _SHOWN:
        value = node.config.get(name)
        if value is None or (name == "padding" and isinstance(value, str)):
            continue
        if (
            isinstance(value, (list, tuple))
            and all(isinstance(v, int) for v in value)
            and name.endswith("size")
        ):
            items.append("x".join(map(str, value)))
        else:
            items.append(f"{name} {value}")
    activation = node.config.get("activation")
    if isinstance(activation, str) and activation != "linear":
        items.append(activation)
    return f"[{', '.join(items)}]" if items else ""


def reference(graph: GraphData, src: str, slot: int) -> str:
    """How the printer refers to output `slot` of node `src`: `%conv`, or `%lstm.1`."""
    return f"%{src}" if len(graph.node(src).outputs) == 1 else f"%{src}.{slot}"


def _pruned(tensor: Tensor | None) -> bool:
    return tensor is not None and tensor.mask is not None and not bool(tensor.mask.all())


@attrs.frozen
class EdgeView:
    """One edge as a dump shows it: output `src_slot` of `src` into input `dst_slot` of `dst`.

    `pruned` is True when the tensor on it (the producer's output) drops channels.
    """

    src: str
    src_slot: int
    dst: str
    dst_slot: int
    tensor: Tensor | None

    @property
    def pruned(self) -> bool:
        return _pruned(self.tensor)

    @property
    def kept(self) -> str:
        """`'48/64'` (kept/lifted channels of the tensor), `'-'` when untracked."""
        return mask_summary(None if self.tensor is None else self.tensor.mask)


@attrs.frozen
class NodeView:
    """One node as a dump shows it, with why it is highlighted.

    Attributes:
        node: the node's record.
        label: the class with its key config, as the text printer writes it.
        inputs: the printer's references to the tensors read (`%conv`, `%lstm.1`).
        shape: the output shape(s) (for a model output: the shape it returns).
        kept: kept/lifted channels of each output (`'48/64'`, `'-'` untracked).
        status: "new" (a layer inserted by a pass), "changed" (its outputs or
            inputs lost channels) or "unchanged".
        reasons: why it is new or changed, for people.
    """

    node: Node
    label: str
    inputs: tuple[str, ...]
    shape: str
    kept: tuple[str, ...]
    status: str
    reasons: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.node.name


def edge_views(graph: GraphData) -> list[EdgeView]:
    """Every edge of `graph`, consumers in topological order and by input slot."""
    views = []
    for name in graph.topological_order():
        for slot, (src, src_slot) in enumerate(graph.producers(name)):
            outputs = graph.node(src).outputs
            tensor = outputs[src_slot] if src_slot < len(outputs) else None
            views.append(EdgeView(src, src_slot, name, slot, tensor))
    return views


def node_label(graph: GraphData, node: Node) -> str:
    """`Conv2D[filters 32→24, 3x3, relu]`, `ops.add`, `Input` or `Output`."""
    if node.kind == "layer":
        return node.class_name + attributes(graph, node)
    if node.kind == "op":
        return f"ops.{node.class_name.lower()}" + attributes(graph, node)
    return "Input" if node.kind == "input" else "Output"


def shapes(tensors: Sequence[Tensor]) -> str:
    """`(None, 8)`, or `[(None, 8), (None, 4)]` for several tensors."""
    texts = [str(t.shape) for t in tensors]
    if not texts:
        return "?"
    return texts[0] if len(texts) == 1 else f"[{', '.join(texts)}]"


def _differences(graph: GraphData, node: Node, baseline: GraphData) -> list[str]:
    """How `node` differs from the node of the same name in `baseline` (weights, config, inputs)."""
    if node.name not in baseline:
        return ["new layer"] if node.kind in ("layer", "op") else []
    old = baseline.node(node.name)
    found = []
    if old.weight_names != node.weight_names or any(
        a is not b and (a.shape != b.shape or not np.array_equal(a, b))
        for a, b in zip(old.weights, node.weights)
    ):
        found.append("weights changed")
    keys = sorted(k for k in {*old.config, *node.config} if old.config.get(k) != node.config.get(k))
    if keys:
        found.append(f"config changed: {', '.join(keys)}")
    if baseline.producers(node.name) != graph.producers(node.name):
        found.append("inputs rewired")
    return found


def _view(
    graph: GraphData, node: Node, incoming: list[EdgeView], baseline: GraphData | None
) -> NodeView:
    refs = tuple(reference(graph, e.src, e.src_slot) for e in incoming)
    read = [e.tensor for e in incoming if e.tensor is not None]
    shown = read if node.kind == "output" else list(node.outputs)
    reasons = []
    if node.kind in ("layer", "op") and node.origin is None:
        reasons.append("new layer")
    for i, tensor in enumerate(node.outputs):
        if _pruned(tensor):
            which = "output" if len(node.outputs) == 1 else f"output {i}"
            reasons.append(f"{which} keeps {mask_summary(tensor.mask)} channels")
    for edge in incoming:
        if edge.pruned:
            which = "input" if len(incoming) == 1 else f"input {edge.dst_slot}"
            reasons.append(f"{which} keeps {edge.kept} channels")
    for key, value in node.meta.items():  # e.g. the attention heads DeleteHeads keeps
        if isinstance(value, np.ndarray) and value.dtype == bool and not value.all():
            reasons.append(f"{key}: {mask_summary(value)} kept")
    if baseline is not None:
        reasons += [r for r in _differences(graph, node, baseline) if r not in reasons]
    status = "new" if "new layer" in reasons else "changed" if reasons else "unchanged"
    return NodeView(
        node=node,
        label=node_label(graph, node),
        inputs=refs,
        shape=shapes(shown),
        kept=tuple(mask_summary(t.mask) for t in shown),
        status=status,
        reasons=tuple(reasons),
    )


def node_views(graph: GraphData, baseline: GraphData | None = None) -> list[NodeView]:
    """Every node of `graph` in topological order, with its status (new/changed/unchanged).

    Without `baseline`, a node is changed when its outputs or inputs lost channels
    (masks are relative to the lifted model) and new when it has no origin (a layer
    a pass inserted). With `baseline` (e.g. the graph before a pass), nodes whose
    weights, config or producers differ from the node of the same name there are
    changed too, and nodes it does not have are new.
    """
    incoming: dict[str, list[EdgeView]] = {}
    for edge in edge_views(graph):
        incoming.setdefault(edge.dst, []).append(edge)
    return [_view(graph, n, incoming.get(n.name, []), baseline) for n in graph.nodes()]
