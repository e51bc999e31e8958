"""The interactive page: a whole model at real scale, in one self-contained HTML file.

The page shows the graph laid out in layers (computed here, in Python), branches side
by side and skip connections routed in lanes beside the boxes; repeated blocks
(`conv2_block1_*`, `transformer_layer_0/...`, nested models) collapse into one box.
It pans and zooms, finds a layer by name, shows a node's details on a click, colours
every node by the fraction of its channels kept, and lists every layer in a table
sortable by parameters, FLOPs and fraction kept. With `compare=` (the graph before
pruning) it shows what changed, layer by layer, matched by name.

The file loads nothing from the network: its script and style are in it.

Example:
    >>> graph = kgraph.lift(model)
    >>> pruned = kgraph.pruning.prune_graph(graph, 0.5)
    >>> write_page(pruned, "pruned.html", compare=graph)   # open it in a browser
    >>> html = to_page(pruned)                              # the same page as text
"""

from __future__ import annotations

import heapq
import html
import itertools
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from kgraph.errors import KGraphError
from kgraph.graph_data import GraphData
from kgraph.ir import Node, Tensor
from kgraph.printing import format_graph
from kgraph.stats import human, stats
from kgraph.view import NodeView, node_views

__all__ = [
    "Box",
    "LayerRow",
    "PageError",
    "PageLayout",
    "Route",
    "blocks",
    "kept_colour",
    "layer_rows",
    "layout",
    "to_page",
    "write_page",
]


class PageError(KGraphError):
    """The interactive page cannot be made or written (see the message for what to do)."""


# ---------------------------------------------------------------------- blocks

MIN_BLOCK = 3  # nodes; a smaller group is not worth a box
MAX_BLOCK = 60  # nodes; a bigger path group is split by its next path part or names


def _address(node: Node) -> list[str]:
    """Where a node sits: its path's parts (`transformer_layer_0/add` -> 2 parts)."""
    return (node.path or node.name).split("/")


def _call_suffix(node: Node) -> str:
    """`@1` for the second call of a shared (nested) layer, so each call is its own block."""
    return f"@{node.call_index}" if "@" in node.name else ""


def _prefix_keys(names: dict[str, str], depth: int) -> dict[str, str]:
    """Group `node -> last address part` by its first `depth` `_`-separated words.

    A name keeps at least one word of its own after the prefix, and the rest may not
    be a bare number (`dense_3` is Keras' automatic name, not a member of `dense`).
    """
    keys = {}
    for node, text in names.items():
        words = text.split("_")
        if len(words) <= depth:
            continue
        rest = words[depth:]
        if all(word.isdigit() for word in rest):
            continue
        keys[node] = "_".join(words[:depth])
    return keys


def _name_groups(names: dict[str, str]) -> dict[str, str]:
    """The name-prefix grouping (1, 2 or 3 words) that puts most nodes in blocks of a
    useful size (`conv2_block1` for ResNet, `block2a` for EfficientNet)."""
    best: dict[str, str] = {}
    best_covered = 0
    for depth in (1, 2, 3):
        keys = _prefix_keys(names, depth)
        members: dict[str, int] = defaultdict(int)
        for key in keys.values():
            members[key] += 1
        good = {k for k, count in members.items() if MIN_BLOCK <= count <= 40}
        covered = sum(members[k] for k in good)
        if covered > best_covered:
            best_covered = covered
            best = {node: key for node, key in keys.items() if key in good}
    return best


def _group(nodes: Sequence[Node], level: int, prefix: str) -> dict[str, str]:
    """Block keys for `nodes`, reading their addresses from part `level` on."""
    by_path: dict[str, list[Node]] = defaultdict(list)
    loose: dict[str, str] = {}
    for node in nodes:
        parts = _address(node)[level:]
        if len(parts) >= 2:
            by_path[parts[0] + _call_suffix(node)].append(node)
        elif parts:
            loose[node.name] = parts[-1].split("@")[0]
    keys: dict[str, str] = {}
    for key, members in by_path.items():
        if len(members) > MAX_BLOCK:
            inner = _group(members, level + 1, f"{prefix}{key}/")
            if len({k for k in inner.values()}) >= 2:
                keys.update(inner)
                continue
        for node in members:
            keys[node.name] = prefix + key
    for node, key in _name_groups(loose).items():
        keys[node] = prefix + key
    return keys


def _descendants(graph: GraphData, start: Iterable[str], stop: int, order: dict[str, int]) -> set:
    """Nodes reachable from `start`, not following nodes after topological index `stop`."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen or order[name] > stop:
            continue
        seen.add(name)
        todo.extend(dst for dst, _, _ in graph.users(name))
    return seen


def blocks(graph: GraphData) -> dict[str, tuple[str, ...]]:
    """The collapsible blocks of `graph`: block key -> its nodes, in topological order.

    Nodes are grouped by the first part of their path (`transformer_layer_0/...`, a
    nested model; each call of a shared one apart), a path group of more than 60 nodes
    by its next part, and the other layers by a common name prefix
    (`conv2_block1_0_conv` -> `conv2_block1`; the prefix length that puts most layers
    in blocks of 3-40 wins). Model inputs and outputs are in no block. A group that
    the rest of the graph leaves and re-enters (not convex) is no block, so collapsing
    one never hides a path that comes back.

    Example:
        >>> list(blocks(kgraph.lift(keras.applications.ResNet50(weights=None))))[:2]
        ['conv2_block1', 'conv2_block2']
    """
    nodes = [n for n in graph.nodes() if n.kind in ("layer", "op")]
    keys = _group(nodes, 0, "")
    members: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        if node.name in keys:
            members[keys[node.name]].append(node.name)
    order = {name: i for i, name in enumerate(graph.topological_order())}
    found: dict[str, tuple[str, ...]] = {}
    for key, names in members.items():
        if len(names) < MIN_BLOCK:
            continue
        inside = set(names)
        leaving = {d for n in names for d, _, _ in graph.users(n) if d not in inside}
        reached = _descendants(graph, leaving, max(order[n] for n in names), order)
        if not reached & inside:
            found[key] = tuple(names)
    return _acyclic(graph, found)


def _acyclic(graph: GraphData, found: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Drop blocks until contracting every block into one node leaves the graph acyclic."""
    import networkx as nx

    while True:
        owner = {name: key for key, names in found.items() for name in names}
        condensed = nx.DiGraph()
        for src, dst in graph.nx.edges():
            a, b = owner.get(src, src), owner.get(dst, dst)
            if a != b:
                condensed.add_edge(a, b)
        try:
            cycle = nx.find_cycle(condensed)
        except nx.NetworkXNoCycle:
            return found
        in_cycle = [k for edge in cycle for k in edge[:2] if k in found]
        del found[max(in_cycle, key=lambda k: len(found[k]))]


# ---------------------------------------------------------------------- numbers per layer


def _channels(tensors: Iterable[Tensor]) -> tuple[int, int] | None:
    """(kept, lifted) channels summed over the tensors whose channels are tracked."""
    kept = lifted = 0
    tracked = False
    for tensor in tensors:
        if tensor.mask is None:
            continue
        tracked = True
        kept += int(tensor.mask.sum())
        lifted += int(tensor.mask.size)
    return (kept, lifted) if tracked else None


def _current(tensors: Iterable[Tensor]) -> int | None:
    counts = [t.channels for t in tensors if t.axis is not None and t.channels is not None]
    return sum(counts) if counts else None


def _inner_kept(node: Node, old: Node | None) -> float | None:
    """The fraction kept of a node's inner units (its boolean masks in `meta`, e.g. the
    heads `DeleteHeads` keeps; or, compared with `old`, its `num_heads`)."""
    found = [
        float(value.sum()) / value.size
        for value in node.meta.values()
        if isinstance(value, np.ndarray) and value.dtype == bool and value.size
    ]
    heads, heads_before = node.config.get("num_heads"), old.config.get("num_heads") if old else None
    if isinstance(heads, int) and isinstance(heads_before, int) and heads_before > heads:
        found.append(heads / heads_before)
    return min(found) if found else None


def _shown_tensors(graph: GraphData, node: Node) -> list[Tensor]:
    """What a node's kept channels are read from: its outputs (a model output: what it returns)."""
    return graph.input_tensors(node.name) if node.kind == "output" else list(node.outputs)


@attrs.frozen
class LayerRow:
    """One row of the page's table: a layer call and what pruning did to it.

    Without a comparison, `channels_before` is the channel count when lifted (masks
    are relative to the lifted model) and `params_before`/`flops_before` are None.
    With `compare=`, the `*_before` numbers are those of the node of the same name
    in the compared graph; a layer only it has is a row with status "removed".

    Attributes:
        name, class_name: the node and its class (`Output` for a model output).
        block: the key of the block it is drawn in ("" for none).
        status: "unchanged", "changed", "new" or "removed".
        reasons: why, as the dumps say it (`output keeps 32/64 channels`, ...).
        channels, channels_before: output channels now and before (None: untracked).
        params, flops: now (0 for a removed layer); `params_before`, `flops_before`.
        inner_kept: the fraction kept of the layer's own units that are not output
            channels (the attention heads `DeleteHeads` keeps), None when none are.
    """

    name: str
    class_name: str
    block: str
    status: str
    reasons: tuple[str, ...]
    channels: int | None
    channels_before: int | None
    params: int
    flops: int
    params_before: int | None = None
    flops_before: int | None = None
    inner_kept: float | None = None

    @property
    def kept(self) -> float | None:
        """The fraction of channels kept: of the output channels, or of the inner units
        (heads) when fewer of those are kept; None when unknown, 0.0 when removed."""
        if self.status == "removed":
            return 0.0
        found = [] if self.inner_kept is None else [self.inner_kept]
        if self.channels is not None and self.channels_before:
            found.append(self.channels / self.channels_before)
        return min(found) if found else None


