"""Test oracles: dead channels, weight slicing, and "the original is unchanged".

The dead-channel oracle: in a copy of the model, make the channels to delete
exactly zero at their producer (and BatchNorm beta/moving_mean where they pass);
deleting them with kgraph must then leave the outputs unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

import kgraph
from kgraph.passes import DeleteChannels

# Property tests count the cases they checked here; conftest prints the counts.
GENERATED_CASES: Counter[str] = Counter()


def copy_model(model: keras.Model) -> keras.Model:
    """An independent copy of `model` with the same weights (plain Keras, no kgraph)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for layer in clone.layers:  # e.g. an adapted Normalization derives its mean from weights
        finalize = getattr(layer, "finalize_state", None)
        if callable(finalize):
            finalize()
    return clone


def fingerprint(model: keras.Model) -> str:
    """A hash of the model's config and weights, to prove it was not changed."""
    digest = hashlib.sha256()
    digest.update(json.dumps(model.get_config(), sort_keys=True, default=repr).encode())
    for layer in model.layers:
        digest.update(layer.name.encode())
        for variable in layer.weights:
            array = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
            digest.update(f"{variable.path}:{array.dtype}:{array.shape}".encode())
            digest.update(memoryview(array).cast("B"))  # hashed in place, not copied
    return digest.hexdigest()


def gate_columns(layer: keras.layers.Layer, channels: Sequence[int]) -> np.ndarray:
    """Columns of every gate of a recurrent layer for its units `channels`."""
    gates = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}[type(layer).__name__]
    units = layer.units
    return np.array([g * units + c for g in range(gates) for c in channels], dtype=int)


def zero_outputs(layer: keras.layers.Layer, channels: Sequence[int]) -> None:
    """Make output `channels` of a producer layer exactly zero for every input."""
    weights = [np.array(w) for w in layer.get_weights()]
    kind = type(layer).__name__
    if kind in ("SimpleRNN", "GRU", "LSTM"):
        cols = gate_columns(layer, channels)
        for w in weights:
            w[..., cols] = 0
    elif kind == "Embedding":
        weights[0][:, channels] = 0
    else:  # Dense, Conv*: kernel (..., out) and bias (out,)
        for w in weights:
            w[..., channels] = 0
    layer.set_weights(weights)


def zero_batchnorm(layer: keras.layers.Layer, channels: Sequence[int]) -> None:
    """Make a BatchNormalization map zero to zero on `channels` (beta = mean = 0)."""
    names = [w.name for w in layer.weights]
    weights = [np.array(w) for w in layer.get_weights()]
    for name in ("beta", "moving_mean"):
        if name in names:
            weights[names.index(name)][channels] = 0
    layer.set_weights(weights)


def dead_copy(
    model: keras.Model,
    deletions: Mapping[str, Sequence[int]],
    batchnorms: Mapping[str, Sequence[int]] | None = None,
) -> keras.Model:
    """A copy of `model` where the channels in `deletions` are dead (always zero)."""
    dead = copy_model(model)
    for name, channels in deletions.items():
        zero_outputs(dead.get_layer(name), channels)
    for name, channels in (batchnorms or {}).items():
        zero_batchnorm(dead.get_layer(name), channels)
    return dead


def sample_inputs(model: keras.Model, batch: int = 3, seed: int = 0) -> Any:
    """Random inputs matching the model's input structure (ints for int inputs)."""
    rng = np.random.default_rng(seed)

    def one(tensor: Any) -> np.ndarray:
        shape = [batch, *(d if d is not None else 7 for d in tensor.shape[1:])]
        if "int" in str(tensor.dtype):
            return rng.integers(0, 9, size=shape).astype(str(tensor.dtype))
        return rng.standard_normal(shape).astype("float32")

    functional = getattr(model, "_functional", None) or model  # a Sequential wraps one
    return keras.tree.map_structure(one, functional._inputs_struct)


def outputs_of(model: keras.Model, inputs: Any) -> list[np.ndarray]:
    return [
        keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(model(inputs, training=False))
    ]


def assert_same_outputs(
    a: keras.Model, b: keras.Model, inputs: Any, rtol: float = 1e-5, atol: float = 1e-5
) -> None:
    for x, y in zip(outputs_of(a, inputs), outputs_of(b, inputs), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def delete(model: keras.Model, deletions: Mapping[str, Iterable[int]]) -> keras.Model:
    """Delete channels with kgraph (one apply for all), checking the IR as it goes."""
    passes = [DeleteChannels(name, list(ch)) for name, ch in deletions.items()]
    return kgraph.lift(model).apply(*passes, verify=True).lower()


def check_dead_channels(
    model: keras.Model,
    deletions: Mapping[str, Sequence[int]],
    batchnorms: Mapping[str, Sequence[int]] | None = None,
    rtol: float = 1e-5,
    named: Sequence[str] | None = None,
) -> keras.Model:
    """The dead-channel oracle: deleting dead channels leaves the outputs unchanged.

    All `deletions` are made dead; only the layers in `named` (default: all) are
    given to `DeleteChannels`, so a test can show that coupled layers follow.
    Returns the pruned model. Also checks that `model` itself was not changed.
    """
    before = fingerprint(model)
    dead = dead_copy(model, deletions, batchnorms)
    pruned = delete(dead, {n: deletions[n] for n in (named or deletions)})
    assert_same_outputs(dead, pruned, sample_inputs(model), rtol=rtol, atol=rtol)
    assert fingerprint(model) == before
    return pruned


def weights_of(model: keras.Model, name: str) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_layer(name).get_weights()]
