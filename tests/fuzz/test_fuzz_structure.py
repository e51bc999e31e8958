"""Fuzzing DeleteLayer, InsertLayer and ReplaceLayer (with channel deletions) on random models.

The expectation is built by Keras alone: the drawn model is built again from its
tape with the layer left out, the new layer called before or after it, or the
replacement called instead (`strategies.Hooks`), with the same weights. kgraph's
result must compute what that model computes (and, when every pass keeps the
function — a replacement by an equivalent layer, an identity at inference inserted or
deleted — what the original computes). Channel deletions may come in the same or
another `apply` (the structure passes then touch only layers that keep their input's
channels, and the dead-channel oracle holds for both models).
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
from strategies import (
    PASS_SPECS,
    TORCH_LN_LIMIT,
    Hooks,
    Site,
    T,
    build_model,
    draw_group_deletions,
    positions,
    resolve,
    walk,
)

import kgraph
from kgraph.passes import DeleteChannels, DeleteLayer, InsertLayer, ReplaceLayer

IDENTITIES = {
    "Dropout",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "Identity",
    "ActivityRegularization",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
}
IDENTITY_SPECS = {("dropout",), ("noise",), ("identity",)}


def shim(shape: tuple, layout: list, data_format: str) -> T:
    """A stand-in tensor of `shape` for building a spec's layer."""
    return T(keras.KerasTensor((None, *shape)), layout, data_format)


def specs_for(t: T, with_channels: bool) -> list[tuple]:
    """Shape-preserving layers that may be inserted on a tensor like `t`."""
    specs = list(PASS_SPECS)
    if t.rank >= 1 and not (t.cl and TORCH_LN_LIMIT):  # LayerNormalization(axis=1)
        specs.append(("ln_other",))
    if not with_channels:  # layers with channels of their own
        specs.append(("dense_same",) if t.cl else ("conv_same",))
    return specs


def deleted_whole(site: Site, entries: set[tuple[int, int]]) -> bool:
    """The layer may be gone after the deletions: every channel it reads or makes is
    deleted (its branch goes with them), or it is a Concatenate that loses channels
    (left with one input, kgraph removes it)."""
    if site.class_name == "Concatenate":
        return any(e is not None and e in entries for e in site.layout)
    return any(
        bool(layout) and all(e is not None and e in entries for e in layout)
        for layout in (site.layout, site.out_layout)
    )


def permutes_model_data(site: Site) -> bool:
    """A Permute of channels no layer owns (a model input's, mostly): deleting it meets
    a known limitation (test_delete_a_permute_of_an_input_before_channels_first_layers)."""
    return site.class_name == "Permute" and all(e is None for e in site.layout)


def replacements(site: Site, model: keras.Model, with_channels: bool) -> list[tuple]:
    """What may replace the layer at `site`: a copy (same class, config and weights),
    an EinsumDense for a Dense, an identity for an identity, or any shape-preserving
    channel-wise layer for a channel-wise one."""
    layer = resolve(model, site.path)
    options = [("copy", layer.get_config(), type(layer))]
    if site.class_name == "Dense" and len(site.shape) <= 2:
        config = layer.get_config()
        options.append(
            ("einsum_for_dense", config["units"], config["activation"], config["use_bias"])
        )
    if site.class_name in IDENTITIES:
        options += sorted(IDENTITY_SPECS)
    if site.role == "pass" and site.same_shape:
        options += specs_for(shim(site.shape, site.layout, site.in_format), with_channels)
    return options


