"""The architectures of `keras.applications`, and what a round trip of them must keep.

Each model is built with `weights=None` (random initial weights, no download).
`assert_fresh_copy` and `assert_same_predictions` say what lifting and lowering an
unchanged model must give: a fresh copy of the original with the same name,
layers, configs, weights and outputs, no shared layer or variable. The round
trip of all 40 runs in test_zoo.py (each model is built once there for all its
tests); here, lowered models of three kinds save as `.keras` and load back.
"""

from __future__ import annotations

import gc
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import kgraph

ARCHITECTURES = sorted(
    name
    for name in dir(keras.applications)
    if name[:1].isupper() and callable(getattr(keras.applications, name))
)

# Keras 3.15 has 40 constructors; a new Keras must not silently shrink coverage.
EXPECTED_ARCHITECTURES = 40

# Input sizes below an architecture's default, to keep this file in its time and
# memory budget (measured on 2 cores). At their defaults (331-600 px) one eager
# call of the high-resolution models grows the process by up to 4 GB per image
# (EfficientNetB7 at 600 px, batch 2: 20 s and +8 GB, which TensorFlow then keeps
# for the rest of the session); at 224 px it is ~2 s and +1 GB. ConvNeXtLarge and
# XLarge spend 9 s and 17 s predicting at 224 px (two models, batch 2); at 128 px
# 5 s and 7 s. Nothing else changes: with `weights=None` Keras accepts any input
# size >= 32 px *with* the classifier, as these heads start with global pooling,
# so every layer of the architecture is still built, lifted, lowered and compared
# with the same weights. (The only configs that depend on the size, besides the
# input's, are ZeroPadding2D amounts from `imagenet_utils.correct_pad` in
# EfficientNet and NASNet, symmetric or not as a feature map is odd or even; the
# models at their default sizes exercise both kinds.)
REDUCED_SIZE = {
    "ConvNeXtLarge": 128,  # default 224
    "ConvNeXtXLarge": 128,  # 224
    "EfficientNetB4": 224,  # 380
    "EfficientNetB5": 224,  # 456
    "EfficientNetB6": 224,  # 528
    "EfficientNetB7": 224,  # 600
    "EfficientNetV2S": 224,  # 384
    "EfficientNetV2M": 224,  # 480
    "EfficientNetV2L": 224,  # 480
    "NASNetLarge": 224,  # 331
}

# Only the MobileNetV3 family leaves the spatial size open (None, None, 3) when
# built without weights; 224 is its documented default.
OPEN_SIZE = 224

# The round trip rebuilds the same layers with the same weights, and TensorFlow
# runs the same kernels on the same shapes, so in practice the outputs are bitwise
# equal (measured: max |difference| 0 on all 40 architectures). The absolute
# tolerance is relative to the output's scale: with random weights the logits
# range from ~1e-19 (MobileNet) and ~1e-8 (EfficientNetB0-B7) to ~1e10
# (EfficientNetV2L), so a fixed atol of 1e-6 would accept anything on the former.
RTOL = ATOL = 1e-6

# For the save/load test: raw keras.ops nodes (`x + 3.0`, `x * (1 / 6)` in
# hard-swish), nested Sequential blocks with LayerScale, a plain residual network.
SAVED_ARCHITECTURES = ["MobileNetV3Small", "ConvNeXtTiny", "ResNet50"]


@pytest.fixture(autouse=True)
def _free_memory() -> Iterator[None]:
    """A test holds up to ~5 GB (ConvNeXtXLarge twice); release it before the next."""
    yield
    keras.backend.clear_session()
    gc.collect()


def build(name: str) -> keras.Model:
    """`keras.applications.<name>` with random weights, ending in logits.

    `classifier_activation=None` keeps the head's outputs as logits: softmax would
    squeeze them into [0, 1] and round differences away.
    """
    kwargs: dict[str, Any] = {"weights": None, "classifier_activation": None}
    if name in REDUCED_SIZE:
        kwargs["input_shape"] = (REDUCED_SIZE[name], REDUCED_SIZE[name], 3)
    return getattr(keras.applications, name)(**kwargs)


