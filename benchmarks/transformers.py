"""Transformer surgery at scale: a keras-hub backbone of about a billion parameters.

Builds a MistralBackbone from a random config the size of Llama-3.2-1B (hidden 2048,
16 blocks, 32 query / 8 key-value heads of 64, FFN 8192, vocabulary 32000: 1.1 B
parameters; nothing is downloaded), then measures, in this one process:

- **surgery**: `kgraph.prune(model, 0.5, heads=0.25, uniform=True)` — lift (tracing
  every block), L1 scores of FFN units and heads, the plan, the passes, and the
  pruned `MistralBackbone` built with the sliced weights (`keep_class`);
- **floor**: `MistralBackbone.from_config(pruned config)` — what Keras needs to build
  a model of the pruned size (its initialisers fill every weight);
- **memory**: the peak resident set during surgery above the loaded model, next to
  the pruned model's weights;
- **speed**: forward latency of the original and the pruned model (batch 1 and 4,
  sequence 64), next to their parameter and FLOP ratios.

Usage: `python benchmarks/transformers.py [--quick] [--dtype bfloat16] [--markdown out.md]`
(`--quick`: a 4-block model of hidden 512).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PeakMemory, rss

import kgraph

FULL = dict(
    vocabulary_size=32000,
    num_layers=16,
    num_query_heads=32,
    num_key_value_heads=8,
    hidden_dim=2048,
    intermediate_dim=8192,
    head_dim=64,
)
QUICK = dict(
    vocabulary_size=8000,
    num_layers=4,
    num_query_heads=8,
    num_key_value_heads=2,
    hidden_dim=512,
    intermediate_dim=2048,
    head_dim=64,
)


def timed(function: Any) -> tuple[Any, float]:
    gc.collect()
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def latency(model: keras.Model, batch: int, length: int, repeats: int) -> float:
    inputs = {
        "token_ids": np.ones((batch, length), "int32"),
        "padding_mask": np.ones((batch, length), "int32"),
    }
    model(inputs)  # warm up
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        keras.ops.convert_to_numpy(model(inputs))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def weight_bytes(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    import keras_hub

    config = dict(QUICK if args.quick else FULL, dtype=args.dtype)
    keras.utils.set_random_seed(0)
    print(f"building MistralBackbone {config} ...", flush=True)
    model, built_s = timed(lambda: keras_hub.models.MistralBackbone(**config))
    params = model.count_params()
    print(f"  {params / 1e9:.2f} B parameters, built in {built_s:.1f} s", flush=True)

    loaded = rss()
    phases: dict[str, float] = {}

    def surgery() -> keras.Model:
        start = time.perf_counter()
        graph = kgraph.lift(model)
        phases["lift (tracing every block)"] = time.perf_counter() - start
        plan = kgraph.plan(graph, 0.5, heads=0.25, uniform=True)
        phases["plan (L1 scores)"] = time.perf_counter() - sum(phases.values()) - start
        pruned = plan.apply_to_graph(graph)
        phases["apply (passes)"] = time.perf_counter() - sum(phases.values()) - start
        result = kgraph.keep_class(model, pruned)
        phases["keep_class (build, adopt weights)"] = (
            time.perf_counter() - sum(phases.values()) - start
        )
        return result

    with PeakMemory() as memory:
        small, surgery_s = timed(surgery)
    peak_above = memory.peak - loaded
    pruned_bytes = weight_bytes(small)
    print(f"  surgery {surgery_s:.1f} s, peak {peak_above / 2**20:.0f} MB above the model")

    new_config = small.get_config()
    floor, floor_s = timed(lambda: type(model).from_config(new_config))
    del floor
    print(f"  from_config of the pruned size {floor_s:.1f} s", flush=True)

    before, after = kgraph.stats(model), kgraph.stats(small)
    rows = []
    for batch in (1, 4):
        slow = latency(model, batch, 64, args.repeats)
        fast = latency(small, batch, 64, args.repeats)
        rows.append((batch, slow, fast))
        print(f"  batch {batch}: {slow * 1e3:.0f} ms -> {fast * 1e3:.0f} ms", flush=True)

    lines = [
        f"MistralBackbone, {args.dtype}: {params / 1e9:.2f} B -> "
        f"{small.count_params() / 1e9:.2f} B parameters "
        f"(FFN units -50 %, query heads -25 %: {config['num_query_heads']} -> "
        f"{new_config['num_query_heads']}, intermediate_dim {config['intermediate_dim']} -> "
        f"{new_config['intermediate_dim']}), {keras.backend.backend()} backend, "
        f"{os.cpu_count()} CPUs",
        "",
        "| step | seconds | ratio |",
        "| --- | --- | --- |",
        f"| surgery: lift + plan + apply + keep_class | {surgery_s:.1f} | "
        f"**{surgery_s / floor_s:.2f}x** from_config |",
        f"| from_config of the pruned size (the floor) | {floor_s:.1f} | 1.00x |",
        *(f"| of which {name} | {value:.1f} | |" for name, value in phases.items()),
        "",
        "| memory | MB |",
        "| --- | --- |",
        f"| peak above the loaded model during surgery | {peak_above / 2**20:.0f} |",
        f"| pruned model's weights | {pruned_bytes / 2**20:.0f} |",
        f"| ratio | **{peak_above / pruned_bytes:.2f}x** (target <= 1.10x) |",
        "",
        "| batch, length 64 | original ms | pruned ms | speedup | params ratio | FLOPs ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for batch, slow, fast in rows:
        lines.append(
            f"| {batch} | {slow * 1e3:.0f} | {fast * 1e3:.0f} | **{slow / fast:.2f}x** | "
            f"{before.params / after.params:.2f}x | {before.flops / after.flops:.2f}x |"
        )
    text = "\n".join(lines)
    print()
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
