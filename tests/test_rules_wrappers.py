"""Rules for wrapper layers: TimeDistributed and Bidirectional, and stacked recurrent layers.

Every deletion is checked twice: the dead-channel oracle (the channels are made
exactly zero in a copy first, so deleting them must not change the outputs) and
`np.delete` of the original weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import pytest
from helpers import (
    assert_same_outputs,
    check_dead_channels,
    copy_model,
    delete,
    fingerprint,
    gate_columns,
    sample_inputs,
    weights_of,
    zero_outputs,
)

import kgraph
from kgraph.passes import DeleteChannels

L = keras.layers
COUPLED = ("sum", "mul", "ave")


# -- oracles for Bidirectional layers -------------------------------------------------


def direction_units(layer: L.Bidirectional, channels: Sequence[int]) -> tuple[list, list]:
    """The (forward, backward) units that `channels` of a Bidirectional layer name."""
    units = layer.forward_layer.units
    channels = [c % (units if layer.merge_mode in COUPLED else 2 * units) for c in channels]
    if layer.merge_mode in COUPLED:
        return sorted(channels), sorted(channels)
    return sorted(c for c in channels if c < units), sorted(
        c - units for c in channels if c >= units
    )


def zero_bidirectional(layer: L.Bidirectional, channels: Sequence[int]) -> None:
    """Make `channels` of a Bidirectional layer exactly zero (both directions' gates)."""
    weights = [np.array(w) for w in layer.get_weights()]
    half = len(weights) // 2
    for units, part in zip(direction_units(layer, channels), (weights[:half], weights[half:])):
        columns = gate_columns(layer.forward_layer, units)
        for w in part:
            w[..., columns] = 0
    layer.set_weights(weights)


def check_dead(model: keras.Model, deletions: Mapping[str, Sequence[int]]) -> keras.Model:
    """The dead-channel oracle for models with Bidirectional layers among the producers."""
    before = fingerprint(model)
    dead = copy_model(model)
    for name, channels in deletions.items():
        layer = dead.get_layer(name)
        if isinstance(layer, L.TimeDistributed):
            layer = layer.layer  # its weights are the wrapped layer's
        if isinstance(layer, L.Bidirectional):
            zero_bidirectional(layer, channels)
        else:
            zero_outputs(layer, channels)
    pruned = delete(dead, deletions)
    assert_same_outputs(dead, pruned, sample_inputs(model))
    assert fingerprint(model) == before
    return pruned


def expected_rnn(weights: Sequence[np.ndarray], layer: L.Layer, units: Sequence[int]) -> list:
    """`np.delete` of one recurrent layer's (kernel, recurrent_kernel, bias) for `units`."""
    columns = gate_columns(layer, units)
    kernel, recurrent, *bias = weights
    return [
        np.delete(kernel, columns, axis=1),
        np.delete(np.delete(recurrent, columns, axis=1), units, axis=0),
        *(np.delete(b, columns, axis=-1) for b in bias),
    ]


def assert_arrays_equal(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


def assert_bidirectional_units(
    model: keras.Model, pruned: keras.Model, name: str, channels: Sequence[int]
) -> None:
    """The pruned Bidirectional layer lost exactly its units named by `channels`."""
    old, new = model.get_layer(name), pruned.get_layer(name)
    forward, backward = direction_units(old, channels)
    weights = weights_of(model, name)
    half = len(weights) // 2
    expected = expected_rnn(weights[:half], old.forward_layer, forward)
    expected += expected_rnn(weights[half:], old.forward_layer, backward)
    assert_arrays_equal(weights_of(pruned, name), expected)
    assert new.forward_layer.units == old.forward_layer.units - len(forward)
    assert new.backward_layer.units == new.forward_layer.units
    assert new.merge_mode == old.merge_mode


# -- TimeDistributed ------------------------------------------------------------------


@pytest.mark.parametrize("channels", [[0], [1, 3], [-1]])
def test_time_distributed_dense_units(channels: list[int]) -> None:
    x = keras.Input((5, 6))
    y = L.TimeDistributed(L.Dense(4, activation="relu"), name="td")(x)
    y = L.TimeDistributed(L.Dense(3), name="td2")(y)
    y = L.Dense(2, name="head")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"td": channels})
    idx = [c % 4 for c in channels]
    kernel, bias = weights_of(model, "td")
    assert_arrays_equal(
        weights_of(pruned, "td"), [np.delete(kernel, idx, axis=1), np.delete(bias, idx)]
    )
    kernel2, bias2 = weights_of(model, "td2")
    assert_arrays_equal(weights_of(pruned, "td2"), [np.delete(kernel2, idx, axis=0), bias2])
    assert_arrays_equal(weights_of(pruned, "head"), weights_of(model, "head"))
    assert pruned.get_layer("td").layer.units == 4 - len(idx)
    assert pruned.get_layer("td").get_config()["layer"]["config"]["units"] == 4 - len(idx)
    assert pruned.get_layer("td").output.shape == (None, 5, 4 - len(idx))


