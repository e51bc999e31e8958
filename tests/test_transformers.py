"""Transformers from keras-hub (tiny random configs, nothing downloaded): lift sees inside
their blocks; heads (also grouped-query ones), FFN units and the hidden size delete
as the dead-head / dead-unit oracle requires."""

from __future__ import annotations

import attrs
import keras
import numpy as np
import pytest
from helpers import fingerprint, outputs_of

import kgraph
from kgraph.passes import DeleteChannels, DeleteHeads
from kgraph.rules.capabilities import HasHeads

keras_hub = pytest.importorskip("keras_hub", reason="the transformer tests need keras-hub")

SMALL = dict(vocabulary_size=50, num_layers=2, hidden_dim=16, intermediate_dim=32)
GQA = dict(num_query_heads=4, num_key_value_heads=2)


def user_model() -> keras.Model:
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras_hub.layers.TokenAndPositionEmbedding(50, 32, 16, name="embed")(tokens)
    x = keras_hub.layers.TransformerEncoder(32, 2, name="enc0")(x)
    x = keras_hub.layers.TransformerEncoder(32, 2, name="enc1")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(tokens, keras.layers.Dense(3, name="head")(x), name="user")


BUILDERS = {
    "bert": lambda: keras_hub.models.BertBackbone(num_heads=2, max_sequence_length=32, **SMALL),
    "gpt2": lambda: keras_hub.models.GPT2Backbone(num_heads=2, max_sequence_length=32, **SMALL),
    "vit": lambda: keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    ),
    "gemma": lambda: keras_hub.models.GemmaBackbone(head_dim=4, **GQA, **SMALL),
    "llama": lambda: keras_hub.models.LlamaBackbone(**GQA, **SMALL),
    "mistral": lambda: keras_hub.models.MistralBackbone(**GQA, **SMALL),
    "qwen": lambda: keras_hub.models.QwenBackbone(**GQA, **SMALL),
    "user": user_model,
}
GROUPED = {"gemma", "llama", "mistral", "qwen"}
# keras-hub's Llama and Qwen attentions compute head_dim = hidden_dim // num_query_heads
# when they build: their heads and the hidden size cannot change (only their FFN can)
DERIVED_HEAD_DIM = {"llama", "qwen"}
# functional forms Keras cannot load back (the class-preserving prune returns the
# backbone's own class instead, which can)
NO_RELOAD = {
    "gemma": "Keras 3.15 marks `x * constant` sparse when it rebuilds the embedding scaling",
    "vit": "keras-hub 0.32's ViTPatchingAndEmbedding.get_config has keys its constructor refuses",
}


