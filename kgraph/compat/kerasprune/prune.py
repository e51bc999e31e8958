"""Keras-Prune's `delete_neurons`: kerassurgeon's `delete_channels`, the indices named `neurons`.

Example:
    >>> from kgraph.compat.kerasprune.prune import delete_neurons
    >>> smaller = delete_neurons(model, model.get_layer("conv_1"), [0, 3])
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from kgraph.compat.kerassurgeon.operations import delete_channels

__all__ = ["delete_neurons"]


def delete_neurons(
    model: keras.Model,
    layer: keras.layers.Layer | str,
    neurons: Sequence[int],
    node_indices: Sequence[int] | None = None,
    copy: bool | None = None,
) -> keras.Model:
    """A copy of `model` without `neurons` (units, filters) of `layer`, and the weights
    that read them downstream. `model` is not changed.

    Same as `kgraph.compat.kerassurgeon.operations.delete_channels`; every argument
    may be given by position or by name.

    Example:
        >>> smaller = delete_neurons(model, "dense_1", [0, 3])
    """
    return delete_channels(model, layer, neurons, node_indices=node_indices, copy=copy)
