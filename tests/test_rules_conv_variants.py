"""Rules for the convolution variants: depthwise, separable, transposed and grouped convs.

Every function-preserving case runs a dead-channel oracle (outputs unchanged) and
compares the sliced weights with `np.delete` of the original weights, in both data
formats. The producer layouts the shared helpers do not know (separable and transposed
kernels, depthwise biases) are zeroed by the helpers below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import pytest
from helpers import (
    assert_same_outputs,
    check_dead_channels,
    copy_model,
    fingerprint,
    sample_inputs,
    weights_of,
    zero_batchnorm,
    zero_outputs,
)

import kgraph
from kgraph.passes import DeleteChannels
from kgraph.rules import rule_for

L = keras.layers

CONV = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}
DEPTHWISE = {1: L.DepthwiseConv1D, 2: L.DepthwiseConv2D}
SEPARABLE = {1: L.SeparableConv1D, 2: L.SeparableConv2D}
TRANSPOSE = {1: L.Conv1DTranspose, 2: L.Conv2DTranspose, 3: L.Conv3DTranspose}
# Every spatial size stays above the channel counts used here: Keras' TensorFlow backend
# adds a channels_first bias on the last axis when that axis has as many entries as there
# are channels (keras.src.backend.tensorflow.numpy.add picks NHWC for bias_add first).
SPATIAL_SHAPE = {1: (17,), 2: (15, 14), 3: (9, 8, 8)}
DATA_FORMATS = ("channels_last", "channels_first")

Zeroing = Callable[[keras.Model], None]


# -- oracles ------------------------------------------------------------------------------


def image_input(rank: int, data_format: str, channels: int = 3) -> keras.KerasTensor:
    spatial = SPATIAL_SHAPE[rank]
    shape = (channels, *spatial) if data_format == "channels_first" else (*spatial, channels)
    return keras.Input(shape, name="x")


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random weights everywhere (biases too, so zeroing them is what the oracle tests)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if "variance" in variable.name:
                values.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
            else:
                values.append(rng.normal(0.0, 0.5, shape).astype("float32"))
        if values:
            layer.set_weights(values)
    return model


def set_weight(layer: keras.layers.Layer, name: str, edit: Callable[[np.ndarray], None]) -> None:
    """Apply `edit` in place to a copy of `layer`'s weight `name` and store it."""
    names = [w.name for w in layer.weights]
    values = [np.array(w) for w in layer.get_weights()]
    edit(values[names.index(name)])
    layer.set_weights(values)


def zero_depthwise_bias(layer: keras.layers.Layer, input_channels: Sequence[int]) -> None:
    """Zero the bias of every output of the depthwise conv's `input_channels`."""
    m = layer.depth_multiplier
    outputs = [c * m + j for c in input_channels for j in range(m)]

    def edit(bias: np.ndarray) -> None:
        bias[outputs] = 0

    set_weight(layer, "bias", edit)


def zero_bias(layer: keras.layers.Layer, channels: Sequence[int]) -> None:
    def edit(bias: np.ndarray) -> None:
        bias[list(channels)] = 0

    set_weight(layer, "bias", edit)


def zero_separable_outputs(layer: keras.layers.Layer, filters: Sequence[int]) -> None:
    """Make filters of a SeparableConv exactly zero: pointwise columns and bias."""

    def edit(weight: np.ndarray) -> None:
        weight[..., list(filters)] = 0

    set_weight(layer, "pointwise_kernel", edit)
    set_weight(layer, "bias", edit)


def zero_transpose_outputs(layer: keras.layers.Layer, filters: Sequence[int]) -> None:
    """Make filters of a ConvTranspose exactly zero: kernel (*k, filters, in) axis -2, bias."""

    def kernel(weight: np.ndarray) -> None:
        weight[..., list(filters), :] = 0

    def bias(weight: np.ndarray) -> None:
        weight[list(filters)] = 0

    set_weight(layer, "kernel", kernel)
    set_weight(layer, "bias", bias)


def prune(
    model: keras.Model, deletions: Mapping[str, Sequence[int]]
) -> tuple[kgraph.Graph, keras.Model]:
    passes = [DeleteChannels(name, list(channels)) for name, channels in deletions.items()]
    graph = kgraph.lift(model).apply(*passes, verify=True)
    return graph, graph.lower()


