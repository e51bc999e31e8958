"""The exception tree of kgraph: every error the library raises on purpose.

Messages say what went wrong, where (node name and layer class) and what to do.

Example:
    >>> try:
    ...     graph.apply(DeleteChannels("dense_9", [0]))
    ... except kgraph.KGraphError as error:
    ...     print(error)
"""

from __future__ import annotations

import re

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
    "keras_message",
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


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def keras_message(error: BaseException, limit: int = 600) -> str:
    """A Keras or backend error's message for a kgraph error: terminal colour codes
    removed, whitespace collapsed, cut to `limit` characters.

    Example:
        >>> raise LowerError(f"calling 'flip' failed: {keras_message(error)}") from error
    """
    text = " ".join(_ANSI.sub("", str(error)).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