def test_time_distributed_dense_absorbs_input_channels() -> None:
    x = keras.Input((5, 6))
    y = L.Dense(5, name="dense")(x)
    y = L.TimeDistributed(L.Dense(3), name="td")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"dense": [0, 2]})
    kernel, bias = weights_of(model, "td")
    assert_arrays_equal(weights_of(pruned, "td"), [np.delete(kernel, [0, 2], axis=0), bias])
    assert pruned.get_layer("td").layer.units == 3


def conv_chain(data_format: str) -> keras.Model:
    shape = (4, 3, 9, 9) if data_format == "channels_first" else (4, 9, 9, 3)
    axis = 1 if data_format == "channels_first" else -1
    x = keras.Input(shape, name="frames")
    y = L.TimeDistributed(L.Conv2D(6, 3, data_format=data_format, name="conv"), name="c1")(x)
    y = L.TimeDistributed(L.BatchNormalization(axis=axis), name="bn")(y)
    y = L.TimeDistributed(L.ReLU(), name="relu")(y)
    y = L.TimeDistributed(L.MaxPooling2D(data_format=data_format), name="pool")(y)
    y = L.TimeDistributed(L.Conv2D(5, 3, data_format=data_format), name="c2")(y)
    y = L.TimeDistributed(L.Flatten(data_format=data_format), name="flat")(y)
    y = L.LSTM(3, name="lstm")(y)
    return keras.Model(x, L.Dense(2, name="head")(y))


def test_time_distributed_conv_chain(data_format: str) -> None:
    model = conv_chain(data_format)
    for layer in ("bn", "lstm"):  # non-trivial statistics and gates
        layer = model.get_layer(layer)
        layer.set_weights([np.random.rand(*w.shape) + 0.5 for w in layer.get_weights()])
    pruned = check_dead_channels(model, {"c1": [1, 4], "c2": [0, 3]}, batchnorms={"bn": [1, 4]})
    k1, b1 = weights_of(model, "c1")
    assert_arrays_equal(
        weights_of(pruned, "c1"), [np.delete(k1, [1, 4], axis=3), np.delete(b1, [1, 4])]
    )
    assert_arrays_equal(
        weights_of(pruned, "bn"), [np.delete(w, [1, 4]) for w in weights_of(model, "bn")]
    )
    k2, b2 = weights_of(model, "c2")
    assert_arrays_equal(
        weights_of(pruned, "c2"),
        [np.delete(np.delete(k2, [1, 4], axis=2), [0, 3], axis=3), np.delete(b2, [0, 3])],
    )
    lstm = weights_of(model, "lstm")  # the 1x1 maps flatten to one feature per filter
    assert_arrays_equal(weights_of(pruned, "lstm"), [np.delete(lstm[0], [0, 3], axis=0), *lstm[1:]])
    assert pruned.get_layer("c1").layer.filters == 4
    assert pruned.get_layer("c2").layer.filters == 3
    channels_shape = (4, 3, 3) if data_format == "channels_first" else (3, 3, 4)
    assert pruned.get_layer("pool").output.shape == (None, 4, *channels_shape)
    graph = kgraph.lift(model).apply(DeleteChannels("c1", [1, 4]))
    node = graph.node("c1")
    assert node.outputs[0].axis == (2 if data_format == "channels_first" else 4)
    assert node.config["layer"]["config"]["filters"] == 4
    assert "build_config" not in graph.node("c2").config["layer"]  # rebuilt for 4 channels
    shape = (4, 7, 7) if data_format == "channels_first" else (7, 7, 4)
    assert f"%c1 = TimeDistributed(%frames) : {(None, 4, *shape)}  4/6 kept" in str(graph)