def check_dead(
    model: keras.Model, deletions: Mapping[str, Sequence[int]], zero: Zeroing
) -> tuple[kgraph.Graph, keras.Model]:
    """The dead-channel oracle with a custom zeroing: `zero(copy)` makes the deleted
    channels dead in a copy; deleting them must leave its outputs unchanged."""
    before = fingerprint(model)
    dead = copy_model(model)
    zero(dead)
    graph, pruned = prune(dead, deletions)
    assert_same_outputs(dead, pruned, sample_inputs(model))
    assert fingerprint(model) == before
    return graph, pruned


def kernel_of(model: keras.Model, name: str, weight: str = "kernel") -> np.ndarray:
    layer = model.get_layer(name)
    return keras.ops.convert_to_numpy(next(w for w in layer.weights if w.name == weight))


# -- depthwise ------------------------------------------------------------------------------


def depthwise_model(rank: int, data_format: str, multiplier: int) -> keras.Model:
    df = {"data_format": data_format}
    x = image_input(rank, data_format)
    y = CONV[rank](4, 1, name="conv", **df)(x)
    y = DEPTHWISE[rank](2, depth_multiplier=multiplier, name="dw", activation="relu", **df)(y)
    y = CONV[rank](3, 2, name="head", **df)(y)
    return randomize(keras.Model(x, y))


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("multiplier", [1, 3])
def test_depthwise_follows_its_input(rank: int, multiplier: int, data_format: str) -> None:
    model = depthwise_model(rank, data_format, multiplier)
    deleted = [1, 3]
    outputs = [c * multiplier + j for c in deleted for j in range(multiplier)]

    def zero(dead: keras.Model) -> None:
        zero_outputs(dead.get_layer("conv"), deleted)
        zero_depthwise_bias(dead.get_layer("dw"), deleted)

    graph, pruned = check_dead(model, {"conv": deleted}, zero)

    kernel, bias = weights_of(model, "dw")
    new_kernel, new_bias = weights_of(pruned, "dw")
    np.testing.assert_array_equal(new_kernel, np.delete(kernel, deleted, axis=-2))
    np.testing.assert_array_equal(new_bias, np.delete(bias, outputs))
    head_kernel, head_bias = weights_of(model, "head")
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(head_kernel, outputs, axis=-2)
    )
    np.testing.assert_array_equal(weights_of(pruned, "head")[1], head_bias)
    assert pruned.get_layer("dw").depth_multiplier == multiplier

    # The output's lifted channel c * m + j is kept iff input channel c is.
    out = graph.node("dw").outputs[0]
    assert out.axis == (1 if data_format == "channels_first" else rank + 1)
    np.testing.assert_array_equal(out.mask, np.repeat([True, False, True, False], multiplier))


def test_depthwise_bias_of_deleted_inputs_is_not_preserved() -> None:
    """A depthwise output of a dead input is relu(bias), not zero: deleting it changes the
    output unless that bias was zero. The pruned model equals the dead model with the
    depthwise bias of the deleted channels zeroed."""
    model = depthwise_model(2, "channels_last", 2)
    dead = copy_model(model)
    zero_outputs(dead.get_layer("conv"), [0])
    dead.get_layer("dw").set_weights(
        [weights_of(dead, "dw")[0], np.abs(weights_of(dead, "dw")[1]) + 0.5]  # relu(b) > 0
    )
    _, pruned = prune(dead, {"conv": [0]})
    inputs = sample_inputs(model)
    with pytest.raises(AssertionError):
        assert_same_outputs(dead, pruned, inputs)
    zero_depthwise_bias(dead.get_layer("dw"), [0])
    assert_same_outputs(dead, pruned, inputs)


