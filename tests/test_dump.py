"""Dumps: DOT with highlights, SVG/PNG through Graphviz, the HTML page (in a real
browser when chromium is installed), and print-after-all dumps of `apply`."""

from __future__ import annotations

import html
import itertools
import logging
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import attrs
import keras
import numpy as np
import pytest

import kgraph
from kgraph.dump import (
    FORMATS,
    GraphvizError,
    GraphvizNotFoundError,
    dump,
    edge_views,
    node_views,
    render,
    to_dot,
    to_html,
)
from kgraph.passes import DeleteChannels, DeleteHeads, DeleteLayer, InsertLayer

L = keras.layers

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(
    not HAS_DOT, reason="graphviz is not installed (Debian: apt-get install graphviz)"
)
CHROMIUM = next(
    (
        path
        for path in (
            shutil.which("chromium"),
            shutil.which("chromium-browser"),
            "/usr/bin/chromium",
        )
        if path and Path(path).exists()
    ),
    None,
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"
)

FILLS = {"unchanged": "#ffffff", "changed": "#ffe0b2", "new": "#c8e6c9"}
RED = "#d32f2f"


# ---------------------------------------------------------------------- models


def small_model() -> keras.Model:
    """A pruned branch (conv → pool → flatten → logits) and a branch with a shared layer."""
    x = keras.Input((8, 8, 1), name="image")
    y = L.Conv2D(4, 3, activation="relu", name="conv")(x)
    y = L.MaxPooling2D(name="pool")(y)
    y = L.Flatten(name="flatten")(y)
    y = L.Dense(2, name="logits")(y)
    shared = L.Dense(8, name="shared")
    z = L.Dense(8, name="proj")(L.Flatten(name="f2")(x))
    z = shared(shared(z))
    return keras.Model(x, [y, z], name="tiny")


def pruned_graph() -> tuple[kgraph.Graph, kgraph.Graph]:
    """(lifted, pruned): conv loses channel 1 and a new BatchNormalization follows it."""
    graph = kgraph.lift(small_model())
    pruned = graph.apply(
        DeleteChannels("conv", [1]), InsertLayer("pool", L.BatchNormalization(name="bn"))
    )
    return graph, pruned


EXPECTED_STATUS = {
    "image": "unchanged",
    "conv": "changed",  # output 3/4
    "bn": "new",
    "pool": "changed",  # input and output 3/4
    "flatten": "changed",  # 27/36
    "logits": "changed",  # reads 27 of 36 rows
    "output:0": "unchanged",
    "f2": "unchanged",
    "proj": "unchanged",
    "shared@0": "unchanged",
    "shared@1": "unchanged",
    "output:1": "unchanged",
}
PRUNED_EDGES = {("conv", "bn"): "3/4", ("bn", "pool"): "3/4", ("pool", "flatten"): "3/4"}
PRUNED_EDGES[("flatten", "logits")] = "27/36"


# ---------------------------------------------------------------------- a DOT reader

TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(->|[{}\[\];=,])|([A-Za-z0-9_.#-]+))')


def dot_id(name: str) -> str:
    """The ID Graphviz reads for a node name (it keeps a doubled backslash doubled)."""
    return name.replace("\\", "\\\\")


def tokenize(source: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while source[pos:].strip():
        match = TOKEN.match(source, pos)
        assert match, f"cannot read DOT at {source[pos : pos + 40]!r}"
        quoted, punct, word = match.groups()
        tokens.append(("str", quoted) if quoted else ("punct", punct) if punct else ("id", word))
        pos = match.end()
    return tokens


def as_id(token: tuple[str, str]) -> str:
    kind, text = token
    if kind != "str":
        return text
    return re.sub(r'\\"', '"', text[1:-1])  # Graphviz unescapes only \" in IDs


def as_text(token: tuple[str, str]) -> str:
    kind, text = token
    if kind != "str":
        return text
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text[1:-1])


def parse_dot(source: str) -> tuple[dict[str, dict[str, str]], list[tuple[str, str, dict]]]:
    """Node attributes by ID and edges of a DOT digraph (the subset `to_dot` writes)."""
    tokens = tokenize(source)
    assert tokens[0] == ("id", "digraph") and tokens[2] == ("punct", "{"), tokens[:3]
    assert tokens[-1] == ("punct", "}")
    nodes: dict[str, dict[str, str]] = {}
    edges: list[tuple[str, str, dict]] = []
    statement: list[tuple[str, str]] = []
    depth = 0
    for token in tokens[2:]:
        if (
            token[0] == "punct"
            and token[1] in ";{}"
            and not statement.count(("punct", "[")) > (statement.count(("punct", "]")))
        ):
            depth += {"{": 1, "}": -1}.get(token[1], 0)
            read_statement(statement, nodes, edges)
            statement = []
        else:
            statement.append(token)
    assert depth == 0 and not statement, "unbalanced braces"
    return nodes, edges


def read_attributes(tokens: list[tuple[str, str]]) -> dict[str, str]:
    if not tokens:
        return {}
    assert tokens[0] == ("punct", "[") and tokens[-1] == ("punct", "]"), tokens
    attributes, body = {}, [t for t in tokens[1:-1] if t != ("punct", ",")]
    for i in range(0, len(body), 3):
        key, equals, value = body[i : i + 3]
        assert equals == ("punct", "="), body
        attributes[as_id(key)] = as_text(value)
    return attributes


def read_statement(statement, nodes, edges) -> None:
    if not statement or statement[0] in (("id", "subgraph"), ("id", "graph")):
        return
    if statement[0] in (("id", "node"), ("id", "edge")):
        return
    if len(statement) >= 2 and statement[1] == ("punct", "="):
        return  # a graph attribute: label="legend", rank=same
    if len(statement) >= 3 and statement[1] == ("punct", "->"):
        edges.append((as_id(statement[0]), as_id(statement[2]), read_attributes(statement[3:])))
        return
    nodes.setdefault(as_id(statement[0]), {}).update(read_attributes(statement[1:]))


def graph_part(source: str):
    """Nodes and edges of the graph itself (without the legend)."""
    nodes, edges = parse_dot(source)
    legend = {n for n, a in nodes.items() if a.get("class") == "legend"}
    return (
        {n: a for n, a in nodes.items() if n not in legend},
        [e for e in edges if e[0] not in legend],
        legend,
    )


# ---------------------------------------------------------------------- PNG and HTML readers


def unfilter(kind: int, line: bytes, previous: bytes, step: int) -> bytes:
    """Undo one PNG row filter (0 none, 1 sub, 2 up, 3 average, 4 Paeth)."""
    row = np.frombuffer(line, np.uint8)
    if kind == 0:
        return line
    if kind == 1:
        return np.cumsum(row.reshape(-1, step), axis=0, dtype=np.uint8).tobytes()
    if kind == 2:
        return (row + np.frombuffer(previous, np.uint8)).tobytes()  # uint8 wraps mod 256
    out = bytearray(line)
    for i in range(len(out)):
        a = out[i - step] if i >= step else 0
        b = previous[i]
        if kind == 3:
            out[i] = (out[i] + ((a + b) >> 1)) & 0xFF
            continue
        c = previous[i - step] if i >= step else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        out[i] = (out[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    return bytes(out)


def png_pixels(data: bytes) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB/RGBA PNG (what Graphviz and chromium write)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    step = 4 if colour == 6 else 3
    raw = zlib.decompress(b"".join(chunks))
    stride = width * step
    rows, previous = [], bytes(stride)
    for row in range(height):
        start = row * (stride + 1)
        previous = unfilter(raw[start], raw[start + 1 : start + 1 + stride], previous, step)
        rows.append(previous)
    return np.frombuffer(b"".join(rows), np.uint8).reshape(height, width, step)[..., :3]


def count_colour(pixels: np.ndarray, colour: str, tolerance: int = 4) -> int:
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels - rgb).max(axis=-1) <= tolerance).sum())


class PageReader(HTMLParser):
    """Table rows, the text IR, and the SVG's node/edge groups of a dumped page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.ir = ""
        self.groups: list[dict] = []  # <g class="node ..."> / <g class="edge ...">
        self.svgs = 0
        self.tags: Counter[str] = Counter()
        self._cell: list[str] | None = None
        self._in_pre = False
        self._title: dict | None = None
        self._open_groups: list[dict | None] = []

    def handle_starttag(self, tag, attrs_list):
        attributes = dict(attrs_list)
        self.tags[tag] += 1
        classes = (attributes.get("class") or "").split()
        if tag == "svg":
            self.svgs += 1
        elif tag == "tr" and attributes.get("id", "").startswith("row-"):
            self.rows.append({"id": attributes["id"], "class": classes, "cells": []})
        elif tag == "td" and self.rows:
            self._cell = []
        elif tag == "pre" and "ir" in classes:
            self._in_pre = True
        elif tag == "g":
            group = (
                {"class": classes, "title": None} if classes[:1] in (["node"], ["edge"]) else None
            )
            if group:
                self.groups.append(group)
            self._open_groups.append(group)
        elif tag == "title" and self._open_groups and self._open_groups[-1]:
            self._title = self._open_groups[-1]
            self._title["title"] = ""

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append("".join(self._cell))
            self._cell = None
        elif tag == "pre":
            self._in_pre = False
        elif tag == "g" and self._open_groups:
            self._open_groups.pop()
        elif tag == "title":
            self._title = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_pre:
            self.ir += data
        if self._title is not None:
            self._title["title"] += data


def read_page(text: str) -> PageReader:
    reader = PageReader()
    reader.feed(text)
    reader.close()
    return reader


def snapshot(graph: kgraph.Graph):
    """Everything a dump could change: records (by identity), edges, text, frozen flag."""
    return (
        str(graph),
        {name: id(graph.node(name)) for name in graph.nx.nodes},
        sorted(
            (s, d, k, tuple(sorted(v.items())))
            for s, d, k, v in graph.nx.edges(keys=True, data=True)
        ),
        graph.frozen,
        graph.inputs_struct,
        graph.outputs_struct,
    )


# ---------------------------------------------------------------------- what is highlighted


def test_node_views_say_what_changed_and_why() -> None:
    _, pruned = pruned_graph()
    views = {v.name: v for v in node_views(pruned)}
    assert {name: v.status for name, v in views.items()} == EXPECTED_STATUS
    assert views["conv"].reasons == ("output keeps 3/4 channels",)
    assert views["bn"].reasons == (
        "new layer",
        "output keeps 3/4 channels",
        "input keeps 3/4 channels",
    )
    assert views["logits"].reasons == ("input keeps 27/36 channels",)
    assert views["flatten"].kept == ("27/36",) and views["flatten"].shape == "(None, 27)"
    assert views["output:1"].shape == "(None, 8)" and views["output:1"].inputs == ("%shared@1",)
    assert views["conv"].label == "Conv2D[filters 4→3, 3x3, relu]"
    pruned_edges = {(e.src, e.dst): e.kept for e in edge_views(pruned) if e.pruned}
    assert pruned_edges == PRUNED_EDGES


def test_nothing_is_highlighted_in_a_lifted_graph() -> None:
    graph = kgraph.lift(small_model())
    assert {v.status for v in node_views(graph)} == {"unchanged"}
    nodes, edges, _ = graph_part(graph.to_dot())
    assert {a["class"] for a in nodes.values()} == {"unchanged"}
    assert {e[2]["class"] for e in edges} == {"kept"}
    assert not any("color" in e[2] or "label" in e[2] for e in edges)


def test_deleted_heads_mark_the_attention_layer_changed() -> None:
    q = keras.Input((5, 8), name="q")
    model = keras.Model(q, L.MultiHeadAttention(4, 2, name="mha")(q, q))
    views = {v.name: v for v in node_views(kgraph.lift(model).apply(DeleteHeads("mha", [1])))}
    assert views["mha"].status == "changed" and views["mha"].reasons == ("heads: 3/4 kept",)
    assert views["q"].status == "unchanged"


def test_a_baseline_shows_changes_the_masks_no_longer_show() -> None:
    # Deleting every channel of `a` drops it from the Concatenate; dead-node elimination
    # then removes `a` and the one-input Concatenate: `out` reads `b` (all kept), yet
    # its kernel lost two rows. Only a comparison with the lifted graph shows that.
    x = keras.Input((6,), name="x")
    a, b = L.Dense(2, name="a")(x), L.Dense(3, name="b")(x)
    model = keras.Model(x, L.Dense(2, name="out")(L.Concatenate(name="cat")([a, b])))
    graph = kgraph.lift(model)
    pruned = graph.apply(DeleteChannels("a", [0, 1]))
    assert "cat" not in pruned and pruned.node("out").weight("kernel").shape == (3, 2)
    assert {v.name: v.status for v in node_views(pruned)}["out"] == "unchanged"
    views = {v.name: v for v in node_views(pruned, baseline=graph)}
    assert views["out"].status == "changed"
    assert views["out"].reasons == ("weights changed", "inputs rewired")
    assert views["b"].status == "unchanged" and views["x"].status == "unchanged"
    nodes, _, _ = graph_part(to_dot(pruned, baseline=graph))
    assert nodes["out"]["class"] == "changed" and "weights changed" in nodes["out"]["tooltip"]
    assert "weights changed" in to_html(pruned, layout="builtin", baseline=graph)


def test_a_baseline_names_changed_config_and_new_nodes() -> None:
    x = keras.Input((6,), name="x")
    model = keras.Model(x, L.Dense(3, name="d2")(L.Dense(5, name="d1")(x)))
    graph = kgraph.lift(model)
    pruned = graph.apply(DeleteChannels("d1", [0]), InsertLayer("d2", L.Dropout(0.1, name="drop")))
    views = {v.name: v for v in node_views(pruned, baseline=graph)}
    assert "config changed: units" in views["d1"].reasons
    assert views["drop"].status == "new"
    assert "inputs rewired" in views["d2"].reasons  # it reads the new Dropout now


# ---------------------------------------------------------------------- DOT


def test_dot_has_every_node_and_edge_with_highlights_on_the_right_ones() -> None:
    _, pruned = pruned_graph()
    source = pruned.to_dot()
    assert source == to_dot(pruned)
    nodes, edges, legend = graph_part(source)
    assert set(nodes) == set(pruned.nx.nodes) == set(EXPECTED_STATUS)
    expected_edges = Counter(
        (src, dst) for dst in pruned.nx.nodes for src, _ in pruned.producers(dst)
    )
    assert Counter((s, d) for s, d, _ in edges) == expected_edges
    for name, attributes in nodes.items():
        status = EXPECTED_STATUS[name]
        assert attributes["class"] == status, name
        if status != "unchanged":
            assert attributes["fillcolor"] == FILLS[status] and attributes["penwidth"] == "2"
        else:
            assert "penwidth" not in attributes
    assert nodes["image"]["shape"] == nodes["output:0"]["shape"] == "oval"
    for src, dst, attributes in edges:
        if (src, dst) in PRUNED_EDGES:
            assert attributes["class"] == "pruned" and attributes["color"] == RED
            assert attributes["penwidth"] == "2.5"
            assert attributes["label"] == f"{PRUNED_EDGES[src, dst]} kept"
        else:
            assert attributes == {"class": "kept"}, (src, dst)
    assert (
        nodes["conv"]["label"] == "conv\nConv2D[filters 4→3, 3x3, relu]\n(None, 6, 6, 3)\n3/4 kept"
    )
    assert nodes["bn"]["label"].endswith("\n3/4 kept\nnew layer")
    assert nodes["shared@1"]["label"] == "shared@1\nDense[units 8]\n(None, 8)"
    assert nodes["output:1"]["label"] == "output:1\nOutput\n(None, 8)"
    assert len(legend) == 6 and not legend & set(pruned.nx.nodes)
    assert "tiny: 12 nodes, 4 changed, 1 new, 4 pruned edges" in source


def test_legend_names_never_clash_with_node_names() -> None:
    x = keras.Input((4,), name="kgraph-legend:new")
    graph = kgraph.lift(keras.Model(x, L.Dense(2, name="d")(x)))
    nodes, _, legend = graph_part(graph.to_dot())
    assert set(nodes) == {"kgraph-legend:new", "d", "output:0"}
    assert all(name.startswith("kgraph-legend_:") for name in legend)


def odd_names_graph() -> kgraph.Graph:
    """Names that need quoting in DOT and escaping in HTML; `/` only comes from a rename."""
    x = keras.Input((6,), name="x:in")
    y = x
    for name in ('say "hi"', "a<b>&c", "back\\slash", "sp ace", "digraph"):
        y = L.Dense(4, name=name)(y)
    graph = kgraph.lift(keras.Model(x, y, name='m "1"')).apply(DeleteChannels("a<b>&c", [0]))
    work = graph.copy()
    work.rename("sp ace", attrs.evolve(work.node("sp ace"), name="backbone/inner"))
    return work


ODD = ("x:in", 'say "hi"', "a<b>&c", "back\\slash", "backbone/inner", "digraph", "output:0")


def test_dot_quotes_names_with_quotes_slashes_colons_and_keywords() -> None:
    graph = odd_names_graph()
    nodes, edges, _ = graph_part(to_dot(graph))
    assert set(nodes) == {dot_id(n) for n in ODD}
    chain = [dot_id(n) for n in ODD]
    assert [(s, d) for s, d, _ in edges] == list(itertools.pairwise(chain))
    for name in ODD:  # labels are escString: the name comes back exactly
        assert nodes[dot_id(name)]["label"].split("\n")[0] == name
    assert nodes[dot_id("a<b>&c")]["class"] == "changed"


@needs_dot
def test_graphviz_reads_the_dot_of_odd_names() -> None:
    graph = odd_names_graph()
    svg = render(to_dot(graph), "svg").decode()
    titles = [
        html.unescape(t) for t in re.findall(r'class="node[^"]*">\s*<title>(.*?)</title>', svg)
    ]
    assert Counter(titles) >= Counter(dot_id(n) for n in ODD)
    texts = {html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg)}
    assert set(ODD) <= texts


@needs_dot
def test_graphviz_draws_every_node_with_its_status() -> None:
    _, pruned = pruned_graph()
    svg = render(pruned.to_dot(), "svg").decode()
    found = {
        html.unescape(title): classes
        for classes, title in re.findall(
            r'<g id="node\d+" class="node ([^"]*)">\s*<title>(.*?)</title>', svg
        )
    }
    assert {n: found[n] for n in EXPECTED_STATUS} == EXPECTED_STATUS
    assert len(re.findall(r'class="edge pruned"', svg)) == len(PRUNED_EDGES)


# ---------------------------------------------------------------------- files


def test_dump_writes_each_format_by_extension(tmp_path) -> None:
    _, pruned = pruned_graph()
    target = tmp_path / "not" / "yet" / "there"
    txt = pruned.dump(target / "g.txt")
    assert txt == target / "g.txt" and isinstance(txt, Path)
    assert txt.read_text(encoding="utf-8") == str(pruned) + "\n"
    assert pruned.dump(str(target / "g.dot")).read_text(encoding="utf-8") == pruned.to_dot()
    page = read_page(pruned.dump(target / "g.html").read_text(encoding="utf-8"))
    assert len(page.rows) == len(pruned)
    assert pruned.dump(target / "UPPER.DOT").read_text(encoding="utf-8") == pruned.to_dot()


@pytest.mark.parametrize("name", ["g.pdf", "g", "g.txt.gz"])
def test_unknown_extensions_are_refused_listing_the_supported_ones(tmp_path, name) -> None:
    _, pruned = pruned_graph()
    with pytest.raises(
        kgraph.KGraphError, match=r"cannot dump graph 'tiny' to .*unknown extension"
    ) as error:
        pruned.dump(tmp_path / "sub" / name)
    assert all(ext in str(error.value) for ext in (".dot", ".html", ".png", ".svg", ".txt"))
    assert set(FORMATS) == {".dot", ".html", ".png", ".svg", ".txt"}
    assert not (tmp_path / "sub").exists()


def test_a_dump_that_cannot_be_written_says_so(tmp_path) -> None:
    _, pruned = pruned_graph()
    (tmp_path / "file").write_text("x")
    with pytest.raises(kgraph.KGraphError, match=r"cannot write the dump of graph 'tiny'"):
        pruned.dump(tmp_path / "file" / "g.txt")


@needs_dot
def test_svg_and_png_are_drawn_by_graphviz(tmp_path) -> None:
    _, pruned = pruned_graph()
    svg = pruned.dump(tmp_path / "out" / "g.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    ET.fromstring(svg)  # well-formed XML
    titles = {html.unescape(t) for t in re.findall(r"<title>(.*?)</title>", svg)}
    assert set(EXPECTED_STATUS) <= titles
    pixels = png_pixels(pruned.dump(tmp_path / "out" / "g.png").read_bytes())
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    assert count_colour(pixels, FILLS["changed"]) > 1000  # the orange boxes
    assert count_colour(pixels, FILLS["new"]) > 300  # the green one (and the legend)
    assert count_colour(pixels, RED) > 100  # thick red edges


@pytest.mark.parametrize("ext", [".svg", ".png"])
def test_without_graphviz_svg_and_png_fail_with_the_install_hint(
    tmp_path, monkeypatch, ext
) -> None:
    _, pruned = pruned_graph()
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no `dot` anywhere on PATH
    assert shutil.which("dot") is None
    with pytest.raises(
        GraphvizNotFoundError,
        match=rf"drawing a graph as {ext[1:].upper()} needs Graphviz's `dot` program.*"
        r"install Graphviz \(Debian: apt-get install graphviz\)",
    ) as error:
        pruned.dump(tmp_path / "out" / f"g{ext}")
    assert isinstance(error.value, kgraph.KGraphError)
    assert not (tmp_path / "out").exists()
    with pytest.raises(GraphvizNotFoundError):
        to_html(pruned, layout="graphviz")


def test_without_graphviz_the_page_draws_the_graph_itself(tmp_path, monkeypatch) -> None:
    _, pruned = pruned_graph()
    monkeypatch.setenv("PATH", str(tmp_path))
    text = pruned.dump(tmp_path / "g.html").read_text(encoding="utf-8")
    assert "drawn by kgraph&#x27;s built-in layout" in text
    page = read_page(text)
    nodes = {g["title"]: g["class"][1] for g in page.groups if g["class"][0] == "node"}
    assert nodes == EXPECTED_STATUS


def failing_dot(folder: Path) -> None:
    folder.mkdir()
    script = folder / "dot"
    script.write_text("#!/bin/sh\necho 'Error: syntax error in line 1 near boom' >&2\nexit 1\n")
    script.chmod(0o755)


def test_a_failing_graphviz_is_reported_and_the_page_falls_back(
    tmp_path, monkeypatch, caplog
) -> None:
    _, pruned = pruned_graph()
    failing_dot(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(GraphvizError, match=r"dot -Tsvg failed \(exit status 1\): Error: .*boom"):
        pruned.dump(tmp_path / "g.svg")
    assert not (tmp_path / "g.svg").exists()
    with caplog.at_level(logging.WARNING, logger="kgraph.dump"):
        text = to_html(pruned)
    assert "built-in layout" in text and "boom" in caplog.text
    with pytest.raises(GraphvizError, match="boom"):
        to_html(pruned, layout="graphviz")
    with pytest.raises(kgraph.KGraphError, match="layout must be 'auto', 'graphviz' or 'builtin'"):
        to_html(pruned, layout="neato")


# ---------------------------------------------------------------------- HTML


def layouts() -> list:
    return [
        "builtin",
        pytest.param("graphviz", marks=needs_dot),
    ]


@pytest.mark.parametrize("layout", layouts())
def test_the_page_is_self_contained_with_graph_table_and_ir(layout) -> None:
    _, pruned = pruned_graph()
    text = to_html(pruned, layout=layout)
    assert text.startswith("<!DOCTYPE html>")
    for forbidden in ("<script", "<link", "<iframe", "<img", "@import", "src="):
        assert forbidden not in text.lower()
    assert set(re.findall(r"https?://[^\s\"')]+", text)) <= {
        "http://www.w3.org/2000/svg",
        "http://www.w3.org/1999/xlink",
    }
    page = read_page(text)
    assert page.svgs == 1 and page.ir == str(pruned)
    views = node_views(pruned)
    assert [r["id"] for r in page.rows] == [f"row-{v.name}" for v in views]
    for row, view in zip(page.rows, views):
        _, name, label, inputs, shape, kept, status, why = row["cells"]
        assert (name, label, shape, status) == (view.name, view.label, view.shape, view.status)
        assert inputs == ", ".join(view.inputs) and kept == ", ".join(view.kept)
        assert why == "; ".join(view.reasons) and row["class"] == [view.status]
    assert page.rows[1]["cells"][5] == "3/4"  # conv: kept/lifted channels
    drawn = {g["title"]: g["class"][1] for g in page.groups if g["class"][0] == "node"}
    assert {n: drawn[n] for n in EXPECTED_STATUS} == EXPECTED_STATUS
    pruned_groups = [g for g in page.groups if g["class"] == ["edge", "pruned"]]
    assert len(pruned_groups) == len(PRUNED_EDGES)


def test_the_page_escapes_every_name() -> None:
    graph = odd_names_graph()
    text = to_html(graph, layout="builtin")
    assert "a<b>&c" not in text and "a&lt;b&gt;&amp;c" in text
    assert 'say "hi"' not in text
    page = read_page(text)
    assert [r["cells"][1] for r in page.rows] == list(ODD)
    assert {g["title"] for g in page.groups if g["class"][0] == "node"} == set(ODD)
    assert page.ir == str(graph)
    assert "<title>kgraph: m &quot;1&quot;</title>" in text


def builtin_svg(graph: kgraph.Graph) -> ET.Element:
    text = to_html(graph, layout="builtin")
    return ET.fromstring(text[text.index("<svg") : text.index("</svg>") + 6])


def test_the_built_in_layout_draws_boxes_apart_and_edges_downwards() -> None:
    _, pruned = pruned_graph()
    svg = builtin_svg(pruned)
    ns = "{http://www.w3.org/2000/svg}"
    width, height = float(svg.get("width")), float(svg.get("height"))
    boxes = {}
    for group in svg.iter(f"{ns}g"):
        kind, *status = group.get("class").split()
        if kind != "node":
            continue
        name = group.find(f"{ns}title").text
        rect = group.find(f"{ns}rect")
        x, y, w, h = (float(rect.get(k)) for k in ("x", "y", "width", "height"))
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
        boxes[name] = (x, y, w, h)
        assert status == [EXPECTED_STATUS[name]]
        if status != ["unchanged"]:
            assert rect.get("fill") == FILLS[status[0]]
        lines = [t.text for t in group.iter(f"{ns}tspan")]
        assert lines[0] == name and len(lines) >= 3
    assert set(boxes) == set(EXPECTED_STATUS)
    names = list(boxes)
    for i, a in enumerate(names):  # no two boxes overlap
        for b in names[i + 1 :]:
            ax, ay, aw, ah = boxes[a]
            bx, by, bw, bh = boxes[b]
            assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay, (a, b)
    edges = 0
    for group in svg.iter(f"{ns}g"):
        if group.get("class").split()[0] != "edge":
            continue
        edges += 1
        src, dst = group.find(f"{ns}title").text.split("->")
        numbers = [
            float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", group.find(f"{ns}path").get("d"))
        ]
        (x1, y1), (x2, y2) = numbers[:2], numbers[-2:]
        sx, sy, sw, sh = boxes[src]
        dx, dy, dw, _ = boxes[dst]
        assert abs(y1 - (sy + sh)) < 0.1 and sx <= x1 <= sx + sw  # leaves the producer's bottom
        assert abs(y2 - dy) < 0.1 and dx <= x2 <= dx + dw  # enters the consumer's top
        assert y1 < y2  # every edge points down
        assert (group.get("class") == "edge pruned") == ((src, dst) in PRUNED_EDGES)
    assert edges == pruned.nx.number_of_edges()


# ---------------------------------------------------------------------- dumps change nothing


def test_dumps_never_change_the_graph(tmp_path) -> None:
    graph, pruned = pruned_graph()
    work = graph.copy()
    DeleteChannels("conv", [0]).run(work)  # mid-surgery: masks not propagated yet
    for g in (graph, pruned, work):
        before = snapshot(g)
        g.to_dot()
        node_views(g)
        to_html(g, layout="builtin")
        for ext in FORMATS if HAS_DOT else (".txt", ".dot", ".html"):
            g.dump(tmp_path / f"{g.name}-{id(g)}{ext}")
        assert snapshot(g) == before
    assert not work.frozen
    work.set_node(work.node("conv"))  # still editable
    views = {v.name: v for v in node_views(work)}
    assert views["conv"].status == "changed" and views["pool"].reasons == (
        "input keeps 3/4 channels",
    )


# ---------------------------------------------------------------------- print-after-all


def test_print_after_all_writes_txt_and_dot_for_every_pass_in_order(tmp_path) -> None:
    x = keras.Input((6,), name="x")
    a, b = L.Dense(2, name="a")(x), L.Dense(3, name="b")(x)
    y = L.Dense(5, name="mid")(L.Concatenate(name="cat")([a, b]))
    model = keras.Model(x, L.Dense(2, name="out")(y))
    graph = kgraph.lift(model)
    result = graph.apply(DeleteChannels("a", [0, 1]), DeleteLayer("mid"), dump_dir=tmp_path / "d")
    steps = ["00-input", "01-delete-channels", "02-delete-layer", "03-propagate-masks"]
    steps.append("04-eliminate-dead-nodes")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(
        f"{s}{ext}" for s in steps for ext in (".dot", ".txt")
    )
    dumped = {
        s: ((tmp_path / "d" / f"{s}.txt").read_text(), (tmp_path / "d" / f"{s}.dot").read_text())
        for s in steps
    }
    assert dumped["00-input"] == (str(graph) + "\n", graph.to_dot())
    assert dumped["04-eliminate-dead-nodes"] == (str(result) + "\n", result.to_dot())
    for step in steps:  # every .dot is the graph its .txt shows
        text, dot = dumped[step]
        nodes, _, _ = graph_part(dot)
        in_text = set(re.findall(r"^  %(\S+) =", text, re.MULTILINE))
        assert in_text == {n for n in nodes if nodes[n]["shape"] == "box"}, step
    after_delete = graph_part(dumped["01-delete-channels"][1])[0]
    assert after_delete["a"]["class"] == "changed" and "0/2 kept" in after_delete["a"]["label"]
    assert "mid" in graph_part(dumped["01-delete-channels"][1])[0]
    assert "mid" not in graph_part(dumped["02-delete-layer"][1])[0]
    assert "%a = " in dumped["03-propagate-masks"][0]  # dead, but not yet eliminated
    assert "%a = " not in dumped["04-eliminate-dead-nodes"][0]
    assert "cat" not in graph_part(dumped["04-eliminate-dead-nodes"][1])[0]


def test_kgraph_dump_dir_turns_print_after_all_on(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KGRAPH_DUMP_DIR", str(tmp_path / "env" / "dumps"))
    graph = kgraph.lift(small_model())
    graph.apply(DeleteChannels("conv", [1]))
    names = sorted(p.name for p in (tmp_path / "env" / "dumps").iterdir())
    assert names == [
        "00-input.dot",
        "00-input.txt",
        "01-delete-channels.dot",
        "01-delete-channels.txt",
        "02-propagate-masks.dot",
        "02-propagate-masks.txt",
        "03-eliminate-dead-nodes.dot",
        "03-eliminate-dead-nodes.txt",
    ]


@needs_dot
def test_graphviz_reads_every_print_after_all_dump(tmp_path) -> None:
    graph = kgraph.lift(small_model())
    graph.apply(
        DeleteChannels("conv", [1]),
        InsertLayer("pool", L.BatchNormalization(name="bn")),
        dump_dir=tmp_path,
    )
    dots = sorted(tmp_path.glob("*.dot"))
    assert len(dots) == 5
    for path in dots:
        svg = render(path.read_text(), "svg").decode()
        assert "<title>conv</title>" in svg, path.name


# ---------------------------------------------------------------------- a real browser


def chromium(tmp_path: Path, *args: str) -> str:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@needs_chromium
@pytest.mark.parametrize("layout", layouts())
def test_a_real_browser_renders_the_page(tmp_path, layout) -> None:
    _, pruned = pruned_graph()
    page_path = dump(pruned, tmp_path / "page" / "tiny.html", layout=layout)
    url = page_path.resolve().as_uri()
    dom = read_page(chromium(tmp_path, "--dump-dom", url))
    assert dom.svgs >= 1
    drawn = {g["title"]: g["class"][1] for g in dom.groups if g["class"][0] == "node"}
    assert {n: drawn[n] for n in EXPECTED_STATUS} == EXPECTED_STATUS
    assert len(dom.rows) == len(pruned)
    assert dom.ir == str(pruned)
    shot = tmp_path / "shot.png"
    chromium(tmp_path, "--window-size=1280,1100", f"--screenshot={shot}", url)
    assert shot.stat().st_size > 20_000
    pixels = png_pixels(shot.read_bytes())
    assert pixels.shape[:2] == (1100, 1280)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # not a blank page
    assert count_colour(pixels, FILLS["changed"]) > 3000  # orange boxes and table rows
    assert count_colour(pixels, FILLS["new"]) > 1000  # the inserted BatchNormalization
    assert count_colour(pixels, RED) > 150  # the pruned edges
