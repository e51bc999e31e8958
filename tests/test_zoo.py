"""Zoo tests: `kgraph.prune` and the dead-channel oracle on every `keras.applications` model.

For each of the 40 architectures (built as in test_applications.py: `weights=None`,
logits, reduced input sizes for the largest), built once for all of these:

- `test_zoo_round_trip`: lifting and lowering without changes gives a fresh model
  (no shared layer or variable) with the same configs, weights and outputs, and
  leaves the original untouched;
- `test_zoo_prune`: `kgraph.prune(model, 0.5, scope=...)` at both scopes builds a
  model that predicts finite outputs of the original's shape, with fewer parameters
  and FLOPs (`kgraph.stats`, and Keras' own count); at `SAVED_SCOPES` it also saves as
  `.keras` and loads back (no `custom_objects`) predicting the same.
- `test_zoo_dead_quarter` (architectures without cross-channel normalisation): a
  quarter of the channels of every prunable group is made dead across the whole
  group, then deleted with `DeleteGroupChannels`; the outputs must not change.

These tests are slow (about 15 minutes on 2 cores) and marked `slow`; they are all
named `test_zoo_*`, so either of these runs them alone:

    $ .venv/bin/python -m pytest tests/test_zoo.py -q --durations=0
    $ .venv/bin/python -m pytest tests -k zoo -q

and `-m "not slow"` leaves them out. Each architecture is built once for all the
tests that use it (a module-scoped fixture; `scope="module"` on the `name`
parameter makes pytest run those tests together) and released before the next.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from helpers import fingerprint
from test_applications import (
    ARCHITECTURES,
    EXPECTED_ARCHITECTURES,
    assert_fresh_copy,
    assert_same_predictions,
    build,
    flat_layers,
    sample_input,
)

import kgraph
from kgraph.graph import Graph
from kgraph.groups import ChannelGroup, analysis
from kgraph.ir import ChannelSpace, ConcatSpace, Tensor
from kgraph.passes import DeleteGroupChannels

SCOPES = ("local", "global")

# Saving and loading a pruned model takes as long as pruning it (measured: 2.1 min
# of ~14 for both scopes of all 40 architectures, load being twice as slow as save),
# and the saved model is the same kind of graph at either scope, so only one scope
# is saved and loaded, to keep this file within its time budget.
SAVED_SCOPES = ("local",)

# Layers that normalise across channels: a dead (zero) channel still counts in their
# mean and variance, so deleting it changes the outputs and the dead-channel oracle
# does not apply. Only the ConvNeXt family has them (LayerNormalization over the
# channels); `test_zoo_cross_channel_normalisation` checks that list.
CROSS_CHANNEL_LAYERS = (
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
)
CROSS_CHANNEL = frozenset(name for name in ARCHITECTURES if name.startswith("ConvNeXt"))
DEAD_ARCHITECTURES = [name for name in ARCHITECTURES if name not in CROSS_CHANNEL]


def by_architecture(names: list[str]) -> list[Any]:
    """`names` as parameters that pytest-xdist keeps on one worker per architecture
    (`--dist loadgroup`), so each worker builds an architecture once."""
    return [pytest.param(name, marks=pytest.mark.xdist_group(name)) for name in names]


# Pruning changes what is summed (fewer channels), not how: the outputs of the
# dead copy and of the pruned model agree to float32 rounding (measured: at most
# ~1e-6 of the output's scale). The absolute tolerance is relative to the output's
# scale, as in test_applications.py: random-weight logits range from ~1e-11 to ~1e10.
RTOL = 1e-4
# A saved and loaded model runs the same kernels on the same weights.
SAVED_RTOL = 1e-6

# Where the oracle zeroes a layer's channels: weights whose last axis is the output
# channels of an owner, or the channels a channel-wise layer carries.
OWNER_WEIGHTS = {
    **dict.fromkeys(("Conv1D", "Conv2D", "Conv3D", "Dense"), ("kernel", "bias")),
    **dict.fromkeys(("SeparableConv1D", "SeparableConv2D"), ("pointwise_kernel", "bias")),
}
CHANNEL_WEIGHTS = {
    "BatchNormalization": ("beta", "moving_mean"),  # gamma (0 - 0) / sqrt(var + eps) + 0
    "DepthwiseConv1D": ("bias",),  # (depth_multiplier 1: not an owner)
    "DepthwiseConv2D": ("bias",),
}


def randomize_statistics(model: keras.Model, seed: int = 0) -> None:
    """Random biases, BatchNorm betas, gammas and moving statistics.

    `weights=None` leaves them at 0 (beta, moving mean, bias) and 1 (gamma, moving
    variance), so the dead-channel oracle's zeroing would change nothing and a
    deletion that forgot a BatchNorm or a bias would go unnoticed. The ranges keep
    every channel's scale near 1, so that 100+ layers neither overflow nor vanish.
    """
    rng = np.random.default_rng(seed)
    for layer in flat_layers(model):
        for variable in layer.weights:
            if variable.name in ("bias", "beta", "moving_mean"):
                value = rng.normal(0.0, 0.2, variable.shape)
            elif variable.name in ("gamma", "moving_variance"):
                value = rng.uniform(0.8, 1.25, variable.shape)
            else:
                continue
            variable.assign(value.astype(variable.dtype))


def calibrate_batchnorm(model: keras.Model, x: np.ndarray) -> None:
    """Set every BatchNorm's moving mean and variance to its batch statistics on `x`.

    A trained network's BatchNorms keep activations near unit scale; with random
    statistics the deep ones (EfficientNetV2M/L) are chaotic instead: their logits
    reach 1e7 and a relative change of 1e-6 in the input changes them by 100%, so
    float32 rounding alone would break the dead-channel oracle. Calibrated, such a
    change moves the logits by ~1e-5 (measured on EfficientNetV2M/L, MobileNet,
    ResNet50).
    """
    layers = [
        layer for layer in flat_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0  # moving statistics := this batch's statistics
    model(x, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


class Architecture:
    """One architecture, built once for the tests of this module that use it.

    Its biases and BatchNorm betas and gammas are random (`randomize_statistics`),
    its BatchNorm statistics calibrated on the sample input (`calibrate_batchnorm`).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.model: keras.Model | None = build(name)
        self.x: np.ndarray | None = sample_input(self.model)
        randomize_statistics(self.model)
        calibrate_batchnorm(self.model, self.x)

    @functools.cached_property
    def stats(self) -> kgraph.Stats:
        return kgraph.stats(self.model)

    def release(self) -> None:
        """Drop the model (pytest keeps this object until the module ends)."""
        self.model = self.x = None
        self.__dict__.pop("stats", None)


