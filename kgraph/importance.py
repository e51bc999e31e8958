"""Importance criteria: a score per channel of a `ChannelGroup` (low = prune first).

- `l1`, `l2`: norms of the weights that make each channel, averaged over the
  group's owners (Li et al. 2017, "Pruning Filters for Efficient ConvNets");
- `bn_scale`: |gamma| of the group's BatchNormalization layers (network slimming,
  Liu et al. 2017);
- `apoz`: 1 - the average percentage of zeros of the group's activations on data
  (Hu et al. 2016, "Network Trimming"; kerassurgeon's criterion);
- `taylor`: |activation x gradient of the loss| summed over data (Molchanov et al.
  2017), here the gradient of a per-channel gate, summed over each batch;
- `random`: uniform scores from a seeded generator;
- or any callable `criterion(graph, group) -> scores`.

Scores have one entry per lifted channel of the group; channels already deleted
score NaN.

Example:
    >>> graph = kgraph.lift(model)
    >>> groups = [g for g in kgraph.channel_groups(graph) if g.prunable]
    >>> scores = kgraph.importance(graph, groups, "apoz", data=x_val)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from kgraph.errors import KGraphError
from kgraph.graph import Graph
from kgraph.groups import ChannelGroup, analysis
from kgraph.passes.insert_layer import InsertLayer
from kgraph.rules.capabilities import channel_norms
from kgraph.rules.channelwise import PassThroughRule

__all__ = ["CRITERIA", "alive", "batches", "importance"]

log = logging.getLogger(__name__)

Criterion = str | Callable[[Graph, ChannelGroup], Any]
CRITERIA = ("l1", "l2", "bn_scale", "apoz", "taylor", "random")


def batches(data: Any, batch_size: int = 32) -> Iterator[tuple[Any, Any]]:
    """`(x, y)` batches from numpy arrays, an `(x, y)` tuple, a tf.data.Dataset or an iterable.

    `y` is None when the data has no targets.
    """
    if data is None:
        raise KGraphError("this criterion needs data: pass data=x or data=(x, y)")
    if isinstance(data, tuple) and len(data) == 2 and _is_array(data[0]):
        x, y = data
        for start in range(0, len(keras.tree.flatten(x)[0]), batch_size):
            yield _rows(x, start, batch_size), _rows(y, start, batch_size)
        return
    if _is_array(data):
        for start in range(0, len(data), batch_size):
            yield data[start : start + batch_size], None
        return
    for item in data:  # tf.data.Dataset, a generator, a list of batches
        if isinstance(item, (tuple, list)) and len(item) >= 2:
            yield item[0], item[1]
        else:
            yield item, None


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (
        isinstance(value, (dict, list))
        and all(isinstance(v, np.ndarray) for v in keras.tree.flatten(value))
    )


def _rows(value: Any, start: int, size: int) -> Any:
    return keras.tree.map_structure(lambda v: v[start : start + size], value)


def _spread(graph: Graph, group: ChannelGroup, name: str, values: np.ndarray) -> np.ndarray:
    """Per-kept-channel `values` of node `name` placed in the group's lifted coordinates."""
    offset, width = analysis(graph).position(name)
    node = graph.node(name)
    own = graph.rules.rule_for(node).owned_output(node) or node.outputs[0]
    placed = np.full(group.channels, np.nan)
    lifted = np.full(width, np.nan)
    lifted[own.mask] = values
    placed[offset : offset + width] = lifted
    return placed


def _average(parts: list[np.ndarray], channels: int) -> np.ndarray:
    """Mean over the parts that cover each channel (NaN where none does)."""
    if not parts:
        return np.full(channels, np.nan)
    stack = np.vstack(parts)
    covered = ~np.isnan(stack)
    total = np.where(covered, stack, 0.0).sum(axis=0)
    count = covered.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _norms(graph: Graph, group: ChannelGroup, order: int) -> np.ndarray:
    parts = []
    for owner in group.owners:
        node = graph.node(owner)
        norms = channel_norms(graph.rules.rule_for(node), node, order)
        if norms is not None:
            parts.append(_spread(graph, group, owner, norms))
    return _average(parts, group.channels)


def _bn_scale(graph: Graph, group: ChannelGroup) -> np.ndarray:
    parts = []
    for name in group.members:
        node = graph.node(name)
        if node.class_name == "BatchNormalization" and node.has_weight("gamma"):
            parts.append(_spread(graph, group, name, np.abs(node.weight("gamma"))))
    return _average(parts, group.channels)


def _activation_members(graph: Graph, group: ChannelGroup) -> list[str]:
    """Where to measure a group's activations: its non-linearities, else its owners."""
    chosen = []
    for name in group.members:
        node = graph.node(name)
        activation = node.config.get("activation")
        nonlinear = node.class_name in ("ReLU", "LeakyReLU", "ELU", "PReLU") or (
            isinstance(activation, str) and activation != "linear"
        )
        if node.kind == "layer" and nonlinear and node.call_index == 0:
            chosen.append(name)
    return chosen or [o for o in group.owners if graph.node(o).call_index == 0]


def _probe_model(graph: Graph, names: list[str]) -> keras.Model:
    """The lowered graph, answering the outputs of layers `names`."""
    model = graph.lower()
    outputs = [
        model.get_layer(graph.node(n).layer)._inbound_nodes[0].output_tensors[0] for n in names
    ]
    return keras.Model(model.input, outputs)


