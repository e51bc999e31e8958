"""`GraphData`: the IR's data structure, a networkx MultiDiGraph of layer calls.

Nodes are keyed by name and carry an immutable `Node` record (`data["node"]`).
An edge `producer -> consumer` with key `dst_slot` carries the producer's output
slot (`data["src"]`); the tensor on it is `producer.outputs[src]`.

This is data only: reading, finding layers and editing. `kgraph.Graph` (what
`lift` returns) adds the pipeline on top: `apply`, `lower`, `verify`, `dump`.
Passes, rules and analyses are written against `GraphData`.

A graph you get from `lift` or `apply` is frozen: passes never change it, they
work on a private copy. Inside a pass the working copy offers the editing methods
(`set_node`, `add_node`, `connect`, ...).

Example:
    >>> graph = kgraph.lift(model)
    >>> graph.producers("conv2"), graph.users("conv1")
    ([('conv1', 0)], [('conv2', 0, 0)])
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import networkx as nx

from kgraph.errors import KGraphError, LayerNotFoundError, SurgeryError
from kgraph.indices import check_indices
from kgraph.ir import Node, Tensor

if TYPE_CHECKING:
    from kgraph.rules.registry import RuleSet

__all__ = ["GraphData", "LayerRef"]

LayerRef = Any  # a layer name, a nested path "outer/inner", or a keras Layer object


class GraphData:
    """The IR of one Keras model: layer calls as nodes, tensors as edges.

    Args:
        nx_graph: the networkx MultiDiGraph (see the module docstring for its layout).
        name: the Keras model's name, given back by `lower()`.
        inputs, outputs: the model's input and output structures with node names as
            leaves, and `input_names`, `output_names` those leaves in order.
        rules: the `kgraph.rules.RuleSet` the graph's nodes are read with.
        dtype_policy: the name of the model's own dtype policy (e.g. "mixed_float16"),
            given back by `lower()`; None leaves Keras's global policy.
    """

    def __init__(
        self,
        nx_graph: nx.MultiDiGraph,
        *,
        name: str,
        inputs: Any,
        outputs: Any,
        input_names: Sequence[str],
        output_names: Sequence[str],
        rules: RuleSet,
        dtype_policy: str | None = None,
    ) -> None:
        self._g = nx_graph
        self.dtype_policy = dtype_policy
        self.name = name
        self.inputs_struct = inputs
        self.outputs_struct = outputs
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.rules = rules
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

    def producers(self, name: str) -> list[tuple[str, int]]:
        """`(producer, output slot)` feeding each input slot of `name`, by slot."""
        # networkx's adjacency dict directly: edge views cost more than the walk itself
        found = {
            key: (src, data["src"])
            for src, edges in (self._g.pred[name] if name in self._g else {}).items()
            for key, data in edges.items()
        }
        return [found[slot] for slot in sorted(found)]

    def users(self, name: str, slot: int | None = None) -> list[tuple[str, int, int]]:
        """`(consumer, input slot, output slot)` for readers of output `slot` (any if None)."""
        return [
            (dst, key, data["src"])
            for dst, edges in (self._g.succ[name] if name in self._g else {}).items()
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

    def describe(self, name: str) -> str:
        """How messages name node `name`: `"'conv1' (Conv2D)"`, or for a model output
        `"model output 0 (from 'dense_3')"`."""
        node = self.node(name)
        if node.kind != "output":
            return node.describe()
        index = self.output_names.index(name) if name in self.output_names else "?"
        producers = self.producers(name)
        source = f" (from {producers[0][0]!r})" if producers else ""
        return f"model output {index}{source}"

    def find_within(self, prefix: str) -> list[str]:
        """Names of the nodes whose path lies inside `prefix` (`"block"` finds
        `"block/attention"`, ...), in topological order."""
        start = prefix.rstrip("/") + "/"
        return [n.name for n in self.nodes() if n.path.startswith(start)]

    def find_calls(self, layer: LayerRef, calls: Sequence[int] | None = None) -> list[str]:
        """Like `find`, restricted to the calls whose `call_index` is in `calls` (None: all)."""
        names = self.find(layer)
        if calls is None:
            return names
        by_index = {self.node(n).call_index: n for n in names}
        layer = self.node(names[0]).layer
        if not isinstance(calls, (list, tuple)):
            raise SurgeryError(
                f"calls {calls!r} do not select calls of layer {layer!r}; pass a list of its "
                f"call indices {sorted(by_index)}"
            )
        where = f"layer {layer!r}, whose calls are {sorted(by_index)}"
        wanted = check_indices(
            calls, max(by_index) + 1, where=where, what="call", negative=False, error=SurgeryError
        )
        for call in wanted:
            if call not in by_index:
                raise SurgeryError(f"call {call} is not a call of {where}")
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

    def copy(self, rules: RuleSet | None = None) -> GraphData:
        """An editable copy sharing the (immutable) records and arrays (of the same
        class), reading its nodes with `rules` if given."""
        new = type(self).__new__(type(self))
        new._g = self._g.copy()
        new.name = self.name
        new.inputs_struct = self.inputs_struct
        new.outputs_struct = self.outputs_struct
        new.input_names = list(self.input_names)
        new.output_names = list(self.output_names)
        new.rules = self.rules if rules is None else rules
        new.dtype_policy = self.dtype_policy
        new._frozen = False
        new._order = None
        new._cache = {}
        new._by_layer = {k: list(v) for k, v in self._by_layer.items()}
        new._by_path = {k: list(v) for k, v in self._by_path.items()}
        new._by_origin = {k: list(v) for k, v in self._by_origin.items()}
        return new

    def freeze(self) -> GraphData:
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
        """Remove a node and its edges; its users must be gone (or rewired) first."""
        self._check_editable()
        users = sorted({dst for dst, _, _ in self.users(name)})
        if users:
            raise KGraphError(
                f"cannot remove node {name!r}: {users} still read it; redirect or remove "
                "them first (graph.redirect_users)"
            )
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

    def __repr__(self) -> str:
        return f"<kgraph.{type(self).__name__} {self.name!r}: {len(self)} nodes>"
