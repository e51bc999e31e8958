"""Rules on convolutional paths: Conv1D/2D/3D, pass-through and spatial layers, Flatten.

Every case runs the dead-channel oracle (outputs unchanged) and compares the
sliced weights with `np.delete` of the original weights.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import check_dead_channels, weights_of

L = keras.layers

CONV = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}
SPATIAL_SHAPE = {1: (9,), 2: (9, 8), 3: (7, 6, 6)}


def image_input(rank: int, data_format: str, channels: int = 2) -> keras.KerasTensor:
    spatial = SPATIAL_SHAPE[rank]
    shape = (channels, *spatial) if data_format == "channels_first" else (*spatial, channels)
    return keras.Input(shape, name="x")


def flatten_rows(
    flatten: keras.layers.Flatten, feature_shape: tuple[int, ...], axis: int, channels: list[int]
) -> np.ndarray:
    """Rows of a Dense after `flatten` that read `channels`, found by running Keras' Flatten."""
    ids = np.zeros(feature_shape, dtype="float32")
    index = [None] * len(feature_shape)
    index[axis] = slice(None)
    ids = ids + np.arange(feature_shape[axis], dtype="float32")[tuple(index)]
    flat = keras.ops.convert_to_numpy(flatten(ids[None]))[0]
    return np.flatnonzero(np.isin(flat, channels))


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("channels", [[0], [-1], [1, 2]])
def test_conv_to_conv(rank: int, channels: list[int], data_format: str) -> None:
    conv = CONV[rank]
    x = image_input(rank, data_format)
    y = conv(4, 2, name="conv_1", data_format=data_format, activation="relu")(x)
    y = conv(3, 2, name="conv_2", data_format=data_format)(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"conv_1": channels})

    k1, b1 = weights_of(model, "conv_1")
    k2, b2 = weights_of(model, "conv_2")
    p1, q1 = weights_of(pruned, "conv_1")
    p2, q2 = weights_of(pruned, "conv_2")
    idx = [c % 4 for c in channels]
    np.testing.assert_array_equal(p1, np.delete(k1, idx, axis=-1))
    np.testing.assert_array_equal(q1, np.delete(b1, idx))
    np.testing.assert_array_equal(p2, np.delete(k2, idx, axis=-2))
    np.testing.assert_array_equal(q2, b2)
    assert pruned.get_layer("conv_1").filters == 4 - len(idx)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_flatten_dense(rank: int, data_format: str) -> None:
    x = image_input(rank, data_format)
    y = CONV[rank](3, 2, name="conv", data_format=data_format)(x)
    flatten = L.Flatten(name="flatten", data_format=data_format)
    y = L.Dense(5, name="dense")(flatten(y))
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"conv": [1]})

    feature_shape = model.get_layer("conv").output.shape[1:]
    axis = 0 if data_format == "channels_first" else len(feature_shape) - 1
    rows = flatten_rows(L.Flatten(data_format=data_format), feature_shape, axis, [1])
    kernel, bias = weights_of(model, "dense")
    new_kernel, new_bias = weights_of(pruned, "dense")
    np.testing.assert_array_equal(new_kernel, np.delete(kernel, rows, axis=0))
    np.testing.assert_array_equal(new_bias, bias)


def test_flatten_with_other_data_format_than_conv() -> None:
    """A channels_first conv flattened as channels_last: channels become contiguous blocks."""
    x = keras.Input((2, 6, 5))
    y = L.Conv2D(3, 2, name="conv", data_format="channels_first")(x)
    y = L.Dense(4, name="dense")(L.Flatten(data_format="channels_last")(y))
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"conv": [0, 2]})
    rows = flatten_rows(L.Flatten(data_format="channels_last"), (3, 5, 4), 0, [0, 2])
    np.testing.assert_array_equal(rows, np.r_[0:20, 40:60])  # blocks of 5*4 positions
    np.testing.assert_array_equal(
        weights_of(pruned, "dense")[0], np.delete(weights_of(model, "dense")[0], rows, axis=0)
    )


