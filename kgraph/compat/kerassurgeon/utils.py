"""kerassurgeon 0.2's `utils`: its public helpers, for Keras 3 models.

Same names and meanings; Keras 3 has no `layer.inbound_nodes`/`node.outbound_layer`,
so nodes are Keras 3 nodes (`node.operation` is the layer called). The checks
kerassurgeon built but never raised are raised here (`KerasSurgeonError`).

Example:
    >>> from kgraph.compat.kerassurgeon import utils
    >>> utils.find_activation_layer(model.get_layer("conv_1"), 0)
    (<Activation name=act_1, built=True>, 0)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np

from kgraph.compat.kerassurgeon.identify import _is_nonlinear, _mixes_channels
from kgraph.compat.kerassurgeon.surgeon import (
    KerasSurgeonError,
    model_nodes,
    select_node_indices,
)
from kgraph.errors import KGraphError
from kgraph.keras_utils import from_config, functional_of

__all__ = [
    "MeanCalculator",
    "NodeNotFoundError",
    "all_equal",
    "bool_to_index",
    "check_for_layer_reuse",
    "check_nodes_in_model",
    "clean_copy",
    "find_activation_layer",
    "find_nodes_in_model",
    "get_channels_attr",
    "get_model_nodes",
    "get_node_depth",
    "get_node_index",
    "get_one_tensor",
    "get_shallower_nodes",
    "single_element",
    "sort_x_by_y",
]


class NodeNotFoundError(KGraphError, KeyError):
    """A Keras node is not part of the model it was looked up in (kerassurgeon: KeyError)."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


def clean_copy(model: keras.Model) -> keras.Model:
    """A copy of `model` (from its config, with its weights) sharing no layer with it.

    Example:
        >>> copy = clean_copy(model)
    """
    new_model = from_config(type(model), model.get_config())
    new_model.set_weights(model.get_weights())
    for layer in new_model.layers:  # e.g. an adapted Normalization derives state from weights
        finalize = getattr(layer, "finalize_state", None)
        if callable(finalize):
            finalize()
    return new_model


def get_channels_attr(layer: keras.layers.Layer) -> str:
    """`"units"` or `"filters"`: the config key holding the layer's channel count.

    Example:
        >>> get_channels_attr(keras.layers.Dense(3))
        'units'
    """
    config = layer.get_config()
    for attr in ("units", "filters"):
        if attr in config:
            return attr
    raise KerasSurgeonError(
        f"layer {layer.name!r} ({type(layer).__name__}) has no channels of its own (no "
        "'units' or 'filters' in its config); pass a Dense- or Conv-like layer"
    )


def get_model_nodes(model: keras.Model) -> list[Any]:
    """Every Keras node (layer call) of `model`, producers before consumers.

    Example:
        >>> [node.operation.name for node in get_model_nodes(model)]
    """
    return model_nodes(model)


def get_node_depth(model: keras.Model, node: Any) -> int:
    """The depth of `node` in `model`: 0 for the calls producing the outputs.

    Raises `NodeNotFoundError` (a KeyError, as kerassurgeon raised) if `node` is not
    in `model`.

    Example:
        >>> get_node_depth(model, model.get_layer("dense_2")._inbound_nodes[0])
        0
    """
    for depth, nodes in functional_of(model)._nodes_by_depth.items():
        if any(n is node for n in nodes):
            return depth
    raise NodeNotFoundError(
        f"node {node!r} (a call of {getattr(node.operation, 'name', '?')!r}) is not contained "
        f"in model {model.name!r}; take nodes from get_model_nodes(model)"
    )


def check_for_layer_reuse(
    model: keras.Model, layers: Iterable[keras.layers.Layer] | None = None
) -> bool:
    """True if any of `layers` (default: all of the model's) is called more than once in `model`.

    Example:
        >>> check_for_layer_reuse(model)
        False
    """
    layers = model.layers if layers is None else layers
    return any(len(find_nodes_in_model(model, layer)) > 1 for layer in layers)


def find_nodes_in_model(model: keras.Model, layer: keras.layers.Layer) -> list[int]:
    """Indices into `layer._inbound_nodes` of the calls of `layer` that are in `model`.

    Example:
        >>> find_nodes_in_model(model, shared_dense)
        [0, 1]
    """
    return select_node_indices(model, layer, None)


def check_nodes_in_model(model: keras.Model, nodes: Sequence[Any]) -> list[bool]:
    """For each of `nodes`, whether it is a node of `model`.

    Example:
        >>> check_nodes_in_model(model, layer._inbound_nodes)
        [True]
    """
    in_model = {id(node) for node in model_nodes(model)}
    return [id(node) in in_model for node in nodes]


def get_shallower_nodes(node: Any) -> list[Any]:
    """The nodes that read an output of `node` (the calls one step nearer the outputs).

    Example:
        >>> get_shallower_nodes(dense_1._inbound_nodes[0])
        [<Node dense_2 ...>]
    """
    return [n for n in node.operation._outbound_nodes if any(p is node for p in n.parent_nodes)]


