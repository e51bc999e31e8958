"""Fuzzing every pass with arbitrary arguments: only KGraphErrors, and nothing changes.

Random passes with random targets (any layer, a name that does not exist, a path
inside a nested model), random channels and heads (out of range, repeated, all of
them), random new layers (shape-changing ones too) and random `Sparsify` options,
several in one `apply`. Whatever kgraph does, an error must be a `kgraph.KGraphError`
and leave the model as it was; a graph it returns must verify, lower, and save and
load.
"""

from __future__ import annotations

import keras
from helpers import sample_inputs
from hypothesis import given, note
from hypothesis import strategies as st
from oracles import (
    Refused,
    address,
    check_round_trip,
    count_case,
    fuzz_settings,
    guarded,
    new_case,
)

import kgraph
from kgraph.passes import (
    DeleteChannels,
    DeleteHeads,
    DeleteLayer,
    InsertLayer,
    ReplaceLayer,
    Sparsify,
)

L = keras.layers

NEW_LAYERS = {
    "dense7": lambda: L.Dense(7, name="new_dense7"),
    "bn": lambda: L.BatchNormalization(name="new_bn"),
    "dropout": lambda: L.Dropout(0.5, name="new_dropout"),
    "relu": lambda: L.ReLU(name="new_relu"),
    "conv2d": lambda: L.Conv2D(3, 1, name="new_conv2d"),
    "lstm": lambda: L.LSTM(3, return_sequences=True, name="new_lstm"),
    "flatten": lambda: L.Flatten(name="new_flatten"),
    "add": lambda: L.Add(name="new_add"),
}


@st.composite
def indices(draw: st.DrawFn, width: int) -> list[int]:
    return draw(st.lists(st.integers(-width - 1, width + 1), max_size=width + 2))


@fuzz_settings(0.13)
@given(data=st.data())
def test_fuzz_arbitrary_passes(data: st.DataObject) -> None:
    tape, _, builder = new_case(data)
    choose = tape.choose
    model = builder.model
    names = [*(site.path for site in builder.sites), ("no_such_layer",)]
    widths = {o.path: len(o.layout) for o in builder.owners}

    def make_passes() -> list:
        passes = []
        for _ in range(choose(st.integers(1, 4), "passes")):
            kind = choose(
                st.sampled_from(["channels", "delete", "insert", "replace", "heads", "sparsify"]),
                "pass",
            )
            path = choose(st.sampled_from(names), f"{kind} target")
            target = address(choose, path)
            if kind == "channels":
                channels = choose(indices(widths.get(path, 4)), "channels")
                calls = choose(st.sampled_from([None, [0], [1], [0, 1]]), "calls")
                passes.append(DeleteChannels(target, channels, calls=calls))
            elif kind == "delete":
                passes.append(DeleteLayer(target))
            elif kind in ("insert", "replace"):
                new = NEW_LAYERS[choose(st.sampled_from(sorted(NEW_LAYERS)), "new layer")]()
                if kind == "insert":
                    passes.append(InsertLayer(target, new, after=choose(st.booleans(), "after")))
                else:
                    passes.append(ReplaceLayer(target, new))
            elif kind == "heads":
                passes.append(DeleteHeads(target, choose(indices(3), "heads")))
            else:
                passes.append(
                    Sparsify(
                        choose(st.sampled_from([None, -0.5, 0.0, 0.5, 1.0, 1.5]), "sparsity"),
                        criterion=choose(st.sampled_from(["magnitude", "random", "l1"]), "c"),
                        scope=choose(st.sampled_from(["layer", "global", "model"]), "scope"),
                        block=choose(st.sampled_from([(1, 1), (2, 3), (0, 1)]), "block"),
                        n_m=choose(st.sampled_from([None, (2, 4), (4, 2)]), "n_m"),
                    )
                )
        return passes

    def surgery() -> keras.Model:
        passes = make_passes()
        note(f"passes: {passes}")
        return kgraph.lift(model).apply(*passes, verify=True).lower()

    try:
        result = guarded(surgery, [model])
    except Refused as refused:
        note(f"refused: {refused}")
        count_case("fuzz_arbitrary_passes")
        return
    check_round_trip(result, sample_inputs(model))
    count_case("fuzz_arbitrary_passes")
