"""Rules of kgraph/rules/normalization.py: PReLU, Layer/RMS/Group/Unit normalisation,
Rescaling, Normalization, Identity, Dot, EinsumDense and the custom layers of
ConvNeXt (LayerScale) and InceptionResNetV2 (CustomScaleLayer).

Function-preserving rules run the dead-channel oracle and compare every sliced
weight with `np.delete` of the original; the rules that are not (normalising over
the channels) have a test that shows what the pruned layer computes instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import keras
import numpy as np
import pytest
from helpers import (
    assert_same_outputs,
    check_dead_channels,
    copy_model,
    dead_copy,
    delete,
    fingerprint,
    sample_inputs,
    weights_of,
)
from keras.src.applications.convnext import LayerScale
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

import kgraph
from kgraph.passes import DeleteChannels
from kgraph.rules import PassThroughRule, rule_for

L = keras.layers

# Keras limitations on other backends (each test that meets one is skipped there):
TORCH_LAYER_NORM = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras on torch: LayerNormalization over contiguous axes that end before the "
    "last axis calls torch's layer_norm, which normalises only trailing axes "
    "(keras.src.ops.nn._layer_normalization raises a shape error)",
)
LIST_SCALE = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="Keras on JAX and torch: keras.applications' CustomScaleLayer computes "
    "x[1] * self.scale, and only a TensorFlow tensor can be multiplied by a Python list scale",
)


def torch_layer_norm_marks(axis: int | Sequence[int], rank: int) -> list[pytest.MarkDecorator]:
    """[TORCH_LAYER_NORM] when LayerNormalization over `axis` of a rank-`rank` input fails
    on torch (a contiguous run of axes that ends before the last one), else []."""
    axes = sorted(a % rank for a in np.atleast_1d(axis))
    contiguous = axes == list(range(axes[0], axes[-1] + 1))
    return [TORCH_LAYER_NORM] if contiguous and axes[-1] != rank - 1 else []


def channel_axis(data_format: str, rank: int = 4) -> int:
    return 1 if data_format == "channels_first" else rank - 1


def image(data_format: str, channels: int = 3, size: tuple[int, int] = (6, 5)) -> keras.KerasTensor:
    shape = (channels, *size) if data_format == "channels_first" else (*size, channels)
    return keras.Input(shape, name="x")


def conv(filters: int, name: str, data_format: str) -> keras.layers.Conv2D:
    return L.Conv2D(filters, 2, name=name, data_format=data_format)


def randomize(
    layer: keras.layers.Layer, low: float = 0.5, high: float = 1.5, zero: Sequence[str] = ()
) -> None:
    """Give the weights of `layer` distinct random values (so slicing shows).

    The weights named in `zero` are set to 0 instead (a zero beta keeps a dead
    channel at 0 through a normalisation that runs along other axes).
    """
    rng = np.random.default_rng(7)
    layer.set_weights(
        [
            np.zeros(np.shape(w), w.dtype)
            if w.name in zero
            else rng.uniform(low, high, np.shape(w)).astype(w.dtype)
            for w in layer.weights
        ]
    )


def assert_not_function_preserving(
    model: keras.Model,
    deletions: Mapping[str, Sequence[int]],
    batchnorms: Mapping[str, Sequence[int]] | None = None,
) -> keras.Model:
    """Deleting dead channels *changes* the outputs; returns the dead copy's pruned model."""
    dead = dead_copy(model, deletions, batchnorms)
    pruned = delete(dead, deletions)
    with pytest.raises(AssertionError):
        assert_same_outputs(dead, pruned, sample_inputs(model))
    return pruned


def check_dead_normalization(
    model: keras.Model, deletions: Mapping[str, Sequence[int]]
) -> keras.Model:
    """`check_dead_channels` for models with an adapted Normalization layer.

    `copy_model` sets weights without `finalize_state`, so an adapted Normalization
    in the copy would keep the mean and variance of its initialisers.
    """
    before = fingerprint(model)
    dead = dead_copy(model, deletions)
    for layer in dead.layers:
        if isinstance(layer, L.Normalization):
            layer.finalize_state()
    pruned = delete(dead, deletions)
    inputs = sample_inputs(model)
    assert_same_outputs(dead, pruned, inputs)
    assert fingerprint(model) == before
    return pruned


@pytest.fixture
def image_format(data_format: str) -> Iterator[str]:
    """Keras' global image_data_format set to `data_format` (Rescaling reads it)."""
    before = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format)
    yield data_format
    keras.config.set_image_data_format(before)


# -- PReLU ----------------------------------------------------------------------------

PRELU_SHARING = ["none", "spatial", "channels", "all"]


def prelu_shared_axes(sharing: str, data_format: str) -> list[int] | None:
    spatial = [2, 3] if data_format == "channels_first" else [1, 2]
    channels = [channel_axis(data_format)]
    return {"none": None, "spatial": spatial, "channels": channels, "all": [1, 2, 3]}[sharing]


