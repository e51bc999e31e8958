"""Channel groups, importance criteria, one-call pruning and stats."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
from helpers import assert_same_outputs, dead_copy, fingerprint, sample_inputs, weights_of

import kgraph
from kgraph.importance import importance
from kgraph.passes import DeleteChannels
from kgraph.pruning import plan_pruning

L = keras.layers
TF_DATA = "tf.data needs TensorFlow, an optional dependency: pip install 'kgraph[tensorflow]'"


def residual_net() -> keras.Model:
    """Two residual blocks sharing one 6-channel stream, and a head."""
    x = keras.Input((8, 8, 3), name="image")
    stem = L.Conv2D(6, 3, padding="same", name="stem")(x)
    y = L.BatchNormalization(name="stem_bn")(stem)
    y = L.ReLU(name="stem_relu")(y)
    for i in (1, 2):
        branch = L.Conv2D(4, 1, activation="relu", name=f"b{i}_conv1")(y)
        branch = L.Conv2D(6, 3, padding="same", name=f"b{i}_conv2")(branch)
        y = L.Add(name=f"b{i}_add")([y, branch])
    y = L.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, L.Dense(3, name="logits")(y), name="resnet_tiny")


def by_owner(groups):
    return {g.owners[0]: g for g in groups}


def test_residual_stream_is_one_group() -> None:
    groups = by_owner(kgraph.channel_groups(residual_net()))
    stream = groups["stem"]
    assert stream.owners == ("stem", "b1_conv2", "b2_conv2")
    assert stream.members == (
        "stem", "stem_bn", "stem_relu", "b1_conv2", "b1_add", "b2_conv2", "b2_add", "gap",
    )  # fmt: skip
    assert (stream.channels, stream.kept, stream.prunable) == (6, 6, True)
    assert groups["b1_conv1"].owners == ("b1_conv1",) and groups["b1_conv1"].prunable
    logits = groups["logits"]
    assert not logits.prunable and "model output" in logits.reason


def test_groups_blocked_by_an_opaque_layer_say_so() -> None:
    x = keras.Input((4,))
    y = L.Lambda(lambda t: t * 2.0, name="double")(L.Dense(5, name="dense")(x))
    group = kgraph.channel_groups(keras.Model(x, L.Dense(2, name="head")(y)))[0]
    assert not group.prunable and "'double' (Lambda)" in group.reason


def test_deleting_from_any_member_deletes_from_the_whole_group(caplog) -> None:
    model = residual_net()
    with caplog.at_level(logging.INFO, logger="kgraph.passes.delete_channels"):
        graph = kgraph.lift(model).apply(DeleteChannels("b1_add", [2, 5]))
    assert "stem, b1_conv2, b2_conv2" in caplog.text
    pruned = graph.lower()
    for name in ("stem", "b1_conv2", "b2_conv2"):
        assert pruned.get_layer(name).filters == 4
        kernel = weights_of(model, name)[0]
        np.testing.assert_array_equal(weights_of(pruned, name)[0], np.delete(kernel, [2, 5], -1))
    np.testing.assert_array_equal(
        weights_of(pruned, "stem_bn")[0], np.delete(weights_of(model, "stem_bn")[0], [2, 5])
    )


def test_coupled_deletion_of_dead_channels_keeps_the_function() -> None:
    model = residual_net()
    dead = dead_copy(
        model, {"stem": [1, 4], "b1_conv2": [1, 4], "b2_conv2": [1, 4]}, {"stem_bn": [1, 4]}
    )
    pruned = kgraph.lift(dead).apply(DeleteChannels("stem", [1, 4]), verify=True).lower()
    assert_same_outputs(dead, pruned, sample_inputs(model))


# ------------------------------------------------------------------------- importance


def stream_group(graph: kgraph.Graph) -> kgraph.ChannelGroup:
    return by_owner(kgraph.channel_groups(graph))["stem"]


def test_filter_norms_are_averaged_over_the_group() -> None:
    model = residual_net()
    graph = kgraph.lift(model)
    group = stream_group(graph)
    for criterion, order in (("l1", 1), ("l2", 2)):
        (scores,) = importance(graph, [group], criterion)
        expected = np.mean(
            [
                np.linalg.norm(
                    np.concatenate([w.reshape(-1, 6) for w in weights_of(model, name)]),
                    ord=order,
                    axis=0,
                )
                for name in group.owners
            ],
            axis=0,
        )
        np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_bn_scale_is_the_absolute_gamma() -> None:
    model = residual_net()
    gamma = np.array([0.5, -2.0, 1.0, 0.1, -0.3, 3.0], "float32")
    bn = model.get_layer("stem_bn")
    bn.set_weights([gamma, *bn.get_weights()[1:]])
    graph = kgraph.lift(model)
    (scores,) = importance(graph, [stream_group(graph)], "bn_scale")
    np.testing.assert_allclose(scores, np.abs(gamma))


def test_apoz_counts_zero_activations() -> None:
    model = residual_net()
    graph = kgraph.lift(model)
    group = by_owner(kgraph.channel_groups(graph))["b1_conv1"]
    x = np.random.default_rng(0).normal(size=(10, 8, 8, 3)).astype("float32")
    (scores,) = importance(graph, [group], "apoz", data=x, batch_size=4)
    activations = keras.Model(model.input, model.get_layer("b1_conv1").output)(x)
    zeros = (keras.ops.convert_to_numpy(activations) == 0).reshape(-1, 4).mean(axis=0)
    np.testing.assert_allclose(scores, 1.0 - zeros, rtol=1e-6)
    # the same from a list of (x, y) batches, and from a tf.data pipeline of them
    pairs = [(x[i : i + 3], np.zeros(len(x[i : i + 3]))) for i in range(0, 10, 3)]
    (again,) = importance(graph, [group], "apoz", data=pairs)
    np.testing.assert_allclose(again, scores, rtol=1e-6)
    tf = pytest.importorskip("tensorflow", reason=TF_DATA)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(10))).batch(3)
    (again,) = importance(graph, [group], "apoz", data=dataset)
    np.testing.assert_allclose(again, scores, rtol=1e-6)


def test_taylor_is_activation_times_gradient() -> None:
    x_in = keras.Input((5,))
    hidden = L.Dense(4, activation="relu", name="hidden")(x_in)
    model = keras.Model(x_in, L.Dense(3, name="out")(hidden))
    x = np.random.default_rng(1).normal(size=(8, 5)).astype("float32")
    y = np.random.default_rng(2).integers(0, 3, 8)
    graph = kgraph.lift(model)
    group = by_owner(kgraph.channel_groups(graph))["hidden"]
    (scores,) = importance(
        graph, [group], "taylor", data=(x, y), loss=keras.losses.SparseCategoricalCrossentropy(True)
    )
    kernel, bias = weights_of(model, "hidden")
    out_kernel, out_bias = weights_of(model, "out")
    # the gradient of the mean cross-entropy by hand, in numpy
    h = np.maximum(x @ kernel + bias, 0)
    logits = h @ out_kernel + out_bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    grad_h = ((p - np.eye(3)[y]) / len(y)) @ out_kernel.T
    expected = np.abs((h * grad_h).sum(axis=0))
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-7)


def test_random_scores_follow_the_seed_and_callables_are_used() -> None:
    graph = kgraph.lift(residual_net())
    group = stream_group(graph)
    a, b, c = (importance(graph, [group], "random", seed=s)[0] for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    (custom,) = importance(graph, [group], lambda g, grp: np.arange(grp.channels)[::-1])
    np.testing.assert_array_equal(custom, [5, 4, 3, 2, 1, 0])
    with pytest.raises(kgraph.KGraphError, match="unknown criterion 'l3'"):
        importance(graph, [group], "l3")


# ---------------------------------------------------------------------------- prune


def test_local_pruning_removes_the_lowest_scores_of_every_group() -> None:
    model = residual_net()
    before = fingerprint(model)
    graph = kgraph.lift(model)
    plan = {cut.owner: list(cut.channels) for cut in plan_pruning(graph, 0.5).channels}
    assert set(plan) == {"stem", "b1_conv1", "b2_conv1"}
    (stream_scores,) = importance(graph, [stream_group(graph)], "l1")
    assert plan["stem"] == sorted(np.argsort(stream_scores)[:3].tolist())
    pruned = kgraph.prune(model, 0.5)
    assert [pruned.get_layer(n).filters for n in ("stem", "b1_conv1", "b1_conv2")] == [3, 2, 3]
    assert fingerprint(model) == before
    assert np.isfinite(keras.ops.convert_to_numpy(pruned(sample_inputs(model)))).all()


def test_pruning_exactly_the_dead_channels_keeps_the_function() -> None:
    model = residual_net()
    dead = dead_copy(
        model,
        {"stem": [0, 3], "b1_conv2": [0, 3], "b2_conv2": [0, 3], "b1_conv1": [1], "b2_conv1": [2]},
        {"stem_bn": [0, 3]},
    )
    pruned = kgraph.prune(dead, 0.4, criterion="l2", round_to=None)  # dead filters: norm 0
    assert pruned.get_layer("stem").filters == 4
    assert_same_outputs(dead, pruned, sample_inputs(model), rtol=1e-5, atol=1e-5)


def test_round_to_min_channels_ignore_and_ratios() -> None:
    model = residual_net()
    rounded = kgraph.prune(model, 0.9, round_to=4)
    assert [rounded.get_layer(n).filters for n in ("stem", "b1_conv1")] == [4, 4]
    at_least = kgraph.prune(model, 0.9, min_channels=3)
    assert [at_least.get_layer(n).filters for n in ("stem", "b1_conv1")] == [3, 3]
    ignored = kgraph.prune(model, 0.5, ignore=["b1_add"])
    assert [ignored.get_layer(n).filters for n in ("stem", "b1_conv1")] == [6, 2]
    custom = kgraph.prune(model, 0.5, ratios={"b1_conv1": 0.0, "stem_bn": 0.34})
    assert [custom.get_layer(n).filters for n in ("stem", "b1_conv1", "b2_conv1")] == [4, 4, 2]


def test_global_pruning_takes_from_the_weakest_groups() -> None:
    model = residual_net()
    for name in ("b1_conv1", "b2_conv1"):  # make the two bottlenecks strong
        kernel, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([kernel * 100.0, bias])
    graph = kgraph.lift(model)
    plan = {
        cut.owner: list(cut.channels) for cut in plan_pruning(graph, 0.25, scope="global").channels
    }
    assert sum(len(ch) for ch in plan.values()) == 3  # a quarter of 6 + 4 + 4 channels
    pruned = kgraph.prune(model, 0.25, scope="global")
    assert pruned.count_params() < model.count_params()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ratio": 1.0}, r"ratio must be a number in \[0, 1\), got 1.0"),
        ({"ratio": "half"}, r"ratio must be a number"),
        ({"scope": "world"}, r"scope must be 'local' or 'global'"),
        ({"round_to": 0}, r"round_to must be a positive integer"),
        ({"min_channels": 0}, r"min_channels must be a positive integer"),
        ({"ratios": {"stem": 2}}, r"ratios\['stem'\] must be a number"),
        ({"ratios": {"stem": 0.2, "b1_conv2": 0.3}}, r"share a channel group"),
        ({"criterion": "apoz"}, r"criterion 'apoz' needs data"),
        ({"criterion": "taylor", "data": np.zeros((2, 8, 8, 3))}, r"'taylor' needs a loss"),
        ({"criterion": "magic"}, r"unknown criterion 'magic'; use one of \['apoz', 'bn_scale'"),
        ({"ignore": ["nope"]}, r"has no layer 'nope'"),
        ({"ignore": "nope"}, r"has no layer 'nope'"),  # one name, not a list of letters
        ({"batch_size": 0}, r"batch_size must be a positive integer"),
        ({"colour": "red"}, r"unknown pruning option\(s\) \['colour'\]"),
    ],
)
def test_bad_pruning_options(options, message) -> None:
    model = residual_net()
    before = fingerprint(model)
    with pytest.raises(kgraph.KGraphError, match=message):
        kgraph.prune(model, **options)
    assert fingerprint(model) == before


# ---------------------------------------------------------------------------- stats


def test_stats_count_parameters_and_multiply_adds() -> None:
    model = residual_net()
    report = kgraph.stats(model)
    assert report.params == model.count_params()
    rows = {s.name: s for s in report.layers}
    assert rows["stem"].flops == 3 * 3 * 3 * 6 * 8 * 8
    assert rows["b1_conv1"].flops == 6 * 4 * 8 * 8
    assert rows["logits"].flops == 6 * 3
    assert rows["stem_bn"].flops == 0 and rows["stem_bn"].params == 24
    pruned = kgraph.prune(model, 0.5)
    after = kgraph.stats(pruned)
    assert after.params == pruned.count_params() and after.flops < report.flops
    table = str(report.compare(after))
    assert table.splitlines()[0].split() == [
        "layer",
        "params",
        "before",
        "params",
        "after",
        "FLOPs",
        "before",
        "FLOPs",
        "after",
    ]
    assert f"({after.params / report.params:.1%})" in table.splitlines()[-1]


def test_stats_count_a_shared_layer_once() -> None:
    shared = L.Dense(4, name="shared")
    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], L.Add()([shared(a), shared(b)]))
    report = kgraph.stats(model)
    assert report.params == model.count_params() == 16
    assert report.flops == 2 * 12


def test_every_owner_of_a_concatenated_group_keeps_min_channels() -> None:
    """InceptionResNetV2's pattern: a Concatenate of owners feeds a residual Add, so the
    group holds each owner as a slice. The weakest slice must keep `min_channels`
    (deleting it whole would disconnect its branch)."""
    x = keras.Input((6, 6, 3))
    weak = L.Conv2D(2, 1, name="weak")(x)
    strong = L.Conv2D(6, 1, name="strong")(x)
    joined = L.Concatenate(name="joined")([weak, strong])
    stream = L.Conv2D(8, 1, name="stream")(x)
    y = L.Add(name="add")([stream, joined])
    model = keras.Model(x, L.Conv2D(2, 1, name="head")(y))
    for name, scale in (("weak", 1e-3), ("strong", 10.0), ("stream", 10.0)):
        kernel, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([kernel * scale, bias])
    group = next(g for g in kgraph.channel_groups(model) if "weak" in g.owners)
    assert dict(zip(group.owners, zip(group.offsets, group.widths))) == {
        "weak": (0, 2), "strong": (2, 6), "stream": (0, 8),
    }  # fmt: skip
    graph = kgraph.lift(model)
    (scores,) = importance(graph, [group], "l1")
    assert set(np.argsort(scores)[:2]) == {0, 1}  # weak's two channels score lowest
    (cut,) = plan_pruning(graph, 0.5).channels
    channels = list(cut.channels)
    assert len(channels) == 4 and len({0, 1} & set(channels)) == 1
    others = [c for c in np.argsort(scores) if c > 1]
    assert sorted(set(channels) - {0, 1}) == sorted(others[:3])
    pruned = kgraph.prune(model, 0.5, min_channels=1)
    assert [pruned.get_layer(n).filters for n in ("weak", "strong", "stream")] == [1, 3, 4]


def test_criteria_registry_says_what_each_needs() -> None:
    from kgraph.importance import CRITERIA

    assert sorted(CRITERIA) == ["apoz", "bn_scale", "l1", "l2", "random", "taylor"]
    assert [c for c in CRITERIA if CRITERIA[c].needs_data] == ["apoz", "taylor"]
    assert [c for c in CRITERIA if CRITERIA[c].needs_loss] == ["taylor"]


def test_bad_data_and_callables_get_pruning_errors_not_raw_ones() -> None:
    model = residual_net()
    graph = kgraph.lift(model)
    group = stream_group(graph)
    with pytest.raises(kgraph.PruningError, match=r"takes inputs of shapes \[\(None, 8, 8, 3\)\]"):
        importance(graph, [group], "apoz", data=np.zeros((4, 5), "float32"))
    with pytest.raises(kgraph.PruningError, match=r"scores of shape \(2,\) .* has 6 channels"):
        importance(graph, [group], lambda g, grp: [1.0, 2.0])
    with pytest.raises(kgraph.PruningError, match="batch_size must be a positive integer"):
        importance(graph, [group], "apoz", data=np.zeros((4, 8, 8, 3)), batch_size=0)
    x = np.zeros((4, 8, 8, 3), "float32")
    with pytest.raises(kgraph.PruningError, match=r"targets have shape \(4, 7, 2\)"):
        importance(
            graph, [group], "taylor", data=(x, np.zeros((4, 7, 2))), loss="categorical_crossentropy"
        )


def test_nothing_to_prune_warns_and_strict_raises(caplog) -> None:
    x = keras.Input((4,))
    model = keras.Model(x, L.Dense(3, name="out")(x))  # its only channels reach the output
    with caplog.at_level("WARNING", logger="kgraph.pruning"):
        same = kgraph.prune(model, 0.5)
    assert same.count_params() == model.count_params()
    assert "nothing to prune: no channel group of" in caplog.text and "reach" in caplog.text
    with pytest.raises(kgraph.PruningError, match="nothing to prune"):
        kgraph.prune(model, 0.5, strict=True)
    # no BatchNormalization: bn_scale scores nothing, an error also without strict
    with pytest.raises(kgraph.PruningError, match="scores none of the 1 prunable groups"):
        kgraph.prune(dense_only(), 0.5, "bn_scale")


def dense_only() -> keras.Model:
    x = keras.Input((6,))
    h = L.Dense(8, activation="relu", name="h")(x)
    return keras.Model(x, L.Dense(2, name="out")(h))


@pytest.mark.parametrize("criterion", ["l1", "random", "apoz", "taylor"])
def test_every_criterion_prunes_a_model_with_shared_layers(criterion: str) -> None:
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    pre = L.Dense(8, activation="relu", name="pre")
    shared = L.Dense(8, activation="relu", name="shared")
    y = L.Concatenate(name="cat")([shared(pre(a)), shared(pre(b))])
    model = keras.Model([a, b], L.Dense(3, name="head")(y))
    before = fingerprint(model)
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(16, 6)).astype("float32") for _ in range(2)]
    data = (x, rng.integers(0, 3, 16)) if criterion == "taylor" else x
    small = kgraph.prune(model, 0.5, criterion, data=data, loss="sparse_categorical_crossentropy")
    # one change per shared layer: both calls keep the same 4 of 8 channels
    assert small.get_layer("shared").units == 4 and small.get_layer("pre").units == 4
    assert keras.ops.convert_to_numpy(small(x)).shape == (16, 3)
    assert fingerprint(model) == before
