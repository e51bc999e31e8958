"""Quality benchmark: accuracy after pruning, after BatchNorm recalibration, after fine-tuning.

    python benchmarks/quality.py [--quick] [--models lenet resnet transformer]
                                 [--cache DIR] [--out results.json] [--markdown docs/accuracy.md]

Measures, does not time. Three small models are trained (seeded; weights cached in
`--cache`, default ~/.cache/kgraph/quality, outside the repository) on data that
ships with scikit-learn, so nothing is downloaded:

- `lenet`: kgraph's demo CNN (two conv/pool stages, two Dense layers, no BatchNorm) on
  the 8x8 handwritten digits;
- `resnet`: a small ResNet (a stem and 5 residual blocks, 16-32-64 channels, every
  convolution followed by BatchNorm) on the digits upsampled to 16x16;
- `transformer`: 2 transformer blocks (MultiHeadAttention, 4 heads, width 32, FFN 64,
  post-LayerNorm) reading each 8x8 digit as a sequence of 8 tokens: a token is one
  image row (8 pixels) followed by a one-hot of its position (8 values), which stands
  in for a position embedding and keeps the model plain Keras layers.

Each is pruned at 10/25/50% with every criterion (`l1`, `l2`, `bn_scale`, `apoz`,
`taylor`, and `random` with 3 seeds, averaged), in local and global scope. For every
pruned model: test accuracy right after pruning, after `kgraph.recalibrate` on 512
training images, and then after a fixed short fine-tune from the recalibrated model:
plain (`fit` on the labels) and distilled (`kgraph.distill`, the original as teacher),
with the same optimizer, epochs and seed; and its params and FLOPs (`kgraph.stats`).
The digits are split 75/25 with a seeded shuffle (1,348 to train, 449 to test).

`--quick` prunes at 25% only, local scope, one random seed. `--markdown FILE`
replaces the part of FILE between the `quality results` markers. Run it on the
TensorFlow backend (the `taylor` criterion needs it today).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import kgraph
from kgraph.calibrate import recalibrate
from kgraph.distill import distill
from kgraph.stats import human

L = keras.layers

CRITERIA = ["l1", "l2", "bn_scale", "apoz", "taylor", "random"]
RATIOS = [0.1, 0.25, 0.5]
SCOPES = ["local", "global"]
SEEDS = [0, 1, 2]
CALIBRATION = 512  # training images for recalibration and the data-driven criteria
FINETUNE = {"epochs": 2, "learning_rate": 1e-3, "batch_size": 32}
# fit without XLA: compiling every pruned variant with XLA costs more than the 2 epochs
DISTILL = {"temperature": 4.0, "alpha": 0.1}
STEPS = [
    "pruned",
    "recalibrated",
    "fine_tuned",
    "fine_tuned_recalibrated",
    "distilled",
    "distilled_recalibrated",
]
VERSION = 1  # bump when a model or its training changes, to retrain the cache
BEGIN = "<!-- quality results: begin -->"
END = "<!-- quality results: end -->"


# ---------------------------------------------------------------------------- data


def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as (8, 8, 1) floats in [0, 1]; a seeded 75/25 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], data.target[order]
    test = len(x) // 4
    return x[test:], y[test:], x[:test], y[:test]


def upsampled(x: np.ndarray) -> np.ndarray:
    """8x8 images as 16x16 (each pixel repeated 2x2)."""
    return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)


def tokens(x: np.ndarray) -> np.ndarray:
    """8x8 images as 8 tokens: each row's 8 pixels, then a one-hot of the row's position."""
    rows = x[..., 0]
    position = np.broadcast_to(np.eye(8, dtype="float32"), rows.shape)
    return np.concatenate([rows, position], axis=-1)


# ---------------------------------------------------------------------------- models


def build_lenet() -> keras.Model:
    """kgraph's demo CNN for 8x8 digits (no BatchNorm)."""
    from kgraph.demo import build_lenet as demo_lenet

    return demo_lenet()


