"""kerassurgeon's channel selection: APoZ (Average Percentage of Zeros) and its cutoffs.

APoZ is the fraction of a channel's activations that are exactly zero on some
data (Hu et al. 2016, "Network Trimming"); channels that are almost always zero
are candidates for deletion.

Example:
    >>> from kgraph.compat.kerassurgeon import identify
    >>> from kgraph.compat.kerassurgeon.operations import delete_channels
    >>> apoz = identify.get_apoz(model, "conv1", x_val)
    >>> smaller = delete_channels(model, "conv1", identify.high_apoz(apoz, "both"))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kgraph.compat.kerassurgeon.surgeon import (
    KerasSurgeonError,
    model_layer,
    model_nodes,
    select_node_indices,
)

__all__ = ["get_apoz", "high_apoz"]

log = logging.getLogger(__name__)

HIGH_APOZ_METHODS = ("std", "absolute", "both")

# Layers that are a non-linear activation without an `activation` attribute.
_ACTIVATION_LAYERS = (
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
)


def _is_nonlinear(operation: Any) -> bool:
    """True for an activation layer or a layer whose `activation` is not linear."""
    if isinstance(operation, _ACTIVATION_LAYERS):
        return True
    activation = getattr(operation, "activation", None)
    if activation is None:
        return False
    name = getattr(activation, "__name__", type(activation).__name__)
    return name != "linear"


def _mixes_channels(operation: Any) -> bool:
    """True for a layer that makes new channels from all of its inputs (Dense, Conv, ...)."""
    if isinstance(operation, keras.Model):
        return True
    try:
        config = operation.get_config()
    except Exception:  # raw keras.ops operations have no usable config
        return False
    return "units" in config or "filters" in config


def _channel_axis(layer: keras.layers.Layer) -> int:
    return 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1


def _activation_tensor(
    model: keras.Model, layer: keras.layers.Layer, node_index: int, in_model: set[int]
) -> Any:
    """The tensor whose zeros count for call `node_index` of `layer`.

    The layer's own output when its activation is non-linear, else the output of
    the first layer downstream with a non-linear activation, walking only through
    layers that keep the channels (BatchNorm, dropout, pooling, ...).
    """
    start = layer._inbound_nodes[node_index].outputs[0]
    axis = _channel_axis(layer)
    tensor, operation, path = start, layer, [layer.name]
    while not _is_nonlinear(operation):
        consumers = [
            node
            for node in operation._outbound_nodes
            if id(node) in in_model and any(t is tensor for t in node.input_tensors)
        ]
        if not consumers:
            raise KerasSurgeonError(
                f"no non-linear activation follows layer {layer.name!r} (call {node_index}) "
                f"in model {model.name!r} (walked {' -> '.join(path)} to a model output); "
                "APoZ counts zeros of an activation such as ReLU, so measure a layer "
                "that has one or is followed by one"
            )
        if len(consumers) > 1:
            log.debug(
                "%s has %d consumers; following the first, %s",
                operation.name,
                len(consumers),
                consumers[0].operation.name,
            )
        operation = consumers[0].operation
        path.append(operation.name)
        if _mixes_channels(operation):
            raise KerasSurgeonError(
                f"no non-linear activation between layer {layer.name!r} and "
                f"{operation.name!r} ({type(operation).__name__}), which mixes channels "
                f"(path {' -> '.join(path)}); APoZ of {layer.name!r} needs an activation "
                "on its own channels"
            )
        tensor = consumers[0].outputs[0]
    if len(tensor.shape) != len(start.shape) or tensor.shape[axis] != start.shape[axis]:
        raise KerasSurgeonError(
            f"the activation found for layer {layer.name!r} ({' -> '.join(path)}) has shape "
            f"{tuple(tensor.shape)}, which does not carry the {start.shape[axis]} channels of "
            f"{layer.name!r} (shape {tuple(start.shape)}) on the same axis"
        )
    return tensor


def get_apoz(
    model: keras.Model,
    layer: keras.layers.Layer | str,
    x_val: Any,
    node_indices: Sequence[int] | None = None,
) -> np.ndarray:
    """The APoZ of each channel of `layer`: the fraction of its activations equal to zero.

    The activations are the layer's output when its activation is non-linear,
    otherwise the output of the first non-linear activation after it (an
    `Activation`/`ReLU`-like layer or a layer with a non-linear `activation`).
    The channel axis is axis 1 when `layer.data_format` is "channels_first", else the
    last one (also for layers without a `data_format`, such as `Activation`: measure
    the conv before it when the model is channels_first).
    For a shared layer, the fraction is over all positions of all selected calls.

    Args:
        model: the functional or Sequential model `layer` is in (only read).
        layer: a Layer directly in `model`, or its name.
        x_val: inputs for `model.predict` (a numpy array, a list of them for several
            inputs, or anything else `predict` accepts).
        node_indices: which calls of a shared layer (indices into
            `layer._inbound_nodes`); None for all its calls in `model`.

    Returns:
        A float array with one APoZ value in [0, 1] per channel.

    Example:
        >>> get_apoz(model, "dense_1", x_val)
        array([0.  , 0.75, 1.  ])
    """
    layer = model_layer(model, layer)
    indices = select_node_indices(model, layer, node_indices)
    if not indices:
        raise KerasSurgeonError(f"layer {layer.name!r} is not called in model {model.name!r}")
    in_model = {id(node) for node in model_nodes(model)}
    outputs = [_activation_tensor(model, layer, i, in_model) for i in indices]
    probe = keras.Model(model.inputs, outputs)
    activations = probe.predict(x_val, verbose=0)
    if not isinstance(activations, (list, tuple)):
        activations = [activations]
    channels_first = _channel_axis(layer) == 1
    rows = []
    for a in activations:
        a = np.asarray(a)
        if channels_first and a.ndim > 2:
            a = np.moveaxis(a, 1, -1)
        rows.append(a.reshape(-1, a.shape[-1]))
    zeros = np.concatenate(rows, axis=0) == 0
    return zeros.mean(axis=0, dtype=np.float64)


def high_apoz(
    apoz: Sequence[float] | np.ndarray,
    method: str = "std",
    cutoff_std: float = 1,
    cutoff_absolute: float = 0.99,
) -> np.ndarray:
    """Indices of the channels whose APoZ is at or above a cutoff.

    Args:
        apoz: one APoZ value per channel (from `get_apoz`).
        method: "std": cutoff = mean + `cutoff_std` standard deviations (numpy's,
            ddof=0); "absolute": cutoff = `cutoff_absolute`; "both": the lower of
            the two. The cutoff is never above 1, so always-zero channels are found.

    Returns:
        A sorted integer array of channel indices, ready for `delete_channels`.

    Example:
        >>> high_apoz(np.array([0.1, 0.2, 0.9, 1.0]), "absolute", cutoff_absolute=0.9)
        array([2, 3])
    """
    if method not in HIGH_APOZ_METHODS:
        raise KerasSurgeonError(
            f"invalid method {method!r} for high_apoz; expected one of {HIGH_APOZ_METHODS}"
        )
    values = np.asarray(apoz, dtype=np.float64)
    if values.ndim != 1:
        raise KerasSurgeonError(
            f"apoz must be a 1-D array with one value per channel, got shape {values.shape}"
        )
    std_cutoff = values.mean() + values.std() * cutoff_std if values.size else 1.0
    if method == "std":
        cutoff = std_cutoff
    elif method == "absolute":
        cutoff = cutoff_absolute
    else:
        cutoff = min(cutoff_absolute, std_cutoff)
    cutoff = min(cutoff, 1.0)
    return np.where(values >= cutoff)[0]