@pytest.mark.parametrize("sharing", PRELU_SHARING)
def test_prelu_alpha(sharing: str, data_format: str) -> None:
    shared = prelu_shared_axes(sharing, data_format)
    x = image(data_format)
    y = conv(4, "conv", data_format)(x)
    y = L.PReLU(shared_axes=shared, name="prelu")(y)
    y = conv(2, "conv_2", data_format)(y)
    model = keras.Model(x, y)
    randomize(model.get_layer("prelu"))
    pruned = check_dead_channels(model, {"conv": [0, 2]})

    (alpha,) = weights_of(model, "prelu")
    (new_alpha,) = weights_of(pruned, "prelu")
    axis = channel_axis(data_format) - 1  # alpha leaves out the batch axis
    if sharing in ("channels", "all"):  # one alpha for all channels: nothing to slice
        assert alpha.shape[axis] == 1
        np.testing.assert_array_equal(new_alpha, alpha)
    else:
        np.testing.assert_array_equal(new_alpha, np.delete(alpha, [0, 2], axis=axis))
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_2")[0], np.delete(weights_of(model, "conv_2")[0], [0, 2], axis=2)
    )


def test_prelu_on_dense_features() -> None:
    x = keras.Input((6,))
    y = L.PReLU(name="prelu")(L.Dense(5, name="dense")(x))
    model = keras.Model(x, L.Dense(2, name="head")(y))
    randomize(model.get_layer("prelu"))
    pruned = check_dead_channels(model, {"dense": [-1, 1]})
    np.testing.assert_array_equal(
        weights_of(pruned, "prelu")[0], np.delete(weights_of(model, "prelu")[0], [1, 4])
    )


# -- LayerNormalization, RMSNormalization ---------------------------------------------


def test_layer_norm_over_other_axes_is_function_preserving(data_format: str) -> None:
    """Normalising over the spatial axes treats every channel on its own."""
    spatial = [2, 3] if data_format == "channels_first" else [1, 2]
    if keras.backend.backend() == "torch" and torch_layer_norm_marks(spatial, rank=4):
        pytest.skip(TORCH_LAYER_NORM.kwargs["reason"])
    x = image(data_format)
    y = conv(4, "conv", data_format)(x)
    y = L.LayerNormalization(axis=spatial, name="ln")(y)
    y = conv(2, "conv_2", data_format)(y)
    model = keras.Model(x, y)
    randomize(model.get_layer("ln"), zero=["beta"])  # a dead channel normalises to beta
    pruned = check_dead_channels(model, {"conv": [1, 3]})
    for old, new in zip(weights_of(model, "ln"), weights_of(pruned, "ln")):
        np.testing.assert_array_equal(new, old)  # shaped (H, W): nothing to slice
    assert new.shape == (5, 4)


LN_AXES = [
    # (data_format, axis config, index of the channel axis in gamma's shape)
    ("channels_last", -1, 0),
    ("channels_last", [1, 2, 3], 2),
    ("channels_last", [3, 1], 1),
    ("channels_last", [-1, 1], 0),  # Keras sorts the raw values: gamma is (C, H)
    ("channels_first", 1, 0),
    ("channels_first", [1, 2], 0),
    ("channels_first", [1, 2, 3], 0),
    ("channels_first", [-1, 1], 1),  # gamma is (W, C)
]


# RMSNormalization multiplies by its scale without reshaping it: trailing axes only.
RMS_AXES = [
    ("channels_last", -1, 0),
    ("channels_last", [1, 2, 3], 2),
    ("channels_first", [1, 2, 3], 0),
]
NORM_CASES = [
    pytest.param("LayerNormalization", *case, marks=torch_layer_norm_marks(case[1], rank=4))
    for case in LN_AXES
] + [("RMSNormalization", *case) for case in RMS_AXES]


@pytest.mark.parametrize(("kind", "data_format", "axis", "index"), NORM_CASES)
def test_norm_over_channels_slices_its_parameters(
    kind: str, data_format: str, axis: int | list[int], index: int
) -> None:
    x = image(data_format)
    y = conv(4, "conv", data_format)(x)
    y = getattr(L, kind)(axis=axis, name="norm")(y)
    y = conv(2, "conv_2", data_format)(y)
    model = keras.Model(x, y)
    randomize(model.get_layer("norm"))
    pruned = assert_not_function_preserving(model, {"conv": [0, 3]})
    originals = weights_of(model, "norm")
    for old, new in zip(originals, weights_of(pruned, "norm"), strict=True):
        assert old.shape[index] == 4
        np.testing.assert_array_equal(new, np.delete(old, [0, 3], axis=index))
    assert len(originals) == (2 if kind == "LayerNormalization" else 1)
    assert pruned.get_layer("conv_2").get_weights()[0].shape[2] == 2


