"""The kerassurgeon compatibility layer: kerassurgeon's scenarios through its API.

Channel deletions run the dead-channel oracle (the channels to delete are zeroed in
a copy; deleting them through the compat API must leave the outputs unchanged) and
compare sliced weights with `np.delete` of the original weights. Every operation and
every failure must leave the input model unchanged (`fingerprint`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import pytest
from helpers import (
    assert_same_outputs,
    dead_copy,
    fingerprint,
    gate_columns,
    sample_inputs,
    weights_of,
)

import kgraph
from kgraph.compat.kerassurgeon import KerasSurgeonError, Surgeon, identify, operations
from kgraph.compat.kerassurgeon.identify import get_apoz, high_apoz
from kgraph.compat.kerassurgeon.operations import (
    delete_channels,
    delete_layer,
    insert_layer,
    replace_layer,
)

L = keras.layers


# ---------------------------------------------------------------- helpers


def layer_names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers]


def assert_independent(new: keras.Model, old: keras.Model) -> None:
    """`new` shares no layer object with `old`."""
    assert not {id(layer) for layer in new.layers} & {id(layer) for layer in old.layers}


def check_compat_dead_channels(
    model: keras.Model,
    deletions: Mapping[str, Sequence[int]],
    batchnorms: Mapping[str, Sequence[int]] | None = None,
) -> keras.Model:
    """The dead-channel oracle through the compat API; returns the pruned model.

    One deletion goes through `operations.delete_channels`, several through one
    `Surgeon` (a job each, layers given as Layer objects).
    """
    before = fingerprint(model)
    dead = dead_copy(model, deletions, batchnorms)
    dead_before = fingerprint(dead)
    if len(deletions) == 1:
        ((name, channels),) = deletions.items()
        pruned = delete_channels(dead, dead.get_layer(name), channels)
    else:
        surgeon = Surgeon(dead)
        for name, channels in deletions.items():
            surgeon.add_job("delete_channels", dead.get_layer(name), channels=channels)
        pruned = surgeon.operate()
    assert_same_outputs(dead, pruned, sample_inputs(model), rtol=1e-5, atol=1e-5)
    assert fingerprint(dead) == dead_before
    assert fingerprint(model) == before
    assert_independent(pruned, dead)
    return pruned


def image_input(rank: int, data_format: str, channels: int = 2) -> keras.KerasTensor:
    spatial = {1: (9,), 2: (8, 8), 3: (6, 6, 6)}[rank]
    shape = (channels, *spatial) if data_format == "channels_first" else (*spatial, channels)
    return keras.Input(shape, name="x")


CONV = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}


def dense_chain() -> keras.Model:
    """x(5) -> d1(4, relu) -> d2(4, relu) -> d3(2), as a Sequential model."""
    return keras.Sequential(
        [
            keras.Input((5,), name="x"),
            L.Dense(4, activation="relu", name="d1"),
            L.Dense(4, activation="relu", name="d2"),
            L.Dense(2, name="d3"),
        ],
        name="chain",
    )


def built_dense(units: int, inputs: int, name: str, seed: int, **kwargs) -> L.Dense:
    """A Dense layer built for `inputs` features, with known random weights."""
    layer = L.Dense(units, name=name, **kwargs)
    layer.build((None, inputs))
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32") for w in layer.weights])
    return layer


def expected_chain(model: keras.Model, middle: list[L.Layer]) -> keras.Model:
    """d1 -> `middle` -> d3 by hand, d1 and d3 with `model`'s weights."""
    x = keras.Input((5,))
    d1 = L.Dense(4, activation="relu")
    d3 = L.Dense(2)
    y = d1(x)
    for layer in middle:
        y = layer(y)
    expected = keras.Model(x, d3(y))
    d1.set_weights(weights_of(model, "d1"))
    d3.set_weights(weights_of(model, "d3"))
    return expected


def shared_on_two_inputs() -> keras.Model:
    """`shared` called on x1 (node index 0) and x2 (node index 1); outputs list x2's first."""
    x1, x2 = keras.Input((5,), name="x1"), keras.Input((5,), name="x2")
    shared = L.Dense(4, activation="relu", name="shared")
    h1, h2 = shared(x1), shared(x2)
    out_2 = L.Dense(2, name="head_2")(h2)
    out_1 = L.Dense(2, name="head_1")(h1)
    return keras.Model([x1, x2], [out_2, out_1], name="two_calls")


def relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0)


# ---------------------------------------------------------------- the public surface


def test_kerassurgeon_import_paths() -> None:
    import kgraph.compat.kerassurgeon as ks

    assert ks.Surgeon is Surgeon
    assert ks.operations.delete_channels is delete_channels
    assert ks.identify.get_apoz is get_apoz
    assert operations is ks.operations and identify is ks.identify
    assert Surgeon.valid_jobs == (
        "delete_layer",
        "insert_layer",
        "replace_layer",
        "delete_channels",
    )
    assert issubclass(KerasSurgeonError, kgraph.KGraphError)
    assert issubclass(KerasSurgeonError, ValueError)  # what kerassurgeon raised


# ---------------------------------------------------------------- delete_channels


