"""tfmot's pruning API on Keras 3 (`kgraph.compat.tfmot`): tfmot's own test scenarios.

Ports, as behaviour, the scenarios of tfmot's pruning_schedule_test, pruning_impl_test,
prune_test, pruning_wrapper_test, pruning_callbacks_test and prune_integration_test:
schedule values at steps, masks (magnitude, blocks, M-by-N), wrapping and stripping,
training with `model.fit` and in a custom loop, save/load of the wrapped and of the
stripped model. Expected masks come from numpy (np.sort of |w|) or from tfmot's tests.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import fingerprint

import kgraph
from kgraph.compat import tfmot
from kgraph.compat.tfmot.sparsity.keras.callbacks import pruning_logs
from kgraph.compat.tfmot.sparsity.keras.wrapper import m_by_n_mask

sparsity = tfmot.sparsity.keras
L = keras.layers
BACKEND = keras.backend.backend()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Torch's thread pool on 2 shared cores makes tiny steps 50x slower; restored after."""
    if BACKEND != "torch":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- helpers


def value(variable: object) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable)


def wrappers(model: keras.Model) -> list[sparsity.PruneLowMagnitude]:
    return sparsity.collect_prunable_layers(model)


def zero_fraction(arrays: list[np.ndarray]) -> float:
    return sum(int(np.count_nonzero(a == 0)) for a in arrays) / sum(a.size for a in arrays)


def pruned_fraction(model: keras.Model) -> float:
    """Zeros among the weights the wrappers prune."""
    return zero_fraction([value(w) for layer in wrappers(model) for w in layer.prunable_weights])


def random_data(model: keras.Model, rows: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, *model.inputs[0].shape[1:])).astype("float32")
    y = rng.normal(size=(rows, *model.outputs[0].shape[1:])).astype("float32")
    return x, y


def train(model: keras.Model, epochs: int = 1, callbacks: list | None = None) -> None:
    """`epochs` training steps (one batch per epoch), with UpdatePruningStep by default."""
    if not model.compiled:
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x, y = random_data(model)
    callbacks = [sparsity.UpdatePruningStep()] if callbacks is None else callbacks
    model.fit(x, y, batch_size=len(x), epochs=epochs, verbose=0, callbacks=callbacks)


def drive(model: keras.Model, steps: int) -> sparsity.UpdatePruningStep:
    """Run the callback for `steps` steps without training (tfmot's custom-loop protocol)."""
    callback = sparsity.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    for _ in range(steps):
        callback.on_train_batch_begin(-1)
        callback.on_train_batch_end(-1)
    return callback


def dense_model() -> keras.Model:
    return keras.Sequential(
        [keras.Input((10,)), L.Dense(12, activation="relu"), L.Dense(5, activation="softmax")],
        name="dense_model",
    )


def one_kernel(kernel: np.ndarray, **params: object) -> tuple[keras.Model, object]:
    """A model of one pruned Dense (no bias) whose kernel is `kernel`."""
    layer = sparsity.prune_low_magnitude(L.Dense(kernel.shape[1], use_bias=False), **params)
    model = keras.Sequential([keras.Input((kernel.shape[0],)), layer])
    layer.set_weights([kernel.astype("float32")])
    return model, layer


def every_step(target: float) -> sparsity.ConstantSparsity:
    return sparsity.ConstantSparsity(target, begin_step=0, frequency=1)


# ---------------------------------------------------------------- schedules

SCHEDULES = {
    "constant": lambda begin, end, freq: sparsity.ConstantSparsity(0.5, begin, end, freq),
    "polynomial": lambda begin, end, freq: sparsity.PolynomialDecay(0.2, 0.8, begin, end, 3, freq),
}