def test_layer_norm_over_channels_renormalises_the_kept_channels() -> None:
    """What the pruned LayerNormalization computes: the statistics of the kept channels.

    A dead channel (always 0) still counts in the mean and variance of the original,
    so deleting it is not function-preserving.
    """
    x = keras.Input((6,))
    y = L.Dense(5, name="dense")(x)
    model = keras.Model(x, L.LayerNormalization(name="ln", epsilon=1e-3)(y))
    randomize(model.get_layer("ln"))
    deleted = [1, 4]
    dead = dead_copy(model, {"dense": deleted})
    pruned = assert_not_function_preserving(model, {"dense": deleted})

    inputs = sample_inputs(model)
    kernel, bias = weights_of(dead, "dense")
    gamma, beta = weights_of(model, "ln")
    kept = np.delete(inputs @ kernel + bias, deleted, axis=-1)
    mean, var = kept.mean(-1, keepdims=True), kept.var(-1, keepdims=True)
    expected = (kept - mean) / np.sqrt(var + 1e-3) * np.delete(gamma, deleted) + np.delete(
        beta, deleted
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pruned(inputs)), expected, rtol=1e-4, atol=1e-5
    )


@TORCH_LAYER_NORM
def test_layer_norm_over_time_on_sequences() -> None:
    x = keras.Input((4, 6))
    y = L.Dense(5, name="dense")(x)
    y = L.LayerNormalization(axis=1, name="ln")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    randomize(model.get_layer("ln"), zero=["beta"])
    pruned = check_dead_channels(model, {"dense": [0, 2]})
    assert weights_of(pruned, "ln")[0].shape == (4,)


# -- GroupNormalization -----------------------------------------------------------------

GN_CASES = [
    # (groups, deleted channels, groups afterwards) with 6 channels
    (3, [2, 3], 2),
    (3, [0, 1, 4, 5], 1),
    (2, [3, 4, 5], 1),
    (-1, [1, 4], 4),  # instance normalisation: every channel is a group
    (6, [0, 5], 4),
]


@pytest.mark.parametrize(("groups", "deleted", "after"), GN_CASES)
def test_group_norm_deleting_whole_groups(
    groups: int, deleted: list[int], after: int, data_format: str
) -> None:
    x = image(data_format)
    y = conv(6, "conv", data_format)(x)
    y = L.GroupNormalization(groups=groups, axis=channel_axis(data_format), name="gn")(y)
    y = conv(2, "conv_2", data_format)(y)
    model = keras.Model(x, y)
    randomize(model.get_layer("gn"))
    # A dead group normalises to beta: make it 0 there, as for BatchNormalization.
    pruned = check_dead_channels(model, {"conv": deleted}, batchnorms={"gn": deleted})
    for old, new in zip(weights_of(model, "gn"), weights_of(pruned, "gn"), strict=True):
        np.testing.assert_array_equal(new, np.delete(old, deleted))
    assert pruned.get_layer("gn").groups == after


def test_group_norm_same_deletions_in_every_group_are_not_function_preserving() -> None:
    """Groups of 3 that each lose one channel: allowed, but the group statistics change."""
    x = keras.Input((6,))
    y = L.Dense(6, name="dense")(x)
    model = keras.Model(x, L.GroupNormalization(groups=2, name="gn")(y))
    randomize(model.get_layer("gn"))
    pruned = assert_not_function_preserving(model, {"dense": [0, 5]}, batchnorms={"gn": [0, 5]})
    assert pruned.get_layer("gn").groups == 2
    np.testing.assert_array_equal(
        weights_of(pruned, "gn")[0], np.delete(weights_of(model, "gn")[0], [0, 5])
    )


@pytest.mark.parametrize(
    ("deleted", "sizes", "per_group"),
    [([0], "[1, 2, 2]", "{0: [0]}"), ([0, 1, 2], "[0, 1, 2]", "{0: [0, 1], 1: [2]}")],
)
def test_group_norm_refuses_groups_of_different_sizes(
    deleted: list[int], sizes: str, per_group: str
) -> None:
    x = keras.Input((6,))
    y = L.Dense(6, name="dense")(x)
    model = keras.Model(x, L.GroupNormalization(groups=3, name="gn")(y))
    with pytest.raises(kgraph.UnsupportedLayerError) as error:
        kgraph.lift(model).apply(DeleteChannels("dense", deleted))
    message = str(error.value)
    assert "'gn' (GroupNormalization)" in message
    assert "3 groups of 2" in message and f"groups of {sizes} channels" in message
    assert f"deleted per group: {per_group}" in message


def test_group_norm_with_channels_on_another_axis_slices_nothing() -> None:
    """Channels on an axis the layer normalises over: positions, not groups."""
    x = keras.Input((4, 6))
    y = L.Dense(5, name="dense")(x)
    y = L.GroupNormalization(groups=2, axis=1, name="gn")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    randomize(model.get_layer("gn"))
    pruned = assert_not_function_preserving(model, {"dense": [0]})
    for old, new in zip(weights_of(model, "gn"), weights_of(pruned, "gn")):
        np.testing.assert_array_equal(new, old)


