"""Rules on dense and sequence paths: Dense, merges, Concatenate, RNNs, Embedding,
Reshape/Permute/RepeatVector and raw keras.ops nodes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import check_dead_channels, delete, gate_columns, weights_of, zero_outputs

import kgraph
from kgraph.passes import DeleteChannels, InsertLayer

L = keras.layers


@pytest.mark.parametrize("channels", [[0], [-1], [1, 2], [0, 1, 2, 4]])
def test_dense_chain(channels: list[int]) -> None:
    x = keras.Input((6,))
    y = L.Dense(5, activation="relu", name="d1")(x)
    y = L.Dense(3, name="d2")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"d1": channels})
    idx = [c % 5 for c in channels]
    k1, b1 = weights_of(model, "d1")
    k2, b2 = weights_of(model, "d2")
    np.testing.assert_array_equal(weights_of(pruned, "d1")[0], np.delete(k1, idx, axis=1))
    np.testing.assert_array_equal(weights_of(pruned, "d1")[1], np.delete(b1, idx))
    np.testing.assert_array_equal(weights_of(pruned, "d2")[0], np.delete(k2, idx, axis=0))
    np.testing.assert_array_equal(weights_of(pruned, "d2")[1], b2)
    assert pruned.get_layer("d1").units == 5 - len(idx)


def test_dense_without_bias_on_sequences() -> None:
    x = keras.Input((4, 6))
    y = L.Dense(5, use_bias=False, name="d1")(x)
    y = L.Dense(3, name="d2")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"d1": [0, 3]})
    assert pruned.get_layer("d1").output.shape == (None, 4, 3)


@pytest.mark.parametrize("merge", ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"])
def test_merge_layers_with_same_channels_deleted(merge: str, data_format: str) -> None:
    shape = (3, 8, 8) if data_format == "channels_first" else (8, 8, 3)
    x = keras.Input(shape)
    a = L.Conv2D(4, 3, name="conv_a", data_format=data_format, activation="relu")(x)
    b = L.Conv2D(4, 3, name="conv_b", data_format=data_format, activation="relu")(x)
    y = getattr(L, merge)(name="merge")([a, b])
    y = L.Conv2D(2, 3, name="conv_c", data_format=data_format)(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"conv_a": [1, 3], "conv_b": [1, 3]})
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_c")[0], np.delete(weights_of(model, "conv_c")[0], [1, 3], axis=2)
    )


def test_a_merge_couples_its_branches() -> None:
    x = keras.Input((6,))
    a = L.Dense(4, name="dense_a", activation="relu")(x)
    b = L.Dense(4, name="dense_b", activation="relu")(x)
    model = keras.Model(x, L.Dense(2, name="head")(L.Add(name="add")([a, b])))
    pruned = check_dead_channels(model, {"dense_a": [1], "dense_b": [1]}, named=["dense_a"])
    np.testing.assert_array_equal(
        weights_of(pruned, "dense_b")[0], np.delete(weights_of(model, "dense_b")[0], [1], 1)
    )
    both = kgraph.lift(model).apply(DeleteChannels("dense_a", [1]), DeleteChannels("dense_b", [2]))
    assert both.node("dense_a").config["units"] == both.node("dense_b").config["units"] == 2


def test_a_merge_after_a_concatenate_couples_each_part_with_its_slice() -> None:
    x = keras.Input((6,))
    a, b = L.Dense(2, name="dense_a")(x), L.Dense(3, name="dense_b")(x)
    cat = L.Concatenate(name="cat")([a, b])
    y = L.Add(name="add")([cat, L.Dense(5, name="dense_c")(x)])
    model = keras.Model(x, L.Dense(2, name="head")(y))
    group = kgraph.groups.group_of(kgraph.lift(model), "dense_b")
    assert group.owners == ("dense_a", "dense_b", "dense_c") and group.offsets == (0, 2, 0)
    pruned = check_dead_channels(model, {"dense_b": [0], "dense_c": [2]}, named=["dense_b"])
    assert pruned.get_layer("dense_c").units == 4


def test_channels_coupled_only_in_part_are_a_mask_conflict() -> None:
    x = keras.Input((6,))
    first = L.Concatenate(name="cat_1")([L.Dense(2, name="a")(x), L.Dense(2, name="b")(x)])
    second = L.Concatenate(name="cat_2")([L.Dense(1, name="c")(x), L.Dense(3, name="d")(x)])
    model = keras.Model(x, L.Add(name="add")([first, second]))
    group = kgraph.groups.group_of(kgraph.lift(model), "a")
    assert not group.prunable and "overlap them only in part" in group.reason
    with pytest.raises(kgraph.MaskConflictError) as error:
        kgraph.lift(model).apply(DeleteChannels("a", [1]))
    message = str(error.value)
    assert "'add' (Add)" in message and "'cat_1'" in message and "deleted [1]" in message


@pytest.mark.parametrize("axis", [-1, 1])
def test_concatenate_on_channel_axis(axis: int, data_format: str) -> None:
    if (axis == 1) != (data_format == "channels_first"):
        axis = 1 if data_format == "channels_first" else -1
    shape = (2, 7, 7) if data_format == "channels_first" else (7, 7, 2)
    x1, x2 = keras.Input(shape), keras.Input(shape)
    a = L.Conv2D(3, 3, name="conv_1", data_format=data_format)(x1)
    b = L.Conv2D(3, 3, name="conv_2", data_format=data_format)(x2)
    y = L.Concatenate(axis=axis, name="cat")([a, b])
    flatten = L.Flatten(data_format=data_format)
    y = L.Dense(4, name="dense")(flatten(y))
    model = keras.Model([x1, x2], y)
    pruned = check_dead_channels(model, {"conv_1": [0, 2]})
    feature = (6, 5, 5) if data_format == "channels_first" else (5, 5, 6)
    ids = np.zeros(feature) + (
        np.arange(6)[:, None, None] if data_format == "channels_first" else np.arange(6)
    )
    flat = keras.ops.convert_to_numpy(
        L.Flatten(data_format=data_format)(ids[None].astype("float32"))
    )[0]
    rows = np.flatnonzero(np.isin(flat, [0, 2]))
    np.testing.assert_array_equal(
        weights_of(pruned, "dense")[0], np.delete(weights_of(model, "dense")[0], rows, axis=0)
    )


def test_concatenate_on_time_axis_needs_same_channels() -> None:
    x = keras.Input((4, 3))
    a = L.Dense(5, name="dense_a")(x)
    b = L.Dense(5, name="dense_b")(x)
    y = L.Concatenate(axis=1, name="cat")([a, b])
    y = L.Dense(2, name="head")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"dense_a": [4], "dense_b": [4]})
    assert pruned.get_layer("cat").output.shape == (None, 8, 4)
    coupled = kgraph.lift(model).apply(DeleteChannels("dense_a", [4]))
    assert coupled.node("dense_b").config["units"] == 4


def test_deleting_all_channels_of_a_branch_drops_it_from_concatenate() -> None:
    """kerassurgeon's test_delete_all_channels_in_long_branch: the branch and the Concatenate go."""
    x = keras.Input((8, 8, 2), name="x")
    a = L.Conv2D(2, 3, name="conv_1")(x)
    a = L.Conv2D(4, 1, name="conv_3")(a)
    b = L.Conv2D(3, 3, name="conv_2")(x)
    y = L.Concatenate(name="cat")([a, b])
    model = keras.Model(x, y)
    pruned = delete(model, {"conv_1": [0, 1]})
    assert [layer.name for layer in pruned.layers] == ["x", "conv_2"]
    np.testing.assert_array_equal(weights_of(pruned, "conv_2")[0], weights_of(model, "conv_2")[0])


