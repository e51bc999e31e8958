"""Keras-Prune's names (`kgraph.compat.kerasprune`): the same results as kerassurgeon's.

Keras-Prune's README model (Dense, Conv2D, MaxPool2D, Activation, Flatten in a
Sequential) pruned through `prune.delete_neurons` and `identify` must give the weights
kerassurgeon's `delete_channels` gives, which are `np.delete` of the original weights.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kgraph
from kgraph.compat import kerasprune
from kgraph.compat.kerasprune import identify
from kgraph.compat.kerasprune.prune import delete_neurons
from kgraph.compat.kerassurgeon import identify as surgeon_identify
from kgraph.compat.kerassurgeon.operations import delete_channels

L = keras.layers


def keras_prune_model() -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            L.Conv2D(6, 3, name="conv_1"),
            L.Activation("relu", name="act_1"),
            L.MaxPool2D(2, name="pool_1"),
            L.Flatten(name="flat"),
            L.Dense(8, name="dense_1"),
            L.Activation("relu", name="act_2"),
            L.Dense(3, name="dense_2"),
        ]
    )


def weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    return {layer.name: layer.get_weights() for layer in model.layers}


def assert_same_weights(a: keras.Model, b: keras.Model) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert len(wa[name]) == len(wb[name])
        for x, y in zip(wa[name], wb[name]):
            np.testing.assert_array_equal(x, y)


def test_delete_neurons_is_delete_channels_by_another_name() -> None:
    model = keras_prune_model()
    conv_w, conv_b = model.get_layer("conv_1").get_weights()
    dense_w, dense_b = model.get_layer("dense_1").get_weights()
    out_w, _ = model.get_layer("dense_2").get_weights()
    neurons = [1, 4]
    by_position = delete_neurons(model, model.get_layer("conv_1"), neurons)
    by_name = delete_neurons(model=model, layer="conv_1", neurons=neurons)
    reference = delete_channels(model, model.get_layer("conv_1"), neurons)
    assert_same_weights(by_position, reference)
    assert_same_weights(by_name, reference)
    new_conv_w, new_conv_b = by_position.get_layer("conv_1").get_weights()
    np.testing.assert_array_equal(new_conv_w, np.delete(conv_w, neurons, axis=-1))
    np.testing.assert_array_equal(new_conv_b, np.delete(conv_b, neurons))
    # flatten of (5, 5, 6): channel c of position p is row 6 * p + c
    rows = [6 * p + c for p in range(25) for c in neurons]
    np.testing.assert_array_equal(
        by_position.get_layer("dense_1").get_weights()[0], np.delete(dense_w, rows, axis=0)
    )

    dense = delete_neurons(model, "dense_1", [0, 7], None, None)  # every argument by position
    assert_same_weights(dense, delete_channels(model, "dense_1", [0, 7]))
    np.testing.assert_array_equal(
        dense.get_layer("dense_1").get_weights()[1], np.delete(dense_b, [0, 7])
    )
    np.testing.assert_array_equal(
        dense.get_layer("dense_2").get_weights()[0], np.delete(out_w, [0, 7], axis=0)
    )


def test_identify_is_kerassurgeons_identify() -> None:
    assert identify.get_apoz is surgeon_identify.get_apoz
    assert identify.high_apoz is surgeon_identify.high_apoz
    model = keras_prune_model()
    x = np.random.default_rng(0).normal(size=(32, 12, 12, 1)).astype("float32")
    apoz = identify.get_apoz(model, model.get_layer("dense_1"), x)
    # the ReLU after dense_1 is zero where dense_1's output is <= 0
    probe = keras.Model(model.inputs, model.get_layer("dense_1").output)
    np.testing.assert_allclose(apoz, (probe.predict(x, verbose=0) <= 0).mean(axis=0))
    neurons = identify.high_apoz(apoz, "absolute", cutoff_absolute=float(np.median(apoz)))
    assert_same_weights(
        delete_neurons(model, "dense_1", neurons),
        delete_channels(
            model,
            "dense_1",
            surgeon_identify.high_apoz(apoz, "absolute", cutoff_absolute=float(np.median(apoz))),
        ),
    )


def test_errors_are_kerassurgeons() -> None:
    model = keras_prune_model()
    with pytest.raises(kgraph.KGraphError):
        delete_neurons(model, "conv_1", [6])  # out of range
    with pytest.raises(kerasprune.KerasSurgeonError):
        identify.high_apoz(np.zeros(3), method="median")