# -- UnitNormalization -------------------------------------------------------------------


@pytest.mark.parametrize("over", ["channels", "spatial"])
def test_unit_normalization(over: str, data_format: str) -> None:
    """Zeros add nothing to an L2 norm, so even normalising over the channels preserves."""
    axis = channel_axis(data_format) if over == "channels" else -2
    x = image(data_format)
    y = conv(4, "conv", data_format)(x)
    y = L.UnitNormalization(axis=axis, name="unit")(y)
    model = keras.Model(x, conv(2, "conv_2", data_format)(y))
    pruned = check_dead_channels(model, {"conv": [0, 1]})
    assert pruned.get_layer("unit").output.shape[channel_axis(data_format)] == 2
    assert isinstance(rule_for(kgraph.lift(model).node("unit")), PassThroughRule)


# -- Rescaling, Normalization ------------------------------------------------------------

SCALE = [0.5, 2.0, -1.0, 3.0]
OFFSET = [0.0, 0.25, 0.0, -0.5]  # zero on the deleted channels 0 and 2: dead stays dead


def per_channel(kind: str, values: list[float], shape: tuple[int, ...] = (-1,)) -> object:
    array = np.array(values, dtype="float32").reshape(shape)
    return {"list": array.tolist(), "array": array}[kind]


@pytest.mark.parametrize("kind", ["list", "array"])
def test_rescaling_per_channel(kind: str, image_format: str) -> None:
    """Under channels_first Keras reshapes a (C,) scale to (C, 1, 1), but not the offset."""
    offset_shape = (-1, 1, 1) if image_format == "channels_first" else (-1,)
    x = image(image_format)
    y = conv(4, "conv", image_format)(x)
    scale, offset = per_channel(kind, SCALE), per_channel(kind, OFFSET, offset_shape)
    y = L.Rescaling(scale, offset=offset, name="rescale")(y)
    model = keras.Model(x, conv(2, "conv_2", image_format)(y))
    pruned = check_dead_channels(model, {"conv": [0, 2]})
    layer = pruned.get_layer("rescale")
    np.testing.assert_array_equal(np.asarray(layer.scale), np.delete(SCALE, [0, 2]))
    np.testing.assert_array_equal(
        np.asarray(layer.offset), np.delete(OFFSET, [0, 2]).reshape(offset_shape)
    )
    assert type(layer.scale) is type(model.get_layer("rescale").scale)


def test_rescaling_with_scalars_keeps_them(image_format: str) -> None:
    x = image(image_format)
    y = conv(4, "conv", image_format)(x)
    y = L.Rescaling(1 / 255, name="rescale")(y)
    model = keras.Model(x, conv(2, "conv_2", image_format)(y))
    pruned = check_dead_channels(model, {"conv": [3]})
    assert pruned.get_layer("rescale").scale == 1 / 255
    assert pruned.get_layer("rescale").offset == 0.0


def test_rescaling_on_sequences_with_a_broadcast_scale() -> None:
    """A scale of shape (T, 1) broadcasts over the channels: it is kept."""
    x = keras.Input((3, 6))
    y = L.Dense(4, name="dense")(x)
    scale = np.array([[1.0], [2.0], [3.0]], dtype="float32")
    y = L.Rescaling(scale, offset=[0.0, 1.0, 2.0, 0.0], name="rescale")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    pruned = check_dead_channels(model, {"dense": [0, 3]})
    layer = pruned.get_layer("rescale")
    np.testing.assert_array_equal(np.asarray(layer.scale), scale)
    np.testing.assert_array_equal(np.asarray(layer.offset), [1.0, 2.0])


MEAN = [0.0, 1.0, 0.0, -2.0]  # zero on the deleted channels 0 and 2
VARIANCE = [4.0, 0.5, 2.0, 3.0]


@pytest.mark.parametrize("invert", [False, True])
def test_normalization_with_config_values(invert: bool, data_format: str) -> None:
    x = image(data_format)
    y = conv(4, "conv", data_format)(x)
    norm = L.Normalization(
        axis=channel_axis(data_format), mean=MEAN, variance=VARIANCE, invert=invert, name="norm"
    )
    model = keras.Model(x, conv(2, "conv_2", data_format)(norm(y)))
    pruned = check_dead_channels(model, {"conv": [0, 2]})
    config = pruned.get_layer("norm").get_config()
    assert config["mean"] == np.delete(MEAN, [0, 2]).tolist()
    assert config["variance"] == np.delete(VARIANCE, [0, 2]).tolist()
    assert config["invert"] is invert