def test_emptied_branch_leaves_remaining_inputs_of_concatenate() -> None:
    x = keras.Input((6,))
    parts = [L.Dense(2, name=f"d{i}", activation="relu")(x) for i in range(3)]
    y = L.Concatenate(name="cat")(parts)
    y = L.Dense(3, name="head")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"d1": [0, 1]})
    assert "d1" not in [layer.name for layer in pruned.layers]
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(weights_of(model, "head")[0], [2, 3], axis=0)
    )


@pytest.mark.parametrize("kind", ["SimpleRNN", "GRU", "LSTM"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_recurrent_units(kind: str, return_sequences: bool) -> None:
    x = keras.Input((5, 6))
    y = getattr(L, kind)(4, return_sequences=return_sequences, name="rnn")(x)
    y = L.Dense(3, name="dense")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"rnn": [0, 2]})
    old = model.get_layer("rnn")
    cols = gate_columns(old, [0, 2])
    kernel, recurrent, bias = weights_of(model, "rnn")
    new_kernel, new_recurrent, new_bias = weights_of(pruned, "rnn")
    np.testing.assert_array_equal(new_kernel, np.delete(kernel, cols, axis=1))
    np.testing.assert_array_equal(
        new_recurrent, np.delete(np.delete(recurrent, cols, axis=1), [0, 2], axis=0)
    )
    np.testing.assert_array_equal(new_bias, np.delete(bias, cols, axis=-1))
    assert pruned.get_layer("rnn").units == 2


