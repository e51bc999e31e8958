"""End-to-end example: build a CNN, prune half of its conv channels, check, report.

Run with `python -m kgraph.examples.quickstart`. Nothing is downloaded: the model
is trained for a few steps on synthetic data (bright vs dark blobs) so that
its weights are not just initial values.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import kgraph
from kgraph.passes import DeleteChannels

L = keras.layers


def build_model() -> keras.Model:
    x = keras.Input((16, 16, 1), name="image")
    y = L.Conv2D(16, 3, activation="relu", name="conv1")(x)
    y = L.BatchNormalization(name="bn1")(y)
    y = L.MaxPooling2D(name="pool1")(y)
    y = L.Conv2D(32, 3, activation="relu", name="conv2")(y)
    y = L.MaxPooling2D(name="pool2")(y)
    y = L.Flatten(name="flatten")(y)
    y = L.Dense(32, activation="relu", name="fc")(y)
    y = L.Dense(2, activation="softmax", name="probs")(y)
    return keras.Model(x, y, name="blobs_cnn")


def synthetic_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    images = rng.normal(0.0, 0.3, (n, 16, 16, 1)).astype("float32")
    images[labels == 1, 4:12, 4:12, :] += 1.0
    return images, labels


def weakest(layer: keras.layers.Layer, fraction: float) -> list[int]:
    """The channels with the smallest L1 norm of their kernel (a classic criterion)."""
    kernel = layer.get_weights()[0]
    norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
    return sorted(np.argsort(norms)[: int(len(norms) * fraction)].tolist())


def main() -> None:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x_train, y_train = synthetic_data(512, rng)
    x_test, y_test = synthetic_data(256, rng)

    model = build_model()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)

    # Delete the weakest half of the channels of both convolutions and of the
    # hidden Dense layer, in one pass pipeline, lowered once.
    jobs = {name: weakest(model.get_layer(name), 0.5) for name in ("conv1", "conv2", "fc")}
    graph = kgraph.lift(model)
    pruned_graph = graph.apply(*(DeleteChannels(name, ch) for name, ch in jobs.items()))
    pruned = pruned_graph.lower()

    print("The IR after pruning (one line per layer call):")
    print(pruned_graph)
    print()
    for name, channels in jobs.items():
        print(f"deleted {len(channels):2d} channels of {name}: {channels}")
    print(f"parameters: {model.count_params():,} -> {pruned.count_params():,}")

    pruned.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    _, pruned_accuracy = pruned.evaluate(x_test, y_test, verbose=0)
    pruned.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    _, tuned_accuracy = pruned.evaluate(x_test, y_test, verbose=0)
    print(
        f"accuracy: original {accuracy:.3f}, pruned {pruned_accuracy:.3f}, "
        f"pruned + 1 epoch fine-tuning {tuned_accuracy:.3f}"
    )

    # The check kgraph's tests use: channels that are exactly zero can be deleted
    # without changing the outputs at all.
    dead = keras.models.clone_model(model)
    dead.set_weights(model.get_weights())
    conv = dead.get_layer("conv2")
    kernel, bias = conv.get_weights()
    kernel[..., jobs["conv2"]] = 0
    bias[jobs["conv2"]] = 0
    conv.set_weights([kernel, bias])
    without_dead = kgraph.lift(dead).apply(DeleteChannels("conv2", jobs["conv2"])).lower()
    difference = np.abs(dead.predict(x_test, verbose=0) - without_dead.predict(x_test, verbose=0))
    print(f"deleting zeroed channels changes the outputs by at most {difference.max():.2e}")

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "pruned.keras")
        pruned.save(path)
        reloaded = keras.saving.load_model(path)
        same = np.allclose(
            reloaded.predict(x_test[:8], verbose=0), pruned.predict(x_test[:8], verbose=0)
        )
        print(f"saved and reloaded {os.path.basename(path)}: predictions identical = {same}")


if __name__ == "__main__":
    main()
