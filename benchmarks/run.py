"""Benchmarks: surgery time against Keras' own floor, memory, scaling, and inference speedups.

    python benchmarks/run.py [--models ResNet50 VGG16 ...] [--out results.json]
                             [--markdown docs/benchmarks.md] [--scaling 100 200 400 800 1600]

For every model (keras.applications, weights=None), in one process:

- surgery: time of `lift`, of `apply` (delete 50% of every prunable channel group by
  L1 norm), of `lower`, and in total;
- the Keras floor for the same pruned architecture: `keras.Model.from_config` of the
  pruned model's config, and `keras.models.clone_model` + `set_weights`;
- peak memory (resident set, sampled every millisecond) during surgery above the
  loaded original, next to the size of the original and of the pruned weights;
- params and FLOPs before/after, and CPU inference latency at batch 1 and 32
  (median of repeated runs after warm-up);
- scaling: a chain of N Dense layers with a DeleteChannels on every layer.

Everything is reported as ratios measured in this one run; the targets are checked
and printed, and the script exits non-zero when one is missed (`--no-targets` to
only measure).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import kgraph
from kgraph.passes import DeleteChannels
from kgraph.prune import (
    DeleteGroupChannels,
    plan_pruning,
)

MODELS = [
    "ResNet50",
    "InceptionV3",
    "MobileNetV2",
    "EfficientNetB0",
    "DenseNet121",
    "VGG16",
    "ConvNeXtTiny",
    "NASNetMobile",
]
SCALING = [100, 200, 400, 800, 1600]

TARGETS = {
    "surgery_vs_from_config": 1.5,  # lift + apply + lower <= 1.5x from_config
    "scaling_1600_vs_100": 1.5,  # seconds per layer at N=1600 <= 1.5x at N=100
    "resnet50_speedup_batch32": 2.0,  # pruned ResNet50 >= 2x faster at batch 32
}


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Samples the resident set in a thread; `peak` is the highest value seen."""

    def __init__(self) -> None:
        self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def weights_bytes(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def latency(model: keras.Model, batch: int, repeats: int) -> float:
    """Median seconds of one inference call at `batch` (graph-compiled, after warm-up)."""
    shape = [batch, *(d or 224 for d in model.input_shape[1:])]
    x = tf.constant(np.random.default_rng(0).random(shape, dtype=np.float32))
    call = tf.function(lambda inputs: model(inputs, training=False))
    for _ in range(3):
        call(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(call(x))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def surgery(model: keras.Model) -> tuple[keras.Model, dict[str, float]]:
    """lift, apply (50% of every prunable group by L1), lower; timed step by step.

    The lifted graph is released before lowering, as `kgraph.prune` does.
    """
    start = time.perf_counter()
    graph = kgraph.lift(model)
    lifted = time.perf_counter()
    plan = plan_pruning(graph, 0.5, "l1")
    pruned_graph = graph.apply(*(DeleteGroupChannels(g.owners[0], ch) for g, ch in plan))
    applied = time.perf_counter()
    del graph, plan
    pruned = pruned_graph.lower()
    t_lift, t_apply, t_lower = lifted - start, applied - lifted, time.perf_counter() - applied
    return pruned, {
        "lift_s": t_lift,
        "apply_s": t_apply,
        "lower_s": t_lower,
        "surgery_s": t_lift + t_apply + t_lower,
    }


def measure_model(name: str, repeats: int) -> dict[str, Any]:
    keras.backend.clear_session()
    gc.collect()
    model = getattr(keras.applications, name)(weights=None)
    model(np.zeros((1, *(d or 224 for d in model.input_shape[1:])), "float32"))  # warm Keras
    gc.collect()
    baseline = rss()
    with PeakMemory() as memory:
        pruned, times = surgery(model)
    result: dict[str, Any] = {"model": name, **times}
    result["peak_memory_above_original_bytes"] = memory.peak - baseline
    result["original_weights_bytes"] = weights_bytes(model)
    result["pruned_weights_bytes"] = weights_bytes(pruned)

    config = pruned.get_config()
    _, result["from_config_s"] = timed(lambda: keras.Model.from_config(config))
    values = pruned.get_weights()

    def clone() -> None:
        copy = keras.models.clone_model(pruned)
        copy.set_weights(values)

    _, result["clone_set_weights_s"] = timed(clone)
    result["surgery_vs_from_config"] = result["surgery_s"] / result["from_config_s"]
    result["surgery_vs_clone"] = result["surgery_s"] / result["clone_set_weights_s"]

    before, after = kgraph.stats(model), kgraph.stats(pruned)
    result.update(
        params_before=before.params,
        params_after=after.params,
        flops_before=before.flops,
        flops_after=after.flops,
    )
    original_classes = {type(layer) for layer in model._flatten_layers()}
    result["new_layer_classes"] = sorted(
        {type(layer).__name__ for layer in pruned._flatten_layers()}
        - {c.__name__ for c in original_classes}
    )
    for batch in (1, 32):
        result[f"latency_b{batch}_before_s"] = latency(model, batch, repeats)
        result[f"latency_b{batch}_after_s"] = latency(pruned, batch, repeats)
        result[f"speedup_b{batch}"] = (
            result[f"latency_b{batch}_before_s"] / result[f"latency_b{batch}_after_s"]
        )
    return result


def measure_scaling(depths: list[int]) -> list[dict[str, Any]]:
    """A chain of N Dense(16) layers, a DeleteChannels on every layer."""
    rows = []
    for depth in depths:
        keras.backend.clear_session()
        gc.collect()
        x = keras.Input((16,))
        y = x
        for i in range(depth):
            y = keras.layers.Dense(16, name=f"d{i}")(y)
        model = keras.Model(x, keras.layers.Dense(2, name="head")(y))
        start = time.perf_counter()
        graph = kgraph.lift(model)
        passes = [DeleteChannels(f"d{i}", [i % 16]) for i in range(depth)]
        graph.apply(*passes).lower()
        seconds = time.perf_counter() - start
        rows.append({"layers": depth, "seconds": seconds, "seconds_per_layer": seconds / depth})
    return rows


def markdown(
    results: list[dict[str, Any]], scaling: list[dict[str, Any]], checks: list[str]
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Measured by `python benchmarks/run.py` in one process on this machine (2 CPU cores);",
        "every ratio compares numbers from the same run. Surgery deletes 50% of the channels",
        "of every prunable group (L1 norm). The Keras floor is what Keras itself needs to",
        "build the same pruned architecture.",
        "",
        "| model | lift s | apply s | lower s | surgery s | from_config s | clone+set s | "
        "surgery / from_config | peak MB | orig MB | pruned MB | params | FLOPs | "
        "speedup b1 | speedup b32 |",
        "|" + " --- |" * 15,
    ]
    mb = 1 / 2**20
    for r in results:
        lines.append(
            f"| {r['model']} | {r['lift_s']:.2f} | {r['apply_s']:.2f} | {r['lower_s']:.2f} | "
            f"{r['surgery_s']:.2f} | {r['from_config_s']:.2f} | {r['clone_set_weights_s']:.2f} | "
            f"{r['surgery_vs_from_config']:.2f}x | "
            f"{r['peak_memory_above_original_bytes'] * mb:.0f} | "
            f"{r['original_weights_bytes'] * mb:.0f} | {r['pruned_weights_bytes'] * mb:.0f} | "
            f"{r['params_before'] / 1e6:.1f}M → {r['params_after'] / 1e6:.1f}M | "
            f"{r['flops_before'] / 1e9:.2f}G → {r['flops_after'] / 1e9:.2f}G | "
            f"{r['speedup_b1']:.2f}x | {r['speedup_b32']:.2f}x |"
        )
    lines += ["", "Scaling: a chain of N Dense layers with a DeleteChannels on every layer.", ""]
    lines += ["| N | seconds | ms per layer |", "| --- | --- | --- |"]
    for row in scaling:
        lines.append(
            f"| {row['layers']} | {row['seconds']:.2f} | {row['seconds_per_layer'] * 1e3:.2f} |"
        )
    lines += ["", "Targets:", "", *[f"- {check}" for check in checks], ""]
    return "\n".join(lines)


def check_targets(
    results: list[dict[str, Any]], scaling: list[dict[str, Any]]
) -> tuple[list[str], bool]:
    checks, ok = [], True

    def record(passed: bool, text: str) -> None:
        nonlocal ok
        ok &= passed
        checks.append(f"{'met' if passed else 'MISSED'}: {text}")

    for r in results:
        limit = TARGETS["surgery_vs_from_config"]
        record(
            r["surgery_vs_from_config"] <= limit,
            f"{r['model']}: lift + apply + lower = {r['surgery_vs_from_config']:.2f}x "
            f"from_config (target <= {limit}x)",
        )
        allowed = r["original_weights_bytes"] + 1.5 * r["pruned_weights_bytes"]
        record(
            r["peak_memory_above_original_bytes"] <= allowed,
            f"{r['model']}: peak memory above the original "
            f"{r['peak_memory_above_original_bytes'] / 2**20:.0f} MB <= original + 1.5 x pruned "
            f"weights = {allowed / 2**20:.0f} MB",
        )
        record(
            not r["new_layer_classes"],
            f"{r['model']}: the pruned graph has no layer class the original lacks "
            f"({r['new_layer_classes'] or 'none'})",
        )
        if r["model"] == "ResNet50":
            limit = TARGETS["resnet50_speedup_batch32"]
            record(
                r["speedup_b32"] >= limit,
                f"pruned ResNet50 is {r['speedup_b32']:.2f}x faster at batch 32 "
                f"(target >= {limit}x)",
            )
    if len(scaling) >= 2:
        ratio = scaling[-1]["seconds_per_layer"] / scaling[0]["seconds_per_layer"]
        limit = TARGETS["scaling_1600_vs_100"]
        record(
            ratio <= limit,
            f"seconds per layer at N={scaling[-1]['layers']} is {ratio:.2f}x that at "
            f"N={scaling[0]['layers']} (target <= {limit}x)",
        )
    return checks, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--scaling", nargs="*", type=int, default=SCALING)
    parser.add_argument("--repeats", type=int, default=10, help="latency runs per measurement")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, help="write the Markdown report")
    parser.add_argument("--no-targets", action="store_true", help="measure only")
    args = parser.parse_args(argv)

    results = []
    for name in args.models:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results.append(measure_model(name, args.repeats))
    print("measuring scaling ...", file=sys.stderr, flush=True)
    scaling = measure_scaling(args.scaling) if args.scaling else []
    checks, ok = check_targets(results, scaling)
    report = markdown(results, scaling, checks)
    print(report)
    if args.out:
        args.out.write_text(
            json.dumps({"models": results, "scaling": scaling, "checks": checks}, indent=2)
        )
    if args.markdown:
        args.markdown.write_text(report)
    return 0 if ok or args.no_targets else 1


if __name__ == "__main__":
    sys.exit(main())