@pytest.mark.parametrize("kind", ["SimpleRNN", "GRU", "LSTM"])
def test_recurrent_layers_absorb_input_channels(kind: str) -> None:
    """kerassurgeon's test_delete_channels_{simplernn,gru,lstm}: a stacked RNN absorbs."""
    x = keras.Input((6, 10))
    y = getattr(L, kind)(9, return_sequences=True, name="rnn_1")(x)
    y = L.GRU(4, name="gru")(y)
    y = L.Dense(5, name="dense")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"rnn_1": [1, 7]})
    old, new = weights_of(model, "gru"), weights_of(pruned, "gru")
    np.testing.assert_array_equal(new[0], np.delete(old[0], [1, 7], axis=0))
    np.testing.assert_array_equal(new[1], old[1])
    np.testing.assert_array_equal(new[2], old[2])


def test_gru_reset_after_false_and_lstm_states() -> None:
    x = keras.Input((5, 3))
    g = L.GRU(4, reset_after=False, return_sequences=True, name="gru")(x)
    seq, h, c = L.LSTM(3, return_sequences=True, return_state=True, name="lstm")(g)
    y = L.Concatenate(name="cat")([L.Flatten()(seq), h, c])
    model = keras.Model(x, L.Dense(2, name="head")(y))
    check_dead_channels(model, {"gru": [3], "lstm": [1]})


def test_embedding_output_dimensions() -> None:
    x = keras.Input((7,), dtype="int32")
    y = L.Embedding(10, 6, name="emb")(x)
    y = L.LSTM(3, name="lstm")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"emb": [0, 5]})
    np.testing.assert_array_equal(
        weights_of(pruned, "emb")[0], np.delete(weights_of(model, "emb")[0], [0, 5], axis=1)
    )
    np.testing.assert_array_equal(
        weights_of(pruned, "lstm")[0], np.delete(weights_of(model, "lstm")[0], [0, 5], axis=0)
    )


def test_embedding_mask_zero_feeds_lstm() -> None:
    x = keras.Input((7,), dtype="int32")
    y = L.Embedding(10, 6, mask_zero=True, name="emb")(x)
    y = L.LSTM(3, name="lstm")(y)
    model = keras.Model(x, y)
    check_dead_channels(model, {"emb": [2]})


def test_reshape_keeping_the_channel_axis() -> None:
    x = keras.Input((6,))
    y = L.Dense(4, name="dense")(x)
    y = L.Reshape((1, 1, 4), name="reshape")(y)
    y = L.Conv2D(2, 1, name="conv")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"dense": [1]})
    assert pruned.get_layer("reshape").target_shape == (1, 1, 3)