def test_depthwise_in_a_mobilenet_block() -> None:
    """MobileNet: conv_pw_1 -> BN -> ReLU6 -> pad -> conv_dw_2 -> BN -> ReLU6 -> conv_pw_2."""
    model = keras.applications.MobileNet(
        input_shape=(32, 32, 3), alpha=0.25, weights=None, include_top=False
    )
    randomize(model)
    deleted = [0, 3, 5]
    pruned = check_dead_channels(
        model, {"conv_pw_1": deleted}, batchnorms={"conv_pw_1_bn": deleted, "conv_dw_2_bn": deleted}
    )
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_dw_2")[0],
        np.delete(weights_of(model, "conv_dw_2")[0], deleted, axis=-2),
    )
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_pw_2")[0],
        np.delete(weights_of(model, "conv_pw_2")[0], deleted, axis=-2),
    )
    for old, new in zip(weights_of(model, "conv_dw_2_bn"), weights_of(pruned, "conv_dw_2_bn")):
        np.testing.assert_array_equal(new, np.delete(old, deleted))


@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_depthwise_then_batchnorm_with_multiplier(data_format: str) -> None:
    """The BatchNorm after a depthwise conv with m = 2 loses the m outputs of each channel."""
    df = {"data_format": data_format}
    axis = 1 if data_format == "channels_first" else -1
    x = image_input(2, data_format)
    y = L.Conv2D(3, 1, name="conv", **df)(x)
    y = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw", **df)(y)
    y = L.BatchNormalization(axis=axis, name="bn")(y)
    y = L.GlobalAveragePooling2D(**df)(L.ReLU()(y))
    model = randomize(keras.Model(x, L.Dense(2, name="head")(y)))

    def zero(dead: keras.Model) -> None:
        zero_outputs(dead.get_layer("conv"), [2])
        zero_depthwise_bias(dead.get_layer("dw"), [2])
        zero_batchnorm(dead.get_layer("bn"), [4, 5])

    _, pruned = check_dead(model, {"conv": [2]}, zero)
    for old, new in zip(weights_of(model, "bn"), weights_of(pruned, "bn")):
        np.testing.assert_array_equal(new, np.delete(old, [4, 5]))
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(weights_of(model, "head")[0], [4, 5], axis=0)
    )


@pytest.mark.parametrize(("rank", "multiplier"), [(1, 1), (2, 1), (2, 2)])
def test_depthwise_owns_no_channels(rank: int, multiplier: int) -> None:
    """With one output per channel its channels are its input's: deleting deletes upstream."""
    model = depthwise_model(rank, "channels_last", multiplier)
    graph = kgraph.lift(model)
    if multiplier == 1:
        assert str(graph.apply(DeleteChannels("dw", [0]))) == str(
            graph.apply(DeleteChannels(graph.producers("dw")[0][0], [0]))
        )
        return
    with pytest.raises(kgraph.ChannelError, match=rf"'dw' \(DepthwiseConv{rank}D\) does not own"):
        graph.apply(DeleteChannels("dw", [0]))


def test_depthwise_refuses_channels_on_another_axis() -> None:
    """After a Permute the deleted channels sit on the axis the depthwise conv slides over."""
    x = keras.Input((5, 4))
    y = L.Dense(6, name="dense")(x)  # (5, 6): channels on axis 2
    y = L.Permute((2, 1))(y)  # (6, 5): the channels are now the steps
    y = L.DepthwiseConv1D(2, name="dw")(y)
    model = keras.Model(x, y)
    with pytest.raises(
        kgraph.UnsupportedLayerError, match=r"'dw' \(DepthwiseConv1D\).*sit on axis 1"
    ):
        kgraph.lift(model).apply(DeleteChannels("dense", [0]))


# -- separable ------------------------------------------------------------------------------

DELETIONS = {
    "inputs": {"conv": [0, 2]},
    "filters": {"mid": [1, 4]},
    "both": {"conv": [0, 2], "mid": [1, 4]},
}


