"""Surgery passes and the pipeline: semantics, composition, immutability, errors."""

from __future__ import annotations

from typing import ClassVar

import attrs
import keras
import networkx as nx
import numpy as np
import pytest
from helpers import (
    assert_same_outputs,
    check_dead_channels,
    fingerprint,
    sample_inputs,
    weights_of,
)

import kgraph
from kgraph.passes import (
    DeleteChannels,
    DeleteLayer,
    EliminateDeadNodes,
    InsertLayer,
    Pass,
    ReplaceLayer,
)

L = keras.layers


def dense_chain(widths=(6, 5, 4, 3), name="chain") -> keras.Model:
    x = keras.Input((widths[0],), name="x")
    y = x
    for i, width in enumerate(widths[1:], start=1):
        y = L.Dense(width, activation="relu", name=f"dense_{i}")(y)
    return keras.Model(x, y, name=name)


# ----------------------------------------------------------------- DeleteChannels


def test_channel_indices_refer_to_the_lifted_model_across_passes() -> None:
    model = dense_chain()
    graph = kgraph.lift(model)
    once = graph.apply(DeleteChannels("dense_1", [0, 3]))
    twice = graph.apply(DeleteChannels("dense_1", [0]), DeleteChannels("dense_1", [3]))
    later = once.apply(DeleteChannels("dense_1", [3, 4]))  # 3 again: a no-op
    for g in (once, twice):
        np.testing.assert_array_equal(
            g.node("dense_1").weight("kernel"),
            np.delete(weights_of(model, "dense_1")[0], [0, 3], 1),
        )
    np.testing.assert_array_equal(
        later.node("dense_1").weight("kernel"),
        np.delete(weights_of(model, "dense_1")[0], [0, 3, 4], 1),
    )
    np.testing.assert_array_equal(
        later.node("dense_2").weight("kernel"),
        np.delete(weights_of(model, "dense_2")[0], [0, 3, 4], 0),
    )


def test_deleting_deleted_channels_changes_nothing() -> None:
    graph = kgraph.lift(dense_chain())
    once = graph.apply(DeleteChannels("dense_2", [1]))
    result = DeleteChannels("dense_2", [1])(once)
    assert result.changed is False
    assert str(result.graph) == str(once)


def test_layer_object_and_numpy_channels_are_accepted() -> None:
    model = dense_chain()
    pruned = (
        kgraph.lift(model)
        .apply(DeleteChannels(model.get_layer("dense_2"), np.array([0, 2])))
        .lower()
    )
    assert pruned.get_layer("dense_2").units == 2


def test_several_jobs_are_lowered_once_and_compose() -> None:
    model = dense_chain()
    before = fingerprint(model)
    dead = check_dead_channels(model, {"dense_1": [1, 4], "dense_2": [0, 3]})
    assert [dead.get_layer(f"dense_{i}").units for i in (1, 2, 3)] == [3, 2, 3]
    assert fingerprint(model) == before


@pytest.mark.parametrize(
    ("channels", "message"),
    [
        ([5], "channel 5 is out of range for 'dense_1' \\(Dense\\), which has 5 channels"),
        ([-6], "channel -6 is out of range"),
        ([1, 1], "channels \\[1\\] are listed more than once"),
        ([0, -5], "channels \\[0\\] are listed more than once"),
        ([1.0], "channel 1.0 is not an integer"),
        ([True], "channel True is not an integer"),
        (3, "channels must be a list of integers"),
    ],
)
def test_bad_channel_indices(channels, message: str) -> None:
    model = dense_chain()
    before = fingerprint(model)
    with pytest.raises(kgraph.ChannelError, match=message):
        kgraph.lift(model).apply(DeleteChannels("dense_1", channels))
    assert fingerprint(model) == before


def test_unknown_layer_suggests_close_names() -> None:
    with pytest.raises(
        kgraph.LayerNotFoundError, match=r"no layer 'dense_9'. Did you mean .*'dense_1'"
    ):
        kgraph.lift(dense_chain()).apply(DeleteChannels("dense_9", [0]))


def test_layer_of_another_model_is_refused() -> None:
    other = dense_chain(name="other")
    with pytest.raises(kgraph.LayerNotFoundError, match=r"is not a layer of model 'chain'"):
        kgraph.lift(dense_chain()).apply(DeleteChannels(other.get_layer("dense_1"), [0]))