def test_reshape_that_flattens() -> None:
    x = keras.Input((5, 5, 1))
    y = L.Conv2D(3, 2, name="conv")(x)
    y = L.Reshape((-1,), name="reshape")(y)
    y = L.Dense(2, name="dense")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"conv": [0]})
    rows = np.flatnonzero(np.arange(48) % 3 == 0)
    np.testing.assert_array_equal(
        weights_of(pruned, "dense")[0], np.delete(weights_of(model, "dense")[0], rows, axis=0)
    )


def test_reshape_mixing_channels_is_refused() -> None:
    x = keras.Input((4, 3))
    y = L.Dense(4, name="dense")(x)
    y = L.Reshape((8, 2), name="reshape")(y)
    model = keras.Model(x, y)
    with pytest.raises(kgraph.UnsupportedLayerError, match="'reshape' \\(Reshape\\)"):
        kgraph.lift(model).apply(DeleteChannels("dense", [0]))


def test_permute_moves_the_channel_axis() -> None:
    x = keras.Input((5, 3))
    y = L.Dense(4, name="dense")(x)
    y = L.Permute((2, 1), name="permute")(y)
    y = L.Dense(2, name="time_mix")(y)  # mixes the 5 time steps, channels on axis 1
    y = L.Flatten()(y)
    y = L.Dense(2, name="head")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"dense": [0, 3]})
    assert pruned.get_layer("permute").output.shape == (None, 2, 5)


def test_repeat_vector() -> None:
    x = keras.Input((6,))
    y = L.Dense(4, name="dense")(x)
    y = L.RepeatVector(3, name="repeat")(y)
    y = L.LSTM(2, name="lstm")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"dense": [2]})
    np.testing.assert_array_equal(
        weights_of(pruned, "lstm")[0], np.delete(weights_of(model, "lstm")[0], [2], axis=0)
    )


def test_keras_ops_with_constants() -> None:
    """MobileNetV3's hard-sigmoid is `x + 3.0` then `x * (1/6)`: raw op nodes."""
    x = keras.Input((6,))
    y = L.Dense(4, name="dense")(x)
    y = keras.ops.relu(y + 3.0) * (1.0 / 6.0)
    y = y * np.array([1.0, 2.0, 3.0, 4.0], dtype="float32")
    y = L.Dense(2, name="head")(y)
    model = keras.Model(x, y)
    # dead channels are 0, but relu(0 + 3) / 6 = 0.5 is not: make the head ignore them instead
    graph = kgraph.lift(model)
    assert [n.kind for n in graph.nodes()].count("op") == 4
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    kernel[[1, 3]] = 0
    head.set_weights([kernel, bias])
    pruned = kgraph.lift(model).apply(DeleteChannels("dense", [1, 3])).lower()
    inputs = np.random.rand(3, 6).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(inputs)),
        keras.ops.convert_to_numpy(pruned(inputs)),
        rtol=1e-5,
    )
    constants = [
        n.args[1]
        for n in kgraph.lift(pruned).nodes()
        if n.kind == "op" and n.class_name == "Multiply"
    ]
    assert any(np.array_equal(c, [1.0, 3.0]) for c in constants if np.ndim(c) == 1)


def test_binary_op_on_two_tensors_is_a_merge() -> None:
    x = keras.Input((6,))
    a = L.Dense(4, name="dense_a", activation="relu")(x)
    b = L.Dense(4, name="dense_b", activation="relu")(x)
    y = L.Dense(2, name="head")(a + b)
    model = keras.Model(x, y)
    check_dead_channels(model, {"dense_a": [0], "dense_b": [0]}, named=["dense_a"])


def encoder_decoder() -> keras.Model:
    source, target = keras.Input((6, 4), name="source"), keras.Input((5, 3), name="target")
    _, h, c = L.LSTM(6, return_state=True, name="encoder")(source)
    y = L.LSTM(6, return_sequences=True, name="decoder")(target, initial_state=[h, c])
    return keras.Model([source, target], L.Dense(2, name="head")(y))


def test_encoder_decoder_states_follow_deleted_units() -> None:
    model = encoder_decoder()
    pruned = check_dead_channels(model, {"encoder": [1, 4], "decoder": [1, 4]})
    assert pruned.get_layer("decoder").units == 4


