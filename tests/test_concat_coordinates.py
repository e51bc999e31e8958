"""Concatenate output coordinates stay those of the lifted model.

A Concatenate drops an input whose channels were all deleted, and disappears when one
input remains. Neither may change the channel coordinates its users were built for: a
residual Dense after the Concatenate, or the Add that merges both, must keep agreeing
with it, in the apply() that drops the branch and in every later one.

Every case uses the dead-channel oracle: the channels are made dead in a copy of the
model, deleted with kgraph (in one or several applies), and the outputs must not change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import pytest
from helpers import (
    assert_same_outputs,
    dead_copy,
    fingerprint,
    sample_inputs,
    weights_of,
    zero_outputs,
)

import kgraph
from kgraph.passes import DeleteChannels, DeleteLayer, InsertLayer

L = keras.layers

Stage = Mapping[str, Sequence[int]]


def residual_concat(widths: Sequence[int] = (3, 2), seed: int = 0) -> keras.Model:
    """x -> Dense branches -> Concatenate -> Dense -> Add(concat, dense) -> head."""
    x = keras.Input((6,), name="x")
    names = "abcd"[: len(widths)]
    parts = [L.Dense(w, activation="relu", name=n)(x) for n, w in zip(names, widths)]
    cat = L.Concatenate(name="cat")(parts)
    res = L.Dense(sum(widths), activation="tanh", name="res")(cat)
    y = L.Add(name="add")([cat, res])
    model = keras.Model(x, L.Dense(2, name="head")(y), name="residual_concat")
    randomize(model, seed)
    return model


def concat_then_add(widths: Sequence[int] = (3, 2)) -> keras.Model:
    """Branches -> Concatenate -> Dense; Add(Dense, Dense(x)) with a parallel Dense."""
    x = keras.Input((6,), name="x")
    names = "abcd"[: len(widths)]
    parts = [L.Dense(w, name=n)(x) for n, w in zip(names, widths)]
    cat = L.Concatenate(name="cat")(parts)
    side = L.Dense(sum(widths), name="side")(x)
    y = L.Add(name="add")([cat, side])
    model = keras.Model(x, L.Dense(2, name="head")(y), name="concat_then_add")
    randomize(model, 1)
    return model


def randomize(model: keras.Model, seed: int) -> None:
    """Non-zero biases everywhere, so a wrong slice changes the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape) for w in layer.get_weights()])


def prune_in_stages(
    model: keras.Model, stages: Sequence[Stage], dead: Stage
) -> tuple[keras.Model, list[kgraph.Graph]]:
    """Make `dead` channels dead in a copy, delete `stages` in successive applies.

    Returns the lowered model (checked against the dead copy) and every graph.
    """
    before = fingerprint(model)
    copy = dead_copy(model, dead)
    graphs = [kgraph.lift(copy)]
    for stage in stages:
        passes = [DeleteChannels(name, list(ch)) for name, ch in stage.items()]
        graphs.append(graphs[-1].apply(*passes, verify=True))
    pruned = graphs[-1].lower()
    assert_same_outputs(copy, pruned, sample_inputs(model), rtol=1e-6, atol=1e-6)
    assert fingerprint(model) == before
    return pruned, graphs


def layer_classes(model: keras.Model) -> dict[str, str]:
    return {layer.name: type(layer).__name__ for layer in model.layers}


def assert_sliced(model: keras.Model, pruned: keras.Model, name: str, rows, columns) -> None:
    """`name`'s kernel and bias equal `np.delete` of the original's."""
    kernel, bias = weights_of(model, name)
    new_kernel, new_bias = weights_of(pruned, name)
    np.testing.assert_array_equal(new_kernel, np.delete(np.delete(kernel, rows, 0), columns, 1))
    np.testing.assert_array_equal(new_bias, np.delete(bias, columns))


