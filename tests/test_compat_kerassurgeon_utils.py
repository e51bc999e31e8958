"""kerassurgeon's `utils`, `__version__`, `Surgeon.nodes` and the in-place `prune(layer, ...)`.

The utils tests port kerassurgeon 0.2's tests/test_utils.py; `prune` is checked against
zero counts and thresholds computed here with numpy (np.sort of |w|), up to three
tutorial-style loops over `keras.applications.Xception(weights=None)`.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import pytest

import kgraph
from kgraph.compat import kerassurgeon
from kgraph.compat.kerassurgeon import KerasSurgeonError, Surgeon, utils

L = keras.layers
BACKEND = keras.backend.backend()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Torch's thread pool on 2 shared cores makes small ops 50x slower; restored after."""
    if BACKEND != "torch":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def value(variable: object) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable)


def lenet() -> keras.Sequential:
    """kerassurgeon's test_find_activation_layer model."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(1, (3, 3), name="conv_1"),
            L.Activation("relu", name="act_1"),
            L.MaxPool2D((2, 2), name="pool_1"),
            L.Conv2D(1, (3, 3), name="conv_2"),
            L.Activation("relu", name="act_2"),
            L.MaxPool2D((2, 2), name="pool_2"),
            L.Flatten(name="flat_1"),
            L.Dense(1, name="dense_1"),
            L.Activation("relu", name="act_3"),
            L.Dense(10, name="dense_2"),
            L.Activation("softmax", name="act_4"),
        ]
    )


# ---------------------------------------------------------------- utils


def test_version_is_the_mirrored_kerassurgeon_release() -> None:
    assert kerassurgeon.__version__ == "0.2.0"


def test_find_activation_layer() -> None:
    model = lenet()
    for layer, activation in (
        ("conv_1", "act_1"),
        ("conv_2", "act_2"),
        ("dense_1", "act_3"),
        ("dense_2", "act_4"),
    ):
        found = utils.find_activation_layer(model.get_layer(layer), 0)
        assert found == (model.get_layer(activation), 0)
    relu_dense = L.Dense(3, activation="relu")
    keras.Sequential([keras.Input((4,)), relu_dense])
    assert utils.find_activation_layer(relu_dense, 0) == (relu_dense, 0)


def test_find_activation_layer_raises_what_kerassurgeon_only_built() -> None:
    x = keras.Input((4,))
    y = L.Dense(3, name="d1")(x)
    branched = keras.Model(x, [L.ReLU()(y), L.ReLU()(y)])
    with pytest.raises(KerasSurgeonError, match="branch"):
        utils.find_activation_layer(branched.get_layer("d1"), 0)
    chained = keras.Sequential([keras.Input((4,)), L.Dense(3, name="d1"), L.Dense(2), L.ReLU()])
    with pytest.raises(KerasSurgeonError, match="mixes channels"):
        utils.find_activation_layer(chained.get_layer("d1"), 0)
    linear = keras.Sequential([keras.Input((4,)), L.Dense(3, name="d1")])
    with pytest.raises(KerasSurgeonError, match="no non-linear activation"):
        utils.find_activation_layer(linear.get_layer("d1"), 0)
    with pytest.raises(KerasSurgeonError, match="node_index"):
        utils.find_activation_layer(linear.get_layer("d1"), 3)


def test_get_shallower_nodes_and_node_indices() -> None:
    input_1, input_2 = keras.Input((10,)), keras.Input((10,))
    dense_1, dense_2, dense_3 = L.Dense(3), L.Dense(4), L.Dense(5)
    x = dense_1(input_1)
    node_1_1 = dense_1._inbound_nodes[0]
    y = dense_1(input_2)
    node_2_1 = dense_1._inbound_nodes[1]
    assert node_1_1 is not node_2_1
    dense_2(x)
    node_1_2 = dense_2._inbound_nodes[0]
    dense_3(y)
    node_2_2 = dense_3._inbound_nodes[0]
    assert utils.get_shallower_nodes(node_1_1) == [node_1_2]
    assert utils.get_shallower_nodes(node_2_1) == [node_2_2]
    dense_2(y)
    node_2_2_2 = dense_2._inbound_nodes[1]
    assert utils.get_shallower_nodes(node_2_1) == [node_2_2, node_2_2_2]
    assert [utils.get_node_index(n) for n in (node_1_1, node_2_1, node_2_2_2)] == [0, 1, 1]


def test_nodes_depths_and_layer_reuse_in_a_model() -> None:
    inputs = keras.Input((6,))
    shared = L.Dense(6, name="shared")
    head = L.Dense(2, name="head")
    model = keras.Model(inputs, head(shared(shared(inputs))))
    nodes = utils.get_model_nodes(model)
    assert [n.operation.name for n in nodes] == [
        model.layers[0].name,
        "shared",
        "shared",
        "head",
    ]
    assert utils.get_node_depth(model, head._inbound_nodes[0]) == 0
    assert utils.get_node_depth(model, shared._inbound_nodes[1]) == 1
    assert utils.get_node_depth(model, shared._inbound_nodes[0]) == 2
    assert utils.find_nodes_in_model(model, shared) == [0, 1]
    assert utils.check_for_layer_reuse(model) is True
    assert utils.check_for_layer_reuse(model, [head]) is False

    # a second model using `head` on a new input: that call is not in `model`
    other_input = keras.Input((6,))
    other = keras.Model(other_input, head(other_input))
    assert utils.find_nodes_in_model(model, head) == [0]
    assert utils.find_nodes_in_model(other, head) == [1]
    assert utils.check_for_layer_reuse(model, [head]) is False
    assert utils.check_nodes_in_model(model, head._inbound_nodes) == [True, False]
    with pytest.raises(KeyError) as error:
        utils.get_node_depth(model, head._inbound_nodes[1])
    assert isinstance(error.value, kgraph.KGraphError)
    assert "not contained" in str(error.value)


def test_get_channels_attr() -> None:
    assert utils.get_channels_attr(L.Dense(3)) == "units"
    assert utils.get_channels_attr(L.Conv2D(3, 1)) == "filters"
    with pytest.raises(KerasSurgeonError, match="no channels"):
        utils.get_channels_attr(L.Flatten())


def test_small_helpers() -> None:
    assert utils.sort_x_by_y(["a", "b", "c"], [3, 1, 2]) == ["b", "c", "a"]
    assert utils.single_element([5]) == 5
    assert utils.single_element([5, 6]) == [5, 6]
    tensor = keras.ops.ones((2,))
    assert utils.single_element(tensor) is tensor
    assert utils.get_one_tensor([tensor]) is tensor
    with pytest.raises(KerasSurgeonError):
        utils.get_one_tensor([tensor, tensor])
    assert utils.bool_to_index([True, False, True, np.True_]) == [0, 2, 3]
    assert utils.all_equal([np.ones(2), np.ones(2)]) is True
    assert utils.all_equal([np.ones(2), np.zeros(2)]) is False
    assert utils.all_equal([]) is True


def test_mean_calculator() -> None:
    mean_calculator = utils.MeanCalculator(sum_axis=0)
    mean_calculator.add(np.array([[1, 2, 3], [4, 5, 6]]))
    mean_calculator.add(np.array([[7, 8, 9], [10, 11, 12]]))
    np.testing.assert_array_equal(mean_calculator.calculate(), [5.5, 6.5, 7.5])
    with pytest.raises(KerasSurgeonError):
        utils.MeanCalculator(0).calculate()


def test_clean_copy_shares_no_layer_and_keeps_the_weights() -> None:
    model = lenet()
    copy = utils.clean_copy(model)
    assert not {id(layer) for layer in copy.layers} & {id(layer) for layer in model.layers}
    assert [layer.name for layer in copy.layers] == [layer.name for layer in model.layers]
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(copy.predict(x, verbose=0), model.predict(x, verbose=0))


def test_surgeon_nodes_are_the_keras_nodes_with_jobs_in_order() -> None:
    inputs = keras.Input((6,))
    shared = L.Dense(6, activation="relu", name="shared")
    middle = L.Dense(4, name="middle")
    model = keras.Model(inputs, L.Dense(2, name="head")(middle(shared(shared(inputs)))))
    surgeon = Surgeon(model)
    assert surgeon.nodes == []
    surgeon.add_job("delete_channels", middle, channels=[0])
    surgeon.add_job("delete_channels", shared, channels=[1], node_indices=[1])
    assert surgeon.nodes == [middle._inbound_nodes[0], shared._inbound_nodes[1]]
    surgeon.add_job("insert_layer", "head", new_layer=L.Dropout(0.5))
    assert surgeon.nodes[-1] is model.get_layer("head")._inbound_nodes[0]
    assert len(surgeon.nodes) == len(surgeon.jobs)


# ---------------------------------------------------------------- prune(layer, ...)


def small_model() -> keras.Model:
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(6, 3, name="conv")(x)
    y = L.BatchNormalization(name="bn")(y)
    y = L.SeparableConv2D(5, 3, name="sep")(y)
    y = L.Flatten(name="flat")(y)
    model = keras.Model(x, L.Dense(4, name="dense", bias_initializer="ones")(y))
    model.get_layer("dense").kernel.assign(value(model.get_layer("dense").kernel) * 0.01)
    return model


def kernels(layer: keras.layers.Layer) -> list[np.ndarray]:
    return [value(w) for w in layer.weights if w.name.endswith("kernel")]


def assert_smallest_zeroed(old: list[np.ndarray], new: list[np.ndarray], count: int) -> None:
    """Exactly `count` weights are zero, all of them among the smallest |w| of `old`
    (equal magnitudes may go either way), and the others kept their values."""
    before = np.concatenate([a.ravel() for a in old])
    after = np.concatenate([a.ravel() for a in new])
    zero = after == 0
    assert zero.sum() == count
    if 0 < count < before.size:
        cutoff = np.sort(np.abs(before))[count - 1]  # the count-th smallest magnitude
        assert np.abs(before[zero]).max() == cutoff
        assert np.abs(before[~zero]).min() >= cutoff
    np.testing.assert_array_equal(after[~zero], before[~zero])


@pytest.mark.parametrize("strategy", ["magnitude", "layer_magnitude"])
def test_prune_zeroes_the_smallest_weights_of_the_layer_in_place(strategy: str) -> None:
    model = small_model()
    layer = model.get_layer("sep")
    before = kernels(layer)
    variables = list(layer.weights)
    kerassurgeon.prune(layer, threshold=0.4, strategy=strategy)
    assert list(layer.weights) == variables  # the same variables, changed in place
    size = sum(a.size for a in before)  # depthwise and pointwise ranked together
    assert_smallest_zeroed(before, kernels(layer), round(0.4 * size))
    assert np.count_nonzero(value(model.get_layer("sep").bias) == 0) == 5  # biases untouched
    kerassurgeon.prune(model.get_layer("dense"), n=7)
    (dense,) = kernels(model.get_layer("dense"))
    assert np.count_nonzero(dense == 0) == 7
    np.testing.assert_array_equal(value(model.get_layer("dense").bias), np.ones(4))


def test_global_magnitude_uses_one_threshold_over_the_whole_model() -> None:
    model = small_model()  # a head with tiny weights: the global ranking takes them first
    layers = [model.get_layer(n) for n in ("conv", "sep", "dense")]
    before = [a for layer in layers for a in kernels(layer)]
    count = round(0.3 * sum(a.size for a in before))
    kerassurgeon.prune(model.get_layer("dense"), threshold=0.3, strategy="global_magnitude")
    (head,) = kernels(model.get_layer("dense"))
    cutoff = np.sort(np.concatenate([np.abs(a).ravel() for a in before]))[count - 1]
    assert np.count_nonzero(head == 0) == np.count_nonzero(np.abs(before[-1]) <= cutoff)
    assert 0.9 * count < np.count_nonzero(head == 0) < head.size
    for layer in layers[:2]:
        kerassurgeon.prune(layer, threshold=0.3, strategy="global_magnitude")
    assert_smallest_zeroed(before, [a for layer in layers for a in kernels(layer)], count)


def test_random_strategies_are_seeded_and_exact() -> None:
    model = small_model()
    dense = model.get_layer("dense")
    original = kernels(dense)[0]
    kerassurgeon.prune(dense, n=100, strategy="unstructured", seed=3)
    first = kernels(dense)[0] == 0
    assert first.sum() == 100
    dense.kernel.assign(original)
    kerassurgeon.prune(dense, n=100, strategy="unstructured", seed=3)
    np.testing.assert_array_equal(kernels(dense)[0] == 0, first)
    dense.kernel.assign(original)
    kerassurgeon.prune(dense, n=100, strategy="unstructured", seed=4)
    assert not np.array_equal(kernels(dense)[0] == 0, first)
    # not the smallest: magnitude would have picked only head weights here
    dense.kernel.assign(original)
    layers = [model.get_layer(n) for n in ("conv", "sep", "dense")]
    total = sum(a.size for layer in layers for a in kernels(layer))
    for layer in layers:
        kerassurgeon.prune(layer, threshold=0.5, strategy="global_unstructured", seed=1)
    zeros = sum(int(np.count_nonzero(a == 0)) for layer in layers for a in kernels(layer))
    assert zeros == round(0.5 * total)
    assert 0 < np.count_nonzero(kernels(dense)[0] == 0) < kernels(dense)[0].size


def test_prune_edges_and_the_model_argument() -> None:
    model = small_model()
    kerassurgeon.prune(model.get_layer("conv"), threshold=1.0)
    assert not kernels(model.get_layer("conv"))[0].any()
    kerassurgeon.prune(model.get_layer("sep"), threshold=0.0)
    assert all(a.all() for a in kernels(model.get_layer("sep")))
    inner = keras.Sequential([keras.Input((4,)), L.Dense(4, name="inner_dense")], name="inner")
    outer = keras.Sequential([keras.Input((4,)), inner, L.Dense(2, name="outer_dense")])
    layer = inner.get_layer("inner_dense")
    kerassurgeon.prune(layer, n=24, strategy="global_magnitude", model=outer)  # 16 + 8 weights
    assert not kernels(layer)[0].any()
    assert kernels(outer.get_layer("outer_dense"))[0].all()  # only `layer` changes
    # from the outer layer, the nested model's layers are found without model=
    kerassurgeon.prune(outer.get_layer("outer_dense"), n=24, strategy="global_magnitude")
    assert not kernels(outer.get_layer("outer_dense"))[0].any()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: kerassurgeon.prune(m.get_layer("conv")), "exactly one"),
        (lambda m: kerassurgeon.prune(m.get_layer("conv"), threshold=0.5, n=3), "exactly one"),
        (lambda m: kerassurgeon.prune(m.get_layer("conv"), threshold=1.5), r"\[0, 1\]"),
        (lambda m: kerassurgeon.prune(m.get_layer("conv"), threshold=-0.1), r"\[0, 1\]"),
        (lambda m: kerassurgeon.prune(m.get_layer("conv"), n=10**6), "integer in"),
        (lambda m: kerassurgeon.prune(m.get_layer("conv"), n=2.5), "integer in"),
        (lambda m: kerassurgeon.prune(m.get_layer("conv"), 0.5, strategy="l1"), "unknown strategy"),
        (lambda m: kerassurgeon.prune(m.get_layer("bn"), threshold=0.5), "no kernel"),
        (lambda m: kerassurgeon.prune(m.get_layer("flat"), threshold=0.5), "no kernel"),
        (
            lambda m: kerassurgeon.prune(
                m.get_layer("conv"), 0.5, strategy="global_magnitude", model=small_model()
            ),
            "not in model",
        ),
    ],
)
def test_prune_refuses_bad_arguments_and_changes_nothing(call, match: str) -> None:
    model = small_model()
    before = [value(w) for w in model.weights]
    with pytest.raises(KerasSurgeonError, match=match) as error:
        call(model)
    assert isinstance(error.value, kgraph.KGraphError)
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, value(new))


@pytest.mark.slow
@pytest.mark.xdist_group("Xception")  # the worker that builds it for test_zoo.py
def test_three_tutorial_loops_over_xception() -> None:
    model = keras.applications.Xception(weights=None)
    prunable = [layer for layer in model.layers if kerassurgeon.prunable(layer)]
    assert {type(layer).__name__ for layer in prunable} == {"Conv2D", "SeparableConv2D", "Dense"}
    for layer in prunable:  # a uniform draw can be exactly 0: make zeros mean "pruned"
        for weight in layer.weights:
            if weight.name.endswith("kernel"):
                weight.assign(np.where(value(weight) == 0, np.float32(1e-6), value(weight)))
    initial = model.get_weights()
    before = {layer.name: kernels(layer) for layer in prunable}

    # 1. half of every layer, by magnitude
    for layer in model.layers:
        if kerassurgeon.prunable(layer):
            kerassurgeon.prune(layer, threshold=0.5)
    for layer in prunable:
        old = before[layer.name]
        assert_smallest_zeroed(old, kernels(layer), round(0.5 * sum(a.size for a in old)))

    # 2. 30 % of the whole model, one global magnitude threshold
    model.set_weights(initial)
    for layer in model.layers:
        if kerassurgeon.prunable(layer):
            kerassurgeon.prune(layer, threshold=0.3, strategy="global_magnitude")
    everything = [a for layer in prunable for a in before[layer.name]]
    count = round(0.3 * sum(a.size for a in everything))
    assert_smallest_zeroed(everything, [a for layer in prunable for a in kernels(layer)], count)

    # 3. 100 random weights of every layer
    model.set_weights(initial)
    for layer in model.layers:
        if kerassurgeon.prunable(layer):
            kerassurgeon.prune(layer, n=100, strategy="unstructured", seed=0)
    for layer in prunable:
        assert sum(int(np.count_nonzero(a == 0)) for a in kernels(layer)) == 100, layer.name
