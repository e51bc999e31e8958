"""`DeleteHeads`: remove whole attention heads of a MultiHeadAttention layer.

The query, key and value projections lose the heads' columns (and biases), the
output projection loses their rows; `num_heads` shrinks. Head indices refer to
the lifted model, like channel indices, so deleting a head twice is a no-op.

Example:
    >>> smaller = kgraph.lift(model).apply(DeleteHeads("mha", [1, 5])).lower()
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from kgraph.errors import SurgeryError
from kgraph.graph_data import GraphData, LayerRef
from kgraph.ir import delete_from
from kgraph.passes.base import Pass, as_tuple, optional_tuple
from kgraph.passes.delete_channels import check_channels
from kgraph.rules.attention import MultiHeadAttentionRule, head_mask

__all__ = ["DeleteHeads"]


@attrs.frozen
class DeleteHeads(Pass):
    """Delete `heads` (lifted indices; negative count from the end) of every call of `layer`."""

    name: ClassVar[str] = "delete-heads"
    layer: LayerRef
    heads: tuple[int, ...] = attrs.field(converter=as_tuple)
    calls: tuple[int, ...] | None = attrs.field(default=None, converter=optional_tuple)

    def run(self, graph: GraphData) -> bool:
        changed = False
        for name in graph.find_calls(self.layer, self.calls):
            node = graph.node(name)
            rule = graph.rules.rule_for(node)
            if not isinstance(rule, MultiHeadAttentionRule):
                raise SurgeryError(
                    f"{node.describe()} has no attention heads; DeleteHeads works on "
                    "MultiHeadAttention layers"
                )
            mask = head_mask(node)
            indices = check_channels(self.heads, mask.size, node, what="head")
            new = rule.delete_heads(node, delete_from(mask, indices))
            if new is not node:
                graph.set_node(new)
                changed = True
        return changed
