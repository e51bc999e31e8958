"""Dumps of the IR: Graphviz DOT, SVG/PNG through Graphviz, and self-contained HTML pages.

Changed nodes (channels pruned on their outputs or inputs) and new layers are
highlighted, and so are pruned edges (tensors whose mask drops channels). The
`.svg` and `.png` formats run Graphviz's `dot` program; `.txt`, `.dot` and
`.html` need nothing but Python. An `.html` dump is the interactive page of
`kgraph.page` (pan, zoom, collapsible blocks, search, a colour per fraction of
channels kept, a sortable table); `to_html` writes the static page instead (no
script: Graphviz's drawing when `dot` is installed, kgraph's own otherwise).

Example:
    >>> pruned = kgraph.lift(model).apply(DeleteChannels("conv1", [0, 3]))
    >>> source = pruned.to_dot()          # Graphviz DOT text
    >>> pruned.dump("out/pruned.html")    # open it in a browser
    >>> pruned.dump("out/pruned.svg")     # needs Graphviz (apt-get install graphviz)
"""

from __future__ import annotations

import html
import itertools
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import attrs

from kgraph.errors import KGraphError
from kgraph.graph_data import GraphData
from kgraph.page import to_page
from kgraph.printing import format_graph
from kgraph.view import EdgeView, NodeView, edge_views, node_views

__all__ = [
    "FORMATS",
    "EdgeView",
    "GraphvizError",
    "GraphvizNotFoundError",
    "NodeView",
    "dump",
    "edge_views",
    "find_dot",
    "node_views",
    "print_after_all",
    "render",
    "to_dot",
    "to_html",
]

log = logging.getLogger(__name__)

FORMATS: dict[str, str] = {
    ".dot": "Graphviz DOT source",
    ".html": "a self-contained interactive web page: the graph, a table of layers, the text IR",
    ".png": "a PNG image drawn by Graphviz",
    ".svg": "an SVG image drawn by Graphviz",
    ".txt": "the text IR (str(graph))",
}

INSTALL_HINT = "install Graphviz (Debian: apt-get install graphviz)"
DOT_TIMEOUT = 300  # seconds; dot lays out a few hundred nodes in about a second

# Colours: (fill, border) per node status; edges that lost channels are red.
_STYLE = {
    "unchanged": ("#ffffff", "#9e9e9e"),
    "changed": ("#ffe0b2", "#e65100"),
    "new": ("#c8e6c9", "#2e7d32"),
}
_TERMINAL = ("#e3f2fd", "#1565c0")  # unchanged model inputs and outputs
_EDGE = "#757575"
_PRUNED = "#d32f2f"


class GraphvizError(KGraphError):
    """Graphviz's `dot` program failed to render a graph."""


class GraphvizNotFoundError(GraphvizError):
    """Rendering needs Graphviz's `dot` program and it is not installed (not on PATH)."""


def _counts(views: list[NodeView], edges: list[EdgeView]) -> str:
    changed = sum(v.status == "changed" for v in views)
    new = sum(v.status == "new" for v in views)
    pruned = sum(e.pruned for e in edges)
    return f"{len(views)} nodes, {changed} changed, {new} new, {pruned} pruned edges"


def _lines(view: NodeView) -> list[str]:
    """The lines of a node's box: name, class[config], shape, kept channels."""
    lines = [view.name, view.label, view.shape]
    pruned = [k for k in view.kept if k != "-" and k.split("/")[0] != k.split("/")[1]]
    if pruned:
        lines.append(f"{', '.join(pruned)} kept")
    if view.status == "new":
        lines.append("new layer")
    return lines


def _colours(view: NodeView) -> tuple[str, str]:
    if view.status == "unchanged" and view.node.kind in ("input", "output"):
        return _TERMINAL
    return _STYLE[view.status]


# ---------------------------------------------------------------------- DOT