@pytest.mark.parametrize("channels", [[0], [1, 3], [-1, -4]])
def test_conv_to_conv(channels: list[int], data_format: str) -> None:
    x = image_input(2, data_format)
    y = L.Conv2D(4, 2, name="conv_1", data_format=data_format, activation="relu")(x)
    y = L.Conv2D(3, 2, name="conv_2", data_format=data_format)(y)
    model = keras.Model(x, y)
    pruned = check_compat_dead_channels(model, {"conv_1": channels})
    idx = sorted(c % 4 for c in channels)
    k1, b1 = weights_of(model, "conv_1")
    k2, b2 = weights_of(model, "conv_2")
    np.testing.assert_array_equal(weights_of(pruned, "conv_1")[0], np.delete(k1, idx, axis=-1))
    np.testing.assert_array_equal(weights_of(pruned, "conv_1")[1], np.delete(b1, idx))
    np.testing.assert_array_equal(weights_of(pruned, "conv_2")[0], np.delete(k2, idx, axis=-2))
    np.testing.assert_array_equal(weights_of(pruned, "conv_2")[1], b2)
    assert pruned.get_layer("conv_1").filters == 4 - len(idx)
    assert pruned.get_layer("conv_1").data_format == data_format


def test_negative_channels_mean_the_same_as_positive_ones() -> None:
    x = keras.Input((6,))
    y = L.Dense(3, name="dense")(L.Dense(5, name="d1")(x))
    model = keras.Model(x, y)
    negative = delete_channels(model, "d1", [-1, -5])
    positive = delete_channels(model, "d1", [4, 0])
    for a, b in zip(negative.get_weights(), positive.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        weights_of(negative, "dense")[0], np.delete(weights_of(model, "dense")[0], [0, 4], axis=0)
    )


def flatten_rows(
    data_format: str, feature_shape: tuple[int, ...], channels: list[int]
) -> np.ndarray:
    """Rows of the Dense after a Flatten that read `channels`, found by running Keras' Flatten."""
    axis = 0 if data_format == "channels_first" else len(feature_shape) - 1
    index = [None] * len(feature_shape)
    index[axis] = slice(None)
    ids = (
        np.zeros(feature_shape, "float32")
        + np.arange(feature_shape[axis], dtype="float32")[tuple(index)]
    )
    flat = keras.ops.convert_to_numpy(L.Flatten(data_format=data_format)(ids[None]))[0]
    return np.flatnonzero(np.isin(flat, channels))


def test_conv_flatten_dense(data_format: str) -> None:
    x = image_input(2, data_format)
    y = L.Conv2D(3, 3, name="conv", data_format=data_format, activation="relu")(x)
    y = L.Flatten(name="flatten", data_format=data_format)(y)
    y = L.Dense(5, name="dense")(y)
    model = keras.Model(x, y)
    pruned = check_compat_dead_channels(model, {"conv": [0, 2]})
    feature_shape = tuple(model.get_layer("conv").output.shape[1:])
    rows = flatten_rows(data_format, feature_shape, [0, 2])
    assert rows.size == 2 * 36
    kernel, bias = weights_of(model, "dense")
    np.testing.assert_array_equal(weights_of(pruned, "dense")[0], np.delete(kernel, rows, axis=0))
    np.testing.assert_array_equal(weights_of(pruned, "dense")[1], bias)


PASS_THROUGH = [  # (family, rank, data_format, layer factory)
    ("pooling", 2, "channels_last", lambda df: L.MaxPooling2D(2, data_format=df)),
    ("pooling", 2, "channels_first", lambda df: L.MaxPooling2D(2, data_format=df)),
    ("pooling", 1, "channels_last", lambda df: L.AveragePooling1D(2, data_format=df)),
    ("cropping", 2, "channels_last", lambda df: L.Cropping2D(1, data_format=df)),
    ("cropping", 3, "channels_first", lambda df: L.Cropping3D(1, data_format=df)),
    ("padding", 1, "channels_last", lambda df: L.ZeroPadding1D(1)),
    ("padding", 2, "channels_first", lambda df: L.ZeroPadding2D(1, data_format=df)),
    ("upsampling", 1, "channels_last", lambda df: L.UpSampling1D(2)),
    ("upsampling", 2, "channels_last", lambda df: L.UpSampling2D(2, data_format=df)),
    ("upsampling", 3, "channels_last", lambda df: L.UpSampling3D(2, data_format=df)),
    ("upsampling", 2, "channels_first", lambda df: L.UpSampling2D(2, data_format=df)),
    ("dropout", 2, "channels_last", lambda df: L.Dropout(0.5)),
    ("dropout", 2, "channels_first", lambda df: L.SpatialDropout2D(0.5, data_format=df)),
    ("noise", 2, "channels_last", lambda df: L.GaussianNoise(0.5)),
    ("activation", 2, "channels_last", lambda df: L.Activation("relu")),
    ("activation", 2, "channels_last", lambda df: L.LeakyReLU()),
    ("activation", 1, "channels_last", lambda df: L.ReLU()),
]