def sandwich(rank: int, data_format: str, middle: keras.layers.Layer) -> keras.Model:
    """conv (4 filters) -> `middle` (5 filters, named "mid") -> head conv."""
    df = {"data_format": data_format}
    x = image_input(rank, data_format)
    y = CONV[rank](4, 1, name="conv", **df)(x)
    y = middle(y)
    y = CONV[rank](3, 2, name="head", **df)(y)
    return randomize(keras.Model(x, y))


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("which", list(DELETIONS))
def test_separable(rank: int, which: str, data_format: str) -> None:
    m = 2
    layer = SEPARABLE[rank](
        5, 2, depth_multiplier=m, name="mid", activation="relu", data_format=data_format
    )
    model = sandwich(rank, data_format, layer)
    deletions = DELETIONS[which]
    inputs, filters = deletions.get("conv", []), deletions.get("mid", [])

    def zero(dead: keras.Model) -> None:
        zero_outputs(dead.get_layer("conv"), inputs)
        zero_separable_outputs(dead.get_layer("mid"), filters)

    _, pruned = check_dead(model, deletions, zero)
    depthwise, pointwise, bias = weights_of(model, "mid")
    new_depthwise, new_pointwise, new_bias = weights_of(pruned, "mid")
    rows = [c * m + j for c in inputs for j in range(m)]
    np.testing.assert_array_equal(new_depthwise, np.delete(depthwise, inputs, axis=-2))
    np.testing.assert_array_equal(
        new_pointwise, np.delete(np.delete(pointwise, rows, axis=-2), filters, axis=-1)
    )
    np.testing.assert_array_equal(new_bias, np.delete(bias, filters))
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(weights_of(model, "head")[0], filters, axis=-2)
    )
    assert pruned.get_layer("mid").filters == 5 - len(filters)


# -- transposed -----------------------------------------------------------------------------

TRANSPOSE_CASES = [
    (rank, which, data_format)
    for rank in (1, 2, 3)
    for which in DELETIONS
    for data_format in DATA_FORMATS
    if rank == 2 or which == "both"  # every rank once, every kind of deletion in 2D
]


@pytest.mark.parametrize(("rank", "which", "data_format"), TRANSPOSE_CASES)
def test_conv_transpose(rank: int, which: str, data_format: str) -> None:
    layer = TRANSPOSE[rank](5, 2, strides=2, name="mid", activation="relu", data_format=data_format)
    model = sandwich(rank, data_format, layer)
    deletions = DELETIONS[which]
    inputs, filters = deletions.get("conv", []), deletions.get("mid", [])

    def zero(dead: keras.Model) -> None:
        zero_outputs(dead.get_layer("conv"), inputs)
        zero_transpose_outputs(dead.get_layer("mid"), filters)

    _, pruned = check_dead(model, deletions, zero)
    kernel, bias = weights_of(model, "mid")
    new_kernel, new_bias = weights_of(pruned, "mid")
    # kernel (*k, filters, in): inputs on the last axis, filters on axis -2
    np.testing.assert_array_equal(
        new_kernel, np.delete(np.delete(kernel, inputs, axis=-1), filters, axis=-2)
    )
    np.testing.assert_array_equal(new_bias, np.delete(bias, filters))
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(weights_of(model, "head")[0], filters, axis=-2)
    )
    assert pruned.get_layer("mid").filters == 5 - len(filters)


# -- grouped --------------------------------------------------------------------------------


def grouped_model(
    rank: int, data_format: str, channels: int, filters: int, groups: int
) -> keras.Model:
    df = {"data_format": data_format}
    x = image_input(rank, data_format)
    y = CONV[rank](channels, 1, name="conv", **df)(x)
    y = CONV[rank](filters, 2, groups=groups, name="gconv", activation="relu", **df)(y)
    y = CONV[rank](3, 1, name="head", **df)(y)
    return randomize(keras.Model(x, y))


def group_blocks(kernel: np.ndarray, groups: int) -> list[np.ndarray]:
    """The kernel of each group: (*k, in / groups, filters / groups)."""
    return np.split(kernel, groups, axis=-1)


GROUPED_CASES = [(rank, df) for rank in (1, 2, 3) for df in DATA_FORMATS]


@pytest.mark.parametrize(("rank", "data_format"), GROUPED_CASES)
def test_grouped_equal_input_deletions(rank: int, data_format: str) -> None:
    """groups=2 over 6 channels: channel 0 (group 0, row 0) and 4 (group 1, row 1) go."""
    model = grouped_model(rank, data_format, channels=6, filters=4, groups=2)
    pruned = check_dead_channels(model, {"conv": [0, 4]})
    kernel, bias = weights_of(model, "gconv")
    blocks = group_blocks(kernel, 2)
    expected = np.concatenate(
        [np.delete(blocks[0], 0, axis=-2), np.delete(blocks[1], 1, axis=-2)], axis=-1
    )
    new_kernel, new_bias = weights_of(pruned, "gconv")
    np.testing.assert_array_equal(new_kernel, expected)
    np.testing.assert_array_equal(new_bias, bias)
    np.testing.assert_array_equal(weights_of(pruned, "head")[0], weights_of(model, "head")[0])
    assert (pruned.get_layer("gconv").groups, pruned.get_layer("gconv").filters) == (2, 4)


