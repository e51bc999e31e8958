"""lift and lower: what a round trip must keep, and what lift must refuse."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import assert_same_outputs, fingerprint, sample_inputs

import kgraph
from kgraph.passes import DeleteChannels

L = keras.layers


def roundtrip(model: keras.Model) -> keras.Model:
    before = fingerprint(model)
    lowered = kgraph.lift(model).lower()
    assert fingerprint(model) == before
    return lowered


def assert_same_weights(original: keras.Model, lowered: keras.Model) -> None:
    for layer in lowered.layers:
        if not layer.weights:
            continue
        old = original.get_layer(layer.name)
        for a, b in zip(old.get_weights(), layer.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def assert_no_shared_layers(original: keras.Model, lowered: keras.Model) -> None:
    originals = {id(layer) for layer in original._flatten_layers(include_self=True)}
    assert not any(id(layer) in originals for layer in lowered._flatten_layers(include_self=True))


def small_cnn() -> keras.Model:
    x = keras.Input((10, 10, 3), name="image")
    y = L.Conv2D(4, 3, activation="relu", name="conv")(x)
    y = L.BatchNormalization(name="bn")(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    y = L.Dense(3, activation="softmax", name="probs")(y)
    return keras.Model(x, y, name="small_cnn")


def test_functional_roundtrip_keeps_everything() -> None:
    model = small_cnn()
    lowered = roundtrip(model)
    assert lowered.name == "small_cnn"
    assert [layer.name for layer in lowered.layers] == [layer.name for layer in model.layers]
    assert_same_weights(model, lowered)
    assert_same_outputs(model, lowered, sample_inputs(model), rtol=1e-6, atol=1e-6)
    assert_no_shared_layers(model, lowered)
    assert lowered.get_config()["layers"][1]["config"] == model.get_config()["layers"][1]["config"]


def test_lifted_weights_stay_as_lifted_while_the_model_trains() -> None:
    """The IR's arrays are read-only and never follow later training of the model,
    on every backend (views of copy-on-write or immutable buffers, or copies)."""
    x = keras.Input((6,))
    model = keras.Model(x, keras.layers.Dense(3, name="dense")(x))
    graph = kgraph.lift(model)
    kernel = graph.node("dense").weight("kernel")
    lifted = kernel.copy()
    assert not kernel.flags.writeable
    model.compile(keras.optimizers.SGD(0.5), "mse")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(32, 6)), rng.normal(size=(32, 3)), epochs=2, verbose=0)
    trained = keras.ops.convert_to_numpy(model.get_layer("dense").kernel)
    assert not np.array_equal(trained, lifted)  # the model did train
    np.testing.assert_array_equal(kernel, lifted)
    np.testing.assert_array_equal(graph.node("dense").weight("kernel"), lifted)


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="a JAX-only path: lifting reads a jax.Array without a copy (TensorFlow's reads "
    "are views of copy-on-write variables; torch parameters change in place, so they are copied)",
)
def test_lifting_on_jax_reads_the_variables_without_a_copy() -> None:
    x = keras.Input((6,))
    model = keras.Model(x, keras.layers.Dense(3, name="dense")(x))
    kernel = kgraph.lift(model).node("dense").weight("kernel")
    assert kernel.ctypes.data == model.get_layer("dense").kernel.value.unsafe_buffer_pointer()


def test_sequential_lifts_and_lowers_to_functional() -> None:
    model = keras.Sequential(
        [
            keras.Input((5,)),
            L.Dense(4, name="a"),
            L.Dropout(0.2, name="drop"),
            L.Dense(2, name="b"),
        ],
        name="seq",
    )
    graph = kgraph.lift(model)
    assert [n.name for n in graph.nodes() if n.kind == "layer"] == ["a", "drop", "b"]
    lowered = graph.lower()
    assert lowered.name == "seq"
    assert_same_weights(model, lowered)
    assert_same_outputs(model, lowered, sample_inputs(model), rtol=1e-6, atol=1e-6)


def test_sequential_built_without_input_layer() -> None:
    model = keras.Sequential([L.Dense(4, name="a"), L.Dense(2, name="b")])
    model.build((None, 3))
    lowered = roundtrip(model)
    assert_same_outputs(model, lowered, np.ones((2, 3), "float32"), rtol=1e-6, atol=1e-6)


def test_unbuilt_sequential_is_refused() -> None:
    model = keras.Sequential([L.Dense(4)], name="unbuilt")
    with pytest.raises(kgraph.LiftError, match=r"'unbuilt' is not built.*keras.Input"):
        kgraph.lift(model)


def test_subclassed_model_is_refused() -> None:
    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="net")
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Net()
    model(np.ones((1, 3), "float32"))
    with pytest.raises(kgraph.LiftError, match=r"subclassed.*functional"):
        kgraph.lift(model)
    with pytest.raises(kgraph.LiftError, match=r"needs a keras.Model"):
        kgraph.lift(L.Dense(3))


def test_multi_input_multi_output_structures() -> None:
    a = keras.Input((4,), name="a")
    b = keras.Input((3,), name="b")
    h = L.Concatenate(name="cat")([a, b])
    out = {"score": L.Dense(1, name="score")(h), "label": L.Dense(2, name="label")(h)}
    model = keras.Model({"a": a, "b": b}, out, name="multi")
    graph = kgraph.lift(model)
    assert graph.inputs_struct == {"a": "a", "b": "b"}
    lowered = graph.lower()
    inputs = {"a": np.ones((2, 4), "float32"), "b": np.ones((2, 3), "float32")}
    expected, got = model(inputs), lowered(inputs)
    assert set(got) == {"score", "label"}
    for key in expected:
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(expected[key]),
            keras.ops.convert_to_numpy(got[key]),
            rtol=1e-6,
        )


def test_list_inputs_keep_their_order() -> None:
    a = keras.Input((2,), name="first")
    b = keras.Input((3,), name="second")
    y = L.Concatenate(name="cat")([b, a])
    model = keras.Model([a, b], [y, a])
    lowered = roundtrip(model)
    assert [t.name for t in lowered.inputs] == ["first", "second"] or [
        layer.name for layer in lowered.layers[:2]
    ] == ["first", "second"]
    assert_same_outputs(model, lowered, sample_inputs(model), rtol=1e-6, atol=1e-6)


def test_shared_layer_is_one_node_per_call_with_one_set_of_weights() -> None:
    shared = L.Dense(3, name="shared")
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    model = keras.Model([a, b], L.Add(name="add")([shared(a), shared(b)]))
    graph = kgraph.lift(model)
    calls = graph.find("shared")
    assert calls == ["shared@0", "shared@1"]
    first, second = (graph.node(n) for n in calls)
    assert first.weights[0] is second.weights[0]
    lowered = graph.lower()
    assert len(lowered.get_layer("shared")._inbound_nodes) == 2
    assert len(lowered.get_layer("shared").weights) == 2
    assert_same_outputs(model, lowered, sample_inputs(model), rtol=1e-6, atol=1e-6)


def test_nested_models_are_inlined_with_training_flag() -> None:
    """A transfer-learning head: a frozen backbone called with training=False."""
    backbone = keras.Sequential(
        [keras.Input((8, 8, 3)), L.Conv2D(4, 3, name="conv"), L.BatchNormalization(name="bn")],
        name="backbone",
    )
    bn = backbone.get_layer("bn")
    bn.set_weights([np.full(4, 2.0), np.full(4, 0.5), np.full(4, 0.3), np.full(4, 4.0)])
    x = keras.Input((8, 8, 3), name="x")
    y = backbone(x, training=False)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    y = L.Dense(2, name="head")(y)
    model = keras.Model(x, y, name="transfer")
    graph = kgraph.lift(model)
    assert graph.node("bn").path == "backbone/bn"
    assert graph.node("bn").kwargs["training"] is False
    assert graph.find("backbone/conv") == ["conv"]
    lowered = graph.lower()
    assert {layer.name for layer in lowered.layers} == {"x", "conv", "bn", "gap", "head"}
    inputs = sample_inputs(model)
    # In training mode the backbone's BatchNorm must still use its moving statistics.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(inputs, training=True)),
        keras.ops.convert_to_numpy(lowered(inputs, training=True)),
        rtol=1e-5,
    )


def test_nested_layer_names_that_collide_are_prefixed() -> None:
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, L.Dense(3, name="dense")(inner_in), name="inner")
    x = keras.Input((4,))
    y = L.Dense(4, name="dense")(x)
    model = keras.Model(x, inner(y))
    graph = kgraph.lift(model)
    assert graph.find("inner/dense") == ["inner_dense"]
    assert graph.find("dense") == ["dense"]
    lowered = graph.lower()
    np.testing.assert_array_equal(
        lowered.get_layer("inner_dense").get_weights()[0], inner.get_layer("dense").get_weights()[0]
    )
    assert_same_outputs(model, lowered, sample_inputs(model), rtol=1e-6, atol=1e-6)
    pruned = kgraph.lift(model).apply(DeleteChannels(inner.get_layer("dense"), [0])).lower()
    assert pruned.get_layer("inner_dense").units == 2


def test_nested_model_called_twice_shares_its_layers() -> None:
    inner_in = keras.Input((4,))
    tower = keras.Model(inner_in, L.Dense(3, name="t")(inner_in), name="tower")
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    model = keras.Model([a, b], L.Subtract(name="sub")([tower(a), tower(b)]))
    graph = kgraph.lift(model)
    assert graph.find("t") == ["t@0", "t@1"]
    lowered = graph.lower()
    assert len(lowered.get_layer("t")._inbound_nodes) == 2
    assert_same_outputs(model, lowered, sample_inputs(model), rtol=1e-6, atol=1e-6)


def test_raw_ops_are_nodes_and_lower_to_the_same_operations() -> None:
    x = keras.Input((5,), name="x")
    y = L.Dense(4, name="dense")(x)
    y = y * keras.ops.relu6(y + 3.0) * (1.0 / 6.0)
    model = keras.Model(x, y)
    graph = kgraph.lift(model)
    ops = [n for n in graph.nodes() if n.kind == "op"]
    assert [n.class_name for n in ops] == ["Add", "Relu6", "Multiply", "Multiply"]
    assert ops[0].args[1] == 3.0
    lowered = graph.lower()
    assert_same_outputs(model, lowered, sample_inputs(model), rtol=1e-6, atol=1e-6)
    assert sum(not isinstance(op, keras.layers.Layer) for op in lowered.operations) == 4


def test_mixed_precision_and_trainable_flags_survive() -> None:
    x = keras.Input((6,), name="x")
    y = L.Dense(4, name="frozen", dtype="mixed_float16")(x)
    y = L.Dense(2, name="head", dtype="float32")(y)
    model = keras.Model(x, y)
    model.get_layer("frozen").trainable = False
    lowered = roundtrip(model)
    assert lowered.get_layer("frozen").dtype_policy.name == "mixed_float16"
    assert lowered.get_layer("frozen").trainable is False
    assert lowered.get_layer("head").trainable is True
    assert lowered.get_layer("frozen").kernel.dtype == "float32"
    assert_same_outputs(model, lowered, sample_inputs(model), rtol=1e-3, atol=1e-3)


def test_normalization_state_is_restored() -> None:
    norm = L.Normalization(name="norm")
    norm.adapt(np.array([[1.0, 10.0], [3.0, 30.0]], "float32"))
    x = keras.Input((2,))
    model = keras.Model(x, L.Dense(1, name="d")(norm(x)))
    lowered = roundtrip(model)
    assert_same_outputs(model, lowered, np.array([[2.0, 20.0], [0.0, 0.0]], "float32"), rtol=1e-6)


def test_lowered_model_saves_and_loads_without_custom_objects(tmp_path) -> None:
    model = small_cnn()
    pruned = kgraph.lift(model).apply(DeleteChannels("conv", [1])).lower()
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("conv").filters == 3
    assert_same_outputs(pruned, loaded, sample_inputs(model), rtol=1e-6, atol=1e-6)


def test_intermediate_tensor_as_model_input() -> None:
    x = keras.Input((4,))
    h = L.Dense(3, name="first")(x)
    y = L.Dense(2, name="second")(h)
    sub = keras.Model(h, y, name="sub")
    lowered = roundtrip(sub)
    assert_same_outputs(sub, lowered, np.ones((2, 3), "float32"), rtol=1e-6, atol=1e-6)


def test_embedding_mask_propagation_is_kept() -> None:
    x = keras.Input((6,), dtype="int32")
    y = L.Embedding(10, 4, mask_zero=True, name="emb")(x)
    y = L.LSTM(3, name="lstm")(y)
    model = keras.Model(x, y)
    lowered = roundtrip(model)
    tokens = np.array([[1, 2, 3, 0, 0, 0], [4, 0, 0, 0, 0, 0]], "int32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(tokens)),
        keras.ops.convert_to_numpy(lowered(tokens)),
        rtol=1e-6,
    )


def test_lowering_runs_no_random_initialiser(monkeypatch) -> None:
    """Variables are created from the IR's weights, not initialised and overwritten."""
    import keras.src.initializers.random_initializers as random_initializers

    calls = []
    for name in ("normal", "uniform", "truncated_normal"):
        original = getattr(random_initializers.random, name)

        def spy(*args, _original=original, **kwargs):
            calls.append(args)
            return _original(*args, **kwargs)

        monkeypatch.setattr(random_initializers.random, name, spy)
    x = keras.Input((6, 6, 3))
    y = L.Conv2D(4, 3, name="conv")(x)
    y = L.BatchNormalization(name="bn")(y)
    y = L.SeparableConv2D(4, 3, name="sep")(y)
    y = L.Reshape((4, 4), name="seq")(y)  # (2, 2, 4) feature map as 4 steps
    y = L.LSTM(3, name="lstm")(L.MultiHeadAttention(2, 2, name="mha")(y, y))
    model = keras.Model(x, L.Dense(2, name="head")(y))
    graph = kgraph.lift(model)
    calls.clear()
    lowered = graph.lower()
    assert calls == []
    assert_same_weights(model, lowered)
    assert_same_outputs(model, lowered, sample_inputs(model), rtol=1e-6, atol=1e-6)


