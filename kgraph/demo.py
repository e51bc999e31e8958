"""`kgraph demo`: train a small CNN on handwritten digits, prune it two ways, compare.

Nothing is downloaded: the 1,797 8x8 images of handwritten digits ship inside
scikit-learn (`pip install -e ".[demo]"`). The demo trains a LeNet-style CNN,
prunes half of its channels by APoZ (Hu et al. 2016, the criterion of
kerassurgeon's examples) and by L1 norm (Li et al. 2017), fine-tunes each
briefly, and prints test accuracy, parameters, FLOPs and CPU latency per image
before and after. Into the output folder go the three models (`.keras`) and the
graph dump of the APoZ-pruned model (pruned channels highlighted).

Example:
    $ kgraph demo --out kgraph-demo
    >>> from kgraph.demo import run
    >>> variants = run("kgraph-demo", epochs=2, finetune_epochs=1)
    >>> [v.name for v in variants]
    ['original', 'APoZ', 'L1']
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import keras
import numpy as np

import kgraph
from kgraph.cli import CommandError, out
from kgraph.cli import main as cli_main
from kgraph.pruning import prune_graph
from kgraph.stats import Stats, human
from kgraph.tables import table

__all__ = ["Variant", "build_lenet", "digits", "latencies", "main", "run"]

L = keras.layers
INSTALL = 'the demo needs scikit-learn for its data set: pip install -e ".[demo]"'


@attrs.frozen
class Variant:
    """One model of the demo and what was measured on it.

    Attributes:
        accuracy: test accuracy as it came out of training or pruning.
        tuned: test accuracy after fine-tuning (None for the original).
        latency: median seconds of a `predict_on_batch` call on one image.
        batched: median seconds per image of `predict_on_batch` on 256 images.
    """

    name: str
    model: keras.Model
    accuracy: float
    tuned: float | None
    stats: Stats
    latency: float
    batched: float


def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits as (x_train, y_train, x_test, y_test), 25% for test.

    Images are (8, 8, 1) floats in [0, 1]; the split is a seeded shuffle.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise CommandError(INSTALL) from error
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], data.target[order]
    test = len(x) // 4
    return x[test:], y[test:], x[:test], y[:test]


def build_lenet() -> keras.Model:
    """A LeNet-style CNN for 8x8 digits: two conv/pool stages and two Dense layers."""
    x = keras.Input((8, 8, 1), name="image")
    y = L.Conv2D(32, 5, padding="same", activation="relu", name="conv1")(x)
    y = L.MaxPooling2D(name="pool1")(y)
    y = L.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(y)
    y = L.MaxPooling2D(name="pool2")(y)
    y = L.Flatten(name="flatten")(y)
    y = L.Dense(128, activation="relu", name="fc")(y)
    y = L.Dense(10, activation="softmax", name="digit")(y)
    return keras.Model(x, y, name="lenet")


def _train(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    keras.utils.set_random_seed(seed)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    predictions = keras.ops.convert_to_numpy(model(x, training=False))  # eager: nothing to trace
    return float(np.mean(np.argmax(predictions, axis=-1) == y))


def latencies(models: Sequence[keras.Model], images: np.ndarray, repeats: int) -> list[float]:
    """Median seconds per image of `model.predict_on_batch(images)` for each model.

    After a warm-up, the models take turns, so that what else the machine does at
    the time affects them alike.
    """
    for model in models:
        for _ in range(5):
            model.predict_on_batch(images)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for model, spent in zip(models, times):
            start = time.perf_counter()
            model.predict_on_batch(images)
            spent.append(time.perf_counter() - start)
    return [float(np.median(spent)) / len(images) for spent in times]


def run(
    folder: str | os.PathLike[str] = "kgraph-demo",
    *,
    epochs: int = 20,
    finetune_epochs: int = 3,
    ratio: float = 0.5,
    seed: int = 0,
    repeats: int = 200,
) -> list[Variant]:
    """Train, prune by APoZ and by L1, fine-tune, measure, print the table, write files."""
    started = time.perf_counter()
    x_train, y_train, x_test, y_test = digits(seed)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"cannot create the output folder {str(folder)!r}: {error}") from error
    out(
        f"Handwritten digits from scikit-learn: {len(x_train) + len(x_test):,} 8x8 images, "
        f"{len(x_train):,} to train, {len(x_test):,} to test."
    )

    step = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = build_lenet()
    _train(model, x_train, y_train, epochs, seed)
    accuracy = _accuracy(model, x_test, y_test)
    out(
        f"trained {model.name} ({model.count_params():,} params) for {epochs} epochs: "
        f"test accuracy {accuracy:.1%}  ({time.perf_counter() - step:.1f}s)"
    )
    original = kgraph.lift(model)
    variants = [("original", model, accuracy, None, original)]
    methods = [("APoZ", "apoz", "Hu et al. 2016"), ("L1", "l1", "Li et al. 2017")]
    for label, criterion, source in methods:
        step = time.perf_counter()
        data = x_train if criterion == "apoz" else None
        graph = prune_graph(original, ratio, criterion, data=data)
        pruned = graph.lower()
        before = _accuracy(pruned, x_test, y_test)
        _train(pruned, x_train, y_train, finetune_epochs, seed)
        tuned = _accuracy(pruned, x_test, y_test)
        out(
            f"pruned {ratio:.0%} of the channels by {label} ({source}): test accuracy "
            f"{before:.1%}, after {finetune_epochs} epochs of fine-tuning {tuned:.1%}  "
            f"({time.perf_counter() - step:.1f}s)"
        )
        variants.append((label, pruned, before, tuned, graph))

    step = time.perf_counter()
    models = [model for _, model, *_ in variants]
    single = latencies(models, x_test[:1], repeats)
    batched = latencies(models, x_test[:256], max(repeats // 10, 3))
    results = [
        Variant(name, m, acc, tuned, kgraph.stats(graph), one, many)
        for (name, m, acc, tuned, graph), one, many in zip(variants, single, batched)
    ]
    out(
        f"measured CPU time per image: median of {repeats} predict calls on 1 image and of "
        f"{max(repeats // 10, 3)} on 256 images, models taking turns  "
        f"({time.perf_counter() - step:.1f}s)"
    )
    out()
    out(_table(results, len(x_test)))
    out()

    paths = {"original": "lenet.keras", "APoZ": "lenet-apoz.keras", "L1": "lenet-l1.keras"}
    for result in results:
        result.model.save(folder / paths[result.name])
    dump = variants[1][4].dump(folder / "lenet-apoz.html")
    out(f"wrote {', '.join(str(folder / p) for p in paths.values())}")
    out(f"wrote {dump}: the graph of the APoZ-pruned model, pruned channels highlighted")
    out(f"done in {time.perf_counter() - started:.0f}s. Next, try:")
    out(f"  kgraph inspect {folder / paths['original']}")
    out(f"  kgraph prune {folder / paths['original']} -o {folder / 'lenet-30.keras'} --ratio 0.3")
    return results


def _table(results: Sequence[Variant], tested: int) -> str:
    base = results[0]

    def share(new: float, old: float) -> str:
        return f"{human(new)} ({new / old:.0%})" if new != old else human(new)

    rows = [
        [
            r.name,
            f"{r.accuracy:.1%}",
            "-" if r.tuned is None else f"{r.tuned:.1%}",
            share(r.stats.params, base.stats.params),
            share(r.stats.flops, base.stats.flops),
            f"{r.latency * 1e3:.2f} ms",
            f"{r.batched * 1e6:.1f} µs",
        ]
        for r in results
    ]
    header = ["model", "accuracy", "fine-tuned", "params", "FLOPs", "latency", "per image"]
    notes = [
        f"accuracy: on the {tested} test images, as trained or just after pruning; fine-tuned: "
        "after fine-tuning",
        "FLOPs: multiply-adds per image; latency: CPU, batch of 1; per image: batches of 256",
        "(at batch 1 a model this small mostly measures the framework's per-call overhead)",
    ]
    return "\n".join([table(header, rows), "", *notes])


def main(argv: Sequence[str] | None = None) -> int:
    """`kgraph demo` with `argv` (default: sys.argv[1:]); returns the exit code."""
    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
