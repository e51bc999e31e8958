"""Errors of the tfmot compatibility layer (tfmot raised ValueError; these are ValueErrors too).

Example:
    >>> try:
    ...     tfmot.sparsity.keras.prune_low_magnitude(object())
    ... except kgraph.KGraphError as error:
    ...     print(error)
"""

from __future__ import annotations

from kgraph.errors import KGraphError

__all__ = ["PruningStepError", "TfmotError"]


class TfmotError(KGraphError, ValueError):
    """A tfmot-style pruning call was given something it cannot prune or use."""


class PruningStepError(TfmotError):
    """A pruned model was trained without the `UpdatePruningStep` callback."""
