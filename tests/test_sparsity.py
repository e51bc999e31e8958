"""Weight sparsity: the Sparsify pass, sparsity reports, gradual pruning, iterative pruning."""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import pytest
from helpers import assert_same_outputs, fingerprint, sample_inputs, weights_of

import kgraph
from kgraph.passes import Sparsify

L = keras.layers


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Torch's thread pool on 2 shared cores makes tiny steps 50x slower; restored after."""
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_cnn(scale_head: float = 1.0) -> keras.Model:
    x = keras.Input((8, 8, 4), name="image")
    y = L.Conv2D(8, 3, activation="relu", name="conv")(x)
    y = L.Flatten(name="flatten")(y)
    y = L.Dense(16, activation="relu", name="hidden")(y)
    model = keras.Model(x, L.Dense(4, name="head")(y), name="cnn")
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([kernel * scale_head, bias])
    return model


def sparsify(model: keras.Model, *args, **kwargs) -> keras.Model:
    return kgraph.lift(model).apply(Sparsify(*args, **kwargs), verify=True).lower()


def test_magnitude_per_layer_zeroes_the_smallest_weights_of_every_kernel() -> None:
    model = small_cnn()
    before = fingerprint(model)
    sparse = sparsify(model, 0.75)
    for name in ("conv", "hidden", "head"):
        kernel, bias = weights_of(model, name)
        new_kernel, new_bias = weights_of(sparse, name)
        assert new_kernel.shape == kernel.shape
        assert np.count_nonzero(new_kernel == 0) == round(0.75 * kernel.size)
        kept = np.abs(kernel[new_kernel != 0])
        dropped = np.abs(kernel[new_kernel == 0])
        assert kept.min() >= dropped.max()
        np.testing.assert_array_equal(new_kernel[new_kernel != 0], kernel[new_kernel != 0])
        np.testing.assert_array_equal(new_bias, bias)  # biases are never touched
    assert fingerprint(model) == before
    report = kgraph.sparsity(sparse)
    assert report["conv"].fraction == pytest.approx(0.75, abs=1 / 288)
    assert report.total == pytest.approx(0.75, abs=1e-3)


def test_global_scope_ranks_all_kernels_together() -> None:
    model = small_cnn(scale_head=0.001)  # a head with tiny weights
    per_layer = kgraph.sparsity(sparsify(model, 0.3))
    global_ = kgraph.sparsity(sparsify(model, 0.3, scope="global"))
    assert per_layer["head"].fraction == pytest.approx(0.3, abs=0.02)
    assert global_["head"].fraction == 1.0  # all its weights are among the smallest
    assert global_.total == pytest.approx(0.3, abs=1e-3)
    assert global_["conv"].fraction < per_layer["conv"].fraction


def test_random_criterion_is_reproducible_with_a_seed() -> None:
    model = small_cnn()
    a, b, c = (
        weights_of(sparsify(model, 0.5, criterion="random", seed=s), "hidden")[0] for s in (7, 7, 8)
    )
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a == 0, c == 0)
    assert np.count_nonzero(a == 0) == a.size // 2