def layer_rows(graph: GraphData, compare: GraphData | None = None) -> list[LayerRow]:
    """Every node of `graph` as a table row (topological order), then, with `compare`,
    the layers only `compare` has (status "removed"), in its order.

    Example:
        >>> rows = {r.name: r for r in layer_rows(pruned, compare=graph)}
        >>> rows["conv1"].kept, rows["conv1"].params_before, rows["conv1"].params
        (0.5, 896, 448)
    """
    return _rows(graph, compare, node_views(graph, compare), blocks(graph))[0]


def _rows(
    graph: GraphData,
    compare: GraphData | None,
    views: list[NodeView],
    found: dict[str, tuple[str, ...]],
) -> tuple[list[LayerRow], dict[str, str]]:
    owner = {name: key for key, names in found.items() for name in names}
    now = {s.name: s for s in stats(graph).layers}
    before = {s.name: s for s in stats(compare).layers} if compare is not None else {}
    rows = []
    for view in views:
        node = view.node
        shown = _shown_tensors(graph, node)
        old = compare.node(node.name) if compare is not None and node.name in compare else None
        if compare is None:
            counted = _channels(shown)
            channels, channels_before = counted if counted else (None, None)
        else:
            channels = _current(shown)
            channels_before = None if old is None else _current(_shown_tensors(compare, old))
        layer = now.get(node.name)
        old_layer = before.get(node.name)
        status, reasons = view.status, view.reasons
        if channels is not None and channels_before and channels != channels_before:
            if not any(reason.startswith("output") for reason in reasons):
                reasons = (f"output keeps {channels}/{channels_before} channels", *reasons)
            status = "changed" if status == "unchanged" else status
        rows.append(
            LayerRow(
                name=node.name,
                class_name=node.class_name,
                block=owner.get(node.name, ""),
                status=status,
                reasons=reasons,
                inner_kept=_inner_kept(node, old),
                channels=channels,
                channels_before=channels_before,
                params=layer.params if layer else 0,
                flops=layer.flops if layer else 0,
                params_before=None
                if compare is None
                else (old_layer.params if old_layer else 0 if node.name in compare else None),
                flops_before=None
                if compare is None
                else (old_layer.flops if old_layer else 0 if node.name in compare else None),
            )
        )
    if compare is not None:
        for node in compare.nodes():
            if node.name in graph:
                continue
            old_layer = before.get(node.name)
            rows.append(
                LayerRow(
                    name=node.name,
                    class_name=node.class_name,
                    block="",
                    status="removed",
                    reasons=(f"not in {graph.name!r}",),
                    channels=None,
                    channels_before=_current(_shown_tensors(compare, node)),
                    params=0,
                    flops=0,
                    params_before=old_layer.params if old_layer else 0,
                    flops_before=old_layer.flops if old_layer else 0,
                )
            )
    return rows, owner


# ---------------------------------------------------------------------- colour scale

# Fraction of channels kept -> fill: neutral when all are kept, strong at half,
# dark when (almost) none are. A sequential orange scale (ColorBrewer "Oranges").
SCALE = ((1.0, "#ffffff"), (0.85, "#fee6ce"), (0.5, "#fd8d3c"), (0.25, "#d94801"), (0.0, "#7f2704"))
NO_DATA = "#f3f3f3"  # a node whose channels are not tracked


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def kept_colour(fraction: float | None) -> str:
    """The fill for a node that keeps `fraction` of its channels (None: not tracked).

    Continuous: white at 1.0, light orange at 0.85, strong orange at 0.5, dark
    brown at 0.0, interpolated in between.

    Example:
        >>> kept_colour(1.0), kept_colour(0.5), kept_colour(None)
        ('#ffffff', '#fd8d3c', '#f3f3f3')
    """
    if fraction is None or not math.isfinite(fraction):
        return NO_DATA
    fraction = min(max(fraction, 0.0), 1.0)
    for (high, top), (low, bottom) in itertools.pairwise(SCALE):
        if low <= fraction <= high:
            t = (fraction - low) / (high - low) if high > low else 1.0
            mixed = [round(b + (a - b) * t) for a, b in zip(_rgb(top), _rgb(bottom))]
            return "#" + "".join(f"{v:02x}" for v in mixed)
    return NO_DATA


def _ink(fill: str) -> str:
    """Text colour readable on `fill`."""
    r, g, b = _rgb(fill)
    return "#ffffff" if 0.299 * r + 0.587 * g + 0.114 * b < 140 else "#212121"


# ---------------------------------------------------------------------- layout

CHAR = 6.6  # px per character of the 11 px monospace font
LINE = 14  # px per text line
PAD_X, PAD_Y = 8, 6  # inside a node's box
GAP_X = 24  # between boxes side by side
GAP_Y = 22  # the least space between two rows
LEVEL = 6  # more space per extra horizontal edge segment in a gap
LANE_GAP = 14  # from the boxes to a lane beside them
LANE_STEP = 8  # between two lanes side by side
FRAME_PAD = 12  # inside an open block's frame
HEADER = 20  # the open block's title band
NAME_CHARS = 40  # longer names and labels are cut with an ellipsis
PORT_STEP = 10  # the least space between two ports on a box or a block's frame
PORT_MARGIN = 10  # from a port to the corner of its box
TOGGLE = 14  # room for the ▸ of a closed block


@attrs.frozen
class Box:
    """A rectangle: left, top, width, height (px)."""

    x: float
    y: float
    w: float
    h: float

    def inside(self, px: float, py: float, margin: float = 0.0) -> bool:
        """True when the point lies strictly inside the box shrunk by `margin`."""
        return (
            self.x + margin < px < self.x + self.w - margin
            and self.y + margin < py < self.y + self.h - margin
        )

    def crossed_by(self, a: tuple[float, float], b: tuple[float, float], margin: float) -> bool:
        """True when the axis-parallel segment a-b passes through the box shrunk by `margin`."""
        (x1, y1), (x2, y2) = a, b
        left, right = self.x + margin, self.x + self.w - margin
        top, bottom = self.y + margin, self.y + self.h - margin
        if x1 == x2:
            return left < x1 < right and min(y1, y2) < bottom and max(y1, y2) > top
        if y1 == y2:
            return top < y1 < bottom and min(x1, x2) < right and max(x1, x2) > left
        return any(self.inside(x1 + (x2 - x1) * t, y1 + (y2 - y1) * t, margin) for t in _STEPS)


_STEPS = tuple(i / 32 for i in range(33))


@attrs.frozen
class Route:
    """One drawn edge: from `src` to `dst` (node names, or `block:KEY` for an open
    block's frame), as an orthogonal polyline; `level` is "" for the top level or the
    key of the block it is drawn in."""

    src: str
    dst: str
    points: tuple[tuple[float, float], ...]
    level: str = ""


@attrs.frozen
class PageLayout:
    """Where everything is drawn with every block open (absolute px).

    `boxes`: node name -> its box; `frames`: block key -> its frame; `routes`: the
    edges. The page starts from this and moves the top level when blocks close.
    """

    boxes: dict[str, Box]
    frames: dict[str, Box]
    routes: tuple[Route, ...]
    width: float
    height: float