@pytest.mark.parametrize(
    ("family", "rank", "data_format", "make"),
    PASS_THROUGH,
    ids=[f"{f}-{r}d-{df}-{i}" for i, (f, r, df, _) in enumerate(PASS_THROUGH)],
)
def test_pass_through_layers(family: str, rank: int, data_format: str, make) -> None:
    layer = make(data_format)
    x = image_input(rank, data_format)
    y = CONV[rank](4, 2, name="conv", data_format=data_format)(x)
    y = layer(y)
    y = CONV[rank](3, 1, name="conv_2", data_format=data_format)(y)
    model = keras.Model(x, y)
    pruned = check_compat_dead_channels(model, {"conv": [0, 2]})
    axis = 1 if data_format == "channels_first" else -1
    assert pruned.get_layer(layer.name).output.shape[axis] == 2
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_2")[0],
        np.delete(weights_of(model, "conv_2")[0], [0, 2], axis=-2),
    )


@pytest.mark.parametrize("merge", ["Add", "Multiply", "Average", "Maximum"])
def test_merge_with_the_same_channels_deleted_from_both_branches(merge: str) -> None:
    x = keras.Input((8, 8, 3), name="x")
    a = L.Conv2D(4, 3, name="conv_a", activation="relu")(x)
    b = L.Conv2D(4, 3, name="conv_b", activation="relu")(x)
    y = getattr(L, merge)(name="merge")([a, b])
    y = L.Conv2D(2, 3, name="conv_c")(y)
    model = keras.Model(x, y)
    pruned = check_compat_dead_channels(model, {"conv_a": [1, 3], "conv_b": [1, 3]})
    assert pruned.get_layer("merge").output.shape[-1] == 2
    for name in ("conv_a", "conv_b"):
        np.testing.assert_array_equal(
            weights_of(pruned, name)[0], np.delete(weights_of(model, name)[0], [1, 3], axis=-1)
        )
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_c")[0], np.delete(weights_of(model, "conv_c")[0], [1, 3], axis=2)
    )


def test_merge_with_one_branch_named_prunes_both_branches() -> None:
    """kerassurgeon left the other branch of an Add as it was (its issues #14, #16, #45)."""
    x = keras.Input((6,), name="x")
    a = L.Dense(4, name="dense_a")(x)
    b = L.Dense(4, name="dense_b")(x)
    model = keras.Model(x, L.Add(name="add")([a, b]))
    before = fingerprint(model)
    pruned = delete_channels(model, "dense_a", [0])
    assert pruned.get_layer("dense_a").units == pruned.get_layer("dense_b").units == 3
    np.testing.assert_array_equal(
        weights_of(pruned, "dense_b")[0], np.delete(weights_of(model, "dense_b")[0], [0], 1)
    )
    assert fingerprint(model) == before


def test_concatenate_with_one_branch_pruned() -> None:
    x = keras.Input((7, 7, 2), name="x")
    a = L.Conv2D(3, 2, name="conv_1", activation="relu")(x)
    b = L.Conv2D(4, 2, name="conv_2", activation="relu")(x)
    y = L.Concatenate(name="cat")([a, b])
    y = L.Conv2D(2, 1, name="conv_3")(y)
    model = keras.Model(x, y)
    pruned = check_compat_dead_channels(model, {"conv_2": [0, 2]})
    assert pruned.get_layer("cat").output.shape[-1] == 5
    np.testing.assert_array_equal(weights_of(pruned, "conv_1")[0], weights_of(model, "conv_1")[0])
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_3")[0],
        np.delete(weights_of(model, "conv_3")[0], [3 + 0, 3 + 2], axis=2),
    )


def test_deleting_all_channels_of_a_branch_into_concatenate() -> None:
    """kerassurgeon's test_delete_all_channels_in_long_branch: branch and Concatenate go."""
    x = keras.Input((8, 8, 2), name="x")
    a = L.Conv2D(2, 3, name="conv_1")(x)
    a = L.Conv2D(4, 1, name="conv_3")(a)
    b = L.Conv2D(3, 3, name="conv_2")(x)
    model = keras.Model(x, L.Concatenate(name="cat")([a, b]))
    before = fingerprint(model)
    pruned = delete_channels(model, model.get_layer("conv_1"), [0, 1])
    assert layer_names(pruned) == ["x", "conv_2"]
    np.testing.assert_array_equal(weights_of(pruned, "conv_2")[0], weights_of(model, "conv_2")[0])
    inputs = sample_inputs(model)
    expected = keras.ops.convert_to_numpy(model.get_layer("conv_2")(inputs))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pruned(inputs)), expected, rtol=1e-5, atol=1e-6
    )
    assert fingerprint(model) == before


@pytest.mark.parametrize("kind", ["SimpleRNN", "GRU", "LSTM"])
def test_stacked_recurrent_layers(kind: str) -> None:
    x = keras.Input((5, 6), name="x")
    y = getattr(L, kind)(6, return_sequences=True, name="rnn_1")(x)
    y = getattr(L, kind)(3, name="rnn_2")(y)
    y = L.Dense(2, name="dense")(y)
    model = keras.Model(x, y)
    pruned = check_compat_dead_channels(model, {"rnn_1": [1, 4]})
    cols = gate_columns(model.get_layer("rnn_1"), [1, 4])
    kernel, recurrent, bias = weights_of(model, "rnn_1")
    new_kernel, new_recurrent, new_bias = weights_of(pruned, "rnn_1")
    np.testing.assert_array_equal(new_kernel, np.delete(kernel, cols, axis=1))
    np.testing.assert_array_equal(
        new_recurrent, np.delete(np.delete(recurrent, cols, axis=1), [1, 4], axis=0)
    )
    np.testing.assert_array_equal(new_bias, np.delete(bias, cols, axis=-1))
    old_next, new_next = weights_of(model, "rnn_2"), weights_of(pruned, "rnn_2")
    np.testing.assert_array_equal(new_next[0], np.delete(old_next[0], [1, 4], axis=0))
    np.testing.assert_array_equal(new_next[1], old_next[1])
    np.testing.assert_array_equal(new_next[2], old_next[2])
    assert pruned.get_layer("rnn_1").units == 4


