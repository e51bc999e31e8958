"""Rule sets per graph, the pass driver (callbacks, errors naming the pass), and the
pattern pass `ReplaceMatching`."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import assert_same_outputs, fingerprint, sample_inputs

import kgraph
from kgraph.passes import DeleteChannels, DeleteLayer, ReplaceMatching
from kgraph.rules import DEFAULT_RULES, PerChannelRule, RuleSet

L = keras.layers


@keras.saving.register_keras_serializable(package="kgraph_test_pipeline")
class ChannelScale(L.Layer):
    """A user's layer with one weight per channel (serializable, as TimeDistributed needs)."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape


class ScaleRule(PerChannelRule):
    per_channel = ("scale",)
    axis_key = None


def scaled_model(time_distributed: bool = False) -> keras.Model:
    x = keras.Input((5, 4) if time_distributed else (4,))
    y = L.Dense(3, name="dense")(x)
    scale = ChannelScale(name="scale")
    y = L.TimeDistributed(scale, name="td")(y) if time_distributed else scale(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    scale.set_weights([np.array([1.0, 2.0, 3.0], "float32")])
    return model


def test_a_rule_set_given_to_lift_serves_that_graph_only() -> None:
    model = scaled_model()
    rules = DEFAULT_RULES.extended({ChannelScale: ScaleRule()})
    pruned = kgraph.lift(model, rules=rules).apply(DeleteChannels("dense", [1])).lower()
    scale = pruned.get_layer("scale").get_weights()[0]
    np.testing.assert_array_equal(scale, [1.0, 3.0])
    assert ChannelScale not in DEFAULT_RULES  # the default set did not change
    with pytest.raises(kgraph.UnsupportedLayerError, match="no rule for ChannelScale"):
        kgraph.lift(model).apply(DeleteChannels("dense", [1]))


def test_apply_takes_a_rule_set_from_then_on() -> None:
    model = scaled_model()
    rules = RuleSet({ChannelScale: ScaleRule}, parent=DEFAULT_RULES)  # a class is instantiated
    graph = kgraph.lift(model).apply(DeleteChannels("dense", [0]), rules=rules)
    assert graph.rules is rules
    again = graph.apply(DeleteChannels("dense", [2]))  # the set stays with the graph
    np.testing.assert_array_equal(again.lower().get_layer("scale").get_weights()[0], [2.0])


def test_wrappers_ask_the_graph_s_rule_set_for_the_layer_they_wrap() -> None:
    model = scaled_model(time_distributed=True)
    rules = DEFAULT_RULES.extended({ChannelScale: ScaleRule()})
    pruned = kgraph.lift(model, rules=rules).apply(DeleteChannels("dense", [0])).lower()
    np.testing.assert_array_equal(pruned.get_layer("td").get_weights()[0], [2.0, 3.0])


def test_rule_sets_refuse_what_is_not_a_rule() -> None:
    with pytest.raises(kgraph.KGraphError, match=r"must be a kgraph\.rules\.Rule"):
        RuleSet({ChannelScale: object()})
    with pytest.raises(kgraph.KGraphError, match="registered for a class"):
        RuleSet({"ChannelScale": ScaleRule()})
    with pytest.raises(kgraph.KGraphError, match=r"must be a kgraph\.rules\.RuleSet"):
        kgraph.lift(scaled_model(), rules={ChannelScale: ScaleRule()})


def test_after_pass_sees_every_step_and_a_failing_pass_is_named() -> None:
    model = scaled_model()
    graph = kgraph.lift(model)
    seen = []
    graph.apply(DeleteLayer("scale"), after_pass=lambda step, name, g: seen.append((step, name)))
    assert seen == [
        (0, "input"),
        (1, "delete-layer"),
        (2, "propagate-masks"),
        (3, "eliminate-dead-nodes"),
    ]
    with pytest.raises(kgraph.UnsupportedLayerError) as error:
        graph.apply(DeleteLayer("head"), DeleteChannels("dense", [1]))
    assert str(error.value).startswith("pass 'propagate-masks' failed after delete-layer, ")


def test_a_failing_pass_names_the_dump_of_the_graph_before_it(tmp_path) -> None:
    graph = kgraph.lift(scaled_model())
    with pytest.raises(kgraph.LayerNotFoundError) as error:
        graph.apply(DeleteChannels("dense", [0]), DeleteLayer("nope"), dump_dir=tmp_path)
    before = tmp_path / "01-delete-channels.txt"
    assert f"(the graph before it: {before})" in str(error.value)
    assert before.read_text().startswith("graph ")


def test_replace_matching_swaps_every_matching_layer() -> None:
    x = keras.Input((6,))
    y = L.Dense(5, name="a")(x)
    y = L.ReLU(name="relu_a")(y)
    y = L.Dense(4, name="b")(y)
    y = L.ReLU(name="relu_b")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    before = fingerprint(model)
    swish = ReplaceMatching(
        match=lambda node: node.class_name == "ReLU",
        make=lambda node: L.Activation("swish", name=f"{node.layer}_swish"),
    )
    graph = kgraph.lift(model).apply(swish)
    classes = [n.class_name for n in graph.nodes() if n.kind == "layer"]
    assert classes == ["Dense", "Activation", "Dense", "Activation", "Dense"]
    new = graph.lower()
    # the same network with swish written by hand
    reference = keras.Model(
        x,
        L.Dense(2, name="head")(
            L.Activation("swish")(
                L.Dense(4, name="b")(L.Activation("swish")(L.Dense(5, name="a")(x)))
            )
        ),
    )
    for name in ("a", "b", "head"):
        reference.get_layer(name).set_weights(model.get_layer(name).get_weights())
    assert_same_outputs(reference, new, sample_inputs(model))
    assert fingerprint(model) == before


def test_replace_matching_keeps_layers_make_declines_and_refuses_non_functions() -> None:
    model = scaled_model()
    graph = kgraph.lift(model)
    result = ReplaceMatching(match=lambda node: True, make=lambda node: None)(graph)
    assert result.changed is False
    with pytest.raises(kgraph.SurgeryError, match="needs make to be a function"):
        ReplaceMatching(match=lambda node: True, make="Dense")