def test_channels_of_a_pass_through_layer_are_deleted_at_their_producer() -> None:
    x = keras.Input((4,), name="x")
    y = L.BatchNormalization(name="bn")(L.Dense(3, name="dense")(x))
    pruned = kgraph.lift(keras.Model(x, y)).apply(DeleteChannels("bn", [0])).lower()
    assert pruned.get_layer("dense").units == 2
    z = L.BatchNormalization(name="bn_in")(x)  # channels of the model input: nobody owns them
    with pytest.raises(kgraph.ChannelError, match=r"'bn_in' \(BatchNormalization\) does not own"):
        kgraph.lift(keras.Model(x, L.Dense(2)(z))).apply(DeleteChannels("bn_in", [0]))


def test_deleting_every_channel_of_the_only_path_is_refused() -> None:
    model = dense_chain()
    before = fingerprint(model)
    with pytest.raises(
        kgraph.ChannelError, match=r"every channel of 'dense_2'.*only path to model"
    ):
        kgraph.lift(model).apply(DeleteChannels("dense_2", range(4)))
    assert fingerprint(model) == before


def test_emptied_input_of_a_broadcasting_multiply_is_refused() -> None:
    x = keras.Input((4,))
    features, gate = L.Dense(3, name="features")(x), L.Dense(1, name="gate")(x)
    model = keras.Model(x, L.Dense(2)(L.Multiply(name="mul")([features, gate])))
    with pytest.raises(kgraph.ChannelError, match=r"every channel of 'gate'.*'mul' \(Multiply\)"):
        kgraph.lift(model).apply(DeleteChannels("gate", [0]))


def test_a_mask_reaching_an_opaque_layer_names_it_and_register_rule() -> None:
    x = keras.Input((4,))
    y = L.Dense(3, name="dense")(x)
    y = L.Lambda(lambda t: t * 2.0, name="double")(y)
    model = keras.Model(x, y)
    with pytest.raises(kgraph.UnsupportedLayerError) as error:
        kgraph.lift(model).apply(DeleteChannels("dense", [0]))
    assert "'double' (Lambda)" in str(error.value)
    assert "kgraph.register_rule(Lambda" in str(error.value)


@keras.saving.register_keras_serializable(package="kgraph_tests")
class ChannelScale(L.Layer):
    """A user's layer with one weight per channel."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


def test_register_rule_for_a_custom_layer() -> None:
    x = keras.Input((4,))
    y = L.Dense(3, name="dense")(x)
    y = ChannelScale(name="scale")(y)
    y = L.Dense(2, name="head")(y)
    model = keras.Model(x, y)
    model.get_layer("scale").set_weights([np.array([1.0, 2.0, 3.0], "float32")])
    with pytest.raises(kgraph.UnsupportedLayerError):
        kgraph.lift(model).apply(DeleteChannels("dense", [1]))

    class ScaleRule(kgraph.rules.PerChannelRule):
        per_channel = ("scale",)
        axis_key = None

    kgraph.register_rule(ChannelScale, ScaleRule)
    try:
        pruned = check_dead_channels(model, {"dense": [1]})
        np.testing.assert_array_equal(weights_of(pruned, "scale")[0], [1.0, 3.0])
    finally:
        kgraph.unregister_rule(ChannelScale)


# --------------------------------------------------------- delete / insert / replace


def test_delete_layer_connects_input_to_consumers() -> None:
    model = dense_chain((6, 5, 5, 3))
    pruned = kgraph.lift(model).apply(DeleteLayer("dense_2")).lower()
    assert [layer.name for layer in pruned.layers] == ["x", "dense_1", "dense_3"]
    expected = keras.Sequential(
        [keras.Input((6,)), L.Dense(5, activation="relu"), L.Dense(3, activation="relu")]
    )
    expected.layers[0].set_weights(weights_of(model, "dense_1"))
    expected.layers[1].set_weights(weights_of(model, "dense_3"))
    assert_same_outputs(expected, pruned, sample_inputs(model))


def test_delete_layer_with_another_width_is_refused() -> None:
    model = dense_chain()
    with pytest.raises(kgraph.ChannelError, match=r"'dense_3' \(Dense\) now carries 5 channels"):
        kgraph.lift(model).apply(DeleteLayer("dense_2"))


def test_delete_layer_with_two_inputs_is_refused() -> None:
    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], L.Add(name="add")([a, b]))
    with pytest.raises(kgraph.SurgeryError, match=r"'add' \(Add\): it has 2 inputs"):
        kgraph.lift(model).apply(DeleteLayer("add"))


def test_delete_a_layer_after_pruning_its_input() -> None:
    """Deleting a BatchNorm of a pruned conv: the conv's consumer keeps its slices."""
    x = keras.Input((6, 6, 2))
    y = L.Conv2D(4, 3, name="conv")(x)
    y = L.BatchNormalization(name="bn")(y)
    y = L.Conv2D(2, 1, name="conv_2")(y)
    model = keras.Model(x, y)
    pruned = kgraph.lift(model).apply(DeleteChannels("conv", [2]), DeleteLayer("bn")).lower()
    assert [layer.name for layer in pruned.layers] == [model.layers[0].name, "conv", "conv_2"]
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_2")[0], np.delete(weights_of(model, "conv_2")[0], [2], axis=2)
    )