@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_grouped_equal_filter_deletions(data_format: str) -> None:
    """Filters 1 (group 0) and 2 (group 1) of 4 in two groups go; both groups keep one."""
    model = grouped_model(2, data_format, channels=6, filters=4, groups=2)
    pruned = check_dead_channels(model, {"gconv": [1, 2]})
    kernel, bias = weights_of(model, "gconv")
    np.testing.assert_array_equal(
        weights_of(pruned, "gconv")[0], np.delete(kernel, [1, 2], axis=-1)
    )
    np.testing.assert_array_equal(weights_of(pruned, "gconv")[1], np.delete(bias, [1, 2]))
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(weights_of(model, "head")[0], [1, 2], axis=-2)
    )
    assert (pruned.get_layer("gconv").groups, pruned.get_layer("gconv").filters) == (2, 2)


@pytest.mark.parametrize(("rank", "data_format"), GROUPED_CASES)
def test_grouped_whole_input_group_takes_its_output_group(rank: int, data_format: str) -> None:
    """groups=3 over 6 channels and 6 filters: deleting channels 2, 3 (group 1) removes
    filters 2, 3 (output group 1), whose outputs were relu(bias) -- zeroed by the oracle."""
    model = grouped_model(rank, data_format, channels=6, filters=6, groups=3)

    def zero(dead: keras.Model) -> None:
        zero_outputs(dead.get_layer("conv"), [2, 3])
        zero_bias(dead.get_layer("gconv"), [2, 3])

    graph, pruned = check_dead(model, {"conv": [2, 3]}, zero)
    kernel, bias = weights_of(model, "gconv")
    np.testing.assert_array_equal(weights_of(pruned, "gconv")[0], np.delete(kernel, [2, 3], -1))
    np.testing.assert_array_equal(weights_of(pruned, "gconv")[1], np.delete(bias, [2, 3]))
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(weights_of(model, "head")[0], [2, 3], axis=-2)
    )
    assert (pruned.get_layer("gconv").groups, pruned.get_layer("gconv").filters) == (2, 4)
    np.testing.assert_array_equal(graph.node("gconv").outputs[0].mask, [1, 1, 0, 0, 1, 1])


@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_grouped_whole_group_and_equal_deletions_with_filters(data_format: str) -> None:
    """groups=3 over 6 channels, 6 filters: channels 0 (group 0), 2, 3 (all of group 1) and
    5 (group 2) go, with filters 0, 2, 4 (one per group: `DeleteChannels` runs before the
    input deletion reaches the conv, so it must keep the groups equal on its own)."""
    model = grouped_model(2, data_format, channels=6, filters=6, groups=3)

    def zero(dead: keras.Model) -> None:
        zero_outputs(dead.get_layer("conv"), [0, 2, 3, 5])
        zero_outputs(dead.get_layer("gconv"), [0, 2, 4])
        zero_bias(dead.get_layer("gconv"), [3])

    _, pruned = check_dead(model, {"conv": [0, 2, 3, 5], "gconv": [0, 2, 4]}, zero)
    kernel, bias = weights_of(model, "gconv")
    blocks = group_blocks(kernel, 3)
    expected = np.concatenate(
        [np.delete(blocks[0], 0, axis=-2)[..., 1:], np.delete(blocks[2], 1, axis=-2)[..., 1:]],
        axis=-1,
    )
    np.testing.assert_array_equal(weights_of(pruned, "gconv")[0], expected)
    np.testing.assert_array_equal(weights_of(pruned, "gconv")[1], np.delete(bias, [0, 2, 3, 4]))
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0],
        np.delete(weights_of(model, "head")[0], [0, 2, 3, 4], axis=-2),
    )
    assert (pruned.get_layer("gconv").groups, pruned.get_layer("gconv").filters) == (2, 2)


