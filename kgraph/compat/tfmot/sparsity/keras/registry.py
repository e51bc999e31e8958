"""Which layers tfmot's `prune_low_magnitude` wraps, and which of their weights it prunes.

tfmot's registry, by exact class as tfmot has it, for the Keras 3 layers: Dense, the
convolutions (`kernel`; SeparableConv only `pointwise_kernel`; depthwise kernels are
not pruned), Embedding, MultiHeadAttention (its four projection kernels), SimpleRNN/
GRU/LSTM/RNN (`kernel`, `recurrent_kernel` of their cells), and layers without weights
to prune (activations, pooling, merges, normalisation, reshaping, dropout, ...).
Keras 3 layers tfmot never knew are added where the meaning is plain (EinsumDense,
Conv1DTranspose, DepthwiseConv1D, GroupNormalization, ...). Any other layer must be a
`PrunableLayer` or have a `get_prunable_weights()` method.

Example:
    >>> supports(keras.layers.Dense(4))
    True
    >>> prunable_weights(built_dense)      # [the kernel variable]
"""

from __future__ import annotations

import abc
from typing import Any

import keras

from kgraph.compat.tfmot.errors import TfmotError

__all__ = ["PrunableLayer", "prunable_weights", "supports", "unsupported_message"]

_KERNEL = ("kernel",)
_RECURRENT = ("kernel", "recurrent_kernel")

_WEIGHT_NAMES: dict[str, tuple[str, ...]] = {
    **{
        name: ()
        for name in (
            "ELU LeakyReLU ReLU Softmax Activation ActivityRegularization Identity "
            "Cropping1D Cropping2D Cropping3D UpSampling1D UpSampling2D UpSampling3D "
            "ZeroPadding1D ZeroPadding2D ZeroPadding3D DepthwiseConv1D DepthwiseConv2D "
            "Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D AlphaDropout "
            "GaussianDropout GaussianNoise Flatten Lambda Masking Permute RepeatVector "
            "Reshape Add Average Concatenate Dot Maximum Minimum Multiply Subtract "
            "BatchNormalization LayerNormalization GroupNormalization UnitNormalization "
            "Rescaling AveragePooling1D AveragePooling2D AveragePooling3D MaxPooling1D "
            "MaxPooling2D MaxPooling3D GlobalAveragePooling1D GlobalAveragePooling2D "
            "GlobalAveragePooling3D GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D"
        ).split()
    },
    **{
        name: _KERNEL
        for name in (
            "Dense EinsumDense Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose "
            "Conv3DTranspose MultiHeadAttention"
        ).split()
    },
    "SeparableConv1D": ("pointwise_kernel",),
    "SeparableConv2D": ("pointwise_kernel",),
    "Embedding": ("embeddings",),
}
_RNN_LAYERS = ("GRU", "LSTM", "RNN", "SimpleRNN")
_RNN_CELLS = ("GRUCell", "LSTMCell", "SimpleRNNCell")


_BY_CLASS = {
    getattr(keras.layers, n): v for n, v in _WEIGHT_NAMES.items() if hasattr(keras.layers, n)
}
_RNN_CLASSES = tuple(getattr(keras.layers, n) for n in _RNN_LAYERS)
_CELL_CLASSES = tuple(getattr(keras.layers, n) for n in _RNN_CELLS)


class PrunableLayer(metaclass=abc.ABCMeta):
    """Base for your own layer that `prune_low_magnitude` may prune: list its weights.

    Example:
        >>> class MyDense(keras.layers.Dense, PrunableLayer):
        ...     def get_prunable_weights(self):
        ...         return [self.kernel]
    """

    @abc.abstractmethod
    def get_prunable_weights(self) -> list[Any]:
        """The weight variables to prune (built: called after the layer's `build`)."""


def _custom(layer: Any) -> bool:
    return isinstance(layer, PrunableLayer) or callable(
        getattr(layer, "get_prunable_weights", None)
    )


def _cells(layer: Any) -> list[Any]:
    cell = layer.cell
    return list(cell.cells) if isinstance(cell, keras.layers.StackedRNNCells) else [cell]


def supports(layer: Any) -> bool:
    """True if `prune_low_magnitude` can wrap `layer` (tfmot's registry, by exact class)."""
    if _custom(layer):
        return True
    if type(layer) in _BY_CLASS:
        return True
    if type(layer) in _RNN_CLASSES:
        return all(type(cell) in _CELL_CLASSES or _custom(cell) for cell in _cells(layer))
    return False


def unsupported_message(layer: Any) -> str:
    """Why `layer` cannot be wrapped, and what to do."""
    return (
        f"layer {getattr(layer, 'name', '?')!r} ({type(layer).__name__}) is not supported by "
        "prune_low_magnitude: it is not one of the built-in Keras layers tfmot's registry "
        "knows (by exact class), and it is not a PrunableLayer and has no "
        "get_prunable_weights() method. Subclass tfmot.sparsity.keras.PrunableLayer and "
        "return the weights to prune from get_prunable_weights(), or leave the layer out "
        "(wrap only some layers, or pass a pruning_policy)"
    )


def prunable_weights(layer: Any) -> list[Any]:
    """The variables of a built `layer` that pruning zeroes, in a stable order."""
    if _custom(layer):
        weights = list(layer.get_prunable_weights())
    elif type(layer) in _RNN_CLASSES:
        weights = []
        for cell in _cells(layer):
            if _custom(cell):
                weights.extend(cell.get_prunable_weights())
            else:
                weights.extend(w for w in cell.weights if w.name in _RECURRENT)
    elif type(layer) in _BY_CLASS:
        names = _BY_CLASS[type(layer)]
        weights = [w for w in layer.weights if w.name in names]
    else:
        raise TfmotError(unsupported_message(layer))
    for weight in weights:
        if not isinstance(weight, keras.Variable):
            raise TfmotError(
                f"get_prunable_weights() of layer {layer.name!r} ({type(layer).__name__}) "
                f"returned {type(weight).__name__} {weight!r}, not a variable; return the "
                "layer's weight variables (e.g. [self.kernel])"
            )
    return weights