def test_insert_layer_before_and_after() -> None:
    model = dense_chain()
    graph = kgraph.lift(model)
    before = graph.apply(InsertLayer("dense_2", L.Dropout(0.5, name="drop"))).lower()
    assert [layer.name for layer in before.layers] == ["x", "dense_1", "drop", "dense_2", "dense_3"]
    after = graph.apply(InsertLayer("dense_2", L.Dense(4, name="extra"), after=True)).lower()
    assert [layer.name for layer in after.layers] == ["x", "dense_1", "dense_2", "extra", "dense_3"]
    assert after.get_layer("extra").output.shape == (None, 4)
    assert_same_outputs(model, before, sample_inputs(model))


def test_inserted_layer_fits_the_pruned_channels() -> None:
    """A BatchNorm inserted after a pruned conv is built for the channels that remain."""
    x = keras.Input((6, 6, 2))
    y = L.Conv2D(4, 3, name="conv")(x)
    y = L.Conv2D(2, 1, name="conv_2")(y)
    model = keras.Model(x, y)
    pruned = (
        kgraph.lift(model)
        .apply(
            DeleteChannels("conv", [0]),
            InsertLayer("conv_2", L.BatchNormalization(name="bn")),
            DeleteChannels("conv", [3]),
        )
        .lower()
    )
    assert pruned.get_layer("bn").gamma.shape == (2,)
    assert pruned.get_layer("conv_2").get_weights()[0].shape == (1, 1, 2, 2)


def test_replace_layer_then_delete_its_channels() -> None:
    model = dense_chain()
    new = L.Dense(4, name="dense_2b", activation="relu")
    graph = kgraph.lift(model).apply(ReplaceLayer("dense_2", new), DeleteChannels("dense_2b", [0]))
    pruned = graph.lower()
    assert [layer.name for layer in pruned.layers] == ["x", "dense_1", "dense_2b", "dense_3"]
    assert pruned.get_layer("dense_2b").units == 3
    assert pruned.get_layer("dense_3").get_weights()[0].shape == (3, 3)
    assert not new.built  # the user's layer is not touched: kgraph builds a copy


def test_replace_with_a_built_layer_uses_its_weights() -> None:
    model = dense_chain()
    new = L.Dense(4, name="trained")
    new.build((None, 5))
    new.set_weights([np.full((5, 4), 0.5, "float32"), np.arange(4, dtype="float32")])
    pruned = kgraph.lift(model).apply(ReplaceLayer("dense_2", new)).lower()
    np.testing.assert_array_equal(pruned.get_layer("trained").get_weights()[1], np.arange(4))


def test_replace_with_a_layer_built_for_other_shapes_is_refused() -> None:
    new = L.Dense(4, name="wrong")
    new.build((None, 9))
    with pytest.raises(kgraph.SurgeryError, match=r"'wrong' \(Dense\) has weights of shapes"):
        kgraph.lift(dense_chain()).apply(ReplaceLayer("dense_2", new))


