"""`prune(layer, ...)`: zero the weights of one layer in place, by magnitude or at random.

The one in-place call of the kerassurgeon compatibility layer, because that is what
code calling it in a loop over `model.layers` expects. The ranking is kgraph's
(`kgraph.sparse.weight_masks`): kernels, depthwise/pointwise kernels, recurrent
kernels and embedding tables are pruned, never biases or normalisation parameters.

Example:
    >>> from kgraph.compat import kerassurgeon
    >>> for layer in model.layers:
    ...     if kerassurgeon.prunable(layer):
    ...         kerassurgeon.prune(layer, threshold=0.5)          # half of each kernel
"""

from __future__ import annotations

import numbers
from typing import Any

import keras
import numpy as np

from kgraph.compat.kerassurgeon.surgeon import KerasSurgeonError
from kgraph.sparse.masks import is_prunable, weight_masks

__all__ = ["STRATEGIES", "prunable", "prune"]

STRATEGIES = (
    "magnitude",
    "layer_magnitude",
    "global_magnitude",
    "unstructured",
    "global_unstructured",
)


def _variables(layer: Any) -> list[Any]:
    """The prunable variables of `layer` (kernels, embeddings), in weight order."""
    seen: set[int] = set()
    found = []
    for variable in getattr(layer, "weights", []):
        if is_prunable(variable.name) and id(variable) not in seen:
            seen.add(id(variable))
            found.append(variable)
    return found


def prunable(layer: Any) -> bool:
    """True if `layer` has weights `prune` can zero (a kernel or an embedding table).

    Example:
        >>> prunable(keras.layers.Dense(3))   # not built: no kernel yet
        False
    """
    return bool(_variables(layer))


def _neighbours(operation: Any) -> list[Any]:
    found = []
    for node in getattr(operation, "_inbound_nodes", []):
        found.extend(parent.operation for parent in node.parent_nodes)
    found.extend(node.operation for node in getattr(operation, "_outbound_nodes", []))
    if isinstance(operation, keras.Model):
        found.extend(operation.layers)
    return found


def _connected_layers(layer: Any) -> list[Any]:
    """Every layer connected to `layer` through Keras' graph (its model's layers, layers
    of nested models included)."""
    seen, todo = {id(layer): layer}, [layer]
    while todo:
        for other in _neighbours(todo.pop()):
            if id(other) not in seen:
                seen[id(other)] = other
                todo.append(other)
    return [op for op in seen.values() if isinstance(op, keras.layers.Layer)]


def _check_amount(threshold: Any, n: Any, where: str) -> None:
    """Exactly one of `threshold` (a fraction in [0, 1]) and `n` (a count) is given."""
    if (threshold is None) == (n is None):
        raise KerasSurgeonError(
            f"prune({where}) needs exactly one of threshold= (the fraction of weights to zero, "
            f"in [0, 1]) and n= (how many to zero); got threshold={threshold!r}, n={n!r}"
        )
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not 0 <= threshold <= 1
    ):
        raise KerasSurgeonError(
            f"prune({where}): threshold is the fraction of weights to zero and must be a "
            f"number in [0, 1], got {threshold!r}"
        )


def _count(threshold: float | None, n: int | None, size: int, where: str) -> int:
    """How many of `size` weights to zero."""
    if threshold is not None:
        return round(float(threshold) * size)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n <= size:
        raise KerasSurgeonError(
            f"prune({where}): n is how many weights to zero and must be an integer in "
            f"[0, {size}] (the weights it ranks), got {n!r}"
        )
    return int(n)


def prune(
    layer: keras.layers.Layer,
    threshold: float | None = None,
    n: int | None = None,
    strategy: str = "magnitude",
    *,
    model: keras.Model | None = None,
    seed: int = 0,
) -> None:
    """Zero weights of `layer` in place: a fraction (`threshold`) or a count (`n`) of them.

    Strategies:
        "magnitude" / "layer_magnitude": the weights of `layer` with the lowest |w|
            (all its kernels ranked together).
        "global_magnitude": the weights of `layer` among the lowest |w| of every prunable
            layer of its model; `threshold`/`n` count over the whole model, so calling it
            for every layer zeroes exactly that many weights in all.
        "unstructured": random weights of `layer` (`seed`).
        "global_unstructured": the weights of `layer` among a random choice over the
            whole model (`seed`; the same choice on every call with the same seed).

    The model is `model` if given, else every layer connected to `layer` in Keras'
    graph (pass `model=` for a layer inside a nested model). Biases are never
    touched. Raises `KerasSurgeonError` (and changes nothing) for bad arguments.

    Example:
        >>> prune(model.get_layer("dense"), threshold=0.5)
        >>> prune(model.get_layer("conv"), n=100, strategy="global_magnitude")
    """
    name = getattr(layer, "name", repr(layer))
    where = f"layer {name!r}"
    if strategy not in STRATEGIES:
        raise KerasSurgeonError(
            f"prune({where}): unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}"
        )
    own = _variables(layer)
    if not own:
        raise KerasSurgeonError(
            f"prune({where}): {type(layer).__name__} {name!r} has no kernel or embedding table "
            f"to prune{'' if getattr(layer, 'built', True) else ' (it is not built yet)'}; "
            "prune layers such as Dense, Conv2D, SeparableConv2D, LSTM or Embedding"
        )
    _check_amount(threshold, n, where)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise KerasSurgeonError(f"prune({where}): seed must be an integer, got {seed!r}")
    if strategy.startswith("global"):
        layers = model.layers if model is not None else _connected_layers(layer)
        pool = {id(v): v for lay in _flatten(layers) for v in _variables(lay)}
        if not any(id(v) in pool for v in own):
            raise KerasSurgeonError(
                f"prune({where}): the layer is not in model {getattr(model, 'name', '?')!r}; "
                "pass the model that contains it"
            )
    else:
        pool = {id(v): v for v in own}
    variables = sorted(pool.values(), key=lambda v: v.path)  # the same order from any layer
    keys = {id(v): f"{i}:{v.path}" for i, v in enumerate(variables)}
    values = {keys[id(v)]: keras.ops.convert_to_numpy(v) for v in variables}
    size = sum(int(value.size) for value in values.values())
    count = _count(threshold, n, size, where)
    criterion = "random" if strategy.endswith("unstructured") else "magnitude"
    if count >= size:
        keep = {path: np.zeros(value.shape, dtype=bool) for path, value in values.items()}
    else:
        keep = weight_masks(
            values, count / size, criterion=criterion, scope="global", seed=int(seed)
        )
    for variable in own:
        key = keys[id(variable)]
        value = values[key]
        variable.assign(np.where(keep[key], value, np.zeros((), dtype=value.dtype)))


def _flatten(layers: Any) -> list[Any]:
    found = []
    for layer in layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(_flatten(layer.layers))
    return found
