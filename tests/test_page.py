"""The interactive page (`kgraph.page`): blocks, layout, colours, compare data, and
the page driven in a real headless Chromium through the DevTools protocol.

Chromium is driven over `--remote-debugging-pipe` (JSON messages on file
descriptors 3 and 4), so no websocket client or Selenium is needed. Run this file
as a script to redraw the screenshots in docs/images:
`.venv/bin/python tests/test_page.py`.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import kgraph
from kgraph.dump import dump
from kgraph.page import (
    NO_DATA,
    PageError,
    blocks,
    kept_colour,
    layer_rows,
    layout,
    to_page,
    write_page,
)
from kgraph.passes import DeleteChannels, DeleteLayer, InsertLayer
from kgraph.pruning import prune_graph

L = keras.layers
ROOT = Path(__file__).resolve().parents[1]

# The ResNet50 worker of test_zoo.py builds it too (`--dist loadgroup`).
pytestmark = pytest.mark.xdist_group("ResNet50")

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


# ---------------------------------------------------------------------- models


def small_model() -> keras.Model:
    """conv (8 filters) -> bn -> conv2 -> flatten -> dense, and an untouched branch."""
    x = keras.Input((8, 8, 2), name="image")
    y = L.Conv2D(8, 3, name="conv")(x)
    y = L.BatchNormalization(name="bn")(y)
    y = L.Conv2D(4, 3, name="conv2")(y)
    y = L.Flatten(name="flatten")(y)
    z = L.Conv2D(3, 1, name="side")(x)
    z = L.GlobalAveragePooling2D(name="side_pool")(z)
    joined = L.Concatenate(name="joined")([y, z])
    return keras.Model(x, L.Dense(2, name="head")(joined), name="small")


def small_pruned() -> tuple[kgraph.Graph, kgraph.Graph]:
    """(lifted, pruned): conv keeps 4 of 8 channels, bn deleted, a Dropout inserted."""
    graph = kgraph.lift(small_model())
    pruned = graph.apply(
        DeleteChannels("conv", [0, 2, 4, 6]),
        DeleteLayer("bn"),
        InsertLayer("flatten", L.Dropout(0.1, name="drop")),
    )
    return graph, pruned


def tiny_bert(layers: int = 12) -> keras.Model:
    import keras_hub

    return keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=layers,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=32,
    )


@pytest.fixture(scope="module")
def resnet() -> tuple[kgraph.Graph, kgraph.Graph]:
    """(lifted ResNet50, its channels halved per group by L1)."""
    graph = kgraph.lift(keras.applications.ResNet50(weights=None))
    return graph, prune_graph(graph, 0.5)


@pytest.fixture(scope="module")
def bert() -> tuple[kgraph.Graph, kgraph.Graph]:
    """(a lifted 12-block BERT, its feed-forward units halved)."""
    graph = kgraph.lift(tiny_bert())
    return graph, prune_graph(graph, 0.5)


# ---------------------------------------------------------------------- blocks


def test_resnet_blocks_are_its_residual_blocks(resnet) -> None:
    graph, _ = resnet
    found = blocks(graph)
    stages = {2: 3, 3: 4, 4: 6, 5: 3}
    assert list(found) == [f"conv{s}_block{b}" for s, n in stages.items() for b in range(1, n + 1)]
    assert found["conv2_block1"] == tuple(
        n for n in graph.topological_order() if n.startswith("conv2_block1_")
    )
    assert len(found["conv2_block1"]) == 12 and len(found["conv2_block2"]) == 10
    inside = {name for names in found.values() for name in names}
    (model_input,) = [n for n in graph.nx.nodes if graph.node(n).kind == "input"]
    assert model_input.startswith("input_layer")  # Keras numbers it past the first model
    assert set(graph.nx.nodes) - inside == {
        model_input,
        "conv1_pad",
        "conv1_conv",
        "conv1_bn",
        "conv1_relu",
        "pool1_pad",
        "pool1_pool",
        "avg_pool",
        "predictions",
        "output:0",
    }


def test_transformer_blocks_follow_the_layer_paths(bert) -> None:
    graph, _ = bert
    found = blocks(graph)
    layers = [f"transformer_layer_{i}" for i in range(12)]
    assert set(layers) <= set(found)
    for key in layers:  # the block holds its own mask ops, attention and feed-forward
        assert all(graph.node(n).path.startswith(key + "/") for n in found[key])
        assert f"{key}_self_attention_layer" in found[key]
        assert f"{key}_feedforward_output_dense" in found[key]
    for name in ("token_ids", "padding_mask", "segment_ids"):
        assert not any(name in names for names in found.values())


def test_no_block_that_the_graph_leaves_and_re_enters() -> None:
    x = keras.Input((4,), name="x")
    a = L.Dense(4, name="grp_a_in")(x)
    b = L.Dense(4, name="grp_a_mid")(a)
    outside = L.Dense(4, name="elsewhere")(b)  # grp_a -> elsewhere -> grp_a
    c = L.Add(name="grp_a_out")([b, outside])
    d = L.Dense(4, name="dense")(c)
    d = L.Dense(4, name="dense_1")(d)
    d = L.Dense(4, name="dense_2")(d)
    model = keras.Model(x, L.Dense(2, name="tail_x_head")(d))
    found = blocks(kgraph.lift(model))
    assert "grp_a" not in found  # not convex
    assert "dense" not in found  # Keras' automatic names are no family
    assert found == {}


def test_each_call_of_a_shared_nested_model_is_its_own_block() -> None:
    inner_in = keras.Input((8,))
    h = L.Dense(6, name="d1")(inner_in)
    h = L.Dense(6, name="d2")(h)
    inner = keras.Model(inner_in, L.Dense(4, name="d3")(h), name="encoder")
    x = keras.Input((8,), name="x")
    joined = L.Concatenate(name="cat")([inner(x), inner(L.Dense(8, name="pre")(x))])
    found = blocks(kgraph.lift(keras.Model(x, joined)))
    assert found == {"encoder@0": ("d1@0", "d2@0", "d3@0"), "encoder@1": ("d1@1", "d2@1", "d3@1")}


# ---------------------------------------------------------------------- layout


def check_layout(graph: kgraph.Graph) -> None:
    """No two boxes overlap, every box is inside its block, every edge is drawn and
    no edge passes through a node's box (or, at the top level, through a block)."""
    drawn = layout(graph)
    found = blocks(graph)
    owner = {n: k for k, names in found.items() for n in names}
    boxes = drawn.boxes
    assert set(boxes) == set(graph.nx.nodes)
    for (a, p), (b, q) in itertools.combinations(boxes.items(), 2):
        assert p.x + p.w <= q.x or q.x + q.w <= p.x or p.y + p.h <= q.y or q.y + q.h <= p.y, (a, b)
    for name, box in boxes.items():
        frame = drawn.frames.get(owner.get(name, ""))
        if frame is not None:
            assert frame.x < box.x and box.x + box.w < frame.x + frame.w, name
            assert frame.y < box.y and box.y + box.h < frame.y + frame.h, name
    tops = list(drawn.frames.items()) + [(n, b) for n, b in boxes.items() if n not in owner]
    for (a, p), (b, q) in itertools.combinations(tops, 2):
        assert p.x + p.w <= q.x or q.x + q.w <= p.x or p.y + p.h <= q.y or q.y + q.h <= p.y, (a, b)
    routes = {(r.src, r.dst) for r in drawn.routes}
    for src, dst in graph.nx.edges():
        a, b = owner.get(src), owner.get(dst)
        if a is not None and a == b:
            assert (src, dst) in routes
            continue
        if a is not None:
            assert (src, f"block:{a}") in routes  # leaves its block at the bottom
        if b is not None:
            assert (f"block:{b}", dst) in routes  # enters its block at the top
        assert (f"block:{a}" if a else src, f"block:{b}" if b else dst) in routes
    for route in drawn.routes:
        for p, q in itertools.pairwise(route.points):
            assert p[0] == q[0] or p[1] == q[1], (route.src, route.dst, p, q)  # orthogonal
            for name, box in boxes.items():
                assert not box.crossed_by(p, q, 0.5), (route.src, route.dst, name, p, q)
            if route.level == "":
                for key, frame in drawn.frames.items():
                    assert not frame.crossed_by(p, q, 0.5), (route.src, route.dst, key)