@pytest.mark.parametrize("make", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_schedules_prune_between_begin_and_end_every_frequency_steps(make) -> None:
    schedule = make(100, 200, 1)
    steps = (90, 99, 100, 110, 200, 201, 210)
    assert [schedule(s)[0] for s in steps] == [False, False, True, True, True, False, False]
    schedule = make(100, 200, 10)
    assert [schedule(s)[0] for s in (100, 109, 110, 111)] == [True, False, True, False]


@pytest.mark.parametrize("make", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_schedules_refuse_bad_steps_and_sparsities(make) -> None:
    for begin, end in ((-1, 1000), (-5, 1000), (10, -5), (10, 5)):
        with pytest.raises(ValueError) as error:
            make(begin, end, 10)
        assert isinstance(error.value, kgraph.KGraphError)
    for frequency in (0, -1, -5):
        with pytest.raises(ValueError):
            make(10, 1000, frequency)
    for begin, end, frequency in ((0, 1000, 10), (1, 1000, 1), (10, 20, 1)):
        make(begin, end, frequency)


def test_sparsity_values_must_lie_in_zero_one() -> None:
    for bad in (-0.001, -1.0, 1.0, 10.0):
        with pytest.raises(ValueError):
            sparsity.ConstantSparsity(bad, 0)
        with pytest.raises(ValueError):
            sparsity.PolynomialDecay(bad, 0.8, 0, 10)
        with pytest.raises(ValueError):
            sparsity.PolynomialDecay(0.2, bad, 0, 10)
    for good in (0.0, 0.001, 0.5, 0.99):
        assert sparsity.ConstantSparsity(good, 0)(0) == (True, good)
    with pytest.raises(ValueError, match="end_step"):
        sparsity.PolynomialDecay(0.4, 0.8, 10, -1)


def test_constant_sparsity_prunes_forever_with_end_step_minus_one() -> None:
    schedule = sparsity.ConstantSparsity(0.5, 0, -1, 10)
    assert schedule(10000) == (True, 0.5)
    assert schedule(100000000) == (True, 0.5)
    assert sparsity.ConstantSparsity(0.5, 100, 200, 10)(200) == (True, 0.5)


def test_polynomial_decay_values_at_steps() -> None:
    schedule = sparsity.PolynomialDecay(0.2, 0.8, 100, 110, 3, 2)
    for step, expected in ((100, 0.2), (102, 0.4928), (105, 0.725), (110, 0.8), (500, 0.8)):
        assert schedule(step)[1] == pytest.approx(expected)  # tfmot's values
    # steps may come as numpy integers or Keras variables
    assert schedule(np.int64(105))[1] == pytest.approx(0.725)
    assert schedule(keras.Variable(102, dtype="int32", trainable=False))[1] == pytest.approx(0.4928)


def test_schedules_serialize_as_tfmot_does_and_take_numpy_integers() -> None:
    schedule = sparsity.PolynomialDecay(0.2, 0.6, 10, 20, 5, 10)
    assert schedule.get_config() == {
        "class_name": "PolynomialDecay",
        "config": {
            "initial_sparsity": 0.2,
            "final_sparsity": 0.6,
            "power": 5,
            "begin_step": 10,
            "end_step": 20,
            "frequency": 10,
        },
    }
    constant = sparsity.ConstantSparsity(0.7, 10, 20, 10)
    for original in (schedule, constant):
        with sparsity.prune_scope():
            restored = keras.saving.deserialize_keras_object(original.get_config())
        assert type(restored) is type(original)
        assert restored.get_config() == original.get_config()
    # tfmot's tutorial computes end_step with numpy
    end_step = np.ceil(900 / 128).astype(np.int32) * 2
    tutorial = sparsity.PolynomialDecay(
        initial_sparsity=0.5, final_sparsity=0.8, begin_step=0, end_step=end_step
    )
    assert tutorial.end_step == 16 and type(tutorial.end_step) is int
    assert tutorial(16)[1] == pytest.approx(0.8)  # not a pruning step: frequency is 100
    assert tutorial(0) == (True, 0.5)


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize(("target", "kept"), [(0.5, 50), (0.2, 80), (0.9999, 1), (0.0, 100)])
def test_magnitude_masks_keep_the_largest_weights(target: float, kept: int) -> None:
    rng = np.random.default_rng(3)
    kernel = (
        rng.permutation(np.linspace(1.0, 100.0, 100)).reshape(100, 1)
        * rng.choice([-1, 1], 100)[:, None]
    )
    model, layer = one_kernel(kernel, pruning_schedule=every_step(target))
    assert zero_fraction([value(layer.pruning_vars[0][1])]) == 0  # all ones before training
    drive(model, 1)
    weight, mask, threshold = layer.pruning_vars[0]
    magnitudes = np.sort(np.abs(kernel).ravel())[::-1]
    cutoff = magnitudes[kept - 1]  # the smallest magnitude that survives
    np.testing.assert_array_equal(value(mask), (np.abs(kernel) >= cutoff).astype("float32"))
    assert np.count_nonzero(value(weight)) == kept
    np.testing.assert_allclose(value(weight), kernel * (np.abs(kernel) >= cutoff), rtol=1e-6)
    assert float(value(threshold)) == pytest.approx(cutoff)


def test_mask_and_threshold_of_one_to_ten() -> None:
    model, layer = one_kernel(
        np.arange(1, 11).reshape(10, 1), pruning_schedule=every_step(0.200000018)
    )
    drive(model, 1)
    _, mask, threshold = layer.pruning_vars[0]
    np.testing.assert_array_equal(value(mask).ravel(), np.r_[np.zeros(2), np.ones(8)])
    assert float(value(threshold)) == 3  # tfmot's values


BLOCK_CASES = {
    "AVG": [[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4], [0.3, 0.3, 0.4, 0.4]],
    "MAX": [
        [0.1, 0.0, 0.2, 0.0],
        [0.0, -0.1, 0.0, -0.2],
        [0.3, 0.0, 0.4, 0.0],
        [0.0, -0.3, 0.0, -0.4],
    ],
}


@pytest.mark.parametrize("pooling", BLOCK_CASES)
def test_block_masks_prune_whole_blocks(pooling: str) -> None:
    kernel = np.array(BLOCK_CASES[pooling])
    model, layer = one_kernel(
        kernel, pruning_schedule=every_step(0.5), block_size=(2, 2), block_pooling_type=pooling
    )
    drive(model, 1)
    expected = [[0.0] * 4, [0.0] * 4, [1.0] * 4, [1.0] * 4]  # tfmot's expected mask
    np.testing.assert_array_equal(value(layer.pruning_vars[0][1]), expected)


def test_max_pooling_ranks_blocks_by_their_largest_weight() -> None:
    kernel = np.array(
        [[0.6, 0.0, 0.2, 0.2], [0.0, 0.0, 0.2, 0.2], [0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5]]
    )  # block means .15 .2 / .1 .5, block maxima .6 .2 / .1 .5
    kept = {}
    for pooling in ("AVG", "MAX"):
        model, layer = one_kernel(
            kernel, pruning_schedule=every_step(0.5), block_size=(2, 2), block_pooling_type=pooling
        )
        drive(model, 1)
        kept[pooling] = value(layer.pruning_vars[0][1])[::2, ::2]  # one entry per block
    np.testing.assert_array_equal(kept["AVG"], [[0, 1], [0, 1]])
    np.testing.assert_array_equal(kept["MAX"], [[1, 0], [0, 1]])


M_BY_N_CASES = {
    "2d_2by4": ([[0.74, 0.68], [-0.89, -0.45], [-1.68, 1.24], [0.31, -0.6]],
                [[0, 1], [1, 0], [1, 1], [0, 0]], (2, 4)),
    "4d_2by4": ([[[[-0.36, -0.77], [-0.43, -0.18], [0.12, 1.36], [0.77, 0.96]]]],
                [[[[0, 0], [1, 0], [0, 1], [1, 1]]]], (2, 4)),
    "4d_1by2": ([[[[-0.36, -0.77], [-0.43, -0.18], [0.12, 1.36], [0.77, 0.96]]]],
                [[[[0, 1], [1, 0], [0, 1], [1, 0]]]], (1, 2)),
    "2d_2by4_pad": ([[1.92, -0.21], [-0.19, 0.57], [1.1, -0.42]],
                    [[1, 0], [0, 1], [1, 1]], (2, 4)),
    "4d_2by4_pad": ([[[[-0.37, 1.85], [0.82, 0.07], [1.17, 0.5]]]],
                    [[[[0, 1], [1, 0], [1, 1]]]], (2, 4)),
}  # fmt: skip


@pytest.mark.parametrize("case", M_BY_N_CASES)
def test_m_by_n_masks_match_tfmot(case: str) -> None:
    weights, expected, m_by_n = M_BY_N_CASES[case]
    np.testing.assert_array_equal(m_by_n_mask(np.array(weights), m_by_n), np.array(expected) == 1)


def test_a_custom_schedule_drives_the_masks() -> None:
    class Table(sparsity.PruningSchedule):
        """tfmot's linear_sparsity test schedule."""

        def __init__(self, table: list[float]) -> None:
            self.table = table

        def __call__(self, step: int) -> tuple[bool, float]:
            return True, self.table[step - 1]

        def get_config(self) -> dict:
            return {"class_name": "Table", "config": {"table": self.table}}

    table = [0.0, 0.1, 0.1, 0.3, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5]
    model, layer = one_kernel(
        np.linspace(1.0, 100.0, 100).reshape(100, 1), pruning_schedule=Table(table)
    )
    callback = drive(model, 0)
    counts = []
    for _ in table:
        callback.on_train_batch_begin(-1)
        callback.on_train_batch_end(-1)
        counts.append(int(np.count_nonzero(value(layer.layer.kernel))))
    assert counts == [100, 90, 90, 70, 70, 50, 50, 50, 50, 50]  # tfmot's counts


# ---------------------------------------------------------------- wrapping


class Unknown(L.Layer):
    """A custom layer tfmot's registry does not know."""

    def build(self, input_shape: tuple) -> None:
        self.kernel = self.add_weight(shape=(input_shape[-1], 3), name="kernel")

    def call(self, x: object) -> object:
        return keras.ops.matmul(x, self.kernel)


class MyDense(L.Dense, sparsity.PrunableLayer):
    """A custom layer that says what to prune: its kernel, not its bias."""

    def get_prunable_weights(self) -> list:
        return [self.kernel]


class BiasOnly(L.Dense):
    def get_prunable_weights(self) -> list:
        return [self.bias]


def test_prune_sequential_wraps_copies_of_every_layer_and_leaves_the_model_alone() -> None:
    model = keras.Sequential(
        [
            keras.Input((10,)),
            L.Dense(12, name="d1"),
            L.Dropout(0.1, name="drop"),
            L.Dense(5, name="d2"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    before = fingerprint(model)
    pruned = sparsity.prune_low_magnitude(model)
    assert [layer.name for layer in pruned.layers] == [
        "prune_low_magnitude_d1",
        "prune_low_magnitude_drop",
        "prune_low_magnitude_d2",
    ]
    assert not pruned.compiled  # as tfmot: the optimizer is removed
    assert fingerprint(model) == before
    originals = {id(layer) for layer in model.layers}
    assert not {id(layer.layer) for layer in pruned.layers} & originals
    x, _ = random_data(model)
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), pruned.predict(x, verbose=0)
    )  # same weights, no training yet
    assert [value(layer.pruning_step) for layer in wrappers(pruned)] == [-1, -1, -1]


def test_an_unbuilt_sequential_stays_unbuilt_also_through_its_json() -> None:
    for model, built in (
        (keras.Sequential([L.Dense(10), L.Dense(10)]), False),
        (keras.Sequential([keras.Input((10,)), L.Dense(10), L.Dense(10)]), True),
    ):
        pruned = sparsity.prune_low_magnitude(model)
        assert pruned.built is built and len(wrappers(pruned)) == 2
        loaded = keras.models.model_from_json(pruned.to_json())
        assert loaded.built is built and len(wrappers(loaded)) == 2


def test_prune_functional_models_shared_layers_and_nested_models() -> None:
    i1, i2 = keras.Input((10,)), keras.Input((10,))
    model = keras.Model([i1, i2], L.Add()([L.Dense(10)(i1), L.Dense(10)(i2)]))
    pruned = sparsity.prune_low_magnitude(model)
    assert len(wrappers(pruned)) == 3
    x = [np.ones((2, 10), "float32"), np.zeros((2, 10), "float32")]
    np.testing.assert_allclose(model.predict(x, verbose=0), pruned.predict(x, verbose=0))

    inputs = keras.Input((10,))
    shared = L.Dense(10)
    model = keras.Model(inputs, shared(shared(inputs)))
    assert len(wrappers(sparsity.prune_low_magnitude(model))) == 1

    inner = keras.Sequential([keras.Input((10,)), L.Dense(10)])
    outer = keras.Sequential([keras.Input((10,)), inner, L.Dense(10)])
    assert len(wrappers(sparsity.prune_low_magnitude(outer))) == 2


def test_wrapped_layers_are_not_wrapped_again_and_lists_are_wrapped() -> None:
    model = keras.Sequential(
        [keras.Input((10,)), L.Dense(10), sparsity.prune_low_magnitude(L.Dense(10))]
    )
    pruned = sparsity.prune_low_magnitude(model)
    assert [type(layer.layer) for layer in pruned.layers] == [L.Dense, L.Dense]
    assert pruned.layers[1] is not model.layers[1]
    assert pruned.layers[1].get_config() == model.layers[1].get_config()

    layers = sparsity.prune_low_magnitude([L.Dense(10), L.Flatten(), MyDense(3)])
    assert all(isinstance(layer, sparsity.PruneLowMagnitude) for layer in layers)


def test_unsupported_layers_and_models_raise_tfmot_errors() -> None:
    with pytest.raises(tfmot.TfmotError, match="Unknown"):
        sparsity.prune_low_magnitude(Unknown())
    with pytest.raises(ValueError, match="not supported"):
        sparsity.prune_low_magnitude(keras.Sequential([keras.Input((4,)), L.Dense(3), Unknown()]))
    with pytest.raises(ValueError, match="Bidirectional"):
        sparsity.prune_low_magnitude(L.Bidirectional(L.LSTM(3)))

    class Subclassed(keras.Model):
        def call(self, x: object) -> object:
            return x

    with pytest.raises(ValueError) as error:
        sparsity.prune_low_magnitude(Subclassed())
    assert str(error.value) == (
        "`prune_low_magnitude` can only prune an object of the following types: "
        "keras.models.Sequential, keras functional model, keras.layers.Layer, list of "
        "keras.layers.Layer. You passed an object of type: Subclassed."
    )
    with pytest.raises(tfmot.TfmotError, match="type: object"):
        sparsity.prune_low_magnitude(object())
    with pytest.raises(tfmot.TfmotError, match=r"keras\.Model"):
        sparsity.strip_pruning(L.Dense(3))


def test_bad_pruning_options_raise() -> None:
    for options in (
        {"block_pooling_type": "MIN"},
        {"block_size": (2,)},
        {"block_size": (0, 2)},
        {"sparsity_m_by_n": (4, 2)},
        {"sparsity_m_by_n": (2, 2.0)},
        {"sparsity_m_by_n": (2, 4), "block_size": (2, 2)},
        {"pruning_schedule": 0.5},
    ):
        with pytest.raises(tfmot.TfmotError):
            sparsity.prune_low_magnitude(L.Dense(3), **options)
    layer = sparsity.prune_low_magnitude(BiasOnly(3), sparsity_m_by_n=(2, 4))
    with pytest.raises(tfmot.TfmotError, match="input axis"):
        keras.Sequential([keras.Input((8,)), layer])
    attention = sparsity.prune_low_magnitude(L.MultiHeadAttention(2, 4))
    with pytest.raises(tfmot.TfmotError, match="first input alone"):
        attention(keras.Input((5, 8)), keras.Input((3, 6)))  # build it first, or wrap a model


def test_custom_prunable_layers_prune_what_they_list() -> None:
    model = sparsity.prune_low_magnitude(
        keras.Sequential([keras.Input((8,)), MyDense(6, bias_initializer="ones", name="mine")]),
        pruning_schedule=every_step(0.5),
    )
    (layer,) = wrappers(model)
    assert layer.name == "prune_low_magnitude_mine"
    assert [w.path for w in layer.prunable_weights] == [layer.layer.kernel.path]
    train(model)
    assert zero_fraction([value(layer.layer.kernel)]) == 0.5
    assert np.count_nonzero(value(layer.layer.bias)) == 6


# ---------------------------------------------------------------- training


def test_fitting_without_update_pruning_step_raises_as_tfmot_does() -> None:
    model = sparsity.prune_low_magnitude(dense_model())
    x, y = random_data(model)
    model.predict(x, verbose=0)  # inference needs no callback
    model.compile(optimizer="sgd", loss="mse")
    model.evaluate(x, y, verbose=0)
    with pytest.raises(tfmot.PruningStepError, match="UpdatePruningStep") as error:
        model(x, training=True)  # a custom training loop
    assert isinstance(error.value, ValueError) and isinstance(error.value, kgraph.KGraphError)
    assert [value(layer.pruning_step) for layer in wrappers(model)] == [-1, -1]
    with pytest.raises(tfmot.PruningStepError, match="UpdatePruningStep"):
        model.fit(x, y, verbose=0)


def test_update_pruning_step_counts_training_steps() -> None:
    model = sparsity.prune_low_magnitude(dense_model(), pruning_schedule=every_step(0.5))
    train(model, epochs=3)
    assert [int(value(layer.pruning_step)) for layer in wrappers(model)] == [3, 3]
    assert pruned_fraction(model) == 0.5
    x, _ = random_data(model)
    stripped = sparsity.strip_pruning(model)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), stripped.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )


def test_an_unbuilt_pruned_model_counts_every_step() -> None:
    model = sparsity.prune_low_magnitude(
        keras.Sequential([L.Dense(4), L.Dense(2)]), pruning_schedule=every_step(0.5)
    )
    assert not model.built
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((20, 3), "float32"), np.ones((20, 2), "float32")
    callbacks = [sparsity.UpdatePruningStep()]
    model.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=callbacks)
    assert [int(value(layer.pruning_step)) for layer in wrappers(model)] == [4, 4]
    assert pruned_fraction(model) == 0.5


