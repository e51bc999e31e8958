"""Pruning to a budget: parameters, FLOPs, weight memory or measured latency.

`kgraph.prune(model, target="flops=0.5")` does not take a fixed ratio: it ranks every
prunable channel of every group by its criterion score (normalised by its group's
mean, as the global scope does) divided by what deleting it saves (its cost: the
params, FLOPs, bytes it removes, measured on the graph by deleting one channel of the
group), and deletes channels in that order until the model fits the budget — found
by bisection on how many go, each step measured exactly on the pruned graph.

A budget is a metric and a value: a value up to 1 is a fraction of the original
(`flops=0.5`: half the multiply-adds), a larger one an absolute amount (`params=2M`,
`bytes=8MB`). Latency is timed on this backend with a batch of the given shape (or
a callable `seconds = time(model)`), from the original's, so it is a fraction.

Example:
    >>> small = kgraph.prune(model, target="flops=0.5", round_to=8)
    >>> small = kgraph.prune(model, target=kgraph.Budget("params", 2e6))
"""

from __future__ import annotations

import gc
import logging
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import keras
import numpy as np

from kgraph.errors import PruningError
from kgraph.graph import Graph
from kgraph.graph_data import GraphData
from kgraph.stats import stats

__all__ = ["METRICS", "Budget", "BudgetError", "bisect", "measure", "order_by_priority"]

log = logging.getLogger(__name__)

METRICS = ("params", "flops", "bytes", "latency")
_UNITS = {"": 1, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "kb": 2**10, "mb": 2**20, "gb": 2**30}


class BudgetError(PruningError):
    """A budget that cannot be read or used."""


def _number(text: str) -> float:
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if found is None or found.group(2) not in _UNITS:
        raise BudgetError(f"{text!r} is not an amount such as 0.5, 2M or 8MB")
    return float(found.group(1)) * _UNITS[found.group(2)]


@attrs.frozen
class Budget:
    """What the pruned model must fit.

    Attributes:
        metric: "params", "flops" (multiply-adds at batch 1), "bytes" (weight memory)
            or "latency" (seconds per batch, measured).
        value: up to 1: a fraction of the original model's; above 1: an absolute amount.
        inputs: for latency: a batch shape (`(1, 224, 224, 3)`) or a callable
            `time(model) -> seconds`.
        tolerance: how close to the target counts as reached (relative).
    """

    metric: str
    value: float
    inputs: Any = None
    tolerance: float = 0.02

    def __attrs_post_init__(self) -> None:
        if self.metric not in METRICS:
            raise BudgetError(f"unknown budget metric {self.metric!r}; use one of {METRICS}")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise BudgetError(f"a budget needs a number, got {self.value!r}")
        if not self.value > 0:
            raise BudgetError(f"a budget must be positive, got {self.value!r}")
        if self.metric == "latency" and self.value > 1:
            raise BudgetError("a latency budget is a fraction of the original latency (<= 1)")
        if self.metric == "latency" and self.inputs is None:
            raise BudgetError(
                "a latency budget needs inputs: a batch shape such as (1, 224, 224, 3), or a "
                "callable time(model) -> seconds"
            )

    @classmethod
    def parse(cls, text: str | Budget | dict[str, Any]) -> Budget:
        """`"flops=0.5"`, `"params=2M"`, `"bytes=8MB"`, `{"metric": ..., "value": ...}`."""
        if isinstance(text, Budget):
            return text
        if isinstance(text, dict):
            return cls(**text)
        if not isinstance(text, str) or "=" not in text:
            raise BudgetError(
                f"a budget is written metric=value (e.g. flops=0.5, params=2M), got {text!r}"
            )
        metric, value = text.split("=", 1)
        return cls(metric.strip().lower(), _number(value))

    def goal(self, original: float) -> float:
        """The target amount for a model whose metric is `original`."""
        return self.value * original if self.value <= 1 else self.value

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g}"


def _latency(graph: GraphData, inputs: Any) -> float:
    model = graph.lower() if isinstance(graph, Graph) else None
    if model is None:
        raise BudgetError("a latency budget needs a kgraph.Graph to lower")
    if callable(inputs):
        return float(inputs(model))
    batch = np.zeros(tuple(inputs), dtype="float32")
    model(batch)  # warm up
    times = []
    for _ in range(5):
        gc.collect()
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.tree.flatten(model(batch))[0])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(graph: GraphData, budget: Budget) -> float:
    """`budget.metric` of `graph`: params, FLOPs, weight bytes, or seconds per batch."""
    if budget.metric == "latency":
        return _latency(graph, budget.inputs)
    if budget.metric == "bytes":
        total = 0
        seen: set[str] = set()
        for node in graph.nodes():
            if node.layer in seen:
                continue
            seen.add(node.layer)
            for weight in node.stored_weights:
                total += math.prod(weight.shape) * np.dtype(weight.dtype).itemsize
        return float(total)
    counts = stats(graph)
    return float(counts.params if budget.metric == "params" else counts.flops)


def order_by_priority(
    scores: Sequence[np.ndarray],
    kept: Sequence[np.ndarray],
    costs: Sequence[float],
    limits: Sequence[int],
) -> list[tuple[int, int]]:
    """`(group, channel)` in deletion order: normalised score per unit of cost, lowest
    first, at most `limits[g]` channels of group g."""
    pool = []
    for g, (score, mask, cost) in enumerate(zip(scores, kept, costs)):
        alive = np.flatnonzero(mask)
        if not alive.size or limits[g] <= 0 or np.isnan(score[alive]).any():
            continue
        mean = float(np.mean(score[alive]))
        normalised = score[alive] / mean if mean > 0 else score[alive]
        per_cost = normalised / max(cost, 1e-12)
        ranked = sorted(zip(per_cost.tolist(), alive.tolist()))[: limits[g]]
        pool += [(priority, g, channel) for priority, channel in ranked]
    pool.sort()
    return [(g, channel) for _, g, channel in pool]


def bisect(count: int, amount: Callable[[int], float], goal: float) -> tuple[int, float]:
    """The smallest number of deletions k in [0, count] whose `amount(k)` is at most
    `goal` (or `count`, when none is), and that amount."""
    low, high = 0, count
    best = (count, amount(count))
    if best[1] > goal:
        return best
    while low < high:
        middle = (low + high) // 2
        value = amount(middle)
        if value <= goal:
            best, high = (middle, value), middle
        else:
            low = middle + 1
    return best