def test_normalization_with_adapted_weights(data_format: str) -> None:
    x = image(data_format)
    y = conv(4, "conv", data_format)(x)
    norm = L.Normalization(axis=channel_axis(data_format), name="norm")
    model = keras.Model(x, conv(2, "conv_2", data_format)(norm(y)))
    features = keras.Model(x, y).predict(sample_inputs(model, batch=8), verbose=0)
    norm.adapt(features)
    mean, variance, count = weights_of(model, "norm")
    mean = mean.copy()
    mean[[0, 2]] = 0.0  # dead channels stay 0
    norm.set_weights([mean, variance, count])
    norm.finalize_state()
    assert (variance != 1).all()

    pruned = check_dead_normalization(model, {"conv": [0, 2]})
    new_mean, new_variance, new_count = weights_of(pruned, "norm")
    np.testing.assert_array_equal(new_mean, np.delete(mean, [0, 2]))
    np.testing.assert_array_equal(new_variance, np.delete(variance, [0, 2]))
    assert new_count == count


NORMALIZATION_AXES = [
    # (axis, config mean and variance (None: adapted weights), index of the channels)
    ((1, 2), None, 1),
    ((1, 2), ([0.0, 1.0, 0.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0]), 0),  # (C,): along C
    ((1, 2), ([[0.0], [0.0], [0.0]], [[1.0], [2.0], [3.0]]), None),  # (T, 1): for all C
    (1, None, None),  # the only kept axis is the time axis
    (None, None, None),  # one mean for everything
]


@pytest.mark.parametrize(("axis", "values", "index"), NORMALIZATION_AXES)
def test_normalization_axes_on_sequences(
    axis: tuple[int, ...] | int | None,
    values: tuple[list, list] | None,
    index: int | None,
) -> None:
    x = keras.Input((3, 6))
    y = L.Dense(5, name="dense")(x)
    given = {} if values is None else {"mean": values[0], "variance": values[1]}
    norm = L.Normalization(axis=axis, name="norm", **given)
    model = keras.Model(x, L.Dense(2, name="head")(norm(y)))
    if values is None:
        old = weights_of(model, "norm")
        variance = np.arange(1, old[1].size + 1, dtype="float32").reshape(old[1].shape)
        norm.set_weights([np.zeros_like(old[0]), variance, old[2]])
        norm.finalize_state()
    pruned = check_dead_normalization(model, {"dense": [0, 2]})
    if values is None:
        old, new = weights_of(model, "norm")[:2], weights_of(pruned, "norm")[:2]
    else:
        old = [np.asarray(v) for v in values]
        new = [np.asarray(pruned.get_layer("norm").get_config()[k]) for k in ("mean", "variance")]
    for before, after in zip(old, new, strict=True):
        expected = before if index is None else np.delete(before, [0, 2], axis=index)
        np.testing.assert_array_equal(after, expected)


# -- Identity ----------------------------------------------------------------------------


def test_identity_passes_channels(data_format: str) -> None:
    x = image(data_format)
    y = L.Identity(name="identity")(conv(4, "conv", data_format)(x))
    model = keras.Model(x, conv(2, "conv_2", data_format)(y))
    pruned = check_dead_channels(model, {"conv": [1]})
    assert pruned.get_layer("identity").output.shape[channel_axis(data_format)] == 3
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_2")[0], np.delete(weights_of(model, "conv_2")[0], [1], axis=2)
    )


# -- Dot ---------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize(("shape", "axes"), [((6,), 1), ((4, 6), 2), ((4, 6), -1)])
def test_dot_contracting_the_channels(shape: tuple[int, ...], axes: int, normalize: bool) -> None:
    x = keras.Input(shape)
    a = L.Dense(5, name="dense_a")(x)
    b = L.Dense(5, name="dense_b")(x)
    y = L.Dot(axes=axes, normalize=normalize, name="dot")([a, b])
    model = keras.Model(x, L.Dense(2, name="head")(L.Flatten()(y)))
    pruned = check_dead_channels(model, {"dense_a": [1, 3], "dense_b": [1, 3]})
    assert pruned.get_layer("dot").output.shape == model.get_layer("dot").output.shape
    np.testing.assert_array_equal(weights_of(pruned, "head")[0], weights_of(model, "head")[0])


def test_dot_contracted_channels_are_deleted_from_both_inputs() -> None:
    x = keras.Input((4, 6))
    a = L.Dense(5, name="dense_a")(x)
    b = L.Dense(5, name="dense_b")(x)
    model = keras.Model(x, L.Dot(axes=2, name="dot")([a, b]))
    graph = kgraph.lift(model)
    both = graph.apply(DeleteChannels("dense_a", [1]), DeleteChannels("dense_b", [2]))
    assert both.node("dense_a").config["units"] == both.node("dense_b").config["units"] == 3
    one = graph.apply(DeleteChannels("dense_a", [1]))  # the contracted pair is one group
    assert one.node("dense_b").config["units"] == 4


def test_dot_contracting_channels_with_an_untracked_axis_is_a_mask_conflict() -> None:
    """Input 1's contracted axis is not a channel axis kgraph can delete from."""
    x = keras.Input((5, 6))
    other = keras.Input((4, 3))
    a = L.Dense(4, name="dense_a")(x)
    y = L.Dot(axes=(2, 1), name="dot")([a, other])
    model = keras.Model([x, other], L.Dense(2, name="head")(y))
    with pytest.raises(kgraph.MaskConflictError, match=r"'dot' \(Dot\).*'dense_a' keep 3"):
        kgraph.lift(model).apply(DeleteChannels("dense_a", [0]))


