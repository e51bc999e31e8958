"""kerassurgeon's one-job operations: each builds a `Surgeon`, adds one job and operates.

Each returns a new, independent model; the input model is never modified. The
`copy` argument is accepted for compatibility and ignored.

Example:
    >>> from kgraph.compat.kerassurgeon.operations import delete_channels, delete_layer
    >>> smaller = delete_channels(model, model.get_layer("conv1"), [0, 3])
    >>> no_dropout = delete_layer(smaller, "dropout")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from kgraph.compat.kerassurgeon.surgeon import Surgeon

__all__ = ["delete_channels", "delete_layer", "insert_layer", "replace_layer"]

LayerArg = keras.layers.Layer | str


def delete_layer(
    model: keras.Model,
    layer: LayerArg,
    *,
    node_indices: Sequence[int] | None = None,
    copy: bool | None = True,
) -> keras.Model:
    """A copy of `model` without `layer` (its calls in `node_indices`, or all of them).

    Each deleted call must have one input; its consumers read that input instead.

    Example:
        >>> new_model = delete_layer(model, model.get_layer("dropout"))
    """
    return _single_job(model, copy, "delete_layer", layer, node_indices=node_indices)


def insert_layer(
    model: keras.Model,
    layer: LayerArg,
    new_layer: keras.layers.Layer,
    *,
    node_indices: Sequence[int] | None = None,
    copy: bool | None = True,
) -> keras.Model:
    """A copy of `model` with `new_layer` inserted before `layer` (on its single input).

    Example:
        >>> new_model = insert_layer(model, "dense_2", keras.layers.Dropout(0.2))
    """
    return _single_job(
        model, copy, "insert_layer", layer, new_layer=new_layer, node_indices=node_indices
    )


def replace_layer(
    model: keras.Model,
    layer: LayerArg,
    new_layer: keras.layers.Layer,
    *,
    node_indices: Sequence[int] | None = None,
    copy: bool | None = True,
) -> keras.Model:
    """A copy of `model` where `new_layer` takes the place of `layer`.

    Example:
        >>> new_model = replace_layer(model, "relu", keras.layers.LeakyReLU())
    """
    return _single_job(
        model, copy, "replace_layer", layer, new_layer=new_layer, node_indices=node_indices
    )


def delete_channels(
    model: keras.Model,
    layer: LayerArg,
    channels: Sequence[int],
    *,
    node_indices: Sequence[int] | None = None,
    copy: bool | None = None,
) -> keras.Model:
    """A copy of `model` without `channels` (units, filters) of `layer`.

    Weights of every downstream layer that read those channels are sliced too.
    When `node_indices` selects some calls of a shared layer, those calls get a
    copy of the layer of their own, named `<layer>_delete_channels`, and the other
    calls keep the original layer. Negative channel indices count from the end.

    Example:
        >>> new_model = delete_channels(model, model.get_layer("conv1"), [0, 3])
    """
    return _single_job(
        model, copy, "delete_channels", layer, channels=channels, node_indices=node_indices
    )


def _single_job(
    model: keras.Model, copy: bool | None, job: str, layer: LayerArg, **kwargs: Any
) -> keras.Model:
    surgeon = Surgeon(model, copy)
    surgeon.add_job(job, layer, **kwargs)
    return surgeon.operate()