def test_custom_training_loop_with_tfmot_callback_protocol() -> None:
    model = sparsity.prune_low_magnitude(dense_model(), pruning_schedule=every_step(0.5))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = random_data(model)
    step_callback = sparsity.UpdatePruningStep()
    step_callback.set_model(model)
    step_callback.on_train_begin()
    for epoch in range(2):
        step_callback.on_train_batch_begin(batch=-1)
        model.train_on_batch(x, y)
        step_callback.on_epoch_end(epoch)
    assert pruned_fraction(model) == 0.5
    assert [int(value(layer.pruning_step)) for layer in wrappers(model)] == [2, 2]


def test_the_tutorial_runs_with_only_the_import_changed() -> None:
    """tfmot's "Pruning in Keras" tutorial, shortened: an MLP pruned from 0 to 50 %."""
    rng = np.random.default_rng(0)
    train_x = rng.normal(size=(640, 16)).astype("float32")
    train_y = (train_x[:, :4].sum(axis=1) > 0).astype("int32")
    model = keras.Sequential(
        [keras.Input((16,)), L.Dense(32, activation="relu"), L.Dense(2)], name="mlp"
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train_x, train_y, epochs=1, batch_size=64, verbose=0)

    prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
    pruning_params = {
        "pruning_schedule": tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=1000
        )
    }
    model_for_pruning = prune_low_magnitude(model, **pruning_params)
    model_for_pruning.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    model_for_pruning.fit(
        train_x,
        train_y,
        batch_size=32,
        epochs=50,
        validation_split=0.0,
        callbacks=callbacks,
        verbose=0,
    )  # 20 steps an epoch: 1000 steps
    _, pruned_accuracy = model_for_pruning.evaluate(train_x, train_y, verbose=0)

    model_for_export = tfmot.sparsity.keras.strip_pruning(model_for_pruning)
    assert [layer.name for layer in model_for_export.layers] == [
        layer.name for layer in model.layers
    ]
    assert not sparsity.collect_prunable_layers(model_for_export)
    kernels = [layer.get_weights()[0] for layer in model_for_export.layers]
    assert zero_fraction(kernels) == pytest.approx(0.5, abs=0.01)
    assert kgraph.sparsity(model_for_export).total == pytest.approx(0.5, abs=0.01)
    model_for_export.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    _, export_accuracy = model_for_export.evaluate(train_x, train_y, verbose=0)
    assert export_accuracy == pytest.approx(pruned_accuracy)
    assert export_accuracy > 0.8  # pruned to 50 % and still learnt the task