def inputs(name: str, batch: int = 2, length: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    if name == "vit":
        return rng.normal(size=(batch, 16, 16, 3)).astype("float32")
    tokens = rng.integers(1, 50, (batch, length)).astype("int32")
    if name == "user":
        return tokens
    found = {"token_ids": tokens, "padding_mask": np.ones((batch, length), "int32")}
    if name == "bert":
        found["segment_ids"] = np.zeros((batch, length), "int32")
    return found


_BUILT: dict[str, tuple[keras.Model, kgraph.Graph]] = {}


def built(name: str) -> tuple[keras.Model, kgraph.Graph]:
    """The model and its lifted graph, built once per test session."""
    if name not in _BUILT:
        keras.utils.set_random_seed(7)
        model = BUILDERS[name]()
        _BUILT[name] = (model, kgraph.lift(model))
    return _BUILT[name]


def attention_nodes(graph: kgraph.Graph) -> list[str]:
    return [n.name for n in graph.nodes() if isinstance(graph.rules.rule_for(n), HasHeads)]


def ffn_owner(graph: kgraph.Graph) -> str:
    """The owner of the first block's FFN units (a prunable group of Dense/EinsumDense)."""
    return next(
        g
        for g in kgraph.channel_groups(graph)
        if g.prunable and graph.node(g.owners[0]).class_name in ("Dense", "EinsumDense")
    ).owners[0]


def with_zeros(graph: kgraph.Graph, zeros: dict[str, dict[str, tuple[int, list[int]]]]):
    """`graph` with entries of weights set to zero: {node: {weight: (axis, indices)}}."""
    work = graph.copy()
    for name, weights in zeros.items():
        node = work.node(name)
        updates = {}
        for weight, (axis, indices) in weights.items():
            array = np.array(node.weight(weight))
            index = [slice(None)] * array.ndim
            index[axis] = indices
            array[tuple(index)] = 0
            updates[weight.replace("/", "__")] = array
        node = attrs.evolve(
            node,
            weights=[
                updates.get(n.replace("/", "__"), w)
                for n, w in zip(node.weight_names, node.weights)
            ],
        )
        work.set_node(node)
    return work.freeze()


def same_outputs(a: keras.Model, b: keras.Model, name: str) -> None:
    for length in (6, 9):
        x = inputs(name, length=length)
        for p, q in zip(outputs_of(a, x), outputs_of(b, x), strict=True):
            np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_lifting_sees_inside_blocks_and_lowers_to_the_same_model(name: str) -> None:
    keras.utils.set_random_seed(3)
    model = BUILDERS[name]()
    before = fingerprint(model)
    inbound = [len(layer._inbound_nodes) for layer in model._flatten_layers()]
    graph = kgraph.lift(model)
    assert attention_nodes(graph), "an attention layer is a node of its own"
    assert not any("opaque_reason" in n.meta for n in graph.nodes())
    same_outputs(model, graph.lower(), name)
    assert fingerprint(model) == before
    assert [len(layer._inbound_nodes) for layer in model._flatten_layers()] == inbound


def test_sublayers_are_addressed_by_path() -> None:
    _, graph = built("bert")
    (name,) = graph.find("transformer_layer_0/feedforward_intermediate_dense")
    assert graph.node(name).class_name == "Dense"
    (attention,) = graph.find("transformer_layer_1/self_attention_layer")
    assert graph.node(attention).class_name == "MultiHeadAttention"


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - DERIVED_HEAD_DIM))
def test_dead_heads_delete_without_changing_outputs(name: str) -> None:
    _model, graph = built(name)
    attention = attention_nodes(graph)[0]
    node = graph.node(attention)
    heads = [0, 3] if name in GROUPED else [1]  # one query head of each group
    dead = with_zeros(graph, {attention: {"attention_output/kernel": (0, heads)}})
    pruned = dead.apply(DeleteHeads(attention, heads), verify=True)
    same_outputs(dead.lower(), pruned.lower(), name)
    new = pruned.node(attention)
    for weight in node.weight_names:
        if weight == "attention_output/kernel":
            expected = np.delete(node.weight(weight), heads, axis=0)
            np.testing.assert_array_equal(new.weight(weight), expected)
    key = "num_query_heads" if name in GROUPED else "num_heads"
    assert new.config[key] == node.config[key] - len(heads)


@pytest.mark.parametrize("name", sorted(GROUPED - DERIVED_HEAD_DIM))
def test_a_dead_key_value_head_goes_with_its_query_heads(name: str) -> None:
    _model, graph = built(name)
    attention = attention_nodes(graph)[0]
    node = graph.node(attention)
    dead = with_zeros(graph, {attention: {"attention_output/kernel": (0, [2, 3])}})
    pruned = dead.apply(DeleteHeads(attention, kv_heads=[1]), verify=True)
    same_outputs(dead.lower(), pruned.lower(), name)
    new = pruned.node(attention)
    assert new.config["num_query_heads"] == 2 and new.config["num_key_value_heads"] == 1
    heads_axis = 0 if name == "gemma" else 1
    np.testing.assert_array_equal(
        new.weight("key/kernel"), np.delete(node.weight("key/kernel"), [1], axis=heads_axis)
    )
    np.testing.assert_array_equal(
        new.weight("query/kernel"),
        np.delete(node.weight("query/kernel"), [2, 3], axis=heads_axis),
    )


@pytest.mark.parametrize("name", sorted(DERIVED_HEAD_DIM))
def test_heads_and_hidden_size_of_a_derived_head_dim_are_refused(name: str) -> None:
    _, graph = built(name)
    attention = attention_nodes(graph)[0]
    why = r"computes head_dim as hidden_dim // num_query_heads"
    with pytest.raises(kgraph.ChannelError, match=why):
        graph.apply(DeleteHeads(attention, kv_heads=[1]))
    hidden = max(kgraph.channel_groups(graph), key=lambda g: len(g.members))
    assert not hidden.prunable and hidden.blocker is not None
    with pytest.raises(kgraph.UnsupportedLayerError, match=why):
        graph.apply(DeleteChannels(hidden.owners[0], [0]))
    # the FFN still prunes
    assert ffn_owner(graph).endswith("feedforward_intermediate_dense")


