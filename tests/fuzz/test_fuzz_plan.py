"""Fuzzing `kgraph.plan(...)` and `PruningPlan.apply` on random models.

The plan is made on a random model (only layers that keep dead channels dead, so any
deletion is checkable). Its cuts are read back into the drawn model's channel
layouts; in a copy of the model those channels (and the heads of its head cuts) are
made dead, and the plan applied to that copy (`PruningPlan.apply`, with
`KGRAPH_VERIFY=1`) must compute what the copy computes.
The counts must be those docs/pruning.md describes: every group keeps at least
`min_channels` (all of them when it has fewer), a local cut removes `ratio` of a
group's channels before `round_to` rounds the kept count up to a multiple.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np
from helpers import copy_model, outputs_of, sample_inputs
from hypothesis import assume, given, note
from hypothesis import strategies as st
from oracles import (
    Refused,
    assert_outputs_close,
    check_round_trip,
    count_case,
    fuzz_settings,
    guarded,
    known_issue,
    make_dead,
    new_case,
)
from strategies import Builder

import kgraph


def owner_of(builder: Builder, node: str):
    """The drawn owner a plan names by its node (`dense3`, `shared_dense4@0`)."""
    leaf = node.split("@")[0].split("/")[-1]
    return next((o for o in builder.owners if o.path[-1] == leaf), None)


def cut_entries(builder: Builder, model: keras.Model, cut: kgraph.ChannelCut) -> set:
    """The layout entries a channel cut deletes."""
    owner = owner_of(builder, cut.owner)
    assert owner is not None, f"the plan cuts {cut.owner!r}, which owns no channels"
    if len(owner.layout) == cut.width:
        return {owner.layout[c] for c in cut.channels}
    # owners side by side (a Concatenate before a merge): the group says where each is
    group = next(g for g in kgraph.channel_groups(model) if cut.owner in g.owners)
    entries = set()
    for node, channels in group.owner_channels(cut.channels).items():
        layout = owner_of(builder, node).layout
        entries |= {layout[c] for c in channels}
    return entries


def keep_counts(width: int, ratio: float, min_channels: int, round_to: int | None) -> set[int]:
    """How many channels a local cut keeps (ratio * width rounded down or up)."""
    counts = set()
    for removed in (math.floor(width * ratio), math.ceil(width * ratio)):
        keep = max(width - removed, min_channels, 1)
        if round_to:
            keep = round_to * math.ceil(keep / round_to)
        counts.add(min(keep, width))
    return counts


@fuzz_settings(0.12)
@given(data=st.data())
def test_fuzz_plan_and_apply(data: st.DataObject) -> None:
    tape, seed, builder = new_case(data, preserving=True)
    choose = tape.choose
    model = builder.model
    inputs = sample_inputs(model, batch=6)

    single = len(model.outputs) == 1
    criteria = ["l1", "l2", "random", "bn_scale", "apoz", *(["taylor"] if single else [])]
    criterion = choose(st.sampled_from(criteria), "criterion")
    ratio = choose(st.sampled_from([0.25, 0.5]) | st.floats(0, 0.875, width=16), "ratio")
    options = {
        "scope": choose(st.sampled_from(["local", "global"]), "scope"),
        "round_to": choose(st.sampled_from([None, 1, 2, 3, 4]), "round_to"),
        "min_channels": choose(st.integers(1, 3), "min_channels"),
    }
    if builder.attentions and choose(st.booleans(), "heads"):
        options["heads"] = choose(st.sampled_from([0.34, 0.5]), "heads fraction")
    if criterion == "apoz":
        options["data"] = inputs
    elif criterion == "taylor":
        target = np.random.default_rng(seed).normal(size=outputs_of(model, inputs)[0].shape)
        options.update(data=(inputs, target.astype("float32")), loss="mse")
    note(f"plan(model, {ratio}, {criterion!r}, {options})")

    try:
        plan = guarded(lambda: kgraph.plan(model, ratio, criterion, **options), [model])
    except Refused as refused:  # e.g. bn_scale without a BatchNormalization
        note(f"refused: {refused}")
        count_case("fuzz_plan_and_apply")
        return
    note(str(plan))

    entries, heads = set(), {}
    for cut in plan.channels:
        found = cut_entries(builder, model, cut)
        assert None not in found, f"{cut.owner}: the plan cuts channels of a model input"
        entries |= found
        kept = cut.width - len(cut.channels)
        assert kept >= min(options["min_channels"], cut.width), cut
        owner = owner_of(builder, cut.owner)
        simple = len(owner.layout) == cut.width and all(
            builder.groups[e[0]].blocks == 1 for e in owner.layout if e is not None
        )
        if options["scope"] == "local" and simple:
            wanted = keep_counts(cut.width, ratio, options["min_channels"], options["round_to"])
            assert kept in wanted, (cut, wanted)
    for cut in plan.heads:
        attention = next(a for a in builder.attentions if a.path[-1] == cut.layer)
        assert 0 < len(cut.heads) < attention.heads
        heads[attention.path] = list(cut.heads)

    assume(not known_issue(builder, entries, explicit=False))
    dead = copy_model(model)
    make_dead(builder, dead, entries, heads)
    expected = outputs_of(dead, inputs)

    def apply() -> keras.Model:
        saved = os.environ.get("KGRAPH_VERIFY")
        os.environ["KGRAPH_VERIFY"] = "1"  # Graph.verify() after every pass of the plan
        try:
            return plan.apply(dead)
        finally:
            if saved is None:
                del os.environ["KGRAPH_VERIFY"]
            else:
                os.environ["KGRAPH_VERIFY"] = saved

    try:
        pruned = guarded(apply, [dead, model])
    except Refused as refused:
        raise AssertionError(f"a plan did not apply to its model: {refused}") from refused
    assert_outputs_close(expected, pruned, inputs)
    if not plan.channels and not plan.heads:
        assert pruned.count_params() == model.count_params(), "nothing cut, yet smaller"
    check_round_trip(pruned, inputs)
    count_case("fuzz_plan_and_apply")