def spatial_layers(rank: int, data_format: str) -> list[keras.layers.Layer]:
    df = {"data_format": data_format}
    if rank == 1:  # the 1D layers have no data_format, except pooling
        return [
            L.MaxPooling1D(2, **df),
            L.AveragePooling1D(2, **df),
            L.Cropping1D(1),
            L.ZeroPadding1D(1),
            L.UpSampling1D(2),
        ]
    cls = {2: ("2D", (2, 1)), 3: ("3D", (2, 1, 1))}[rank]
    suffix, size = cls
    return [
        getattr(L, f"MaxPooling{suffix}")(size, **df),
        getattr(L, f"AveragePooling{suffix}")(size, **df),
        getattr(L, f"Cropping{suffix}")(1, **df),
        getattr(L, f"ZeroPadding{suffix}")(1, **df),
        getattr(L, f"UpSampling{suffix}")(size, **df),
    ]


SPATIAL_CASES = [
    (rank, position, data_format)
    for rank in (1, 2, 3)
    for position in range(5)
    for data_format in ("channels_last", "channels_first")
    # Cropping1D, ZeroPadding1D and UpSampling1D have no data_format: channels_last only.
    if not (rank == 1 and data_format == "channels_first" and position >= 2)
]


@pytest.mark.parametrize(("rank", "position", "data_format"), SPATIAL_CASES)
def test_spatial_layers_pass_channels(rank: int, position: int, data_format: str) -> None:
    layer = spatial_layers(rank, data_format)[position]
    x = image_input(rank, data_format)
    y = CONV[rank](4, 2, name="conv", data_format=data_format)(x)
    y = layer(y)
    y = L.Dense(3, name="dense")(L.Flatten(data_format=data_format)(y))
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"conv": [0, 3]})
    kept = pruned.get_layer(layer.name).output.shape
    axis = 1 if data_format == "channels_first" else -1
    assert kept[axis] == 2


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("kind", ["Max", "Average"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling(rank: int, kind: str, keepdims: bool, data_format: str) -> None:
    x = image_input(rank, data_format)
    y = CONV[rank](4, 2, name="conv", data_format=data_format)(x)
    pool = getattr(L, f"Global{kind}Pooling{rank}D")(data_format=data_format, keepdims=keepdims)
    y = pool(y)
    if keepdims:
        y = L.Flatten(data_format=data_format)(y)
    y = L.Dense(3, name="dense")(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"conv": [1, 2]})
    np.testing.assert_array_equal(
        weights_of(pruned, "dense")[0], np.delete(weights_of(model, "dense")[0], [1, 2], axis=0)
    )


def test_batch_normalization(data_format: str) -> None:
    axis = 1 if data_format == "channels_first" else -1
    x = image_input(2, data_format)
    y = L.Conv2D(4, 2, name="conv", data_format=data_format)(x)
    y = L.BatchNormalization(axis=axis, name="bn")(y)
    y = L.Conv2D(2, 2, name="conv_2", data_format=data_format)(y)
    model = keras.Model(x, y)
    bn = model.get_layer("bn")
    bn.set_weights([np.random.rand(*w.shape).astype("float32") + 0.5 for w in bn.weights])
    pruned = check_dead_channels(model, {"conv": [0, 2]}, batchnorms={"bn": [0, 2]})
    for old, new in zip(weights_of(model, "bn"), weights_of(pruned, "bn")):
        np.testing.assert_array_equal(new, np.delete(old, [0, 2]))


PASS_THROUGH = [
    lambda: L.Dropout(0.5),
    lambda: L.SpatialDropout2D(0.5),
    lambda: L.GaussianNoise(0.5),
    lambda: L.GaussianDropout(0.5),
    lambda: L.AlphaDropout(0.5),
    lambda: L.ActivityRegularization(0.01, 0.01),
    lambda: L.Activation("relu"),
    lambda: L.Activation("tanh"),
    lambda: L.ReLU(),
    lambda: L.LeakyReLU(),
    lambda: L.ELU(),
    lambda: L.Identity(),
]


@pytest.mark.parametrize("make_layer", PASS_THROUGH)
def test_pass_through_layers(make_layer, data_format: str) -> None:
    layer = make_layer()
    if isinstance(layer, L.SpatialDropout2D):
        layer = L.SpatialDropout2D(0.5, data_format=data_format)
    x = image_input(2, data_format)
    y = L.Conv2D(4, 2, name="conv", data_format=data_format)(x)
    y = layer(y)
    y = L.Conv2D(2, 2, name="conv_2", data_format=data_format)(y)
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"conv": [3]})
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_2")[0], np.delete(weights_of(model, "conv_2")[0], [3], axis=-2)
    )


