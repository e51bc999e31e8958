"""`DeleteGroupChannels`: delete channels of a channel group, in the group's coordinates.

`kgraph.channel_groups` numbers a group's channels once for all its owners (a
Concatenate may put owners side by side); this pass takes channels in those
coordinates and deletes each owner's share, as a pruning plan states them.

Example:
    >>> group = kgraph.channel_groups(graph)[0]
    >>> graph.apply(DeleteGroupChannels(group.owners[0], [0, 5]))
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from kgraph.errors import PruningError
from kgraph.graph_data import GraphData
from kgraph.groups import group_of
from kgraph.passes.base import Pass
from kgraph.passes.delete_channels import DeleteChannels

__all__ = ["DeleteGroupChannels"]


@attrs.frozen
class DeleteGroupChannels(Pass):
    """Delete `channels` (group coordinates) of the group node `member` belongs to."""

    name: ClassVar[str] = "delete-group-channels"
    member: str
    channels: tuple[int, ...] = attrs.field(converter=tuple)

    def run(self, graph: GraphData) -> bool:
        group = group_of(graph, self.member)
        if group is None:
            raise PruningError(f"{graph.node(self.member).describe()} is in no channel group")
        bad = [c for c in self.channels if not 0 <= c < group.channels]
        if bad:
            raise PruningError(
                f"channels {bad} are outside the group of {self.member!r}, which has "
                f"{group.channels} channels"
            )
        per_owner = group.owner_channels(self.channels)
        changed = [DeleteChannels.delete_own(graph, o, per_owner[o]) for o in group.owners]
        return any(changed)
