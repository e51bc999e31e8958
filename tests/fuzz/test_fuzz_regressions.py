"""What the fuzz suite found, reduced to small models (one test per finding).

A test marked `xfail(strict=True)` is a kgraph bug still to be fixed: it asserts the
right behaviour and fails loudly (XPASS) once the bug is gone; then drop the mark, and
the matching case in `oracles.known_issue`. The others pin down a behaviour or a
limitation the fuzz tests had to learn about.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import check_dead_channels, dead_copy, fingerprint, outputs_of, sample_inputs

import kgraph
from kgraph.passes import DeleteChannels, DeleteLayer, InsertLayer, ReplaceLayer

L = keras.layers


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv_keeping_one_channel(data_format: str, multiplier: int) -> None:
    shape = (7, 3) if data_format == "channels_last" else (3, 9)
    x = keras.Input(shape)
    y = L.Conv1D(5, 1, data_format=data_format, name="conv")(x)
    y = L.Conv1D(
        5 * multiplier,
        3,
        groups=5,
        padding="same",
        data_format=data_format,
        use_bias=False,
        name="depthwise",
    )(y)
    y = L.GlobalAveragePooling1D(data_format=data_format)(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    pruned = check_dead_channels(model, {"conv": [0, 1, 3, 4]})
    assert pruned.get_layer("depthwise").filters == multiplier


def test_depthwise_conv_keeping_two_channels() -> None:
    """The same deletion, one channel fewer: fine (the bug above needs groups -> 1)."""
    x = keras.Input((7, 3))
    y = L.Conv1D(5, 1, name="conv")(x)
    y = L.Conv1D(10, 3, groups=5, padding="same", use_bias=False, name="depthwise")(y)
    model = keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling1D()(y)))
    pruned = check_dead_channels(model, {"conv": [0, 1, 3]})
    assert pruned.get_layer("depthwise").filters == 4
    assert pruned.get_layer("depthwise").groups == 2


def _rearranged(kind: str) -> tuple[keras.Model, dict[str, list[int]]]:
    """An Add of another owner's channels re-arranged (by a depthwise multiplier or a
    Flatten) and a layer of its own; deleting channel 1 of `d` deletes these."""
    x = keras.Input((6, 3))
    d = L.Dense(4, name="d")(x)
    if kind == "depthwise":
        h = L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", use_bias=False, name="dw")(d)
        c = L.Conv1D(8, 1, name="c")(d)
        y = L.Flatten()(L.Add(name="add")([h, c]))
        dead = {"d": [1], "c": [2, 3]}
    else:
        h = L.Flatten(name="flat")(d)
        c = L.Dense(24, name="c")(h)
        y = L.Add(name="add")([h, c])
        dead = {"d": [1], "c": [t * 4 + 1 for t in range(6)]}
    return keras.Model(x, L.Dense(2, name="head")(y)), dead


@pytest.mark.parametrize("kind", ["depthwise", "flatten"])
def test_rearranged_channels_are_deleted_by_name(kind: str) -> None:
    """A limitation, by design: channel groups do not follow channels re-arranged by a
    depthwise multiplier or a Flatten into an element-wise merge. Both owners are left
    out of pruning, and `DeleteChannels` on one of them is a MaskConflictError (a
    KGraphError naming the Add) — delete the channels of both, by name."""
    model, dead = _rearranged(kind)
    groups = {g.owners: g for g in kgraph.channel_groups(model)}
    assert not groups[("d",)].prunable and not groups[("c",)].prunable
    assert "re-arranged" in groups[("d",)].reason
    before = fingerprint(model)
    with pytest.raises(kgraph.MaskConflictError, match="'add'"):
        kgraph.lift(model).apply(DeleteChannels("d", dead["d"]))
    assert fingerprint(model) == before
    check_dead_channels(model, dead)  # both named: the dead-channel oracle holds


def _after_input_permute() -> keras.Model:
    x = keras.Input((5, 7))  # channels-first data: 5 features, 7 steps
    y = L.Permute((2, 1), name="to_steps_first")(x)  # (7 steps, 5 features)
    a = L.GRU(4, return_sequences=True, name="gru")(y)
    b = L.Dense(3, name="dense")(y)
    y = L.Concatenate(name="concat")([a, b])
    return keras.Model(x, L.Dense(2, name="head")(y))


@pytest.mark.parametrize("owner", ["gru", "dense"])
def test_units_after_a_channels_first_input_is_permuted(owner: str) -> None:
    """The Dense after a Permute of a model input owns its units (a model input's
    channels, on axis 1 after the Permute, are never deleted, so the Dense need not
    work position by position along them), and the Concatenate no longer couples the
    GRU's units to the model input."""
    check_dead_channels(_after_input_permute(), {owner: [1]})


