"""Property-based test: random small dense and sequence models, random deletions, the oracle.

hypothesis draws a functional model from the non-convolutional layers kgraph supports
(Dense chains, concatenated and Add/Subtract/Multiply-merged branches, BatchNorm with
random statistics, Embedding front ends, SimpleRNN/GRU/LSTM, Bidirectional, TimeDistributed,
RepeatVector, Permute + Dense, Reshape, Flatten, GlobalAveragePooling1D, residual
MultiHeadAttention, EinsumDense) and channel deletions on its owner layers. kgraph must
lower a model, with `Graph.verify()` passing, whose outputs equal those of a copy where
the deleted channels are dead; owner layers must lose exactly the deleted units, Dense
kernels must equal `np.delete` of the originals, and the original must stay unchanged.

Channels are tracked as a *layout*: one `(group, index)` entry per channel of a tensor
(None for model-input features). Every owner layer has the layout of its output; layers
that must lose the same channels (merge members, a residual Dense and its shortcut)
share one group. For example, `Add([h, Dense(4)(h)])` after `h = Dense(4)(x)` gives both
Dense layers the layout `[(0, 0), (0, 1), (0, 2), (0, 3)]`, and deleting index 2 of group 0
deletes channel 2 of both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import keras
import numpy as np
from helpers import (
    GENERATED_CASES,
    assert_same_outputs,
    copy_model,
    fingerprint,
    gate_columns,
    sample_inputs,
    weights_of,
    zero_batchnorm,
    zero_outputs,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kgraph
from kgraph.passes import DeleteChannels

L = keras.layers

Entry = tuple[int, int] | None  # (group, index in the group), None: not deletable
Layout = list[Entry]

ACTIVATIONS = [None, "relu", "tanh", "elu"]  # f(0) == 0: dead channels stay dead
CELLS = ["SimpleRNN", "GRU", "LSTM"]
MAX_FLAT = 20  # widest tensor a Flatten may produce
OPERATIONS = {  # what may follow a tensor of each kind (and "flatten" when it is narrow)
    "vec": ["dense", "einsum", "act", "bn", "residual", "merge", "concat", "side", "repeat"],
    "seq": ["dense", "td", "rnn", "bidir", "act", "bn", "residual", "merge", "concat", "side"],
    "perm": ["pdense", "pconcat", "act", "permute"],
}
OPERATIONS["vec"].append("reshape")
# recurrent layers and attention twice as likely
OPERATIONS["seq"].extend(["rnn", "bidir", "mha", "mha", "gap", "permute"])


# -- drawing a program ----------------------------------------------------------------
#
# A program is a front end and a list of operations, drawn while tracking the kind of
# the current tensor: "vec" (batch, C), "seq" (batch, T, C) or "perm" (batch, C, T)
# after a Permute (channels on axis 1). Every drawn operation is valid for its kind.


def _member(kind: str) -> st.SearchStrategy[str]:
    """A layer that keeps the tensor kind and starts new channels (a branch member)."""
    if kind == "vec":
        return st.sampled_from(["dense", "einsum"])
    return st.sampled_from(["dense", "td", *(f"rnn:{c}" for c in CELLS)])


@st.composite
def programs(draw: st.DrawFn) -> dict:
    front = draw(st.sampled_from(["vector", "sequence", "tokens"]))
    steps = draw(st.integers(1, 4))  # of the sequence or token input
    features = draw(st.integers(2, 5))  # of the input, or the Embedding's output_dim
    program = {"front": front, "steps": steps, "features": features}
    program["seed"] = draw(st.integers(0, 2**16))  # for the random weights
    kind = "vec" if front == "vector" else "seq"
    width = features
    ops: list[tuple] = []
    units = st.integers(2, 5)
    for _ in range(draw(st.integers(1, 6))):
        flat_ok = kind != "vec" and width * steps <= MAX_FLAT
        choices = [*OPERATIONS[kind], *(["flatten"] if flat_ok else [])]
        op = draw(st.sampled_from(choices))
        if op in ("dense", "pdense"):
            ops.append((op, draw(units), draw(st.sampled_from(ACTIVATIONS))))
        elif op == "einsum":
            ops.append((op, draw(units), draw(st.booleans())))
        elif op == "td":
            ops.append((op, draw(units)))
        elif op == "rnn":
            ops.append((op, draw(st.sampled_from(CELLS)), draw(units), draw(st.booleans())))
        elif op == "bidir":
            mode = draw(st.sampled_from(["concat", "sum"]))
            ops.append((op, draw(st.sampled_from(CELLS)), draw(units), mode, draw(st.booleans())))
        elif op == "act":
            ops.append((op, draw(st.sampled_from(["dropout", "noise", "relu", "elu"]))))
        elif op == "residual":
            ops.append((op, draw(st.sampled_from(ACTIVATIONS))))
        elif op == "merge":
            members = [draw(_member(kind)) for _ in range(draw(st.integers(2, 3)))]
            if kind == "seq" and draw(st.booleans()):  # a Bidirectional(sum) member
                members[-1] = f"bisum:{draw(st.sampled_from(CELLS))}"
            merge = draw(st.sampled_from(["add", "subtract", "multiply"]))
            if merge == "subtract":
                members = members[:2]
            ops.append((op, merge, tuple(members), draw(units)))
        elif op == "concat":
            branches = draw(
                st.lists(
                    st.tuples(_member(kind), units, st.sampled_from([None, "bn", "relu"])),
                    min_size=2,
                    max_size=3,
                )
            )
            keeper = draw(st.integers(0, len(branches) - 1))  # never deleted whole
            ops.append((op, tuple(branches), keeper))
            if draw(st.booleans()):  # a residual right after: coordinates must not move
                kind, width, steps = _after(ops[-1], kind, width, steps)
                ops.append(("residual", draw(st.sampled_from(ACTIVATIONS))))
        elif op == "pconcat":
            ops.append((op, draw(units), draw(units)))
        elif op == "mha":
            ops.append((op, draw(st.integers(1, 2)), draw(st.integers(2, 3))))
        elif op == "repeat":
            ops.append((op, draw(st.integers(2, 3))))
        else:  # bn, side, reshape, gap, permute, flatten
            ops.append((op,))
        kind, width, steps = _after(ops[-1], kind, width, steps)
    return {**program, "ops": ops}


def _after(op: tuple, kind: str, width: int, steps: int) -> tuple[str, int, int]:
    """The (kind, channels, steps) of the tensor after `op`."""
    name = op[0]
    if name in ("dense", "einsum", "td"):
        return kind, op[1], steps
    if name == "rnn":
        return ("seq" if op[3] else "vec"), op[2], steps
    if name == "bidir":
        return ("seq" if op[4] else "vec"), op[2] * (2 if op[3] == "concat" else 1), steps
    if name == "merge":
        return kind, op[3], steps
    if name == "concat":
        return kind, sum(b[1] for b in op[1]), steps
    if name == "pdense":
        return kind, width, op[1]
    if name == "pconcat":
        return kind, width, op[1] + op[2]
    if name == "repeat":
        return "seq", width, op[1]
    if name == "reshape":
        return "seq", width, 1
    if name == "gap":
        return "vec", width, steps
    if name == "permute":
        return ("perm" if kind == "seq" else "seq"), width, steps
    if name == "flatten":
        return "vec", width * steps, steps
    return kind, width, steps  # act, bn, residual, side, mha


# -- building the model ---------------------------------------------------------------


@attrs.define
class Owner:
    """A layer DeleteChannels deletes from, and the layout of its output channels."""

    name: str
    kind: str  # dense, einsum, td, rnn, embedding, bicat, bisum
    layout: Layout


@attrs.define
class Built:
    """The model and what the oracle needs to know about it."""

    model: keras.Model
    groups: list[tuple[int, str]] = attrs.Factory(list)  # (width, free|droppable|halves)
    owners: list[Owner] = attrs.Factory(list)
    batchnorms: list[tuple[str, Layout]] = attrs.Factory(list)
    attentions: list[tuple[str, Layout]] = attrs.Factory(list)
    # Dense layers: (name, input layout if it reads the channel axis, output layout if owner)
    denses: list[tuple[str, Layout | None, Layout | None]] = attrs.Factory(list)


class Builder:
    """Builds a program's layers, recording owners, groups and dead-channel fix-ups."""

    def __init__(self) -> None:
        self.built = Built(model=None)  # type: ignore[arg-type]
        self.count = 0
        self.outputs: list[Any] = []

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def group(self, width: int, mode: str = "free") -> Layout:
        self.built.groups.append((width, mode))
        gid = len(self.built.groups) - 1
        return [(gid, i) for i in range(width)]

    def owner(self, name: str, kind: str, layout: Layout) -> Layout:
        self.built.owners.append(Owner(name, kind, layout))
        return layout

    def produce(
        self, member: str, units: int, y: Any, layout: Layout, out: Layout | None = None, **kw
    ) -> tuple[Any, Layout]:
        """A member layer (dense, einsum, td, rnn:Cell, bisum:Cell) of `units` on `y`.

        Its output channels get the layout `out` (a new group when None).
        """
        out = self.group(units) if out is None else out
        if member == "dense":
            name = self.name("dense")
            self.built.denses.append((name, layout, out))
            return L.Dense(units, name=name, **kw)(y), self.owner(name, "dense", out)
        if member == "einsum":
            name = self.name("einsum")
            bias = kw.get("bias", True)
            layer = L.EinsumDense("ab,bc->ac", units, bias_axes="c" if bias else None, name=name)
            return layer(y), self.owner(name, "einsum", out)
        if member == "td":
            name = self.name("td")
            return L.TimeDistributed(L.Dense(units), name=name)(y), self.owner(name, "td", out)
        cell = getattr(L, member.split(":")[1])
        if member.startswith("rnn:"):
            name = self.name(member.split(":")[1].lower())
            rs = kw.get("return_sequences", True)
            return cell(units, return_sequences=rs, name=name)(y), self.owner(name, "rnn", out)
        name = self.name("bi")
        layer = L.Bidirectional(cell(units, return_sequences=True), merge_mode="sum", name=name)
        return layer(y), self.owner(name, "bisum", out)

    def op(self, op: tuple, y: Any, layout: Layout, kind: str) -> tuple[Any, Layout]:
        """Apply `op` to `y` (of `kind`, channels `layout`)."""
        name = op[0]
        if name == "dense":
            return self.produce("dense", op[1], y, layout, activation=op[2])
        if name == "einsum":
            return self.produce("einsum", op[1], y, layout, bias=op[2])
        if name == "td":
            return self.produce("td", op[1], y, layout)
        if name == "rnn":
            return self.produce(f"rnn:{op[1]}", op[2], y, layout, return_sequences=op[3])
        if name == "bidir":
            _, cell, units, mode, rs = op
            bi = self.name("bi")
            layer = getattr(L, cell)(units, return_sequences=rs)
            y = L.Bidirectional(layer, merge_mode=mode, name=bi)(y)
            if mode == "concat":
                return y, self.owner(bi, "bicat", self.group(2 * units, "halves"))
            return y, self.owner(bi, "bisum", self.group(units))
        if name == "act":
            layer = {
                "dropout": lambda n: L.Dropout(0.5, name=n),
                "noise": lambda n: L.GaussianNoise(0.3, name=n),
                "relu": lambda n: L.ReLU(name=n),
                "elu": lambda n: L.ELU(name=n),
            }[op[1]](self.name(op[1]))
            return layer(y), layout
        if name == "bn":
            bn = self.name("bn")
            self.built.batchnorms.append((bn, layout))
            return L.BatchNormalization(name=bn)(y), layout
        if name == "residual":  # the Dense must lose the shortcut's channels
            h, _ = self.produce("dense", len(layout), y, layout, out=layout, activation=op[1])
            return L.Add(name=self.name("add"))([y, h]), layout
        if name == "merge":
            _, merge, members, units = op
            out = self.group(units)
            branches = [self.produce(m, units, y, layout, out=out)[0] for m in members]
            merged = {"add": L.Add, "subtract": L.Subtract, "multiply": L.Multiply}[merge]
            return merged(name=self.name(merge))(branches), out
        if name == "concat":
            parts, joined = [], []
            # Every branch but the keeper may lose all its channels and disappear; with
            # one branch left the Concatenate goes too, even before a residual Add.
            for i, (member, units, post) in enumerate(op[1]):
                out = self.group(units, "free" if i == op[2] else "droppable")
                h, _ = self.produce(member, units, y, layout, out=out)
                if post == "bn":
                    bn = self.name("bn")
                    self.built.batchnorms.append((bn, out))
                    h = L.BatchNormalization(name=bn)(h)
                elif post == "relu":
                    h = L.ReLU(name=self.name("relu"))(h)
                parts.append(h)
                joined += out
            return L.Concatenate(name=self.name("concat"))(parts), joined
        if name == "side":  # an extra model output on the current tensor
            side = self.name("side")
            self.built.denses.append((side, layout, None))
            self.outputs.append(L.Dense(2, name=side)(y))
            return y, layout
        if name == "mha":
            mha = self.name("mha")
            self.built.attentions.append((mha, layout))
            a = L.MultiHeadAttention(num_heads=op[1], key_dim=op[2], name=mha)(y, y)
            return L.Add(name=self.name("add"))([y, a]), layout
        if name == "repeat":
            return L.RepeatVector(op[1], name=self.name("repeat"))(y), layout
        if name == "reshape":
            return L.Reshape((1, len(layout)), name=self.name("reshape"))(y), layout
        if name == "gap":
            return L.GlobalAveragePooling1D(name=self.name("gap"))(y), layout
        if name == "permute":
            return L.Permute((2, 1), name=self.name("permute"))(y), layout
        if name == "pdense":  # along the steps: no bias, a dead channel's row stays zero
            pd = self.name("pdense")
            self.built.denses.append((pd, None, None))
            return L.Dense(op[1], activation=op[2], use_bias=False, name=pd)(y), layout
        if name == "pconcat":  # joins on the steps axis: both inputs keep the same channels
            parts = []
            for units in op[1:]:
                pd = self.name("pdense")
                self.built.denses.append((pd, None, None))
                parts.append(L.Dense(units, use_bias=False, name=pd)(y))
            return L.Concatenate(name=self.name("concat"))(parts), layout
        if name == "flatten":
            steps = y.shape[2] if kind == "perm" else y.shape[1]
            flat = [e for e in layout for _ in range(steps)] if kind == "perm" else layout * steps
            return L.Flatten(name=self.name("flatten"))(y), flat
        raise AssertionError(f"unknown operation {op}")


