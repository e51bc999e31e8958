"""Running passes: the pipeline behind `Graph.apply`, with print-after-all dumps."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kgraph.dump import to_dot
from kgraph.errors import KGraphError
from kgraph.passes.base import Pass
from kgraph.passes.eliminate_dead_nodes import EliminateDeadNodes
from kgraph.passes.propagate_masks import PropagateMasks
from kgraph.verify import verify as verify_graph

if TYPE_CHECKING:
    from kgraph.graph import Graph

__all__ = ["FINALIZE", "run_pipeline"]

log = logging.getLogger(__name__)

FINALIZE: tuple[Pass, ...] = (PropagateMasks(), EliminateDeadNodes())


def _dump(graph: Graph, dump_dir: Path | None, step: int, name: str) -> None:
    if dump_dir is None:
        return
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    stem = dump_dir / f"{step:02d}-{slug}"
    try:
        dump_dir.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".txt").write_text(str(graph) + "\n", encoding="utf-8")
        stem.with_suffix(".dot").write_text(to_dot(graph), encoding="utf-8")
    except OSError as error:
        raise KGraphError(f"cannot write the IR dump to {dump_dir}: {error}") from error


def run_pipeline(
    graph: Graph, passes: Sequence[Pass], *, dump_dir: Path | None = None, verify: bool = False
) -> Graph:
    """Run `passes` then the finalizing passes on a copy of `graph`; return it frozen."""
    for p in passes:
        if not isinstance(p, Pass):
            raise KGraphError(f"apply() takes passes, got {type(p).__name__}: {p!r}")
    work = graph.copy()
    _dump(work, dump_dir, 0, "input")
    steps = [*passes, *FINALIZE]
    for step, p in enumerate(steps, start=1):
        changed = p.run(work)
        log.debug("pass %s changed=%s", p.name, changed)
        _dump(work, dump_dir, step, p.name)
        if verify:  # only the finished graph must be consistent, not the ones in between
            verify_graph(work, structure_only=step < len(steps))
    return work.freeze()
