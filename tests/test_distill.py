"""`kgraph.distill`: a pruned student learns its teacher's outputs; the teacher never changes."""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import pytest

import kgraph
from kgraph.distill import DistillationError, Distiller, distill, distillation_loss

L = keras.layers
TF_DATA = "tf.data needs TensorFlow, an optional dependency: pip install 'kgraph[tensorflow]'"


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


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], data.target[order]
    return x[450:], y[450:], x[:450], y[:450]


def build_mlp(logits: bool = False) -> keras.Model:
    x = keras.Input((64,))
    h = L.Dense(64, activation="relu", name="fc1")(x)
    h = L.Dense(64, activation="relu", name="fc2")(h)
    return keras.Model(x, L.Dense(10, None if logits else "softmax", name="out")(h))


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.argmax(keras.ops.convert_to_numpy(model(x, training=False)), axis=-1)


def snapshot(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


@pytest.fixture(scope="module")
def setting():
    """A trained digits MLP (the teacher) and the data."""
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = digits()
    teacher = build_mlp()
    teacher.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    teacher.fit(x_train, y_train, epochs=15, batch_size=64, verbose=0)
    return teacher, x_train, y_train, x_test, y_test


def pruned(teacher: keras.Model) -> keras.Model:
    return kgraph.prune(teacher, 0.85, "random", seed=3)


def test_distillation_without_labels_raises_agreement_and_accuracy(setting) -> None:
    teacher, x_train, _, x_test, y_test = setting
    before_weights = snapshot(teacher)
    student = pruned(teacher)
    wanted = predict(teacher, x_test)
    agreement = np.mean(predict(student, x_test) == wanted)
    accuracy = np.mean(predict(student, x_test) == y_test)
    keras.utils.set_random_seed(1)
    result = distill(student, teacher, x_train, epochs=6, temperature=2.0)
    assert result is student  # trained in place
    new_agreement = np.mean(predict(student, x_test) == wanted)
    new_accuracy = np.mean(predict(student, x_test) == y_test)
    assert np.mean(wanted == y_test) > 0.9
    assert new_agreement > agreement + 0.2, (agreement, new_agreement)
    assert new_accuracy > accuracy + 0.2, (accuracy, new_accuracy)
    for old, new in zip(before_weights, snapshot(teacher)):
        np.testing.assert_array_equal(old, new)
    assert teacher.trainable and all(layer.trainable for layer in teacher.layers)


def test_labels_and_datasets(setting) -> None:
    tf = pytest.importorskip("tensorflow", reason=TF_DATA)

    teacher, x_train, y_train, *_ = setting
    before_weights = snapshot(teacher)
    one_hot = np.eye(10, dtype="float32")[y_train]
    forms = {
        "(x, y)": (x_train, y_train),
        "(x, one-hot y)": (x_train, one_hot),
        "tf.data": tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(64),
        "list": [(x_train[i : i + 64], y_train[i : i + 64]) for i in range(0, 640, 64)],
        "generator": (x_train[i : i + 64] for i in range(0, 640, 64)),
    }
    for form, data in forms.items():
        student = pruned(teacher)
        start = snapshot(student)
        distill(student, teacher, data, epochs=2, alpha=0.5)
        moved = [not np.array_equal(a, b) for a, b in zip(start, snapshot(student))]
        assert all(moved), form
    for old, new in zip(before_weights, snapshot(teacher)):
        np.testing.assert_array_equal(old, new)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's autograd only")
def test_torch_teacher_gets_no_gradients(setting) -> None:
    teacher, x_train, *_ = setting

    def grads() -> list:
        return [None if w.value.grad is None else w.value.grad.clone() for w in teacher.weights]

    before = grads()
    distill(pruned(teacher), teacher, x_train[:128], epochs=1)
    for old, new in zip(before, grads()):
        assert (old is None and new is None) or bool((old == new).all())


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_loss_is_the_temperature_scaled_kl_divergence() -> None:
    rng = np.random.default_rng(0)
    t_logits, s_logits = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    temperature = 3.0
    p, q = softmax(t_logits / temperature), softmax(s_logits / temperature)
    expected = temperature**2 * np.sum(p * (np.log(p) - np.log(q)), axis=-1)
    from_logits = distillation_loss(
        t_logits.astype("float32"), s_logits.astype("float32"), temperature, from_logits=True
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(from_logits), expected, rtol=1e-4)
    # probabilities: their log is used as logits, which gives the same softened outputs
    probs = distillation_loss(
        softmax(t_logits).astype("float32"), softmax(s_logits).astype("float32"), temperature
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probs), expected, rtol=1e-4)
    same = distillation_loss(softmax(t_logits), softmax(t_logits), temperature)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(same), 0.0, atol=1e-5)