@pytest.fixture(scope="module")
def architecture(name: str) -> Iterator[Architecture]:
    built = Architecture(name)
    yield built
    built.release()
    keras.backend.clear_session()
    gc.collect()


@pytest.fixture(autouse=True)
def _collect() -> Iterator[None]:
    """Free a test's pruned and loaded models before the next test."""
    yield
    gc.collect()


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """`actual` equals `expected` to `rtol`, and to `rtol` x the scale of `expected`."""
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# -- the dead-channel oracle ---------------------------------------------------------


def dead_quarter(graph: Graph) -> list[tuple[ChannelGroup, list[int]]]:
    """Every 4th channel (3, 7, 11, ...) of every prunable group, in group coordinates.

    Every 4th rather than a random quarter: each run of 4 consecutive channels
    loses one, so a concatenated branch never loses all its channels and the
    groups of a grouped convolution (multiples of 4 wide) lose equal counts.
    """
    groups = [g for g in kgraph.channel_groups(graph) if g.prunable and g.channels >= 4]
    return [(group, list(range(3, group.channels, 4))) for group in groups]


def channel_layout(graph: Graph, tensor: Tensor) -> list[tuple[ChannelSpace, int]] | None:
    """For each channel of `tensor`: (its group's root space, its channel in the group).

    A tensor's channels live in one space, or in a concatenation of spaces (DenseNet's
    BatchNormalizations read concatenations), which the group analysis maps into
    group coordinates. None when they are re-arranged (flattened, heads, ...).
    """
    found = analysis(graph)

    def layout(space: ChannelSpace | None) -> list[tuple[ChannelSpace, int]] | None:
        if space is not None and space.element:
            if space not in found.size:
                return None
            root, offset = found.find(space)
            return [(root, offset + k) for k in range(found.size[space])]
        if isinstance(space, ConcatSpace):
            parts = [layout(part) for part in space.parts]
            return None if any(p is None for p in parts) else [c for p in parts for c in p]
        return None

    return None if tensor.mask is None else layout(tensor.space)


