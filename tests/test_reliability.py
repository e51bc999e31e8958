"""Reliability: no silent wrong result, clear errors, any depth."""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest

import kgraph
from kgraph.passes import DeleteChannels, ReplaceLayer

SCALE = 3.0  # a module-level name a Lambda reads


def flip_model() -> keras.Model:
    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(4, name="dense")(x)
    y = keras.layers.Lambda(lambda t: keras.ops.flip(t, axis=-1) * SCALE, name="flip")(h)
    return keras.Model(x, y)


def test_an_untouched_lambda_keeps_its_globals() -> None:
    model = flip_model()
    x = np.arange(8, dtype="float32").reshape(2, 4)
    lowered = kgraph.lift(model).lower()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(lowered(x)), keras.ops.convert_to_numpy(model(x))
    )


def test_a_new_lambda_keeps_its_globals_too() -> None:
    model = flip_model()
    graph = kgraph.lift(model)
    scaled = keras.layers.Lambda(lambda t: keras.ops.flip(t, axis=-1) * SCALE * 2, name="flip2")
    lowered = graph.apply(ReplaceLayer("flip", scaled)).lower()
    x = np.ones((1, 4), "float32")
    expected = keras.ops.convert_to_numpy(model(x)) * 2
    np.testing.assert_allclose(keras.ops.convert_to_numpy(lowered(x)), expected, rtol=1e-6)


def test_keras_errors_reach_users_without_terminal_colour_codes() -> None:
    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Reshape((2, 2), name="reshape")(keras.layers.Dense(4)(x)))
    graph = kgraph.lift(model)
    with pytest.raises(kgraph.KGraphError) as error:
        graph.apply(DeleteChannels("dense", [0])).lower()
    assert "\x1b[" not in str(error.value)


def deep_chain(depth: int) -> keras.Model:
    x = keras.Input((3,), name="x")
    y = x
    for i in range(depth):
        y = keras.layers.Dense(3, name=f"d{i}")(y)
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(20 * depth + 1000)  # Keras itself needs it to build this model
    try:
        return keras.Model(x, y)
    finally:
        sys.setrecursionlimit(before)


@pytest.mark.slow
def test_a_ten_thousand_layer_chain_lifts_prunes_and_lowers() -> None:
    model = deep_chain(10_000)
    limit = sys.getrecursionlimit()
    graph = kgraph.lift(model)
    pruned = graph.apply(DeleteChannels("d5000", [0])).lower()
    assert sys.getrecursionlimit() == limit  # raised only while lowering
    x = np.ones((2, 3), "float32")
    assert keras.ops.convert_to_numpy(pruned(x)).shape == (2, 3)
    assert pruned.get_layer("d5001").get_weights()[0].shape == (2, 3)


def test_a_deep_chain_lowers_under_the_default_recursion_limit() -> None:
    model = deep_chain(1500)
    limit = sys.getrecursionlimit()
    small = kgraph.prune(model, 0.34)
    assert sys.getrecursionlimit() == limit
    assert small.count_params() < model.count_params()
    assert keras.ops.convert_to_numpy(small(np.ones((1, 3), "float32"))).shape == (1, 3)


def test_messages_name_outputs_by_the_layer_feeding_them() -> None:
    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(3, name="head")(keras.layers.Dense(5, name="h")(x)))
    groups = {g.owners[0]: g for g in kgraph.channel_groups(model)}
    assert groups["head"].reason == "they reach model output 0 (from 'head')"


def test_changing_an_output_s_shape_works_and_warns(caplog) -> None:
    x = keras.Input((4,))
    h = keras.layers.Dense(5, name="h")(x)
    model = keras.Model(x, keras.layers.Dense(3, name="head")(h))
    graph = kgraph.lift(model)
    with caplog.at_level("WARNING", logger="kgraph"):
        smaller = graph.apply(DeleteChannels("head", [0])).lower()
    assert smaller.output.shape == (None, 2)
    assert "changes the shape of the model outputs" in caplog.text and "'head'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="kgraph"):
        shorter = graph.apply(kgraph.DeleteLayer("head")).lower()
    assert shorter.output.shape == (None, 5)
    assert (
        "model output 0 (from 'head') return its input (shape (None, 5) instead of (None, 3))"
        in caplog.text
    )
    caplog.clear()
    square = keras.Model(x, keras.layers.Dense(4, name="head")(x))  # output shape kept
    with caplog.at_level("WARNING", logger="kgraph"):
        kgraph.lift(square).apply(kgraph.DeleteLayer("head")).lower()
    assert "model output 0 (from 'head') return its input (its shape)" in caplog.text
