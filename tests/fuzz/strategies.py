"""Random functional Keras models for the fuzz suite, with what the oracles need to know.

A `Builder` draws a model one decision at a time (`choose`, through hypothesis'
`st.data()`), building real Keras tensors as it goes, so every drawn operation fits
the shapes it meets. Every decision is recorded on a *tape*; building again from the
tape with `Hooks` (skip a layer, insert one before/after a layer, replace one) gives
the model a structure pass should produce, built by Keras alone: the independent
expectation for `DeleteLayer`, `InsertLayer` and `ReplaceLayer`.

Channels are tracked as a *layout*, as in tests/test_properties_sequences.py: one
`(group, index)` entry per channel of a tensor (None for model-input features).
Layers that must lose the same channels share a group (the members of a merge, a
residual branch and its shortcut, a Bidirectional layer's two directions). Every layer
that owns channels (`Owner`) has the layout of its output, and every layer whose
weights must be zeroed for a dead channel to stay dead (`Fixup`: BatchNorm's beta and
moving mean, a depthwise convolution's bias, an attention layer whose output follows
its query) has the layout of its input. A group is `frozen` when its channels pass a
layer for which deleting dead channels is not function-preserving (LayerNormalization
or softmax over the channels, a sigmoid, a per-channel constant added): the oracle
never deletes those.

Weights are a function of (seed, weight key) only, the key being the layer's name
(or the name of the layer a replacement copies), so the expected model gets the same
weights as the model kgraph sees without copying anything through kgraph.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import keras
import numpy as np
from hypothesis import strategies as st

L = keras.layers

Entry = tuple[int, int] | None
Layout = list[Entry]

CELLS = ("SimpleRNN", "GRU", "LSTM")
ZERO_ACTIVATIONS = (None, "relu", "tanh", "elu", "selu", "gelu", "swish", "softsign")  # f(0)=0
MAX_WIDTH = 12  # widest channel axis the generator grows
MAX_FLAT = 48  # widest vector a Flatten may produce
# Keras on torch: LayerNormalization over one axis that is not the last (axis=1 of a
# channels_last or channels_first tensor of rank >= 3) calls torch's layer_norm, which
# normalises trailing axes only, and fails with a shape error. The unit tests skip those
# cases on torch naming this limitation; the generator does not draw them there.
TORCH_LN_LIMIT = keras.backend.backend() == "torch"


@attrs.define
class Group:
    """Channels that must be deleted together (one set of indices for all members)."""

    width: int
    blocks: int = 1  # deletions must remove as many channels from each of `blocks` blocks
    frozen: bool = False  # a channel of it passes a layer that does not preserve dead ones
    droppable: bool = False  # a Concatenate branch: may lose every channel


@attrs.define
class Owner:
    """A layer that owns its output channels (what `DeleteChannels` targets)."""

    path: tuple[str, ...]  # (nested model, ..., layer)
    kind: str  # dense, conv, sepconv, tconv, td, rnn, bicat, bisum, embedding, mha
    layout: Layout

    @property
    def name(self) -> str:
        return "/".join(self.path)


@attrs.define
class Fixup:
    """A layer whose weights must be zeroed for dead input channels to stay dead."""

    path: tuple[str, ...]
    kind: str  # bn (beta, moving_mean), dwbias (bias of outputs c*m..c*m+m-1), mha (output)
    layout: Layout
    multiplier: int = 1


@attrs.define
class Attention:
    path: tuple[str, ...]
    heads: int
    key_dim: int


@attrs.define
class Site:
    """A layer call a structure pass may target."""

    path: tuple[str, ...]
    class_name: str
    role: str  # "pass" (keeps its input's channels and shape) or "layer" (anything else)
    same_shape: bool  # one input, output shaped like it: DeleteLayer may remove it
    single_input: bool
    shape: tuple  # of its (first) input, without the batch axis
    out_shape: tuple
    layout: Layout  # of its (first) input
    out_layout: Layout
    data_format: str  # of its output
    in_format: str  # of its (first) input
    shared: bool = False  # the layer is called more than once

    @property
    def name(self) -> str:
        return "/".join(self.path)


@attrs.define
class Hooks:
    """How to build the expected model of structure passes (by layer name)."""

    skip: set[str] = attrs.Factory(set)
    before: dict[str, tuple] = attrs.Factory(dict)  # name -> spec of the layer inserted
    after: dict[str, tuple] = attrs.Factory(dict)
    replace: dict[str, tuple] = attrs.Factory(dict)  # name -> spec of its replacement


@attrs.define
class T:
    """A tensor being built, with its channel layout and data format."""

    x: Any
    layout: Layout
    df: str = "channels_last"

    @property
    def rank(self) -> int:  # spatial axes (0: a vector)
        return len(self.x.shape) - 2

    @property
    def axis(self) -> int:
        return 1 if self.df == "channels_first" and self.rank > 0 else -1

    @property
    def width(self) -> int:
        return len(self.layout)

    @property
    def spatial(self) -> tuple[int, ...]:
        dims = self.x.shape[1:]
        return tuple(dims[1:] if self.axis == 1 else dims[:-1])

    @property
    def cl(self) -> bool:
        return self.rank == 0 or self.df == "channels_last"


class Tape:
    """The decisions of one drawn model, drawn (first build) or replayed."""

    def __init__(self, data: Any = None, values: Sequence[Any] = ()) -> None:
        self.data = data
        self.values = list(values)
        self.position = 0

    def choose(self, strategy: st.SearchStrategy, label: str) -> Any:
        if self.data is not None:
            value = self.data.draw(strategy, label=label)
            self.values.append(value)
            return value
        value = self.values[self.position]
        self.position += 1
        return value

    def replay(self) -> Tape:
        return Tape(values=self.values)


# -- layer specs for InsertLayer / ReplaceLayer ----------------------------------------


def spec_layer(spec: tuple, name: str, t: T) -> keras.layers.Layer:
    """A new layer from a spec, for a tensor like `t` (shape-preserving)."""
    kind = spec[0]
    if kind == "bn":
        return L.BatchNormalization(axis=t.axis, name=name)
    if kind == "dropout":
        return L.Dropout(0.3, name=name)
    if kind == "noise":
        return L.GaussianNoise(0.2, name=name)
    if kind == "identity":
        return L.Identity(name=name)
    if kind == "act":
        return L.Activation(spec[1], name=name)
    if kind == "relu":
        return L.ReLU(name=name)
    if kind == "ln_other":
        axis = 1 if t.axis == -1 else -1
        return L.LayerNormalization(axis=axis, center=False, name=name)
    if kind == "unitnorm":
        return L.UnitNormalization(axis=t.axis, name=name)
    if kind == "dense_same":
        return L.Dense(t.width, name=name)
    if kind == "conv_same":
        conv = getattr(L, f"Conv{t.rank}D")
        return conv(t.width, 1, data_format=t.df, use_bias=_cf_bias_ok(t, t.width), name=name)
    if kind == "copy":  # a layer like the target, with the target's weights
        config = dict(spec[1], name=name)
        return spec[2].from_config(config)
    if kind == "einsum_for_dense":  # Dense(units, activation) as an EinsumDense
        units, activation, use_bias = spec[1], spec[2], spec[3]
        equation = "ab,bc->ac" if t.rank == 0 else "abc,cd->abd"
        bias = ("c" if t.rank == 0 else "d") if use_bias else None
        return L.EinsumDense(
            equation,
            (units,) if t.rank == 0 else (t.x.shape[1], units),
            bias_axes=bias,
            activation=activation,
            name=name,
        )
    raise AssertionError(f"unknown spec {spec}")


PASS_SPECS = (
    ("bn",),
    ("dropout",),
    ("noise",),
    ("identity",),
    ("relu",),
    ("act", "tanh"),
    ("act", "elu"),
    ("unitnorm",),
)


def _cf_bias_ok(t: T, channels: int, spatial_last: int | None = None) -> bool:
    """Keras' TensorFlow backend adds a channels_first bias along the last spatial axis
    when that axis is as long as the channels are many (a Keras bug, see
    tests/test_properties.py): give a channels_first convolution a bias only when its
    last spatial axis is longer than any channel count it can have."""
    if t.df != "channels_first" or t.rank == 0:
        return True
    last = spatial_last if spatial_last is not None else t.spatial[-1]
    return last is not None and last > channels


# -- the builder ----------------------------------------------------------------------


class Builder:
    """Draws (or replays) a model, recording owners, groups, fix-ups and sites."""

    def __init__(
        self,
        tape: Tape,
        hooks: Hooks | None = None,
        *,
        max_ops: int = 6,
        preserving: bool = False,
        fronts: Sequence[str] | None = None,
        prelude: Sequence[str] = (),
    ) -> None:
        self.tape = tape
        self.hooks = hooks or Hooks()
        self.max_ops = max_ops
        self.preserving = preserving  # no layer that freezes groups (plan tests)
        self.fronts = fronts  # the model inputs to draw from (None: all)
        self.prelude = prelude  # operations done first, where they fit
        self.count = 0
        self.prefix: tuple[str, ...] = ()
        self.groups: list[Group] = []
        self.owners: list[Owner] = []
        self.fixups: list[Fixup] = []
        self.attentions: list[Attention] = []
        self.sites: list[Site] = []
        self.keys: dict[str, str] = {}  # layer name -> weight key
        self.outputs: list[Any] = []
        self.sequential: list[Any] | None = None  # layers of a nested Sequential
        self.depth = 0
        self.inserted: dict[str, keras.layers.Layer] = {}
        self.replaced: dict[str, keras.layers.Layer] = {}
        self.model: keras.Model | None = None
        self.summary: list[str] = []

    # -- bookkeeping --------------------------------------------------------------------

    def choose(self, strategy: st.SearchStrategy, label: str) -> Any:
        return self.tape.choose(strategy, label)

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def group(self, width: int, **kw: Any) -> Layout:
        self.groups.append(Group(width, **kw))
        gid = len(self.groups) - 1
        return [(gid, i) for i in range(width)]

    def owner(self, name: str, kind: str, layout: Layout) -> None:
        path = (*self.prefix, name)
        if not any(o.path == path for o in self.owners):
            self.owners.append(Owner(path, kind, layout))

    def fixup(self, name: str, kind: str, layout: Layout, multiplier: int = 1) -> None:
        path = (*self.prefix, name)
        if not any(f.path == path for f in self.fixups):
            self.fixups.append(Fixup(path, kind, layout, multiplier))

    def freeze(self, layout: Layout) -> None:
        for entry in layout:
            if entry is not None:
                self.groups[entry[0]].frozen = True

    def constrain(self, layout: Layout, blocks: int) -> bool:
        """Require equal deletions in `blocks` blocks of `layout` (a grouped convolution's
        input); False when the layout is not one whole group in order."""
        if blocks == 1 or all(e is None for e in layout):
            return True
        gid = layout[0][0] if layout[0] is not None else None
        if gid is None or layout != [(gid, i) for i in range(len(layout))]:
            return False
        group = self.groups[gid]
        if group.frozen:
            return True
        merged = group.blocks * blocks // math.gcd(group.blocks, blocks)
        if group.width % merged or group.droppable:
            return False
        group.blocks = merged
        return True

    # -- calling a layer (where the hooks act) ------------------------------------------

    def call(
        self,
        layer: keras.layers.Layer,
        inputs: T | list[T],
        out_layout: Layout,
        *,
        role: str = "layer",
        df: str | None = None,
        shared: bool = False,
        key: str | None = None,
        positional: bool = False,
    ) -> T:
        """Call `layer` on `inputs` (one tensor or a list), applying the hooks."""
        name = layer.name
        self.keys.setdefault(name, key or name)
        single = not isinstance(inputs, list)
        first = inputs if single else inputs[0]
        df = df or first.df
        hooks = self.hooks
        x = first
        if single and name in hooks.before:
            x = self._hooked(name, hooks.before[name], x, "before")
        args = x.x if single else [i.x for i in inputs]
        if name in hooks.skip:
            assert single, f"cannot skip {name}: it has several inputs"
            out = T(x.x, out_layout, df)
        else:
            used = layer
            if name in hooks.replace:
                used = self._replacement(name, hooks.replace[name], x)
            if self.sequential is not None:
                self.sequential.append(used)
            out = T(used(*args) if positional else used(args), out_layout, df)
            if out.rank == 0:
                out.df = "channels_last"
        if name in hooks.after:
            out = self._hooked(name, hooks.after[name], out, "after")
        in_shape = tuple(first.x.shape[1:])
        out_shape = tuple(out.x.shape[1:])
        if not any(s.path == (*self.prefix, name) for s in self.sites):
            self.sites.append(
                Site(
                    (*self.prefix, name),
                    type(layer).__name__,
                    role,
                    single and in_shape == out_shape,
                    single,
                    in_shape,
                    out_shape,
                    list(first.layout),
                    list(out_layout),
                    df,
                    first.df,
                    shared,
                )
            )
        elif shared:
            for site in self.sites:
                if site.path == (*self.prefix, name):
                    site.shared = True
        return out

    def _hooked(self, target: str, spec: tuple, t: T, where: str) -> T:
        name = f"{where}_{target}"
        layer = self.inserted.get(name)
        if layer is None:
            layer = spec_layer(spec, name, t)
            self.inserted[name] = layer
        self.keys.setdefault(name, name)
        if spec[0] == "bn":
            self.fixup(name, "bn", t.layout)
        if self.sequential is not None:
            self.sequential.append(layer)
        return T(layer(t.x), t.layout, t.df)

    def _replacement(self, target: str, spec: tuple, t: T) -> keras.layers.Layer:
        name = f"new_{target}"
        layer = self.replaced.get(name)
        if layer is None:
            layer = spec_layer(spec, name, t)
            self.replaced[name] = layer
        self.keys[name] = self.keys[target] if spec[0] in ("copy", "einsum_for_dense") else name
        if spec[0] == "bn":
            self.fixup(name, "bn", t.layout)
        if spec[0] == "copy":  # the copy needs the fix-ups of the layer it replaces
            for fix in list(self.fixups):
                if fix.path == (*self.prefix, target):
                    self.fixup(name, fix.kind, fix.layout, fix.multiplier)
        return layer

    # -- the model ----------------------------------------------------------------------

    def build(self) -> keras.Model:
        t, inputs = self.front()
        for op in self.prelude:
            if any(op in ops for ops in self.available(t).values()):
                self.summary.append(op)
                t = getattr(self, f"op_{op}")(t)
        for _ in range(self.choose(st.integers(1, self.max_ops), "operations")):
            t = self.operation(t)
        for _ in range(3):  # something to delete: a producer before the head
            if any(not g.frozen for g in self.groups):
                break
            t = self.operation(t, "producer")
        outputs = [self.head(t), *self.outputs]
        self.model = keras.Model(inputs, outputs, name="fuzz_model")
        return self.model

    def front(self) -> tuple[T, Any]:
        fronts = ["vector", "sequence", "tokens", "image", "image_cf", "signal_cf", "volume"]
        if self.fronts is not None:
            fronts = [f for f in fronts if f in self.fronts]
        front = self.choose(st.sampled_from(fronts), "front")
        features = self.choose(st.integers(2, 5), "features")
        self.summary.append(front)
        if front == "vector":
            x = keras.Input((features,), name="x")
            return T(x, [None] * features), x
        if front == "tokens":
            steps = self.choose(st.integers(2, 6), "steps")
            x = keras.Input((steps,), dtype="int32", name="tokens")
            layout = self.group(features)
            layer = L.Embedding(10, features, name="embed")  # sample_inputs draws ids 0..8
            self.owner("embed", "embedding", layout)
            return self.call(layer, T(x, [None]), layout), x
        if front == "sequence":
            steps = self.choose(st.integers(2, 6), "steps")
            x = keras.Input((steps, features), name="x")
            return T(x, [None] * features), x
        if front == "signal_cf":
            steps = self.choose(st.integers(5, 8), "steps")
            x = keras.Input((features, steps), name="x")
            return self.first_conv(T(x, [None] * features, "channels_first")), x
        if front == "volume":
            size = self.choose(st.integers(2, 4), "size")
            x = keras.Input((size, size, size, features), name="x")
            return T(x, [None] * features), x
        size = self.choose(st.integers(3, 7), "size")
        if front == "image_cf":
            x = keras.Input((features, size, size + 6), name="x")  # wide: see _cf_bias_ok
            return self.first_conv(T(x, [None] * features, "channels_first")), x
        x = keras.Input((size, size, features), name="x")
        return T(x, [None] * features), x

    def first_conv(self, t: T) -> T:
        """A convolution reading a channels_first model input. kgraph takes a model
        input's channels to be on its last axis (it cannot know better), so layers that
        follow its channels (a Permute, then a Dense or a recurrent layer working on
        them position by position) see them elsewhere than the generator does; a
        convolution first makes channels of its own on axis 1 (see
        test_fuzz_regressions.py for what happens without it)."""
        return self.produce("conv", t, self.units())

    def head(self, t: T) -> Any:
        if not t.cl:
            t = self.call(self.global_pool(t, "Average"), t, t.layout)
        return self.call(L.Dense(3, name="head"), t, [None] * 3).x

    def global_pool(self, t: T, kind: str) -> keras.layers.Layer:
        cls = getattr(L, f"Global{kind}Pooling{t.rank}D")
        return cls(data_format=t.df, name=self.name("gpool"))

    # -- operations ---------------------------------------------------------------------

    def available(self, t: T) -> dict[str, list[str]]:
        """The operations that fit `t`, by family."""
        r, cl = t.rank, t.cl
        producer, branch = [], ["residual", "merge"]
        channelwise = ["act", "dropout", "bn", "ops", "prelu", "unitnorm"]
        layout = []
        if t.width < MAX_WIDTH:
            branch.append("concat")
        if not self.preserving:
            channelwise.append("frozen")
        if self.depth == 0:
            branch += ["nested", "shared", "side"]
        if r == 0 or cl:
            producer.append("dense")
        if r <= 1 and cl:
            producer.append("einsum")
        if r >= 1:
            producer += ["conv", "tconv"]
            channelwise += ["gate"] if cl and TORCH_LN_LIMIT else ["ln_other", "gate"]
            layout += ["pool", "pad", "gpool", "reduce", "permute"]
            if min(t.spatial) >= 3:
                layout.append("crop")
            if max(t.spatial) <= {1: 6, 2: 4, 3: 2}[r]:
                layout.append("up")
            if t.width * math.prod(t.spatial) <= MAX_FLAT:
                layout.append("flatten")
        if r in (1, 2):
            producer.append("sepconv")
            if t.width <= MAX_WIDTH // 2:
                producer.append("dwconv")
        if r == 1 and cl:
            producer += ["td", "rnn", "bidir", "mha"]
        if r == 1 and not cl:
            producer.append("tdense")
        if r == 0:
            layout += ["repeat", "reshape"]
        if r == 2 and cl:
            layout.append("reshape")
        families = {
            "producer": producer,
            "branch": branch,
            "channelwise": channelwise,
            "layout": layout,
        }
        if self.sequential is not None:  # a Sequential holds one chain of layers
            keep = {
                "act",
                "dropout",
                "bn",
                "prelu",
                "unitnorm",
                "dense",
                "conv",
                "pool",
                "pad",
                "tconv",
                "sepconv",
                "dwconv",
                "td",
                "rnn",
                "bidir",
                "ln_other",
            }
            families = {k: [op for op in v if op in keep] for k, v in families.items()}
        return {k: v for k, v in families.items() if v}

    def operation(self, t: T, family: str | None = None) -> T:
        families = self.available(t)
        if family not in families:
            family = self.choose(st.sampled_from(sorted(families)), "family")
        op = self.choose(st.sampled_from(families[family]), "op")
        self.summary.append(op)
        return getattr(self, f"op_{op}")(t)

    def activation(self) -> Any:
        return self.choose(st.sampled_from(ZERO_ACTIVATIONS), "activation")

    def units(self) -> int:
        return self.choose(st.integers(2, 5), "units")

    # producers: a layer making `units` new channels from t (a member of merges too)

    def producers(self, t: T, same: bool = False) -> list[str]:
        """Producer kinds for `t`; `same`: output shaped like the input but the channels."""
        r, cl = t.rank, t.cl
        kinds = []
        if r == 0 or cl:
            kinds.append("dense")
        if r <= 1 and cl:
            kinds.append("einsum")
        if r >= 1:
            kinds += ["conv", "tconv"]
        if r in (1, 2):
            kinds.append("sepconv")
        if r == 1 and cl:
            kinds += ["td", "rnn", "bisum"]
        return kinds

    def produce(
        self, kind: str, t: T, units: int, out: Layout | None = None, stride: int = 1, **kw: Any
    ) -> T:
        """A producer of `units` channels on t ("same" padding, `stride`), its channels
        `out` (a new group when None)."""
        out = self.group(units) if out is None else out
        if kind == "dense":
            name = self.name("dense")
            layer = L.Dense(units, activation=kw.get("activation"), name=name)
            self.owner(name, "dense", out)
            return self.call(layer, t, out)
        if kind == "einsum":
            name = self.name("einsum")
            eq, bias = ("ab,bc->ac", "c") if t.rank == 0 else ("abc,cd->abd", "d")
            shape = (units,) if t.rank == 0 else (t.x.shape[1], units)
            layer = L.EinsumDense(
                eq, shape, bias_axes=bias if kw.get("bias", True) else None, name=name
            )
            self.owner(name, "dense", out)
            return self.call(layer, t, out)
        if kind == "td":
            name = self.name("td")
            self.owner(name, "td", out)
            return self.call(L.TimeDistributed(L.Dense(units), name=name), t, out)
        if kind == "rnn":
            cell = kw.get("cell") or self.choose(st.sampled_from(CELLS), "cell")
            name = self.name(cell.lower())
            rs = kw.get("return_sequences", True)
            self.owner(name, "rnn", out)
            return self.call(getattr(L, cell)(units, return_sequences=rs, name=name), t, out)
        if kind == "bisum":
            cell = self.choose(st.sampled_from(CELLS), "cell")
            mode = self.choose(st.sampled_from(["sum", "ave", "mul"]), "merge_mode")
            name = self.name("bi")
            layer = L.Bidirectional(
                getattr(L, cell)(units, return_sequences=True), merge_mode=mode, name=name
            )
            self.owner(name, "bisum", out)
            return self.call(layer, t, out)
        conv_name = {"conv": "Conv", "tconv": "Conv", "sepconv": "SeparableConv"}[kind]
        suffix = "Transpose" if kind == "tconv" else ""
        cls = getattr(L, f"{conv_name}{t.rank}D{suffix}")
        kernel = self.choose(st.integers(1, 3), "kernel")
        name = self.name(kind)
        args = dict(padding="same", strides=stride, data_format=t.df, name=name)
        if kind == "conv":
            args["activation"] = kw.get("activation")
            args["groups"] = kw.get("groups", 1)
        probe = cls(units, kernel, **args)
        spatial = probe.compute_output_shape(tuple(t.x.shape))
        last = spatial[-1] if t.df == "channels_first" else spatial[-2]
        layer = cls(units, kernel, use_bias=_cf_bias_ok(t, units, last), **args)
        self.owner(name, kind, out)
        return self.call(layer, t, out)

    def op_dense(self, t: T) -> T:
        return self.produce("dense", t, self.units(), activation=self.activation())

    def op_einsum(self, t: T) -> T:
        return self.produce("einsum", t, self.units(), bias=self.choose(st.booleans(), "bias"))

    def op_td(self, t: T) -> T:
        return self.produce("td", t, self.units())

    def op_conv(self, t: T) -> T:
        units = self.units()
        groups = self.choose(st.sampled_from([1, 1, 2, 3, "depthwise"]), "groups")
        stride = self.choose(st.sampled_from([1, 1, 2]), "stride")
        if t.rank == 3:
            stride = 1
        if groups == "depthwise":  # Conv with groups == input channels: depthwise
            m = self.choose(st.integers(1, 2), "multiplier")
            if t.width * m > MAX_WIDTH:
                m = 1
            name = self.name("gdw")
            cls = getattr(L, f"Conv{t.rank}D")
            out = [e for e in t.layout for _ in range(m)]
            probe = cls(t.width * m, 3, padding="same", groups=t.width, data_format=t.df)
            spatial = probe.compute_output_shape(tuple(t.x.shape))
            last = spatial[-1] if t.df == "channels_first" else spatial[-2]
            bias = _cf_bias_ok(t, t.width * m, last)
            layer = cls(
                t.width * m,
                3,
                padding="same",
                groups=t.width,
                data_format=t.df,
                use_bias=bias,
                name=name,
            )
            if bias:
                self.fixup(name, "dwbias", t.layout, m)
            return self.call(layer, t, out)
        if groups > 1:
            units = units * groups
            if t.width % groups or t.width == groups or not self.constrain(t.layout, groups):
                groups, units = 1, units // groups
        out = self.group(units, blocks=groups)
        return self.produce(
            "conv", t, units, out, stride=stride, activation=self.activation(), groups=groups
        )

    def op_tconv(self, t: T) -> T:
        stride = (
            1
            if max(t.spatial) > 4 or t.rank == 3
            else self.choose(st.sampled_from([1, 2]), "stride")
        )
        return self.produce("tconv", t, self.units(), stride=stride)

    def op_sepconv(self, t: T) -> T:
        return self.produce("sepconv", t, self.units())

    def op_dwconv(self, t: T) -> T:
        m = self.choose(st.integers(1, 2), "multiplier")
        name = self.name("dw")
        cls = getattr(L, f"DepthwiseConv{t.rank}D")
        bias = self.choose(st.booleans(), "bias") and _cf_bias_ok(t, t.width * m)
        layer = cls(
            3, depth_multiplier=m, padding="same", data_format=t.df, use_bias=bias, name=name
        )
        if bias:
            self.fixup(name, "dwbias", t.layout, m)
        return self.call(layer, t, [e for e in t.layout for _ in range(m)])

    def op_rnn(self, t: T) -> T:
        rs = self.choose(st.booleans(), "return_sequences")
        return self.produce("rnn", t, self.units(), return_sequences=rs)

    def op_bidir(self, t: T) -> T:
        cell = self.choose(st.sampled_from(CELLS), "cell")
        units = self.units()
        mode = self.choose(st.sampled_from(["concat", "sum", "ave", "mul"]), "merge_mode")
        rs = self.choose(st.booleans(), "return_sequences")
        name = self.name("bi")
        layer = L.Bidirectional(
            getattr(L, cell)(units, return_sequences=rs), merge_mode=mode, name=name
        )
        if mode == "concat":
            out = self.group(2 * units, blocks=2)
            self.owner(name, "bicat", out)
        else:
            out = self.group(units)
            self.owner(name, "bisum", out)
        return self.call(layer, t, out)

    def op_mha(self, t: T) -> T:
        heads = self.choose(st.integers(1, 3), "heads")
        # not 1: on TensorFlow, Keras 3.15's EinsumDense adds a (heads, 1) bias along the
        # sequence axis when the sequence is as long as there are heads, so the heads of
        # a key_dim=1 attention mix their biases and a dead head is not dead (see
        # test_fuzz_regressions.py)
        key_dim = self.choose(st.integers(2, 3), "key_dim")
        name = self.name("mha")
        self.attentions.append(Attention((*self.prefix, name), heads, key_dim))
        if self.choose(st.booleans(), "own_output"):  # output_shape given: owns its output
            units = self.units()
            out = self.group(units)
            layer = L.MultiHeadAttention(heads, key_dim, output_shape=units, name=name)
            self.owner(name, "mha", out)
            return self.call(layer, [t, t], out, positional=True)
        layer = L.MultiHeadAttention(heads, key_dim, name=name)
        self.fixup(name, "mha", t.layout)
        value = t
        if self.choose(st.booleans(), "cross"):  # value from another projection
            value = self.produce("dense", t, self.units())
        a = self.call(layer, [t, value], t.layout, positional=True)
        return self.call(L.Add(name=self.name("add")), [t, a], t.layout, role="merge")

    def op_tdense(self, t: T) -> T:  # channels_first sequence: Dense along the steps
        steps = self.choose(st.integers(5, 8), "steps")
        layer = L.Dense(steps, use_bias=False, name=self.name("tdense"))
        return self.call(layer, t, t.layout)

    # channel-wise layers

    def op_act(self, t: T) -> T:
        kind = self.choose(st.sampled_from(["relu", "elu", "leaky", "activation"]), "act")
        name = self.name(kind)
        if kind == "relu":
            layer = L.ReLU(name=name)
        elif kind == "elu":
            layer = L.ELU(name=name)
        elif kind == "leaky":
            layer = L.LeakyReLU(0.1, name=name)
        else:
            fn = self.choose(st.sampled_from(ZERO_ACTIVATIONS[1:]), "function")
            layer = L.Activation(fn, name=name)
        return self.call(layer, t, t.layout, role="pass")

    def op_dropout(self, t: T) -> T:
        kinds = ["dropout", "noise", "gdropout", "alpha", "identity", "actreg"]
        if t.rank >= 2 or (t.rank == 1 and t.cl):
            kinds.append("spatial")
        kind = self.choose(st.sampled_from(kinds), "dropout")
        name = self.name(kind)
        layer = {
            "dropout": lambda: L.Dropout(0.4, name=name),
            "noise": lambda: L.GaussianNoise(0.3, name=name),
            "gdropout": lambda: L.GaussianDropout(0.3, name=name),
            "alpha": lambda: L.AlphaDropout(0.3, name=name),
            "identity": lambda: L.Identity(name=name),
            "actreg": lambda: L.ActivityRegularization(0.01, name=name),
            "spatial": lambda: (
                L.SpatialDropout1D(0.3, name=name)
                if t.rank == 1
                else getattr(L, f"SpatialDropout{t.rank}D")(0.3, data_format=t.df, name=name)
            ),
        }[kind]()
        return self.call(layer, t, t.layout, role="pass")

    def op_bn(self, t: T) -> T:
        name = self.name("bn")
        self.fixup(name, "bn", t.layout)
        return self.call(L.BatchNormalization(axis=t.axis, name=name), t, t.layout, role="pass")

    def op_ln_other(self, t: T) -> T:  # normalises along a spatial axis, no beta: 0 -> 0
        axis = 1 if t.axis == -1 else -1
        layer = L.LayerNormalization(axis=axis, center=False, name=self.name("ln"))
        return self.call(layer, t, t.layout, role="pass")

    def op_unitnorm(self, t: T) -> T:
        layer = L.UnitNormalization(axis=t.axis, name=self.name("unitnorm"))
        return self.call(layer, t, t.layout, role="pass")

    def op_prelu(self, t: T) -> T:
        shared = None
        if t.rank >= 1 and self.choose(st.booleans(), "shared_axes"):
            shared = list(range(1, t.rank + 1)) if t.cl else list(range(2, t.rank + 2))
        return self.call(
            L.PReLU(shared_axes=shared, name=self.name("prelu")), t, t.layout, role="pass"
        )

    def op_ops(self, t: T) -> T:
        kind = self.choose(
            st.sampled_from(
                [
                    "relu",
                    "tanh",
                    "scale",
                    "shift",
                    "vector",
                    "abs",
                    "silu",
                    "neg",
                    "clip",
                    "maximum",
                    "divide",
                ]
            ),
            "ops",
        )
        x = t.x
        if kind == "relu":
            y = keras.ops.relu(x)
        elif kind == "tanh":
            y = keras.ops.tanh(x)
        elif kind == "scale":
            y = x * 2.0
        elif kind == "shift":  # x + 1.0 - 1.0: zero stays zero
            y = (x + 1.0) - 1.0
        elif kind == "vector":  # a per-channel constant operand (sliced with the channels)
            values = np.random.default_rng(self.count).uniform(0.5, 2.0, t.width)
            shape = (t.width,) if t.cl else (t.width,) + (1,) * t.rank
            y = x * values.reshape(shape).astype("float32")
        elif kind == "abs":
            y = keras.ops.abs(x)
        elif kind == "silu":
            y = keras.ops.silu(x)
        elif kind == "neg":
            y = -x
        elif kind == "clip":
            y = keras.ops.clip(x, -1.0, 1.0)
        elif kind == "maximum":
            y = keras.ops.maximum(x, 0.0)
        else:
            y = x / 2.0
        self.count += 1
        return T(y, t.layout, t.df)

    def op_frozen(self, t: T) -> T:
        """A layer that does not keep dead channels dead: its groups are never deleted."""
        kinds = ["ln", "softmax", "sigmoid", "offset"]
        if TORCH_LN_LIMIT and not t.cl and t.rank >= 1:  # LayerNormalization(axis=1)
            kinds.remove("ln")
        kind = self.choose(st.sampled_from(kinds), "frozen")
        self.freeze(t.layout)
        if kind == "ln":
            layer = L.LayerNormalization(axis=t.axis, name=self.name("lnc"))
            return self.call(layer, t, t.layout, role="pass")
        if kind == "softmax":
            return self.call(
                L.Softmax(axis=t.axis, name=self.name("softmax")), t, t.layout, role="pass"
            )
        if kind == "sigmoid":
            return self.call(
                L.Activation("sigmoid", name=self.name("sigmoid")), t, t.layout, role="pass"
            )
        values = np.random.default_rng(self.count).uniform(0.5, 2.0, t.width).astype("float32")
        self.count += 1
        shape = (t.width,) if t.cl else (t.width,) + (1,) * t.rank
        return T(t.x + values.reshape(shape), t.layout, t.df)

    # branches

    def op_residual(self, t: T) -> T:
        """t + f(t), f making t's channels (so it must lose the shortcut's channels)."""
        kind = self.choose(st.sampled_from(self.producers(t)), "member")
        if kind in ("sepconv",) and t.rank == 0:
            kind = "dense"
        h = self.member(kind, t, t.width, t.layout)
        merge = self.choose(
            st.sampled_from(["add", "average", "maximum", "subtract", "ops"]), "merge"
        )
        return self.merged(merge, [t, h])

    def member(self, kind: str, t: T, units: int, out: Layout) -> T:
        if kind in ("rnn", "td", "bisum", "einsum"):
            return self.produce(kind, t, units, out)
        if kind == "dense":
            return self.produce(kind, t, units, out, activation=self.activation())
        return self.produce(kind, t, units, out)

    def merged(self, merge: str, parts: list[T]) -> T:
        layout = parts[0].layout
        if merge == "ops":  # keras.ops.add of the tensors
            return T(keras.ops.add(parts[0].x, parts[1].x), layout, parts[0].df)
        cls = {
            "add": L.Add,
            "average": L.Average,
            "maximum": L.Maximum,
            "subtract": L.Subtract,
            "multiply": L.Multiply,
            "minimum": L.Minimum,
        }[merge]
        if merge == "subtract":
            parts = parts[:2]
        return self.call(cls(name=self.name(merge)), parts, layout, role="merge")

    def op_merge(self, t: T) -> T:
        kinds = self.producers(t)
        merge = self.choose(
            st.sampled_from(["add", "average", "maximum", "multiply", "minimum", "subtract"]),
            "merge",
        )
        count = 2 if merge == "subtract" else self.choose(st.integers(2, 3), "members")
        members = [self.choose(st.sampled_from(kinds), "member") for _ in range(count)]
        units = self.units()
        out = self.group(units)
        parts = [self.member(kind, t, units, out) for kind in members]
        return self.merged(merge, parts)

    def op_concat(self, t: T) -> T:
        kinds = self.producers(t)
        count = self.choose(st.integers(2, 3), "branches")
        keeper = self.choose(st.integers(0, count - 1), "keeper")  # never deleted whole
        parts = []
        for i in range(count):
            kind = self.choose(st.sampled_from(kinds), "member")
            units = self.units()
            out = self.group(units, droppable=i != keeper)
            h = self.member(kind, t, units, out)
            post = self.choose(st.sampled_from([None, "bn", "relu"]), "post")
            if post == "bn":
                name = self.name("bn")
                self.fixup(name, "bn", h.layout)
                h = self.call(
                    L.BatchNormalization(axis=h.axis, name=name), h, h.layout, role="pass"
                )
            elif post == "relu":
                h = self.call(L.ReLU(name=self.name("relu")), h, h.layout, role="pass")
            parts.append(h)
        joined = [e for p in parts for e in p.layout]
        axis = 1 if not t.cl else -1
        out = self.call(
            L.Concatenate(axis=axis, name=self.name("concat")), parts, joined, role="merge"
        )
        if self.choose(st.booleans(), "residual_after"):  # coordinates must not move
            out = self.op_residual(out)
        return out

    def op_side(self, t: T) -> T:
        """An extra model output on the current tensor."""
        s = t
        if not t.cl:
            s = self.call(self.global_pool(t, "Max"), t, t.layout)
        self.outputs.append(self.call(L.Dense(2, name=self.name("side")), s, [None] * 2).x)
        return t

    def op_shared(self, t: T) -> T:
        """One layer called twice: on t and on relu(t); both calls own the same channels."""
        kind = "dense" if t.rank == 0 or t.cl else "conv"
        units = self.units()
        out = self.group(units)
        name = self.name(f"shared_{kind}")
        if kind == "dense":
            layer = L.Dense(units, name=name)
        else:
            layer = getattr(L, f"Conv{t.rank}D")(
                units, 1, data_format=t.df, use_bias=_cf_bias_ok(t, units), name=name
            )
        self.owner(name, "dense" if kind == "dense" else "conv", out)
        a = self.call(layer, t, out, shared=True)
        r = self.call(L.ReLU(name=self.name("relu")), t, t.layout, role="pass")
        b = self.call(layer, r, out, shared=True)
        if self.choose(st.booleans(), "concat_calls"):
            axis = -1 if t.cl else 1
            return self.call(
                L.Concatenate(axis=axis, name=self.name("concat")), [a, b], out + out, role="merge"
            )
        return self.merged("add", [a, b])

    def op_nested(self, t: T) -> T:
        """A nested Functional or Sequential model of a few operations, called once or
        twice (a shared nested model)."""
        kind = self.choose(st.sampled_from(["functional", "sequential"]), "nested")
        block = self.name("block")
        inner_input = keras.Input(tuple(t.x.shape[1:]), name=f"{block}_in")
        saved = (self.prefix, self.sequential)
        self.prefix = (*self.prefix, block)
        self.depth += 1
        if kind == "sequential":
            self.sequential = []
        inner = T(inner_input, t.layout, t.df)
        count = self.count
        for _ in range(self.choose(st.integers(1, 3), "nested_operations")):
            inner = self.operation(inner)
        layers = self.sequential
        self.prefix, self.sequential = saved
        self.depth -= 1
        if self.count == count:  # no layer drawn (the same in a replay)
            return t
        if inner.x is inner_input or (kind == "sequential" and not layers):
            sub = None  # every layer skipped (a replay of a DeleteLayer): an identity
        elif kind == "sequential":
            fresh = [type(layer).from_config(layer.get_config()) for layer in layers]
            for made in (self.inserted, self.replaced):  # kgraph gets the layers in use
                for name, layer in made.items():
                    if layer in layers:
                        made[name] = fresh[layers.index(layer)]
            sub = keras.Sequential([keras.Input(tuple(t.x.shape[1:])), *fresh], name=block)
        else:
            sub = keras.Model(inner_input, inner.x, name=block)
        out = T(t.x if sub is None else sub(t.x), inner.layout, inner.df)
        if self.choose(st.booleans(), "call_twice") and tuple(inner.x.shape) == tuple(t.x.shape):
            relu = self.call(L.ReLU(name=self.name("relu")), t, t.layout, role="pass")
            again = T(relu.x if sub is None else sub(relu.x), inner.layout, inner.df)
            return self.merged("add", [out, again])
        return out

    # spatial and layout-moving layers

    def op_pool(self, t: T) -> T:
        kind = self.choose(st.sampled_from(["Max", "Average"]), "pool")
        cls = getattr(L, f"{kind}Pooling{t.rank}D")
        layer = cls(2, padding="same", data_format=t.df, name=self.name("pool"))
        return self.call(layer, t, t.layout, role="pass")

    def op_pad(self, t: T) -> T:
        layer = getattr(L, f"ZeroPadding{t.rank}D")(1, data_format=t.df, name=self.name("pad"))
        return self.call(layer, t, t.layout, role="pass")

    def op_crop(self, t: T) -> T:
        layer = (
            getattr(L, f"Cropping{t.rank}D")(1, data_format=t.df, name=self.name("crop"))
            if t.rank > 1
            else L.Cropping1D(1, name=self.name("crop"))
        )
        if t.rank == 1 and not t.cl:  # Cropping1D has no data_format: crop the steps
            return t
        return self.call(layer, t, t.layout, role="pass")

    def op_up(self, t: T) -> T:
        if t.rank == 1:
            if not t.cl:
                return t
            layer = L.UpSampling1D(2, name=self.name("up"))
        else:
            layer = getattr(L, f"UpSampling{t.rank}D")(2, data_format=t.df, name=self.name("up"))
        return self.call(layer, t, t.layout, role="pass")

    def op_gpool(self, t: T) -> T:
        kind = self.choose(st.sampled_from(["Max", "Average"]), "pool")
        return self.call(self.global_pool(t, kind), t, t.layout)

    def op_reduce(self, t: T) -> T:
        """keras.ops.mean or sum over the spatial axes: a vector of the channels."""
        axes = tuple(range(1, t.rank + 1)) if t.cl else tuple(range(2, t.rank + 2))
        if self.choose(st.booleans(), "sum"):
            return T(keras.ops.sum(t.x, axis=axes), t.layout)
        return T(keras.ops.mean(t.x, axis=axes), t.layout)

    def op_gate(self, t: T) -> T:
        """A squeeze-and-excitation-like gate: t * tanh(sum over the channels)."""
        s = keras.ops.sum(t.x, axis=t.axis, keepdims=True)
        return T(t.x * keras.ops.tanh(s), t.layout, t.df)

    def op_flatten(self, t: T) -> T:
        spatial = math.prod(t.spatial)
        if t.cl:
            flat = t.layout * spatial
            layer = L.Flatten(name=self.name("flatten"))
        elif self.choose(st.booleans(), "flatten_channels_last"):
            flat = t.layout * spatial  # Flatten(data_format="channels_first") reorders
            layer = L.Flatten(data_format="channels_first", name=self.name("flatten"))
        else:
            flat = [e for e in t.layout for _ in range(spatial)]
            layer = L.Flatten(data_format="channels_last", name=self.name("flatten"))
        return self.call(layer, t, flat)

    def op_permute(self, t: T) -> T:
        r = t.rank
        if t.cl:
            dims = (r + 1, *range(1, r + 1))
            df = "channels_first"
        else:
            dims = (*range(2, r + 2), 1)
            df = "channels_last"
        return self.call(L.Permute(dims, name=self.name("permute")), t, t.layout, df=df)

    def op_repeat(self, t: T) -> T:
        n = self.choose(st.integers(2, 4), "repeats")
        return self.call(L.RepeatVector(n, name=self.name("repeat")), t, t.layout)

    def op_reshape(self, t: T) -> T:
        if t.rank == 2:  # (H, W, C) -> (H * W, C)
            h, w = t.spatial
            return self.call(L.Reshape((h * w, t.width), name=self.name("reshape")), t, t.layout)
        target = self.choose(st.sampled_from([(1, t.width), (1, 1, t.width)]), "reshape")
        return self.call(L.Reshape(target, name=self.name("reshape")), t, t.layout)


# -- weights --------------------------------------------------------------------------


def walk(model: keras.Model, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every layer of a model with its path, nested models entered (not listed)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += walk(layer, (*prefix, layer.name))
        elif not isinstance(layer, L.InputLayer):
            found.append(((*prefix, layer.name), layer))
    return found


def weights_for(layer: keras.layers.Layer, key: str, seed: int) -> list[np.ndarray]:
    """The weights layer `key` gets: random normal, gamma and variances away from 0."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    values = []
    for variable in layer.weights:
        shape, leaf = tuple(variable.shape), variable.path.rsplit("/", 1)[-1]
        if leaf == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        else:
            value = rng.normal(0.0, 0.5, shape)
        values.append(value.astype(variable.dtype))
    return values