def get_node_index(node: Any) -> int:
    """The index of `node` among its layer's calls (`layer._inbound_nodes`).

    Example:
        >>> get_node_index(layer._inbound_nodes[1])
        1
    """
    for i, candidate in enumerate(node.operation._inbound_nodes):
        if candidate is node:
            return i
    raise NodeNotFoundError(f"node {node!r} is not among the calls of its operation")


def find_activation_layer(layer: keras.layers.Layer, node_index: int) -> tuple[Any, int]:
    """The first layer with a non-linear activation at or after call `node_index` of `layer`.

    Walks from `layer` towards the outputs through layers that keep its channels.
    Returns `(activation_layer, its node index)`. Raises `KerasSurgeonError` if the
    path branches, ends, meets a layer that mixes channels, or changes the shape.

    Example:
        >>> find_activation_layer(model.get_layer("conv_1"), 0)
        (<Activation name=act_1, built=True>, 0)
    """
    nodes = layer._inbound_nodes
    if not isinstance(node_index, int) or not 0 <= node_index < len(nodes):
        raise KerasSurgeonError(
            f"layer {layer.name!r} has calls 0..{len(nodes) - 1}, not node_index {node_index!r}"
        )
    node = nodes[node_index]
    output_shape = tuple(node.outputs[0].shape)
    maybe_layer, path = layer, [layer.name]
    while not _is_nonlinear(maybe_layer):
        next_nodes = get_shallower_nodes(node)
        if not next_nodes:
            raise KerasSurgeonError(
                f"no non-linear activation after layer {layer.name!r} (walked "
                f"{' -> '.join(path)} to an output)"
            )
        if len(next_nodes) > 1:
            raise KerasSurgeonError(
                f"The model must not branch between the chosen layer and the activation layer: "
                f"{maybe_layer.name!r} feeds {len(next_nodes)} calls (path {' -> '.join(path)})"
            )
        node = next_nodes[0]
        maybe_layer = node.operation
        path.append(maybe_layer.name)
        if _mixes_channels(maybe_layer):
            raise KerasSurgeonError(
                f"There is no nonlinear activation layer between {layer.name!r} and "
                f"{maybe_layer.name!r} ({type(maybe_layer).__name__}), which mixes channels"
            )
    if tuple(node.outputs[0].shape) != output_shape:
        raise KerasSurgeonError(
            f"The activation layer ({maybe_layer.name}) does not have the same output shape as "
            f"{layer.name}: {tuple(node.outputs[0].shape)} vs {output_shape}"
        )
    return maybe_layer, get_node_index(node)


def sort_x_by_y(x: Iterable[Any], y: Iterable[Any]) -> list[Any]:
    """`x` in the order that sorts `y`.

    Example:
        >>> sort_x_by_y(["a", "b", "c"], [3, 1, 2])
        ['b', 'c', 'a']
    """
    return [item for _, item in sorted(zip(y, x), key=lambda pair: pair[0])]


def _is_tensor(x: Any) -> bool:
    return keras.ops.is_tensor(x) or isinstance(x, keras.KerasTensor)


def single_element(x: Any) -> Any:
    """`x[0]` if `x` holds one element, else `x` (a tensor is returned as it is).

    Example:
        >>> single_element([5])
        5
    """
    if _is_tensor(x):
        return x
    return x[0] if len(x) == 1 else x


def get_one_tensor(x: Any) -> Any:
    """The one tensor in `x` (a tensor, or a list holding one).

    Example:
        >>> get_one_tensor([tensor]) is tensor
        True
    """
    if _is_tensor(x):
        return x
    if len(x) != 1:
        raise KerasSurgeonError(f"expected one tensor, got {len(x)}: {x!r}")
    return x[0]


def bool_to_index(x: Iterable[Any]) -> list[int]:
    """The indices of the true values.

    Example:
        >>> bool_to_index([True, False, True])
        [0, 2]
    """
    return [i for i, v in enumerate(x) if v]


def all_equal(iterator: Iterable[Any]) -> bool:
    """True if all items are equal (arrays compared element-wise); True when empty.

    Example:
        >>> all_equal([np.ones(2), np.ones(2)])
        True
    """
    items = iter(iterator)
    try:
        first = next(items)
    except StopIteration:
        return True
    return all(np.array_equal(first, rest) for rest in items)


class MeanCalculator:
    """A running mean over batches: sums along `sum_axis` and counts the rows.

    Example:
        >>> mean = MeanCalculator(sum_axis=0)
        >>> mean.add(np.array([[1, 2], [3, 4]]))
        >>> mean.calculate()
        array([2., 3.])
    """

    def __init__(self, sum_axis: int) -> None:
        self.values: Any = None
        self.n = 0
        self.sum_axis = sum_axis

    def add(self, v: Any) -> None:
        """Add the rows of `v` (rows along `sum_axis`)."""
        v = keras.ops.convert_to_numpy(v)
        total = v.sum(axis=self.sum_axis)
        self.values = total if self.values is None else self.values + total
        self.n += v.shape[self.sum_axis]

    def calculate(self) -> Any:
        """The mean of all rows added so far."""
        if self.n == 0:
            raise KerasSurgeonError(
                "MeanCalculator.calculate() was called before any add(): nothing to average"
            )
        return self.values / self.n