def test_permuted_input_added_to_units_is_refused() -> None:
    """Units added to a permuted model input's data cannot be deleted; the error names
    the input."""
    x = keras.Input((5, 7), name="x")
    y = L.Permute((2, 1), name="to_steps_first")(x)
    y = L.Add(name="add")([L.Dense(5, name="dense")(y), y])
    model = keras.Model(x, L.Dense(2, name="head")(y))
    with pytest.raises(kgraph.ChannelError, match="they are the channels of model input 'x'"):
        kgraph.lift(model).apply(DeleteChannels("dense", [1]))


def test_permute_of_an_input_to_channels_first_convs() -> None:
    """A channels_last input permuted for channels_first convolutions: the channels stay
    on axis 1, where the convolution reads them, and its filters can be deleted."""
    x = keras.Input((6, 7, 3))
    y = L.Permute((3, 1, 2), name="to_cf")(x)
    y = L.Conv2D(4, 3, data_format="channels_first", name="conv")(y)
    y = L.GlobalAveragePooling2D(data_format="channels_first")(y)
    check_dead_channels(keras.Model(x, L.Dense(2, name="head")(y)), {"conv": [1, 2]})


def test_units_after_a_channels_last_input() -> None:
    """The same layers on a channels-last input: both can be pruned."""
    x = keras.Input((7, 5))
    a = L.GRU(4, return_sequences=True, name="gru")(x)
    b = L.Dense(3, name="dense")(x)
    model = keras.Model(x, L.Dense(2, name="head")(L.Concatenate()([a, b])))
    check_dead_channels(model, {"gru": [1], "dense": [0]})


def test_channels_first_sum_keepdims_gate() -> None:
    x = keras.Input((3, 6, 7))
    y = L.Conv2D(4, 1, data_format="channels_first", name="conv")(x)
    y = y * keras.ops.tanh(keras.ops.sum(y, axis=1, keepdims=True))
    y = L.GlobalAveragePooling2D(data_format="channels_first")(y)
    check_dead_channels(keras.Model(x, L.Dense(2, name="head")(y)), {"conv": [1]})


def test_channels_last_sum_keepdims_gate() -> None:
    """The same gate in channels_last: fine."""
    x = keras.Input((6, 7, 3))
    y = L.Conv2D(4, 1, name="conv")(x)
    y = y * keras.ops.tanh(keras.ops.sum(y, axis=-1, keepdims=True))
    y = L.GlobalAveragePooling2D()(y)
    check_dead_channels(keras.Model(x, L.Dense(2, name="head")(y)), {"conv": [1]})


def _two_convs(data_format: str) -> keras.Model:
    x = keras.Input((3, 6, 9) if data_format == "channels_first" else (6, 9, 3))
    y = L.Conv2D(3, 3, padding="same", data_format=data_format, name="c1")(x)
    y = L.Conv2D(4, 3, padding="same", data_format=data_format, name="c2")(y)
    y = L.GlobalAveragePooling2D(data_format=data_format)(y)
    return keras.Model(x, L.Dense(2, name="head")(y))


def _without_c1(model: keras.Model, data_format: str) -> keras.Model:
    """What DeleteLayer("c1") should give, built by Keras with the same weights."""
    x = keras.Input(model.input.shape[1:])
    c2 = L.Conv2D(4, 3, padding="same", data_format=data_format, name="c2")
    y = L.GlobalAveragePooling2D(data_format=data_format)(c2(x))
    head = L.Dense(2, name="head")
    expected = keras.Model(x, head(y))
    c2.set_weights(model.get_layer("c2").get_weights())
    head.set_weights(model.get_layer("head").get_weights())
    return expected


def test_delete_first_layer_of_channels_first() -> None:
    model = _two_convs("channels_first")
    result = kgraph.lift(model).apply(DeleteLayer("c1"), verify=True).lower()
    inputs = sample_inputs(model)
    np.testing.assert_allclose(
        outputs_of(result, inputs)[0],
        outputs_of(_without_c1(model, "channels_first"), inputs)[0],
        rtol=1e-4,
        atol=1e-5,
    )


def test_delete_first_layer_of_channels_last() -> None:
    model = _two_convs("channels_last")
    result = kgraph.lift(model).apply(DeleteLayer("c1"), verify=True).lower()
    inputs = sample_inputs(model)
    np.testing.assert_allclose(
        outputs_of(result, inputs)[0],
        outputs_of(_without_c1(model, "channels_last"), inputs)[0],
        rtol=1e-4,
        atol=1e-5,
    )


