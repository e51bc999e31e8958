"""Benchmarks: surgery time against Keras' own floor, memory, scaling, and inference speedups.

    python benchmarks/run.py [--models ResNet50 VGG16 ...] [--out results.json]
                             [--markdown docs/benchmarks.md] [--scaling 100 200 400 800 1600]
                             [--rounds 5] [--repeats 10]

For every model (keras.applications, weights=None), in one process:

- surgery: time of `lift`, of planning (L1 importance of every prunable channel
  group, choosing 50% of its channels), of `apply` (the deletions), of `lower`,
  and in total;
- the Keras floor for the same pruned architecture: `keras.Model.from_config` of the
  pruned model's config, and `keras.models.clone_model` + `set_weights`;
- peak memory (the kernel's resident-set high-water mark, reset before surgery)
  above the loaded original, next to the size of the original and pruned weights;
- how many weights of the lowered model were created by a Keras initialiser (0:
  every value came straight from the IR);
- params and FLOPs before/after, and CPU inference latency at batch 1 and 32
  (median of repeated runs after warm-up), compiled the backend's way: a
  `tf.function` on TensorFlow, `jax.jit` of `stateless_call` on JAX; PyTorch runs
  eagerly under `torch.no_grad()` (what Keras' own `predict` does there; the report
  says which);
- scaling: a chain of N Dense layers with a DeleteChannels on every layer.

Timings: surgery and its floors are measured `--rounds` times, interleaved (surgery,
from_config, clone, surgery, ...), and the fastest of each is reported, so both sides
are measured warm and alike on a shared, noisy machine; process CPU times are
recorded too (less sensitive to other processes). The first round's surgery
time (cold: the backend has not yet seen the pruned shapes) is reported next to it.
Runs with any Keras backend (KERAS_BACKEND=tensorflow, jax or torch).
Memory is measured in the first round.

Everything is reported as ratios measured in this one run; the targets are checked
and printed, and the script exits non-zero when one is missed (`--no-targets` to
only measure).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import kgraph
from kgraph.passes import DeleteChannels
from kgraph.pruning import plan_pruning

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
    "surgery_vs_from_config": 1.5,  # lift + plan + apply + lower <= 1.5x from_config
    "scaling_1600_vs_100": 1.5,  # seconds per layer at N=1600 <= 1.5x at N=100
    "resnet50_speedup_batch32": 2.0,  # pruned ResNet50 >= 2x faster at batch 32
    "memory": 1.5,  # peak above the original <= original + 1.5 x pruned weights
}


def _status_kib(key: str) -> int | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak resident set inside the block: the kernel's exact high-water mark when it can
    be reset, else sampled every millisecond in a thread (which can miss short peaks)."""

    def __init__(self) -> None:
        self.peak = rss()
        self.exact = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> PeakMemory:
        self.exact = _reset_high_water_mark() and _status_kib("VmHWM") is not None
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())
        if self.exact:
            self.peak = max(self.peak, _status_kib("VmHWM") or 0)


@contextlib.contextmanager
def initializer_spy() -> Iterator[list[Any]]:
    """Collects the variables a Keras initialiser fills while the block runs."""
    variable_class = keras.Variable
    original = variable_class._initialize_with_initializer
    filled: list[Any] = []

    def spy(self: Any, initializer: Any) -> Any:
        if isinstance(initializer, keras.initializers.Initializer):
            filled.append(self)
        return original(self, initializer)

    variable_class._initialize_with_initializer = spy
    try:
        yield filled
    finally:
        variable_class._initialize_with_initializer = original


