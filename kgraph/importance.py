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
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import keras
import numpy as np

from kgraph.criteria import BUILTIN
from kgraph.errors import KGraphError, PruningError
from kgraph.graph_data import GraphData
from kgraph.groups import ChannelGroup, alive, analysis
from kgraph.lower import lower
from kgraph.passes.insert_layer import InsertLayer
from kgraph.passes.pipeline import run_pipeline
from kgraph.rules.capabilities import HasHeads, channel_norms
from kgraph.rules.channelwise import PassThroughRule

__all__ = [
    "CRITERIA",
    "Criterion",
    "ScoringInputs",
    "alive",
    "batches",
    "head_importance",
    "importance",
    "register_criterion",
]

log = logging.getLogger(__name__)

HeadScorer = Callable[[GraphData, Sequence[str], "ScoringInputs"], list[np.ndarray]]


@attrs.frozen
class ScoringInputs:
    """What a data-driven criterion may use besides the graph.

    Attributes:
        data: inputs, `(x, y)`, a tf.data.Dataset or an iterable of batches.
        loss: a Keras loss (name, function or `keras.losses.Loss`).
        batch_size: rows per batch cut from arrays.
        seed: for random choices.
    """

    data: Any = None
    loss: Any = None
    batch_size: int = 32
    seed: int = 0


@attrs.frozen
class Criterion:
    """A named importance criterion.

    Attributes:
        name: how users ask for it (`criterion="l1"`, `--criterion l1`).
        summary: one line for people (the CLI's help).
        score: `score(graph, groups, inputs) -> [scores per group]`, one score per
            lifted channel of each group, NaN for channels already deleted.
        needs_data: it measures activations on `data`.
        needs_loss: it also needs targets (`data=(x, y)`) and a `loss`.
        score_heads: `score_heads(graph, nodes, inputs) -> [scores per node]`, one score
            per lifted (query) head of each attention node (NaN for deleted heads);
            None when the criterion cannot score attention heads.
    """

    name: str
    summary: str
    score: Callable[[GraphData, Sequence[ChannelGroup], ScoringInputs], list[np.ndarray]]
    needs_data: bool = False
    needs_loss: bool = False
    score_heads: HeadScorer | None = None


#: The criteria by name; `register_criterion` adds one.
CRITERIA: dict[str, Criterion] = {}


def register_criterion(criterion: Criterion) -> Criterion:
    """Make `criterion` available by its name to `kgraph.prune`, `importance` and the CLI."""
    if not isinstance(criterion, Criterion):
        raise KGraphError(
            f"register_criterion needs a kgraph.importance.Criterion, got {criterion!r}"
        )
    CRITERIA[criterion.name] = criterion
    return criterion