def test_batch_normalization(data_format: str) -> None:
    axis = 1 if data_format == "channels_first" else -1
    x = image_input(2, data_format)
    y = L.Conv2D(4, 2, name="conv", data_format=data_format)(x)
    y = L.BatchNormalization(axis=axis, name="bn")(y)
    y = L.Conv2D(2, 2, name="conv_2", data_format=data_format)(y)
    model = keras.Model(x, y)
    bn = model.get_layer("bn")
    rng = np.random.default_rng(3)
    bn.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in bn.weights])
    pruned = check_compat_dead_channels(model, {"conv": [0, 3]}, batchnorms={"bn": [0, 3]})
    for old, new in zip(weights_of(model, "bn"), weights_of(pruned, "bn"), strict=True):
        np.testing.assert_array_equal(new, np.delete(old, [0, 3]))
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_2")[0], np.delete(weights_of(model, "conv_2")[0], [0, 3], axis=2)
    )


# ---------------------------------------------------------------- delete/insert/replace layer


def test_delete_layer_in_a_dense_chain() -> None:
    model = dense_chain()
    before = fingerprint(model)
    new = delete_layer(model, model.get_layer("d2"))
    assert layer_names(new) == ["x", "d1", "d3"]  # lowered as a functional model
    expected = expected_chain(model, [])
    for a, b in zip(new.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert_same_outputs(new, expected, sample_inputs(model))
    assert fingerprint(model) == before
    assert_independent(new, model)


def test_insert_layer_in_a_dense_chain() -> None:
    model = dense_chain()
    before = fingerprint(model)
    inserted = built_dense(4, 4, "inserted", seed=7, activation="tanh")
    new = insert_layer(model, "d2", inserted)
    assert layer_names(new) == ["x", "d1", "inserted", "d2", "d3"]
    d2 = L.Dense(4, activation="relu")
    expected = expected_chain(model, [built_dense(4, 4, "same", seed=7, activation="tanh"), d2])
    d2.set_weights(weights_of(model, "d2"))
    for a, b in zip(new.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert_same_outputs(new, expected, sample_inputs(model))
    assert fingerprint(model) == before
    assert_independent(new, model)
    assert all(layer is not inserted for layer in new.layers)


def test_replace_layer_in_a_dense_chain() -> None:
    model = dense_chain()
    before = fingerprint(model)
    replacement = built_dense(4, 4, "replacement", seed=11, activation="sigmoid")
    new = replace_layer(model, model.get_layer("d2"), replacement)
    assert layer_names(new) == ["x", "d1", "replacement", "d3"]
    expected = expected_chain(model, [built_dense(4, 4, "same", seed=11, activation="sigmoid")])
    for a, b in zip(new.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert_same_outputs(new, expected, sample_inputs(model))
    assert fingerprint(model) == before


def test_copy_argument_is_accepted_and_ignored() -> None:
    model = dense_chain()
    before = fingerprint(model)
    for copy in (True, False, None):
        new = delete_layer(model, "d2", copy=copy)
        assert layer_names(new) == ["x", "d1", "d3"]
        assert_independent(new, model)
        new = delete_channels(model, "d1", [0], copy=copy)
        assert new.get_layer("d1").units == 3
    assert layer_names(model) == ["d1", "d2", "d3"]
    assert fingerprint(model) == before


def shared_twice() -> keras.Model:
    """x(4) -> shared -> shared -> head: one layer, two calls in a row."""
    x = keras.Input((4,), name="x")
    shared = L.Dense(4, name="shared")
    y = L.Dense(2, name="head")(shared(shared(x)))
    return keras.Model(x, y)


def test_delete_shared_layer_removes_every_call() -> None:
    model = shared_twice()
    before = fingerprint(model)
    new = delete_layer(model, "shared")
    assert layer_names(new) == ["x", "head"]
    inputs = sample_inputs(model)
    kernel, bias = weights_of(model, "head")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(new(inputs)), inputs @ kernel + bias, rtol=1e-5, atol=1e-6
    )
    assert fingerprint(model) == before


@pytest.mark.parametrize("node_index", [0, 1])
def test_delete_one_call_of_a_shared_layer(node_index: int) -> None:
    model = shared_twice()
    before = fingerprint(model)
    new = delete_layer(model, model.get_layer("shared"), node_indices=[node_index])
    assert layer_names(new) == ["x", "shared", "head"]
    assert len(new.get_layer("shared")._inbound_nodes) == 1
    inputs = sample_inputs(model)
    k, b = weights_of(model, "shared")
    kh, bh = weights_of(model, "head")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(new(inputs)), (inputs @ k + b) @ kh + bh, rtol=1e-5
    )
    assert fingerprint(model) == before


@pytest.mark.parametrize("node_index", [0, 1])
def test_delete_channels_of_one_call_of_a_shared_layer(node_index: int) -> None:
    """The selected call gets its own layer `shared_delete_channels`; the other call keeps
    `shared` with all its channels. Call 0 reads x1, call 1 reads x2 (`_inbound_nodes`)."""
    model = shared_on_two_inputs()
    before = fingerprint(model)
    new = delete_channels(model, model.get_layer("shared"), [1, 2], node_indices=[node_index])
    assert sorted(layer_names(new)) == sorted(
        ["x1", "x2", "shared", "shared_delete_channels", "head_1", "head_2"]
    )
    k, b = weights_of(model, "shared")
    pruned_head, kept_head = ("head_1", "head_2") if node_index == 0 else ("head_2", "head_1")
    np.testing.assert_array_equal(weights_of(new, "shared")[0], k)
    np.testing.assert_array_equal(
        weights_of(new, "shared_delete_channels")[0], np.delete(k, [1, 2], axis=1)
    )
    np.testing.assert_array_equal(
        weights_of(new, "shared_delete_channels")[1], np.delete(b, [1, 2])
    )
    np.testing.assert_array_equal(
        weights_of(new, pruned_head)[0], np.delete(weights_of(model, pruned_head)[0], [1, 2], 0)
    )
    np.testing.assert_array_equal(weights_of(new, kept_head)[0], weights_of(model, kept_head)[0])
    # numerically: the pruned call computes relu(x W[:, kept]) and the head reads those rows
    x1, x2 = sample_inputs(model)
    out_2, out_1 = (keras.ops.convert_to_numpy(t) for t in new([x1, x2]))
    kept = [0, 3]
    for x, out, head in ((x1, out_1, "head_1"), (x2, out_2, "head_2")):
        kh, bh = weights_of(model, head)
        if head == pruned_head:
            want = relu(x @ k[:, kept] + b[kept]) @ kh[kept] + bh
        else:
            want = relu(x @ k + b) @ kh + bh
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    assert fingerprint(model) == before


def test_node_indices_selecting_every_call_does_not_rename() -> None:
    model = shared_on_two_inputs()
    new = delete_channels(model, "shared", [0], node_indices=[1, 0])
    assert "shared_delete_channels" not in layer_names(new)
    assert new.get_layer("shared").units == 3
    for head in ("head_1", "head_2"):
        assert new.get_layer(head).get_weights()[0].shape == (3, 2)


def test_node_indices_skip_calls_in_other_models() -> None:
    """Node index 0 is a call of `dense` outside the model: only index 1 is selectable."""
    dense = L.Dense(3, name="dense", activation="relu")
    dense(keras.Input((4,)))  # a call in no model of ours: node index 0
    x = keras.Input((4,), name="x")
    model = keras.Model(x, L.Dense(2, name="head")(dense(x)))
    before = fingerprint(model)
    new = delete_channels(model, dense, [0], node_indices=[1])
    assert new.get_layer("dense").units == 2  # every call in the model: no renamed copy
    with pytest.raises(KerasSurgeonError, match=r"node_indices \[0\] are not calls"):
        delete_channels(model, dense, [0], node_indices=[0])
    assert fingerprint(model) == before


def test_node_indices_count_calls_in_other_models() -> None:
    """Node index 2 is the model's second call of `dense` (index 0 is in no model of ours)."""
    dense = L.Dense(3, name="dense", activation="relu")
    dense(keras.Input((4,)))
    x = keras.Input((4,), name="x")
    a = L.Dense(2, name="head_a")(dense(x))  # node index 1
    b = L.Dense(2, name="head_b")(dense(L.Dense(4, name="pre")(x)))  # node index 2
    model = keras.Model(x, [a, b])
    before = fingerprint(model)
    new = delete_channels(model, dense, [0], node_indices=[2])
    k = weights_of(model, "dense")[0]
    np.testing.assert_array_equal(weights_of(new, "dense")[0], k)
    np.testing.assert_array_equal(
        weights_of(new, "dense_delete_channels")[0], np.delete(k, [0], axis=1)
    )
    np.testing.assert_array_equal(weights_of(new, "head_a")[0], weights_of(model, "head_a")[0])
    np.testing.assert_array_equal(
        weights_of(new, "head_b")[0], np.delete(weights_of(model, "head_b")[0], [0], axis=0)
    )
    pre_input = new.get_layer("dense_delete_channels")._inbound_nodes[0].input_tensors[0]
    assert pre_input._keras_history.operation.name == "pre"
    assert fingerprint(model) == before


def test_layers_of_a_nested_model() -> None:
    """kgraph inlines nested models: their layers can be pruned by name, but node_indices
    (indices into a layer's calls in the outer model) cannot select them."""
    backbone = keras.Sequential(
        [keras.Input((4,)), L.Dense(3, activation="relu", name="inner")], name="backbone"
    )
    x = keras.Input((4,), name="x")
    model = keras.Model(x, L.Dense(2, name="head")(backbone(x)))
    before = fingerprint(model)
    new = delete_channels(model, "inner", [1])
    assert new.get_layer("inner").units == 2
    np.testing.assert_array_equal(
        weights_of(new, "head")[0], np.delete(weights_of(model, "head")[0], [1], axis=0)
    )
    with pytest.raises(KerasSurgeonError, match="a layer inside a nested model"):
        delete_channels(model, "inner", [1], node_indices=[0])
    assert fingerprint(model) == before


# ---------------------------------------------------------------- Surgeon


def conv_pipeline() -> keras.Model:
    x = keras.Input((8, 8, 2), name="x")
    y = L.Conv2D(4, 3, name="conv_1", activation="relu")(x)
    y = L.Dropout(0.3, name="dropout")(y)
    y = L.Conv2D(4, 3, name="conv_2", activation="relu")(y)
    y = L.Flatten(name="flatten")(y)
    y = L.Dense(3, name="dense")(y)
    return keras.Model(x, y, name="pipeline")


@pytest.mark.parametrize("reverse", [False, True])
def test_surgeon_with_several_jobs(reverse: bool) -> None:
    """All jobs run in one pipeline; channels refer to the original model in any job order."""
    model = conv_pipeline()
    before = fingerprint(model)
    dead = dead_copy(model, {"conv_1": [0], "conv_2": [1, 2]})
    dead_before = fingerprint(dead)
    jobs = [
        ("delete_channels", "conv_1", {"channels": [0]}),
        ("delete_channels", dead.get_layer("conv_2"), {"channels": [1, 2]}),
        ("delete_layer", "dropout", {}),
        ("insert_layer", "dense", {"new_layer": L.Activation("linear", name="inserted")}),
    ]
    surgeon = Surgeon(dead, copy=True)
    for job, layer, kwargs in reversed(jobs) if reverse else jobs:
        surgeon.add_job(job, layer, **kwargs)
    assert len(surgeon.jobs) == 4
    new = surgeon.operate()
    assert layer_names(new) == ["x", "conv_1", "conv_2", "flatten", "inserted", "dense"]
    dense_input = new.get_layer("dense")._inbound_nodes[0].input_tensors[0]
    assert dense_input._keras_history.operation.name == "inserted"
    assert_same_outputs(dead, new, sample_inputs(model))
    k2 = weights_of(model, "conv_2")[0]
    np.testing.assert_array_equal(
        weights_of(new, "conv_2")[0], np.delete(np.delete(k2, [0], axis=2), [1, 2], axis=3)
    )
    rows = flatten_rows("channels_last", (4, 4, 4), [1, 2])
    np.testing.assert_array_equal(
        weights_of(new, "dense")[0], np.delete(weights_of(model, "dense")[0], rows, axis=0)
    )
    assert fingerprint(model) == before and fingerprint(dead) == dead_before
    np.testing.assert_array_equal(surgeon.operate().get_weights()[0], new.get_weights()[0])


def test_surgeon_jobs_on_different_calls_of_a_shared_layer() -> None:
    model = shared_on_two_inputs()
    other = built_dense(4, 5, "other", seed=1, activation="relu")
    surgeon = Surgeon(model)
    surgeon.add_job("delete_channels", "shared", channels=[3], node_indices=[0])
    surgeon.add_job("replace_layer", "shared", new_layer=other, node_indices=[1])
    new = surgeon.operate()
    assert sorted(layer_names(new)) == sorted(
        ["x1", "x2", "shared_delete_channels", "other", "head_1", "head_2"]
    )
    assert new.get_layer("shared_delete_channels").units == 3
    assert new.get_layer("head_1").get_weights()[0].shape == (3, 2)
    np.testing.assert_array_equal(new.get_layer("other").get_weights()[0], other.get_weights()[0])
    np.testing.assert_array_equal(weights_of(new, "head_2")[0], weights_of(model, "head_2")[0])


def test_surgeon_without_jobs_returns_an_independent_copy() -> None:
    model = conv_pipeline()
    new = Surgeon(model).operate()
    assert layer_names(new) == layer_names(model)
    assert_independent(new, model)
    assert_same_outputs(model, new, sample_inputs(model))


# ---------------------------------------------------------------- errors


def test_unknown_job() -> None:
    model = dense_chain()
    surgeon = Surgeon(model)
    with pytest.raises(KerasSurgeonError, match="'prune_layer' is not a recognised job"):
        surgeon.add_job("prune_layer", "d1")
    assert surgeon.jobs == ()


def test_duplicate_node_indices() -> None:
    model = shared_twice()
    before = fingerprint(model)
    with pytest.raises(KerasSurgeonError, match="duplicate"):
        delete_layer(model, "shared", node_indices=[1, 1])
    assert fingerprint(model) == before


@pytest.mark.parametrize("bad", [[2], [0, 5], [-1], [0.0], "0"])
def test_node_indices_that_are_not_calls_of_the_layer(bad) -> None:
    model = shared_twice()
    before = fingerprint(model)
    with pytest.raises(KerasSurgeonError, match=r"node_ind|node index"):
        Surgeon(model).add_job("delete_layer", "shared", node_indices=bad)
    assert fingerprint(model) == before


def test_two_jobs_on_one_node() -> None:
    model = shared_twice()
    before = fingerprint(model)
    surgeon = Surgeon(model)
    surgeon.add_job("delete_layer", "shared", node_indices=[0])
    with pytest.raises(KerasSurgeonError, match="Cannot apply several jobs to the same node"):
        surgeon.add_job("delete_channels", model.get_layer("shared"), channels=[0])
    with pytest.raises(KerasSurgeonError, match="Cannot apply several jobs to the same node"):
        surgeon.add_job("insert_layer", "shared", new_layer=L.ReLU(), node_indices=[0])
    surgeon.add_job("insert_layer", "shared", new_layer=L.ReLU(name="relu"), node_indices=[1])
    assert len(surgeon.jobs) == 2
    new = surgeon.operate()
    assert layer_names(new) == ["x", "relu", "shared", "head"]
    assert fingerprint(model) == before


def test_unknown_layer() -> None:
    model = dense_chain()
    before = fingerprint(model)
    with pytest.raises(kgraph.LayerNotFoundError, match="'d4'"):
        delete_channels(model, "d4", [0])
    with pytest.raises(kgraph.LayerNotFoundError, match="not a layer of model"):
        delete_layer(model, L.Dense(3, name="stranger"))
    with pytest.raises(kgraph.LayerNotFoundError):
        get_apoz(model, "d4", np.zeros((2, 5)))
    assert fingerprint(model) == before


@pytest.mark.parametrize("channels", [[4], [-5], [0, 0], [1.0], "0"])
def test_bad_channels(channels) -> None:
    model = dense_chain()
    before = fingerprint(model)
    with pytest.raises(kgraph.ChannelError, match="'d1' \\(Dense\\)"):
        delete_channels(model, "d1", channels)
    surgeon = Surgeon(model)
    with pytest.raises(kgraph.ChannelError):
        surgeon.add_job("delete_channels", "d1", channels=channels)
    assert surgeon.jobs == ()
    assert fingerprint(model) == before


def test_missing_or_unneeded_job_arguments() -> None:
    model = dense_chain()
    surgeon = Surgeon(model)
    with pytest.raises(KerasSurgeonError, match="needs channels"):
        surgeon.add_job("delete_channels", "d1")
    for job in ("insert_layer", "replace_layer"):
        with pytest.raises(KerasSurgeonError, match="needs new_layer"):
            surgeon.add_job(job, "d1")
    with pytest.raises(KerasSurgeonError, match="takes no channels"):
        surgeon.add_job("delete_layer", "d1", channels=[0])
    with pytest.raises(KerasSurgeonError, match="takes no new_layer"):
        surgeon.add_job("delete_channels", "d1", channels=[0], new_layer=L.ReLU())
    assert surgeon.jobs == ()


def test_failures_leave_the_model_unchanged() -> None:
    model = conv_pipeline()
    before = fingerprint(model)
    with pytest.raises(kgraph.SurgeryError, match="model input"):
        delete_layer(model, "x")
    with pytest.raises(kgraph.ChannelError, match="carries 5 channels where it was built for 4"):
        replace_layer(model, "conv_1", L.Conv2D(5, 3, name="wrong"))
    with pytest.raises(kgraph.ChannelError, match="carries 3 channels where it was built for 64"):
        insert_layer(model, "dense", L.Dense(3, name="too_narrow"))
    with pytest.raises(kgraph.ChannelError, match="'flatten' \\(Flatten\\) does not own"):
        delete_channels(model, "flatten", [0])
    surgeon = Surgeon(model)
    surgeon.add_job("delete_channels", "conv_1", channels=[0])
    surgeon.add_job("replace_layer", "conv_2", new_layer=L.Conv2D(2, 3, name="narrow"))
    with pytest.raises(kgraph.ChannelError):
        surgeon.operate()  # the dense after the flatten was built for 4 channels
    assert fingerprint(model) == before


# ---------------------------------------------------------------- identify


def test_apoz_of_a_dense_layer_with_relu() -> None:
    x = keras.Input((3,), name="x")
    dense = L.Dense(4, activation="relu", name="dense")
    model = keras.Model(x, L.Dense(2, name="head")(dense(x)))
    rng = np.random.default_rng(5)
    kernel = rng.standard_normal((3, 4)).astype("float32")
    bias = np.array([0.0, -100.0, 100.0, 0.5], "float32")
    dense.set_weights([kernel, bias])
    inputs = rng.standard_normal((50, 3)).astype("float32")
    before = fingerprint(model)
    apoz = get_apoz(model, dense, inputs)
    expected = (relu(inputs @ kernel + bias) == 0).mean(axis=0)
    assert apoz.shape == (4,) and apoz.dtype == np.float64
    np.testing.assert_allclose(apoz, expected, atol=1e-12)
    assert apoz[1] == 1.0 and apoz[2] == 0.0 and 0 < apoz[0] < 1
    np.testing.assert_array_equal(high_apoz(apoz, "absolute"), [1])
    assert fingerprint(model) == before


def test_apoz_after_a_separate_activation_layer(data_format: str) -> None:
    """Conv2D (linear) -> Dropout -> Activation('relu'): zeros are counted after the relu."""
    x = image_input(2, data_format, channels=3)
    conv = L.Conv2D(4, 3, name="conv", data_format=data_format)
    y = L.Activation("relu", name="relu")(L.Dropout(0.5, name="dropout")(conv(x)))
    model = keras.Model(x, L.Dense(2, name="head")(L.Flatten(data_format=data_format)(y)))
    kernel = conv.get_weights()[0]
    conv.set_weights([kernel, np.array([-100.0, 100.0, 0.0, 0.1], "float32")])
    inputs = np.random.default_rng(2).standard_normal((6, *model.input.shape[1:]))
    inputs = inputs.astype("float32")
    apoz = get_apoz(model, "conv", inputs)
    conv_output = keras.Model(x, conv.output)(inputs)  # the conv's (linear) output
    pre = keras.ops.convert_to_numpy(conv_output)
    if data_format == "channels_first":
        pre = np.moveaxis(pre, 1, -1)
    expected = (relu(pre) == 0).reshape(-1, 4).mean(axis=0)
    np.testing.assert_allclose(apoz, expected, atol=1e-12)
    assert apoz[0] == 1.0 and apoz[1] == 0.0 and 0 < apoz[2] < 1
    if data_format == "channels_last":  # an Activation layer has no data_format of its own
        np.testing.assert_allclose(get_apoz(model, "relu", inputs), expected, atol=1e-12)


def test_apoz_of_a_shared_layer_per_call() -> None:
    model = shared_on_two_inputs()
    k, b = weights_of(model, "shared")
    rng = np.random.default_rng(9)
    x1 = rng.standard_normal((20, 5)).astype("float32")
    x2 = (rng.standard_normal((20, 5)) + 1).astype("float32")
    zeros_1 = relu(x1 @ k + b) == 0
    zeros_2 = relu(x2 @ k + b) == 0
    apoz_1 = get_apoz(model, "shared", [x1, x2], node_indices=[0])
    apoz_2 = get_apoz(model, "shared", [x1, x2], node_indices=[1])
    apoz_all = get_apoz(model, "shared", [x1, x2])
    np.testing.assert_allclose(apoz_1, zeros_1.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(apoz_2, zeros_2.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(apoz_all, np.concatenate([zeros_1, zeros_2]).mean(0), atol=1e-12)


def test_apoz_needs_a_nonlinear_activation() -> None:
    x = keras.Input((3,), name="x")
    y = L.Dense(4, name="linear_1")(x)
    y = L.Dense(4, activation="relu", name="relu_dense")(y)
    y = L.Dense(2, name="out")(y)
    model = keras.Model(x, y)
    inputs = np.zeros((2, 3), "float32")
    with pytest.raises(KerasSurgeonError, match="'relu_dense' \\(Dense\\), which mixes channels"):
        get_apoz(model, "linear_1", inputs)
    with pytest.raises(KerasSurgeonError, match="no non-linear activation follows layer 'out'"):
        get_apoz(model, "out", inputs)


APOZ = np.array([0.2, 0.4, 0.6, 0.8, 1.0])  # mean 0.6, std sqrt(0.08) = 0.2828


@pytest.mark.parametrize(
    ("method", "cutoff_std", "cutoff_absolute", "expected"),
    [
        ("std", 1, 0.99, [4]),  # cutoff 0.883
        ("std", 0.5, 0.99, [3, 4]),  # cutoff 0.741
        ("std", 2, 0.99, [4]),  # cutoff 1.166, capped at 1
        ("std", -1, 0.99, [1, 2, 3, 4]),  # cutoff 0.317
        ("absolute", 1, 0.99, [4]),
        ("absolute", 1, 0.6, [2, 3, 4]),  # at the cutoff counts
        ("absolute", 1, 1.5, [4]),  # capped at 1
        ("both", 1, 0.5, [2, 3, 4]),  # min(0.5, 0.883)
        ("both", 0.5, 0.99, [3, 4]),  # min(0.99, 0.741)
        ("both", 1, 0.99, [4]),  # min(0.99, 0.883)
    ],
)
def test_high_apoz(method: str, cutoff_std: float, cutoff_absolute: float, expected) -> None:
    found = high_apoz(APOZ, method, cutoff_std=cutoff_std, cutoff_absolute=cutoff_absolute)
    np.testing.assert_array_equal(found, expected)
    assert found.dtype.kind == "i"


def test_high_apoz_default_and_errors() -> None:
    np.testing.assert_array_equal(high_apoz(list(APOZ)), [4])
    with pytest.raises(KerasSurgeonError, match="invalid method 'mean'"):
        high_apoz(APOZ, "mean")
    with pytest.raises(ValueError, match="1-D"):
        high_apoz(np.ones((2, 2)))


def test_apoz_then_delete_channels_end_to_end() -> None:
    """The kerassurgeon workflow: measure, pick, delete; dead channels change nothing."""
    x = keras.Input((6,), name="x")
    dense = L.Dense(5, activation="relu", name="dense")
    model = keras.Model(x, L.Dense(2, name="head")(dense(x)))
    kernel, _ = dense.get_weights()
    dense.set_weights([kernel, np.array([0.0, -100.0, 0.0, -100.0, 0.0], "float32")])
    inputs = np.random.default_rng(0).standard_normal((40, 6)).astype("float32")
    channels = high_apoz(get_apoz(model, "dense", inputs), "absolute")
    np.testing.assert_array_equal(channels, [1, 3])
    new = delete_channels(model, "dense", channels)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(new(inputs)),
        keras.ops.convert_to_numpy(model(inputs)),
        rtol=1e-5,
    )
