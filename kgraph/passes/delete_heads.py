"""`DeleteHeads`: remove whole attention heads of an attention layer.

Works on every layer whose rule has heads (`kgraph.rules.capabilities.HasHeads`):
`MultiHeadAttention` (and keras-hub's `CachedMultiHeadAttention`), Keras'
`GroupQueryAttention` and keras-hub's Llama, Mistral, Qwen and Gemma attentions.
The query, key and value projections lose the heads' columns (and biases), the
output projection loses their rows, and the head counts in the config shrink.

With grouped-query attention (g query heads share each key/value head), `kv_heads`
deletes key/value heads with their g query heads, and `heads` deletes query heads,
the same number from every group. Head indices refer to the lifted model, like
channel indices, so deleting a head twice is a no-op. `layer` may also name a
transformer block (`"transformer_layer_0"`): its one attention layer is meant.

Example:
    >>> smaller = kgraph.lift(model).apply(DeleteHeads("mha", [1, 5])).lower()
    >>> graph.apply(DeleteHeads("transformer_layer_0", kv_heads=[1]))   # Llama
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from kgraph.errors import LayerNotFoundError, SurgeryError
from kgraph.graph_data import GraphData, LayerRef
from kgraph.ir import delete_from
from kgraph.passes.base import Pass, as_tuple, optional_tuple
from kgraph.passes.delete_channels import check_channels
from kgraph.rules.base import OPAQUE_REASON
from kgraph.rules.capabilities import HasHeads

__all__ = ["DeleteHeads", "attention_calls"]


def _has_heads(graph: GraphData, name: str) -> bool:
    return isinstance(graph.rules.rule_for(graph.node(name)), HasHeads)


def attention_calls(
    graph: GraphData, layer: LayerRef, calls: tuple[int, ...] | None = None
) -> list[str]:
    """The calls of attention layer `layer`, or of the one attention layer inside the
    block whose path is `layer`."""
    try:
        return graph.find_calls(layer, calls)
    except LayerNotFoundError:
        if not isinstance(layer, str):
            raise
        inside = [n for n in graph.find_within(layer) if _has_heads(graph, n)]
        if not inside:
            raise
    layers = sorted({graph.node(n).layer for n in inside})
    if len(layers) > 1:
        raise SurgeryError(
            f"{layer!r} holds several attention layers ({', '.join(layers)}); name one of them"
        )
    return graph.find_calls(layers[0], calls)


@attrs.frozen
class DeleteHeads(Pass):
    """Delete `heads` (query heads) and `kv_heads` (key/value heads, with their query
    heads) of every call of attention layer `layer` (lifted indices; negative ones
    count from the end)."""

    name: ClassVar[str] = "delete-heads"
    layer: LayerRef
    heads: tuple[int, ...] = attrs.field(default=(), converter=as_tuple)
    calls: tuple[int, ...] | None = attrs.field(default=None, converter=optional_tuple)
    kv_heads: tuple[int, ...] = attrs.field(default=(), converter=as_tuple)

    def run(self, graph: GraphData) -> bool:
        changed = False
        for name in attention_calls(graph, self.layer, self.calls):
            node = graph.node(name)
            rule = graph.rules.rule_for(node)
            if not isinstance(rule, HasHeads):
                why = node.meta.get(OPAQUE_REASON)
                raise SurgeryError(
                    f"{node.describe()} has no attention heads kgraph knows; DeleteHeads works "
                    "on MultiHeadAttention, GroupedQueryAttention and keras-hub's attention "
                    f"layers{f' (kgraph could not see inside it: {why})' if why else ''}"
                )
            masks = rule.head_masks(node)
            query = delete_from(
                masks.query, check_channels(self.heads, masks.query.size, node, what="head")
            )
            kv = masks.kv
            if self.kv_heads:
                if kv is None:
                    raise SurgeryError(
                        f"{node.describe()} has no key/value head groups; delete heads with "
                        "heads=[...]"
                    )
                gone = check_channels(self.kv_heads, kv.size, node, what="key/value head")
                kv = delete_from(kv, gone)
                group = masks.group
                query = delete_from(query, [j * group + i for j in gone for i in range(group)])
            new = rule.delete_heads(node, query, kv)
            if new is not node:
                graph.set_node(new)
                changed = True
        return changed
