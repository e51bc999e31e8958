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

from typing import TYPE_CHECKING, Any

import numpy as np

from kgraph.ir import Node, Slot, Tensor, mask_summary
from kgraph.rules import rule_for

if TYPE_CHECKING:
    from kgraph.graph import Graph

__all__ = ["format_graph", "format_node"]

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


def _ref(graph: Graph, node: Node, slot: int) -> str:
    src, src_slot = graph.producers(node.name)[slot]
    return f"%{src}" if len(graph.node(src).outputs) == 1 else f"%{src}.{src_slot}"


def _value(value: Any) -> str:
    if isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and not isinstance(value, (int, float))
    ):
        return f"array{tuple(value.shape)}"
    return repr(value)


def _arguments(graph: Graph, node: Node) -> str:
    refs = [_ref(graph, node, i) for i in range(len(graph.producers(node.name)))]

    def show(value: Any) -> str:
        if isinstance(value, Slot):
            return refs[value.index]
        if isinstance(value, (list, tuple)):
            return ", ".join(show(v) for v in value)
        return _value(value)

    parts = [show(a) for a in node.args]
    parts += [f"{k}={show(v)}" for k, v in node.kwargs.items() if v is not None and k != "training"]
    return ", ".join(parts)


def _attributes(node: Node) -> str:
    items = []
    rule = rule_for(node)
    key = getattr(rule, "channels_key", None)
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


def _type(outputs: tuple[Tensor, ...]) -> str:
    shapes = [str(t.shape) for t in outputs]
    kept = [mask_summary(t.mask) for t in outputs if t.mask is not None and not t.mask.all()]
    text = shapes[0] if len(shapes) == 1 else f"[{', '.join(shapes)}]"
    return text + (f"  {kept[0]} kept" if kept else "")


def format_node(graph: Graph, node: Node) -> str:
    """One line for `node`: `%name = Class[config](%inputs) : shape  kept`."""
    label = node.class_name if node.kind == "layer" else f"ops.{node.class_name.lower()}"
    call = f"{label}{_attributes(node)}({_arguments(graph, node)})"
    return f"%{node.name} = {call} : {_type(node.outputs)}"


def format_graph(graph: Graph) -> str:
    """The whole graph as text, inputs in the header and outputs in `return`."""
    inputs = ", ".join(f"%{n}: {graph.node(n).outputs[0].shape}" for n in graph.input_names)
    lines = [f"graph {graph.name}({inputs}) {{"]
    for node in graph.nodes():
        if node.kind in ("layer", "op"):
            lines.append("  " + format_node(graph, node))
    returns = [_ref(graph, graph.node(n), 0) for n in graph.output_names]
    lines.append(f"  return {', '.join(returns)}")
    lines.append("}")
    return "\n".join(lines)
