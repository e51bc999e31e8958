"""Fuzzing `Sparsify` on random models, against what docs/sparsity.md promises.

Every weight of a targeted layer that sparsity acts on (kernels, recurrent kernels,
depthwise and pointwise kernels, embedding tables, attention projections) must keep
its values or become zero; everything else must be unchanged. Per weight (or over all
of them, `scope="global"`) `sparsity` of the weights — or of the blocks, seen as the
kernel's (inputs, outputs) matrix — must be zero, by magnitude the smallest; with N:M
exactly N of every M consecutive inputs of each output are kept, and a kernel whose
input count is not a multiple of M is refused. The lowered model must compute what
Keras computes with those weights, and save and load.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from helpers import copy_model, outputs_of, sample_inputs
from hypothesis import given, note
from hypothesis import strategies as st
from oracles import (
    Refused,
    address,
    assert_outputs_close,
    check_round_trip,
    count_case,
    fuzz_settings,
    guarded,
    new_case,
)
from strategies import walk

import kgraph
from kgraph.passes import Sparsify

# docs/sparsity.md: kernels of Dense, EinsumDense, the convolutions, recurrent layers
# (kernel and recurrent_kernel), Embedding tables and attention projections
PRUNABLE = {"kernel", "depthwise_kernel", "pointwise_kernel", "recurrent_kernel", "embeddings"}


def prunable(variable) -> bool:
    return variable.path.rsplit("/", 1)[-1] in PRUNABLE


def as_matrix(array: np.ndarray) -> np.ndarray:
    """A kernel as (inputs, outputs): every axis but the last folded into the inputs."""
    return array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array.reshape(-1, 1)


def block_view(mask: np.ndarray, block: tuple[int, int]) -> list[np.ndarray]:
    r, c = block
    return [
        mask[i : i + r, j : j + c]
        for i in range(0, mask.shape[0], r)
        for j in range(0, mask.shape[1], c)
    ]


def about(count: int, fraction: float, total: int) -> bool:
    """`count` is `fraction` of `total`, rounded either way."""
    return math.floor(fraction * total) - 1 <= count <= math.ceil(fraction * total) + 1


@fuzz_settings(0.1)
@given(data=st.data())
def test_fuzz_sparsify(data: st.DataObject) -> None:
    tape, _, builder = new_case(data)
    choose = tape.choose
    model = builder.model
    layers = [(path, layer) for path, layer in walk(model) if any(map(prunable, layer.weights))]

    criterion = choose(st.sampled_from(["magnitude", "random"]), "criterion")
    mode = choose(st.sampled_from(["plain", "block", "n_m"]), "mode")
    options: dict = {"criterion": criterion, "seed": choose(st.integers(0, 9), "mask seed")}
    if mode == "n_m":
        options["n_m"] = choose(st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4)]), "n_m")
    else:
        options["sparsity"] = choose(
            st.sampled_from([0.0, 0.5, 0.9]) | st.floats(0, 0.9375, width=16), "sparsity"
        )
        options["scope"] = choose(st.sampled_from(["layer", "global"]), "scope")
        if mode == "block":
            options["block"] = choose(st.tuples(st.integers(1, 3), st.integers(1, 3)), "block")
    targets = layers
    if layers and choose(st.booleans(), "some layers"):
        targets = choose(
            st.lists(st.sampled_from(layers), min_size=1, unique_by=lambda p: p[0][-1]), "layers"
        )
        options["layers"] = [address(choose, path) for path, _ in targets]
    note(f"Sparsify({options})")
    targeted = {path[-1] for path, _ in targets}
    weights = [
        (path, i, keras.ops.convert_to_numpy(v))
        for path, layer in targets
        for i, v in enumerate(layer.weights)
        if prunable(v)
    ]
    refusal = None
    if mode == "n_m":
        m = options["n_m"][1]
        bad = [path for path, _, w in weights if as_matrix(w).shape[0] % m]
        refusal = bad or None

    inputs = sample_inputs(model)
    try:
        sparse = guarded(
            lambda: kgraph.lift(model).apply(Sparsify(**options), verify=True).lower(), [model]
        )
    except Refused as refused:
        assert refusal, f"Sparsify refused valid options: {refused}"
        count_case("fuzz_sparsify")
        return
    assert not refusal, f"N:M accepted kernels whose inputs are not a multiple of M: {refusal}"

    # which weights became zero; nothing else changed
    masks = []  # (kernel as a matrix, pruned as a matrix)
    for path, layer in walk(model):
        new = sparse.get_layer(path[-1])
        for variable, after in zip(layer.weights, new.weights, strict=True):
            old, now = keras.ops.convert_to_numpy(variable), keras.ops.convert_to_numpy(after)
            if path[-1] in targeted and prunable(variable):
                assert np.all((now == old) | (now == 0)), f"{variable.path} changed values"
                masks.append((as_matrix(old), as_matrix((now == 0) & (old != 0))))
            else:
                np.testing.assert_array_equal(now, old, err_msg=f"{variable.path} changed")

    if mode == "n_m":
        n, m = options["n_m"]
        for old, pruned in masks:
            groups = (~pruned).T.reshape(pruned.shape[1], -1, m)
            assert np.all(groups.sum(-1) == n), "not N kept in every M inputs"
            if criterion == "magnitude":
                values = np.abs(old).T.reshape(old.shape[1], -1, m)
                kept_min = np.where(groups, values, np.inf).min(-1)
                cut_max = np.where(~groups, values, -np.inf).max(-1)
                assert np.all(cut_max <= kept_min), "N:M did not keep the largest"
    else:
        fraction = options["sparsity"]
        block = options.get("block", (1, 1))
        units = []  # per weight: (scores of blocks, pruned per block)
        for old, pruned in masks:
            blocks = block_view(pruned, block)
            assert all(b.all() or not b.any() for b in blocks), "a block partly zeroed"
            scores = np.array([np.abs(b).mean() for b in block_view(old, block)])
            units.append((scores, np.array([b.all() for b in blocks])))
        groups = (
            units
            if options["scope"] == "layer"
            else [(np.concatenate([s for s, _ in units]), np.concatenate([p for _, p in units]))]
            if units
            else []
        )
        for scores, pruned in groups:
            assert about(int(pruned.sum()), fraction, pruned.size), (pruned.sum(), pruned.size)
            if criterion == "magnitude" and 0 < pruned.sum() < pruned.size:
                assert scores[pruned].max() <= scores[~pruned].min(), "not the smallest"

    # the lowered model computes what Keras computes with those weights
    expected_model = copy_model(model)
    for path, layer in walk(expected_model):
        layer.set_weights(sparse.get_layer(path[-1]).get_weights())
    assert_outputs_close(outputs_of(expected_model, inputs), sparse, inputs)
    check_round_trip(sparse, inputs)
    count_case("fuzz_sparsify")