def dead_weights(
    graph: Graph, plan: Sequence[tuple[ChannelGroup, list[int]]]
) -> dict[tuple[str, str], list[int]]:
    """(layer, weight) -> channels (on the weight's last axis) to zero for `plan`.

    Owners get their output kernel and bias slices zeroed (squeeze-and-excitation
    gates too: sigmoid(0) = 0.5 times a dead feature is still 0); channel-wise layers
    the dead channels reach get what would make a zero input non-zero (BatchNorm
    beta and moving mean, a depthwise convolution's bias). Any other layer with
    weights that dead channels reach stops the test: the oracle would be unsound.
    """
    zero: dict[tuple[str, str], set[int]] = {}

    def add(node_name: str, weights: Sequence[str], channels: Sequence[int]) -> None:
        node = graph.node(node_name)
        for weight in weights:
            if node.has_weight(weight) and channels:
                zero.setdefault((node.layer, weight), set()).update(channels)

    for group, channels in plan:
        for owner, own in group.owner_channels(channels).items():
            node = graph.node(owner)
            assert node.class_name in OWNER_WEIGHTS, f"no zeroing for {node.describe()}"
            add(owner, OWNER_WEIGHTS[node.class_name], own)

    found = analysis(graph)
    roots = {root: set(channels) for root, (group, channels) in _by_root(found, plan).items()}
    for name in graph.topological_order():
        node = graph.node(name)
        if node.kind not in ("layer", "op") or not node.weights or name in found.owned:
            continue
        layout = channel_layout(graph, node.inputs[0]) if node.inputs else None
        dead = [i for i, (root, c) in enumerate(layout or []) if c in roots.get(root, ())]
        if dead:
            assert node.class_name in CHANNEL_WEIGHTS, (
                f"dead channels reach {node.describe()}, which the oracle cannot keep dead"
            )
            add(name, CHANNEL_WEIGHTS[node.class_name], dead)
    return {key: sorted(channels) for key, channels in zero.items()}


def _by_root(
    found: Any, plan: Sequence[tuple[ChannelGroup, list[int]]]
) -> dict[Hashable, tuple[ChannelGroup, list[int]]]:
    root_of = {group: root for root, group in found.groups}
    return {root_of[group]: (group, channels) for group, channels in plan}


def zero_weights(
    model: keras.Model, zero: dict[tuple[str, str], list[int]]
) -> list[tuple[Any, np.ndarray]]:
    """Zero `zero`'s channels in `model`'s variables; returns (variable, old value) pairs."""
    saved = []
    for (layer_name, weight), channels in zero.items():
        (variable,) = [v for v in model.get_layer(layer_name).weights if v.name == weight]
        old = keras.ops.convert_to_numpy(variable)
        new = old.copy()
        new[..., channels] = 0
        variable.assign(new)
        saved.append((variable, old))
    return saved


def output_width(layer: keras.layers.Layer) -> int:
    """Output channels of an owner: the last axis of its (pointwise) kernel."""
    kernel = [w for w in layer.weights if w.name in ("kernel", "pointwise_kernel")]
    return int(kernel[0].shape[-1])


# -- tests ---------------------------------------------------------------------------