def test_resnet_layout_draws_skip_connections_beside_the_boxes(resnet) -> None:
    _, pruned = resnet
    check_layout(pruned)
    drawn = layout(pruned)
    boxes = drawn.boxes
    chain = ["1_conv", "1_bn", "1_relu", "2_conv", "2_bn", "2_relu", "3_conv", "3_bn"]
    centres = {
        round(boxes[f"conv2_block2_{n}"].x + boxes[f"conv2_block2_{n}"].w / 2) for n in chain
    }
    assert len(centres) == 1  # the residual branch runs straight
    (skip,) = [
        r for r in drawn.routes if (r.src, r.dst) == ("block:conv2_block2", "conv2_block2_add")
    ]
    lane = {x for (x, _), (x2, _) in itertools.pairwise(skip.points) if x == x2}
    passed = [boxes[f"conv2_block2_{n}"] for n in chain]
    assert any(all(x <= b.x or x >= b.x + b.w for b in passed) for x in lane)  # beside, not behind
    assert max(p[1] for p in skip.points) - min(p[1] for p in skip.points) > 400  # it is long
    (shortcut,) = [r for r in drawn.routes if r.src == "conv2_block1_0_bn"]
    assert shortcut.dst == "conv2_block1_add" and len(shortcut.points) >= 3
    assert drawn.width < 1000  # branches side by side, not one column per layer