def test_grouped_heads_must_stay_even() -> None:
    _, graph = built("mistral")
    attention = attention_nodes(graph)[0]
    with pytest.raises(kgraph.ChannelError, match=r"keep \[1, 2\] per group"):
        graph.apply(DeleteHeads(attention, [0]))
    with pytest.raises(kgraph.ChannelError, match="cannot delete every head"):
        graph.apply(DeleteHeads(attention, kv_heads=[0, 1]))
    # a block's name means its one attention layer
    pruned = graph.apply(DeleteHeads("transformer_layer_0", kv_heads=[0]))
    assert pruned.node(attention).config["num_key_value_heads"] == 1


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_dead_ffn_units_delete_without_changing_outputs(name: str) -> None:
    _model, graph = built(name)
    owner = ffn_owner(graph)
    group = next(g for g in kgraph.channel_groups(graph) if owner in g.owners)
    units = [0, 5, 7]
    zeros = {}
    for member in group.owners:
        node = graph.node(member)
        axes = {"kernel": (-1 if node.class_name == "Dense" else node.weight("kernel").ndim - 1)}
        if node.has_weight("bias"):
            axes["bias"] = node.weight("bias").ndim - 1
        zeros[member] = {w: (axis, units) for w, axis in axes.items()}
    dead = with_zeros(graph, zeros)
    pruned = dead.apply(DeleteChannels(owner, units), verify=True)
    same_outputs(dead.lower(), pruned.lower(), name)
    for member in group.owners:
        kernel = graph.node(member).weight("kernel")
        np.testing.assert_array_equal(
            pruned.node(member).weight("kernel"), np.delete(kernel, units, axis=-1)
        )


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - DERIVED_HEAD_DIM))
def test_the_hidden_size_is_one_group_that_deletes_everywhere(name: str, tmp_path) -> None:
    _model, graph = built(name)
    hidden = max(kgraph.channel_groups(graph), key=lambda g: len(g.members))
    assert hidden.channels == 16 and len(hidden.members) > 10
    gone = [0, 15]
    pruned = graph.apply(DeleteChannels(hidden.owners[0], gone), verify=True)
    # every weight reading or making hidden channels lost exactly those entries
    for node in pruned.nodes():
        if node.class_name in (
            "LayerNormalization",
            "RMSNormalization",
            "MistralLayerNormalization",
        ):
            for weight in node.weight_names:
                before = graph.node(node.name).weight(weight)
                np.testing.assert_array_equal(node.weight(weight), np.delete(before, gone, -1))
    for embedding in [n for n in graph.nodes() if n.class_name == "ReversibleEmbedding"]:
        table = graph.node(embedding.name).weight("embeddings")
        np.testing.assert_array_equal(
            pruned.node(embedding.name).weight("embeddings"), np.delete(table, gone, 1)
        )
    smaller = pruned.lower()
    widths = [o.shape[-1] for o in keras.tree.flatten(smaller(inputs(name)))]
    expected = {"user": [3], "bert": [16, 14]}.get(name, [14])  # BERT's pooler keeps 16
    assert sorted(widths) == sorted(expected)
    path = tmp_path / f"{name}.keras"
    smaller.save(path)
    if name in NO_RELOAD:
        pytest.skip(NO_RELOAD[name])
    loaded = keras.saving.load_model(path)
    same_outputs(smaller, loaded, name)


# ------------------------------------------------------------------------- pruning


HUB = sorted(set(BUILDERS) - {"user"})
EXPLICIT_HEAD_DIM = {"gemma", "mistral"}  # their backbones can keep a head size


@pytest.mark.parametrize("name", HUB)
def test_uniform_pruning_gives_back_the_model_s_own_class(name: str, tmp_path) -> None:
    model, _graph = built(name)
    before = fingerprint(model)
    heads = 0.5 if name in EXPLICIT_HEAD_DIM else None
    small = kgraph.prune(model, 0.5, heads=heads, uniform=True)
    assert type(small) is type(model)
    config = small.get_config()
    original = model.get_config()
    ffn_key = "mlp_dim" if name == "vit" else "intermediate_dim"
    assert config[ffn_key] == original[ffn_key] // 2
    assert config["hidden_dim"] == original["hidden_dim"]  # the hidden size is left alone
    if heads:
        assert config["num_query_heads"] == original["num_query_heads"] // 2
    # it computes what the functional form of the same pruning computes
    functional = kgraph.lift(model).apply(*kgraph.plan(model, 0.5, heads=heads).passes()).lower()
    same_outputs(small, functional, name)
    path = tmp_path / f"{name}.keras"
    small.save(path)
    same_outputs(small, keras.saving.load_model(path), name)
    assert fingerprint(model) == before


