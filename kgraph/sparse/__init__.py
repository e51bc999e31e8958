"""Weight sparsity for Keras 3: zero individual weights, at once or gradually while training.

- the `Sparsify` pass (`kgraph.passes.Sparsify`): magnitude or random, per layer or
  global, single weights, blocks or N:M patterns;
- `GradualPruning` with `ConstantSparsity` / `PolynomialDecay` schedules: a plain Keras
  callback for `model.fit`, tfmot's `prune_low_magnitude` without wrappers;
- `sparsity(model)`: how sparse each layer is.

Example:
    >>> sparse = kgraph.lift(model).apply(Sparsify(0.5, n_m=(2, 4))).lower()
    >>> kgraph.sparsity(sparse).total
    0.5
"""

from kgraph.sparse.masks import SparsityError, weight_masks
from kgraph.sparse.report import LayerSparsity, SparsityReport, sparsity
from kgraph.sparse.schedules import ConstantSparsity, GradualPruning, PolynomialDecay, Schedule

__all__ = [
    "ConstantSparsity",
    "GradualPruning",
    "LayerSparsity",
    "PolynomialDecay",
    "Schedule",
    "SparsityError",
    "SparsityReport",
    "sparsity",
    "weight_masks",
]