def test_the_graph_keeps_the_weights_it_lifted_when_the_original_changes() -> None:
    """lift keeps views of the variables' values, not copies: training the original,
    assigning to it or setting its weights afterwards must not reach the graph."""
    x = keras.Input((4,))
    hidden = keras.layers.Dense(6, activation="relu", name="hidden")(x)
    model = keras.Model(x, keras.layers.Dense(2, name="out")(hidden))
    lifted = {
        name: [w.copy() for w in model.get_layer(name).get_weights()] for name in ("hidden", "out")
    }
    graph = kgraph.lift(model)

    model.compile(keras.optimizers.Adam(0.1), "mse")
    data = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model.fit(data, np.ones((64, 2), "float32"), epochs=2, verbose=0)
    model.get_layer("out").kernel.assign_add(np.ones((6, 2), "float32"))
    model.get_layer("hidden").set_weights([np.zeros((4, 6)), np.zeros(6)])

    for name, weights in lifted.items():
        for ours, theirs in zip(graph.node(name).weights, weights):
            np.testing.assert_array_equal(ours, theirs)
    lowered = graph.lower()
    np.testing.assert_array_equal(lowered.get_layer("hidden").get_weights()[0], lifted["hidden"][0])
    with pytest.raises(ValueError):  # read-only: nobody writes through the views either
        graph.node("out").weights[0][0, 0] = 1.0


def test_tensor_keyword_arguments_keep_their_slots_in_any_order() -> None:
    # slots follow Keras' order of a call's input tensors (dicts by sorted key), also
    # on backends whose own traversal keeps insertion order (torch)
    class KeywordsOnly(keras.layers.Layer):
        def call(self, *, zeta, alpha):
            return zeta - 2 * alpha

    x, y = keras.Input((3,), name="x"), keras.Input((3,), name="y")
    model = keras.Model([x, y], KeywordsOnly(name="kw")(zeta=x, alpha=y))
    a = np.arange(6, dtype="float32").reshape(2, 3)
    b = np.ones((2, 3), dtype="float32")
    lowered = kgraph.lift(model).lower()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(lowered([a, b])), a - 2 * b)