# -- one apply --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dropped", "deleted", "kept_branch"),
    [("b", [3, 4], "a"), ("a", [0, 1, 2], "b")],
    ids=["last-branch", "first-branch"],
)
def test_bypassed_concatenate_before_a_residual_dense(
    dropped: str, deleted: list[int], kept_branch: str
) -> None:
    model = residual_concat()
    own = list(range(model.get_layer(dropped).units))
    # Deleting the whole branch deletes the residual Dense's coupled channels with it.
    pruned, graphs = prune_in_stages(model, [{dropped: own}], {dropped: own, "res": deleted})
    classes = layer_classes(pruned)
    assert "cat" not in classes and dropped not in classes
    assert "Concatenate" not in classes.values()
    assert_sliced(model, pruned, "res", deleted, deleted)
    assert_sliced(model, pruned, "head", deleted, [])
    assert_sliced(model, pruned, kept_branch, [], [])
    # The residual Dense still reads the Concatenate's (lifted) coordinates.
    res = graphs[-1].node("res").outputs[0]
    assert res.mask.size == 5 and np.flatnonzero(~res.mask).tolist() == deleted


def test_bypassed_concatenate_with_the_kept_branch_pruned_too() -> None:
    model = residual_concat()
    dead = {"b": [0, 1], "a": [1], "res": [1, 3, 4]}
    pruned, _ = prune_in_stages(model, [{"b": [0, 1], "a": [1]}], dead)
    assert_sliced(model, pruned, "a", [], [1])
    assert_sliced(model, pruned, "res", [1, 3, 4], [1, 3, 4])
    assert_sliced(model, pruned, "head", [1, 3, 4], [])


def test_dropped_middle_branch_before_a_residual_dense() -> None:
    model = residual_concat((3, 2, 3))
    dead = {"b": [0, 1], "c": [2], "res": [3, 4, 7]}
    pruned, graphs = prune_in_stages(model, [{"b": [0, 1], "c": [2]}], dead)
    assert "b" not in layer_classes(pruned)
    assert pruned.get_layer("cat").output.shape[-1] == 5
    assert_sliced(model, pruned, "res", [3, 4, 7], [3, 4, 7])
    cat = graphs[-1].node("cat").outputs[0]
    assert cat.mask.size == 8 and np.flatnonzero(~cat.mask).tolist() == [3, 4, 7]


def test_bypassed_concatenate_merged_with_a_parallel_dense() -> None:
    model = concat_then_add()
    pruned, _ = prune_in_stages(model, [{"a": [0, 1, 2]}], {"a": [0, 1, 2], "side": [0, 1, 2]})
    assert "Concatenate" not in layer_classes(pruned).values()
    assert_sliced(model, pruned, "side", [], [0, 1, 2])
    assert_sliced(model, pruned, "head", [0, 1, 2], [])


def test_bypassed_concatenate_before_residual_attention() -> None:
    x = keras.Input((4, 3), name="x")
    a = L.Dense(2, name="a")(x)
    b = L.Dense(2, name="b")(x)
    cat = L.Concatenate(name="cat")([a, b])
    att = L.MultiHeadAttention(num_heads=2, key_dim=2, name="mha")(cat, cat)
    y = L.Add(name="add")([cat, att])
    model = keras.Model(x, L.Dense(2, name="head")(y))
    randomize(model, 2)
    dead = dead_copy(model, {"b": [0, 1]})
    mha = dead.get_layer("mha")  # the residual's dead channels: the output projection's
    values = [np.array(w) for w in mha.get_weights()]
    names = [w.path.split("/", 1)[1] for w in mha.weights]
    values[names.index("attention_output/kernel")][..., [2, 3]] = 0
    values[names.index("attention_output/bias")][[2, 3]] = 0
    mha.set_weights(values)
    pruned = kgraph.lift(dead).apply(DeleteChannels("b", [0, 1]), verify=True).lower()
    assert_same_outputs(dead, pruned, sample_inputs(model), rtol=1e-6, atol=1e-6)
    assert "Concatenate" not in layer_classes(pruned).values()
    assert pruned.get_layer("head").get_weights()[0].shape == (2, 2)


# -- several applies --------------------------------------------------------------------