def _id(name: str) -> str:
    """A DOT ID: quoted, so '@', ':', '/', spaces and keywords are plain characters.

    Quotes are escaped and backslashes doubled (Graphviz keeps a doubled backslash
    in an ID, which stays unique; labels show the name exactly).
    """
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(text: str) -> str:
    """A quoted DOT label: backslashes and quotes escaped, newlines as `\\n`."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def _attrs(**values: object) -> str:
    items = []
    for key, value in values.items():
        text = value if isinstance(value, (int, float)) else _text(str(value))
        items.append(f"{key}={text}")
    return "[" + ", ".join(items) + "]"


def _legend_prefix(graph: GraphData) -> str:
    prefix = "kgraph-legend"
    while any(name.startswith(prefix) for name in graph.nx.nodes):
        prefix += "_"
    return prefix


def to_dot(graph: GraphData, *, baseline: GraphData | None = None) -> str:
    """Graphviz DOT source for `graph`, changed nodes and pruned edges highlighted.

    Nodes are boxes labelled like the text printer (name, class and key config,
    output shape, `48/64 kept`); changed nodes are orange, new layers green, model
    inputs and outputs blue ovals. Edges whose tensor lost channels are thick and
    red, labelled with the channels they keep. A legend explains the colours.
    Every node carries `class` (its status), which Graphviz copies into SVG.
    `baseline`: also highlight what differs from that graph (see `node_views`).
    """
    views = node_views(graph, baseline)
    edges = edge_views(graph)
    title = f"{graph.name}: {_counts(views, edges)}"
    lines = [
        f"digraph {_id(graph.name)} {{",
        "  graph " + _attrs(label=title, labelloc="t", fontname="Helvetica", fontsize=14) + ";",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        f'  edge [color="{_EDGE}", fontname="Helvetica", fontsize=9];',
    ]
    for view in views:
        fill, border = _colours(view)
        extra = {"penwidth": 2} if view.status != "unchanged" else {}
        shape = "oval" if view.node.kind in ("input", "output") else "box"
        lines.append(
            f"  {_id(view.name)} "
            + _attrs(
                label="\n".join(_lines(view)),
                shape=shape,
                fillcolor=fill,
                color=border,
                **extra,
                tooltip="; ".join(view.reasons) or view.status,
                **{"class": view.status},
            )
            + ";"
        )
    for edge in edges:
        extra = (
            {"color": _PRUNED, "fontcolor": _PRUNED, "penwidth": 2.5, "label": f"{edge.kept} kept"}
            if edge.pruned
            else {}
        )
        lines.append(
            f"  {_id(edge.src)} -> {_id(edge.dst)} "
            + _attrs(**extra, **{"class": "pruned" if edge.pruned else "kept"})
            + ";"
        )
    lines.extend(_dot_legend(_legend_prefix(graph)))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_legend(prefix: str) -> list[str]:
    """A boxed legend, one row: the node colours, then a pruned edge."""
    entries = [
        ("unchanged", "unchanged", "box", *_STYLE["unchanged"]),
        ("changed", "changed: channels pruned", "box", *_STYLE["changed"]),
        ("new", "new layer", "box", *_STYLE["new"]),
        ("terminal", "model input/output", "oval", *_TERMINAL),
    ]
    names = [_id(f"{prefix}:{key}") for key, *_ in entries]
    ends = [_id(f"{prefix}:{end}") for end in ("a", "b")]
    lines = [
        "  subgraph cluster_legend {",
        '    label="legend"; fontname="Helvetica"; fontsize=10; color="#bdbdbd";',
    ]
    for name, (_, text, shape, fill, border) in zip(names, entries):
        lines.append(
            f"    {name} "
            + _attrs(label=text, shape=shape, fillcolor=fill, color=border, **{"class": "legend"})
            + ";"
        )
    for name in ends:
        lines.append(f'    {name} [label="", shape=point, width=0.05, class="legend"];')
    lines.append(
        f"    {ends[0]} -> {ends[1]} "
        + _attrs(
            label="pruned tensor",
            color=_PRUNED,
            fontcolor=_PRUNED,
            penwidth=2.5,
            **{"class": "legend"},
        )
        + ";"
    )
    chain = [*names, ends[0]]
    for left, right in itertools.pairwise(chain):  # keeps the entries in this order
        lines.append(f"    {left} -> {right} [style=invis];")
    lines.append(f"    {{ rank=same; {'; '.join([*names, *ends])}; }}")
    lines.append("  }")
    return lines


# ---------------------------------------------------------------------- Graphviz


def find_dot() -> str | None:
    """The path of Graphviz's `dot` program, or None when it is not on PATH."""
    return shutil.which("dot")


