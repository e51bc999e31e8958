"""`Pass`: the base of every rewrite pass, and `PassResult`.

A pass is a small frozen attrs class; its fields are its options. `run(graph)`
edits a working copy in place and returns whether it changed anything; calling
the pass on a frozen Graph runs it on a copy and returns a `PassResult`.
`Graph.apply` chains passes on one working copy and then makes it consistent.

Example:
    >>> @attrs.frozen
    ... class DropDropout(Pass):
    ...     name: ClassVar[str] = "drop-dropout"
    ...     def run(self, graph):
    ...         victims = [n.name for n in graph.nodes() if n.class_name == "Dropout"]
    ...         for v in victims:
    ...             DeleteLayer(v).run(graph)
    ...         return bool(victims)
    >>> graph.apply(DropDropout())
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import numpy as np

if TYPE_CHECKING:
    from kgraph.graph import Graph

__all__ = ["Pass", "PassResult", "as_tuple", "optional_tuple"]


def optional_tuple(calls: Any) -> tuple[int, ...] | None:
    """Converter for optional sequence options (`calls=`)."""
    return None if calls is None else as_tuple(calls)


def as_tuple(channels: Any) -> Any:
    """Converter for sequence options: a tuple (anything else is left for `run` to refuse)."""
    if isinstance(channels, np.ndarray):
        return tuple(channels.tolist())
    if isinstance(channels, Iterable) and not isinstance(channels, (str, bytes)):
        return tuple(channels)
    return channels  # refused with a clear error by run()


@attrs.frozen
class PassResult:
    """What one pass did: the new (frozen) graph and whether it changed anything."""

    graph: Graph
    changed: bool


@attrs.frozen
class Pass:
    """Base class of rewrite passes."""

    name: ClassVar[str] = "pass"

    def run(self, graph: Graph) -> bool:
        """Rewrite the editable `graph` in place; return True when something changed."""
        raise NotImplementedError(f"{type(self).__name__} must implement run(graph)")

    def __call__(self, graph: Graph) -> PassResult:
        """Run this pass alone on a copy of `graph`.

        Unlike `graph.apply(pass)`, no mask propagation follows: the result shows
        what this pass stated (useful in tests and dumps) and may not lower yet.
        """
        work = graph.copy()
        changed = self.run(work)
        return PassResult(work.freeze(), changed)
