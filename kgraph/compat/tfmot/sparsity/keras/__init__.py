"""`tfmot.sparsity.keras` on Keras 3: pruning while training, tfmot's API on kgraph.

    >>> from kgraph.compat import tfmot
    >>> pruned = tfmot.sparsity.keras.prune_low_magnitude(
    ...     model, pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(0.0, 0.5, 0, 1000))
    >>> pruned.compile("adam", "mse")
    >>> pruned.fit(x, y, epochs=10, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    >>> final = tfmot.sparsity.keras.strip_pruning(pruned)

Masks and schedules are kgraph's (`kgraph.sparse`); see docs/sparsity.md for what
differs from tfmot.
"""

from kgraph.compat.tfmot.errors import PruningStepError, TfmotError
from kgraph.compat.tfmot.sparsity.keras.callbacks import PruningSummaries, UpdatePruningStep
from kgraph.compat.tfmot.sparsity.keras.policy import PruneForLatencyOnXNNPack, PruningPolicy
from kgraph.compat.tfmot.sparsity.keras.prune import (
    prune_low_magnitude,
    prune_scope,
    strip_pruning,
)
from kgraph.compat.tfmot.sparsity.keras.registry import PrunableLayer
from kgraph.compat.tfmot.sparsity.keras.schedules import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
)
from kgraph.compat.tfmot.sparsity.keras.wrapper import PruneLowMagnitude, collect_prunable_layers

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningPolicy",
    "PruningSchedule",
    "PruningStepError",
    "PruningSummaries",
    "TfmotError",
    "UpdatePruningStep",
    "collect_prunable_layers",
    "prune_low_magnitude",
    "prune_scope",
    "strip_pruning",
]