def test_blocks_are_zeroed_whole() -> None:
    model = small_cnn()
    kernel = weights_of(sparsify(model, 0.5, layers=["hidden"], block=(4, 4)), "hidden")[0]
    blocks = kernel.reshape(kernel.shape[0] // 4, 4, 4, 4).transpose(0, 2, 1, 3)
    zero_blocks = (blocks == 0).all(axis=(2, 3))
    untouched = (blocks != 0).all(axis=(2, 3))
    assert (zero_blocks | untouched).all()
    assert zero_blocks.mean() == pytest.approx(0.5)
    report = kgraph.sparsity(sparsify(model, 0.5, layers=["hidden"]))
    assert report["hidden"].fraction == pytest.approx(0.5) and report["conv"].fraction == 0


def test_two_of_four_pattern_holds_in_every_group() -> None:
    model = small_cnn()
    sparse = sparsify(model, n_m=(2, 4))
    for name in ("conv", "hidden", "head"):
        kernel = weights_of(model, name)[0]
        new = weights_of(sparse, name)[0]
        groups = new.reshape(-1, new.shape[-1]).T.reshape(new.shape[-1], -1, 4)
        assert ((groups == 0).sum(axis=-1) == 2).all()
        original = np.abs(kernel.reshape(-1, kernel.shape[-1]).T.reshape(kernel.shape[-1], -1, 4))
        kept = np.sort(np.abs(groups), axis=-1)[..., 2:]
        np.testing.assert_allclose(kept, np.sort(original, axis=-1)[..., 2:])
    assert kgraph.sparsity(sparse).total == 0.5


def test_every_kind_of_kernel_is_sparsified() -> None:
    tokens = keras.Input((6,), dtype="int32")
    y = L.Embedding(20, 8, name="emb")(tokens)
    y = L.MultiHeadAttention(2, 4, name="mha")(y, y)
    y = L.LSTM(4, name="lstm")(y)
    model = keras.Model(tokens, L.Dense(2, name="head")(y))
    report = kgraph.sparsity(sparsify(model, 0.5))
    assert {layer.name for layer in report.layers} == {"emb", "mha", "lstm", "head"}
    assert all(layer.fraction == pytest.approx(0.5, abs=0.02) for layer in report.layers)
    x = keras.Input((6, 6, 4))
    y = L.DepthwiseConv2D(3, name="dw")(x)
    y = L.SeparableConv2D(4, 3, name="sep")(y)
    report = kgraph.sparsity(sparsify(keras.Model(x, y), 0.5))
    assert [layer.name for layer in report.layers] == ["dw", "sep"]


def test_a_sparse_model_saves_reloads_and_stays_sparse(tmp_path) -> None:
    model = small_cnn()
    sparse = sparsify(model, 0.6)
    sparse.save(tmp_path / "sparse.keras")
    loaded = keras.saving.load_model(tmp_path / "sparse.keras")
    assert kgraph.sparsity(loaded).total == pytest.approx(kgraph.sparsity(sparse).total)
    assert_same_outputs(sparse, loaded, sample_inputs(model), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparsity": 1.0}, r"sparsity must be a number in \[0, 1\)"),
        ({"sparsity": 0.5, "criterion": "taylor"}, r"criterion must be 'magnitude' or 'random'"),
        ({"sparsity": 0.5, "scope": "model"}, r"scope must be 'layer' or 'global'"),
        ({"n_m": (4, 2)}, r"n_m must be \(N, M\) with 0 < N < M"),
        ({"sparsity": 0.3, "n_m": (2, 4)}, r"means sparsity 0.5, not 0.3"),
        ({"sparsity": 0.5, "block": (0, 2)}, r"block must be two positive integers"),
    ],
)
def test_bad_sparsity_options(kwargs, message) -> None:
    with pytest.raises(kgraph.SparsityError, match=message):
        Sparsify(**kwargs)


def test_n_m_needs_whole_groups() -> None:
    x = keras.Input((6,))
    model = keras.Model(x, L.Dense(3, name="d")(x))
    with pytest.raises(kgraph.SparsityError, match=r"d/kernel has 6 inputs .* multiple of 4"):
        sparsify(model, n_m=(2, 4))


# ---------------------------------------------------------------------- schedules


def test_schedules_mean_what_tfmot_means() -> None:
    constant = kgraph.ConstantSparsity(10, 50, 20, target_sparsity=0.6)
    assert [s for s in range(80) if constant.should_prune(s)] == [10, 30, 50]
    assert constant.sparsity(1000) == 0.6
    decay = kgraph.PolynomialDecay(0, 100, 10, initial_sparsity=0.2, final_sparsity=0.8, power=3)
    assert decay.sparsity(0) == pytest.approx(0.2)
    assert decay.sparsity(50) == pytest.approx(0.8 + (0.2 - 0.8) * 0.5**3)
    assert decay.sparsity(100) == decay.sparsity(500) == pytest.approx(0.8)
    assert decay.should_prune(100) and not decay.should_prune(110)
    with pytest.raises(kgraph.SparsityError, match="end_step > begin_step"):
        kgraph.PolynomialDecay(5, 5, initial_sparsity=0.0, final_sparsity=0.5)


