"""The exception tree of kgraph: every error the library raises on purpose.

Messages say what went wrong, where (node name and layer class) and what to do.

Example:
    >>> try:
    ...     graph.apply(DeleteChannels("dense_9", [0]))
    ... except kgraph.KGraphError as error:
    ...     print(error)
"""

from __future__ import annotations

__all__ = [
    "ChannelError",
    "KGraphError",
    "LayerNotFoundError",
    "LiftError",
    "LowerError",
    "MaskConflictError",
    "PruningError",
    "SurgeryError",
    "UnsupportedLayerError",
    "VerificationError",
]


class KGraphError(Exception):
    """Root of every error kgraph raises on purpose."""


class LiftError(KGraphError):
    """The Keras model cannot be read into the IR (e.g. a subclassed model)."""


class LowerError(KGraphError):
    """The IR cannot be turned back into a Keras model."""


class LayerNotFoundError(KGraphError, KeyError):
    """A layer named in a pass does not exist in the graph."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class ChannelError(KGraphError, ValueError):
    """Channel indices are not integers, out of range, duplicated, or cannot be deleted."""


class PruningError(KGraphError, ValueError):
    """`kgraph.prune` was given options it cannot use (a ratio outside [0, 1), ...)."""


class SurgeryError(KGraphError, ValueError):
    """A layer cannot be deleted, inserted or replaced where it was asked."""


class UnsupportedLayerError(KGraphError):
    """A channel mask reached a layer that has no rule for it."""


class MaskConflictError(KGraphError):
    """Inputs that must carry the same channels carry different ones."""


class VerificationError(KGraphError):
    """`Graph.verify()` found a broken invariant (a bug in a pass or a rule)."""