def test_new_layer_with_a_taken_name_is_renamed() -> None:
    model = dense_chain()
    pruned = (
        kgraph.lift(model).apply(InsertLayer("dense_3", L.Dropout(0.1, name="dense_1"))).lower()
    )
    assert [layer.name for layer in pruned.layers] == [
        "x",
        "dense_1",
        "dense_2",
        "dense_1_1",
        "dense_3",
    ]


def test_shared_layer_changes_apply_to_every_call_or_to_selected_calls() -> None:
    shared = L.Dense(4, name="shared", activation="relu")
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    ya = L.Dense(2, name="head_a")(shared(a))
    yb = L.Dense(2, name="head_b")(shared(b))
    model = keras.Model([a, b], [ya, yb])
    both = kgraph.lift(model).apply(DeleteChannels("shared", [1])).lower()
    assert both.get_layer("shared").units == 3
    assert len(both.get_layer("shared")._inbound_nodes) == 2
    check_dead_channels(model, {"shared": [1]})

    one = kgraph.lift(model).apply(DeleteChannels("shared", [1], calls=[1])).lower()
    assert one.get_layer("shared").units == 4
    assert one.get_layer("shared_delete_channels").units == 3
    assert one.get_layer("head_b").get_weights()[0].shape == (3, 2)
    inputs = sample_inputs(model)
    untouched = [keras.ops.convert_to_numpy(m(inputs)[0]) for m in (one, model)]  # call 0
    np.testing.assert_allclose(*untouched, rtol=1e-6)


def test_the_inputs_of_a_shared_layer_are_one_channel_group() -> None:
    # d3's kernel reads d1's channels in one call and d2's in the other: deleting a
    # channel from one deletes it from both, so the one shared kernel can follow
    x = keras.Input((4,))
    d1, d2 = L.Dense(3, name="d1")(x), L.Dense(3, name="d2")(x)
    d3 = L.Dense(2, name="d3")
    model = keras.Model(x, [d3(d1), d3(d2)])
    groups = {g.owners: g for g in kgraph.channel_groups(model)}
    assert ("d1", "d2") in groups and groups[("d1", "d2")].prunable
    pruned = check_dead_channels(model, {"d1": [0, 1], "d2": [0, 1]}, named=["d1"])
    np.testing.assert_array_equal(
        weights_of(pruned, "d3")[0], np.delete(weights_of(model, "d3")[0], [0, 1], axis=0)
    )


# ------------------------------------------------------------ pipeline, immutability


def test_apply_never_changes_its_input_graph_also_on_failure() -> None:
    model = dense_chain()
    graph = kgraph.lift(model)
    text, kernel = str(graph), graph.node("dense_1").weight("kernel")
    graph.apply(DeleteChannels("dense_1", [0]), DeleteLayer("dense_3"))
    with pytest.raises(kgraph.ChannelError):
        graph.apply(DeleteChannels("dense_1", [1]), DeleteChannels("dense_1", [99]))
    assert str(graph) == text
    assert graph.node("dense_1").weight("kernel") is kernel
    assert not kernel.flags.writeable


def test_frozen_graphs_cannot_be_edited() -> None:
    graph = kgraph.lift(dense_chain())
    with pytest.raises(kgraph.KGraphError, match=r"frozen"):
        graph.remove_node("dense_1")
    with pytest.raises(nx.NetworkXError, match=r"Frozen"):
        graph.nx.remove_node("dense_1")
    work = graph.copy()
    with pytest.raises(kgraph.KGraphError, match=r"\['output:0'\] still read it"):
        work.remove_node("dense_3")  # would leave the output's slot empty
    work.redirect_users("dense_3", 0, "dense_2", 0)
    work.remove_node("dense_3")
    assert "dense_3" in graph and "dense_3" not in work
    assert work.producers("output:0") == [("dense_2", 0)]


def test_eliminate_dead_nodes_reports_what_it_did() -> None:
    graph = kgraph.lift(dense_chain())
    work = graph.copy()
    work.redirect_users("dense_3", 0, "dense_2", 0)
    result = EliminateDeadNodes()(work.freeze())
    assert result.changed is True and "dense_3" not in result.graph
    assert EliminateDeadNodes()(result.graph).changed is False


