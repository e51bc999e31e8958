"""tfmot's entry points: `prune_low_magnitude`, `strip_pruning`, `prune_scope`.

`prune_low_magnitude(model)` returns a new model whose layers are wrapped in
`PruneLowMagnitude` (copies with the same weights: the input model is never
changed); `strip_pruning` returns a plain Keras model with the original layer names
and the masks multiplied into the weights.

Example:
    >>> pruned = prune_low_magnitude(model, pruning_schedule=PolynomialDecay(0.0, 0.5, 0, 1000))
    >>> pruned.compile("adam", "mse")
    >>> pruned.fit(x, y, epochs=10, callbacks=[UpdatePruningStep()])
    >>> final = strip_pruning(pruned)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from kgraph.compat.tfmot.errors import TfmotError
from kgraph.compat.tfmot.sparsity.keras.policy import PruningPolicy
from kgraph.compat.tfmot.sparsity.keras.schedules import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
)
from kgraph.compat.tfmot.sparsity.keras.wrapper import PruneLowMagnitude
from kgraph.keras_utils import from_config

__all__ = ["prune_low_magnitude", "prune_scope", "strip_pruning"]

_NOT_PRUNABLE = (
    "`prune_low_magnitude` can only prune an object of the following types: "
    "keras.models.Sequential, keras functional model, keras.layers.Layer, list of "
    "keras.layers.Layer. You passed an object of type: {input}."
)


def _is_graph_model(model: Any) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def _copy_layer(layer: keras.layers.Layer, transform: Callable[..., Any] | None = None) -> Any:
    """A new layer like `layer`, built alike, with its weights (`transform(source, value)`
    may change a weight's value on the way)."""
    new = from_config(type(layer), layer.get_config())
    build_config = layer.get_build_config() if layer.built else None
    if build_config:
        new.build_from_config(build_config)
    if layer.weights and len(new.weights) != len(layer.weights):
        raise TfmotError(
            f"cannot copy layer {layer.name!r} ({type(layer).__name__}): a copy built from its "
            f"config has {len(new.weights)} weights, the layer {len(layer.weights)}; give the "
            "layer a get_build_config()/build_from_config() that rebuilds all its weights"
        )
    for target, source in zip(new.weights, layer.weights):
        value = keras.ops.convert_to_numpy(source)
        target.assign(value if transform is None else transform(source, value))
    finalize = getattr(new, "finalize_state", None)
    if callable(finalize):
        finalize()
    return new


def _clone(model: keras.Model, clone_layer: Callable[[Any], Any]) -> keras.Model:
    """`model` rebuilt from `clone_layer(layer)` for each layer, not compiled."""
    if isinstance(model, keras.Sequential):
        layers = [clone_layer(layer) for layer in model.layers]
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):  # not built: no input shape yet
            inputs = None
        if inputs:
            spec = inputs[0]
            name = spec._keras_history.operation.name  # the InputLayer's name
            layers.insert(0, keras.Input(batch_shape=spec.shape, dtype=spec.dtype, name=name))
        return keras.Sequential(layers, name=model.name, trainable=model.trainable)
    # a fresh, uncompiled view of the graph, so that the clone is not compiled either
    source = keras.Model(model.input, model.output, name=model.name) if model.compiled else model
    clone = keras.models.clone_model(source, clone_function=clone_layer)
    if not model.trainable:
        clone.trainable = False
    return clone


def _check_model(model: Any, what: str) -> None:
    if not _is_graph_model(model):
        raise TfmotError(
            f"{what} works on Sequential and functional models; {model.name!r} is a "
            f"subclassed model ({type(model).__name__}). Build it as keras.Model(inputs, "
            "outputs) or keras.Sequential, or wrap its layers with prune_low_magnitude inside "
            "its definition"
        )


