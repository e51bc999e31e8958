"""`DeleteChannels`: remove output channels (units, filters) of a layer.

The pass only shrinks the layer's own weights and output mask; `PropagateMasks`
(run by `Graph.apply`) then slices every weight downstream that read them.
Channel indices refer to the layer's channels in the lifted model, whatever
earlier passes did, so deleting a channel twice is a no-op.

Example:
    >>> pruned = kgraph.lift(model).apply(DeleteChannels("conv1", [0, 5])).lower()
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, ClassVar

import attrs

from kgraph.errors import ChannelError
from kgraph.graph_data import GraphData, LayerRef
from kgraph.groups import Blocker, alive, channel_width, group_channels, group_of
from kgraph.indices import check_indices
from kgraph.ir import Node, delete_from
from kgraph.passes.base import Pass, as_tuple, optional_tuple
from kgraph.passes.splice import split_calls
from kgraph.rules.base import not_owner_error

__all__ = ["DeleteChannels", "check_channels"]

log = logging.getLogger(__name__)


def check_channels(
    channels: Iterable[Any], count: int, node: Node, what: str = "channel"
) -> list[int]:
    """`channels` as non-negative indices below `count`; `ChannelError` if any is bad.

    Negative indices count from the end. Booleans, floats, duplicates and indices
    out of range are refused, naming the layer. `what` names the items ("head").
    """
    return check_indices(
        channels, count, where=f"{node.describe()}, which has {count} {what}s", what=what
    )


@attrs.frozen
class DeleteChannels(Pass):
    """Delete `channels` (lifted indices) of `layer`, and of every layer coupled to it.

    The channels are deleted from every owner of `layer`'s channel group (see
    `kgraph.channel_groups`): deleting channel 7 of one branch of an `Add` deletes
    it from the other branch too. `layer` may be any member of the group (a
    BatchNorm, the Add itself, ...).

    Args:
        layer: a layer name, a path in a nested model, or a Layer of the lifted model.
        channels: indices of the channels to delete; negative ones count from the end.
        calls: which calls of a shared layer (their `call_index`, kerassurgeon's
            `node_indices`); None for every call. The selected calls get a copy of
            the layer of their own, named `<layer>_delete_channels`.
        round_to: the group must keep a multiple of this many channels (e.g. the
            size of the mesh axis a layout map shards it on); `ChannelError` if the
            deletion would leave another count.
    """

    name: ClassVar[str] = "delete-channels"
    layer: LayerRef
    channels: tuple[int, ...] = attrs.field(converter=as_tuple)
    calls: tuple[int, ...] | None = attrs.field(default=None, converter=optional_tuple)
    round_to: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.round_to is not None and (
            isinstance(self.round_to, bool)
            or not isinstance(self.round_to, int)
            or self.round_to < 1
        ):
            raise ChannelError(
                f"round_to must be a positive integer or None, got {self.round_to!r}"
            )

    def run(self, graph: GraphData) -> bool:
        names = graph.find_calls(self.layer, self.calls)
        if self.calls is not None and self.channels:
            names = split_calls(graph, names, "delete_channels")
        changed = False
        for name in names:
            requested = graph.node(name)
            group = group_of(graph, name)
            if group is None:
                raise not_owner_error(requested)
            if group.blocker is Blocker.MODEL_INPUT:
                raise ChannelError(
                    f"the channels of {requested.describe()} cannot be deleted: {group.reason}"
                )
            indices = check_channels(self.channels, channel_width(graph, name), requested)
            in_group = group_channels(graph, name, indices)
            if self.round_to:
                self.check_rounding(graph, group, in_group, requested)
            per_owner = group.owner_channels(in_group)
            touched = [o for o in group.owners if self.delete_own(graph, o, per_owner[o])]
            if touched and Blocker.MODEL_OUTPUT in group.blockers:
                log.warning(
                    "deleting channels %s of %s changes the shape of the model outputs they "
                    "reach (%s)",
                    indices,
                    requested.describe(),
                    group.reason if group.blocker is Blocker.MODEL_OUTPUT else "a model output",
                )
            if touched:
                log.info(
                    "deleted channels %s of %s from its group: %s",
                    indices,
                    requested.describe(),
                    ", ".join(touched),
                )
            changed = changed or bool(touched)
        return changed

    def check_rounding(
        self, graph: GraphData, group: Any, channels: list[int], requested: Node
    ) -> None:
        """Refuse a deletion that leaves a group count not divisible by `round_to`."""
        kept = alive(graph, group)
        removed = int(kept[channels].sum())
        left = int(kept.sum()) - removed
        over = left % self.round_to
        if removed and over:
            raise ChannelError(
                f"deleting {removed} channels of {requested.describe()} leaves {left}, not a "
                f"multiple of round_to={self.round_to}; delete {over} more or "
                f"{self.round_to - over} fewer"
            )

    @staticmethod
    def delete_own(graph: GraphData, owner: str, indices: list[int]) -> bool:
        """Delete `indices` (its own lifted channels) of owner node `owner`; True if it changed."""
        if not indices:
            return False
        node = graph.node(owner)
        rule = graph.rules.rule_for(node)
        own = rule.owned_output(node)
        new = rule.delete_channels(node, delete_from(own.mask, indices))
        if new is node:
            return False
        graph.set_node(new)
        return True
