"""Rules for normalisation and scaling layers.

- `PReLURule`: PReLU's `alpha` (the input's shape, 1 on `shared_axes`) is sliced on
  the channel axis unless it is shared there.
- `AxisNormRule`: LayerNormalization (gamma, beta) and RMSNormalization (scale)
  slice their parameters on the channel axis when it is one of the normalised axes.
  Normalising *over* the channels is not function-preserving: a deleted channel no
  longer counts in the mean and variance.
- `GroupNormalizationRule`: every group must keep the same number of channels;
  deleting whole groups is function-preserving and lowers `groups`.
- `RescalingRule`, `NormalizationRule`: per-channel values in the config
  (`scale`/`offset`, `mean`/`variance`) or in weights (an adapted Normalization's
  `mean`/`variance`) are sliced on the channel axis.
- `LayerScaleRule` and `CustomScaleRule`: the custom layers of ConvNeXt and
  InceptionResNetV2 in `keras.applications`.

UnitNormalization (weightless; zeros add nothing to an L2 norm) passes channels on.

Example:
    >>> x = keras.Input((6,))
    >>> y = keras.layers.PReLU(name="prelu")(keras.layers.Dense(4, name="dense")(x))
    >>> model = keras.Model(x, keras.layers.Dense(2, name="head")(y))
    >>> smaller = kgraph.lift(model).apply(DeleteChannels("dense", [0])).lower()
    >>> smaller.get_layer("prelu").get_weights()[0].shape
    (3,)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kgraph.errors import UnsupportedLayerError
from kgraph.ir import Node, Tensor
from kgraph.rules.base import (
    Rule,
    carry,
    data_slots,
    expect_weights,
    normalize_axis,
    take,
    take_weight,
)
from kgraph.rules.capabilities import ChecksWeights
from kgraph.rules.merge import ElementwiseMergeRule

__all__ = [
    "AxisNormRule",
    "CustomScaleRule",
    "GroupNormalizationRule",
    "LayerScaleRule",
    "NormalizationRule",
    "PReLURule",
    "RescalingRule",
]


class _CarryRule(Rule):
    """Output 0 keeps input 0's channels on the same axis."""

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        return (carry(node.outputs[0], inputs[0]),)


def _slice_values(
    node: Node, rule: Rule, name: str, value: Any, index: int, old: int, keep: np.ndarray
) -> np.ndarray | None:
    """`value` sliced on its axis `index` (None when that axis is broadcast, size 1)."""
    array = np.asarray(value)
    if index < 0 or index >= array.ndim or array.shape[index] == 1:
        return None
    if array.shape[index] != old:
        raise UnsupportedLayerError(
            f"{node.describe()} has {name} of shape {array.shape}, which does not line up "
            f"with its {old} channels, so {type(rule).__name__} cannot slice it; register a "
            f"rule for {node.class_name} with kgraph.register_rule"
        )
    return take(array, keep, index)


class PReLURule(_CarryRule, ChecksWeights):
    """PReLU: `alpha` has the input's shape (batch axis left out), 1 on `shared_axes`.

    `alpha` is sliced on the channel axis, wherever the channels sit; with the channel
    axis among `shared_axes` one alpha serves every channel and nothing is sliced.
    """

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        keep, source = keeps[0], inputs[0]
        if keep is None:
            return node
        expect_weights(node, self, "alpha")
        alpha = node.weight("alpha")
        sliced = _slice_values(node, self, "alpha", alpha, source.axis - 1, keep.size, keep)
        return node if sliced is None else node.with_weights(alpha=sliced)

    def check(self, node: Node) -> list[str]:
        source = node.inputs[0] if node.inputs else None
        if source is None or source.axis is None or not node.has_weight("alpha"):
            return []
        alpha = node.weight("alpha")
        size = alpha.shape[source.axis - 1]
        if size in (1, source.channels):
            return []
        return [f"has alpha of shape {alpha.shape} for {source.channels} channels"]