def test_time_distributed_deletions_use_lifted_indices() -> None:
    x = keras.Input((5, 6))
    y = L.TimeDistributed(L.Dense(4), name="td")(x)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    graph = kgraph.lift(model).apply(DeleteChannels("td", [0]))
    graph = graph.apply(DeleteChannels("td", [0, 2]), verify=True)
    pruned = graph.lower()
    kernel, bias = weights_of(model, "td")
    assert_arrays_equal(
        weights_of(pruned, "td"), [np.delete(kernel, [0, 2], axis=1), np.delete(bias, [0, 2])]
    )
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(weights_of(model, "head")[0], [0, 2], axis=0)
    )


def test_time_distributed_with_channels_on_the_time_axis() -> None:
    """After a Permute the channels are TimeDistributed's time steps: they pass through."""
    x = keras.Input((5, 3))
    y = L.Dense(4, name="dense")(x)
    y = L.Permute((2, 1), name="permute")(y)  # (batch, 4 channels, 5)
    y = L.TimeDistributed(L.Dense(2), name="td")(y)  # Dense on each of the 4 channels
    y = L.Flatten(name="flat")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    pruned = check_dead_channels(model, {"dense": [0, 3]})
    assert_arrays_equal(weights_of(pruned, "td"), weights_of(model, "td"))
    assert pruned.get_layer("td").output.shape == (None, 2, 2)
    rows = [0, 1, 6, 7]  # the flattened (channel, feature) positions of channels 0 and 3
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(weights_of(model, "head")[0], rows, axis=0)
    )
    # td's output carries dense's channels: deleting them there deletes them at dense
    graph = kgraph.lift(model)
    assert str(graph.apply(DeleteChannels("td", [0]))) == str(
        graph.apply(DeleteChannels("dense", [0]))
    )


def test_time_distributed_refusals_name_the_wrapper_and_the_inner_layer() -> None:
    x = keras.Input((3, 6, 6, 2))
    y = L.TimeDistributed(L.Conv2D(4, 3), name="c1")(x)
    y = L.TimeDistributed(L.Reshape((8, 8)), name="mixing")(y)  # mixes channels and space
    y = L.TimeDistributed(L.Flatten(), name="flat")(y)
    model = keras.Model(x, y)
    graph = kgraph.lift(model)
    with pytest.raises(kgraph.UnsupportedLayerError) as error:
        graph.apply(DeleteChannels("c1", [0]))
    message = str(error.value)
    assert "'mixing' (TimeDistributed)" in message and "Reshape" in message
    assert "moves the channels into axes kgraph cannot track" in message
    with pytest.raises(kgraph.ChannelError, match=r"'flat' \(TimeDistributed\) does not own"):
        graph.apply(DeleteChannels("flat", [0]))