def render(source: str, fmt: str) -> bytes:
    """Run Graphviz's `dot -T<fmt>` on DOT `source` and return its output.

    Raises `GraphvizNotFoundError` (with how to install it) when `dot` is missing
    and `GraphvizError` when it fails.
    """
    dot = find_dot()
    if dot is None:
        raise GraphvizNotFoundError(
            f"drawing a graph as {fmt.upper()} needs Graphviz's `dot` program, which is not "
            f"on PATH: {INSTALL_HINT}, or dump to .dot, .html or .txt, which need nothing"
        )
    try:
        result = subprocess.run(
            [dot, f"-T{fmt}"],
            input=source.encode("utf-8"),
            capture_output=True,
            timeout=DOT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GraphvizError(f"Graphviz's {dot} -T{fmt} did not run: {error}") from error
    if result.returncode != 0 or not result.stdout:
        stderr = result.stderr.decode("utf-8", "replace").strip()
        raise GraphvizError(
            f"Graphviz's {dot} -T{fmt} failed (exit status {result.returncode}): {stderr}"
        )
    return result.stdout


# ---------------------------------------------------------------------- built-in drawing

_FONT = 12  # px, monospace
_CHAR = 7.3  # px per character at that size
_LINE = 15
_PAD_X, _PAD_Y = 10, 8
_GAP_X, _GAP_Y = 30, 50


def _layers(graph: GraphData, views: list[NodeView]) -> list[list[NodeView]]:
    """Rows of nodes: each node one row below its lowest producer; rows by parents' order."""
    depth: dict[str, int] = {}
    for view in views:
        parents = [src for src, _ in graph.producers(view.name)]
        depth[view.name] = 1 + max((depth[p] for p in parents), default=-1)
    rows: list[list[NodeView]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for view in views:
        rows[depth[view.name]].append(view)
    position: dict[str, float] = {}
    for row in rows:  # order a row by the mean position of its producers (barycentre)

        def key(view: NodeView) -> float:
            parents = [position[src] for src, _ in graph.producers(view.name)]
            return sum(parents) / len(parents) if parents else 0.0

        row.sort(key=key)  # stable: ties keep the topological order
        for index, view in enumerate(row):
            position[view.name] = index
    return rows


def _builtin_svg(graph: GraphData, views: list[NodeView], edges: list[EdgeView]) -> str:
    """The graph drawn as inline SVG by a small layered layout (no Graphviz needed)."""
    boxes: dict[str, tuple[float, float, float, float]] = {}
    rows = _layers(graph, views)
    sizes = {
        v.name: (
            max(len(line) for line in _lines(v)) * _CHAR + 2 * _PAD_X,
            len(_lines(v)) * _LINE + 2 * _PAD_Y,
        )
        for v in views
    }
    widths = [sum(sizes[v.name][0] for v in row) + _GAP_X * (len(row) - 1) for row in rows]
    width = max(widths, default=0) + 2 * _GAP_X
    y = float(_GAP_Y) / 2
    for row, row_width in zip(rows, widths):
        x = (width - row_width) / 2
        height = max(sizes[v.name][1] for v in row)
        for view in row:
            w, h = sizes[view.name]
            boxes[view.name] = (x, y + (height - h) / 2, w, h)
            x += w + _GAP_X
        y += height + _GAP_Y
    height = y - _GAP_Y / 2
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="kgraph-layout" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{html.escape(graph.name)}">',
        "<defs>",
        *(
            f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="10" refY="5" '
            f'markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto">'
            f'<path d="M 0 0 L 10 5 L 0 10 z" fill="{colour}"/></marker>'
            for kind, colour in (("kept", _EDGE), ("pruned", _PRUNED))
        ),
        "</defs>",
    ]
    slots_in = {v.name: max(len(v.inputs), 1) for v in views}
    slots_out = {v.name: max(len(v.node.outputs), 1) for v in views}
    for edge in edges:
        sx, sy, sw, sh = boxes[edge.src]
        dx, dy, dw, _ = boxes[edge.dst]
        x1 = sx + sw * (edge.src_slot + 1) / (slots_out[edge.src] + 1)
        x2 = dx + dw * (edge.dst_slot + 1) / (slots_in[edge.dst] + 1)
        y1, y2 = sy + sh, dy
        bend = max((y2 - y1) / 2, 20)
        kind = "pruned" if edge.pruned else "kept"
        colour, stroke = (_PRUNED, 2.5) if edge.pruned else (_EDGE, 1.2)
        title = f"{edge.src}->{edge.dst}"
        out.append(f'<g class="edge {kind}"><title>{html.escape(title)}</title>')
        out.append(
            f'<path d="M {x1:.1f} {y1:.1f} C {x1:.1f} {y1 + bend:.1f} {x2:.1f} {y2 - bend:.1f} '
            f'{x2:.1f} {y2:.1f}" fill="none" stroke="{colour}" stroke-width="{stroke}" '
            f'marker-end="url(#arrow-{kind})"/>'
        )
        if edge.pruned:
            out.append(
                f'<text x="{(x1 + x2) / 2 + 4:.1f}" y="{(y1 + y2) / 2:.1f}" '
                f'class="edge-label">{html.escape(edge.kept)} kept</text>'
            )
        out.append("</g>")
    for view in views:
        x, y, w, h = boxes[view.name]
        fill, border = _colours(view)
        stroke = 2 if view.status != "unchanged" else 1
        radius = h / 2 if view.node.kind in ("input", "output") else 6
        out.append(
            f'<g class="node {view.status}" id="node-{html.escape(view.name)}">'
            f"<title>{html.escape(view.name)}</title>"
        )
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{radius:.1f}" '
            f'fill="{fill}" stroke="{border}" stroke-width="{stroke}"/>'
        )
        out.append(f'<text x="{x + w / 2:.1f}" y="{y + _PAD_Y:.1f}" text-anchor="middle">')
        for i, line in enumerate(_lines(view)):
            weight = ' font-weight="bold"' if i == 0 else ""
            out.append(
                f'<tspan x="{x + w / 2:.1f}" dy="{_LINE}"{weight}>{html.escape(line)}</tspan>'
            )
        out.append("</text></g>")
    out.append("</svg>")
    return "\n".join(out)