def _cut(text: str, limit: int = NAME_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(node: Node, block: str) -> str:
    """A node's name inside its block: without the block's prefix (`conv2_block1_0_conv`
    in block `conv2_block1` -> `0_conv`); the full name is its tooltip."""
    if not block:
        return node.name
    base = block.split("@")[0]
    for text in (node.path, node.name):
        for sep in ("/", "_"):
            if text.startswith(base + sep) and len(text) > len(base) + 1:
                short = text[len(base) + 1 :]
                suffix = _call_suffix(node)
                return short if short.endswith(suffix) else short + suffix
    return node.name


def _node_lines(view: NodeView, row: LayerRow) -> list[str]:
    label = view.label
    if row.channels is not None and row.channels_before and row.channels < row.channels_before:
        label += f" · {row.channels}/{row.channels_before}"
    elif row.kept is not None and row.kept < 1:
        label += f" · {row.kept:.0%} kept"
    return [_cut(_short(view.node, row.block)), _cut(label)]


def _text_size(lines: Sequence[str], minimum: float = 84) -> tuple[float, float]:
    width = max(len(line) for line in lines) * CHAR + 2 * PAD_X
    return max(width, minimum), len(lines) * LINE + 2 * PAD_Y


@attrs.define
class _Edge:
    """An edge to route in one container: item `a` -> item `b` (-1: a port on the
    frame's top; `b` -1: a port on its bottom), port x at both ends, `key` naming the
    source port (edges with one key may share a lane)."""

    a: int
    sx: float
    b: int
    dx: float
    key: str
    src: str
    dst: str
    ra: int = 0
    rb: int = 0
    kind: str = "direct"  # "direct", "lane"
    lane: float = 0.0
    out_level: int = -1
    in_level: int = -1


@attrs.define
class _Container:
    """Items in rows (their sizes and x centres) and the routed edges between them."""

    rows: list[list[int]]
    x: list[float]
    w: list[float]
    h: list[float]
    row_of: list[int]


def _arrange(
    widths: Sequence[float],
    heights: Sequence[float],
    edges: set[tuple[int, int]],
    anchors: Sequence[tuple[float, float]] | None = None,
    entered: Iterable[int] = (),
) -> _Container:
    """A layered arrangement of items 0..n-1 (given in topological order) linked by
    `edges`: rows by longest path (sources pulled down next to their first consumer),
    order in a row by the producers' positions, x by the producers' x with the items
    on the longest path placed first. `anchors`: per item, where (relative to its
    centre) its main input enters and its main output leaves; these line up.
    `entered`: the items that read a block's main input (from above its frame, at
    x 0): they line up under it, and the rows above the first of them keep x 0 free.
    """
    entered = set(entered)
    anchor_in = [a[0] for a in anchors] if anchors else [0.0] * len(widths)
    anchor_out = [a[1] for a in anchors] if anchors else [0.0] * len(widths)
    n = len(widths)
    pred: list[list[int]] = [[] for _ in range(n)]
    succ: list[list[int]] = [[] for _ in range(n)]
    for a, b in sorted(edges):
        succ[a].append(b)
        pred[b].append(a)
    rank = [0] * n
    for i in range(n):
        rank[i] = max((rank[p] + 1 for p in pred[i]), default=0)
    for i in reversed(range(n)):
        if not pred[i] and succ[i]:
            rank[i] = min(rank[s] for s in succ[i]) - 1
    used = sorted(set(rank))
    compact = {r: k for k, r in enumerate(used)}
    rank = [compact[r] for r in rank]
    rows: list[list[int]] = [[] for _ in used]
    for i in range(n):
        rows[rank[i]].append(i)
    depth = [0] * n  # longest path to the item, and from it: the main chain is longest
    for i in range(n):
        depth[i] = max((depth[p] + 1 for p in pred[i]), default=0)
    height = [0] * n
    for i in reversed(range(n)):
        height[i] = max((height[s] + 1 for s in succ[i]), default=0)
    priority = [depth[i] + height[i] + 0.001 * (len(pred[i]) + len(succ[i])) for i in range(n)]
    position = [0.0] * n

    def sweep(row_list: Iterable[list[int]], neighbours: list[list[int]]) -> None:
        for row in row_list:
            keys = {
                i: sum(position[j] for j in neighbours[i]) / len(neighbours[i])
                if neighbours[i]
                else position[i]
                for i in row
            }
            row.sort(key=lambda i: keys[i])
            for index, i in enumerate(row):
                position[i] = index - (len(row) - 1) / 2

    sweep(rows, pred)
    sweep(reversed(rows), succ)
    sweep(rows, pred)
    x = [0.0] * n
    first_entered = min((rank[i] for i in entered), default=0)
    for attempt in range(2):
        for r, row in enumerate(rows):
            desired = []
            for i in row:
                if i in entered:
                    desired.append(-anchor_in[i])
                elif pred[i]:  # below its deepest producers: the main chain runs straight
                    deepest = max(depth[p] for p in pred[i])
                    main = [x[p] + anchor_out[p] for p in pred[i] if depth[p] == deepest]
                    desired.append(sum(main) / len(main) - anchor_in[i])
                elif succ[i] and attempt:
                    at = sum(x[s] + anchor_in[s] for s in succ[i]) / len(succ[i])
                    desired.append(at - anchor_out[i])
                else:
                    desired.append(0.0)
            placed = _place_row([widths[i] for i in row], desired, [priority[i] for i in row])
            if r < first_entered:  # keep the main input's way down free
                right = max(v + widths[i] / 2 for i, v in zip(row, placed)) + GAP_X / 2
                if right > 0:
                    placed = [v - right for v in placed]
            for i, value in zip(row, placed):
                x[i] = value
    return _Container(rows, x, list(widths), list(heights), rank)


def _place_row(widths: list[float], desired: list[float], priority: list[float]) -> list[float]:
    """x centres for a row in its order: the first item of highest priority where it
    wants to be, the others as near theirs as the spacing allows."""
    pivot = max(range(len(widths)), key=lambda i: priority[i])
    x = list(desired)
    for j in range(pivot + 1, len(x)):
        x[j] = max(desired[j], x[j - 1] + (widths[j - 1] + widths[j]) / 2 + GAP_X)
    for j in reversed(range(pivot)):
        x[j] = min(desired[j], x[j + 1] - (widths[j + 1] + widths[j]) / 2 - GAP_X)
    return x


def _extent(box: _Container, rows: range, side: int) -> float | None:
    """The rightmost right edge (side 1) or leftmost left edge (side -1) of `rows`."""
    edges = [
        box.x[i] + side * box.w[i] / 2 for r in rows if 0 <= r < len(box.rows) for i in box.rows[r]
    ]
    if not edges:
        return None
    return max(edges) if side > 0 else min(edges)


def _free(box: _Container, rows: range, px: float) -> bool:
    return all(
        abs(box.x[i] - px) >= box.w[i] / 2 + 6
        for r in rows
        if 0 <= r < len(box.rows)
        for i in box.rows[r]
    )


def _route(box: _Container, edges: list[_Edge], top: float) -> tuple[list[float], float, list]:
    """Route `edges` between the rows of `box`, whose first row's gap starts at `top`.

    Returns (row tops, bottom of the last gap, polylines). An edge to the next row
    turns once in the gap between; a longer one runs down at its source's or its
    target's x if no box is in the way, else in a lane beside the rows it passes,
    edges from one port sharing a lane. Each gap gets one height level per source
    port turning in it, so horizontal segments of different sources never overlap.
    """
    n = len(box.rows)
    lanes: dict[tuple[str, int], list[_Edge]] = defaultdict(list)
    for edge in edges:
        edge.ra = -1 if edge.a < 0 else box.row_of[edge.a]
        edge.rb = n if edge.b < 0 else box.row_of[edge.b]
        between = range(edge.ra + 1, edge.rb)
        if edge.rb == edge.ra + 1 or not between:
            edge.kind = "direct"
        elif _free(box, between, edge.sx):
            edge.kind, edge.lane = "lane", edge.sx
        elif _free(box, between, edge.dx):
            edge.kind, edge.lane = "lane", edge.dx
        else:
            right = _extent(box, between, 1)
            left = _extent(box, between, -1)
            cost_r = abs(right - edge.sx) + abs(right - edge.dx)
            cost_l = abs(left - edge.sx) + abs(left - edge.dx)
            lanes[(edge.key, 1 if cost_r <= cost_l else -1)].append(edge)
    placed: list[tuple[int, int, int, float]] = []  # side, first row, last row, x
    for (_, side), members in sorted(
        lanes.items(), key=lambda item: max(e.rb for e in item[1]) - item[1][0].ra
    ):
        first, last = members[0].ra, max(e.rb for e in members)
        x = _extent(box, range(first + 1, last), side) + side * LANE_GAP
        moved = True
        while moved:
            moved = False
            for other_side, a, b, other in placed:
                overlap = other_side == side and a < last and first < b
                if overlap and abs(other - x) < LANE_STEP:
                    x = other + side * LANE_STEP
                    moved = True
        placed.append((side, first, last, x))
        for edge in members:
            edge.kind, edge.lane = "lane", x
    levels: dict[int, list[str]] = defaultdict(list)  # gap -> source ports turning there

    def level(gap: int, key: str) -> int:
        if key not in levels[gap]:
            levels[gap].append(key)
        return levels[gap].index(key)

    for edge in edges:
        if edge.kind == "direct":
            if abs(edge.sx - edge.dx) > 0.5:
                edge.in_level = level(edge.rb, edge.key)
            continue
        if abs(edge.lane - edge.sx) > 0.5:
            edge.out_level = level(edge.ra + 1, edge.key)
        if abs(edge.lane - edge.dx) > 0.5:
            edge.in_level = level(edge.rb, f"{edge.key}|{edge.lane:.1f}")
    gaps = [max(GAP_Y, (len(levels[g]) + 1) * LEVEL) for g in range(n + 1)]
    row_top = []
    y = top
    for r in range(n):
        y += gaps[r]
        row_top.append(y)
        y += max(box.h[i] for i in box.rows[r])
    bottom = y + gaps[n]

    def gap_y(gap: int, index: int) -> float:
        start = top if gap == 0 else row_top[gap - 1] + max(box.h[i] for i in box.rows[gap - 1])
        return start + gaps[gap] * (index + 1) / (len(levels[gap]) + 1)

    lines = []
    for edge in edges:
        sy = 0.0 if edge.a < 0 else row_top[edge.ra] + box.h[edge.a]
        ty = bottom if edge.rb >= n else row_top[edge.rb]
        points = [(edge.sx, sy)]
        if edge.kind == "direct":
            if edge.in_level >= 0:
                y = gap_y(edge.rb, edge.in_level)
                points += [(edge.sx, y), (edge.dx, y)]
        else:
            if edge.out_level >= 0:
                y = gap_y(edge.ra + 1, edge.out_level)
                points += [(edge.sx, y), (edge.lane, y)]
            if edge.in_level >= 0:
                y = gap_y(edge.rb, edge.in_level)
                points += [(edge.lane, y), (edge.dx, y)]
        points.append((edge.dx, ty))
        lines.append(_simplify(points))
    return row_top, bottom, lines


def _simplify(points: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Drop repeated points and points in the middle of a straight run."""
    out: list[tuple[float, float]] = []
    for p in points:
        p = (round(p[0], 1), round(p[1], 1))
        if out and out[-1] == p:
            continue
        if len(out) >= 2:
            (ax, ay), (bx, by) = out[-2], out[-1]
            if (ax == bx == p[0]) or (ay == by == p[1]):
                out[-1] = p
                continue
        out.append(p)
    return tuple(out)


@attrs.define
class _Block:
    """An open block drawn on its own: node boxes and routes relative to its frame,
    and where edges enter (top) and leave (bottom) it, by source port."""

    key: str
    names: list[str]
    boxes: dict[str, Box]
    w: float
    h: float
    entry: dict[str, float]
    exit: dict[str, float]
    routes: list[Route]
    anchors: tuple[float, float] = (0.0, 0.0)  # main entry and exit, from the centre
    closed: tuple[float, float] = (0.0, 0.0)  # the collapsed box's size


def _port_key(src: str, slot: int) -> str:
    return f"{src}:{slot}"


def _spread(ports: dict[str, float], step: float = PORT_STEP) -> dict[str, float]:
    """Ports moved apart (in the order of their x) to at least `step` between them."""
    out: dict[str, float] = {}
    last = -math.inf
    for key, x in sorted(ports.items(), key=lambda item: item[1]):
        x = max(x, last + step)
        out[key] = x
        last = x
    return out


def _in_ports(x: float, w: float, sources: dict[str, float]) -> dict[str, float]:
    """Where each source's edge enters a box at centre `x`: below the source where the
    box's top edge reaches (so a chain runs straight), at least `PORT_STEP` apart, in the
    order of the sources' x."""
    low, high = x - w / 2 + PORT_MARGIN, x + w / 2 - PORT_MARGIN
    ordered = sorted(sources, key=lambda k: sources[k])
    ports = []
    for key in ordered:
        at = min(max(sources[key], low), high)
        ports.append(max(at, ports[-1] + PORT_STEP) if ports else at)
    overflow = ports[-1] - high if ports else 0.0
    if overflow > 0:  # pushed past the right end: move them all left, keeping the spacing
        ports = [max(p - overflow, low + i * PORT_STEP) for i, p in enumerate(ports)]
    return dict(zip(ordered, ports))


def _out_port(graph: GraphData, name: str, slot: int, x: float, w: float) -> float:
    count = len(graph.node(name).outputs)
    return x if count <= 1 else x - w / 2 + w * (slot + 1) / (count + 1)


def _edges(graph: GraphData) -> list[tuple[str, int, str]]:
    """(producer, output slot, consumer) of every edge, consumers in topological order."""
    return [
        (src, slot, name)
        for name in graph.topological_order()
        for src, slot in dict.fromkeys(graph.producers(name))
    ]


def _lay_block(
    graph: GraphData,
    key: str,
    names: Sequence[str],
    sizes: dict[str, tuple[float, float]],
    edges: list[tuple[str, int, str]],
) -> _Block:
    index = {name: i for i, name in enumerate(names)}
    inner = {(index[s], index[d]) for s, _, d in edges if s in index and d in index}
    readers: dict[str, set[int]] = defaultdict(set)  # entry port -> items reading it
    for src, slot, dst in edges:
        if src not in index and dst in index:
            readers[_port_key(src, slot)].add(index[dst])
    main = max(readers, key=lambda port: len(readers[port]), default=None)
    box = _arrange(
        [sizes[n][0] for n in names],
        [sizes[n][1] for n in names],
        inner,
        entered=readers[main] if main else (),
    )
    entry_at: dict[str, tuple[int, float, float]] = {}  # port -> (row, |x|, x)
    for src, slot, dst in edges:  # an entry port sits above its earliest consumer,
        if src not in index and dst in index:  # the one nearest the main chain
            port = _port_key(src, slot)
            d = index[dst]
            here = (box.row_of[d], abs(box.x[d]), box.x[d])
            entry_at[port] = min(entry_at.get(port, here), here)
    entry = _spread({port: x for port, (_, _, x) in entry_at.items()})
    out_x = {
        _port_key(s, slot): _out_port(graph, s, slot, box.x[index[s]], box.w[index[s]])
        for s, slot, d in edges
        if s in index
    }
    leaving: dict[str, int] = defaultdict(int)
    for s, slot, d in edges:
        if s in index and d not in index:
            leaving[_port_key(s, slot)] += 1
    exit_ports = _spread({port: out_x[port] for port in leaving})
    routed = _dedupe(
        _Edge(
            a=index.get(s, -1),
            sx=out_x[_port_key(s, slot)] if s in index else entry[_port_key(s, slot)],
            b=index.get(d, -1),
            dx=0.0,
            key=_port_key(s, slot) if s in index else "in " + _port_key(s, slot),
            src=s if s in index else f"block:{key}",
            dst=d if d in index else f"block:{key}",
        )
        for s, slot, d in edges
        if s in index or d in index
    )
    for edge in routed:
        if edge.b < 0:
            edge.dx = exit_ports[edge.key]
    _aim(routed, box)
    row_top, bottom, lines = _route(box, routed, HEADER)
    xs = [box.x[i] - box.w[i] / 2 for i in range(len(names))]
    xs += [box.x[i] + box.w[i] / 2 for i in range(len(names))]
    xs += [p[0] for line in lines for p in line]
    title_w = len(_block_title(key, len(names))) * CHAR + 2 * FRAME_PAD
    left = min(xs) - FRAME_PAD
    width = max(max(xs) + FRAME_PAD - left, title_w)

    def shift(point: tuple[float, float]) -> tuple[float, float]:
        return (round(point[0] - left, 1), point[1])

    boxes = {
        name: Box(
            round(box.x[i] - box.w[i] / 2 - left, 1),
            row_top[box.row_of[i]],
            box.w[i],
            box.h[i],
        )
        for i, name in enumerate(names)
    }
    routes = [
        Route(edge.src, edge.dst, tuple(shift(p) for p in line), key)
        for edge, line in zip(routed, lines)
    ]
    main_in = main
    main_out = max(exit_ports, key=lambda p: leaving[p], default=None)
    return _Block(
        key=key,
        names=list(names),
        boxes=boxes,
        w=round(width, 1),
        h=round(bottom, 1),
        entry={port: round(x - left, 1) for port, x in entry.items()},
        exit={port: round(x - left, 1) for port, x in exit_ports.items()},
        routes=routes,
        anchors=(
            0.0 if main_in is None else entry[main_in] - left - width / 2,
            0.0 if main_out is None else exit_ports[main_out] - left - width / 2,
        ),
    )


def _dedupe(edges: Iterable[_Edge]) -> list[_Edge]:
    seen: dict[tuple, _Edge] = {}
    for edge in edges:
        seen.setdefault((edge.a, edge.b, edge.key), edge)
    return list(seen.values())


def _aim(edges: list[_Edge], box: _Container) -> None:
    """Give each edge into an item its own port on the item's top edge."""
    sources: dict[int, dict[str, float]] = defaultdict(dict)
    for edge in edges:
        if edge.b >= 0:
            sources[edge.b][edge.key] = edge.sx
    for item, found in sources.items():
        ports = _in_ports(box.x[item], box.w[item], found)
        for edge in edges:
            if edge.b == item:
                edge.dx = ports[edge.key]


def _block_title(key: str, count: int) -> str:
    return f"{key} · {count} layers"


TOP_PAD = 16  # around the top level


@attrs.define
class _Scene:
    """Everything the page draws: per-node data, the blocks laid out on their own, the
    top level (loose nodes and blocks) arranged with every block open, and the layout."""

    graph: GraphData
    views: list[NodeView]
    rows: list[LayerRow]
    lines: dict[str, list[str]]
    sizes: dict[str, tuple[float, float]]
    blocks: dict[str, _Block]
    items: list[str]  # top-level items: node names and `block:KEY`
    top: _Container
    top_edges: list[dict[str, Any]]
    layout: PageLayout


def _condensed_order(graph: GraphData, owner: dict[str, str]) -> tuple[list[str], set]:
    """Top-level items in a topological order (ties: first appearance) and their edges."""
    order = graph.topological_order()
    item_of = {n: f"block:{owner[n]}" if n in owner else n for n in order}
    first: dict[str, int] = {}
    for i, name in enumerate(order):
        first.setdefault(item_of[name], i)
    links = {(item_of[s], item_of[d]) for s, d in graph.nx.edges() if item_of[s] != item_of[d]}
    indegree = dict.fromkeys(first, 0)
    after: dict[str, list[str]] = defaultdict(list)
    for a, b in links:
        indegree[b] += 1
        after[a].append(b)
    ready = [(first[i], i) for i, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    items = []
    while ready:
        _, item = heapq.heappop(ready)
        items.append(item)
        for b in after[item]:
            indegree[b] -= 1
            if indegree[b] == 0:
                heapq.heappush(ready, (first[b], b))
    return items, links


def _scene(graph: GraphData, compare: GraphData | None) -> _Scene:
    views = node_views(graph, compare)
    found = blocks(graph)
    rows, owner = _rows(graph, compare, views, found)
    by_name = {row.name: row for row in rows}
    lines = {view.name: _node_lines(view, by_name[view.name]) for view in views}
    sizes = {name: _text_size(text) for name, text in lines.items()}
    edges = _edges(graph)
    touching: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    for edge in edges:
        for key in dict.fromkeys((owner.get(edge[0]), owner.get(edge[2]))):
            if key is not None:
                touching[key].append(edge)
    laid = {
        key: _lay_block(graph, key, names, sizes, touching[key]) for key, names in found.items()
    }
    for key, block in laid.items():
        w, h = _text_size(_closed_lines(key, len(block.names), rows, owner), 150)
        block.closed = (w + TOGGLE, h)
    items, links = _condensed_order(graph, owner)
    index = {item: i for i, item in enumerate(items)}
    size = [
        (laid[item[6:]].w, laid[item[6:]].h) if item.startswith("block:") else sizes[item]
        for item in items
    ]
    anchors = [laid[i[6:]].anchors if i.startswith("block:") else (0.0, 0.0) for i in items]
    top = _arrange(
        [s[0] for s in size],
        [s[1] for s in size],
        {(index[a], index[b]) for a, b in links},
        anchors,
    )
    item_of = {n: f"block:{owner[n]}" if n in owner else n for n in graph.nx.nodes}

    def left(i: int) -> float:
        return top.x[i] - top.w[i] / 2

    routed: list[_Edge] = []
    closed_keys: list[tuple[str, str]] = []
    for src, slot, dst in edges:
        a, b = index[item_of[src]], index[item_of[dst]]
        if a == b:
            continue
        port = _port_key(src, slot)
        if src in owner:
            sx = left(a) + laid[owner[src]].exit[port]
        else:
            sx = _out_port(graph, src, slot, top.x[a], top.w[a])
        routed.append(_Edge(a, sx, b, 0.0, port, src, dst))
        closed_keys.append((item_of[src] if src in owner else port, item_of[dst]))
    unique: dict[tuple, int] = {}
    for i, edge in enumerate(routed):
        unique.setdefault((edge.a, edge.b, edge.key), i)
    routed = [routed[i] for i in unique.values()]
    closed_keys = [closed_keys[i] for i in unique.values()]
    sources: dict[int, dict[str, float]] = defaultdict(dict)
    for edge in routed:
        if edge.dst in owner:
            edge.dx = left(edge.b) + laid[owner[edge.dst]].entry[edge.key]
        else:
            sources[edge.b][edge.key] = edge.sx
    for item, found_sources in sources.items():
        ports = _in_ports(top.x[item], top.w[item], found_sources)
        for edge in routed:
            if edge.b == item and edge.dst not in owner:
                edge.dx = ports[edge.key]
    shift = TOP_PAD - min(left(i) for i in range(len(items)))
    top.x = [x + shift for x in top.x]
    for edge in routed:
        edge.sx += shift
        edge.dx += shift
    row_top, bottom, lines_top = _route(top, routed, TOP_PAD)
    boxes: dict[str, Box] = {}
    frames: dict[str, Box] = {}
    routes: list[Route] = []
    for i, item in enumerate(items):
        x0, y0 = top.x[i] - top.w[i] / 2, row_top[top.row_of[i]]
        if item.startswith("block:"):
            block = laid[item[6:]]
            frames[block.key] = Box(round(x0, 1), y0, block.w, block.h)
            for name, b in block.boxes.items():
                boxes[name] = Box(round(x0 + b.x, 1), round(y0 + b.y, 1), b.w, b.h)
            routes += [
                Route(
                    r.src,
                    r.dst,
                    tuple((round(x0 + x, 1), round(y0 + y, 1)) for x, y in r.points),
                    r.level,
                )
                for r in block.routes
            ]
        else:
            boxes[item] = Box(round(x0, 1), y0, top.w[i], top.h[i])
    for edge, line in zip(routed, lines_top):
        src = f"block:{owner[edge.src]}" if edge.src in owner else edge.src
        dst = f"block:{owner[edge.dst]}" if edge.dst in owner else edge.dst
        routes.append(Route(src, dst, line, ""))
    width = (
        max(
            [b.x + b.w for b in boxes.values()]
            + [f.x + f.w for f in frames.values()]
            + [p[0] for r in routes for p in r.points]
        )
        + TOP_PAD
    )
    top_edges = [
        {
            "s": edge.a,
            "t": edge.b,
            "sx": [round(edge.sx - top.x[edge.a], 1), 0.0],
            "tx": [round(edge.dx - top.x[edge.b], 1), 0.0],
            "k": [edge.key, closed[0]],
        }
        for edge, closed in zip(routed, closed_keys)
    ]
    return _Scene(
        graph=graph,
        views=views,
        rows=rows,
        lines=lines,
        sizes=sizes,
        blocks=laid,
        items=items,
        top=top,
        top_edges=top_edges,
        layout=PageLayout(boxes, frames, tuple(routes), round(width, 1), round(bottom, 1)),
    )


def _closed_lines(key: str, count: int, rows: list[LayerRow], owner: dict[str, str]) -> list[str]:
    members = [r for r in rows if owner.get(r.name) == key]
    kept = _block_kept(members)
    share = "" if kept is None else f" · {kept:.0%} kept"
    return [_cut(key), f"{count} layers{share}", _cut(_params_text(members))]


def _block_kept(members: Sequence[LayerRow]) -> float | None:
    now = sum(r.channels for r in members if r.channels is not None and r.channels_before)
    before = sum(r.channels_before for r in members if r.channels is not None and r.channels_before)
    return now / before if before else None


def _params_text(members: Sequence[LayerRow]) -> str:
    params = sum(r.params for r in members)
    if all(r.params_before is not None for r in members):
        before = sum(r.params_before or 0 for r in members)
        if before != params:
            return f"params {human(before)} → {human(params)}"
    return f"params {human(params)}"


def layout(graph: GraphData, compare: GraphData | None = None) -> PageLayout:
    """Where the page draws every node, open block and edge when every block is open.

    Rows by longest path, branches side by side, the longest chain straight; an edge
    that skips rows runs in a lane beside the boxes it passes, never through one.

    Example:
        >>> boxes = layout(graph).boxes
        >>> boxes["conv1"].y < boxes["conv2"].y
        True
    """
    return _scene(graph, compare).layout


# ---------------------------------------------------------------------- SVG


def _path(points: Sequence[tuple[float, float]], radius: float = 5.0) -> str:
    """SVG path data for an orthogonal polyline with rounded corners."""
    out = [f"M{points[0][0]:g} {points[0][1]:g}"]
    for i in range(1, len(points) - 1):
        (ax, ay), (bx, by), (cx, cy) = points[i - 1], points[i], points[i + 1]
        r = min(radius, math.hypot(bx - ax, by - ay) / 2, math.hypot(cx - bx, cy - by) / 2)
        ux, uy = _unit(bx - ax, by - ay)
        vx, vy = _unit(cx - bx, cy - by)
        out.append(f"L{bx - ux * r:.1f} {by - uy * r:.1f}")
        out.append(f"Q{bx:g} {by:g} {bx + vx * r:.1f} {by + vy * r:.1f}")
    out.append(f"L{points[-1][0]:g} {points[-1][1]:g}")
    return "".join(out)


def _unit(dx: float, dy: float) -> tuple[float, float]:
    length = math.hypot(dx, dy) or 1.0
    return dx / length, dy / length


def _text(x: float, y: float, text: str, cls: str, fill: str = "") -> str:
    colour = f' fill="{fill}"' if fill and fill != "#212121" else ""
    return f'<text x="{x:g}" y="{y:g}" class="{cls}"{colour}>{html.escape(text)}</text>'


def _node_svg(index: int, view: NodeView, row: LayerRow, lines: list[str], box: Box) -> str:
    fill = kept_colour(row.kept)
    ink = _ink(fill)
    terminal = " io" if view.node.kind in ("input", "output") else ""
    radius = box.h / 2 if terminal else 4
    parts = [
        f'<g class="node {row.status}{terminal}" id="n{index}" data-i="{index}" '
        f'transform="translate({box.x:g},{box.y:g})">',
        f"<title>{html.escape(view.name)}</title>",
        f'<rect width="{box.w:g}" height="{box.h:g}" rx="{radius:g}" fill="{fill}"/>',
    ]
    for k, line in enumerate(lines):
        parts.append(_text(PAD_X, PAD_Y + LINE * k + 11, line, "nm" if k == 0 else "lb", ink))
    parts.append("</g>")
    return "".join(parts)


def _block_svg(
    number: int, item: int, block: _Block, scene: _Scene, index: dict[str, int], owner_rows: list
) -> str:
    kept = _block_kept(owner_rows)
    fill = kept_colour(kept)
    statuses = {r.status for r in owner_rows}
    status = "new" if "new" in statuses else "changed" if "changed" in statuses else "unchanged"
    w, h = block.closed
    lines = _closed_lines(block.key, len(block.names), scene.rows, _owner(scene))
    shut = [
        f'<g class="shut"><title>{html.escape(block.key)}: click to open</title>',
        f'<rect width="{w:g}" height="{h:g}" rx="8" fill="{fill}"/>',
        f'<rect x="3" y="3" width="{w - 6:g}" height="{h - 6:g}" rx="6" class="inner"/>',
    ]
    ink = _ink(fill)
    for k, line in enumerate(lines):
        shut.append(_text(PAD_X + 2, PAD_Y + LINE * k + 11, line, "nm" if k == 0 else "lb", ink))
    shut.append(_text(w - 18, 17, "▸", "tg", ink))
    shut.append("</g>")
    body = [
        '<g class="body">',
        f'<rect class="frame" width="{block.w:g}" height="{block.h:g}" rx="8"/>',
        f'<rect class="hd" width="{block.w:g}" height="{HEADER - 2}" rx="8"/>',
        '<g class="edges">',
        *(f'<path d="{_path(r.points)}"/>' for r in block.routes),
        "</g>",
        '<g class="head"><title>click to close</title>'
        + _text(FRAME_PAD, 14, "▾ " + _block_title(block.key, len(block.names)), "bt")
        + "</g>",
    ]
    rows = {r.name: r for r in scene.rows}
    views = {v.name: v for v in scene.views}
    for name in block.names:
        body.append(
            _node_svg(index[name], views[name], rows[name], scene.lines[name], block.boxes[name])
        )
    body.append("</g>")
    return (
        f'<g class="block {status}" id="b{number}" data-item="{item}" '
        f'data-block="{html.escape(block.key)}">' + "".join(shut + body) + "</g>"
    )


def _owner(scene: _Scene) -> dict[str, str]:
    return {name: key for key, block in scene.blocks.items() for name in block.names}


def _svg(scene: _Scene, index: dict[str, int]) -> str:
    owner = _owner(scene)
    members: dict[str, list[LayerRow]] = defaultdict(list)
    for row in scene.rows:
        if row.name in owner:
            members[owner[row.name]].append(row)
    rows = {r.name: r for r in scene.rows}
    views = {v.name: v for v in scene.views}
    out = [
        f'<svg id="graph" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-label="{html.escape(scene.graph.name)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0 0L10 5L0 10z"/></marker></defs>',
        '<g id="viewport"><g id="top-edges"></g>',
    ]
    numbers = {key: n for n, key in enumerate(scene.blocks)}
    for item, name in enumerate(scene.items):
        if name.startswith("block:"):
            key = name[6:]
            out.append(
                _block_svg(numbers[key], item, scene.blocks[key], scene, index, members[key])
            )
        else:
            box = scene.layout.boxes[name]
            node = _node_svg(index[name], views[name], rows[name], scene.lines[name], box)
            out.append(node.replace(' id="n', f' data-item="{item}" id="n', 1))
    out.append("</g></svg>")
    return "\n".join(out)


# ---------------------------------------------------------------------- data for the script

OPEN_UP_TO = 120  # nodes; bigger graphs start with their blocks closed
_SKIPPED_CONFIG = ("name", "trainable", "dtype")


def _config_items(node: Node) -> list[list[str]]:
    """The config entries worth reading in the details panel (no initializers, no dicts)."""
    items = []
    for key, value in node.config.items():
        if key in _SKIPPED_CONFIG or value is None or isinstance(value, dict):
            continue
        if key.endswith(("_initializer", "_regularizer", "_constraint")):
            continue
        items.append([key, _cut(value if isinstance(value, str) else repr(value), 48)])
    return items[:16]


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _kept_outputs(graph: GraphData, compare: GraphData | None, node: Node) -> list[str]:
    """`32/64 (50%)` per output: channels now / lifted (with `compare`: / there)."""
    now = _shown_tensors(graph, node)
    old: list[Tensor] = []
    if compare is not None and node.name in compare:
        old = _shown_tensors(compare, compare.node(node.name))
    texts = []
    for slot, tensor in enumerate(now):
        if compare is None:
            if tensor.mask is None:
                texts.append("-")
                continue
            kept, lifted = int(tensor.mask.sum()), int(tensor.mask.size)
        else:
            before = old[slot] if slot < len(old) else None
            if tensor.channels is None or before is None or not before.channels:
                texts.append("-" if tensor.channels is None else str(tensor.channels))
                continue
            kept, lifted = int(tensor.channels), int(before.channels)
        texts.append(f"{kept}/{lifted} ({kept / lifted:.0%})" if lifted else f"{kept}/{lifted}")
    return texts


def _node_data(
    graph: GraphData, compare: GraphData | None, view: NodeView, row: LayerRow
) -> dict[str, Any]:
    node = view.node
    old = compare.node(node.name) if compare is not None and node.name in compare else None
    before = dict(zip(old.weight_names, old.weight_shapes)) if old is not None else {}
    return {
        "name": node.name,
        "cls": node.class_name,
        "label": view.label,
        "path": node.path,
        "block": row.block,
        "shape": view.shape,
        "kept": _kept_outputs(graph, compare, node),
        "frac": None if row.kept is None else round(row.kept, 4),
        "status": row.status,
        "why": list(row.reasons),
        "inputs": list(view.inputs),
        "params": [row.params_before, row.params],
        "flops": [row.flops_before, row.flops],
        "config": _config_items(node),
        "weights": [
            [name, _shape(shape), _shape(before[name]) if name in before else ""]
            for name, shape in zip(node.weight_names, node.weight_shapes)
        ],
    }


def _closed_offset(scene: _Scene, item: int) -> float:
    """Where a closed block's box sits relative to its open frame's centre: under its
    main entry, within the frame."""
    name = scene.items[item]
    if not name.startswith("block:"):
        return 0.0
    block = scene.blocks[name[6:]]
    width, closed = block.w, block.closed[0]
    if closed >= width:
        return 0.0
    return round(min(max(block.anchors[0], (closed - width) / 2), (width - closed) / 2), 1)


def _json(value: Any) -> str:
    """JSON safe inside a <script> element."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _data(scene: _Scene, compare: GraphData | None, index: dict[str, int]) -> dict[str, Any]:
    rows = {r.name: r for r in scene.rows}
    numbers = {key: n for n, key in enumerate(scene.blocks)}
    items = []
    for i, item in enumerate(scene.items):
        if item.startswith("block:"):
            block = scene.blocks[item[6:]]
            items.append(
                {
                    "el": f"b{numbers[block.key]}",
                    "block": block.key,
                    "w": [block.w, block.closed[0]],
                    "h": [block.h, block.closed[1]],
                }
            )
        else:
            w, h = scene.sizes[item]
            items.append({"el": f"n{index[item]}", "block": None, "w": [w, w], "h": [h, h]})
        items[-1]["x"] = round(scene.top.x[i], 1)
        items[-1]["o"] = [0.0, _closed_offset(scene, i)]
    return {
        "nodes": [_node_data(scene.graph, compare, v, rows[v.name]) for v in scene.views],
        "items": items,
        "row": scene.top.row_of,
        "rows": scene.top.rows,
        "edges": scene.top_edges,
        "open": len(scene.graph) <= OPEN_UP_TO,
        "c": {
            "pad": TOP_PAD,
            "gapY": GAP_Y,
            "level": LEVEL,
            "laneGap": LANE_GAP,
            "laneStep": LANE_STEP,
        },
    }


# ---------------------------------------------------------------------- table


def _number(now: int, before: int | None) -> str:
    if before is None or before == now:
        return human(now)
    return f"{human(before)} → {human(now)}"


def _kept_cell(row: LayerRow) -> str:
    if row.status == "removed":
        return "removed"
    if row.kept is None:
        return "-"
    return f"{row.channels}/{row.channels_before} · {row.kept:.0%}"


def _table_rows(rows: list[LayerRow], index: dict[str, int]) -> str:
    e = html.escape
    out = []
    for order, row in enumerate(rows):
        kept = -1.0 if row.kept is None else round(row.kept, 4)
        node = f' data-i="{index[row.name]}"' if row.status != "removed" else ""
        ident = ("removed-" if row.status == "removed" else "row-") + row.name
        swatch = kept_colour(row.kept)
        out.append(
            f'<tr id="{e(ident)}" class="{row.status}"{node} data-order="{order}" '
            f'data-params="{row.params}" data-flops="{row.flops}" data-kept="{kept}">'
            f"<td>{order}</td><td class='mono'>{e(row.name)}</td><td>{e(row.class_name)}</td>"
            f"<td class='mono'>{e(row.block)}</td>"
            f"<td class='mono'><span class='sw' style='background:{swatch}'></span>"
            f"{e(_kept_cell(row))}</td>"
            f"<td class='num'>{e(_number(row.params, row.params_before))}</td>"
            f"<td class='num'>{e(_number(row.flops, row.flops_before))}</td>"
            f"<td>{e(row.status)}</td><td>{e('; '.join(row.reasons))}</td></tr>"
        )
    return "\n".join(out)


def _summary(scene: _Scene, compare: GraphData | None) -> str:
    rows = scene.rows
    counts = defaultdict(int)
    for row in rows:
        counts[row.status] += 1
    params = sum(r.params for r in rows)
    flops = sum(r.flops for r in rows)
    parts = [f"{len(scene.graph)} nodes", f"{len(scene.blocks)} blocks"]
    if compare is None:
        parts += [f"params {human(params)}", f"FLOPs {human(flops)}"]
    else:
        before_p = sum(r.params_before or 0 for r in rows)
        before_f = sum(r.flops_before or 0 for r in rows)
        parts += [
            f"params {human(before_p)} → {human(params)}" + _share(params, before_p),
            f"FLOPs {human(before_f)} → {human(flops)}" + _share(flops, before_f),
        ]
    parts += [f"{counts[s]} {s}" for s in ("changed", "new", "removed") if counts[s]]
    return " · ".join(parts)


def _share(now: int, before: int) -> str:
    return f" ({now / before:.0%})" if before else ""


# ---------------------------------------------------------------------- the page

_CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px system-ui, sans-serif; color: #212121; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 16px; padding: 8px 14px;
  border-bottom: 1px solid #ddd; background: #fafafa; }
h1 { font-size: 17px; margin: 0; }
h2 { font-size: 16px; margin: 18px 14px 8px; }
.summary { color: #555; font-size: 13px; }
.tools { display: flex; gap: 4px; align-items: center; margin-left: auto; }
.tools input { width: 230px; padding: 4px 8px; font-size: 13px; }
button { padding: 3px 9px; border: 1px solid #bbb; background: #fff; border-radius: 4px;
  cursor: pointer; font-size: 13px; }
button:hover { background: #eef3f8; }
#found { color: #555; font-size: 12px; min-width: 64px; }
#app { display: flex; flex-direction: column; height: 100vh; min-height: 480px; }
main { display: flex; flex: 1; min-height: 0; }
#canvas { flex: 1; position: relative; overflow: hidden; background: #fdfdfd; cursor: grab; }
#graph { width: 100%; height: 100%; display: block; user-select: none; }
aside { width: 360px; overflow: auto; border-left: 1px solid #ddd; padding: 8px 14px;
  font-size: 13px; }
aside h3 { font-size: 14px; margin: 10px 0 4px; word-break: break-all; }
.scale { height: 12px; border: 1px solid #999; border-radius: 2px; background:
  linear-gradient(to right, #7f2704 0%, #d94801 25%, #fd8d3c 50%, #fee6ce 85%, #fff 100%); }
.ticks { display: flex; justify-content: space-between; font-size: 11px; color: #555; }
.keys span { display: inline-block; margin: 4px 8px 0 0; padding: 1px 6px; border: 2px solid;
  border-radius: 4px; font-size: 12px; }
.kv { border-collapse: collapse; width: 100%; }
.kv td { border-top: 1px solid #eee; padding: 2px 4px; vertical-align: top; font-size: 12px;
  overflow-wrap: anywhere; }
.kv td:first-child { color: #666; white-space: nowrap; }
.mono, .kv td { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.hint { color: #777; }
svg text { font: 11px ui-monospace, "DejaVu Sans Mono", monospace; fill: #212121; }
text.nm, text.bt { font-weight: bold; }
text.bt { paint-order: stroke; stroke: #dde6ee; stroke-width: 4px; stroke-linejoin: round; }
text.tg { font-size: 16px; font-weight: bold; }
.node rect { stroke: #9e9e9e; stroke-width: 1; }
.node.changed rect { stroke: #e65100; }
.node.new rect { stroke: #2e7d32; stroke-width: 2.5; }
.node.io rect { stroke: #1565c0; stroke-width: 1.5; }
.node, .shut, .head { cursor: pointer; }
.node.match rect { stroke: #1e88e5; stroke-width: 3; stroke-dasharray: 5 2; }
.node.selected rect { stroke: #0d47a1; stroke-width: 4; stroke-dasharray: none; }
.block.closed .body, .block .shut { display: none; }
.block.closed .shut { display: inline; }
.frame { fill: #eef3f8; fill-opacity: 0.55; stroke: #90a4ae; stroke-dasharray: 6 3; }
.hd { fill: #dde6ee; }
.shut rect { stroke: #78909c; stroke-width: 1.5; }
.shut rect.inner { fill: none; stroke-dasharray: 3 2; stroke-width: 1; }
.block.changed .shut rect { stroke: #e65100; }
.block.match .shut rect { stroke: #1e88e5; stroke-width: 3; }
#top-edges path, .edges path { fill: none; stroke: #78909c; stroke-width: 1.3;
  marker-end: url(#arrow); }
#arrow path { fill: #78909c; }
table.layers { border-collapse: collapse; font-size: 12.5px; margin: 0 14px 14px; }
.layers th, .layers td { border: 1px solid #e0e0e0; padding: 2px 7px; text-align: left; }
.layers th { background: #f3f3f3; position: sticky; top: 0; }
.layers th[data-key] { cursor: pointer; }
.layers th.asc::after { content: " ▲"; } .layers th.desc::after { content: " ▼"; }
.layers td.num { text-align: right; white-space: nowrap; }
.layers td.mono { white-space: nowrap; }
.layers tr.new { background: #e8f5e9; } .layers tr.removed { background: #fbe9e7; color: #777; }
.layers tr.sel { outline: 2px solid #0d47a1; }
.layers tbody tr[data-i] { cursor: pointer; }
.sw { display: inline-block; width: 10px; height: 10px; border: 1px solid #999;
  margin-right: 5px; }
details { margin: 0 14px 20px; } pre { font-size: 12px; overflow: auto; }
"""

_SCRIPT = r"""
(() => {
'use strict';
const D = JSON.parse(document.getElementById('kgraph-data').textContent), C = D.c;
const $ = id => document.getElementById(id);
const svg = $('graph'), vp = $('viewport'), canvas = $('canvas');
const items = D.items.map(it => $(it.el)), open = D.items.map(it => !it.block || D.open);
const centreX = i => D.items[i].x + D.items[i].o[open[i] ? 0 : 1];
const itemOf = {};
D.items.forEach((it, i) => { if (it.block) itemOf[it.block] = i; });
const blockOf = i => (D.nodes[i].block ? itemOf[D.nodes[i].block] : undefined);
const view = {x: 0, y: 0, k: 1};
let size = {x: 0, w: 1, h: 1};
const st = i => (open[i] ? 0 : 1);
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;',
  '"': '&quot;'})[c]);

function pathD(p) {
  const q = p.filter((a, i) => i === 0 || a[0] !== p[i - 1][0] || a[1] !== p[i - 1][1]);
  let d = `M${q[0][0]} ${q[0][1]}`;
  for (let i = 1; i < q.length - 1; i++) {
    const [ax, ay] = q[i - 1], [bx, by] = q[i], [cx, cy] = q[i + 1];
    const l1 = Math.hypot(bx - ax, by - ay) || 1, l2 = Math.hypot(cx - bx, cy - by) || 1;
    const r = Math.min(5, l1 / 2, l2 / 2);
    d += `L${(bx - (bx - ax) / l1 * r).toFixed(1)} ${(by - (by - ay) / l1 * r).toFixed(1)}`;
    d += `Q${bx} ${by} ${(bx + (cx - bx) / l2 * r).toFixed(1)} ${(by + (cy - by) / l2 * r)
      .toFixed(1)}`;
  }
  const z = q[q.length - 1];
  return d + `L${z[0]} ${z[1]}`;
}

// The top level, laid out again when a block opens or closes: the same rows and x centres
// as kgraph.page computed, row heights and edge routes from the sizes of now.
function layout() {
  const n = D.rows.length, X = D.items.map((it, i) => centreX(i));
  const W = D.items.map((it, i) => it.w[st(i)]), H = D.items.map((it, i) => it.h[st(i)]);
  const rowH = D.rows.map(r => Math.max(...r.map(i => H[i])));
  const E = [], seen = new Set();
  for (const e of D.edges) {
    const k = e.k[st(e.s)], id = `${e.s} ${e.t} ${k}`;
    if (seen.has(id)) continue;
    seen.add(id);
    E.push({a: e.s, b: e.t, sx: X[e.s] + e.sx[st(e.s)], dx: X[e.t] + e.tx[st(e.t)], k,
      ra: D.row[e.s], rb: D.row[e.t], kind: 'd', lane: 0, o: -1, n: -1});
  }
  const each = (lo, hi, f) => { for (let r = lo; r < hi; r++) D.rows[r].forEach(f); };
  const free = (lo, hi, x) => {
    let ok = true;
    each(lo, hi, i => { if (Math.abs(X[i] - x) < W[i] / 2 + 6) ok = false; });
    return ok;
  };
  const extent = (lo, hi, s) => {
    let v = -s * Infinity;
    each(lo, hi, i => { v = s > 0 ? Math.max(v, X[i] + W[i] / 2) : Math.min(v, X[i] - W[i] / 2); });
    return v;
  };
  const lanes = new Map();
  for (const e of E) {
    if (e.rb === e.ra + 1) continue;
    const lo = e.ra + 1, hi = e.rb;
    if (free(lo, hi, e.sx)) { e.kind = 'l'; e.lane = e.sx; continue; }
    if (free(lo, hi, e.dx)) { e.kind = 'l'; e.lane = e.dx; continue; }
    const r = extent(lo, hi, 1), l = extent(lo, hi, -1);
    const costR = Math.abs(r - e.sx) + Math.abs(r - e.dx);
    const side = costR <= Math.abs(l - e.sx) + Math.abs(l - e.dx) ? 1 : -1;
    const key = `${e.k}|${side}`;
    if (!lanes.has(key)) lanes.set(key, {side, m: []});
    lanes.get(key).m.push(e);
  }
  const last = g => Math.max(...g.m.map(e => e.rb));
  const placed = [];
  for (const g of [...lanes.values()].sort((p, q) => last(p) - p.m[0].ra - last(q) + q.m[0].ra)) {
    const a = g.m[0].ra, b = last(g);
    let x = extent(a + 1, b, g.side) + g.side * C.laneGap, moved = true;
    while (moved) {
      moved = false;
      for (const p of placed) {
        if (p.side === g.side && p.a < b && a < p.b && Math.abs(p.x - x) < C.laneStep) {
          x = p.x + g.side * C.laneStep;
          moved = true;
        }
      }
    }
    placed.push({side: g.side, a, b, x});
    g.m.forEach(e => { e.kind = 'l'; e.lane = x; });
  }
  const levels = Array.from({length: n + 1}, () => []);
  const level = (g, key) => {
    if (!levels[g].includes(key)) levels[g].push(key);
    return levels[g].indexOf(key);
  };
  for (const e of E) {
    if (e.kind === 'd') {
      if (Math.abs(e.sx - e.dx) > 0.5) e.n = level(e.rb, e.k);
      continue;
    }
    if (Math.abs(e.lane - e.sx) > 0.5) e.o = level(e.ra + 1, e.k);
    if (Math.abs(e.lane - e.dx) > 0.5) e.n = level(e.rb, `${e.k}|${e.lane.toFixed(1)}`);
  }
  const gaps = levels.map(l => Math.max(C.gapY, (l.length + 1) * C.level)), top = [];
  let y = C.pad;
  for (let r = 0; r < n; r++) { y += gaps[r]; top.push(y); y += rowH[r]; }
  const gapY = (g, k) => (g === 0 ? C.pad : top[g - 1] + rowH[g - 1])
    + gaps[g] * (k + 1) / (levels[g].length + 1);
  const paths = E.map(e => {
    const p = [[e.sx, top[e.ra] + H[e.a]]];
    if (e.kind === 'd' && e.n >= 0) p.push([e.sx, gapY(e.rb, e.n)], [e.dx, gapY(e.rb, e.n)]);
    const yo = gapY(e.ra + 1, e.o);
    if (e.kind === 'l' && e.o >= 0) p.push([e.sx, yo], [e.lane, yo]);
    if (e.kind === 'l' && e.n >= 0) p.push([e.lane, gapY(e.rb, e.n)], [e.dx, gapY(e.rb, e.n)]);
    p.push([e.dx, top[e.rb]]);
    return `<path d="${pathD(p)}"/>`;
  });
  $('top-edges').innerHTML = paths.join('');
  let left = 0, right = 0;
  items.forEach((el, i) => {
    el.setAttribute('transform', `translate(${X[i] - W[i] / 2},${top[D.row[i]]})`);
    el.classList.toggle('closed', !open[i]);
    right = Math.max(right, X[i] + W[i] / 2);
  });
  placed.forEach(p => { left = Math.min(left, p.x - C.pad); right = Math.max(right, p.x); });
  size = {x: left, w: right + C.pad - left, h: y + gaps[n]};
}

function show() { vp.setAttribute('transform', `translate(${view.x},${view.y}) scale(${view.k})`); }
function zoomAt(f, mx, my) {
  const k = Math.min(4, Math.max(0.03, view.k * f));
  view.x = mx - (mx - view.x) * k / view.k;
  view.y = my - (my - view.y) * k / view.k;
  view.k = k;
  show();
}
function zoomBy(f) { const r = svg.getBoundingClientRect(); zoomAt(f, r.width / 2, r.height / 2); }
function fit(all) {
  const r = svg.getBoundingClientRect();
  view.k = Math.min(1, r.width / size.w, all ? r.height / size.h : 1);
  view.x = (r.width - size.w * view.k) / 2 - size.x * view.k;
  view.y = all ? (r.height - size.h * view.k) / 2 : 0;
  show();
}
function centre(el) {
  const s = svg.getBoundingClientRect();
  let b = el.getBoundingClientRect();
  if (view.k < 0.6) {
    zoomAt(1 / view.k, b.left + b.width / 2 - s.left, b.top + b.height / 2 - s.top);
    b = el.getBoundingClientRect();
  }
  view.x += s.width / 2 - (b.left + b.width / 2 - s.left);
  view.y += s.height / 2 - (b.top + b.height / 2 - s.top);
  show();
}

function setOpen(i, value) { open[i] = value; layout(); }
function setAll(value) { D.items.forEach((it, i) => { if (it.block) open[i] = value; }); layout(); }

function number(pair) {
  const h = v => (v >= 1e9 ? (v / 1e9).toFixed(2) + 'G' : v >= 1e6 ? (v / 1e6).toFixed(2) + 'M'
    : v >= 1e3 ? (v / 1e3).toFixed(2) + 'K' : String(v));
  return pair[0] === null || pair[0] === pair[1] ? h(pair[1]) : `${h(pair[0])} → ${h(pair[1])}`;
}
function details(i) {
  const n = D.nodes[i], rows = [['class', n.label], ['status', n.status]];
  if (n.why.length) rows.push(['why', n.why.join('; ')]);
  if (n.block) rows.push(['block', n.block]);
  if (n.path && n.path !== n.name) rows.push(['path', n.path]);
  rows.push(['output', n.shape], ['channels kept', n.kept.join(', ') || '-']);
  rows.push(['params', number(n.params)], ['FLOPs', number(n.flops)]);
  if (n.inputs.length) rows.push(['inputs', n.inputs.join(', ')]);
  const table = r => '<table class="kv">' + r.map(([k, v]) =>
    `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join('') + '</table>';
  let out = `<h3>${esc(n.name)}</h3>` + table(rows);
  if (n.weights.length) {
    out += '<h3>weights</h3>' + table(n.weights.map(([w, s, b]) => [w, b && b !== s
      ? `${b} → ${s}` : s]));
  }
  if (n.config.length) out += '<h3>config</h3>' + table(n.config);
  $('details').innerHTML = out;
}
function select(i, move) {
  const old = document.querySelectorAll('.selected, tr.sel');
  old.forEach(e => e.classList.remove('selected', 'sel'));
  const b = blockOf(i);
  if (b !== undefined && !open[b]) setOpen(b, true);
  const el = $('n' + i);
  el.classList.add('selected');
  const row = document.querySelector(`tr[data-i="${i}"]`);
  if (row) row.classList.add('sel');
  details(i);
  if (move) centre(el);
}

let matches = [], at = -1;
function mark() {
  const text = $('search').value.trim().toLowerCase();
  document.querySelectorAll('.match').forEach(e => e.classList.remove('match'));
  matches = [];
  if (text) {
    D.nodes.forEach((n, i) => { if (n.name.toLowerCase().includes(text)) matches.push(i); });
    matches.sort((a, b) => (D.nodes[b].name.toLowerCase() === text)
      - (D.nodes[a].name.toLowerCase() === text) || a - b);
  }
  matches.forEach(i => {
    $('n' + i).classList.add('match');
    const b = blockOf(i);
    if (b !== undefined) items[b].classList.add('match');
  });
  at = -1;
  $('found').textContent = text ? (matches.length ? `${matches.length} found` : 'no match') : '';
}
function next(step) {
  if (!matches.length) return;
  at = (at + step + matches.length) % matches.length;
  $('found').textContent = `${at + 1} / ${matches.length}`;
  select(matches[at], true);
}

let drag = null, dragged = false;
svg.addEventListener('wheel', ev => {
  ev.preventDefault();
  const r = svg.getBoundingClientRect();
  zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
}, {passive: false});
svg.addEventListener('pointerdown', ev => {
  drag = {x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y};
  dragged = false;
});
window.addEventListener('pointermove', ev => {
  if (!drag) return;
  const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
  if (Math.abs(dx) + Math.abs(dy) > 4) dragged = true;
  if (dragged) { view.x = drag.vx + dx; view.y = drag.vy + dy; show(); }
});
window.addEventListener('pointerup', () => { drag = null; });
svg.addEventListener('click', ev => {
  if (dragged) return;
  const node = ev.target.closest('.node'), block = ev.target.closest('.block');
  if (node) select(+node.dataset.i, false);
  else if (block && ev.target.closest('.shut')) setOpen(+block.dataset.item, true);
  else if (block && ev.target.closest('.head')) setOpen(+block.dataset.item, false);
});
$('search').addEventListener('input', mark);
$('search').addEventListener('keydown', ev => {
  if (ev.key === 'Enter') { ev.preventDefault(); next(ev.shiftKey ? -1 : 1); }
});
const actions = {prev: () => next(-1), next: () => next(1), in: () => zoomBy(1.25),
  out: () => zoomBy(0.8), fit: () => fit(true), width: () => fit(false),
  expand: () => setAll(true), collapse: () => setAll(false)};
document.querySelectorAll('button[data-do]').forEach(b => b.addEventListener('click',
  () => actions[b.dataset.do]()));
document.querySelectorAll('.layers th[data-key]').forEach(th => th.addEventListener('click', () => {
  const key = th.dataset.key, tbody = th.closest('table').tBodies[0];
  const desc = th.classList.contains('desc') ? false : th.classList.contains('asc')
    || key !== 'order';
  document.querySelectorAll('.layers th').forEach(h => h.classList.remove('asc', 'desc'));
  th.classList.add(desc ? 'desc' : 'asc');
  const rows = [...tbody.rows], value = r => +r.dataset[key];
  rows.sort((a, b) => (value(a) - value(b)) * (desc ? -1 : 1) || a.dataset.order - b.dataset.order);
  tbody.append(...rows);
}));
document.querySelector('.layers tbody').addEventListener('click', ev => {
  const row = ev.target.closest('tr[data-i]');
  if (!row) return;
  canvas.scrollIntoView({block: 'nearest'});
  select(+row.dataset.i, true);
});
layout();
fit(false);
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<div id="app">
<header>
<h1>{heading}</h1>
<span class="summary">{summary}</span>
<span class="tools">
<input id="search" type="search" placeholder="find a layer by name (Enter: next)"
 aria-label="find a layer by name">
<button data-do="prev" title="previous match">↑</button>
<button data-do="next" title="next match">↓</button>
<span id="found"></span>
<button data-do="out" title="zoom out">&minus;</button>
<button data-do="in" title="zoom in">+</button>
<button data-do="width" title="fit the width">fit width</button>
<button data-do="fit" title="fit everything">fit all</button>
<button data-do="expand" title="open every block">open blocks</button>
<button data-do="collapse" title="close every block">close blocks</button>
</span>
</header>
<main>
<div id="canvas">
{svg}
</div>
<aside>
<div class="scale"></div>
<div class="ticks"><span>0%</span><span>25%</span><span>50%</span><span>75%</span>
<span>100% of channels kept</span></div>
<div class="keys">{keys}</div>
<p class="hint">Drag to pan, wheel to zoom. Click a block to open it, its title to close
it, a layer for its details. {drawn}.</p>
<div id="details"><p class="hint">Click a layer.</p></div>
</aside>
</main>
</div>
<h2>Layers</h2>
<table class="layers">
<thead><tr><th data-key="order">#</th><th>layer</th><th>class</th><th>block</th>
<th data-key="kept">channels kept</th><th data-key="params">params</th>
<th data-key="flops">FLOPs</th><th>status</th><th>why</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<details><summary>Text IR</summary>
<pre class="ir">{ir}</pre>
</details>
<script type="application/json" id="kgraph-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""

_KEYS = (
    ("#e65100", "#fff", "changed"),
    ("#2e7d32", "#fff", "new layer"),
    ("#1565c0", "#fff", "model input/output"),
    ("#90a4ae", "#eef3f8", "block (click to open)"),
)


def _check(graph: Any, compare: Any, title: Any) -> None:
    for what, value in (("graph", graph), ("compare", compare)):
        if value is not None and not isinstance(value, GraphData):
            raise PageError(
                f"the page draws a kgraph Graph, but {what} is a {type(value).__name__}: "
                "lift a Keras model first (kgraph.lift(model))"
            )
    if graph is None:
        raise PageError("the page needs a graph to draw (kgraph.lift(model)), got None")
    if title is not None and not isinstance(title, str):
        raise PageError(f"the page's title must be a string, got {type(title).__name__}")


def to_page(graph: GraphData, *, compare: GraphData | None = None, title: str | None = None) -> str:
    """The interactive page for `graph` as one self-contained HTML document.

    `compare`: the graph to compare with (e.g. before pruning); layers are matched by
    name: the page shows channels, parameters and FLOPs before → after per layer,
    new layers, and the layers only `compare` has (removed). `title` defaults to the
    graph's name. Raises `PageError` when `graph` or `compare` is not a kgraph graph.

    Example:
        >>> text = to_page(pruned, compare=graph, title="ResNet50, half the channels")
        >>> text.startswith("<!DOCTYPE html>")
        True
    """
    _check(graph, compare, title)
    scene = _scene(graph, compare)
    index = {view.name: i for i, view in enumerate(scene.views)}
    if title is None:
        title = graph.name
        if compare is not None:
            title += f", compared with {compare.name}" if compare.name != graph.name else ""
            title += ": before → after" if compare.name == graph.name else ""
    e = html.escape
    keys = "".join(
        f'<span style="border-color:{border}; background:{fill}">{e(text)}</span>'
        for border, fill, text in _KEYS
    )
    return _PAGE.format(
        title=e(f"kgraph: {title}"),
        heading=e(title),
        summary=e(_summary(scene, compare)),
        css=_CSS,
        svg=_svg(scene, index),
        keys=keys,
        drawn=e(
            "The graph is drawn by kgraph's built-in layout; a node's colour says the "
            "fraction of its channels kept"
        ),
        rows=_table_rows(scene.rows, index),
        ir=e(format_graph(graph)),
        data=_json(_data(scene, compare, index)),
        script=_SCRIPT,
    )


def write_page(
    graph: GraphData,
    path: str | os.PathLike[str],
    *,
    compare: GraphData | None = None,
    title: str | None = None,
) -> Path:
    """Write the interactive page for `graph` (see `to_page`) to `path`; return the path.

    Missing folders are created; a path that cannot be written is a `PageError`.

    Example:
        >>> write_page(pruned, "report/pruned.html", compare=graph)
        PosixPath('report/pruned.html')
    """
    text = to_page(graph, compare=compare, title=title)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise PageError(
            f"cannot write the page of graph {graph.name!r} to {str(path)!r}: {error}; "
            "choose a folder you can write to"
        ) from error
    return path
