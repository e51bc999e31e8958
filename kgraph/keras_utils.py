"""Small helpers that read Keras objects into IR records (used by lift and splices)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np

from kgraph.errors import LiftError, SurgeryError
from kgraph.ir import Node, Slot, Tensor

__all__ = [
    "call_new_layer",
    "fill_template",
    "functional_of",
    "layer_weight_names",
    "nodes_in_order",
    "tensor_record",
]


def functional_of(model: Any) -> Any:
    """The functional graph of `model` (a Sequential's inner Functional), or `LiftError`."""
    from keras.src.models.functional import Functional

    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise LiftError(
                f"Sequential model {model.name!r} is not built, so it has no graph yet; "
                "start it with keras.Input(shape=...) or call model.build(input_shape) first"
            )
        return functional
    if isinstance(model, Functional):
        return model
    if isinstance(model, keras.Model):
        raise LiftError(
            f"model {model.name!r} ({type(model).__name__}) is a subclassed model: its call() is "
            "Python code, not a graph of layers kgraph can read. Build it as a functional model "
            "(keras.Model(inputs, outputs)) or a Sequential model, then lift that"
        )
    raise LiftError(f"lift() needs a keras.Model, got {type(model).__name__}")


def nodes_in_order(functional: Any) -> Iterator[Any]:
    """The Keras nodes of `functional`, producers before consumers."""
    by_depth = functional._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        yield from by_depth[depth]


def layer_weight_names(layer: keras.layers.Layer) -> tuple[str, ...]:
    """Names of `layer.weights`: `kernel`, or `query/kernel` where plain names repeat."""
    plain = [w.name for w in layer.weights]
    if len(set(plain)) == len(plain):
        return tuple(plain)
    names = []
    for w in layer.weights:
        parts = w.path.split("/")
        if layer.name in parts[:-1]:
            parts = parts[len(parts) - 1 - parts[::-1].index(layer.name) :]
        names.append("/".join(parts[-2:]) if len(parts) > 1 else parts[0])
    return tuple(names)


def tensor_record(tensor: Any) -> Tensor:
    """A `Tensor` record (shape and dtype only) for a KerasTensor."""
    return Tensor(shape=tuple(tensor.shape), dtype=str(tensor.dtype))


def fill_template(template: Any, values: Sequence[Any]) -> Any:
    """`template` with every `Slot(i)` replaced by `values[i]`."""
    return keras.tree.map_structure(
        lambda leaf: values[leaf.index] if isinstance(leaf, Slot) else leaf, template
    )


def call_new_layer(
    layer: keras.layers.Layer,
    inputs: Sequence[Tensor],
    *,
    name: str,
    node_name: str,
    call_index: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Node:
    """The IR node of a user's new layer called on `inputs` (the layer is not touched).

    A fresh copy of `layer` is built on the input shapes; the weights come from
    `layer` when it is built, else from the copy's initialisers.
    """
    if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
        raise SurgeryError(
            f"the new layer must be a keras Layer (not a Model), got {type(layer).__name__}"
        )
    config = {**layer.get_config(), "name": name}
    clone = type(layer).from_config(config)
    symbolic = [keras.KerasTensor(shape=t.shape, dtype=t.dtype) for t in inputs]
    try:
        outputs = clone(*fill_template(args, symbolic), **fill_template(kwargs, symbolic))
    except Exception as error:  # Keras raises many kinds of errors for bad shapes
        shapes = ", ".join(str(t.shape) for t in inputs)
        raise SurgeryError(
            f"new layer {layer.name!r} ({type(layer).__name__}) cannot be called on "
            f"{shapes}: {error}"
        ) from error
    weights = [np.asarray(w) for w in clone.get_weights()]
    if layer.built and layer.weights:
        given = layer.get_weights()
        if [w.shape for w in given] != [w.shape for w in weights]:
            raise SurgeryError(
                f"new layer {layer.name!r} ({type(layer).__name__}) was built with weights "
                f"of shapes {[w.shape for w in given]}, but here it needs "
                f"{[w.shape for w in weights]}; pass an unbuilt layer or build it for this input"
            )
        weights = given
    return Node(
        name=node_name,
        kind="layer",
        cls=type(layer),
        config=clone.get_config(),
        layer=name,
        call_index=call_index,
        args=args,
        kwargs=kwargs,
        weights=tuple(weights),
        weight_names=layer_weight_names(clone),
        inputs=tuple(inputs),
        outputs=tuple(tensor_record(t) for t in keras.tree.flatten(outputs)),
        path=name,
    )