def weights_bytes(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


LATENCY_MODES = {
    "tensorflow": "tf.function (graph-compiled)",
    "jax": "jax.jit of stateless_call (compiled)",
    "torch": "eager under torch.no_grad() (not compiled, as Keras' predict)",
}


def latency_mode() -> str:
    """How `latency` runs the model on the current backend, in words."""
    return LATENCY_MODES.get(keras.backend.backend(), "eager")


def _inference(model: keras.Model) -> Any:
    """A function of one input batch that runs `model` for inference, compiled the
    current backend's way (see `LATENCY_MODES`)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda inputs: model(inputs, training=False))
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]
        step = jax.jit(lambda t, f, x: model.stateless_call(t, f, x, training=False)[0])
        return lambda inputs: step(trainable, frozen, inputs)
    if backend == "torch":
        import torch

        def call(inputs: Any) -> Any:
            with torch.no_grad():
                return model(inputs, training=False)

        return call
    return lambda inputs: model(inputs, training=False)


def latency(model: keras.Model, batch: int, repeats: int) -> float:
    """Median seconds of one inference call at `batch` (after warm-up; `latency_mode`)."""
    shape = [batch, *(d or 224 for d in model.input_shape[1:])]
    x = keras.ops.convert_to_tensor(np.random.default_rng(0).random(shape, dtype=np.float32))
    call = _inference(model)
    for _ in range(3):
        keras.ops.convert_to_numpy(call(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(call(x))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def surgery(model: keras.Model) -> tuple[keras.Model, dict[str, float], int]:
    """lift, plan (50% of every prunable group by L1), apply, lower; timed step by step.

    Also returns how many weights of the new model a Keras initialiser filled.
    The lifted graph is released before lowering, as `kgraph.prune` does.
    """
    cpu, start = time.process_time(), time.perf_counter()
    graph = kgraph.lift(model)
    lifted = time.perf_counter()
    plan = plan_pruning(graph, 0.5, "l1")
    planned = time.perf_counter()
    pruned_graph = graph.apply(*plan.passes())
    applied = time.perf_counter()
    del graph, plan
    with initializer_spy() as filled:
        pruned = pruned_graph.lower()
    lowered = time.perf_counter()
    initialised = {id(v) for v in filled}
    times = {
        "lift_s": lifted - start,
        "plan_s": planned - lifted,
        "apply_s": applied - planned,
        "lower_s": lowered - applied,
        "surgery_s": lowered - start,
        "surgery_cpu_s": time.process_time() - cpu,
    }
    return pruned, times, sum(id(w) in initialised for w in pruned.weights)


def floors(pruned: keras.Model) -> dict[str, float]:
    """What Keras itself needs to build the pruned architecture (with its weights)."""
    config = copy.deepcopy(pruned.get_config())  # from_config consumes its argument
    cpu = time.process_time()
    _, from_config_s = timed(lambda: keras.Model.from_config(config))
    from_config_cpu_s = time.process_time() - cpu
    values = pruned.get_weights()

    def clone() -> None:
        keras.models.clone_model(pruned).set_weights(values)

    _, clone_s = timed(clone)
    return {
        "from_config_s": from_config_s,
        "from_config_cpu_s": from_config_cpu_s,
        "clone_set_weights_s": clone_s,
    }


TIMES = ("lift_s", "plan_s", "apply_s", "lower_s", "surgery_s", "from_config_s")
CPU_TIMES = ("surgery_cpu_s", "from_config_cpu_s")


def measure_model(name: str, repeats: int, rounds: int = 3) -> dict[str, Any]:
    keras.backend.clear_session()
    gc.collect()
    model = getattr(keras.applications, name)(weights=None)
    model(np.zeros((1, *(d or 224 for d in model.input_shape[1:])), "float32"))  # warm Keras
    # Keras imports TensorFlow (when installed) at its first serialization on every
    # backend: a one-time cost of seconds and hundreds of MB, not the surgery's
    model.get_config()
    result: dict[str, Any] = {
        "model": name,
        "backend": keras.backend.backend(),
        "latency_mode": latency_mode(),
        "rounds": [],
    }
    pruned = None
    for index in range(rounds):
        del pruned
        gc.collect()
        if index == 0:
            baseline = rss()
            with PeakMemory() as memory:
                pruned, times, initialised = surgery(model)
            result["peak_memory_above_original_bytes"] = memory.peak - baseline
            result["peak_memory_exact"] = memory.exact
            result["initialised_weights"] = initialised
        else:
            pruned, times, _ = surgery(model)
        result["rounds"].append({**times, **floors(pruned)})
    for key in (*TIMES, *CPU_TIMES, "clone_set_weights_s"):
        result[key] = min(r[key] for r in result["rounds"])
    first = result["rounds"][0]
    result["surgery_first_s"] = first["surgery_s"]
    result["surgery_vs_from_config"] = result["surgery_s"] / result["from_config_s"]
    result["surgery_vs_from_config_cpu"] = result["surgery_cpu_s"] / result["from_config_cpu_s"]
    result["surgery_vs_from_config_first"] = first["surgery_s"] / first["from_config_s"]
    result["surgery_vs_clone"] = result["surgery_s"] / result["clone_set_weights_s"]
    result["original_weights_bytes"] = weights_bytes(model)
    result["pruned_weights_bytes"] = weights_bytes(pruned)

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


def _dense_chain(depth: int) -> keras.Model:
    x = keras.Input((16,))
    y = x
    for i in range(depth):
        y = keras.layers.Dense(16, name=f"d{i}")(y)
    return keras.Model(x, keras.layers.Dense(2, name="head")(y))


def _chain_surgery(model: keras.Model, depth: int) -> float:
    start = time.perf_counter()
    graph = kgraph.lift(model)
    passes = [DeleteChannels(f"d{i}", [i % 16]) for i in range(depth)]
    graph.apply(*passes).lower()
    return time.perf_counter() - start


def measure_scaling(depths: list[int], rounds: int = 2) -> list[dict[str, Any]]:
    """A chain of N Dense(16) layers, a DeleteChannels on every layer (fastest of `rounds`).

    One unrecorded warm-up on the smallest chain first, so the first N does not
    carry the process's one-time costs (which would flatter the ratio).
    """
    # Keras walks a functional graph recursively (a frame or two per layer)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * max(depths)))
    keras.backend.clear_session()
    _chain_surgery(_dense_chain(min(depths)), min(depths))
    rows = []
    for depth in depths:
        keras.backend.clear_session()
        gc.collect()
        model = _dense_chain(depth)
        seconds = min(_chain_surgery(model, depth) for _ in range(rounds))
        rows.append({"layers": depth, "seconds": seconds, "seconds_per_layer": seconds / depth})
    return rows


def markdown(
    results: list[dict[str, Any]], scaling: list[dict[str, Any]], checks: list[str]
) -> str:
    mb = 1 / 2**20
    lines = [
        "| model | lift s | plan s | apply s | lower s | surgery s | from_config s | "
        "surgery / from_config | CPU time: surgery / from_config | "
        "first round: surgery s, / from_config | clone+set s |",
        "|" + " --- |" * 11,
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['lift_s']:.2f} | {r['plan_s']:.2f} | {r['apply_s']:.2f} | "
            f"{r['lower_s']:.2f} | {r['surgery_s']:.2f} | {r['from_config_s']:.2f} | "
            f"**{r['surgery_vs_from_config']:.2f}x** | {r['surgery_vs_from_config_cpu']:.2f}x | "
            f"{r['surgery_first_s']:.2f}, "
            f"{r['surgery_vs_from_config_first']:.2f}x | {r['clone_set_weights_s']:.2f} |"
        )
    lines += [
        "",
        "| model | peak MB above original | original weights MB | pruned weights MB | "
        "allowed MB | initialised weights | params | FLOPs | latency b1 ms | "
        "latency b32 ms | speedup b1 | speedup b32 |",
        "|" + " --- |" * 12,
    ]
    for r in results:
        allowed = r["original_weights_bytes"] + TARGETS["memory"] * r["pruned_weights_bytes"]
        lines.append(
            f"| {r['model']} | {r['peak_memory_above_original_bytes'] * mb:.0f} | "
            f"{r['original_weights_bytes'] * mb:.0f} | {r['pruned_weights_bytes'] * mb:.0f} | "
            f"{allowed * mb:.0f} | {r['initialised_weights']} | "
            f"{r['params_before'] / 1e6:.1f}M → {r['params_after'] / 1e6:.1f}M | "
            f"{r['flops_before'] / 1e9:.2f}G → {r['flops_after'] / 1e9:.2f}G | "
            f"{r['latency_b1_before_s'] * 1e3:.1f} → {r['latency_b1_after_s'] * 1e3:.1f} | "
            f"{r['latency_b32_before_s'] * 1e3:.0f} → {r['latency_b32_after_s'] * 1e3:.0f} | "
            f"{r['speedup_b1']:.2f}x | {r['speedup_b32']:.2f}x |"
        )
    lines += ["", "| N | seconds | ms per layer |", "| --- | --- | --- |"]
    for row in scaling:
        lines.append(
            f"| {row['layers']} | {row['seconds']:.2f} | {row['seconds_per_layer'] * 1e3:.2f} |"
        )
    modes = sorted({(r["backend"], r["latency_mode"]) for r in results})
    lines += ["", *[f"Keras backend {b}; latency: {mode}." for b, mode in modes]]
    lines += ["", *[f"- {check}" for check in checks], ""]
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
            f"{r['model']}: lift + plan + apply + lower = {r['surgery_vs_from_config']:.2f}x "
            f"from_config (target <= {limit}x)",
        )
        record(
            r["initialised_weights"] == 0,
            f"{r['model']}: {r['initialised_weights']} weights of the lowered model were "
            "filled by a Keras initialiser (target 0)",
        )
        allowed = r["original_weights_bytes"] + TARGETS["memory"] * r["pruned_weights_bytes"]
        record(
            r["peak_memory_above_original_bytes"] <= allowed,
            f"{r['model']}: peak memory above the original "
            f"{r['peak_memory_above_original_bytes'] / 2**20:.0f} MB <= original + "
            f"{TARGETS['memory']} x pruned weights = {allowed / 2**20:.0f} MB",
        )
        record(
            not r["new_layer_classes"],
            f"{r['model']}: the pruned graph has no layer class the original lacks "
            f"({', '.join(r['new_layer_classes']) or 'none'})",
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


BEGIN, END = "<!-- benchmark results: begin -->", "<!-- benchmark results: end -->"


def write_report(path: Path, report: str) -> None:
    """Write `report` to `path`, or between the BEGIN/END markers if the file has them."""
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        path.write_text(f"{head}{BEGIN}\n{report}\n{END}{tail}")
    else:
        path.write_text(report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--scaling", nargs="*", type=int, default=SCALING)
    parser.add_argument("--rounds", type=int, default=5, help="surgery/floor rounds per model")
    parser.add_argument("--repeats", type=int, default=10, help="latency runs per measurement")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, help="write the Markdown tables and checks")
    parser.add_argument("--no-targets", action="store_true", help="measure only")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    results = []
    for name in args.models:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results.append(measure_model(name, args.repeats, args.rounds))
    print("measuring scaling ...", file=sys.stderr, flush=True)
    scaling = measure_scaling(args.scaling, min(args.rounds, 2)) if args.scaling else []
    checks, ok = check_targets(results, scaling)
    report = markdown(results, scaling, checks)
    print(report)
    if args.out:
        args.out.write_text(
            json.dumps({"models": results, "scaling": scaling, "checks": checks}, indent=2)
        )
    if args.markdown:
        write_report(args.markdown, report)
    return 0 if ok or args.no_targets else 1


if __name__ == "__main__":
    sys.exit(main())