def prune_low_magnitude(
    to_prune: Any,
    pruning_schedule: PruningSchedule = ConstantSparsity(0.5, 0),  # noqa: B008
    block_size: Sequence[int] = (1, 1),
    block_pooling_type: str = "AVG",
    pruning_policy: PruningPolicy | None = None,
    sparsity_m_by_n: Sequence[int] | None = None,
    **kwargs: Any,
) -> Any:
    """Wrap a layer, a list of layers, or every layer of a model for pruning while training.

    A model comes back as a new, uncompiled model whose layers are copies (same
    weights) wrapped in `PruneLowMagnitude` — all layers tfmot knows, or those
    `pruning_policy.allow_pruning` accepts; the input model is not changed. A layer
    is wrapped as it is (for use in a model definition; `kwargs` go to the wrapper,
    e.g. `input_shape`). Train with `callbacks=[UpdatePruningStep()]`.

    Example:
        >>> pruned = prune_low_magnitude(model, pruning_schedule=ConstantSparsity(0.5, 0))
        >>> layer = prune_low_magnitude(keras.layers.Dense(10), input_shape=(20,))
    """
    params = {
        "pruning_schedule": pruning_schedule,
        "block_size": block_size,
        "block_pooling_type": block_pooling_type,
        "sparsity_m_by_n": sparsity_m_by_n,
    }
    if isinstance(to_prune, list):
        return [
            layer
            if isinstance(layer, PruneLowMagnitude)
            else from_config(type(layer), layer.get_config())
            if isinstance(layer, keras.layers.InputLayer)
            else PruneLowMagnitude(layer, **params)
            for layer in to_prune
        ]
    if isinstance(to_prune, keras.Model):
        if not _is_graph_model(to_prune):
            raise TfmotError(_NOT_PRUNABLE.format(input=type(to_prune).__name__))
        if pruning_policy is not None:
            pruning_policy.ensure_model_supports_pruning(to_prune)

        def wrap(layer: Any) -> Any:
            if isinstance(layer, keras.Model):
                _check_model(layer, "prune_low_magnitude")
                return prune_low_magnitude(layer, pruning_policy=pruning_policy, **params)
            if not isinstance(layer, keras.layers.Layer):
                return layer  # a keras.ops operation: no state to copy
            copy = _copy_layer(layer)
            if isinstance(layer, PruneLowMagnitude):
                return copy
            if pruning_policy is not None and not pruning_policy.allow_pruning(layer):
                return copy
            return PruneLowMagnitude(copy, **params)

        return _clone(to_prune, wrap)
    if isinstance(to_prune, keras.layers.Layer):
        return PruneLowMagnitude(to_prune, **params, **kwargs)
    raise TfmotError(_NOT_PRUNABLE.format(input=type(to_prune).__name__))


def strip_pruning(model: keras.Model) -> keras.Model:
    """A plain Keras model: each `PruneLowMagnitude` replaced by a copy of its layer
    (same name) whose weights are multiplied by the masks. `model` is not changed.

    Example:
        >>> final = strip_pruning(pruned)
        >>> final.get_layer("dense").kernel    # zeros where the masks are
    """
    if not isinstance(model, keras.Model):
        raise TfmotError(
            f"Expected model to be a `keras.Model` instance but got: {type(model).__name__} "
            f"{model!r}; strip_pruning takes the model prune_low_magnitude returned"
        )
    _check_model(model, "strip_pruning")

    def strip(layer: Any) -> Any:
        if isinstance(layer, keras.Model):
            return strip_pruning(layer)
        if not isinstance(layer, keras.layers.Layer):
            return layer
        if not isinstance(layer, PruneLowMagnitude):
            return _copy_layer(layer)
        masks = {id(weight): mask for weight, mask, _ in layer.pruning_vars}

        def bake(source: Any, value: Any) -> Any:
            mask = masks.get(id(source))
            return value if mask is None else value * keras.ops.convert_to_numpy(mask)

        return _copy_layer(layer.layer, bake)

    return _clone(model, strip)


def prune_scope() -> keras.saving.CustomObjectScope:
    """A scope in which pruned models deserialize (kept for tfmot code: kgraph registers
    `PruneLowMagnitude`, so loading works without it too).

    Example:
        >>> with prune_scope():
        ...     loaded = keras.saving.load_model("pruned.keras")
    """
    return keras.saving.CustomObjectScope(
        {
            "PruneLowMagnitude": PruneLowMagnitude,
            "ConstantSparsity": ConstantSparsity,
            "PolynomialDecay": PolynomialDecay,
        }
    )