def randomize(model: keras.Model, keys: dict[str, str], seed: int) -> None:
    for _, layer in walk(model):
        if layer.weights:
            layer.set_weights(weights_for(layer, keys.get(layer.name, layer.name), seed))


def resolve(model: keras.Model, path: Sequence[str]) -> keras.layers.Layer:
    layer = model
    for name in path:
        layer = layer.get_layer(name)
    return layer


def build_model(tape: Tape, seed: int, hooks: Hooks | None = None, **options: Any) -> Builder:
    builder = Builder(tape, hooks, **options)
    builder.build()
    randomize(builder.model, builder.keys, seed)
    return builder


# -- deletions ------------------------------------------------------------------------


def positions(layout: Layout, entries: set[tuple[int, int]]) -> list[int]:
    """The channels of a tensor with `layout` whose entries are in `entries`."""
    return [i for i, e in enumerate(layout) if e is not None and e in entries]


def draw_group_deletions(
    choose: Callable[[st.SearchStrategy, str], Any], groups: Sequence[Group]
) -> set[tuple[int, int]]:
    """Entries to delete, respecting every group's constraints."""
    chosen: set[tuple[int, int]] = set()
    for gid, group in enumerate(groups):
        if group.frozen:
            continue
        if group.droppable and choose(st.integers(0, 3), f"group {gid} whole") == 3:
            chosen |= {(gid, i) for i in range(group.width)}
            continue
        if choose(st.integers(0, 3), f"group {gid} kept") == 3:
            continue
        size = group.width // group.blocks
        if group.blocks > 1:
            count = choose(st.integers(0, size - 1), f"group {gid} per block")
            for b in range(group.blocks):
                picks = st.lists(
                    st.integers(0, size - 1), unique=True, min_size=count, max_size=count
                )
                chosen |= {(gid, b * size + i) for i in choose(picks, f"group {gid} block {b}")}
        else:
            most = group.width if group.droppable else group.width - 1
            picks = st.lists(
                st.integers(0, group.width - 1), unique=True, min_size=1, max_size=most
            )
            chosen |= {(gid, i) for i in choose(picks, f"group {gid}")}
    return chosen
