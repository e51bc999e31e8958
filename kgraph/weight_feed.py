"""Create a layer's variables straight from given arrays, skipping its initialisers.

Keras builds a layer by calling `add_weight(shape, initializer, ...)` for every
variable, and the initialiser runs (random numbers for a kernel) even when
`set_weights` overwrites the values right after. While `feeding(arrays)` is active,
`add_weight` takes the next array as the initial value instead. After the build,
`feed.complete(layer)` tells whether every variable came from the arrays in `layer.weights`
order; if not (a layer that creates variables in another order), the caller falls
back to `set_weights`, which is always correct.

A weight that is a `DeferredSlice` not yet carried out is gathered straight into a
new buffer that only the variable holds; with the TensorFlow backend the variable
adopts that buffer (through DLPack) instead of copying it. A pruned VGG16's fc1
kernel (103 MB) is then written once, not twice.

Example:
    >>> with feeding(node.stored_weights) as feed:
    ...     layer = Dense.from_config(config)
    ...     outputs = layer(inputs)
    >>> feed.complete(layer)
    True
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np

from kgraph.deferred import DeferredSlice, resolve

__all__ = ["Feed", "feeding", "initial_value"]

_LOCK = threading.Lock()
_ACTIVE: list[Feed] = []


class Feed:
    """The arrays still to hand out, and the variables created from them."""

    def __init__(self, values: Sequence[np.ndarray | DeferredSlice]) -> None:
        self.values = list(values)
        self.created: list[Any] = []
        self.broken = False

    def initializer(self, shape: Any) -> Any | None:
        """An initialiser returning the next array, or None when they no longer line up."""
        index = len(self.created)
        if self.broken or index >= len(self.values):
            self.broken = True
            return None
        value = self.values[index]
        if tuple(value.shape) != tuple(shape or ()):
            self.broken = True
            return None

        def initialize(shape: Any, dtype: Any = None) -> Any:
            return initial_value(value, dtype)

        return initialize

    def complete(self, layer: Any) -> bool:
        """True when `layer.weights` are exactly the variables made from all the arrays."""
        return (
            not self.broken
            and len(self.created) == len(self.values)
            and [id(v) for v in layer.weights] == [id(v) for v in self.created]
        )


def initial_value(weight: np.ndarray | DeferredSlice, dtype: Any = None) -> Any:
    """What a new variable of `dtype` starts from: `weight`'s values.

    A `DeferredSlice` not carried out yet is gathered into a fresh buffer; with the
    TensorFlow backend it comes back as a tensor over that buffer, which a
    `tf.Variable` keeps without copying. Anything else is a numpy array, which Keras
    copies into the variable (so the IR's arrays never alias a variable).

    Example:
        >>> layer.add_weight(shape, initializer=lambda s, dtype=None: initial_value(w, dtype))
    """
    fresh = isinstance(weight, DeferredSlice) and not weight.carried_out
    if fresh and (dtype is None or keras.backend.standardize_dtype(dtype) == weight.dtype.name):
        return _adopt(weight.gather())
    return np.asarray(resolve(weight), dtype=dtype)


def _adopt(array: np.ndarray) -> Any:
    """`array` as a backend tensor sharing its memory, when the backend allows it.

    Otherwise (another backend, or a dtype DLPack cannot carry, such as bfloat16)
    `array` itself, which the variable then copies.
    """
    if keras.backend.backend() != "tensorflow" or array.size == 0:
        return array
    import tensorflow as tf

    try:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    except (BufferError, tf.errors.InvalidArgumentError):
        return array


_ORIGINAL = keras.layers.Layer.add_weight


def _add_weight(self: Any, *args: Any, **kwargs: Any) -> Any:
    feed = _ACTIVE[-1] if _ACTIVE else None
    if feed is None:
        return _ORIGINAL(self, *args, **kwargs)
    shape = kwargs.get("shape", args[0] if args else None)
    initializer = feed.initializer(shape)
    if initializer is not None:
        if len(args) > 1:
            args = (args[0], initializer, *args[2:])
        else:
            kwargs["initializer"] = initializer
    variable = _ORIGINAL(self, *args, **kwargs)
    feed.created.append(variable)
    return variable


@contextlib.contextmanager
def feeding(values: Sequence[np.ndarray | DeferredSlice]) -> Iterator[Feed]:
    """Within this block, variables `add_weight` creates take `values`, in order."""
    feed = Feed(values)
    with _LOCK:
        if not _ACTIVE:
            keras.layers.Layer.add_weight = _add_weight
        _ACTIVE.append(feed)
    try:
        yield feed
    finally:
        with _LOCK:
            _ACTIVE.remove(feed)
            if not _ACTIVE:
                keras.layers.Layer.add_weight = _ORIGINAL
