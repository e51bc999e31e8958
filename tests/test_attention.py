"""MultiHeadAttention: absorbing input channels, output channels, and DeleteHeads."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import assert_same_outputs, copy_model, fingerprint, sample_inputs, zero_outputs

import kgraph
from kgraph.passes import DeleteChannels, DeleteHeads

L = keras.layers


def weights(layer: keras.layers.Layer) -> dict[str, np.ndarray]:
    return {w.path.split("/", 1)[1]: keras.ops.convert_to_numpy(w) for w in layer.weights}


def zero_attention_output(layer: keras.layers.Layer, channels=None, heads=None) -> None:
    """Make output `channels` of an MHA zero, or make `heads` contribute nothing."""
    values = [np.array(w) for w in layer.get_weights()]
    names = [w.path.split("/", 1)[1] for w in layer.weights]
    kernel = names.index("attention_output/kernel")
    if channels is not None:
        values[kernel][..., channels] = 0
        values[names.index("attention_output/bias")][channels] = 0
    if heads is not None:
        values[kernel][heads] = 0
    layer.set_weights(values)


def residual_block() -> keras.Model:
    x = keras.Input((5, 6), name="x")
    h = L.Dense(8, name="proj")(x)
    a = L.MultiHeadAttention(num_heads=2, key_dim=3, name="mha")(h, h)
    y = L.Add(name="residual")([h, a])
    return keras.Model(x, L.Dense(2, name="head")(y))


def test_self_attention_residual_follows_query_channels() -> None:
    model = residual_block()
    before = fingerprint(model)
    dead = copy_model(model)
    zero_outputs(dead.get_layer("proj"), [1, 5])
    zero_attention_output(dead.get_layer("mha"), channels=[1, 5])
    pruned = kgraph.lift(dead).apply(DeleteChannels("proj", [1, 5]), verify=True).lower()
    assert_same_outputs(dead, pruned, sample_inputs(model))
    assert fingerprint(model) == before

    old, new = weights(model.get_layer("mha")), weights(pruned.get_layer("mha"))
    for role in ("query", "key", "value"):
        np.testing.assert_array_equal(
            new[f"{role}/kernel"], np.delete(old[f"{role}/kernel"], [1, 5], 0)
        )
        np.testing.assert_array_equal(new[f"{role}/bias"], old[f"{role}/bias"])
    np.testing.assert_array_equal(
        new["attention_output/kernel"], np.delete(old["attention_output/kernel"], [1, 5], 2)
    )
    np.testing.assert_array_equal(
        new["attention_output/bias"], np.delete(old["attention_output/bias"], [1, 5])
    )


def test_output_channels_of_an_explicit_output_shape() -> None:
    q, v = keras.Input((4, 6), name="q"), keras.Input((7, 5), name="v")
    a = L.MultiHeadAttention(num_heads=2, key_dim=3, output_shape=6, name="mha")(q, v)
    model = keras.Model([q, v], L.Dense(2, name="head")(a))
    dead = copy_model(model)
    zero_attention_output(dead.get_layer("mha"), channels=[0, 4])
    pruned = kgraph.lift(dead).apply(DeleteChannels("mha", [0, 4]), verify=True).lower()
    assert_same_outputs(dead, pruned, sample_inputs(model))
    assert pruned.get_layer("mha").get_config()["output_shape"] == (4,)
    np.testing.assert_array_equal(
        pruned.get_layer("head").get_weights()[0],
        np.delete(model.get_layer("head").get_weights()[0], [0, 4], 0),
    )


def test_output_channels_that_follow_the_query_are_deleted_at_the_query() -> None:
    graph = kgraph.lift(residual_block())
    via_mha = graph.apply(DeleteChannels("mha", [0, 3]))
    via_proj = graph.apply(DeleteChannels("proj", [0, 3]))
    assert str(via_mha) == str(via_proj)
    assert via_mha.node("proj").config["units"] == 6


def test_cross_attention_key_and_value_inputs() -> None:
    q, m = keras.Input((4, 6), name="q"), keras.Input((7, 5), name="memory")
    keys = L.Dense(4, name="keys")(m)
    values = L.Dense(3, name="values")(m)
    a = L.MultiHeadAttention(num_heads=2, key_dim=3, name="mha")(q, values, key=keys)
    model = keras.Model([q, m], L.Dense(2, name="head")(a))
    dead = copy_model(model)
    zero_outputs(dead.get_layer("keys"), [3])
    zero_outputs(dead.get_layer("values"), [0])
    pruned = (
        kgraph.lift(dead)
        .apply(DeleteChannels("keys", [3]), DeleteChannels("values", [0]), verify=True)
        .lower()
    )
    assert_same_outputs(dead, pruned, sample_inputs(model))
    old, new = weights(model.get_layer("mha")), weights(pruned.get_layer("mha"))
    np.testing.assert_array_equal(new["key/kernel"], np.delete(old["key/kernel"], [3], 0))
    np.testing.assert_array_equal(new["value/kernel"], np.delete(old["value/kernel"], [0], 0))
    np.testing.assert_array_equal(new["query/kernel"], old["query/kernel"])


def attention_with_scores() -> keras.Model:
    x = keras.Input((5, 6), name="x")
    a, scores = L.MultiHeadAttention(num_heads=4, key_dim=2, name="mha")(
        x, x, return_attention_scores=True
    )
    return keras.Model(x, [L.Dense(2, name="head")(a), scores])


def test_deleting_heads_whose_output_projection_is_zero_keeps_the_function() -> None:
    model = attention_with_scores()
    before = fingerprint(model)
    dead = copy_model(model)
    zero_attention_output(dead.get_layer("mha"), heads=[0, 2])
    graph = kgraph.lift(dead).apply(DeleteHeads("mha", [0, 2]), verify=True)
    pruned = graph.lower()
    inputs = sample_inputs(model)
    out, scores = dead(inputs)
    new_out, new_scores = pruned(inputs)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(new_out), keras.ops.convert_to_numpy(out), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(new_scores),
        keras.ops.convert_to_numpy(scores)[:, [1, 3]],
        rtol=1e-5,
    )
    assert pruned.get_layer("mha").num_heads == 2
    assert fingerprint(model) == before

    old, new = weights(model.get_layer("mha")), weights(pruned.get_layer("mha"))
    for role in ("query", "key", "value"):
        np.testing.assert_array_equal(
            new[f"{role}/kernel"], np.delete(old[f"{role}/kernel"], [0, 2], 1)
        )
        np.testing.assert_array_equal(
            new[f"{role}/bias"], np.delete(old[f"{role}/bias"], [0, 2], 0)
        )
    np.testing.assert_array_equal(
        new["attention_output/kernel"], np.delete(old["attention_output/kernel"], [0, 2], 0)
    )
    np.testing.assert_array_equal(new["attention_output/bias"], old["attention_output/bias"])


def test_head_indices_refer_to_the_lifted_model() -> None:
    graph = kgraph.lift(attention_with_scores())
    once = graph.apply(DeleteHeads("mha", [1]))
    again = once.apply(DeleteHeads("mha", [1, 3]))
    assert once.node("mha").config["num_heads"] == 3
    assert again.node("mha").config["num_heads"] == 2
    assert again.node("mha").meta["heads"].tolist() == [True, False, True, False]
    assert again.lower().get_layer("mha").num_heads == 2


def test_bad_head_deletions() -> None:
    graph = kgraph.lift(attention_with_scores())
    with pytest.raises(kgraph.ChannelError, match=r"cannot delete every head of 'mha'"):
        graph.apply(DeleteHeads("mha", [0, 1, 2, 3]))
    with pytest.raises(kgraph.ChannelError, match=r"head 4 is out of range for 'mha' .* 4 heads"):
        graph.apply(DeleteHeads("mha", [4]))
    with pytest.raises(kgraph.SurgeryError, match=r"'head' \(Dense\) has no attention heads"):
        graph.apply(DeleteHeads("head", [0]))