def test_transformer_layout_keeps_the_residual_stream_straight(bert) -> None:
    _, pruned = bert
    check_layout(pruned)
    boxes = layout(pruned).boxes
    names = ["self_attention_layer", "self_attention_dropout", "add", "self_attention_layer_norm"]
    centres = {
        round(boxes[f"transformer_layer_3_{n}"].x + boxes[f"transformer_layer_3_{n}"].w / 2)
        for n in names[:1] + names[3:]
    }
    assert len(centres) == 1
    # the mask's cast (Keras numbers the op by how many casts the process has made)
    (cast,) = [n for n in boxes if n.startswith("transformer_layer_3_cast")]
    mask = boxes[cast]
    attention = boxes["transformer_layer_3_self_attention_layer"]
    assert mask.x + mask.w < attention.x + attention.w / 2  # the mask ops sit beside it


def test_efficientnet_layout_routes_the_excitation_gate_beside_the_block() -> None:
    graph = kgraph.lift(keras.applications.EfficientNetB0(weights=None))
    assert {"stem", "block1a", "block2a", "block2b", "block7a"} <= set(blocks(graph))
    check_layout(graph)
    drawn = layout(graph)
    (gate,) = [
        r for r in drawn.routes if (r.src, r.dst) == ("block2b_activation", "block2b_se_excite")
    ]
    passed = [drawn.boxes[f"block2b_se_{n}"] for n in ("squeeze", "reshape", "reduce", "expand")]
    lane = [x for (x, _), (x2, _) in itertools.pairwise(gate.points) if x == x2]
    assert any(all(x >= b.x + b.w or x <= b.x for b in passed) for x in lane)


def test_small_graphs_and_odd_names_lay_out(tmp_path) -> None:
    _, pruned = small_pruned()
    check_layout(pruned)
    x = keras.Input((3,), name='a<b>&"c')
    y = L.Dense(2, name="d e f")(x)
    graph = kgraph.lift(keras.Model(x, L.Dense(1, name="g'h")(y)))
    check_layout(graph)
    text = to_page(graph)
    assert 'a<b>&"c' not in text and "a&lt;b&gt;&amp;&quot;c" in text


@pytest.mark.slow
def test_a_48_block_transformer_stays_readable_and_small() -> None:
    graph = kgraph.lift(tiny_bert(48))
    assert len(graph) > 500
    check_layout(graph)
    started = time.perf_counter()
    text = to_page(graph)
    assert time.perf_counter() - started < 20
    assert len(text.encode()) < 1_200_000
    data = page_data(text)
    assert data["open"] is False and len(data["rows"]) < 70  # starts with the blocks closed


# ---------------------------------------------------------------------- colours and numbers


def luminance(colour: str) -> float:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_the_colour_scale_is_continuous_and_darkens_as_channels_go() -> None:
    assert kept_colour(1.0) == "#ffffff"
    assert kept_colour(0.5) == "#fd8d3c"
    assert kept_colour(None) == NO_DATA == kept_colour(float("nan"))
    assert kept_colour(1.5) == kept_colour(1.0) and kept_colour(-1) == kept_colour(0.0)
    steps = [kept_colour(f) for f in np.linspace(1.0, 0.0, 41)]
    assert len(set(steps)) > 35  # continuous, not a few classes
    values = [luminance(c) for c in steps]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert values[0] - luminance(kept_colour(0.9)) < 40 < values[0] - values[20]


