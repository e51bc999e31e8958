"""`lower`: generate a fresh functional `keras.Model` from a `GraphData`.

Walking the IR in topological order, each layer is created anew from its config
(one object per layer, called once per call) and called on the new tensors; its
variables are created straight from the IR's weights, so no initialiser runs for
values that would be overwritten. No layer object of the lifted model is reused.

Example:
    >>> model2 = kgraph.lift(model).lower()
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import keras

from kgraph.errors import LowerError, keras_message
from kgraph.graph_data import GraphData
from kgraph.ir import LAMBDA_FUNCTION, Node, same_layer
from kgraph.keras_utils import fill_template, from_config
from kgraph.weight_feed import build_layer

__all__ = ["lower"]


def _create(node: Node) -> Any:
    try:
        layer = from_config(node.cls, node.config)
    except Exception as error:  # Keras raises many error types from constructors
        raise LowerError(
            f"could not create {node.describe()} from its config: {keras_message(error)}"
        ) from error
    function = node.meta.get(LAMBDA_FUNCTION)
    if function is not None:  # the lifted Lambda's own function, with its globals
        layer.function = function
    return layer


def _build(node: Node, values: list[Any]) -> tuple[Any, Any]:
    try:
        built = build_layer(
            lambda: _create(node), lambda layer: _call(layer, node, values), node.stored_weights
        )
    except ValueError as error:  # set_weights of a layer whose weights do not line up
        raise LowerError(
            f"weights of {node.describe()} do not fit the layer: {keras_message(error)}"
            + _sharding_hint()
        ) from error
    return built.layer, built.outputs


def _sharding_hint() -> str:
    distribution = keras.distribution.distribution()
    if getattr(distribution, "_layout_map", None) is None:
        return ""
    return (
        f"; under {type(distribution).__name__}'s layout map every sharded dimension must "
        "divide by its mesh axis: delete channels in multiples of it (prune(..., "
        "round_to=<axis size>), DeleteChannels(..., round_to=<axis size>))"
    )


def _finalize(layer: Any) -> None:
    finalize = getattr(layer, "finalize_state", None)
    if callable(finalize):  # e.g. Normalization derives its mean/variance from weights
        finalize()


def _call(layer: Any, node: Node, values: list[Any]) -> Any:
    try:
        return layer(*fill_template(node.args, values), **fill_template(dict(node.kwargs), values))
    except Exception as error:  # Keras raises many error types from calls
        raise LowerError(
            f"calling {node.describe()} failed while lowering: {keras_message(error)}"
        ) from error


def lower(graph: GraphData) -> keras.Model:
    """A new functional `keras.Model` computing what `graph` describes.

    Raises `LowerError` when a node cannot be rebuilt, or when the calls of a
    shared layer no longer agree on config and weights.
    """
    tensors: dict[tuple[str, int], Any] = {}
    layers: dict[str, tuple[Any, Node]] = {}
    for name in graph.topological_order():
        node = graph.node(name)
        if node.kind == "output":
            continue
        if node.kind == "input":
            tensors[(name, 0)] = _create(node).output
            continue
        values = [tensors[p] for p in graph.producers(name)]
        if node.layer in layers:
            layer, first = layers[node.layer]
            if not same_layer(first, node):
                raise LowerError(
                    f"calls {first.name!r} and {node.name!r} of shared layer {node.layer!r} "
                    f"({node.class_name}) were changed differently, so one layer cannot serve "
                    "both; make the same change to every call"
                )
            outputs = _call(layer, node, values)
        else:
            # Build the layer with its IR weights as initial values: no initialiser runs.
            layer, outputs = _build(node, values)
            layers[node.layer] = (layer, node)
            _finalize(layer)
        dense = not any(getattr(v, "sparse", False) for v in values)
        for slot, tensor in enumerate(keras.tree.flatten(outputs)):
            if dense and getattr(tensor, "sparse", False):
                # Keras 3.15 marks `x * constant` sparse (it takes a constant for a sparse
                # operand); no sparse input, no sparse output. The tensor is ours.
                tensor._sparse = False
            tensors[(name, slot)] = tensor
    inputs = [tensors[(n, 0)] for n in graph.input_names]
    outputs = [tensors[graph.producers(n)[0]] for n in graph.output_names]
    with recursion_for(depth(graph)):  # Keras walks a functional graph recursively
        try:
            model = keras.Model(
                inputs=keras.tree.pack_sequence_as(graph.inputs_struct, inputs),
                outputs=keras.tree.pack_sequence_as(graph.outputs_struct, outputs),
                name=graph.name,
            )
        except RecursionError as error:
            raise LowerError(
                f"Keras ran out of recursion building the {depth(graph)}-layer-deep model "
                f"{graph.name!r}; raise sys.setrecursionlimit (it is "
                f"{sys.getrecursionlimit()} now)"
            ) from error
    if graph.dtype_policy is not None:  # e.g. mixed_float16: compile() adds loss scaling
        model.dtype_policy = graph.dtype_policy
    return model


def depth(graph: GraphData) -> int:
    """The number of nodes on the longest path from an input to an output."""
    longest: dict[str, int] = {}
    for name in graph.topological_order():
        producers = graph.producers(name)
        longest[name] = 1 + max((longest[src] for src, _ in producers), default=0)
    return max(longest.values(), default=0)


@contextlib.contextmanager
def recursion_for(layers: int) -> Iterator[None]:
    """Room for Keras to recurse through `layers` layers (a few frames each), for the
    duration of the block; the limit is set back afterwards."""
    before = sys.getrecursionlimit()
    needed = 8 * layers + 1000
    if needed > before:
        sys.setrecursionlimit(needed)
    try:
        yield
    finally:
        if needed > before:
            sys.setrecursionlimit(before)