def test_time_distributed_bidirectional() -> None:
    """Any wrapped layer with a rule works, even another wrapper."""
    x = keras.Input((3, 5, 4))
    y = L.TimeDistributed(L.Dense(6), name="dense")(x)
    y = L.TimeDistributed(L.Bidirectional(L.LSTM(3), merge_mode="sum"), name="td_bi")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    pruned = check_dead(model, {"dense": [1, 2], "td_bi": [0]})
    old = weights_of(model, "td_bi")
    old[0], old[3] = (np.delete(old[i], [1, 2], axis=0) for i in (0, 3))
    lstm = model.get_layer("td_bi").layer.forward_layer
    expected = expected_rnn(old[:3], lstm, [0]) + expected_rnn(old[3:], lstm, [0])
    assert_arrays_equal(weights_of(pruned, "td_bi"), expected)
    assert pruned.get_layer("td_bi").layer.backward_layer.units == 2
    assert pruned.get_layer("td_bi").output.shape == (None, 3, 2)


@keras.saving.register_keras_serializable(package="kgraph_wrapper_tests")
class Scale(keras.layers.Layer):
    """A layer kgraph has no rule for."""

    def build(self, input_shape: tuple) -> None:
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        return x * self.scale

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


def test_time_distributed_of_a_layer_without_rule_is_refused() -> None:
    x = keras.Input((3, 6))
    y = L.TimeDistributed(L.Dense(4), name="td")(x)
    y = L.TimeDistributed(Scale(name="scale"), name="td_scale")(y)
    model = keras.Model(x, y)
    graph = kgraph.lift(model)
    assert graph.lower().get_layer("td_scale").layer.__class__ is Scale  # lifts and lowers
    with pytest.raises(kgraph.UnsupportedLayerError) as error:
        graph.apply(DeleteChannels("td", [0]))
    message = str(error.value)
    assert "'td_scale' (TimeDistributed)" in message and "no rule for Scale" in message


# -- Bidirectional ----------------------------------------------------------------------

BIDIRECTIONAL_CASES = [
    (kind, mode, return_sequences)
    for kind in ("SimpleRNN", "GRU", "LSTM")
    for mode, return_sequences in (
        ("concat", True),
        ("concat", False),
        ("sum", kind != "GRU"),
        ("mul", kind == "GRU"),
        ("ave", kind == "LSTM"),
        (None, kind != "SimpleRNN"),
    )
]


@pytest.mark.parametrize(("kind", "mode", "return_sequences"), BIDIRECTIONAL_CASES)
def test_bidirectional_units(kind: str, mode: str | None, return_sequences: bool) -> None:
    x = keras.Input((5, 3))
    rnn = getattr(L, kind)(4, return_sequences=return_sequences)
    y = L.Bidirectional(rnn, merge_mode=mode, name="bi")(x)
    if mode is None:
        y = L.Concatenate(name="cat")(list(y))
    model = keras.Model(x, L.Dense(2, name="head")(y))
    # concat/None: forward unit 0 and backward unit 2; sum/mul/ave: units 1 and 3 of both
    channels = [1, 3] if mode in COUPLED else [0, 4 + 2]
    pruned = check_dead(model, {"bi": channels})
    assert_bidirectional_units(model, pruned, "bi", channels)
    rows = [1, 3] if mode in COUPLED else [0, 6]
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(weights_of(model, "head")[0], rows, axis=0)
    )
    width = {"concat": 6, None: 3}.get(mode, 2)
    shapes = [t.shape[-1] for t in keras.tree.flatten(pruned.get_layer("bi").output)]
    assert shapes == ([width, width] if mode is None else [width])