@pytest.mark.parametrize("widths", [(3, 2), (3, 2, 3)], ids=["bypassed", "re-inferred"])
def test_concatenate_that_dropped_a_branch_keeps_its_coordinates_in_later_applies(
    widths: tuple[int, ...],
) -> None:
    model = residual_concat(widths)
    last = sum(widths) - 1  # of the last branch, deleted in the second apply
    stages = [{"b": [0, 1], "res": [3, 4]}, {"a": [0], "res": [0]}]
    dead = {"b": [0, 1], "a": [0], "res": [0, 3, 4]}
    if len(widths) == 3:
        stages[1] = {"a": [0], "c": [2], "res": [0, last]}
        dead = {**dead, "c": [2], "res": [0, 3, 4, last]}
    pruned, graphs = prune_in_stages(model, stages, dead)
    assert "b" not in layer_classes(pruned)
    assert_sliced(model, pruned, "res", dead["res"], dead["res"])
    assert_sliced(model, pruned, "head", dead["res"], [])
    assert_sliced(model, pruned, "a", [], [0])
    for graph in graphs[1:]:  # the Add's output stays in the lifted coordinates
        assert graph.node("add").outputs[0].mask.size == sum(widths)


def test_kept_second_branch_pruned_after_the_bypass() -> None:
    """The kept branch sits at offset 3 of the coordinates the residual Dense reads."""
    model = residual_concat()
    stages = [{"a": [0, 1, 2], "res": [0, 1, 2]}, {"b": [1], "res": [4]}]
    dead = {"a": [0, 1, 2], "b": [1], "res": [0, 1, 2, 4]}
    pruned, graphs = prune_in_stages(model, stages, dead)
    assert_sliced(model, pruned, "b", [], [1])
    assert_sliced(model, pruned, "res", dead["res"], dead["res"])
    assert np.flatnonzero(graphs[-1].node("add").outputs[0].mask).tolist() == [3]


def test_branch_dropped_in_a_later_apply() -> None:
    model = residual_concat((3, 2, 3))
    stages = [{"a": [1], "res": [1]}, {"b": [0, 1], "res": [3, 4]}, {"c": [0], "res": [5]}]
    dead = {"a": [1], "b": [0, 1], "c": [0], "res": [1, 3, 4, 5]}
    pruned, _ = prune_in_stages(model, stages, dead)
    assert_sliced(model, pruned, "res", dead["res"], dead["res"])
    assert_sliced(model, pruned, "c", [], [0])


def test_second_branch_dropped_in_a_later_apply_bypasses_the_concatenate() -> None:
    model = residual_concat((3, 2, 3))
    stages = [{"b": [0, 1], "res": [3, 4]}, {"c": [0, 1, 2], "res": [5, 6, 7]}]
    dead = {"b": [0, 1], "c": [0, 1, 2], "res": [3, 4, 5, 6, 7]}
    pruned, graphs = prune_in_stages(model, stages, dead)
    assert "cat" not in graphs[-1] and "Concatenate" not in layer_classes(pruned).values()
    assert_sliced(model, pruned, "res", dead["res"], dead["res"])


@pytest.mark.parametrize(
    ("widths", "stages", "dead"),
    [
        ((3, 2, 3), [{"b": [0, 1]}, {"c": [0]}], {"b": [0, 1], "c": [0], "res": [3, 4, 5]}),
        ((3, 2), [{"a": [0, 1, 2]}, {"b": [1]}], {"a": [0, 1, 2], "b": [1], "res": [0, 1, 2, 4]}),
        ((3, 2), [{"b": [0, 1]}, {"res": [2]}], {"b": [0, 1], "a": [2], "res": [2, 3, 4]}),
    ],
    ids=["re-inferred", "bypassed", "from-the-residual"],
)
def test_coupled_channels_follow_after_a_branch_was_dropped(widths, stages, dead) -> None:
    """Channel groups in a later apply: one member named, its partners follow."""
    model = residual_concat(widths)
    pruned, graphs = prune_in_stages(model, stages, dead)
    assert_sliced(model, pruned, "res", dead["res"], dead["res"])
    group = kgraph.groups.group_of(graphs[1], "res")
    assert group.prunable and group.channels == sum(widths)
    owners = [o for o in ("a", "b", "c") if o in graphs[1]]
    assert set(group.owners) == {*owners, "res"}


