"""`Sparsify`: zero individual weights (unstructured sparsity), keeping every shape.

Kernels of Dense, convolutions (also depthwise and separable), recurrent layers,
Embedding tables and attention projections lose their lowest-magnitude (or random)
weights: per weight tensor or ranked globally, one by one, in blocks, or in an N:M
pattern such as 2:4. Biases and normalisation parameters are never touched.

Example:
    >>> sparse = kgraph.lift(model).apply(Sparsify(0.8)).lower()
    >>> print(kgraph.sparsity(sparse))
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import attrs
import numpy as np

from kgraph.graph_data import GraphData, LayerRef
from kgraph.ir import seal
from kgraph.passes.base import Pass
from kgraph.sparse.masks import check_options, describe_options, is_prunable, weight_masks

__all__ = ["Sparsify"]

log = logging.getLogger(__name__)


def _tuple_or_none(value: Any) -> Any:
    return None if value is None else tuple(value) if isinstance(value, (list, tuple)) else value


@attrs.frozen
class Sparsify(Pass):
    """Zero `sparsity` of the prunable weights of `layers` (None: every layer that has some).

    Args:
        sparsity: fraction of weights to zero, in [0, 1) (implied by `n_m` if given).
        criterion: "magnitude" (smallest |w| first) or "random" (seeded by `seed`).
        scope: "layer" (every kernel reaches `sparsity`) or "global" (one ranking).
        layers: layer names or Layer objects to sparsify.
        block: zero whole (rows, columns) blocks of each kernel seen as (inputs, outputs).
        n_m: keep N of every M consecutive inputs of each output, e.g. (2, 4).
    """

    name: ClassVar[str] = "sparsify"
    sparsity: float | None = None
    criterion: str = "magnitude"
    scope: str = "layer"
    layers: tuple[LayerRef, ...] | None = attrs.field(default=None, converter=_tuple_or_none)
    block: tuple[int, int] = attrs.field(default=(1, 1), converter=_tuple_or_none)
    n_m: tuple[int, int] | None = attrs.field(default=None, converter=_tuple_or_none)
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        check_options(self.sparsity, self.criterion, self.scope, self.block, self.n_m)

    def _targets(self, graph: GraphData) -> list[str]:
        if self.layers is None:
            names = [n.name for n in graph.nodes() if n.kind == "layer"]
        else:
            names = [name for layer in self.layers for name in graph.find(layer)]
        first_calls: dict[str, str] = {}
        for name in names:  # a shared layer is sparsified once, for every call
            node = graph.node(name)
            if any(is_prunable(w) for w in node.weight_names):
                first_calls.setdefault(node.layer, name)
        return list(first_calls.values())

    def run(self, graph: GraphData) -> bool:
        targets = self._targets(graph)
        weights = {
            f"{name}/{w}": graph.node(name).weight(w)
            for name in targets
            for w in graph.node(name).weight_names
            if is_prunable(w)
        }
        if not weights:
            return False
        masks = weight_masks(
            weights,
            self.sparsity,
            criterion=self.criterion,
            scope=self.scope,
            block=self.block,
            n_m=self.n_m,
            seed=self.seed,
        )
        for name in targets:
            node = graph.node(name)
            updates = {
                w: seal(
                    np.where(masks[f"{name}/{w}"], node.weight(w), 0).astype(node.weight(w).dtype)
                )
                for w in node.weight_names
                if is_prunable(w)
            }
            for call in graph.find(node.layer):
                graph.set_node(graph.node(call).with_weights(**updates))
        zeros = sum(int((~m).sum()) for m in masks.values())
        total = sum(m.size for m in masks.values())
        log.info(
            "sparsified %d layers (%s): %d of %d weights are zero",
            len(targets),
            describe_options(
                criterion=self.criterion, scope=self.scope, block=self.block, n_m=self.n_m
            ),
            zeros,
            total,
        )
        return True
