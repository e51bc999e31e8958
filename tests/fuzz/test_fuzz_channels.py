"""Fuzzing channel and head deletions on random models, against dead channels.

A random model (tests/fuzz/strategies.py: every rule family, residual and merged
branches, shared layers, nested models) is drawn, then channels of its channel groups
and heads of its attention layers. In the model given to kgraph those channels and
heads are dead (zero whatever the input); deleting them must leave every output as it
was, `Graph.verify()` must pass, the lowered model must save and load, and the model
must not change. Owner layers must lose exactly the deleted channels.
"""

from __future__ import annotations

import keras
from helpers import outputs_of, sample_inputs
from hypothesis import assume, given, note
from hypothesis import strategies as st
from oracles import (
    Refused,
    address,
    assert_outputs_close,
    check_round_trip,
    count_case,
    fuzz_settings,
    guarded,
    known_issue,
    make_dead,
    new_case,
)
from strategies import Builder, Owner, draw_group_deletions, positions

import kgraph
from kgraph.passes import DeleteChannels, DeleteHeads


def owner_width(layer: keras.layers.Layer, kind: str) -> int:
    """Output channels of an owner layer, read from its config or weights."""
    if kind == "td":
        return layer.layer.units
    if kind in ("bicat", "bisum"):
        assert layer.forward_layer.units == layer.backward_layer.units
        return layer.forward_layer.units * (2 if kind == "bicat" else 1)
    if kind == "embedding":
        return layer.output_dim
    if kind == "rnn":
        return layer.units
    if kind in ("conv", "sepconv", "tconv"):
        return layer.filters
    if kind == "mha":
        return int(layer.weights[-1].shape[0])  # attention_output/bias
    return int(layer.weights[0].shape[-1])  # Dense, EinsumDense: kernel (..., units)


def draw_heads(choose, builder: Builder) -> dict[tuple[str, ...], list[int]]:
    """Heads to delete: a proper subset of each attention layer's heads, or none."""
    heads = {}
    for attention in builder.attentions:
        if attention.heads > 1 and choose(st.booleans(), f"{attention.path[-1]} heads"):
            picks = st.lists(
                st.integers(0, attention.heads - 1),
                unique=True,
                min_size=1,
                max_size=attention.heads - 1,
            )
            heads[attention.path] = sorted(choose(picks, f"{attention.path[-1]} dead heads"))
    return heads


def representative(owners: list[Owner], gid: int, entries: set) -> Owner:
    """An owner whose output holds every deleted entry of group `gid`."""
    wanted = {e for e in entries if e[0] == gid}
    return next(o for o in owners if wanted <= set(o.layout))


def check_deletions(data: st.DataObject, **options) -> None:
    """Draw a model (`options` for `strategies.Builder`), channels and heads; check the
    deletion against the dead copy."""
    tape, _, builder = new_case(data, **options)
    choose = tape.choose
    entries = draw_group_deletions(choose, builder.groups)
    heads = draw_heads(choose, builder)
    model = builder.model
    make_dead(builder, model, entries, heads)
    inputs = sample_inputs(model)
    expected = outputs_of(model, inputs)

    # the passes: every owner its channels, or one owner per group (kgraph must find
    # the others); in one apply or, group by group, in two
    every_owner = choose(st.booleans(), "every owner")
    stages = {gid: choose(st.integers(0, 1), f"stage {gid}") for gid in {e[0] for e in entries}}
    two = choose(st.booleans(), "two applies")
    assume(not known_issue(builder, entries, explicit=every_owner))
    plan: list[list] = [[], []]
    if every_owner:
        for owner in builder.owners:
            for stage in (0, 1):
                part = {e for e in entries if (stages[e[0]] if two else 0) == stage}
                channels = positions(owner.layout, part)
                if channels:
                    plan[stage].append(DeleteChannels(address(choose, owner.path), channels))
    else:
        for gid in sorted(stages):
            owner = representative(builder.owners, gid, entries)
            part = {e for e in entries if e[0] == gid}
            plan[stages[gid] if two else 0].append(
                DeleteChannels(address(choose, owner.path), positions(owner.layout, part))
            )
    for path, dead in heads.items():
        plan[0].append(DeleteHeads(address(choose, path), dead))
    note(f"passes: {plan}")

    def surgery() -> keras.Model:
        graph = kgraph.lift(model)
        for passes in plan:
            if passes:
                graph = graph.apply(*passes, verify=True)
        graph.verify()
        return graph.lower()

    try:
        pruned = guarded(surgery, [model])
    except Refused as refused:
        raise AssertionError(f"kgraph refused a valid deletion: {refused}") from refused
    assert_outputs_close(expected, pruned, inputs)

    names = {layer.name for layer in pruned.layers}
    for owner in builder.owners:
        lost = len(positions(owner.layout, entries))
        if lost == len(owner.layout):  # a Concatenate branch deleted whole
            assert owner.path[-1] not in names
            continue
        after = owner_width(pruned.get_layer(owner.path[-1]), owner.kind)
        assert after == len(owner.layout) - lost, (owner.name, len(owner.layout), lost, after)
    for attention in builder.attentions:
        layer = pruned.get_layer(attention.path[-1])
        assert layer.num_heads == attention.heads - len(heads.get(attention.path, []))
    check_round_trip(pruned, inputs)


@fuzz_settings(0.3)
@given(data=st.data())
def test_fuzz_delete_channels_and_heads(data: st.DataObject) -> None:
    check_deletions(data)
    count_case("fuzz_delete_channels_and_heads")


@fuzz_settings(0.1)
@given(data=st.data())
def test_fuzz_attention_heads(data: st.DataObject) -> None:
    """Sequence models that start with a MultiHeadAttention layer."""
    check_deletions(data, fronts=["sequence", "tokens"], prelude=["mha"])
    count_case("fuzz_attention_heads")


@fuzz_settings(0.15)
@given(data=st.data())
def test_fuzz_random_owner_random_channels(data: st.DataObject) -> None:
    """Any owner, any channels (all of them, out of range, repeated, breaking a grouped
    convolution's blocks): kgraph deletes them, with the outputs of the model where
    they are dead, or raises a KGraphError and changes nothing."""
    tape, _, builder = new_case(data)
    choose = tape.choose
    model = builder.model
    passes, requested, checkable = [], set(), True
    assume(builder.owners)  # a model of layout operations only has no owner
    for _ in range(choose(st.integers(1, 3), "passes")):
        owner = choose(st.sampled_from(builder.owners), "owner")
        n = len(owner.layout)
        channels = choose(
            st.lists(st.integers(-n - 1, n), max_size=n + 2)
            | st.lists(st.integers(0, n - 1), unique=True, min_size=1, max_size=n),
            "channels",
        )
        passes.append(DeleteChannels(address(choose, owner.path), channels))
        for c in channels:
            if -n <= c < n:
                entry = owner.layout[c]
                if entry is None or builder.groups[entry[0]].frozen:
                    checkable = False
                else:
                    requested.add(entry)
    make_dead(builder, model, requested)
    inputs = sample_inputs(model)
    expected = outputs_of(model, inputs)
    note(f"passes: {passes}")
    try:
        pruned = guarded(lambda: kgraph.lift(model).apply(*passes, verify=True).lower(), [model])
    except Refused:
        count_case("fuzz_random_owner_random_channels")
        return
    if checkable:
        assert_outputs_close(expected, pruned, inputs)
    check_round_trip(pruned, inputs)
    count_case("fuzz_random_owner_random_channels")
