"""tfmot's pruning policies: which layers `prune_low_magnitude` wraps.

`PruneForLatencyOnXNNPack` prunes only the 1x1 `Conv2D` layers, after checking that
the model is one XNNPACK's sparse inference can run (TFLite, through TensorFlow): a
3x3 stride-2 `Conv2D` on 3 channels after `ZeroPadding2D(1)` at every input, then
only layers XNNPACK supports up to a `GlobalAveragePooling2D(keepdims=True)` on every
output branch.

Example:
    >>> pruned = prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Any

import keras

from kgraph.compat.tfmot.errors import TfmotError
from kgraph.compat.tfmot.sparsity.keras.wrapper import PruneLowMagnitude

__all__ = ["PruneForLatencyOnXNNPack", "PruningPolicy"]

L = keras.layers


class PruningPolicy(abc.ABC):
    """Says which layers to prune and checks that a model suits the policy.

    Example:
        >>> class DenseOnly(PruningPolicy):
        ...     def allow_pruning(self, layer):
        ...         return isinstance(layer, keras.layers.Dense)
        ...     def ensure_model_supports_pruning(self, model):
        ...         pass
    """

    @abc.abstractmethod
    def allow_pruning(self, layer: keras.layers.Layer) -> bool:
        """True if `layer` should be wrapped for pruning."""

    @abc.abstractmethod
    def ensure_model_supports_pruning(self, model: keras.Model) -> None:
        """Raise (a ValueError) if `model` does not suit the policy."""


def _producers(layer: Any) -> list[Any]:
    found = []
    for node in layer._inbound_nodes:
        for parent in node.parent_nodes:
            if parent.operation not in found:
                found.append(parent.operation)
    return found


def _consumers(layer: Any) -> list[Any]:
    def first(op: Any) -> Any:
        return first(op.layers[0]) if isinstance(op, keras.Sequential) else op

    return [first(node.operation) for node in layer._outbound_nodes]


def _walk(sources: Iterable[Any], stop: Callable[[Any], bool], step: Callable) -> list[Any]:
    """Layers where `stop` holds, walking from `sources` with `step`; [] if a path ends
    without reaching one."""
    to_visit, seen, found = list(sources), {id(s) for s in sources}, []
    while to_visit:
        layer = to_visit.pop()
        if stop(layer):
            found.append(layer)
            continue
        following = step(layer)
        if not following:
            return []
        for nxt in following:
            if id(nxt) not in seen:
                seen.add(id(nxt))
                to_visit.append(nxt)
    return found


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prune only 1x1 `Conv2D` layers, in models XNNPACK's sparse inference can run.

    Example:
        >>> prune_low_magnitude(mobilenet, pruning_policy=PruneForLatencyOnXNNPack())
    """

    def allow_pruning(self, layer: keras.layers.Layer) -> bool:
        """Only 1x1 `Conv2D` layers."""
        return isinstance(layer, L.Conv2D) and tuple(layer.kernel_size) == (1, 1)

    def _starts_subgraph(self, layer: Any) -> bool:
        if not isinstance(layer, L.Conv2D) or not layer.built:
            return False
        producers = _producers(layer)
        return (
            tuple(layer.kernel.shape[:3]) == (3, 3, 3)
            and tuple(layer.strides) == (2, 2)
            and layer.padding.lower() == "valid"
            and len(producers) == 1
            and isinstance(producers[0], L.ZeroPadding2D)
            and _padding(producers[0]) == ((1, 1), (1, 1))
        )

    def _supported(self, layer: Any) -> bool:
        """XNNPACK's list of layers it runs sparse (its subgraph.c)."""
        if isinstance(layer, PruneLowMagnitude):
            return self._supported(layer.layer)
        simple = (L.Add, L.Multiply, L.ZeroPadding2D, L.ReLU, L.LeakyReLU, L.ELU, L.Dropout)
        if isinstance(layer, simple):
            return True
        if isinstance(layer, L.DepthwiseConv2D):
            return self._supported_depthwise(layer)
        if isinstance(layer, L.Conv2D):
            return (
                layer.groups == 1
                and tuple(layer.dilation_rate) == (1, 1)
                and tuple(layer.kernel_size) == (1, 1)
                and tuple(layer.strides) == (1, 1)
            )
        if isinstance(layer, L.GlobalAveragePooling2D):
            return bool(layer.keepdims)
        if isinstance(layer, L.BatchNormalization):
            return layer.axis in (3, -1)
        if isinstance(layer, L.UpSampling2D):
            return layer.interpolation == "bilinear"
        if isinstance(layer, L.Activation):
            name = getattr(layer.activation, "__name__", "")
            return name in ("relu", "relu6", "leaky_relu", "elu", "sigmoid")
        # keras.ops calls in a functional model (Keras 2's TFOpLambda layers)
        return type(layer).__name__ in ("Identity", "Add", "Subtract", "Multiply")

    def _supported_depthwise(self, layer: Any) -> bool:
        producers = _producers(layer)
        padding = layer.padding.lower()
        zero_padding = (
            _padding(producers[0])
            if len(producers) == 1 and isinstance(producers[0], L.ZeroPadding2D)
            else None
        )
        kernel, strides = tuple(layer.kernel_size), tuple(layer.strides)
        size = {(3, 3): 1, (5, 5): 2}.get(kernel)
        same = size is not None and strides == (1, 1) and padding == "same"
        padded = (
            size is not None
            and strides in ((1, 1), (2, 2))
            and padding == "valid"
            and zero_padding == ((size, size), (size, size))
        )
        return (
            layer.depth_multiplier == 1
            and tuple(layer.dilation_rate) == (1, 1)
            and (same or padded)
        )

    def ensure_model_supports_pruning(self, model: keras.Model) -> None:
        """Raise `TfmotError` unless `model` is an XNNPACK sparse-inference subgraph."""
        from keras.src.models.functional import Functional

        if not isinstance(model, (keras.Sequential, Functional)):
            raise TfmotError(
                f"Subclassed models are not supported currently ({model.name!r} is a "
                f"{type(model).__name__}); build it as a functional or Sequential model"
            )
        if not model.built:
            raise TfmotError(
                f"Unbuilt models are not supported currently: build {model.name!r} first "
                "(start it with keras.Input(shape=...))"
            )
        inputs = [t._keras_history.operation for t in model.inputs]
        starts = _walk(inputs, self._starts_subgraph, _consumers)
        if not starts:
            raise TfmotError(
                "Could not find `Conv2D 3x3` layer with stride 2x2, `input filters == 3` and "
                "`VALID` padding and preceding `ZeroPadding2D` with `padding == 1` in all input "
                f"branches of model {model.name!r}"
            )
        outputs = [t._keras_history.operation for t in model.outputs]
        ends = _walk(outputs, lambda layer: isinstance(layer, L.GlobalAveragePooling2D), _producers)
        if not ends:
            raise TfmotError(
                f"Could not find a `GlobalAveragePooling2D` layer in all output branches of "
                f"model {model.name!r}"
            )
        end_ids = {id(layer) for layer in ends}

        def check(layer: Any) -> bool:
            if id(layer) not in end_ids and not self._supported(layer):
                raise TfmotError(
                    f"Layer {layer.name!r} ({type(layer).__name__}) is not supported for the "
                    f"{type(self).__name__} pruning policy: XNNPACK cannot run it sparse; "
                    "change it or prune without this policy"
                )
            return id(layer) in end_ids

        _walk([c for layer in starts for c in _consumers(layer)], check, _consumers)


def _padding(layer: Any) -> tuple[tuple[int, int], ...]:
    return tuple(tuple(p) for p in layer.padding)