def test_nested_concatenates_bypassed_one_after_the_other() -> None:
    x = keras.Input((5,), name="x")
    a, b, c = (L.Dense(w, name=n)(x) for n, w in (("a", 2), ("b", 3), ("c", 2)))
    inner = L.Concatenate(name="inner")([a, b])
    outer = L.Concatenate(name="outer")([inner, c])
    res = L.Dense(7, name="res")(outer)
    model = keras.Model(x, L.Dense(2, name="head")(L.Add(name="add")([outer, res])))
    randomize(model, 3)
    stages = [{"c": [0, 1], "res": [5, 6]}, {"a": [0, 1], "res": [0, 1]}, {"b": [1], "res": [3]}]
    dead = {"a": [0, 1], "b": [1], "c": [0, 1], "res": [0, 1, 3, 5, 6]}
    pruned, graphs = prune_in_stages(model, stages, dead)
    assert "Concatenate" not in layer_classes(pruned).values()
    assert_sliced(model, pruned, "res", dead["res"], dead["res"])
    assert graphs[-1].node("add").outputs[0].mask.size == 7


def test_dead_copy_helper_zeroes_what_the_oracle_needs() -> None:
    """The oracle is not vacuous: deleting live channels does change the outputs."""
    model = residual_concat()
    live = kgraph.lift(model).apply(DeleteChannels("b", [0, 1])).lower()
    inputs = sample_inputs(model)
    with pytest.raises(AssertionError):
        assert_same_outputs(model, live, inputs, rtol=1e-6, atol=1e-6)
    copy = dead_copy(model, {"b": [0, 1]})
    zero_outputs(copy.get_layer("res"), [3, 4])
    assert_same_outputs(copy, kgraph.lift(copy).apply(DeleteChannels("b", [0, 1])).lower(), inputs)


def test_bypass_leaves_the_nodes_after_its_users_alone() -> None:
    """Found by the property test: a bypassed Concatenate re-inferred nothing downstream.

    Re-inferring the Reshape with one channel left would take its size-1 axis for the
    channel axis, and the Dense after it would stop owning its units.
    """
    x = keras.Input((1, 2), name="x")
    y = L.Flatten(name="flatten")(x)
    cat = L.Concatenate(name="cat")([L.Dense(3, name="a")(y), L.Dense(2, name="b")(y)])
    y = L.GlobalAveragePooling1D(name="gap")(L.RepeatVector(2, name="repeat")(cat))
    y = L.Dense(2, name="d")(L.Reshape((1, 5), name="reshape")(y))
    model = keras.Model(x, L.Dense(3, name="head")(y))
    randomize(model, 4)
    deletions = {"a": [0, 1, 2], "b": [0]}
    pruned, graphs = prune_in_stages(model, [deletions], deletions)
    assert_sliced(model, pruned, "d", [0, 1, 2, 3], [])
    assert_sliced(model, pruned, "head", [], [])
    d = graphs[-1].node("d").outputs[0]
    assert d.axis == 2 and d.mask.tolist() == [True, True]


# -- splices after the bypass -----------------------------------------------------------


@pytest.mark.parametrize("splice", ["delete-res", "insert-before-res", "delete-res-then-prune-b"])
def test_splices_of_a_call_that_reads_a_bypassed_concatenate(splice: str) -> None:
    """The calls that read the bypassed Concatenate keep seeing its coordinates.

    Deleting `res` leaves the Add reading the kept branch twice; the view `res` had
    must pass to the Add, or its two inputs no longer agree.
    """
    model = residual_concat()
    dead_b = [1] if splice == "delete-res-then-prune-b" else []
    dead = dead_copy(model, {"a": [0, 1, 2], "b": dead_b})
    zero_outputs(dead.get_layer("res"), [0, 1, 2])
    cat = dead.get_layer("cat").output
    if splice == "insert-before-res":
        passes = [InsertLayer("res", L.Activation("tanh", name="tanh"))]
        y = L.Add()([cat, dead.get_layer("res")(L.Activation("tanh")(cat))])
    else:
        passes = [DeleteLayer("res")]
        y = L.Add()([cat, cat])
    expected = keras.Model(dead.input, dead.get_layer("head")(y))

    graph = kgraph.lift(model).apply(DeleteChannels("a", [0, 1, 2])).apply(*passes)
    if dead_b:
        graph = graph.apply(DeleteChannels("b", dead_b))
    pruned = graph.lower()

    assert_same_outputs(expected, pruned, sample_inputs(model))
    head = np.delete(model.get_layer("head").kernel.numpy(), [0, 1, 2, *(3 + c for c in dead_b)], 0)
    np.testing.assert_array_equal(pruned.get_layer("head").kernel.numpy(), head)
    assert "Concatenate" not in layer_classes(pruned).values()