@fuzz_settings(0.2)
@given(data=st.data())
def test_fuzz_structure_passes(data: st.DataObject) -> None:
    tape, seed, builder = new_case(data)
    choose = tape.choose
    model = builder.model

    with_channels = choose(st.booleans(), "with channel deletions")
    entries = draw_group_deletions(choose, builder.groups) if with_channels else set()
    if not entries:
        with_channels = False
    assume(not known_issue(builder, entries, explicit=True))

    hooks, actions, taken = Hooks(), [], set()
    equivalent = True
    for _ in range(choose(st.integers(1, 3), "structure passes")):
        action = choose(st.sampled_from(["delete", "insert", "replace"]), "action")
        sites = [
            s for s in builder.sites if s.path[-1] not in taken and not deleted_whole(s, entries)
        ]
        if action == "delete":
            sites = [
                s
                for s in sites
                if s.same_shape
                and s.single_input
                and s.path[-1] != "head"
                and (s.role == "pass" or not with_channels)
                and not permutes_model_data(s)
            ]
        elif action == "insert":
            sites = [s for s in sites if s.class_name != "Embedding"]
        else:
            sites = [s for s in sites if s.role == "pass" or not with_channels]
        if not sites:
            continue
        site = choose(st.sampled_from(sites), f"{action} site")
        leaf = site.path[-1]
        taken.add(leaf)
        if action == "delete":
            hooks.skip.add(leaf)
            equivalent &= site.class_name in IDENTITIES
            actions.append(("delete", site, None))
        elif action == "insert":
            after = not site.single_input or choose(st.booleans(), "after")
            t = shim(
                *(
                    (site.out_shape, site.out_layout, site.data_format)
                    if after
                    else (site.shape, site.layout, site.in_format)
                )
            )
            spec = choose(st.sampled_from(specs_for(t, with_channels)), "new layer")
            (hooks.after if after else hooks.before)[leaf] = spec
            equivalent &= spec in IDENTITY_SPECS
            actions.append(("after" if after else "before", site, spec))
        else:
            spec = choose(st.sampled_from(replacements(site, model, with_channels)), "new layer")
            hooks.replace[leaf] = spec
            equivalent &= spec[0] in ("copy", "einsum_for_dense") or (
                spec in IDENTITY_SPECS and site.class_name in IDENTITIES
            )
            actions.append(("replace", site, spec))
    if not actions:
        count_case("fuzz_structure_passes")
        return
    note(f"structure: {[(a, s.name, spec) for a, s, spec in actions]}")

    expected_builder = build_model(tape.replay(), seed, hooks)
    expected_model = expected_builder.model
    make_dead(builder, model, entries)
    make_dead(expected_builder, expected_model, entries)
    inputs = sample_inputs(model)
    expected = outputs_of(expected_model, inputs)
    if equivalent:  # the hooks keep the function: the original computes the same
        assert_outputs_close(outputs_of(model, inputs), expected_model, inputs)

    structure = []
    for action, site, _ in actions:
        name = address(choose, site.path)
        if action == "delete":
            structure.append(DeleteLayer(name))
        elif action == "replace":
            structure.append(ReplaceLayer(name, expected_builder.replaced[f"new_{site.path[-1]}"]))
        else:
            new = expected_builder.inserted[f"{action}_{site.path[-1]}"]
            structure.append(InsertLayer(name, new, after=action == "after"))
    channels = []
    for owner in builder.owners:
        deleted = positions(owner.layout, entries)
        if deleted:
            channels.append(DeleteChannels(address(choose, owner.path), deleted))
    order = choose(st.sampled_from(["together", "channels first", "structure first"]), "order")
    if order == "together":
        stages = [channels + structure]
    elif order == "channels first":
        stages = [channels, structure]
    else:
        stages = [structure, channels]
    note(f"passes: {stages}")

    def surgery() -> keras.Model:
        graph = kgraph.lift(model)
        for passes in stages:
            if passes:
                graph = graph.apply(*passes, verify=True)
        graph.verify()
        return graph.lower()

    new_layers = [*expected_builder.inserted.values(), *expected_builder.replaced.values()]
    in_expected = {id(layer) for _, layer in walk(expected_model)}
    assert all(id(layer) in in_expected for layer in new_layers), "kgraph gets other layers"
    try:
        result = guarded(surgery, [model, expected_model])
    except Refused as refused:
        raise AssertionError(f"kgraph refused a valid surgery: {refused}") from refused
    assert all(layer.built for layer in new_layers)
    assert_outputs_close(expected, result, inputs)
    check_round_trip(result, inputs)
    count_case("fuzz_structure_passes")