def test_encoder_units_and_decoder_units_are_one_group() -> None:
    model = encoder_decoder()
    pruned = check_dead_channels(model, {"encoder": [1], "decoder": [1]}, named=["encoder"])
    assert pruned.get_layer("decoder").units == 5


def test_comparison_and_clip_ops_slice_per_channel_constants() -> None:
    def build() -> keras.Model:  # Keras cannot clone a model with array-bound clip ops
        x = keras.Input((6,))
        y = L.Dense(4, name="dense", activation="relu")(x)
        low, high = np.zeros(4, "float32"), np.array([1.0, 2.0, 3.0, 4.0], "float32")
        y = keras.ops.clip(y, low, high) * keras.ops.cast(
            keras.ops.greater(y, high - 2.5), "float32"
        )
        return keras.Model(x, L.Dense(2, name="head")(y))

    model, dead = build(), build()
    dead.set_weights(model.get_weights())
    zero_outputs(dead.get_layer("dense"), [1, 2])
    pruned = kgraph.lift(dead).apply(DeleteChannels("dense", [1, 2]), verify=True).lower()
    inputs = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pruned(inputs)),
        keras.ops.convert_to_numpy(dead(inputs)),
        rtol=1e-5,
    )
    graph = kgraph.lift(pruned)
    clip = next(n for n in graph.nodes() if n.class_name == "Clip")
    np.testing.assert_array_equal(clip.config["x_max"], [1.0, 4.0])
    greater = next(n for n in graph.nodes() if n.class_name == "Greater")
    np.testing.assert_array_equal(greater.args[1], [-1.5, 1.5])


def test_comparison_of_two_tensors_couples_them() -> None:
    x = keras.Input((6,))
    a, b = L.Dense(4, name="a")(x), L.Dense(4, name="b")(x)
    y = keras.ops.cast(keras.ops.greater(a, b), "float32")
    model = keras.Model(x, L.Dense(2, name="head")(y))
    pruned = kgraph.lift(model).apply(DeleteChannels("a", [0])).lower()
    assert pruned.get_layer("b").units == 3


def test_a_constant_that_widens_the_channels_starts_new_ones() -> None:
    x = keras.Input((6,))
    y = L.Dense(1, name="dense")(x) + np.ones(5, "float32")
    model = keras.Model(x, L.Dense(2, name="head")(y))
    graph = kgraph.lift(model)
    add = next(n for n in graph.nodes() if n.kind == "op")
    assert add.outputs[0].shape == (None, 5)
    assert add.outputs[0].mask.size == 5
    graph.verify()
    lowered = graph.lower()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(lowered(np.ones((2, 6)))),
        keras.ops.convert_to_numpy(model(np.ones((2, 6)))),
        rtol=1e-6,
    )


def test_reshape_keeps_its_channel_axis_when_sizes_of_one_make_another_fit() -> None:
    """Dense(2) -> Reshape((1, 2)): once one unit is left, (1, 1) fits the channel axis
    either way; re-inferred in a later apply, it must stay on axis 2, where Dense "e"
    reads it (a wrong axis would make "e" output tracked channels it does not own)."""
    x = keras.Input((4,))
    y = keras.layers.Dense(2, name="d")(x)
    y = keras.layers.Reshape((1, 2), name="reshape")(y)
    y = keras.layers.Dense(3, name="e")(y)
    model = keras.Model(x, keras.layers.Dense(2, name="f")(y))
    graph = kgraph.lift(model).apply(DeleteChannels("d", [0]))
    later = graph.apply(InsertLayer("reshape", keras.layers.ReLU(name="relu")), verify=True)
    assert later.node("reshape").outputs[0].axis == 2
    assert later.node("e").outputs[0].mask.tolist() == [True, True, True]
    pruned = later.lower()
    np.testing.assert_array_equal(
        pruned.get_layer("e").get_weights()[0], model.get_layer("e").get_weights()[0][1:]
    )