def build(program: dict) -> Built:
    builder = Builder()
    front = program["front"]
    if front == "tokens":
        x = keras.Input((program["steps"],), dtype="int32", name="tokens")
        out = builder.group(program["features"])
        y = L.Embedding(10, len(out), name="embed")(x)  # sample_inputs draws ids 0..8
        layout = builder.owner("embed", "embedding", out)
        kind = "seq"
    else:
        features = program["features"]
        shape = (features,) if front == "vector" else (program["steps"], features)
        x = keras.Input(shape, name="x")
        y, layout = x, [None] * features
        kind = "vec" if front == "vector" else "seq"
    for op in program["ops"]:
        y, layout = builder.op(op, y, layout, kind)
        kind = _after(op, kind, len(layout), 0)[0]
    if kind == "perm":
        y = L.Permute((2, 1), name="unpermute")(y)
    builder.built.denses.append(("head", layout, None))
    outputs = [L.Dense(3, name="head")(y), *builder.outputs]
    builder.built.model = keras.Model(x, outputs, name="random_sequence_model")
    return builder.built


def randomize(model: keras.Model, seed: int) -> None:
    """Random weights everywhere: non-zero biases, BatchNorm statistics far from 0/1."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = []
        for variable in layer.weights:
            shape, leaf = variable.shape, variable.path.rsplit("/", 1)[-1]
            if leaf == "gamma":
                value = rng.uniform(0.5, 1.5, shape)
            elif leaf == "moving_variance":
                value = rng.uniform(0.5, 2.0, shape)
            else:
                value = rng.normal(0.0, 0.5, shape)
            weights.append(value.astype(variable.dtype))
        layer.set_weights(weights)


# -- the dead copy --------------------------------------------------------------------


def deleted_positions(layout: Layout, deletions: dict[int, set[int]]) -> list[int]:
    """The channels of a tensor with `layout` that the group `deletions` remove."""
    return [i for i, e in enumerate(layout) if e is not None and e[1] in deletions[e[0]]]


def zero_bidirectional(layer: L.Bidirectional, channels: Sequence[int], concat: bool) -> None:
    """Make `channels` of a Bidirectional layer exactly zero (both directions' gates)."""
    units = layer.forward_layer.units
    if concat:
        parts = ([c for c in channels if c < units], [c - units for c in channels if c >= units])
    else:
        parts = (list(channels), list(channels))
    weights = [np.array(w) for w in layer.get_weights()]
    half = len(weights) // 2
    for direction, arrays in zip(parts, (weights[:half], weights[half:])):
        columns = gate_columns(layer.forward_layer, direction)
        for w in arrays:
            w[..., columns] = 0
    layer.set_weights(weights)


def zero_attention_output(layer: L.MultiHeadAttention, channels: Sequence[int]) -> None:
    """Make output `channels` of a MultiHeadAttention zero (projection columns and bias)."""
    names = [w.path.split("/", 1)[1] for w in layer.weights]
    values = [np.array(w) for w in layer.get_weights()]
    values[names.index("attention_output/kernel")][..., channels] = 0
    values[names.index("attention_output/bias")][channels] = 0
    layer.set_weights(values)


def dead_copy(built: Built, deletions: dict[str, list[int]], groups: dict) -> keras.Model:
    dead = copy_model(built.model)
    for owner in built.owners:
        channels = deletions.get(owner.name)
        if not channels:
            continue
        layer = dead.get_layer(owner.name)
        if owner.kind in ("bicat", "bisum"):
            zero_bidirectional(layer, channels, concat=owner.kind == "bicat")
        else:
            zero_outputs(layer.layer if owner.kind == "td" else layer, channels)
    for name, layout in built.batchnorms:
        zero_batchnorm(dead.get_layer(name), deleted_positions(layout, groups))
    for name, layout in built.attentions:
        channels = deleted_positions(layout, groups)
        if channels:
            zero_attention_output(dead.get_layer(name), channels)
    return dead


# -- the property ---------------------------------------------------------------------


def draw_group_deletions(data: st.DataObject, groups: list[tuple[int, str]]) -> dict[int, set[int]]:
    """Deleted indices per group.

    Never all of a group, except a droppable concat branch; Bidirectional(concat)
    groups lose as many forward (first half) as backward units.
    """
    chosen: dict[int, set[int]] = {}
    for gid, (width, mode) in enumerate(groups):
        if mode == "halves":
            units = width // 2
            count = data.draw(st.integers(0, units - 1), label=f"group {gid} units")
            half = st.lists(st.integers(0, units - 1), unique=True, min_size=count, max_size=count)
            forward = data.draw(half, label=f"group {gid} forward")
            backward = data.draw(half, label=f"group {gid} backward")
            chosen[gid] = {*forward, *(u + units for u in backward)}
        elif mode == "droppable" and data.draw(st.booleans(), label=f"group {gid} whole"):
            chosen[gid] = set(range(width))  # half the branches leave their Concatenate
        elif data.draw(st.integers(0, 3), label=f"group {gid} kept") == 0:
            chosen[gid] = set()  # one group in four keeps all its channels
        else:
            most = width if mode == "droppable" else width - 1
            indices = st.lists(st.integers(0, width - 1), unique=True, min_size=1, max_size=most)
            chosen[gid] = set(data.draw(indices, label=f"group {gid}"))
    return chosen


def apply_in_stages(
    model: keras.Model, owners: Sequence[Owner], groups: dict[int, set[int]], stages: list[int]
) -> keras.Model:
    """Delete the groups' channels with one `apply(..., verify=True)` per stage.

    `stages[g]` is the apply that deletes group g (each group whole in one apply, as
    merged branches must be); channel indices always refer to the lifted model.
    """
    graph = kgraph.lift(model)
    for stage in sorted(set(stages)):
        part = {g: (ch if stages[g] == stage else set()) for g, ch in groups.items()}
        passes = []
        for owner in owners:
            channels = deleted_positions(owner.layout, part)
            if channels:
                passes.append(DeleteChannels(owner.name, channels))
        graph = graph.apply(*passes, verify=True)
    return graph.lower()


def owner_units(layer: keras.layers.Layer, kind: str) -> int:
    """The number of output channels of an owner layer (per direction for Bidirectional)."""
    if kind in ("bicat", "bisum"):
        assert layer.backward_layer.units == layer.forward_layer.units
        return layer.forward_layer.units
    if kind == "td":
        return layer.layer.units
    if kind == "einsum":
        return int(layer.get_weights()[0].shape[1])
    if kind == "embedding":
        return layer.output_dim
    return layer.units


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(program=programs(), data=st.data())
def test_random_sequence_models_and_deletions(program: dict, data: st.DataObject) -> None:
    keras.backend.clear_session()
    built = build(program)
    model = built.model
    randomize(model, program["seed"])
    before = fingerprint(model)

    # Half of the cases delete in two successive apply() calls (a concat branch may
    # be deleted whole in either).
    two_applies = data.draw(st.booleans(), label="two applies")
    groups = draw_group_deletions(data, built.groups)
    stages = [data.draw(st.integers(0, 1)) if two_applies else 0 for _ in groups]
    deletions = {}
    for owner in built.owners:
        channels = deleted_positions(owner.layout, groups)
        if channels:
            deletions[owner.name] = channels
    dead = dead_copy(built, deletions, groups)
    pruned = apply_in_stages(dead, built.owners, groups, stages)
    assert_same_outputs(dead, pruned, sample_inputs(model))
    assert fingerprint(model) == before

    names = {layer.name for layer in pruned.layers}
    for owner in built.owners:
        lost = len(deletions.get(owner.name, []))
        if lost == len(owner.layout):  # a whole concat branch: it left the model
            assert owner.name not in names
            continue
        old = owner_units(model.get_layer(owner.name), owner.kind)
        lost //= 2 if owner.kind == "bicat" else 1  # per direction
        assert owner_units(pruned.get_layer(owner.name), owner.kind) == old - lost
    for name, inputs, outputs in built.denses:
        if name not in names:  # in a concat branch that was deleted whole
            continue
        rows = [] if inputs is None else deleted_positions(inputs, groups)
        columns = [] if outputs is None else deleted_positions(outputs, groups)
        old, new = weights_of(model, name), weights_of(pruned, name)
        np.testing.assert_array_equal(new[0], np.delete(np.delete(old[0], rows, 0), columns, 1))
        for b_new, b_old in zip(new[1:], old[1:], strict=True):
            np.testing.assert_array_equal(b_new, np.delete(b_old, columns))
    GENERATED_CASES["random_sequence_models"] += 1