def _channel_axis(graph: Graph, name: str) -> int:
    return graph.node(name).outputs[0].axis


def _apoz(
    graph: Graph, groups: Sequence[ChannelGroup], data: Any, batch_size: int
) -> list[np.ndarray]:
    chosen = [_activation_members(graph, g) for g in groups]
    names = list(dict.fromkeys(n for names in chosen for n in names))
    probe = _probe_model(graph, names)
    zeros = {n: 0.0 for n in names}
    count = {n: 0 for n in names}
    for index, (x, _) in enumerate(batches(data, batch_size), start=1):
        outputs = probe(x, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for name, value in zip(names, outputs):
            array = np.moveaxis(np.asarray(value), _channel_axis(graph, name), -1)
            flat = array.reshape(-1, array.shape[-1])
            zeros[name] = zeros[name] + (flat == 0).sum(axis=0)
            count[name] += flat.shape[0]
        log.info("apoz: %d batches measured", index)
    result = []
    for group, names_of_group in zip(groups, chosen):
        parts = [
            _spread(graph, group, n, 1.0 - zeros[n] / max(count[n], 1)) for n in names_of_group
        ]
        result.append(_average(parts, group.channels))
    return result


class _Gate(keras.layers.Layer):
    """Multiplies channels by a weight of ones: its gradient is sum(activation x gradient)."""

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = axis

    def build(self, input_shape: Any) -> None:
        self.gate = self.add_weight(
            shape=(input_shape[self.axis],), initializer="ones", name="gate"
        )

    def call(self, x: Any) -> Any:
        shape = [1] * len(x.shape)
        shape[self.axis] = -1
        return x * keras.ops.reshape(self.gate, shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}


def _taylor(
    graph: Graph, groups: Sequence[ChannelGroup], data: Any, loss: Any, batch_size: int
) -> list[np.ndarray]:
    import tensorflow as tf  # TensorFlow's autodiff: this criterion needs that backend

    if loss is None:
        raise KGraphError(
            "the taylor criterion needs a loss (e.g. loss='sparse_categorical_crossentropy')"
        )
    loss_fn = keras.losses.get(loss)
    chosen = [_activation_members(graph, g) for g in groups]
    names = list(dict.fromkeys(n for names in chosen for n in names))
    gates = [
        InsertLayer(
            n, _Gate(axis=_channel_axis(graph, n), name=f"kgraph_taylor_gate_{i}"), after=True
        )
        for i, n in enumerate(names)
    ]
    gated = graph.rules.extended({_Gate: PassThroughRule()})
    model = graph.apply(*gates, rules=gated).lower()
    variables = [model.get_layer(f"kgraph_taylor_gate_{i}").gate for i in range(len(names))]
    totals = [np.zeros(v.shape[0]) for v in variables]
    for index, (x, y) in enumerate(batches(data, batch_size), start=1):
        if y is None:
            raise KGraphError("the taylor criterion needs targets: pass data=(x, y)")
        with tf.GradientTape() as tape:
            value = keras.ops.mean(loss_fn(y, model(x, training=False)))
        for total, grad in zip(totals, tape.gradient(value, variables)):
            total += np.abs(np.asarray(grad))
        log.info("taylor: %d batches measured", index)
    by_name = dict(zip(names, totals))
    return [
        _average([_spread(graph, g, n, by_name[n]) for n in names_of_group], g.channels)
        for g, names_of_group in zip(groups, chosen)
    ]


def importance(
    graph: Graph,
    groups: Sequence[ChannelGroup],
    criterion: Criterion = "l1",
    *,
    data: Any = None,
    loss: Any = None,
    batch_size: int = 32,
    seed: int = 0,
) -> list[np.ndarray]:
    """One score array per group (lifted coordinates; NaN for deleted channels).

    Args:
        criterion: one of `CRITERIA` or a callable `(graph, group) -> scores`.
        data: for `apoz` and `taylor`: numpy inputs, `(x, y)`, a tf.data.Dataset or
            an iterable of batches (batches of `batch_size` are cut from arrays).
        loss: for `taylor`: a Keras loss (name, function or `keras.losses.Loss`).
    """
    if callable(criterion):
        return [np.asarray(criterion(graph, g), dtype=np.float64) for g in groups]
    if criterion in ("l1", "l2"):
        return [_norms(graph, g, 1 if criterion == "l1" else 2) for g in groups]
    if criterion == "bn_scale":
        return [_bn_scale(graph, g) for g in groups]
    if criterion == "apoz":
        return _apoz(graph, groups, data, batch_size)
    if criterion == "taylor":
        return _taylor(graph, groups, data, loss, batch_size)
    if criterion == "random":
        rng = np.random.default_rng(seed)
        return [_mask_deleted(graph, g, rng.random(g.channels)) for g in groups]
    raise KGraphError(f"unknown criterion {criterion!r}; use one of {CRITERIA} or a callable")


def alive(graph: Graph, group: ChannelGroup) -> np.ndarray:
    """Which lifted channels of `group` are still there (kept by some owner)."""
    kept = np.zeros(group.channels, dtype=bool)
    for owner in group.owners:
        offset, width = analysis(graph).position(owner)
        node = graph.node(owner)
        kept[offset : offset + width] |= graph.rules.rule_for(node).owned_output(node).mask
    return kept


def _mask_deleted(graph: Graph, group: ChannelGroup, scores: np.ndarray) -> np.ndarray:
    return np.where(alive(graph, group), scores, np.nan)