def test_user_written_pass() -> None:
    @attrs.frozen
    class DropDropout(Pass):
        name: ClassVar[str] = "drop-dropout"

        def run(self, graph: kgraph.Graph) -> bool:
            victims = [n.name for n in graph.nodes() if n.class_name == "Dropout"]
            for victim in victims:
                DeleteLayer(victim).run(graph)
            return bool(victims)

    x = keras.Input((4,))
    y = L.Dropout(0.1, name="d0")(L.Dense(4, name="a")(x))
    y = L.Dropout(0.1, name="d1")(L.Dense(4, name="b")(y))
    model = keras.Model(x, y)
    lowered = kgraph.lift(model).apply(DropDropout()).lower()
    assert [layer.name for layer in lowered.layers][1:] == ["a", "b"]
    assert_same_outputs(model, lowered, sample_inputs(model))


def test_apply_takes_only_passes() -> None:
    with pytest.raises(kgraph.KGraphError, match=r"apply\(\) takes passes"):
        kgraph.lift(dense_chain()).apply("dense_1")


def test_print_after_every_pass(tmp_path, monkeypatch) -> None:
    graph = kgraph.lift(dense_chain())
    graph.apply(DeleteChannels("dense_1", [0]), dump_dir=tmp_path / "a")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    steps = ["00-input", "01-delete-channels", "02-propagate-masks", "03-eliminate-dead-nodes"]
    assert names == sorted(f"{step}{ext}" for step in steps for ext in (".dot", ".txt"))
    assert "units 5→4" in (tmp_path / "a" / "01-delete-channels.txt").read_text()
    assert "4/5 kept" in (tmp_path / "a" / "02-propagate-masks.txt").read_text()
    monkeypatch.setenv("KGRAPH_DUMP_DIR", str(tmp_path / "b"))
    graph.apply(DeleteLayer("dense_3"))
    assert (tmp_path / "b" / "01-delete-layer.txt").exists()


def test_verify_reports_a_broken_graph_with_its_listing() -> None:
    graph = kgraph.lift(dense_chain())
    work = graph.copy()
    node = work.node("dense_2")
    work.set_node(node.with_weights(kernel=node.weight("kernel")[:, :2]))
    work.set_node(attrs.evolve(work.node("dense_2"), inputs=()))
    with pytest.raises(kgraph.VerificationError) as error:
        work.verify()
    text = str(error.value)
    assert "'dense_2' (Dense)" in text and "has weight kernel of shape (5, 2)" in text
    assert "%dense_2 = Dense" in text


def test_printing_a_small_model() -> None:
    x = keras.Input((8, 8, 1), name="image")
    y = L.Conv2D(4, 3, activation="relu", name="conv")(x)
    y = L.MaxPooling2D(name="pool")(y)
    y = L.Flatten(name="flatten")(y)
    y = L.Dense(2, name="logits")(y)
    graph = kgraph.lift(keras.Model(x, y, name="tiny")).apply(DeleteChannels("conv", [1]))
    assert str(graph) == (
        "graph tiny(%image: (None, 8, 8, 1)) {\n"
        "  %conv = Conv2D[filters 4→3, 3x3, relu](%image) : (None, 6, 6, 3)  3/4 kept\n"
        "  %pool = MaxPooling2D[2x2](%conv) : (None, 3, 3, 3)  3/4 kept\n"
        "  %flatten = Flatten(%pool) : (None, 27)  27/36 kept\n"
        "  %logits = Dense[units 2](%flatten) : (None, 2)\n"
        "  return %logits\n"
        "}"
    )


def test_a_wider_replacement_is_reported_where_the_width_matters() -> None:
    x = keras.Input((6, 6, 2))
    y = L.Conv2D(4, 3, name="conv_1")(x)
    y = L.Dropout(0.5, name="dropout")(y)
    y = L.Conv2D(2, 1, name="conv_2")(y)
    model = keras.Model(x, y)
    with pytest.raises(kgraph.ChannelError, match=r"'conv_2' \(Conv2D\) now carries 5 channels"):
        kgraph.lift(model).apply(ReplaceLayer("conv_1", L.Conv2D(5, 3, name="wide")))


def test_a_new_layer_inserted_at_every_call_of_a_shared_layer_is_one_shared_layer() -> None:
    shared = L.Dense(4, name="shared")
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    model = keras.Model([a, b], L.Add(name="add")([shared(a), shared(b)]))
    lowered = kgraph.lift(model).apply(InsertLayer("shared", L.Dense(3, name="pre"))).lower()
    pre = lowered.get_layer("pre")
    assert len(pre._inbound_nodes) == 2
    replaced = kgraph.lift(model).apply(ReplaceLayer("shared", L.Dense(4, name="new"))).lower()
    assert len(replaced.get_layer("new")._inbound_nodes) == 2


