"""Lowering creates variables from kgraph's arrays without touching Keras for anyone else."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest

import kgraph
from kgraph import deferred, weight_feed
from kgraph.errors import LowerError
from kgraph.passes import DeleteChannels
from kgraph.weight_feed import build_layer


def _model() -> keras.Model:
    inputs = keras.Input((12,))
    x = keras.layers.Dense(16, activation="relu", name="a")(inputs)
    x = keras.layers.Dense(16, activation="relu", name="b")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="c")(x))


def test_other_threads_building_layers_are_not_fed_kgraph_weights() -> None:
    model = _model()
    model.set_weights([np.full(w.shape, 0.5, w.dtype) for w in model.get_weights()])
    graph = kgraph.lift(model).apply(DeleteChannels("a", [0, 1]))
    x = np.random.default_rng(0).normal(size=(3, 12)).astype("float32")
    expected = keras.ops.convert_to_numpy(graph.lower()(x))

    stop = threading.Event()
    built: list[np.ndarray] = []
    failures: list[BaseException] = []

    def build_zeros() -> None:
        try:
            while not stop.is_set():
                layer = keras.layers.Dense(16, kernel_initializer="zeros", bias_initializer="zeros")
                layer.build((None, 12))
                built.extend(keras.ops.convert_to_numpy(w) for w in layer.weights)
        except BaseException as error:  # reported below
            failures.append(error)

    workers = [threading.Thread(target=build_zeros) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        results = [keras.ops.convert_to_numpy(graph.lower()(x)) for _ in range(20)]
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert not failures
    assert len(built) > 0
    assert all(not w.any() for w in built), "a layer of another thread got kgraph's weights"
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_build_layer_feeds_the_arrays_without_initialising_from_the_initialisers() -> None:
    kernel = np.arange(12, dtype="float32").reshape(3, 4)
    bias = np.ones(4, dtype="float32")
    built = build_layer(
        lambda: keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer="zeros"),
        lambda layer: layer(keras.KerasTensor((None, 3))),
        [kernel, bias],
    )
    assert built.fed
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(built.layer.kernel), kernel)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(built.layer.bias), bias)
    assert tuple(built.outputs.shape) == (None, 4)


def test_a_new_variable_keeps_the_adopted_buffer_without_a_copy() -> None:
    """On every backend the variable made from `_adopt`'s tensor reads the gathered buffer."""
    array = deferred.aligned_empty((3, 4), np.float32)
    array[...] = np.arange(12).reshape(3, 4)
    adopted = weight_feed._adopt(array)
    assert not isinstance(adopted, np.ndarray)  # a backend tensor, not the array itself
    variable = keras.Variable(lambda shape, dtype: adopted, shape=(3, 4), dtype="float32")
    array[1, 2] = -1.0  # written after the variable was made: seen only through one buffer
    assert keras.ops.convert_to_numpy(variable)[1, 2] == -1.0


def test_arrays_that_do_not_line_up_go_through_set_weights() -> None:
    with pytest.raises(ValueError):  # set_weights refuses them; lower turns it into LowerError
        build_layer(
            lambda: keras.layers.Dense(4, use_bias=False),
            lambda layer: layer(keras.KerasTensor((None, 3))),
            [np.zeros((3, 2), dtype="float32")],
        )


def test_a_failed_build_leaves_no_pending_variable_behind() -> None:
    from keras.src.backend.common import global_state

    before = list(global_state.get_global_attribute("uninitialized_variables") or [])

    def fail(layer):
        layer.build((None, 3))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_layer(lambda: keras.layers.Dense(4), fail, [])
    after = list(global_state.get_global_attribute("uninitialized_variables") or [])
    assert [id(v) for v in after] == [id(v) for v in before]


def test_lowering_inside_a_stateless_scope_is_refused_clearly() -> None:
    graph = kgraph.lift(_model())
    with keras.StatelessScope(), pytest.raises(LowerError, match="StatelessScope"):
        graph.lower()


def test_layer_identity_is_a_weak_reference_not_an_id() -> None:
    import gc
    import weakref

    model = _model()
    graph = kgraph.lift(model)
    assert graph.find(model.get_layer("b")) == ["b"]
    assert isinstance(graph.node("b").origin, weakref.ref)
    other = _model()
    with pytest.raises(kgraph.LayerNotFoundError):
        graph.find(other.get_layer("b"))  # same name, another model's layer
    del model
    gc.collect()
    assert graph.node("b").origin() is None  # the graph keeps no layer alive
    assert graph.find("b") == ["b"]