def digits() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], data.target[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def digits_cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 1))
    y = L.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(x)
    y = L.MaxPooling2D(name="pool")(y)
    y = L.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(y)
    y = L.Flatten(name="flatten")(y)
    y = L.Dense(64, activation="relu", name="fc")(y)
    model = keras.Model(x, L.Dense(10, activation="softmax", name="out")(y))
    model.compile(
        keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def glorot_from_numpy(model: keras.Model, seed: int = 0) -> keras.Model:
    """`model` with Glorot-uniform kernels and zero biases drawn by numpy, not by the
    backend's random stream: the same start on TensorFlow, JAX and PyTorch."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.get_weights():
        if weight.ndim < 2:
            values.append(np.zeros_like(weight))
            continue
        receptive = int(np.prod(weight.shape[:-2]))
        fan_in, fan_out = receptive * weight.shape[-2], receptive * weight.shape[-1]
        limit = np.sqrt(6 / (fan_in + fan_out))
        values.append(rng.uniform(-limit, limit, weight.shape).astype(weight.dtype))
    model.set_weights(values)
    return model


def test_gradual_polynomial_decay_reaches_eighty_percent_and_keeps_accuracy() -> None:
    # The same numpy start and no shuffling: both runs, and the margin, do not depend on
    # the backend's random numbers (one seed of those can cost a few test images).
    x_train, y_train, x_test, y_test = digits()
    dense = glorot_from_numpy(digits_cnn())
    dense.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0, shuffle=False)
    dense_accuracy = dense.evaluate(x_test, y_test, verbose=0)[1]

    sparse = glorot_from_numpy(digits_cnn())
    steps = 12 * int(np.ceil(len(x_train) / 32))
    schedule = kgraph.PolynomialDecay(
        0, int(steps * 0.6), 10, initial_sparsity=0.0, final_sparsity=0.8
    )
    callback = kgraph.GradualPruning(schedule)
    sparse.fit(
        x_train, y_train, epochs=12, batch_size=32, verbose=0, callbacks=[callback], shuffle=False
    )
    sparse_accuracy = sparse.evaluate(x_test, y_test, verbose=0)[1]

    report = kgraph.sparsity(sparse)
    assert report.total == pytest.approx(0.8, abs=0.01)
    for layer in report.layers:
        assert layer.fraction == pytest.approx(0.8, abs=0.01)
    assert sparse_accuracy >= dense_accuracy - 0.02
    # a plain model, nothing to strip: the same layers as the dense one
    assert [type(layer) for layer in sparse.layers] == [type(layer) for layer in dense.layers]
    print(f"dense accuracy {dense_accuracy:.3f}, 80% sparse {sparse_accuracy:.3f}")


def test_pruned_weights_stay_zero_between_pruning_steps() -> None:
    x_train, y_train, _, _ = digits()
    model = digits_cnn()
    schedule = kgraph.ConstantSparsity(0, -1, 1000, target_sparsity=0.5)  # masks set at step 0
    model.fit(
        x_train[:320], y_train[:320], epochs=2, batch_size=32, verbose=0,
        callbacks=[kgraph.GradualPruning(schedule, layers=["fc"], n_m=None)],
    )  # fmt: skip
    report = kgraph.sparsity(model)
    assert report["fc"].fraction == pytest.approx(0.5, abs=1e-3)  # 20 steps of Adam later
    assert report["conv1"].fraction == 0.0


def test_iterative_prune_fine_tunes_between_rounds() -> None:
    x_train, y_train, _, _ = digits()
    model = digits_cnn()
    model.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    rounds = []

    def fit(pruned: keras.Model, step: int) -> None:
        rounds.append((step, pruned.get_layer("fc").units))
        pruned.compile("adam", "sparse_categorical_crossentropy")
        pruned.fit(x_train[:256], y_train[:256], epochs=1, verbose=0)

    final = kgraph.iterative_prune(model, steps=2, ratio=0.75, fit=fit)
    assert [step for step, _ in rounds] == [0, 1]
    assert rounds[0][1] == 32 and rounds[1][1] == 16  # half, then half of that
    assert final.get_layer("conv2").filters == 8