def test_masking_passes_channels() -> None:
    x = keras.Input((5, 3))
    y = L.Dense(4, name="dense")(x)
    y = L.Masking(0.0)(y)
    y = L.LSTM(2, name="lstm")(y)
    model = keras.Model(x, y)
    check_dead_channels(model, {"dense": [1]})


def test_softmax_over_channels_is_not_function_preserving() -> None:
    """Softmax passes the mask on, but a dead channel (0) still adds exp(0) = 1."""
    from helpers import assert_same_outputs, dead_copy, delete, sample_inputs

    x = keras.Input((6,))
    y = L.Softmax(name="softmax")(L.Dense(4, name="dense")(x))
    model = keras.Model(x, y)
    dead = dead_copy(model, {"dense": [0]})
    pruned = delete(dead, {"dense": [0]})
    assert pruned.get_layer("softmax").output.shape == (None, 3)
    with pytest.raises(AssertionError):
        assert_same_outputs(dead, pruned, sample_inputs(model))
    # What survives is the softmax of the kept logits, renormalised.
    inputs = sample_inputs(model)
    expected = keras.ops.convert_to_numpy(dead(inputs))[:, 1:]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pruned(inputs)),
        expected / expected.sum(1, keepdims=True),
        rtol=1e-5,
    )


def squeeze_excite(data_format: str) -> keras.Model:
    """A squeeze-and-excitation block as keras.applications builds it."""
    x = image_input(2, data_format)
    features = L.Conv2D(4, 3, name="conv", data_format=data_format, activation="relu")(x)
    gate = L.GlobalAveragePooling2D(data_format=data_format, name="squeeze_pool")(features)
    gate = L.Dense(2, activation="relu", name="squeeze")(gate)
    gate = L.Dense(4, activation="sigmoid", name="excite")(gate)
    shape = (4, 1, 1) if data_format == "channels_first" else (1, 1, 4)
    gate = L.Reshape(shape, name="gate")(gate)
    y = L.Multiply(name="scale")([features, gate])
    return keras.Model(x, L.Conv2D(2, 1, name="conv_2", data_format=data_format)(y))


def test_squeeze_and_excitation_masks_line_up_across_the_broadcast(data_format: str) -> None:
    model = squeeze_excite(data_format)
    pruned = check_dead_channels(model, {"conv": [1, 2], "excite": [1, 2]})
    np.testing.assert_array_equal(
        weights_of(pruned, "squeeze")[0], np.delete(weights_of(model, "squeeze")[0], [1, 2], 0)
    )
    assert pruned.get_layer("gate").target_shape == (
        (2, 1, 1) if data_format == "channels_first" else (1, 1, 2)
    )
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_2")[0], np.delete(weights_of(model, "conv_2")[0], [1, 2], 2)
    )


def test_squeeze_and_excitation_gate_follows_the_features() -> None:
    model = squeeze_excite("channels_last")
    pruned = check_dead_channels(model, {"conv": [1], "excite": [1]}, named=["conv"])
    assert pruned.get_layer("excite").units == 3
