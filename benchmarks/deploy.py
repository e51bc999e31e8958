"""Deployment benchmark: pruned models in LiteRT and ONNX Runtime, next to their FLOPs.

    python benchmarks/deploy.py [--models MobileNetV2 ResNet50 EfficientNetB0 Transformer]
                                [--quick] [--rounds 25] [--calls 3]
                                [--markdown docs/deploy.md] [--out results.json]

For every model (keras.applications with weights=None and BatchNorm statistics set from
one random batch; "Transformer" is a functional encoder built here: 4 blocks of
MultiHeadAttention, LayerNormalization, a ReLU Dense FFN and residual Adds, 128 positions of
width 256, then average pooling and a Dense head), three variants: the original,
`kgraph.prune(model, 0.5)` and `kgraph.prune(model, 0.5, round_to=8)` (for the
Transformer also `heads=0.5`: its hidden size runs through every LayerNormalization,
which `prune` leaves alone, so half of the FFN units and half of the heads go). Each
is exported with `kgraph.export.export` to a float32 .tflite and .onnx file with a
static batch of 1, checked against Keras' own outputs, and timed at batch 1 in LiteRT
(XNNPACK) and ONNX Runtime, with 1 and 2 threads.

Timing: every runner is warmed up first; then in each of `--rounds` rounds every runner
of every model takes its turn (interleaved, so a slow spell of the shared machine hits
all of them alike) for `--calls` calls, each timed alone after `gc.collect()`. The table
shows medians, and the pruned/original ratio of latency next to the ratio of FLOPs
(`kgraph.stats(model).flops`), the limit the speedup could reach.

`--quick` (MobileNetV2 and a 2-block Transformer, 5 rounds of 2 calls) is a smoke test of
about two minutes; a full run takes about 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import kgraph
from kgraph.export import export, load_exported

APPLICATIONS = ("MobileNetV2", "ResNet50", "EfficientNetB0")
MODELS = (*APPLICATIONS, "Transformer")
VARIANTS = (("original", None), ("pruned 50%", None), ("pruned 50%, round_to=8", 8))
RUNTIMES = (("litert", ".tflite"), ("onnxruntime", ".onnx"))
THREADS = (1, 2)
BEGIN, END = "<!-- deploy results: begin -->", "<!-- deploy results: end -->"


def transformer(blocks: int = 4, length: int = 128, width: int = 256) -> keras.Model:
    """A functional transformer encoder (post-norm) with a classification head."""
    x = keras.Input((length, width), name="embeddings")
    h = x
    for i in range(blocks):
        a = keras.layers.MultiHeadAttention(4, width // 4, name=f"mha{i}")(h, h)
        h = keras.layers.LayerNormalization(name=f"ln{i}a")(keras.layers.Add()([h, a]))
        # ReLU: Keras' exact GELU becomes an "Erfc" node in tf2onnx, which ONNX lacks
        f = keras.layers.Dense(4 * width, activation="relu", name=f"ffn{i}a")(h)
        f = keras.layers.Dense(width, name=f"ffn{i}b")(f)
        h = keras.layers.LayerNormalization(name=f"ln{i}b")(keras.layers.Add()([h, f]))
    y = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(x, keras.layers.Dense(10, name="head")(y), name="transformer")


def calibrate_batchnorm(model: keras.Model, x: np.ndarray) -> None:
    """Moving mean and variance of every BatchNorm from one batch (momentum 0 for a call)."""
    layers = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    momenta = [la.momentum for la in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def build(name: str, quick: bool) -> keras.Model:
    keras.utils.set_random_seed(0)
    if name == "Transformer":
        return transformer(blocks=2 if quick else 4)
    model = getattr(keras.applications, name)(weights=None)
    calibrate_batchnorm(model, np.random.default_rng(0).uniform(0, 255, (8, 224, 224, 3)))
    return model


def timed(run: Any, x: np.ndarray) -> tuple[float, float]:
    """Wall-clock and CPU time of the calling thread for one call, after collecting."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.thread_time()
    run(x)
    return time.perf_counter() - wall, time.thread_time() - cpu