def test_grouped_conv_with_a_group_per_channel_matches_depthwise() -> None:
    """groups = channels is a depthwise conv: deleting channel 1 removes its 2 outputs."""
    x = image_input(2, "channels_last")
    y = L.Conv2D(4, 1, name="conv")(x)
    y = L.Conv2D(8, 3, groups=4, name="gconv")(y)
    model = randomize(keras.Model(x, L.Conv2D(2, 1, name="head")(y)))

    def zero(dead: keras.Model) -> None:
        zero_outputs(dead.get_layer("conv"), [1])
        zero_bias(dead.get_layer("gconv"), [2, 3])

    _, pruned = check_dead(model, {"conv": [1]}, zero)
    assert (pruned.get_layer("gconv").groups, pruned.get_layer("gconv").filters) == (3, 6)
    np.testing.assert_array_equal(
        weights_of(pruned, "gconv")[0], np.delete(weights_of(model, "gconv")[0], [2, 3], -1)
    )


def test_grouped_refuses_unequal_input_deletions() -> None:
    model = grouped_model(2, "channels_last", channels=6, filters=4, groups=2)
    graph = kgraph.lift(model)
    before = str(graph)
    with pytest.raises(
        kgraph.ChannelError,
        match=r"'gconv' \(Conv2D\), which has groups=2 \(input groups of 3 channels\).*"
        r"takes \[1, 0\] channels per group",
    ):
        graph.apply(DeleteChannels("conv", [0]))
    assert str(graph) == before


def test_grouped_refuses_unequal_filter_deletions() -> None:
    model = grouped_model(2, "channels_first", channels=6, filters=4, groups=2)
    with pytest.raises(
        kgraph.ChannelError,
        match=r"'gconv' \(Conv2D\), which has groups=2 \(output groups of 2 filters\).*"
        r"takes \[1, 0\] filters per group",
    ):
        kgraph.lift(model).apply(DeleteChannels("gconv", [0]))


def test_grouped_refuses_a_whole_output_group_alone() -> None:
    """Output group 1 cannot go while its input group stays: the message says what to do."""
    model = grouped_model(1, "channels_last", channels=6, filters=6, groups=3)
    with pytest.raises(
        kgraph.ChannelError,
        match=r"'gconv' \(Conv1D\), which has groups=3.*\[0, 2, 0\] filters per group.*"
        r"delete input group g's channels upstream",
    ):
        kgraph.lift(model).apply(DeleteChannels("gconv", [2, 3]))


def test_ungrouped_conv_is_unchanged() -> None:
    """With groups=1 the rule is ConvRule: any channels may go."""
    model = grouped_model(2, "channels_last", channels=5, filters=4, groups=1)
    pruned = check_dead_channels(model, {"conv": [0], "gconv": [1, 2, 3]})
    np.testing.assert_array_equal(
        weights_of(pruned, "gconv")[0],
        np.delete(np.delete(weights_of(model, "gconv")[0], [0], -2), [1, 2, 3], -1),
    )


# -- verification -------------------------------------------------------------------------


def _corrupt(array: np.ndarray, axis: int) -> np.ndarray:
    return np.delete(array, 0, axis=axis)


CHECK_CASES = [
    ("dw", lambda: L.DepthwiseConv2D(2, depth_multiplier=2, name="dw"), "kernel", -2),
    ("dw", lambda: L.DepthwiseConv2D(2, depth_multiplier=2, name="dw"), "kernel", -1),
    ("dw", lambda: L.DepthwiseConv2D(2, depth_multiplier=2, name="dw"), "bias", 0),
    ("sep", lambda: L.SeparableConv2D(4, 2, name="sep"), "depthwise_kernel", -2),
    ("sep", lambda: L.SeparableConv2D(4, 2, name="sep"), "pointwise_kernel", -2),
    ("sep", lambda: L.SeparableConv2D(4, 2, name="sep"), "pointwise_kernel", -1),
    ("sep", lambda: L.SeparableConv2D(4, 2, name="sep"), "bias", 0),
    ("tr", lambda: L.Conv2DTranspose(4, 2, name="tr"), "kernel", -1),
    ("tr", lambda: L.Conv2DTranspose(4, 2, name="tr"), "kernel", -2),
    ("tr", lambda: L.Conv2DTranspose(4, 2, name="tr"), "bias", 0),
    ("g", lambda: L.Conv2D(4, 2, groups=2, name="g"), "kernel", -2),
    ("g", lambda: L.Conv2D(4, 2, groups=2, name="g"), "kernel", -1),
]