def test_zoo_covers_every_architecture() -> None:
    assert len(ARCHITECTURES) == EXPECTED_ARCHITECTURES
    assert len(CROSS_CHANNEL) == 5
    assert len(DEAD_ARCHITECTURES) == EXPECTED_ARCHITECTURES - len(CROSS_CHANNEL)


@pytest.mark.slow
@pytest.mark.parametrize("name", by_architecture(ARCHITECTURES), scope="module")
def test_zoo_cross_channel_normalisation(architecture: Architecture, name: str) -> None:
    """The dead-channel oracle leaves out exactly the models that normalise over channels."""
    found = {type(layer).__name__ for layer in flat_layers(architecture.model)}
    crossing = {cls.__name__ for cls in CROSS_CHANNEL_LAYERS} & found
    assert bool(crossing) == (name in CROSS_CHANNEL), crossing


@pytest.mark.slow
@pytest.mark.parametrize("name", by_architecture(ARCHITECTURES), scope="module")
def test_zoo_round_trip(architecture: Architecture, name: str) -> None:
    """Lowering an unmodified lift gives fresh layers with the same weights and outputs."""
    model = architecture.model
    before = fingerprint(model)

    graph = kgraph.lift(model)
    lowered = graph.lower()
    del graph  # the IR holds another copy of the weights

    assert_fresh_copy(model, lowered)
    assert_same_predictions(model, lowered, architecture.x)
    assert fingerprint(model) == before


@pytest.mark.slow
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("name", by_architecture(ARCHITECTURES), scope="module")
def test_zoo_prune(
    architecture: Architecture,
    name: str,
    scope: str,
    tmp_path: Path,
) -> None:
    model, x = architecture.model, architecture.x

    pruned = kgraph.prune(model, 0.5, scope=scope)

    actual = predict(pruned, x)
    assert actual.shape == (len(x), *model.output_shape[1:])
    assert np.all(np.isfinite(actual))
    before, after = architecture.stats, kgraph.stats(pruned)
    assert after.params < before.params
    assert after.flops < before.flops
    assert pruned.count_params() == after.params < model.count_params()

    if scope in SAVED_SCOPES:
        path = tmp_path / "pruned.keras"
        pruned.save(path)
        loaded = keras.saving.load_model(path)
        assert [layer.name for layer in loaded.layers] == [layer.name for layer in pruned.layers]
        assert_close(predict(loaded, x), actual, SAVED_RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("name", by_architecture(DEAD_ARCHITECTURES), scope="module")
def test_zoo_dead_quarter(architecture: Architecture, name: str) -> None:
    """Deleting a dead quarter of every prunable group leaves the outputs unchanged.

    The channels are made dead in the model itself (restored afterwards), which is
    then lifted again and pruned: the deletion must remove exactly them, and nothing
    the outputs depend on.
    """
    model, x = architecture.model, architecture.x
    structure = kgraph.lift(model)
    plan = dead_quarter(structure)
    assert plan, "no prunable group"
    zero = dead_weights(structure, plan)
    owners = {
        structure.node(owner).layer: len(own)
        for group, channels in plan
        for owner, own in group.owner_channels(channels).items()
    }
    del structure

    saved = zero_weights(model, zero)
    try:
        expected = predict(model, x)
        passes = [DeleteGroupChannels(group.owners[0], channels) for group, channels in plan]
        pruned = kgraph.lift(model).apply(*passes).lower()
        actual = predict(pruned, x)
        widths = {layer: output_width(model.get_layer(layer)) for layer in owners}
    finally:
        for variable, old in saved:
            variable.assign(old)

    assert np.all(np.isfinite(expected))
    assert not np.array_equal(expected[0], expected[1]), "the input does not reach the output"
    assert_close(actual, expected, RTOL)
    for layer, deleted in owners.items():
        assert output_width(pruned.get_layer(layer)) == widths[layer] - deleted, layer
    assert pruned.count_params() < model.count_params()