def test_a_pruned_causal_lm_keeps_its_class_and_generates(tmp_path) -> None:
    lm = keras_hub.models.GemmaCausalLM(backbone=BUILDERS["gemma"](), preprocessor=None)
    small = kgraph.prune(lm, 0.5, heads=0.5, uniform=True)
    assert type(small) is keras_hub.models.GemmaCausalLM
    assert small.count_params() < lm.count_params()
    prompt = {
        "token_ids": np.array([[5, 6, 7, 0, 0]], "int32"),
        "padding_mask": np.array([[1, 1, 1, 0, 0]], "int32"),
    }
    generated = small.generate(prompt, max_length=5, stop_token_ids=None)
    assert generated["token_ids"].shape == (1, 5)
    np.testing.assert_array_equal(generated["token_ids"][0, :3], [5, 6, 7])
    small.backbone.save_to_preset(tmp_path / "preset")
    back = keras_hub.models.Backbone.from_preset(str(tmp_path / "preset"))
    assert back.count_params() == small.backbone.count_params()


def test_heads_that_the_class_sizes_from_the_hidden_size_cannot_keep_the_class() -> None:
    model, _ = built("bert")
    with pytest.raises(kgraph.KeepClassError, match="sizes each attention head as hidden_dim"):
        kgraph.prune(model, 0.5, heads=0.5, uniform=True)
    functional = kgraph.prune(model, 0.5, heads=0.5)  # the functional model can
    attention = functional.get_layer("transformer_layer_0_self_attention_layer")
    assert attention.num_heads == 1


def test_prune_leaves_the_hidden_size_alone_unless_asked() -> None:
    model = user_model()
    graph = kgraph.lift(model)
    hidden = next(g for g in kgraph.channel_groups(graph) if g.hidden)
    assert hidden.prunable and hidden.channels == 16
    plan = kgraph.plan(model, 0.5)
    assert hidden.owners[0] not in {cut.owner for cut in plan.channels}
    assert plan.channels  # the FFN units of both blocks
    with_hidden = kgraph.plan(model, 0.5, hidden=True)
    cut = next(c for c in with_hidden.channels if c.owner == hidden.owners[0])
    assert len(cut.channels) == 8
    small = with_hidden.apply(model)
    assert small.get_layer("embed_token_embedding").get_weights()[0].shape == (50, 8)


def test_head_scores() -> None:
    from kgraph.importance import head_importance

    _model, graph = built("mistral")
    attention = attention_nodes(graph)[0]
    node = graph.node(attention)
    (l1,) = head_importance(graph, [attention], "l1")
    query = np.abs(node.weight("query/kernel"))  # (hidden, heads, head_dim)
    output = np.abs(node.weight("attention_output/kernel"))  # (heads, head_dim, hidden)
    np.testing.assert_allclose(l1, query.sum(axis=(0, 2)) + output.sum(axis=(1, 2)), rtol=1e-5)
    # taylor: |sum over a head's output weights of w * dL/dw| is the derivative of the
    # loss along that head's own weights, which finite differences give independently
    x = inputs("mistral", batch=2, length=5)
    y = np.random.default_rng(1).normal(size=(2, 5, 16)).astype("float32")
    (taylor,) = head_importance(graph, [attention], "taylor", data=(x, y), loss="mse")

    def loss_with(scale_head: int, factor: float) -> float:
        kernel = np.array(node.weight("attention_output/kernel"))
        kernel[scale_head] *= factor
        changed = graph.copy()
        changed.set_node(
            attrs.evolve(
                node,
                weights=[
                    kernel if n == "attention_output/kernel" else w
                    for n, w in zip(node.weight_names, node.weights)
                ],
            )
        )
        out = changed.freeze().lower()(x)
        return float(np.mean((keras.ops.convert_to_numpy(out) - y) ** 2))

    eps = 0.05  # central differences: exact up to eps**2; float32 needs a large step
    expected = [abs(loss_with(h, 1 + eps) - loss_with(h, 1 - eps)) / (2 * eps) for h in range(4)]
    np.testing.assert_allclose(taylor, expected, rtol=5e-2, atol=2e-5)
    assert np.argsort(taylor).tolist() == np.argsort(expected).tolist()


def test_plans_of_heads_and_units_replay_on_a_copy(tmp_path) -> None:
    model, _ = built("gemma")
    plan = kgraph.plan(model, 0.25, heads=0.5)
    assert plan.heads and plan.channels
    path = plan.save(tmp_path / "plan.json")
    again = kgraph.PruningPlan.load(path)
    assert again == plan
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    a, b = plan.apply(model), again.apply(copy)
    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(wa), keras.ops.convert_to_numpy(wb)
        )
