"""`Surgeon`: kerassurgeon's batch of surgery jobs, run as one kgraph pipeline.

Every job becomes one kgraph pass (`DeleteLayer`, `InsertLayer`, `ReplaceLayer`,
`DeleteChannels`); `operate()` runs them all in a single `Graph.apply`, so channel
indices in every job refer to the channels of the original model. Jobs are checked
when they are added, so a bad job fails at its `add_job` line.

Example:
    >>> from kgraph.compat.kerassurgeon import Surgeon
    >>> surgeon = Surgeon(model)
    >>> surgeon.add_job("delete_channels", model.get_layer("conv_a"), channels=[0, 3])
    >>> surgeon.add_job("delete_channels", "conv_b", channels=[0, 3])
    >>> surgeon.add_job("delete_layer", "dropout")
    >>> new_model = surgeon.operate()
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import keras

from kgraph.errors import KGraphError, LayerNotFoundError
from kgraph.graph import Graph
from kgraph.keras_utils import functional_of, nodes_in_order
from kgraph.lift import lift
from kgraph.passes import DeleteChannels, DeleteLayer, InsertLayer, Pass, ReplaceLayer

__all__ = ["KerasSurgeonError", "Surgeon", "model_layer", "select_node_indices"]

log = logging.getLogger(__name__)

VALID_JOBS = ("delete_layer", "insert_layer", "replace_layer", "delete_channels")


class KerasSurgeonError(KGraphError, ValueError):
    """A kerassurgeon-style call was given bad arguments (kerassurgeon raised ValueError)."""


# ---------------------------------------------------------------- Keras helpers


def model_nodes(model: keras.Model) -> list[Any]:
    """The Keras nodes (layer calls) of `model`, producers before consumers."""
    return list(nodes_in_order(functional_of(model)))


def model_layer(model: keras.Model, layer: Any) -> keras.layers.Layer:
    """`layer` (a name or a Layer) as a Layer directly in `model`; `LayerNotFoundError` if not."""
    if isinstance(layer, str):
        for candidate in model.layers:
            if candidate.name == layer:
                return candidate
        names = [candidate.name for candidate in model.layers]
        raise LayerNotFoundError(
            f"model {model.name!r} has no layer {layer!r} (its layers are {names}); "
            "pass the name or the Layer object of one of them"
        )
    if not isinstance(layer, keras.layers.Layer):
        raise KerasSurgeonError(
            f"expected a layer name or a keras Layer, got {type(layer).__name__}: {layer!r}"
        )
    if not any(candidate is layer for candidate in model.layers):
        raise LayerNotFoundError(
            f"layer {layer.name!r} ({type(layer).__name__}) is not a layer of model "
            f"{model.name!r}; pass a Layer object taken from this model, or its name"
        )
    return layer


def select_node_indices(
    model: keras.Model, layer: keras.layers.Layer, node_indices: Iterable[int] | None
) -> list[int]:
    """kerassurgeon's node selection: indices into `layer._inbound_nodes` that are in `model`.

    None or empty selects every call of `layer` in `model`. Duplicates, non-integers
    and indices of calls outside `model` raise `KerasSurgeonError`.
    """
    in_model_ids = {id(node) for node in model_nodes(model)}
    in_model = [i for i, node in enumerate(layer._inbound_nodes) if id(node) in in_model_ids]
    if node_indices is None:
        return in_model
    if isinstance(node_indices, (str, bytes)) or not isinstance(node_indices, Iterable):
        raise KerasSurgeonError(
            f"node_indices must be a list of integers, got {node_indices!r} for layer "
            f"{layer.name!r}; its calls in model {model.name!r} are node_indices {in_model}"
        )
    indices = list(node_indices)
    if not indices:
        return in_model
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise KerasSurgeonError(
                f"node index {i!r} is not an integer (layer {layer.name!r}); "
                f"its calls in model {model.name!r} are node_indices {in_model}"
            )
    indices = [int(i) for i in indices]
    duplicates = sorted({i for i in indices if indices.count(i) > 1})
    if duplicates:
        raise KerasSurgeonError(
            f"node_indices {indices} contains duplicate values {duplicates} (layer "
            f"{layer.name!r}); list each call once"
        )
    outside = [i for i in indices if i not in in_model]
    if outside:
        raise KerasSurgeonError(
            f"node_indices {outside} are not calls of layer {layer.name!r} in model "
            f"{model.name!r}; its calls in this model are node_indices {in_model} "
            f"(indices into layer._inbound_nodes)"
        )
    return indices


def match_calls(model: keras.Model, graph: Graph) -> dict[int, str]:
    """`id(keras node)` -> node name in `graph` (lifted from `model`), for top-level calls.

    Calls are matched by structure (same layer, same producers), so the result does
    not depend on how lift numbers the calls of a shared layer. Calls that read from
    a nested model are left out.
    """
    functional = functional_of(model)
    where: dict[int, tuple[str, int]] = {
        id(tensor): (name, 0) for tensor, name in zip(functional.inputs, graph.input_names)
    }
    taken: set[str] = set()
    matched: dict[int, str] = {}
    for knode in model_nodes(model):
        operation = knode.operation
        if knode.is_input or isinstance(operation, (keras.layers.InputLayer, keras.Model)):
            continue
        sources = [where.get(id(tensor)) for tensor in knode.input_tensors]
        if None in sources:
            continue
        try:
            candidates = graph.find(operation)
        except KGraphError:
            continue
        for name in candidates:
            if name not in taken and graph.producers(name) == sources:
                taken.add(name)
                matched[id(knode)] = name
                for slot, tensor in enumerate(knode.outputs):
                    where[id(tensor)] = (name, slot)
                break
    return matched


# ---------------------------------------------------------------- Surgeon


class Surgeon:
    """Collects surgery jobs on `model` and performs them all at once.

    Args:
        model: a functional or Sequential Keras model. It is only read: `operate()`
            builds a new, independent model.
        copy: accepted for kerassurgeon compatibility and ignored; kgraph never
            modifies `model` and never shares layers between the old and new model.

    Example:
        >>> surgeon = Surgeon(model)
        >>> surgeon.add_job("delete_channels", "dense_1", channels=[0, 2])
        >>> surgeon.add_job("insert_layer", "dense_2", new_layer=keras.layers.Dropout(0.2))
        >>> new_model = surgeon.operate()
    """

    valid_jobs: tuple[str, ...] = VALID_JOBS

    def __init__(self, model: keras.Model, copy: bool | None = None) -> None:
        if copy is not None:
            log.debug("copy=%r is ignored: kgraph always builds an independent model", copy)
        self.model = model
        self._graph = lift(model)
        self._passes: list[Pass] = []
        self._claimed: dict[str, str] = {}  # node name -> description of the job on it
        self._calls: dict[int, str] | None = None

    @property
    def jobs(self) -> tuple[Pass, ...]:
        """The kgraph passes queued so far, in the order the jobs were added."""
        return tuple(self._passes)

    @property
    def nodes(self) -> list[Any]:
        """The Keras nodes (layer calls) that have a job, in the order the jobs were added.

        As kerassurgeon's `Surgeon.nodes`: `nodes[i].operation` is the layer, and
        `layer._inbound_nodes.index(node)` the call's node index. Calls of layers inside
        a nested model are not nodes of the model and are left out.

        Example:
            >>> surgeon.add_job("delete_channels", "dense_1", channels=[0])
            >>> surgeon.nodes[0].operation.name
            'dense_1'
        """
        if self._calls is None:
            self._calls = match_calls(self.model, self._graph)
        by_name = {
            self._calls[id(node)]: node
            for node in model_nodes(self.model)
            if id(node) in self._calls
        }
        return [by_name[name] for name in self._claimed if name in by_name]

    def add_job(
        self,
        job: str,
        layer: keras.layers.Layer | str,
        *,
        channels: Sequence[int] | None = None,
        new_layer: keras.layers.Layer | None = None,
        node_indices: Sequence[int] | None = None,
    ) -> None:
        """Queue a job on `layer` (a Layer of the model or its name).

        Jobs:
            'delete_layer': delete `layer`, connecting its input to its consumers.
            'insert_layer': insert `new_layer` before `layer`.
            'replace_layer': replace `layer` with `new_layer`.
            'delete_channels': delete `channels` (units, filters) of `layer`; with
                `node_indices` selecting some of a shared layer's calls, those calls
                get their own copy of the layer named `<layer>_delete_channels`.

        Args:
            node_indices: which calls of a shared layer (indices into
                `layer._inbound_nodes`, as in kerassurgeon); None for all its calls
                in the model. At most one job may touch each call.

        Raises `KerasSurgeonError` (or another `KGraphError`) for an unknown job,
        a missing or unneeded argument, bad `node_indices`, a call that already has
        a job, or a job the core cannot do (bad channels, a layer with several
        inputs, ...). Nothing is queued when it raises.
        """
        if job not in VALID_JOBS:
            raise KerasSurgeonError(
                f"{job!r} is not a recognised job; valid jobs are {', '.join(VALID_JOBS)}"
            )
        where = f"add_job({job!r}, {_layer_label(layer)})"
        if job == "delete_channels":
            if channels is None:
                raise KerasSurgeonError(
                    f"{where} needs channels=[...]: the indices of the channels to delete"
                )
            if new_layer is not None:
                raise KerasSurgeonError(f"{where} takes no new_layer; it deletes channels")
        else:
            if channels is not None:
                raise KerasSurgeonError(f"{where} takes no channels; only 'delete_channels' does")
            if job in ("insert_layer", "replace_layer") and new_layer is None:
                raise KerasSurgeonError(f"{where} needs new_layer=<an unused keras Layer>")
            if job == "delete_layer" and new_layer is not None:
                raise KerasSurgeonError(f"{where} takes no new_layer; it deletes the layer")
        names, layer_name, calls = self._select(layer, node_indices)
        busy = [name for name in names if name in self._claimed]
        if busy:
            raise KerasSurgeonError(
                f"Cannot apply several jobs to the same node: {where} selects call(s) "
                f"{busy} of layer {layer_name!r}, which already have the job "
                f"{self._claimed[busy[0]]}; give each call at most one job"
            )
        if job == "delete_channels":
            new_pass: Pass = DeleteChannels(layer_name, channels, calls=calls)
        elif job == "delete_layer":
            new_pass = DeleteLayer(layer_name, calls=calls)
        elif job == "insert_layer":
            new_pass = InsertLayer(layer_name, new_layer, calls=calls)
        else:
            new_pass = ReplaceLayer(layer_name, new_layer, calls=calls)
        new_pass(self._graph)  # check it now, on its own, so a bad job fails here
        self._passes.append(new_pass)
        for name in names:
            self._claimed[name] = where
        log.debug("queued %s as %r", where, new_pass)

    def operate(self) -> keras.Model:
        """Perform every queued job in one kgraph pipeline and return the new model.

        The model given to the Surgeon is not changed, also when this raises.
        """
        graph = self._graph.apply(*self._passes)
        log.info("performed %d job(s) on model %r", len(self._passes), self.model.name)
        return graph.lower()

    def _select(
        self, layer: Any, node_indices: Sequence[int] | None
    ) -> tuple[list[str], str, tuple[int, ...] | None]:
        """Node names, graph layer name and kgraph `calls` selected by a job."""
        names = self._graph.find(layer)
        layer_name = self._graph.node(names[0]).layer
        if node_indices is None:
            if len(names) == len(self._graph.find(layer_name)):
                return names, layer_name, None
            # `layer` named one call ("dense@1"): select just that call
            return names, layer_name, tuple(self._graph.node(n).call_index for n in names)
        keras_layer = self._keras_layer(layer, layer_name)
        indices = select_node_indices(self.model, keras_layer, node_indices)
        if self._calls is None:
            self._calls = match_calls(self.model, self._graph)
        selected = []
        for i in indices:
            name = self._calls.get(id(keras_layer._inbound_nodes[i]))
            if name is None or name not in names:
                raise KerasSurgeonError(
                    f"call {i} of layer {layer_name!r} reads from a nested model, so "
                    "node_indices cannot select it; use kgraph's passes with calls= instead"
                )
            selected.append(name)
        if len(selected) == len(names):
            return names, layer_name, None
        calls = tuple(sorted(self._graph.node(name).call_index for name in selected))
        return selected, layer_name, calls

    def _keras_layer(self, layer: Any, layer_name: str) -> keras.layers.Layer:
        try:
            return model_layer(self.model, layer)
        except LayerNotFoundError:
            raise KerasSurgeonError(
                f"node_indices can only select calls of a layer directly in model "
                f"{self.model.name!r}, and {_layer_label(layer)} is not one (a layer inside a "
                "nested model, or the node name of a single call); use kgraph's passes with "
                "calls= (see graph.find and graph.node(name).call_index)"
            ) from None


def _layer_label(layer: Any) -> str:
    return repr(layer if isinstance(layer, str) else getattr(layer, "name", layer))