def prepare(name: str, quick: bool, work: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Build, prune, export and check the variants of one model; their runners loaded."""
    started = time.perf_counter()
    model = build(name, quick)
    x = np.random.default_rng(1).normal(0, 1, (1, *model.input_shape[1:])).astype("float32")
    if name != "Transformer":
        x = np.random.default_rng(1).uniform(0, 255, (1, *model.input_shape[1:]))
        x = x.astype("float32")
    rows = []
    for variant, round_to in VARIANTS:
        options = {} if round_to is None else {"round_to": round_to}
        if name == "Transformer":  # LayerNorm ties the hidden size: prune FFNs and heads
            options["heads"] = 0.5
        small = model if variant == "original" else kgraph.prune(model, 0.5, **options)
        stats = kgraph.stats(small)
        expected = keras.ops.convert_to_numpy(small(x, training=False))
        row: dict[str, Any] = {
            "model": name,
            "variant": variant,
            "params": stats.params,
            "flops": stats.flops,
            "bytes": {},
            "max_error": {},
            "runners": {},
        }
        for runtime, suffix in RUNTIMES:
            path = export(small, work / f"{name}-{len(rows)}{suffix}", batch_size=1)
            row["bytes"][runtime] = path.stat().st_size
            for threads in THREADS:
                runner = load_exported(path, threads=threads)
                (y,) = runner(x)
                error = float(np.abs(y - expected).max() / max(np.abs(expected).max(), 1e-12))
                row["max_error"][runtime] = error
                row["runners"][f"{runtime}/{threads}"] = runner
        rows.append(row)
    took = time.perf_counter() - started
    sys.stderr.write(f"{name}: built, pruned, exported and checked in {took:.0f}s\n")
    return rows, x


def measure(prepared: list[tuple[list[dict[str, Any]], np.ndarray]], rounds: int, calls: int):
    """Median latency of every runner, all of them taking turns in every round."""
    every = [(row, key, x) for rows, x in prepared for row in rows for key in row["runners"]]
    for row, key, x in every:  # warm up
        for _ in range(3):
            row["runners"][key](x)
    # Keras and TensorFlow hold millions of objects, which made every gc.collect() take
    # half a second: freeze them (the survivors of this point), then collect before each
    # timed call only what the calls themselves leave.
    gc.collect()
    gc.freeze()
    samples: list[list[tuple[float, float]]] = [[] for _ in every]
    started = time.perf_counter()
    for number in range(rounds):
        turns = list(zip(every, samples))
        shift = number * len(turns) // max(rounds, 1)  # each round starts elsewhere
        for (row, key, x), times in turns[shift:] + turns[:shift]:
            times.extend(timed(row["runners"][key], x) for _ in range(calls))
        sys.stderr.write(f"round {number + 1}/{rounds} ({time.perf_counter() - started:.0f}s)\n")
    gc.unfreeze()
    for (row, key, _), times in zip(every, samples):
        row.setdefault("latency_ms", {})[key] = 1e3 * statistics.median(t[0] for t in times)
        row.setdefault("cpu_ms", {})[key] = 1e3 * statistics.median(t[1] for t in times)
        row.setdefault("fastest_ms", {})[key] = 1e3 * min(t[0] for t in times)


def markdown(rows: list[dict[str, Any]], settings: str) -> str:
    """The results table: one row per variant, pruned/original ratios in parentheses."""
    names = {"litert": "LiteRT", "onnxruntime": "ORT"}
    columns = [  # (header, measure, runner)
        *[
            (f"{names[runtime]} {threads}T ms", "latency_ms", f"{runtime}/{threads}")
            for runtime, _ in RUNTIMES
            for threads in THREADS
        ],
        *[(f"{names[runtime]} 1T CPU ms", "cpu_ms", f"{runtime}/1") for runtime, _ in RUNTIMES],
    ]
    header = ["model", "variant", "params", "GFLOPs", "FLOPs ratio", ".tflite MB", ".onnx MB"]
    header += [title for title, _, _ in columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---", "---"] + ["---:"] * (len(header) - 2)) + " |",
    ]
    originals: dict[str, dict[str, Any]] = {}
    for row in rows:
        base = originals.setdefault(row["model"], row)
        pruned = row is not base
        cells = [
            row["model"],
            row["variant"],
            f"{row['params'] / 1e6:.2f}M",
            f"{row['flops'] / 1e9:.3f}",
            f"**{row['flops'] / base['flops']:.2f}**" if pruned else "1",
            f"{row['bytes']['litert'] / 2**20:.1f}",
            f"{row['bytes']['onnxruntime'] / 2**20:.1f}",
        ]
        for _, measure, key in columns:
            now, before = row[measure][key], base[measure][key]
            cells.append(f"{now:.2f} ({now / before:.2f})" if pruned else f"{now:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"\n{settings}. Latency: median wall-clock ms per call at batch 1 with 1 or 2 "
        "threads (T); CPU: median CPU time of the calling thread, which runs a 1-thread "
        "call itself (unlike wall-clock, it does not grow while other processes hold the "
        "cores). In parentheses: pruned/original, to read next to the FLOPs ratio.\n"
    )
    return "\n".join(lines) + "\n" + note


def write_markdown(path: Path, table: str) -> None:
    """Replace the part of `path` between the deploy-results markers, or write the table."""
    block = f"{BEGIN}\n{table}{END}"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = block + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None)
    parser.add_argument("--quick", action="store_true", help="2 models, 5 rounds: a smoke test")
    parser.add_argument("--rounds", type=int, default=None, help="default 25 (quick: 5)")
    parser.add_argument("--calls", type=int, default=None, help="timed calls per turn (3)")
    parser.add_argument("--markdown", type=Path, help="write the table (between markers)")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    models = args.models or (["MobileNetV2", "Transformer"] if args.quick else list(MODELS))
    rounds = args.rounds or (5 if args.quick else 25)
    calls = args.calls or (2 if args.quick else 3)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kgraph-deploy-") as work:
        prepared = [prepare(name, args.quick, Path(work)) for name in models]
        load_before = os.getloadavg()[0]
        measure(prepared, rounds, calls)
        load_after = os.getloadavg()[0]
    rows = [row for rows, _ in prepared for row in rows]
    settings = (
        f"{os.cpu_count()} CPUs ({platform.machine()}); TensorFlow {tf.__version__}, "
        f"ai-edge-litert {version('ai-edge-litert')}, onnxruntime {version('onnxruntime')}, "
        f"tf2onnx {version('tf2onnx')}; {rounds} rounds x {calls} calls, interleaved; "
        f"load average {load_before:.1f} before timing, {load_after:.1f} after"
    )
    table = markdown(rows, settings)
    sys.stdout.write(table)
    worst = max(e for row in rows for e in row["max_error"].values())
    sys.stdout.write(f"largest relative difference from Keras' outputs: {worst:.1e}\n")
    sys.stdout.write(f"done in {time.perf_counter() - started:.0f}s\n")
    if args.markdown:
        write_markdown(args.markdown, table)
    if args.out:
        keep = [{k: v for k, v in row.items() if k != "runners"} for row in rows]
        args.out.write_text(json.dumps({"settings": settings, "rows": keep}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