def test_delete_layer_changing_rank_before_an_op() -> None:
    """A keras.ops operation traced on the pooled (rank-2) tensor cannot follow the rank-4
    input: a SurgeryError naming it, not an IndexError (found by the fuzzer)."""
    x = keras.Input((4, 4, 3))
    y = L.GlobalAveragePooling2D(name="gap")(x) * 2.0
    model = keras.Model(x, L.Dense(2, name="head")(y))
    before = fingerprint(model)
    with pytest.raises(kgraph.SurgeryError, match=r"inputs of rank \[2\] and now gets rank \[4\]"):
        kgraph.lift(model).apply(DeleteLayer("gap"), verify=True).lower()
    assert fingerprint(model) == before


def test_delete_layer_changing_rank_before_a_normalization() -> None:
    """The same for a layer rule (found by the long fuzz run: a raw IndexError)."""
    x = keras.Input((5, 4))
    y = L.GlobalAveragePooling1D(name="gap")(x)
    y = L.UnitNormalization(name="norm")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    with pytest.raises(kgraph.SurgeryError, match=r"'norm' .* was built for inputs of rank"):
        kgraph.lift(model).apply(DeleteLayer("gap"), verify=True).lower()


def test_delete_layer_changing_rank() -> None:
    """Without the operation: the Dense then works on the last axis of the pooling's
    input, as Keras would build it."""
    x = keras.Input((4, 4, 3))
    model = keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling2D(name="gap")(x)))
    result = kgraph.lift(model).apply(DeleteLayer("gap"), verify=True).lower()
    head = L.Dense(2, name="head")
    expected = keras.Model(x, head(x))
    head.set_weights(model.get_layer("head").get_weights())
    inputs = sample_inputs(model)
    np.testing.assert_allclose(
        outputs_of(result, inputs)[0], outputs_of(expected, inputs)[0], rtol=1e-4, atol=1e-5
    )