@pytest.mark.parametrize(
    ("kind", "mode"), [("LSTM", "concat"), ("LSTM", None), ("LSTM", "mul"), ("GRU", None)]
)
def test_bidirectional_return_state(kind: str, mode: str | None) -> None:
    x = keras.Input((5, 3))
    rnn = getattr(L, kind)(4, return_sequences=True, return_state=True)
    outputs = L.Bidirectional(rnn, merge_mode=mode, name="bi")(x)
    sequences = outputs[:2] if mode is None else outputs[:1]
    states = outputs[len(sequences) :]
    pooled = [L.GlobalAveragePooling1D()(s) for s in sequences]
    y = L.Concatenate(name="cat")([*pooled, *states])
    model = keras.Model(x, L.Dense(2, name="head")(y))
    channels = [1, 2] if mode in COUPLED else [1, 4 + 3]
    pruned = check_dead(model, {"bi": channels})
    assert_bidirectional_units(model, pruned, "bi", channels)
    forward, backward = direction_units(model.get_layer("bi"), channels)
    per_state = len(states) // 2
    if mode in COUPLED:
        blocks = [forward] + [forward] * per_state + [backward] * per_state
    elif mode == "concat":
        blocks = [forward + [4 + u for u in backward]]
        blocks += [forward] * per_state + [backward] * per_state
    else:
        blocks = [forward, backward] + [forward] * per_state + [backward] * per_state
    widths = [8 if mode == "concat" else 4] + [4] * (len(blocks) - 1)
    starts = np.cumsum([0, *widths[:-1]])
    rows = [start + u for start, block in zip(starts, blocks) for u in block]
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(weights_of(model, "head")[0], rows, axis=0)
    )
    shapes = [t.shape[-1] for t in pruned.get_layer("bi").output]
    assert shapes[len(sequences) :] == [4 - len(forward)] * len(states)


@pytest.mark.parametrize("mode", ["concat", None])
def test_bidirectional_directions_must_keep_as_many_units(mode: str | None) -> None:
    x = keras.Input((5, 3))
    y = L.Bidirectional(L.GRU(4), merge_mode=mode, name="bi")(x)
    if mode is None:
        y = L.Concatenate(name="cat")(list(y))
    model = keras.Model(x, L.Dense(2, name="head")(y))
    graph = kgraph.lift(model)
    with pytest.raises(kgraph.ChannelError) as error:
        graph.apply(DeleteChannels("bi", [0, 1, 5]))
    message = str(error.value)
    assert "'bi' (Bidirectional)" in message
    assert "keep 2 forward units but 3 backward units" in message
    assert "[j, j + 4]" in message
    # the same units of both directions, or different ones: both fine
    for channels in ([0, 4], [0, 1, 5, 7]):
        pruned = check_dead(model, {"bi": channels})
        assert_bidirectional_units(model, pruned, "bi", channels)


def test_bidirectional_channel_indices_are_checked() -> None:
    x = keras.Input((5, 3))
    model = keras.Model(x, L.Bidirectional(L.LSTM(4), merge_mode="sum", name="bi")(x))
    with pytest.raises(kgraph.ChannelError, match=r"out of range for 'bi' \(Bidirectional\)"):
        kgraph.lift(model).apply(DeleteChannels("bi", [4]))
    x = keras.Input((5, 3))
    model = keras.Model(x, L.Bidirectional(L.LSTM(4), merge_mode=None, name="bi")(x))
    with pytest.raises(kgraph.ChannelError, match=r"'bi' \(Bidirectional\), which has 8 channels"):
        kgraph.lift(model).apply(DeleteChannels("bi", [8]))


def test_bidirectional_input_channels_slice_both_kernels() -> None:
    x = keras.Input((5, 3))
    y = L.Dense(6, name="dense")(x)
    y = L.Bidirectional(L.GRU(3, reset_after=False), name="bi")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    pruned = check_dead_channels(model, {"dense": [1, 4]})
    old = weights_of(model, "bi")
    expected = [np.delete(w, [1, 4], axis=0) if i in (0, 3) else w for i, w in enumerate(old)]
    assert_arrays_equal(weights_of(pruned, "bi"), expected)
    graph = kgraph.lift(model).apply(DeleteChannels("dense", [1, 4]))
    config = graph.node("bi").config
    assert "build_config" not in config["layer"] and "build_config" not in config["backward_layer"]