@pytest.mark.parametrize(("name", "make", "weight", "axis"), CHECK_CASES)
def test_check_finds_weights_out_of_line(name: str, make, weight: str, axis: int) -> None:
    x = keras.Input((6, 6, 4))
    graph = kgraph.lift(keras.Model(x, make()(x)))
    node = graph.node(name)
    rule = rule_for(node)
    assert rule.check(node) == []
    bad = node.with_weights(**{weight: _corrupt(node.weight(weight), axis)})
    problems = rule.check(bad)
    assert problems and any(weight in p or "kernel" in p for p in problems), problems


def convnext_block() -> keras.Model:
    """ConvNeXt's pattern: a residual stream through a depthwise Conv2D(groups=channels)."""
    x = keras.Input((6, 6, 3))
    stream = L.Conv2D(8, 1, name="stem")(x)
    y = L.Conv2D(8, 3, groups=8, padding="same", name="dwconv")(stream)
    y = L.BatchNormalization(name="bn")(y)
    y = L.Conv2D(8, 1, name="project")(y)
    y = L.Add(name="add")([stream, y])
    return randomize(keras.Model(x, L.Conv2D(2, 1, name="head")(y)))


def test_grouped_conv_with_a_group_per_channel_is_coupled_like_a_depthwise_conv() -> None:
    """The depthwise Conv2D owns no channels: it joins its input's group, and deleting
    the stream's channels removes its groups (a kernel column, a bias each)."""
    model = convnext_block()
    (stream,) = [g for g in kgraph.channel_groups(model) if "stem" in g.owners]
    assert stream.owners == ("stem", "project")
    assert stream.members == ("stem", "dwconv", "bn", "project", "add")
    assert stream.prunable

    def zero(dead: keras.Model) -> None:
        for name in ("stem", "project"):
            zero_outputs(dead.get_layer(name), [1, 5])
        zero_bias(dead.get_layer("dwconv"), [1, 5])
        zero_batchnorm(dead.get_layer("bn"), [1, 5])

    _, pruned = check_dead(model, {"stem": [1, 5], "project": [1, 5]}, zero)
    kernel, bias = weights_of(model, "dwconv")
    np.testing.assert_array_equal(weights_of(pruned, "dwconv")[0], np.delete(kernel, [1, 5], -1))
    np.testing.assert_array_equal(weights_of(pruned, "dwconv")[1], np.delete(bias, [1, 5]))
    assert (pruned.get_layer("dwconv").groups, pruned.get_layer("dwconv").filters) == (6, 6)
    np.testing.assert_array_equal(
        weights_of(pruned, "project")[0],
        np.delete(np.delete(weights_of(model, "project")[0], [1, 5], -1), [1, 5], -2),
    )


def test_prune_shrinks_a_depthwise_grouped_conv_with_its_stream() -> None:
    model = convnext_block()
    pruned = kgraph.prune(model, 0.5)
    assert [pruned.get_layer(n).filters for n in ("stem", "dwconv", "project")] == [4, 4, 4]
    assert pruned.get_layer("dwconv").groups == 4


def test_channel_groups_leave_grouped_convolutions_to_equal_deletions() -> None:
    """prune cannot promise equal deletions per group: the groups a grouped conv reads
    and owns are not prunable, with a reason; DeleteChannels still does equal ones."""
    model = grouped_model(2, "channels_last", channels=6, filters=4, groups=2)
    groups = {g.owners[0]: g for g in kgraph.channel_groups(model)}
    for name in ("conv", "gconv"):
        assert not groups[name].prunable
        assert "'gconv' (Conv2D) is a grouped convolution (groups=2)" in groups[name].reason
    pruned = kgraph.prune(model, 0.5)
    assert pruned.get_layer("gconv").get_config()["groups"] == 2
    assert pruned.count_params() == model.count_params()
