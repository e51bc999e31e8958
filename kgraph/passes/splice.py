"""Helpers shared by the passes that delete, insert and replace layers."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import attrs
import keras

from kgraph.errors import SurgeryError
from kgraph.graph_data import GraphData
from kgraph.ir import Node, Slot, Tensor, slots_in
from kgraph.keras_utils import call_new_layer, lifted_tensor
from kgraph.rules.registry import RuleSet

__all__ = [
    "accepted_kwargs",
    "call_name",
    "check_new_layer",
    "new_layer_name",
    "new_layer_node",
    "single_input",
    "split_calls",
]

log = logging.getLogger(__name__)


def call_name(layer_name: str, index: int, calls: int) -> str:
    """Node name of call `index` of a layer called `calls` times."""
    return layer_name if calls == 1 else f"{layer_name}@{index}"


def check_new_layer(instance: Any, attribute: Any, layer: Any) -> None:
    """attrs validator: the `new_layer` option must be a Keras Layer instance, not a Model."""
    if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
        raise SurgeryError(
            f"{type(instance).__name__} needs new_layer to be a keras Layer instance (not a "
            f"Model or a class), got {type(layer).__name__}: {layer!r}"
        )


def new_layer_name(graph: GraphData, layer: keras.layers.Layer) -> str:
    """`layer.name`, or a free variant of it when the graph already uses that name."""
    name = graph.unique_name(layer.name)
    if name != layer.name:
        log.info(
            "layer name %r is taken in %r; the new layer is called %r", layer.name, graph.name, name
        )
    return name


def new_layer_node(
    layer: keras.layers.Layer,
    inputs: list[Tensor],
    *,
    name: str,
    index: int,
    calls: int,
    args: tuple[Any, ...] = (Slot(0),),
    kwargs: dict[str, Any] | None = None,
    weights: tuple[Any, ...] | None = None,
    rules: RuleSet,
) -> Node:
    """The node of call `index` of the new `layer` on `inputs`, its outputs inferred
    by its rule in `rules`.

    The layer is built for the tensors as they are now or, if its weights fit them
    instead, as they were lifted (the channels deleted since are sliced off later).
    `weights` (those of an earlier call) make every call of a shared new layer agree.
    """
    node = call_new_layer(
        layer,
        [inputs, [lifted_tensor(t) for t in inputs]],
        name=name,
        node_name=call_name(name, index, calls),
        call_index=index,
        args=args,
        kwargs=kwargs or {},
        weights=weights,
    )
    return attrs.evolve(node, outputs=rules.rule_for(node).infer(node, node.inputs))


def split_calls(graph: GraphData, names: list[str], suffix: str) -> list[str]:
    """Give the calls `names` of a shared layer a layer of their own; return their new names.

    The copy is called `<layer>_<suffix>` (kerassurgeon's convention for
    `delete_channels` on some nodes) and starts with the same weights.
    """
    first = graph.node(names[0])
    if len(graph.find(first.layer)) == len(names):
        return names
    layer = graph.unique_name(f"{first.layer}_{suffix}")
    renamed = []
    for index, name in enumerate(names):
        node = graph.node(name)
        new = attrs.evolve(
            node.with_config(name=layer),
            name=call_name(layer, index, len(names)),
            layer=layer,
            call_index=index,
            origin=None,
            path=layer,
        )
        graph.rename(name, new)
        renamed.append(new.name)
    log.info("calls %s of %r now use their own layer %r", names, first.layer, layer)
    return renamed


def accepted_kwargs(layer: keras.layers.Layer, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of an old call to keep for `layer`.

    Those holding tensors stay (their input slots stay connected); the others
    (`training=False`, ...) stay when `layer.call` accepts them.
    """
    parameters = inspect.signature(layer.call).parameters
    return {k: v for k, v in kwargs.items() if slots_in(v) or k in parameters}


def single_input(graph: GraphData, node: Node, action: str) -> tuple[str, int]:
    """The one `(producer, slot)` feeding `node`; `SurgeryError` when it has several."""
    producers = graph.producers(node.name)
    if node.kind != "layer" and node.kind != "op":
        raise SurgeryError(f"cannot {action} {node.describe()}: it is a model input")
    if len(producers) != 1:
        raise SurgeryError(
            f"cannot {action} {node.describe()}: it has {len(producers)} inputs, "
            "and only a layer with a single input can be spliced this way"
        )
    return producers[0]