def test_bidirectional_behind_a_masking_embedding() -> None:
    x = keras.Input((7,), dtype="int32")
    y = L.Embedding(10, 6, mask_zero=True, name="emb")(x)
    y = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="ave", name="bi")(y)
    y = L.GlobalAveragePooling1D()(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    pruned = check_dead(model, {"emb": [0, 5], "bi": [2]})
    old = weights_of(model, "bi")
    old[0], old[3] = (np.delete(old[i], [0, 5], axis=0) for i in (0, 3))  # embedding columns
    lstm = model.get_layer("bi").forward_layer
    expected = expected_rnn(old[:3], lstm, [2]) + expected_rnn(old[3:], lstm, [2])
    assert_arrays_equal(weights_of(pruned, "bi"), expected)


def encoders_and_bidirectional_decoder() -> keras.Model:
    source = keras.Input((6, 3), name="source")
    target = keras.Input((5, 2), name="target")
    _, hf, cf = L.LSTM(4, return_state=True, name="enc_f")(source)
    _, hb, cb = L.LSTM(4, return_state=True, name="enc_b")(source)
    y = L.Bidirectional(L.LSTM(4, return_sequences=True), name="bi")(
        target, initial_state=[hf, cf, hb, cb]
    )
    return keras.Model([source, target], L.Dense(2, name="head")(y))


def test_bidirectional_initial_states_follow_each_direction() -> None:
    model = encoders_and_bidirectional_decoder()
    pruned = check_dead(model, {"enc_f": [1], "enc_b": [2], "bi": [1, 4 + 2]})
    assert_bidirectional_units(model, pruned, "bi", [1, 6])


def test_bidirectional_initial_state_with_other_units_is_a_conflict() -> None:
    graph = kgraph.lift(encoders_and_bidirectional_decoder())
    with pytest.raises(kgraph.MaskConflictError) as error:
        graph.apply(DeleteChannels("enc_f", [1]), DeleteChannels("bi", [2, 6]))
    message = str(error.value)
    assert "forward layer of 'bi' (Bidirectional) keeps units 3/4 (deleted [2])" in message
    assert "'enc_f'" in message and "deleted [1]" in message


def test_bidirectional_with_a_layer_without_rule_is_refused() -> None:
    @keras.saving.register_keras_serializable(package="kgraph_wrapper_tests")
    class MyLSTM(L.LSTM):
        pass

    x = keras.Input((5, 3))
    y = L.Dense(4, name="dense")(x)
    y = L.Bidirectional(MyLSTM(3), name="bi")(y)
    model = keras.Model(x, y)
    kgraph.register_rule(MyLSTM, kgraph.rules.OpaqueRule())
    try:
        with pytest.raises(kgraph.UnsupportedLayerError) as error:
            kgraph.lift(model).apply(DeleteChannels("dense", [0]))
    finally:
        kgraph.unregister_rule(MyLSTM)
    message = str(error.value)
    assert "'bi' (Bidirectional)" in message and "no rule for MyLSTM" in message


def test_bidirectional_with_directions_of_different_sizes_is_refused() -> None:
    """Keras accepts such a backward layer (but infers the output shape from the forward one)."""
    x = keras.Input((5, 3))
    y = L.Dense(4, name="dense")(x)
    backward = L.LSTM(2, go_backwards=True)
    y = L.Bidirectional(L.LSTM(3), backward_layer=backward, name="bi")(y)
    graph = kgraph.lift(keras.Model(x, y))
    with pytest.raises(kgraph.UnsupportedLayerError) as error:
        graph.apply(DeleteChannels("dense", [0]))
    message = str(error.value)
    assert "'bi' (Bidirectional)" in message and "different units ([2, 3])" in message
    with pytest.raises(kgraph.ChannelError, match=r"'bi' \(Bidirectional\) does not own"):
        graph.apply(DeleteChannels("bi", [0]))


# -- stacked recurrent layers ---------------------------------------------------------


def test_stacked_recurrent_layers() -> None:
    x = keras.Input((6, 5))
    y = L.SimpleRNN(5, return_sequences=True, name="rnn")(x)
    y = L.LSTM(4, return_sequences=True, name="lstm")(y)
    y = L.GRU(3, name="gru")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    deletions = {"rnn": [0, 3], "lstm": [1], "gru": [2]}
    pruned = check_dead_channels(model, deletions)
    for name, previous in (("rnn", None), ("lstm", "rnn"), ("gru", "lstm")):
        old = weights_of(model, name)
        if previous is not None:  # the kernel reads the previous layer's units
            old[0] = np.delete(old[0], deletions[previous], axis=0)
        expected = expected_rnn(old, model.get_layer(name), deletions[name])
        assert_arrays_equal(weights_of(pruned, name), expected)
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(weights_of(model, "head")[0], [2], axis=0)
    )