def dot_a_on_axis_1_of_the_output(data_format: str) -> tuple[keras.Model, int]:
    """Dense sequences (B, T, 4) and (B, T, 3), contracting T: (B, 4, 3)."""
    x = keras.Input((5, 6))
    a = L.Dense(4, name="dense_a")(x)
    b = L.Dense(3, name="dense_b")(x)
    return keras.Model(x, L.Dot(axes=1, name="dot")([a, b])), 1


def dot_a_as_input_1(data_format: str) -> tuple[keras.Model, int]:
    """Input 0's channels contracted; input 1's (B, 3, 4) land on axis 2 of (B, 5, 4)."""
    x = keras.Input((5, 6))
    z = keras.Input((3, 2))
    b = L.Dense(3, name="dense_b")(x)
    a = L.Dense(4, name="dense_a")(z)
    return keras.Model([x, z], L.Dot(axes=(2, 1), name="dot")([b, a])), 2


def dot_conv_on_a_spatial_axis(data_format: str) -> tuple[keras.Model, int]:
    """A conv output (4 channels) contracted on its first spatial axis with (B, 6, 3).

    The conv is called `dense_a` like the producers of the other cases.
    """
    x = image(data_format, size=(6, 5))
    z = keras.Input((6, 2))
    a = L.Conv2D(4, (1, 1), name="dense_a", data_format=data_format)(x)
    spatial = 2 if data_format == "channels_first" else 1
    y = L.Dot(axes=(spatial, 1), name="dot")([a, L.Dense(3, name="dense_b")(z)])
    # channels_last (B, 6, 5, 4) -> (B, 5, 4, 3); channels_first (B, 4, 6, 5) -> (B, 4, 5, 3)
    return keras.Model([x, z], y), 1 if data_format == "channels_first" else 2


DOT_SURVIVING = [
    (build, data_format)
    for build in (dot_a_on_axis_1_of_the_output, dot_a_as_input_1, dot_conv_on_a_spatial_axis)
    for data_format in ("channels_last", "channels_first")
    if build is dot_conv_on_a_spatial_axis or data_format == "channels_last"  # Dense: no format
]


@pytest.mark.parametrize(
    ("build", "data_format"),
    DOT_SURVIVING,
    ids=[f"{build.__name__}-{data_format}" for build, data_format in DOT_SURVIVING],
)
def test_dot_keeps_an_uncontracted_channel_axis(build, data_format: str) -> None:
    inner, axis = build(data_format)
    flatten = L.Flatten()
    model = keras.Model(inner.inputs, L.Dense(2, name="head")(flatten(inner.outputs[0])))
    pruned = check_dead_channels(model, {"dense_a": [0, 2]})
    before = model.get_layer("dot").output.shape
    after = pruned.get_layer("dot").output.shape
    assert before[axis] == 4 and after[axis] == 2
    assert [d for i, d in enumerate(after) if i != axis] == [
        d for i, d in enumerate(before) if i != axis
    ]
    # The head reads the flattened positions of the kept channels only.
    ids = np.zeros((1, *before[1:]), dtype="float32") + np.arange(4).reshape(
        [4 if i == axis else 1 for i in range(1, len(before))]
    )
    rows = np.flatnonzero(np.isin(keras.ops.convert_to_numpy(flatten(ids))[0], [0, 2]))
    np.testing.assert_array_equal(
        weights_of(pruned, "head")[0], np.delete(weights_of(model, "head")[0], rows, axis=0)
    )


def test_dot_refuses_deleting_the_second_surviving_channel_axis() -> None:
    model, _ = dot_a_on_axis_1_of_the_output("channels_last")
    with pytest.raises(kgraph.UnsupportedLayerError, match=r"'dot' \(Dot\).*one channel axis"):
        kgraph.lift(model).apply(DeleteChannels("dense_b", [0]))


# -- EinsumDense -------------------------------------------------------------------------

EINSUM_OWNED = [
    # (equation, input shape, output_shape, bias_axes, kernel axis, bias axis of the channels)
    ("ab,bc->ac", (6,), 5, "c", 1, 0),
    ("abc,cd->abd", (4, 6), (4, 5), "d", 1, 0),
    ("abc,cde->abde", (4, 6), (4, 3, 5), "de", 2, 1),
    ("abc,cde->abde", (4, 6), (4, 3, 5), "d", 2, None),
    ("abc,dc->abd", (4, 6), (4, 5), None, 0, None),
    ("...b,bc->...c", (4, 6), 5, "c", 1, 0),
    ("ab...,bc->ac...", (6, 2), (5,), None, 1, None),
]