def _residual(x: Any, filters: int, stride: int, name: str) -> Any:
    y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_c1")(x)
    y = L.BatchNormalization(name=f"{name}_bn1")(y)
    y = L.ReLU(name=f"{name}_r1")(y)
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_c2")(y)
    y = L.BatchNormalization(name=f"{name}_bn2")(y)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = L.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = L.Add(name=f"{name}_add")([y, shortcut])
    return L.ReLU(name=f"{name}_out")(y)


def build_resnet(size: int = 16) -> keras.Model:
    """A small ResNet for digits: a stem and 5 residual blocks (16, 32, 32, 64, 64)."""
    x = keras.Input((size, size, 1), name="image")
    y = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(x)
    y = L.BatchNormalization(name="stem_bn")(y)
    y = L.ReLU(name="stem_relu")(y)
    for i, (filters, stride) in enumerate([(16, 1), (32, 2), (32, 1), (64, 2), (64, 1)]):
        y = _residual(y, filters, stride, f"block{i}")
    y = L.GlobalAveragePooling2D(name="pool")(y)
    return keras.Model(x, L.Dense(10, activation="softmax", name="digit")(y), name="resnet")


def _transformer_block(x: Any, width: int, heads: int, hidden: int, name: str) -> Any:
    a = L.MultiHeadAttention(heads, width // heads, name=f"{name}_mha")(x, x)
    x = L.LayerNormalization(name=f"{name}_ln1")(L.Add(name=f"{name}_add1")([x, a]))
    f = L.Dense(hidden, activation="relu", name=f"{name}_ffn1")(x)
    f = L.Dense(width, name=f"{name}_ffn2")(f)
    return L.LayerNormalization(name=f"{name}_ln2")(L.Add(name=f"{name}_add2")([x, f]))


def build_transformer(width: int = 32, heads: int = 4, hidden: int = 64) -> keras.Model:
    """2 post-LayerNorm transformer blocks over 8 tokens of 16 features, mean-pooled."""
    x = keras.Input((8, 16), name="tokens")
    y = L.Dense(width, name="embed")(x)
    for i in range(2):
        y = _transformer_block(y, width, heads, hidden, f"block{i}")
    y = L.GlobalAveragePooling1D(name="pool")(y)
    return keras.Model(x, L.Dense(10, activation="softmax", name="digit")(y), name="transformer")


class Task:
    """A model, how to build and train it, and its data."""

    def __init__(
        self, name: str, build: Callable[[], keras.Model], inputs: Callable, epochs: int
    ) -> None:
        x_train, self.y_train, x_test, self.y_test = digits()
        self.name, self.build, self.epochs = name, build, epochs
        self.x_train, self.x_test = inputs(x_train), inputs(x_test)


TASKS = {
    "lenet": lambda: Task("lenet", build_lenet, lambda x: x, epochs=20),
    "resnet": lambda: Task("resnet", build_resnet, upsampled, epochs=20),
    "transformer": lambda: Task("transformer", build_transformer, tokens, epochs=30),
}


def trained(task: Task, cache: Path, seed: int = 0) -> keras.Model:
    """`task`'s model trained with `seed`, loaded from `cache` when it was trained before."""
    model = task.build()
    path = cache / f"{task.name}-{keras.backend.backend()}-s{seed}-v{VERSION}.weights.h5"
    if path.exists():
        model.load_weights(path)
        return model
    keras.utils.set_random_seed(seed)
    model = task.build()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(task.x_train, task.y_train, epochs=task.epochs, batch_size=32, verbose=0)
    cache.mkdir(parents=True, exist_ok=True)
    model.save_weights(path)
    return model


# ---------------------------------------------------------------------------- measuring


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Test accuracy, in inference mode."""
    predictions = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.mean(np.argmax(predictions, axis=-1) == y))


def copy(model: keras.Model) -> keras.Model:
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def fine_tune(model: keras.Model, task: Task, seed: int) -> keras.Model:
    """Plain fine-tuning on the labels (a copy of `model`)."""
    keras.utils.set_random_seed(seed)
    model = copy(model)
    optimizer = keras.optimizers.Adam(FINETUNE["learning_rate"])
    model.compile(optimizer, "sparse_categorical_crossentropy", jit_compile=False)
    model.fit(
        task.x_train,
        task.y_train,
        epochs=FINETUNE["epochs"],
        batch_size=FINETUNE["batch_size"],
        verbose=0,
    )
    return model


def distilled(model: keras.Model, teacher: keras.Model, task: Task, seed: int) -> keras.Model:
    """Fine-tuning with the original as teacher (a copy of `model`), same budget."""
    keras.utils.set_random_seed(seed)
    return distill(
        copy(model),
        teacher,
        (task.x_train, task.y_train),
        epochs=FINETUNE["epochs"],
        optimizer=keras.optimizers.Adam(FINETUNE["learning_rate"]),
        batch_size=FINETUNE["batch_size"],
        jit_compile=False,
        **DISTILL,
    )


def measure_one(
    task: Task, model: keras.Model, scope: str, ratio: float, criterion: str, seed: int
) -> dict[str, Any]:
    """One pruned variant of `model`: its size and its accuracy at every step."""
    cal_x, cal_y = task.x_train[:CALIBRATION], task.y_train[:CALIBRATION]
    data: Any = None
    if criterion == "apoz":
        data = cal_x
    elif criterion == "taylor":
        data = (cal_x, cal_y)
    row = {"model": task.name, "scope": scope, "ratio": ratio, "criterion": criterion, "seed": seed}
    try:
        pruned = kgraph.prune(
            model,
            ratio,
            criterion,
            scope=scope,
            data=data,
            loss="sparse_categorical_crossentropy",
            seed=seed,
        )
    except kgraph.PruningError:  # bn_scale on a model without BatchNorm scores nothing
        original = kgraph.stats(model)
        return {**row, "params": original.params, "flops": original.flops, **dict.fromkeys(STEPS)}
    size = kgraph.stats(pruned)
    row.update(params=size.params, flops=size.flops)
    calibrated = recalibrate(pruned, cal_x, batch_size=128)
    tuned = fine_tune(calibrated, task, seed)
    taught = distilled(calibrated, model, task, seed)
    test = (task.x_test, task.y_test)
    return {
        **row,
        "pruned": accuracy(pruned, *test),
        "recalibrated": accuracy(calibrated, *test),
        "fine_tuned": accuracy(tuned, *test),
        "fine_tuned_recalibrated": accuracy(recalibrate(tuned, cal_x, batch_size=128), *test),
        "distilled": accuracy(taught, *test),
        "distilled_recalibrated": accuracy(recalibrate(taught, cal_x, batch_size=128), *test),
    }


def measure(
    task: Task,
    model: keras.Model,
    ratios: Sequence[float],
    scopes: Sequence[str],
    seeds: Sequence[int],
) -> list[dict[str, Any]]:
    rows = []
    for scope in scopes:
        for ratio in ratios:
            for criterion in CRITERIA:
                for seed in seeds if criterion == "random" else seeds[:1]:
                    started = time.perf_counter()
                    row = measure_one(task, model, scope, ratio, criterion, seed)
                    rows.append(row)
                    steps = "  ".join(_percent(row[step]) for step in STEPS)
                    spent = time.perf_counter() - started
                    label = f"{scope:6} {ratio:4.0%} {criterion:8} seed {seed}"
                    print(f"  {label}: {steps}  ({spent:.1f}s)", flush=True)
    return rows


# ---------------------------------------------------------------------------- reporting


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with the random criterion's seeds averaged into one row."""
    keys = ["params", "flops", *STEPS]
    out: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = (row["model"], row["scope"], row["ratio"], row["criterion"])
        out.setdefault(key, {**row, "runs": []})["runs"].append(row)
    for merged in out.values():
        for k in keys:
            values = [r[k] for r in merged["runs"] if r[k] is not None]
            merged[k] = float(np.mean(values)) if values else None
        merged["seeds"] = len(merged.pop("runs"))
    return list(out.values())


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def markdown(results: dict[str, Any]) -> str:
    """Markdown tables: one per model, a row per scope, ratio and criterion."""
    parts = []
    for name, info in results["models"].items():
        parts.append(
            f"**{name}** ({human(info['params'])} params, {human(info['flops'])} FLOPs, "
            f"test accuracy {info['accuracy']:.1%})\n"
        )
        header = "| scope | ratio | criterion | params | FLOPs | pruned | recalibrated "
        header += "| fine-tuned | + recalibrated | distilled | + recalibrated |"
        lines = [header, "|" + " --- |" * 11]
        for row in summary([r for r in results["rows"] if r["model"] == name]):
            marker = f" (mean of {row['seeds']})" if row["seeds"] > 1 else ""
            if row["params"] == info["params"]:  # nothing pruned: nothing to measure
                marker, row = " (nothing pruned)", {**row, **dict.fromkeys(STEPS)}
            lines.append(
                f"| {row['scope']} | {row['ratio']:.0%} | {row['criterion']}{marker} "
                f"| {row['params'] / info['params']:.0%} | {row['flops'] / info['flops']:.0%} "
                + "".join(f"| {_percent(row[step])} " for step in STEPS)
                + "|"
            )
        parts.append("\n".join(lines) + "\n")
    settings = (
        f"Test accuracy on {results['tested']} images. Fine-tuned and distilled: "
        f"{FINETUNE['epochs']} epochs of Adam ({FINETUNE['learning_rate']}), batch "
        f"{FINETUNE['batch_size']}, from the recalibrated model; distilled with temperature "
        f"{DISTILL['temperature']} and alpha {DISTILL['alpha']} (weight of the labels' loss); "
        "+ recalibrated: the column before, its BatchNorm statistics measured again. "
        f"Recalibrated on {CALIBRATION} training images (a no-op without BatchNorm: LeNet "
        "and the transformer, where bn_scale prunes nothing). Params and FLOPs relative to "
        "the original. "
        f"Backend {results['backend']}, {results['minutes']:.1f} minutes."
    )
    return "\n".join([*parts, settings])


def write_markdown(path: Path, text: str) -> None:
    page = path.read_text(encoding="utf-8") if path.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in page or END not in page:
        raise SystemExit(f"{path} has no '{BEGIN}' ... '{END}' markers to replace")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="25%% only, local, one seed")
    parser.add_argument("--models", nargs="+", default=list(TASKS), choices=list(TASKS))
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    parser.add_argument("--cache", type=Path, default=default_cache / "kgraph" / "quality")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, help="replace the results part of this page")
    args = parser.parse_args(argv)
    logging.getLogger("kgraph").setLevel(logging.ERROR)  # no "nothing to recalibrate" notes
    ratios, scopes, seeds = ([0.25], ["local"], [0]) if args.quick else (RATIOS, SCOPES, SEEDS)

    started = time.perf_counter()
    results: dict[str, Any] = {"backend": keras.backend.backend(), "models": {}, "rows": []}
    results["tested"] = len(digits()[3])
    print("accuracy: " + ", ".join(STEPS), flush=True)
    for name in args.models:
        task = TASKS[name]()
        step = time.perf_counter()
        model = trained(task, args.cache)
        size = kgraph.stats(model)
        info = {
            "params": size.params,
            "flops": size.flops,
            "accuracy": accuracy(model, task.x_test, task.y_test),
        }
        results["models"][name] = info
        print(
            f"{name}: {human(info['params'])} params, test accuracy {info['accuracy']:.1%} "
            f"({time.perf_counter() - step:.1f}s)",
            flush=True,
        )
        results["rows"] += measure(task, model, ratios, scopes, seeds)
    results["minutes"] = (time.perf_counter() - started) / 60
    text = markdown(results)
    print()
    print(text)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    if args.markdown:
        write_markdown(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