class AxisNormRule(_CarryRule, ChecksWeights):
    """LayerNormalization / RMSNormalization: parameters over the normalised `axis` list.

    The parameters have one axis per normalised axis, in the order of the sorted
    `axis` config (as Keras builds them). When the channel axis is normalised they
    are sliced there, but the layer is then not function-preserving: deleted
    channels no longer count in the statistics. Otherwise each channel is
    normalised on its own and nothing is sliced.

    Args:
        params: names of the per-position weights (gamma, beta / scale).
    """

    def __init__(self, params: Sequence[str] = ("gamma", "beta")) -> None:
        self.params = tuple(params)

    def param_axis(self, node: Node, tensor: Tensor) -> int | None:
        """The axis of the parameters that runs along `tensor`'s channels (None: none)."""
        axis = node.config.get("axis", -1)
        axes = sorted(axis) if isinstance(axis, (list, tuple)) else [axis]
        rank = len(tensor.shape)
        for index, value in enumerate(axes):
            if normalize_axis(int(value), rank) == tensor.axis:
                return index
        return None

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        keep, source = keeps[0], inputs[0]
        if keep is None:
            return node
        expect_weights(node, self, *self.params)
        index = self.param_axis(node, source)
        if index is None:
            return node
        return node.with_weights(
            **{n: take_weight(node, n, keep, index) for n in node.weight_names}
        )

    def check(self, node: Node) -> list[str]:
        source = node.inputs[0] if node.inputs else None
        if source is None or source.axis is None:
            return []
        index = self.param_axis(node, source)
        if index is None:
            return []
        return [
            f"has weight {name} of shape {w.shape} for {source.channels} channels"
            for name, w in zip(node.weight_names, node.weights)
            if name in self.params and (w.ndim <= index or w.shape[index] != source.channels)
        ]


class GroupNormalizationRule(_CarryRule, ChecksWeights):
    """GroupNormalization: `groups` contiguous groups of channels, gamma/beta per channel.

    Every group must keep the same number of channels (groups emptied completely
    are dropped, and `groups` counts the rest). Deleting whole groups is
    function-preserving; deleting the same number of channels from every group is
    allowed but changes each group's statistics. Channels on another axis than the
    layer's `axis` are positions it normalises over: nothing is sliced.
    """

    def _grouped(self, node: Node, tensor: Tensor) -> bool:
        return normalize_axis(int(node.config.get("axis", -1)), len(tensor.shape)) == tensor.axis

    def _groups(self, node: Node, channels: int) -> int:
        groups = int(node.config.get("groups", 32))
        return channels if groups == -1 else groups

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        keep, source = keeps[0], inputs[0]
        if keep is None or not self._grouped(node, source):
            return node
        expect_weights(node, self, "gamma", "beta")
        channels = keep.size
        groups = self._groups(node, channels)
        if channels % groups:
            raise self.unsupported(
                node, source, 0, f"its {channels} channels do not split into {groups} groups"
            )
        size = channels // groups
        kept = keep.reshape(groups, size).sum(axis=1)
        left = kept[kept > 0]
        if len(set(left.tolist())) > 1:
            deleted = {
                g: (np.flatnonzero(~keep[g * size : (g + 1) * size]) + g * size).tolist()
                for g in range(groups)
                if kept[g] < size
            }
            raise self.unsupported(
                node,
                source,
                0,
                f"it normalises its {channels} channels in {groups} groups of {size}, and every "
                f"group must keep the same number of channels, but the deletions leave groups of "
                f"{kept.tolist()} channels (deleted per group: {deleted}). Delete whole groups, "
                "or the same number of channels from every group",
            )
        node = node.with_weights(**{n: take_weight(node, n, keep, 0) for n in node.weight_names})
        if int(node.config.get("groups", 32)) == -1:
            return node
        return node.with_config(groups=len(left))

    def check(self, node: Node) -> list[str]:
        source = node.inputs[0] if node.inputs else None
        if source is None or source.axis is None or not self._grouped(node, source):
            return []
        channels = source.channels
        problems = [
            f"has weight {name} of shape {w.shape} for {channels} channels"
            for name, w in zip(node.weight_names, node.weights)
            if w.shape[0] != channels
        ]
        if channels % self._groups(node, channels):
            problems.append(f"has groups={node.config.get('groups')} for {channels} channels")
        return problems


def _config_array(value: Any) -> tuple[Any, bool]:
    """A config value as an array-like, and whether it was a serialised numpy array."""
    if isinstance(value, dict) and value.get("class_name") == "__numpy__":
        return value["config"]["value"], True
    return value, False


def _as_config(value: Any, array: np.ndarray, numpy: bool) -> Any:
    if numpy:
        return {
            **value,
            "config": {**value["config"], "value": array.tolist(), "dtype": str(array.dtype)},
        }
    return array.tolist()


class RescalingRule(_CarryRule):
    """Rescaling: `x * scale + offset`; per-channel `scale`/`offset` in config are sliced.

    The values broadcast against the input from the right; when Keras' global
    `image_data_format` is "channels_first" a non-scalar `scale` (not `offset`) is
    first padded with unit axes to rank 3, as `Rescaling.call` does, which puts a
    (C,) scale on axis 1 of an image. Scalars and values of size 1 on the channel
    axis are kept.
    """

    def _index(self, key: str, tensor: Tensor, ndim: int) -> int:
        effective = ndim
        if key == "scale" and ndim and keras.config.image_data_format() == "channels_first":
            effective = max(ndim, 3)
        return tensor.axis - (len(tensor.shape) - effective)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        keep, source = keeps[0], inputs[0]
        if keep is None:
            return node
        updates = {}
        for key in ("scale", "offset"):
            value = node.config.get(key, 0.0)
            raw, numpy = _config_array(value)
            array = np.asarray(raw)
            sliced = _slice_values(
                node, self, key, array, self._index(key, source, array.ndim), keep.size, keep
            )
            if sliced is not None:
                updates[key] = _as_config(value, sliced, numpy)
        return node.with_config(**updates) if updates else node


