"""Deferred weight slices: composed record of kept positions, carried out once."""

from __future__ import annotations

import keras
import ml_dtypes
import numpy as np
import pytest
from helpers import GENERATED_CASES
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kgraph
from kgraph import deferred, weight_feed
from kgraph.deferred import DeferredSlice, resolve
from kgraph.passes import DeleteChannels
from kgraph.rules import take_weight


@st.composite
def sliced_arrays(draw: st.DrawFn) -> tuple[np.ndarray, list[tuple[np.ndarray, int]]]:
    """An array and a sequence of (keep, axis) deletions that fit it one after another."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6))
    array = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    current = list(shape)
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        axis = draw(st.integers(0, len(shape) - 1))
        keep = draw(hnp.arrays(bool, current[axis]))
        steps.append((keep, draw(st.sampled_from([axis, axis - len(shape)]))))
        current[axis] = int(keep.sum())
    return array, steps


@settings(max_examples=200, deadline=None)
@given(sliced_arrays(), st.sampled_from([16, 1 << 22]))
def test_deferred_slices_equal_eager_compress(
    case: tuple[np.ndarray, list[tuple[np.ndarray, int]]], block_bytes: int
) -> None:
    GENERATED_CASES["deferred_slices"] += 1
    array, steps = case
    expected = array
    sliced = DeferredSlice.of(array)
    for keep, axis in steps:
        expected = np.compress(keep, expected, axis=axis)
        sliced = sliced.take(keep, axis)
    assert sliced.shape == expected.shape
    deferred_block = deferred._BLOCK_BYTES
    deferred._BLOCK_BYTES = block_bytes  # 16 bytes: one position of the outer axis per block
    try:
        values = sliced.values()
    finally:
        deferred._BLOCK_BYTES = deferred_block
    np.testing.assert_array_equal(values, expected)
    assert values.dtype == array.dtype


def test_values_are_built_once_read_only_and_leave_the_base_alone() -> None:
    base = np.arange(24.0).reshape(4, 6)
    base.setflags(write=False)
    sliced = DeferredSlice.of(base).take([True, False, True, True], 0).take([False] + [True] * 5, 1)
    assert sliced.base is base  # nothing copied before the values are read
    values = sliced.values()
    assert values is sliced.values()
    assert not values.flags.writeable
    np.testing.assert_array_equal(values, np.delete(np.delete(base, [1], 0), [0], 1))
    np.testing.assert_array_equal(np.asarray(sliced, dtype="float16"), values.astype("float16"))
    assert DeferredSlice.of(base).take(np.ones(4, bool), 0).values() is base


def test_wrong_flags_and_axes_are_refused() -> None:
    sliced = DeferredSlice.of(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="3 flags along axis 1 of a weight of shape"):
        sliced.take([True, False, True], 1)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        sliced.take([True] * 4, 2)


def test_a_kernel_sliced_on_both_sides_is_read_from_the_lifted_weight() -> None:
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, name="a")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="b")(hidden))
    graph = kgraph.lift(model)
    lifted_kernel = graph.node("b").weight("kernel")

    pruned = graph.apply(DeleteChannels("a", [1, 3]), DeleteChannels("b", [0]))

    stored = pruned.node("b").stored_weight("kernel")
    assert isinstance(stored, DeferredSlice) and stored.base is lifted_kernel
    expected = np.delete(np.delete(model.get_layer("b").kernel.numpy(), [1, 3], 0), [0], 1)
    np.testing.assert_array_equal(pruned.node("b").weight("kernel"), expected)
    assert pruned.node("b").weight_shapes[0] == (3, 3)
    lowered = pruned.lower()
    np.testing.assert_array_equal(lowered.get_layer("b").kernel.numpy(), expected)


def test_take_weight_composes_with_what_the_node_stores() -> None:
    node = kgraph.lift(keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="d")]))
    node = node.node("d")
    first = node.with_weights(kernel=take_weight(node, "kernel", np.array([1, 0, 1], bool), 0))
    second = take_weight(first, "kernel", np.array([1, 1, 0, 1], bool), 1)
    assert second.base is node.weight("kernel")
    np.testing.assert_array_equal(
        resolve(second), np.delete(np.delete(node.weight("kernel"), [1], 0), [2], 1)
    )


def test_stats_count_deferred_weights_without_carrying_them_out() -> None:
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, name="a")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="b")(hidden))
    pruned = kgraph.lift(model).apply(DeleteChannels("a", [1, 3]), DeleteChannels("b", [0]))

    stats = kgraph.stats(pruned)

    assert stats.params == (6 * 3 + 3) + (3 * 3 + 3)
    assert stats.flops == 6 * 3 + 3 * 3
    assert pruned.node("b").stored_weight("kernel")._values is None  # nothing gathered
    assert stats.params == kgraph.stats(pruned.lower()).params


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((5, 7), (0, 1)), ((9, 4), (1,)), ((3, 3), ()), ((2100, 2000), (0, 1)), ((2100, 1000), (0,))],
)
def test_gather_builds_a_new_aligned_writable_array_each_time(
    shape: tuple[int, int], axes: tuple[int, ...]
) -> None:
    # The last two outputs (5.6 MB, 5.6 MB) are large enough for a memory map of their own.
    base = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)
    base.setflags(write=False)
    keeps = {0: np.arange(shape[0]) % 3 != 1, 1: np.arange(shape[1]) % 2 == 0}
    sliced, expected = DeferredSlice.of(base), base
    for axis in axes:
        sliced = sliced.take(keeps[axis], axis)
        expected = np.compress(keeps[axis], expected, axis=axis)

    first, second = sliced.gather(), sliced.gather()

    for out in (first, second):
        np.testing.assert_array_equal(out, expected)
        assert out.dtype == np.float32 and out.flags.writeable and out.flags.c_contiguous
        assert out.ctypes.data % 64 == 0
        assert not np.shares_memory(out, base)
    assert not np.shares_memory(first, second)
    assert not sliced.carried_out  # gather() keeps nothing; values() would


def test_adopted_tensors_share_the_gathered_buffer() -> None:
    array = deferred.aligned_empty((3, 4), np.float32)
    array[...] = np.arange(12).reshape(3, 4)
    tensor = weight_feed._adopt(array)
    array[1, 2] = -1.0
    assert float(np.asarray(tensor)[1, 2]) == -1.0  # one buffer, no copy


def test_initial_value_converts_when_the_variable_has_another_dtype() -> None:
    sliced = DeferredSlice.of(np.arange(6.0).reshape(2, 3)).take([True, False, True], 1)
    value = weight_feed.initial_value(sliced, "float32")
    assert isinstance(value, np.ndarray) and value.dtype == np.float32
    np.testing.assert_array_equal(value, [[0, 2], [3, 5]])
    same_dtype = weight_feed.initial_value(sliced, "float64")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(same_dtype), [[0, 2], [3, 5]])
    # DLPack (TensorFlow) and torch.from_numpy cannot carry bfloat16: the gathered array
    # itself is handed over. JAX's device_put can: it adopts the array like any other.
    brain = DeferredSlice.of(np.arange(6.0).astype(ml_dtypes.bfloat16)).take([1, 0, 1, 1, 0, 1], 0)
    value = weight_feed.initial_value(brain, "bfloat16")
    assert isinstance(value, np.ndarray) == (keras.backend.backend() != "jax")
    assert keras.backend.standardize_dtype(value.dtype) == "bfloat16"
    values = keras.ops.convert_to_numpy(value)
    np.testing.assert_array_equal(values.astype(np.float32), [0, 2, 3, 5])


def test_lowering_hands_each_gathered_weight_to_its_variable_alone() -> None:
    # a's kernel keeps 1200 x 1000 float32 (4.8 MB): the memory-mapped path.
    inputs = keras.Input((1200,))
    hidden = keras.layers.Dense(2000, name="a")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(8, name="b")(hidden))
    original = [w.copy() for w in model.get_weights()]
    dropped = np.arange(0, 2000, 2)
    pruned = kgraph.lift(model).apply(DeleteChannels("a", dropped))

    lowered = pruned.lower()

    expected = np.delete(original[0], dropped, axis=1)
    kernel = lowered.get_layer("a").kernel
    np.testing.assert_array_equal(kernel.numpy(), expected)
    np.testing.assert_array_equal(
        lowered.get_layer("b").kernel.numpy(), np.delete(original[2], dropped, axis=0)
    )
    assert not pruned.node("a").stored_weight("kernel").carried_out  # no second copy kept

    kernel.assign(np.zeros_like(expected))  # training the new model ...
    kernel.assign_add(np.ones_like(expected))
    np.testing.assert_array_equal(kernel.numpy(), np.ones_like(expected))
    # ... changes neither the graph, nor a second lowering, nor the original model.
    np.testing.assert_array_equal(pruned.node("a").weight("kernel"), expected)
    np.testing.assert_array_equal(pruned.lower().get_layer("a").kernel.numpy(), expected)
    for now, before in zip(model.get_weights(), original):
        np.testing.assert_array_equal(now, before)
