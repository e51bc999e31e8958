"""Small helpers that read Keras objects into IR records (used by lift and splices)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import keras
import numpy as np

from kgraph.errors import LiftError, SurgeryError, keras_message
from kgraph.ir import LAMBDA_FUNCTION, Node, Slot, Tensor, full_mask, lifted_shape

__all__ = [
    "call_new_layer",
    "fill_template",
    "from_config",
    "functional_of",
    "layer_weight_names",
    "lifted_tensor",
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
    """Names of `layer.weights`: `kernel`, or the shortest unique ends of their paths
    where plain names repeat (`query/kernel`, `forward_lstm/lstm_cell/kernel`)."""
    paths = []
    for w in layer.weights:
        parts = w.path.split("/")
        owners = [i for i, part in enumerate(parts[:-1]) if part == layer.name]
        paths.append(parts[owners[-1] + 1 :] if owners else parts)  # after the layer's name
    for length in range(1, max((len(p) for p in paths), default=1) + 1):
        names = ["/".join(p[-length:]) for p in paths]
        if len(set(names)) == len(names):
            return tuple(names)
    return tuple(f"{i}:{'/'.join(p)}" for i, p in enumerate(paths))


def tensor_record(tensor: Any) -> Tensor:
    """A `Tensor` record (shape and dtype only) for a KerasTensor."""
    return Tensor(shape=tuple(tensor.shape), dtype=str(tensor.dtype))


def fill_template(template: Any, values: Sequence[Any]) -> Any:
    """`template` with every `Slot(i)` replaced by `values[i]`."""
    return keras.tree.map_structure(
        lambda leaf: values[leaf.index] if isinstance(leaf, Slot) else leaf, template
    )


def from_config(cls: type, config: Mapping[str, Any]) -> Any:
    """`cls.from_config(config)`, on a deep copy, outside Keras' safe mode.

    The configs come from live layers of this process (never from a file), so a
    `Lambda` may be rebuilt, as `keras.models.clone_model` would.
    """
    try:
        from keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # pragma: no cover - older Keras 3
        scope: Any = contextlib.nullcontext()
    else:
        scope = SafeModeScope(False)
    with scope:
        return cls.from_config(copy.deepcopy(dict(config)))


def lifted_tensor(tensor: Tensor) -> Tensor:
    """`tensor` as it was before any of its channels were deleted."""
    if tensor.mask is None or tensor.mask.all():
        return tensor
    return attrs.evolve(tensor, shape=lifted_shape(tensor), mask=full_mask(tensor.mask.size))


def _describe(layer: Any) -> str:
    return f"new layer {getattr(layer, 'name', '?')!r} ({type(layer).__name__})"


def _build(layer: Any, config: dict[str, Any], inputs: Sequence[Tensor], args: Any, kwargs: Any):
    """A fresh copy of `layer` called (and so built) on symbolic `inputs`, and its outputs."""
    try:
        clone = from_config(type(layer), config)
        if isinstance(layer, keras.layers.Lambda):
            clone.function = layer.function  # with its globals (see ir.LAMBDA_FUNCTION)
        symbolic = [keras.KerasTensor(shape=t.shape, dtype=t.dtype) for t in inputs]
        outputs = clone(*fill_template(args, symbolic), **fill_template(kwargs, symbolic))
    except Exception as error:  # Keras raises many kinds of errors for bad configs or shapes
        shapes = ", ".join(str(t.shape) for t in inputs)
        raise SurgeryError(
            f"{_describe(layer)} cannot be built for {shapes}: {keras_message(error)}"
        ) from error
    return clone, keras.tree.flatten(outputs)


def call_new_layer(
    layer: keras.layers.Layer,
    candidates: Sequence[Sequence[Tensor]],
    *,
    name: str,
    node_name: str,
    call_index: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    weights: Sequence[np.ndarray] | None = None,
) -> Node:
    """The IR node of a user's new layer (the layer object itself is not touched).

    A fresh copy of `layer` is built for the first of `candidates` (input tensors
    in order of preference) that its weights fit: `weights` if given (another
    call of the same new layer), else the layer's own weights if it is built,
    else the copy's initialisers, built for the first candidate.
    """
    if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
        raise SurgeryError(
            f"the new layer must be a keras Layer instance (not a Model), got "
            f"{type(layer).__name__}: {layer!r}"
        )
    try:
        config = {**layer.get_config(), "name": name}
    except Exception as error:  # custom layers without get_config raise various errors
        raise SurgeryError(
            f"{_describe(layer)} has no usable get_config(): {keras_message(error)}"
        ) from error
    if weights is None and layer.built and layer.weights:
        weights = layer.get_weights()
    needed = []
    for inputs in candidates:
        clone, outputs = _build(layer, config, inputs, args, kwargs)
        shapes = [tuple(w.shape) for w in clone.weights]
        if weights is None:
            weights = clone.get_weights()
        if [np.shape(w) for w in weights] == shapes:
            break
        needed.append(shapes)
    else:
        raise SurgeryError(
            f"{_describe(layer)} has weights of shapes {[np.shape(w) for w in weights]}, but "
            f"here it needs {' or '.join(map(str, needed))}; pass an unbuilt layer or build "
            "it for this input"
        )
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
        outputs=tuple(tensor_record(t) for t in outputs),
        path=name,
        meta={LAMBDA_FUNCTION: layer.function} if isinstance(layer, keras.layers.Lambda) else {},
    )