class NormalizationRule(_CarryRule, ChecksWeights):
    """Normalization: per-position mean and variance over its kept `axis` list.

    The values live in the config (`mean=`, `variance=`, broadcast from the right
    over the kept axes) or, after `adapt`, in the weights `mean`/`variance` (shaped
    like the kept axes; `count` is a scalar). Whichever holds values along the
    channel axis is sliced there.
    """

    def _kept_axes(self, node: Node, rank: int) -> list[int]:
        axis = node.config.get("axis", (-1,))
        axes = () if axis is None else axis if isinstance(axis, (list, tuple)) else (axis,)
        return sorted(normalize_axis(int(a), rank) for a in axes)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        keep, source = keeps[0], inputs[0]
        if keep is None:
            return node
        expect_weights(node, self, "mean", "variance", "count")
        kept = self._kept_axes(node, len(source.shape))
        if source.axis not in kept:
            return node  # one mean for every channel
        position = kept.index(source.axis)
        if node.weights:
            return node.with_weights(
                **{n: take_weight(node, n, keep, position) for n in ("mean", "variance")}
            )
        updates = {}
        for key in ("mean", "variance"):
            value = node.config.get(key)
            if value is None:
                continue
            array = np.asarray(value, dtype="float32")
            index = position - (len(kept) - array.ndim)
            sliced = _slice_values(node, self, key, array, index, keep.size, keep)
            if sliced is not None:
                updates[key] = sliced.tolist()
        return node.with_config(**updates) if updates else node

    def check(self, node: Node) -> list[str]:
        source = node.inputs[0] if node.inputs else None
        if source is None or source.axis is None or not node.has_weight("mean"):
            return []
        kept = self._kept_axes(node, len(source.shape))
        if source.axis not in kept:
            return []
        position = kept.index(source.axis)
        return [
            f"has weight {name} of shape {node.weight(name).shape} for {source.channels} channels"
            for name in ("mean", "variance")
            if node.weight(name).shape[position] != source.channels
        ]


class LayerScaleRule(_CarryRule, ChecksWeights):
    """ConvNeXt's LayerScale: `x * gamma` with one gamma per channel of the last axis.

    Its gamma is created without a name (Keras calls it `variable`), so the rule
    takes the layer's single weight, whatever its name, and updates
    `projection_dim`.
    """

    def _gamma(self, node: Node) -> np.ndarray:
        if len(node.weights) != 1 or node.weights[0].ndim != 1:
            raise UnsupportedLayerError(
                f"{node.describe()} has weights of shapes {[w.shape for w in node.weights]}, "
                "but LayerScaleRule expects one per-channel gamma; register a rule for "
                f"{node.class_name} with kgraph.register_rule"
            )
        return node.weights[0]

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        keep, source = keeps[0], inputs[0]
        if keep is None or source.axis != len(source.shape) - 1:
            return node  # channels on another axis: gamma does not run along them
        gamma = take(self._gamma(node), keep, 0)
        node = node.with_weights(**{node.weight_names[0]: gamma})
        return node.with_config(projection_dim=int(keep.sum()))

    def check(self, node: Node) -> list[str]:
        source = node.inputs[0] if node.inputs else None
        if source is None or source.axis != len(source.shape) - 1 or len(node.weights) != 1:
            return []
        width = node.weights[0].shape[0]
        if width == source.channels == node.config.get("projection_dim"):
            return []
        return [
            f"has gamma of shape {node.weights[0].shape} and projection_dim="
            f"{node.config.get('projection_dim')} for {source.channels} channels"
        ]


class CustomScaleRule(ElementwiseMergeRule):
    """InceptionResNetV2's CustomScaleLayer: `inputs[0] + inputs[1] * scale`.

    An element-wise merge of its two inputs (they must keep the same channels); a
    per-channel `scale` in the config (a float in keras.applications) is sliced.
    """

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        scale = node.config.get("scale", 1.0)
        changed = [s for s in data_slots(node) if keeps[s] is not None]
        if not changed or np.ndim(scale) == 0:
            return node
        tensor, keep = inputs[changed[0]], keeps[changed[0]]
        array = np.asarray(scale)
        index = tensor.axis - (len(tensor.shape) - array.ndim)
        sliced = _slice_values(node, self, "scale", array, index, keep.size, keep)
        return node if sliced is None else node.with_config(scale=sliced.tolist())