@pytest.mark.parametrize("order", ["delete first", "insert first"])
def test_a_built_layer_fits_the_lifted_or_the_current_width(order: str) -> None:
    """A BatchNorm built for the lifted width is sliced like the channels around it."""
    x = keras.Input((6,))
    y = L.Dense(8, name="d1")(x)
    model = keras.Model(x, L.Dense(2, name="d2")(y))
    bn = L.BatchNormalization(name="bn")
    bn.build((None, 8))
    bn.set_weights([np.arange(8, dtype="float32") + 1, *(np.ones(8, "float32"),) * 3])
    passes = [DeleteChannels("d1", [0, 1]), InsertLayer("d2", bn)]
    if order == "insert first":
        passes.reverse()
    lowered = kgraph.lift(model).apply(*passes, verify=True).lower()
    np.testing.assert_array_equal(lowered.get_layer("bn").get_weights()[0], np.arange(2, 8) + 1)


def test_new_layer_must_be_a_layer_instance() -> None:
    for bad in (None, "relu", L.Dense, keras.Sequential([L.Dense(2)])):
        with pytest.raises(kgraph.SurgeryError, match=r"needs new_layer to be a keras Layer"):
            InsertLayer("dense_1", bad)
        with pytest.raises(kgraph.SurgeryError, match=r"needs new_layer to be a keras Layer"):
            ReplaceLayer("dense_1", bad)


def test_bad_calls_selection() -> None:
    graph = kgraph.lift(dense_chain())
    for calls in (0, [1], [0, 0], ["0"]):
        with pytest.raises(kgraph.SurgeryError, match=r"calls? .*layer 'dense_1'"):
            graph.apply(DeleteLayer("dense_1", calls=calls))


def test_lambda_layers_survive_a_round_trip_and_can_be_inserted() -> None:
    x = keras.Input((4,))
    y = L.Lambda(lambda t: t * 2.0, name="double")(L.Dense(3, name="dense")(x))
    model = keras.Model(x, y)
    lowered = kgraph.lift(model).lower()
    assert_same_outputs(model, lowered, sample_inputs(model))
    inserted = (
        kgraph.lift(dense_chain())
        .apply(InsertLayer("dense_2", L.Lambda(lambda t: t + 1.0, name="plus_one")))
        .lower()
    )
    assert "plus_one" in [layer.name for layer in inserted.layers]


def test_rule_authors_arrays_are_copied_not_frozen() -> None:
    node = kgraph.lift(dense_chain()).node("dense_1")
    mine = np.zeros_like(node.weight("kernel"))
    new = node.with_weights(kernel=mine)
    assert mine.flags.writeable
    mine[0, 0] = 5.0
    assert new.weight("kernel")[0, 0] == 0.0 and not new.weight("kernel").flags.writeable


def test_verify_catches_calls_of_a_shared_layer_that_disagree() -> None:
    shared = L.Dense(4, name="shared")
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    work = kgraph.lift(keras.Model([a, b], L.Add(name="add")([shared(a), shared(b)]))).copy()
    node = work.node("shared@1")
    work.set_node(node.with_weights(bias=np.ones(4, "float32")))
    with pytest.raises(kgraph.VerificationError, match=r"'shared@0' and 'shared@1'.*disagree"):
        work.verify()


@pytest.mark.parametrize(
    ("calls", "message"),
    [
        ([0, 0], r"calls \[0\] are listed more than once"),
        ([2], r"call 2 is out of range for layer 'shared', whose calls are \[0, 1\]"),
        ([-1], r"call -1 is out of range"),
        ([True], r"call True is not an integer"),
        (1, r"calls 1 do not select calls of layer 'shared'"),
    ],
)
def test_bad_call_selections_are_refused_with_the_calls_there_are(calls, message) -> None:
    x = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    model = keras.Model(x, shared(shared(x)))
    with pytest.raises(kgraph.SurgeryError, match=message):
        kgraph.lift(model).apply(DeleteChannels("shared", [0], calls=calls))
