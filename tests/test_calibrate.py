"""`kgraph.calibrate.recalibrate`: exact BatchNorm statistics, measured in graph order.

The oracle: after recalibration, every BatchNormalization's moving mean and variance
equal numpy's per-channel mean and population variance of that layer's inputs over the
data, read from the recalibrated model by a separate probe.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import keras
import numpy as np
import pytest

import kgraph
from kgraph.calibrate import CalibrationError, batch_norm_layers, iterate_batches, recalibrate

L = keras.layers
ROOT = Path(__file__).resolve().parents[1]
TF_DATA = "tf.data needs TensorFlow, an optional dependency: pip install 'kgraph[tensorflow]'"


def numpy_moments(values: list[np.ndarray], axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population variance over every other axis, in float64."""
    rows = [np.moveaxis(v.astype(np.float64), axis, -1) for v in values]
    flat = np.concatenate([r.reshape(-1, r.shape[-1]) for r in rows])
    return flat.mean(axis=0), flat.var(axis=0)


def scramble_statistics(model: keras.Model, seed: int = 0) -> None:
    """Give every BatchNorm's moving statistics wrong values (as after pruning)."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, L.BatchNormalization):
            size = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=size).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, size=size).astype("float32"))


def values(model: keras.Model, tensors: list, x: np.ndarray) -> list[np.ndarray]:
    probe = keras.Model(model.input, tensors)
    out = probe(x, training=False)
    out = out if isinstance(out, (list, tuple)) else [out]
    return [keras.ops.convert_to_numpy(v) for v in out]


def statistics(layer: L.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    return (
        keras.ops.convert_to_numpy(layer.moving_mean),
        keras.ops.convert_to_numpy(layer.moving_variance),
    )


def build_network() -> tuple[keras.Model, dict]:
    """Conv and Dense BatchNorms, one on axis 1 (channels first), a shared one called
    twice, and a nested model with its own BatchNorm; the symbolic inputs of each."""
    inner_in = keras.Input((4, 4, 6), name="inner_in")
    h = L.Conv2D(5, 3, padding="same", name="inner_conv")(inner_in)
    inner_bn_in = h
    h = L.BatchNormalization(name="inner_bn")(h)
    inner = keras.Model(inner_in, L.ReLU()(h), name="inner")

    x = keras.Input((8, 8, 3), name="image")
    y = L.Conv2D(6, 3, padding="same", name="conv1")(x)
    refs = {"bn1": [y]}
    y = L.BatchNormalization(name="bn1")(y)
    y = L.ReLU()(y)
    shared = L.BatchNormalization(name="shared")
    a = L.Conv2D(6, 1, name="branch_a")(y)
    b = L.Conv2D(6, 3, padding="same", name="branch_b")(y)
    refs["shared"] = [a, b]
    y = L.Add()([shared(a), shared(b)])
    y = L.MaxPooling2D()(y)
    refs["inner_outer_input"] = [y]
    y = inner(y)
    y = L.Permute((3, 1, 2), name="to_channels_first")(y)
    refs["bn_cf"] = [y]
    y = L.BatchNormalization(axis=1, name="bn_cf")(y)
    y = L.Flatten()(y)
    y = L.Dense(12, name="fc")(y)
    refs["bn_dense"] = [y]
    y = L.BatchNormalization(name="bn_dense")(y)
    model = keras.Model(x, L.Dense(3, name="out")(L.ReLU()(y)), name="net")
    refs["inner"] = (inner, inner_bn_in)
    return model, refs


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(7).normal(1.0, 2.0, size=(90, 8, 8, 3)).astype("float32")


def test_statistics_are_the_exact_moments_of_each_inputs(data) -> None:
    model, refs = build_network()
    scramble_statistics(model)
    result = recalibrate(model, data, batch_size=16, inplace=True)
    assert result is model
    for name, axis in [("bn1", -1), ("shared", -1), ("bn_cf", 1), ("bn_dense", -1)]:
        mean, variance = numpy_moments(values(model, refs[name], data), axis)
        got_mean, got_variance = statistics(model.get_layer(name))
        np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(got_variance, variance, rtol=1e-4, atol=1e-5, err_msg=name)
    # the nested model's BatchNorm: its model's input, then the input of its layer
    inner, inner_bn_in = refs["inner"]
    (outer,) = values(model, refs["inner_outer_input"], data)
    (inside,) = values(inner, [inner_bn_in], outer)
    mean, variance = numpy_moments([inside], -1)
    got_mean, got_variance = statistics(inner.get_layer("inner_bn"))
    np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_variance, variance, rtol=1e-4, atol=1e-5)


def test_later_layers_are_measured_after_earlier_ones(data) -> None:
    """Measuring every input in one pass (with the old statistics upstream) is not the same."""
    model, refs = build_network()
    scramble_statistics(model)
    one_pass = numpy_moments(values(model, refs["bn_dense"], data), -1)
    recalibrate(model, data, inplace=True)
    got_mean, _ = statistics(model.get_layer("bn_dense"))
    assert not np.allclose(got_mean, one_pass[0], rtol=1e-2, atol=1e-3)


def test_graph_order_and_shared_layers_listed_once() -> None:
    model, _ = build_network()
    names = [layer.name for layer in batch_norm_layers(model)]
    assert names == ["bn1", "shared", "inner_bn", "bn_cf", "bn_dense"]


def test_nothing_else_changes_and_the_original_is_untouched(data) -> None:
    model, _ = build_network()
    scramble_statistics(model)
    before = {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.weights}
    result = recalibrate(model, data)
    assert result is not model
    for w in model.weights:  # the original: not a single value changed
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), before[w.path])
    changed = set()
    for old, new in zip(model.weights, result.weights):
        if not np.array_equal(keras.ops.convert_to_numpy(old), keras.ops.convert_to_numpy(new)):
            changed.add(old.path.split("/")[-1])
    assert changed == {"moving_mean", "moving_variance"}
    assert [w.shape for w in model.weights] == [w.shape for w in result.weights]
    # the copy equals recalibrating in place
    recalibrate(model, data, inplace=True)
    for old, new in zip(model.weights, result.weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(old), keras.ops.convert_to_numpy(new), rtol=1e-6
        )


def test_inference_uses_the_new_statistics(data) -> None:
    """A Dense -> BatchNorm model: after recalibration its outputs are standardised."""
    x = keras.Input((3,))
    bn = L.BatchNormalization(center=False, scale=False, epsilon=1e-9)
    model = keras.Model(x, bn(x))
    rows = np.random.default_rng(0).normal(5.0, 3.0, size=(200, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(recalibrate(model, rows)(rows, training=False))
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-4)


def test_sequential_model_and_renorm(data) -> None:
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(4, 3),
            L.BatchNormalization(renorm=True, name="renorm"),
            L.GlobalAveragePooling2D(),
        ]
    )
    scramble_statistics(model)
    recalibrate(model, data, inplace=True)
    conv = keras.Model(model.inputs[0], model.layers[0].output)
    mean, variance = numpy_moments([keras.ops.convert_to_numpy(conv(data))], -1)
    layer = model.get_layer("renorm")
    np.testing.assert_allclose(statistics(layer)[0], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(statistics(layer)[1], variance, rtol=1e-4, atol=1e-5)
    stddev = keras.ops.convert_to_numpy(layer.moving_stddev)
    np.testing.assert_allclose(stddev, np.sqrt(variance + layer.epsilon), rtol=1e-4)


def test_data_forms_give_the_same_statistics(data) -> None:
    tf = pytest.importorskip("tensorflow", reason=TF_DATA)

    model, _ = build_network()
    scramble_statistics(model)
    labels = np.arange(len(data)) % 3

    def stats_of(result: keras.Model) -> list[np.ndarray]:
        return [np.concatenate(statistics(layer)) for layer in batch_norm_layers(result)]

    expected = stats_of(recalibrate(model, data[:64], batch_size=16))
    forms = {
        "(x, y)": recalibrate(model, (data[:64], labels[:64]), batch_size=16),
        "tf.data": recalibrate(
            model, tf.data.Dataset.from_tensor_slices((data, labels)).batch(16), batches=4
        ),
        "list": recalibrate(model, [data[i : i + 16] for i in range(0, 64, 16)]),
        "generator": recalibrate(model, ((data[i : i + 8], None) for i in range(0, 64, 8))),
        "batches": recalibrate(model, data, batch_size=32, batches=2),
        "one batch": recalibrate(model, data[:64], batch_size=64),
    }
    for form, result in forms.items():
        for got, want in zip(stats_of(result), expected):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=form)


def test_iterate_batches_cuts_arrays_and_splits_pairs() -> None:
    x, y = np.zeros((70, 2)), np.arange(70)
    assert [b.shape[0] for b, _ in iterate_batches(x, 32)] == [32, 32, 6]
    pairs = list(iterate_batches((x, y), 50))
    assert [b[1].tolist() for b in pairs] == [list(range(50)), list(range(50, 70))]
    assert [label for _, label in iterate_batches([(x, y), [x, y], x])][2] is None
    assert len(list(iterate_batches(x, 10, limit=3))) == 3


def test_errors_name_the_problem(data) -> None:
    model, _ = build_network()
    with pytest.raises(CalibrationError, match="no data"):
        recalibrate(model, None)
    with pytest.raises(CalibrationError, match="no rows"):
        recalibrate(model, [])
    with pytest.raises(CalibrationError, match="no rows"):
        recalibrate(model, data[:0])
    with pytest.raises(CalibrationError, match="batch_size"):
        recalibrate(model, data, batch_size=0)
    with pytest.raises(CalibrationError, match="batches"):
        recalibrate(model, data, batches=-1)
    with pytest.raises(CalibrationError, match="cannot read batches"):
        recalibrate(model, 3.0)
    with pytest.raises(CalibrationError, match=r"keras\.Model"):
        recalibrate("model", data)
    assert issubclass(CalibrationError, kgraph.KGraphError)


def test_subclassed_and_unbuilt_models_are_refused(data) -> None:
    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.bn = L.BatchNormalization()

        def call(self, x):
            return self.bn(x)

    with pytest.raises(CalibrationError, match="not a Functional or Sequential"):
        recalibrate(Net(), data)
    with pytest.raises(CalibrationError, match="not built"):
        recalibrate(keras.Sequential([L.BatchNormalization()]), data)


def test_no_batchnorm_is_a_logged_no_op(data, caplog) -> None:
    x = keras.Input((8, 8, 3))
    model = keras.Model(x, L.Conv2D(2, 3)(x))
    with caplog.at_level(logging.WARNING, logger="kgraph"):
        same = recalibrate(model, data, inplace=True)
        copy = recalibrate(model, data)
    assert same is model and copy is not model
    assert "has no BatchNormalization" in caplog.text
    for old, new in zip(model.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_batchnorm_inside_a_custom_layer_is_reported(data, caplog) -> None:
    class Block(L.Layer):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.bn = L.BatchNormalization(name="hidden_bn")

        def call(self, x):
            return self.bn(x)

    x = keras.Input((8, 8, 3))
    model = keras.Model(x, Block()(L.BatchNormalization(name="seen_bn")(x)))
    with caplog.at_level(logging.WARNING, logger="kgraph"):
        recalibrate(model, data, inplace=True)
    assert "hidden_bn" in caplog.text
    mean, _ = numpy_moments([data], -1)
    np.testing.assert_allclose(statistics(model.get_layer("seen_bn"))[0], mean, rtol=1e-4)


def load_quality():
    spec = importlib.util.spec_from_file_location(
        "kgraph_quality", ROOT / "benchmarks" / "quality.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_recalibration_restores_a_pruned_digits_resnet(tmp_path) -> None:
    """The issue's case: 10% of a digits ResNet's channels pruned by L1 (30 s)."""
    quality = load_quality()
    task = quality.TASKS["resnet"]()
    model = quality.trained(task, tmp_path)
    original = quality.accuracy(model, task.x_test, task.y_test)
    pruned = kgraph.prune(model, 0.1, "l1")
    before = quality.accuracy(pruned, task.x_test, task.y_test)
    after = quality.accuracy(recalibrate(pruned, task.x_train[:512]), task.x_test, task.y_test)
    assert original > 0.97
    assert after > before + 0.30, (original, before, after)
    assert after > original - 0.05


def _conv_bn() -> keras.Model:
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(8, 3, padding="same", name="conv")(x)
    y = L.ReLU()(L.BatchNormalization(name="bn")(y))
    return keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(y)))


def test_prune_with_calibrate_measures_the_pruned_model(data) -> None:
    model = _conv_bn()
    scramble_statistics(model)
    before = [w.copy() for w in model.get_weights()]
    small = kgraph.prune(model, 0.5, calibrate=data, batch_size=16)
    assert small.get_layer("bn").moving_mean.shape == (4,)
    (conv_out,) = values(small, [small.get_layer("conv").output], data)
    mean, variance = numpy_moments([conv_out], -1)
    np.testing.assert_allclose(statistics(small.get_layer("bn"))[0], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(statistics(small.get_layer("bn"))[1], variance, rtol=1e-4)
    for old, new in zip(before, model.get_weights()):  # the user's model is unchanged
        np.testing.assert_array_equal(old, new)


def test_iterative_prune_recalibrates_after_each_fit(data) -> None:
    model = _conv_bn()
    seen = []

    def fit(pruned: keras.Model, step: int) -> None:
        seen.append(pruned.get_layer("conv").filters)
        scramble_statistics(pruned, seed=step)  # as a short fine-tune leaves them stale

    small = kgraph.iterative_prune(model, 2, 0.5, fit, calibrate=data)
    assert seen == [6, 5]  # 1 - 0.5 ** (1/2) of 8, then of 6, rounded down
    (conv_out,) = values(small, [small.get_layer("conv").output], data)
    mean, variance = numpy_moments([conv_out], -1)
    np.testing.assert_allclose(statistics(small.get_layer("bn"))[0], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(statistics(small.get_layer("bn"))[1], variance, rtol=1e-4)