def test_stacked_bidirectional_layers() -> None:
    x = keras.Input((6, 5))
    y = L.LSTM(5, return_sequences=True, name="lstm")(x)
    y = L.Bidirectional(L.GRU(4, return_sequences=True), name="bi1")(y)
    y = L.Bidirectional(L.LSTM(3), merge_mode="sum", name="bi2")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    deletions = {"lstm": [0, 3], "bi1": [1, 4 + 1, 4 + 3, 2], "bi2": [0]}
    pruned = check_dead(model, deletions)
    # bi1: both kernels lose the LSTM's rows, then its own units
    old = weights_of(model, "bi1")
    old[0], old[3] = (np.delete(old[i], [0, 3], axis=0) for i in (0, 3))
    gru = model.get_layer("bi1").forward_layer
    expected = expected_rnn(old[:3], gru, [1, 2]) + expected_rnn(old[3:], gru, [1, 3])
    assert_arrays_equal(weights_of(pruned, "bi1"), expected)
    # bi2: both kernels lose the rows of bi1's deleted channels, then unit 0 of both
    old = weights_of(model, "bi2")
    old[0], old[3] = (np.delete(old[i], [1, 2, 5, 7], axis=0) for i in (0, 3))
    lstm = model.get_layer("bi2").forward_layer
    expected = expected_rnn(old[:3], lstm, [0]) + expected_rnn(old[3:], lstm, [0])
    assert_arrays_equal(weights_of(pruned, "bi2"), expected)
    assert pruned.get_layer("bi1").output.shape == (None, 6, 4)
    assert pruned.get_layer("bi2").forward_layer.units == 2
    graph = kgraph.lift(model).apply(*(DeleteChannels(k, v) for k, v in deletions.items()))
    text = str(graph)
    assert "%bi1 = Bidirectional(%lstm) : (None, 6, 4)  4/8 kept" in text
    assert "%bi2 = Bidirectional(%bi1) : (None, 2)  2/3 kept" in text


def test_verify_checks_the_wrapped_configs() -> None:
    x = keras.Input((5, 3))
    y = L.TimeDistributed(L.Dense(4), name="td")(x)
    y = L.Bidirectional(L.LSTM(3), name="bi")(y)
    graph = kgraph.lift(keras.Model(x, y))
    td, bi = graph.node("td"), graph.node("bi")
    assert kgraph.rules.rule_for(td).check(td) == []
    assert kgraph.rules.rule_for(bi).check(bi) == []
    layer = {**td.config["layer"], "config": {**td.config["layer"]["config"], "units": 2}}
    td = td.with_config(layer=layer)
    assert kgraph.rules.rule_for(td).check(td) == [
        "wraps a Dense that has units=2 but outputs 4 channels"
    ]
    backward = {**bi.config["backward_layer"]}
    backward["config"] = {**backward["config"], "units": 2}
    bi = bi.with_config(backward_layer=backward)
    assert kgraph.rules.rule_for(bi).check(bi) == [
        "has a backward LSTM that has units=2 but outputs 3 channels"
    ]