def zero_einsum(
    layer: keras.layers.Layer, channels: list[int], axes: tuple[int, int | None]
) -> None:
    """Make output `channels` of an EinsumDense exactly zero (kernel and bias slices).

    A bias that does not run along the channels is zeroed whole.
    """
    kernel_axis, bias_axis = axes
    weights = [np.array(w) for w in layer.get_weights()]
    weights[0] = np.moveaxis(weights[0], kernel_axis, 0)
    weights[0][channels] = 0
    weights[0] = np.moveaxis(weights[0], 0, kernel_axis)
    if len(weights) > 1 and bias_axis is None:
        weights[1][...] = 0
    elif len(weights) > 1:
        weights[1] = np.moveaxis(weights[1], bias_axis, 0)
        weights[1][channels] = 0
        weights[1] = np.moveaxis(weights[1], 0, bias_axis)
    layer.set_weights(weights)


@pytest.mark.parametrize(
    ("equation", "shape", "output_shape", "bias_axes", "kernel_axis", "bias_axis"), EINSUM_OWNED
)
def test_einsum_dense_owned_channels(
    equation: str,
    shape: tuple[int, ...],
    output_shape: int | tuple,
    bias_axes: str | None,
    kernel_axis: int,
    bias_axis: int | None,
) -> None:
    x = keras.Input(shape)
    layer = L.EinsumDense(equation, output_shape, bias_axes=bias_axes, name="einsum")
    y = layer(x)
    if equation.endswith("..."):  # the channels are not last: bring them there
        y = L.Permute((2, 1))(y)
    model = keras.Model(x, L.Dense(2, name="head")(L.Flatten()(y)))
    randomize(layer, -1.0, 1.0)

    before = fingerprint(model)
    deleted = [1, 3]
    dead = copy_model(model)
    zero_einsum(dead.get_layer("einsum"), deleted, (kernel_axis, bias_axis))
    pruned = delete(dead, {"einsum": deleted})
    assert_same_outputs(dead, pruned, sample_inputs(model))
    assert fingerprint(model) == before

    old, new = weights_of(dead, "einsum"), weights_of(pruned, "einsum")
    np.testing.assert_array_equal(new[0], np.delete(old[0], deleted, axis=kernel_axis))
    if bias_axes is not None:
        expected = old[1] if bias_axis is None else np.delete(old[1], deleted, axis=bias_axis)
        np.testing.assert_array_equal(new[1], expected)
        assert bias_axis is not None or new[1].shape == weights_of(model, "einsum")[1].shape
    config = pruned.get_layer("einsum").get_config()
    assert 3 in config["output_shape"] and 5 not in config["output_shape"]


EINSUM_ABSORB = [
    # (equation, output_shape, kernel axis read by the input channels)
    ("abc,cd->abd", (4, 3), 0),
    ("abc,dc->abd", (4, 3), 1),
    ("abc,cde->abde", (4, 2, 3), 0),
    ("...c,cd->...d", 3, 0),
    ("abc,ced->abde", (4, 2, 3), 0),
]


@pytest.mark.parametrize(("equation", "output_shape", "kernel_axis"), EINSUM_ABSORB)
def test_einsum_dense_absorbs_contracted_input_channels(
    equation: str, output_shape: int | tuple, kernel_axis: int
) -> None:
    x = keras.Input((4, 6))
    y = L.Dense(5, name="dense")(x)
    y = L.EinsumDense(equation, output_shape, bias_axes=None, name="einsum")(y)
    model = keras.Model(x, L.Dense(2, name="head")(L.Flatten()(y)))
    pruned = check_dead_channels(model, {"dense": [0, 3]})
    np.testing.assert_array_equal(
        weights_of(pruned, "einsum")[0],
        np.delete(weights_of(model, "einsum")[0], [0, 3], axis=kernel_axis),
    )


def test_einsum_dense_chain_on_two_letters() -> None:
    """An attention-style projection ("abc,cde->abde") feeding one that contracts d and e."""
    x = keras.Input((4, 6))
    y = L.EinsumDense("abc,cde->abde", (4, 2, 5), bias_axes="de", name="proj")(x)
    y = L.EinsumDense("abde,def->abf", (4, 3), bias_axes="f", name="out")(y)
    model = keras.Model(x, y)
    randomize(model.get_layer("proj"), -1.0, 1.0)
    pruned = check_dead_channels(model, {"proj": [0, 4]})  # kernel (6, 2, 5): last axis
    np.testing.assert_array_equal(
        weights_of(pruned, "out")[0], np.delete(weights_of(model, "out")[0], [0, 4], axis=1)
    )
    np.testing.assert_array_equal(
        weights_of(pruned, "proj")[1], np.delete(weights_of(model, "proj")[1], [0, 4], axis=1)
    )