def test_layer_rows_compare_layers_by_name() -> None:
    graph, pruned = small_pruned()
    rows = {r.name: r for r in layer_rows(pruned, compare=graph)}
    conv = rows["conv"]
    assert (conv.channels, conv.channels_before, conv.kept) == (4, 8, 0.5)
    assert (conv.params_before, conv.params) == (3 * 3 * 2 * 8 + 8, 3 * 3 * 2 * 4 + 4)
    assert conv.flops_before == 2 * conv.flops
    conv2 = rows["conv2"]  # reads half the channels, keeps its own
    assert conv2.kept == 1.0 and conv2.status == "changed"
    assert (conv2.params_before, conv2.params) == (3 * 3 * 8 * 4 + 4, 3 * 3 * 4 * 4 + 4)
    assert rows["bn"].status == "removed" and rows["bn"].kept == 0.0
    assert (rows["bn"].params_before, rows["bn"].params) == (32, 0)
    assert rows["drop"].status == "new" and rows["drop"].params_before is None
    assert rows["side"].status == "unchanged" and rows["side"].kept == 1.0
    assert rows["side"].params == rows["side"].params_before == 9
    order = [r.name for r in layer_rows(pruned, compare=graph)]
    assert order[-1] == "bn" and order[: len(pruned)] == pruned.topological_order()
    alone = {r.name: r for r in layer_rows(pruned)}  # masks: relative to the lifted model
    assert alone["conv"].kept == 0.5 and alone["conv"].params_before is None
    assert "bn" not in alone


def test_a_relifted_pruned_model_is_compared_by_channel_counts() -> None:
    graph, pruned = small_pruned()
    relifted = kgraph.lift(pruned.lower())  # what `kgraph dump small.keras --compare` reads
    assert layer_rows(relifted)[1].kept == 1.0  # its own masks know nothing of the past
    rows = {r.name: r for r in layer_rows(relifted, compare=graph)}
    assert rows["conv"].kept == 0.5 and rows["conv"].status == "changed"
    assert "weights changed" in rows["conv"].reasons
    assert rows["bn"].status == "removed"