# ---------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #212121; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
.summary { color: #555; margin-top: 0; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: 8px;
  border: 2px solid; border-radius: 4px; font-size: 0.9em; }
.graph { overflow: auto; border: 1px solid #e0e0e0; padding: 8px; margin: 1em 0; }
.graph svg { max-width: none; }
.kgraph-layout text { font-family: ui-monospace, "DejaVu Sans Mono", monospace;
  font-size: 12px; fill: #212121; }
.kgraph-layout text.edge-label { fill: #d32f2f; font-size: 10px; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #e0e0e0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td.mono, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
td.mono { white-space: nowrap; }
tr.changed { background: #fff3e0; }
tr.new { background: #e8f5e9; }
pre { background: #fafafa; border: 1px solid #e0e0e0; padding: 8px; overflow: auto; }
"""


def _graph_svg(graph: GraphData, layout: str, baseline: GraphData | None) -> tuple[str, str]:
    """(inline SVG, how it was drawn) for the HTML page."""
    if layout not in ("auto", "graphviz", "builtin"):
        raise KGraphError(f"layout must be 'auto', 'graphviz' or 'builtin', got {layout!r}")
    if layout == "graphviz" or (layout == "auto" and find_dot() is not None):
        try:
            svg = render(to_dot(graph, baseline=baseline), "svg").decode("utf-8")
            return svg[svg.index("<svg") :], "drawn by Graphviz dot"
        except GraphvizError as error:
            if layout == "graphviz":
                raise
            log.warning(
                "Graphviz failed, drawing %r with the built-in layout: %s", graph.name, error
            )
    drawing = _builtin_svg(graph, node_views(graph, baseline), edge_views(graph))
    return drawing, "drawn by kgraph's built-in layout (install Graphviz for a better one)"


def to_html(graph: GraphData, *, layout: str = "auto", baseline: GraphData | None = None) -> str:
    """One self-contained HTML page: the drawn graph, a table of nodes, the text IR.

    The page loads nothing from the network. `layout` chooses the drawing:
    "graphviz" (needs `dot`), "builtin" (kgraph's layered layout, pure Python) or
    "auto" (Graphviz when installed, else built-in). `baseline`: also highlight
    what differs from that graph (see `node_views`).
    """
    svg, drawn = _graph_svg(graph, layout, baseline)
    views = node_views(graph, baseline)
    edges = edge_views(graph)
    e = html.escape
    rows = []
    for index, view in enumerate(views):
        rows.append(
            f'<tr class="{view.status}" id="row-{e(view.name)}">'
            f"<td>{index}</td><td class='mono'>{e(view.name)}</td>"
            f"<td class='mono'>{e(view.label)}</td>"
            f"<td class='mono'>{e(', '.join(view.inputs))}</td>"
            f"<td class='mono'>{e(view.shape)}</td>"
            f"<td class='mono'>{e(', '.join(view.kept))}</td>"
            f"<td>{e(view.status)}</td><td>{e('; '.join(view.reasons))}</td></tr>"
        )
    legend = (
        "".join(
            f'<span style="background:{fill}; border-color:{border}">{e(text)}</span>'
            for text, (fill, border) in (
                ("unchanged", _STYLE["unchanged"]),
                ("changed: channels pruned", _STYLE["changed"]),
                ("new layer", _STYLE["new"]),
                ("model input/output", _TERMINAL),
            )
        )
        + f'<span style="border-color:{_PRUNED}; color:{_PRUNED}">pruned tensor (red edge)</span>'
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>kgraph: {e(graph.name)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Graph {e(graph.name)}</h1>
<p class="summary">{e(_counts(views, edges))}; {e(drawn)}.</p>
<p class="legend">{legend}</p>
<div class="graph">
{svg}
</div>
<h2>Nodes</h2>
<table class="nodes">
<thead><tr><th>#</th><th>node</th><th>class</th><th>inputs</th><th>output shape</th>
<th>channels kept/lifted</th><th>status</th><th>why</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
<h2>Text IR</h2>
<pre class="ir">{e(format_graph(graph))}</pre>
</body>
</html>
"""


# ---------------------------------------------------------------------- files


def dump(
    graph: GraphData,
    path: str | os.PathLike[str],
    *,
    layout: str = "auto",
    baseline: GraphData | None = None,
    compare: GraphData | None = None,
) -> Path:
    """Write `graph` to `path` in the format its extension names; return the path.

    `.txt` (text IR), `.dot` (Graphviz DOT), `.svg`/`.png` (drawn by Graphviz's
    `dot`; `GraphvizNotFoundError` when it is not installed) and `.html`: with
    `layout="auto"` the interactive page of `kgraph.page.to_page`, with "graphviz"
    or "builtin" the static page of `to_html` drawn that way. `baseline`: also
    highlight what differs from that graph (see `node_views`). `compare`: the graph
    to compare with on the interactive page (before → after per layer, matched by
    name; `baseline` serves when it is not given, and `compare` serves as `baseline`
    for the other formats). Missing folders are created. The graph is never changed.

    Example:
        >>> dump(pruned, "report/pruned.html", compare=graph)   # what pruning changed
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if baseline is None:
        baseline = compare
    if suffix not in FORMATS:
        supported = ", ".join(f"{ext} ({what})" for ext, what in sorted(FORMATS.items()))
        raise KGraphError(
            f"cannot dump graph {graph.name!r} to {str(path)!r}: unknown extension "
            f"{suffix or '(none)'!r}; supported: {supported}"
        )
    if suffix == ".txt":
        content = (format_graph(graph) + "\n").encode("utf-8")
    elif suffix == ".dot":
        content = to_dot(graph, baseline=baseline).encode("utf-8")
    elif suffix == ".html" and layout == "auto":
        content = to_page(graph, compare=baseline).encode("utf-8")
    elif suffix == ".html":
        content = to_html(graph, layout=layout, baseline=baseline).encode("utf-8")
    else:
        content = render(to_dot(graph, baseline=baseline), suffix[1:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    except OSError as error:
        raise KGraphError(f"cannot write the dump of graph {graph.name!r}: {error}") from error
    return path


# ---------------------------------------------------------------------- print-after-all


@attrs.define
class PrintAfterAll:
    """A pipeline callback writing the IR before the first pass and after every pass,
    numbered like a compiler's print-after-all: `00-input.txt`/`.dot`,
    `01-delete-channels.txt`/`.dot`, ..."""

    folder: Path
    written: dict[int, Path] = attrs.field(factory=dict)

    def __call__(self, step: int, name: str, graph: GraphData) -> None:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        stem = self.folder / f"{step:02d}-{slug}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            stem.with_suffix(".txt").write_text(format_graph(graph) + "\n", encoding="utf-8")
            stem.with_suffix(".dot").write_text(to_dot(graph), encoding="utf-8")
        except OSError as error:
            raise KGraphError(f"cannot write the IR dump to {self.folder}: {error}") from error
        self.written[step] = stem.with_suffix(".txt")

    def path_of(self, step: int) -> str:
        """The text dump written for `step` (`?` when none was)."""
        return str(self.written.get(step, "?"))


def print_after_all(folder: str | os.PathLike[str]) -> PrintAfterAll:
    """The print-after-all callback for `Graph.apply(..., after_pass=...)`, writing to
    `folder` (what `dump_dir=` sets up).

    Example:
        >>> pruned = graph.apply(DeleteChannels("conv1", [0]), after_pass=print_after_all("ir"))
    """
    return PrintAfterAll(Path(folder))
