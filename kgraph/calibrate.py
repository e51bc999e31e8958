"""`recalibrate`: re-estimate BatchNorm statistics on unlabelled data (adaptive BatchNorm).

Pruning changes what every BatchNormalization sees, but its moving mean and variance
were collected on the unpruned network; a pruned ResNet can lose most of its accuracy
to that alone. `recalibrate` measures them again, exactly: for every BatchNormalization
(in the order of the graph, each after the ones before it have been recalibrated) the
per-channel mean and population variance of its inputs over all rows and positions of
the data, not an exponential moving average. No labels, no training, no other weight
changes (Li et al. 2020, "EagleEye: Fast Sub-net Evaluation for Efficient Neural
Network Pruning").

Example:
    >>> small = kgraph.prune(model, 0.1, "l1")
    >>> small = kgraph.recalibrate(small, x_train[:512], inplace=True)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from kgraph.errors import KGraphError

__all__ = [
    "CalibrationError",
    "batch_norm_layers",
    "check_batching",
    "iterate_batches",
    "recalibrate",
]

log = logging.getLogger(__name__)


class CalibrationError(KGraphError, ValueError):
    """`recalibrate` cannot use its model or data (no data, a subclassed model, ...)."""


def _batch_norm_classes() -> tuple[type, ...]:
    classes = [keras.layers.BatchNormalization]
    sync = getattr(keras.layers, "SyncBatchNormalization", None)  # absent from Keras 3.x so far
    if isinstance(sync, type):
        classes.append(sync)
    return tuple(classes)


# ---------------------------------------------------------------------------- data


def _is_array(value: Any) -> bool:
    """A numpy array or a tensor: something with rows to slice."""
    shape = getattr(value, "shape", None)
    return shape is not None and len(shape) >= 1 and hasattr(value, "__getitem__")


def _is_arrays(value: Any) -> bool:
    """An array, or a dict or list of arrays (the inputs of a multi-input model)."""
    if isinstance(value, (dict, list)):
        leaves = keras.tree.flatten(value)
        return bool(leaves) and all(_is_array(v) for v in leaves)
    return _is_array(value)


def _rows(value: Any) -> int:
    return int(keras.tree.flatten(value)[0].shape[0])


def _split(item: Any) -> tuple[Any, Any]:
    """`(x, y)` of one batch: Keras' `(x,)`, `(x, y)` or `(x, y, sample_weight)`, a
    `[x, y]` list (a torch DataLoader's), or `x` alone (then `y` is None)."""
    if isinstance(item, tuple) and 1 <= len(item) <= 3:
        return item[0], item[1] if len(item) > 1 else None
    if isinstance(item, list) and len(item) in (2, 3):
        return item[0], item[1]
    return item, None


def _take(value: Any, start: int, stop: int) -> Any:
    return keras.tree.map_structure(lambda v: v[start:stop], value)


def check_batching(
    batch_size: Any, limit: Any = None, error: type[KGraphError] = CalibrationError
) -> None:
    """Raise `error` unless `batch_size` (and `limit`, if given) are positive integers."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise error(f"batch_size must be a positive integer, got {batch_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise error(f"batches must be a positive integer or None, got {limit!r}")


def iterate_batches(
    data: Any, batch_size: int = 32, limit: int | None = None
) -> Iterator[tuple[Any, Any]]:
    """`(x, y)` batches (`y` None when there is none) from `data`.

    `data` is a numpy array (or a dict of arrays), an `(x, y)` tuple of arrays, a
    tf.data.Dataset, or any iterable of batches (each `x`, `(x, y)` or `[x, y]`);
    batches of `batch_size` rows are cut from arrays; `limit` stops after that many
    batches.

    Example:
        >>> [x.shape[0] for x, _ in iterate_batches(np.zeros((70, 8)), 32)]
        [32, 32, 6]
    """
    if data is None:
        raise CalibrationError("no data given: pass data=x, data=(x, y) or a tf.data.Dataset")
    check_batching(batch_size, limit)
    if isinstance(data, (str, bytes)) or not (_is_arrays(data) or hasattr(data, "__iter__")):
        raise CalibrationError(
            f"cannot read batches from {type(data).__name__}: pass a numpy array, an (x, y) "
            "tuple of arrays, a tf.data.Dataset or an iterable of batches"
        )
    return _limited(_all_batches(data, batch_size), limit)


def _limited(items: Iterator[Any], limit: int | None) -> Iterator[Any]:
    for index, item in enumerate(items):
        if limit is not None and index >= limit:
            return
        yield item


def _all_batches(data: Any, size: int) -> Iterator[tuple[Any, Any]]:
    if isinstance(data, tuple) and 1 <= len(data) <= 3 and _is_arrays(data[0]):
        x, y = data[0], data[1] if len(data) > 1 else None
        for start in range(0, _rows(x), size):
            part_y = None if y is None else _take(y, start, start + size)
            yield _take(x, start, start + size), part_y
    elif _is_arrays(data) and not isinstance(data, list):
        for start in range(0, _rows(data), size):
            yield _take(data, start, start + size), None
    else:
        for item in data:
            yield _split(item)


# ---------------------------------------------------------------------------- graph


def _functional(model: Any, where: str) -> Any:
    """The functional graph of a Functional or (built) Sequential model."""
    from keras.src.models.functional import Functional

    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise CalibrationError(
                f"Sequential model {model.name!r}{where} is not built: start it with "
                "keras.Input(shape=...) or call model.build(input_shape) first"
            )
        return functional
    if isinstance(model, Functional):
        return model
    raise CalibrationError(
        f"{type(model).__name__} {getattr(model, 'name', '')!r}{where} is not a Functional or "
        "Sequential model: its call() is Python code, so the inputs of its BatchNormalization "
        "layers cannot be reached. Build it as keras.Model(inputs, outputs)"
    )


class _Locator:
    """Tensors of a (possibly nested) model's graph, to be expressed as tensors of the root.

    `outer` locates the inputs of the call of the nested model (None in the root);
    `locate()` builds, on first use, a sub-model from the nested model's inputs to the
    tensors and calls it on the located inputs, so each probe computes only what it needs.
    """

    def __init__(self, tensors: Any, functional: Any, outer: _Locator | None) -> None:
        self.tensors, self.functional, self.outer = tensors, functional, outer
        self._located: Any = None

    def locate(self) -> Any:
        if self.outer is None:
            return self.tensors
        if self._located is None:
            sub = keras.Model(self.functional.inputs, self.tensors)
            self._located = sub(self.outer.locate())
        return self._located


def _walk(functional: Any, outer: _Locator | None, found: list, path: str) -> None:
    """Append `(layer, locator of its input)` for every BatchNormalization call, in order."""
    by_depth = functional._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            layer = node.operation
            if isinstance(layer, _batch_norm_classes()):
                found.append((layer, _Locator(node.input_tensors[0], functional, outer)))
            elif isinstance(layer, keras.Model):
                inner = _functional(layer, f" (inside {path})")
                inputs = _Locator(list(node.input_tensors), functional, outer)
                _walk(inner, inputs, found, f"{path}/{layer.name}")


def batch_norm_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The BatchNormalization layers of `model` (nested models included), in graph order.

    A layer called more than once is listed once, at its last call.

    Example:
        >>> [layer.name for layer in batch_norm_layers(model)]
        ['bn1', 'bn2']
    """
    return [layer for layer, _ in _calls(model)]


def _calls(model: keras.Model) -> list[tuple[keras.layers.Layer, list[_Locator]]]:
    found: list[tuple[Any, _Locator]] = []
    _walk(_functional(model, ""), None, found, model.name)
    last: dict[int, int] = {}
    for position, (layer, _) in enumerate(found):
        last[id(layer)] = position
    layers = {id(layer): layer for layer, _ in found}.values()
    order = sorted(layers, key=lambda layer: last[id(layer)])
    return [(layer, [loc for other, loc in found if other is layer]) for layer in order]


# ---------------------------------------------------------------------------- statistics


class _Moments:
    """Per-channel count, mean and sum of squared deviations, merged batch by batch
    (Chan et al.'s parallel update, in float64): exact, not a moving average."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, x: Any, axis: int) -> None:
        rank = len(x.shape)
        axes = tuple(a for a in range(rank) if a != axis % rank)
        count = math.prod(int(x.shape[a]) for a in axes)
        if count == 0:
            return
        x = keras.ops.cast(x, "float32")
        mean = keras.ops.mean(x, axis=axes, keepdims=True)
        m2 = keras.ops.sum(keras.ops.square(x - mean), axis=axes)
        mean = keras.ops.convert_to_numpy(mean).reshape(-1).astype(np.float64)
        m2 = keras.ops.convert_to_numpy(m2).reshape(-1).astype(np.float64)
        if self.mean is None:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * count / total)
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / self.count


def _assign(layer: Any, mean: np.ndarray, variance: np.ndarray) -> None:
    layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
    layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
    if getattr(layer, "renorm", False):  # training derives moving_variance from these
        stddev = np.sqrt(variance + layer.epsilon)
        for name, value in (("moving_stddev", stddev), ("renorm_mean", mean)):
            variable = getattr(layer, name)
            variable.assign(value.astype(variable.dtype))
        layer.renorm_stddev.assign(stddev.astype(layer.renorm_stddev.dtype))


class _Inputs:
    """The input batches, the same ones for every pass: cut from arrays anew each time, or
    (a dataset, a generator, any iterable) read once and kept."""

    def __init__(self, data: Any, batch_size: int, limit: int | None) -> None:
        batches = iterate_batches(data, batch_size, limit)
        self.arrays = _is_arrays(data) or (isinstance(data, tuple) and _is_arrays(data[0]))
        self.data, self.batch_size, self.limit = data, batch_size, limit
        self.kept = None if self.arrays else [x for x, _ in batches]
        if not any(_rows(x) for x in self):
            raise CalibrationError("the data gave no rows: recalibrate needs at least one batch")

    def __iter__(self) -> Iterator[Any]:
        if self.kept is not None:
            return iter(self.kept)
        return (x for x, _ in iterate_batches(self.data, self.batch_size, self.limit))


def _measure(model: keras.Model, layer: Any, locators: list[_Locator], inputs: _Inputs) -> _Moments:
    outputs = [locator.locate() for locator in locators]
    probe = keras.Model(_functional(model, "").input, outputs)
    moments = _Moments()
    for x in inputs:
        values = probe(x, training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        for value in values:
            moments.add(value, layer.axis)
    if moments.count == 0:
        raise CalibrationError(f"the data gave {layer.name!r} no values to measure")
    return moments


def _copy(model: keras.Model) -> keras.Model:
    try:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
    except Exception as error:  # a custom layer without get_config, ...
        raise CalibrationError(
            f"cannot copy model {model.name!r} to recalibrate the copy ({error}); "
            "pass inplace=True to recalibrate the model itself"
        ) from error
    return clone


def _unreachable(model: keras.Model, reached: set[int]) -> list[str]:
    """BatchNormalization layers inside other layers (not in any graph kgraph can walk)."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return []
    classes = _batch_norm_classes()
    layers = flatten(include_self=False, recursive=True)
    return [x.name for x in layers if isinstance(x, classes) and id(x) not in reached]


def recalibrate(
    model: keras.Model,
    data: Any,
    *,
    batches: int | None = None,
    batch_size: int = 32,
    inplace: bool = False,
) -> keras.Model:
    """`model` with every BatchNormalization's moving mean and variance measured on `data`.

    For each BatchNormalization, in the order of the graph (each one measured after those
    before it are recalibrated), the moving mean and variance become the exact per-channel
    mean and population variance of its inputs over all rows and positions of the data,
    in inference mode; a layer called several times is measured over all its calls.
    Nothing else changes (layers with `renorm=True` also get their renorm statistics).

    Args:
        data: unlabelled inputs: a numpy array (or dict of arrays), an `(x, y)` tuple
            (`y` is ignored), a tf.data.Dataset or any iterable of batches. Every layer
            takes a pass over it, so a dataset or an iterable is read once and its
            batches are kept in memory (fewer with `batches`).
        batches: use only the first `batches` batches (default: all the data).
        batch_size: rows per batch cut from arrays.
        inplace: recalibrate `model` itself and return it. By default a copy is
            recalibrated and returned (uncompiled) and `model` is not changed.

    Returns the recalibrated model. A model without BatchNormalization is returned as it
    is (copied unless `inplace`), with a warning logged.

    Example:
        >>> small = kgraph.recalibrate(kgraph.prune(model, 0.1), x_train[:512], inplace=True)
    """
    if not isinstance(model, keras.Model):
        raise CalibrationError(f"recalibrate needs a keras.Model, got {type(model).__name__}")
    _functional(model, "")  # a subclassed model is refused before anything is copied
    inputs = _Inputs(data, batch_size, batches)  # data and options checked before any work
    target = model if inplace else _copy(model)
    calls = _calls(target)
    skipped = _unreachable(target, {id(layer) for layer, _ in calls})
    if skipped:
        log.warning(
            "recalibrate: cannot reach the inputs of BatchNormalization %s (inside layers "
            "whose call() is Python code); their statistics are left as they are",
            ", ".join(repr(name) for name in skipped),
        )
    if not calls:
        log.warning("recalibrate: model %r has no BatchNormalization; nothing to do", model.name)
        return target
    for index, (layer, locators) in enumerate(calls, start=1):
        moments = _measure(target, layer, locators, inputs)
        _assign(layer, moments.mean, moments.variance)
        log.info(
            "recalibrate: %s (%d/%d) measured on %d values per channel",
            layer.name,
            index,
            len(calls),
            moments.count,
        )
    return target
