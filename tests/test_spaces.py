"""Channel spaces are typed records, and channel groups say why they are not prunable."""

from __future__ import annotations

import keras

import kgraph
from kgraph.ir import ConcatSpace, Derivation, DerivedSpace, MergeSpace, Space


def test_spaces_say_their_parts_bases_and_origin() -> None:
    a, b, c = Space("conv1#0"), Space("conv2#1"), Space("conv3#2")
    inner = ConcatSpace("cat1", (a, b), (4, 8))
    outer = ConcatSpace("cat2", (inner, c), (12, 2))
    assert outer.offset_of(b) == (4, 8)
    assert outer.offset_of(c) == (12, 2)
    assert outer.offset_of(Space("other#3")) is None
    assert list(outer.bases()) == [a, b, c]
    assert outer.width == 14 and outer.origin == "cat2" and a.origin == "conv1"
    merged = MergeSpace("add", (a, c))
    assert merged.element and a.element and not outer.element
    flat = DerivedSpace(Derivation.FLATTEN, "flatten", merged)
    assert flat.derives_from(merged) and not flat.derives_from(a)
    assert list(flat.bases()) == [a, c]
    # value equality for records, identity for base spaces
    assert ConcatSpace("cat1", (a, b), (4, 8)) == inner
    assert hash(ConcatSpace("cat1", (a, b), (4, 8))) == hash(inner)
    assert Space("conv1#0") != a


def test_lifted_tensors_carry_typed_spaces() -> None:
    x = keras.Input((8, 8, 3), name="x")
    a = keras.layers.Conv2D(4, 1, name="a")(x)
    b = keras.layers.Conv2D(4, 1, name="b")(x)
    cat = keras.layers.Concatenate(name="cat")([a, b])
    added = keras.layers.Add(name="add")([a, b])
    flat = keras.layers.Flatten(name="flat")(cat)
    model = keras.Model(x, [flat, added])
    graph = kgraph.lift(model)
    cat_space = graph.node("cat").outputs[0].space
    assert isinstance(cat_space, ConcatSpace)
    assert cat_space.parts == (graph.node("a").outputs[0].space, graph.node("b").outputs[0].space)
    assert isinstance(graph.node("add").outputs[0].space, MergeSpace)
    flat_space = graph.node("flat").outputs[0].space
    assert isinstance(flat_space, DerivedSpace) and flat_space.kind is Derivation.FLATTEN
    assert flat_space.source == cat_space


def test_groups_name_why_they_are_not_prunable() -> None:
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(5, name="h")(x)
    out = keras.layers.Dense(1, name="out")(h)
    groups = {g.owners[0]: g for g in kgraph.channel_groups(keras.Model(x, out))}
    assert groups["h"].prunable and groups["h"].blocker is None
    assert groups["out"].blocker is kgraph.Blocker.MODEL_OUTPUT
    assert "reach" in groups["out"].reason
