"""Channel groups: the layer outputs whose channels are coupled and must go together.

Channels are coupled when an element-wise merge (Add, Multiply, ...), an attention's
query and key, or an RNN's units and its initial state tie them position by
position; layers that keep their input's channels (BatchNorm, activations,
pooling, depthwise convolutions, ...) carry them along. When a merge's input is a
Concatenate (InceptionResNet and NASNet start residual streams that way), each
concatenated part is coupled with its slice of the other inputs.

On the IR this is a union-find over channel spaces with offsets: every tensor's
channels live in a space, rules report the couplings, and each connected set of
spaces is one `ChannelGroup`, whose coordinates are those of its widest space.

`DeleteChannels` on any member of a group deletes the same channels from every
member, which is what residual networks need.

Example:
    >>> groups = kgraph.channel_groups(keras.applications.ResNet50(weights=None))
    >>> group = next(g for g in groups if "conv2_block1_0_conv" in g.members)
    >>> group.owners[:2], group.channels
    (('conv2_block1_0_conv', 'conv2_block1_3_conv'), 256)
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from kgraph.graph_data import GraphData
from kgraph.ir import ChannelSpace, ConcatSpace, MergeSpace, Tensor
from kgraph.rules.base import OpaqueRule
from kgraph.rules.capabilities import HasHeads, couplings, restriction

__all__ = [
    "Blocker",
    "ChannelGroup",
    "channel_groups",
    "channel_width",
    "group_channels",
    "group_of",
]


class Blocker(enum.Enum):
    """Why a channel group is not prunable (`ChannelGroup.blocker`)."""

    MODEL_INPUT = "model input"  # the channels come from a model input
    MODEL_OUTPUT = "model output"  # they reach a model output
    NO_RULE = "no rule"  # they reach a layer kgraph has no rule for
    RESTRICTED = "restricted"  # a rule restricts them (e.g. a grouped convolution)
    COUPLING = "coupling"  # coupled with re-arranged or partly overlapping channels
    SINGLE_CHANNEL = "single channel"  # one channel cannot lose any


@attrs.frozen
class ChannelGroup:
    """Layer outputs whose channels are coupled.

    Attributes:
        members: nodes whose output carries these channels (or a slice of them), in
            topological order: the layer name, or `layer@i` for one call of a shared layer.
        owners: the members that create them (Dense, Conv, ...): deleting channels
            there shrinks every member.
        channels: how many channels the group had when lifted.
        kept: how many of them are still there.
        prunable: False when the channels reach a model output or come from a model
            input, or a layer on their way cannot follow a deletion.
        reason: why the group is not prunable, for people ("" when it is).
        blocker: the kind of that reason (None when prunable).
        blockers: the kinds of every reason (a group reaching a model output is also
            blocked by a layer without a rule, say).
        hidden: the channels run through attention layers, which carry them from their
            query to their output: a transformer's hidden size (residual stream).
            Deleting them is not function-preserving (norms and attention see fewer
            features), so `kgraph.prune` leaves them alone unless asked (`hidden=True`).
        offsets, widths: where each owner's channels start in the group's coordinates
            and how many it has (offset 0 and the group's width, unless a
            Concatenate put owners side by side before a merge).
    """

    members: tuple[str, ...]
    owners: tuple[str, ...]
    channels: int
    kept: int
    prunable: bool
    reason: str = ""
    blocker: Blocker | None = None
    blockers: frozenset[Blocker] = frozenset()
    hidden: bool = False
    offsets: tuple[int, ...] = ()
    widths: tuple[int, ...] = ()

    def owner_channels(self, channels: Sequence[int]) -> dict[str, list[int]]:
        """The group's `channels` as each owner's own channel indices."""
        return {
            owner: [c - offset for c in channels if offset <= c < offset + width]
            for owner, offset, width in zip(self.owners, self.offsets, self.widths)
        }


def _is_element(space: ChannelSpace | None) -> bool:
    """Spaces the union-find tracks: base spaces and merges of them."""
    return space is not None and space.element


class _Analysis:
    """Union-find over channel spaces with offsets, and the owners and blockers of each.

    `find(s)` gives `(root, offset)`: channel i of s is channel i + offset of root.
    """

    def __init__(self, graph: GraphData) -> None:
        self.graph = graph
        self.parent: dict[ChannelSpace, tuple[ChannelSpace, int]] = {}
        self.size: dict[ChannelSpace, int] = {}
        self.reasons: dict[ChannelSpace, tuple[Blocker, str]] = {}  # why not prunable
        self.hidden: set[ChannelSpace] = set()  # spaces attention layers carry
        self.first_call: dict[str, tuple[Any, Tensor | None]] = {}  # layer -> (node, own)
        self.owned: dict[str, ChannelSpace] = {}  # owner node -> its space
        self.order = graph.topological_order()
        for name in self.order:
            self._visit(graph.node(name))
        self.groups = self._groups()
        self.by_node = {name: group for _, group in self.groups for name in group.members}

    def position(self, name: str) -> tuple[int, int]:
        """(offset in its group, width) of the channels of node `name`."""
        space = self.owned.get(name, self.graph.node(name).outputs[0].space)
        return self.find(space)[1], self.size[space]

    # -- union-find with offsets ------------------------------------------------------

    def find(self, space: ChannelSpace) -> tuple[ChannelSpace, int]:
        parent, offset = self.parent.setdefault(space, (space, 0))
        if parent == space:
            return space, 0
        root, more = self.find(parent)
        self.parent[space] = (root, offset + more)
        return root, offset + more

    def union(self, a: ChannelSpace, b: ChannelSpace, delta: int, where: str) -> None:
        """Couple channel i of `a` with channel i + delta of `b`."""
        (ra, oa), (rb, ob) = self.find(a), self.find(b)
        shift = delta + ob - oa  # ra[i] is rb[i + shift]
        if ra == rb:
            if shift != 0:
                self._block(
                    a, Blocker.COUPLING, f"{where} couples them with other channels of their group"
                )
            return
        if shift >= 0 and self.size[ra] + shift <= self.size[rb]:
            self.parent[ra] = (rb, shift)
        elif shift <= 0 and self.size[rb] - shift <= self.size[ra]:
            self.parent[rb] = (ra, -shift)
        else:
            why = f"{where} couples them with channels that overlap them only in part"
            self._block(a, Blocker.COUPLING, why)
            self._block(b, Blocker.COUPLING, why)

    def _block(self, space: ChannelSpace | None, blocker: Blocker, reason: str) -> None:
        for base in () if space is None else space.bases():
            self.reasons.setdefault(base, (blocker, reason))

    # -- reading the graph ------------------------------------------------------------

    def _segments(self, space: ChannelSpace | None) -> list[tuple[ChannelSpace, int]] | None:
        """`space` as consecutive (element space, width) pieces; None if re-arranged."""
        if _is_element(space):
            return [(space, self.size[space])] if space in self.size else None
        if isinstance(space, ConcatSpace):
            pieces: list[tuple[ChannelSpace, int]] = []
            for part, width in space.pieces():
                more = self._segments(part)
                if more is None and _is_element(part) and part not in self.size:
                    self.size[part] = width  # a part the Concatenate dropped: no node has it
                    more = [(part, width)]
                if more is None:
                    return None
                pieces += more
            return pieces
        return None  # flattened, heads, ...

    def _couple(self, tensors: list[Tensor], where: str) -> None:
        layouts = [self._segments(t.space) for t in tensors]
        if any(layout is None for layout in layouts):
            for t in tensors:
                self._block(
                    t.space, Blocker.COUPLING, f"{where} couples them with re-arranged channels"
                )
            return
        first = layouts[0]
        for other in layouts[1:]:
            self._align(first, other, where)

    def _align(self, a: list, b: list, where: str) -> None:
        """Couple two equally wide piece lists position by position."""
        starts_a, starts_b = np.cumsum([0] + [w for _, w in a]), np.cumsum([0] + [w for _, w in b])
        for i, (sa, wa) in enumerate(a):
            for j, (sb, wb) in enumerate(b):
                lo, hi = max(starts_a[i], starts_b[j]), min(starts_a[i] + wa, starts_b[j] + wb)
                if lo < hi:  # sa[k] is sb[k + starts_a[i] - starts_b[j]] on the overlap
                    self.union(sa, sb, int(starts_a[i] - starts_b[j]), where)

    def _visit(self, node: Any) -> None:
        for tensor in node.outputs:
            if tensor.mask is None or not _is_element(tensor.space):
                continue
            self.size[tensor.space] = tensor.mask.size
            self.find(tensor.space)
            if isinstance(tensor.space, MergeSpace):  # a merge's output is its inputs' channels
                for source in tensor.space.sources:
                    if self.size.get(source) == tensor.mask.size:
                        self.union(tensor.space, source, 0, node.describe())
        if node.kind == "input":
            self._block(
                node.outputs[0].space,
                Blocker.MODEL_INPUT,
                f"they are the channels of model input {node.name!r}",
            )
            return
        if node.kind == "output":
            self._block(
                node.inputs[0].space,
                Blocker.MODEL_OUTPUT,
                f"they reach {self.graph.describe(node.name)}",
            )
            return
        rule = self.graph.rules.rule_for(node)
        if isinstance(rule, HasHeads) and node.outputs and node.outputs[0].mask is not None:
            self.hidden.update(node.outputs[0].space.bases())
        if isinstance(rule, OpaqueRule):
            for tensor in node.inputs:
                self._block(
                    tensor.space,
                    Blocker.NO_RULE,
                    f"they reach {node.describe()}, which has no rule",
                )
        for coupled in couplings(rule, node, node.inputs):
            self._couple(coupled, node.describe())
        own = rule.owned_output(node)
        if own is not None:  # (may be a view of several outputs, e.g. Bidirectional's)
            self.size.setdefault(own.space, own.mask.size)
            self.find(own.space)
            self.owned[node.name] = own.space
        restricted = restriction(rule, node)
        if restricted:
            for tensor in node.inputs[:1]:
                self._block(tensor.space, Blocker.RESTRICTED, restricted)
            if own is not None:
                self._block(own.space, Blocker.RESTRICTED, restricted)
        if node.weight_names:
            self._share(node, own)

    def _share(self, node: Any, own: Tensor | None) -> None:
        """The calls of one layer with weights share them: each call's own channels and
        the channels its first input reads must be deleted alike in every call."""
        first = self.first_call.setdefault(node.layer, (node, own))
        if first[0] is node:
            return
        where = f"shared layer {node.layer!r}"
        first_own = first[1]
        if own is not None and first_own is not None and own.mask.size == first_own.mask.size:
            self.union(own.space, first_own.space, 0, where)
        a = first[0].inputs[0] if first[0].inputs else None
        b = node.inputs[0] if node.inputs else None
        if (
            a is not None
            and b is not None
            and a.mask is not None
            and b.mask is not None
            and _is_element(a.space)
            and _is_element(b.space)
            and a.axis == b.axis
            and a.mask.size == b.mask.size
        ):
            self.union(b.space, a.space, 0, where)

    def _groups(self) -> list[tuple[ChannelSpace, ChannelGroup]]:
        spaces_of: dict[ChannelSpace, list[ChannelSpace]] = defaultdict(list)
        for space in list(self.parent):
            spaces_of[self.find(space)[0]].append(space)
        members: dict[ChannelSpace, list[str]] = defaultdict(list)
        owners: dict[ChannelSpace, list[tuple[str, int, int]]] = defaultdict(list)
        kept: dict[ChannelSpace, int] = {}
        for name in self.order:
            node = self.graph.node(name)
            if name in self.owned:
                root, offset = self.find(self.owned[name])
                owners[root].append((name, offset, self.size[self.owned[name]]))
            if node.kind not in ("layer", "op") or not node.outputs:
                continue
            out = node.outputs[0]
            if out.mask is not None and _is_element(out.space):
                root, _ = self.find(out.space)
                members[root].append(name)
                if out.mask.size == self.size[root]:
                    kept.setdefault(root, int(out.mask.sum()))
        groups = []
        for root, found in owners.items():
            reasons = [self.reasons[s] for s in spaces_of[root] if s in self.reasons]
            channels = self.size[root]
            if not reasons and channels < 2:
                reasons.append((Blocker.SINGLE_CHANNEL, "a single channel cannot lose any"))
            names, offsets, widths = zip(*found)
            group = ChannelGroup(
                members=tuple(dict.fromkeys([*members[root], *names])),
                owners=names,
                channels=channels,
                kept=kept.get(root, channels),
                prunable=not reasons,
                reason=reasons[0][1] if reasons else "",
                blocker=reasons[0][0] if reasons else None,
                blockers=frozenset(kind for kind, _ in reasons),
                hidden=any(s in self.hidden for s in spaces_of[root]),
                offsets=offsets,
                widths=widths,
            )
            groups.append((root, group))
        order = {name: i for i, name in enumerate(self.order)}
        groups.sort(key=lambda item: order[item[1].owners[0]])
        return groups


def analysis(graph: GraphData) -> _Analysis:
    """The (cached) coupling analysis of `graph`."""
    return graph.cached("channel-groups", lambda: _Analysis(graph))


def channel_groups(graph: GraphData) -> list[ChannelGroup]:
    """Every group of coupled channels that some layer owns, in topological order.

    (`kgraph.channel_groups` also takes a Keras model.)

    Example:
        >>> for group in channel_groups(graph):
        ...     print(group.owners, group.channels, group.prunable or group.reason)
    """
    return [group for _, group in analysis(graph).groups]


def group_of(graph: GraphData, name: str) -> ChannelGroup | None:
    """The group whose members include node `name`, if any."""
    return analysis(graph).by_node.get(name)


def group_channels(graph: GraphData, name: str, channels: Sequence[int]) -> list[int]:
    """Channels of node `name` (its own indices) in its group's coordinates."""
    offset, _ = analysis(graph).position(name)
    return [c + offset for c in channels]


def alive(graph: GraphData, group: ChannelGroup) -> np.ndarray:
    """Which lifted channels of `group` are still there (kept by some owner)."""
    kept = np.zeros(group.channels, dtype=bool)
    for owner in group.owners:
        offset, width = analysis(graph).position(owner)
        node = graph.node(owner)
        kept[offset : offset + width] |= graph.rules.rule_for(node).owned_output(node).mask
    return kept


def channel_width(graph: GraphData, name: str) -> int:
    """How many lifted channels node `name` has in its group."""
    return analysis(graph).position(name)[1]
