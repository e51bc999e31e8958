"""`sparsity`: how many of each layer's prunable weights are exactly zero.

Example:
    >>> report = kgraph.sparsity(model)
    >>> report.total      # fraction of zeros over all kernels
    0.8
    >>> print(report)     # one line per layer
"""

from __future__ import annotations

import attrs
import numpy as np

from kgraph.graph_data import GraphData
from kgraph.sparse.masks import is_prunable

__all__ = ["LayerSparsity", "SparsityReport", "sparsity"]


@attrs.frozen
class LayerSparsity:
    """Zeros among one layer's prunable weights (kernels, embeddings)."""

    name: str
    zeros: int
    weights: int

    @property
    def fraction(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


@attrs.frozen
class SparsityReport:
    """Per-layer and total sparsity of a model's prunable weights."""

    layers: tuple[LayerSparsity, ...]

    @property
    def total(self) -> float:
        weights = sum(layer.weights for layer in self.layers)
        return sum(layer.zeros for layer in self.layers) / weights if weights else 0.0

    def __getitem__(self, name: str) -> LayerSparsity:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def __str__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'zeros':>10}  {'weights':>10}  sparsity"]
        for layer in self.layers:
            counts = f"{layer.zeros:>10}  {layer.weights:>10}"
            lines.append(f"{layer.name:<{width}}  {counts}  {layer.fraction:8.1%}")
        zeros, weights = sum(x.zeros for x in self.layers), sum(x.weights for x in self.layers)
        lines.append(f"{'total':<{width}}  {zeros:>10}  {weights:>10}  {self.total:8.1%}")
        return "\n".join(lines)


def sparsity(graph: GraphData) -> SparsityReport:
    """The fraction of exactly-zero prunable weights, per layer (shared: once) and in total.

    (`kgraph.sparsity` also takes a Keras model.)
    """
    seen: set[str] = set()
    layers = []
    for node in graph.nodes():
        if node.kind != "layer" or node.layer in seen:
            continue
        seen.add(node.layer)
        arrays = [w for name, w in zip(node.weight_names, node.weights) if is_prunable(name)]
        if arrays:
            zeros = sum(int(np.count_nonzero(w == 0)) for w in arrays)
            layers.append(LayerSparsity(node.layer, zeros, sum(int(w.size) for w in arrays)))
    return SparsityReport(tuple(layers))