def test_channels_first_conv_bias_matches_its_channels_only_when_shapes_differ() -> None:
    """A Keras limitation the generator works around (`strategies._cf_bias_ok`): with the
    TensorFlow backend, a channels_first convolution whose last spatial axis is as long
    as it has filters adds its bias along that spatial axis. Pruned models change their
    filter counts, so the fuzz models keep channels_first convolutions' last spatial
    axis longer than their filters (or leave out the bias)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("a TensorFlow-backend bias-add bug")
    got = {}
    for width in (3, 4):
        x = keras.Input((2, 6, width))
        conv = L.Conv2D(4, 1, data_format="channels_first")
        model = keras.Model(x, conv(x))
        conv.set_weights([np.zeros((1, 1, 2, 4), "float32"), np.arange(4, dtype="float32")])
        out = keras.ops.convert_to_numpy(model(np.zeros((1, 2, 6, width), "float32")))
        got[width] = out[0, :, 0, 0]  # channel c should be c everywhere
    np.testing.assert_array_equal(got[3], [0, 1, 2, 3])
    assert not np.array_equal(got[4], [0, 1, 2, 3])  # the bias went along the last axis


def test_dead_copy_sanity() -> None:
    """The oracle itself: a dead channel is zero whatever the input."""
    x = keras.Input((4,))
    model = keras.Model(x, L.Dense(3, name="d")(x))
    dead = dead_copy(model, {"d": [1]})
    out = keras.ops.convert_to_numpy(dead(np.random.default_rng(0).normal(size=(5, 4))))
    assert np.all(out[:, 1] == 0) and np.all(out[:, 0] != 0)


def test_replacing_a_merge_with_a_layer_of_one_tensor_is_refused() -> None:
    """ReplaceLayer of an Add by a ReLU: Keras builds ReLU([a, b]) as if it mapped over
    the list, but runs it on the two tensors stacked, so the lowered model failed on its
    first call (found by the fuzzer); now a SurgeryError says what to do."""
    x = keras.Input((2, 2))
    d = L.Dense(2, name="dense")(x)
    y = L.Add(name="add")([d, L.Dense(2, name="branch")(d)])
    model = keras.Model(x, L.Dense(3, name="head")(L.BatchNormalization(name="bn")(y)))
    before = fingerprint(model)
    with pytest.raises(kgraph.SurgeryError, match="takes a list of 2 tensors, but ReLU"):
        kgraph.lift(model).apply(ReplaceLayer("add", L.ReLU(name="relu")))
    assert fingerprint(model) == before
    # a merge in its place is fine, and computes what Keras builds by hand
    result = kgraph.lift(model).apply(ReplaceLayer("add", L.Maximum(name="max"))).lower()
    inputs = sample_inputs(model)
    got = outputs_of(result, inputs)[0]
    dense = outputs_of(keras.Model(x, d), inputs)[0]
    branch = outputs_of(keras.Model(x, model.get_layer("branch").output), inputs)[0]
    bn = model.get_layer("bn")
    head = model.get_layer("head")
    expected = outputs_of(
        keras.Sequential([keras.Input((2, 2)), bn, head]), np.maximum(dense, branch)
    )[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow-only Keras bug")
def test_keras_einsum_dense_bias_of_shape_n_by_one_is_misplaced_on_tensorflow() -> None:
    """Why the fuzz models use key_dim >= 2: Keras 3.15 on TensorFlow adds an
    EinsumDense bias of shape (heads, 1) along the sequence axis when the sequence is
    as long as there are heads, so a MultiHeadAttention with key_dim=1 mixes its heads'
    biases and a dead head is not dead. This test fails once Keras fixes it: then allow
    key_dim=1 again in strategies.py."""
    layer = L.EinsumDense("abc,cde->abde", output_shape=(None, 3, 1), bias_axes="de")
    bias = np.array([[1.0], [2.0], [3.0]], "float32")
    for steps, expected in ((4, [1.0, 2.0, 3.0]), (3, [1.0, 1.0, 1.0])):  # right, wrong
        x = np.random.default_rng(0).normal(size=(2, steps, 2)).astype("float32")
        layer(x)
        layer.set_weights([np.zeros((2, 3, 1), "float32"), bias])
        added = keras.ops.convert_to_numpy(layer(x))[0, 0, :, 0]
        np.testing.assert_array_equal(added, expected)  # 3 steps should give [1, 2, 3] too


def test_replaced_permute_of_an_input_keeps_its_channel_axis() -> None:
    """A Permute of a channels_last image for channels_first layers, replaced by a copy,
    with a BatchNormalization(axis=1) inserted after it: the new Permute moves the
    input's channels to axis 1 as the old one did (a first fix of the Permute-of-an-
    input finding placed a new Permute's channels on the last axis; the long fuzz run
    refused this surgery with "carries 4 channels where it was built for 3")."""
    x = keras.Input((4, 4, 3), name="x")
    permute = L.Permute((3, 1, 2), name="permute")
    pool = L.MaxPooling2D(2, data_format="channels_first", name="pool")
    conv = L.Conv2D(5, 1, data_format="channels_first", name="conv")
    gap = L.GlobalAveragePooling2D(data_format="channels_first", name="gap")
    head = L.Dense(2, name="head")
    model = keras.Model(x, head(gap(conv(pool(permute(x))))))
    bn = L.BatchNormalization(axis=1, name="bn")
    expected = keras.Model(x, head(gap(conv(pool(bn(permute(x)))))))
    bn.set_weights(
        [np.array(v, "float32") for v in ([0.5, 1, 2], [1, 0, -1], [0, 1, 2], [1, 2, 3])]
    )
    result = (
        kgraph.lift(model)
        .apply(InsertLayer("pool", bn), ReplaceLayer("permute", L.Permute((3, 1, 2))))
        .lower()
    )
    inputs = sample_inputs(model)
    np.testing.assert_allclose(
        outputs_of(result, inputs)[0], outputs_of(expected, inputs)[0], rtol=1e-5, atol=1e-6
    )


@pytest.mark.xfail(
    strict=True,
    raises=kgraph.MaskConflictError,
    reason="kgraph limitation (kgraph/lift.py _input_channel_axis): a model input's channel "
    "axis is chosen once, at lift, from the layers reading it. Deleting the Permute makes "
    "a channels_first Conv1D and an Average read the input directly, but its channels stay "
    "on the last axis chosen for the Permute, so the Average sees them on another axis "
    "than the Conv1D's filters and refuses ('keeps 3/3' on both inputs). The fix: choose "
    "an input's axis again when a pass changes its readers",
)
def test_delete_a_permute_of_an_input_before_channels_first_layers() -> None:
    x = keras.Input((3, 3), name="x")
    y = L.Permute((2, 1), name="permute")(x)
    conv = L.Conv1D(3, 2, padding="same", data_format="channels_first", name="conv")
    y = L.Average(name="average")([y, conv(y)])
    head = L.Dense(2, name="head")
    model = keras.Model(x, head(L.Flatten()(y)))
    expected = keras.Model(x, head(L.Flatten()(L.Average()([x, conv(x)]))))
    result = kgraph.lift(model).apply(DeleteLayer("permute")).lower()
    inputs = sample_inputs(model)
    np.testing.assert_allclose(
        outputs_of(result, inputs)[0], outputs_of(expected, inputs)[0], rtol=1e-5, atol=1e-6
    )