def test_einsum_dense_refuses_channels_it_does_not_contract() -> None:
    x = keras.Input((4, 6))
    y = L.Permute((2, 1))(L.Dense(5, name="dense")(x))  # (B, 5, 4): channels on letter b
    model = keras.Model(x, L.EinsumDense("abc,cd->abd", (5, 3), name="einsum")(y))
    with pytest.raises(
        kgraph.UnsupportedLayerError, match=r"'einsum' \(EinsumDense\).*letter 'b'.*contract"
    ):
        kgraph.lift(model).apply(DeleteChannels("dense", [0]))


def test_einsum_dense_refuses_channels_inside_the_ellipsis() -> None:
    x = keras.Input((4, 6))
    y = L.Permute((2, 1))(L.Dense(5, name="dense")(x))  # (B, 5, 4)
    model = keras.Model(x, L.EinsumDense("...c,cd->...d", 3, name="einsum")(y))
    with pytest.raises(kgraph.UnsupportedLayerError, match=r"'einsum' \(EinsumDense\).*'\.\.\.'"):
        kgraph.lift(model).apply(DeleteChannels("dense", [0]))


def test_einsum_dense_without_own_letter_owns_no_channels() -> None:
    x = keras.Input((4, 6))
    model = keras.Model(x, L.EinsumDense("abc,c->ab", (4,), name="einsum")(x))
    with pytest.raises(kgraph.ChannelError, match=r"'einsum' \(EinsumDense\) does not own"):
        kgraph.lift(model).apply(DeleteChannels("einsum", [0]))


def test_einsum_dense_refuses_lora_weights() -> None:
    x = keras.Input((4, 6))
    y = L.EinsumDense("abc,cd->abd", (4, 5), name="einsum", lora_rank=2)(x)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    with pytest.raises(kgraph.UnsupportedLayerError, match=r"'einsum' \(EinsumDense\).*lora"):
        kgraph.lift(model).apply(DeleteChannels("einsum", [0]))


# -- ConvNeXt's LayerScale, InceptionResNetV2's CustomScaleLayer --------------------------


def test_layer_scale_on_dense_features() -> None:
    x = keras.Input((3, 6))
    y = L.Dense(4, name="dense")(x)
    y = LayerScale(0.5, 4, name="layer_scale")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    layer = model.get_layer("layer_scale")
    # created without a name: Keras calls it "variable" ("variable_1", ... on JAX, whose
    # unnamed variables are numbered process-wide)
    assert [w.name.split("_")[0] for w in layer.weights] == ["variable"]
    randomize(layer)
    pruned = check_dead_channels(model, {"dense": [1, 3]})
    new = pruned.get_layer("layer_scale")
    np.testing.assert_array_equal(new.get_weights()[0], np.delete(layer.get_weights()[0], [1, 3]))
    assert new.projection_dim == 2


def test_layer_scale_after_a_conv(data_format: str) -> None:
    """ConvNeXt scales channels_last features; channels_first ones are scaled along W."""
    x = image(data_format, size=(6, 7))
    y = conv(4, "conv", data_format)(x)
    width = 4 if data_format == "channels_last" else y.shape[-1]
    y = LayerScale(0.5, width, name="layer_scale")(y)
    model = keras.Model(x, conv(2, "conv_2", data_format)(y))
    randomize(model.get_layer("layer_scale"))
    pruned = check_dead_channels(model, {"conv": [0]})
    (gamma,) = weights_of(model, "layer_scale")
    (new_gamma,) = weights_of(pruned, "layer_scale")
    if data_format == "channels_last":
        np.testing.assert_array_equal(new_gamma, np.delete(gamma, [0]))
    else:
        np.testing.assert_array_equal(new_gamma, gamma)


def custom_scale_model(data_format: str, scale: object) -> keras.Model:
    x = image(data_format)
    a = conv(4, "conv_a", data_format)(x)
    b = conv(4, "conv_b", data_format)(x)
    y = CustomScaleLayer(scale, name="scale")([a, b])
    y = L.Activation("relu", name="act")(y)
    return keras.Model(x, conv(2, "conv_c", data_format)(y))


def test_custom_scale_layer(data_format: str) -> None:
    model = custom_scale_model(data_format, 0.17)
    pruned = check_dead_channels(model, {"conv_a": [1, 2], "conv_b": [1, 2]})
    assert pruned.get_layer("scale").scale == 0.17
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_c")[0], np.delete(weights_of(model, "conv_c")[0], [1, 2], axis=2)
    )


@LIST_SCALE
def test_custom_scale_layer_with_per_channel_scale() -> None:
    model = custom_scale_model("channels_last", [0.1, 0.2, 0.3, 0.4])
    pruned = check_dead_channels(model, {"conv_a": [0], "conv_b": [0]})
    np.testing.assert_allclose(pruned.get_layer("scale").scale, [0.2, 0.3, 0.4])


def test_custom_scale_layer_couples_its_two_inputs() -> None:
    model = custom_scale_model("channels_last", 0.17)
    pruned = check_dead_channels(model, {"conv_a": [0], "conv_b": [0]}, named=["conv_a"])
    assert pruned.get_layer("conv_b").filters == 3
