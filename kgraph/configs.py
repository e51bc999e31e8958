"""The config a lifted layer is rebuilt from: `get_config()`, or a repaired one.

`lower` rebuilds every layer with `cls.from_config(config)`. Keras' own layers'
configs always round-trip; some custom layers' do not (keras-hub 0.32: Gemma's
`RMSNormalization` and `CachedGemmaAttention` have no usable `get_config`,
`LlamaAttention`'s raises, `ViTPatchingAndEmbedding`'s has keys its constructor
refuses). For a layer outside Keras whose config does not rebuild it, kgraph
derives one from the constructor: every `__init__` parameter read from the
attribute of the same name (or with a leading underscore), the dtype policy by
name. Such a config is used only if a layer rebuilt from it, given the original
weights, computes what the original computes on random inputs for its call.

Example:
    >>> config = rebuild_config(layer, keras_node)   # get_config() when it round-trips
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Any

import keras
import numpy as np

from kgraph.errors import LiftError
from kgraph.keras_utils import from_config

__all__ = ["rebuild_config"]

log = logging.getLogger(__name__)

_PLAIN = (bool, int, float, str, type(None))
_MISSING = object()


def _is_keras_own(operation: Any) -> bool:
    return type(operation).__module__.startswith("keras.")


def _round_trips(operation: Any, config: dict[str, Any]) -> bool:
    try:
        from_config(type(operation), config)
    except Exception:  # a constructor refusing its own config raises anything
        return False
    return True


def _attribute(layer: Any, name: str) -> Any:
    for candidate in (name, f"_{name}"):
        value = layer.__dict__.get(candidate, _MISSING)
        if value is not _MISSING:
            return value
    return _MISSING


def _constructor_config(layer: Any) -> dict[str, Any] | None:
    """The constructor arguments read back from the layer's attributes (None when a
    required one is missing)."""
    config: dict[str, Any] = {}
    parameters = inspect.signature(type(layer).__init__).parameters
    for name, parameter in parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        value = _attribute(layer, name)
        if value is _MISSING:
            if parameter.default is parameter.empty:
                return None
            continue
        if isinstance(value, keras.layers.Layer):
            return None  # a sublayer handed in: not a plain constructor argument
        if isinstance(
            value,
            (
                keras.initializers.Initializer,
                keras.regularizers.Regularizer,
                keras.constraints.Constraint,
            ),
        ):
            value = keras.saving.serialize_keras_object(value)  # so that the layer saves
        config[name] = value
    config["name"] = layer.name
    config["trainable"] = layer.trainable
    config["dtype"] = layer.dtype_policy.name
    return config


def _probe(tensor: Any, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(2 if i == 0 else (d or 5) for i, d in enumerate(tensor.shape))
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    if "int" in dtype or dtype == "bool":
        return np.ones(shape, dtype=dtype)
    return rng.normal(size=shape).astype(dtype)


def _same_function(original: Any, config: dict[str, Any], keras_node: Any) -> bool:
    """Whether a layer rebuilt from `config` with the original's weights computes what
    `original` computes for this call, on random inputs."""
    rng = np.random.default_rng(0)
    values = {id(t): _probe(t, rng) for t in keras_node.input_tensors}

    def fill(structure: Any) -> Any:
        return keras.tree.map_structure(
            lambda v: values[id(v)] if isinstance(v, keras.KerasTensor) else v, structure
        )

    args, kwargs = fill(tuple(keras_node.arguments.args)), fill(dict(keras_node.arguments.kwargs))
    try:
        rebuilt = from_config(type(original), config)
        expected = keras.tree.flatten(original(*args, **kwargs))
        rebuilt(*args, **kwargs)  # builds it
        rebuilt.set_weights(original.get_weights())
        got = keras.tree.flatten(rebuilt(*args, **kwargs))
    except Exception as error:  # any failure means the config does not rebuild it
        log.debug("config of %s does not rebuild it: %s", original.name, error)
        return False
    return len(expected) == len(got) and all(
        np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-5)
        for a, b in zip(expected, got)
    )


def rebuild_config(operation: Any, keras_node: Any) -> dict[str, Any] | None:
    """The config `operation` is rebuilt from: its own, or one derived from its
    constructor (checked on this call). None when neither works (`LiftError` says why
    for a layer whose `get_config` fails)."""
    try:
        config = dict(operation.get_config())
        failure: Exception | None = None
    except Exception as error:  # custom layers without get_config raise various errors
        config, failure = None, error
    if not isinstance(operation, keras.layers.Layer) or _is_keras_own(operation):
        return config
    if config is not None and _round_trips(operation, copy.deepcopy(config)):
        return config
    derived = _constructor_config(operation)
    if derived is not None and _same_function(operation, derived, keras_node):
        log.info("lift: %s is rebuilt from its constructor's arguments", operation.name)
        return derived
    why = f"get_config() raised {failure}" if failure else "its get_config() does not rebuild it"
    raise LiftError(
        f"layer {operation.name!r} ({type(operation).__name__}) cannot be rebuilt: {why}, "
        "and its constructor arguments could not be read back from its attributes; "
        "implement get_config() for it"
    )
