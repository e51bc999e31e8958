"""`Graph`: the IR of a Keras model, a networkx MultiDiGraph of layer calls.

Nodes are keyed by name and carry an immutable `Node` record (`data["node"]`).
An edge `producer -> consumer` with key `dst_slot` carries the producer's output
slot (`data["src"]`); the tensor on it is `producer.outputs[src]`.

A Graph you get from `lift` or `apply` is frozen: passes never change it, they
work on a private copy. Inside a pass the working copy offers the editing methods
(`set_node`, `add_node`, `connect`, ...).

Example:
    >>> graph = kgraph.lift(model)
    >>> pruned = graph.apply(DeleteChannels("conv1", [0, 3]))
    >>> print(pruned)
    >>> new_model = pruned.lower()
"""

from __future__ import annotations

import difflib
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from kgraph.errors import KGraphError, LayerNotFoundError, SurgeryError
from kgraph.ir import Node, Tensor

if TYPE_CHECKING:
    import keras

    from kgraph.passes.base import Pass

__all__ = ["Graph", "LayerRef"]

LayerRef = Any  # a layer name, a nested path "outer/inner", or a keras Layer object


class Graph:
    """The IR of one Keras model: layer calls as nodes, tensors as edges.

    Args:
        nx_graph: the networkx MultiDiGraph (see the module docstring for its layout).
        name: the Keras model's name, given back by `lower()`.
        inputs: the model's input structure with input node names as leaves.
        outputs: the model's output structure with output node names as leaves.
    """

    def __init__(self, nx_graph: nx.MultiDiGraph, *, name: str, inputs: Any, outputs: Any) -> None:
        self._g = nx_graph
        self.name = name
        self.inputs_struct = inputs
        self.outputs_struct = outputs
        self._frozen = False
        self._order: list[str] | None = None
        self._cache: dict[str, Any] = {}
        self._by_layer: dict[str, list[str]] = {}
        self._by_path: dict[str, list[str]] = {}
        self._by_origin: dict[weakref.ref, list[str]] = {}
        for node in self.nodes():
            self._index(node)

    # ------------------------------------------------------------------ reading

    @property
    def nx(self) -> nx.MultiDiGraph:
        """The underlying networkx graph (frozen by networkx too when this Graph is)."""
        return self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def __contains__(self, name: object) -> bool:
        return name in self._g

    def __iter__(self) -> Iterator[str]:
        return iter(self.topological_order())

    def __getitem__(self, name: str) -> Node:
        return self.node(name)

    def node(self, name: str) -> Node:
        """The record of node `name`."""
        try:
            return self._g.nodes[name]["node"]
        except KeyError:
            raise LayerNotFoundError(f"no node {name!r} in graph {self.name!r}") from None

    def nodes(self) -> list[Node]:
        """All node records, in topological order."""
        return [self._g.nodes[n]["node"] for n in self.topological_order()]

    @property
    def input_names(self) -> list[str]:
        from keras import tree

        return list(tree.flatten(self.inputs_struct))

    @property
    def output_names(self) -> list[str]:
        from keras import tree

        return list(tree.flatten(self.outputs_struct))

    def producers(self, name: str) -> list[tuple[str, int]]:
        """`(producer, output slot)` feeding each input slot of `name`, by slot."""
        # networkx's adjacency dict directly: edge views cost more than the walk itself
        found = {
            key: (src, data["src"])
            for src, edges in self._g._pred.get(name, {}).items()
            for key, data in edges.items()
        }
        return [found[slot] for slot in sorted(found)]

    def users(self, name: str, slot: int | None = None) -> list[tuple[str, int, int]]:
        """`(consumer, input slot, output slot)` for readers of output `slot` (any if None)."""
        return [
            (dst, key, data["src"])
            for dst, edges in self._g._succ.get(name, {}).items()
            for key, data in edges.items()
            if slot is None or data["src"] == slot
        ]

    def input_tensors(self, name: str) -> list[Tensor]:
        """The tensors currently reaching each input slot of `name`."""
        return [self.node(src).outputs[slot] for src, slot in self.producers(name)]

    def topological_order(self) -> list[str]:
        """Node names, inputs first, each node after all its producers.

        The order is a depth-first walk from the outputs taking inputs in slot order
        (as Keras orders a functional model), so it does not depend on edit history.
        """
        if self._order is not None:
            return self._order
        order: list[str] = []
        seen: set[str] = set()
        roots = [*self.input_names, *self.output_names, *self._g.nodes]
        for root in roots:
            if root in seen:
                continue
            stack: list[tuple[str, Iterator[str]]] = [(root, iter(self._parents(root)))]
            seen.add(root)
            while stack:
                current, parents = stack[-1]
                for parent in parents:
                    if parent not in seen:
                        seen.add(parent)
                        stack.append((parent, iter(self._parents(parent))))
                        break
                else:
                    stack.pop()
                    order.append(current)
        if self._frozen:
            self._order = order
        return order

    def _parents(self, name: str) -> list[str]:
        return [src for src, _ in self.producers(name)]

    def find(self, layer: LayerRef) -> list[str]:
        """Names of the nodes (one per call) of `layer`.

        `layer` is a layer name, a path inside a nested model ("backbone/conv1"),
        a node name ("dense@1") or a Keras Layer object of the lifted model.
        Raises `LayerNotFoundError`, suggesting close names, when there is none.
        """
        if isinstance(layer, str):
            for index in (self._by_layer, self._by_path):
                if layer in index:
                    return list(index[layer])
            if layer in self._g and self.node(layer).kind in ("layer", "op", "input"):
                return [layer]
            close = difflib.get_close_matches(layer, list(self._by_layer), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise LayerNotFoundError(f"model {self.name!r} has no layer {layer!r}.{hint}")
        name = getattr(layer, "name", None)
        if not isinstance(name, str):
            raise KGraphError(
                f"expected a layer name or a keras Layer, got {type(layer).__name__}: {layer!r}"
            )
        try:
            key = weakref.ref(layer)
        except TypeError:
            key = None
        if key is not None and key in self._by_origin:
            return list(self._by_origin[key])
        raise LayerNotFoundError(
            f"layer {name!r} ({type(layer).__name__}) is not a layer of model {self.name!r} "
            "(or it was removed by an earlier pass); pass a layer of the lifted model or its name"
        )

    def find_calls(self, layer: LayerRef, calls: Sequence[int] | None = None) -> list[str]:
        """Like `find`, restricted to the calls whose `call_index` is in `calls` (None: all)."""
        names = self.find(layer)
        if calls is None:
            return names
        by_index = {self.node(n).call_index: n for n in names}
        wanted = list(calls) if isinstance(calls, (list, tuple)) else None
        if (
            wanted is None
            or len(set(wanted)) != len(wanted)
            or any(
                isinstance(c, bool) or not isinstance(c, int) or c not in by_index for c in wanted
            )
        ):
            raise SurgeryError(
                f"calls {calls!r} do not select distinct calls of layer "
                f"{self.node(names[0]).layer!r}; pass a list of its call indices {sorted(by_index)}"
            )
        return [by_index[c] for c in sorted(wanted)]

    # ------------------------------------------------------------------ editing

    def _check_editable(self) -> None:
        if self._frozen:
            raise KGraphError(
                "this Graph is frozen: passes work on a copy; use graph.apply(pass) "
                "or edit graph.copy()"
            )

    def _changed(self) -> None:
        self._order = None
        self._cache.clear()

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()`, remembered until the graph's structure or channel spaces change."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def _index(self, node: Node) -> None:
        if node.kind == "output":
            return
        self._by_layer.setdefault(node.layer, []).append(node.name)
        if node.path and node.path != node.layer:
            self._by_path.setdefault(node.path, []).append(node.name)
        if node.origin is not None:
            self._by_origin.setdefault(node.origin, []).append(node.name)

    def _unindex(self, node: Node) -> None:
        for index, key in (
            (self._by_layer, node.layer),
            (self._by_path, node.path),
            (self._by_origin, node.origin),
        ):
            names = index.get(key)
            if names and node.name in names:
                names.remove(node.name)
                if not names:
                    del index[key]

    def copy(self) -> Graph:
        """An editable copy sharing the (immutable) records and arrays."""
        new = Graph.__new__(Graph)
        new._g = self._g.copy()
        new.name = self.name
        new.inputs_struct = self.inputs_struct
        new.outputs_struct = self.outputs_struct
        new._frozen = False
        new._order = None
        new._cache = {}
        new._by_layer = {k: list(v) for k, v in self._by_layer.items()}
        new._by_path = {k: list(v) for k, v in self._by_path.items()}
        new._by_origin = {k: list(v) for k, v in self._by_origin.items()}
        return new

    def freeze(self) -> Graph:
        """Make this graph read-only (what `apply` returns) and return it."""
        self._frozen = True
        self._order = None
        self._cache.clear()
        nx.freeze(self._g)
        return self

    @property
    def frozen(self) -> bool:
        return self._frozen

    def set_node(self, node: Node) -> None:
        """Replace the record of the node with the same name."""
        self._check_editable()
        old = self.node(node.name)
        self._unindex(old)
        self._g.nodes[node.name]["node"] = node
        self._index(node)
        if [t.space for t in old.outputs] != [t.space for t in node.outputs]:
            self._cache.clear()

    def rename(self, name: str, node: Node) -> None:
        """Replace node `name` by `node` (named differently), keeping its edges."""
        self._check_editable()
        old = self.node(name)
        self.add_node(node)
        for src, _, key, data in list(self._g.in_edges(name, keys=True, data=True)):
            self._g.add_edge(src, node.name, key=key, **data)
        for _, dst, key, data in list(self._g.out_edges(name, keys=True, data=True)):
            self._g.add_edge(node.name, dst, key=key, **data)
        self._unindex(old)
        self._g.remove_node(name)
        self._changed()

    def add_node(self, node: Node) -> None:
        """Add a new node (its name must be new)."""
        self._check_editable()
        if node.name in self._g:
            raise KGraphError(f"graph {self.name!r} already has a node {node.name!r}")
        self._g.add_node(node.name, node=node)
        self._index(node)
        self._changed()

    def remove_node(self, name: str) -> None:
        """Remove a node and its edges."""
        self._check_editable()
        self._unindex(self.node(name))
        self._g.remove_node(name)
        self._changed()

    def connect(self, src: str, src_slot: int, dst: str, dst_slot: int) -> None:
        """Feed output `src_slot` of `src` into input `dst_slot` of `dst` (which must be free)."""
        self._check_editable()
        if self._g.has_edge(src, dst, key=dst_slot) or any(
            key == dst_slot for _, _, key in self._g.in_edges(dst, keys=True)
        ):
            raise KGraphError(f"input slot {dst_slot} of {dst!r} is already connected")
        self._g.add_edge(src, dst, key=dst_slot, src=src_slot)
        self._changed()

    def disconnect(self, dst: str, dst_slot: int) -> tuple[str, int]:
        """Remove the edge into input `dst_slot` of `dst`; return its `(src, src_slot)`."""
        self._check_editable()
        for src, _, key, data in list(self._g.in_edges(dst, keys=True, data=True)):
            if key == dst_slot:
                self._g.remove_edge(src, dst, key=key)
                self._changed()
                return src, data["src"]
        raise KGraphError(f"input slot {dst_slot} of {dst!r} is not connected")

    def redirect_users(self, src: str, src_slot: int, new_src: str, new_slot: int) -> None:
        """Make every reader of output `src_slot` of `src` read `new_slot` of `new_src`."""
        self._check_editable()
        for dst, dst_slot, _ in self.users(src, src_slot):
            if dst == new_src:
                continue
            self.disconnect(dst, dst_slot)
            self.connect(new_src, new_slot, dst, dst_slot)

    def unique_name(self, base: str) -> str:
        """`base`, or `base_1`, `base_2`, ... whichever is neither a node nor a layer."""
        name, i = base, 0
        while name in self._g or name in self._by_layer:
            i += 1
            name = f"{base}_{i}"
        return name

    # ------------------------------------------------------------------ pipeline

    def apply(
        self, *passes: Pass, dump_dir: str | os.PathLike[str] | None = None, verify: bool = False
    ) -> Graph:
        """Run `passes` in order on a copy, make it consistent, and return it frozen.

        After the given passes, `PropagateMasks` and `EliminateDeadNodes` run, so the
        returned graph always has sliced weights and no dead nodes. This graph is
        never changed, also when a pass raises.

        Args:
            dump_dir: write the IR before the first pass and after every pass
                (`00-input.txt`, `01-delete-channels.txt`, ...); defaults to the
                environment variable `KGRAPH_DUMP_DIR`.
            verify: run `verify()` after every pass (also on with `KGRAPH_VERIFY=1`).
        """
        from kgraph.passes.pipeline import run_pipeline

        if dump_dir is None and os.environ.get("KGRAPH_DUMP_DIR"):
            dump_dir = os.environ["KGRAPH_DUMP_DIR"]
        verify = verify or os.environ.get("KGRAPH_VERIFY", "") not in ("", "0")
        return run_pipeline(
            self, passes, dump_dir=Path(dump_dir) if dump_dir else None, verify=verify
        )

    def lower(self) -> keras.Model:
        """Generate a fresh functional `keras.Model` from this graph."""
        from kgraph.lower import lower

        return lower(self)

    def verify(self) -> None:
        """Check the IR's invariants; raise `VerificationError` listing every violation."""
        from kgraph.verify import verify

        verify(self)

    def __str__(self) -> str:
        from kgraph.printing import format_graph

        return format_graph(self)

    def to_dot(self) -> str:
        """Graphviz DOT source of this graph, changed nodes and pruned edges highlighted."""
        from kgraph.dump import to_dot

        return to_dot(self)

    def dump(self, path: str | os.PathLike[str]) -> Path:
        """Write this graph to `path` as .txt, .dot, .svg, .png or .html (by extension).

        `.svg` and `.png` need Graphviz's `dot` program; the `.html` page is
        self-contained. Missing folders are created. See `kgraph.dump`.
        """
        from kgraph.dump import dump

        return dump(self, path)

    def __repr__(self) -> str:
        return f"<kgraph.Graph {self.name!r}: {len(self)} nodes>"