class TableReader(HTMLParser):
    """The rows of the page's layer table: id, class, data attributes, cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs_list):
        attributes = dict(attrs_list)
        if tag == "tr" and re.match(r"(row|removed)-", attributes.get("id", "")):
            self.rows.append({**attributes, "cells": []})
        elif tag == "td" and self.rows:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def page_data(text: str) -> dict[str, Any]:
    start = text.index('<script type="application/json" id="kgraph-data">')
    body = text[text.index(">", start) + 1 : text.index("</script>", start)]
    return json.loads(body)


def test_the_compare_page_lists_every_layer_before_and_after(tmp_path) -> None:
    graph, pruned = small_pruned()
    path = write_page(pruned, tmp_path / "new" / "small.html", compare=graph, title="Half of conv")
    assert path == tmp_path / "new" / "small.html"
    text = path.read_text(encoding="utf-8")
    reader = TableReader()
    reader.feed(text)
    rows = {r["id"]: r for r in reader.rows}
    assert len(rows) == len(pruned) + 1  # every node, and the removed BatchNormalization
    conv = rows["row-conv"]["cells"]
    assert conv[1] == "conv" and conv[4] == "4/8 · 50%"
    assert conv[5] == "152 → 76" and rows["row-conv"]["data-kept"] == "0.5"
    assert rows["removed-bn"]["class"] == "removed" and rows["removed-bn"]["cells"][5] == "32 → 0"
    assert rows["row-drop"]["class"] == "new"
    assert "<title>kgraph: Half of conv</title>" in text
    assert "params 621 → 369 (59%)" in text and "1 removed" in text and "1 new" in text
    data = page_data(text)
    conv_data = next(n for n in data["nodes"] if n["name"] == "conv")
    assert conv_data["kept"] == ["4/8 (50%)"] and conv_data["params"] == [152, 76]
    assert ["kernel", "3x3x2x4", "3x3x2x8"] in conv_data["weights"]
    assert ["filters", "4"] in conv_data["config"]


def test_the_page_is_self_contained_and_small(resnet) -> None:
    _, pruned = resnet
    text = to_page(pruned)
    for forbidden in ("<link", "<iframe", "<img", "@import", " src=", "url(http"):
        assert forbidden not in text.lower()
    assert set(re.findall(r"https?://[^\s\"')]+", text)) == {"http://www.w3.org/2000/svg"}
    script = text[text.index("<script>") : text.index("</script>", text.index("<script>"))]
    assert len(script.splitlines()) < 320  # written here, kept small
    assert len(text.encode()) < 400_000
    assert text.count('<g class="node ') == len(pruned)


def test_page_errors_say_what_to_do(tmp_path) -> None:
    model = small_model()
    with pytest.raises(PageError, match=r"compare is a Functional: lift a Keras model first"):
        to_page(kgraph.lift(model), compare=model)
    with pytest.raises(PageError, match="title must be a string"):
        to_page(kgraph.lift(model), title=3)
    (tmp_path / "file").write_text("x")
    with pytest.raises(kgraph.KGraphError, match=r"cannot write the page of graph 'small'"):
        write_page(kgraph.lift(model), tmp_path / "file" / "page.html")


def test_html_dumps_are_the_page_and_the_static_page_stays(tmp_path) -> None:
    graph, pruned = small_pruned()
    text = dump(pruned, tmp_path / "p.html", compare=graph).read_text(encoding="utf-8")
    assert 'id="kgraph-data"' in text and "152 → 76" in text
    plain = pruned.dump(tmp_path / "q.html").read_text(encoding="utf-8")
    assert 'id="kgraph-data"' in plain and "152 → 76" not in plain  # no comparison asked for
    static = dump(pruned, tmp_path / "s.html", layout="builtin", compare=graph).read_text()
    assert "<script" not in static and "weights changed" in static
    with pytest.raises(kgraph.KGraphError, match="layout must be 'auto', 'graphviz' or 'builtin'"):
        dump(pruned, tmp_path / "t.html", layout="neato")


# ---------------------------------------------------------------------- a real browser


class Browser:
    """Headless Chromium driven through the DevTools protocol over a pipe."""

    def __init__(self, profile: Path, width: int = 1600, height: int = 1000) -> None:
        child_in, self._out = os.pipe()
        self._in, child_out = os.pipe()
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
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.process = subprocess.Popen(  # the protocol reads fd 3 and writes fd 4
            ["bash", "-c", f'exec "$@" 3<&{child_in} 4>&{child_out}', "chromium", *command],
            pass_fds=(child_in, child_out),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(child_in)
        os.close(child_out)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        attached = self.call("Target.attachToTarget", targetId=target, flatten=True)
        self.session = attached["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _message(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params: Any) -> dict:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def open(self, path: Path) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=path.resolve().as_uri())
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < deadline, "the page did not load"
            self.events.append(self._message())

    def js(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            session=True,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise AssertionError(json.dumps(result["exceptionDetails"])[:2000])
        return result["result"].get("value")

    def errors(self) -> list[str]:
        return [
            json.dumps(e["params"])[:500]
            for e in self.events
            if e.get("method") == "Runtime.exceptionThrown"
        ]

    def mouse(self, kind: str, x: float, y: float, **extra: Any) -> None:
        self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, **extra)

    def click(self, x: float, y: float) -> None:
        self.mouse("mousePressed", x, y, button="left", buttons=1, clickCount=1)
        self.mouse("mouseReleased", x, y, button="left", buttons=0, clickCount=1)

    def click_on(self, selector: str) -> None:
        """A real mouse click in the middle of the first element `selector` finds."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            "if (!(e instanceof SVGElement)) e.scrollIntoView({block: 'center'});"
            "const r = e.getBoundingClientRect();"
            "return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        self.click(*box)

    def click_node(self, name: str) -> None:
        """A real mouse click on the node called `name`."""
        index = self.js(
            "[...document.querySelectorAll('.node')].find(e => e.querySelector('title')"
            f".textContent === {json.dumps(name)}).dataset.i"
        )
        self.click_on(f"#n{index}")

    def type(self, selector: str, text: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", session=True, text=text)

    def press(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent",
                session=True,
                type=kind,
                key=key,
                code=key,
                windowsVirtualKeyCode=code,
            )

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._in)
        os.close(self._out)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    opened = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def resnet_page(resnet, tmp_path_factory) -> Path:
    graph, pruned = resnet
    return write_page(pruned, tmp_path_factory.mktemp("pages") / "resnet.html", compare=graph)


