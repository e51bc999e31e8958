"""`stats`: parameters and FLOPs per layer and in total, and before/after comparisons.

FLOPs are counted as multiply-adds of one forward pass at batch size 1 (each rule
knows its layer's: a kernel element per output position for Dense and the
convolutions, per step for RNNs, projections plus scores for attention);
unknown dimensions count as 1.

Example:
    >>> before, after = kgraph.stats(model), kgraph.stats(pruned)
    >>> print(before.compare(after))
"""

from __future__ import annotations

import math

import attrs

from kgraph.graph_data import GraphData
from kgraph.rules.capabilities import macs
from kgraph.tables import table

__all__ = ["Comparison", "LayerStats", "Stats", "stats"]


def human(count: float) -> str:
    """`25.6M`, `4.1G`, `912`."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.2f}{unit}"
    return f"{count:.0f}"


@attrs.frozen
class LayerStats:
    """One layer call: its parameters (counted once per shared layer) and FLOPs."""

    name: str
    class_name: str
    params: int
    flops: int


@attrs.frozen
class Stats:
    """Parameters and FLOPs of a model, per layer call and in total."""

    model: str
    layers: tuple[LayerStats, ...]

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    def compare(self, after: Stats) -> Comparison:
        """This model against `after` (usually its pruned version)."""
        return Comparison(self, after)

    def __str__(self) -> str:
        return self.table()

    def table(self, limit: int | None = None, *, largest: bool = False) -> str:
        """The per-layer table: in graph order, or with `largest` the layers with the most
        parameters (then FLOPs) first; at most `limit` rows (a line says how many more)."""
        shown = [s for s in self.layers if s.params or s.flops]
        if largest:
            shown.sort(key=lambda s: (-s.params, -s.flops))
        rows = [[s.name, s.class_name, human(s.params), human(s.flops)] for s in shown[:limit]]
        if limit is not None and len(shown) > limit:
            rows.append([f"... {len(shown) - limit} more layers", "", "", ""])
        total = ["total", "", human(self.params), human(self.flops)]
        return f"{self.model}\n" + table(["layer", "class", "params", "FLOPs"], rows, total)


@attrs.frozen
class Comparison:
    """Two `Stats` side by side; prints a before/after table with the reductions."""

    before: Stats
    after: Stats

    def __str__(self) -> str:
        return self.table()

    def table(self, limit: int | None = None, *, largest: bool = False) -> str:
        """The before/after table: in graph order, or with `largest` the layers that had
        the most parameters first; at most `limit` rows."""
        after = {s.name: s for s in self.after.layers}
        rows = []
        shown = [s for s in self.before.layers if s.params or s.flops]
        if largest:
            shown.sort(key=lambda s: (-s.params, -s.flops))
        for old in shown[:limit]:
            new = after.get(old.name)
            rows.append(
                [
                    old.name,
                    human(old.params),
                    human(new.params) if new else "deleted",
                    human(old.flops),
                    human(new.flops) if new else "deleted",
                ]
            )
        if limit is not None and len(shown) > limit:
            rows.append([f"... {len(shown) - limit} more layers", "", "", "", ""])
        total = [
            "total",
            human(self.before.params),
            f"{human(self.after.params)} ({_ratio(self.before.params, self.after.params)})",
            human(self.before.flops),
            f"{human(self.after.flops)} ({_ratio(self.before.flops, self.after.flops)})",
        ]
        header = ["layer", "params before", "params after", "FLOPs before", "FLOPs after"]
        return table(header, rows, total)


def _ratio(before: int, after: int) -> str:
    return f"{after / before:.1%}" if before else "-"


def stats(graph: GraphData) -> Stats:
    """Parameters and FLOPs (multiply-adds, batch 1) of every layer call and in total.

    (`kgraph.stats` also takes a Keras model.)
    """
    counted: set[str] = set()
    layers = []
    for node in graph.nodes():
        if node.kind not in ("layer", "op"):
            continue
        params = 0 if node.layer in counted else sum(math.prod(s) for s in node.weight_shapes)
        counted.add(node.layer)
        layers.append(
            LayerStats(node.name, node.class_name, params, macs(graph.rules.rule_for(node), node))
        )
    return Stats(graph.name, tuple(layers))
