"""`Graph`: the IR of a Keras model, with the pipeline on top.

`GraphData` (`kgraph.graph_data`) is the data structure; `Graph` adds what a user
does with a lifted model: `apply` passes, `lower` it back to Keras, `verify` it,
print it (`str`) and dump it. `kgraph.lift` returns a `Graph`, and so does `apply`.

Example:
    >>> graph = kgraph.lift(model)
    >>> pruned = graph.apply(DeleteChannels("conv1", [0, 3]))
    >>> print(pruned)
    >>> new_model = pruned.lower()
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import keras

from kgraph.dump import dump, print_after_all, to_dot
from kgraph.graph_data import GraphData, LayerRef
from kgraph.lower import lower
from kgraph.passes.base import AfterPass, Pass
from kgraph.passes.pipeline import run_pipeline
from kgraph.printing import format_graph
from kgraph.rules.registry import RuleSet
from kgraph.verify import verify as verify_graph

__all__ = ["Graph", "LayerRef"]


class Graph(GraphData):
    """The IR of one Keras model: layer calls as nodes, tensors as edges (see
    `GraphData` for reading and editing it)."""

    def apply(
        self,
        *passes: Pass,
        dump_dir: str | os.PathLike[str] | None = None,
        verify: bool = False,
        rules: RuleSet | None = None,
        after_pass: AfterPass | None = None,
    ) -> Graph:
        """Run `passes` in order on a copy, make it consistent, and return it frozen.

        After the given passes, `PropagateMasks` and `EliminateDeadNodes` run, so the
        returned graph always has sliced weights and no dead nodes. This graph is
        never changed, also when a pass raises; the error names the pass.

        Args:
            dump_dir: write the IR before the first pass and after every pass
                (`00-input.txt`, `01-delete-channels.txt`, ...); defaults to the
                environment variable `KGRAPH_DUMP_DIR`.
            verify: run `verify()` after every pass (also on with `KGRAPH_VERIFY=1`).
            rules: read the graph with this `kgraph.rules.RuleSet` from now on.
            after_pass: called as `after_pass(step, pass_name, graph)` before the
                first pass (step 0, "input") and after every pass.
        """
        if dump_dir is None and os.environ.get("KGRAPH_DUMP_DIR"):
            dump_dir = os.environ["KGRAPH_DUMP_DIR"]
        verify = verify or os.environ.get("KGRAPH_VERIFY", "") not in ("", "0")
        callbacks: list[AfterPass] = []
        where: Callable[[int], str] | None = None
        if dump_dir:
            printer = print_after_all(Path(dump_dir))
            callbacks.append(printer)
            where = printer.path_of
        if after_pass is not None:
            callbacks.append(after_pass)

        def each(step: int, name: str, graph: GraphData) -> None:
            for callback in callbacks:
                callback(step, name, graph)

        result = run_pipeline(
            self,
            passes,
            verify=verify,
            rules=rules,
            after_pass=each if callbacks else None,
            where=where,
        )
        return result.graph

    def lower(self) -> keras.Model:
        """Generate a fresh functional `keras.Model` from this graph."""
        return lower(self)

    def verify(self) -> None:
        """Check the IR's invariants; raise `VerificationError` listing every violation."""
        verify_graph(self)

    def __str__(self) -> str:
        return format_graph(self)

    def to_dot(self) -> str:
        """Graphviz DOT source of this graph, changed nodes and pruned edges highlighted."""
        return to_dot(self)

    def dump(self, path: str | os.PathLike[str]) -> Path:
        """Write this graph to `path` as .txt, .dot, .svg, .png or .html (by extension).

        `.svg` and `.png` need Graphviz's `dot` program; the `.html` page is
        self-contained. Missing folders are created. See `kgraph.dump`.
        """
        return dump(self, path)