VISIBLE_NODES = (
    "[...document.querySelectorAll('.node')].filter(e => e.getBoundingClientRect().width > 0)"
    ".length"
)

# Every drawn edge, sampled every 2 px: no sample may lie inside a visible node box,
# closed block or (for top-level edges) open block frame. Returns the offenders.
EDGES_THROUGH_BOXES = """(() => {
  const boxes = [...document.querySelectorAll(
    '.node, .block.closed .shut > rect:first-of-type, .block:not(.closed) .frame')]
    .map(e => [e, e.getBoundingClientRect()]).filter(([, r]) => r.width > 0);
  const bad = [];
  for (const p of document.querySelectorAll('#top-edges path, .block:not(.closed) .edges path')) {
    const m = p.getScreenCTM(), length = p.getTotalLength(), own = p.closest('.block');
    for (let s = 0; s <= length; s += 2) {
      const q = p.getPointAtLength(s);
      const x = m.a * q.x + m.c * q.y + m.e, y = m.b * q.x + m.d * q.y + m.f;
      for (const [e, r] of boxes) {
        if (own && e.classList.contains('frame') && e.closest('.block') === own) continue;
        if (x > r.left + 1.5 && x < r.right - 1.5 && y > r.top + 1.5 && y < r.bottom - 1.5) {
          bad.push([p.getAttribute('d').slice(0, 60), e.id || e.parentNode.parentNode.id]);
          break;
        }
      }
    }
  }
  return bad.slice(0, 5);
})()"""


@needs_chromium
def test_search_finds_a_layer_opens_its_block_and_centres_it(browser, resnet_page) -> None:
    browser.open(resnet_page)
    assert browser.js(VISIBLE_NODES) == 10  # ResNet50 starts with its 16 blocks closed
    browser.type("#search", "conv4_block3_2_conv")
    assert browser.js("document.querySelectorAll('.node.match').length") == 1
    assert browser.js("document.querySelector('.block.match').dataset.block") == "conv4_block3"
    browser.press("Enter", 13)
    state = browser.js("""(() => {
      const node = document.querySelector('.node.selected'), c = document.getElementById('canvas');
      const r = node.getBoundingClientRect(), v = c.getBoundingClientRect();
      return {name: node.querySelector('title').textContent, classes: [...node.classList],
        open: !node.closest('.block').classList.contains('closed'),
        centre: [r.left + r.width / 2 - v.left, r.top + r.height / 2 - v.top],
        canvas: [v.width, v.height], found: document.getElementById('found').textContent,
        details: document.getElementById('details').textContent,
        row: document.querySelector('tr.sel').id};
    })()""")
    assert state["name"] == "conv4_block3_2_conv"
    assert {"match", "selected"} <= set(state["classes"]) and state["open"]
    (x, y), (w, h) = state["centre"], state["canvas"]
    assert abs(x - w / 2) < 2 and abs(y - h / 2) < 2  # scrolled into view: in the middle
    assert state["found"] == "1 / 1" and state["row"] == "row-conv4_block3_2_conv"
    assert "Conv2D[filters 256→128, 3x3]" in state["details"]
    assert "3x3x128x128 → 3x3x128x128" not in state["details"]
    assert "3x3x256x256 → 3x3x128x128" in state["details"]  # kernel before → after
    assert browser.js(VISIBLE_NODES) == 10 + 10
    browser.js("document.getElementById('search').value = 'block1_out'")
    browser.js("document.getElementById('search').dispatchEvent(new Event('input'))")
    assert browser.js("document.querySelectorAll('.node.match').length") == 4
    assert browser.errors() == []


@needs_chromium
def test_blocks_close_and_open_with_the_mouse(browser, resnet_page) -> None:
    browser.open(resnet_page)
    selector = '[data-block="conv2_block1"] .shut'
    browser.click_on(selector)
    assert browser.js(VISIBLE_NODES) == 10 + 12
    assert browser.js("document.querySelector('[data-block=conv2_block1]').className.baseVal") == (
        "block changed"
    )
    browser.click_on("button[data-do=fit]")  # conv2_block2 went down, out of sight
    browser.click_on('[data-block="conv2_block2"] .shut')
    assert browser.js(VISIBLE_NODES) == 10 + 12 + 10
    assert browser.js(EDGES_THROUGH_BOXES) == []
    browser.click_on("button[data-do=width]")
    browser.click_on('[data-block="conv2_block1"] .head text')
    assert browser.js(VISIBLE_NODES) == 10 + 10
    browser.click_on("button[data-do=expand]")
    assert browser.js(VISIBLE_NODES) == 178
    assert browser.js(EDGES_THROUGH_BOXES) == []
    browser.click_on("button[data-do=collapse]")
    assert browser.js(VISIBLE_NODES) == 10
    assert browser.js(EDGES_THROUGH_BOXES) == []
    assert browser.errors() == []


