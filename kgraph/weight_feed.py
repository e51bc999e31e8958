"""Create a new layer's variables straight from given arrays, skipping its initialisers.

Keras builds a layer by calling `add_weight(shape, initializer, ...)` for every
variable, and the initialiser runs (random numbers for a kernel) even when
`set_weights` overwrites the values right after. `build_layer` avoids that without
touching any Keras class: it creates and builds the layer inside a
`keras.StatelessScope(initialize_variables=False)`, where Keras creates variables
*uninitialised* (their initialiser is only recorded), and then initialises each
new variable from kgraph's array instead. The scope, and Keras' list of
uninitialised variables, belong to the calling thread, so layers that other
threads build at the same time are not affected.

When the new layer's `weights` do not line up with the arrays (a layer that
creates its variables in another order), every variable is initialised by its own
initialiser and the arrays are then set with `set_weights`, which is always correct.

A weight that is a `DeferredSlice` not yet carried out is gathered straight into a
new buffer that only the variable holds, and the variable adopts that buffer instead
of copying it (DLPack on TensorFlow, `torch.from_numpy` on PyTorch, an aliasing
`jax.device_put` on JAX's CPU devices). A pruned VGG16's fc1 kernel (103 MB) is then
written once, not twice.

Example:
    >>> built = build_layer(lambda: Dense.from_config(config), lambda d: d(x), weights)
    >>> built.fed
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import keras
import numpy as np
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import in_stateless_scope

from kgraph.deferred import DeferredSlice, resolve
from kgraph.errors import LowerError

__all__ = ["BuiltLayer", "build_layer", "initial_value"]

_PENDING = "uninitialized_variables"  # Keras' (thread-local) list of deferred variables


@attrs.frozen
class BuiltLayer:
    """A layer `build_layer` made, the outputs of the call that built it, and whether
    its variables were created from the given arrays (`fed`) or set afterwards."""

    layer: Any
    outputs: Any
    fed: bool


def initial_value(weight: np.ndarray | DeferredSlice, dtype: Any = None) -> Any:
    """What a new variable of `dtype` starts from: `weight`'s values.

    A `DeferredSlice` not carried out yet is gathered into a fresh buffer; with the
    TensorFlow backend it comes back as a tensor over that buffer, which a
    `tf.Variable` keeps without copying. Anything else is a numpy array, which Keras
    copies into the variable (so the IR's arrays never alias a variable).

    Example:
        >>> initial_value(node.stored_weight("kernel"), "float32").shape
        (64, 10)
    """
    fresh = isinstance(weight, DeferredSlice) and not weight.carried_out
    if fresh and (dtype is None or keras.backend.standardize_dtype(dtype) == weight.dtype.name):
        return _adopt(weight.gather())
    return np.asarray(resolve(weight), dtype=dtype)


def _adopt(array: np.ndarray) -> Any:
    """`array` as a backend tensor sharing its memory, when the backend allows it.

    TensorFlow takes it through DLPack; PyTorch through `torch.from_numpy` (a Keras
    variable's `Parameter` keeps that tensor's storage on the CPU); JAX through
    `jax.device_put(..., may_alias=True)`, which aliases the buffer on the CPU (a Keras
    variable keeps the `jax.Array` it is given). Otherwise (a dtype the backend cannot
    carry, such as bfloat16 for DLPack and torch, or float64 for JAX without x64)
    `array` itself, which the variable then copies.
    """
    backend = keras.backend.backend()
    if array.size == 0:
        return array
    if backend == "tensorflow":
        import tensorflow as tf  # only reached with the TensorFlow backend

        try:
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        except (BufferError, tf.errors.InvalidArgumentError):
            return array
    if backend == "torch":
        import torch  # only reached with the PyTorch backend

        try:
            return torch.from_numpy(array)
        except TypeError:  # a dtype torch has no numpy twin for (bfloat16)
            return array
    if backend == "jax":
        import jax  # only reached with the JAX backend

        try:
            adopted = jax.device_put(array, may_alias=True)
        except TypeError:  # a JAX without `may_alias`: its default, which may copy
            adopted = jax.device_put(array)
        return adopted if adopted.dtype == array.dtype else array
    return array


def _pending() -> list[Any]:
    return list(global_state.get_global_attribute(_PENDING) or [])


def _set_pending(variables: list[Any]) -> None:
    global_state.set_global_attribute(_PENDING, variables)


def _lined_up(variables: Sequence[Any], weights: Sequence[Any]) -> dict[int, Any]:
    """`id(variable) -> array` when the variables match the arrays one by one, else {}."""
    if len(variables) != len(weights):
        return {}
    if any(tuple(v.shape) != tuple(w.shape) for v, w in zip(variables, weights)):
        return {}
    return {id(v): w for v, w in zip(variables, weights)}


def _from(weight: np.ndarray | DeferredSlice) -> Callable[..., Any]:
    def initialize(shape: Any, dtype: Any = None) -> Any:
        return initial_value(weight, dtype)

    return initialize


def build_layer(
    make: Callable[[], Any],
    call: Callable[[Any], Any],
    weights: Sequence[np.ndarray | DeferredSlice] | Callable[[Any], Sequence[Any]],
) -> BuiltLayer:
    """Create a layer with `make()` and build it with `call(layer)`, its variables
    starting from `weights` (in `layer.weights` order) without running initialisers.

    `weights` may also be a function of the built layer returning them (it may raise
    to stop, before any variable is initialised). Only the calling thread's variable
    creation is deferred; nothing of Keras is patched. Raises `LowerError` when
    called inside a `keras.StatelessScope`.
    """
    if in_stateless_scope():
        raise LowerError(
            "kgraph cannot build Keras layers inside a keras.StatelessScope (Keras does not "
            "let variables be initialised there); lower the graph outside the scope"
        )
    known = {id(v) for v in _pending()}
    try:
        with keras.StatelessScope(initialize_variables=False) as scope:
            layer = make()
            outputs = call(layer)
        created = [v for v in _pending() if id(v) not in known]
        if callable(weights):
            weights = weights(layer)
        fed = _lined_up(getattr(layer, "weights", ()), weights)
        for variable in created:
            value = fed.get(id(variable))
            if value is not None:
                variable._initializer = _from(value)
            variable._deferred_initialize()
            update = scope.get_current_value(variable)
            if update is not None and value is None:  # an assign the build made
                variable.assign(update)
    finally:  # every variable made here is initialised now, or belongs to a failed build
        _set_pending([v for v in _pending() if id(v) in known])
    if weights and not fed:
        layer.set_weights([resolve(w) for w in weights])
    return BuiltLayer(layer, outputs, bool(fed) or not weights)
