"""`Pass`: the base of every rewrite pass, and `PassResult`.

A pass is a small frozen attrs class; its fields are its options. `run(graph)`
edits a working copy in place and returns whether it changed anything. Calling
the pass on a graph runs it alone on a copy and returns a `PassResult`;
`Graph.apply` chains passes through the same driver, `run_passes`, and then makes
the graph consistent (`kgraph.passes.pipeline`).

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

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from kgraph.errors import KGraphError
from kgraph.graph_data import GraphData
from kgraph.rules.registry import RuleSet
from kgraph.verify import verify as verify_graph

__all__ = ["AfterPass", "Pass", "PassResult", "as_tuple", "optional_tuple", "run_passes"]

log = logging.getLogger(__name__)

#: `after_pass(step, pass name, graph)`: step 0 is the input ("input"), then 1, 2, ...
AfterPass = Callable[[int, str, GraphData], None]


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
    """What running passes did: the new (frozen) graph and whether they changed anything."""

    graph: GraphData
    changed: bool


@attrs.frozen
class Pass:
    """Base class of rewrite passes."""

    name: ClassVar[str] = "pass"

    def run(self, graph: GraphData) -> bool:
        """Rewrite the editable `graph` in place; return True when something changed."""
        raise NotImplementedError(f"{type(self).__name__} must implement run(graph)")

    def __call__(self, graph: GraphData) -> PassResult:
        """Run this pass alone on a copy of `graph`.

        Unlike `graph.apply(pass)`, no mask propagation follows: the result shows
        what this pass stated (useful in tests and dumps) and may not lower yet.
        """
        return run_passes(graph, [self])


def _failed(error: KGraphError, current: Pass, done: list[str], hint: str) -> KGraphError:
    """`error` again (same class), its message saying which pass failed after which."""
    after = f" after {', '.join(done)}" if done else ""
    message = f"pass {current.name!r} failed{after}: {error}{hint}"
    try:
        failed = type(error)(message)
    except TypeError:  # an error class with another constructor: keep it as it is
        return error
    return failed


def run_passes(
    graph: GraphData,
    passes: Sequence[Pass],
    *,
    finalize: Sequence[Pass] = (),
    verify: bool = False,
    rules: RuleSet | None = None,
    after_pass: AfterPass | None = None,
    where: Callable[[int], str] | None = None,
) -> PassResult:
    """Run `passes` (then the finalizing passes) on a copy of `graph`.

    Args:
        finalize: passes to run after `passes` (`Graph.apply` gives `PropagateMasks`
            and `EliminateDeadNodes`).
        verify: check the graph's structure after every pass, and everything at the end.
        rules: read the copy's nodes with this `RuleSet` (default: the graph's).
        after_pass: called with the graph before the first pass and after each pass.
        where: for an error message, where the graph before pass `step` was written
            (print-after-all dumps).

    Returns the frozen result, `changed` telling whether one of `passes` changed it.
    A failing pass's error says which pass failed after which.
    `graph` itself is never changed, also when a pass raises.
    """
    if rules is not None and not isinstance(rules, RuleSet):
        raise KGraphError(f"rules must be a kgraph.rules.RuleSet, got {type(rules).__name__}")
    for p in passes:
        if not isinstance(p, Pass):
            raise KGraphError(f"apply() takes passes, got {type(p).__name__}: {p!r}")
    work = graph.copy(rules)
    if after_pass is not None:
        after_pass(0, "input", work)
    steps = [*passes, *finalize]
    changed = False
    done: list[str] = []
    for step, p in enumerate(steps, start=1):
        try:
            result = p.run(work)
        except KGraphError as error:
            hint = f" (the graph before it: {where(step - 1)})" if where is not None else ""
            raise _failed(error, p, done, hint) from error
        log.debug("pass %s changed=%s", p.name, result)
        changed = changed or (bool(result) and step <= len(passes))
        done.append(p.name)
        if after_pass is not None:
            after_pass(step, p.name, work)
        if verify:  # only the finished graph must be consistent, not the ones in between
            verify_graph(work, structure_only=step < len(steps) or not finalize)
    return PassResult(work.freeze(), changed)