@needs_chromium
def test_the_browser_draws_the_layout_python_computed(browser, resnet, resnet_page) -> None:
    _, pruned = resnet
    drawn = layout(pruned)
    browser.open(resnet_page)
    browser.click_on("button[data-do=expand]")
    placed = browser.js("""(() => {
      const out = {};
      for (const e of document.querySelectorAll('[data-item]')) {
        const m = /translate\\(([-\\d.e]+),([-\\d.e]+)\\)/.exec(e.getAttribute('transform'));
        out[e.dataset.block || e.querySelector('title').textContent] = [+m[1], +m[2]];
      }
      return out;
    })()""")
    expected = {**drawn.frames, **{n: b for n, b in drawn.boxes.items() if n in placed}}
    assert set(placed) == set(expected)
    for name, (x, y) in placed.items():
        assert abs(x - expected[name].x) < 0.2 and abs(y - expected[name].y) < 0.2, name


@needs_chromium
def test_a_half_pruned_node_is_coloured_and_an_untouched_one_is_not(browser, tmp_path) -> None:
    graph, pruned = small_pruned()
    page = write_page(pruned, tmp_path / "small.html", compare=graph)
    browser.open(page)
    fills = browser.js("""(() => {
      const fill = name => { const n = [...document.querySelectorAll('.node')]
        .find(e => e.querySelector('title').textContent === name);
        return getComputedStyle(n.querySelector('rect')).fill; };
      return {conv: fill('conv'), side: fill('side'), conv2: fill('conv2'), drop: fill('drop')};
    })()""")
    assert fills["conv"] == "rgb(253, 141, 60)"  # 4 of 8 channels: the strong colour
    assert fills["side"] == fills["conv2"] == "rgb(255, 255, 255)"  # all channels kept
    assert fills["conv"] != fills["side"]
    strokes = dict(
        browser.js("""(() => [...document.querySelectorAll('.node')].map(e =>
          [e.querySelector('title').textContent, getComputedStyle(e.firstElementChild.nextSibling)
            .stroke]))()""")
    )
    assert strokes["drop"] == "rgb(46, 125, 50)"  # a new layer: green border
    assert strokes["conv2"] == "rgb(230, 81, 0)"  # changed (reads fewer channels): orange
    shot = tmp_path / "small.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 10_000
    assert browser.errors() == []


@needs_chromium
def test_the_table_sorts_by_params_flops_and_fraction_kept(browser, resnet_page) -> None:
    browser.open(resnet_page)
    read = "[...document.querySelectorAll('.layers tbody tr')].map(r => +r.dataset.{})"
    for key in ("params", "flops", "kept"):
        browser.click_on(f"th[data-key={key}]")
        values = browser.js(read.format(key))
        assert len(values) == 178 and values == sorted(values, reverse=True), key
        browser.js(f"document.querySelector('th[data-key={key}]').click()")
        assert browser.js(read.format(key)) == sorted(values), key
    first = browser.js("document.querySelector('.layers tbody tr').id")
    assert first.startswith("row-")
    browser.click_on("th[data-key=params]")
    assert browser.js("document.querySelector('.layers tbody tr').id") == "row-predictions"
    browser.click_on("th[data-key=order]")
    assert browser.js(read.format("order")) == list(range(178))