def batches(data: Any, batch_size: int = 32) -> Iterator[tuple[Any, Any]]:
    """`(x, y)` batches from numpy arrays, an `(x, y)` tuple, a tf.data.Dataset or an iterable.

    `y` is None when the data has no targets.
    """
    if data is None:
        raise PruningError("this criterion needs data: pass data=x or data=(x, y)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise PruningError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise PruningError(f"batch_size must be a positive integer, got {batch_size!r}")
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
    """An array, or the arrays of a multi-input model (a dict, or a list of arrays; a
    list of `(x, y)` tuples is a list of batches)."""
    if isinstance(value, list) and any(isinstance(v, tuple) for v in value):
        return False
    return isinstance(value, np.ndarray) or (
        isinstance(value, (dict, list))
        and all(isinstance(v, np.ndarray) for v in keras.tree.flatten(value))
    )


def _rows(value: Any, start: int, size: int) -> Any:
    return keras.tree.map_structure(lambda v: v[start : start + size], value)


def _spread(graph: GraphData, group: ChannelGroup, name: str, values: np.ndarray) -> np.ndarray:
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


def _norms(graph: GraphData, group: ChannelGroup, order: int) -> np.ndarray:
    parts = []
    for owner in group.owners:
        node = graph.node(owner)
        norms = channel_norms(graph.rules.rule_for(node), node, order)
        if norms is not None:
            parts.append(_spread(graph, group, owner, norms))
    return _average(parts, group.channels)


def _bn_scale(graph: GraphData, group: ChannelGroup) -> np.ndarray:
    parts = []
    for name in group.members:
        node = graph.node(name)
        if node.class_name == "BatchNormalization" and node.has_weight("gamma"):
            parts.append(_spread(graph, group, name, np.abs(node.weight("gamma"))))
    return _average(parts, group.channels)


def _activation_members(graph: GraphData, group: ChannelGroup) -> list[str]:
    """Where to measure a group's activations: its non-linearities, else its owners."""
    chosen = []
    for name in group.members:
        node = graph.node(name)
        activation = node.config.get("activation")
        nonlinear = node.class_name in ("ReLU", "LeakyReLU", "ELU", "PReLU") or (
            isinstance(activation, str) and activation != "linear"
        )
        if node.kind == "layer" and nonlinear:
            chosen.append(name)  # every call of a shared layer: scored over all of them
    return chosen or list(group.owners)


def _probe_model(graph: GraphData, names: list[str]) -> keras.Model:
    """The lowered graph, answering the outputs of layers `names`."""
    model = lower(graph)
    outputs = []
    for name in names:
        node = graph.node(name)
        call = model.get_layer(node.layer)._inbound_nodes[node.call_index]
        outputs.append(call.output_tensors[0])
    return keras.Model(model.input, outputs)


def _channel_axis(graph: GraphData, name: str) -> int:
    return graph.node(name).outputs[0].axis


def _outputs(model: keras.Model, x: Any, what: str) -> list[Any]:
    """`model(x)` as a list, a wrong input a `PruningError` saying what the model expects."""
    try:
        outputs = model(x, training=False)
    except Exception as error:  # Keras/backends raise many kinds for a wrong input
        expected = [tuple(t.shape) for t in model.inputs]
        got = [tuple(np.shape(v)) for v in keras.tree.flatten(x)]
        raise PruningError(
            f"the {what} criterion could not run the model on the data: the model takes "
            f"inputs of shapes {expected} (None: any size), the data has batches of shapes "
            f"{got}. Pass data shaped like the model's inputs ({type(error).__name__})"
        ) from error
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _apoz(
    graph: GraphData, groups: Sequence[ChannelGroup], inputs: ScoringInputs
) -> list[np.ndarray]:
    chosen = [_activation_members(graph, g) for g in groups]
    names = list(dict.fromkeys(n for names in chosen for n in names))
    probe = _probe_model(graph, names)
    zeros = {n: 0.0 for n in names}
    count = {n: 0 for n in names}
    for index, (x, _) in enumerate(batches(inputs.data, inputs.batch_size), start=1):
        for name, value in zip(names, _outputs(probe, x, "apoz")):
            array = keras.ops.convert_to_numpy(value)
            array = np.moveaxis(array, _channel_axis(graph, name), -1)
            flat = array.reshape(-1, array.shape[-1])
            zeros[name] = zeros[name] + (flat == 0).sum(axis=0)
            count[name] += flat.shape[0]
        log.info("apoz: %d batches measured", index)
    if not any(count.values()):
        raise PruningError("the apoz criterion got no data: the data holds no batch")
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


def _loss_value(loss_fn: Any, y: Any, prediction: Any) -> Any:
    try:
        return keras.ops.mean(loss_fn(y, prediction))
    except Exception as error:  # wrong targets: Keras/backends raise many kinds
        raise PruningError(
            f"the taylor criterion could not compute the loss: the model predicts shape "
            f"{tuple(prediction.shape)}, the targets have shape {tuple(np.shape(y))}. Pass "
            f"targets the loss accepts for these predictions ({type(error).__name__})"
        ) from error


def _gradients(model: keras.Model, gates: list[Any], loss_fn: Any, x: Any, y: Any) -> list[Any]:
    """d loss / d gate for each gate variable, with the backend's own autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # the backend the user chose

        with tf.GradientTape() as tape:
            value = _loss_value(loss_fn, y, _outputs(model, x, "taylor")[0])
        return list(tape.gradient(value, gates))
    if backend == "jax":
        import jax  # the backend the user chose

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]
        positions = [[id(v) for v in model.trainable_variables].index(id(g)) for g in gates]

        def loss_of(gate_values: list[Any]) -> Any:
            values = list(trainable)
            for position, value in zip(positions, gate_values):
                values[position] = value
            prediction, _ = model.stateless_call(values, frozen, x, training=False)
            prediction = keras.tree.flatten(prediction)[0]
            return _loss_value(loss_fn, y, prediction)

        return list(jax.grad(loss_of)([trainable[p] for p in positions]))
    if backend == "torch":
        for gate in gates:
            gate.value.grad = None
        _loss_value(loss_fn, y, _outputs(model, x, "taylor")[0]).backward()
        return [gate.value.grad for gate in gates]
    raise PruningError(f"the taylor criterion does not support the {backend!r} backend")


def _loss_function(inputs: ScoringInputs) -> Any:
    if inputs.loss is None:
        raise PruningError(
            "the taylor criterion needs a loss (e.g. loss='sparse_categorical_crossentropy')"
        )
    try:
        return keras.losses.get(inputs.loss)
    except (ValueError, TypeError) as error:
        raise PruningError(f"unknown loss {inputs.loss!r} for the taylor criterion") from error


def _taylor(
    graph: GraphData, groups: Sequence[ChannelGroup], inputs: ScoringInputs
) -> list[np.ndarray]:
    loss_fn = _loss_function(inputs)
    chosen = [_activation_members(graph, g) for g in groups]
    names = list(dict.fromkeys(n for names in chosen for n in names))
    gates = [
        InsertLayer(
            n, _Gate(axis=_channel_axis(graph, n), name=f"kgraph_taylor_gate_{i}"), after=True
        )
        for i, n in enumerate(names)
    ]
    gated = graph.rules.extended({_Gate: PassThroughRule()})
    model = lower(run_pipeline(graph, gates, rules=gated).graph)
    variables = [model.get_layer(f"kgraph_taylor_gate_{i}").gate for i in range(len(names))]
    totals = [np.zeros(v.shape[0]) for v in variables]
    measured = 0
    for index, (x, y) in enumerate(batches(inputs.data, inputs.batch_size), start=1):
        if y is None:
            raise PruningError("the taylor criterion needs targets: pass data=(x, y)")
        for total, grad in zip(totals, _gradients(model, variables, loss_fn, x, y)):
            total += np.abs(keras.ops.convert_to_numpy(grad))
        measured = index
        log.info("taylor: %d batches measured", index)
    if not measured:
        raise PruningError("the taylor criterion got no data: the data holds no batch")
    by_name = dict(zip(names, totals))
    return [
        _average([_spread(graph, g, n, by_name[n]) for n in names_of_group], g.channels)
        for g, names_of_group in zip(groups, chosen)
    ]


def _head_rule(graph: GraphData, name: str) -> HasHeads:
    rule = graph.rules.rule_for(graph.node(name))
    if not isinstance(rule, HasHeads):
        raise PruningError(f"{graph.node(name).describe()} has no attention heads")
    return rule


def _spread_heads(graph: GraphData, name: str, values: np.ndarray) -> np.ndarray:
    """Per-kept-head `values` of attention node `name` placed over its lifted heads."""
    query = _head_rule(graph, name).head_masks(graph.node(name)).query
    placed = np.full(query.size, np.nan)
    placed[query] = values
    return placed


def _head_norms(order: int) -> HeadScorer:
    def score(graph: GraphData, names: Sequence[str], inputs: ScoringInputs) -> list[np.ndarray]:
        return [
            _spread_heads(graph, n, _head_rule(graph, n).head_norms(graph.node(n), order))
            for n in names
        ]

    return score


def _random_heads(
    graph: GraphData, names: Sequence[str], inputs: ScoringInputs
) -> list[np.ndarray]:
    rng = np.random.default_rng(inputs.seed + 1)
    result = []
    for name in names:
        query = _head_rule(graph, name).head_masks(graph.node(name)).query
        result.append(np.where(query, rng.random(query.size), np.nan))
    return result


def _taylor_heads(
    graph: GraphData, names: Sequence[str], inputs: ScoringInputs
) -> list[np.ndarray]:
    """|sum over each head's rows of W * dL/dW| of the output projection, summed over
    batches: the first-order loss change of removing the head (Molchanov et al.)."""
    loss_fn = _loss_function(inputs)
    model = lower(graph)
    variables = []
    for name in names:
        node = graph.node(name)
        layer = model.get_layer(node.layer)
        variables.append(layer.weights[node.weight_names.index("attention_output/kernel")])
    totals = [np.zeros(v.shape[0]) for v in variables]
    measured = 0
    for x, y in batches(inputs.data, inputs.batch_size):
        if y is None:
            raise PruningError("the taylor criterion needs targets: pass data=(x, y)")
        for total, variable, grad in zip(
            totals, variables, _gradients(model, variables, loss_fn, x, y)
        ):
            product = keras.ops.convert_to_numpy(variable) * keras.ops.convert_to_numpy(grad)
            total += np.abs(product.reshape(product.shape[0], -1).sum(axis=1))
        measured += 1
    if not measured:
        raise PruningError("the taylor criterion got no data: the data holds no batch")
    return [_spread_heads(graph, n, t) for n, t in zip(names, totals)]


def _random(
    graph: GraphData, groups: Sequence[ChannelGroup], inputs: ScoringInputs
) -> list[np.ndarray]:
    rng = np.random.default_rng(inputs.seed)
    return [_mask_deleted(graph, g, rng.random(g.channels)) for g in groups]


def _callable_scores(
    graph: GraphData, groups: Sequence[ChannelGroup], criterion: Callable[..., Any]
) -> list[np.ndarray]:
    name = getattr(criterion, "__name__", repr(criterion))
    results = []
    for group in groups:
        try:
            scores = np.asarray(criterion(graph, group), dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise PruningError(
                f"criterion {name} returned no numbers for the group of {group.owners[0]!r}: "
                f"{error}"
            ) from error
        if scores.shape != (group.channels,):
            raise PruningError(
                f"criterion {name} returned scores of shape {scores.shape} for the group of "
                f"{group.owners[0]!r}, which has {group.channels} channels; return one score "
                "per channel (in the group's lifted coordinates)"
            )
        results.append(scores)
    return results


_SCORERS: dict[str, tuple[Any, HeadScorer | None]] = {
    "l1": (lambda graph, groups, inputs: [_norms(graph, g, 1) for g in groups], _head_norms(1)),
    "l2": (lambda graph, groups, inputs: [_norms(graph, g, 2) for g in groups], _head_norms(2)),
    "bn_scale": (lambda graph, groups, inputs: [_bn_scale(graph, g) for g in groups], None),
    "apoz": (_apoz, None),
    "taylor": (_taylor, _taylor_heads),
    "random": (_random, _random_heads),
}
for _name, _info in BUILTIN.items():  # the names, summaries and needs are kgraph.criteria's
    _score, _heads = _SCORERS[_name]
    register_criterion(
        Criterion(
            _name,
            _info.summary,
            _score,
            needs_data=_info.needs_data,
            needs_loss=_info.needs_loss,
            score_heads=_heads,
        )
    )


def importance(
    graph: GraphData,
    groups: Sequence[ChannelGroup],
    criterion: str | Criterion | Callable[[GraphData, ChannelGroup], Any] = "l1",
    *,
    data: Any = None,
    loss: Any = None,
    batch_size: int = 32,
    seed: int = 0,
) -> list[np.ndarray]:
    """One score array per group (lifted coordinates; NaN for deleted channels).

    Args:
        criterion: the name of one of `CRITERIA`, a `Criterion`, or a callable
            `(graph, group) -> scores` (one score per lifted channel of the group).
        data: for `apoz` and `taylor`: numpy inputs, `(x, y)`, a tf.data.Dataset or
            an iterable of batches (batches of `batch_size` are cut from arrays).
        loss: for `taylor`: a Keras loss (name, function or `keras.losses.Loss`).
    """
    inputs = ScoringInputs(data=data, loss=loss, batch_size=batch_size, seed=seed)
    if isinstance(criterion, Criterion):
        return criterion.score(graph, groups, inputs)
    if callable(criterion):
        return _callable_scores(graph, groups, criterion)
    if isinstance(criterion, str) and criterion in CRITERIA:
        return CRITERIA[criterion].score(graph, groups, inputs)
    raise PruningError(
        f"unknown criterion {criterion!r}; use one of {sorted(CRITERIA)}, a "
        "kgraph.importance.Criterion or a callable (graph, group) -> scores"
    )


def head_importance(
    graph: GraphData,
    names: Sequence[str],
    criterion: str | Criterion = "l1",
    *,
    data: Any = None,
    loss: Any = None,
    batch_size: int = 32,
    seed: int = 0,
) -> list[np.ndarray]:
    """One score array per attention node in `names`, one score per lifted (query) head
    (NaN for deleted ones): "l1", "l2" (weight norms of each head's query and output
    projections), "taylor" (first-order loss change, needs `data=(x, y)` and `loss`),
    "random".

    Example:
        >>> (scores,) = head_importance(graph, ["mha"], "l1")
    """
    found = CRITERIA.get(criterion) if isinstance(criterion, str) else criterion
    if not isinstance(found, Criterion):
        raise PruningError(f"unknown criterion {criterion!r} for attention heads")
    if found.score_heads is None:
        scorers = sorted(n for n, c in CRITERIA.items() if c.score_heads is not None)
        raise PruningError(
            f"criterion {found.name!r} cannot score attention heads; use one of {scorers} "
            "(heads_criterion=...)"
        )
    inputs = ScoringInputs(data=data, loss=loss, batch_size=batch_size, seed=seed)
    return found.score_heads(graph, names, inputs)


def _mask_deleted(graph: GraphData, group: ChannelGroup, scores: np.ndarray) -> np.ndarray:
    return np.where(alive(graph, group), scores, np.nan)