def sample_input(model: keras.Model, batch: int = 2, seed: int = 0) -> np.ndarray:
    """A fixed random batch at the model's input size."""
    shape = [batch, *(d if d is not None else OPEN_SIZE for d in model.input_shape[1:])]
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def assert_same_predictions(model: keras.Model, other: keras.Model, x: np.ndarray) -> None:
    """`other` computes what `model` computes on `x`, to RTOL and ATOL x output scale."""
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = keras.ops.convert_to_numpy(other(x, training=False))
    assert np.all(np.isfinite(expected))
    # The comparison must not be vacuous: the input reaches the output.
    assert not np.array_equal(expected[0], expected[1])
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL * scale)


def flat_layers(model: keras.Model, top: bool = True) -> Iterator[keras.layers.Layer]:
    """The layers of `model` with nested models replaced by their own layers.

    This is what `lift` inlines; a nested model's own InputLayer disappears.
    """
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from flat_layers(layer, top=False)
        elif top or not isinstance(layer, keras.layers.InputLayer):
            yield layer


def operations(model: keras.Model) -> list[Any]:
    """The layers and raw ops of `model` (a Sequential has only layers)."""
    return list(getattr(model, "operations", model.layers))


def flat_operation_kinds(model: keras.Model, top: bool = True) -> Counter[str]:
    """How many layers and raw ops of each class `model` has, nested models inlined."""
    kinds: Counter[str] = Counter()
    for operation in operations(model):
        if isinstance(operation, keras.Model):
            kinds += flat_operation_kinds(operation, top=False)
        elif top or not isinstance(operation, keras.layers.InputLayer):
            kinds[type(operation).__name__] += 1
    return kinds


def all_objects(model: keras.Model) -> set[int]:
    """Identities of every layer, operation, nested model and variable of `model`."""
    found = {id(model)}
    for operation in operations(model):
        found.add(id(operation))
        if isinstance(operation, keras.Model):
            found |= all_objects(operation)
    found.update(id(layer) for layer in flat_layers(model))
    found.update(id(variable) for variable in model.variables)
    return found


def weight_names(layer: keras.layers.Layer) -> list[str]:
    """Names of the layer's weights, Keras' global counter taken out of automatic ones.

    A weight made by `add_weight` without a name (ConvNeXt's LayerScale gamma) is
    called `variable`, `variable_1`, ... by a process-wide counter, so any rebuilt
    copy gets new numbers (`keras.models.clone_model` too).
    """
    return [re.sub(r"^variable_\d+$", "variable", w.name) for w in layer.weights]


def assert_fresh_copy(original: keras.Model, lowered: keras.Model) -> None:
    """Same structure, configs and weights as `original`, and no object shared with it."""
    assert lowered.name == original.name
    assert lowered.input_shape == original.input_shape
    assert lowered.output_shape == original.output_shape

    by_name = {layer.name: layer for layer in flat_layers(original)}
    names = [layer.name for layer in lowered.layers]
    assert len(names) == len(set(names)), "duplicate layer names in the lowered model"
    assert set(names) == set(by_name)
    assert flat_operation_kinds(lowered) == flat_operation_kinds(original)

    for layer in lowered.layers:
        source = by_name[layer.name]
        assert type(layer) is type(source), layer.name
        assert layer.get_config() == source.get_config(), layer.name
        assert weight_names(layer) == weight_names(source), layer.name
        ours, theirs = layer.get_weights(), source.get_weights()
        assert len(ours) == len(theirs), layer.name
        for mine, other in zip(ours, theirs):
            assert mine.dtype == other.dtype, layer.name
            assert np.array_equal(mine, other), layer.name
    assert lowered.count_params() == original.count_params()

    originals = all_objects(original)
    shared = [
        getattr(obj, "name", repr(obj))
        for obj in [*operations(lowered), *lowered.layers, *lowered.variables]
        if id(obj) in originals
    ]
    assert not shared, f"the lowered model shares objects with the original: {shared}"


def test_every_architecture_is_covered() -> None:
    assert len(ARCHITECTURES) == EXPECTED_ARCHITECTURES, ARCHITECTURES
    assert set(REDUCED_SIZE) <= set(ARCHITECTURES)


@pytest.mark.slow
@pytest.mark.parametrize("name", SAVED_ARCHITECTURES)
def test_lowered_model_saves_and_loads(name: str, tmp_path: Path) -> None:
    model = build(name)
    lowered = kgraph.lift(model).lower()
    path = tmp_path / "m.keras"
    lowered.save(path)
    loaded = keras.saving.load_model(path)

    assert [layer.name for layer in loaded.layers] == [layer.name for layer in lowered.layers]
    assert_same_predictions(model, loaded, sample_input(model))
