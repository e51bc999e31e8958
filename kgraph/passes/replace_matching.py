"""`ReplaceMatching`: the most common custom pass in one line — replace every layer a
predicate picks with a new layer made from it.

`match(node)` sees each layer's IR record (`node.class_name`, `node.config`,
`node.name`, ...); `make(node)` returns the new, unused Keras layer for it (or None
to leave that one alone). Each matched layer is replaced as `ReplaceLayer` would
(all its calls; the new layer reads the same inputs and feeds the same users).

Example:
    >>> swish = ReplaceMatching(
    ...     match=lambda node: node.class_name == "ReLU",
    ...     make=lambda node: keras.layers.Activation("swish", name=f"{node.layer}_swish"),
    ... )
    >>> graph.apply(swish)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from kgraph.errors import SurgeryError
from kgraph.graph_data import GraphData
from kgraph.ir import Node
from kgraph.passes.base import Pass
from kgraph.passes.replace_layer import ReplaceLayer

__all__ = ["ReplaceMatching"]


def _callable(instance: Any, attribute: Any, value: Any) -> None:
    if not callable(value):
        raise SurgeryError(
            f"ReplaceMatching needs {attribute.name} to be a function, got {value!r}"
        )


@attrs.frozen
class ReplaceMatching(Pass):
    """Replace every layer with `match(node)` true by `make(node)` (None: keep it)."""

    name: ClassVar[str] = "replace-matching"
    match: Callable[[Node], bool] = attrs.field(validator=_callable)
    make: Callable[[Node], Any] = attrs.field(validator=_callable)

    def run(self, graph: GraphData) -> bool:
        chosen: dict[str, Node] = {}  # one entry per layer, at its first call
        for node in graph.nodes():
            if node.kind == "layer" and node.layer not in chosen and self.match(node):
                chosen[node.layer] = node
        changed = False
        for layer, node in chosen.items():
            new_layer = self.make(node)
            if new_layer is not None:
                changed = ReplaceLayer(layer, new_layer).run(graph) or changed
        return changed