@pytest.mark.parametrize(
    ("make", "weights"),
    [
        (lambda: L.LSTM(4), ["kernel", "recurrent_kernel"]),
        (lambda: L.GRU(4), ["kernel", "recurrent_kernel"]),
        (lambda: L.Conv1D(4, 3), ["kernel"]),
        (lambda: L.SeparableConv1D(4, 3), ["pointwise_kernel"]),
        (lambda: L.DepthwiseConv1D(3), []),
    ],
)
def test_each_kind_of_layer_reaches_the_target_on_tfmots_weights(make, weights) -> None:
    model = keras.Sequential([keras.Input((6, 4)), make(), L.Flatten(), L.Dense(2)])
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=every_step(0.5))
    layer = wrappers(pruned)[0]
    assert [w.name for w in layer.prunable_weights] == weights
    train(pruned)
    for weight in layer.layer.weights:
        if "kernel" in weight.name:  # biases start at zero: leave them out
            fraction = zero_fraction([value(weight)])
            assert fraction == (0.5 if weight.name in weights else 0.0), weight.path


def test_embedding_and_attention_reach_the_target() -> None:
    tokens = keras.Input((6,), dtype="int32")
    y = L.Embedding(20, 8, name="emb")(tokens)
    y = L.MultiHeadAttention(2, 4, name="mha")(y, y)
    model = keras.Model(tokens, L.Dense(2, name="head")(L.GlobalAveragePooling1D()(y)))
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=every_step(0.5))
    mha = pruned.get_layer("prune_low_magnitude_mha")
    assert len(mha.prunable_weights) == 4  # query, key, value, output kernels
    pruned.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).integers(0, 20, size=(8, 6))
    pruned.fit(x, np.zeros((8, 2), "float32"), verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    for layer in wrappers(pruned):
        for weight in layer.prunable_weights:
            assert zero_fraction([value(weight)]) == 0.5, weight.path
    assert kgraph.sparsity(sparsity.strip_pruning(pruned))["emb"].fraction == 0.5


@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`")  # tfmot's own usage
def test_m_by_n_training_keeps_the_pattern_found_on_the_first_step() -> None:
    layer = sparsity.prune_low_magnitude(
        L.Conv2D(16, (5, 7)),
        input_shape=(10, 10, 7),
        sparsity_m_by_n=(2, 4),
        pruning_schedule=every_step(0.5),
    )
    model = keras.Sequential([layer, L.Flatten(), L.Dense(1)])
    initial = value(layer.layer.kernel)
    train(model, epochs=3)
    kernel = value(layer.layer.kernel)
    # 7 input channels: groups of 4 and 3 (+1 padding) lose 2 and 1: 3 of 7
    assert zero_fraction([kernel]) == pytest.approx(3 / 7)
    groups = np.abs(initial).reshape(-1, 7, 16)
    expected = np.zeros_like(groups, dtype=bool)
    for start, keep in ((0, 2), (4, 2)):
        part = groups[:, start : start + 4]
        top = np.argsort(-part, axis=1, kind="stable")[:, :keep]
        np.put_along_axis(expected[:, start : start + 4], top, True, axis=1)
    np.testing.assert_array_equal(kernel.reshape(-1, 7, 16) != 0, expected)


def test_block_sparsity_while_training() -> None:
    model = keras.Sequential([keras.Input((8,)), L.Dense(8)])
    pruned = sparsity.prune_low_magnitude(
        model, pruning_schedule=every_step(0.5), block_size=(2, 4)
    )
    train(pruned, epochs=2)
    blocks = value(wrappers(pruned)[0].layer.kernel).reshape(4, 2, 2, 4).transpose(0, 2, 1, 3)
    zero_blocks = (blocks == 0).all(axis=(2, 3))
    assert zero_blocks.sum() == 4 and ((blocks != 0).all(axis=(2, 3)) | zero_blocks).all()


# ---------------------------------------------------------------- strip, save, load


def test_strip_pruning_gives_back_the_original_architecture_with_sparse_weights() -> None:
    for model in (
        keras.Sequential([L.Dense(10), L.Dense(10)]),
        dense_model(),
    ):
        stripped = sparsity.strip_pruning(sparsity.prune_low_magnitude(model))
        assert not wrappers(stripped)
        assert stripped.get_config() == model.get_config()
    i1, i2 = keras.Input((10,), name="a"), keras.Input((10,), name="b")
    model = keras.Model([i1, i2], L.Add()([L.Dense(10, name="d1")(i1), L.Dense(10, name="d2")(i2)]))
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=every_step(0.3))
    drive(pruned, 1)
    stripped = sparsity.strip_pruning(pruned)
    assert stripped.get_config() == model.get_config()
    for original, layer in zip(wrappers(pruned), [stripped.get_layer(n) for n in ("d1", "d2")]):
        mask = value(original.pruning_vars[0][1])
        np.testing.assert_array_equal(layer.get_weights()[0], original.get_weights()[0] * mask)
        assert zero_fraction([layer.get_weights()[0]]) == 0.3


def test_a_pruned_model_saves_reloads_and_goes_on_pruning(tmp_path: Path) -> None:
    """tfmot's testPruneStopAndRestart_PreservesSparsity, through a .keras file."""
    schedule = sparsity.PolynomialDecay(0.2, 0.6, 1, 4, 3, 1)
    model = sparsity.prune_low_magnitude(dense_model(), pruning_schedule=schedule)
    model.compile(optimizer="sgd", loss="mse")
    assert pruned_fraction(model) == 0.0
    train(model)  # step 1: the initial sparsity
    assert pruned_fraction(model) == pytest.approx(0.2, abs=0.01)
    model.save(tmp_path / "pruned.keras")
    with sparsity.prune_scope():
        loaded = keras.saving.load_model(tmp_path / "pruned.keras")
    assert [int(value(layer.pruning_step)) for layer in wrappers(loaded)] == [1, 1]
    assert wrappers(loaded)[0].pruning_schedule.get_config() == schedule.get_config()
    for a, b in zip(wrappers(model), wrappers(loaded)):
        np.testing.assert_array_equal(value(a.pruning_vars[0][1]), value(b.pruning_vars[0][1]))
    train(loaded, epochs=3)  # steps 2..4: the final sparsity
    assert pruned_fraction(loaded) == pytest.approx(0.6, abs=0.01)
    train(loaded, epochs=1)  # past end_step: no change
    assert pruned_fraction(loaded) == pytest.approx(0.6, abs=0.01)


def test_the_stripped_model_saves_and_reloads_as_a_plain_model(tmp_path: Path) -> None:
    pruned = sparsity.prune_low_magnitude(dense_model(), pruning_schedule=every_step(0.7))
    train(pruned)
    stripped = sparsity.strip_pruning(pruned)
    stripped.save(tmp_path / "stripped.keras")
    loaded = keras.saving.load_model(tmp_path / "stripped.keras")
    x, _ = random_data(pruned)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )
    assert kgraph.sparsity(loaded).total == pytest.approx(0.7, abs=0.01)
    assert [type(layer) for layer in loaded.layers] == [L.Dense, L.Dense]


# ---------------------------------------------------------------- summaries and policy


def test_pruning_summaries_log_each_masks_sparsity() -> None:
    for bad in ("", None, object()):
        with pytest.raises(ValueError):
            sparsity.PruningSummaries(log_dir=bad)
    model = sparsity.prune_low_magnitude(dense_model(), pruning_schedule=every_step(0.5))
    drive(model, 1)
    logs = pruning_logs(model)
    assert len(logs) == 4
    for layer in wrappers(model):
        magnitudes = np.abs(value(layer.prunable_weights[0]))
        path = layer.prunable_weights[0].path
        assert logs[f"{path}/sparsity"] == 0.5
        assert logs[f"{path}/threshold"] == pytest.approx(magnitudes[magnitudes > 0].min())


def test_pruning_summaries_write_tensorboard_logs(tmp_path: Path) -> None:
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(tfmot.TfmotError, match="pip install"):
            sparsity.PruningSummaries(log_dir=str(tmp_path))
        pytest.skip("TensorBoard logs need the tensorboard package, which is not installed")
    model = sparsity.prune_low_magnitude(dense_model(), pruning_schedule=every_step(0.5))
    summaries = sparsity.PruningSummaries(log_dir=str(tmp_path))
    train(model, epochs=2, callbacks=[sparsity.UpdatePruningStep(), summaries])
    assert list((tmp_path / "metrics").iterdir())


def xnnpack_model(padding: int = 1) -> keras.Model:
    x = keras.Input((16, 16, 3))
    y = L.ZeroPadding2D(padding)(x)
    y = L.Conv2D(8, 3, strides=2, padding="valid", name="stem")(y)
    y = L.ReLU()(y)
    y = L.DepthwiseConv2D(3, padding="same", name="dw")(y)
    y = L.Conv2D(16, 1, name="pw")(y)
    y = L.GlobalAveragePooling2D(keepdims=True)(y)
    return keras.Model(x, L.Flatten()(y))


def test_prune_for_latency_on_xnnpack_prunes_only_1x1_convolutions() -> None:
    policy = sparsity.PruneForLatencyOnXNNPack()
    pruned = sparsity.prune_low_magnitude(xnnpack_model(), pruning_policy=policy)
    assert [layer.layer.name for layer in wrappers(pruned)] == ["pw"]
    with pytest.raises(tfmot.TfmotError, match="ZeroPadding2D"):
        sparsity.prune_low_magnitude(xnnpack_model(padding=2), pruning_policy=policy)
    x = keras.Input((16, 16, 3))
    y = L.Conv2D(8, 3, strides=2, name="stem")(L.ZeroPadding2D(1)(x))
    y = L.Conv2D(8, 3, padding="same", name="conv3x3")(y)
    unsupported = keras.Model(x, L.GlobalAveragePooling2D(keepdims=True)(y))
    with pytest.raises(tfmot.TfmotError, match="conv3x3"):
        sparsity.prune_low_magnitude(unsupported, pruning_policy=policy)


def test_no_keras_class_is_patched() -> None:
    sparsity.prune_low_magnitude(dense_model())
    for cls in (L.Dense, L.Conv2D, L.Layer, keras.Model, keras.Sequential):
        assert not hasattr(cls, "get_prunable_weights")