@needs_chromium
def test_wheel_zooms_drag_pans_and_a_click_selects(browser, resnet_page) -> None:
    browser.open(resnet_page)
    scale = (
        "+/scale\\(([\\d.]+)\\)/.exec(document.getElementById('viewport')"
        ".getAttribute('transform'))[1]"
    )
    move = (
        "/translate\\(([-\\d.]+),([-\\d.]+)\\)/.exec(document.getElementById('viewport')"
        ".getAttribute('transform')).slice(1).map(Number)"
    )
    before = browser.js(scale)
    browser.mouse("mouseWheel", 500, 500, deltaX=0, deltaY=-400)
    assert browser.js(scale) > before * 1.5
    browser.click_on("button[data-do=out]")
    start = browser.js(move)
    browser.mouse("mousePressed", 300, 600, button="left", buttons=1, clickCount=1)
    browser.mouse("mouseMoved", 350, 500, button="left", buttons=1)
    browser.mouse("mouseMoved", 400, 400, button="left", buttons=1)
    browser.mouse("mouseReleased", 400, 400, button="left", buttons=0, clickCount=1)
    end = browser.js(move)
    assert abs(end[0] - start[0] - 100) < 1 and abs(end[1] - start[1] + 200) < 1
    assert browser.js("document.querySelectorAll('.node.selected').length") == 0
    browser.click_on("button[data-do=fit]")
    browser.click_node("conv1_conv")
    assert browser.js("document.querySelector('.node.selected title').textContent") == "conv1_conv"
    details = browser.js("document.getElementById('details').textContent")
    for text in ("Conv2D[filters 64→32, 7x7]", "32/64 (50%)", "status", "kernel", "7x7x3x32"):
        assert text in details
    assert browser.errors() == []


@needs_chromium
def test_a_transformer_page_searches_inside_its_layers(browser, bert, tmp_path) -> None:
    graph, pruned = bert
    page = write_page(pruned, tmp_path / "bert.html", compare=graph)
    browser.open(page)
    assert browser.js("document.querySelectorAll('.block.closed').length") == len(blocks(pruned))
    browser.type("#search", "transformer_layer_7_feedforward_intermediate")
    browser.press("Enter", 13)
    assert browser.js("document.querySelector('.node.selected title').textContent") == (
        "transformer_layer_7_feedforward_intermediate_dense"
    )
    assert browser.js("document.querySelector('.node.selected text').textContent") == (
        "feedforward_intermediate_dense"  # shown inside its block without the block's name
    )
    assert "16/32 (50%)" in browser.js("document.getElementById('details').textContent")
    browser.click_on("button[data-do=expand]")
    assert browser.js(EDGES_THROUGH_BOXES) == []
    assert browser.errors() == []


# ---------------------------------------------------------------------- the docs' screenshots

DOCS_IMAGES = ROOT / "docs" / "images"


def test_the_docs_show_the_screenshots() -> None:
    guide = (ROOT / "docs" / "dumps.md").read_text(encoding="utf-8")
    for name in ("resnet50-page.png", "bert-page.png"):
        image = DOCS_IMAGES / name
        assert f"images/{name}" in guide
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert image.stat().st_size < 300_000


def draw_docs_images(folder: Path = DOCS_IMAGES) -> list[Path]:
    """Screenshots of the two pages the docs show (1600 x 1000)."""
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    browser = Browser(work / "profile")
    written = []
    try:
        model = keras.applications.ResNet50(weights=None)
        small = kgraph.prune(model, 0.5, "l1", scope="global", round_to=8)
        page = write_page(
            kgraph.lift(small),
            work / "resnet.html",
            compare=kgraph.lift(model),
            title="ResNet50, half the channels pruned (global L1)",
        )
        browser.open(page)
        for key in ("conv2_block1", "conv2_block2"):
            browser.click_on(f'[data-block="{key}"] .shut')
        browser.type("#search", "conv2_block1_out")
        browser.press("Enter", 13)
        browser.click_on("button[data-do=out]")
        written.append(folder / "resnet50-page.png")
        browser.screenshot(written[-1])
        bert = kgraph.lift(tiny_bert())
        page = write_page(prune_graph(bert, 0.5, heads=0.5), work / "bert.html", compare=bert)
        browser.open(page)
        browser.click_on('[data-block="transformer_layer_0"] .shut')
        browser.type("#search", "transformer_layer_0_self_attention_layer")
        browser.press("Enter", 13)
        browser.click_on("button[data-do=out]")
        browser.click_on("button[data-do=out]")
        written.append(folder / "bert-page.png")
        browser.screenshot(written[-1])
    finally:
        browser.close()
        shutil.rmtree(work, ignore_errors=True)
    return written


if __name__ == "__main__":
    for path in draw_docs_images(Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS_IMAGES):
        print(path, path.stat().st_size)