def test_compute_loss_mixes_the_label_loss_by_alpha(setting) -> None:
    teacher, x_train, y_train, *_ = setting
    student = pruned(teacher)
    x, y = x_train[:32], y_train[:32]
    distiller = Distiller(student, teacher, temperature=2.0, alpha=0.3)
    s = keras.ops.convert_to_numpy(student(x, training=False)).astype(np.float64)
    t = keras.ops.convert_to_numpy(teacher(x, training=False)).astype(np.float64)
    # probabilities are clipped to [1e-7, 1 - 1e-7] before their log, as Keras' losses do
    s, t = np.clip(s, 1e-7, 1 - 1e-7), np.clip(t, 1e-7, 1 - 1e-7)
    p, q = softmax(np.log(t) / 2.0), softmax(np.log(s) / 2.0)
    soft = 4.0 * np.sum(p * (np.log(p) - np.log(q)), axis=-1)
    hard = -np.log(s[np.arange(32), y])
    expected = np.mean(0.3 * hard + 0.7 * soft)
    got = distiller.compute_loss(x, y, student(x, training=False), training=False)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(got)), expected, rtol=1e-4)
    unlabelled = distiller.compute_loss(x, None, student(x, training=False), training=False)
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(unlabelled)), np.mean(soft), rtol=1e-4
    )


def test_logits_models(setting) -> None:
    _, x_train, y_train, x_test, _ = setting
    keras.utils.set_random_seed(0)
    teacher = build_mlp(logits=True)
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0)
    student = pruned(teacher)
    wanted = predict(teacher, x_test)
    agreement = np.mean(predict(student, x_test) == wanted)
    with pytest.raises(DistillationError, match="from_logits=True"):
        distill(student, teacher, x_train)
    distill(student, teacher, x_train, epochs=4, from_logits=True)
    assert np.mean(predict(student, x_test) == wanted) > agreement + 0.1


def test_errors_name_the_problem(setting) -> None:
    teacher, x_train, *_ = setting
    student = pruned(teacher)
    x = keras.Input((64,))
    other = keras.Model(x, L.Dense(3, activation="softmax")(x))
    cases = [
        (dict(student=teacher, teacher=teacher, data=x_train), "same model"),
        (dict(student=other, teacher=teacher, data=x_train), "shape"),
        (dict(student=student, teacher="teacher", data=x_train), "keras.Model"),
        (dict(student=student, teacher=teacher, data=None), "no data"),
        (dict(student=student, teacher=teacher, data=[]), "no batches"),
        (dict(student=student, teacher=teacher, data=x_train, epochs=0), "epochs"),
        (dict(student=student, teacher=teacher, data=x_train, temperature=0), "temperature"),
        (dict(student=student, teacher=teacher, data=x_train, alpha=1.5), "alpha"),
        (dict(student=student, teacher=teacher, data=x_train, batch_size=0), "batch_size"),
    ]
    for kwargs, message in cases:
        with pytest.raises(DistillationError, match=message):
            distill(**kwargs)
    assert issubclass(DistillationError, kgraph.KGraphError)
